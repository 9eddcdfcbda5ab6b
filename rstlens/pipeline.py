"""One analysis run: capture input → flow core → verdicts → flows.parquet + resets.parquet.

Connections without RSTs are written as they finish (row groups, bounded memory); those
with RSTs wait for their verdicts, which are final at the end of the input.  Both files
are written atomically: on an error nothing is left half-written, and on Ctrl-C what was
analysed so far is finished and written, then the interrupt is reported.
"""

from __future__ import annotations

import copy
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from rstlens._version import __version__
from rstlens.attribution.attribute import attribute
from rstlens.attribution.hosts import HostProfiles
from rstlens.attribution.rst_flows import RstFlows
from rstlens.flows import layout as L
from rstlens.flows.engine import Finished, FlowEngine
from rstlens.options import RunOptions
from rstlens.output import arrow
from rstlens.output.records import flow_table
from rstlens.output.schema import CAUSES, CONN_STATES, DIRECTIONS, FLOWS_SCHEMA, RESETS_SCHEMA
from rstlens.output.writer import ParquetSink
from rstlens.parsers import CaptureReader, InputInfo, LiveReader
from rstlens.parsers._info import input_size
from rstlens.summary import Summary


def run(
    paths: Sequence[str],
    outdir: Path,
    options: RunOptions,
    progress: Callable[[int, int | None], None] | None = None,
    on_open: Callable[[list[InputInfo]], None] | None = None,
) -> Summary:
    """Analyse `paths` (or a live interface) into `outdir`/flows.parquet and
    `outdir`/resets.parquet."""
    started = time.perf_counter()
    live = options.interface is not None
    if live:
        paths = [options.interface]  # type: ignore[list-item]
    # open the input first: a bad interface or filter fails before anything is created
    reader: CaptureReader | LiveReader
    if live:
        reader = LiveReader(options.interface, bpf=options.bpf, count=options.count,  # type: ignore[arg-type]
                            tunnel_depth=options.tunnel_depth)
    else:
        reader = CaptureReader(list(paths), bpf=options.bpf, count=options.count,
                               tunnel_depth=options.tunnel_depth)
    if on_open is not None:
        on_open(reader.inputs)
    outdir.mkdir(parents=True, exist_ok=True)
    sources = [source_name(p, live) for p in paths]
    meta = {
        "rstlens_version": __version__,
        "inputs": [{"path": p, "size": None if live else input_size(p)} for p in paths],
        "options": {"bpf": options.bpf, "count": options.count, "linger": options.effective_linger,
                    "interface": options.interface, "tunnel_depth": options.tunnel_depth,
                    **asdict(options.core)},
    }
    flows_sink = ParquetSink(outdir / "flows.parquet", FLOWS_SCHEMA, meta)
    resets_sink = ParquetSink(outdir / "resets.parquet", RESETS_SCHEMA, meta)
    summary = Summary()
    profiles = HostProfiles()
    rst_flows = RstFlows()
    states: Counter[str] = Counter()
    names: dict[tuple[int, int], str] = {}  # address text, formatted once per run

    def on_finished(fin: Finished) -> None:
        profiles.add(fin.F, fin.K)
        counts = np.bincount(fin.F[:, L.CONN_STATE], minlength=len(CONN_STATES))
        states.update({CONN_STATES[k]: int(c) for k, c in enumerate(counts) if c})
        has_rst = fin.F[:, L.RST_COUNT] > 0
        if has_rst.any():
            # records of the two parts apart, rather than filtering one table (which would
            # import pyarrow.compute); the RST part waits for its verdicts on its own
            rst = Finished(fin.F[has_rst], fin.K[has_rst], fin.H[has_rst])
            table, serials = flow_table(rst, sources, names)
            # copies of the two columns: views would keep all of `rst.F` until the verdicts
            rst_flows.add(table, serials, rst.F[:, L.ORIG_IS_A].copy(), rst.K,
                          rst.F[:, L.PKT_LAST].copy())  # fmt: skip
            fin = Finished(fin.F[~has_rst], fin.K[~has_rst], fin.H[~has_rst])
        flows_sink.write(flow_table(fin, sources, names)[0])

    verdicts = _VerdictCounts()

    def finalize(flows: RstFlows, rsts: np.ndarray) -> None:
        resets, rst_flow_rows = attribute(rsts, flows, profiles, sources)
        if rst_flow_rows.num_rows:
            flows_sink.write(rst_flow_rows)
        resets_sink.write(resets)
        verdicts.add(resets)

    engine = FlowEngine(options.core, on_finished)
    linger = options.effective_linger
    linger_us = None if linger is None else int(linger * 1e6)
    next_check = 0
    try:
        try:
            for batch in reader:
                engine.feed(batch)
                if progress is not None:
                    progress(reader.bytes_read, reader.bytes_total)
                # capture time; on a live link the wall clock moves it on when it is quiet
                now = engine.now
                if live:
                    now = max(now, int(time.time() * 1e6))
                    engine.advance(now)
                if linger_us is not None and now >= next_check:
                    # verdicts of connections that ended more than `linger` ago are final
                    done = rst_flows.split(now - linger_us)
                    if len(done):
                        finalize(done, engine.take_rsts(done.all_serials()))
                    next_check = now + max(linger_us // 4, 1_000_000)
        except KeyboardInterrupt:
            summary.interrupted = True
        summary.interrupted = summary.interrupted or reader.interrupted
        engine.finish()
        finalize(rst_flows, engine.rsts)
        _fill_summary(summary, reader, engine, states, verdicts)
        summary.seconds = time.perf_counter() - started
        if summary.unreadable_inputs == len(summary.inputs):
            # nothing could be read: leave an earlier run's output in `outdir` as it was
            flows_sink.abort()
            resets_sink.abort()
            return summary
        run_meta = {"summary": summary.to_dict()}
        flows_sink.commit(run_meta)
        resets_sink.commit(run_meta)
    except BaseException:
        flows_sink.abort()
        resets_sink.abort()
        raise
    return summary


def source_name(path: str, live: bool) -> str:
    """How an input is named in the records: the interface, <stdin>, or the file's name."""
    if live:
        return path
    return "<stdin>" if path == "-" else os.path.basename(path)


class _VerdictCounts:
    """RST counts for the summary, added up as verdicts are written."""

    def __init__(self) -> None:
        self.rsts = 0
        self.causes: Counter[str] = Counter()
        self.senders: Counter[str] = Counter()
        self.ports: Counter[int] = Counter()

    def add(self, resets: pa.Table) -> None:
        self.rsts += resets.num_rows
        causes = np.bincount(arrow.enum_codes(resets.column("cause"), CAUSES), minlength=len(CAUSES))
        self.causes.update({c: int(k) for c, k in zip(CAUSES, causes, strict=True) if k})
        self.senders.update(resets.column("src_h").to_pylist())
        from_resp = arrow.enum_codes(resets.column("direction"), DIRECTIONS) == DIRECTIONS.index("resp")
        src_p = arrow.numbers(resets.column("src_p"), np.uint16)
        dst_p = arrow.numbers(resets.column("dst_p"), np.uint16)
        # the service port: the responder's port, whichever way the RST went
        ports, counts = np.unique(np.where(from_resp, src_p, dst_p), return_counts=True)
        self.ports.update(dict(zip(ports.tolist(), counts.tolist(), strict=True)))


def _fill_summary(s: Summary, reader: CaptureReader | LiveReader, engine: FlowEngine,
                  states: Counter[str], verdicts: _VerdictCounts) -> None:  # fmt: skip
    st = reader.stats
    s.packets = st.packets
    s.tcp_packets = st.tcp
    s.decode = {k: getattr(st, k) for k in st.__dataclass_fields__}
    s.core = engine.counters()
    s.connections = s.core["connections"]
    s.rst_packets = verdicts.rsts
    s.conn_states = dict(states.most_common())
    s.rst_causes = dict(verdicts.causes.most_common())
    s.top_rst_hosts = verdicts.senders.most_common(5)
    s.top_rst_ports = verdicts.ports.most_common(5)
    s.inputs = [copy.deepcopy(i) for i in reader.inputs]  # a snapshot: a live reader goes on
    if s.core["evicted"]:
        s.warnings.append(f"{s.core['evicted']} connections evicted early (flow table full; raise --max-flows)")
    if st.ip_fragments:
        s.warnings.append(f"{st.ip_fragments} IP fragments counted, not reassembled")
