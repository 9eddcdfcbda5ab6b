"""The end-of-run summary `rstlens analyze` prints on stderr.

On a terminal it is drawn with rich; anywhere else (a log, a pipe, CI) it is plain aligned
text: no wrapping at 80 columns, no box drawing, and the run does not pay the ~30 ms that
importing rich costs (a tenth of the start-up).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rstlens.summary import Summary


@dataclass(frozen=True)
class _Table:
    title: str
    header: tuple[str, str]  # a label column, then a right-aligned count column
    rows: list[tuple[str, str]]


def print_summary(s: Summary, outdir: Path, stream: TextIO | None = None) -> None:
    stream = sys.stderr if stream is None else stream
    tables = []
    if s.rst_causes:
        tables = [
            _Table("RSTs by cause", ("cause", "RSTs"), [(c, f"{n:,}") for c, n in s.rst_causes.items()]),
            _Table("Top RST senders", ("host (as on the wire)", "RSTs"),
                   [(h, f"{n:,}") for h, n in s.top_rst_hosts]),
            _Table("Top service ports", ("port", "RSTs"), [(str(p), f"{n:,}") for p, n in s.top_rst_ports]),
        ]  # fmt: skip
    if stream.isatty():
        _print_rich(s, outdir, tables, stream)
    else:
        stream.write("".join(line + "\n" for line in _plain_lines(s, outdir, tables)))


def _headline(s: Summary, bold: tuple[str, str] = ("", "")) -> str:
    b, e = bold
    return (
        f"{b}{s.packets:,}{e} packets ({s.tcp_packets:,} TCP), {b}{s.connections:,}{e} TCP "
        f"connections, {b}{s.rst_packets:,}{e} RST packets in {s.seconds:.2f} s"
    )


def _surges(s: Summary) -> list[str]:
    """One line per SYN flood or scan (`rstlens.surges`)."""
    lines = []
    for x in s.surges:
        seconds = (x.last_ts - x.first_ts) / 1e6
        if x.kind == "syn_flood":
            who = f"SYN flood at {x.host}: {x.attempts:,} failed attempts from ~{x.sources:,} sources"
        else:
            who = f"SYN scan from {x.host}: {x.attempts:,} failed attempts to ~{x.targets:,} targets"
        lines.append(f"{who}, {x.rate:,.0f}/s over {seconds:,.1f} s")
    return lines


def _conn_states(s: Summary) -> str:
    return "conn_state: " + ", ".join(f"{k} {v:,}" for k, v in s.conn_states.items())


def _wrote(outdir: Path, s: Summary | None = None) -> str:
    if s is not None and s.parts:
        return f"wrote {len(s.parts)} part(s) into {outdir / 'flows'} and {outdir / 'resets'}"
    return f"wrote {outdir / 'flows.parquet'} and {outdir / 'resets.parquet'}"


def _capture(s: Summary) -> list[str]:
    """libpcap's counters and the loss estimate (live runs; files have no kernel counters)."""
    c = s.capture
    if not c or not any(i.format == "live" for i in s.inputs):
        return []
    return [f"capture: {int(c.get('received', 0)):,} received, {int(c.get('dropped', 0)):,} dropped "
            f"by the kernel, {int(c.get('if_dropped', 0)):,} by the interface; capture loss "
            f"estimate {float(c.get('loss_estimate', 0.0)):.2%} of connections"]  # fmt: skip


def _plain_lines(s: Summary, outdir: Path, tables: list[_Table]) -> list[str]:
    lines = [_headline(s)]
    if s.conn_states:
        lines.append(_conn_states(s))
    lines += _surges(s)
    for t in tables:
        lines.append(t.title)
        rows = [t.header, *t.rows]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines += [f"  {a:<{w0}}  {b:>{w1}}" for a, b in rows]
    lines += _capture(s)
    lines += [f"warning: {w}" for w in s.warnings]
    lines.append(_wrote(outdir, s))
    return lines


def _print_rich(s: Summary, outdir: Path, tables: list[_Table], stream: TextIO) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=stream, highlight=False)
    console.print(_headline(s, ("[bold]", "[/]")))
    if s.conn_states:
        console.print(_conn_states(s))
    for line in _surges(s):
        console.print(f"[bold red]{escape(line)}[/]")
    for t in tables:
        table = Table(title=t.title, title_justify="left", show_edge=False)
        table.add_column(t.header[0])
        table.add_column(t.header[1], justify="right")
        for row in t.rows:
            table.add_row(*map(escape, row))
        console.print(table)
    for line in _capture(s):
        console.print(escape(line))
    for w in s.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    console.print(escape(_wrote(outdir, s)))
