"""The plain-Python baseline: a dpkt read loop plus a dict of TCP flows.

Usage: python benchmarks/dpkt_flows.py FILE.pcap

This is what a careful script writer would do without rstlens: decode every record with
dpkt (Ethernet -> IPv4/IPv6 -> TCP), key flows by the unordered 4-tuple, and keep packet
and byte counts, first/last time, the flags seen and the RSTs with their direction.  It
prints one summary line.  It attributes nothing; it is the cost floor of "just reading
the packets in Python".
"""

from __future__ import annotations

import sys

import dpkt


def flows_of(path: str) -> tuple[int, dict]:
    flows: dict = {}
    n = 0
    with open(path, "rb") as f:
        for ts, buf in dpkt.pcap.Reader(f):
            n += 1
            try:
                ip = dpkt.ethernet.Ethernet(buf).data
            except (dpkt.UnpackError, ValueError):
                continue
            if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                continue
            tcp = ip.data
            if not isinstance(tcp, dpkt.tcp.TCP):
                continue
            a, b = (ip.src, tcp.sport), (ip.dst, tcp.dport)
            fwd = a <= b
            key = (a, b) if fwd else (b, a)
            st = flows.get(key)
            if st is None:
                # first ts, last ts, packets, payload bytes, flags seen (OR), RSTs [(ts, fwd)]
                st = flows[key] = [ts, ts, 0, 0, 0, []]
            st[1] = ts
            st[2] += 1
            st[3] += len(tcp.data)
            st[4] |= tcp.flags
            if tcp.flags & dpkt.tcp.TH_RST:
                st[5].append((ts, fwd, tcp.seq, tcp.ack))
    return n, flows


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    n, flows = flows_of(argv[0])
    rsts = sum(len(st[5]) for st in flows.values())
    with_syn = sum(1 for st in flows.values() if st[4] & dpkt.tcp.TH_SYN)
    print(f"{n} packets, {len(flows)} TCP flows ({with_syn} with a SYN), {rsts} RSTs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
