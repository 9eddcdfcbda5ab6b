"""Signals: the predicates of an RST's facts that the rules test, each a small integer.

`signals(facts)` computes them for one RST, `signal_arrays` for many at once with numpy, a
column per signal (`signal_columns`: as one matrix; the tests hold it equal to `signals`).  A capture's tens of thousands of RSTs have a few dozen
distinct signal tuples, so `attribute.verdicts_of` decides once per distinct tuple.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from rstlens.attribution.facts import RstFacts
from rstlens.attribution.hops import HOPS_UNKNOWN, hop_distance, hop_distances, same_hops_ttls
from rstlens.attribution.speakers import speaker, speaker_column
from rstlens.flows import layout as L
from rstlens.parsers._batch import ACK, FIN, OPT_AO, OPT_MD5, OPT_TIMESTAMP, RST, SYN

# an RST this soon after the segment it answers is a reply to it ("within about one RTT",
# §2.1-2.2; a second covers long paths and a busy host)
REPLY_WITHIN_US = 1_000_000
IDLE_GAP_US = 60_000_000  # an RST this long after the segment it answers: `ctx.idle_gap` (§2.2)

ACC_NAMES = ("exact", "in_window", "out_of_window", "unknown")
_EXACT, _IN_WINDOW, _OUT_OF_WINDOW, _UNKNOWN = range(4)
# Signals.ttl_anomaly: the TTL fits (or cannot be checked), differs from the sender's other
# packets in this connection (`inj.ttl_flow`), or from every TTL its host shows (`inj.ttl_host`)
TTL_FITS, TTL_FLOW_ANOMALY, TTL_HOST_ANOMALY = range(3)
# A secondary RST answers one late peer segment: its seq is an ack the peer sent, at most this
# far behind the sender's next sequence number (or the peer's window, if larger) (§2.3d)
STALE_SEQ_SPAN = 65_535
# Signals.gave_up: the RST follows the sender's own unanswered keepalive probe or
# retransmission, quiet for over REPLY_WITHIN_US (see `_gave_up`)
GAVE_UP_NO, GAVE_UP_KEEPALIVE, GAVE_UP_RETRANSMIT = range(3)
# Signals.snd_pkts counts the sender's packets up to this (the rules tell 0, 1 and more apart)
SND_PKTS_MANY = 2
# `ts.echo_never_sent`: a RST's TSecr this far (modulo 2**32) beyond the receiver's highest
# TSval, or before its first one on its SYN, echoes no TSval the receiver sent.  The slack
# covers what the capture may have missed or reordered (two taps, one per direction, with
# skewed clocks; a SYN retransmitted before the capture began): 2**24 ticks are ~4.7 hours
# of a 1 kHz timestamp clock (Linux, BSD), ~17 s of a 1 MHz one (RFC 7323 §5.4 allows 1 ms-1 s
# per tick); a forged random echo lands inside it 2**25 / 2**32 < 1% of the time.
TS_ECHO_SLACK = 1 << 24
_TS_HALF = 1 << 31
_TS_MASK = (1 << 32) - 1


def host_ttls_usable(host_known: Any, start_seen: Any, snd_pkts: Any, trig_flags: Any,
                     shared_ipid: Any) -> Any:
    """The claimed sender's TTLs on its other connections say something about this RST when
    this connection shows the sender (`snd_pkts`), was seen from its start (a SYN), or the
    RST answers an opening segment without ACK (a SYN, a scanner's probe) — or when the RST
    carries a device's fingerprint that other RSTs, claiming other hosts, share (one TTL,
    one IP-ID counter: `fingerprints.shared_ipid_counter`).  A capture that begins at a
    lone RST, or mid-connection with the sender silent, says nothing of where the
    connection's own packets come from, and one address at several hop distances is common
    in the field (anycast, NATs, load balancers): a lone host-level TTL difference there is
    no middlebox (issue 17; §0 rules 3 and 8).  Scalars or arrays."""
    opening = (trig_flags >= 0) & ((trig_flags & ACK) == 0)
    return host_known & (start_seen | (snd_pkts > 0) | opening | shared_ipid)


def _gave_up(reactive: Any, last_flags: Any, last_len: Any, seq_delta: Any, gap_us: Any,
             unanswered: Any, snd_seq_known: Any, seq_vs_snd_nxt: Any, rcv_ack_known: Any,
             seq_vs_rcv_ack: Any) -> Any:
    """A stack giving up (§2.3c; Windows and BSD send a RST then, Linux does not): the
    sender's last segment, nobody answering it and nothing more for over REPLY_WITHIN_US,
    was
    - a keepalive probe: no SYN/FIN/RST, 0 or 1 byte at SND.NXT - 1, so the RST's seq is the
      probe's + 1 (SND.NXT; one past what the capture saw the sender send when the capture
      or the flow began at the probes) -> GAVE_UP_KEEPALIVE;
    - a retransmission: data starting at what the receiver had acknowledged (SND.UNA) and
      ending behind SND.NXT, the RST at its end (BSD and Windows pull SND.NXT back to
      SND.UNA on a retransmission timeout) or at SND.NXT -> GAVE_UP_RETRANSMIT.
    An active RST (not the no-socket form).  Scalars or arrays."""
    reactive, unanswered = np.asarray(reactive, bool), np.asarray(unanswered, bool)
    snd_seq_known, rcv_ack_known = np.asarray(snd_seq_known, bool), np.asarray(rcv_ack_known, bool)
    plain = (last_flags >= 0) & ((last_flags & (SYN | FIN | RST)) == 0)
    quiet = plain & unanswered & (gap_us > REPLY_WITHIN_US) & ~reactive & snd_seq_known
    keepalive = (quiet & (last_len <= 1) & (seq_delta == 1)
                 & ((seq_vs_snd_nxt == 0) | (seq_vs_snd_nxt == 1)))
    behind = seq_vs_snd_nxt - seq_delta + last_len < 0  # the segment ended behind SND.NXT
    retransmit = (quiet & (last_len > 1) & behind & rcv_ack_known & (seq_vs_rcv_ack == seq_delta)
                  & ((seq_delta == last_len) | (seq_vs_snd_nxt == 0)))
    return np.where(keepalive, GAVE_UP_KEEPALIVE, np.where(retransmit, GAVE_UP_RETRANSMIT, GAVE_UP_NO))


def _flow_ttl_anomaly(ttl: int, lo: int, hi: int, reactive: bool) -> bool:
    """The RST's TTL does not fit the sender's TTL range [lo, hi] in this connection, by hop
    distance.  When the connection's TTLs are an application's own (hops unknown), only an
    RST from the socket (not the kernel's no-socket path, which uses the default) can be
    compared, by its raw TTL."""
    h, a, b = hop_distance(ttl), hop_distance(lo), hop_distance(hi)
    if a == HOPS_UNKNOWN or b == HOPS_UNKNOWN:
        return not reactive and not lo <= ttl <= hi
    if h == HOPS_UNKNOWN:
        return True
    return not min(a, b) <= h <= max(a, b)


def acceptability(f: RstFacts) -> str:
    """RFC 9293 §3.10.7.4 / RFC 5961 §3.2 from the receiver's reconstructed state."""
    if f.rcv_state == L.SYN_SENT and f.snd_state in (L.INACTIVE, L.SYN_ACK_SENT):
        # SYN-SENT: acceptable only when it acknowledges the SYN
        if f.flags & ACK and f.ack_vs_rcv_nxt == 0:
            return "exact"
        return "out_of_window"
    refs: list[int] = []
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


def ts_echo_never_sent(flags: Any, tcp_opts: Any, ecr: Any, n: Any, tsv_max: Any, first: Any) -> Any:
    """The RST echoes (RFC 7323 §4.3: TSecr = TS.Recent, the TSval of a segment it received)
    a TSval the receiver never sent: beyond its highest TSval, before its first when that was
    on its SYN (the connection's start of its clock), or any echo when the receiver's SYN
    had no timestamp option and none of its segments did (none negotiated).  Only a RST+ACK
    with the option and a non-zero TSecr is judged (TSecr means something only with ACK);
    nothing is said when the receiver showed no segment at all (one-way capture) or began
    before the capture without timestamps seen.  Works on numbers and on numpy columns."""
    echo = ((tcp_opts & OPT_TIMESTAMP) != 0) & ((flags & ACK) != 0) & (ecr != 0)
    low = first & _TS_MASK
    ahead = (ecr - tsv_max) & _TS_MASK  # modulo 2**32, as PAWS compares (RFC 7323 §5.3)
    behind = (low - ecr) & _TS_MASK
    span = (tsv_max - low) & _TS_MASK
    after_max = (ahead > TS_ECHO_SLACK) & (ahead < _TS_HALF)
    before_syn = (((first & L.TSV_ON_SYN) != 0) & (behind > TS_ECHO_SLACK) & (behind < _TS_HALF)
                  & (span < _TS_HALF))
    seen = n > 0
    never_negotiated = (n <= 0) & ((first & L.TSV_SYN_WITHOUT) != 0)
    return echo & ((seen & (after_max | before_syn)) | never_negotiated)


def _reactive_form(f: RstFacts) -> bool:
    """Linux's no-socket path: IP ID 0 with DF, window 0, no options (§0 rule 2)."""
    if f.window != 0 or f.tcp_opts != 0:
        return False
    return f.ip_version == 6 or (f.ip_id == 0 and f.df)


class Signals(NamedTuple):
    """What `decide` looks at: the predicates of one RST's facts, each a small integer.

    Thousands of RSTs share a few hundred distinct signal tuples, so `attribute` computes
    them column-wise (`signal_arrays`) and decides once per distinct tuple."""

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
    ttl_anomaly: int  # TTL_FITS, TTL_FLOW_ANOMALY or TTL_HOST_ANOMALY, by hop distance
    ttl_checkable: bool  # the sender's TTL is known from this flow or from its host
    burst_seq_change: bool
    burst_ack_change: bool
    burst_ttl_change: bool
    both_directions: bool
    burst_later: bool
    window_nonzero: bool
    md5: bool
    ao: bool  # the TCP-AO option (RFC 5925, kind 29)
    stale_seq: bool  # seq at or a little behind the sender's next sequence number (STALE_SEQ_SPAN)
    seq_zero: bool
    trig_syn_ack: int  # the trigger's SYN|ACK bits (both set when there was no trigger)
    no_trigger: bool
    snd_state: int
    rcv_state: int
    snd_fin: bool
    rcv_fin: bool
    snd_pkts: int  # 0, 1, or SND_PKTS_MANY for more
    idle_gap: bool  # the trigger came more than IDLE_GAP_US before
    unanswered_peer_data: bool  # the receiver's data is newer than the sender's
    peer_data_last: bool  # the receiver sent data, newer than any the sender sent
    trig_data: bool  # the segment it answers carried payload, at most REPLY_WITHIN_US before
    start_seen: bool
    corrupt: bool = False  # wrong checksum from a sender whose checksums are good elsewhere
    payload_text: bool = False  # the payload is printable text (a diagnostic)
    old_match: int = 0  # RstFacts.old_seq_match: 1 an ended connection's ISN, 2 its next seq
    speaker: int = 0  # speakers.speaker: two speakers for the sender's address, which sent it
    relayed: int = 0  # speakers.relayed: a proxy relaying its upstream's RST
    shared_ipid: bool = False  # RstFacts.shared_ipid: one device's TTL and IP-ID counter
    one_counter: bool = False  # RstFacts.one_counter: one stack answering for several addresses
    syn_rst: bool = False  # SYN and RST in one segment: no stack sends that (malformed)
    gave_up: int = GAVE_UP_NO  # after an unanswered keepalive probe or retransmission
    ts_never_sent: bool = False  # the TSecr echoes no TSval the receiver sent (`ts_echo_never_sent`)


def signals(f: RstFacts) -> Signals:
    """The signals of one RST (`signal_columns` computes the same for many)."""
    has_ack = bool(f.flags & ACK)
    reactive = _reactive_form(f)
    host_any = any(hop_distance(t) != HOPS_UNKNOWN for t in f.host_ttls)
    host_fits = host_any and bool(f.host_ttls & set(same_hops_ttls(f.ttl)))
    host_known = bool(host_ttls_usable(host_any, f.start_seen, f.snd_pkts, f.trig_flags,
                                       f.shared_ipid))
    if f.snd_pkts > 0 and _flow_ttl_anomaly(f.ttl, f.snd_ttl_min, f.snd_ttl_max, reactive):
        ttl_anomaly = TTL_FLOW_ANOMALY
    elif host_known and not host_fits:
        ttl_anomaly = TTL_HOST_ANOMALY
    else:
        ttl_anomaly = TTL_FITS
    return Signals(
        acc=ACC_NAMES.index(acceptability(f)),
        rcv_continued=f.after_rcv_nonrst > 0,
        challenge_seen=f.after_rcv_challenge,
        payload=f.payload_len > 0,
        reactive=reactive,
        has_ack=has_ack,
        from_resp=f.direction == "resp",
        ack_at_rcv_nxt=f.ack_vs_rcv_nxt == 0,
        seq_eq_trig_ack=f.trig_flags >= 0 and bool(f.trig_flags & ACK) and f.seq == f.trig_ack,
        at_snd_nxt=f.snd_seq_known and f.seq_vs_snd_nxt == 0,
        rcv_ack_exact=f.rcv_ack_known and f.seq_vs_rcv_ack == 0,
        sender_continued=f.after_snd_adv > 0,
        synack_after=f.after_snd_synack,
        ttl_anomaly=ttl_anomaly,
        # a host TTL at this hop distance vouches for the sender wherever it was seen; one
        # that differs counts only where `host_ttls_usable`
        ttl_checkable=f.snd_pkts > 0 or host_known or host_fits,
        burst_seq_change=f.burst_seq_change,
        burst_ack_change=f.burst_ack_change,
        burst_ttl_change=f.burst_ttl_change,
        both_directions=f.both_directions,
        burst_later=f.burst_later,
        window_nonzero=f.window != 0,
        md5=bool(f.tcp_opts & OPT_MD5),
        ao=bool(f.tcp_opts & OPT_AO),
        stale_seq=f.snd_seq_known and -max(f.rcv_window, STALE_SEQ_SPAN) <= f.seq_vs_snd_nxt <= 0,
        seq_zero=f.seq == 0,
        trig_syn_ack=f.trig_flags & (SYN | ACK),
        no_trigger=f.trig_flags < 0,
        snd_state=f.snd_state,
        rcv_state=f.rcv_state,
        snd_fin=f.snd_fin,
        rcv_fin=f.rcv_fin,
        snd_pkts=min(f.snd_pkts, SND_PKTS_MANY),
        idle_gap=f.trig_gap_us > IDLE_GAP_US,
        unanswered_peer_data=f.rcv_last_data_ts > f.snd_last_data_ts > 0,
        peer_data_last=f.rcv_last_data_ts > max(f.snd_last_data_ts, 0),
        trig_data=f.trig_data and f.trig_gap_us <= REPLY_WITHIN_US,
        start_seen=f.start_seen,
        corrupt=f.checksum_bad,
        payload_text=f.payload_text,
        old_match=f.old_seq_match,
        speaker=speaker(f.ttl, f.snd_hs_ttl, f.snd_data_ttl_min, f.snd_data_ttl_max, reactive),
        relayed=f.relayed,
        shared_ipid=f.shared_ipid,
        one_counter=f.one_counter,
        syn_rst=bool(f.flags & SYN) and bool(f.flags & RST),
        gave_up=int(_gave_up(reactive, f.snd_last_flags, f.snd_last_len, f.snd_last_seq_delta,
                             f.snd_last_gap_us, f.trig_flags < 0 or f.trig_gap_us > f.snd_last_gap_us,
                             f.snd_seq_known, f.seq_vs_snd_nxt, f.rcv_ack_known,
                             f.seq_vs_rcv_ack)),
        ts_never_sent=bool(ts_echo_never_sent(f.flags, f.tcp_opts, f.ts_ecr, f.rcv_tsv_n,
                                              f.rcv_tsv_max, f.rcv_tsv_first)),
    )


def signal_columns(c: Mapping[str, np.ndarray]) -> np.ndarray:
    """`signals` for many RSTs at once: one row per RST, one int64 column per `Signals` field
    (`signal_arrays` as a matrix)."""
    out: np.ndarray = np.stack(signal_arrays(c), axis=1).astype(np.int64, copy=False)
    return out


def signal_arrays(c: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """`signals` for many RSTs at once: per `Signals` field, in order, its column (one value
    per RST, bool or integer).

    `c` holds the columns of `facts.FACT_COLUMNS` (`columns_from_log`, `columns_from_facts`):
    one per `RstFacts` field, except that `ack_vs_rcv_nxt` is an int array with
    `ack_vs_rcv_nxt_known` beside it (None in `RstFacts`), `direction` is replaced by
    `from_resp`, and `host_ttls` by `host_ttls_known` (the host has a TTL profile) and
    `hops_in_host_ttls` (a TTL at the RST's hop distance is in it)."""
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
    lo, hi = c["snd_ttl_min"], c["snd_ttl_max"]
    h, a, b = hop_distances(ttl), hop_distances(lo), hop_distances(hi)
    range_unknown = (a == HOPS_UNKNOWN) | (b == HOPS_UNKNOWN)
    outside = np.where(
        range_unknown,
        ~reactive & ((ttl < lo) | (ttl > hi)),
        (h == HOPS_UNKNOWN) | (h < np.minimum(a, b)) | (h > np.maximum(a, b)),
    )
    flow_anomaly = (snd_pkts > 0) & outside
    host_known = host_ttls_usable(c["host_ttls_known"], c["start_seen"], snd_pkts, trig,
                                  c["shared_ipid"])
    host_fits = c["host_ttls_known"] & c["hops_in_host_ttls"]
    host_anomaly = host_known & ~c["hops_in_host_ttls"]
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
        "ttl_anomaly": np.where(
            flow_anomaly, TTL_FLOW_ANOMALY, np.where(host_anomaly, TTL_HOST_ANOMALY, TTL_FITS)
        ),
        "ttl_checkable": (snd_pkts > 0) | host_known | host_fits,
        "burst_seq_change": c["burst_seq_change"],
        "burst_ack_change": c["burst_ack_change"],
        "burst_ttl_change": c["burst_ttl_change"],
        "both_directions": c["both_directions"],
        "burst_later": c["burst_later"],
        "window_nonzero": c["window"] != 0,
        "md5": (c["tcp_opts"] & OPT_MD5) != 0,
        "ao": (c["tcp_opts"] & OPT_AO) != 0,
        "stale_seq": snd_seq_known & (c["seq_vs_snd_nxt"] <= 0)
        & (c["seq_vs_snd_nxt"] >= -np.maximum(c["rcv_window"], STALE_SEQ_SPAN)),
        "seq_zero": c["seq"] == 0,
        "trig_syn_ack": trig & (SYN | ACK),
        "no_trigger": trig < 0,
        "snd_state": snd_st,
        "rcv_state": rcv_st,
        "snd_fin": c["snd_fin"],
        "rcv_fin": c["rcv_fin"],
        "snd_pkts": np.minimum(snd_pkts, SND_PKTS_MANY),
        "idle_gap": c["trig_gap_us"] > IDLE_GAP_US,
        "unanswered_peer_data": (c["rcv_last_data_ts"] > c["snd_last_data_ts"])
        & (c["snd_last_data_ts"] > 0),
        "peer_data_last": c["rcv_last_data_ts"] > np.maximum(c["snd_last_data_ts"], 0),
        "trig_data": c["trig_data"] & (c["trig_gap_us"] <= REPLY_WITHIN_US),
        "start_seen": c["start_seen"],
        "corrupt": c["checksum_bad"],
        "payload_text": c["payload_text"],
        "old_match": c["old_seq_match"],
        "speaker": speaker_column(ttl, c["snd_hs_ttl"], c["snd_data_ttl_min"],
                                  c["snd_data_ttl_max"], reactive),
        "relayed": c["relayed"],
        "shared_ipid": c["shared_ipid"],
        "one_counter": c["one_counter"],
        "syn_rst": ((flags & SYN) != 0) & ((flags & RST) != 0),
        "gave_up": _gave_up(reactive, c["snd_last_flags"], c["snd_last_len"],
                            c["snd_last_seq_delta"], c["snd_last_gap_us"],
                            (trig < 0) | (c["trig_gap_us"] > c["snd_last_gap_us"]),
                            snd_seq_known, c["seq_vs_snd_nxt"], rcv_ack_known,
                            c["seq_vs_rcv_ack"]),
        "ts_never_sent": ts_echo_never_sent(flags, c["tcp_opts"], c["ts_ecr"], c["rcv_tsv_n"],
                                            c["rcv_tsv_max"], c["rcv_tsv_first"]),
    }
    n = flags.shape[0]
    return [np.broadcast_to(cols[name], (n,)) for name in Signals._fields]
