"""Deterministic SYN-scan and SYN-flood captures.

Usage::

    python -m tools.synscan OUT.pcap --connections 500k [--seed 1]
    python -m tools.synscan OUT.pcap --flood 1M [--seed 1]

* Scan: one scanner, N closed ports, each a SYN and the target kernel's RST+ACK (seq 0,
  ack = ISN + 1, IP ID 0, DF, window 0): the RST-heavy end of the benchmark (every
  connection is reset) and a large input for the reports; 2 packets per connection.
* Flood (``--flood N [--gap-us 10]``): N SYNs to one victim (10.2.0.10:80) from N distinct spoofed
  sources (16.0.0.0/4, a bijection of the packet number, so any N up to 2**28 stays
  unique), random source ports, ISNs and IP IDs, none answered: every connection is
  embryonic (Zeek S0) until the end of the capture.

Both: 100,000 packets/s from 2024-06-01T12:00:00Z, classic pcap, Ethernet.  TCP
checksums are left 0 (rstlens, like Zeek with ``-C``, ignores them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tools.counts import parse_count

START_US = 1_717_243_200_000_000  # 2024-06-01T12:00:00Z
PACKET_GAP_US = 10  # 100,000 packets/s
SCANNER = (10 << 24) | (99 << 16) | 1  # 10.99.0.1
FRAME_LEN = 54  # Ethernet 14 + IPv4 20 + TCP 20

_RECORD = np.dtype(
    [
        ("ts_sec", "<u4"), ("ts_usec", "<u4"), ("incl", "<u4"), ("orig", "<u4"),
        ("dst_mac", "V6"), ("src_mac", "V6"), ("ethertype", ">u2"),
        ("ver_ihl", "u1"), ("tos", "u1"), ("ip_len", ">u2"), ("ip_id", ">u2"), ("frag", ">u2"),
        ("ttl", "u1"), ("proto", "u1"), ("ip_sum", ">u2"), ("ip_src", ">u4"), ("ip_dst", ">u4"),
        ("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("off", "u1"),
        ("flags", "u1"), ("win", ">u2"), ("tcp_sum", ">u2"), ("urg", ">u2"),
    ]
)  # fmt: skip


def _ip_checksums(rec: np.ndarray) -> np.ndarray:
    header = rec.view(np.uint8).reshape(len(rec), -1)[:, 30:50]
    words = header.reshape(len(rec), 10, 2).astype(np.uint32)
    total = (words[:, :, 0] << 8 | words[:, :, 1]).sum(axis=1)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF).astype(np.uint16)


VICTIM = (10 << 24) | (2 << 16) | 10  # 10.2.0.10
VICTIM_PORT = 80
_FLOOD_BASE = 16 << 24  # 16.0.0.0/4
_FLOOD_BITS = 28
_FLOOD_MUL = 0x9E3779B  # odd: i -> i * _FLOOD_MUL mod 2**28 is a bijection
CHUNK = 1 << 20  # packets built and written at a time (a 10 M flood stays small in memory)


def _records(n: int, first: int, gap_us: int = PACKET_GAP_US) -> np.ndarray:
    """`n` zeroed Ethernet/IPv4/TCP records, packets `first`.. of the capture's clock."""
    rec = np.zeros(n, _RECORD)
    t = START_US + (first + np.arange(n, dtype=np.int64)) * gap_us
    rec["ts_sec"], rec["ts_usec"] = t // 1_000_000, t % 1_000_000
    rec["incl"] = rec["orig"] = FRAME_LEN
    rec["ethertype"], rec["ver_ihl"], rec["ip_len"], rec["proto"] = 0x0800, 0x45, 40, 6
    rec["off"] = 5 << 4
    return rec


def _file_header() -> bytes:
    return np.array([0xA1B2C3D4, 0x00040002, 0, 0, 262144, 1], "<u4").tobytes()[:24]


def generate_flood(path: str | Path, syns: int, seed: int = 1, gap_us: int = PACKET_GAP_US) -> int:
    """Write a SYN flood of `syns` packets from distinct sources, `gap_us` apart, to `path`;
    returns the packet count.  Built in chunks, so memory stays small whatever `syns`."""
    rng = np.random.default_rng([seed, 0xF100D])
    n = int(syns)
    assert n <= 1 << _FLOOD_BITS, "sources would repeat"
    with open(path, "wb") as fh:
        fh.write(_file_header())
        for first in range(0, n, CHUNK):
            k = min(CHUNK, n - first)
            rec = _records(k, first, gap_us)
            i = np.arange(first, first + k, dtype=np.uint64)
            src = (i * np.uint64(_FLOOD_MUL)) & np.uint64((1 << _FLOOD_BITS) - 1)
            rec["ip_src"] = (src + np.uint64(_FLOOD_BASE)).astype(np.uint32)
            rec["ip_dst"], rec["dport"] = VICTIM, VICTIM_PORT
            rec["sport"] = rng.integers(1024, 65536, k)
            rec["seq"] = rng.integers(0, 2**32, k, dtype=np.uint64).astype(np.uint32)
            rec["ip_id"] = rng.integers(0, 65536, k)
            rec["flags"], rec["win"], rec["ttl"] = 0x02, 512, rng.integers(40, 250, k)
            rec["ip_sum"] = _ip_checksums(rec)
            fh.write(rec.tobytes())
    return n


def generate(path: str | Path, connections: int, seed: int = 1) -> int:
    """Write the scan of `connections` closed ports to `path`; returns the packet count."""
    rng = np.random.default_rng([seed, 0x5CA9])
    n = int(connections)
    targets = (10 << 24) | (1 << 16) | rng.integers(1, 4096, n)  # 10.1.0.0/20
    ports = rng.choice(np.array([22, 23, 80, 443, 445, 3389, 8080, 8443], np.uint16), n)
    sports = (1024 + np.arange(n) % 64000).astype(np.uint16)
    isn = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    rec = _records(2 * n, 0)
    syn, rst = rec[0::2], rec[1::2]
    syn["ip_src"], syn["ip_dst"], syn["sport"], syn["dport"] = SCANNER, targets, sports, ports
    syn["seq"], syn["flags"], syn["win"], syn["ttl"] = isn, 0x02, 1024, 54
    syn["ip_id"] = rng.integers(0, 65536, n)
    rst["ip_src"], rst["ip_dst"], rst["sport"], rst["dport"] = targets, SCANNER, ports, sports
    rst["ack"], rst["flags"], rst["ttl"], rst["frag"] = isn + np.uint32(1), 0x14, 62, 0x4000
    rec["ip_sum"] = _ip_checksums(rec)
    with open(path, "wb") as fh:
        fh.write(_file_header())
        fh.write(rec.tobytes())
    return 2 * n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--connections", type=parse_count, default=500_000)
    ap.add_argument("--flood", type=parse_count, default=None,
                    help="a SYN flood of this many SYNs instead of the scan")
    ap.add_argument("--gap-us", type=int, default=PACKET_GAP_US,
                    help="with --flood: microseconds between SYNs (default 10)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.flood is not None:
        packets = generate_flood(args.out, args.flood, args.seed, args.gap_us)
    else:
        packets = generate(args.out, args.connections, args.seed)
    print(f"wrote {args.out}: {packets} packets", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
