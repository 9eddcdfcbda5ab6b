"""Zeek's TCP endpoint state machine and conn_state (numba).

`update_state_machine` mirrors TCPSessionAdapter::UpdateStateMachine in Zeek's
src/analyzer/protocol/tcp/TCP.cc: the sending endpoint's state picks one function, as
Zeek's switch does (Update{Inactive,SYN_Sent,Established,Closed,Reset}State; SYN_SENT and
SYN_ACK_SENT share one, PARTIAL and ESTABLISHED another).  `conn_state` is the decision
table of conn_state() in scripts/base/protocols/conn/main.zeek.
"""

from __future__ import annotations

from numba import njit

from rstlens.flows import layout as L
from rstlens.flows.endpoint import endpoint_size
from rstlens.flows.history import H_FLIPPED, add_history, history_is_rstos0
from rstlens.parsers._batch import ACK, FIN, RST, SYN

# conn_state codes, in the order of output.schema.CONN_STATES
S0, S1, SF, REJ, S2, S3, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR, OTH = range(13)


@njit(cache=True, inline="always")
def set_state(F, s, e, st):  # type: ignore[no-untyped-def]
    """Zeek's TCP_Endpoint::SetState: the previous state is kept when the state changes."""
    old = F[s, e + L.ST]
    if old != st:
        F[s, e + L.PREV_ST] = old
        F[s, e + L.ST] = st


@njit(cache=True)
def flip_roles(F, H, s):  # type: ignore[no-untyped-def]
    """Zeek's FlipRoles: swap the endpoints (not hist_seen) and note '^'."""
    a = L.D
    b = L.D + L.DSTRIDE
    for k in L.DIR_FIELDS:
        tmp = F[s, a + k]
        F[s, a + k] = F[s, b + k]
        F[s, b + k] = tmp
    F[s, L.ORIG_IS_A] = 1 - F[s, L.ORIG_IS_A]
    add_history(F, H, s, H_FLIPPED)


# --------------------------------------------------------------------------- per state
# Each returns whether the connection closed on this packet (Zeek's ConnectionClosed).
@njit(cache=True, inline="always")
def _inactive_state(F, H, s, e, p, is_orig, syn, fin, rst, ack, pst, plen, ts, attempt_us):  # type: ignore[no-untyped-def]
    """Zeek's UpdateInactiveState.  Returns (closed, flipped): a SYN answering the peer's
    earlier SYN-ACK makes its sender the originator."""
    flipped = False
    if syn:
        if is_orig:
            set_state(F, s, e, L.SYN_ACK_SENT if ack else L.SYN_SENT)
            if F[s, L.ATTEMPT_DL] == 0:
                F[s, L.ATTEMPT_DL] = ts + attempt_us
        else:
            if not ack and pst == L.SYN_ACK_SENT:
                flip_roles(F, H, s)
                flipped = True
                e, p = p, e  # the blocks moved with the roles
                set_state(F, s, p, L.ESTABLISHED)
            if F[s, p + L.ST] == L.SYN_SENT:
                set_state(F, s, p, L.ESTABLISHED)
            set_state(F, s, e, L.ESTABLISHED)
    closed = False
    if fin:
        set_state(F, s, e, L.CLOSED)
        closed = True
    if rst:
        set_state(F, s, e, L.RESET)
        closed = True
    if F[s, e + L.ST] == L.INACTIVE:
        if not is_orig and plen == 0 and F[s, L.D + L.ST] == L.SYN_SENT:
            pass  # the responder ACKs the SYN before its SYN-ACK
        elif ack and F[s, p + L.ST] == L.ESTABLISHED:
            set_state(F, s, e, L.ESTABLISHED)
        else:
            set_state(F, s, e, L.PARTIAL)
    return closed, flipped


@njit(cache=True, inline="always")
def _syn_sent_state(F, s, e, fin, rst):  # type: ignore[no-untyped-def]
    """Zeek's UpdateSYN_SentState (SYN_SENT and SYN_ACK_SENT)."""
    closed = False
    if fin:
        set_state(F, s, e, L.CLOSED)
        closed = True
    if rst:
        set_state(F, s, e, L.RESET)
        closed = True
    return closed


@njit(cache=True, inline="always")
def _established_state(F, s, e, p, st, pst, syn, fin, rst, ack):  # type: ignore[no-untyped-def]
    """Zeek's UpdateEstablishedState (ESTABLISHED and PARTIAL)."""
    if syn and st == L.PARTIAL and pst == L.INACTIVE and not ack:
        set_state(F, s, e, L.SYN_SENT)
    if fin and not rst:
        set_state(F, s, e, L.CLOSED)
        if F[s, p + L.ST] == L.RESET and F[s, p + L.PREV_ST] == L.CLOSED:
            set_state(F, s, p, L.CLOSED)
        return True
    if rst:
        set_state(F, s, e, L.RESET)
        return True
    return False


@njit(cache=True, inline="always")
def _closed_state(F, s, e, pst, rst):  # type: ignore[no-untyped-def]
    """Zeek's UpdateClosedState: an RST after our FIN resets us (closing again only if the
    FIN did not already)."""
    if rst and pst != L.CLOSED:
        closed = F[s, e + L.DID_CLOSE] == 0
        set_state(F, s, e, L.RESET)
        return closed
    return False


@njit(cache=True, inline="always")
def _handshake_state(st):  # type: ignore[no-untyped-def]
    return st == L.INACTIVE or st == L.SYN_SENT or st == L.SYN_ACK_SENT


@njit(cache=True, inline="always")
def update_state_machine(F, H, s, e, p, is_orig, fl, plen, ts, attempt_us):  # type: ignore[no-untyped-def]
    """Zeek's UpdateStateMachine: the sending endpoint's state function.  Returns (closed,
    flipped); after a flip the caller's `e`/`p` blocks belong to the other side."""
    st = F[s, e + L.ST]
    pst = F[s, p + L.ST]
    syn = (fl & SYN) != 0
    fin = (fl & FIN) != 0
    rst = (fl & RST) != 0
    ack = (fl & ACK) != 0
    closed = False
    flipped = False
    if st == L.INACTIVE:
        closed, flipped = _inactive_state(
            F, H, s, e, p, is_orig, syn, fin, rst, ack, pst, plen, ts, attempt_us
        )
    elif st == L.SYN_SENT or st == L.SYN_ACK_SENT:
        closed = _syn_sent_state(F, s, e, fin, rst)
    elif st == L.ESTABLISHED or st == L.PARTIAL:
        closed = _established_state(F, s, e, p, st, pst, syn, fin, rst, ack)
    elif st == L.CLOSED:
        closed = _closed_state(F, s, e, pst, rst)
    # RESET: Zeek's UpdateResetState changes no state
    if F[s, L.LONG_TIMEOUT] == 0 and not (
        _handshake_state(F[s, L.D + L.ST]) and _handshake_state(F[s, L.D + L.DSTRIDE + L.ST])
    ):
        F[s, L.LONG_TIMEOUT] = 1  # Zeek's tcp_inactivity_timeout from now on
    return closed, flipped


@njit(cache=True, inline="always")
def connection_closed(F, s, e, p, close_us):  # type: ignore[no-untyped-def]
    """Zeek's ConnectionClosed: the close timer starts once the close is complete (both
    sides closed, a reset, or a silent peer)."""
    F[s, e + L.DID_CLOSE] = 1
    if (
        F[s, e + L.ST] == L.RESET
        or F[s, p + L.DID_CLOSE] == 1
        or F[s, p + L.ST] == L.INACTIVE
    ) and F[s, L.CLOSE_DL] == 0:
        F[s, L.CLOSE_DL] = F[s, L.TS_LAST] + close_us


# --------------------------------------------------------------------------- conn_state
@njit(cache=True)
def conn_state(F, H, s):  # type: ignore[no-untyped-def]
    """Zeek's conn_state() over the two endpoint states, first matching row wins:

    ==============  ==============  ====================================================
    responder       originator      conn_state
    ==============  ==============  ====================================================
    RESET           SYN_(ACK_)SENT  REJ
    RESET           RESET           REJ if neither side sent data
    RESET           inactive [1]    RSTRH, else RSTR
    any             RESET           RSTO; if the responder is inactive: RSTOS0 when the
                                    history is /^?S[^HAFGIQ]*R.*/, else OTH
    CLOSED          CLOSED          SF
    any             CLOSED          SH if the responder is inactive, else S2
    CLOSED          any             SHR if the originator is inactive, else S3
    INACTIVE        SYN_SENT        S0
    ESTABLISHED     ESTABLISHED     S1
    otherwise                       OTH
    ==============  ==============  ====================================================

    [1] inactive: INACTIVE or PARTIAL."""
    os_ = F[s, L.D + L.ST]
    rs = F[s, L.D + L.DSTRIDE + L.ST]
    o_inactive = os_ == L.INACTIVE or os_ == L.PARTIAL
    r_inactive = rs == L.INACTIVE or rs == L.PARTIAL
    if rs == L.RESET:
        if os_ == L.SYN_SENT or os_ == L.SYN_ACK_SENT or (
            os_ == L.RESET and endpoint_size(F, s, 0) == 0 and endpoint_size(F, s, 1) == 0
        ):
            return REJ
        return RSTRH if o_inactive else RSTR
    if os_ == L.RESET:
        if not r_inactive:
            return RSTO
        return RSTOS0 if history_is_rstos0(F, H, s) else OTH
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
