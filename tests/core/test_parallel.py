"""`analyze -j N`: the output equals `-j 1`'s, row for row, on the corpora, the samples and
the benchmark file; the read-ahead thread hands on errors and stops cleanly."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rstlens.options import RunOptions
from rstlens.parallel import effective_jobs
from rstlens.parallel.threads import ReadAhead
from rstlens.pipeline import run
from tests.conftest import ROBUST_CORPUS, SAMPLE_PCAPS, SHARED, ZEEK_CORPUS, corpus_files

FIELD_CORPUS = SHARED / "corpus" / "field"


def _sample(files: list[Path], every: int) -> list[Path]:
    return files[::every]


# every 4th file of each corpus (a deterministic spread of link types, formats and faults)
# and every sample capture
CASES = [
    *_sample(corpus_files(ZEEK_CORPUS), 4),
    *_sample(corpus_files(ROBUST_CORPUS), 4),
    *_sample(corpus_files(FIELD_CORPUS), 4),
    *sorted(SAMPLE_PCAPS.glob("*.pcap")),
]


def _tables(outdir: Path) -> dict[str, object]:
    # metadata carries the run id and timings: the rows are what must be equal
    return {name: pq.read_table(outdir / name).replace_schema_metadata(None)
            for name in ("flows.parquet", "resets.parquet")}  # fmt: skip


def _analyze(paths: list[Path], outdir: Path, jobs: int) -> dict[str, object]:
    summary = run([str(p) for p in paths], outdir, RunOptions(jobs=jobs))
    if summary.nothing_readable:
        return {"nothing_readable": True}
    d = summary.to_dict()
    counts = {k: d[k] for k in ("packets", "tcp_packets", "connections", "rst_packets",
                                "conn_states", "rst_causes", "decode", "core")}  # fmt: skip
    return {**_tables(outdir), "summary": counts}


def _assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith(".parquet"):
            # same rows in the same order: -j only overlaps the stages
            assert a[key].equals(b[key]), key  # type: ignore[attr-defined]
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("path", CASES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_two_jobs_equal_one_on_the_corpora(path: Path, tmp_path: Path) -> None:
    _assert_same(_analyze([path], tmp_path / "j1", 1), _analyze([path], tmp_path / "j2", 2))


def test_several_inputs_as_one_timeline(tmp_path: Path) -> None:
    """A set of inputs merged by timestamp: each read by libpcap in a thread of its own
    (up to four), or all in the decoder's thread (more)."""
    pcaps = sorted(SAMPLE_PCAPS.glob("*.pcap"))
    for paths in (pcaps[:3], pcaps[:12]):
        one = _analyze(paths, tmp_path / f"j1-{len(paths)}", 1)
        _assert_same(one, _analyze(paths, tmp_path / f"j2-{len(paths)}", 2))
        _assert_same(one, _analyze(paths, tmp_path / f"j0-{len(paths)}", 0))


@pytest.mark.parametrize("files", [3, 12])
def test_a_directory_is_counted_as_its_files_for_the_reader_threads(
    files: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory given as one input is expanded first: its files each get a libpcap
    thread only while they are few (`MAX_READER_THREADS`), and then the decoding runs in the
    flow core's thread; a larger set is read and decoded in one thread ahead of the core."""
    import shutil

    from rstlens.parallel.threads import MAX_READER_THREADS

    capture_dir = tmp_path / "captures"
    capture_dir.mkdir()
    for p in sorted(SAMPLE_PCAPS.glob("*.pcap"))[:files]:
        shutil.copy(p, capture_dir / p.name)
    started: list[str] = []
    start = threading.Thread.start

    def recording_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", recording_start)
    summary = run([str(capture_dir)], tmp_path / "j2", RunOptions(jobs=2))
    monkeypatch.undo()
    assert len(summary.inputs) == files
    seen = {name: started.count(name) for name in ("rstlens-libpcap", "rstlens-reader")}
    if files <= MAX_READER_THREADS:
        assert seen == {"rstlens-libpcap": files, "rstlens-reader": 0}
    else:
        assert seen == {"rstlens-libpcap": 0, "rstlens-reader": 1}
    assert not any(t.name.startswith("rstlens-") for t in threading.enumerate())  # all ended
    run([str(capture_dir)], tmp_path / "j1", RunOptions(jobs=1))
    one, two = _tables(tmp_path / "j1"), _tables(tmp_path / "j2")
    assert all(one[k].equals(two[k]) for k in one)  # type: ignore[attr-defined]


def test_jobs_zero_means_every_core() -> None:
    assert effective_jobs(0) == len(os.sched_getaffinity(0))
    assert effective_jobs(3) == 3
    with pytest.raises(ValueError):
        RunOptions(jobs=-1)


def test_read_ahead_gives_the_items_in_order_and_raises_where_the_source_did() -> None:
    def source() -> Iterator[int]:
        yield from range(100)
        raise OSError("disk gone")

    seen: list[int] = []
    with pytest.raises(OSError, match="disk gone"):
        for x in ReadAhead(source(), depth=3):
            seen.append(x)
    assert seen == list(range(100))


def test_read_ahead_stopped_early_closes_the_source_and_its_thread() -> None:
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            yield from range(10_000)
        finally:
            closed.set()

    before = threading.active_count()
    ahead = ReadAhead(source(), depth=2)
    for x in ahead:
        if x == 5:
            break
    ahead.close()
    assert closed.is_set()
    assert threading.active_count() == before


@pytest.mark.parametrize("kind", ["scan", "flood"])
def test_every_job_count_equals_one_on_a_syn_scan_and_a_flood(kind: str, tmp_path: Path) -> None:
    """The RST-heavy and embryonic ends (`tools.synscan`, small): per-connection work in the
    records stage, many verdicts at the end; -j 2 and -j 0 (every core) equal -j 1."""
    from tools import synscan

    path = tmp_path / f"{kind}.pcap"
    if kind == "scan":
        synscan.generate(path, 30_000, seed=3)
    else:
        synscan.generate_flood(path, 60_000, seed=3)
    one = _analyze([path], tmp_path / "j1", 1)
    assert one["summary"]["connections"] >= 30_000  # type: ignore[index]
    for jobs in (2, 0):
        _assert_same(one, _analyze([path], tmp_path / f"j{jobs}", jobs))


BENCH_5M = Path(os.environ.get("RSTLENS_BENCH_FILE", "/work/benchdata/synth-5M.pcap"))


@pytest.mark.slow
def test_two_jobs_equal_one_on_the_benchmark_file(tmp_path: Path) -> None:
    if not BENCH_5M.is_file():
        pytest.skip(f"{BENCH_5M} not here (benchmarks/bench.py generates it; RSTLENS_BENCH_FILE)")
    _assert_same(_analyze([BENCH_5M], tmp_path / "j1", 1), _analyze([BENCH_5M], tmp_path / "j2", 2))
