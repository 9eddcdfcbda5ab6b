"""`rstlens report RUN... -o report.html`: the self-contained HTML report (rstlens.reports)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

MISSING_EXTRA = "rstlens: error: the report needs extra packages: pip install 'rstlens[report]'"


def _cause(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from rstlens.output.schema import CAUSES

    if value is not None and value not in CAUSES:
        raise click.BadParameter(f"{value!r} is not one of {', '.join(CAUSES)}")
    return value


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file to write.")
@click.option("--since", metavar="TIME", help="Only connections starting at/after TIME (ISO 8601, UTC unless it says).")
@click.option("--until", metavar="TIME", help="Only connections starting before TIME.")
@click.option("--host", metavar="H", help="Only connections with host H at either end.")
@click.option("--port", type=click.IntRange(0, 65535), metavar="P", help="Only connections with port P at either end.")
@click.option("--cause", callback=_cause, metavar="C", help="Only RSTs of cause C (connections: whose deciding RST is C).")
@click.option("--ladders", type=click.IntRange(min=0), default=5, show_default=True,
              help="Connections whose `explain` packet ladder is embedded (one per verdict).")
@click.option("--title", help="The report's title.")
def report(runs: tuple[Path, ...], output: Path, since: str | None, until: str | None, host: str | None,
           port: int | None, cause: str | None, ladders: int, title: str | None) -> None:
    """Write one self-contained HTML report (no network access when opened) of the analyze
    output directories RUN... (or partitioned datasets of many parts)."""  # fmt: skip
    from rstlens.reports._html import MissingReportPackages, check_dependencies

    try:
        check_dependencies()
    except MissingReportPackages:
        click.echo(MISSING_EXTRA, err=True)
        sys.exit(2)
    import pandas as pd

    from rstlens.reports._html import ReportOptions, write_report
    from rstlens.reports._load import RunNotFound

    for name, value in (("--since", since), ("--until", until)):
        if value is not None:
            try:
                pd.Timestamp(value)
            except ValueError:
                click.echo(f"rstlens: error: {name} {value!r} is not a time (ISO 8601, e.g. 2024-06-01T12:00:00Z)", err=True)
                sys.exit(2)
    options = ReportOptions(since=since, until=until, host=host, port=port, cause=cause, ladders=ladders, title=title)
    try:
        result = write_report(list(runs), output, options)
    except RunNotFound as exc:
        click.echo(f"rstlens: error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"wrote {result.path} ({result.bytes / 1e6:.1f} MB: {result.connections:,} connections, "
               f"{result.rsts:,} RSTs) in {result.seconds:.1f} s", err=True)  # fmt: skip
