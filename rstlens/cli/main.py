"""The `rstlens` command line (click).  Sub-commands live in their own modules."""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
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
    from rstlens import kernels

    click.echo(f"rstlens {__version__} (kernels: {kernels.backend()})")
    ctx.exit()


# sub-command -> its module (the function there has the command's name)
COMMAND_MODULES = {
    "analyze": "rstlens.cli.analyze",
    "explain": "rstlens.cli.explain",
    "export": "rstlens.cli.export",
    "packets": "rstlens.cli.packets",
    "report": "rstlens.cli.report",
}


class _Commands(click.Group):
    """The sub-commands, each imported when it is used (its module and what it needs:
    numpy, pyarrow), so that a run pays only for its own command."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is None:
            return None
        command: click.Command = getattr(importlib.import_module(module), cmd_name)
        return command


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version, and how the kernels were compiled.")  # fmt: skip
def main() -> None:
    """rstlens: who reset this TCP connection, and why?"""


# Imports make most of a run's objects and those live to the end, yet the cyclic collector
# walked them again and again: 60-70 collections, ~15 ms of a 1 M-packet analysis.  The
# console script lets 100,000 new objects (not 700) pass between collections.
GC_THRESHOLD = 100_000


def console() -> None:
    """The `rstlens` console script: `main`, then an immediate exit.

    Tearing the interpreter down (every module's objects freed one by one: numpy, pyarrow,
    the last run's tables) took 0.04-0.1 s per run, a tenth of a 1 M-packet analysis.
    By then the Parquet files are committed and closed; only stdout and stderr hold
    anything, and they are flushed here."""
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    # Ctrl-C during the imports, before a command sets its own handlers: KeyboardInterrupt
    # (exit 130), also when started with SIGINT ignored (a shell's background job), as the
    # commands handle `kill -INT` there too
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        status = _run_main()
    except SystemExit as exc:
        status = _exit_status(exc.code)
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe (`rstlens ... | head`) or stream has nothing left to flush
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def _run_main(argv: list[str] | None = None) -> int:
    """`main` as click's standalone mode runs it, but: a usage error under ``--json`` also
    prints the error object on stdout, and Ctrl-C before a command has installed its own
    handlers (during the imports) exits 130, not 1 ("Aborted!")."""
    args = sys.argv[1:] if argv is None else argv
    try:
        rv = main.main(args=args, prog_name="rstlens", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        if "--json" in args:
            import json

            print(json.dumps({"error": exc.format_message(), "exit_status": exc.exit_code}, indent=2))
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("rstlens: interrupted", file=sys.stderr)
        if "--json" in args:  # one JSON object whatever happens, this too
            import json

            print(json.dumps({"error": "interrupted before the run began", "exit_status": 130}, indent=2))
        return 130
    except Exception as exc:  # a bug: its traceback for the report, and status 70
        import traceback

        traceback.print_exc()
        print(f"rstlens: internal error (a bug, please report it): {exc!r}", file=sys.stderr)
        if "--json" in args:
            import json

            print(json.dumps({"error": f"internal error: {exc!r}", "exit_status": INTERNAL_ERROR},
                             indent=2))  # fmt: skip
        return INTERNAL_ERROR
    return rv if isinstance(rv, int) else 0


INTERNAL_ERROR = 70  # EX_SOFTWARE (sysexits.h)


def _exit_status(code: object) -> int:
    """What `sys.exit(code)` would make of `code`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1
