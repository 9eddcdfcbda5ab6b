"""The public Python API: `analyze()` and `read()`."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstlens.options import DEFAULT_CORE, DEFAULT_TUNNEL_DEPTH, CoreOptions, RunOptions
from rstlens.summary import Summary

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Analysis:
    """The result of a run: ``flows`` and ``resets`` as pandas DataFrames, plus the summary.

    Dtypes: ``ts`` is ``datetime64[us, UTC]``; enumerations (``conn_state``, ``cause``, ...)
    are categoricals; integer columns that can be missing are pandas nullable integers.
    """

    flows: pd.DataFrame
    resets: pd.DataFrame
    summary: Summary
    outdir: Path | None


def analyze(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Mapping[str, Sequence[str | os.PathLike[str]]],
    *,
    outdir: str | os.PathLike[str] | None = None,
    bpf: str | None = None,
    count: int | None = None,
    idle_timeout: float = DEFAULT_CORE.idle_timeout,
    close_delay: float = DEFAULT_CORE.close_delay,
    max_flows: int = DEFAULT_CORE.max_flows,
    linger: float | None = None,
    tunnel_depth: int = DEFAULT_TUNNEL_DEPTH,
    jobs: int = 1,
    client: Any = None,
    interval: float | None = None,
) -> Analysis:
    """Analyse capture files and attribute every TCP RST.

    Args:
        paths: one capture or several (merged into one timeline by timestamp); ``"-"`` is
            standard input.  pcap, pcapng and their gzip forms are detected by content.
        outdir: where to write ``flows.parquet`` and ``resets.parquet``; a temporary
            directory (removed afterwards) when omitted.
        bpf: a tcpdump filter expression applied to every input.
        count: stop after this many packets.
        idle_timeout: seconds of inactivity after which a connection ends (Zeek's 5 min).
        close_delay: seconds a closed or reset connection lingers (Zeek's 5 s).
        max_flows: open connections kept; past it the longest idle ones are evicted.
        linger: seconds (capture time) after a connection ends before its RST verdicts are
            final; None finalises them at the end of the input, using all the evidence.
        tunnel_depth: tunnel layers decoded around a packet (Zeek's default, 2); packets
            nested deeper are dropped and counted.
        jobs: cores to use (0: all); the output is the same whatever the number
            (`analyze -j`).
        client: a ``dask.distributed.Client``: every sensor's timeline is analysed on its
            cluster, into the partitioned dataset `outdir` (required; the workers must see
            it and the captures at the same paths).  `paths` may then also be a mapping
            {sensor name: [paths]}; otherwise each directory is a sensor (a file: its
            parent directory's).  See `rstlens.parallel.cluster`.
        interval: with `client`, seconds per part of the dataset (default 3600).

    Raises:
        rstlens.RstlensError: no input could be read, or a bad filter expression.
    """
    # the numba core loads on first use, not on `import rstlens`
    from rstlens.errors import RstlensError
    from rstlens.pipeline import run
    from rstlens.stop_signals import Abandoned, StopSignals

    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if client is not None:
        return _analyze_on_cluster(client, paths, outdir, interval, bpf=bpf, count=count,
                                   core=CoreOptions(idle_timeout=idle_timeout, close_delay=close_delay,
                                                    max_flows=max_flows),
                                   linger=linger, tunnel_depth=tunnel_depth, jobs=jobs)  # fmt: skip
    assert not isinstance(paths, Mapping), "a mapping of sensors needs a Dask client"
    names = [os.fspath(p) for p in paths]
    options = RunOptions(
        bpf=bpf,
        count=count,
        core=CoreOptions(idle_timeout=idle_timeout, close_delay=close_delay, max_flows=max_flows),
        linger=linger,
        tunnel_depth=tunnel_depth,
        jobs=jobs,
    )
    with tempfile.TemporaryDirectory(prefix="rstlens-") as tmp:
        target = Path(outdir) if outdir is not None else Path(tmp)
        # Ctrl-C ends the reading and the results are still written (main thread only);
        # a second one gives them up and raises KeyboardInterrupt
        try:
            with StopSignals((signal.SIGINT,)) as stop:
                summary = run(names, target, options, stop=stop)
        except Abandoned:
            raise KeyboardInterrupt from None
        if summary.nothing_readable:
            errors = "; ".join(i.error for i in summary.inputs if i.error)
            raise RstlensError(f"no input could be read: {errors}")
        result = read(target)
        result.summary = summary
        result.outdir = Path(outdir) if outdir is not None else None
        return result


def _analyze_on_cluster(client: Any, paths: Any, outdir: str | os.PathLike[str] | None,
                        interval: float | None, **options: Any) -> Analysis:  # fmt: skip
    from rstlens.errors import RstlensError
    from rstlens.parallel.cluster import run_on_cluster, sensors_of

    if outdir is None:
        raise RstlensError("analyze(client=...) needs an outdir the workers can write to")
    summary = run_on_cluster(client, sensors_of(paths), Path(outdir), RunOptions(**options), interval)
    if summary.nothing_readable:
        errors = "; ".join(i.error for i in summary.inputs if i.error)
        raise RstlensError(f"no input could be read: {errors}")
    result = read(outdir)
    result.summary = summary
    result.outdir = Path(outdir)
    return result


def read(outdir: str | os.PathLike[str]) -> Analysis:
    """Load the results of an earlier run from its output directory.

    The two files are checked to be one run's (the run id in their metadata, and the
    marker ``.rstlens-run`` when present); a commit in progress is waited for (up to about
    a second).

    A rolling dataset (``analyze --rotate``: ``OUTDIR/flows/`` and ``OUTDIR/resets/``) is
    read whole, every part of every run: each part's two files must carry its part id and
    run id; a flows part whose resets twin is not there yet is a commit in progress (waited
    for) or, when no run is writing, what a killed run left (left out, with a note in the
    summary; the next run there removes it).  The summary adds up the runs' last parts.

    Raises:
        rstlens.RstlensError: no results there (missing directory or file, not Parquet),
            or files of two different runs side by side.
    """
    from rstlens.errors import RstlensError
    from rstlens.output.dataset import is_dataset

    out = Path(outdir)
    if not out.is_dir():
        raise RstlensError(f"no rstlens output in {out}: not a directory")
    if is_dataset(out):
        return _read_dataset(out)
    for attempt in range(10):
        try:
            return _read_pair(out)
        except _MixedPair as exc:
            if attempt == 9:
                raise RstlensError(str(exc)) from None
            time.sleep(0.1)  # a commit between its renames takes microseconds
    raise AssertionError("unreachable")


class _MixedPair(Exception):
    pass


def _read_pair(out: Path) -> Analysis:
    import pyarrow.parquet as pq

    from rstlens.errors import RstlensError
    from rstlens.output.commit import check_pair
    from rstlens.output.schema import METADATA_KEY, RUN_METADATA_KEY

    handles = {}
    try:
        for name in ("flows.parquet", "resets.parquet"):
            try:
                handles[name] = open(out / name, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                raise RstlensError(f"no rstlens output in {out}: {name} is missing") from None
            except OSError as exc:
                raise RstlensError(f"cannot read {out / name}: {exc.strerror or exc}") from None
        # each open file is one version of it, whatever is renamed meanwhile
        metas: dict[str, dict[bytes, bytes]] = {}
        tables = {}
        for name, fh in handles.items():
            try:
                pf = pq.ParquetFile(fh)
                metas[name] = pf.metadata.metadata or {}
                tables[name] = pf.read()
            except Exception as exc:  # pyarrow raises ArrowInvalid, OSError ...
                raise RstlensError(f"{out / name} is not a readable Parquet file: {exc}") from None
        run_ids = {n: _run_id(m.get(METADATA_KEY)) for n, m in metas.items()}
        sizes = {n: os.fstat(fh.fileno()).st_size for n, fh in handles.items()}
        try:
            check_pair(out, run_ids, sizes)
        except RstlensError as exc:
            raise _MixedPair(str(exc)) from None
    finally:
        for fh in handles.values():
            fh.close()
    run_meta = metas["flows.parquet"].get(RUN_METADATA_KEY)
    summary = json.loads(run_meta).get("summary", {}) if run_meta else {}
    return Analysis(_to_pandas(tables["flows.parquet"]), _to_pandas(tables["resets.parquet"]),
                    Summary.from_dict(summary), out)  # fmt: skip


def _read_dataset(out: Path) -> Analysis:
    """Every complete part of the rolling dataset in `out`, as one Analysis."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rstlens.errors import RstlensError
    from rstlens.output.dataset import check_part, list_parts, orphan_resets, writer_alive
    from rstlens.output.schema import FLOWS_SCHEMA, RESETS_SCHEMA, RUN_METADATA_KEY

    notes: list[str] = []
    for attempt in range(10):
        pairs = list_parts(out)
        waiting = [p for p in pairs if p.resets is None]
        if not waiting or attempt == 9 or not writer_alive(out):
            break
        time.sleep(0.05)  # between a part's two renames
    for p in waiting:
        notes.append(f"part {p.rel} left out: its resets file is missing (a run killed while "
                     "committing it; the next run in this directory removes it)")  # fmt: skip
    stray = orphan_resets(out)
    if stray:
        raise RstlensError(f"{stray[0]}: a resets part without its flows part (files removed by hand?)")
    flows, resets = [], []
    last: dict[str, tuple[int, dict[str, Any]]] = {}  # run id -> (seq, summary of its last part)
    for pair in pairs:
        if pair.resets is None:
            continue
        check_part(pair)
        try:
            ft = pq.read_table(pair.flows)
            rt = pq.read_table(pair.resets)
            kv = pq.read_metadata(pair.flows).metadata or {}
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError ...
            raise RstlensError(f"part {pair.rel} is not readable Parquet: {exc}") from None
        flows.append(ft)
        resets.append(rt)
        run_meta = json.loads(kv[RUN_METADATA_KEY]) if RUN_METADATA_KEY in kv else {}
        part = run_meta.get("part", {})
        run_id, seq = str(part.get("run_id", "")), int(part.get("seq", 0))
        if run_id not in last or last[run_id][0] <= seq:
            last[run_id] = (seq, run_meta.get("summary", {}))
    if not pairs:
        raise RstlensError(f"no rstlens output in {out}: the dataset has no parts yet")

    def whole(tables: list[Any], schema: Any) -> Any:
        # enumerations as dictionaries differ part by part: one table, unified
        return pa.concat_tables(tables).unify_dictionaries() if tables else schema.empty_table()

    ft_all, rt_all = whole(flows, FLOWS_SCHEMA), whole(resets, RESETS_SCHEMA)
    summary = _sum_summaries([s for _, s in last.values()])
    summary.connections, summary.rst_packets = ft_all.num_rows, rt_all.num_rows
    summary.notes.extend(notes)
    return Analysis(_to_pandas(ft_all), _to_pandas(rt_all), summary, out)


def _sum_summaries(parts: list[dict[str, Any]]) -> Summary:
    """One summary of several runs (each run's last part holds its totals)."""
    from collections import Counter

    if len(parts) == 1:
        return Summary.from_dict(parts[0])
    total = Summary()
    causes: Counter[str] = Counter()
    states: Counter[str] = Counter()
    for data in parts:
        s = Summary.from_dict(data)
        total.packets += s.packets
        total.tcp_packets += s.tcp_packets
        total.seconds += s.seconds
        total.inputs += s.inputs
        total.warnings += s.warnings
        total.parts += s.parts
        total.packet_files += s.packet_files
        causes.update(s.rst_causes)
        states.update(s.conn_states)
        for k, v in s.capture.items():
            if k != "loss_estimate":
                total.capture[k] = total.capture.get(k, 0) + v
    total.rst_causes = dict(causes.most_common())
    total.conn_states = dict(states.most_common())
    return total


def _run_id(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw).get("run_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _to_pandas(table: Any) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa

    nullable = {
        pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
        pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype(),
        pa.float32(): pd.Float32Dtype(), pa.float64(): pd.Float64Dtype(),
    }  # fmt: skip
    return table.to_pandas(types_mapper=nullable.get)


__all__ = ["Analysis", "analyze", "read"]
