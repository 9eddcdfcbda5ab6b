"""Encapsulations inside Ethernet: MPLS (also in VLAN), PPPoE sessions, Cisco FabricPath.

Real captures are checked against tshark; captures built here are checked against the
dpkt reference decoder (`_reference.py`) as well as against the values written.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from builders import ether, tcp_ipv4, write_pcap
from parsers_helpers import ZEEK, needs_corpus, read_all, robust
from test_linktypes import tcp_ipv6

from rstlens.parsers import BATCH_COLUMNS
from rstlens.parsers._reference import read_reference

V4 = 0xFFFF_0000_0000


def _v4(addr: str) -> int:
    return V4 | int.from_bytes(bytes(map(int, addr.split("."))), "big")


def _tshark_tcp(path: Path) -> list[list[int]]:
    # L2TP/GRE/ICMP-quoted TCP is a tunnel rstlens does not open: leave it out.
    cmd = ["tshark", "-r", str(path), "-Y", "tcp && !udp && !icmp && !gre", "-T", "fields",
           "-E", "separator=|", "-e", "frame.number", "-e", "tcp.srcport", "-e", "tcp.dstport",
           "-e", "tcp.seq_raw", "-e", "tcp.ack_raw", "-e", "tcp.flags", "-e", "vlan.id"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        f = line.split("|")
        vlan = int(f[6].split(",")[0]) if f[6] else -1
        rows.append([int(f[0]), int(f[1]), int(f[2]), int(f[3]), int(f[4]), int(f[5], 16), vlan])
    return rows


CORPUS_FILES = [
    # (file, records, TCP rows, MPLS/PPPoE/FabricPath TCP rows per tshark's frame.protocols)
    (lambda: ZEEK / "mixed-vlan-mpls.pcap", 47, 47, 11),
    (lambda: robust("Traces/mpls-in-vlan.pcap"), 3, 3, 2),
    (lambda: robust("kbandla+dpkt/examples/data/nb6-http.pcap"), 62, 20, 10),
    (lambda: ZEEK / "cisco-fabric-path.pcap", 130, 32, 16),
]


@needs_corpus
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark missing")
@pytest.mark.parametrize(("get", "records", "n_tcp", "n_encap"), CORPUS_FILES)
def test_corpus_encapsulations_match_tshark(get, records: int, n_tcp: int, n_encap: int) -> None:
    path = get()
    got, reader = read_all([path])
    assert reader.stats.packets == records and len(got) == n_tcp
    assert reader.stats.malformed == reader.stats.truncated == 0
    mine = [
        [int(got.frame[i]), int(got.sport[i]), int(got.dport[i]), int(got.seq[i]),
         int(got.ack[i]), int(got.flags[i]), int(got.vlan[i])]
        for i in range(len(got))
    ]  # fmt: skip
    assert mine == _tshark_tcp(path)
    # and the encapsulated rows are really among them (tshark's protocol path says which)
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "tcp && !udp && !icmp", "-T", "fields",
         "-e", "frame.number", "-e", "frame.protocols"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    encap = {
        int(n) for n, protos in (line.split("\t") for line in out.splitlines())
        if any(k in protos.split(":") for k in ("mpls", "pppoes", "cfp"))
    }  # fmt: skip
    assert len(encap) == n_encap and encap <= set(got.frame.tolist())


@needs_corpus
def test_mixed_vlan_mpls_telnet_flow() -> None:
    got, _ = read_all([ZEEK / "mixed-vlan-mpls.pcap"])
    a, b = _v4("10.1.2.1"), _v4("10.34.0.1")
    out = (got.src_lo == a) & (got.dst_lo == b) & (got.sport == 11001) & (got.dport == 23)
    assert out.sum() == 11  # the trace holds only the client -> server side of this flow
    assert np.flatnonzero(out).tolist() == list(range(11))
    assert got.flags[0] == 0x002 and got.seq[0] == 2553417723 and got.mss[0] == 536
    assert np.all(got.vlan[out] == -1) and np.all(got.ttl[out] == 255)


@needs_corpus
def test_mpls_in_vlan() -> None:
    got, _ = read_all([robust("Traces/mpls-in-vlan.pcap")])
    assert len(got) == 3 and np.all(got.vlan >= 0) and np.all(got.ip_version == 4)


# ---- captures built here -------------------------------------------------------------


def _mpls(labels: list[int], bos_last: bool = True) -> bytes:
    out = b""
    for i, label in enumerate(labels):
        s = 1 if bos_last and i == len(labels) - 1 else 0
        out += struct.pack(">I", (label << 12) | (s << 8) | 64)
    return out


def _pppoe(ppp: bytes) -> bytes:
    return struct.pack(">BBHH", 0x11, 0, 0x1234, len(ppp)) + ppp


def _fabricpath(inner: bytes) -> bytes:
    return b"\x0a" * 6 + b"\x0b" * 6 + b"\x89\x03" + b"\x00\x3f" + inner


def _check_against_reference(path: Path) -> None:
    got, reader = read_all([path])
    ref, ref_stats = read_reference(str(path))
    assert reader.stats == ref_stats
    for name in BATCH_COLUMNS:
        if name not in ("ts_us", "payload_off"):
            assert np.array_equal(getattr(got, name), getattr(ref, name)), name


def test_mpls_built_here(tmp_path: Path) -> None:
    v4 = tcp_ipv4(src="10.78.1.1", seq=11)
    v6 = tcp_ipv6()
    frames = [
        ether(_mpls([100]) + v4, 0x8847),
        ether(_mpls([100, 200, 300]) + v4, 0x8847),  # a stack: bottom-of-stack on the third
        ether(_mpls([16]) + v6, 0x8848),  # multicast MPLS, IPv6 by its version nibble
        ether(_mpls([5, 6]) + v4, 0x8847, tags=[(0x88A8, 7), (0x8100, 8)]),  # in QinQ
        ether(_mpls([5]) + b"\x00\x00\x00\x00" + ether(v4), 0x8847),  # pseudowire: not IP
        ether(_mpls([1] * 17, bos_last=False) + v4, 0x8847),  # no bottom-of-stack: malformed
        ether(_mpls([1, 2], bos_last=False)[:6], 0x8847),  # stack cut by snaplen
    ]
    path = write_pcap(tmp_path / "mpls.pcap", [(1.0 + i, f) for i, f in enumerate(frames)])
    got, reader = read_all([path])
    assert got.frame.tolist() == [1, 2, 3, 4]
    assert got.ip_version.tolist() == [4, 4, 6, 4]
    assert got.src_lo.tolist()[:2] == [_v4("10.78.1.1")] * 2 and got.seq.tolist()[0] == 11
    assert got.vlan.tolist() == [-1, -1, -1, 7] and got.inner_vlan.tolist() == [-1, -1, -1, 8]
    assert got.payload_off[0] == 14 + 4 + 20 + 20
    s = reader.stats
    assert (s.non_ip, s.malformed, s.truncated) == (1, 1, 1)
    _check_against_reference(path)


def test_pppoe_built_here(tmp_path: Path) -> None:
    v4 = tcp_ipv4(src="10.78.2.2", data=b"hello")
    v6 = tcp_ipv6()
    frames = [
        ether(_pppoe(b"\x00\x21" + v4), 0x8864),
        ether(_pppoe(b"\x00\x57" + v6), 0x8864),
        ether(_pppoe(b"\x21" + v4), 0x8864),  # protocol-field compression
        ether(_pppoe(b"\x00\x21" + v4), 0x8864, tags=[(0x8100, 42)]),  # PPPoE in a VLAN
        ether(_pppoe(b"\xc0\x21" + b"\x01\x01\x00\x04"), 0x8864),  # LCP: not IP
        ether(struct.pack(">BBHH", 0x11, 0x09, 0, 0), 0x8863),  # PADI (discovery): not IP
        ether(_pppoe(b"")[:5], 0x8864),  # cut inside the PPPoE header
    ]
    path = write_pcap(tmp_path / "pppoe.pcap", [(1.0 + i, f) for i, f in enumerate(frames)])
    got, reader = read_all([path])
    assert got.ip_version.tolist() == [4, 6, 4, 4] and got.vlan.tolist() == [-1, -1, -1, 42]
    assert got.payload_len.tolist() == [5, 2, 5, 5]
    off = int(got.payload_off[0])
    assert bytes(got.raw[off : off + 5]) == b"hello"
    s = reader.stats
    assert (s.non_ip, s.truncated) == (2, 1)
    _check_against_reference(path)


def test_fabricpath_built_here(tmp_path: Path) -> None:
    v4 = tcp_ipv4(src="10.78.3.3", sport=4242)
    frames = [
        _fabricpath(ether(v4)),
        _fabricpath(ether(v4, tags=[(0x8100, 99)])),
        _fabricpath(ether(_mpls([3]) + v4, 0x8847)),
        _fabricpath(ether(v4)[:10]),  # inner Ethernet header cut short
    ]
    path = write_pcap(tmp_path / "fp.pcap", [(1.0 + i, f) for i, f in enumerate(frames)])
    got, reader = read_all([path])
    assert got.sport.tolist() == [4242] * 3 and got.vlan.tolist() == [-1, 99, -1]
    assert reader.stats.truncated == 1
    _check_against_reference(path)
