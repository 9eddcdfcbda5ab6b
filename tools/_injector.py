"""An on-path RST injector (a toy "censor") run in the router namespace.

    ip netns exec ROUTER python -m tools._injector IFACE PORT TRIGGER [LIFETIME [DELAY [TARGETS [MODE [ARG]]]]]

It sniffs IFACE (the router's client-facing side) with an AF_PACKET socket — a copy, so the
real packet is still forwarded by the kernel and the real server still answers — and when an
incoming TCP segment (IPv4 or IPv6) to PORT carries TRIGGER in its payload it spoofs, once per
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

MODE (default ``burst``, the above) can also be

* ``mimic``: one RST+ACK towards the client at exactly RCV.NXT that copies what the client
  sees of the real server: its TTL (as it arrives after this router), its *next* IP ID (last
  one + 1), its DF bit and its last window (IPv6: its hop limit, flow label and window; there
  is no IP ID) — only the race with the genuine server betrays it;
* ``blind``: one RST towards the client at trigger.ack + ARG (default 1000): inside the
  receiver's window but not exact, so the client's kernel answers with a challenge ACK
  (RFC 5961) and the connection survives;
* ``idle``: a stateful idle reset as cloud load balancers do it: the device tracks both
  directions of connections to PORT and, ARG seconds (default 1.0) after a connection's last
  packet (once TRIGGER was seen in it), sends one RST+ACK to *each* end with the exact
  sequence numbers (seq = that end's RCV.NXT, ack = its SND.NXT), router TTL and IP IDs,
  and TEXT (9th argument, optional) as their payload, as load balancers put diagnostics there;
* ``delay``: a slow path, not an injector: every client segment to PORT with PSH set (the
  orchestrator makes the router's forward chain drop them meanwhile) is sent on unchanged
  but for the forwarding TTL step, ARG seconds (default 0.08) late, so a real segment reaches
  the server after the server has closed.  Its copies are reported with ``"mode": "delay"``;
* ``synack``: a forged SYN-ACK (router TTL, a random ISN, ack = SYN + 1 + 65536: wrong) to
  the first SYN of each connection to PORT, as the GFW's residual blocking does: the client's
  SYN-SENT socket answers it with a RST and lives on;
* ``evasion``: run in the *client's* namespace (IFACE its interface): after the client's own
  first segment to PORT carrying TRIGGER leaves, a client-side evasion tool's two insertion
  RST+ACKs at the client's SND.NXT towards the server, with TTL 1 (they expire at the first
  router): one with a TCP-AO option (kind 29), one whose timestamp option echoes a TSecr the
  server never sent (2**30 behind the server TSval its trigger echoes); their IPv4 IP IDs
  run from EVASION_IPID_AHEAD past the trigger's, so the client's next segments carry lower
  IDs than the tool's RSTs (a foreign counter just ahead of the host's, which a random one
  is now and then); the client's real connection carries on;
* ``corrupt``: the first client segment to PORT carrying TRIGGER is sent on (after the TTL
  step) with the RST bit flipped on and its TCP checksum left as it was, so wrong: a
  corrupted data segment that looks like a RST (the orchestrator drops the original).
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
ETH_P_IPV6 = 0x86DD
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
TTL = 64
TYPE1_IPID = 0x5A5A
# evasion mode: the tool's RSTs number from this far past the trigger's IP ID, inside
# rstlens' IPID_BEFORE_SPAN (1,024) of the client's next segments
EVASION_IPID_AHEAD = 256


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_rst(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
              win: int, ip_id: int, ttl: int = TTL, df: bool = False, opts: bytes = b"",
              payload: bytes = b"", flow: int = 0) -> bytes:
    """An IPv4 or (when `src` is an IPv6 address) IPv6 TCP segment with a valid checksum.
    IPv6 has no IP ID and no DF (`ip_id`, `df` unused): `ttl` is the hop limit, `flow` the
    flow label."""
    opts += b"\x01" * (-len(opts) % 4)  # NOP padding
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      (5 + len(opts) // 4) << 4, flags, win, 0, 0) + opts + payload
    if ":" in src:
        s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
        pseudo = s6 + d6 + struct.pack("!I3xB", len(tcp), 6)
        tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
        return struct.pack("!IHBB", 0x60000000 | (flow & 0xFFFFF), len(tcp), 6, ttl) + s6 + d6 + tcp
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ip_id & 0xFFFF,
                     0x4000 if df else 0, ttl, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return ip + tcp


def _ts_option(opts: bytes) -> tuple[int, int] | None:
    """(TSval, TSecr) of a TCP option list's timestamp option, None without one."""
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        if kind == 8 and opts[i + 1] == 10 and i + 10 <= len(opts):
            val, ecr = struct.unpack("!II", opts[i + 2 : i + 10])
            return val, ecr
        i += opts[i + 1]
    return None


class _RawSender:
    """Raw IP sockets with the header included, one per address family (an IPv6 raw socket
    of protocol IPPROTO_RAW takes the whole IPv6 header, like IPV6_HDRINCL)."""

    def __init__(self) -> None:
        self.v4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.v6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def sendto(self, pkt: bytes, addr: tuple[str, int]) -> None:
        (self.v6 if ":" in addr[0] else self.v4).sendto(pkt, addr)


def _forward_step(pkt: bytes, v6: bool) -> bytearray:
    """`pkt` as this router forwards it: TTL / hop limit one lower (and, IPv4, the header
    checksum updated; IPv6 has none)."""
    out = bytearray(pkt)
    if v6:
        out[7] -= 1
        return out
    ihl = (out[0] & 0xF) * 4
    out[8] -= 1
    out[10:12] = b"\0\0"
    out[10:12] = struct.pack("!H", _csum(bytes(out[:ihl])))
    return out


def _report(src: str, dst: str, sp: int, dp: int, s: int, a: int, fl: int, win: int, ipid: int,
            ttl: int = TTL, df: bool = False, mode: str = "burst") -> None:
    print(json.dumps({"src": src, "dst": dst, "sport": sp, "dport": dp, "seq": s & 0xFFFFFFFF,
                      "ack": a & 0xFFFFFFFF, "flags": fl, "win": win, "ip_id": ipid & 0xFFFF,
                      "ttl": ttl, "df": df, "mode": mode, "ts": time.time()}), flush=True)


def main(argv: list[str]) -> int:
    iface, port, trigger = argv[0], int(argv[1]), argv[2].encode()
    lifetime = float(argv[3]) if len(argv) > 3 else 30.0
    delay = float(argv[4]) if len(argv) > 4 else 0.002
    targets = argv[5] if len(argv) > 5 else "both"
    mode = argv[6] if len(argv) > 6 else "burst"
    arg = float(argv[7]) if len(argv) > 7 and argv[7] != "-" else None
    text = argv[8].encode() if len(argv) > 8 else b""
    # ETH_P_ALL: only "all protocols" taps are shown outgoing frames (the server's packets on
    # their way to the client), which mimic and idle need
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sniff.bind((iface, ETH_P_ALL))
    raw = _RawSender()
    counter = random.randint(0x1000, 0x8000)
    seen: set[tuple] = set()
    # per connection (client, cport, server, sport): what the server last sent through here
    srv_last: dict[tuple, tuple[int, int, int, bool, int]] = {}  # ip_id, ttl, window, df, flow
    # idle mode: connection -> [last packet time, client SND.NXT, server SND.NXT, armed]
    track: dict[tuple, list] = {}
    later: list[tuple[float, str, bytes]] = []  # delay mode: (due, destination, IP packet)
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        r, _, _ = select.select([sniff], [], [], 0.01 if later else 0.05)
        while later and later[0][0] <= time.monotonic():
            _due, dst, pkt = later.pop(0)
            raw.sendto(pkt, (dst, 0))
            print(json.dumps({"mode": "delay", "dst": dst, "len": len(pkt), "ts": time.time()}),
                  flush=True)
        if mode == "idle":
            now = time.monotonic()
            idle = arg if arg is not None else 1.0
            for key, st in list(track.items()):
                if st[3] and now - st[0] > idle:
                    csrc, cport, sdst, sport_ = key
                    del track[key]
                    counter = (counter + 1) & 0xFFFF or 1
                    pkts = [(sdst, csrc, sport_, cport, st[2], st[1], 0x14, 0, counter),
                            (csrc, sdst, cport, sport_, st[1], st[2], 0x14, 0, counter + 1)]
                    counter += 1
                    for src, dst, sp, dp, s_, a_, fl, win, ipid in pkts:
                        raw.sendto(build_rst(src, dst, sp, dp, s_, a_, fl, win, ipid,
                                             payload=text), (dst, 0))
                        _report(src, dst, sp, dp, s_, a_, fl, win, ipid, mode=mode)
        if not r:
            continue
        frame, addr = sniff.recvfrom(65535)
        outgoing = addr[2] == PACKET_OUTGOING
        if len(frame) < 14 + 20 + 20 or frame[12:14] not in (b"\x08\x00", b"\x86\xdd"):
            continue
        if outgoing and mode not in ("mimic", "idle", "evasion"):
            continue
        ip = frame[14:]
        v6 = ip[0] >> 4 == 6
        if v6:  # no extension headers on this lab's paths: TCP right after the fixed header
            if len(ip) < 60 or ip[6] != 6:
                continue
            ihl, tot = 40, 40 + struct.unpack("!H", ip[4:6])[0]
            src_a = socket.inet_ntop(socket.AF_INET6, ip[8:24])
            dst_a = socket.inet_ntop(socket.AF_INET6, ip[24:40])
        else:
            if ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            ihl = (ip[0] & 0xF) * 4
            tot = struct.unpack("!H", ip[2:4])[0]
            src_a, dst_a = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        tcp = ip[ihl:tot]
        sport, dport, seq, ack, off, tflags, win = struct.unpack("!HHIIBBH", tcp[:16])
        payload = tcp[(off >> 4) * 4:]
        if mode == "evasion":
            key = (src_a, sport, dst_a, dport)
            if not outgoing or dport != port or trigger not in payload or key in seen:
                continue
            seen.add(key)
            end = seq + len(payload)
            ao = bytes([29, 16, 1, 1]) + random.randbytes(12)  # TCP-AO: key ids, 96-bit MAC
            # TSecr never sent: 2**30 ticks (~12 days of a 1 kHz clock) behind the server TSval
            # the trigger echoes, so before any TSval of this connection (a random echo falls
            # near the server's TSvals now and then)
            echoed = _ts_option(tcp[20:(off >> 4) * 4])
            ecr = ((echoed[1] if echoed else random.randint(2**31, 2**32 - 1)) - 2**30) % 2**32
            ts = bytes([8, 10]) + struct.pack("!II", random.randint(1, 2**31), ecr or 1)
            if not v6:
                counter = (struct.unpack("!H", ip[4:6])[0] + EVASION_IPID_AHEAD) & 0xFFFF
            for opt in (ao, ts):
                counter = (counter + 1) & 0xFFFF or 1
                pkt = (src_a, dst_a, sport, dport, end, ack, 0x14, win, counter)
                raw.sendto(build_rst(*pkt, ttl=1, opts=opt), (dst_a, 0))
                _report(*pkt, ttl=1, mode=mode)
            continue
        if outgoing:
            # the server's packets on their way to the client (after this router's TTL step)
            if sport != port:
                continue
            key = (dst_a, dport, src_a, sport)
            if not tflags & 0x04:
                if v6:  # no IP ID, no DF; the hop limit and the flow label
                    srv_last[key] = (0, ip[7], win, False,
                                     struct.unpack("!I", ip[0:4])[0] & 0xFFFFF)
                else:
                    srv_last[key] = (struct.unpack("!H", ip[4:6])[0], ip[8],
                                     win, bool(struct.unpack("!H", ip[6:8])[0] & 0x4000), 0)
            if key in track:
                end = seq + len(payload) + bool(tflags & 0x02) + bool(tflags & 0x01)
                track[key][0] = time.monotonic()
                track[key][2] = end & 0xFFFFFFFF
            continue
        if dport != port:
            continue
        key = (src_a, sport, dst_a, dport)
        if mode == "synack":
            if tflags & 0x12 == 0x02 and key not in seen:
                seen.add(key)
                counter = (counter + 1) & 0xFFFF or 1
                isn = random.randint(1, 0xFFFFFFFF)
                pkt = (dst_a, src_a, dport, sport, isn, seq + 1 + 65536, 0x12, 65535, counter)
                raw.sendto(build_rst(*pkt), (src_a, 0))
                _report(*pkt, mode=mode)
            continue
        if mode == "corrupt":
            if trigger in payload and key not in seen:
                seen.add(key)
                bad = _forward_step(ip[:tot], v6)
                bad[ihl + 13] |= 0x04  # RST on; the TCP checksum is not updated
                raw.sendto(bytes(bad), (dst_a, 0))
                print(json.dumps({"mode": mode, "dst": dst_a, "sport": sport, "dport": dport,
                                  "seq": seq, "flags": bad[ihl + 13], "ts": time.time()}),
                      flush=True)
            continue
        if mode == "delay":
            if payload and tflags & 0x08:
                fwd = _forward_step(ip[:tot], v6)  # the TTL step the kernel would have made
                later.append((time.monotonic() + (arg if arg is not None else 0.08), dst_a,
                              bytes(fwd)))
            continue
        if mode == "idle":
            if tflags & 0x04:
                track.pop(key, None)
                continue
            st = track.setdefault(key, [time.monotonic(), 0, ack, False])
            end = seq + len(payload) + bool(tflags & 0x02) + bool(tflags & 0x01)
            st[0], st[1] = time.monotonic(), end & 0xFFFFFFFF
            if ack:
                st[2] = ack if not st[2] else st[2]
            if trigger in payload and key not in seen:
                seen.add(key)
                st[3] = True
            continue
        if trigger not in payload:
            continue
        csrc, sdst = src_a, dst_a
        if key in seen:
            continue
        seen.add(key)
        time.sleep(delay)
        if mode == "mimic":
            ipid, ttl, swin, df, flow = srv_last.get(key, (0, TTL, 0, False, 0))
            if v6:
                ipid -= 1  # IPv6: no IP ID to guess (reported as 0)
            pkt = (sdst, csrc, dport, sport, ack, seq + len(payload), 0x14, swin, ipid + 1, ttl, df)
            raw.sendto(build_rst(*pkt, flow=flow), (csrc, 0))
            _report(*pkt, mode=mode)
            continue
        if mode == "blind":
            off_ = int(arg if arg is not None else 1000)
            counter = (counter + 1) & 0xFFFF or 1
            pkt = (sdst, csrc, dport, sport, ack + off_, 0, 0x04, 0, counter, TTL, False)
            raw.sendto(build_rst(*pkt), (csrc, 0))
            _report(*pkt, mode=mode)
            continue
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
        for src, dst, sp, dp, s_, a_, fl, win, ipid in plan:
            raw.sendto(build_rst(src, dst, sp, dp, s_, a_, fl, win, ipid), (dst, 0))
            _report(src, dst, sp, dp, s_, a_, fl, win, ipid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
