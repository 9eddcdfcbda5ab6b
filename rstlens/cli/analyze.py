"""`rstlens analyze`: capture files in, flows.parquet and resets.parquet out, a summary on stderr.

Exit status (README, "Exit status"): 0 success; 1 partial input (some inputs unreadable
or cut short; with --strict also any warning); 2 usage error or nothing readable (nothing
written); 3 the results could not be written (disk full, permissions: the earlier output
is kept); 130 interrupted (SIGINT), 143 terminated (SIGTERM); 70 internal error (a bug).  With --json, stdout holds
exactly one JSON object whatever happens.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from rstlens.cli.args import split_inputs_and_filter
from rstlens.options import (
    DEFAULT_CORE,
    DEFAULT_TUNNEL_DEPTH,
    LIVE_LINGER,
    MAX_TUNNEL_DEPTH,
    METRICS_ADDRESS,
    SNAPLEN,
    STATS_INTERVAL,
    CoreOptions,
    RunOptions,
    SensorOptions,
)

if TYPE_CHECKING:  # rich is imported only on a terminal (start-up time)
    from rich.progress import Progress, TaskID

    from rstlens.parsers import InputInfo
    from rstlens.pipeline import Watch
    from rstlens.summary import Summary


@click.command()
@click.option("-o", "--outdir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for flows.parquet and resets.parquet (created if missing).")
@click.option("-i", "--interface", metavar="IFACE",
              help="Capture live on this interface instead of reading files; stop with Ctrl-C "
              f"or -c.  RST verdicts are final {LIVE_LINGER:g} s after their connection ends (--linger).")
@click.option("-r", "read_files", multiple=True, metavar="FILE",
              help="Input file, as with tcpdump (repeatable; same as a positional FILE).")
@click.option("-f", "--filter", "bpf_option", metavar="EXPR", help="BPF filter expression.")
@click.option("-c", "count", type=click.IntRange(min=1), help="Stop after COUNT packets.")
@click.option("--idle-timeout", type=click.FloatRange(min=0.001), default=DEFAULT_CORE.idle_timeout, show_default=True,
              help="Seconds of inactivity that end a connection (Zeek: tcp_inactivity_timeout).")
@click.option("--close-delay", type=click.FloatRange(min=0.0), default=DEFAULT_CORE.close_delay, show_default=True,
              help="Seconds a closed or reset connection lingers before a new one may start.")
@click.option("--max-flows", type=click.IntRange(min=16), default=DEFAULT_CORE.max_flows, show_default=True,
              help="Open connections kept; past it the longest idle are evicted (and counted).")
@click.option("--linger", type=click.FloatRange(min=0.0), default=None,
              help="Finalise RST verdicts this many seconds (capture time) after their connection "
              "ends, instead of at the end of the input: bounded memory on long captures.")
@click.option("--tunnel-depth", type=click.IntRange(0, MAX_TUNNEL_DEPTH), default=DEFAULT_TUNNEL_DEPTH,
              show_default=True, help="Tunnel layers decoded (VXLAN, GENEVE, GRE, ERSPAN, IP-in-IP, "
              "Teredo, GTP-U); packets nested deeper are dropped and counted, as Zeek does.")
@click.option("-j", "--jobs", type=click.IntRange(min=0), default=1, show_default=True, metavar="N",
              help="Cores to use (0: all): the reader and decoder run ahead of the flow core in a "
              "thread of their own.  The output is the same as with -j 1.")
@click.option("--dask", "dask_address", metavar="ADDRESS",
              help="Analyse on the Dask cluster whose scheduler is ADDRESS (pip install "
              "'rstlens[dask]'): each directory is a sensor, its files one timeline; writes one "
              "partitioned dataset, OUTDIR/flows/sensor=NAME/date=/hour=/part-*.parquet "
              "(parts of --rotate seconds, default 3600).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary as one JSON object on stdout (an error object on failure).")
@click.option("--strict", is_flag=True,
              help="Exit 1 on any input problem, warnings included (unsupported link types, "
              "duplicate inputs, ...), not only unreadable or cut-short inputs.")
@click.option("-q", "--quiet", is_flag=True, help="No summary, no progress bar.")
# ---- the live sensor (issue 19) --------------------------------------------------------
@click.option("--rotate", type=click.FloatRange(min=0.001), metavar="SECONDS",
              help="Write a hive-partitioned dataset, OUTDIR/flows/date=/hour=/part-*.parquet and "
              "OUTDIR/resets/..., one part per SECONDS interval (capture time), readable while it grows.")
@click.option("--rotate-rows", type=click.IntRange(min=1), metavar="ROWS",
              help="Also start a new part once the current one holds ROWS rows (implies the dataset).")
@click.option("-w", "write_file", metavar="FILE",
              help="Live: keep the captured packets in files named after FILE (pcapng when it "
              "ends in .pcapng, else pcap), rotated with --rotate (or -G) and -C.")
@click.option("--write-format", type=click.Choice(["pcap", "pcapng"]),
              help="-w: the packet file format, whatever FILE's extension.")
@click.option("-s", "snaplen", type=click.IntRange(0, SNAPLEN), metavar="SNAPLEN",
              help=f"Live: keep SNAPLEN bytes of each packet (as tcpdump -s; 0 or default: {SNAPLEN}).")
@click.option("-G", "write_rotate", type=click.FloatRange(min=0.001), metavar="SECONDS",
              help="-w: a new packet file every SECONDS (default: --rotate).")
@click.option("-C", "write_size", type=click.FloatRange(min=0.001), metavar="MB",
              help="-w: a new packet file past MB million bytes (as tcpdump).")
@click.option("-W", "write_count", type=click.IntRange(min=1), metavar="COUNT",
              help="-w: keep at most COUNT packet files (the oldest are removed).")
@click.option("--write-max-bytes", type=click.IntRange(min=1), metavar="BYTES",
              help="-w: keep at most BYTES of packet files in all.")
@click.option("-B", "buffer_kib", type=click.IntRange(min=1), metavar="KIB",
              help="Live: libpcap's capture buffer in KiB (as tcpdump -B).")
@click.option("--stats-interval", type=click.FloatRange(min=0.0), default=STATS_INTERVAL, show_default=True,
              metavar="SECONDS", help="Live, stderr not a terminal: a status line every SECONDS (0: none).")
@click.option("--metrics", metavar="[ADDR:]PORT",
              help=f"Serve Prometheus metrics on PORT ({METRICS_ADDRESS} unless ADDR is given).")
@click.argument("args", nargs=-1)
def analyze(outdir: Path, interface: str | None, read_files: tuple[str, ...],
            bpf_option: str | None, count: int | None,
            idle_timeout: float, close_delay: float, max_flows: int, linger: float | None,
            tunnel_depth: int, as_json: bool, strict: bool, quiet: bool, jobs: int = 1,
            dask_address: str | None = None, rotate: float | None = None, rotate_rows: int | None = None,
            write_file: str | None = None, write_rotate: float | None = None,
            write_size: float | None = None, write_count: int | None = None,
            write_max_bytes: int | None = None, buffer_kib: int | None = None,
            stats_interval: float = STATS_INTERVAL, metrics: str | None = None,
            write_format: str | None = None, snaplen: int | None = None,
            args: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Attribute every TCP RST in FILE... [BPF EXPRESSION].

    Several files are read as one timeline merged by timestamp ("-" is stdin); pcap, pcapng
    and gzip are detected by content.  Words after the files are a tcpdump filter.
    """
    from rstlens.cli.summary import print_summary
    from rstlens.errors import RstlensError
    from rstlens.parsers import CaptureError
    from rstlens.pipeline import run
    from rstlens.stop_signals import Abandoned, StopSignals

    if interface:
        files: list[str] = []
        trailing_bpf = " ".join(args) or None  # all words are the filter
        if read_files:
            _usage("give either -i IFACE or files, not both", as_json)
    else:
        files, trailing_bpf = split_inputs_and_filter(args)
        files = list(read_files) + files
        if not files:
            _usage("no input file (give FILE... or -r FILE, or -i IFACE)", as_json)
    if bpf_option and trailing_bpf:
        _usage("give the filter either with -f or after the files, not both", as_json)
    options = RunOptions(
        bpf=bpf_option or trailing_bpf,
        count=count,
        core=CoreOptions(idle_timeout=idle_timeout, close_delay=close_delay, max_flows=max_flows),
        linger=linger,
        interface=interface,
        tunnel_depth=tunnel_depth,
        jobs=jobs,
        sensor=_sensor_options(interface, rotate, rotate_rows, write_file, write_rotate, write_size,
                               write_count, write_max_bytes, buffer_kib, stats_interval, metrics,
                               as_json, write_format, snaplen),
    )
    if dask_address is not None:
        if interface:
            _usage("--dask reads files, not -i IFACE", as_json)
        _on_cluster(dask_address, files, outdir, options, rotate, as_json, quiet, strict)
    stop = StopSignals()
    try:
        view = _watch(options, quiet)
        tty_live = interface is not None and view is not None and type(view).__name__ == "LiveView"
        with _Progress(enabled=not quiet and sys.stderr.isatty() and not tty_live) as progress, stop, \
                _Showing(view):
            summary = run(files, outdir, options, progress=progress.update if progress.enabled else None,
                          on_open=_announce if interface else None, stop=stop, watch=view)
    except CaptureError as exc:
        fail(f"{exc}", 2, as_json)
    except RstlensError as exc:
        fail(f"{exc}", 2, as_json)
    except Abandoned:
        what = "terminated" if stop.received == signal.SIGTERM else "interrupted"
        fail(f"{what} again before the results were written: stopped without writing them; "
             f"{outdir} keeps its earlier output", stop.exit_status, as_json, prefix="rstlens: ")
    except OSError as exc:
        fail(f"cannot write the results: {exc.strerror or exc}: {exc.filename or outdir}"
             f" (the earlier output in {outdir} is kept)", 3, as_json)
    for note in _skipped_note(files, summary):
        click.echo(note, err=True)
    for note in summary.notes:
        click.echo(f"rstlens: note: {note}", err=True)
    _report_inputs(summary, as_json)
    if summary.interrupted and interface:
        status = 0
    elif summary.interrupted or stop.requested:  # a signal after the reading: all was read
        status = stop.exit_status
    elif summary.unreadable_inputs or summary.partial_inputs or (strict and summary.has_warnings):
        status = 1
    else:
        status = 0
    if as_json:
        click.echo(json.dumps({**summary.to_dict(), "exit_status": status}, indent=2))
    elif not quiet:
        print_summary(summary, outdir)
    if summary.interrupted and interface:
        click.echo(f"rstlens: capture on {interface} stopped", err=True)  # the normal end
    elif summary.interrupted or stop.requested:
        what, by = ("terminated", "SIGTERM") if stop.received == signal.SIGTERM else ("interrupted", "Ctrl-C")
        click.echo(f"rstlens: {what}: results cover the packets read before {by}", err=True)
    sys.exit(status)


def _report_inputs(summary: Any, as_json: bool) -> None:
    """Each input's warnings and errors on stderr; nothing readable: exit 2 (nothing was read,
    nothing written: the error lines say why)."""
    for info in summary.inputs:
        for w in info.warnings:
            click.echo(f"rstlens: {info.path}: warning: {w}", err=True)
        if info.error:
            click.echo(f"rstlens: {info.path}: error: {info.error}", err=True)
    if summary.nothing_readable:
        errors = "; ".join(f"{i.path}: {i.error}" for i in summary.inputs if i.error)
        fail(f"no input could be read ({errors})", 2, as_json, summary=summary, echo=False)


def _on_cluster(address: str, files: list[str], outdir: Path, options: RunOptions,
                interval: float | None, as_json: bool, quiet: bool, strict: bool) -> NoReturn:  # fmt: skip
    """`analyze --dask ADDRESS`: every sensor's timeline on the cluster, one dataset out."""
    from rstlens.cli.summary import print_summary
    from rstlens.errors import RstlensError
    from rstlens.parallel.cluster import run_on_cluster, sensors_of

    try:
        from distributed import Client
    except ImportError:
        fail("--dask needs dask.distributed: pip install 'rstlens[dask]'", 2, as_json)
    try:
        sensors = sensors_of(files)
        connect: Any = Client  # untyped constructor
        with connect(address, timeout="30s") as client:
            summary = run_on_cluster(client, sensors, outdir.absolute(), options, interval)
    except RstlensError as exc:
        fail(f"{exc}", 2, as_json)
    except OSError as exc:  # the scheduler unreachable, the dataset not writable
        fail(f"{exc.strerror or exc}", 3 if getattr(exc, "filename", None) else 2, as_json)
    for note in summary.notes:
        click.echo(f"rstlens: note: {note}", err=True)
    for w in summary.warnings:
        click.echo(f"rstlens: warning: {w}", err=True)
    _report_inputs(summary, as_json)
    bad = summary.unreadable_inputs or summary.partial_inputs or (strict and summary.has_warnings)
    status = 1 if bad else 0
    if as_json:
        click.echo(json.dumps({**summary.to_dict(), "exit_status": status}, indent=2))
    elif not quiet:
        print_summary(summary, outdir)
    sys.exit(status)


def fail(message: str, status: int, as_json: bool, summary: Summary | None = None,
         echo: bool = True, prefix: str = "rstlens: error: ") -> NoReturn:  # fmt: skip
    """One line on stderr; with --json also the error object on stdout; exit `status`."""
    if echo:
        click.echo(prefix + message, err=True)
    if as_json:
        obj: dict[str, Any] = {"error": message, "exit_status": status}
        if summary is not None:
            obj["inputs"] = summary.to_dict()["inputs"]
        click.echo(json.dumps(obj, indent=2))
    sys.exit(status)


def _usage(message: str, as_json: bool) -> None:
    if as_json:
        fail(message, 2, True)
    raise click.UsageError(message)


def _skipped_note(given: list[str], summary: Summary) -> list[str]:
    """One note per directory argument in which files were skipped as not captures."""
    import os

    notes = []
    for d in given:
        if d == "-" or not os.path.isdir(d):
            continue
        skipped = summary.skipped_inputs(d)
        if skipped:
            notes.append(f"rstlens: {d}: note: skipped {len(skipped)} file(s) that are not "
                         f"captures (e.g. {skipped[0]})")  # fmt: skip
    return notes


def _announce(inputs: list[InputInfo]) -> None:
    """tcpdump's habit: say when the capture is open (scripts wait for this line)."""
    from rstlens.parsers._linktypes import name

    info = inputs[0]
    links = ", ".join(name(t) for t in info.link_types)
    click.echo(f"rstlens: listening on {info.path}, link type {links} (Ctrl-C to stop)", err=True)


class _Progress:
    """A rich progress bar on stderr counted in bytes read (only on a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )  # fmt: skip

            bar = Progress(
                "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                console=Console(stderr=True),
            )  # fmt: skip
            bar.start()
            self._bar, self._task = bar, bar.add_task("reading", total=None)
        return self

    def update(self, done: int, total: int | None) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()



# ---- the live sensor (issue 19) ----------------------------------------------------------
def _sensor_options(interface: str | None, rotate: float | None, rotate_rows: int | None,
                    write_file: str | None, write_rotate: float | None, write_size: float | None,
                    write_count: int | None, write_max_bytes: int | None, buffer_kib: int | None,
                    stats_interval: float, metrics: str | None, as_json: bool,
                    write_format: str | None = None, snaplen: int | None = None) -> SensorOptions:  # fmt: skip
    """The sensor's options, checked: -w, -B and -s need -i, -G/-C/-W need -w."""
    if interface is None and (write_file or buffer_kib or snaplen is not None):
        _usage("-w, -B and -s capture live: give -i IFACE", as_json)
    if write_file is None and (write_rotate or write_size or write_count or write_max_bytes
                               or write_format):
        _usage("-G, -C, -W, --write-max-bytes and --write-format are for the packet files "
               "of -w FILE", as_json)
    if metrics is not None:
        from rstlens.sensor import parse_metrics_address

        try:
            parse_metrics_address(metrics)
        except ValueError as exc:
            _usage(str(exc), as_json)
    return SensorOptions(
        rotate=rotate, rotate_rows=rotate_rows, write_file=write_file, write_rotate=write_rotate,
        write_size=None if write_size is None else int(write_size * 1_000_000),
        write_count=write_count, write_bytes=write_max_bytes, stats_interval=stats_interval,
        metrics=metrics, buffer_kib=buffer_kib, snaplen=snaplen or SNAPLEN,
        write_format=write_format,
    )


def _watch(options: RunOptions, quiet: bool) -> Watch | None:
    """Live: the rich view on a terminal, else plain status lines every --stats-interval;
    the metrics endpoint reads the same monitor.  Files: only when --metrics is given."""
    from rstlens.sensor import LiveView, Monitor, StatusLines, serve_metrics

    s = options.sensor
    live = options.interface is not None
    if not live and s.metrics is None:
        return None
    monitor = Monitor()
    view: Watch
    if live and not quiet and sys.stderr.isatty():
        view = LiveView(monitor, options.interface or "")
    else:
        every = s.stats_interval if live and not quiet and s.stats_interval > 0 else float("inf")
        view = StatusLines(monitor, every, sys.stderr)
    if s.metrics is not None:
        _, (host, port) = serve_metrics(monitor, s.metrics)
        if not quiet:
            click.echo(f"rstlens: metrics on http://{host}:{port}/metrics", err=True)
    return view


class _Showing:
    """Starts and stops the live view around the run (status lines need nothing)."""

    def __init__(self, view: Watch | None) -> None:
        self.view = view

    def __enter__(self) -> _Showing:
        enter = getattr(self.view, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, *exc: object) -> None:
        leave = getattr(self.view, "__exit__", None)
        if leave is not None:
            leave(*exc)
