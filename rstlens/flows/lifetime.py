"""When Zeek would remove a connection: its timers, and connection reuse (numba)."""

from __future__ import annotations

import numpy as np
from numba import njit

from rstlens.flows import layout as L
from rstlens.flows.seqspace import seq_delta
from rstlens.parsers._batch import ACK, SYN

NEVER = np.iinfo(np.int64).max
EXPIRE_TIMER_US = 5_000_000  # Zeek's tcp_session_timer: closed connections are checked this late


@njit(cache=True, inline="always")
def _half_closed_expiry_applies(F, s, o, r):  # type: ignore[no-untyped-def]
    """Zeek's ExpireTimer removes a connection once a side closed and the close is complete
    or the other side is reset or inactive."""
    oc = F[s, L.D + L.DID_CLOSE] != 0
    rc = F[s, L.D + L.DSTRIDE + L.DID_CLOSE] != 0
    return (oc or rc) and (
        (oc and rc) or o == L.RESET or r == L.RESET or o == L.INACTIVE or r == L.INACTIVE
    )


@njit(cache=True, inline="always")
def _attempt_pending(o, r):  # type: ignore[no-untyped-def]
    """Zeek's AttemptTimer applies: the originator's SYN is unanswered."""
    return (o == L.SYN_SENT or o == L.SYN_ACK_SENT) and r == L.INACTIVE


@njit(cache=True, inline="always")
def expired(F, s, t, idle_us, short_idle_us):  # type: ignore[no-untyped-def]
    """Would Zeek's timers have removed the connection before time `t`?  Returns an END_*
    reason, or -1 when the connection is still alive."""
    if F[s, L.CLOSE_DL] and t >= F[s, L.CLOSE_DL]:
        return end_reason(F, s)
    o = F[s, L.D + L.ST]
    r = F[s, L.D + L.DSTRIDE + L.ST]
    attempt_due = F[s, L.ATTEMPT_DL] != 0 and t >= F[s, L.ATTEMPT_DL]
    if attempt_due and _attempt_pending(o, r):
        return L.END_IDLE
    last = F[s, L.TS_LAST]
    if t > last + EXPIRE_TIMER_US and _half_closed_expiry_applies(F, s, o, r):
        return end_reason(F, s)
    timeout = idle_us if F[s, L.LONG_TIMEOUT] else short_idle_us
    if t - last >= timeout:
        return L.END_IDLE
    return -1


@njit(cache=True, inline="always")
def end_reason(F, s):  # type: ignore[no-untyped-def]
    """fin, rst or idle, from the endpoint states."""
    o = F[s, L.D + L.ST]
    r = F[s, L.D + L.DSTRIDE + L.ST]
    if o == L.RESET or r == L.RESET:
        return L.END_RST
    if o == L.CLOSED or r == L.CLOSED:
        return L.END_FIN
    return L.END_IDLE


@njit(cache=True, inline="always")
def earliest_expiry(F, s, idle_us, short_idle_us):  # type: ignore[no-untyped-def]
    """The first time at which `expired` ends connection `s` if no packet comes before:
    `expired(F, s, t)` is >= 0 exactly when t >= this.  Only packets change it."""
    o = F[s, L.D + L.ST]
    r = F[s, L.D + L.DSTRIDE + L.ST]
    last = F[s, L.TS_LAST]
    t = last + (idle_us if F[s, L.LONG_TIMEOUT] else short_idle_us)
    if F[s, L.CLOSE_DL]:
        t = min(t, F[s, L.CLOSE_DL])
    if F[s, L.ATTEMPT_DL] and _attempt_pending(o, r):
        t = min(t, F[s, L.ATTEMPT_DL])
    if _half_closed_expiry_applies(F, s, o, r):
        t = min(t, last + EXPIRE_TIMER_US + 1)
    return t


@njit(cache=True, inline="always")
def syn_only_expiry(t, short_idle_us, attempt_us):  # type: ignore[no-untyped-def]
    """`earliest_expiry` of a connection whose only packet is a plain SYN at `t`: the
    originator SYN_SENT, the responder INACTIVE (both in the handshake: the short timeout),
    the attempt timer at t + attempt_us, nothing closed."""
    attempt = t + attempt_us
    expiry = t + short_idle_us
    if attempt != 0 and attempt < expiry:
        expiry = attempt
    return expiry


@njit(cache=True, inline="always")
def is_reuse(F, s, fl, seq32):  # type: ignore[no-untyped-def]
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
        if seq_delta(seq32, F[s, co + L.START]) == 0:
            return False
        if (
            (fl & ACK) == 0
            and F[s, co + L.ST] == L.SYN_ACK_SENT
            and F[s, r + L.ST] == L.INACTIVE
            and seq_delta(seq32, F[s, r + L.START]) == 0
        ):
            return False
    return True
