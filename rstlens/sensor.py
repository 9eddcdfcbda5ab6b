"""Watching a long run: the counters a live sensor reports, as plain status lines on stderr
(``--stats-interval``, like Suricata's stats log), a rich live view on a terminal, and a
Prometheus text endpoint (``--metrics [ADDR:]PORT``, loopback unless an address is given).

`Monitor` is fed by the pipeline (cheap attribute reads per batch, the verdicts as they
are written); the status lines, the view and the metrics endpoint only read it.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pyarrow as pa

from rstlens.options import METRICS_ADDRESS, TOP_WINDOW
from rstlens.output import arrow
from rstlens.output.schema import CAUSES, DIRECTIONS, SUBCAUSES


@dataclass
class CaptureStats:
    """libpcap's counters (``pcap_stats``) and the stream's own estimate of capture loss."""

    received: int = 0  # packets libpcap saw (ps_recv)
    dropped: int = 0  # dropped by the kernel: no room in the buffer (ps_drop)
    if_dropped: int = 0  # dropped by the interface or its driver (ps_ifdrop)
    gap_connections: int = 0  # connections with a content gap: acked data never captured
    connections: int = 0  # connections written (the denominator of the estimate)

    @property
    def loss_estimate(self) -> float:
        """Share of connections with a content gap (Zeek's capture_loss counts ACKs of
        unseen data the same way, per gap)."""
        return self.gap_connections / self.connections if self.connections else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"received": self.received, "dropped": self.dropped, "if_dropped": self.if_dropped,
                "gap_connections": self.gap_connections, "connections": self.connections,
                "loss_estimate": round(self.loss_estimate, 6)}  # fmt: skip


class DropLog:
    """When libpcap counted drops: the intervals between two reads of its counters in which
    the count (kernel + interface) went up, wall-clock microseconds, merged when they touch.

    A packet the kernel drops is counted when it arrives, so drops first seen at a read at
    `t1` happened after the previous read `t0` (for the first read: after the capture was
    opened): in (t0, t1].  The kernel drops a packet only when libpcap's ring is full, that
    is while packets not yet read at `t0` wait in it, so kernel drops also came after the
    first packet read since `t0` was captured: a loop held up for seconds (a slow write, a
    large finalisation) does not stretch the interval back over connections that ended
    before the burst that filled the ring.  Interface drops have no such bound (the
    interface drops on its own).  The pipeline reads the counters after every batch (at
    most `timeout_ms`, 200 ms, apart).  At most `keep` intervals are kept; past that the
    two oldest are merged (wider, never lost)."""

    def __init__(self, keep: int = 4096, opened_us: int | None = None) -> None:
        self.keep = keep
        self.starts: list[int] = []
        self.ends: list[int] = []
        # the first read's drops came after the capture was opened, `opened_us`
        self._last_us: int | None = opened_us
        self._last_kernel = 0
        self._last_interface = 0

    def observe(self, now_us: int, kernel: int, interface: int = 0, first_read_us: int | None = None) -> None:
        """A read of the counters at `now_us`: the totals dropped by the kernel and by the
        interface so far, and the capture time of the first packet read since the previous
        read (None when none was)."""
        t0 = self._last_us
        self._last_us = now_us
        more_kernel, more_interface = kernel > self._last_kernel, interface > self._last_interface
        self._last_kernel, self._last_interface = max(kernel, self._last_kernel), max(interface, self._last_interface)
        if not (more_kernel or more_interface):
            return
        start = now_us if t0 is None else t0  # (opened when is not known: at now)
        if more_kernel and not more_interface and first_read_us is not None and first_read_us <= now_us:
            # (a capture time past the wall clock: the two clocks differ, the bound is not used)
            start = max(start, first_read_us)
        if self.ends and self.ends[-1] >= start:
            self.ends[-1] = max(self.ends[-1], now_us)
        else:
            self.starts.append(start)
            self.ends.append(now_us)
        if len(self.starts) > self.keep:
            self.ends[0] = self.ends[1]
            del self.starts[1], self.ends[1]

    def overlaps(self, first_us: np.ndarray, last_us: np.ndarray, margin_us: int) -> np.ndarray:
        """Per connection: was it active (first packet .. last packet, widened by
        `margin_us` on both sides) during an interval with drops?"""
        if not self.starts:
            return np.zeros(len(first_us), bool)
        starts, ends = np.asarray(self.starts, np.int64), np.asarray(self.ends, np.int64)
        k = np.searchsorted(ends, first_us - margin_us, side="left")  # first interval not over
        inside = k < len(ends)
        hit = np.zeros(len(first_us), bool)
        hit[inside] = starts[k[inside]] <= last_us[inside] + margin_us
        return hit


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Monitor:
    """The live counters of a run."""

    started: float = field(default_factory=time.time)
    packets: int = 0
    tcp_packets: int = 0
    bytes: int = 0
    open_connections: int = 0
    connections: int = 0
    rsts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (cause, subcause)
    capture: CaptureStats = field(default_factory=CaptureStats)
    parts: int = 0
    last_part: str | None = None
    packet_files: int = 0
    _recent: deque[tuple[float, Counter[str], Counter[int], int]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, packets: int, tcp: int, nbytes: int, open_connections: int,
               connections: int, kernel: tuple[int, int, int] | None) -> None:  # fmt: skip
        with self._lock:
            self.packets, self.tcp_packets, self.bytes = packets, tcp, nbytes
            self.open_connections, self.connections = open_connections, connections
            if kernel is not None:
                self.capture.received, self.capture.dropped, self.capture.if_dropped = kernel

    def add_resets(self, resets: pa.Table, now: float | None = None) -> None:
        """Verdicts as they are written: counts by cause, and the last minute's senders
        and services."""
        if resets.num_rows == 0:
            return
        now = time.time() if now is None else now
        # counted column-wise (a scan's 500,000 verdicts had been 1.5 s of Python objects),
        # each Counter filled in the order of first appearance, as counting objects would
        causes = arrow.enum_codes(resets.column("cause"), CAUSES)
        sub = arrow.enum_codes_or_null(resets.column("subcause"), SUBCAUSES)
        pairs, pair_counts = arrow.first_seen_counts(causes * (len(SUBCAUSES) + 1) + sub + 1)
        by_cause = {(CAUSES[p // (len(SUBCAUSES) + 1)], SUBCAUSES[p % (len(SUBCAUSES) + 1) - 1]
                     if p % (len(SUBCAUSES) + 1) else ""): int(k)
                    for p, k in zip(pairs.tolist(), pair_counts.tolist(), strict=True)}  # fmt: skip
        from_resp = arrow.enum_codes(resets.column("direction"), DIRECTIONS) == DIRECTIONS.index("resp")
        src_p = arrow.numbers(resets.column("src_p"), np.uint16)
        dst_p = arrow.numbers(resets.column("dst_p"), np.uint16)
        ports, port_counts = arrow.first_seen_counts(np.where(from_resp, src_p, dst_p))
        services = Counter(dict(zip(ports.tolist(), port_counts.tolist(), strict=True)))
        senders = Counter(arrow.string_counts(resets.column("src_h")))
        with self._lock:
            self.rsts.update(by_cause)
            self._recent.append((now, senders, services, resets.num_rows))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - TOP_WINDOW:
            self._recent.popleft()

    def recent(self, now: float | None = None) -> tuple[list[tuple[str, int]], list[tuple[int, int]], int]:
        """The last minute's top RST senders, top services, and RST count."""
        now = time.time() if now is None else now
        with self._lock:
            self._trim(now)
            senders: Counter[str] = Counter()
            services: Counter[int] = Counter()
            n = 0
            for _, s, p, k in self._recent:
                senders.update(s)
                services.update(p)
                n += k
        return senders.most_common(5), services.most_common(5), n

    def rst_causes(self) -> Counter[str]:
        out: Counter[str] = Counter()
        with self._lock:
            for (cause, _), n in self.rsts.items():
                out[cause] += n
        return out


class StatusLines:
    """A plain line on `stream` every `interval` seconds: counters and rates since the last."""

    def __init__(self, monitor: Monitor, interval: float, stream: IO[str]) -> None:
        self.monitor = monitor
        self.interval = interval
        self.stream = stream
        self._last = time.monotonic()
        self._last_packets = 0
        self._last_rsts = 0

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        m = self.monitor
        dt = max(now - self._last, 1e-9)
        causes = m.rst_causes()
        rsts = sum(causes.values())
        pps = (m.packets - self._last_packets) / dt
        rps = (rsts - self._last_rsts) / dt
        self._last, self._last_packets, self._last_rsts = now, m.packets, rsts
        c = m.capture
        by_cause = ",".join(f"{k}={v}" for k, v in sorted(causes.items())) or "-"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return (f"rstlens: stats {stamp} packets={m.packets} pps={pps:.1f} tcp={m.tcp_packets} "
                f"open={m.open_connections} connections={m.connections} rsts={rsts} "
                f"rst_per_s={rps:.2f} causes={by_cause} received={c.received} "
                f"kernel_dropped={c.dropped} if_dropped={c.if_dropped} "
                f"loss_estimate={c.loss_estimate:.4f} parts={m.parts} "
                f"rss_mib={rss_bytes() / 2**20:.1f}")  # fmt: skip


class LiveView:
    """The terminal view (rich): rates, open connections, RSTs by cause, the last minute's
    top senders and services, drops.  Redrawn by `tick`."""

    def __init__(self, monitor: Monitor, interface: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self.monitor = monitor
        self.interface = interface
        self._rate = StatusLines(monitor, 0.0, io.StringIO())
        self._pps = 0.0
        self._rps = 0.0
        self._last = time.monotonic()
        self._live = Live(self.render(), console=Console(stderr=True), auto_refresh=False, transient=True)

    def render(self) -> Any:
        from rich.table import Table

        m = self.monitor
        t = Table(title=f"rstlens live on {self.interface}", show_header=False, expand=False)
        t.add_column("what")
        t.add_column("value")
        c = m.capture
        t.add_row("packets", f"{m.packets}  ({self._pps:.0f}/s)")
        t.add_row("open connections", f"{m.open_connections}  (written {m.connections})")
        causes = m.rst_causes()
        t.add_row("RSTs", f"{sum(causes.values())}  ({self._rps:.1f}/s)")
        for cause, n in causes.most_common():
            t.add_row(f"  {cause}", str(n))
        senders, services, _ = m.recent()
        t.add_row("top RST senders (1 min)", ", ".join(f"{h} {n}" for h, n in senders) or "-")
        t.add_row("top services (1 min)", ", ".join(f"{p} {n}" for p, n in services) or "-")
        t.add_row("drops", f"kernel {c.dropped}, interface {c.if_dropped} of {c.received}; "
                           f"loss estimate {c.loss_estimate:.2%}")  # fmt: skip
        t.add_row("parts written", f"{m.parts}  {m.last_part or ''}")
        return t

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= 1.0:
            dt = now - self._last
            rsts = sum(self.monitor.rst_causes().values())
            self._pps = (self.monitor.packets - self._rate._last_packets) / dt
            self._rps = (rsts - self._rate._last_rsts) / dt
            self._rate._last_packets, self._rate._last_rsts = self.monitor.packets, rsts
            self._last = now
            self._live.update(self.render(), refresh=True)

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()


def parse_metrics_address(spec: str) -> tuple[str, int]:
    """``PORT`` (on loopback) or ``ADDR:PORT`` (``[v6]:PORT`` too)."""
    host, sep, port = spec.rpartition(":")
    if not sep:
        host, port = METRICS_ADDRESS, spec
    host = host.strip("[]") or METRICS_ADDRESS
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--metrics wants PORT or ADDR:PORT, not {spec!r}")
    return host, int(port)


class _Collector:
    """The monitor's counters as Prometheus metric families, read at each scrape."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.monitor
        c = m.capture
        yield CounterMetricFamily("rstlens_packets", "Packets captured (every protocol)", value=m.packets)
        yield CounterMetricFamily("rstlens_tcp_packets", "TCP packets decoded", value=m.tcp_packets)
        yield CounterMetricFamily("rstlens_bytes", "Bytes captured", value=m.bytes)
        yield CounterMetricFamily("rstlens_connections", "Connections ended and written", value=m.connections)
        rst = CounterMetricFamily("rstlens_rsts", "RST packets with a final verdict",
                                  labels=["cause", "subcause"])  # fmt: skip
        with m._lock:
            items = sorted(m.rsts.items())
        for (cause, sub), n in items:
            rst.add_metric([cause, sub], n)
        yield rst
        yield CounterMetricFamily("rstlens_capture_received", "Packets libpcap received", value=c.received)
        drops = CounterMetricFamily("rstlens_capture_dropped", "Packets dropped before rstlens saw them",
                                    labels=["where"])  # fmt: skip
        drops.add_metric(["kernel"], c.dropped)
        drops.add_metric(["interface"], c.if_dropped)
        yield drops
        yield CounterMetricFamily("rstlens_gap_connections", "Connections with a content gap "
                                  "(acknowledged data never captured)", value=c.gap_connections)  # fmt: skip
        yield CounterMetricFamily("rstlens_parts", "Dataset parts committed", value=m.parts)
        yield GaugeMetricFamily("rstlens_open_connections", "Connections open in the flow table",
                                value=m.open_connections)  # fmt: skip
        yield GaugeMetricFamily("rstlens_capture_loss_ratio", "Share of connections with a content gap",
                                value=c.loss_estimate)  # fmt: skip
        yield GaugeMetricFamily("rstlens_resident_memory_bytes", "Resident memory", value=rss_bytes())
        yield GaugeMetricFamily("rstlens_start_time_seconds", "Unix time the run started", value=m.started)


def serve_metrics(monitor: Monitor, spec: str) -> tuple[Any, tuple[str, int]]:
    """Start the endpoint (a daemon thread); (server, (address, port bound))."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        from rstlens.errors import RstlensError

        raise RstlensError("--metrics needs prometheus_client: pip install 'rstlens[sensor]'") from None
    host, port = parse_metrics_address(spec)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(monitor))
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        from rstlens.errors import RstlensError

        raise RstlensError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    return server, (host, int(server.server_port))


__all__ = ["CaptureStats", "DropLog", "LiveView", "Monitor", "StatusLines", "parse_metrics_address",
           "rss_bytes", "serve_metrics"]
