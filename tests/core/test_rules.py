"""The rule table (`rules.RULES`): every rule cites the research notes, every evidence code is
explained and emitted, and the table-driven `decide` gives exactly the verdicts of the
if-cascade it replaced (kept below as `old_decide`, the reference)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import SHARED
from hypothesis import given, settings
from hypothesis import strategies as st

from rstlens.attribution.evidence import EVIDENCE
from rstlens.attribution.rules import RULES, SHARED_EVIDENCE, Verdict, decide
from rstlens.attribution.signals import ACC_NAMES, Signals
from rstlens.flows import layout as L
from rstlens.parsers._batch import ACK, SYN

NOTES = SHARED / "RST_SIGNALS.md"

# every field's domain; the others are booleans
DOMAINS: dict[str, list[int]] = {
    "acc": list(range(len(ACC_NAMES))),
    "ttl_anomaly": [0, 1, 2],
    "trig_syn_ack": [0, ACK, SYN, SYN | ACK],
    "snd_state": list(range(L.INACTIVE, L.RESET + 1)),
    "rcv_state": list(range(L.INACTIVE, L.RESET + 1)),
    "snd_pkts": [0, 1, 2],
    "old_match": [0, 1, 2],
    "speaker": [0, 1, 2],
    "relayed": [0, 1, 2, 3],
    "gave_up": [0, 1, 2],
}
DOMAIN = [DOMAINS.get(name, [0, 1]) for name in Signals._fields]
TTL_ANOMALIES = (None, "inj.ttl_flow", "inj.ttl_host")  # old_decide's names of ttl_anomaly
signal_tuples = st.tuples(*(st.sampled_from(d) for d in DOMAIN)).map(Signals._make)


def _sections(notes: str) -> set[str]:
    """The citable sections of RST_SIGNALS.md: `§0`, `§2.1`, ..., `§0 rule 1`-`§0 rule N`
    (the numbered rules of section 0), `Appendix`."""
    found: set[str] = set()
    for title in re.findall(r"^#{2,3} (.+)$", notes, re.M):
        number = re.match(r"(\d+(?:\.\d+)?)[. ]", title)
        if number:
            found.add("§" + number.group(1))
        elif title.startswith("Appendix"):
            found.add("Appendix")
    rules_part = notes.split("## 0.", 1)[1].split("\n## ", 1)[0]
    found |= {f"§0 rule {n}" for n in re.findall(r"^(\d+)\. ", rules_part, re.M)}
    return found


def test_every_rule_cites_sections_of_the_notes() -> None:
    if not NOTES.exists():
        pytest.skip(f"{NOTES} is not here")
    sections = _sections(NOTES.read_text())
    assert {"§0 rule 1", "§0 rule 10", "§2.4", "Appendix"} <= sections  # the parse works
    for rule in RULES:
        assert rule.cites, rule.name
        assert set(rule.cites) <= sections, (rule.name, set(rule.cites) - sections)


def test_rule_names_are_unique_and_the_last_rule_always_applies() -> None:
    assert len({r.name for r in RULES}) == len(RULES)
    assert RULES[-1].applies(Signals._make([d[0] for d in DOMAIN]))


def test_evidence_codes_are_explained_and_each_one_is_emitted() -> None:
    emitted = {e.code for rule in RULES for e in rule.evidence}
    assert emitted <= set(EVIDENCE)
    assert set(SHARED_EVIDENCE) <= set(EVIDENCE)
    assert {"acc." + a for a in ACC_NAMES if a != "unknown"} <= set(SHARED_EVIDENCE)
    from rstlens.attribution.evidence import PIPELINE_EVIDENCE
    from rstlens.attribution.rules import DEVICE_EVIDENCE

    assert set(EVIDENCE) == (emitted | set(SHARED_EVIDENCE) | set(PIPELINE_EVIDENCE)
                             | set(DEVICE_EVIDENCE))


@settings(deadline=None, max_examples=3000)
@given(signal_tuples)
def test_decide_is_the_old_cascade(s: Signals) -> None:
    assert decide(s) == old_decide(s)


def test_decide_is_the_old_cascade_on_a_random_sweep() -> None:
    """200,000 tuples drawn uniformly from the whole domain; every rule is reached."""
    rng = np.random.default_rng(16)
    columns = [np.asarray(d)[rng.integers(0, len(d), 200_000)] for d in DOMAIN]
    reached: set[tuple[str, str | None]] = set()
    for row in zip(*(c.tolist() for c in columns), strict=True):
        s = Signals._make(row)
        v = decide(s)
        assert v == old_decide(s), s
        # no code twice (the abort rule once repeated the shared acc.exact)
        assert len(set(v.evidence)) == len(v.evidence), (s, v.evidence)
        reached.add((v.cause, v.subcause))
    assert reached == {(r.cause, r.subcause) for r in RULES}


def old_decide(s: Signals) -> Verdict:
    """`_old_cascade` with issue 17 item 8's speakers of an address: after the injection
    verdicts, a front end's idle reset and a proxy's relayed upstream RST; any other verdict
    of a front end's or a proven relay's RST, or of one stack answering for several
    addresses, names the middlebox as its sender."""
    v = _old_cascade(s)
    if v.cause == "middlebox" or v.subcause in ("corrupt", "evasion"):
        return v
    shared = tuple(c for c in v.evidence if c.startswith(("acc.", "payload.", "ts.")))
    if s.speaker == 1 and s.idle_gap:
        return Verdict("middlebox", "idle", 0.7, (*shared, "who.front_end", "ctx.idle_gap"),
                       v.acceptability, v.ended_connection, "middlebox")
    if s.relayed in (1, 2):
        cause, why = ("closed_port", "ctx.upstream_refused") if s.relayed == 1 else (
            "abort", "ctx.upstream_reset")
        return Verdict(cause, None, 0.7, (*shared, "who.relay", why), v.acceptability,
                       v.ended_connection, "middlebox")
    if s.speaker == 1:
        return v._replace(sender="middlebox", evidence=(*v.evidence, "who.front_end"))
    if s.relayed == 3:
        return v._replace(sender="middlebox", evidence=(*v.evidence, "who.relay_host"))
    if s.one_counter:
        return v._replace(sender="middlebox", evidence=(*v.evidence, "who.one_counter"))
    return v


def _old_cascade(s: Signals) -> Verdict:
    """`rules.decide` written as an if-cascade: the reference the table is held to (the
    cascade it replaced, with issue 17's changes: the reject form tied to its trigger,
    FIN/NULL/Xmas probe replies, secondary no-state RSTs, TCP-AO, the sender, the timestamp
    echo)."""
    acc = ACC_NAMES[s.acc]
    ev: list[str] = ["acc." + acc] if acc != "unknown" else []
    if acc == "in_window" and s.challenge_seen:
        ev.append("acc.challenge_ack_seen")
    ended: bool | None
    if s.rcv_continued or s.corrupt:  # a receiver drops a segment with a wrong checksum
        ended = False
    else:
        ended = True if acc == "exact" else False if acc == "out_of_window" else None
    if s.payload:
        ev.append("payload.present")
    if s.payload_text:
        ev.append("payload.text")
    if s.ts_never_sent:  # noted on every verdict: the RST was crafted (issue 17 item 6)
        ev.append("ts.echo_never_sent")

    # ---- 0. a corrupt segment is evidence of nothing (issue 17)
    # ... and so is a "RST" with SYN set: no stack sends one (issue 17)
    if s.corrupt or s.syn_rst:
        codes = [c for c, on in (("capture.bad_checksum", s.corrupt),
                                 ("capture.impossible_flags", s.syn_rst)) if on]
        return Verdict("unknown", "corrupt", 0.9, (*ev, *codes), acc, ended, "unknown")

    reactive = bool(s.reactive)
    has_ack = bool(s.has_ack)
    answers_syn = (
        s.from_resp
        and s.rcv_state == L.SYN_SENT
        and s.snd_state == L.INACTIVE
        and has_ack
        and s.ack_at_rcv_nxt
    )
    answers_probe = (s.from_resp and s.snd_state == L.INACTIVE and s.snd_pkts == 0
                     and s.trig_syn_ack == 0 and has_ack and s.seq_zero and s.ack_at_rcv_nxt)

    # ---- 1. a middlebox? (§0 rules 3, 4, 7; §2.4)
    strong: list[str] = []
    medium: list[str] = []
    weak: list[str] = []
    # a reactive RST from SYN-SENT leaves the socket alive: carrying on there is no forgery
    continued = s.sender_continued and s.snd_state != L.SYN_SENT
    if continued:
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

    # an insertion RST: an authentication option, or (issue 17 item 6) a timestamp echo the
    # receiver never sent from a side that carries on, outside an injector's patterns
    injector = (s.burst_seq_change or s.burst_ack_change or s.burst_ttl_change or s.burst_later
                or s.both_directions or (not has_ack and s.window_nonzero))
    if ((s.md5 or s.ao) and s.sender_continued) or (s.ts_never_sent and continued
                                                     and not injector):
        codes = [c for c, on in (("evasion.md5", s.md5), ("evasion.ao", s.ao)) if on]
        return Verdict("unknown", "evasion", 0.5, (*ev, *codes, *strong), acc, ended, "claimed")

    # the sender's own kernel refusing a SYN-ACK to its raw SYN (a SYN scan): TTLs say nothing
    scan_reply = (reactive and s.seq_eq_trig_ack and s.trig_syn_ack == SYN | ACK
                  and s.snd_pkts <= 1)
    if strong or (medium and not scan_reply):
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
        # A stateful REJECT: one RST per trigger in RFC 9293's reset form for it
        single = not (s.burst_seq_change or s.burst_ack_change or s.burst_ttl_change
                      or s.burst_later or (not has_ack and s.window_nonzero))
        at_trigger = s.seq_eq_trig_ack and (not has_ack or s.ack_at_rcv_nxt)
        for_no_ack = (not s.no_trigger and not s.trig_syn_ack & ACK and has_ack
                      and s.ack_at_rcv_nxt and s.seq_zero)
        # one device's TTL and IP-ID counter behind RSTs claiming other hosts: named, not
        # counted (it is what let a host-level TTL count here)
        if s.shared_ipid and ttl_ev == "inj.ttl_host":
            medium.append("inj.shared_ipid")
        # ... at once, from the device's own stack (its TTL); a device's RST long after the
        # last segment it could answer is its idle timer's
        idle: tuple[str, ...] = ()
        if single and (at_trigger or for_no_ack) and ttl_ev and not s.idle_gap:
            sub = "reject"
            medium.append("inj.reject_form")
        elif s.idle_gap:
            sub, idle = "idle", ("ctx.idle_gap",)
        else:
            sub = "injected"
        return Verdict("middlebox", sub, conf, (*ev, *strong, *medium, *weak, *idle), acc,
                       ended, "middlebox")

    ttl_ok = bool(s.ttl_checkable)  # the sender's TTL could be checked and fit
    sender = "claimed" if ttl_ok else "unknown"

    # ---- 2a. closed port (§2.1), or a scanner's FIN/NULL/Xmas probe answered
    if answers_syn or answers_probe:
        if answers_syn:
            ev.append("ctx.answers_syn")
        if answers_probe:
            ev.append("ctx.answers_probe")
        if s.seq_zero and answers_syn:
            ev.append("seq.zero_acks_syn")
        if reactive:
            ev.append("form.reactive")
        conf = 0.95 if ttl_ok else 0.85
        return Verdict("closed_port", None, conf, tuple(ev), acc, ended, sender)

    # ---- 2b. no state at the sender: half-open (§2.2, §2.3d, Appendix)
    no_state_form = reactive or not has_ack
    at_trigger_ack = s.seq_eq_trig_ack and no_state_form
    secondary = (s.stale_seq and no_state_form
                 and (s.snd_fin or L.RESET in (s.snd_state, s.rcv_state)))
    # a RST+ACK in the reset form for a late segment, from a sender that had reset already
    tied_reply = has_ack and s.seq_eq_trig_ack and s.ack_at_rcv_nxt
    reply_after_reset = (s.snd_state == L.RESET and tied_reply and s.stale_seq
                         and not s.at_snd_nxt)
    if reply_after_reset and not (at_trigger_ack or secondary):
        ev.append("seq.eq_trigger_ack")
        if reactive:
            ev.append("form.reactive")
        ev.append("ctx.after_earlier_reset")
        return Verdict("half_open", "after_reset", 0.85 if reactive else 0.7, tuple(ev), acc,
                       ended, sender)
    if at_trigger_ack or secondary:
        ev.append("seq.eq_trigger_ack" if s.seq_eq_trig_ack else "seq.stale_peer_ack")
        if reactive:
            ev.append("form.reactive")
        if s.snd_fin:
            ev.append("ctx.sender_fin_before")
            sub = "data_after_close"
        elif at_trigger_ack and s.snd_state == L.SYN_SENT and s.trig_syn_ack == ACK:
            ev.append("ctx.peer_holds_old_connection")
            sub = "stale_reuse"
        elif at_trigger_ack and s.trig_syn_ack == SYN | ACK and s.snd_pkts <= 1:
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
        return Verdict("half_open", sub, conf, tuple(ev), acc, ended, sender)

    # ---- 2b'. the Windows/BSD form of data after close (§2.3d)
    if (has_ack and (s.at_snd_nxt or tied_reply) and s.snd_fin and not s.rcv_fin
            and s.peer_data_last and s.trig_data and s.trig_syn_ack == ACK):
        ev += ["seq.at_snd_nxt" if s.at_snd_nxt else "seq.eq_trigger_ack",
               *(["form.active"] if not reactive else []),
               "ctx.sender_fin_before", "ctx.peer_data_after_close"]
        return Verdict("half_open", "data_after_close", 0.7, tuple(ev), acc, ended, sender)

    # ---- 2c. active abort (§2.3); a stack that gave up on its unanswered keepalive probe
    # or retransmission (§2.3 (c)) unless both FINs came before
    abort_form = s.at_snd_nxt or (not reactive and has_ack and s.rcv_ack_exact)
    if s.gave_up and not (abort_form and s.snd_fin and s.rcv_fin):
        ev += ["seq.at_snd_nxt"] if s.at_snd_nxt else []
        ev.append("form.active")
        if s.gave_up == 1:
            ev.append("ctx.keepalive_unanswered")
            sub = "keepalive_timeout"
        else:
            if has_ack and s.ack_at_rcv_nxt:
                ev.append("ack.covers_peer_data")
            ev.append("ctx.retransmit_unanswered")
            sub = "retransmit_timeout"
        return Verdict("abort", sub, 0.85 if ttl_ok else 0.7, tuple(ev), acc, ended, sender)
    if abort_form:
        ev.append("seq.at_snd_nxt" if s.at_snd_nxt else "seq.at_peer_ack")
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
        return Verdict("abort", sub, conf, tuple(ev), acc, ended, sender)

    # ---- 2b. a socket that outlived its flow (issue 17)
    if s.old_match and s.snd_pkts == 0:
        ev.append("ctx.old_connection")
        ev.append("seq.at_old_isn" if s.old_match == 1 else "seq.at_old_snd_nxt")
        if not reactive:
            ev.append("form.active")
        return Verdict("abort", None, 0.7, tuple(ev), acc, ended, sender)

    # ---- 3. not enough evidence (§0 rule 8)
    if s.snd_pkts == 0 and s.no_trigger:
        ev.append("ctx.no_prior_packets")
        return Verdict("unknown", "unsolicited", 0.3, tuple(ev), acc, ended, sender)
    if not s.start_seen:
        ev.append("ctx.midstream")
    if s.no_trigger:
        ev.append("ctx.no_trigger_seen")
    if reactive:
        ev.append("form.reactive")
    return Verdict("unknown", "no_match", 0.2, tuple(ev), acc, ended, sender)
