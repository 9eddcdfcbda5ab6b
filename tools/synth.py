"""Deterministic generator of realistic benchmark captures (with ground truth for every RST).

Usage::

    python -m tools.synth OUT.pcap --packets 5M [--seed 1] [--truth OUT.truth.csv]
                                [--conn-truth OUT.conns.csv]

    from tools.synth import generate
    summary = generate("out.pcap", packets=1_000_000, seed=1, truth_path="out.truth.csv")

Output: classic pcap (little-endian, microsecond timestamps, linktype Ethernet, snaplen
262144, full packets), exactly ``--packets`` records, timestamps non-decreasing, 5 minutes
of traffic starting 2024-06-01T12:00:00Z.  The bytes depend only on (packets, seed,
GENERATOR_VERSION) and the numpy version (PCG64 streams are stable across numpy releases
in practice, but numpy does not promise it for every distribution).

What is in it (fractions of TCP connections; the connection count scales with N, about
113,000 connections and ~32,000 open at once for 5 M packets):

* ~10 % IPv6 packets, ~5 % UDP (DNS, QUIC, NTP) and ICMP/ICMPv6 echo noise.
* Hosts: clients (Linux, Windows, macOS-like) and servers (Linux, Windows, appliances) with
  a fixed TTL each (64/128/255 minus 1-20 hops), Zipf-like server popularity, unique
  source ports per client.  IP IDs: Linux-like per-connection counters from a random
  start (SYN/ACK 0), a per-host global counter for Windows/BSD/appliances.
* SYN options (MSS, SACK-permitted, WS, TS in the Linux or the Windows layout), TS on
  every later segment where both ends offered it, with TSecr echoing the peer's latest
  TSval seen one RTT earlier.  Each side acks the other's data (request/response rounds,
  an ACK every second segment of a burst, some uploads), payloads 0-1448 bytes.
* SF (~66 %): FIN closes from either side (3- and 4-packet), 3 % with a retransmitted SYN,
  short fetches, keep-alive sessions and long interactive sessions.
* REJ (7.5 %): SYN -> server kernel RST+ACK (seq 0, ack = ISN+1, IP ID 0, DF, win 0, no
  options); Windows clients retry twice; 15 % made by a firewall REJECT (router's TTL).
* S0 (5.5 %): unanswered SYN, 1-6 copies at the Linux back-off (1, 3, 7, 15, 31 s).
* Aborts (12 %): RST+ACK at SND.NXT / RCV.NXT with the sender's IP-ID, window and TS,
  from the client or the server: SO_LINGER 0, close with unread data, keepalive timeout
  (three seq-1 probes, then the RST).
* Data after close (4 %): server FIN, the client's next request, then the server's bare
  RST (seq = trigger.ack, ack 0, IP ID 0, DF, win 0, no options).
* Half-open (3 %): after 20-120 s idle, data or a keepalive draws a bare reactive RST from
  the side that lost its state (server or client).
* Middlebox (1.5 %): forged RSTs "from the server" with a foreign TTL, random IP ID, no
  options, DF clear: one RST+ACK after a response segment, a GFW-like triple (seq X,
  X+1460, X+4380, windows and TTLs stepping by one), or a bare RST + RST+ACK right after
  the request.  The server keeps sending afterwards and the client's kernel answers that
  data with a bare RST (labelled half_open / after_middlebox).
* Connections already open when the capture starts (no SYN seen) and still open when it
  ends (no FIN/RST seen).

Truth files (``--truth``): one row per RST packet: frame (1-based record number), time,
conn, cause (closed_port, abort, half_open, middlebox), subcause, sender (true sender:
orig, resp or middlebox, as in resets.parquet), claimed (the endpoint the packet claims
to come from), conn_start_seen (0 when the capture cut the connection's start, so the
evidence before the RST may be missing).  ``--conn-truth``: one row per connection with
its 5-tuple, intended Zeek-style conn_state (SF, S1, REJ, S0, RSTO, RSTR, OTH; an
approximation of Zeek's rules: OTH whenever the start was cut, S1 whenever the end was),
scenario (handshake + close template), start/end seen, first frame, packet and RST counts.

Design: hosts and connection *plans* are drawn as arrays; each plan is expanded to packets
with fixed packet templates (handshakes, closes, abort/half-open/middlebox sequences) plus
request/response rounds, all vectorized; seq/ack follow from per-connection cumulative sums
of consumed sequence space, TTL/IP-ID/window/options from the packet kind.  Connections are
drawn over-sized, then a random subset is kept so that the TCP packets inside the
capture window plus the UDP/ICMP noise make exactly N.  All packets are sorted by time
(stable) and written in chunks: numpy byte matrices per header, vectorized checksums (all
valid) and one numba copy kernel.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools import _synth_plan as P
from tools import _synth_wire as W
from tools.counts import parse_count

GENERATOR_VERSION = "1"
_TCP_PKTS_PER_CONN = 42.0  # measured mean of in-window TCP packets per kept connection
_CHUNK = 200_000


@dataclass
class SynthSummary:
    path: str
    packets: int
    seed: int
    tcp_packets: int = 0
    ipv6_packets: int = 0
    udp_packets: int = 0
    icmp_packets: int = 0
    connections: int = 0
    open_at_start: int = 0
    open_at_end: int = 0
    max_concurrent: int = 0
    mean_concurrent: float = 0.0
    rst_packets: int = 0
    rsts_by_cause: dict = field(default_factory=dict)
    rsts_by_subcause: dict = field(default_factory=dict)
    conn_states: dict = field(default_factory=dict)
    scenarios: dict = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0


def _select(rng, counts: np.ndarray, target: int) -> np.ndarray:
    """A random subset of connections whose in-window packets sum to at most `target`,
    topped up greedily so that it gets as close as possible."""
    cand = np.flatnonzero(counts > 0)
    perm = rng.permutation(cand)
    cs = np.cumsum(counts[perm])
    k = int(np.searchsorted(cs, target, side="right"))
    chosen = list(perm[:k])
    gap = target - (int(cs[k - 1]) if k else 0)
    for c in perm[k:][:5000]:
        if gap <= 0:
            break
        if counts[c] <= gap:
            chosen.append(c)
            gap -= int(counts[c])
    return np.sort(np.array(chosen, dtype=np.int64))


def _subset_plan(plan: P.Plan, keep: np.ndarray) -> P.Plan:
    return P.Plan(**{f: getattr(plan, f)[keep] for f in plan.__dataclass_fields__})


def generate(
    path, packets: int, seed: int = 1, truth_path=None, conn_truth_path=None, log=None
) -> SynthSummary:
    """Write a `packets`-record capture to `path`; see the module docstring."""
    t_start = time.perf_counter()
    N = int(packets)
    if N < 1:
        raise ValueError("packets must be >= 1")
    rng = np.random.default_rng([seed, 0x5157])
    say = log or (lambda msg: None)
    n_noise_target = round(0.05 * N)
    tcp_target = N - n_noise_target
    n_conn = max(16, int(tcp_target / _TCP_PKTS_PER_CONN * 1.35))
    while True:
        n_cli = max(16, n_conn // 6)
        n_srv = max(8, n_conn // 40)
        hosts = P.make_hosts(rng, n_cli, n_srv, 0.10)
        plan = P.plan_connections(rng, n_conn, hosts)
        pk = P.expand(rng, plan)
        inwin = (pk.t >= 0) & (pk.t < P.DURATION_US)
        counts = np.bincount(pk.conn[inwin], minlength=n_conn)
        if counts.sum() >= tcp_target or N < 200:
            break
        n_conn = int(n_conn * 1.5)  # not enough traffic drawn; draw more (rare)
    say(f"planned {n_conn} connections, {len(pk.t)} packets ({inwin.sum()} in window)")
    keep = _select(rng, counts, tcp_target)
    remap = np.full(n_conn, -1, np.int64)
    remap[keep] = np.arange(len(keep))
    sel = remap[pk.conn] >= 0
    pk = P.Packets(**{f: getattr(pk, f)[sel] for f in pk.__dataclass_fields__})
    pk.conn = remap[pk.conn]
    plan = _subset_plan(plan, keep)

    tcp = W.tcp_fields(rng, plan, hosts, pk)
    inwin = (pk.t >= 0) & (pk.t < P.DURATION_US)
    nconn = len(keep)
    cstart = W.starts(pk.conn)
    # a connection's start (end) is seen when its earliest (latest) packet is in the window
    tmin = np.minimum.reduceat(pk.t, cstart) if nconn else np.zeros(0, np.int64)
    tmax = np.maximum.reduceat(pk.t, cstart) if nconn else np.zeros(0, np.int64)
    start_seen = tmin >= 0
    end_seen = tmax < P.DURATION_US
    tcp = {k: v[inwin] for k, v in tcp.items()}
    conn = pk.conn[inwin]
    truth = pk.truth[inwin]
    n_tcp = len(conn)
    n_noise = N - n_tcp
    noise = W.noise_fields(rng, hosts, n_noise)
    a = {k: np.concatenate([tcp[k], noise[k]]) for k in tcp}
    conn = np.concatenate([conn, np.full(n_noise, -1, np.int64)])
    truth = np.concatenate([truth, np.zeros(n_noise, np.int16)])
    order = np.argsort(a["t"], kind="stable")
    a = {k: v[order] for k, v in a.items()}
    conn, truth = conn[order], truth[order]
    W.assign_global_ipid(rng, a, len(hosts.os))
    a["poff"] = rng.integers(0, (W.PATTERN_LEN - P.MAX_PAYLOAD) // 2, N) * 2
    pattern = rng.integers(0, 256, W.PATTERN_LEN, dtype=np.uint8)
    say(f"fields done in {time.perf_counter() - t_start:.1f}s; writing")

    writer = W.PcapWriter(path, hosts, pattern)
    try:
        for lo in range(0, N, _CHUNK):
            writer.write(a, lo, min(N, lo + _CHUNK))
    finally:
        writer.close()

    # ---- summary and truth
    frames = np.arange(1, N + 1)
    is_tcp = conn >= 0
    first_frame = np.full(nconn, N + 1, np.int64)
    np.minimum.at(first_frame, conn[is_tcp], frames[is_tcp])
    # number connections by first appearance in the file
    present = first_frame <= N
    conn_order = np.argsort(first_frame, kind="stable")
    conn_id = np.full(nconn, -1, np.int64)
    conn_id[conn_order] = np.arange(nconn)
    npk = np.bincount(conn[is_tcp], minlength=nconn)
    is_rst = truth > 0
    nrst = np.bincount(conn[is_rst], minlength=nconn)

    # intended conn_state
    state = np.full(nconn, "SF", dtype=object)
    kind = plan.kind
    cl_names = np.array([t.name for t in P.CL] + [""], dtype=object)
    hs_names = np.array([t.name for t in P.HS], dtype=object)
    clname = cl_names[plan.cl]
    state[kind == P.K_ABORT_C] = "RSTO"
    for k in (P.K_ABORT_S, P.K_DAC, P.K_HALF, P.K_MB):
        state[kind == k] = "RSTR"
    state[clname == "half_open_c"] = "RSTO"
    state[~end_seen] = "S1"
    state[kind == P.K_REJ] = np.where(nrst[kind == P.K_REJ] > 0, "REJ", "S0")
    state[kind == P.K_S0] = "S0"
    state[~start_seen] = "OTH"
    scen = np.array(
        [f"{h}+{c}" if c else h for h, c in zip(hs_names[plan.hs], clname, strict=True)],
        dtype=object,
    )

    s = SynthSummary(path=str(path), packets=N, seed=seed)
    s.tcp_packets = n_tcp
    s.ipv6_packets = int(hosts.is6[a["src"]].sum())
    s.udp_packets = int((a["l4"] == 1).sum())
    s.icmp_packets = int((a["l4"] >= 2).sum())
    s.connections = int(present.sum())
    s.open_at_start = int((~start_seen & present).sum())
    s.open_at_end = int((~end_seen & present).sum())
    # concurrency: connections whose first..last captured packet spans a moment
    if n_tcp:
        tc = a["t"][is_tcp]
        cc = conn[is_tcp]
        f_t = np.full(nconn, np.iinfo(np.int64).max)
        l_t = np.full(nconn, -1)
        np.minimum.at(f_t, cc, tc)
        np.maximum.at(l_t, cc, tc)
        f_t, l_t = np.sort(f_t[present]), np.sort(l_t[present])
        grid = np.linspace(0, P.DURATION_US - 1, 301).astype(np.int64)
        openc = np.searchsorted(f_t, grid, "right") - np.searchsorted(l_t, grid, "left")
        s.max_concurrent = int(openc.max())
        s.mean_concurrent = float(openc.mean())
    s.rst_packets = int(is_rst.sum())
    labels = np.array([("", "", ""), *P.RST_TRUTH], dtype=object)
    for c in P.CAUSES:
        s.rsts_by_cause[c] = int(sum(1 for x in labels[truth[is_rst]] if x[0] == c))
    for sc in P.SUBCAUSES:
        s.rsts_by_subcause[sc] = int(sum(1 for x in labels[truth[is_rst]] if x[1] == sc))
    for st in P.CONN_STATES:
        s.conn_states[st] = int(((state == st) & present).sum())
    u, cnt = np.unique(scen[present].astype(str), return_counts=True)
    s.scenarios = {str(k): int(v) for k, v in zip(u, cnt, strict=True)}
    s.bytes = Path(path).stat().st_size

    if truth_path is not None:
        ri = np.flatnonzero(is_rst)
        with open(truth_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                [
                    "frame",
                    "time",
                    "conn",
                    "cause",
                    "subcause",
                    "sender",
                    "claimed",
                    "conn_start_seen",
                ]
            )
            for i in ri:
                c = conn[i]
                cause, sub, sender = P.RST_TRUTH[truth[i] - 1]
                w.writerow(
                    [
                        i + 1,
                        f"{W.EPOCH + a['t'][i] / 1e6:.6f}",
                        conn_id[c],
                        cause,
                        sub,
                        sender,
                        "orig" if a["dir"][i] == 0 else "resp",
                        int(start_seen[c]),
                    ]
                )
    if conn_truth_path is not None:
        import ipaddress

        def ip_text(h):
            b = bytes(hosts.addr[h])
            return str(ipaddress.ip_address(b if hosts.is6[h] else b[:4]))

        with open(conn_truth_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                [
                    "conn",
                    "ip_version",
                    "orig_h",
                    "orig_p",
                    "resp_h",
                    "resp_p",
                    "conn_state",
                    "scenario",
                    "start_seen",
                    "end_seen",
                    "first_frame",
                    "packets",
                    "rsts",
                ]
            )
            for c in conn_order[: int(present.sum())]:
                w.writerow(
                    [
                        conn_id[c],
                        6 if hosts.is6[plan.cli[c]] else 4,
                        ip_text(plan.cli[c]),
                        plan.sport[c],
                        ip_text(plan.srv[c]),
                        plan.dport[c],
                        state[c],
                        scen[c],
                        int(start_seen[c]),
                        int(end_seen[c]),
                        first_frame[c],
                        npk[c],
                        nrst[c],
                    ]
                )
    s.seconds = time.perf_counter() - t_start
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.synth", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("out", help="output .pcap")
    ap.add_argument("--packets", "-n", required=True, help="record count, e.g. 5M, 20k")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--truth", help="CSV with one row per RST packet")
    ap.add_argument("--conn-truth", help="CSV with one row per TCP connection")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    s = generate(
        args.out, parse_count(args.packets), args.seed, args.truth, args.conn_truth, log=log
    )
    if not args.quiet:
        print(
            f"{s.path}: {s.packets} packets ({s.tcp_packets} TCP, {s.ipv6_packets} IPv6, "
            f"{s.udp_packets} UDP, {s.icmp_packets} ICMP), {s.bytes / 1e6:.1f} MB, "
            f"{s.seconds:.1f}s\n"
            f"connections {s.connections}: open at start {s.open_at_start}, at end "
            f"{s.open_at_end}, concurrent max {s.max_concurrent} mean {s.mean_concurrent:.0f}\n"
            f"RSTs {s.rst_packets}: {s.rsts_by_cause}\n  {s.rsts_by_subcause}\n"
            f"conn_state {s.conn_states}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
