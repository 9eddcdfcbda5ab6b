"""The per-packet TCP core, compiled with numba: connections, Zeek states, history, RST log.

`process()` walks one decoded batch.  For every packet it finds (or creates) the
connection, advances both endpoints' Zeek states, appends history letters, keeps the
per-direction counters attribution needs, and logs every RST with a snapshot of both
endpoints at that moment.  Later packets of the same connection fill in the RST's
"afterwards" columns (did the claimed sender carry on? did the receiver answer?).

The kernel never allocates: when the flow table, the output or the RST log is full it
returns a status and the index to resume from, and Python makes room (`engine`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rstlens.flows import layout as L
from rstlens.flows.hashtable import key_hash, lookup, prefetch_position, prefetch_row, remove
from rstlens.parsers._batch import ACK, FIN, OPT_TIMESTAMP, RST, SYN

# Zeek's once-per-direction history bits (Connection::CheckHistory masks).
HIST_SYN = 0x1
HIST_FIN = 0x2
HIST_RST = 0x4
HIST_FIN_RST = 0x8
HIST_DATA = 0x10
HIST_ACK = 0x20
HIST_MULTI = 0x40

NEVER = np.iinfo(np.int64).max
EXPIRE_TIMER_US = 5_000_000  # Zeek's tcp_session_timer: closed connections are checked this late

# conn_state codes, in the order of output.schema.CONN_STATES
S0, S1, SF, REJ, S2, S3, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR, OTH = range(13)


@njit(cache=True, inline="always")
def _d32(a, b):  # type: ignore[no-untyped-def]
    """Signed distance a - b in 32-bit sequence space."""
    d = (a - b) & 0xFFFFFFFF
    if d >= 0x80000000:
        d -= 0x100000000
    return d


@njit(cache=True, inline="always")
def _unw(ref, x32):  # type: ignore[no-untyped-def]
    """Unwrap raw 32-bit `x32` to the 64-bit value nearest the unwrapped `ref`."""
    return ref + _d32(x32, ref & 0xFFFFFFFF)


# --------------------------------------------------------------------------- rows
# Element loops, not slice assignments: slices are array views, which need numba's
# reference-counting runtime, and the ahead-of-time kernels are built without it.
@njit(cache=True, inline="always")
def _copy_row(dst, i, src, j):  # type: ignore[no-untyped-def]
    for c in range(src.shape[1]):
        dst[i, c] = src[j, c]


@njit(cache=True, inline="always")
def _fill_row(M, i, value):  # type: ignore[no-untyped-def]
    for c in range(M.shape[1]):
        M[i, c] = value


# --------------------------------------------------------------------------- history letters
@njit(cache=True, inline="always")
def _add_history(F, H, s, ch):  # type: ignore[no-untyped-def]
    n = F[s, L.HLEN]
    if n < L.HMAX:
        H[s, n] = ch
        F[s, L.HLEN] = n + 1


@njit(cache=True, inline="always")
def _check_history(F, H, s, is_orig, mask, ch):  # type: ignore[no-untyped-def]
    """Zeek's CheckHistory: add the letter the first time; True when it was seen before."""
    if not is_orig:
        mask = mask << 16
        ch = ch + 32  # lower case for the responder
    if F[s, L.HSEEN] & mask:
        return True
    F[s, L.HSEEN] |= mask
    _add_history(F, H, s, ch)
    return False


@njit(cache=True, inline="always")
def _scaled_history(F, H, s, e, is_orig, ch, cnt_col, thr_col):  # type: ignore[no-untyped-def]
    """Zeek's ScaledHistoryEntry: the letter again at 1, 10, 100, ... occurrences."""
    F[s, e + cnt_col] += 1
    if F[s, e + thr_col] == 0:
        F[s, e + thr_col] = 1
    if F[s, e + cnt_col] == F[s, e + thr_col]:
        _add_history(F, H, s, ch if is_orig else ch + 32)
        F[s, e + thr_col] *= 10


@njit(cache=True, inline="always")
def _repeatable_letter(F, H, s, e, is_orig, mask, ch, key, last_col):  # type: ignore[no-untyped-def]
    """S/H/F/R: again only when the sequence key differs from the last one of that kind."""
    if _check_history(F, H, s, is_orig, mask, ch) and key != F[s, e + last_col]:
        _add_history(F, H, s, ch if is_orig else ch + 32)
    F[s, e + last_col] = key


@njit(cache=True, inline="always")
def _update_history(F, H, s, e, is_orig, fl, rel_seq, plen):  # type: ignore[no-untyped-def]
    syn = (fl & SYN) != 0
    fin = (fl & FIN) != 0
    rst = (fl & RST) != 0
    nbits = int(syn) + int(fin) + int(rst)
    if nbits > 1:
        if fin and rst:
            _check_history(F, H, s, is_orig, HIST_FIN_RST, 73)  # I
        else:
            _check_history(F, H, s, is_orig, HIST_MULTI, 81)  # Q
    elif nbits == 1:
        if syn:
            _repeatable_letter(
                F, H, s, e, is_orig, HIST_SYN, 72 if fl & ACK else 83, rel_seq, L.HIST_LAST_SYN
            )
        elif fin:
            _repeatable_letter(F, H, s, e, is_orig, HIST_FIN, 70, rel_seq + plen, L.HIST_LAST_FIN)
        else:
            _repeatable_letter(F, H, s, e, is_orig, HIST_RST, 82, rel_seq, L.HIST_LAST_RST)
    elif plen > 0:
        _check_history(F, H, s, is_orig, HIST_DATA, 68)  # D
    elif fl & ACK:
        _check_history(F, H, s, is_orig, HIST_ACK, 65)  # A


# --------------------------------------------------------------------------- Zeek endpoint
@njit(cache=True, inline="always")
def _set_state(F, s, e, st):  # type: ignore[no-untyped-def]
    old = F[s, e + L.ST]
    if old != st:
        F[s, e + L.PREV_ST] = old
        F[s, e + L.ST] = st


@njit(cache=True, inline="always")
def _init_seq(F, s, e, seq_unw, end_unw, syn):  # type: ignore[no-untyped-def]
    if syn:
        F[s, e + L.START] = seq_unw
        F[s, e + L.ACKD] = seq_unw
        F[s, e + L.LAST] = end_unw
    else:
        F[s, e + L.START] = seq_unw - 1
        F[s, e + L.ACKD] = seq_unw - 1
        F[s, e + L.LAST] = seq_unw
    F[s, e + L.CONTIG] = 1
    F[s, e + L.ABOVE_S] = 0
    F[s, e + L.ABOVE_E] = 0


@njit(cache=True, inline="always")
def _init_endpoint(F, s, e, seq32, seg_len, fl):  # type: ignore[no-untyped-def]
    """Zeek's init_endpoint: (re)start a side's sequence space."""
    st = F[s, e + L.ST]
    syn = (fl & SYN) != 0
    base = seq32 + (1 << 32)  # keep unwrapped values positive
    if st == L.INACTIVE:
        _init_seq(F, s, e, base, base + seg_len, syn)
    elif syn:
        if st == L.SYN_SENT or st == L.SYN_ACK_SENT:
            if _d32(seq32, F[s, e + L.START]) != 0:
                _init_seq(F, s, e, base, base + seg_len, True)
        elif st == L.ESTABLISHED or st == L.PARTIAL or (st == L.RESET and F[s, e + L.PREV_ST] == L.INACTIVE):
            _init_seq(F, s, e, base, base + seg_len, True)


@njit(cache=True)
def _size(F, s, d):  # type: ignore[no-untyped-def]
    """Zeek's TCP_Endpoint::Size(): bytes of sequence space sent, SYN and FIN excluded."""
    e = L.D + d * L.DSTRIDE
    p = L.D + (1 - d) * L.DSTRIDE
    if F[s, e + L.PKTS] == 0 and F[s, e + L.ST] == L.INACTIVE:
        return 0
    start = F[s, e + L.START]
    ackd = F[s, e + L.ACKD]
    if (
        F[s, e + L.PREV_ST] == L.SYN_SENT
        and F[s, e + L.ST] == L.RESET
        and F[s, p + L.ST] == L.INACTIVE
        and ackd != start
        and ackd != start + 1
    ):
        return 0
    last = F[s, e + L.LAST]
    top = ackd if ackd > last else last
    size = top - start
    if size > 0:
        size -= 1
    if F[s, e + L.FIN_CNT] > 0 and size > 0:
        size -= 1
    return size if size > 0 else 0


@njit(cache=True)
def _flip_roles(F, H, s):  # type: ignore[no-untyped-def]
    """Zeek's FlipRoles: swap the endpoints (not hist_seen) and note '^'."""
    a = L.D
    b = L.D + L.DSTRIDE
    for k in L.DIR_FIELDS:
        tmp = F[s, a + k]
        F[s, a + k] = F[s, b + k]
        F[s, b + k] = tmp
    F[s, L.ORIG_IS_A] = 1 - F[s, L.ORIG_IS_A]
    _add_history(F, H, s, 94)  # ^


@njit(cache=True, inline="always")
def _handshake_state(st):  # type: ignore[no-untyped-def]
    return st == L.INACTIVE or st == L.SYN_SENT or st == L.SYN_ACK_SENT


@njit(cache=True, inline="always")
def _state_machine(F, H, s, e, p, is_orig, fl, plen, ts, attempt_us):  # type: ignore[no-untyped-def]
    """Zeek's UpdateStateMachine.  Returns (do_close, flipped)."""
    st = F[s, e + L.ST]
    pst = F[s, p + L.ST]
    syn = (fl & SYN) != 0
    fin = (fl & FIN) != 0
    rst = (fl & RST) != 0
    ack = (fl & ACK) != 0
    do_close = False
    flipped = False
    if st == L.INACTIVE:
        if syn:
            if is_orig:
                _set_state(F, s, e, L.SYN_ACK_SENT if ack else L.SYN_SENT)
                if F[s, L.ATTEMPT_DL] == 0:
                    F[s, L.ATTEMPT_DL] = ts + attempt_us
            else:
                if not ack and pst == L.SYN_ACK_SENT:
                    # the SYN-ACK came first: the SYN's sender is the real originator
                    _flip_roles(F, H, s)
                    flipped = True
                    e, p = p, e  # the blocks moved with the roles
                    _set_state(F, s, p, L.ESTABLISHED)
                if F[s, p + L.ST] == L.SYN_SENT:
                    _set_state(F, s, p, L.ESTABLISHED)
                _set_state(F, s, e, L.ESTABLISHED)
        if fin:
            _set_state(F, s, e, L.CLOSED)
            do_close = True
        if rst:
            _set_state(F, s, e, L.RESET)
            do_close = True
        if F[s, e + L.ST] == L.INACTIVE:
            if not is_orig and plen == 0 and F[s, L.D + L.ST] == L.SYN_SENT:
                pass  # the responder ACKs the SYN before its SYN-ACK
            elif ack and F[s, p + L.ST] == L.ESTABLISHED:
                _set_state(F, s, e, L.ESTABLISHED)
            else:
                _set_state(F, s, e, L.PARTIAL)
    elif st == L.SYN_SENT or st == L.SYN_ACK_SENT:
        if fin:
            _set_state(F, s, e, L.CLOSED)
            do_close = True
        if rst:
            _set_state(F, s, e, L.RESET)
            do_close = True
    elif st == L.ESTABLISHED or st == L.PARTIAL:
        if syn and st == L.PARTIAL and pst == L.INACTIVE and not ack:
            _set_state(F, s, e, L.SYN_SENT)
        if fin and not rst:
            _set_state(F, s, e, L.CLOSED)
            if F[s, p + L.ST] == L.RESET and F[s, p + L.PREV_ST] == L.CLOSED:
                _set_state(F, s, p, L.CLOSED)
            do_close = True
        elif rst:
            _set_state(F, s, e, L.RESET)
            do_close = True
    elif st == L.CLOSED and rst and pst != L.CLOSED:
        do_close = F[s, e + L.DID_CLOSE] == 0
        _set_state(F, s, e, L.RESET)
    # (RESET: no change)
    if F[s, L.LONG_TIMEOUT] == 0 and not (
        _handshake_state(F[s, L.D + L.ST]) and _handshake_state(F[s, L.D + L.DSTRIDE + L.ST])
    ):
        F[s, L.LONG_TIMEOUT] = 1
    return do_close, flipped


@njit(cache=True, inline="always")
def _connection_closed(F, s, e, p, close_us):  # type: ignore[no-untyped-def]
    F[s, e + L.DID_CLOSE] = 1
    if (
        F[s, e + L.ST] == L.RESET
        or F[s, p + L.DID_CLOSE] == 1
        or F[s, p + L.ST] == L.INACTIVE
    ) and F[s, L.CLOSE_DL] == 0:
        F[s, L.CLOSE_DL] = F[s, L.TS_LAST] + close_us


@njit(cache=True, inline="always")
def _data_sent(F, s, e, rel, plen):  # type: ignore[no-untyped-def]
    """Reassembly, reduced to what Zeek's 'G' needs: the contiguous point plus one block."""
    end = rel + plen
    contig = F[s, e + L.CONTIG]
    if rel <= contig:
        if end > contig:
            contig = end
        if F[s, e + L.ABOVE_S] and F[s, e + L.ABOVE_S] <= contig:
            if F[s, e + L.ABOVE_E] > contig:
                contig = F[s, e + L.ABOVE_E]
            F[s, e + L.ABOVE_S] = 0
            F[s, e + L.ABOVE_E] = 0
        F[s, e + L.CONTIG] = contig
    elif F[s, e + L.ABOVE_S] == 0 or rel < F[s, e + L.ABOVE_S]:
        F[s, e + L.ABOVE_S] = rel
        if end > F[s, e + L.ABOVE_E]:
            F[s, e + L.ABOVE_E] = end
    elif end > F[s, e + L.ABOVE_E]:
        F[s, e + L.ABOVE_E] = end


@njit(cache=True, inline="always")
def _ack_received(F, H, s, p, p_is_orig, rel_ack):  # type: ignore[no-untyped-def]
    """The peer acknowledged up to `rel_ack`: a hole below it is a content gap ('G')."""
    if F[s, p + L.FIN_CNT] > 0 and rel_ack > F[s, p + L.FIN_SEQ] - 1:
        rel_ack = F[s, p + L.FIN_SEQ] - 1
    if rel_ack <= F[s, p + L.CONTIG]:
        return
    o = F[s, L.D + L.ST]
    r = F[s, L.D + L.DSTRIDE + L.ST]
    op = F[s, L.D + L.PREV_ST]
    rp = F[s, L.D + L.DSTRIDE + L.PREV_ST]
    o_ok = o == L.ESTABLISHED or (o == L.CLOSED and op == L.ESTABLISHED)
    r_ok = r == L.ESTABLISHED or (r == L.CLOSED and rp == L.ESTABLISHED)
    if o_ok and r_ok and rel_ack > 2:
        _scaled_history(F, H, s, p, p_is_orig, 71, L.GAP_CNT, L.GAP_THRESH)  # G
    F[s, p + L.CONTIG] = rel_ack
    if F[s, p + L.ABOVE_S] and F[s, p + L.ABOVE_E] <= rel_ack:
        F[s, p + L.ABOVE_S] = 0
        F[s, p + L.ABOVE_E] = 0


# --------------------------------------------------------------------------- conn_state
@njit(cache=True)
def _history_is_rstos0(F, H, s):  # type: ignore[no-untyped-def]
    """/^?S[^HAFGIQ]*R.*/ matched against the whole history."""
    n = F[s, L.HLEN]
    i = 0
    if i < n and H[s, i] == 94:  # '^'
        i += 1
    if i >= n or H[s, i] != 83:  # 'S'
        return False
    i += 1
    while i < n:
        c = H[s, i]
        if c == 82:  # 'R'
            return True
        if c == 72 or c == 65 or c == 70 or c == 71 or c == 73 or c == 81:  # H A F G I Q
            return False
        i += 1
    return False


@njit(cache=True)
def conn_state(F, H, s):  # type: ignore[no-untyped-def]
    """Zeek's conn_state() over the two endpoint states (base/protocols/conn/main.zeek)."""
    os_ = F[s, L.D + L.ST]
    rs = F[s, L.D + L.DSTRIDE + L.ST]
    o_inactive = os_ == L.INACTIVE or os_ == L.PARTIAL
    r_inactive = rs == L.INACTIVE or rs == L.PARTIAL
    if rs == L.RESET:
        if os_ == L.SYN_SENT or os_ == L.SYN_ACK_SENT or (
            os_ == L.RESET and _size(F, s, 0) == 0 and _size(F, s, 1) == 0
        ):
            return REJ
        if o_inactive:
            return RSTRH
        return RSTR
    if os_ == L.RESET:
        if r_inactive:
            if _history_is_rstos0(F, H, s):
                return RSTOS0
            return OTH
        return RSTO
    if rs == L.CLOSED and os_ == L.CLOSED:
        return SF
    if os_ == L.CLOSED:
        return SH if r_inactive else S2
    if rs == L.CLOSED:
        return SHR if o_inactive else S3
    if os_ == L.SYN_SENT and rs == L.INACTIVE:
        return S0
    if os_ == L.ESTABLISHED and rs == L.ESTABLISHED:
        return S1
    return OTH


# --------------------------------------------------------------------------- lifetime
@njit(cache=True, inline="always")
def _expired(F, s, t, idle_us, short_idle_us):  # type: ignore[no-untyped-def]
    """Would Zeek's timers have removed the connection before time `t`?  Returns an END_*
    reason, or -1 when the connection is still alive."""
    if F[s, L.CLOSE_DL] and t >= F[s, L.CLOSE_DL]:
        return _end_reason(F, s)
    o = F[s, L.D + L.ST]
    r = F[s, L.D + L.DSTRIDE + L.ST]
    attempt_due = F[s, L.ATTEMPT_DL] != 0 and t >= F[s, L.ATTEMPT_DL]
    if attempt_due and (o == L.SYN_SENT or o == L.SYN_ACK_SENT) and r == L.INACTIVE:
        return L.END_IDLE
    last = F[s, L.TS_LAST]
    if t > last + EXPIRE_TIMER_US:  # Zeek's ExpireTimer (tcp_session_timer)
        oc = F[s, L.D + L.DID_CLOSE]
        rc = F[s, L.D + L.DSTRIDE + L.DID_CLOSE]
        if (oc or rc) and (
            (oc and rc) or o == L.RESET or r == L.RESET or o == L.INACTIVE or r == L.INACTIVE
        ):
            return _end_reason(F, s)
    timeout = idle_us if F[s, L.LONG_TIMEOUT] else short_idle_us
    if t - last >= timeout:
        return L.END_IDLE
    return -1


@njit(cache=True, inline="always")
def _end_reason(F, s):  # type: ignore[no-untyped-def]
    o = F[s, L.D + L.ST]
    r = F[s, L.D + L.DSTRIDE + L.ST]
    if o == L.RESET or r == L.RESET:
        return L.END_RST
    if o == L.CLOSED or r == L.CLOSED:
        return L.END_FIN
    return L.END_IDLE


@njit(cache=True)
def emit(F, K, H, T, free, nfree, FO, KO, HO, nout, P, s, reason):  # type: ignore[no-untyped-def]
    """Finish connection `s`: copy it to the output and free its row."""
    F[s, L.END_REASON] = reason
    F[s, L.CONN_STATE] = conn_state(F, H, s)
    F[s, L.ORIG_SIZE] = _size(F, s, 0)
    F[s, L.RESP_SIZE] = _size(F, s, 1)
    k = nout[0]
    _copy_row(FO, k, F, s)
    _copy_row(KO, k, K, s)
    _copy_row(HO, k, H, s)
    nout[0] = k + 1
    remove(T, F, s)
    F[s, L.ACTIVE] = 0
    free[nfree[0]] = s
    nfree[0] += 1
    P[L.P_LIVE] -= 1


@njit(cache=True, inline="always")
def _earliest_expiry(F, s, idle_us, short_idle_us):  # type: ignore[no-untyped-def]
    """The first time at which `_expired` ends connection `s` if no packet comes before:
    `_expired(F, s, t)` is >= 0 exactly when t >= this.  Only packets change it."""
    o = F[s, L.D + L.ST]
    r = F[s, L.D + L.DSTRIDE + L.ST]
    last = F[s, L.TS_LAST]
    t = last + (idle_us if F[s, L.LONG_TIMEOUT] else short_idle_us)
    if F[s, L.CLOSE_DL]:
        t = min(t, F[s, L.CLOSE_DL])
    if F[s, L.ATTEMPT_DL] and (o == L.SYN_SENT or o == L.SYN_ACK_SENT) and r == L.INACTIVE:
        t = min(t, F[s, L.ATTEMPT_DL])
    oc = F[s, L.D + L.DID_CLOSE]
    rc = F[s, L.D + L.DSTRIDE + L.DID_CLOSE]
    if (oc or rc) and (
        (oc and rc) or o == L.RESET or r == L.RESET or o == L.INACTIVE or r == L.INACTIVE
    ):
        t = min(t, last + EXPIRE_TIMER_US + 1)
    return t


@njit(cache=True)
def sweep(F, K, H, T, free, nfree, DL, FO, KO, HO, nout, P, C, t):  # type: ignore[no-untyped-def]
    """Emit every connection Zeek's timers would have removed by time `t`.

    `DL` holds each row's expiry time (`_earliest_expiry`, kept by `process`), so a sweep
    reads one compact array and only the rows that are due, not every row of a table
    larger than the cache.  Returns False when it stopped because the output is full (call
    it again after draining: the rows it emitted are no longer due), True when done.
    """
    idle = P[L.P_IDLE_US]
    short_idle = P[L.P_SHORT_IDLE_US]
    for s in range(min(DL.shape[0], P[L.P_ROWS_USED])):
        if DL[s] > t:
            continue
        if nout[0] + 1 > FO.shape[0]:
            return False
        if F[s, L.ACTIVE] != 1:
            DL[s] = NEVER  # a free row: `process` sets it again when the row is reused
            continue
        reason = _expired(F, s, t, idle, short_idle)
        if reason >= 0:
            if reason == L.END_IDLE:
                C[L.C_IDLE] += 1
            emit(F, K, H, T, free, nfree, FO, KO, HO, nout, P, s, reason)
            DL[s] = NEVER
        else:
            DL[s] = _earliest_expiry(F, s, idle, short_idle)
    return True


@njit(cache=True)
def emit_all(F, K, H, T, free, nfree, FO, KO, HO, nout, P, reason, limit):  # type: ignore[no-untyped-def]
    """End of input: emit open connections, at most `limit` per call (closed ones keep their
    fin/rst reason).  Returns how many were emitted."""
    done = 0
    for s in range(min(F.shape[0], P[L.P_ROWS_USED])):
        if done >= limit:
            break
        if F[s, L.ACTIVE] == 1:
            r = _end_reason(F, s)
            emit(F, K, H, T, free, nfree, FO, KO, HO, nout, P, s, reason if r == L.END_IDLE else r)
            done += 1
    return done


@njit(cache=True)
def emit_rows(F, K, H, T, free, nfree, FO, KO, HO, nout, P, rows, reason):  # type: ignore[no-untyped-def]
    for s in rows:
        if F[s, L.ACTIVE] == 1:
            emit(F, K, H, T, free, nfree, FO, KO, HO, nout, P, s, reason)


# --------------------------------------------------------------------------- reuse
@njit(cache=True, inline="always")
def _is_reuse(F, s, fl, seq32):  # type: ignore[no-untyped-def]
    """Zeek's TCPSessionAdapter::IsReuse (it ignores the packet's direction)."""
    if (fl & SYN) == 0:
        return False
    o = L.D
    r = L.D + L.DSTRIDE
    co = o
    if fl & ACK:
        if F[s, o + L.ST] != L.INACTIVE:
            return False
        co = r
    if F[s, o + L.DID_CLOSE] == 0 and F[s, r + L.DID_CLOSE] == 0:
        if _d32(seq32, F[s, co + L.START]) == 0:
            return False
        if (
            (fl & ACK) == 0
            and F[s, co + L.ST] == L.SYN_ACK_SENT
            and F[s, r + L.ST] == L.INACTIVE
            and _d32(seq32, F[s, r + L.START]) == 0
        ):
            return False
    return True


# --------------------------------------------------------------------------- RST log
@njit(cache=True)
def _log_rst(F, R, nr, s, e, p, d, t, frame, source, fl, seq32, ack32, ttl, ipid, df, win,
             plen, opts):  # type: ignore[no-untyped-def]
    """Append the RST with a snapshot of both endpoints taken before it is applied."""
    k = nr[0]
    nr[0] = k + 1
    _fill_row(R, k, 0)
    R[k, L.R_ORDINAL] = nr[1]
    nr[1] += 1
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
    F[s, L.RST_COUNT] += 1
    R[k, L.R_SND_ST] = F[s, e + L.ST]
    R[k, L.R_RCV_ST] = F[s, p + L.ST]
    R[k, L.R_SND_PKTS] = F[s, e + L.NONRST_PKTS]
    R[k, L.R_SND_TTL_MIN] = F[s, e + L.TTL_MIN]
    R[k, L.R_SND_TTL_MAX] = F[s, e + L.TTL_MAX]
    R[k, L.R_SND_FIN] = F[s, e + L.FIN_CNT] > 0
    R[k, L.R_RCV_FIN] = F[s, p + L.FIN_CNT] > 0
    R[k, L.R_SND_SEQ_SET] = F[s, e + L.NXT_SET]
    R[k, L.R_SEQ_VS_SND_NXT] = _d32(seq32, F[s, e + L.NXT32]) if F[s, e + L.NXT_SET] else 0
    R[k, L.R_RCV_ACK_SET] = F[s, p + L.MYACK_SET]
    R[k, L.R_SEQ_VS_RCV_ACK] = _d32(seq32, F[s, p + L.MYACK32]) if F[s, p + L.MYACK_SET] else 0
    if F[s, p + L.WSCALE] >= 0 and F[s, e + L.WSCALE] >= 0:
        R[k, L.R_RCV_WIN_BYTES] = F[s, p + L.WIN] << F[s, p + L.WSCALE]
    elif F[s, p + L.PKTS] > 0:
        R[k, L.R_RCV_WIN_BYTES] = F[s, p + L.WIN]
    else:
        R[k, L.R_RCV_WIN_BYTES] = -1
    if (fl & ACK) and F[s, p + L.NXT_SET]:
        R[k, L.R_ACK_VS_RCV_NXT] = _d32(ack32, F[s, p + L.NXT32])
    if F[s, p + L.PKTS] > 0:
        R[k, L.R_TRIG_FLAGS] = F[s, p + L.LAST_FLAGS]
        R[k, L.R_TRIG_TS] = F[s, p + L.LAST_TS]
        R[k, L.R_TRIG_ACK] = F[s, p + L.LAST_ACK32]
    else:
        R[k, L.R_TRIG_FLAGS] = -1
    if F[s, e + L.NXT_SET] and F[s, p + L.MYACK_SET]:
        u = _d32(F[s, e + L.NXT32], F[s, p + L.MYACK32])
        R[k, L.R_SND_UNACKED] = u if u > 0 else 0
    if F[s, p + L.NXT_SET] and F[s, e + L.MYACK_SET]:
        u = _d32(F[s, p + L.NXT32], F[s, e + L.MYACK32])
        R[k, L.R_RCV_UNACKED] = u if u > 0 else 0
    R[k, L.R_PREV_IN_FLOW] = F[s, L.LAST_RST]
    R[k, L.R_SRC_IS_A] = (F[s, L.ORIG_IS_A] == 1) == (d == 0)
    R[k, L.R_SND_LAST_DATA_TS] = F[s, e + L.LAST_DATA_TS]
    R[k, L.R_RCV_LAST_DATA_TS] = F[s, p + L.LAST_DATA_TS]
    R[k, L.R_IPV] = F[s, L.IPV]
    F[s, L.LAST_RST] = k


@njit(cache=True, inline="always")
def _after_rst(F, R, s, src_a, fl, seq32, plen):  # type: ignore[no-untyped-def]
    """A packet of a connection that saw RSTs: what did each side do afterwards?"""
    k = F[s, L.LAST_RST]
    walked = 0
    while k >= 0 and walked < 8:
        if src_a == R[k, L.R_SRC_IS_A]:
            if (fl & RST) == 0:
                advancing = plen > 0 or (fl & (FIN | SYN)) != 0 or (fl & ACK) != 0
                if advancing and _d32(seq32, R[k, L.R_SEQ]) >= 0:
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


# --------------------------------------------------------------------------- the batch walk
@njit(cache=True, inline="always")
def _key_extra(vlan, inner_vlan, iface):  # type: ignore[no-untyped-def]
    return ((vlan + 1) & 0xFFFF) << 48 | ((inner_vlan + 1) & 0xFFFF) << 32 | (iface & 0xFFFF)


AHEAD = 4  # packets between prefetching a row and using it


@njit(cache=True, inline="always")
def _packet_key(src_hi, src_lo, dst_hi, dst_lo, sport, dport, vlan, inner_vlan, iface, i):  # type: ignore[no-untyped-def]
    """Packet i's canonical key (endpoint A is the lower address/port) and whether the
    packet comes from A."""
    s_hi = np.uint64(src_hi[i])
    s_lo = np.uint64(src_lo[i])
    d_hi = np.uint64(dst_hi[i])
    d_lo = np.uint64(dst_lo[i])
    sp = np.int64(sport[i])
    dp = np.int64(dport[i])
    src_is_a = s_hi < d_hi or (s_hi == d_hi and (s_lo < d_lo or (s_lo == d_lo and sp <= dp)))
    if src_is_a:
        a_hi, a_lo, b_hi, b_lo, ports = s_hi, s_lo, d_hi, d_lo, (sp << 16) | dp
    else:
        a_hi, a_lo, b_hi, b_lo, ports = d_hi, d_lo, s_hi, s_lo, (dp << 16) | sp
    extra = _key_extra(np.int64(vlan[i]), np.int64(inner_vlan[i]), np.int64(iface[i]))
    return a_hi, a_lo, b_hi, b_lo, ports, extra, src_is_a


@njit(cache=True)
def process(
    ts_us, source, iface, frame, ip_version, src_hi, src_lo, dst_hi, dst_lo, sport, dport,
    seq, ack, flags, window, ttl, ip_id, df, payload_len, captured_payload, vlan, inner_vlan,
    tcp_opts, mss, wscale, likely_server,
    start, F, K, H, T, free, nfree, DL, R, nr, FO, KO, HO, nout, P, C, hashes,
):  # type: ignore[no-untyped-def]
    """Walk packets `start..` of a batch (`hashes`: scratch space, at least one slot per
    packet).  Returns (next index, status)."""
    n = ts_us.shape[0]
    idle_us = P[L.P_IDLE_US]
    short_idle_us = P[L.P_SHORT_IDLE_US]
    close_us = P[L.P_CLOSE_DELAY_US]
    attempt_us = P[L.P_ATTEMPT_US]
    # The table is far larger than the cache: most lookups miss.  The hashes of the whole
    # batch are known up front, so the slot of packet i + 2 * AHEAD and the row of packet
    # i + AHEAD are fetched while packet i is worked on.
    for i in range(start, n):
        key = _packet_key(src_hi, src_lo, dst_hi, dst_lo, sport, dport, vlan, inner_vlan, iface, i)
        hashes[i] = key_hash(key[0], key[1], key[2], key[3], key[4], key[5])
    for i in range(start, n):
        if AHEAD and i + 2 * AHEAD < n:
            prefetch_position(T, hashes[i + 2 * AHEAD])
        if AHEAD and i + AHEAD < n:
            prefetch_row(T, F, K, hashes[i + AHEAD])
        # room for this packet's own emission (expiry or reuse of its connection)
        if nout[0] + 2 > FO.shape[0]:
            return i, L.NEED_OUTPUT
        if nr[0] + 1 > R.shape[0]:
            return i, L.NEED_RST_SPACE
        if nfree[0] < 1:
            return i, L.NEED_SLOT
        ui = np.uint64(i)  # unsigned column index: no negative-index wrap (see `us`)
        t = np.int64(ts_us[ui])
        if t >= P[L.P_MAX_TS]:
            P[L.P_MAX_TS] = t
        else:
            C[L.C_TIME_BACKWARDS] += 1
        if t - P[L.P_LAST_SWEEP] >= P[L.P_SWEEP_US]:
            if not sweep(F, K, H, T, free, nfree, DL, FO, KO, HO, nout, P, C, t):
                return i, L.NEED_OUTPUT  # the sweep goes on after the drain
            P[L.P_LAST_SWEEP] = t

        sp = np.int64(sport[ui])
        dp = np.int64(dport[ui])
        a_hi, a_lo, b_hi, b_lo, ports, extra, src_is_a = _packet_key(
            src_hi, src_lo, dst_hi, dst_lo, sport, dport, vlan, inner_vlan, iface, ui
        )
        h = hashes[ui]
        fl = np.int64(flags[ui])
        seq32 = np.int64(seq[ui])
        ack32 = np.int64(ack[ui])
        plen = np.int64(payload_len[ui])

        pos, s = lookup(T, F, K, h, a_hi, a_lo, b_hi, b_lo, ports, extra)
        if s >= 0:
            reason = _expired(F, s, t, idle_us, short_idle_us)
            if reason >= 0:
                if reason == L.END_IDLE:
                    C[L.C_IDLE] += 1
                emit(F, K, H, T, free, nfree, FO, KO, HO, nout, P, s, reason)
                s = -1
            elif _is_reuse(F, s, fl, seq32):
                C[L.C_REUSE] += 1
                emit(F, K, H, T, free, nfree, FO, KO, HO, nout, P, s, _end_reason(F, s))
                s = -1
            if s < 0:
                pos, s = lookup(T, F, K, h, a_hi, a_lo, b_hi, b_lo, ports, extra)
        if s < 0:
            nfree[0] -= 1
            s = free[nfree[0]]
            if s >= P[L.P_ROWS_USED]:
                P[L.P_ROWS_USED] = s + 1
            T[pos] = s
            P[L.P_LIVE] += 1
            C[L.C_FLOWS] += 1
            _fill_row(F, s, 0)
            _fill_row(H, s, 0)
            K[s, 0] = a_hi
            K[s, 1] = a_lo
            K[s, 2] = b_hi
            K[s, 3] = b_lo
            F[s, L.ACTIVE] = 1
            F[s, L.SERIAL] = P[L.P_NEXT_SERIAL]
            P[L.P_NEXT_SERIAL] += 1
            F[s, L.HASH] = h
            F[s, L.KEY_PORTS] = ports
            F[s, L.KEY_EXTRA] = extra
            F[s, L.IPV] = ip_version[ui]
            F[s, L.TS_FIRST] = t
            F[s, L.TS_LAST] = t
            F[s, L.SOURCE] = source[ui]
            F[s, L.VLAN] = vlan[ui]
            F[s, L.INNER_VLAN] = inner_vlan[ui]
            F[s, L.LAST_RST] = -1
            F[s, L.START_SEEN] = (fl & (SYN | ACK | RST)) == SYN
            for dd in range(2):
                b = L.D + dd * L.DSTRIDE
                F[s, b + L.WSCALE] = -1
                F[s, b + L.TTL_MIN] = 256
            # Zeek's WantConnection: the sender is the originator, unless a packet other than
            # a plain SYN comes from a likely server port (to a port that is not one).
            flip = False
            if ((fl & SYN) == 0 or (fl & ACK) != 0) and likely_server[sp]:
                flip = fl & SYN == 0 and sp < dp if likely_server[dp] else True
            F[s, L.ORIG_IS_A] = (not src_is_a) if flip else src_is_a
            if flip:
                _add_history(F, H, s, 94)  # ^

        d = 0 if (F[s, L.ORIG_IS_A] == 1) == src_is_a else 1
        # s is a valid row now: as an unsigned index, numba drops the negative-index wrap it
        # would otherwise put at many of the row accesses below
        us = np.uint64(s)
        _packet(F, H, R, nr, us, d, t, fl, seq32, ack32, plen, np.int64(captured_payload[ui]),
                np.int64(window[ui]), np.int64(ttl[ui]), np.int64(ip_id[ui]), np.int64(df[ui]),
                np.int64(tcp_opts[ui]), np.int64(mss[ui]),
                np.int64(wscale[ui]), np.int64(frame[ui]), np.int64(source[ui]), close_us,
                attempt_us, C)
        DL[us] = _earliest_expiry(F, us, idle_us, short_idle_us)
    return n, L.OK


@njit(cache=True, inline="always")
def _packet(F, H, R, nr, s, d, t, fl, seq32, ack32, plen, cap, win, ttl, ipid, df, opts,
            mss, wscale, frame, source, close_us, attempt_us, C):  # type: ignore[no-untyped-def]
    """One packet from side `d` (0 originator, 1 responder) of connection `s`."""
    e = L.D + d * L.DSTRIDE
    p = L.D + (1 - d) * L.DSTRIDE
    is_orig = d == 0
    syn = (fl & SYN) != 0
    fin = (fl & FIN) != 0
    rst = (fl & RST) != 0
    has_ack = (fl & ACK) != 0

    if F[s, L.LAST_RST] >= 0:
        src_a = (F[s, L.ORIG_IS_A] == 1) == (d == 0)
        _after_rst(F, R, s, src_a, fl, seq32, plen)
    if rst:
        C[L.C_RSTS] += 1
        _log_rst(F, R, nr, s, e, p, d, t, frame, source, fl, seq32, ack32, ttl, ipid, df, win,
                 plen, opts)
    else:
        # rstlens' own per-side view (RSTs excluded: they are judged against it)
        F[s, e + L.NONRST_PKTS] += 1
        if ttl < F[s, e + L.TTL_MIN]:
            F[s, e + L.TTL_MIN] = ttl
        if ttl > F[s, e + L.TTL_MAX]:
            F[s, e + L.TTL_MAX] = ttl
        nxt = (seq32 + plen + int(syn) + int(fin)) & 0xFFFFFFFF
        if F[s, e + L.NXT_SET] == 0 or _d32(nxt, F[s, e + L.NXT32]) > 0:
            F[s, e + L.NXT32] = nxt
            F[s, e + L.NXT_SET] = 1
        if has_ack and (F[s, e + L.MYACK_SET] == 0 or _d32(ack32, F[s, e + L.MYACK32]) > 0):
            F[s, e + L.MYACK32] = ack32
            F[s, e + L.MYACK_SET] = 1
        if syn:
            F[s, e + L.WSCALE] = wscale
            F[s, e + L.MSS] = mss
            F[s, e + L.TS_OPT] = (opts & OPT_TIMESTAMP) != 0
    if plen > 0 and not rst:
        F[s, e + L.LAST_DATA_TS] = t
    F[s, e + L.WIN] = win
    F[s, L.PKT_LAST] = t

    # ---- Zeek's TCPSessionAdapter::Process, in its order
    seg_len = plen + int(syn) + int(fin) - (plen if rst else 0)
    _init_endpoint(F, s, e, seq32, seg_len, fl)
    seq_unw = _unw(F[s, e + L.LAST], seq32)
    end_unw = seq_unw + seg_len
    rel_seq = seq_unw - F[s, e + L.START]
    _update_history(F, H, s, e, is_orig, fl, rel_seq, plen)
    if win == 0 and not rst and F[s, p + L.ST] != L.CLOSED and F[s, e + L.ST] != L.RESET:
        _scaled_history(F, H, s, e, is_orig, 87, L.ZWIN_CNT, L.ZWIN_THRESH)  # W
    if not (F[s, L.D + L.DID_CLOSE] and F[s, L.D + L.DSTRIDE + L.DID_CLOSE]):
        F[s, L.TS_LAST] = t
    if fin:
        F[s, e + L.FIN_CNT] += 1
        F[s, e + L.FIN_SEQ] = rel_seq + seg_len
    rel_ack = 0
    if has_ack:
        if F[s, p + L.ST] == L.INACTIVE:
            base = ack32 + (1 << 32) - 1
            F[s, p + L.START] = base
            F[s, p + L.ACKD] = base
            F[s, p + L.LAST] = base
            F[s, p + L.CONTIG] = 1
            F[s, p + L.ABOVE_S] = 0
            F[s, p + L.ABOVE_E] = 0
            rel_ack = 1
        else:
            ack_unw = _unw(F[s, p + L.ACKD], ack32)
            rel_ack = ack_unw - F[s, p + L.START]
            if rel_ack < 0:
                rel_ack = 0
            bogus_zero = ack32 == 0 and ack_unw - F[s, p + L.ACKD] > 1 << 20
            if not rst and not bogus_zero and ack_unw > F[s, p + L.ACKD]:
                F[s, p + L.ACKD] = ack_unw
    # update_last_seq
    delta = end_unw - F[s, e + L.LAST]
    if (syn or rst) and (delta > 1048576 or delta < -1048576):
        pass
    elif fin and F[s, e + L.LAST] == F[s, e + L.START] + 1:
        F[s, e + L.LAST] = end_unw
    elif F[s, e + L.ST] == L.RESET:
        pass
    elif delta > 0:
        F[s, e + L.LAST] = end_unw
    elif plen > 0:
        _scaled_history(F, H, s, e, is_orig, 84, L.RXMT_CNT, L.RXMT_THRESH)  # T

    do_close, flipped = _state_machine(F, H, s, e, p, is_orig, fl, plen, t, attempt_us)
    if flipped:
        e, p = p, e
        is_orig = not is_orig
    if has_ack:
        _ack_received(F, H, s, p, not is_orig, rel_ack)
    if plen > 0 and not rst and rel_seq >= 0 and cap >= plen:
        _data_sent(F, s, e, rel_seq + int(syn), plen)
    if do_close:
        _connection_closed(F, s, e, p, close_us)

    # Zeek's ConnSize counts the packet with the direction it had before any flip.
    F[s, L.D + d * L.DSTRIDE + L.PKTS] += 1
    # the trigger a reply RST would answer
    F[s, e + L.LAST_TS] = t
    F[s, e + L.LAST_FLAGS] = fl
    F[s, e + L.LAST_ACK32] = ack32
