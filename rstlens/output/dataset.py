"""The rolling output (``--rotate``): a hive-partitioned Parquet dataset, one part per interval.

Layout::

    OUTDIR/flows/date=YYYY-MM-DD/hour=HH/part-<YYYYmmddTHHMMSSZ>-<run id>-<seq>.parquet
    OUTDIR/resets/date=YYYY-MM-DD/hour=HH/part-<same name>.parquet
    OUTDIR/.rstlens-dataset.lock        held (flock) by the run writing; gone with it

A *part* is the pair of files with one name: the same schema and metadata as the two
single files, plus ``part_id`` (the name without ``.parquet``), ``interval_start`` /
``interval_end`` in the ``rstlens`` key, and under ``rstlens_run`` → ``part`` its rows,
libpcap's capture counters, the capture-loss estimate and the packet files written.

The commit order of a part, the guarantee readers rely on: both files are finished and
fsynced as hidden temporary files, then the flows file is renamed into place, then the
resets file, then both directories are fsynced (SIGINT/SIGTERM blocked throughout).  So
a reader never sees a resets row whose connection row is in no visible part; a flows part
without its resets twin is either a commit in progress (microseconds: `read` retries) or
the leftover of a run killed exactly between the two renames, which the next run in the
same OUTDIR removes (that interval is lost, as the current interval of any killed run is).

Every row is written once: a connection's row goes into the part open when it finished,
or, when it had RSTs, with its RSTs into the part open when their verdicts became final
(``--linger`` after its last packet).  Part names carry the run id and a sequence number:
a restart never overwrites, it appends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from rstlens.errors import RstlensError
from rstlens.output.commit import _fsync_dir, clean_stale_temps, signals_deferred
from rstlens.output.schema import FLOWS_SCHEMA, RESETS_SCHEMA
from rstlens.output.writer import ParquetSink

FLOWS_DIR, RESETS_DIR = "flows", "resets"
LOCK = ".rstlens-dataset.lock"
PART_RE = re.compile(r"^part-\d{8}T\d{6}Z-[0-9a-f]{16}-\d{5,}\.parquet$")
_PART_TMP = re.compile(r"^part-.*\.parquet$")


def is_dataset(outdir: Path) -> bool:
    """True when `outdir` holds the rolling layout (a ``flows/`` directory)."""
    return (Path(outdir) / FLOWS_DIR).is_dir()


def partition(start_us: int) -> str:
    t = datetime.fromtimestamp(start_us / 1e6, tz=timezone.utc)
    return f"date={t:%Y-%m-%d}/hour={t:%H}"


def part_name(start_us: int, run_id: str, seq: int) -> str:
    t = datetime.fromtimestamp(start_us / 1e6, tz=timezone.utc)
    return f"part-{t:%Y%m%dT%H%M%SZ}-{run_id}-{seq:05d}.parquet"


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat()


@dataclass
class PartPair:
    """One part as found on disk: its name below flows/ and resets/, and either file."""

    rel: str  # date=.../hour=.../part-....parquet
    flows: Path
    resets: Path | None


def list_parts(outdir: Path) -> list[PartPair]:
    """Every flows part of the dataset with its resets twin (None when missing), by name."""
    root = Path(outdir)
    pairs = []
    for f in (root / FLOWS_DIR).rglob("part-*.parquet"):
        if not PART_RE.match(f.name):
            continue
        rel = f.relative_to(root / FLOWS_DIR).as_posix()
        r = root / RESETS_DIR / rel
        pairs.append(PartPair(rel, f, r if r.is_file() else None))
    return sorted(pairs, key=lambda p: (p.flows.name, p.rel))


def orphan_resets(outdir: Path) -> list[Path]:
    """Resets parts without a flows twin (never written so: someone removed files)."""
    root = Path(outdir)
    return sorted(r for r in (root / RESETS_DIR).rglob("part-*.parquet")
                  if PART_RE.match(r.name)
                  and not (root / FLOWS_DIR / r.relative_to(root / RESETS_DIR)).is_file())  # fmt: skip


def writer_alive(outdir: Path) -> bool:
    """True while a run holds the dataset's lock (writing to it now)."""
    try:
        fd = os.open(Path(outdir) / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we got
    return False


def clean_dataset(outdir: Path) -> list[str]:
    """What dead runs left (the lock must be held): their temporary part files, and flows
    parts whose resets twin never came (killed between the two renames).  Relative names."""
    root = Path(outdir)
    removed: list[str] = []
    for sub in (FLOWS_DIR, RESETS_DIR):
        for d in sorted({p.parent for p in (root / sub).rglob("*")} | {root / sub}):
            if d.is_dir():
                gone = clean_stale_temps(d, accept=lambda n: _PART_TMP.match(n) is not None)
                removed += [(d / n).relative_to(root).as_posix() for n in gone]
    for pair in list_parts(root):
        if pair.resets is None:
            pair.flows.unlink(missing_ok=True)
            removed.append(pair.flows.relative_to(root).as_posix())
    return removed


class DatasetOutput:
    """Writes the parts of one run: `write_flows`/`write_resets` into the open part,
    `due`/`rotate` at interval ends, `commit` at the end of the run."""

    def __init__(self, outdir: Path, meta: dict[str, Any], run_id: str, rotate_s: float | None,
                 rotate_rows: int | None = None) -> None:  # fmt: skip
        self.outdir = Path(outdir)
        self.meta = meta
        self.run_id = run_id
        # None: parts by rows only, each from its first packet on, with no set end
        self.rotate_us = None if rotate_s is None else max(1, int(rotate_s * 1e6))
        self.rotate_rows = rotate_rows
        (self.outdir / FLOWS_DIR).mkdir(parents=True, exist_ok=True)
        (self.outdir / RESETS_DIR).mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.outdir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise RstlensError(f"another rstlens run is writing to {self.outdir}") from None
        self.cleaned = clean_dataset(self.outdir)
        self.seq = 0
        self.flows_rows = 0  # committed and open, over the run
        self.resets_rows = 0
        self.committed: list[str] = []  # part ids, in order
        self._flows: ParquetSink | None = None
        self._resets: ParquetSink | None = None
        self.start_us = 0
        self.end_us = 0
        self.gap_flows = 0  # connections of the open part with a content gap ('G'/'g')

    @property
    def open(self) -> bool:
        return self._flows is not None

    @property
    def current(self) -> str | None:
        """The id of the part being written."""
        return None if self._flows is None else self._flows.path.name.removesuffix(".parquet")

    def begin(self, now_us: int) -> None:
        """Open the part of the interval holding `now_us` (aligned to the epoch)."""
        assert self._flows is None
        if self.rotate_us is None:
            self.start_us, self.end_us = now_us, 1 << 62
        else:
            self.start_us = now_us - now_us % self.rotate_us
            self.end_us = self.start_us + self.rotate_us
        name = part_name(self.start_us, self.run_id, self.seq)
        rel = f"{partition(self.start_us)}/{name}"
        part_id = name.removesuffix(".parquet")
        meta = dict(self.meta, part_id=part_id, interval_start=_iso(self.start_us),
                    interval_end=_iso(min(self.end_us, 253402300799_000_000)))  # fmt: skip
        for sub in (FLOWS_DIR, RESETS_DIR):
            (self.outdir / sub / rel).parent.mkdir(parents=True, exist_ok=True)
        self._flows = ParquetSink(self.outdir / FLOWS_DIR / rel, FLOWS_SCHEMA, meta)
        self._resets = ParquetSink(self.outdir / RESETS_DIR / rel, RESETS_SCHEMA, meta)
        self.gap_flows = 0

    def ensure(self, now_us: int) -> None:
        if self._flows is None:
            self.begin(now_us if now_us > 0 else int(time.time() * 1e6))

    def due(self, now_us: int) -> bool:
        if self._flows is None or self._resets is None:
            return False
        if now_us >= self.end_us:
            return True
        return self.rotate_rows is not None and self._flows.rows + self._resets.rows >= self.rotate_rows

    def write_flows(self, table: pa.Table) -> None:
        self.ensure(0)
        assert self._flows is not None
        if table.num_rows:
            self.gap_flows += _gap_rows(table)
        self._flows.write(table)
        self.flows_rows += table.num_rows

    def write_resets(self, table: pa.Table) -> None:
        self.ensure(0)
        assert self._resets is not None
        self._resets.write(table)
        self.resets_rows += table.num_rows

    @property
    def part_rows(self) -> tuple[int, int]:
        if self._flows is None or self._resets is None:
            return 0, 0
        return self._flows.rows, self._resets.rows

    def commit(self, run_metadata: dict[str, Any]) -> str | None:
        """Finish the open part and move it into place (flows, then resets); its id."""
        if self._flows is None or self._resets is None:
            return None
        flows, resets = self._flows, self._resets
        part = dict(run_metadata.get("part", {}), part_id=flows.path.name.removesuffix(".parquet"),
                    run_id=self.run_id, seq=self.seq, interval_start=_iso(self.start_us),
                    interval_end=_iso(min(self.end_us, 253402300799_000_000)),
                    rows={"flows": flows.rows, "resets": resets.rows})  # fmt: skip
        meta = dict(run_metadata, part=part)
        with signals_deferred():
            try:
                flows.finish(meta)
                resets.finish(meta)
                flows.move_into_place()
                resets.move_into_place()
            except BaseException:
                flows.abort()
                resets.abort()
                raise
            _fsync_dir(flows.path.parent)
            _fsync_dir(resets.path.parent)
        self._flows = self._resets = None
        self.committed.append(str(part["part_id"]))
        self.seq += 1
        return str(part["part_id"])

    def rotate(self, now_us: int, run_metadata: dict[str, Any]) -> str | None:
        done = self.commit(run_metadata)
        self.begin(now_us)
        return done

    def abort(self) -> None:
        for sink in (self._flows, self._resets):
            if sink is not None:
                sink.abort()
        self._flows = self._resets = None

    def close(self) -> None:
        """Release the lock (the file stays: another run may hold it next)."""
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)


def _gap_rows(table: pa.Table) -> int:
    """Connections whose history has a content gap (Zeek's 'G'/'g': data acknowledged that
    the capture never saw): the stream's own estimate of capture loss."""
    import pyarrow.compute as pc

    h = table.column("history")
    gaps = pc.or_(pc.match_substring(h, "G"), pc.match_substring(h, "g"))
    return int(pc.sum(pc.cast(gaps, pa.int64())).as_py() or 0)


def read_part_metadata(path: Path) -> dict[str, Any]:
    from rstlens.output.writer import read_metadata

    return read_metadata(path)


def check_part(pair: PartPair) -> None:
    """RstlensError unless both files of the part carry its id and one run id."""
    assert pair.resets is not None
    want = pair.flows.name.removesuffix(".parquet")
    ids = {}
    for path in (pair.flows, pair.resets):
        try:
            m = read_part_metadata(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError ...
            raise RstlensError(f"{path} is not a readable Parquet file: {exc}") from None
        ids[path] = (m.get("part_id"), m.get("run_id"))
    if set(ids.values()) != {(want, want.split("-")[2])}:
        raise RstlensError(f"part {pair.rel}: its two files are not one part's ({json.dumps([list(v) for v in ids.values()])})")


def find_uid(outdir: Path, uid: str) -> PartPair | None:
    """The complete part whose flows file holds connection `uid` (newest parts first)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for pair in reversed(list_parts(outdir)):
        if pair.resets is None:
            continue
        col = pq.read_table(pair.flows, columns=["uid"]).column("uid")
        if pc.any(pc.equal(col, uid)).as_py():
            return pair
    return None
