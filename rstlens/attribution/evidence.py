"""Evidence codes: each one short, stable, and tied to the signal it comes from.

`RST_SIGNALS.md` (the project's research notes, kept in ../shared) is cited by section;
the README lists the same table for users.
"""

from __future__ import annotations

EVIDENCE: dict[str, str] = {
    # --- the wire form: which kernel path sent it (RST_SIGNALS §0 rule 2, §1 table)
    "form.reactive": "IP ID 0 (IPv4), window 0, no TCP options: the no-socket/reactive kernel path (§0.2, §1)",
    "form.active": "RST at the sender's next sequence number with a normal window, IP ID or options: an active abort (§0.2, §2.3)",
    "seq.zero_acks_syn": "RST+ACK with seq 0 and ack = SYN + 1: reply to a SYN nobody listens for (§1 RFC 9293 §3.5.2, §2.1)",
    "seq.eq_trigger_ack": "seq equals the ack of the segment it answers: reply from a host with no state (§1, §2.2)",
    "seq.at_snd_nxt": "seq equals the sender's next sequence number in this connection (§2.3)",
    "seq.at_peer_ack": "seq equals the highest ack the peer sent (the sender's next sequence number as the peer saw it) (§2.3)",
    "seq.stale_peer_ack": "seq at or up to a window behind the sender's next sequence number, after its FIN or a reset: the ack of one late peer segment, answered by a host with no state (often RCV.NXT-1 or below, so out of window) (§2.3d, Appendix)",
    "ack.covers_peer_data": "the RST acknowledges everything the peer sent (§2.3a)",
    # --- context inside the connection
    "ctx.answers_syn": "the RST answers the originator's SYN and no SYN-ACK was seen (§2.1)",
    "ctx.answers_probe": "RST+ACK with seq 0 and ack = the end of a FIN, NULL or Xmas probe on no connection: a scanned closed port (§1 RFC 9293 §3.5.2, §0 rule 9)",
    "ctx.sender_fin_before": "the RST's sender had already sent its FIN: data arrived after it closed (§2.2, §2.3d)",
    "ctx.peer_data_after_close": "the peer's data, newer than anything the sender sent, arrived after the sender's FIN and drew this RST+ACK at its next sequence number: the Windows/BSD form of data after close (§2.3d)",
    "ctx.fin_exchange_before": "both sides had sent FIN: a benign RST after the close (§2.3e, §0 rule 9)",
    "ctx.unanswered_peer_data": "the peer's data arrived after the sender's last data and was not answered: a hint of close() with unread data, not proof (§2.3a, §0 rule 6)",
    "ctx.peer_holds_old_connection": "the RST answers an ACK to the sender's own SYN: the peer still holds an older connection on this port pair (§Appendix, stale reuse)",
    "ctx.idle_gap": "over a minute passed between the receiver's last segment (the one a reply would answer) and the RST: no segment drew it at once, the connection had been idle (§2.2)",
    "ctx.after_earlier_reset": "one side had already reset this connection: this RST answers traffic that arrived afterwards (§Appendix, secondary RST)",
    "ctx.unexpected_synack": "the RST answers a SYN-ACK to a SYN the sender's stack does not know (SYN scan, raw-socket SYN) (§2.1 confusions)",
    "ctx.old_connection": "the RST's sender sent nothing before in this connection, but an ended connection on the same port pair (expired or closed earlier in the capture) left it at this seq: its socket outlived the flow (issue 17; §2.3, §0 rule 8)",
    "seq.at_old_isn": "seq equals that ended connection's initial sequence number or ISN + 1 (a socket still in SYN-SENT or just past it)",
    "seq.at_old_snd_nxt": "seq equals the sender's next sequence number in that ended connection, as sent or as its peer acknowledged it",
    "ctx.midstream": "the capture began in the middle of this connection (§0 rule 8)",
    "ctx.no_prior_packets": "nothing from either side of this connection was seen before the RST: unsolicited or backscatter (§0 rule 9, §2.1)",
    "ctx.no_trigger_seen": "no segment from the peer was seen that this RST could answer (§0 rule 8)",
    # --- injection (§0 rules 3 and 4, §2.4)
    "inj.sender_continued": "the claimed sender kept sending (data, ACK or FIN at or beyond the RST's seq) after its own RST (§0 rule 3; Weaver et al. RST SEQ DATA)",
    "inj.synack_after_rst": "the claimed sender answered the SYN with a SYN-ACK after 'its' RST: the port was open (§2.1 confusions)",
    "inj.ttl_flow": "hop distance (nearest initial TTL 32/64/128/255 minus the TTL) differs from the claimed sender's other packets in this connection (§0 rule 3)",
    "inj.ttl_host": "hop distance differs from every hop distance the claimed sender's host shows elsewhere in the capture (§0 rule 3)",
    "inj.shared_ipid": "other RSTs, claiming other hosts, carry the same TTL and the next IP IDs of one counter within 10 s: one device speaking for several hosts; it lets inj.ttl_host count on a connection that shows nothing of the sender's own path (§0 rule 3, §2.4)",
    "inj.rst_seq_change": "several RSTs from the same side with different seq values within 2 s (§0 rule 4; RST SEQ CHANGE)",
    "inj.rst_ack_change": "several RSTs from the same side with different ack values within 2 s (§0 rule 4; RST ACK CHANGE)",
    "inj.rst_ttl_change": "several RSTs from the same side with different TTLs within 2 s (§0 rule 4; INTANG type-2)",
    "inj.both_directions": "RSTs toward both ends within 1 s, from neither side's usual TTL (§2.4 Clayton et al.)",
    "inj.bare_rst_window": "a bare RST (no ACK) with a non-zero window: GFW type-1 fingerprint (§2.4 INTANG)",
    "inj.reject_form": "one RST in RFC 9293's reset form for the segment it answers (seq = its ack; or seq 0, ack = its end), at once (within a minute of it) and at a hop distance that is not the claimed sender's: a stateful firewall's REJECT (§Appendix)",
    "evasion.md5": "RST with the TCP-MD5 option from a side that then carries on: a client-side evasion tool's insertion RST (§0 rule 9, §2.4 confusions)",
    "evasion.ao": "RST with the TCP-AO option (RFC 5925, kind 29) from a side that then carries on: an insertion RST a receiver without the key drops (§0 rule 9, §2.4 confusions)",
    "ts.echo_never_sent": "the RST+ACK's timestamp echo (TSecr) is no TSval the receiver sent: beyond its highest (by more than 2**24 ticks), before its first on its SYN, or any echo when it negotiated no timestamps; a stack echoes the TSval it last took (RFC 7323 §4.3), so the RST was crafted. Makes an insertion RST from a side that carries on `unknown.evasion` (outside an injector's bursts); on every other verdict it is noted, never counted as injection evidence (§0 rule 3, §0 rule 9, §2.4)",
    "payload.present": "the RST carries payload, e.g. a diagnostic or a censor's marker (§0 rule 10)",
    "payload.text": "the RST's payload is printable text (resets.payload_text): a diagnostic from a load balancer, proxy or stack, which Linux's own RSTs never carry (§0 rule 10; RFC 1122 §4.2.2.12)",
    # --- capture artefacts (issue 17; §0 rule 8)
    "capture.bad_checksum": "the RST's IPv4 header or TCP checksum is wrong while its sender's other checksums verify: a corrupted segment, which no receiver accepts, so it is evidence of nothing (§0 rule 8)",
    "ctx.keepalive_unanswered": "the sender's last segment, over a second before the RST, was a keepalive probe (0 or 1 byte at SND.NXT - 1, RFC 1122 §4.2.3.6) that nobody answered, and the RST follows at the probe's seq + 1: the stack gave up on keepalives (Windows and BSD send this RST, Linux does not) (§2.3 (c))",
    "ctx.retransmit_unanswered": "the sender's last segment, over a second before the RST, retransmitted data from what the receiver had acknowledged and nobody answered; the RST sits at that segment's end (a retransmission timeout pulled SND.NXT back to SND.UNA, BSD/Windows) or at SND.NXT: the stack gave up retransmitting (§2.3)",
    "capture.impossible_flags": "the segment carries SYN and RST together, which no stack sends: a malformed or corrupted segment (e.g. a flags byte of 0xFF), evidence of nothing (§0 rule 8)",
    "capture.duplicate": "this row is a capture copy (same IP ID, seq, ack, flags, length, microseconds apart) of the RST in frame duplicate_of and carries that RST's verdict (§0 rule 8)",
    # --- who speaks for the address (issue 17 item 8; attribution.speakers)
    "who.front_end": "the sender's SYN-ACK (or SYN) came from one hop distance and all its data from another at least 3 hops away, and the RST from the handshake's: a front end (SYN proxy, accelerator, load balancer) answering for the server behind it sent it (§0 rule 3, §2.2 middlebox form, §2.4 confusions)",
    "who.relay": "a proxy: right after this connection reached the sender, the same device (the RST's TTL, within one) opened an upstream connection, and this RST to the client followed that upstream's RST within 50 ms: the proxy passed its upstream's refusal or reset on (§2.4 confusions)",
    "who.one_counter": "the sender's IP IDs come from one counter that also numbers packets claiming another address (one of them falls inside a stretch of the other's counter, same TTL, in the same milliseconds): one stack answers for several addresses, a user-mode NAT (slirp) or a terminating proxy; a host with two addresses and one global counter looks the same (§0 rule 3, §2.4)",
    "who.relay_host": "the sender's address is a proxy's that relayed an upstream RST elsewhere in the input (`who.relay`): its own RSTs are the middlebox's (§2.4 confusions)",
    "ctx.upstream_refused": "the relayed upstream RST refused the proxy's SYN (a RST+ACK from a side that had sent nothing): the upstream's port is closed (§2.1)",
    "ctx.upstream_reset": "the relayed upstream RST reset an upstream connection that had been open (§2.3)",
    # --- what the receiver does with it (§0 rule 1, RFC 9293 §3.10.7.4 / RFC 5961 §3.2)
    "acc.exact": "seq equals the receiver's RCV.NXT: the receiver resets (§0 rule 1)",
    "acc.in_window": "seq inside the receiver's window but not exact: it answers with a challenge ACK (§0 rule 1)",
    "acc.out_of_window": "seq outside the receiver's window: the RST is dropped (§0 rule 1)",
    "acc.challenge_ack_seen": "the receiver answered with a pure ACK (challenge ACK) and the connection survived (§1 RFC 5961 experiment)",
    # --- the live sensor (issue 19): evidence that may be missing
    "loss.capture": "live capture: packets of this connection may be missing (its history has a content gap, or it was active while libpcap counted drops), so evidence may be too",
}


# Codes added after the rules (not `decide`): the live sensor's loss mark (pipeline), a
# capture copy's mark (attribute).
PIPELINE_EVIDENCE = ("loss.capture", "capture.duplicate")


def describe(code: str) -> str:
    """The one-line explanation of an evidence code."""
    return EVIDENCE.get(code, code)
