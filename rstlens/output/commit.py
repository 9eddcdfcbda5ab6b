"""A run's two files committed as one unit, and checked as one unit when read.

Every file of a run carries the same ``run_id`` in its ``rstlens`` metadata.  `commit_run`
finishes both temporary files (footer, fsync), removes the old marker, renames
``resets.parquet`` then ``flows.parquet`` into place, writes the marker
``OUTDIR/.rstlens-run`` (JSON: run id, each file's name, size and row count) through its
own temporary file, and fsyncs the directory.  SIGINT and SIGTERM are blocked (held
pending by the kernel) for the whole commit, so a signal cannot split it; they are
delivered when it is done.

What a reader sees at any moment: either the whole old pair, or the whole new pair, or —
only in the instant between the two renames (or forever if the machine dies or the
process is SIGKILLed exactly there) — files of two runs, which `check_pair` detects by
their run ids and refuses with one line (`read` retries briefly first, so a commit in
progress is waited for).  A failed commit (disk full while writing, any exception) leaves
the old pair and the old marker untouched.

`clean_stale_temps` removes what dead runs left behind: only rstlens' own temporary files
(``.<name>.<pid>.<12 hex>.tmp``) whose writer process no longer exists, and temporary files
of the older pattern without a PID (``.<name>.<12 hex>.tmp``) more than an hour old.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rstlens.errors import RstlensError

if TYPE_CHECKING:
    from rstlens.output.writer import ParquetSink

MARKER = ".rstlens-run"
OUTPUT_FILES = ("flows.parquet", "resets.parquet")
# the order the files are renamed into place; the marker comes last
COMMIT_ORDER = ("resets.parquet", "flows.parquet")
STALE_AGE_S = 3600.0  # temp files of the PID-less pattern are removed after this long

_TMP_PID = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<hex>[0-9a-f]{12})\.tmp$")
_TMP_OLD = re.compile(r"^\.(?P<name>.+)\.(?P<hex>[0-9a-f]{12})\.tmp$")
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def new_run_id() -> str:
    """A run's id: 16 random hex digits."""
    return os.urandom(8).hex()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM held pending (not lost) inside the block, delivered after it."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    except (AttributeError, OSError):  # no pthread_sigmask on this platform
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def commit_run(outdir: Path, sinks: Sequence[ParquetSink], run_id: str,
               run_metadata: dict[str, Any]) -> None:  # fmt: skip
    """Finish and move every sink's file into place, then write the marker, as one unit.

    On an exception before the renames every temporary file is removed by the caller's
    `abort()` and the old files (and marker) are as they were."""
    with signals_deferred():
        for sink in sinks:
            sink.finish(run_metadata)  # footer + fsync; may fail (disk full): nothing moved yet
        marker = outdir / MARKER
        entry = {
            "run_id": run_id,
            "files": {s.path.name: {"size": s.size, "rows": s.rows} for s in sinks},
        }
        tmp = _write_temp(marker, json.dumps(entry, sort_keys=True).encode())
        try:
            marker.unlink(missing_ok=True)  # from here on, the old marker no longer vouches
            by_name = {s.path.name: s for s in sinks}
            for name in [n for n in COMMIT_ORDER if n in by_name] + [
                n for n in by_name if n not in COMMIT_ORDER
            ]:
                by_name[name].move_into_place()
            os.replace(tmp, marker)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(outdir)


def _write_temp(target: Path, data: bytes) -> Path:
    tmp = temp_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside `path`: ``.<name>.<pid>.<12 hex>.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, someone else's
    return True


def clean_stale_temps(outdir: Path, now: float | None = None,
                      accept: Callable[[str], bool] | None = None) -> list[str]:  # fmt: skip
    """Remove temporary files dead rstlens runs left in `outdir`; their names, sorted.
    `accept`: which target names are rstlens' (default: the two files and the marker; the
    rolling dataset passes its part names)."""
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = list(os.scandir(outdir))
    except OSError:
        return removed
    ours = (*OUTPUT_FILES, MARKER)
    if accept is None:
        accept = ours.__contains__
    for e in entries:
        m = _TMP_PID.match(e.name)
        if m is not None and accept(m["name"]):
            stale = int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
        else:
            m = _TMP_OLD.match(e.name)
            if m is None or not accept(m["name"]):
                continue
            try:
                stale = now - e.stat(follow_symlinks=False).st_mtime > STALE_AGE_S
            except OSError:
                continue
        if stale and e.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(e.path)
                removed.append(e.name)
    return sorted(removed)


def read_marker(outdir: Path) -> dict[str, Any] | None:
    try:
        data = (outdir / MARKER).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RstlensError(f"cannot read {outdir / MARKER}: {exc.strerror or exc}") from None
    try:
        entry: dict[str, Any] = json.loads(data)
    except ValueError:
        raise RstlensError(f"{outdir / MARKER} is not rstlens' run marker") from None
    return entry


def check_pair(outdir: Path, run_ids: dict[str, str | None], sizes: dict[str, int]) -> None:
    """RstlensError unless the files are one run's: the same run id in each (files of
    rstlens before run ids carry none: accepted when none has one), matching the marker's
    id and sizes when there is a marker."""
    ids = set(run_ids.values())
    if len(ids) > 1:
        raise RstlensError(
            f"{outdir} holds mixed outputs of two runs ("
            + ", ".join(f"{n} from run {i or 'unknown'}" for n, i in sorted(run_ids.items()))
            + "): a commit was cut off between its renames; run the analysis again"
        )
    marker = read_marker(outdir)
    (run_id,) = ids
    if marker is None or run_id is None:
        return
    if marker.get("run_id") != run_id:
        raise RstlensError(
            f"{outdir}: the files are from run {run_id} but {MARKER} names run "
            f"{marker.get('run_id')}: mixed outputs of two runs; run the analysis again"
        )
    for name, size in sizes.items():
        want = marker.get("files", {}).get(name, {}).get("size")
        if want is not None and want != size:
            raise RstlensError(
                f"{outdir / name} is {size} bytes, its run wrote {want}: changed since"
            )
