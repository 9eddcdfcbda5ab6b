"""`rstlens export RUN --format zeek|jsonl|csv -o DIR` (rstlens.reports)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["zeek", "jsonl", "csv"]), default="zeek", show_default=True,
              help="zeek: conn.log and rstlens_resets.log (Zeek ASCII); jsonl: JSON lines; csv.")
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write the files into.")
def export(runs: tuple[Path, ...], fmt: str, outdir: Path) -> None:
    """Export the connections and RSTs of RUN... (analyze outputs) for Zeek tools (zeek-cut,
    zat), Splunk/Elastic (JSON lines) or spreadsheets (CSV), verdict columns included."""
    from rstlens.reports._export import export as write
    from rstlens.reports._load import RunNotFound

    try:
        result = write(list(runs), fmt, outdir)
    except RunNotFound as exc:
        click.echo(f"rstlens: error: {exc}", err=True)
        sys.exit(2)
    names = ", ".join(str(f) for f in result.files)
    click.echo(f"wrote {names} ({result.connections:,} connections, {result.rsts:,} RSTs)", err=True)
