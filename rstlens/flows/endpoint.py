"""One side's sequence space, as Zeek's TCP_Endpoint keeps it (numba).

Side X of connection s lives in columns ``e + X`` of `F` (``e = layout.D + d * DSTRIDE``);
sequence numbers are unwrapped to 64 bits (`seqspace`) and kept relative to START.
"""

from __future__ import annotations

from numba import njit

from rstlens.flows import layout as L
from rstlens.flows.history import H_GAP, H_RETRANSMIT, scaled_history
from rstlens.flows.seqspace import UNWRAP_BASE, seq_delta, unwrap
from rstlens.parsers._batch import SYN

# Zeek's TOO_LARGE_SEQ_DELTA: update_last_seq ignores a SYN or RST this far from last_seq
TOO_LARGE_SEQ_DELTA = 1 << 20
# an ACK field of 0 that would move ack_seq this far ahead is an unset field, not an ACK
BOGUS_ZERO_ACK = 1 << 20
GAP_MIN_ACK = 2  # 'G' needs an acknowledgement past the SYN and the first byte


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
def init_endpoint(F, s, e, seq32, seg_len, fl):  # type: ignore[no-untyped-def]
    """Zeek's init_endpoint: (re)start a side's sequence space."""
    st = F[s, e + L.ST]
    syn = (fl & SYN) != 0
    base = seq32 + UNWRAP_BASE
    if st == L.INACTIVE:
        _init_seq(F, s, e, base, base + seg_len, syn)
    elif syn:
        if st == L.SYN_SENT or st == L.SYN_ACK_SENT:
            if seq_delta(seq32, F[s, e + L.START]) != 0:
                _init_seq(F, s, e, base, base + seg_len, True)
        elif st == L.ESTABLISHED or st == L.PARTIAL or (st == L.RESET and F[s, e + L.PREV_ST] == L.INACTIVE):
            _init_seq(F, s, e, base, base + seg_len, True)


@njit(cache=True, inline="always")
def ack_peer(F, s, p, ack32, rst):  # type: ignore[no-untyped-def]
    """The packet acknowledges the peer's data up to `ack32` (Zeek's Process: the ack_seq
    update, and init of an inactive peer from the ACK).  Returns the relative ack."""
    if F[s, p + L.ST] == L.INACTIVE:
        base = ack32 + UNWRAP_BASE - 1
        F[s, p + L.START] = base
        F[s, p + L.ACKD] = base
        F[s, p + L.LAST] = base
        F[s, p + L.CONTIG] = 1
        F[s, p + L.ABOVE_S] = 0
        F[s, p + L.ABOVE_E] = 0
        return 1
    ack_unw = unwrap(F[s, p + L.ACKD], ack32)
    rel_ack = ack_unw - F[s, p + L.START]
    if rel_ack < 0:
        rel_ack = 0
    bogus_zero = ack32 == 0 and ack_unw - F[s, p + L.ACKD] > BOGUS_ZERO_ACK
    if not rst and not bogus_zero and ack_unw > F[s, p + L.ACKD]:
        F[s, p + L.ACKD] = ack_unw
    return rel_ack


@njit(cache=True, inline="always")
def update_last_seq(F, H, s, e, is_orig, syn, fin, rst, plen, end_unw):  # type: ignore[no-untyped-def]
    """Zeek's update_last_seq, and the retransmission letter 'T' when data did not advance."""
    delta = end_unw - F[s, e + L.LAST]
    if (syn or rst) and (delta > TOO_LARGE_SEQ_DELTA or delta < -TOO_LARGE_SEQ_DELTA):
        pass
    elif fin and F[s, e + L.LAST] == F[s, e + L.START] + 1:
        F[s, e + L.LAST] = end_unw
    elif F[s, e + L.ST] == L.RESET:
        pass
    elif delta > 0:
        F[s, e + L.LAST] = end_unw
    elif plen > 0:
        scaled_history(F, H, s, e, is_orig, H_RETRANSMIT, L.RXMT_CNT, L.RXMT_THRESH)


@njit(cache=True)
def endpoint_size(F, s, d):  # type: ignore[no-untyped-def]
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


@njit(cache=True, inline="always")
def data_sent(F, s, e, rel, plen):  # type: ignore[no-untyped-def]
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
def ack_received(F, H, s, p, p_is_orig, rel_ack):  # type: ignore[no-untyped-def]
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
    if o_ok and r_ok and rel_ack > GAP_MIN_ACK:
        scaled_history(F, H, s, p, p_is_orig, H_GAP, L.GAP_CNT, L.GAP_THRESH)
    F[s, p + L.CONTIG] = rel_ack
    if F[s, p + L.ABOVE_S] and F[s, p + L.ABOVE_E] <= rel_ack:
        F[s, p + L.ABOVE_S] = 0
        F[s, p + L.ABOVE_E] = 0
