"""Header fields, checksums and the pcap writer for the benchmark generator (vectorized).

Private helper of `tools.synth`.  Header bytes are built with numpy as byte matrices
(one row per packet, one column per header byte) for a chunk of packets at a time, their
checksums are summed as big-endian 16-bit words over those matrices, and one small numba
kernel copies record header + Ethernet + IP + L4 rows + payload bytes into the output
buffer.  All IPv4 header, TCP, UDP, ICMP and ICMPv6 checksums are valid.  Payloads are
slices of one seeded random 64 KiB pattern, so their checksum contribution comes from a
prefix sum in O(1) per packet.
"""

from __future__ import annotations

import numba
import numpy as np

from tools._synth_plan import (
    ACK,
    DURATION_US,
    FIN,
    OS_GLOBAL_ID,
    OS_LINUX,
    OS_SYNACKWIN,
    OS_SYNWIN,
    OS_WIN,
    OS_WSCALE,
    PK_FWRST,
    PK_KEEPALIVE,
    PK_MB1,
    PK_MB2,
    PK_NORMAL,
    PK_SYNRST,
    SA,
    SYN,
    Hosts,
    Packets,
    Plan,
)

EPOCH = 1_717_243_200  # 2024-06-01T12:00:00Z
PATTERN_LEN = 1 << 16
M32 = (1 << 32) - 1

OPT_NONE, OPT_TS, OPT_SYN_TS, OPT_SYN_NOTS, OPT_SYNACK_NOTS = range(5)
# (bytes, mss offset, ws offset, tsval offset) ; offsets inside the options, -1 = absent
_OPTS = {
    OPT_NONE: ([], -1, -1, -1),
    OPT_TS: ([1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0], -1, -1, 4),
    # Linux SYN and SYN/ACK: MSS, SACK-permitted, TS, NOP, WS
    OPT_SYN_TS: ([2, 4, 0, 0, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 0], 2, 19, 8),
    # Windows SYN: MSS, NOP, WS, NOP, NOP, SACK-permitted
    OPT_SYN_NOTS: ([2, 4, 0, 0, 1, 3, 3, 0, 1, 1, 4, 2], 2, 7, -1),
    # SYN/ACK without timestamps: MSS, NOP, NOP, SACK-permitted, NOP, WS
    OPT_SYNACK_NOTS: ([2, 4, 0, 0, 1, 1, 4, 2, 1, 3, 3, 0], 2, 11, -1),
}
OPT_LEN = np.array([len(_OPTS[i][0]) for i in range(5)], dtype=np.int64)

L4_TCP, L4_UDP, L4_ICMP, L4_ICMP6 = range(4)
PROTO = np.array([6, 17, 1, 58], dtype=np.int64)
MAC_A = np.array([0x00, 0x1B, 0x21, 0x3A, 0x4F, 0x01], dtype=np.uint8)  # client side
MAC_B = np.array([0x3C, 0xFD, 0xFE, 0x9E, 0x5C, 0x02], dtype=np.uint8)  # server side



def _hops(ttl: np.ndarray) -> np.ndarray:
    """Hops from the nearest common initial TTL (32, 64, 128, 255) at or above `ttl`."""
    return np.select([ttl <= i for i in (32, 64, 128)], [32, 64, 128], 255) - ttl

def starts(conn: np.ndarray) -> np.ndarray:
    """Index of the first packet of each run of equal connection ids."""
    if len(conn) == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, conn[1:] != conn[:-1]])


def _excl_cumsum_per_conn(x: np.ndarray, cstart: np.ndarray, conn: np.ndarray) -> np.ndarray:
    cs = np.cumsum(x) - x
    return cs - cs[cstart][conn]


def tcp_fields(rng: np.random.Generator, plan: Plan, hosts: Hosts, pk: Packets) -> dict:
    """Every header field of the planned TCP packets (connection-major order)."""
    conn, d, kind, flags = pk.conn, pk.dir.astype(np.int64), pk.kind, pk.flags
    n = len(conn)
    cstart = starts(conn)
    conn_of_start = conn[cstart]
    start_idx = np.zeros(len(plan.kind), dtype=np.int64)
    start_idx[conn_of_start] = cstart
    cs_idx = start_idx  # index of each connection's first packet, by connection id

    sender = np.where(d == 0, plan.cli[conn], plan.srv[conn])
    receiver = np.where(d == 0, plan.srv[conn], plan.cli[conn])
    sos = hosts.os[sender]
    normal = (kind == PK_NORMAL) | (kind == PK_KEEPALIVE)
    syn = (flags & SYN) > 0
    fin = (flags & FIN) > 0
    consumed = np.where(kind == PK_NORMAL, pk.plen + pk.consumes * (syn.astype(np.int64) + fin), 0)
    sent = [_excl_cumsum_per_conn(consumed * (d == k), cs_idx, conn) for k in (0, 1)]
    own = np.where(d == 0, sent[0], sent[1])
    peer = np.where(d == 0, sent[1], sent[0])
    isn_own = plan.isn[conn, d]
    isn_peer = plan.isn[conn, 1 - d]
    seq = isn_own + own
    ack = isn_peer + peer
    seq = np.where(kind == PK_KEEPALIVE, seq - 1, seq)
    synrst = (kind == PK_SYNRST) | (kind == PK_FWRST)
    seq = np.where(synrst, 0, seq)
    ack = np.where(synrst, ack + 1, ack)
    mb = (kind == PK_MB1) | (kind == PK_MB2)
    seq = np.where(mb, seq + pk.seqoff, seq)
    ack = np.where((flags & ACK) > 0, ack, 0)
    seq &= M32
    ack &= M32

    # windows
    base_win = np.where(rng.random(len(plan.kind)) < 0.5, 1, 0)[conn]  # some jitter sources
    win = OS_WIN[sos] * (1 + base_win) - rng.integers(0, 12, n)
    win = np.where(syn & ((flags & ACK) == 0), OS_SYNWIN[sos], win)
    win = np.where(flags == SA, OS_SYNACKWIN[sos], win)
    win = np.where(normal, win, 0)
    mb_win = rng.integers(1000, 60000, len(plan.kind))[conn] + pk.mbi
    win = np.where(kind == PK_MB2, mb_win, win)
    win = np.where(kind == PK_MB1, rng.integers(1, 65536, n), win)

    # TTL
    ttl = hosts.ttl[sender].copy()
    sttl = hosts.ttl[plan.srv]
    fw_ttl = 64 - rng.integers(1, 4, len(plan.kind))
    fw_ttl = np.where(np.abs(fw_ttl - sttl) < 2, 255 - rng.integers(1, 4, len(plan.kind)), fw_ttl)
    # a firewall on the path is a different device at a different distance: where its hop
    # distance came out as the server's, it is one hop nearer (a device at the server's own
    # distance, with the server's TTL family or not, is the server to any observer)
    fw_ttl = np.where(_hops(fw_ttl) == _hops(sttl), fw_ttl + 1, fw_ttl)
    mb_ttl = np.where(rng.random(len(plan.kind)) < 0.5, 64, 255) - rng.integers(
        2, 12, len(plan.kind)
    )
    close = np.abs(mb_ttl - sttl) < 5
    mb_ttl = np.where(close, sttl - 8, mb_ttl)
    ttl = np.where(kind == PK_FWRST, fw_ttl[conn], ttl)
    ttl = np.where(mb, mb_ttl[conn] + pk.mbi, ttl)

    # options and timestamps
    ts_ok = plan.ts_ok[conn]
    opt = np.where(ts_ok, OPT_TS, OPT_NONE)
    syn_only = syn & ((flags & ACK) == 0)
    opt = np.where(syn_only, np.where(plan.cli_ts[conn], OPT_SYN_TS, OPT_SYN_NOTS), opt)
    opt = np.where(flags == SA, np.where(ts_ok, OPT_SYN_TS, OPT_SYNACK_NOTS), opt)
    opt = np.where(normal, opt, OPT_NONE)
    has_ts = (opt == OPT_TS) | (opt == OPT_SYN_TS)
    rtt = np.where(d == 0, plan.rtt_c[conn], plan.rtt_s[conn]).astype(np.int64)
    ts_base = rng.integers(0, 1 << 32, (len(plan.kind), 2), dtype=np.int64)
    tsval = (ts_base[conn, d] + (pk.t - rtt // 2) // 1000) & M32
    tsval = np.where(has_ts, tsval, 0)
    tsecr = np.zeros(n, dtype=np.int64)
    # echo: the peer's latest TS-bearing packet seen at the capture point at least one
    # capture<->sender RTT before this one (time order within the connection)
    order = np.lexsort((pk.t, conn))
    OFF = 1 << 36
    key = (conn[order] << 40) | (pk.t[order] + OFF)
    for k in (0, 1):
        pmask = (d[order] == 1 - k) & has_ts[order]
        pkeys = key[pmask]
        pidx = order[pmask]
        q = order[(d[order] == k) & has_ts[order] & ~syn_only[order]]
        qkey = (conn[q] << 40) | (pk.t[q] - rtt[q] + OFF)
        pos = np.searchsorted(pkeys, qkey, side="right") - 1
        ok = pos >= 0
        hit = pidx[np.maximum(pos, 0)]
        ok &= conn[hit] == conn[q]
        tsecr[q] = np.where(ok, tsval[hit], 0)

    # IP ID: Linux-like per-connection counters from a random start (SYN/ACK: 0), reactive
    # kernel resets 0, middlebox random; hosts with a global counter get theirs after the
    # final time sort (`assign_global_ipid`)
    counted = normal & ~OS_GLOBAL_ID[sos] & ~((sos == OS_LINUX) & (flags == SA))
    rank = [
        _excl_cumsum_per_conn((counted & (d == k)).astype(np.int64), cs_idx, conn) for k in (0, 1)
    ]
    id_base = rng.integers(0, 1 << 16, (len(plan.kind), 2), dtype=np.int64)
    ipid = np.where(counted, (id_base[conn, d] + np.where(d == 0, rank[0], rank[1])) & 0xFFFF, 0)
    ipid = np.where(mb, rng.integers(1, 65536, n), ipid)
    global_id = normal & OS_GLOBAL_ID[sos]

    return {
        "t": pk.t,
        "src": sender,
        "dst": receiver,
        "dir": d.astype(np.int8),
        "l4": np.zeros(n, np.int8),
        "ttl": ttl,
        "ipid": ipid,
        "global_id": global_id,
        "df": ~mb,
        "sport": np.where(d == 0, plan.sport[conn], plan.dport[conn]),
        "dport": np.where(d == 0, plan.dport[conn], plan.sport[conn]),
        "seq": seq,
        "ack": ack,
        "flags": flags.astype(np.int64),
        "win": win & 0xFFFF,
        "opt": opt,
        "tsval": tsval,
        "tsecr": tsecr,
        "mss": np.where(hosts.is6[sender], 1440, 1460),
        "ws": OS_WSCALE[sos],
        "plen": pk.plen,
    }


def noise_fields(rng: np.random.Generator, hosts: Hosts, n: int) -> dict:
    """UDP (DNS, QUIC, NTP) and ICMP echo request/reply pairs between the same hosts."""
    k = (n + 1) // 2
    cli_pool = np.flatnonzero(~hosts.is_server)
    srv_pool = np.flatnonzero(hosts.is_server)
    is6 = rng.random(k) < 0.10
    cli = np.empty(k, np.int64)
    srv = np.empty(k, np.int64)
    for fam in (False, True):
        m = is6 == fam
        cp = cli_pool[hosts.is6[cli_pool] == fam]
        sp = srv_pool[hosts.is6[srv_pool] == fam]
        cli[m] = cp[rng.integers(0, len(cp), int(m.sum()))]
        srv[m] = sp[rng.integers(0, len(sp), int(m.sum()))]
    typ = np.searchsorted(np.cumsum([0.5, 0.2, 0.05, 0.25]), rng.random(k), side="right")
    typ = np.minimum(typ, 3)
    t_req = rng.integers(0, DURATION_US - 200_000, k)
    t_rsp = t_req + rng.integers(1_000, 100_000, k)
    eph = rng.integers(32768, 61000, k)
    dport = np.array([53, 443, 123, 0])[typ]
    q_len = np.choose(
        typ, [rng.integers(20, 60, k), rng.integers(1200, 1351, k), np.full(k, 48), np.full(k, 56)]
    )
    r_len = np.choose(
        typ, [rng.integers(40, 400, k), rng.integers(1200, 1351, k), np.full(k, 48), np.full(k, 56)]
    )
    icmp = typ == 3
    l4 = np.where(icmp, np.where(is6, 3, 2), 1)
    ident = rng.integers(0, 65536, k)
    iseq = rng.integers(0, 65536, k)
    # requests then responses, cut to n
    both = lambda a, b: np.concatenate([a, b])[:n]  # noqa: E731
    echo_req = np.where(is6, 128, 8)
    echo_rep = np.where(is6, 129, 0)
    src = both(cli, srv)
    out = {
        "t": both(t_req, t_rsp),
        "src": src,
        "dst": both(srv, cli),
        "dir": both(np.zeros(k, np.int8), np.ones(k, np.int8)),
        "l4": both(l4, l4).astype(np.int8),
        "ttl": hosts.ttl[src],
        "ipid": rng.integers(0, 65536, len(src)),
        "global_id": OS_GLOBAL_ID[hosts.os[src]],
        "df": np.zeros(len(src), bool),
        # UDP ports, or ICMP ident/sequence
        "sport": both(np.where(icmp, ident, eph), np.where(icmp, ident, dport)),
        "dport": both(np.where(icmp, iseq, dport), np.where(icmp, iseq, eph)),
        # ICMP type travels in `flags`
        "flags": both(np.where(icmp, echo_req, 0), np.where(icmp, echo_rep, 0)),
        "plen": both(q_len, r_len),
    }
    m = len(src)
    for f in ("seq", "ack", "win", "opt", "tsval", "tsecr", "mss", "ws"):
        out[f] = np.zeros(m, np.int64)
    return out


def assign_global_ipid(rng: np.random.Generator, a: dict, n_hosts: int) -> None:
    """Hosts with one IP-ID counter for everything they send (Windows, BSD, appliances):
    the counter advances in time order by 1-3 per packet (other traffic in between)."""
    idx = np.flatnonzero(a["global_id"])
    if len(idx) == 0:
        return
    h = a["src"][idx]
    order = np.argsort(h, kind="stable")  # idx is time-ordered; keep that inside each host
    hs = h[order]
    step = 1 + (rng.random(len(idx)) < 0.3) * rng.integers(1, 3, len(idx))
    cs = np.cumsum(step)
    first = np.r_[0, np.flatnonzero(hs[1:] != hs[:-1]) + 1]
    base = np.zeros(len(idx), np.int64)
    base[first] = cs[first] - step[first]
    base = np.maximum.accumulate(base)
    hostbase = rng.integers(0, 65536, n_hosts)
    val = (hostbase[hs] + cs - base) & 0xFFFF
    out = np.empty(len(idx), np.int64)
    out[order] = val
    a["ipid"][idx] = out


# ------------------------------------------------------------------------------ wire ----
def _put(mat: np.ndarray, col: int, val: np.ndarray, nbytes: int) -> None:
    val = np.asarray(val, dtype=np.int64)
    for i in range(nbytes):
        mat[:, col + i] = (val >> (8 * (nbytes - 1 - i))) & 0xFF


def _words(mat: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(mat).view(">u2").sum(axis=1, dtype=np.int64)


def _fold(s: np.ndarray) -> np.ndarray:
    for _ in range(4):
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


@numba.njit(cache=True, nogil=True)
def _assemble(out, ts_sec, ts_usec, caplen, iphl, l4hl, plen, poff, dirs, eth, ip, l4, pattern):
    pos = 0
    for i in range(len(caplen)):
        c = caplen[i]
        for j, v in enumerate((ts_sec[i], ts_usec[i], c, c)):
            out[pos + 4 * j] = v & 0xFF
            out[pos + 4 * j + 1] = (v >> 8) & 0xFF
            out[pos + 4 * j + 2] = (v >> 16) & 0xFF
            out[pos + 4 * j + 3] = (v >> 24) & 0xFF
        pos += 16
        e = dirs[i]
        out[pos : pos + 14] = eth[e]
        pos += 14
        h = iphl[i]
        out[pos : pos + h] = ip[i, :h]
        pos += h
        h = l4hl[i]
        out[pos : pos + h] = l4[i, :h]
        pos += h
        p = plen[i]
        o = poff[i]
        out[pos : pos + p] = pattern[o : o + p]
        pos += p
    return pos


class PcapWriter:
    def __init__(self, path, hosts: Hosts, pattern: np.ndarray):
        self.f = open(path, "wb")  # noqa: SIM115
        hdr = np.array([0xA1B2C3D4, (4 << 16) | 2, 0, 0, 262144, 1], dtype="<u4")
        hdr[1] = 2 | (4 << 16)  # version 2.4 (two little-endian u16: major, minor)
        self.f.write(hdr.tobytes())
        self.hosts = hosts
        self.pattern = pattern
        words = pattern.view(">u2").astype(np.int64)
        self.prefix = np.r_[0, np.cumsum(words)]
        eth = np.zeros((4, 14), np.uint8)  # (dir, is6)
        for dd in (0, 1):
            for six in (0, 1):
                r = eth[dd * 2 + six]
                r[0:6], r[6:12] = (MAC_B, MAC_A) if dd == 0 else (MAC_A, MAC_B)
                r[12:14] = (0x86, 0xDD) if six else (0x08, 0x00)
        self.eth = eth

    def write(self, a: dict, lo: int, hi: int) -> None:
        s = slice(lo, hi)
        k = hi - lo
        hosts = self.hosts
        src, dst = a["src"][s], a["dst"][s]
        is6 = hosts.is6[src]
        l4t = a["l4"][s].astype(np.int64)
        plen = a["plen"][s].astype(np.int64)
        poff = a["poff"][s]
        opt = a["opt"][s]
        tcp = l4t == 0
        l4hl = np.where(tcp, 20 + OPT_LEN[opt], 8)
        iphl = np.where(is6, 40, 20)
        l4len = l4hl + plen

        # --- L4 header matrix (checksum field zero for now)
        l4 = np.zeros((k, 40), np.uint8)
        ti = np.flatnonzero(tcp)
        m = np.zeros((len(ti), 40), np.uint8)
        g = lambda f: a[f][s][ti]  # noqa: E731
        _put(m, 0, g("sport"), 2)
        _put(m, 2, g("dport"), 2)
        _put(m, 4, g("seq"), 4)
        _put(m, 8, g("ack"), 4)
        m[:, 12] = (l4hl[ti] // 4) << 4
        m[:, 13] = g("flags")
        _put(m, 14, g("win"), 2)
        topt = opt[ti]
        for code, (tb, mss_at, ws_at, ts_at) in _OPTS.items():
            if not tb:
                continue
            r = np.flatnonzero(topt == code)
            if len(r) == 0:
                continue
            sub = np.zeros((len(r), len(tb)), np.uint8)
            sub[:] = np.array(tb, np.uint8)
            if mss_at >= 0:
                _put(sub, mss_at, g("mss")[r], 2)
            if ws_at >= 0:
                sub[:, ws_at] = g("ws")[r]
            if ts_at >= 0:
                _put(sub, ts_at, g("tsval")[r], 4)
                _put(sub, ts_at + 4, g("tsecr")[r], 4)
            m[r, 20 : 20 + len(tb)] = sub
        l4[ti] = m
        ui = np.flatnonzero(l4t == 1)
        m = np.zeros((len(ui), 40), np.uint8)
        _put(m, 0, a["sport"][s][ui], 2)
        _put(m, 2, a["dport"][s][ui], 2)
        _put(m, 4, l4len[ui], 2)
        l4[ui] = m
        ci = np.flatnonzero(l4t >= 2)
        m = np.zeros((len(ci), 40), np.uint8)
        m[:, 0] = a["flags"][s][ci]
        _put(m, 4, a["sport"][s][ci], 2)
        _put(m, 6, a["dport"][s][ci], 2)
        l4[ci] = m

        # --- IP header matrix
        ip = np.zeros((k, 40), np.uint8)
        proto = PROTO[l4t]
        i4 = np.flatnonzero(~is6)
        m = np.zeros((len(i4), 20), np.uint8)
        m[:, 0] = 0x45
        _put(m, 2, 20 + l4len[i4], 2)
        _put(m, 4, a["ipid"][s][i4], 2)
        m[:, 6] = np.where(a["df"][s][i4], 0x40, 0)
        m[:, 8] = a["ttl"][s][i4]
        m[:, 9] = proto[i4]
        m[:, 12:16] = hosts.addr[src[i4], :4]
        m[:, 16:20] = hosts.addr[dst[i4], :4]
        _put(m, 10, _fold(_words(m)), 2)
        ip[i4, :20] = m
        i6 = np.flatnonzero(is6)
        m = np.zeros((len(i6), 40), np.uint8)
        m[:, 0] = 0x60
        _put(m, 4, l4len[i6], 2)
        m[:, 6] = proto[i6]
        m[:, 7] = a["ttl"][s][i6]
        m[:, 8:24] = hosts.addr[src[i6]]
        m[:, 24:40] = hosts.addr[dst[i6]]
        ip[i6] = m

        # --- L4 checksums: pseudo header + header words + payload words
        pseudo = np.where(is6, _words(ip[:, 8:40]), _words(ip[:, 12:20])) + proto + l4len
        pseudo = np.where(l4t == 2, 0, pseudo)  # ICMPv4 has no pseudo header
        full = plen // 2
        ps = self.prefix[poff // 2 + full] - self.prefix[poff // 2]
        odd = (plen & 1) == 1
        last = self.pattern[np.where(odd, poff + plen - 1, 0)].astype(np.int64) << 8
        ps = ps + np.where(odd, last, 0)
        csum = _fold(pseudo + _words(l4) + ps)
        csum = np.where((l4t == 1) & (csum == 0), 0xFFFF, csum)
        at = np.where(tcp, 16, np.where(l4t == 1, 6, 2))
        rows = np.arange(k)
        l4[rows, at] = csum >> 8
        l4[rows, at + 1] = csum & 0xFF

        t = a["t"][s]
        caplen = 14 + iphl + l4len
        out = np.empty(int((16 + caplen).sum()), np.uint8)
        dirs = a["dir"][s].astype(np.int64) * 2 + is6
        n = _assemble(
            out,
            EPOCH + t // 1_000_000,
            t % 1_000_000,
            caplen,
            iphl,
            l4hl,
            plen,
            poff,
            dirs,
            self.eth,
            ip,
            l4,
            self.pattern,
        )
        assert n == len(out)
        self.f.write(out.data)

    def close(self) -> None:
        self.f.close()
