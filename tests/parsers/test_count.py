"""`count` is ``tcpdump -c`` on the merged timeline: N records over all inputs together."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import dpkt
import numpy as np
import pytest
from builders import tcp_ipv4, write_pcap
from parsers_helpers import ZEEK, needs_corpus, read_all, robust

pytestmark = needs_corpus

NB6 = "kbandla+dpkt/examples/data/nb6-http.pcap"  # 62 records, TCP among ARP/DNS/L2TP


def _split(src: Path, a: Path, b: Path) -> None:
    """Deal the records of `src` alternately into `a` and `b` (same link type, times)."""
    with open(src, "rb") as fh:
        rd = dpkt.pcap.Reader(fh)
        recs = list(rd)
        link = rd.datalink()
    write_pcap(a, [r for i, r in enumerate(recs) if i % 2 == 0], linktype=link)
    write_pcap(b, [r for i, r in enumerate(recs) if i % 2 == 1], linktype=link)


def _tcpdump_tcp_frames(path: Path, n: int) -> list[int]:
    """Frame numbers of the TCP packets among the first `n` records (tcpdump -c n)."""
    out = subprocess.run(
        ["tcpdump", "-nr", str(path), "-c", str(n), "-#"], capture_output=True, text=True
    ).stdout
    lines = out.splitlines()
    assert len(lines) == min(n, 62)
    return [int(line.split()[0]) for line in lines if " Flags [" in line]  # TCP segments


@pytest.mark.parametrize("n", [0, 1, 7, 34, 35, 40, 61, 62, 500])
def test_count_is_over_all_inputs(tmp_path: Path, n: int) -> None:
    whole = robust(NB6)
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    _split(whole, a, b)
    want, rw = read_all([whole], count=n)
    got, rg = read_all([a, b], count=n)
    assert rg.stats.packets == rw.stats.packets == min(n, 62)
    assert rg.stats == rw.stats
    assert sum(i.packets for i in rg.inputs) == min(n, 62)
    assert np.array_equal(got.ts_us, want.ts_us) and np.array_equal(got.seq, want.seq)
    # frame numbers map back: record k of a is record 2k-1 of the whole, of b 2k
    back = np.where(got.source == 0, 2 * got.frame - 1, 2 * got.frame)
    assert np.array_equal(back, want.frame)
    # every row is a TCP record among the first n records tcpdump -c n prints (tcpdump
    # also prints TCP inside L2TP, which rstlens does not open: hence a subset)
    if n:
        assert set(back.tolist()) <= set(_tcpdump_tcp_frames(whole, n))


def test_count_with_disjoint_files_reads_only_the_first(tmp_path: Path) -> None:
    # b lies entirely after a: -c within a's length must not take anything from b
    pkts_a = [(100.0 + i, tcp_ipv4(seq=i)) for i in range(50)]
    pkts_b = [(10_000.0 + i, tcp_ipv4(seq=1000 + i)) for i in range(50)]
    a = write_pcap(tmp_path / "a.pcap", pkts_a, linktype=228)
    b = write_pcap(tmp_path / "b.pcap", pkts_b, linktype=228)
    got, reader = read_all([b, a], count=30)  # argument order does not matter
    assert got.seq.tolist() == list(range(30)) and set(got.source.tolist()) == {1}
    assert [i.packets for i in reader.inputs] == [0, 30]
    got, reader = read_all([a, b], count=60)
    assert got.seq.tolist() == list(range(50)) + list(range(1000, 1010))
    assert [i.packets for i in reader.inputs] == [50, 10]


def test_count_with_non_tcp_and_ties(tmp_path: Path) -> None:
    udp = bytes(dpkt.ip.IP(src=b"\x0a\x00\x00\x01", dst=b"\x0a\x00\x00\x02", p=17,
                           data=dpkt.udp.UDP(sport=1, dport=2)))  # fmt: skip
    # equal timestamps: the lower input index goes first (as in the TCP merge)
    a = write_pcap(tmp_path / "a.pcap", [(5.0, udp), (5.0, tcp_ipv4(seq=1))], linktype=228)
    b = write_pcap(tmp_path / "b.pcap", [(5.0, tcp_ipv4(seq=2)), (6.0, udp)], linktype=228)
    for n, seqs, non_tcp in [(1, [], 1), (2, [1], 1), (3, [1, 2], 1), (4, [1, 2], 2)]:
        got, reader = read_all([a, b], count=n)
        assert got.seq.tolist() == seqs and reader.stats.non_tcp == non_tcp, n
        assert reader.stats.packets == n


def test_count_across_libpcap_and_stream_inputs(tmp_path: Path) -> None:
    # ssh.pcap split in two, one half gzip (stream reader), the other plain (libpcap)
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    _split(ZEEK / "ssh.pcap", a, b)
    gz = tmp_path / "b.pcap.gz"
    gz.write_bytes(gzip.compress(b.read_bytes(), compresslevel=1))
    want, _ = read_all([ZEEK / "ssh.pcap"], count=1001)
    got, reader = read_all([a, gz], count=1001)
    assert [i.reader for i in reader.inputs] == ["libpcap", "stream"]
    assert [i.packets for i in reader.inputs] == [501, 500]
    assert np.array_equal(got.seq, want.seq) and np.array_equal(got.ts_us, want.ts_us)


def test_count_with_bpf_counts_matching_records(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    _split(ZEEK / "ssh.pcap", a, b)
    flt = "tcp[tcpflags] & tcp-push != 0"
    want, _ = read_all([ZEEK / "ssh.pcap"], bpf=flt, count=100)
    got, reader = read_all([a, b], bpf=flt, count=100)
    assert len(got) == len(want) == 100 == reader.stats.packets
    assert np.array_equal(got.seq, want.seq)
