"""RST attribution: a cause, a confidence and the evidence for every RST packet.

`classify()` is a pure function of one RST's facts (`RstFacts`): the packet itself, both
endpoints' state just before it, what each side did afterwards, other RSTs of the same
connection, and the claimed sender's TTL profile across the whole capture.  The rules
follow the project's RST signal notes (RST_SIGNALS.md, cited by section in `evidence`):

1. Injection first, but only on evidence a real endpoint cannot produce: the claimed
   sender carrying on after its own RST, a SYN-ACK after a RST to the SYN, or TTL / burst
   anomalies (§0 rules 3, 4 and 7).  A lone weak hint never makes a middlebox verdict.
2. Otherwise the wire form and the context name the kernel path (§0 rule 2, §2.1-2.3):
   a RST+ACK acknowledging a SYN is a closed port, a reactive RST at the trigger's ack is
   a half-open connection, a RST at the sender's next sequence number is an abort.
3. What fits none of them is `unknown`, with the reason (§0 rule 8).

`classify(facts)` is `decide(signals(facts))`: `signals` reduces the facts to the predicates
the rules test (`Signals`), `decide` applies the rules.  A capture's tens of thousands of
RSTs have a few dozen distinct signal tuples, so `attribute.attribute` computes the signals
column-wise with numpy (`signal_columns`) and decides once per distinct tuple.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from rstlens.flows import layout as L
from rstlens.parsers._batch import ACK, OPT_MD5, SYN

BURST_WINDOW_US = 2_000_000
BOTH_WAYS_WINDOW_US = 1_000_000
IDLE_GAP_US = 60_000_000


class RstFacts(NamedTuple):
    """Everything `classify` looks at for one RST (see `flows.layout.R_*` for the raw columns).

    The per-RST reference form: `attribute` works on columns of these facts instead
    (`signal_columns`), and the tests hold the two to the same signals."""

    direction: str  # "orig" or "resp": who the RST claims to come from
    flags: int
    seq: int
    ack: int
    ttl: int
    ip_id: int
    df: bool
    window: int
    payload_len: int
    tcp_opts: int
    ip_version: int
    snd_state: int  # Zeek endpoint state of the sender before the RST
    rcv_state: int
    snd_pkts: int  # non-RST packets the sender had sent in this connection
    snd_ttl_min: int
    snd_ttl_max: int
    snd_fin: bool
    rcv_fin: bool
    snd_seq_known: bool
    seq_vs_snd_nxt: int
    rcv_ack_known: bool
    seq_vs_rcv_ack: int
    rcv_window: int  # bytes, -1 unknown
    ack_vs_rcv_nxt: int | None  # None when the RST has no ACK or the receiver sent nothing
    trig_flags: int  # -1: nothing from the receiver before
    trig_ack: int
    trig_gap_us: int  # time between the trigger and the RST
    snd_last_data_ts: int
    rcv_last_data_ts: int
    start_seen: bool
    after_snd_adv: int  # claimed sender's packets afterwards at/after the RST's seq
    after_snd_synack: bool
    after_rcv_nonrst: int
    after_rcv_challenge: bool
    host_ttls: frozenset[int]  # TTLs the sender's host shows in non-RST packets, whole capture
    burst_seq_change: bool
    burst_ack_change: bool
    burst_ttl_change: bool
    both_directions: bool


class Verdict(NamedTuple):
    cause: str
    subcause: str | None
    confidence: float
    evidence: tuple[str, ...]
    acceptability: str
    ended_connection: bool | None


ACC_NAMES = ("exact", "in_window", "out_of_window", "unknown")
_EXACT, _IN_WINDOW, _OUT_OF_WINDOW, _UNKNOWN = range(4)
TTL_ANOMALIES = (None, "inj.ttl_flow", "inj.ttl_host")


def acceptability(f: RstFacts) -> str:
    """RFC 9293 §3.10.7.4 / RFC 5961 §3.2 from the receiver's reconstructed state."""
    if f.rcv_state == L.SYN_SENT and f.snd_state in (L.INACTIVE, L.SYN_ACK_SENT):
        # SYN-SENT: acceptable only when it acknowledges the SYN
        if f.flags & ACK and f.ack_vs_rcv_nxt == 0:
            return "exact"
        return "out_of_window"
    refs = []
    if f.rcv_ack_known:
        refs.append(f.seq_vs_rcv_ack)
    if f.snd_seq_known:
        refs.append(f.seq_vs_snd_nxt)
    if not refs:
        return "unknown"
    if 0 in refs:
        return "exact"
    if f.rcv_window < 0:
        return "unknown"
    base = refs[0]
    return "in_window" if 0 < base < max(f.rcv_window, 1) else "out_of_window"


def _reactive_form(f: RstFacts) -> bool:
    """Linux's no-socket path: IP ID 0 with DF, window 0, no options (§0 rule 2)."""
    if f.window != 0 or f.tcp_opts != 0:
        return False
    return f.ip_version == 6 or (f.ip_id == 0 and f.df)


class Signals(NamedTuple):
    """What `decide` looks at: the predicates of one RST's facts, each a small integer.

    Thousands of RSTs share a few hundred distinct signal tuples, so `attribute` computes
    them column-wise (`signal_columns`) and decides once per distinct tuple."""

    acc: int  # index into ACC_NAMES
    rcv_continued: bool  # the receiver sent non-RST packets afterwards
    challenge_seen: bool  # its first packet afterwards was a pure ACK
    payload: bool
    reactive: bool  # Linux's no-socket form (§0 rule 2): see `_reactive_form`
    has_ack: bool
    from_resp: bool
    ack_at_rcv_nxt: bool  # the RST acks exactly what the receiver sent (False when unknown)
    seq_eq_trig_ack: bool  # seq equals the ack of the receiver's last segment
    at_snd_nxt: bool
    rcv_ack_exact: bool  # seq equals the highest ack the receiver sent
    sender_continued: bool  # claimed sender's packets afterwards at or beyond the RST's seq
    synack_after: bool  # the claimed sender sent a SYN-ACK afterwards
    ttl_anomaly: int  # index into TTL_ANOMALIES
    ttl_checkable: bool  # the sender's TTL is known from this flow or from its host
    burst_seq_change: bool
    burst_ack_change: bool
    burst_ttl_change: bool
    both_directions: bool
    window_nonzero: bool
    md5: bool
    seq_zero: bool
    trig_syn_ack: int  # the trigger's SYN|ACK bits (both set when there was no trigger)
    no_trigger: bool
    snd_state: int
    rcv_state: int
    snd_fin: bool
    rcv_fin: bool
    snd_pkts: int  # 0, 1, or 2 for more
    idle_gap: bool  # the trigger came more than IDLE_GAP_US before
    unanswered_peer_data: bool  # the receiver's data is newer than the sender's
    start_seen: bool


def signals(f: RstFacts) -> Signals:
    """The signals of one RST (`signal_columns` computes the same for many)."""
    has_ack = bool(f.flags & ACK)
    if f.snd_pkts > 0 and not f.snd_ttl_min <= f.ttl <= f.snd_ttl_max:
        ttl_anomaly = 1
    elif f.host_ttls and f.ttl not in f.host_ttls:
        ttl_anomaly = 2
    else:
        ttl_anomaly = 0
    return Signals(
        acc=ACC_NAMES.index(acceptability(f)),
        rcv_continued=f.after_rcv_nonrst > 0,
        challenge_seen=f.after_rcv_challenge,
        payload=f.payload_len > 0,
        reactive=_reactive_form(f),
        has_ack=has_ack,
        from_resp=f.direction == "resp",
        ack_at_rcv_nxt=f.ack_vs_rcv_nxt == 0,
        seq_eq_trig_ack=f.trig_flags >= 0 and bool(f.trig_flags & ACK) and f.seq == f.trig_ack,
        at_snd_nxt=f.snd_seq_known and f.seq_vs_snd_nxt == 0,
        rcv_ack_exact=f.rcv_ack_known and f.seq_vs_rcv_ack == 0,
        sender_continued=f.after_snd_adv > 0,
        synack_after=f.after_snd_synack,
        ttl_anomaly=ttl_anomaly,
        ttl_checkable=f.snd_pkts > 0 or bool(f.host_ttls),
        burst_seq_change=f.burst_seq_change,
        burst_ack_change=f.burst_ack_change,
        burst_ttl_change=f.burst_ttl_change,
        both_directions=f.both_directions,
        window_nonzero=f.window != 0,
        md5=bool(f.tcp_opts & OPT_MD5),
        seq_zero=f.seq == 0,
        trig_syn_ack=f.trig_flags & (SYN | ACK),
        no_trigger=f.trig_flags < 0,
        snd_state=f.snd_state,
        rcv_state=f.rcv_state,
        snd_fin=f.snd_fin,
        rcv_fin=f.rcv_fin,
        snd_pkts=min(f.snd_pkts, 2),
        idle_gap=f.trig_gap_us > IDLE_GAP_US,
        unanswered_peer_data=f.rcv_last_data_ts > f.snd_last_data_ts > 0,
        start_seen=f.start_seen,
    )


def signal_columns(c: Mapping[str, np.ndarray]) -> np.ndarray:
    """`signals` for many RSTs at once: one row per RST, one int64 column per `Signals` field.

    `c` holds one array per `RstFacts` field, except: `ack_vs_rcv_nxt` is an int array
    with `ack_vs_rcv_nxt_known` beside it (None in `RstFacts`), `direction` is replaced by
    `from_resp`, and `host_ttls` by `host_ttls_known` (the host has a TTL profile) and
    `ttl_in_host_ttls` (the RST's TTL is in it)."""
    flags, ttl, trig = c["flags"], c["ttl"], c["trig_flags"]
    has_ack = (flags & ACK) != 0
    snd_pkts = c["snd_pkts"]
    ack_at_rcv_nxt = c["ack_vs_rcv_nxt_known"] & (c["ack_vs_rcv_nxt"] == 0)

    # acceptability, in the order of its scalar form's tests (later assignments win, so
    # the earliest test is applied last)
    rcv_ack_known, snd_seq_known = c["rcv_ack_known"], c["snd_seq_known"]
    base = np.where(rcv_ack_known, c["seq_vs_rcv_ack"], c["seq_vs_snd_nxt"])
    acc = np.where((base > 0) & (base < np.maximum(c["rcv_window"], 1)), _IN_WINDOW, _OUT_OF_WINDOW)
    acc = np.where(c["rcv_window"] < 0, _UNKNOWN, acc)
    exact = (rcv_ack_known & (c["seq_vs_rcv_ack"] == 0)) | (
        snd_seq_known & (c["seq_vs_snd_nxt"] == 0)
    )
    acc = np.where(exact, _EXACT, acc)
    acc = np.where(~(rcv_ack_known | snd_seq_known), _UNKNOWN, acc)
    snd_st, rcv_st = c["snd_state"], c["rcv_state"]
    syn_sent = (rcv_st == L.SYN_SENT) & ((snd_st == L.INACTIVE) | (snd_st == L.SYN_ACK_SENT))
    acc = np.where(syn_sent, np.where(has_ack & ack_at_rcv_nxt, _EXACT, _OUT_OF_WINDOW), acc)

    v6_or_df0 = (c["ip_version"] == 6) | ((c["ip_id"] == 0) & c["df"])
    reactive = (c["window"] == 0) & (c["tcp_opts"] == 0) & v6_or_df0
    flow_anomaly = (snd_pkts > 0) & ((ttl < c["snd_ttl_min"]) | (ttl > c["snd_ttl_max"]))
    host_known = c["host_ttls_known"]
    host_anomaly = host_known & ~c["ttl_in_host_ttls"]
    cols = {
        "acc": acc,
        "rcv_continued": c["after_rcv_nonrst"] > 0,
        "challenge_seen": c["after_rcv_challenge"],
        "payload": c["payload_len"] > 0,
        "reactive": reactive,
        "has_ack": has_ack,
        "from_resp": c["from_resp"],
        "ack_at_rcv_nxt": ack_at_rcv_nxt,
        "seq_eq_trig_ack": (trig >= 0) & ((trig & ACK) != 0) & (c["seq"] == c["trig_ack"]),
        "at_snd_nxt": snd_seq_known & (c["seq_vs_snd_nxt"] == 0),
        "rcv_ack_exact": rcv_ack_known & (c["seq_vs_rcv_ack"] == 0),
        "sender_continued": c["after_snd_adv"] > 0,
        "synack_after": c["after_snd_synack"],
        "ttl_anomaly": np.where(flow_anomaly, 1, np.where(host_anomaly, 2, 0)),
        "ttl_checkable": (snd_pkts > 0) | host_known,
        "burst_seq_change": c["burst_seq_change"],
        "burst_ack_change": c["burst_ack_change"],
        "burst_ttl_change": c["burst_ttl_change"],
        "both_directions": c["both_directions"],
        "window_nonzero": c["window"] != 0,
        "md5": (c["tcp_opts"] & OPT_MD5) != 0,
        "seq_zero": c["seq"] == 0,
        "trig_syn_ack": trig & (SYN | ACK),
        "no_trigger": trig < 0,
        "snd_state": snd_st,
        "rcv_state": rcv_st,
        "snd_fin": c["snd_fin"],
        "rcv_fin": c["rcv_fin"],
        "snd_pkts": np.minimum(snd_pkts, 2),
        "idle_gap": c["trig_gap_us"] > IDLE_GAP_US,
        "unanswered_peer_data": (c["rcv_last_data_ts"] > c["snd_last_data_ts"])
        & (c["snd_last_data_ts"] > 0),
        "start_seen": c["start_seen"],
    }
    n = flags.shape[0]
    out = np.empty((n, len(Signals._fields)), np.int64, order="F")  # filled column by column
    for j, name in enumerate(Signals._fields):
        out[:, j] = cols[name]
    return out


def classify(f: RstFacts) -> Verdict:
    """The verdict for one RST."""
    return decide(signals(f))


def decide(s: Signals) -> Verdict:
    """The verdict for an RST with signals `s` (rules in the module docstring)."""
    acc = ACC_NAMES[s.acc]
    ev: list[str] = ["acc." + acc] if acc != "unknown" else []
    if acc == "in_window" and s.challenge_seen:
        ev.append("acc.challenge_ack_seen")
    ended: bool | None
    if s.rcv_continued:
        ended = False
    else:
        ended = True if acc == "exact" else False if acc == "out_of_window" else None
    if s.payload:
        ev.append("payload.present")

    reactive = bool(s.reactive)
    has_ack = bool(s.has_ack)
    answers_syn = (
        s.from_resp
        and s.rcv_state == L.SYN_SENT
        and s.snd_state == L.INACTIVE
        and has_ack
        and s.ack_at_rcv_nxt
    )

    # ---- 1. a middlebox? (§0 rules 3, 4, 7; §2.4)
    strong: list[str] = []
    medium: list[str] = []
    weak: list[str] = []
    if s.sender_continued:
        strong.append("inj.sender_continued")
    if s.synack_after and s.snd_state in (L.INACTIVE, L.SYN_ACK_SENT):
        strong.append("inj.synack_after_rst")
    ttl_ev = TTL_ANOMALIES[s.ttl_anomaly]
    if ttl_ev:
        medium.append(ttl_ev)
    # A burst says some RSTs of it are forged, not which: it counts against this RST only when
    # its TTL does not vouch for it (a genuine RST amid forged ones keeps the sender's TTL).
    ttl_vouches = ttl_ev is None and s.ttl_checkable
    if not ttl_vouches:
        if s.burst_seq_change:
            medium.append("inj.rst_seq_change")
        if s.burst_ack_change:
            medium.append("inj.rst_ack_change")
        if s.burst_ttl_change:
            medium.append("inj.rst_ttl_change")
    if not has_ack and s.window_nonzero:
        weak.append("inj.bare_rst_window")
    if s.both_directions and ttl_ev:
        weak.append("inj.both_directions")

    if s.md5 and s.sender_continued:
        return Verdict("unknown", "evasion", 0.5, (*ev, "evasion.md5", *strong), acc, ended)

    if strong or medium:
        if strong and medium:
            conf = 0.95
        elif len(strong) >= 1:
            conf = 0.85
        elif len(medium) >= 2:
            conf = 0.8
        elif weak:
            conf = 0.7
        else:
            conf = 0.6  # one IP-layer anomaly: routing changes can do this too (§2.4)
        # A firewall REJECT sends one RST in the kernel's own reactive form; injectors send
        # bursts and carry their own window/IP-ID patterns (§2.4, Appendix).
        single = not (s.burst_seq_change or s.burst_ack_change or s.burst_ttl_change)
        if reactive and single:
            sub = "reject"
            medium.append("inj.reject_form")
        else:
            sub = "injected"
        return Verdict("middlebox", sub, conf, (*ev, *strong, *medium, *weak), acc, ended)

    ttl_ok = bool(s.ttl_checkable)  # the sender's TTL could be checked and fit

    # ---- 2a. closed port (§2.1)
    if answers_syn:
        ev.append("ctx.answers_syn")
        if s.seq_zero:
            ev.append("seq.zero_acks_syn")
        if reactive:
            ev.append("form.reactive")
        conf = 0.95 if ttl_ok else 0.85
        return Verdict("closed_port", None, conf, tuple(ev), acc, ended)

    # ---- 2b. no state at the sender: half-open (§2.2, §2.3d, Appendix)
    if s.seq_eq_trig_ack and (reactive or not has_ack):
        ev.append("seq.eq_trigger_ack")
        if reactive:
            ev.append("form.reactive")
        if s.snd_fin:
            ev.append("ctx.sender_fin_before")
            sub = "data_after_close"
        elif s.snd_state == L.SYN_SENT and s.trig_syn_ack == ACK:
            ev.append("ctx.peer_holds_old_connection")
            sub = "stale_reuse"
        elif s.trig_syn_ack == SYN | ACK and s.snd_pkts <= 1:
            ev.append("ctx.unexpected_synack")
            sub = "unexpected_synack"
        elif s.snd_state == L.RESET or s.rcv_state == L.RESET:
            ev.append("ctx.after_earlier_reset")
            sub = "after_reset"
        else:
            sub = "lost_state"
            if s.idle_gap:
                ev.append("ctx.idle_gap")
        conf = 0.85 if reactive else 0.7
        return Verdict("half_open", sub, conf, tuple(ev), acc, ended)

    # ---- 2c. active abort (§2.3)
    if s.at_snd_nxt or (not reactive and has_ack and s.rcv_ack_exact):
        ev.append("seq.at_snd_nxt" if s.at_snd_nxt else "acc.exact")
        if not reactive:
            ev.append("form.active")
        if has_ack and s.ack_at_rcv_nxt:
            ev.append("ack.covers_peer_data")
        if s.snd_fin and s.rcv_fin:
            ev.append("ctx.fin_exchange_before")
            sub = "after_close"
        else:
            # SO_LINGER 0, ss -K, a keepalive timeout and close() with unread data send the
            # same RST (§0 rule 6): no subcause; unanswered peer data is noted as a hint.
            sub = None
            if s.unanswered_peer_data and s.ack_at_rcv_nxt:
                ev.append("ctx.unanswered_peer_data")
        conf = 0.85 if (not reactive and ttl_ok) else 0.7
        return Verdict("abort", sub, conf, tuple(ev), acc, ended)

    # ---- 3. not enough evidence (§0 rule 8)
    if s.snd_pkts == 0 and s.no_trigger:
        ev.append("ctx.no_prior_packets")
        return Verdict("unknown", "unsolicited", 0.3, tuple(ev), acc, ended)
    if not s.start_seen:
        ev.append("ctx.midstream")
    if s.no_trigger:
        ev.append("ctx.no_trigger_seen")
    if reactive:
        ev.append("form.reactive")
    return Verdict("unknown", "no_match", 0.2, tuple(ev), acc, ended)
