"""An on-path RST injector (a toy "censor") run in the router namespace.

    ip netns exec ROUTER python -m tools._injector IFACE PORT TRIGGER [LIFETIME [DELAY [TARGETS]]]

It sniffs IFACE (the router's client-facing side) with an AF_PACKET socket — a copy, so the
real packet is still forwarded by the kernel and the real server still answers — and when an
incoming IPv4 TCP segment to PORT carries TRIGGER in its payload it spoofs, once per
connection, a GFW-like burst towards *both* ends (TARGETS "both", the default; "client" for a
one-sided device) over a raw IP socket:

* one bare RST (type 1: fixed IP-ID, a non-zero window),
* three RST+ACKs (type 2) with seq = base, base+1460, base+4380, IP-ID and window taken from
  a per-injector counter,

where base is the receiver's RCV.NXT as the trigger shows it (trigger.ack towards the client,
trigger.seq+len towards the server).  Packets carry the router's own TTL (64) and no DF.
The burst leaves DELAY seconds (default 2 ms: an out-of-band device's processing lag) after
the trigger was seen, so the real server's answer to the trigger normally wins the race.
Each injected packet is reported as a JSON line on stdout so the orchestrator knows exactly
what the router made.
"""

from __future__ import annotations

import json
import random
import select
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
TTL = 64
TYPE1_IPID = 0x5A5A


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_rst(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
              win: int, ip_id: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      5 << 4, flags, win, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ip_id, 0, TTL, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return ip + tcp


def main(argv: list[str]) -> int:
    iface, port, trigger = argv[0], int(argv[1]), argv[2].encode()
    lifetime = float(argv[3]) if len(argv) > 3 else 30.0
    delay = float(argv[4]) if len(argv) > 4 else 0.002
    targets = argv[5] if len(argv) > 5 else "both"
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    sniff.bind((iface, ETH_P_IP))
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    counter = random.randint(0x1000, 0x8000)
    seen: set[tuple] = set()
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        r, _, _ = select.select([sniff], [], [], 0.2)
        if not r:
            continue
        frame, addr = sniff.recvfrom(65535)
        if addr[2] == PACKET_OUTGOING or len(frame) < 14 + 20 + 20:
            continue
        ip = frame[14:]
        if ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 0xF) * 4
        tot = struct.unpack("!H", ip[2:4])[0]
        tcp = ip[ihl:tot]
        sport, dport, seq, ack, off = struct.unpack("!HHIIB", tcp[:13])
        if dport != port:
            continue
        payload = tcp[(off >> 4) * 4:]
        if trigger not in payload:
            continue
        csrc, sdst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        key = (csrc, sport, sdst, dport)
        if key in seen:
            continue
        seen.add(key)
        to_client = (sdst, csrc, dport, sport, ack, seq + len(payload))
        to_server = (csrc, sdst, sport, dport, seq + len(payload), ack)
        ends = (to_client, to_server) if targets == "both" else (to_client,)
        plan = []
        for src, dst, sp, dp, base, _rack in ends:
            plan.append((src, dst, sp, dp, base, 0, 0x04, random.randint(1000, 60000), TYPE1_IPID))
        for off_ in (0, 1460, 4380):
            for src, dst, sp, dp, base, rack in ends:
                counter = (counter + 1) & 0xFFFF or 1
                plan.append((src, dst, sp, dp, base + off_, rack, 0x14, counter, counter))
        time.sleep(delay)
        for src, dst, sp, dp, s, a, fl, win, ipid in plan:
            raw.sendto(build_rst(src, dst, sp, dp, s, a, fl, win, ipid), (dst, 0))
            print(json.dumps({"src": src, "dst": dst, "sport": sp, "dport": dp,
                              "seq": s & 0xFFFFFFFF, "ack": a & 0xFFFFFFFF, "flags": fl,
                              "win": win, "ip_id": ipid, "ts": time.time()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
