"""Capture builders shared by the tests: packets as bytes, written as classic pcap by dpkt.

    write_pcap(path, [(T0, frame("10.0.0.1", 40000, "10.0.0.2", 80, S, seq=1000)), ...])
"""

from __future__ import annotations

import io
import socket
import struct
from collections.abc import Sequence
from pathlib import Path

import dpkt

S, A, F, R, P = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN, dpkt.tcp.TH_RST, dpkt.tcp.TH_PUSH
T0 = 1_700_000_000.0  # a capture's first second, epoch seconds
MSS_1460 = b"\x02\x04\x05\xb4"  # the TCP MSS option

Packets = Sequence[tuple[float, bytes]]  # (epoch seconds, frame bytes)


def pcap_bytes(packets: Packets, linktype: int = dpkt.pcap.DLT_EN10MB, nano: bool = False,
               snaplen: int = 262144) -> bytes:  # fmt: skip
    """A classic pcap holding `packets` in the order given."""
    buf = io.BytesIO()
    w = dpkt.pcap.Writer(buf, linktype=linktype, snaplen=snaplen, nano=nano)
    for ts, frame_bytes in packets:
        w.writepkt(frame_bytes, ts)
    return buf.getvalue()


def write_pcap(path: Path, packets: Packets, linktype: int = dpkt.pcap.DLT_EN10MB,
               nano: bool = False, sort: bool = False) -> Path:  # fmt: skip
    """`packets` as a classic pcap at `path`; `sort` puts them in time order first."""
    if sort:
        packets = sorted(packets, key=lambda p: p[0])
    path.write_bytes(pcap_bytes(packets, linktype, nano))
    return path


def ether(payload: bytes, ethertype: int = 0x0800, tags: Sequence[tuple[int, int]] = ()) -> bytes:
    """An Ethernet frame; `tags` = [(tpid, vid), ...] outermost first."""
    hdr = b"\x02" * 6 + b"\x04" * 6
    for tpid, vid in tags:
        hdr += struct.pack(">HH", tpid, vid)
    return hdr + struct.pack(">H", ethertype) + payload


def tcp_segment(sport: int, dport: int, flags: int, seq: int = 0, ack: int = 0, data: bytes = b"",
                opts: bytes = b"", win: int = 8192) -> dpkt.tcp.TCP:  # fmt: skip
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq % 2**32, ack=ack % 2**32, flags=flags,
                       win=win, opts=opts, data=data)  # fmt: skip
    tcp.off = 5 + (len(opts) + 3) // 4  # dpkt does not derive the data offset from opts
    return tcp


def frame(src: str, sport: int, dst: str, dport: int, flags: int, seq: int = 0, ack: int = 0,
          data: bytes = b"", opts: bytes = b"", vlan: int | None = None, win: int = 8192,
          ttl: int = 64, ip_id: int = 9) -> bytes:  # fmt: skip
    """Ethernet (optionally 802.1Q-tagged) carrying IPv4 or IPv6 (by the address) and TCP."""
    tcp = tcp_segment(sport, dport, flags, seq, ack, data, opts, win)
    ip: dpkt.Packet
    if ":" in src:
        ip = dpkt.ip6.IP6(
            src=socket.inet_pton(socket.AF_INET6, src), dst=socket.inet_pton(socket.AF_INET6, dst),
            nxt=6, hlim=ttl, data=tcp, plen=len(bytes(tcp)),
        )  # fmt: skip
        ethertype = 0x86DD
    else:
        ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, ttl=ttl,
                        id=ip_id, data=tcp)  # fmt: skip
        ip.len = 20 + len(bytes(tcp))
        ethertype = 0x0800
    eth = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01"
    if vlan is not None:
        eth += struct.pack("!HH", 0x8100, vlan)
    return eth + struct.pack("!H", ethertype) + bytes(ip)


def tcp_ipv4(
    src: str = "10.0.0.1", dst: str = "10.0.0.2", sport: int = 1234, dport: int = 80,
    flags: int = dpkt.tcp.TH_SYN, seq: int = 100, ack: int = 0, opts: bytes = b"",
    data: bytes = b"", ip_opts: bytes = b"", ttl: int = 64, ip_id: int = 7, off: int = 0,
) -> bytes:  # fmt: skip
    """A raw IPv4 packet (no link layer) carrying TCP, with IP options and the raw
    flags/fragment-offset word under the caller's control."""
    tcp = tcp_segment(sport, dport, flags, seq, ack, data, opts, win=1000)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, ttl=ttl,
                    id=ip_id, opts=ip_opts, data=tcp)  # fmt: skip
    ip.hl = 5 + len(ip_opts) // 4
    ip._flags_offset = off  # raw flags+fragment-offset word
    return bytes(ip)


def syn_rst_pcap(path: Path, n: int, rst: bool = True, vlan: int | None = None) -> Path:
    """A large capture fast: `n` refused connection attempts (SYN, then RST+ACK from the
    server: REJ, one `closed_port` RST each), or `n` unanswered SYNs (S0) when not `rst`;
    client k is 10.(k>>16 & 255).(k>>8 & 255).(k & 255) port 10000 + k % 50000, 0.1 ms apart.
    Raw bytes, built as numpy rows (about 1 s per million packets)."""
    import numpy as np

    syn = frame("10.0.0.0", 10000, "10.0.0.1", 443, S, 1000, vlan=vlan)
    rsta = frame("10.0.0.1", 443, "10.0.0.0", 10000, R | A, 0, 1001, vlan=vlan)
    ip0 = 14 + (4 if vlan is not None else 0)
    per = 2 if rst else 1
    k = np.arange(n, dtype=np.uint32)
    rows = []
    for kind, tmpl in enumerate([syn, rsta][:per]):
        rec = np.zeros((n, 16 + len(tmpl)), np.uint8)
        rec[:, 16:] = np.frombuffer(tmpl, np.uint8)
        us = (k.astype(np.uint64) * per + kind) * 100
        rec[:, 0:4] = (np.uint64(int(T0)) + us // 1_000_000).astype("<u4").view(np.uint8).reshape(n, 4)
        rec[:, 4:8] = (us % 1_000_000).astype("<u4").view(np.uint8).reshape(n, 4)
        rec[:, 8:12] = rec[:, 12:16] = np.full(n, len(tmpl), "<u4").view(np.uint8).reshape(n, 4)
        client = (np.uint32(10 << 24) | k).astype(">u4").view(np.uint8).reshape(n, 4)
        port = (10000 + k % 50000).astype(">u2").view(np.uint8).reshape(n, 2)
        ip = 16 + ip0
        if kind == 0:
            rec[:, ip + 12 : ip + 16] = client
            rec[:, ip + 20 : ip + 22] = port
        else:
            rec[:, ip + 16 : ip + 20] = client
            rec[:, ip + 22 : ip + 24] = port
        rows.append(rec)
    body = np.stack(rows, axis=1).reshape(-1) if per == 2 else rows[0].reshape(-1)
    path.write_bytes(pcap_bytes([]) + body.tobytes())
    return path
