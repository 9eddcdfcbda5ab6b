"""Connection plans for the benchmark generator, expanded to per-packet arrays (vectorized).

Private helper of `tools.synth`.  Nothing here loops over packets or connections in
Python: every stage works on whole numpy arrays.  Loops only run over the small, fixed set
of packet *templates* (handshake and close sequences) and over the two directions.

Vocabulary: the *client* is the originator (Zeek's orig), the *server* the responder.
``dir`` 0 is client->server, 1 is server->client.  Times are int64 microseconds relative to
the start of the capture window ``[0, DURATION_US)``; a connection may start before it (the
capture then opens mid-flow) and end after it (still open when the capture ends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

US = 1_000_000
MS = 1_000
DURATION_US = 300 * US  # every capture spans 5 minutes; the connection count scales with N

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
SA, PA, FA, RA = SYN | ACK, PSH | ACK, FIN | ACK, RST | ACK

# packet kinds: how seq/ack/TTL/IP-ID/window/options are derived for a packet
PK_NORMAL = 0  # the endpoint's own stack: seq = SND.NXT, ack = RCV.NXT, its TTL, IP-ID, TS
PK_SYNRST = 1  # kernel refusing a SYN: RST+ACK seq 0, ack = SYN.seq+1, ID 0, DF, win 0, no opts
PK_FWRST = 2  # the same packet made by a firewall REJECT rule: the router's TTL
PK_REACT = 3  # kernel with no socket answering an ACK-bearing segment: RST seq = trigger.ack
PK_MB1 = 4  # middlebox injection, bare RST (GFW "type 1"): random window, foreign TTL/ID
PK_MB2 = 5  # middlebox injection, RST+ACK (GFW "type 2"): window and TTL step per packet
PK_KEEPALIVE = 6  # keepalive probe: seq = SND.NXT - 1, no payload

# payload length codes used by templates
L0, LREQ, LFULL, LPART, LSMALL = range(5)
MAX_PAYLOAD = 1448

# connection kinds
K_SF, K_REJ, K_S0, K_ABORT_C, K_ABORT_S, K_DAC, K_HALF, K_MB = range(8)
KIND_NAMES = ("SF", "REJ", "S0", "ABORT_C", "ABORT_S", "DATA_AFTER_CLOSE", "HALF_OPEN", "MIDDLEBOX")
KIND_P = np.array([0.665, 0.075, 0.055, 0.07, 0.05, 0.04, 0.03, 0.015])

# activity classes of established connections: short fetch, keep-alive session, interactive
C_SHORT, C_KA, C_INTER = range(3)

# host operating systems: (initial TTL, timestamps, IP-ID global counter, wscale, scaled win,
# SYN window, SYN/ACK window)
OS_LINUX, OS_WINDOWS, OS_BSD, OS_APPLIANCE = range(4)
OS_TTL = np.array([64, 128, 64, 255], dtype=np.int64)
OS_TS = np.array([True, False, True, True])
OS_GLOBAL_ID = np.array([False, True, True, True])
OS_WSCALE = np.array([7, 8, 6, 9], dtype=np.int64)
OS_WIN = np.array([501, 1026, 2058, 256], dtype=np.int64)
OS_SYNWIN = np.array([64240, 64240, 65535, 65535], dtype=np.int64)
OS_SYNACKWIN = np.array([65160, 65535, 65535, 65535], dtype=np.int64)


@dataclass(frozen=True)
class Template:
    """A fixed packet sequence.  Row: (role, flags, plen code, kind, consumes, time coefs,
    seq offset, index in a middlebox burst).  role 0 = client, 1 = server; for middlebox rows
    the role is the *claimed* sender.  Time = t_ref + rc*rtt_c + rs*rtt_s + x*X + g*gap + us,
    with X a per-connection random delay drawn from `x`."""

    name: str
    rows: tuple
    x: tuple = ("const", 0.0)


def _r(
    role,
    flags,
    plen=L0,
    kind=PK_NORMAL,
    consumes=1,
    rc=0.0,
    rs=0.0,
    x=0.0,
    g=0.0,
    us=0.0,
    seqoff=0,
    mbi=0,
):
    return (role, flags, plen, kind, consumes, rc, rs, x, g, us, seqoff, mbi)


C, S = 0, 1
_RETRY = (0, 1 * US, 3 * US, 7 * US, 15 * US, 31 * US)  # Linux SYN RTO backoff

# -- handshakes (t_ref = connection start) -------------------------------------------------
HS = [
    Template("hs", (_r(C, SYN), _r(S, SA, rs=1), _r(C, ACK, rc=1, rs=1))),
    Template(
        "hs_syn_retx",
        (
            _r(C, SYN, consumes=0),
            _r(C, SYN, us=US),
            _r(S, SA, rs=1, us=US),
            _r(C, ACK, rc=1, rs=1, us=US),
        ),
    ),
    Template("rej", (_r(C, SYN, consumes=0), _r(S, RA, kind=PK_SYNRST, consumes=0, rs=1))),
    Template(
        "rej_retry",  # Windows connect() retries a refused SYN twice, 0.5 s apart
        (
            _r(C, SYN, consumes=0),
            _r(S, RA, kind=PK_SYNRST, consumes=0, rs=1),
            _r(C, SYN, consumes=0, us=500 * MS),
            _r(S, RA, kind=PK_SYNRST, consumes=0, rs=1, us=500 * MS),
            _r(C, SYN, consumes=0, us=1000 * MS),
            _r(S, RA, kind=PK_SYNRST, consumes=0, rs=1, us=1000 * MS),
        ),
    ),
    Template(
        "rej_fw",
        (_r(C, SYN, consumes=0), _r(S, RA, kind=PK_FWRST, consumes=0, x=1)),
        ("uniform", 100.0, 3000.0),
    ),
] + [
    Template(f"s0_{k}", tuple(_r(C, SYN, consumes=0, us=_RETRY[i]) for i in range(k)))
    for k in range(1, 7)
]
HS_INDEX = {t.name: i for i, t in enumerate(HS)}

# -- closes (t_ref = end of the data phase) ---------------------------------------------------
CL = [
    Template("fin_c3", (_r(C, FA), _r(S, FA, rs=1), _r(C, ACK, rs=1, rc=1))),
    Template(
        "fin_c4",
        (_r(C, FA), _r(S, ACK, rs=1), _r(S, FA, rs=1, x=1), _r(C, ACK, rs=1, rc=1, x=1)),
        ("exp", 3000.0),
    ),
    Template("fin_s3", (_r(S, FA), _r(C, FA, rc=1), _r(S, ACK, rc=1, rs=1))),
    Template(
        "fin_s4",
        (_r(S, FA), _r(C, ACK, rc=1), _r(C, FA, rc=1, x=1), _r(S, ACK, rc=1, rs=1, x=1)),
        ("exp", 20000.0),
    ),
    Template("abort_c_linger0", (_r(C, RA, x=1),), ("exp", 20000.0)),
    Template(
        "abort_c_unread",
        (_r(S, PA, LPART), _r(C, RA, rc=1, x=1)),
        ("uniform", 100.0, 30000.0),
    ),
    Template(
        "abort_c_keepalive",
        (
            _r(C, ACK, kind=PK_KEEPALIVE, x=1),
            _r(C, ACK, kind=PK_KEEPALIVE, x=2),
            _r(C, ACK, kind=PK_KEEPALIVE, x=3),
            _r(C, RA, x=4),
        ),
        ("uniform", 5.0 * US, 15.0 * US),
    ),
    Template("abort_s_linger0", (_r(S, RA, x=1),), ("exp", 20000.0)),
    Template(
        "abort_s_unread",
        (_r(C, PA, LREQ), _r(S, RA, rs=1, x=1)),
        ("uniform", 100.0, 30000.0),
    ),
    Template(
        "data_after_close",  # server FIN (keep-alive timeout), client's next request races it
        (
            _r(S, FA),
            _r(C, ACK, rc=1),
            _r(C, PA, LREQ, rc=1, x=1),
            _r(S, RST, kind=PK_REACT, consumes=0, rc=1, rs=1, x=1),
        ),
        ("exp", 200_000.0),
    ),
    Template(
        "half_open_s",  # server lost the connection; the client's data draws a bare RST
        (_r(C, PA, LREQ, x=1), _r(S, RST, kind=PK_REACT, consumes=0, rs=1, x=1)),
        ("uniform", 20.0 * US, 120.0 * US),
    ),
    Template(
        "half_open_s_keepalive",
        (_r(C, ACK, kind=PK_KEEPALIVE, x=1), _r(S, RST, kind=PK_REACT, consumes=0, rs=1, x=1)),
        ("uniform", 30.0 * US, 120.0 * US),
    ),
    Template(
        "half_open_c",  # client lost the connection; the server's push draws a bare RST
        (_r(S, PA, LSMALL, x=1), _r(C, RST, kind=PK_REACT, consumes=0, rc=1, x=1)),
        ("uniform", 20.0 * US, 120.0 * US),
    ),
    Template(
        "mb_response",  # one RST+ACK forged "from the server" after the first response segment
        (
            _r(C, PA, LREQ),
            _r(S, ACK, LFULL, rs=1, x=1),
            _r(S, RA, kind=PK_MB2, consumes=0, rs=1, x=1, g=0.5),
            _r(S, ACK, LFULL, rs=1, x=1, g=1),
            _r(S, PA, LPART, rs=1, x=1, g=2),
            _r(C, RST, kind=PK_REACT, consumes=0, rs=1, x=1, g=1, rc=1),
        ),
        ("exp", 5000.0),
    ),
    Template(
        "mb_triple",  # GFW-style: three RST+ACKs, seq X, X+1460, X+4380
        (
            _r(C, PA, LREQ),
            _r(S, ACK, LFULL, rs=1, x=1),
            _r(S, ACK, LFULL, rs=1, x=1, g=1),
            _r(S, RA, kind=PK_MB2, consumes=0, rs=1, x=1, g=1.3),
            _r(S, RA, kind=PK_MB2, consumes=0, rs=1, x=1, g=1.3, us=15, seqoff=1460, mbi=1),
            _r(S, RA, kind=PK_MB2, consumes=0, rs=1, x=1, g=1.3, us=30, seqoff=4380, mbi=2),
            _r(S, ACK, LFULL, rs=1, x=1, g=2),
            _r(S, ACK, LFULL, rs=1, x=1, g=3),
            _r(S, PA, LPART, rs=1, x=1, g=4),
            _r(C, RST, kind=PK_REACT, consumes=0, rs=1, x=1, g=2, rc=1),
        ),
        ("exp", 5000.0),
    ),
    Template(
        "mb_request",  # request-triggered: a bare RST and a RST+ACK before the server answers
        (
            _r(C, PA, LREQ),
            _r(S, RST, kind=PK_MB1, consumes=0, rs=0.3),
            _r(S, RA, kind=PK_MB2, consumes=0, rs=0.3, us=40),
            _r(S, ACK, LFULL, rs=1, x=1),
            _r(S, PA, LPART, rs=1, x=1, g=1),
            _r(C, RST, kind=PK_REACT, consumes=0, rs=1, x=1, rc=1),
        ),
        ("exp", 5000.0),
    ),
]
CL_INDEX = {t.name: i for i, t in enumerate(CL)}

# RST truth per (template, row): (cause, subcause, true sender) ; sender in orig/resp/middlebox
_CAUSE = {
    ("rej", 1): ("closed_port", "server_kernel", "resp"),
    ("rej_fw", 1): ("middlebox", "reject", "middlebox"),  # issue #4: a firewall REJECT is a middlebox
    ("abort_c_linger0", 0): ("abort", "so_linger0", "orig"),
    ("abort_c_unread", 1): ("abort", "unread_data", "orig"),
    ("abort_c_keepalive", 3): ("abort", "keepalive_timeout", "orig"),
    ("abort_s_linger0", 0): ("abort", "so_linger0", "resp"),
    ("abort_s_unread", 1): ("abort", "unread_data", "resp"),
    ("data_after_close", 3): ("half_open", "data_after_close", "resp"),  # issue #4 taxonomy
    ("half_open_s", 1): ("half_open", "lost_state", "resp"),
    ("half_open_s_keepalive", 1): ("half_open", "lost_state_keepalive", "resp"),
    ("half_open_c", 1): ("half_open", "lost_state", "orig"),
    ("mb_response", 2): ("middlebox", "injected_on_response", "middlebox"),
    ("mb_response", 5): ("half_open", "after_middlebox", "orig"),
    ("mb_request", 1): ("middlebox", "injected_on_request", "middlebox"),
    ("mb_request", 2): ("middlebox", "injected_on_request", "middlebox"),
    ("mb_request", 5): ("half_open", "after_middlebox", "orig"),
    ("mb_triple", 9): ("half_open", "after_middlebox", "orig"),
}
for _i in (1, 3, 5):
    _CAUSE[("rej_retry", _i)] = ("closed_port", "server_kernel", "resp")
for _i in (3, 4, 5):
    _CAUSE[("mb_triple", _i)] = ("middlebox", "injected_triple", "middlebox")

CAUSES = ("closed_port", "abort", "half_open", "middlebox")
SUBCAUSES = tuple(sorted({v[1] for v in _CAUSE.values()}))
SENDERS = ("orig", "resp", "middlebox")
CONN_STATES = ("SF", "S1", "REJ", "S0", "RSTO", "RSTR", "OTH")

# A packet's truth code: 0 = not a RST, else 1 + index into RST_TRUTH
RST_TRUTH: list[tuple[str, str, str]] = []
_HS_TRUTH = np.zeros((len(HS), 8), dtype=np.int16)
_CL_TRUTH = np.zeros((len(CL), 12), dtype=np.int16)
for (_name, _row), _val in sorted(_CAUSE.items()):
    RST_TRUTH.append(_val)
    if _name in HS_INDEX:
        _HS_TRUTH[HS_INDEX[_name], _row] = len(RST_TRUTH)
    else:
        _CL_TRUTH[CL_INDEX[_name], _row] = len(RST_TRUTH)
# Active aborts and middlebox RSTs are distinguished by template; check every RST is labelled
for _tpls, _tab in ((HS, _HS_TRUTH), (CL, _CL_TRUTH)):
    for _ti, _t in enumerate(_tpls):
        for _ri, _row in enumerate(_t.rows):
            assert bool(_row[1] & RST) == bool(_tab[_ti, _ri]), (_t.name, _ri)


def _draw_x(rng: np.random.Generator, spec: tuple, n: int) -> np.ndarray:
    if spec[0] == "const":
        return np.full(n, spec[1])
    if spec[0] == "exp":
        return rng.exponential(spec[1], n)
    return rng.uniform(spec[1], spec[2], n)


def _choice(rng: np.random.Generator, p, n: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.searchsorted(np.cumsum(p / p.sum()), rng.random(n), side="right").astype(np.int64)


# -----------------------------------------------------------------------------------------
@dataclass
class Hosts:
    is6: np.ndarray  # bool
    addr: np.ndarray  # (n, 16) uint8; IPv4 in the first 4 bytes
    os: np.ndarray
    ttl: np.ndarray  # as seen at the capture point
    is_server: np.ndarray


def make_hosts(rng: np.random.Generator, n_cli: int, n_srv: int, frac6: float) -> Hosts:
    n = n_cli + n_srv
    is_server = np.zeros(n, dtype=bool)
    is_server[n_cli:] = True
    is6 = rng.random(n) < frac6
    is6[[0, 1, n_cli, n_cli + 1]] = [False, True, False, True]  # both families in both pools
    os_ = np.where(
        is_server,
        _choice(rng, [0.80, 0.12, 0.0, 0.08], n),
        _choice(rng, [0.40, 0.55, 0.05, 0.0], n),
    )
    hops = np.where(is_server, rng.integers(1, 9, n), rng.integers(3, 21, n))
    ttl = OS_TTL[os_] - hops
    addr = np.zeros((n, 16), dtype=np.uint8)
    # unique host numbers: a random permutation inside each pool's address space
    num = np.empty(n, dtype=np.int64)
    num[:n_cli] = rng.choice(1 << 22, n_cli, replace=False) + 1
    num[n_cli:] = rng.choice(1 << 18, n_srv, replace=False) + 1
    v4 = np.where(is_server, (172 << 24) | (16 << 16) + num, (10 << 24) + num)
    for b in range(4):
        addr[:, b] = (v4 >> (24 - 8 * b)) & 0xFF
    # IPv6: 2001:db8:<pool>::/48 documentation space, host number in the low bits
    a6 = addr[is6]
    a6[:] = 0
    a6[:, 0], a6[:, 1], a6[:, 2], a6[:, 3] = 0x20, 0x01, 0x0D, 0xB8
    a6[:, 5] = np.where(is_server[is6], 0x5E, 0xC1)
    low = num[is6]
    for b in range(4):
        a6[:, 15 - b] = (low >> (8 * b)) & 0xFF
    a6[:, 8] = rng.integers(0, 256, len(low))  # some interface-id entropy
    addr[is6] = a6
    return Hosts(is6=is6, addr=addr, os=os_, ttl=ttl, is_server=is_server)


@dataclass
class Plan:
    """Per-connection arrays (length = number of planned connections)."""

    kind: np.ndarray
    hs: np.ndarray  # handshake template
    cl: np.ndarray  # close template, -1 for none
    cli: np.ndarray  # host indices
    srv: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    t0: np.ndarray  # int64 us
    rtt_c: np.ndarray  # float us, capture <-> client
    rtt_s: np.ndarray  # capture <-> server
    gap: np.ndarray  # inter-segment gap in a burst
    isn: np.ndarray  # (n, 2) uint32-valued int64
    ts_ok: np.ndarray
    cli_ts: np.ndarray


@dataclass
class Packets:
    """Per-packet arrays in connection-major, causal order."""

    conn: np.ndarray
    dir: np.ndarray
    flags: np.ndarray
    plen: np.ndarray
    kind: np.ndarray
    consumes: np.ndarray
    t: np.ndarray
    seqoff: np.ndarray
    mbi: np.ndarray
    truth: np.ndarray


def plan_connections(rng: np.random.Generator, n_conn: int, hosts: Hosts):
    n = n_conn
    kind = _choice(rng, KIND_P, n)
    is6 = rng.random(n) < 0.10
    cli_idx = np.flatnonzero(~hosts.is_server)
    srv_idx = np.flatnonzero(hosts.is_server)
    cli = np.empty(n, dtype=np.int64)
    srv = np.empty(n, dtype=np.int64)
    for fam in (False, True):
        m = is6 == fam
        cpool = cli_idx[hosts.is6[cli_idx] == fam]
        spool = srv_idx[hosts.is6[srv_idx] == fam]
        cw = rng.lognormal(0.0, 1.0, len(cpool))
        sw = 1.0 / (1.0 + np.arange(len(spool))) ** 0.9  # Zipf-ish server popularity
        cli[m] = cpool[_choice(rng, cw, int(m.sum()))]
        srv[m] = spool[_choice(rng, sw, int(m.sum()))]

    cos, sos = hosts.os[cli], hosts.os[srv]
    # destination ports
    common = np.array([443, 80, 22, 25, 8080, 993, 5432, 3306, 8443, 53])
    dport = common[_choice(rng, [55, 20, 3, 2, 3, 2, 2, 1, 2, 1], n)]
    other = rng.random(n) < 0.12
    dport = np.where(other, rng.integers(1024, 10000, n), dport)
    scan = (kind == K_REJ) & (rng.random(n) < 0.6)
    dport = np.where(scan, rng.integers(1, 65536, n), dport)
    # source ports: unique per client (sequential with a stride, from a random base)
    order = np.argsort(cli, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    sc = cli[order]
    first = np.r_[0, np.flatnonzero(sc[1:] != sc[:-1]) + 1]
    counts = np.diff(np.r_[first, n])
    rank[order] = np.arange(n) - np.repeat(first, counts)
    lo = np.where(cos == OS_WINDOWS, 49152, 32768)
    size = np.where(cos == OS_WINDOWS, 16384, 28232)
    base = rng.integers(0, 1 << 30, len(hosts.os))[cli]
    sport = lo + (base + 7 * rank) % size

    # handshake template
    hs = np.full(n, HS_INDEX["hs"])
    hs[rng.random(n) < 0.03] = HS_INDEX["hs_syn_retx"]
    rej = kind == K_REJ
    fw = rej & (rng.random(n) < 0.15)
    hs[rej] = np.where(cos[rej] == OS_WINDOWS, HS_INDEX["rej_retry"], HS_INDEX["rej"])
    hs[fw] = HS_INDEX["rej_fw"]
    s0 = kind == K_S0
    hs[s0] = HS_INDEX["s0_1"] + _choice(rng, [15, 15, 20, 20, 15, 15], int(s0.sum()))

    cl = np.full(n, -1)

    def pick(mask, names, p):
        cl[mask] = np.array([CL_INDEX[x] for x in names])[_choice(rng, p, int(mask.sum()))]

    pick(kind == K_SF, ["fin_c3", "fin_c4", "fin_s3", "fin_s4"], [35, 15, 30, 20])
    pick(
        kind == K_ABORT_C, ["abort_c_linger0", "abort_c_unread", "abort_c_keepalive"], [55, 30, 15]
    )
    pick(kind == K_ABORT_S, ["abort_s_linger0", "abort_s_unread"], [60, 40])
    pick(kind == K_DAC, ["data_after_close"], [1])
    pick(kind == K_HALF, ["half_open_s", "half_open_s_keepalive", "half_open_c"], [50, 20, 30])
    pick(kind == K_MB, ["mb_response", "mb_triple", "mb_request"], [40, 30, 30])

    rtt_c = np.rint(np.clip(rng.lognormal(np.log(25 * MS), 0.9, n), 500, 400 * MS))
    rtt_s = np.rint(np.clip(rng.lognormal(np.log(2 * MS), 1.0, n), 100, 50 * MS))
    gap = np.rint(np.exp(rng.uniform(np.log(20), np.log(400), n)))
    isn = rng.integers(0, 1 << 32, (n, 2), dtype=np.int64)
    cli_ts = OS_TS[cos]
    ts_ok = cli_ts & OS_TS[sos]
    plan = Plan(
        kind,
        hs,
        cl,
        cli,
        srv,
        sport,
        dport,
        np.zeros(n, np.int64),
        rtt_c,
        rtt_s,
        gap,
        isn,
        ts_ok,
        cli_ts,
    )
    return plan


# -----------------------------------------------------------------------------------------
def _expand_template(tpls, tab, idx_per_conn, t_ref, plan, rng, part):
    """Expand every connection's template into packets.  Returns dict of arrays + sort key."""
    out = {
        k: []
        for k in (
            "conn",
            "dir",
            "flags",
            "plen",
            "kind",
            "consumes",
            "t",
            "seqoff",
            "mbi",
            "truth",
            "key",
        )
    }
    span = np.zeros(len(idx_per_conn))
    for ti, tpl in enumerate(tpls):
        conns = np.flatnonzero(idx_per_conn == ti)
        if len(conns) == 0:
            continue
        rows = np.array(tpl.rows, dtype=np.float64)  # (L, 12)
        L = len(rows)
        m = len(conns)
        xval = _draw_x(rng, tpl.x, m)
        coef = rows[:, 5:10]  # rc, rs, x, g, us
        par = np.stack(
            [plan.rtt_c[conns], plan.rtt_s[conns], xval, plan.gap[conns], np.ones(m)], axis=1
        )
        rel = par @ coef.T  # (m, L)
        span[conns] = rel.max(axis=1)
        t = np.rint(t_ref[conns, None] + rel).astype(np.int64)
        role = rows[:, 0].astype(np.int8)
        plen_code = rows[:, 2].astype(np.int64)
        plen = np.zeros((m, L), dtype=np.int64)
        plen[:, plen_code == LREQ] = rng.integers(40, 900, (m, int((plen_code == LREQ).sum())))
        plen[:, plen_code == LFULL] = MAX_PAYLOAD
        plen[:, plen_code == LPART] = rng.integers(
            1, MAX_PAYLOAD + 1, (m, int((plen_code == LPART).sum()))
        )
        plen[:, plen_code == LSMALL] = rng.integers(1, 200, (m, int((plen_code == LSMALL).sum())))
        out["conn"].append(np.repeat(conns, L))
        out["dir"].append(np.tile(role, m))
        out["flags"].append(np.tile(rows[:, 1].astype(np.uint8), m))
        out["plen"].append(plen.ravel())
        out["kind"].append(np.tile(rows[:, 3].astype(np.uint8), m))
        out["consumes"].append(np.tile(rows[:, 4].astype(np.uint8), m))
        out["t"].append(t.ravel())
        out["seqoff"].append(np.tile(rows[:, 10].astype(np.int64), m))
        out["mbi"].append(np.tile(rows[:, 11].astype(np.int64), m))
        out["truth"].append(np.tile(tab[ti, :L], m))
        out["key"].append((np.repeat(conns, L) << 32) | (part << 28) | np.tile(np.arange(L), m))
    return {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in out.items()}, span


def _expand_rounds(rng, plan, R, cls, est):
    """Request/response rounds of established connections.  Returns packet dict, per-conn
    data-phase duration (us)."""
    n = len(plan.kind)
    nr = int(R.sum())
    rconn = np.repeat(np.arange(n), R)
    rcls = cls[rconn]
    # response segments: many one-segment answers, a heavy tail of downloads
    sizes = [
        np.ones(nr, np.int64),
        rng.integers(2, 6, nr),
        rng.integers(6, 31, nr),
        rng.integers(31, 201, nr),
    ]
    r = np.choose(_choice(rng, [55, 25, 17, 3], nr), sizes)
    r = np.where(rcls == C_KA, np.choose(_choice(rng, [70, 25, 5, 0], nr), sizes), r)
    r = np.where(rcls == C_INTER, 1 + (rng.random(nr) < 0.1) * rng.integers(1, 4, nr), r)
    flip = rng.random(nr) < 0.08  # uploads: the client sends the burst, the server acks
    req_len = np.where(rcls == C_INTER, rng.integers(1, 120, nr), rng.integers(40, 900, nr))
    last_len = np.where(
        rcls == C_INTER, rng.integers(1, 600, nr), rng.integers(1, MAX_PAYLOAD + 1, nr)
    )
    think = rng.exponential(3 * MS, nr) + 200
    idle_mean = np.array([400 * MS, 20 * US, 10 * US])[rcls]
    idle = rng.exponential(1.0, nr) * idle_mean
    rtt_c, rtt_s, gap = plan.rtt_c[rconn], plan.rtt_s[rconn], plan.gap[rconn]
    rtt_resp = np.where(flip, rtt_c, rtt_s)
    rtt_req = np.where(flip, rtt_s, rtt_c)
    dur = rtt_resp + think + (r - 1) * gap + rtt_req
    step = dur + idle
    # round start offsets within the connection (exclusive cumsum per connection)
    cs = np.cumsum(step) - step
    rfirst = np.r_[0, np.cumsum(R)[:-1]]
    has = R > 0
    conn_base = np.zeros(n)
    conn_base[has] = cs[rfirst[has]]
    rstart = cs - conn_base[rconn]
    data_dur = np.zeros(n)
    last = rfirst + R - 1
    data_dur[has] = rstart[last[has]] + dur[last[has]]

    npk = 1 + r + (r + 1) // 2
    P = int(npk.sum())
    rid = np.repeat(np.arange(nr), npk)
    pfirst = np.cumsum(npk) - npk
    q = np.arange(P) - pfirst[rid]
    rr = r[rid]
    qq = q - 1
    b, w = qq // 3, qq % 3
    is_req = q == 0
    is_data = (~is_req) & (w < 2) & (2 * b + w < rr)
    seg = np.where(is_data, 2 * b + w, np.minimum(2 * b + 1, rr - 1))
    base_t = est[rconn[rid]] + rstart[rid]
    t_resp = base_t + rtt_resp[rid] + think[rid] + seg * gap[rid]
    t = np.where(is_req, base_t, np.where(is_data, t_resp, t_resp + rtt_req[rid]))
    requester = flip[rid].astype(np.int8)
    d = np.where(is_data, 1 - requester, requester).astype(np.int8)
    plen = np.where(
        is_req,
        req_len[rid],
        np.where(is_data, np.where(seg < rr - 1, MAX_PAYLOAD, last_len[rid]), 0),
    )
    flags = np.where(is_req | (is_data & (seg == rr - 1)), PA, ACK).astype(np.uint8)
    pconn = rconn[rid]
    # index of the packet inside its connection's data phase
    conn_pk = np.bincount(rconn, weights=npk, minlength=n).astype(np.int64)
    conn_first = np.cumsum(conn_pk) - conn_pk
    within = np.arange(P) - conn_first[pconn]
    pk = {
        "conn": pconn,
        "dir": d,
        "flags": flags,
        "plen": plen.astype(np.int64),
        "kind": np.zeros(P, np.uint8),
        "consumes": np.ones(P, np.uint8),
        "t": np.rint(t).astype(np.int64),
        "seqoff": np.zeros(P, np.int64),
        "mbi": np.zeros(P, np.int64),
        "truth": np.zeros(P, np.int16),
        "key": (pconn << 32) | (1 << 28) | within,
    }
    return pk, data_dur


def expand(rng: np.random.Generator, plan: Plan):
    """Expand connection plans to packets.  Start times are drawn here, once each
    connection's length is known, uniformly over [-length, DURATION_US)."""
    n = len(plan.kind)
    established = plan.cl >= 0
    cls = np.where(established, _choice(rng, [0.30, 0.36, 0.34], n), C_SHORT)
    cls = np.where(established & (plan.kind != K_SF) & (cls == C_INTER), C_SHORT, cls)
    R = np.zeros(n, np.int64)
    R[cls == C_SHORT] = rng.geometric(0.42, int((cls == C_SHORT).sum()))
    R[cls == C_KA] = 4 + rng.geometric(1 / 20, int((cls == C_KA).sum()))
    R[cls == C_INTER] = 20 + rng.geometric(1 / 40, int((cls == C_INTER).sum()))
    R[~established] = 0
    # middlebox/half-open/after-close templates carry their own final exchange
    zero_ok = established & np.isin(plan.kind, [K_MB, K_HALF, K_DAC])
    R[zero_ok] -= 1

    # handshakes relative to 0 first, to know their lengths
    zero = np.zeros(n)
    hs_pk, hs_span = _expand_template(HS, _HS_TRUTH, plan.hs, zero, plan, rng, 0)
    d0 = rng.uniform(10, 1000, n)
    data_start = hs_span + d0
    rd_pk, data_dur = _expand_rounds(rng, plan, R, cls, data_start)
    close_gap = np.where(cls == C_KA, rng.uniform(5 * US, 60 * US, n), rng.exponential(300 * MS, n))
    close_gap[R == 0] = rng.uniform(100, 5000, int((R == 0).sum()))
    te = data_start + data_dur + close_gap
    cl_pk, cl_span = _expand_template(CL, _CL_TRUTH, np.maximum(plan.cl, -1), te, plan, rng, 2)
    length = np.where(established, te + cl_span, hs_span)
    t0 = rng.uniform(-length, DURATION_US).astype(np.int64)
    plan.t0 = t0
    parts = [hs_pk, rd_pk, cl_pk]
    pk = {k: np.concatenate([p[k] for p in parts]) for k in hs_pk}
    pk["t"] = pk["t"] + t0[pk["conn"]]
    order = np.argsort(pk["key"], kind="stable")
    del pk["key"]
    return Packets(**{k: v[order] for k, v in pk.items()})
