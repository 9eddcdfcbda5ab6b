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


def _hdr(cls: Any, buf: bytes, need: int) -> Any:
    """A dpkt header of class `cls` with its fixed fields only (its payload left unparsed)."""
    if len(buf) < need:
        raise _Out("truncated")
    obj = cls.__new__(cls)
    dpkt.Packet.unpack(obj, buf[:need])
    return obj


def _link(buf: bytes, linktype: int) -> tuple[int, int, int, int]:
    """(offset of the network header, ethertype or -1 = by version nibble, vlan, inner)."""
    vlan = inner = -1
    if linktype == 1:
        eth = _hdr(dpkt.ethernet.Ethernet, buf, 14)
        et, p = eth.type, 14
        if et == _FABRICPATH:  # 16-byte FabricPath header, then a whole Ethernet frame
            eth = _hdr(dpkt.ethernet.Ethernet, buf[16:], 14)
            et, p = eth.type, 30
    elif linktype == 113:
        et, p = _hdr(dpkt.sll.SLL, buf, 16).ethtype, 16
    elif linktype == 276:
        et, p = _hdr(dpkt.sll2.SLL2, buf, 20).ethtype, 20
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
    for _ in range(8):
        if et not in _TAGS:
            break
        tag = _hdr(dpkt.ethernet.VLANtag8021Q, buf[p:], 4)
        if vlan < 0:
            vlan = tag.id
        elif inner < 0:
            inner = tag.id
        et, p = tag.type, p + 4
    if et in _MPLS:
        for _ in range(16):
            label = _hdr(dpkt.ethernet.MPLSlabel, buf[p:], 4)
            p += 4
            if label.s:
                et = -1
                break
        else:
            raise _Out("malformed")
    elif et == _PPPOE_SESSION:
        _hdr(dpkt.pppoe.PPPoE, buf[p:], 7)  # 6-byte header + at least one protocol byte
        p += 6
        if buf[p] & 1:  # protocol-field compression (RFC 1661 6.5): one byte
            proto, p = buf[p], p + 1
        else:
            if len(buf) - p < 2:
                raise _Out("truncated")
            proto, p = struct.unpack(">H", buf[p : p + 2])[0], p + 2
        et = {0x0021: 0x0800, 0x0057: 0x86DD}.get(proto, 0)
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


def decode_packet(buf: bytes, linktype: int) -> dict[str, int]:
    """Columns of one TCP packet (without ts/source/iface/frame); raises _Out otherwise."""
    p, et, vlan, inner = _link(buf, linktype)
    l3 = buf[p:]
    row: dict[str, int] = {"vlan": vlan, "inner_vlan": inner}
    if et == 0x0800:
        ip = _hdr(dpkt.ip.IP, l3, 20)
        if ip.v != 4 or ip.hl < 5:
            raise _Out("malformed")
        ihl = ip.hl * 4
        if ip.mf or ip.offset:
            raise _Out("ip_fragments")
        if ip.p != 6:
            raise _Out("non_tcp")
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
            raise _Out("non_tcp")
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


def read_reference(path: str, source: int = 0) -> tuple[PacketBatch, DecodeStats]:
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
                row = decode_packet(bytes(buf), linktype)
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
