"""Tunnelled packets built byte by byte (outer IPv4/IPv6, UDP, GRE, the tunnel headers), for
the tunnel tests.  Each function returns the outer packet from its IP header on; wrap it in
`builders.ether` for an Ethernet capture."""

from __future__ import annotations

import socket
import struct

import dpkt
from builders import ether, tcp_segment


def ip4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 60) -> bytes:
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, ttl=ttl,
                    id=1, data=payload)  # fmt: skip
    ip.len = 20 + len(payload)
    return bytes(ip)


def ip6(src: str, dst: str, nh: int, payload: bytes, hlim: int = 50) -> bytes:
    ip = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, src),
                      dst=socket.inet_pton(socket.AF_INET6, dst), nxt=nh, hlim=hlim,
                      plen=len(payload))  # fmt: skip
    return bytes(ip.pack_hdr()) + payload


def outer_ip(src: str, dst: str, proto: int, payload: bytes, ttl: int = 60) -> bytes:
    return (ip6 if ":" in src else ip4)(src, dst, proto, payload, ttl)


def inner_tcp(src: str, dst: str, sport: int, dport: int, flags: int, seq: int = 1000,
              ack: int = 0, data: bytes = b"", ttl: int = 64) -> bytes:  # fmt: skip
    """An IPv4 or IPv6 packet (by the address) carrying a TCP segment."""
    seg = bytes(tcp_segment(sport, dport, flags, seq, ack, data))
    return outer_ip(src, dst, 6, seg, ttl)


def eth_of(ip_packet: bytes, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    return ether(ip_packet, 0x86DD if ip_packet[0] >> 4 == 6 else 0x0800, tags)


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def vxlan(src: str, dst: str, vni: int, frame: bytes, port: int = 4789, sport: int = 50000,
          ttl: int = 60) -> bytes:  # fmt: skip
    return outer_ip(src, dst, 17, udp(sport, port, struct.pack(">II", 0x08 << 24, vni << 8) + frame), ttl)


def geneve(src: str, dst: str, vni: int, payload: bytes, ptype: int = 0x6558,
           options: bytes = b"") -> bytes:  # fmt: skip
    assert len(options) % 4 == 0
    hdr = struct.pack(">BBHI", len(options) // 4, 0, ptype, vni << 8) + options
    return outer_ip(src, dst, 17, udp(50001, 6081, hdr + payload))


def gre(src: str, dst: str, ptype: int, payload: bytes, key: int | None = None,
        seq: int | None = None, csum: bool = False) -> bytes:  # fmt: skip
    flags = (0x8000 if csum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    hdr = struct.pack(">HH", flags, ptype)
    if csum:
        hdr += b"\x00\x00\x00\x00"
    if key is not None:
        hdr += struct.pack(">I", key)
    if seq is not None:
        hdr += struct.pack(">I", seq)
    return outer_ip(src, dst, 47, hdr + payload)


def erspan2(src: str, dst: str, session: int, frame: bytes) -> bytes:
    hdr = struct.pack(">HHI", 0x1000 | 0, session, 0)
    return gre(src, dst, 0x88BE, hdr + frame, seq=7)


def erspan3(src: str, dst: str, session: int, frame: bytes, platform: bool = True) -> bytes:
    hdr = struct.pack(">HHIHH", 0x2000, session, 12345, 0, 1 if platform else 0)
    if platform:
        hdr += b"\x00" * 8
    return gre(src, dst, 0x22EB, hdr + frame, seq=8)


def erspan1(src: str, dst: str, frame: bytes) -> bytes:
    return gre(src, dst, 0x88BE, frame)


def teredo(src: str, dst: str, inner6: bytes, sport: int = 3544, dport: int = 40000,
           origin: bool = False, auth: bool = False) -> bytes:  # fmt: skip
    pre = b""
    if auth:
        pre += struct.pack(">HBB", 1, 2, 3) + b"id" + b"aut" + b"\x00" * 8 + b"\x00"
    if origin:
        pre += struct.pack(">HH", 0, 0xFFFF ^ 3797) + bytes(4)
    return ip4(src, dst, 17, udp(sport, dport, pre + inner6))


def gtpu(src: str, dst: str, teid: int, inner: bytes, extension: bool = False) -> bytes:
    if extension:  # E flag: seq, N-PDU, next type, then one 4-byte extension (PDU session)
        body = struct.pack(">HBB", 0, 0, 0x85) + struct.pack(">BBBB", 1, 0x10, 0x09, 0) + inner
        hdr = struct.pack(">BBHI", 0x34, 0xFF, len(body), teid)
    else:
        body = inner
        hdr = struct.pack(">BBHI", 0x30, 0xFF, len(body), teid)
    return ip4(src, dst, 17, udp(2152, 2152, hdr + body))


def mpls_udp(src: str, dst: str, label: int, inner: bytes) -> bytes:
    return ip4(src, dst, 17, udp(50002, 6635, struct.pack(">I", (label << 12) | 0x100 | 64) + inner))


def pptp(src: str, dst: str, call: int, inner4: bytes) -> bytes:
    ppp = b"\xff\x03\x00\x21" + inner4
    hdr = struct.pack(">HHHHI", 0x3001, 0x880B, len(ppp), call, 5)  # K, S, version 1
    return ip4(src, dst, 47, hdr + ppp)
