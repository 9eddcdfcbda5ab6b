"""`analyze --rotate` on files: the rolling dataset (issue 19), its parts, restart and
clean-up, the readers (pandas, pyarrow.dataset, DuckDB, rstlens.read, the report), the
-w packet files, the status lines and the metrics endpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from builders import T0, A, F, R, S, frame, write_pcap

import rstlens
from rstlens.output.dataset import LOCK, list_parts

RSTLENS = Path(sys.executable).with_name("rstlens")
SERVER = "10.0.0.2"


def _timeline(path: Path, seconds: int = 60) -> tuple[Path, int]:
    """A capture over `seconds`: every 2 s a complete exchange (SF) and a refused attempt
    (REJ, one closed_port RST), every 6 s an abort (data, then RST from the client)."""
    pkts: list[tuple[float, bytes]] = []
    rsts = 0
    for k in range(seconds // 2):
        t = T0 + 2 * k
        c = f"10.1.{k // 200}.{k % 200 + 1}"
        sp = 20000 + k
        pkts += [(t, frame(c, sp, SERVER, 80, S, 100)), (t + 0.001, frame(SERVER, 80, c, sp, S | A, 500, 101)),
                 (t + 0.002, frame(c, sp, SERVER, 80, A, 101, 501)),
                 (t + 0.003, frame(c, sp, SERVER, 80, F | A, 101, 501)),
                 (t + 0.004, frame(SERVER, 80, c, sp, F | A, 501, 102)),
                 (t + 0.005, frame(c, sp, SERVER, 80, A, 102, 502))]  # fmt: skip
        pkts += [(t + 0.5, frame(c, sp + 1, SERVER, 81, S, 100)),
                 (t + 0.501, frame(SERVER, 81, c, sp + 1, R | A, 0, 101))]  # fmt: skip
        rsts += 1
        if k % 3 == 0:
            pkts += [(t + 1.0, frame(c, sp + 2, SERVER, 80, S, 100)),
                     (t + 1.001, frame(SERVER, 80, c, sp + 2, S | A, 500, 101)),
                     (t + 1.002, frame(c, sp + 2, SERVER, 80, A, 101, 501)),
                     (t + 1.003, frame(c, sp + 2, SERVER, 80, A | 8, 101, 501, data=b"x" * 10)),
                     (t + 1.004, frame(c, sp + 2, SERVER, 80, R | A, 111, 501))]  # fmt: skip
            rsts += 1
    return write_pcap(path, pkts, sort=True), rsts


def _analyze(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(RSTLENS), "analyze", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert res.returncode == 0, res.stderr
    return res


@pytest.fixture(scope="module")
def timeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    return _timeline(tmp_path_factory.mktemp("tl") / "timeline.pcap")


def _check_dataset(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every row once; every RST joins its connection; every part whole."""
    flows = pd.read_parquet(out / "flows")
    resets = pd.read_parquet(out / "resets")
    assert flows.uid.is_unique
    assert set(resets.uid) <= set(flows.uid)
    for pair in list_parts(out):
        assert pair.resets is not None, pair
        fm = json.loads(pq.read_metadata(pair.flows).metadata[b"rstlens"])
        rm = json.loads(pq.read_metadata(pair.resets).metadata[b"rstlens"])
        assert fm["part_id"] == rm["part_id"] == pair.flows.name.removesuffix(".parquet")
        assert fm["interval_start"] < fm["interval_end"]
    return flows, resets


def test_file_rotation_makes_a_dataset_with_every_row_once(timeline: tuple[Path, int], tmp_path: Path) -> None:
    pcap, n_rsts = timeline
    single, rolled = tmp_path / "single", tmp_path / "rolled"
    _analyze(str(pcap), "-o", str(single), "--linger", "5", "-q")
    _analyze(str(pcap), "-o", str(rolled), "--rotate", "10", "--linger", "5", "-q")
    parts = list_parts(rolled)
    assert len(parts) >= 6  # 60 s of capture in 10 s intervals
    assert all(p.rel.startswith("date=2023-11-14/hour=22/part-") for p in parts)
    flows, resets = _check_dataset(rolled)
    a = rstlens.read(single)
    assert len(resets) == n_rsts == len(a.resets)
    assert sorted(flows.uid) == sorted(a.flows.uid)  # the same rows, spread over the parts
    assert sorted(resets.cause.astype(str)) == sorted(a.resets.cause.astype(str))
    # the late verdicts land in later parts than their connection's start, never lost
    part_of = {}
    for p in parts:
        for uid in pq.read_table(p.flows, columns=["uid"]).column("uid").to_pylist():
            part_of[uid] = p.rel
    for p in parts:
        assert p.resets is not None
        for uid in pq.read_table(p.resets, columns=["uid"]).column("uid").to_pylist():
            assert part_of[uid] == p.rel  # a connection's RSTs and its row: the same part
    # readers: pyarrow.dataset with the hive columns, DuckDB, rstlens.read, the report loader
    t = ds.dataset(rolled / "flows", format="parquet", partitioning="hive").to_table()
    assert t.num_rows == len(flows) and {"date", "hour"} <= set(t.schema.names)
    duckdb = pytest.importorskip("duckdb")
    got = duckdb.sql(f"select count(*), count(distinct uid) from read_parquet('{rolled}/resets/**/*.parquet', "
                     "hive_partitioning=true)").fetchall()[0]  # fmt: skip
    assert got == (n_rsts, len(set(resets.uid)))
    b = rstlens.read(rolled)
    assert len(b.flows) == len(flows) and len(b.resets) == n_rsts
    assert b.summary.rst_packets == n_rsts and len(b.summary.parts) == len(parts)
    assert isinstance(b.resets.cause.dtype, pd.CategoricalDtype)
    from rstlens.reports._load import load

    run = load(rolled)
    assert len(run.resets) == n_rsts and run.metadata[0]["part_id"]


def test_restart_appends_and_cleans_what_a_dead_run_left(timeline: tuple[Path, int], tmp_path: Path) -> None:
    pcap, n_rsts = timeline
    out = tmp_path / "out"
    _analyze(str(pcap), "-o", str(out), "--rotate", "20", "-q")
    first = {p.rel for p in list_parts(out)}
    # what a SIGKILLed run leaves: a temp part (dead PID) and a flows part without its resets twin
    some = sorted(first)[0]
    d = (out / "flows" / some).parent
    dead = d / f".part-20231114T220000Z-{'0' * 16}-00000.parquet.999999.{'ab' * 6}.tmp"
    dead.write_bytes(b"half")
    orphan = d / f"part-20231114T220000Z-{'0' * 16}-00007.parquet"
    orphan.write_bytes((out / "flows" / some).read_bytes())
    # a reader with no writer alive leaves the orphan out and says so
    a = rstlens.read(out)
    assert len(a.resets) == n_rsts and any("left out" in n for n in a.summary.notes)
    res = _analyze(str(pcap), "-o", str(out), "--rotate", "20")
    assert "removed 2 temporary file(s)" in res.stderr
    assert not dead.exists() and not orphan.exists()
    second = {p.rel for p in list_parts(out)}
    assert first < second and len(second) == 2 * len(first)  # appended, nothing overwritten
    b = rstlens.read(out)
    assert len(b.resets) == 2 * n_rsts and len(b.flows) == 2 * len(a.flows)
    assert b.summary.rst_causes == {k: 2 * v for k, v in a.summary.rst_causes.items()}


def test_a_second_writer_is_refused(timeline: tuple[Path, int], tmp_path: Path) -> None:
    import fcntl
    import os

    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        res = _analyze(str(timeline[0]), "-o", str(out), "--rotate", "10", check=False)
    finally:
        os.close(fd)
    assert res.returncode == 2 and "another rstlens run is writing" in res.stderr


def test_rotation_by_rows(tmp_path: Path) -> None:
    pcap, n_rsts = _timeline(tmp_path / "long.pcap", 2400)  # 40 min, ~11,000 packets
    out = tmp_path / "out"
    _analyze(str(pcap), "-o", str(out), "--rotate-rows", "400", "--linger", "5", "-q")
    assert len(list_parts(out)) >= 3
    _flows, resets = _check_dataset(out)
    assert len(resets) == n_rsts


def test_packet_files_rotate_and_are_pruned(tmp_path: Path) -> None:
    from rstlens.output.pcapdump import PacketFiles
    from rstlens.parsers import CaptureReader

    pkt = frame("10.0.0.1", 1000, "10.0.0.2", 80, S, 1)
    data = pkt * 100
    meta = np.zeros((100, 4), np.uint32)
    meta[:, 0] = int(T0) + np.arange(100) // 10  # ten packets a second, ten seconds
    meta[:, 1] = (np.arange(100) % 10) * 1000
    meta[:, 2] = np.arange(100) * len(pkt)
    meta[:, 3] = len(pkt)
    w = PacketFiles(str(tmp_path / "cap.pcap"), 1, "0123456789abcdef", 2.0, None, 3, None)
    w.write(data[: 50 * len(pkt)], meta[:50])
    w.write(data, meta[50:])  # offsets index the whole buffer
    w.close()
    files = w.files()
    assert len(files) == 3 and len(w.written) == 5 and len(w.removed) == 2  # -W 3
    assert not list(tmp_path.glob(".*.tmp"))
    got = sum(len(b) for b in CaptureReader([str(f) for f in files]))
    assert got == 60  # the last three 2 s files, 20 packets each
    # -C: a size limit splits files
    s = PacketFiles(str(tmp_path / "c" / "x.pcap"), 1, "0123456789abcdef", None, 24 + 10 * (16 + len(pkt)),
                    None, None)  # fmt: skip
    s.write(data, meta)
    s.close()
    assert len(s.files()) == 10


def test_status_lines_and_live_view() -> None:
    import io

    from rstlens.sensor import LiveView, Monitor, StatusLines

    m = Monitor()
    m.update(1000, 900, 10**6, 7, 50, (1010, 3, 1))
    buf = io.StringIO()
    lines = StatusLines(m, 0.0, buf)
    lines.tick()
    line = buf.getvalue()
    assert line.startswith("rstlens: stats ") and line.endswith("\n") and line.count("\n") == 1
    for word in ("packets=1000", "open=7", "connections=50", "received=1010", "kernel_dropped=3",
                 "if_dropped=1", "rsts=0"):  # fmt: skip
        assert word in line, line
    view = LiveView(m, "eth0")
    from rich.console import Console

    con = Console(file=io.StringIO(), width=120)
    con.print(view.render())
    text = con.file.getvalue()  # type: ignore[attr-defined]
    assert "kernel 3, interface 1 of 1010" in text and "open connections" in text


def test_metrics_endpoint_over_loopback(timeline: tuple[Path, int]) -> None:
    pytest.importorskip("prometheus_client")
    from rstlens.sensor import Monitor, parse_metrics_address, serve_metrics

    assert parse_metrics_address("9100") == ("127.0.0.1", 9100)
    assert parse_metrics_address("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_metrics_address("[::1]:9100") == ("::1", 9100)
    m = Monitor()
    m.update(42, 40, 4200, 3, 9, (50, 2, 0))
    m.rsts[("abort", "")] += 5
    server, (host, port) = serve_metrics(m, "0")
    try:
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    for want in ("rstlens_packets_total 42.0", 'rstlens_rsts_total{cause="abort",subcause=""} 5.0',
                 'rstlens_capture_dropped_total{where="kernel"} 2.0', "rstlens_open_connections 3.0",
                 "rstlens_resident_memory_bytes"):  # fmt: skip
        assert want in body, body


def test_loss_code_marks_rsts_of_connections_with_a_gap(timeline: tuple[Path, int], tmp_path: Path) -> None:
    import pyarrow as pa

    from rstlens.attribution.evidence import EVIDENCE
    from rstlens.pipeline import LOSS_CODE, mark_loss

    out = tmp_path / "out"
    _analyze(str(timeline[0]), "-o", str(out), "-q")
    flows = pq.read_table(out / "flows.parquet")
    resets = pq.read_table(out / "resets.parquet")
    uid = resets.column("uid")[0].as_py()
    hist = [h + "G" if u == uid else h for u, h in zip(flows.column("uid").to_pylist(),
                                                        flows.column("history").to_pylist(), strict=True)]
    gapped = flows.set_column(flows.schema.get_field_index("history"), "history", pa.array(hist))
    from rstlens.sensor import DropLog

    none = DropLog()
    marked = mark_loss(resets, gapped, none)
    codes = dict(zip(marked.column("uid").to_pylist(), marked.column("evidence").to_pylist(), strict=False))
    assert LOSS_CODE in codes[uid] and LOSS_CODE in EVIDENCE
    assert sum(LOSS_CODE in e for e in marked.column("evidence").to_pylist()) == 1
    assert marked.schema == resets.schema
    assert mark_loss(resets, flows, none).equals(resets)  # no gap, no drops: unchanged
    # drops: only the RSTs of connections active (first..last packet, +-1 s) while libpcap
    # counted drops; a drop interval 10 s after the first RST connection ended
    spans = {u: (int(t.timestamp() * 1e6), int(t.timestamp() * 1e6) + round(d * 1e6))
             for u, t, d in zip(flows.column("uid").to_pylist(), flows.column("ts").to_pylist(),
                                flows.column("duration").to_pylist(), strict=True)}  # fmt: skip
    rst_uids = sorted(set(resets.column("uid").to_pylist()), key=lambda u: spans[u])
    _, last = spans[rst_uids[0]]
    for t0, t1 in ((last - 100, last + 50), (last + 10_000_000, last + 10_200_000)):
        log = DropLog()
        log.observe(t0, 0)
        log.observe(t1, 5)  # 5 packets dropped in (t0, t1]
        assert (log.starts, log.ends) == ([t0], [t1])
        got = mark_loss(resets, flows, log)
        hit = {u for u, e in zip(got.column("uid").to_pylist(), got.column("evidence").to_pylist(), strict=True)
               if LOSS_CODE in e}  # fmt: skip
        want = {u for u in rst_uids if spans[u][0] - 1_000_000 <= t1 and spans[u][1] + 1_000_000 >= t0}
        assert hit == want
        if t0 < last:
            assert rst_uids[0] in hit
        assert len(hit) < len(rst_uids)  # not every verdict of the batch


def test_drop_log_merges_touching_intervals_and_stays_bounded() -> None:
    from rstlens.sensor import DropLog

    log = DropLog(keep=3)
    log.observe(0, 0)
    for k in range(1, 10):  # drops at every read: one interval
        log.observe(k * 100, k)
    assert (log.starts, log.ends) == ([0], [900])
    log.observe(1000, 9)  # no new drop
    for k in range(5):  # apart: separate intervals, the oldest merged past `keep`
        log.observe(2000 + k * 1000, 9)
        log.observe(2000 + k * 1000 + 10, 10 + k)
    assert len(log.starts) == 3 and log.starts[0] == 0 and log.ends[-1] == 6010
    # kept: [0, 4010] (the oldest four merged, wider), [5000, 5010], [6000, 6010]
    assert (log.starts, log.ends) == ([0, 5000, 6000], [4010, 5010, 6010])
    hit = log.overlaps(np.array([950, 1200, 5500, 5995, 6011]), np.array([990, 1500, 5600, 5999, 7000]), 0)
    assert hit.tolist() == [True, True, False, False, False]
    assert log.overlaps(np.array([5995, 6011]), np.array([5999, 7000]), 2).tolist() == [True, True]


def test_drop_log_places_kernel_drops_after_the_first_packet_read_since_the_last_reading() -> None:
    """The kernel drops only while libpcap's ring is full of packets not yet read, so drops
    first counted at a reading came after the first packet read since the previous one: a
    loop held up between two readings does not stretch the interval back over what ended
    before.  Interface drops, a capture time past the wall clock, or a packet read late
    (captured before the previous reading) leave the interval at the previous reading."""
    from rstlens.sensor import DropLog

    def one(kernel: int, interface: int, first: int | None, opened: int | None = 0) -> tuple[list[int], list[int]]:
        log = DropLog(opened_us=opened)
        log.observe(1_000, 0)
        log.observe(5_000_000, kernel, interface, first)  # 4 s later
        return log.starts, log.ends

    assert one(3, 0, 4_900_000) == ([4_900_000], [5_000_000])
    assert one(3, 1, 4_900_000) == ([1_000], [5_000_000])  # the interface's too: not bounded
    assert one(0, 1, 4_900_000) == ([1_000], [5_000_000])
    assert one(3, 0, None) == ([1_000], [5_000_000])  # nothing read since
    assert one(3, 0, 5_000_001) == ([1_000], [5_000_000])  # the clocks disagree
    assert one(3, 0, 500) == ([1_000], [5_000_000])  # read late: the reading bounds it
    assert one(0, 0, 4_900_000) == ([], [])
    # the first reading: after the capture opened, not at the reading itself
    for opened, first, want in ((100, None, 100), (100, 2_000, 2_000), (None, None, 9_000)):
        log = DropLog(opened_us=opened)
        log.observe(9_000, 2, 0, first)
        assert (log.starts, log.ends) == ([want], [9_000])
    # a connection that ended 3 s before the burst keeps its verdict; one in it does not
    log = DropLog(opened_us=0)
    log.observe(1_000_000, 0, 0, 900_000)  # its packets read
    log.observe(5_000_000, 40, 0, 4_200_000)  # a 4 s stall, then the burst's packets
    assert log.overlaps(np.array([800_000, 4_300_000]), np.array([1_000_000, 4_400_000]), 1_000_000).tolist() == [
        False, True]  # fmt: skip


@pytest.mark.parametrize("ext", ["pcap", "pcapng"])
def test_packet_files_keep_the_wire_length_read_by_tshark_capinfos_and_rstlens(tmp_path: Path, ext: str) -> None:
    """-w's records carry libpcap's wire length beside the captured one (a packet cut by
    -s), and pcapng's interface block its link type, snap length and if_tsresol: checked
    with Wireshark's readers, not with rstlens' writer."""
    import shutil
    import subprocess

    from rstlens.output.pcapdump import PacketFiles
    from rstlens.parsers import CaptureReader

    tshark, capinfos = shutil.which("tshark"), shutil.which("capinfos")
    if tshark is None or capinfos is None:
        pytest.skip("needs tshark and capinfos (Debian's tshark package)")
    snap = 60
    pkt = frame("10.0.0.1", 1000, "10.0.0.2", 80, S, 1, data=b"x" * 100)[:snap]
    caps = np.array([60, 59, 58, 57, 55])  # cut at different lengths: pcapng pads each record
    wire = np.array([1514, 154, 9000, 60, 1200])
    meta = np.zeros((5, 5), np.uint32)
    meta[:, 0] = int(T0) + np.arange(5)
    meta[:, 1] = np.arange(5) * 7 + 3
    meta[:, 2] = np.arange(5) * snap
    meta[:, 3], meta[:, 4] = caps, wire
    w = PacketFiles(str(tmp_path / f"cap.{ext}"), 1, "0123456789abcdef", None, None, None, None,
                    snaplen=snap, interface="lv2-test")  # fmt: skip
    w.write(pkt * 5, meta)
    w.close()
    (path,) = w.written
    assert path.endswith(f".{ext}")
    res = subprocess.run([tshark, "-r", path, "-T", "fields", "-e", "frame.len", "-e", "frame.cap_len",
                          "-e", "frame.time_epoch"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = [line.split("\t") for line in res.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == wire.tolist()
    assert [int(r[1]) for r in rows] == caps.tolist()
    assert [round(float(r[2]) * 1e6) for r in rows] == (meta[:, 0].astype(np.int64) * 10**6 + meta[:, 1]).tolist()
    info = subprocess.run([capinfos, path], capture_output=True, text=True, timeout=60).stdout
    assert ("pcapng" in info) == (ext == "pcapng"), info
    if ext == "pcapng":
        assert "Capture length = 60" in info and "Time precision = microseconds (6)" in info, info
        assert "Name = lv2-test" in info and "Ethernet (1 - ether)" in info, info
    else:
        assert "file hdr: 60 bytes" in info, info
    # rstlens reads its own files back: the same packets, the captured bytes
    batches = list(CaptureReader([path]))
    assert sum(len(b) for b in batches) == 5


def test_file_rotation_default_linger_is_30_s_and_every_row_lands_once(tmp_path: Path) -> None:
    """--rotate on files without --linger: verdicts are final 30 s (capture time) after
    their connection, like live (bounded memory on a days-long set, RST rows readable as it
    grows), recorded in the metadata; every flows row and every RST row is in exactly one
    part, a connection's RSTs in its row's part, and the rows are those of the same files
    analysed into the two single files with --linger 30 -- rotation moves rows, never
    changes, drops or repeats them."""
    pcap, n_rsts = _timeline(tmp_path / "long.pcap", seconds=150)
    single, rolled = tmp_path / "single", tmp_path / "rolled"
    _analyze(str(pcap), "-o", str(single), "--linger", "30", "-q")
    _analyze(str(pcap), "-o", str(rolled), "--rotate", "10", "-q")
    parts = list_parts(rolled)
    assert len(parts) >= 15
    meta = [json.loads(pq.read_metadata(p.flows).metadata[b"rstlens"]) for p in parts]
    assert {m["options"]["linger"] for m in meta} == {30.0} and {m["options"]["rotate"] for m in meta} == {10.0}
    _, resets = _check_dataset(rolled)
    assert len(resets) == n_rsts
    where: dict[str, list[str]] = {}
    for p in parts:
        assert p.resets is not None
        for uid in pq.read_table(p.flows, columns=["uid"]).column("uid").to_pylist():
            where.setdefault(uid, []).append(p.rel)
    assert all(len(v) == 1 for v in where.values())  # each connection in one part
    from datetime import datetime, timedelta, timezone

    last = parts[-1].rel
    at_end = 0
    for p in parts:
        assert p.resets is not None
        start = datetime.strptime(p.rel.split("part-")[1][:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        t = pq.read_table(p.resets, columns=["uid", "ts"])
        for uid, ts in zip(t.column("uid").to_pylist(), t.column("ts").to_pylist(), strict=True):
            assert where[uid] == [p.rel]
            # final 30 s after the connection's last packet: in the part of that interval
            # (it ends after ts + 30 s), or in the last part when the input ended first
            if start + timedelta(seconds=10) <= ts + timedelta(seconds=30):
                assert p.rel == last, (p.rel, ts)
                at_end += 1
    assert 0 < at_end <= n_rsts * 0.25  # the last 30 s of the 150 s capture
    a, b = rstlens.read(single), rstlens.read(rolled)
    assert list(b.flows.columns) == list(a.flows.columns) and list(b.resets.columns) == list(a.resets.columns)
    f0, f1 = (x.flows.sort_values("uid").reset_index(drop=True) for x in (a, b))
    pd.testing.assert_frame_equal(f1, f0, check_categorical=False)
    r0, r1 = (x.resets.sort_values(["uid", "ts"]).reset_index(drop=True) for x in (a, b))
    pd.testing.assert_frame_equal(r1, r0, check_categorical=False)
