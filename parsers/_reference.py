"""Reference decoder: a slow, simple, per-packet path built on dpkt.

Used by the tests to check the numba kernel field by field.  dpkt's own readers
(`dpkt.pcap.Reader`, `dpkt.pcapng.Reader`) read the file and dpkt header classes
unpack every header; only the glue (which layer comes next, what counts as truncated)
is written here, independently of `_decode.py`.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import dpkt
import numpy as np

from . import _batch as B
from ._batch import BATCH_COLUMNS, DecodeStats, PacketBatch

_TAGS = (0x8100, 0x88A8, 0x9100)
_EXT = (0, 43, 60, 44, 51)
_MPLS = (0x8847, 0x8848)
_PPPOE_SESSION = 0x8864
_FABRICPATH = 0x8903


class _Out(Exception):
    """Packet is not a decodable TCP segment; `kind` names the DecodeStats counter."""

    def __init__(self, kind: str) -> None:
        self.kind = kind


_M64 = (1 << 64) - 1
# tunnel layer type -> the DecodeStats counter of its encapsulation
_TUNNEL_STAT = {
    B.TUNNEL_VXLAN: "vxlan", B.TUNNEL_GENEVE: "geneve", B.TUNNEL_GRE: "gre",
    B.TUNNEL_GRETAP: "gre", B.TUNNEL_ERSPAN1: "erspan", B.TUNNEL_ERSPAN2: "erspan",
    B.TUNNEL_ERSPAN3: "erspan", B.TUNNEL_IP4IN4: "ip_in_ip", B.TUNNEL_IP6IN4: "ip_in_ip",
    B.TUNNEL_IP4IN6: "ip_in_ip", B.TUNNEL_IP6IN6: "ip_in_ip", B.TUNNEL_TEREDO: "teredo",
    B.TUNNEL_GTPU: "gtpu", B.TUNNEL_MPLS_UDP: "mpls_udp", B.TUNNEL_PPTP: "pptp",
}  # fmt: skip
_TEB, _PPP = 0x6558, 0x880B  # what a tunnel carries besides IP: Ethernet, PPP
_PPP_PROTOCOLS = {0x0021: 0x0800, 0x0057: 0x86DD, 0x0281: 0x8847, 0x0283: 0x8847}
_GRE_DEVICES = (778, 823)  # ARPHRD_IPGRE, ARPHRD_IP6GRE: SLL's protocol is a GRE type


def _be(b: bytes, i: int, n: int) -> int:
    if len(b) < i + n:
        raise _Out("truncated")
    return int.from_bytes(b[i : i + n], "big")


def _ip_pair(l3: bytes) -> tuple[int, int, int, int]:
    """(src hi, src lo, dst hi, dst lo) of the IP header at the start of l3 (IPv4 mapped)."""
    if l3[0] >> 4 == 4:
        m = 0xFFFF_0000_0000
        return 0, m | int.from_bytes(l3[12:16], "big"), 0, m | int.from_bytes(l3[16:20], "big")
    v = [int.from_bytes(l3[k : k + 8], "big") for k in (8, 16, 24, 32)]
    return v[0], v[1], v[2], v[3]


def _udp_tunnel(seg: bytes) -> tuple[int, int, int, int] | None:
    """(type, id, offset of the inner packet in seg, what it is) or None: the UDP payload."""
    if len(seg) < 8:
        return None
    udp = _hdr(dpkt.udp.UDP, seg, 8)
    u = seg[8:]
    if udp.dport in (4789, 8472):
        if len(u) < 8:
            raise _Out("truncated")
        if not u[0] & 0x08:
            return None
        return B.TUNNEL_VXLAN, _be(u, 4, 3), 16, _TEB
    if udp.dport == 6081:
        if len(u) < 8:
            raise _Out("truncated")
        hl = 8 + (u[0] & 0x3F) * 4
        proto = _be(u, 2, 2)
        if u[0] >> 6:
            return None
        if len(u) < hl:
            raise _Out("truncated")
        if proto not in (_TEB, 0x0800, 0x86DD):
            return None
        return B.TUNNEL_GENEVE, _be(u, 4, 3), 8 + hl, proto
    if 2152 in (udp.sport, udp.dport):
        if len(u) < 8:
            raise _Out("truncated")
        if u[0] >> 5 != 1 or not u[0] & 0x10 or u[1] != 0xFF:
            return None
        x = 8
        if u[0] & 0x07:
            nxt = _be(u, 11, 1) if u[0] & 0x04 else 0
            x = 12
            for _ in range(8):
                if not nxt:
                    break
                ln = _be(u, x, 1) * 4
                if not ln:
                    raise _Out("malformed")
                nxt = _be(u, x + ln - 1, 1)
                x += ln
            if nxt:
                raise _Out("malformed")
        return B.TUNNEL_GTPU, -1, 8 + x, -1  # TEIDs differ per direction: no id
    if udp.dport == 6635:
        return B.TUNNEL_MPLS_UDP, -1, 8, 0x8847
    if udp.ulen < 48:
        return None
    x = 0  # Teredo: indications, then IPv6 filling the UDP payload
    if len(u) >= 2 and u[:2] == b"\x00\x01":
        if len(u) < 4:
            return None
        x = 13 + u[2] + u[3]
    if len(u) - x >= 2 and u[x : x + 2] == b"\x00\x00":
        x += 8
    six = u[x:]
    if len(six) < 40 or six[0] >> 4 != 6 or x + 40 + _be(six, 4, 2) != udp.ulen - 8:
        return None

    def teredo(a: bytes) -> bool:
        return a[:4] == b"\x20\x01\x00\x00" or (a[0] == 0xFE and a[1] & 0xC0 == 0x80)

    if 3544 not in (udp.sport, udp.dport) and not (teredo(six[8:24]) or teredo(six[24:40])):
        return None
    return B.TUNNEL_TEREDO, -1, 8 + x, 0x86DD


def _gre_tunnel(seg: bytes) -> tuple[int, int, int, int] | None:
    gre = _hdr(dpkt.gre.GRE, seg, 4)
    flags, proto, version = gre.flags, gre.p, gre.flags & 7
    x = 4
    if version == 1:  # PPTP
        if proto != _PPP or not flags & 0x2000:
            return None
        _be(seg, 6, 2)  # the call id (the receiver's, different each way: no id)
        empty = _be(seg, 4, 2) == 0
        x = 8 + (4 if flags & 0x1000 else 0) + (4 if flags & 0x0080 else 0)
        if empty:
            return None
        if len(seg) < x:
            raise _Out("truncated")
        return B.TUNNEL_PPTP, -1, x, _PPP
    if version or flags & 0x4000:
        return None
    x += 4 if flags & 0x8000 else 0
    key = -1
    if flags & 0x2000:
        key = _be(seg, x, 4)
        x += 4
    seq = bool(flags & 0x1000)
    x += 4 if seq else 0
    if len(seg) < x:
        raise _Out("truncated")
    if proto in (0x0800, 0x86DD):
        return B.TUNNEL_GRE, key, x, proto
    if proto == _TEB:
        return B.TUNNEL_GRETAP, key, x, _TEB
    if proto in _MPLS:
        return B.TUNNEL_GRE, key, x, 0x8847
    if proto == 0x883E:  # WCCP redirect header
        if len(seg) < x + 4:
            raise _Out("truncated")
        return B.TUNNEL_GRE, key, x + 4, -1
    if proto == 0x88BE and not seq:
        return B.TUNNEL_ERSPAN1, -1, x, _TEB
    if proto == 0x88BE:
        if len(seg) < x + 8:
            raise _Out("truncated")
        return B.TUNNEL_ERSPAN2, _be(seg, x + 2, 2) & 0x3FF, x + 8, _TEB
    if proto == 0x22EB:
        if len(seg) < x + 12:
            raise _Out("truncated")
        hl = 12 + (8 if _be(seg, x + 10, 2) & 1 else 0)
        if len(seg) < x + hl:
            raise _Out("truncated")
        return B.TUNNEL_ERSPAN3, _be(seg, x + 2, 2) & 0x3FF, x + hl, _TEB
    return None


def _tunnel(seg: bytes, proto: int, version: int) -> tuple[int, int, int, int] | None:
    """The encapsulation in an IP payload (protocol `proto`), or None."""
    if proto == 17:
        return _udp_tunnel(seg)
    if proto == 47:
        return _gre_tunnel(seg)
    if proto == 4:
        return (B.TUNNEL_IP4IN4 if version == 4 else B.TUNNEL_IP4IN6), -1, 0, 0x0800
    if proto == 41:
        return (B.TUNNEL_IP6IN4 if version == 4 else B.TUNNEL_IP6IN6), -1, 0, 0x86DD
    return None


def _identity(layers: list[tuple[int, ...]]) -> int:
    """The tunnel identity of a layer stack (the same hash as the kernel, in Python ints)."""
    h = 0xCBF29CE484222325
    for kind, tid, a_hi, a_lo, b_hi, b_lo, vlans in layers:
        for x in (((kind << 48) ^ (vlans << 8) ^ tid) & _M64, a_hi, a_lo, b_hi, b_lo):
            h = ((h ^ x) * 0x100000001B3) & _M64
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _M64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _M64
    h ^= h >> 31
    return h or 1


def _hdr(cls: Any, buf: bytes, need: int) -> Any:
    """A dpkt header of class `cls` with its fixed fields only (its payload left unparsed)."""
    if len(buf) < need:
        raise _Out("truncated")
    obj = cls.__new__(cls)
    dpkt.Packet.unpack(obj, buf[:need])
    return obj


def _link(buf: bytes, linktype: int) -> tuple[int, int, int, int]:
    """(offset of the network header, ethertype or -1 = by version nibble, vlan, inner)."""
    if linktype == 1:
        eth = _hdr(dpkt.ethernet.Ethernet, buf, 14)
        et, p = eth.type, 14
        if et == _FABRICPATH:  # 16-byte FabricPath header, then a whole Ethernet frame
            eth = _hdr(dpkt.ethernet.Ethernet, buf[16:], 14)
            et, p = eth.type, 30
    elif linktype in (113, 276):
        sll = _hdr(dpkt.sll.SLL, buf, 16) if linktype == 113 else _hdr(dpkt.sll2.SLL2, buf, 20)
        et, p = sll.ethtype, 16 if linktype == 113 else 20
        if sll.hrd in _GRE_DEVICES and et == _TEB:  # a GRE protocol type: Ethernet inside
            q, et, vlan, inner = _link(buf[p:], 1)
            return p + q, et, vlan, inner
    elif linktype == 9:  # PPP, 0xFF03 first when in HDLC-like framing
        p, et = _ppp(buf, 2 if buf[:2] == b"\xff\x03" else 0)
    elif linktype == 50:  # PPP in HDLC-like framing, or Cisco HDLC by its address byte
        if not buf:
            raise _Out("truncated")
        if buf[0] == 0xFF:
            p, et = _ppp(buf, 2)
        elif buf[0] in (0x0F, 0x8F):
            et, p = _be(buf, 2, 2), 4
        else:
            raise _Out("non_ip")
    elif linktype == 104:  # Cisco HDLC: address, control, EtherType
        et, p = _be(buf, 2, 2), 4
    elif linktype in (12, 14, 101):
        et, p = -1, 0
    elif linktype == 228:
        et, p = 0x0800, 0
    elif linktype == 229:
        et, p = 0x86DD, 0
    elif linktype in (0, 108):
        if len(buf) < 4:
            raise _Out("truncated")
        be, le = struct.unpack(">I", buf[:4])[0], struct.unpack("<I", buf[:4])[0]
        fam = be if linktype == 108 else (le if le in (2, 24, 28, 30) else be)
        if fam == 2:
            et = 0x0800
        elif fam in (24, 28, 30):
            et = 0x86DD
        else:
            raise _Out("non_ip")
        p = 4
    else:
        raise _Out("unsupported_link")
    return _below_ip(buf, p, et)


def _ppp(buf: bytes, x: int) -> tuple[int, int]:
    """(offset past the PPP protocol field at x, the EtherType it names); 1 byte when odd
    (protocol-field compression, RFC 1661 6.5)."""
    if len(buf) <= x:
        raise _Out("truncated")
    if buf[x] & 1:
        proto, x = buf[x], x + 1
    else:
        proto, x = _be(buf, x, 2), x + 2
    et = _PPP_PROTOCOLS.get(proto)
    if et is None:
        raise _Out("non_ip")
    return x, et


def _below_ip(buf: bytes, p: int, et: int) -> tuple[int, int, int, int]:
    """VLAN tags, PPPoE, MPLS after a link header whose EtherType is `et`, at p (-2: a PPP
    frame, perhaps with 0xFF03, is at p)."""
    if et == -2:
        p, et = _ppp(buf, p + (2 if buf[p : p + 2] == b"\xff\x03" else 0))
    vlan = inner = -1
    for _ in range(8):
        if et not in _TAGS:
            break
        tag = _hdr(dpkt.ethernet.VLANtag8021Q, buf[p:], 4)
        if vlan < 0:
            vlan = tag.id
        elif inner < 0:
            inner = tag.id
        et, p = tag.type, p + 4
    if et == _PPPOE_SESSION:
        _hdr(dpkt.pppoe.PPPoE, buf[p:], 7)  # 6-byte header + at least one protocol byte
        p, et = _ppp(buf, p + 6)
    if et in _MPLS:
        for _ in range(16):
            label = _hdr(dpkt.ethernet.MPLSlabel, buf[p:], 4)
            p += 4
            if label.s:
                et = -1
                break
        else:
            raise _Out("malformed")
    if et == -1:
        if len(buf) <= p:
            raise _Out("truncated")
        et = {4: 0x0800, 6: 0x86DD}.get(buf[p] >> 4, 0)
    if et not in (0x0800, 0x86DD):
        raise _Out("non_ip")
    return p, et, vlan, inner


def _tcp_options(opts: bytes, hdr_len: int) -> dict[str, int]:
    """Walk options; `opts` is what was captured of the option area (`hdr_len` bytes long)."""
    r = {"tcp_opts": 0, "ts_val": 0, "ts_ecr": 0, "mss": 0, "wscale": -1}
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= hdr_len:
            r["tcp_opts"] |= 0x80
            break
        if i + 1 >= len(opts):
            break
        ln = opts[i + 1]
        if ln < 2 or i + ln > hdr_len:
            r["tcp_opts"] |= 0x80
            break
        if i + ln > len(opts):
            break
        body = opts[i + 2 : i + ln]
        expect = {2: 4, 3: 3, 8: 10}.get(kind)
        if expect is not None and ln != expect:
            r["tcp_opts"] |= 0x80
        elif kind == 2:
            r["tcp_opts"] |= 0x02
            r["mss"] = struct.unpack(">H", body)[0]
        elif kind == 3:
            r["tcp_opts"] |= 0x04
            r["wscale"] = min(body[0], 14)
        elif kind == 8:
            r["tcp_opts"] |= 0x01
            r["ts_val"], r["ts_ecr"] = struct.unpack(">II", body)
        r["tcp_opts"] |= {4: 0x08, 5: 0x10, 19: 0x20, 29: 0x40}.get(kind, 0)
        i += ln
    return r


def _carried(buf: bytes, q: int, what: int) -> tuple[int, int, int]:
    """(IP header offset, its EtherType, VLANs packed) of what a tunnel carries at q."""
    if what == _TEB:
        p, et, vlan, inner = _link(buf[q:], 1)
        return q + p, et, ((vlan + 1) << 16) | (inner + 1)
    if what == _PPP:
        what = -2  # PPP: optional 0xFF03, then the protocol (below_ip walks on from there)
    p, et, vlan, inner = _below_ip(buf[q:], 0, what)
    return q + p, et, ((vlan + 1) << 16) | (inner + 1)


def decode_packet(buf: bytes, linktype: int, stats: DecodeStats | None = None,
                  tunnel_depth: int = 2) -> dict[str, int]:  # fmt: skip
    """Columns of one TCP packet (without ts/source/iface/frame); raises _Out otherwise.
    Tunnel layers are decoded to `tunnel_depth` (and counted into `stats`)."""
    p, et, vlan, inner = _link(buf, linktype)
    layers: list[tuple[int, ...]] = []
    outer_ttl = -1
    while True:
        try:
            row = _network(buf, p, et)
            break
        except _NotTcp as nt:
            tun = _tunnel(buf[nt.payload :], nt.proto, 4 if et == 0x0800 else 6)
            if tun is None:
                if stats is not None and nt.proto == 50:
                    stats.esp += 1
                raise _Out("non_tcp") from None
            if len(layers) >= min(tunnel_depth, B.TUNNEL_MAX_LAYERS):
                raise _Out("tunnel_depth_exceeded") from None
            kind, tid, off, what = tun
            if stats is not None:
                name = _TUNNEL_STAT[kind]
                setattr(stats, name, getattr(stats, name) + 1)
            s_hi, s_lo, d_hi, d_lo = _ip_pair(buf[p:])
            outer_ttl = nt.ttl
            q, et, vlans = _carried(buf, nt.payload + off, what)
            if (d_hi, d_lo) < (s_hi, s_lo):
                s_hi, s_lo, d_hi, d_lo = d_hi, d_lo, s_hi, s_lo
            layers.append((kind, tid, s_hi, s_lo, d_hi, d_lo, vlans))
            p = q
    row.update(vlan=vlan, inner_vlan=inner, outer_ttl=outer_ttl,
               tunnel=_identity(layers) if layers else 0)  # fmt: skip
    return row


class _NotTcp(Exception):
    """An IP packet carrying another protocol: where its payload starts in the record."""

    def __init__(self, proto: int, payload: int, ttl: int) -> None:
        self.proto, self.payload, self.ttl = proto, payload, ttl


def _network(buf: bytes, p: int, et: int) -> dict[str, int]:
    """The IP and TCP columns of the packet whose IP header is at p."""
    l3 = buf[p:]
    row: dict[str, int] = {}
    if et == 0x0800:
        ip = _hdr(dpkt.ip.IP, l3, 20)
        if ip.v != 4 or ip.hl < 5:
            raise _Out("malformed")
        ihl = ip.hl * 4
        if ip.mf or ip.offset:
            raise _Out("ip_fragments")
        if ip.p != 6:
            raise _NotTcp(ip.p, p + ihl, ip.ttl)
        if len(l3) < ihl:
            raise _Out("truncated")
        total = ip.len or len(l3)  # 0: TSO capture
        if total < ihl:
            raise _Out("malformed")
        mapped = 0xFFFF_0000_0000
        row.update(
            ip_version=4, src_hi=0, dst_hi=0, ttl=ip.ttl, ip_id=ip.id, df=int(ip.df), ip_hlen=ihl,
            src_lo=mapped | int.from_bytes(ip.src, "big"),
            dst_lo=mapped | int.from_bytes(ip.dst, "big"),
        )  # fmt: skip
        t, l4len = ihl, total - ihl
    else:
        ip6 = _hdr(dpkt.ip6.IP6, l3, 40)
        if ip6.v != 6:
            raise _Out("malformed")
        nh, q = ip6.nxt, 40
        for _ in range(9):
            if nh not in _EXT:
                break
            if len(l3) - q < 8:
                raise _Out("truncated")
            if nh == 44:
                frag = _hdr(dpkt.ip6.IP6FragmentHeader, l3[q:], 8)
                if frag.frag_off or frag.m_flag:
                    raise _Out("ip_fragments")
                hl = 8
            elif nh == 51:
                hl = (l3[q + 1] + 2) * 4
            else:
                hl = (l3[q + 1] + 1) * 8
            nh = l3[q]
            if len(l3) - q < hl:
                raise _Out("truncated")
            q += hl
        else:
            raise _Out("malformed")
        if nh != 6:
            raise _NotTcp(nh, p + q, ip6.hlim)
        plen = ip6.plen or len(l3) - 40
        if plen < q - 40:
            raise _Out("malformed")
        row.update(
            ip_version=6, ttl=ip6.hlim, ip_id=-1, df=0, ip_hlen=q,
            src_hi=int.from_bytes(ip6.src[:8], "big"), src_lo=int.from_bytes(ip6.src[8:], "big"),
            dst_hi=int.from_bytes(ip6.dst[:8], "big"), dst_lo=int.from_bytes(ip6.dst[8:], "big"),
        )  # fmt: skip
        t, l4len = q, plen - (q - 40)
    tcp = _hdr(dpkt.tcp.TCP, l3[t:], 20)
    thl = tcp.off * 4
    if thl < 20 or l4len < thl:
        raise _Out("malformed")
    seg = l3[t:]
    row.update(
        sport=tcp.sport, dport=tcp.dport, seq=tcp.seq, ack=tcp.ack, flags=tcp.flags,
        window=tcp.win, tcp_hlen=thl, payload_len=l4len - thl, payload_off=p + t + thl,
        captured_payload=max(0, min(len(seg) - thl, l4len - thl)),
    )  # fmt: skip
    row.update(_tcp_options(seg[20:thl], thl - 20))
    return row


def _open_dpkt(path: str) -> tuple[Any, io.BufferedIOBase]:
    """A dpkt pcap or pcapng reader of `path` (gzip'd or not) and the file it reads."""
    raw = Path(path).read_bytes()[:2]
    fh = gzip.open(path, "rb") if raw == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115
    head = fh.read(4)
    fh.seek(0)
    if head == b"\x0a\x0d\x0d\x0a":
        return dpkt.pcapng.Reader(fh), fh
    return dpkt.pcap.Reader(fh), fh


def read_reference(path: str, source: int = 0, tunnel_depth: int = 2) -> tuple[PacketBatch, DecodeStats]:
    """Decode a whole capture with dpkt (single link type; dpkt errors propagate)."""
    reader, fh = _open_dpkt(path)
    linktype = reader.datalink() & 0xFFFF
    stats = DecodeStats()
    rows: list[dict[str, int]] = []
    raw = bytearray()
    try:
        for frame, (ts, buf) in enumerate(reader, start=1):
            stats.packets += 1
            stats.bytes += len(buf)
            try:
                row = decode_packet(bytes(buf), linktype, stats, tunnel_depth)
            except _Out as out:
                setattr(stats, out.kind, getattr(stats, out.kind) + 1)
                continue
            if isinstance(ts, Decimal):  # dpkt gives Decimal for nanosecond pcap
                ts_us = int((ts * 1_000_000).to_integral_value(rounding=ROUND_FLOOR))
            else:
                sec = int(ts)
                ts_us = sec * 1_000_000 + math.floor((ts - sec) * 1_000_000 + 1e-3)
            row.update(ts_us=ts_us, source=source, iface=0, frame=frame)
            row["payload_off"] += len(raw)
            raw += buf
            rows.append(row)
    finally:
        fh.close()
    stats.tcp = len(rows)
    cols = {name: np.array([r[name] for r in rows], dtype) for name, dtype in BATCH_COLUMNS.items()}
    return PacketBatch(**cols, raw=np.frombuffer(bytes(raw), np.uint8)), stats
