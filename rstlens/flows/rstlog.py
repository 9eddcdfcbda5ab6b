"""The RST log `R` (numba): one row per RST packet, a snapshot of both endpoints taken
before the RST is applied, and what each side did afterwards (filled in by later packets
of the connection).  Row columns: `layout.R_*`."""

from __future__ import annotations

import numpy as np
from numba import njit

from rstlens.flows import layout as L
from rstlens.flows.hashtable import fill_row
from rstlens.flows.seqspace import MASK32, seq_delta
from rstlens.parsers._batch import ACK, FIN, OPT_TIMESTAMP, RST, SYN

AFTER_RST_WALK = 8  # earlier RSTs of the connection a packet updates, newest first
_FLAGS_MASK = 0xFFFF
_IPID_SHIFT = 16  # of the IP ID in `layout.LAST_SIG`
_IPID_MASK = 0xFFFF
_LEN_MASK = 0xFFFF  # of the payload length in `layout.LAST_SIG`
# a segment whose IP ID is at most this far below (mod 2**16) the last IP ID its side had
# sent when the RST came was sent before the RST: a capture copy (two taps interleave their
# copies) or reordered by the capture, not "afterwards"
IPID_BEFORE_SPAN = 1024


@njit(cache=True, inline="always")
def _stack_ipid(F, R, s, side, side_is_a):  # type: ignore[no-untyped-def]
    """The IPv4 IP ID of the last non-RST segment `side` sent (-1: none, or no IP ID to go
    by): its own stack's counter.  A RST's IP ID is no reference, for who sent a RST is the
    question: an evasion tool's or an injector's RST carries another counter (§0 rule 9,
    §2.4), and a later segment of the real stack may fall just below it.  When the side's
    last segment was a RST, the connection's newest logged RST holds the side's reference
    from before it (the side has sent nothing but RSTs since)."""
    if F[s, side + L.PKTS] == 0:
        return -1
    if (F[s, side + L.LAST_SEG] >> L.SEG_FLAGS_SHIFT) & RST:
        j = F[s, L.LAST_RST]
        if j < 0:
            return -1
        return R[j, L.R_SND_LAST_IPID] if R[j, L.R_SRC_IS_A] == side_is_a else R[j, L.R_RCV_LAST_IPID]
    ipid = (F[s, side + L.LAST_SIG] >> _IPID_SHIFT) & _IPID_MASK
    return ipid if 0 < ipid < _IPID_MASK else -1


@njit(cache=True, inline="always")
def _sent_before(ipid, last):  # type: ignore[no-untyped-def]
    """IP ID `ipid` is not newer than `last` in the same 16-bit counter."""
    return ipid > 0 and last >= 0 and ((last - ipid) & _IPID_MASK) < IPID_BEFORE_SPAN


@njit(cache=True)
def rst_original(F, R, s, src_a, t, fl, seq32, ack32, plen, win, ttl, ipid, window_us, ttl_hops):  # type: ignore[no-untyped-def]
    """R_ORDINAL of the earlier RST of connection `s` this RST is a capture copy of, -1 when
    none: from the same side, within `window_us`, with the same seq, ack, flags, payload
    length and window, a TTL within `ttl_hops`, and the same non-zero IP ID or (no IP ID to
    compare) a TTL one hop different (as `core._is_copy`, but against each of the
    connection's last RSTs: two taps interleave their copies of a burst)."""
    j = F[s, L.LAST_RST]
    walked = 0
    while j >= 0 and walked < AFTER_RST_WALK:
        dt = t - R[j, L.R_TS]
        if dt > window_us:
            break
        if (
            R[j, L.R_SRC_IS_A] == src_a and dt >= 0 and R[j, L.R_SEQ] == seq32
            and R[j, L.R_ACK] == ack32 and R[j, L.R_FLAGS] == fl and R[j, L.R_PLEN] == plen
            and R[j, L.R_WIN] == win and R[j, L.R_IPID] == ipid
        ):  # fmt: skip
            dttl = ttl - R[j, L.R_TTL]
            if -ttl_hops <= dttl <= ttl_hops and (ipid > 0 or dttl != 0):
                return R[j, L.R_DUP_OF] if R[j, L.R_DUP_OF] >= 0 else R[j, L.R_ORDINAL]
        j = R[j, L.R_PREV_IN_FLOW]
        walked += 1
    return -1


@njit(cache=True)
def log_rst(F, R, nr, s, e, p, d, t, frame, source, fl, seq32, ack32, ttl, ipid, df, win,
            plen, opts, outer_ttl, dup_of, ck, tsp, ordinal):  # type: ignore[no-untyped-def]
    """Append the RST with a snapshot of both endpoints taken before it is applied.  A
    capture copy points at the RST it copies (`dup_of`: R_ORDINAL of the copies' original,
    else -1); `ck` is its checksum status; `tsp` its TSval << 32 | TSecr (0 without the
    timestamp option).  `ordinal`: the RST's number in the run, -1 for the next one (a
    replayed RST of a reset row took its number on arrival)."""
    src_a = (F[s, L.ORIG_IS_A] == 1) == (d == 0)
    k = nr[0]
    nr[0] = k + 1
    fill_row(R, k, 0)
    if ordinal < 0:
        ordinal = nr[1]
        nr[1] += 1
    R[k, L.R_ORDINAL] = ordinal
    R[k, L.R_SERIAL] = F[s, L.SERIAL]
    R[k, L.R_TS] = t
    R[k, L.R_FRAME] = frame
    R[k, L.R_SOURCE] = source
    R[k, L.R_FLAGS] = fl
    R[k, L.R_SEQ] = seq32
    R[k, L.R_ACK] = ack32
    R[k, L.R_TTL] = ttl
    R[k, L.R_IPID] = ipid
    R[k, L.R_DF] = df
    R[k, L.R_WIN] = win
    R[k, L.R_PLEN] = plen
    R[k, L.R_OPTS] = opts
    R[k, L.R_OUTER_TTL] = outer_ttl
    F[s, L.RST_COUNT] += 1
    R[k, L.R_SND_ST] = F[s, e + L.ST]
    R[k, L.R_RCV_ST] = F[s, p + L.ST]
    R[k, L.R_SND_PKTS] = F[s, e + L.NONRST_PKTS]
    R[k, L.R_SND_TTL_MIN] = F[s, e + L.TTL_MIN]
    R[k, L.R_SND_TTL_MAX] = F[s, e + L.TTL_MAX]
    R[k, L.R_SND_HS_TTL] = F[s, e + L.HS_TTL]
    R[k, L.R_SND_DATA_TTL_MIN] = F[s, e + L.DATA_TTL_MIN]
    R[k, L.R_SND_DATA_TTL_MAX] = F[s, e + L.DATA_TTL_MAX]
    R[k, L.R_SND_FIN] = F[s, e + L.FIN_CNT] > 0
    R[k, L.R_RCV_FIN] = F[s, p + L.FIN_CNT] > 0
    R[k, L.R_SND_SEQ_SET] = F[s, e + L.NXT_SET]
    R[k, L.R_SEQ_VS_SND_NXT] = seq_delta(seq32, F[s, e + L.NXT32]) if F[s, e + L.NXT_SET] else 0
    R[k, L.R_RCV_ACK_SET] = F[s, p + L.MYACK_SET]
    R[k, L.R_SEQ_VS_RCV_ACK] = seq_delta(seq32, F[s, p + L.MYACK32]) if F[s, p + L.MYACK_SET] else 0
    if F[s, p + L.WSCALE] >= 0 and F[s, e + L.WSCALE] >= 0:
        R[k, L.R_RCV_WIN_BYTES] = F[s, p + L.WIN] << F[s, p + L.WSCALE]
    elif F[s, p + L.PKTS] > 0:
        R[k, L.R_RCV_WIN_BYTES] = F[s, p + L.WIN]
    else:
        R[k, L.R_RCV_WIN_BYTES] = -1
    if (fl & ACK) and F[s, p + L.NXT_SET]:
        R[k, L.R_ACK_VS_RCV_NXT] = seq_delta(ack32, F[s, p + L.NXT32])
    if F[s, p + L.PKTS] > 0:
        R[k, L.R_TRIG_FLAGS] = (F[s, p + L.LAST_SEG] >> L.SEG_FLAGS_SHIFT) & _FLAGS_MASK
        R[k, L.R_TRIG_TS] = F[s, p + L.LAST_TS]
        R[k, L.R_TRIG_ACK] = F[s, p + L.LAST_SEG] & MASK32
    else:
        R[k, L.R_TRIG_FLAGS] = -1
    if F[s, e + L.NXT_SET] and F[s, p + L.MYACK_SET]:
        u = seq_delta(F[s, e + L.NXT32], F[s, p + L.MYACK32])
        R[k, L.R_SND_UNACKED] = u if u > 0 else 0
    if F[s, p + L.NXT_SET] and F[s, e + L.MYACK_SET]:
        u = seq_delta(F[s, p + L.NXT32], F[s, e + L.MYACK32])
        R[k, L.R_RCV_UNACKED] = u if u > 0 else 0
    R[k, L.R_PREV_IN_FLOW] = F[s, L.LAST_RST]
    R[k, L.R_SRC_IS_A] = src_a
    R[k, L.R_DUP_OF] = dup_of
    R[k, L.R_CSUM] = ck if ck >= 0 else L.CK_UNVERIFIED
    R[k, L.R_SND_CSUM_GOOD] = F[s, e + L.CSUM_GOOD]
    R[k, L.R_SND_CSUM_BAD] = F[s, e + L.CSUM_BAD]
    R[k, L.R_SND_LAST_IPID] = _stack_ipid(F, R, s, e, src_a)
    R[k, L.R_RCV_LAST_IPID] = _stack_ipid(F, R, s, p, not src_a)
    R[k, L.R_SND_LAST_DATA_TS] = F[s, e + L.LAST_DATA_TS]
    R[k, L.R_RCV_LAST_DATA_TS] = F[s, p + L.LAST_DATA_TS]
    R[k, L.R_IPV] = F[s, L.IPV]
    if F[s, e + L.PKTS] > 0:
        R[k, L.R_SND_LAST_SEQ_DELTA] = seq_delta(seq32, (F[s, e + L.LAST_SIG] >> 32) & MASK32)
        R[k, L.R_SND_LAST_LEN] = F[s, e + L.LAST_SIG] & _LEN_MASK
        R[k, L.R_SND_LAST_FLAGS] = (F[s, e + L.LAST_SEG] >> L.SEG_FLAGS_SHIFT) & _FLAGS_MASK
        R[k, L.R_SND_LAST_TS] = F[s, e + L.LAST_TS]
    else:
        R[k, L.R_SND_LAST_FLAGS] = -1
    R[k, L.R_TSVAL] = (tsp >> 32) & MASK32
    R[k, L.R_TSECR] = tsp & MASK32
    R[k, L.R_RCV_TSV_N] = F[s, p + L.TSV_N]
    R[k, L.R_RCV_TSV_MAX] = F[s, p + L.TSV_MAX]
    R[k, L.R_RCV_TSV_FIRST] = F[s, p + L.TSV_FIRST]
    F[s, L.LAST_RST] = k


@njit(cache=True, inline="always")
def ts_seen(F, s, e, syn, opts, tsv):  # type: ignore[no-untyped-def]
    """A non-RST segment of side `e` (not a capture copy), TSval `tsv`: the TSvals it has
    sent (`layout.TSV_*`), what a RST's TSecr from its peer should echo (RFC 7323 §4.3)."""
    if (opts & OPT_TIMESTAMP) == 0:
        if syn:
            F[s, e + L.TSV_FIRST] |= L.TSV_SYN_WITHOUT
        return
    if F[s, e + L.TSV_N] == 0:
        F[s, e + L.TSV_FIRST] = (F[s, e + L.TSV_FIRST] & L.TSV_SYN_WITHOUT) | tsv | (
            L.TSV_ON_SYN if syn else 0)
        F[s, e + L.TSV_MAX] = tsv
    elif seq_delta(tsv, F[s, e + L.TSV_MAX]) > 0:  # modulo 2**32, as RFC 7323 §5.3 compares
        F[s, e + L.TSV_MAX] = tsv
    F[s, e + L.TSV_N] += 1


@njit(cache=True, inline="always")
def after_rst(F, R, s, src_a, fl, seq32, plen, ipid):  # type: ignore[no-untyped-def]
    """A packet of a connection that saw RSTs: what did each side do afterwards?  A packet
    its side sent before the RST (by its IP ID) is not "afterwards"."""
    k = F[s, L.LAST_RST]
    walked = 0
    while k >= 0 and walked < AFTER_RST_WALK:
        from_sender = src_a == R[k, L.R_SRC_IS_A]
        if _sent_before(ipid, R[k, L.R_SND_LAST_IPID] if from_sender else R[k, L.R_RCV_LAST_IPID]):
            pass
        elif from_sender:
            if (fl & RST) == 0:
                advancing = plen > 0 or (fl & (FIN | SYN)) != 0 or (fl & ACK) != 0
                if advancing and seq_delta(seq32, R[k, L.R_SEQ]) >= 0:
                    R[k, L.R_AFTER_SND_ADV] += 1
                if (fl & (SYN | ACK)) == (SYN | ACK):
                    R[k, L.R_AFTER_SND_SYNACK] = 1
        else:
            if R[k, L.R_AFTER_RCV_PKTS] == 0:
                R[k, L.R_AFTER_RCV_CHALLENGE] = (fl & (SYN | FIN | RST | ACK)) == ACK and plen == 0
            R[k, L.R_AFTER_RCV_PKTS] += 1
            if (fl & RST) == 0:
                R[k, L.R_AFTER_RCV_NONRST] += 1
        k = R[k, L.R_PREV_IN_FLOW]
        walked += 1



@njit(cache=True)
def keep_text(R, k, raw, poff, cap):  # type: ignore[no-untyped-def]
    """The first `layout.TEXT_BYTES` captured payload bytes of RST row `k` (R_TEXT: 8 bytes
    per column, the first byte lowest)."""
    n = min(cap, L.TEXT_BYTES)
    if poff < 0 or poff + n > raw.shape[0]:
        n = 0
    R[k, L.R_TEXT_LEN] = n
    for c in range(L.TEXT_BYTES // 8):
        R[k, L.R_TEXT + c] = 0
    for i in range(n):
        R[k, L.R_TEXT + i // 8] |= np.int64(raw[np.uint64(poff + i)]) << (8 * (i % 8))
