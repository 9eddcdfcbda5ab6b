"""`rstlens packets`: one line per decoded TCP packet (placeholder until the parsers land)."""

from __future__ import annotations

import click


@click.command()
@click.argument("files", nargs=-1, required=True)
def packets(files: tuple[str, ...]) -> None:
    """Show the TCP packets rstlens decodes from FILES."""
    raise click.ClickException("not implemented yet")
