"""RST attribution: a cause, a confidence and the evidence for every RST packet.

`classify()` is a pure function of one RST's facts (`RstFacts`): the packet itself, both
endpoints' state just before it, what each side did afterwards, other RSTs of the same
connection, and the claimed sender's TTL profile across the whole capture.  The rules
follow the project's RST signal notes (RST_SIGNALS.md, cited by section in `_evidence`):

1. Injection first, but only on evidence a real endpoint cannot produce: the claimed
   sender carrying on after its own RST, a SYN-ACK after a RST to the SYN, or TTL / burst
   anomalies (§0 rules 3, 4 and 7).  A lone weak hint never makes a middlebox verdict.
2. Otherwise the wire form and the context name the kernel path (§0 rule 2, §2.1-2.3):
   a RST+ACK acknowledging a SYN is a closed port, a reactive RST at the trigger's ack is
   a half-open connection, a RST at the sender's next sequence number is an abort.
3. What fits none of them is `unknown`, with the reason (§0 rule 8).
"""

from __future__ import annotations

from typing import NamedTuple

from rstlens import _layout as L
from rstlens.parsers._batch import ACK, OPT_MD5, SYN

BURST_WINDOW_US = 2_000_000
BOTH_WAYS_WINDOW_US = 1_000_000
IDLE_GAP_US = 60_000_000


class RstFacts(NamedTuple):
    """Everything `classify` looks at for one RST (see `_layout.R_*` for the raw columns).

    A named tuple, not a frozen dataclass: one is built per RST, and a 39-field frozen
    dataclass costs ~9 µs to construct against ~0.4 µs for a tuple (`RstFacts._make`)."""

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


def _ended(f: RstFacts, acc: str) -> bool | None:
    if f.after_rcv_nonrst > 0:
        return False
    if acc == "exact":
        return True
    if acc == "out_of_window":
        return False
    return None


def _reactive_form(f: RstFacts) -> bool:
    """Linux's no-socket path: IP ID 0 with DF, window 0, no options (§0 rule 2)."""
    if f.window != 0 or f.tcp_opts != 0:
        return False
    return f.ip_version == 6 or (f.ip_id == 0 and f.df)


def _ttl_evidence(f: RstFacts) -> str | None:
    if f.snd_pkts > 0 and not f.snd_ttl_min <= f.ttl <= f.snd_ttl_max:
        return "inj.ttl_flow"
    if f.host_ttls and f.ttl not in f.host_ttls:
        return "inj.ttl_host"
    return None


def classify(f: RstFacts) -> Verdict:
    """The verdict for one RST."""
    acc = acceptability(f)
    ev: list[str] = ["acc." + acc] if acc != "unknown" else []
    if acc == "in_window" and f.after_rcv_challenge:
        ev.append("acc.challenge_ack_seen")
    ended = _ended(f, acc)
    if f.payload_len > 0:
        ev.append("payload.present")

    reactive = _reactive_form(f)
    has_ack = bool(f.flags & ACK)
    answers_syn = (
        f.direction == "resp"
        and f.rcv_state == L.SYN_SENT
        and f.snd_state == L.INACTIVE
        and has_ack
        and f.ack_vs_rcv_nxt == 0
    )
    seq_eq_trigger = f.trig_flags >= 0 and bool(f.trig_flags & ACK) and f.seq == f.trig_ack
    at_snd_nxt = f.snd_seq_known and f.seq_vs_snd_nxt == 0

    # ---- 1. a middlebox? (§0 rules 3, 4, 7; §2.4)
    strong: list[str] = []
    medium: list[str] = []
    weak: list[str] = []
    if f.after_snd_adv > 0:
        strong.append("inj.sender_continued")
    if f.after_snd_synack and f.snd_state in (L.INACTIVE, L.SYN_ACK_SENT):
        strong.append("inj.synack_after_rst")
    ttl_ev = _ttl_evidence(f)
    if ttl_ev:
        medium.append(ttl_ev)
    # A burst says some RSTs of it are forged, not which: it counts against this RST only when
    # its TTL does not vouch for it (a genuine RST amid forged ones keeps the sender's TTL).
    ttl_vouches = ttl_ev is None and (f.snd_pkts > 0 or bool(f.host_ttls))
    if not ttl_vouches:
        if f.burst_seq_change:
            medium.append("inj.rst_seq_change")
        if f.burst_ack_change:
            medium.append("inj.rst_ack_change")
        if f.burst_ttl_change:
            medium.append("inj.rst_ttl_change")
    if not has_ack and f.window != 0:
        weak.append("inj.bare_rst_window")
    if f.both_directions and ttl_ev:
        weak.append("inj.both_directions")

    evasive = bool(f.tcp_opts & OPT_MD5) and f.after_snd_adv > 0
    if evasive:
        return Verdict("unknown", "evasion", 0.5, (*ev, "evasion.md5", *strong),
                       acc, ended)  # fmt: skip

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
        single = not (f.burst_seq_change or f.burst_ack_change or f.burst_ttl_change)
        if reactive and single:
            sub = "reject"
            medium.append("inj.reject_form")
        else:
            sub = "injected"
        return Verdict("middlebox", sub, conf, (*ev, *strong, *medium, *weak), acc, ended)

    ttl_ok = bool(f.host_ttls) or f.snd_pkts > 0  # the sender's TTL could be checked and fit

    # ---- 2a. closed port (§2.1)
    if answers_syn:
        ev.append("ctx.answers_syn")
        if f.seq == 0:
            ev.append("seq.zero_acks_syn")
        if reactive:
            ev.append("form.reactive")
        conf = 0.95 if ttl_ok else 0.85
        return Verdict("closed_port", None, conf, tuple(ev), acc, ended)

    # ---- 2b. no state at the sender: half-open (§2.2, §2.3d, Appendix)
    if seq_eq_trigger and (reactive or not has_ack):
        ev.append("seq.eq_trigger_ack")
        if reactive:
            ev.append("form.reactive")
        trig_synack = f.trig_flags & (SYN | ACK) == (SYN | ACK)
        if f.snd_fin:
            ev.append("ctx.sender_fin_before")
            sub = "data_after_close"
        elif f.snd_state == L.SYN_SENT and f.trig_flags & (SYN | ACK) == ACK:
            ev.append("ctx.peer_holds_old_connection")
            sub = "stale_reuse"
        elif trig_synack and f.snd_pkts <= 1:
            ev.append("ctx.unexpected_synack")
            sub = "unexpected_synack"
        elif f.snd_state == L.RESET or f.rcv_state == L.RESET:
            ev.append("ctx.after_earlier_reset")
            sub = "after_reset"
        else:
            sub = "lost_state"
            if f.trig_gap_us > IDLE_GAP_US:
                ev.append("ctx.idle_gap")
        conf = 0.85 if reactive else 0.7
        return Verdict("half_open", sub, conf, tuple(ev), acc, ended)

    # ---- 2c. active abort (§2.3)
    if at_snd_nxt or (
        not reactive and has_ack and f.rcv_ack_known and f.seq_vs_rcv_ack == 0
    ):
        ev.append("seq.at_snd_nxt" if at_snd_nxt else "acc.exact")
        if not reactive:
            ev.append("form.active")
        if has_ack and f.ack_vs_rcv_nxt == 0:
            ev.append("ack.covers_peer_data")
        if f.snd_fin and f.rcv_fin:
            ev.append("ctx.fin_exchange_before")
            sub = "after_close"
        else:
            # SO_LINGER 0, ss -K, a keepalive timeout and close() with unread data send the
            # same RST (§0 rule 6): no subcause; unanswered peer data is noted as a hint.
            sub = None
            if f.rcv_last_data_ts > f.snd_last_data_ts > 0 and f.ack_vs_rcv_nxt == 0:
                ev.append("ctx.unanswered_peer_data")
        conf = 0.85 if (not reactive and ttl_ok) else 0.7
        return Verdict("abort", sub, conf, tuple(ev), acc, ended)

    # ---- 3. not enough evidence (§0 rule 8)
    if f.snd_pkts == 0 and f.trig_flags < 0:
        ev.append("ctx.no_prior_packets")
        return Verdict("unknown", "unsolicited", 0.3, tuple(ev), acc, ended)
    if not f.start_seen:
        ev.append("ctx.midstream")
    if f.trig_flags < 0:
        ev.append("ctx.no_trigger_seen")
    if reactive:
        ev.append("form.reactive")
    return Verdict("unknown", "no_match", 0.2, tuple(ev), acc, ended)
