"""The `rstlens` command line (click).  Sub-commands live in their own modules."""

from __future__ import annotations

import contextlib
import os
import sys

# Before numpy is imported: rstlens does no linear algebra, and OpenBLAS's worker threads
# spin for a while after start-up (about 0.06 s of CPU per run, on the other core).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Before pyarrow is imported: its default pool (mimalloc) asks for transparent huge pages,
# and the kernel zeroes 2 MB at each first touch (~5% of a 1 M-packet run in `perf`); the C
# library's malloc (tuned in parsers/_libpcap.py) is as fast here and peaks ~15 MB lower.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import click

from rstlens._version import __version__


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from rstlens import _kernels

    click.echo(f"rstlens {__version__} (kernels: {_kernels.backend()})")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version, and how the kernels were compiled.")  # fmt: skip
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


def console() -> None:
    """The `rstlens` console script: `main`, then an immediate exit.

    Tearing the interpreter down (every module's objects freed one by one: numpy, pyarrow,
    the last run's tables) took 0.04-0.1 s per run, a tenth of a 1 M-packet analysis.
    By then the Parquet files are committed and closed; only stdout and stderr hold
    anything, and they are flushed here."""
    try:
        main()  # click's standalone mode always ends in SystemExit
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe (`rstlens ... | head`) or stream has nothing left to flush
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def _exit_status(code: object) -> int:
    """What `sys.exit(code)` would make of `code`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1
