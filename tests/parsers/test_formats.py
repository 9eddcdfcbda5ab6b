"""Every capture format and input kind, on real captures (corpus or made here)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from builders import ether, tcp_ipv4, write_pcap
from parsers_helpers import RSTLENS, ZEEK, needs_corpus, read_all, robust

pytestmark = needs_corpus

SSH = ZEEK / "ssh.pcap"


def _tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    cmd = ["tshark", "-r", str(path), "-Y", "tcp", "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark missing")
def test_le_pcap_matches_tshark() -> None:
    got, reader = read_all([SSH])
    assert reader.inputs[0].format == "pcap" and reader.inputs[0].reader == "libpcap"
    rows = _tshark_fields(
        SSH,
        "frame.number",
        "frame.time_epoch",
        "tcp.srcport",
        "tcp.seq_raw",
        "tcp.window_size_value",
        "ip.ttl",
    )
    assert len(rows) == len(got) == 1795
    assert got.frame.tolist() == [int(r[0]) for r in rows]
    assert got.ts_us.tolist() == [int(r[1].replace(".", "")[:16]) for r in rows]
    assert got.sport.tolist() == [int(r[2]) for r in rows]
    assert got.seq.tolist() == [int(r[3]) for r in rows]
    assert got.window.tolist() == [int(r[4]) for r in rows]
    assert got.ttl.tolist() == [int(r[5]) for r in rows]


def test_be_pcap() -> None:
    path = robust("dssetup_DsRoleGetPrimaryDomainInformation_standalone_workstation.cap")
    assert path.read_bytes()[:4] == b"\xa1\xb2\xc3\xd4"  # big-endian magic
    got, reader = read_all([path])
    assert reader.inputs[0].format == "pcap"
    assert len(got) == 9 and set(got.dport.tolist()) | set(got.sport.tolist()) >= {445}


def test_ns_pcap_timestamps_are_microseconds() -> None:
    nano = robust("tcp-handshake-nano.pcap")
    got, reader = read_all([nano])
    assert reader.inputs[0].format == "pcap-ns"
    # tcpdump -tt prints the same file's times in microseconds: they must agree exactly.
    out = subprocess.run(
        ["tcpdump", "-nr", str(nano), "-tt"], capture_output=True, text=True
    ).stdout
    want = [int(line.split()[0].replace(".", "")) for line in out.splitlines()]
    assert got.ts_us.tolist() == want
    assert got.flags.tolist()[:3] == [0x002, 0x012, 0x010]


def test_ns_pcap_written_here_floor_to_microseconds(tmp_path: Path) -> None:
    pkt = tcp_ipv4()
    path = write_pcap(
        tmp_path / "ns.pcap", [(1_700_000_000.123456789, pkt)], linktype=228, nano=True
    )
    got, reader = read_all([path])
    assert reader.inputs[0].format == "pcap-ns"
    assert got.ts_us.tolist() == [1_700_000_000_123_456]


def test_pcapng_mixed_link_types_spb_and_isb() -> None:
    # 3 IDBs (Ethernet, NULL, Ethernet), EPBs and SPBs interleaved with ISBs: libpcap
    # refuses it (mixed link types), the stream reader reads it.
    for order in ("output_le", "output_be"):
        _got, reader = read_all([robust(f"{order}/advanced/test101.pcapng")])
        info = reader.inputs[0]
        assert info.reader == "stream" and info.error is None and info.warnings == []
        assert info.link_types == [1, 0]
        assert reader.stats.packets == 4 and reader.stats.non_tcp == 4


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark missing")
def test_pcapng_many_interfaces_keeps_interface_id() -> None:
    got, reader = read_all([ZEEK / "gap-data-missing.pcapng"])
    assert reader.inputs[0].reader == "stream"  # 126 IDBs with several link types
    assert set(got.iface.tolist()) == {48}
    tshark = _tshark_fields(ZEEK / "gap-data-missing.pcapng", "frame.interface_id", "tcp.seq_raw")
    assert [int(r[0]) for r in tshark] == got.iface.tolist()
    assert [int(r[1]) for r in tshark] == got.seq.tolist()


def test_pcapng_several_sections() -> None:
    _, reader = read_all([robust("output_le/difficult/test200.pcapng")])
    assert reader.inputs[0].error is None and reader.stats.packets == 0
    assert reader.inputs[0].link_types == [1, 0]
    # a later section with version 2.0: keep the first section's packet, warn, stop
    _got, reader = read_all([robust("le/test901.pcapng")])
    assert reader.stats.packets == 1
    assert any("unsupported version 2.0" in w for w in reader.inputs[0].warnings)


def test_pcapng_obsolete_packet_blocks_big_endian(tmp_path: Path) -> None:
    src = robust("secdev+scapy/test/pcaps/pfcp.pcap")
    _got, reader = read_all([src])
    assert reader.inputs[0].format == "pcapng"
    assert reader.stats.packets == 200 and reader.stats.non_tcp == 200  # PFCP is UDP
    # the same file through the stream reader (gzip forces it) gives the same counts
    gz = tmp_path / "pfcp.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    _, r2 = read_all([gz])
    assert r2.inputs[0].reader == "stream" and r2.stats == reader.stats


def test_pcapng_unknown_blocks_skipped() -> None:
    got, reader = read_all(
        [robust("nfstream+nfstream/tests/pcaps/mpeg.pcap")]
    )  # custom block 0x80000001
    assert reader.stats.packets == 19 and len(got) == 19


@pytest.mark.parametrize("name", ["iso-download.pcap.gz", "http_head.pcapng.gz"])
def test_gzip_equals_uncompressed(tmp_path: Path, name: str) -> None:
    gz = robust(name)
    plain = tmp_path / "plain"
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    a, ra = read_all([gz])
    b, rb = read_all([plain])
    assert ra.inputs[0].format.endswith("+gzip") and ra.inputs[0].reader == "stream"
    assert rb.inputs[0].reader == "libpcap"
    assert len(a) == len(b) > 0
    for col in ("ts_us", "seq", "ack", "flags", "src_lo", "payload_len", "frame"):
        assert np.array_equal(getattr(a, col), getattr(b, col)), col


def test_gzip_cut_short(tmp_path: Path) -> None:
    gz = robust("iso-download.pcap.gz").read_bytes()
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(gz[: len(gz) // 2])
    got, reader = read_all([cut])
    info = reader.inputs[0]
    assert 0 < len(got) < 289 and info.error is None and info.truncated_at is not None


def test_stdin_matches_file() -> None:
    res_file = subprocess.run(
        [RSTLENS, "packets", str(SSH)], capture_output=True, text=True, timeout=60
    )
    with open(SSH, "rb") as fh:
        res_stdin = subprocess.run(
            [RSTLENS, "packets", "-"], stdin=fh, capture_output=True, text=True, timeout=60
        )
    assert res_stdin.returncode == 0 == res_file.returncode
    assert res_stdin.stdout == res_file.stdout and res_stdin.stdout.count("\n") == 1795


def test_named_pipe(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = (ZEEK / "m57-long-49600-80.pcap").read_bytes()

    def feed() -> None:
        with open(fifo, "wb") as fh:
            fh.write(data)

    t = threading.Thread(target=feed)
    t.start()
    got, reader = read_all([fifo])
    t.join(10)
    want, _ = read_all([ZEEK / "m57-long-49600-80.pcap"])
    assert reader.inputs[0].reader == "stream" and reader.bytes_total is None
    assert len(got) == len(want) > 0 and np.array_equal(got.seq, want.seq)


def test_rotated_set_reads_as_one_capture(tmp_path: Path) -> None:
    # tcpdump -C 1 (1 MB files) splits ssh.pcap into a rotated set; read back, merged.
    subprocess.run(["tcpdump", "-r", str(SSH), "-w", str(tmp_path / "rot"), "-C", "1", "-Z", "root"],
                   check=True, capture_output=True)  # fmt: skip
    parts = sorted(tmp_path.glob("rot*"), key=lambda p: (len(p.name), p.name))
    assert len(parts) >= 2
    whole, _ = read_all([SSH])
    merged, _reader = read_all(list(reversed(parts)))  # argument order must not matter
    assert len(merged) == len(whole)
    assert np.array_equal(merged.ts_us, whole.ts_us) and np.array_equal(merged.seq, whole.seq)
    assert sorted(set(merged.source.tolist())) == list(range(len(parts)))


def test_merge_interleaves_by_time_and_keeps_file_order(tmp_path: Path) -> None:
    a = write_pcap(
        tmp_path / "a.pcap",
        [(10.0, tcp_ipv4(seq=1)), (30.0, tcp_ipv4(seq=2)), (20.0, tcp_ipv4(seq=3))],
        linktype=228,
    )
    b = write_pcap(
        tmp_path / "b.pcap",
        [(15.0, tcp_ipv4(seq=4)), (25.0, tcp_ipv4(seq=5)), (40.0, tcp_ipv4(seq=6))],
        linktype=228,
    )
    got, _ = read_all([a, b])
    # a's 20 s packet stays after its 30 s one (file order), head-of-queue merge otherwise
    assert got.seq.tolist() == [1, 4, 5, 2, 3, 6]
    assert got.source.tolist() == [0, 1, 1, 0, 0, 1]


def test_count_and_bpf(tmp_path: Path) -> None:
    got, reader = read_all([SSH], count=10)
    assert reader.stats.packets == 10 and got.frame.tolist() == list(range(1, 11))
    got, reader = read_all([SSH], bpf="tcp[tcpflags] & tcp-syn != 0")
    assert len(got) > 0 and np.all(got.flags & 0x002)
    # the same filter on the stream path (gzip) gives the same rows
    gz = tmp_path / "ssh.pcap.gz"
    gz.write_bytes(gzip.compress(SSH.read_bytes(), compresslevel=1))
    got2, r2 = read_all([gz], bpf="tcp[tcpflags] & tcp-syn != 0")
    assert r2.inputs[0].reader == "stream" and np.array_equal(got.seq, got2.seq)


def test_bad_bpf_is_one_capture_error() -> None:
    from rstlens.parsers import CaptureError, CaptureReader

    with pytest.raises(CaptureError, match="bad BPF expression") as exc:
        CaptureReader([SSH], bpf="tcp and and")
    assert "\n" not in str(exc.value)


def test_libpcap_timestamps_and_the_sub_second_fallback(tmp_path: Path) -> None:
    """libpcap's batches give each record its time and frame number; a microsecond field of
    1 s or more (which libpcap 1.9.1 mangles) hands the file to the stream reader, which
    reads the time as seconds + fraction, without losing or repeating a record."""
    pkts = [(1_700_000_000 + k * 0.25, ether(tcp_ipv4(seq=k))) for k in range(2000)]
    good = write_pcap(tmp_path / "good.pcap", pkts)
    got, reader = read_all([good])
    assert reader.inputs[0].reader == "libpcap"
    assert got.ts_us.tolist() == [1_700_000_000_000_000 + k * 250_000 for k in range(2000)]
    assert got.frame.tolist() == list(range(1, 2001)) and got.seq.tolist() == list(range(2000))
    # record 1500: its microseconds field rewritten to 1.5 s
    data = bytearray(good.read_bytes())
    pos = 24
    for _ in range(1500):
        pos += 16 + int.from_bytes(data[pos + 8 : pos + 12], "little")
    data[pos + 4 : pos + 8] = (1_500_000).to_bytes(4, "little")
    odd = tmp_path / "odd.pcap"
    odd.write_bytes(bytes(data))
    got, reader = read_all([odd])
    assert reader.inputs[0].reader == "stream"
    assert got.frame.tolist() == list(range(1, 2001)) and got.seq.tolist() == list(range(2000))
    expected = [1_700_000_000_000_000 + k * 250_000 for k in range(2000)]
    expected[1500] = 1_700_000_000_000_000 + (1500 * 250_000 // 1_000_000) * 1_000_000 + 1_500_000
    assert got.ts_us.tolist() == expected
