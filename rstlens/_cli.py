"""The `rstlens` command line (click).  Sub-commands live in their own modules."""

from __future__ import annotations

import click

from rstlens._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rstlens")
def main() -> None:
    """rstlens: who reset this TCP connection, and why?"""


def _register() -> None:
    # Imported here so each sub-command module stays independent of the others.
    from rstlens._analyze_cmd import analyze
    from rstlens._explain_cmd import explain
    from rstlens._packets_cmd import packets

    main.add_command(analyze)
    main.add_command(explain)
    main.add_command(packets)


_register()
