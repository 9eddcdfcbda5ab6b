"""Each supported link type decodes (corpus files, or captures built here), VLAN tags too."""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import numpy as np
import pytest
from builders import ether, tcp_ipv4, write_pcap
from parsers_helpers import needs_corpus, read_all, robust

V4 = 0xFFFF_0000_0000


def _v4(addr: str) -> int:
    return V4 | int.from_bytes(bytes(map(int, addr.split("."))), "big")


def tcp_ipv6(nh_chain: bytes = b"", first_nh: int = 6) -> bytes:
    tcp = bytes(dpkt.tcp.TCP(sport=5000, dport=443, seq=9, flags=dpkt.tcp.TH_RST, data=b"ab"))
    body = nh_chain + tcp
    ip6 = dpkt.ip6.IP6(src=b"\x20\x01" + b"\x00" * 13 + b"\x01", dst=b"\xfe\x80" + b"\x00" * 13 + b"\x02",
                       nxt=first_nh, hlim=33, plen=len(body))  # fmt: skip
    return bytes(ip6.pack_hdr()) + body


@needs_corpus
@pytest.mark.parametrize(
    ("name", "linktype", "n_tcp"),
    [
        ("tcp-handshake-nano.pcap", 113, 3),  # Linux SLL
        ("decode-sll2-01/input.pcap", 276, 5),  # Linux SLL2
        ("detect-bytemath-01/input.pcap", 101, 1),  # raw IP
        ("alert-max-default/input.pcap", 228, 1),  # IPv4
        ("beep-oobr.pcap", 229, 1),  # IPv6 (+ reserved bits in the linktype word)
        ("bug-7552-01/input.pcap", 0, 2),  # BSD NULL
        ("redis/start-with-server.pcapng", 0, 6),  # BSD NULL in pcapng
    ],
)
def test_corpus_link_types(name: str, linktype: int, n_tcp: int) -> None:
    got, reader = read_all([robust(name)])
    assert reader.inputs[0].link_types == [linktype]
    assert len(got) == n_tcp and reader.stats.unsupported_link == 0


@needs_corpus
def test_vlan_and_qinq() -> None:
    got, _ = read_all([robust("tcp-mss-keyword/input.pcap")])
    assert got.vlan.tolist() != [-1] and got.inner_vlan.tolist() == [-1]
    got, _ = read_all([robust("vlan-pcp-dei.pcapng")])
    # tshark -T fields -e vlan.id: "10,20", "20", "" repeated three times
    assert got.vlan.tolist() == [10, 20, -1] * 3
    assert got.inner_vlan.tolist() == [20, -1, -1] * 3


def test_vlan_tpids_built_here(tmp_path: Path) -> None:
    pkt = tcp_ipv4()
    frames = [
        (1.0, ether(pkt)),
        (2.0, ether(pkt, tags=[(0x8100, 0x2000 | 10)])),  # PCP bits above the 12-bit id
        (3.0, ether(pkt, tags=[(0x88A8, 100), (0x8100, 200)])),
        (4.0, ether(pkt, tags=[(0x9100, 300), (0x8100, 400)])),
    ]
    got, _ = read_all([write_pcap(tmp_path / "v.pcap", frames)])
    assert got.vlan.tolist() == [-1, 10, 100, 300]
    assert got.inner_vlan.tolist() == [-1, -1, 200, 400]
    assert np.all(got.src_lo == _v4("10.0.0.1"))


@pytest.mark.parametrize("linktype", [12, 14, 101])
def test_raw_ip_variants(tmp_path: Path, linktype: int) -> None:
    got, reader = read_all(
        [write_pcap(tmp_path / "r.pcap", [(1.0, tcp_ipv4()), (2.0, tcp_ipv6())], linktype)]
    )
    assert got.ip_version.tolist() == [4, 6] and reader.stats.unsupported_link == 0


def test_null_and_loop_families(tmp_path: Path) -> None:
    v4, v6 = tcp_ipv4(), tcp_ipv6()
    null = [(1.0, struct.pack("<I", 2) + v4), (2.0, struct.pack("<I", 24) + v6),
            (3.0, struct.pack("<I", 28) + v6), (4.0, struct.pack("<I", 30) + v6),
            (5.0, struct.pack(">I", 2) + v4),  # written on a big-endian host
            (6.0, struct.pack("<I", 7) + v4)]  # fmt: skip
    got, reader = read_all([write_pcap(tmp_path / "null.pcap", null, 0)])
    assert got.ip_version.tolist() == [4, 6, 6, 6, 4] and reader.stats.non_ip == 1
    loop = [(1.0, struct.pack(">I", 2) + v4), (2.0, struct.pack(">I", 24) + v6)]
    got, reader = read_all([write_pcap(tmp_path / "loop.pcap", loop, 108)])
    assert reader.inputs[0].link_types == [108] and got.ip_version.tolist() == [4, 6]


def test_sll2_built_here(tmp_path: Path) -> None:
    hdr = struct.pack(">HHiHBB8s", 0x86DD, 0, 3, 1, 4, 6, b"\x00" * 8)
    got, _ = read_all([write_pcap(tmp_path / "s.pcap", [(1.0, hdr + tcp_ipv6())], 276)])
    assert got.ip_version.tolist() == [6] and got.flags.tolist() == [0x004]
    assert got.src_hi.tolist() == [0x2001 << 48] and got.src_lo.tolist() == [1]


@needs_corpus
def test_unsupported_link_type_is_one_warning_and_others_go_on() -> None:
    got, reader = read_all(
        [robust("decode-chdlc-01/hdlc-http_1tx.pcap"), robust("tcp-handshake-nano.pcap")]
    )
    bad, good = reader.inputs
    assert bad.warnings == [
        "unsupported link type c-hdlc(104): its records are counted, not decoded"
    ]
    assert reader.stats.unsupported_link == 17 and len(got) == 3 and good.warnings == []
