"""libpcap's fast path reads capture files through a wide stdio buffer, losing nothing."""

from __future__ import annotations

from pathlib import Path

import dpkt
from builders import ether, tcp_ipv4, write_pcap
from parsers_helpers import read_all

PACKETS = 3000  # 1 kB payloads: ~3.2 MB, ~780 reads through libpcap's default 4 KiB buffer


def _read_calls() -> int:
    """This process's read system calls so far (Linux task I/O accounting)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise AssertionError("no syscr in /proc/self/io")


def _packets() -> list[tuple[float, bytes]]:
    return [
        (1_700_000_000 + k / 1000, ether(tcp_ipv4(seq=k, data=bytes(1000)))) for k in range(PACKETS)
    ]


def _write_pcapng(path: Path, packets: list[tuple[float, bytes]]) -> Path:
    with open(path, "wb") as fh:
        w = dpkt.pcapng.Writer(fh, snaplen=262144, linktype=1)
        for ts, buf in packets:
            w.writepkt(buf, ts)
    return path


def test_pcap_and_pcapng_files_are_read_in_few_large_reads(tmp_path: Path) -> None:
    """libpcap reads a savefile through stdio, whose buffer is the file system's block
    (4 KiB): one `read` per few packets.  The reader widens it to 256 KiB after libpcap
    read the file header, and every record still arrives once, in order."""
    packets = _packets()
    files = [
        write_pcap(tmp_path / "a.pcap", packets),
        _write_pcapng(tmp_path / "a.pcapng", packets),
    ]
    read_all([files[0]])  # first use: imports and kernel loads read files too
    for path in files:
        before = _read_calls()
        got, reader = read_all([path])
        reads = _read_calls() - before
        assert reader.inputs[0].reader == "libpcap", path
        assert got.seq.tolist() == list(range(PACKETS)), path
        assert reads < 60, (path, reads)  # 3.2 MB / 256 KiB = 13; 4 KiB would be ~780


def test_a_fault_after_the_wide_buffer_still_hands_over_exactly(tmp_path: Path) -> None:
    """A record libpcap rejects (caplen over 262144) deep in the file: the stream reader
    takes over after the records libpcap delivered, none lost or repeated."""
    packets = _packets()
    path = write_pcap(tmp_path / "bad.pcap", packets)
    data = bytearray(path.read_bytes())
    pos = 24
    for _ in range(2500):  # past the first 256 KiB buffers
        pos += 16 + int.from_bytes(data[pos + 8 : pos + 12], "little")
    data[pos + 8 : pos + 12] = (300_000).to_bytes(4, "little")  # caplen libpcap refuses
    path.write_bytes(bytes(data))
    got, reader = read_all([path])
    info = reader.inputs[0]
    assert info.reader == "stream"
    assert got.seq.tolist() == list(range(2500))
    assert info.error or info.warnings
