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
from rstlens.output.commit import clean_stale_temps, commit_run, new_run_id, signals_deferred
from rstlens.output.records import flow_table
from rstlens.output.schema import CAUSES, CONN_STATES, DIRECTIONS, FLOWS_SCHEMA, RESETS_SCHEMA
from rstlens.output.writer import ParquetSink
from rstlens.parsers import CaptureReader, InputInfo, LiveReader
from rstlens.stop_signals import DONE, FINISHING, StopSignals
from rstlens.summary import Summary


def run(
    paths: Sequence[str],
    outdir: Path,
    options: RunOptions,
    progress: Callable[[int, int | None], None] | None = None,
    on_open: Callable[[list[InputInfo]], None] | None = None,
    stop: StopSignals | None = None,
) -> Summary:
    """Analyse `paths` (or a live interface) into `outdir`/flows.parquet and
    `outdir`/resets.parquet, committed as one unit (`rstlens.output.commit`).

    `stop`: the run's signal handlers (`rstlens.stop_signals`); its first signal ends the
    reading, a second abandons the run (`Abandoned`), and the pipeline tells it when the
    commit is done.  Without it, KeyboardInterrupt while reading ends the reading."""
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
        paths = reader.paths  # directories expanded
    if on_open is not None:
        on_open(reader.inputs)
    outdir.mkdir(parents=True, exist_ok=True)
    cleaned = clean_stale_temps(outdir)
    sources = [source_name(p, live) for p in paths]
    run_id = new_run_id()
    meta = {
        "rstlens_version": __version__,
        "run_id": run_id,
        "inputs": [_input_meta(i, live) for i in reader.inputs],
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
    stopping = False
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
                if stop is not None and stop.requested and not stopping:
                    # SIGINT/SIGTERM: no more reading; what was decoded is still fed
                    stopping = True
                    if live:
                        break
                    assert isinstance(reader, CaptureReader)
                    reader.stop()
        except KeyboardInterrupt:
            summary.interrupted = True
        if stop is not None:
            stop.phase = FINISHING
        summary.interrupted = summary.interrupted or reader.interrupted or stopping
        engine.finish()
        finalize(rst_flows, engine.rsts)
        _fill_summary(summary, reader, engine, states, verdicts)
        if isinstance(reader, CaptureReader):
            summary.skipped = list(reader.skipped)
        # the summary is what the files hold
        summary.connections = flows_sink.rows
        summary.rst_packets = resets_sink.rows
        if cleaned:
            summary.notes.append(
                f"removed {len(cleaned)} temporary file(s) a dead run had left in {outdir}")
        summary.seconds = time.perf_counter() - started
        if summary.nothing_readable:
            # nothing could be read: leave an earlier run's output in `outdir` as it was
            flows_sink.abort()
            resets_sink.abort()
            return summary
        run_meta = {"summary": summary.to_dict()}
        with signals_deferred():  # a signal now comes after the commit, and finds it DONE
            commit_run(outdir, [flows_sink, resets_sink], run_id, run_meta)
            if stop is not None:
                stop.phase = DONE
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


def _input_meta(info: InputInfo, live: bool) -> dict[str, object]:
    """How the metadata names an input: as given, its absolute path, size and head hash
    (explain finds and checks the capture by them)."""
    return {"path": info.path if info.path != "<stdin>" else "-", "size": None if live else info.size,
            "abspath": info.abspath, "head_sha256": info.head_sha256}  # fmt: skip


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
