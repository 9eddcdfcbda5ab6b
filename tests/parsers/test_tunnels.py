"""Tunnels: VXLAN, GENEVE, GRE (gretap, NVGRE, ERSPAN I/II/III, WCCP, PPTP), IP-in-IP (4in4,
6in4, 4in6, 6in6), Teredo, GTP-U, MPLS-in-UDP, nesting and the depth limit.

Captures built here are checked against the dpkt reference decoder field by field and
against the values written; the corpus's tunnel captures against tshark (which decodes
VXLAN, GENEVE, GRE, ERSPAN and, with its heuristic, Teredo).  Real-kernel tunnels are in
tests/tools/test_tunnel_netns.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from builders import T0, A, R, S, ether, write_pcap
from decode_check import STATS, assert_same_as_reference
from parsers_helpers import ZEEK, needs_corpus, read_all, robust
from tunnel_builders import (
    erspan1,
    erspan2,
    erspan3,
    eth_of,
    geneve,
    gre,
    gtpu,
    inner_tcp,
    ip4,
    ip6,
    mpls_udp,
    pptp,
    teredo,
    udp,
    vxlan,
)

from rstlens.parsers._tunnels import REGISTRY

O1, O2 = "192.0.2.1", "192.0.2.2"  # tunnel endpoints
O61, O62 = "2001:db8::a", "2001:db8::b"
I4 = inner_tcp("10.0.0.1", "10.0.0.2", 40000, 80, S)
I6 = inner_tcp("fd00::1", "fd00::2", 40001, 443, S)
T6 = inner_tcp("2001:0:4137:9e50::1", "2001:4860::68", 40002, 80, S)  # a Teredo client

# (name, outer IP packet, expected `tunnel` text or None when no TCP row, DecodeStats deltas)
CASES = [
    ("vxlan", vxlan(O1, O2, 42, eth_of(I4)), "vxlan:42", {"vxlan": 1}),
    ("vxlan-8472", vxlan(O1, O2, 7, eth_of(I6), port=8472), "vxlan:7", {"vxlan": 1}),
    ("vxlan-inner-vlan", vxlan(O1, O2, 5, eth_of(I4, ((0x8100, 100),))), "vxlan:5,vlan=100",
     {"vxlan": 1}),
    ("vxlan-over-ipv6", vxlan(O61, O62, 6, eth_of(I4)), "vxlan:6", {"vxlan": 1}),
    ("geneve-options", geneve(O1, O2, 99, eth_of(I4), options=b"\x01\x02\x03\x01" + bytes(4)),
     "geneve:99", {"geneve": 1}),
    ("geneve-ip", geneve(O1, O2, 3, I6, ptype=0x86DD), "geneve:3", {"geneve": 1}),
    ("gre", gre(O1, O2, 0x0800, I4), "gre", {"gre": 1}),
    ("gre-csum-key-seq", gre(O1, O2, 0x0800, I4, key=77, seq=1, csum=True), "gre:77", {"gre": 1}),
    ("gre-over-ipv6", gre(O61, O62, 0x86DD, I6), "gre", {"gre": 1}),
    ("gretap", gre(O1, O2, 0x6558, eth_of(I4), key=5), "gretap:5", {"gre": 1}),
    ("nvgre", gre(O1, O2, 0x6558, eth_of(I4), key=(5000 << 8) | 1), "gretap:1280001", {"gre": 1}),
    ("wccp", gre(O1, O2, 0x883E, b"\x00\x00\x00\x00" + I4), "gre", {"gre": 1}),
    ("erspan1", erspan1(O1, O2, eth_of(I4)), "erspan1", {"erspan": 1}),
    ("erspan2", erspan2(O1, O2, 9, eth_of(I4)), "erspan2:9", {"erspan": 1}),
    ("erspan3", erspan3(O1, O2, 10, eth_of(I6)), "erspan3:10", {"erspan": 1}),
    ("erspan3-no-platform", erspan3(O1, O2, 11, eth_of(I4), platform=False), "erspan3:11",
     {"erspan": 1}),
    ("4in4", ip4(O1, O2, 4, I4), "ip4in4", {"ip_in_ip": 1}),
    ("6in4", ip4(O1, O2, 41, I6), "ip6in4", {"ip_in_ip": 1}),
    ("4in6", ip6(O61, O62, 4, I4), "ip4in6", {"ip_in_ip": 1}),
    ("6in6", ip6(O61, O62, 41, I6), "ip6in6", {"ip_in_ip": 1}),
    ("teredo", teredo(O1, O2, T6, origin=True, auth=True), "teredo", {"teredo": 1}),
    ("teredo-other-port", teredo(O1, O2, T6, sport=3797, dport=32900), "teredo", {"teredo": 1}),
    ("gtpu", gtpu(O1, O2, 0x1234, I4), "gtpu", {"gtpu": 1}),
    ("gtpu-extension", gtpu(O1, O2, 0x99, I6, extension=True), "gtpu", {"gtpu": 1}),
    ("mpls-in-udp", mpls_udp(O1, O2, 300, I4), "mpls-udp", {"mpls_udp": 1}),
    ("pptp", pptp(O1, O2, 9, I4), "pptp", {"pptp": 1}),
    # a tunnel inside a VLAN inside a tunnel: depth 2
    ("nested", gre(O61, O62, 0x6558, ether(vxlan(O1, O2, 8, eth_of(I4)), 0x0800, ((0x8100, 300),))),
     "gretap,vlan=300/vxlan:8", {"gre": 1, "vxlan": 1}),
    # depth 3: dropped at Zeek's default depth
    ("too-deep", ip4("198.51.100.1", "198.51.100.2", 4, gre(O1, O2, 0x6558, eth_of(vxlan(O1, O2, 9, eth_of(I4))))),
     None, {"ip_in_ip": 1, "gre": 1, "tunnel_depth_exceeded": 1}),
    ("esp", ip4(O1, O2, 50, bytes(24)), None, {"esp": 1, "non_tcp": 1}),
    ("vxlan-arp", vxlan(O1, O2, 12, ether(bytes(28), 0x0806)), None, {"vxlan": 1, "non_ip": 1}),
    ("udp-4789-no-vni", ip4(O1, O2, 17, udp(1, 4789, bytes(8) + eth_of(I4))), None, {"non_tcp": 1}),
    ("plain-udp", ip4(O1, O2, 17, udp(1, 53, bytes(60))), None, {"non_tcp": 1}),
]  # fmt: skip
def _capture(tmp_path: Path, cases=CASES) -> Path:  # type: ignore[no-untyped-def]
    return write_pcap(tmp_path / "tunnels.pcap", [(T0 + k, ether(c[1], 0x86DD if c[1][0] >> 4 == 6 else 0x0800))
                                                  for k, c in enumerate(cases)])  # fmt: skip


def test_every_encapsulation_decodes_as_the_reference_does(tmp_path: Path) -> None:
    assert_same_as_reference(_capture(tmp_path))


@pytest.mark.parametrize("depth", [0, 1, 3, 4])
def test_the_depth_limit_agrees_with_the_reference(tmp_path: Path, depth: int) -> None:
    assert_same_as_reference(_capture(tmp_path), depth)


@pytest.mark.parametrize(("name", "packet", "text", "counts"), CASES, ids=[c[0] for c in CASES])
def test_each_encapsulation(tmp_path: Path, name: str, packet: bytes, text: str | None,
                            counts: dict[str, int]) -> None:  # fmt: skip
    path = _capture(tmp_path, [(name, packet, text, counts)])
    got, reader = read_all([path])
    expected = {k: 0 for k in STATS if k not in ("packets", "tcp")} | counts
    assert {k: getattr(reader.stats, k) for k in expected} == expected
    if text is None:
        assert len(got) == 0
        return
    assert len(got) == 1 and got.tunnel[0] != 0 and got.outer_ttl[0] in (50, 60)
    assert REGISTRY.text(int(got.tunnel[0]))[0] == text  # type: ignore[index]
    assert got.flags[0] == S and got.ttl[0] == 64  # the inner header's


def test_untunnelled_rows_carry_no_tunnel(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "plain.pcap", [(T0, ether(I4)), (T0 + 1, ether(I6, 0x86DD))])
    got, _ = read_all([path])
    assert got.tunnel.tolist() == [0, 0] and got.outer_ttl.tolist() == [-1, -1]


def test_deeper_nesting_with_a_larger_depth(tmp_path: Path) -> None:
    deep = [c for c in CASES if c[0] == "too-deep"]
    got, reader = read_all([_capture(tmp_path, deep)], tunnel_depth=3)
    assert len(got) == 1 and reader.stats.tunnel_depth_exceeded == 0
    assert REGISTRY.text(int(got.tunnel[0]))[0] == "ip4in4/gretap/vxlan:9"  # type: ignore[index]
    got, reader = read_all([_capture(tmp_path, [c for c in CASES if c[0] == "vxlan"])], tunnel_depth=0)
    assert len(got) == 0 and reader.stats.tunnel_depth_exceeded == 1


def _conn(tmp_path: Path, name: str, packets: list[tuple[float, bytes]]):  # type: ignore[no-untyped-def]
    from rstlens.api import analyze

    path = write_pcap(tmp_path / f"{name}.pcap", packets)
    return analyze(path, outdir=tmp_path / name)


def _handshake_rst(wrap, t0: float = T0):  # type: ignore[no-untyped-def]
    """SYN, SYN-ACK, ACK, then RST from the client, each wrapped by wrap(inner, from_client)."""
    c, s = "10.0.0.1", "10.0.0.2"
    seq = [(c, s, 40000, 80, S, 100, 0), (s, c, 80, 40000, S | A, 500, 101),
           (c, s, 40000, 80, A, 101, 501), (c, s, 40000, 80, R | A, 101, 501)]  # fmt: skip
    return [(t0 + k * 0.01, wrap(inner_tcp(a, b, sp, dp, fl, sq, ak), a == c))
            for k, (a, b, sp, dp, fl, sq, ak) in enumerate(seq)]  # fmt: skip


def test_two_tenants_overlapping_connections_stay_apart(tmp_path: Path) -> None:
    def tenant(vni: int):  # type: ignore[no-untyped-def]
        # an overlay: the outer addresses swap with the direction
        return lambda p, fwd: ether(vxlan(O1, O2, vni, eth_of(p)) if fwd else vxlan(O2, O1, vni, eth_of(p)))

    res = _conn(tmp_path, "tenants", sorted(_handshake_rst(tenant(1)) + _handshake_rst(tenant(2), T0 + 0.001)))
    flows = res.flows.sort_values("tunnel")
    assert len(flows) == 2
    assert list(flows.tunnel.astype(str)) == ["vxlan:1", "vxlan:2"]
    assert list(flows.tunnel_endpoints.astype(str)) == [f"{O1}-{O2}"] * 2
    assert list(flows.conn_state.astype(str)) == ["RSTO", "RSTO"]
    assert list(flows.history) == ["ShAR", "ShAR"]
    assert len(res.resets) == 2 and set(res.resets.outer_ttl) == {60} and set(res.resets.ttl) == {64}
    assert list(res.resets.cause.astype(str)) == ["abort", "abort"]


def test_a_mirror_session_keeps_one_connection(tmp_path: Path) -> None:
    # AWS-style traffic mirroring: both directions come from the same mirror source
    res = _conn(tmp_path, "mirror", _handshake_rst(lambda p, fwd: ether(vxlan(O1, O2, 77, eth_of(p)))))
    assert len(res.flows) == 1 and res.flows.conn_state.astype(str).iloc[0] == "RSTO"
    assert res.summary.decode["vxlan"] == 4


def test_the_same_connection_untunnelled_has_the_same_verdicts(tmp_path: Path) -> None:
    plain = _conn(tmp_path, "plain", _handshake_rst(lambda p, fwd: ether(p)))
    tun = _conn(tmp_path, "gre", _handshake_rst(lambda p, fwd: ether(gre(O1, O2, 0x0800, p, key=3))))
    assert plain.flows.tunnel.isna().all() and plain.flows.tunnel_endpoints.isna().all()
    assert plain.resets.outer_ttl.isna().all()
    for col in ("conn_state", "history", "orig_pkts", "resp_pkts", "orig_h", "resp_h"):
        assert list(plain.flows[col].astype(str)) == list(tun.flows[col].astype(str)), col
    for col in ("cause", "subcause", "direction", "ttl", "seq", "ack"):
        assert list(plain.resets[col].astype(str)) == list(tun.resets[col].astype(str)), col
    assert tun.flows.tunnel.astype(str).iloc[0] == "gre:3"


# ---- the corpus's tunnel captures ---------------------------------------------------------
TUNNEL_CORPUS = [
    # (file, TCP rows, tunnelled TCP rows, connections, RSTs, DecodeStats), checked with tshark
    (lambda: robust("tunnels/vxlan-inner-tcp-bad-checksum.pcap"), 1, 1, 1, 0, {"vxlan": 1}),
    (lambda: robust("tunnels/geneve-inner-tcp-bad-checksum.pcap"), 1, 1, 1, 0, {"geneve": 1}),
    (lambda: robust("vxlan-non-zero-reserved-fields/input.pcap"), 10, 10, 1, 0, {"vxlan": 10}),
    (lambda: robust("bug-5437-01/input.pcap"), 2, 2, 2, 0, {"erspan": 2}),
    (lambda: robust("tests/wccp_redirect_gre.pcap"), 1, 1, 1, 0, {"gre": 1}),
    # PPTP: the control connection in the clear, one enhanced-GRE packet (compressed PPP)
    (lambda: robust("tests/pptp.pcap"), 22, 0, 1, 0, {"pptp": 1, "non_ip": 1}),
    # ERSPAN III in raw IP; its one record is cut short inside the mirrored frame
    (lambda: robust("tests/erspan-type-iii-pb-1.pcap"), 0, 0, 0, 0, {"truncated": 1}),
    # Teredo on port 3544 and, once qualified, on the client's port 32900
    (lambda: ZEEK / "Teredo.pcap", 55, 22, 10, 5, {"teredo": 29}),
    # Teredo bubbles (no TCP inside); the RSTs are untunnelled
    (lambda: robust("output-eve-ftp-data/input.pcap"), 755, 0, 80, 41, {"teredo": 6}),
    # GTP-U with a different TEID each way (in VLANs): one connection per 5-tuple, as tshark
    (lambda: robust("pcap/http_origin_different_than_host.pcap"), 4, 4, 1, 0, {"gtpu": 4}),
    (lambda: robust("pcap/tls_invalid_reads.pcap"), 12, 3, 3, 0, {"gtpu": 3}),
]


def _tshark_rows(path: Path) -> list[tuple[int, int, int, int, int]]:
    cmd = ["tshark", "-r", str(path), "-o", "teredo.heuristic_teredo:TRUE", "-Y", "tcp", "-T",
           "fields", "-E", "separator=|", "-E", "occurrence=l", "-e", "frame.number", "-e",
           "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.seq_raw", "-e", "tcp.flags"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [(int(f[0]), int(f[1]), int(f[2]), int(f[3]), int(f[4], 16))
            for f in (line.split("|") for line in out.splitlines())]  # fmt: skip


@needs_corpus
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark missing")
@pytest.mark.parametrize(("get", "n_tcp", "n_tunnelled", "conns", "rsts", "counts"), TUNNEL_CORPUS)
def test_corpus_tunnel_captures(tmp_path: Path, get, n_tcp: int, n_tunnelled: int, conns: int,
                                rsts: int, counts: dict[str, int]) -> None:  # fmt: skip
    from rstlens.api import analyze

    path = get()
    got, reader = read_all([path])
    assert len(got) == n_tcp and int((got.tunnel != 0).sum()) == n_tunnelled
    for k, v in counts.items():
        assert getattr(reader.stats, k) == v, k
    want = _tshark_rows(path)
    have = list(zip(got.frame.tolist(), got.sport.tolist(), got.dport.tolist(), got.seq.tolist(),
                    (got.flags & 0xFFF).tolist(), strict=True))  # fmt: skip
    assert have == want
    assert_same_as_reference(path)
    res = analyze(path, outdir=tmp_path / "o")
    assert len(res.flows) == conns and len(res.resets) == rsts
    flows = pq.read_table(tmp_path / "o" / "flows.parquet")
    tunnelled_flows = flows.num_rows - flows.column("tunnel").null_count
    assert (tunnelled_flows > 0) == (n_tunnelled > 0)


def test_no_tunnel_column_for_plain_traffic(tmp_path: Path) -> None:
    res = _conn(tmp_path, "plain2", _handshake_rst(lambda p, fwd: ether(p)))
    assert res.flows.tunnel.isna().all()


def test_packets_and_explain_show_the_tunnel(tmp_path: Path) -> None:
    from rstlens.cli.explain import explain_lines
    from rstlens.parsers._show import format_rows

    pkts = _handshake_rst(lambda p, fwd: ether(vxlan(O1, O2, 42, eth_of(p), ttl=61)))
    res = _conn(tmp_path, "explain", pkts)
    got, _ = read_all([tmp_path / "explain.pcap"])
    lines = format_rows(got)
    assert all(line.endswith(f" tunnel vxlan:42 [{O1}-{O2}] outer ttl 61") for line in lines)
    text = explain_lines(tmp_path / "explain", res.flows.uid.iloc[0])
    assert f"tunnel vxlan:42 [{O1}-{O2}]" in text[0]
    assert any(line.startswith("RST ") and line.endswith("outer ttl 61") for line in text)
    ladder = [line for line in text if "tunnel vxlan:42 [" in line and "seq" in line]
    assert len(ladder) == 4  # the BPF cannot select tunnelled packets: filtered after decoding
