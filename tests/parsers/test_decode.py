"""Kernel semantics on hand-built packets: IP options, IPv6 extension headers, fragments,
TSO lengths, snaplen cuts, TCP options."""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import numpy as np
from builders import tcp_ipv4, write_pcap
from parsers_helpers import read_all
from test_linktypes import tcp_ipv6

from rstlens.parsers import decode_arrays
from rstlens.parsers._batch import (
    OPT_AO,
    OPT_MALFORMED,
    OPT_MD5,
    OPT_MSS,
    OPT_SACK,
    OPT_SACK_PERM,
    OPT_TIMESTAMP,
    OPT_WSCALE,
)
from rstlens.parsers._decode import C_BYTES, C_MALFORMED


def _one(buf: bytes, linktype: int = 228, caplen: int | None = None):
    n = len(buf) if caplen is None else caplen
    z = np.zeros(1, np.int64)
    batch, counters = decode_arrays(
        np.frombuffer(buf, np.uint8), z, np.array([n]), np.array([linktype]), z, z + 1, z
    )
    return batch, counters


def test_ipv4_with_options_and_fields() -> None:
    pkt = tcp_ipv4(
        ip_opts=b"\x01\x01\x01\x00",
        data=b"hello",
        flags=0x018,
        seq=7,
        ack=9,
        ttl=3,
        ip_id=4242,
        off=0x4000,
    )
    b, _ = _one(pkt)
    assert len(b) == 1
    assert b.ip_hlen[0] == 24 and b.tcp_hlen[0] == 20 and b.payload_len[0] == 5
    assert (b.seq[0], b.ack[0], b.flags[0], b.ttl[0], b.ip_id[0], bool(b.df[0])) == (
        7,
        9,
        0x018,
        3,
        4242,
        True,
    )
    assert bytes(b.raw[b.payload_off[0] : b.payload_off[0] + b.captured_payload[0]]) == b"hello"


def test_fragments_counted_atomic_fragment_decoded() -> None:
    _, c = _one(tcp_ipv4(off=0x2000))  # MF
    assert c[2] == 1
    _, c = _one(tcp_ipv4(off=0x0010))  # offset > 0
    assert c[2] == 1
    frag = lambda off_m: struct.pack(">BBHI", 6, 0, off_m, 0x1234)  # noqa: E731
    b, c = _one(tcp_ipv6(frag(0), 44), 229)  # atomic fragment: decoded
    assert len(b) == 1 and b.ip_hlen[0] == 48
    _, c = _one(tcp_ipv6(frag(1), 44), 229)  # M set
    assert c[2] == 1
    _, c = _one(tcp_ipv6(frag(8 << 3), 44), 229)  # offset 8
    assert c[2] == 1


def test_ipv6_extension_chain() -> None:
    hop = bytes([60, 0]) + b"\x01\x04\x00\x00\x00\x00"  # hop-by-hop -> dest opts, PadN
    dst = bytes([51, 1]) + b"\x01\x0c" + b"\x00" * 12  # dest opts (16 bytes) -> AH
    ah = bytes([6, 2]) + b"\x00" * 14  # AH: (2+2)*4 = 16 bytes -> TCP
    b, _ = _one(tcp_ipv6(hop + dst + ah, 0), 229)
    assert len(b) == 1 and b.ip_hlen[0] == 40 + 8 + 16 + 16
    assert b.payload_len[0] == 2 and b.ttl[0] == 33 and b.ip_id[0] == -1
    # routing header cut by the capture: truncated, not read out of bounds
    rt = bytes([6, 4]) + b"\x00" * 38
    _, c = _one(tcp_ipv6(rt, 43), 229, caplen=40 + 16)
    assert c[3] == 1


def test_tso_zero_total_length_and_snaplen_cut() -> None:
    pkt = bytearray(tcp_ipv4(data=b"x" * 100))
    pkt[2:4] = b"\x00\x00"
    b, _ = _one(bytes(pkt))
    assert b.payload_len[0] == 100
    b, c = _one(tcp_ipv4(data=b"x" * 100), caplen=20 + 20 + 10)  # headers + 10 payload bytes
    assert b.payload_len[0] == 100 and b.captured_payload[0] == 10
    _, c = _one(tcp_ipv4(data=b"x" * 100), caplen=20 + 19)  # TCP header incomplete
    assert c[3] == 1


def test_ethernet_padding_is_not_payload(tmp_path: Path) -> None:
    from builders import ether

    frame = ether(tcp_ipv4(flags=dpkt.tcp.TH_RST)) + b"\x00" * 6  # padded to 60 bytes
    got, _ = read_all([write_pcap(tmp_path / "p.pcap", [(1.0, frame)])])
    assert got.payload_len.tolist() == [0] and got.captured_payload.tolist() == [0]


def test_tcp_options() -> None:
    opts = (b"\x02\x04\x05\xb4" + b"\x01\x03\x03\x07" + b"\x04\x02" + b"\x08\x0a" + struct.pack(">II", 11, 22)
            + b"\x05\x0a" + b"\x00" * 8 + b"\x00\x00")  # fmt: skip
    b, _ = _one(tcp_ipv4(opts=opts))
    assert b.tcp_opts[0] == OPT_MSS | OPT_WSCALE | OPT_SACK_PERM | OPT_TIMESTAMP | OPT_SACK
    b2, _ = _one(tcp_ipv4(opts=b"\x13\x12" + b"\x00" * 16 + b"\x1d\x04\x00\x00" + b"\x00\x00"))
    assert b2.tcp_opts[0] == OPT_MD5 | OPT_AO
    assert (b.mss[0], b.wscale[0], b.ts_val[0], b.ts_ecr[0]) == (1460, 7, 11, 22)
    b, _ = _one(tcp_ipv4(opts=b"\x03\x03\x63\x00"))  # window scale 99 -> 14 (RFC 7323)
    assert b.wscale[0] == 14
    b, _ = _one(tcp_ipv4(opts=b"\x02\x04\x05\xb4\x08\x0a\x00\x00"))  # TS overruns the header
    assert b.tcp_opts[0] == OPT_MSS | OPT_MALFORMED and b.mss[0] == 1460 and b.ts_val[0] == 0


def test_malformed_headers_counted() -> None:
    pkt = bytearray(tcp_ipv4())
    pkt[0] = 0x44  # IHL 4
    _, c = _one(bytes(pkt))
    assert c[4] == 1
    pkt = bytearray(tcp_ipv4())
    pkt[20 + 12] = 0x40  # TCP data offset 4
    _, c = _one(bytes(pkt))
    assert c[4] == 1


def test_out_of_range_offsets_are_rejected_not_read() -> None:
    buf = np.frombuffer(tcp_ipv4(), np.uint8)
    offs = np.array([0, 5, 1000, -3])
    caps = np.array([40, 1000, 40, 40])
    z = np.zeros(4, np.int64)
    b, c = decode_arrays(buf, offs, caps, np.full(4, 228), z, z, z)
    # 1000 and -3 are outside the buffer; one outcome per record, and the captured bytes
    assert len(b) == 1 and c[C_MALFORMED] >= 2 and c[:C_BYTES].sum() == 4
    assert c[C_BYTES] == caps.sum()
