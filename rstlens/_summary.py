"""The end-of-run summary `rstlens analyze` prints on stderr (rich tables)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from rstlens._pipeline import Summary


def print_summary(s: Summary, outdir: Path) -> None:
    console = Console(stderr=True, highlight=False)
    console.print(
        f"[bold]{s.packets:,}[/] packets ({s.tcp_packets:,} TCP), [bold]{s.connections:,}[/] "
        f"TCP connections, [bold]{s.rst_packets:,}[/] RST packets in {s.seconds:.2f} s"
    )
    if s.conn_states:
        console.print(
            "conn_state: " + ", ".join(f"{k} {v:,}" for k, v in s.conn_states.items())
        )
    if s.rst_causes:
        t = Table(title="RSTs by cause", title_justify="left", show_edge=False)
        t.add_column("cause")
        t.add_column("RSTs", justify="right")
        for cause, n in s.rst_causes.items():
            t.add_row(cause, f"{n:,}")
        console.print(t)
        hosts = Table(title="Top RST senders", title_justify="left", show_edge=False)
        hosts.add_column("host (as on the wire)")
        hosts.add_column("RSTs", justify="right")
        for host, n in s.top_rst_hosts:
            hosts.add_row(host, f"{n:,}")
        ports = Table(title="Top service ports", title_justify="left", show_edge=False)
        ports.add_column("port")
        ports.add_column("RSTs", justify="right")
        for port, n in s.top_rst_ports:
            ports.add_row(str(port), f"{n:,}")
        console.print(hosts)
        console.print(ports)
    for w in s.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    console.print(f"wrote {outdir / 'flows.parquet'} and {outdir / 'resets.parquet'}")
