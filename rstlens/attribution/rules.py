"""The verdict rules, as a table: for every RST a cause, a confidence and the evidence.

`classify(facts)` is `decide(signals(facts))`.  `decide` first works out what every verdict
carries (the acceptability evidence `acc.*`, `payload.present`, whether the RST ended the
connection), then walks `RULES` in order; the first rule whose predicate holds gives the
cause, subcause and confidence, and adds its evidence codes, each under its own condition,
in the order listed.  The order follows the project's RST signal notes (RST_SIGNALS.md,
cited by section in each rule):

1. Injection first, but only on evidence a real endpoint cannot produce: the claimed
   sender carrying on after its own RST, a SYN-ACK after a RST to the SYN, or TTL / burst
   anomalies (§0 rules 3, 4 and 7).  A lone weak hint never makes a middlebox verdict.
2. Otherwise the wire form and the context name the kernel path (§0 rule 2, §2.1-2.3):
   a RST+ACK acknowledging a SYN is a closed port, a reactive RST at the trigger's ack is
   a half-open connection, a RST at the sender's next sequence number is an abort.
3. What fits none of them is `unknown`, with the reason (§0 rule 8).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from rstlens.attribution.ended import OLD_ISN, OLD_SND_NXT
from rstlens.attribution.facts import RstFacts
from rstlens.attribution.signals import (
    ACC_NAMES,
    GAVE_UP_KEEPALIVE,
    GAVE_UP_RETRANSMIT,
    TTL_FITS,
    TTL_FLOW_ANOMALY,
    TTL_HOST_ANOMALY,
    Signals,
    signals,
)
from rstlens.attribution.speakers import FRONT_END, RELAY_HOST, RELAY_REFUSED, RELAY_RESET
from rstlens.flows import layout as L
from rstlens.parsers._batch import ACK, SYN


class Verdict(NamedTuple):
    cause: str
    subcause: str | None
    confidence: float
    evidence: tuple[str, ...]
    acceptability: str
    ended_connection: bool | None
    # who sent it (SENDERS): the endpoint it claims to come from, a middlebox, or unknown.
    # Beside the cause (why): a NAT answering for a refused upstream is a middlebox sending
    # for a closed-port reason.
    sender: str = "unknown"


SENDERS = ("claimed", "middlebox", "unknown")


Predicate = Callable[[Signals], bool]


def always(s: Signals) -> bool:
    """The condition of evidence every verdict of its rule carries."""
    return True


class Ev(NamedTuple):
    """An evidence code a rule adds, when its condition holds."""

    code: str
    when: Predicate = always


class Rule(NamedTuple):
    """One row of `RULES`: when it `applies`, the verdict is (cause, subcause, confidence)
    with the rule's `evidence` codes whose conditions hold, in their order."""

    name: str
    cause: str
    subcause: str | None
    applies: Predicate
    evidence: tuple[Ev, ...]
    confidence: float | Callable[[Signals], float]  # a constant, or one that depends on `s`
    cites: tuple[str, ...]  # RST_SIGNALS.md sections
    sender: Callable[[Signals], str] | None = None  # None: `sender_by_ttl`


# Evidence every verdict may carry, added by `decide` before the rule's own (§0 rule 1):
# what the receiver does with the RST, its payload (§0 rule 10), and a timestamp echo the
# receiver never sent (§0 rule 3: the RST was crafted, by a middlebox or by a tool at the
# claimed sender; never counted as injection evidence: forged RSTs with wrong timestamps are
# common, §2.4, net4people#442, and it says nothing of who crafted it; only `evasion` reads it).
SHARED_EVIDENCE = ("acc.exact", "acc.in_window", "acc.out_of_window", "acc.challenge_ack_seen",
                   "payload.present", "payload.text", "ts.echo_never_sent")  # fmt: skip

# ---- confidences
EVASION = 0.5
MIDDLEBOX_STRONG_AND_MEDIUM = 0.95
MIDDLEBOX_STRONG = 0.85
MIDDLEBOX_TWO_MEDIUM = 0.8
MIDDLEBOX_MEDIUM_AND_WEAK = 0.7
MIDDLEBOX_ONE_MEDIUM = 0.6  # one IP-layer anomaly: routing changes can do this too (§2.4)
CLOSED_PORT_TTL_CHECKED = 0.95
CLOSED_PORT = 0.85
HALF_OPEN_REACTIVE = 0.85
HALF_OPEN = 0.7
ABORT_ACTIVE_TTL_CHECKED = 0.85
ABORT = 0.7
UNSOLICITED = 0.3
NO_MATCH = 0.2
CORRUPT = 0.9  # a wrong checksum from a sender whose other checksums verify
# who, from the speakers of an address (issue 17 item 8): one TTL fact (a front end) or a
# timing link between two connections (a relay), each medium evidence
FRONT_END_IDLE = 0.7
RELAYED = 0.7


def higher_when(condition: Predicate, high: float, low: float) -> Callable[[Signals], float]:
    """A confidence of `high` when `condition` holds, else `low`."""
    return lambda s: high if condition(s) else low


# ---- predicates the rules share


def reactive(s: Signals) -> bool:
    """Linux's no-socket form (§0 rule 2)."""
    return bool(s.reactive)


def bare(s: Signals) -> bool:
    """No ACK flag."""
    return not s.has_ack


def ttl_checked(s: Signals) -> bool:
    """The sender's TTL could be checked (from this flow or its host); past the middlebox
    rules, that means it fit."""
    return bool(s.ttl_checkable)


def ttl_anomaly(s: Signals) -> bool:
    return s.ttl_anomaly != TTL_FITS


def sender_by_ttl(s: Signals) -> str:
    """Past the middlebox rules the TTL fits the claimed sender where it can be checked: the
    claimed endpoint sent it; with nothing to compare the TTL with, who sent it is unknown."""
    fits = s.ttl_anomaly == TTL_FITS or answers_unknown_synack(s)  # the kernel's default TTL
    return "claimed" if s.ttl_checkable and fits else "unknown"


def burst(s: Signals) -> bool:
    """Several RSTs from one side of the connection, with changing seq, ack or TTL."""
    return bool(s.burst_seq_change or s.burst_ack_change or s.burst_ttl_change)


def burst_counts(s: Signals) -> bool:
    """A burst says some RSTs of it are forged, not which: it counts against this RST only
    when its TTL does not vouch for it (a genuine RST amid forged ones keeps the sender's
    TTL)."""
    return ttl_anomaly(s) or not s.ttl_checkable


# ---- injection evidence in three strengths (§0 rules 3, 4 and 7; §2.4)
def sender_continued(s: Signals) -> bool:
    """The claimed sender carried on after its RST.  Not evidence of forgery when it sent the
    RST from SYN-SENT: that reactive RST leaves the socket alive (it retries its SYN, §2.1
    confusions, Appendix stale reuse)."""
    return bool(s.sender_continued and s.snd_state != L.SYN_SENT)


STRONG = (
    Ev("inj.sender_continued", sender_continued),
    Ev("inj.synack_after_rst",
       lambda s: s.synack_after and s.snd_state in (L.INACTIVE, L.SYN_ACK_SENT)),
)  # fmt: skip
MEDIUM = (
    Ev("inj.ttl_flow", lambda s: s.ttl_anomaly == TTL_FLOW_ANOMALY),
    Ev("inj.ttl_host", lambda s: s.ttl_anomaly == TTL_HOST_ANOMALY),
    Ev("inj.rst_seq_change", lambda s: s.burst_seq_change and burst_counts(s)),
    Ev("inj.rst_ack_change", lambda s: s.burst_ack_change and burst_counts(s)),
    Ev("inj.rst_ttl_change", lambda s: s.burst_ttl_change and burst_counts(s)),
)
WEAK = (  # never enough on its own
    Ev("inj.bare_rst_window", lambda s: bare(s) and s.window_nonzero),
    Ev("inj.both_directions", lambda s: s.both_directions and ttl_anomaly(s)),
)


STRONG_OR_MEDIUM = STRONG + MEDIUM
# Not a count of its own: what lets `inj.ttl_host` count on a connection that shows nothing
# of the sender (`signals.host_ttls_usable`): RSTs claiming other hosts share this RST's TTL
# and IP-ID counter (`fingerprints`)
SHARED_IPID = Ev("inj.shared_ipid", lambda s: s.shared_ipid and s.ttl_anomaly == TTL_HOST_ANOMALY)


def _count(evidence: tuple[Ev, ...], s: Signals) -> int:
    return sum(1 for e in evidence if e.when(s))


def answers_unknown_synack(s: Signals) -> bool:
    """A reactive-form RST at the ack of a SYN-ACK that answers the sender's lone SYN: its own
    kernel refusing a SYN-ACK to a SYN it did not make (a SYN scanner's raw SYN, §2.1).  The
    raw SYN carried the scanner's TTL, the RST the kernel's default (§0 rule 3 does not apply
    across the two), so only strong evidence makes such a RST a middlebox's."""
    return bool(s.reactive and s.seq_eq_trig_ack and s.trig_syn_ack == SYN | ACK
                and s.snd_pkts <= 1)


def injection_seen(s: Signals) -> bool:
    """Strong or medium evidence of injection (only strong for `answers_unknown_synack`)."""
    # a loop rather than any(generator), which costs more: every verdict that is not a
    # middlebox's passes through this twice (the two middlebox rules)
    for e in STRONG if answers_unknown_synack(s) else STRONG_OR_MEDIUM:  # noqa: SIM110
        if e.when(s):
            return True
    return False


def injector_pattern(s: Signals) -> bool:
    """What injectors send and a tool at the claimed sender has no need to: bursts that
    change seq, ack or TTL, RSTs towards both ends, the GFW's type-1 form (§0 rule 4, §2.4)."""
    return bool(burst(s) or s.burst_later or s.both_directions or (bare(s) and s.window_nonzero))


def evasion(s: Signals) -> bool:
    """A client-side evasion tool's insertion RST, from a side that carries on: an
    authentication option (MD5, TCP-AO) a receiver without the key drops, or a timestamp
    echo the receiver never sent, outside an injector's patterns (§0 rule 9, §2.4
    confusions: INTANG, Geneva, zapret)."""
    if (s.md5 or s.ao) and s.sender_continued:
        return True
    return bool(s.ts_never_sent and sender_continued(s) and not injector_pattern(s))


def middlebox_confidence(s: Signals) -> float:
    strong, medium, weak = _count(STRONG, s), _count(MEDIUM, s), _count(WEAK, s)
    if strong and medium:
        return MIDDLEBOX_STRONG_AND_MEDIUM
    if strong:
        return MIDDLEBOX_STRONG
    if medium >= 2:
        return MIDDLEBOX_TWO_MEDIUM
    if weak:
        return MIDDLEBOX_MEDIUM_AND_WEAK
    return MIDDLEBOX_ONE_MEDIUM


def answers_syn(s: Signals) -> bool:
    """A RST+ACK from the responder acknowledging the originator's SYN, before any SYN-ACK."""
    return bool(
        s.from_resp
        and s.rcv_state == L.SYN_SENT
        and s.snd_state == L.INACTIVE
        and s.has_ack
        and s.ack_at_rcv_nxt
    )


def answers_probe(s: Signals) -> bool:
    """RFC 9293 §3.5.2's reply to a segment without ACK on no connection, <SEQ=0><ACK=its
    end><RST,ACK>, to a FIN, NULL or Xmas probe (no SYN either): a scanner's closed port."""
    return bool(
        s.from_resp
        and s.snd_state == L.INACTIVE
        and s.snd_pkts == 0
        and s.trig_syn_ack == 0
        and s.has_ack
        and s.seq_zero
        and s.ack_at_rcv_nxt
    )


def tied_to_trigger(s: Signals) -> bool:
    """One RST in RFC 9293 §3.5.2's reset form for the segment it answers: seq = its ack (and
    ack = its end, when the RST has an ACK), or seq 0 and ack = its end for a segment without
    ACK (a SYN).  What a stateful device's REJECT sends, one per trigger; an injector's
    bursts, seq guesses and the GFW's type-1 window (a bare RST with a window) are not it
    (§2.4, Appendix)."""
    if burst(s) or s.burst_later or (bare(s) and s.window_nonzero):
        return False
    if s.seq_eq_trig_ack and (not s.has_ack or s.ack_at_rcv_nxt):
        return True
    return bool(s.trig_syn_ack & ACK == 0 and s.has_ack and s.ack_at_rcv_nxt and s.seq_zero
                and not s.no_trigger)


def half_open_form(s: Signals) -> bool:
    """seq = the trigger's ack, from the no-socket path (§0 rule 2, §2.2)."""
    return bool(s.seq_eq_trig_ack and (s.reactive or not s.has_ack))


def secondary_form(s: Signals) -> bool:
    """A no-state RST answering one late peer segment after the sender's FIN or a reset:
    its seq is an ack the peer sent, at or a little behind the sender's next sequence number
    (often RCV.NXT - 1 or below, so out of window), from the no-socket path (§2.3d,
    Appendix secondary RSTs)."""
    return bool(s.stale_seq and (s.reactive or not s.has_ack)
                and (s.snd_fin or L.RESET in (s.snd_state, s.rcv_state)))


def no_state_form(s: Signals) -> bool:
    return half_open_form(s) or secondary_form(s)


def reply_to_trigger(s: Signals) -> bool:
    """A RST+ACK in RFC 9293 §3.5.2's reset form for the segment it answers: seq = its ack,
    ack = its end — whatever the window and IP ID (the Windows/BSD reply, or any stack's)."""
    return bool(s.has_ack and s.seq_eq_trig_ack and s.ack_at_rcv_nxt)


def reply_after_own_reset(s: Signals) -> bool:
    """The sender had already reset this connection, and this RST+ACK answers a late peer
    segment — one whose ack is behind what the sender had sent — in the reset form for it:
    a no-state reply, whatever its form (Appendix, secondary RSTs).  At the sender's own
    SND.NXT it is not told apart from an abort (the earlier "own" RST may have been a
    middlebox's, rst-inject-rae.pcap 2 and 7), so that stays the abort rules'."""
    return bool(s.snd_state == L.RESET and reply_to_trigger(s) and s.stale_seq
                and not s.at_snd_nxt)


def active_after_own_fin(s: Signals) -> bool:
    """The Windows/BSD form of data after close: RST+ACK at the sender's next sequence number
    (as this connection shows it, or as the peer's data segment acknowledges it) after its
    own FIN (the peer's FIN not seen), answering peer data newer than anything the sender
    sent (§2.3d; Linux sends the reactive form there instead)."""
    return bool(s.has_ack and (s.at_snd_nxt or reply_to_trigger(s)) and s.snd_fin
                and not s.rcv_fin and s.peer_data_last and s.trig_data and s.trig_syn_ack == ACK)


def abort_form(s: Signals) -> bool:
    """seq = the sender's next sequence number, or = what the receiver acked in an active RST."""
    return bool(s.at_snd_nxt or (not s.reactive and s.has_ack and s.rcv_ack_exact))


HALF_OPEN_EVIDENCE = (Ev("seq.eq_trigger_ack", lambda s: s.seq_eq_trig_ack),
                      Ev("seq.stale_peer_ack", lambda s: not s.seq_eq_trig_ack),
                      Ev("form.reactive", reactive))  # fmt: skip
ABORT_EVIDENCE = (
    Ev("seq.at_snd_nxt", lambda s: s.at_snd_nxt),
    Ev("seq.at_peer_ack", lambda s: not s.at_snd_nxt),
    Ev("form.active", lambda s: not s.reactive),
    Ev("ack.covers_peer_data", lambda s: s.has_ack and s.ack_at_rcv_nxt),
)
half_open_confidence = higher_when(reactive, HALF_OPEN_REACTIVE, HALF_OPEN)

# Evaluated in order; the first rule that applies gives the verdict.
RULES: tuple[Rule, ...] = (
    # A segment with a wrong checksum, from a sender whose checksums verify elsewhere, was
    # corrupted on the way or in the capture: no receiver accepts it, and it is evidence of
    # nothing (issue 17; RST_SIGNALS §0 rule 8: capture artefacts).
    # Likewise a "RST" that also carries SYN: no stack sends one (RFC 9293 §3.10.7 resets
    # carry RST with ACK at most; FIN or data beside it is seen, SYN never), so it is a
    # malformed or corrupted segment (a flags byte of 0xFF), not a RST to attribute —
    # whatever its checksum says, which often cannot be trusted where such segments occur.
    Rule("unknown.corrupt", "unknown", "corrupt",
         applies=lambda s: s.corrupt or s.syn_rst,
         evidence=(Ev("capture.bad_checksum", lambda s: s.corrupt),
                   Ev("capture.impossible_flags", lambda s: s.syn_rst)),
         confidence=CORRUPT, cites=("§0 rule 8",), sender=lambda s: "unknown"),
    # An insertion RST (MD5 or TCP-AO option, or a timestamp echo the receiver never sent)
    # from a side that carries on: an evasion tool at the claimed sender, not a middlebox.
    Rule("evasion", "unknown", "evasion",
         applies=evasion,
         evidence=(Ev("evasion.md5", lambda s: s.md5), Ev("evasion.ao", lambda s: s.ao), *STRONG),
         confidence=EVASION, cites=("§0 rule 9", "§2.4"), sender=lambda s: "claimed"),
    # A stateful firewall REJECT sends one RST per trigger, in RFC 9293's reset form for it,
    # at once and from its own stack (its TTL, not the claimed sender's); injectors send
    # bursts, guess seqs, carry their own window/IP-ID patterns or copy the sender's TTL and
    # IP ID (§2.4, Appendix).
    Rule("middlebox.reject", "middlebox", "reject",
         applies=lambda s: (tied_to_trigger(s) and ttl_anomaly(s) and not s.idle_gap
                            and injection_seen(s)),
         evidence=(*STRONG, *MEDIUM, SHARED_IPID, Ev("inj.reject_form"), *WEAK),
         confidence=middlebox_confidence, cites=("§0 rule 3", "§2.4", "Appendix"),
         sender=lambda s: "middlebox"),
    # A device's RST over a minute after the last segment it could answer: its own timer,
    # an idle timeout resetting the connection (§2.2 middlebox form: load balancers reset
    # both ends at the idle timeout, with no triggering packet).
    Rule("middlebox.idle_timeout", "middlebox", "idle",
         applies=lambda s: s.idle_gap and injection_seen(s),
         evidence=(*STRONG, *MEDIUM, SHARED_IPID, *WEAK, Ev("ctx.idle_gap")),
         confidence=middlebox_confidence, cites=("§2.2", "§0 rule 3", "§2.4"),
         sender=lambda s: "middlebox"),
    Rule("middlebox.injected", "middlebox", "injected",
         applies=injection_seen,
         evidence=(*STRONG, *MEDIUM, SHARED_IPID, *WEAK),
         confidence=middlebox_confidence, cites=("§0 rule 3", "§0 rule 4", "§0 rule 7", "§2.4"),
         sender=lambda s: "middlebox"),
    # Who speaks for the address (issue 17 item 8; `speakers`).  A front end that answered
    # the handshake while the server behind it sent the data resets the connection from its
    # own hop distance after a long idle: its idle timeout (§2.2 middlebox form).
    Rule("middlebox.idle", "middlebox", "idle",
         applies=lambda s: s.speaker == FRONT_END and s.idle_gap,
         evidence=(Ev("who.front_end"), Ev("ctx.idle_gap")),
         confidence=FRONT_END_IDLE, cites=("§2.2", "§0 rule 3", "§2.4"),
         sender=lambda s: "middlebox"),
    # A proxy resetting its client right after its upstream leg was refused or reset: the
    # middlebox sent it, for the upstream's reason (§2.1, §2.3; §2.4 confusions).
    Rule("relay.refused", "closed_port", None,
         applies=lambda s: s.relayed == RELAY_REFUSED,
         evidence=(Ev("who.relay"), Ev("ctx.upstream_refused")),
         confidence=RELAYED, cites=("§2.1", "§2.4"), sender=lambda s: "middlebox"),
    Rule("relay.reset", "abort", None,
         applies=lambda s: s.relayed == RELAY_RESET,
         evidence=(Ev("who.relay"), Ev("ctx.upstream_reset")),
         confidence=RELAYED, cites=("§2.3", "§2.4"), sender=lambda s: "middlebox"),
    Rule("closed_port", "closed_port", None,
         applies=lambda s: answers_syn(s) or answers_probe(s),
         evidence=(Ev("ctx.answers_syn", answers_syn), Ev("ctx.answers_probe", answers_probe),
                   Ev("seq.zero_acks_syn", lambda s: s.seq_zero and answers_syn(s)),
                   Ev("form.reactive", reactive)),
         confidence=higher_when(ttl_checked, CLOSED_PORT_TTL_CHECKED, CLOSED_PORT),
         cites=("§0 rule 2", "§2.1")),
    Rule("half_open.data_after_close", "half_open", "data_after_close",
         applies=lambda s: no_state_form(s) and s.snd_fin,
         evidence=(*HALF_OPEN_EVIDENCE, Ev("ctx.sender_fin_before")),
         confidence=half_open_confidence, cites=("§2.2", "§2.3")),
    Rule("half_open.stale_reuse", "half_open", "stale_reuse",
         applies=lambda s: half_open_form(s) and s.snd_state == L.SYN_SENT and s.trig_syn_ack == ACK,
         evidence=(*HALF_OPEN_EVIDENCE, Ev("ctx.peer_holds_old_connection")),
         confidence=half_open_confidence, cites=("Appendix",)),
    Rule("half_open.unexpected_synack", "half_open", "unexpected_synack",
         applies=lambda s: half_open_form(s) and s.trig_syn_ack == SYN | ACK and s.snd_pkts <= 1,
         evidence=(*HALF_OPEN_EVIDENCE, Ev("ctx.unexpected_synack")),
         confidence=half_open_confidence, cites=("§2.1",)),
    Rule("half_open.after_reset", "half_open", "after_reset",
         applies=lambda s: ((no_state_form(s) and L.RESET in (s.snd_state, s.rcv_state))
                            or reply_after_own_reset(s)),
         evidence=(*HALF_OPEN_EVIDENCE, Ev("ctx.after_earlier_reset")),
         confidence=half_open_confidence, cites=("Appendix",)),
    Rule("half_open.lost_state", "half_open", "lost_state",
         applies=half_open_form,
         evidence=(*HALF_OPEN_EVIDENCE, Ev("ctx.idle_gap", lambda s: s.idle_gap)),
         confidence=half_open_confidence, cites=("§2.2", "Appendix")),
    Rule("half_open.data_after_close_active", "half_open", "data_after_close",
         applies=active_after_own_fin,
         evidence=(Ev("seq.at_snd_nxt", lambda s: s.at_snd_nxt),
                   Ev("seq.eq_trigger_ack", lambda s: not s.at_snd_nxt),
                   Ev("form.active", lambda s: not s.reactive),
                   Ev("ctx.sender_fin_before"), Ev("ctx.peer_data_after_close")),
         confidence=HALF_OPEN, cites=("§2.3", "§2.2")),
    Rule("abort.after_close", "abort", "after_close",
         applies=lambda s: abort_form(s) and s.snd_fin and s.rcv_fin,
         evidence=(*ABORT_EVIDENCE, Ev("ctx.fin_exchange_before")),
         confidence=higher_when(lambda s: not s.reactive and s.ttl_checkable,
                                ABORT_ACTIVE_TTL_CHECKED, ABORT),
         cites=("§2.3", "§0 rule 9")),
    # The stack gave up: its own keepalive probe or retransmission went unanswered, then
    # (over a second later) the RST at SND.NXT, or at the end of the retransmitted segment
    # where a timeout pulled SND.NXT back to SND.UNA (Windows, BSD; Linux sends no RST there)
    # (§2.3 (c): context, not format, tells it apart, §0 rules 5 and 6).
    Rule("abort.keepalive_timeout", "abort", "keepalive_timeout",
         applies=lambda s: s.gave_up == GAVE_UP_KEEPALIVE,
         evidence=(Ev("seq.at_snd_nxt", lambda s: s.at_snd_nxt), Ev("form.active"),
                   Ev("ctx.keepalive_unanswered")),
         confidence=higher_when(ttl_checked, ABORT_ACTIVE_TTL_CHECKED, ABORT),
         cites=("§2.3", "§0 rule 5")),
    Rule("abort.retransmit_timeout", "abort", "retransmit_timeout",
         applies=lambda s: s.gave_up == GAVE_UP_RETRANSMIT,
         evidence=(Ev("seq.at_snd_nxt", lambda s: s.at_snd_nxt), Ev("form.active"),
                   Ev("ack.covers_peer_data", lambda s: s.has_ack and s.ack_at_rcv_nxt),
                   Ev("ctx.retransmit_unanswered")),
         confidence=higher_when(ttl_checked, ABORT_ACTIVE_TTL_CHECKED, ABORT),
         cites=("§2.3", "§0 rule 5")),
    # SO_LINGER 0, ss -K, a keepalive timeout and close() with unread data send the same RST
    # (§0 rule 6): no subcause; unanswered peer data is noted as a hint.
    Rule("abort", "abort", None,
         applies=abort_form,
         evidence=(*ABORT_EVIDENCE,
                   Ev("ctx.unanswered_peer_data", lambda s: s.unanswered_peer_data and s.ack_at_rcv_nxt)),
         confidence=higher_when(lambda s: not s.reactive and s.ttl_checkable,
                                ABORT_ACTIVE_TTL_CHECKED, ABORT),
         cites=("§2.3", "§0 rule 6")),
    # Nothing from the sender in this connection, but the seq is where an ended connection on
    # the same port pair left the sender: its socket outlived the flow (a CLOSE_WAIT socket
    # reset hours later, a SYN-SENT socket aborted after the flow expired) (issue 17).
    Rule("abort.old_connection", "abort", None,
         applies=lambda s: s.old_match > 0 and s.snd_pkts == 0,
         evidence=(Ev("ctx.old_connection"),
                   Ev("seq.at_old_isn", lambda s: s.old_match == OLD_ISN),
                   Ev("seq.at_old_snd_nxt", lambda s: s.old_match == OLD_SND_NXT),
                   Ev("form.active", lambda s: not s.reactive)),
         confidence=ABORT, cites=("§2.3", "§0 rule 8")),
    Rule("unknown.unsolicited", "unknown", "unsolicited",
         applies=lambda s: s.snd_pkts == 0 and s.no_trigger,
         evidence=(Ev("ctx.no_prior_packets"),),
         confidence=UNSOLICITED, cites=("§0 rule 8", "§0 rule 9")),
    Rule("unknown.no_match", "unknown", "no_match",
         applies=always,
         evidence=(Ev("ctx.midstream", lambda s: not s.start_seen),
                   Ev("ctx.no_trigger_seen", lambda s: s.no_trigger),
                   Ev("form.reactive", reactive)),
         confidence=NO_MATCH, cites=("§0 rule 8",)),
)  # fmt: skip


# evidence `decide` adds to a verdict of another rule when a device sent the RST
DEVICE_EVIDENCE = ("who.front_end", "who.relay_host", "who.one_counter")


def device_speaking(s: Signals) -> str | None:
    """The evidence code when a front end or a proven relay sent the RST for the address
    (`speakers`), or one stack answering for several addresses (`fingerprints`), else None."""
    if s.speaker == FRONT_END:
        return "who.front_end"
    if s.relayed == RELAY_HOST:
        return "who.relay_host"
    if s.one_counter:
        return "who.one_counter"
    return None


def classify(f: RstFacts) -> Verdict:
    """The verdict for one RST."""
    return decide(signals(f))


def decide(s: Signals) -> Verdict:
    """The verdict for an RST with signals `s`: the first of `RULES` that applies."""
    acc = ACC_NAMES[s.acc]
    shared: tuple[str, ...] = ("acc." + acc,) if acc != "unknown" else ()
    if acc == "in_window" and s.challenge_seen:
        shared += ("acc.challenge_ack_seen",)
    if s.payload:
        shared += ("payload.present",)
    if s.payload_text:
        shared += ("payload.text",)
    if s.ts_never_sent:
        shared += ("ts.echo_never_sent",)
    ended: bool | None
    if s.rcv_continued or s.corrupt:  # a receiver drops a segment with a wrong checksum
        ended = False
    else:
        ended = True if acc == "exact" else False if acc == "out_of_window" else None
    for rule in RULES:
        if rule.applies(s):
            codes = tuple([e.code for e in rule.evidence if e.when(s)])
            c = rule.confidence
            confidence = c if isinstance(c, float) else c(s)
            sender = (rule.sender or sender_by_ttl)(s)
            if rule.sender is None and (who := device_speaking(s)):
                # the cause from the RST's form, the sender the device (issue 17 item 8)
                sender, codes = "middlebox", (*codes, who)
            return Verdict(rule.cause, rule.subcause, confidence, shared + codes, acc, ended,
                           sender)
    raise AssertionError("the last rule applies to every RST")
