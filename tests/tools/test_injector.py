"""The ground-truth injector's packets (tools._injector) without root: what it forges over
IPv4 and IPv6 parses as the segment it claims to be, with a valid TCP checksum over the
family's pseudo-header (RFC 793 / RFC 8200 8.1), summed here independently of the injector."""

from __future__ import annotations

import ipaddress
import struct

import dpkt
import pytest

from tools._injector import _forward_step, build_rst


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    acc = 0
    for (word,) in struct.iter_unpack("!H", data):
        acc += word
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


def _pseudo(src: str, dst: str, length: int) -> bytes:
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if len(s) == 16:
        return s + d + length.to_bytes(4, "big") + b"\0\0\0\x06"
    return s + d + b"\0\x06" + length.to_bytes(2, "big")


@pytest.mark.parametrize(("src", "dst"), [("10.77.2.2", "10.77.1.2"), ("fd77:2::2", "fd77:1::2")])
def test_forged_segment_parses_with_a_valid_checksum(src: str, dst: str) -> None:
    ts = b"\x08\x0a" + struct.pack("!II", 11, 22)
    raw = build_rst(src, dst, 8000, 40000, 0xFFFFFFF0 + 0x20, 789, 0x14, 512, 77, ttl=63,
                    opts=ts, payload=b"TCP RST from remote system", flow=0x12345)
    v6 = ":" in src
    ip = dpkt.ip6.IP6(raw) if v6 else dpkt.ip.IP(raw)
    tcp = ip.data
    assert isinstance(tcp, dpkt.tcp.TCP)
    assert (str(ipaddress.ip_address(ip.src)), str(ipaddress.ip_address(ip.dst))) == (src, dst)
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.flags, tcp.win) == (
        8000, 40000, 0x10, 789, 0x14, 512)  # seq taken mod 2**32
    assert tcp.data == b"TCP RST from remote system"
    assert dict(dpkt.tcp.parse_opts(tcp.opts))[dpkt.tcp.TCP_OPT_TIMESTAMP] == ts[2:]
    segment = raw[40:] if v6 else raw[20:]
    assert _ones_complement_sum(_pseudo(src, dst, len(segment)) + segment) == 0xFFFF
    if v6:
        assert (ip.v, ip.hlim, ip.flow, ip.nxt, ip.plen) == (6, 63, 0x12345, 6, len(segment))
    else:
        assert (ip.ttl, ip.id, ip.len) == (63, 77, len(raw))
        assert _ones_complement_sum(raw[:20]) == 0xFFFF


@pytest.mark.parametrize("v6", [False, True])
def test_forward_step_lowers_the_ttl_and_keeps_the_header_valid(v6: bool) -> None:
    src, dst = ("fd77:1::2", "fd77:2::2") if v6 else ("10.77.1.2", "10.77.2.2")
    raw = build_rst(src, dst, 40000, 8000, 1, 2, 0x18, 100, 5, ttl=64, payload=b"GET /")
    out = bytes(_forward_step(raw, v6))
    if v6:
        assert out[7] == 63 and out[:7] == raw[:7] and out[8:] == raw[8:]  # no header checksum
    else:
        assert out[8] == 63 and _ones_complement_sum(out[:20]) == 0xFFFF
        assert out[20:] == raw[20:]
