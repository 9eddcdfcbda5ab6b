"""`analyze --dask ADDRESS` / `analyze(..., client=...)`: many sensors' rotated captures over
a Dask cluster, one partitioned dataset out.

**Sensors.**  A sensor (a vantage point) is one timeline: its files are read merged by
timestamp, as one capture, exactly as a single-process `rstlens analyze` of those files
reads them, so connections that cross a file boundary are stitched by the timeline merge
(`rstlens.parsers._merge`) and every RST gets its verdict with all the evidence of its
sensor (host TTL profiles, bursts, the claimed sender carrying on in a later file).
Sensors are never merged.  On the command line each directory argument is a sensor named
after the directory (the capture files below it, recognised by content); a file argument
belongs to the sensor of its parent directory.  The API also takes a mapping
``{sensor name: [paths]}``.

**Partitioning.**  One Dask task per sensor: it analyses the sensor's timeline into a
temporary directory on its worker (the same pipeline as a local run, `jobs` threads), then
writes its rows into the dataset as parts of `interval` seconds: a connection goes into the
part of the interval in which it ended (its last packet), its RSTs with it.  The parts are
committed as the live sensor commits them (flows file, then resets file, each renamed into
place from a hidden temporary file), so a reader never sees an RST whose connection is in
no visible part.  Layout::

    OUTDIR/flows/sensor=NAME/date=YYYY-MM-DD/hour=HH/part-<interval start>-<run id>-<seq>.parquet
    OUTDIR/resets/sensor=NAME/date=.../part-<same name>.parquet

that is, the live sensor's layout (`rstlens.output.dataset`) with the sensor as the first
hive level: `rstlens.read`, reports, pandas, pyarrow, DuckDB and Spark read it alike, and
the latter four give `sensor`, `date` and `hour` columns.  Each sensor has its own run id.
The client holds the dataset's lock (``.rstlens-dataset.lock``) for the whole run; the
workers must see OUTDIR and the captures at the same paths (a shared file system).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rstlens.errors import RstlensError
from rstlens.options import RunOptions
from rstlens.output.commit import _fsync_dir
from rstlens.output.dataset import FLOWS_DIR, LOCK, RESETS_DIR, clean_dataset, part_name, partition
from rstlens.summary import Summary

DEFAULT_INTERVAL = 3600.0  # seconds per part when no --rotate is given
SENSOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # safe as a hive value and a path
_FAR_FUTURE_US = 253402300799_000_000


def sensors_of(paths: Sequence[str | os.PathLike[str]] | Mapping[str, Sequence[str | os.PathLike[str]]]) -> dict[str, list[str]]:
    """{sensor name: its capture files, in order}.  A mapping is taken as it is; otherwise a
    directory is a sensor named after it, a file belongs to its parent directory's sensor."""
    from rstlens.parsers._sources import expand_inputs

    groups: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    if isinstance(paths, Mapping):
        items = [(str(name), [os.fspath(p) for p in files]) for name, files in paths.items()]
    else:
        items = []
        for p in [os.fspath(x) for x in paths]:
            if os.path.isdir(p):
                folder = os.path.abspath(p)
                files, _ = expand_inputs([p])
            else:
                folder = os.path.dirname(os.path.abspath(p))
                files = [p]
            name = os.path.basename(folder.rstrip(os.sep)) or "root"
            if where.setdefault(name, folder) != folder:
                raise RstlensError(f"two sensors named {name!r} ({where[name]} and {folder}): "
                                   "give each sensor's directory a distinct name")  # fmt: skip
            items.append((name, files))
    for name, files in items:
        if not SENSOR_NAME.match(name):
            raise RstlensError(f"sensor name {name!r}: use letters, digits, '.', '_' and '-'")
        groups.setdefault(name, []).extend(files)
    if not groups:
        raise RstlensError("no input file")
    return groups


def analyze_sensor(sensor: str, files: list[str], outdir: str, options: RunOptions,
                   interval_s: float) -> dict[str, Any]:  # fmt: skip
    """One Dask task: analyse one sensor's timeline and commit its parts into `outdir`.
    Returns {"sensor", "summary" (a dict), "parts" (relative paths below flows/)}."""
    from rstlens.pipeline import run

    with tempfile.TemporaryDirectory(prefix="rstlens-dask-") as tmp:
        summary = run(files, Path(tmp), options)
        parts: list[str] = []
        if not summary.nothing_readable:
            parts = write_parts(Path(tmp), Path(outdir), sensor, int(interval_s * 1e6))
    return {"sensor": sensor, "summary": summary.to_dict(), "parts": parts}


def write_parts(staging: Path, outdir: Path, sensor: str, interval_us: int) -> list[str]:
    """The run in `staging` (flows.parquet, resets.parquet) as parts of `interval_us` in the
    dataset `outdir`, below ``sensor=NAME``: a connection in the part of the interval of its
    last packet, its RSTs with it; rows keep their order within a part."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from rstlens.output.schema import FLOWS_SCHEMA, METADATA_KEY, RESETS_SCHEMA, RUN_METADATA_KEY
    from rstlens.output.writer import ParquetSink

    # ParquetFile, not read_table: that one imports pyarrow.dataset (~0.3-1.5 s per worker)
    flows_file = pq.ParquetFile(staging / "flows.parquet")
    flows = flows_file.read()
    resets = pq.ParquetFile(staging / "resets.parquet").read()
    kv = flows_file.metadata.metadata or {}
    meta: dict[str, Any] = json.loads(kv[METADATA_KEY])
    meta.pop("schema_version", None)  # the sink writes its own
    run_meta: dict[str, Any] = json.loads(kv[RUN_METADATA_KEY]) if RUN_METADATA_KEY in kv else {}
    run_id = str(meta["run_id"])
    start = flows.column("ts").cast(pa.int64()).to_numpy()
    duration = flows.column("duration").to_numpy(zero_copy_only=False)
    last_us = start + np.rint(duration * 1e6).astype(np.int64)
    flow_interval = last_us - last_us % interval_us
    # each RST in its connection's part (uids are unique within a run)
    where = pc.index_in(resets.column("uid"), value_set=flows.column("uid")).to_numpy(zero_copy_only=False)
    if resets.num_rows and np.isnan(where.astype(float)).any():
        raise RstlensError(f"sensor {sensor}: an RST row without its connection row")
    rst_interval = flow_interval[where.astype(np.int64)] if resets.num_rows else np.empty(0, np.int64)
    intervals = np.unique(flow_interval) if flows.num_rows else np.array([], np.int64)
    written: list[str] = []
    for seq, begin in enumerate(intervals.tolist()):
        name = part_name(begin, run_id, seq)
        rel = f"sensor={sensor}/{partition(begin)}/{name}"
        part_id = name.removesuffix(".parquet")
        end = min(begin + interval_us, _FAR_FUTURE_US)
        bounds = {"interval_start": _iso(begin), "interval_end": _iso(end)}
        part_meta = dict(meta, part_id=part_id, sensor=sensor, **bounds)
        f_rows = flows.filter(pa.array(flow_interval == begin))
        r_rows = resets.filter(pa.array(rst_interval == begin))
        sinks = []
        for sub, table, schema in ((FLOWS_DIR, f_rows, FLOWS_SCHEMA), (RESETS_DIR, r_rows, RESETS_SCHEMA)):
            target = outdir / sub / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            sink = ParquetSink(target, schema, part_meta)
            sink.write(pa.Table.from_arrays(table.columns, schema=schema))
            sinks.append(sink)
        part = dict(part_id=part_id, run_id=run_id, seq=seq, sensor=sensor, **bounds,
                    rows={"flows": f_rows.num_rows, "resets": r_rows.num_rows})  # fmt: skip
        try:
            for sink in sinks:
                sink.finish(dict(run_meta, part=part))
            for sink in sinks:  # flows, then resets: the live sensor's commit order
                sink.move_into_place()
        except BaseException:
            for sink in sinks:
                sink.abort()
            raise
        for sink in sinks:
            _fsync_dir(sink.path.parent)
        written.append(rel)
    return written


def _iso(us: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat()


@contextlib.contextmanager
def _dataset_lock(outdir: Path) -> Any:
    """The dataset's writer lock, held by the client while the workers write (readers wait
    for commits in progress; a second writer is refused)."""
    (outdir / FLOWS_DIR).mkdir(parents=True, exist_ok=True)
    (outdir / RESETS_DIR).mkdir(parents=True, exist_ok=True)
    fd = os.open(outdir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RstlensError(f"another rstlens run is writing to {outdir}") from None
    try:
        yield clean_dataset(outdir)
    finally:
        os.close(fd)


def run_on_cluster(client: Any, sensors: Mapping[str, Sequence[str]], outdir: Path,
                   options: RunOptions, interval_s: float | None = None) -> Summary:  # fmt: skip
    """Analyse every sensor's timeline as one Dask task each on `client`'s cluster, into the
    dataset `outdir`.  The summary adds up the sensors' (`summary.parts`: every part)."""
    from rstlens.api import _sum_summaries

    started = time.perf_counter()
    outdir = Path(outdir).absolute()
    interval = interval_s if interval_s is not None else DEFAULT_INTERVAL
    # verdicts at the end of each sensor's input, as a single-process run of its files
    task_options = RunOptions(bpf=options.bpf, count=options.count, core=options.core,
                              linger=options.linger, tunnel_depth=options.tunnel_depth,
                              jobs=options.jobs)  # fmt: skip
    names = list(sensors)
    with _dataset_lock(outdir) as cleaned:
        futures = client.map(analyze_sensor, names, [list(map(os.path.abspath, sensors[n])) for n in names],
                             [str(outdir)] * len(names), [task_options] * len(names),
                             [interval] * len(names), pure=False)  # fmt: skip
        results: list[dict[str, Any]] = client.gather(futures)
    summaries = [Summary.from_dict(r["summary"]) for r in results]
    total = _sum_summaries([r["summary"] for r in results]) if results else Summary()
    total.inputs = [i for s in summaries for i in s.inputs]
    total.connections = sum(s.connections for s in summaries)
    total.rst_packets = sum(s.rst_packets for s in summaries)
    total.parts = [p for r in results for p in r["parts"]]
    total.interrupted = any(s.interrupted for s in summaries)
    # the sensors' top five merged: the top of their tops (exact when each sensor's list
    # reaches down to the fifth of the union, e.g. one sensor, or sensors of distinct hosts)
    hosts: Counter[str] = Counter()
    ports: Counter[int] = Counter()
    for s in summaries:
        hosts.update(dict((str(h), int(n)) for h, n in s.top_rst_hosts))
        ports.update(dict((int(p), int(n)) for p, n in s.top_rst_ports))
    total.top_rst_hosts, total.top_rst_ports = hosts.most_common(5), ports.most_common(5)
    if cleaned:
        total.notes.append(f"removed {len(cleaned)} temporary file(s) a dead run had left in {outdir}")
    for r, s in zip(results, summaries, strict=True):
        if s.nothing_readable:
            total.warnings.append(f"sensor {r['sensor']}: nothing readable")
    total.seconds = time.perf_counter() - started
    return total
