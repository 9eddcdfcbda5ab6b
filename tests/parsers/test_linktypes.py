"""Each supported link type decodes (corpus files, or captures built here), VLAN tags too."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import dpkt
import numpy as np
import pytest
from builders import ether, tcp_ipv4, write_pcap
from decode_check import assert_same_as_reference
from parsers_helpers import needs_corpus, read_all, robust

V4 = 0xFFFF_0000_0000
N_80211 = 1  # capinfos -c 80211traffic.pcap


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
    got, reader = read_all([robust("ppa-capture-files/80211traffic.pcap"), robust("tcp-handshake-nano.pcap")])
    bad, good = reader.inputs
    assert bad.warnings == [
        "unsupported link type ieee802.11(105): its records are counted, not decoded"
    ]
    assert reader.stats.unsupported_link == N_80211 and len(got) == 3 and good.warnings == []


# ---- PPP (9), PPP in HDLC-like framing (50), Cisco HDLC (104) --------------------------------
PPP_HDLC_CORPUS = [
    # (file, link type, TCP rows per tshark)
    ("defrag/bug-6887-defrag-ppp-ipv4-tcp-syn/frag-ppp-ip-tcp-syn.pcap", 9, 0),  # 1-byte protocol
    ("tcpdump/tests/lspping-fec-ldp.pcap", 9, 3),  # 0xFF03, IPv4 and MPLS (0x0281)
    ("tcpdump/tests/bgp_vpn_attrset.pcap", 9, 1),
    ("decode-chdlc-01/hdlc-http_1tx.pcap", 104, 17),
    ("pcaps/BGP_redist.pcap", 104, 2),  # IPv4 and MPLS (0x8847)
]


def _tshark_tcp(path: Path) -> list[tuple[int, int, int, int, int]]:
    """(frame, sport, dport, seq, flags) of tshark's unfragmented TCP packets."""
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "tcp && !(ip.flags.mf == 1) && ip.frag_offset == 0",
         "-T", "fields", "-E", "separator=|", "-E", "occurrence=l", "-e", "frame.number", "-e",
         "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.seq_raw", "-e", "tcp.flags"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [(int(f[0]), int(f[1]), int(f[2]), int(f[3]), int(f[4], 16))
            for f in (line.split("|") for line in out.splitlines())]  # fmt: skip


def _rows(got) -> list[tuple[int, int, int, int, int]]:  # type: ignore[no-untyped-def]
    return list(zip(got.frame.tolist(), got.sport.tolist(), got.dport.tolist(), got.seq.tolist(),
                    (got.flags & 0xFFF).tolist(), strict=True))  # fmt: skip


@needs_corpus
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark missing")
@pytest.mark.parametrize(("name", "linktype", "n_tcp"), PPP_HDLC_CORPUS)
def test_ppp_and_cisco_hdlc_corpus(name: str, linktype: int, n_tcp: int) -> None:
    path = robust(name)
    got, reader = read_all([path])
    assert reader.inputs[0].link_types == [linktype] and reader.stats.unsupported_link == 0
    assert len(got) == n_tcp and _rows(got) == _tshark_tcp(path)
    assert reader.stats.non_ip == 0 and reader.inputs[0].warnings == []
    assert_same_as_reference(path)


@needs_corpus
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark missing")
@pytest.mark.parametrize("name", ["tcpdump/tests/lspping-fec-ldp.pcap", "decode-chdlc-01/hdlc-http_1tx.pcap",
                                  "pcaps/BGP_redist.pcap"])  # fmt: skip
def test_ppp_in_hdlc_framing(tmp_path: Path, name: str) -> None:
    """LINKTYPE_PPP_HDLC (50) holds PPP in HDLC-like framing (0xFF03 ...) or Cisco HDLC
    (0x0F/0x8F ...), unstuffed: no capture of it is at hand, so the corpus's real PPP (0xFF03
    framed) and Cisco HDLC records are written as link type 50 unchanged, plus one record with
    neither address byte, and must decode as tshark decodes the originals."""
    path = robust(name)
    with path.open("rb") as fh:
        records = [(ts, bytes(buf)) for ts, buf in dpkt.pcap.Reader(fh)]
    assert all(buf[:2] == b"\xff\x03" or buf[0] in (0x0F, 0x8F) for _, buf in records)
    odd = (records[-1][0] + 1, b"\x21" + records[-1][1][4:])  # a bare PPP protocol: not 50's
    hdlc = write_pcap(tmp_path / "ppp-hdlc.pcap", [*records, odd], 50)
    got, reader = read_all([hdlc])
    assert reader.inputs[0].link_types == [50] and reader.stats.unsupported_link == 0
    assert _rows(got) == _tshark_tcp(path) and reader.stats.non_ip == 1
    assert_same_as_reference(hdlc)


def test_cooked_gre_device_carrying_ethernet(tmp_path: Path) -> None:
    """On ARPHRD_IPGRE / ARPHRD_IP6GRE devices the cooked header's protocol is a GRE protocol
    type: 0x6558 is an Ethernet frame (Linux hands those to gretap devices, so no capture of
    it was made here: built records).  On other devices 0x6558 is not IP."""
    eth = ether(tcp_ipv4(), 0x0800, tags=[(0x8100, 12)])
    sll = [(1.0 + k, struct.pack(">HHH8sH", 0, hatype, 0, b"", 0x6558) + eth)
           for k, hatype in enumerate((778, 823, 1, 0xFFFE))]  # fmt: skip
    sll2 = [(1.0 + k, struct.pack(">HHiHBB8s", 0x6558, 0, 3, hatype, 0, 0, b"") + eth)
            for k, hatype in enumerate((778, 823, 776))]  # fmt: skip
    for name, records, lt, n_gre in (("sll", sll, 113, 2), ("sll2", sll2, 276, 2)):
        path = write_pcap(tmp_path / f"{name}.pcap", records, lt)
        got, reader = read_all([path])
        assert len(got) == n_gre and got.vlan.tolist() == [12] * n_gre
        assert reader.stats.non_ip == len(records) - n_gre
        assert_same_as_reference(path)


@needs_corpus
def test_packets_names_the_link_types() -> None:
    from parsers_helpers import RSTLENS

    proc = subprocess.run([RSTLENS, "packets", str(robust("tcpdump/tests/lspping-fec-ldp.pcap")),
                           str(robust("pcaps/BGP_redist.pcap"))], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3 + 2
    assert proc.stderr.rstrip().endswith("0 on unsupported link types; link types ppp(9), c-hdlc(104)")
