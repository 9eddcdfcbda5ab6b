"""Zeek's connection history letters (conn.log `history`), kept per connection in `H` (numba).

The letters, as Zeek writes them: upper case for the originator, lower case for the
responder (`RESPONDER_CASE` apart).  Once-only letters are guarded by the bits of
`layout.HSEEN` (Zeek's hist_seen; the responder's bits shifted by 16); repeatable ones
(S/H/F/R) and scaled ones (G/T/W, at 1, 10, 100, ... occurrences) keep their state in
the per-direction columns of `F`.
"""

from __future__ import annotations

from numba import njit

from rstlens.flows import layout as L
from rstlens.parsers._batch import ACK, FIN, RST, SYN

# --- the letters (Zeek's Connection::CheckHistory / AddHistory callers in TCP.cc) ----------
H_SYN = ord("S")  # a SYN without ACK
H_SYN_ACK = ord("H")  # a SYN-ACK ("handshake")
H_ACK = ord("A")  # a pure ACK
H_DATA = ord("D")  # payload
H_FIN = ord("F")
H_RST = ord("R")
H_FIN_RST = ord("I")  # FIN and RST in one packet ("inconsistent")
H_MULTI_FLAG = ord("Q")  # SYN with FIN or RST
H_GAP = ord("G")  # a content gap: the peer acknowledged data never seen
H_RETRANSMIT = ord("T")
H_ZERO_WINDOW = ord("W")
H_FLIPPED = ord("^")  # the roles were swapped (Zeek's FlipRoles, or WantConnection)
RESPONDER_CASE = ord("a") - ord("A")  # added to a letter of the responder

# --- once-per-direction bits (Zeek's Connection::CheckHistory masks) -----------------------
HIST_SYN = 0x1
HIST_FIN = 0x2
HIST_RST = 0x4
HIST_FIN_RST = 0x8
HIST_DATA = 0x10
HIST_ACK = 0x20
HIST_MULTI = 0x40
RESPONDER_SHIFT = 16  # the responder's bits in HSEEN


@njit(cache=True, inline="always")
def add_history(F, H, s, ch):  # type: ignore[no-untyped-def]
    """Zeek's Connection::AddHistory (history is capped at `layout.HMAX` letters)."""
    n = F[s, L.HLEN]
    if n < L.HMAX:
        H[s, n] = ch
        F[s, L.HLEN] = n + 1


@njit(cache=True, inline="always")
def check_history(F, H, s, is_orig, mask, ch):  # type: ignore[no-untyped-def]
    """Zeek's CheckHistory: add the letter the first time; True when it was seen before."""
    if not is_orig:
        mask = mask << RESPONDER_SHIFT
        ch = ch + RESPONDER_CASE
    if F[s, L.HSEEN] & mask:
        return True
    F[s, L.HSEEN] |= mask
    add_history(F, H, s, ch)
    return False


@njit(cache=True, inline="always")
def scaled_history(F, H, s, e, is_orig, ch, cnt_col, thr_col):  # type: ignore[no-untyped-def]
    """Zeek's ScaledHistoryEntry: the letter again at 1, 10, 100, ... occurrences."""
    F[s, e + cnt_col] += 1
    if F[s, e + thr_col] == 0:
        F[s, e + thr_col] = 1
    if F[s, e + cnt_col] == F[s, e + thr_col]:
        add_history(F, H, s, ch if is_orig else ch + RESPONDER_CASE)
        F[s, e + thr_col] *= 10


@njit(cache=True, inline="always")
def _repeatable_letter(F, H, s, e, is_orig, mask, ch, key, last_col):  # type: ignore[no-untyped-def]
    """S/H/F/R: again only when the sequence key differs from the last one of that kind."""
    if check_history(F, H, s, is_orig, mask, ch) and key != F[s, e + last_col]:
        add_history(F, H, s, ch if is_orig else ch + RESPONDER_CASE)
    F[s, e + last_col] = key


@njit(cache=True, inline="always")
def update_history(F, H, s, e, is_orig, fl, rel_seq, plen):  # type: ignore[no-untyped-def]
    """The flag and payload letters of one packet (Zeek's TCPSessionAdapter::UpdateHistory)."""
    syn = (fl & SYN) != 0
    fin = (fl & FIN) != 0
    rst = (fl & RST) != 0
    nbits = int(syn) + int(fin) + int(rst)
    if nbits > 1:
        if fin and rst:
            check_history(F, H, s, is_orig, HIST_FIN_RST, H_FIN_RST)
        else:
            check_history(F, H, s, is_orig, HIST_MULTI, H_MULTI_FLAG)
    elif nbits == 1:
        if syn:
            letter = H_SYN_ACK if fl & ACK else H_SYN
            _repeatable_letter(F, H, s, e, is_orig, HIST_SYN, letter, rel_seq, L.HIST_LAST_SYN)
        elif fin:
            _repeatable_letter(F, H, s, e, is_orig, HIST_FIN, H_FIN, rel_seq + plen, L.HIST_LAST_FIN)
        else:
            _repeatable_letter(F, H, s, e, is_orig, HIST_RST, H_RST, rel_seq, L.HIST_LAST_RST)
    elif plen > 0:
        check_history(F, H, s, is_orig, HIST_DATA, H_DATA)
    elif fl & ACK:
        check_history(F, H, s, is_orig, HIST_ACK, H_ACK)


@njit(cache=True)
def history_is_rstos0(F, H, s):  # type: ignore[no-untyped-def]
    """/^?S[^HAFGIQ]*R.*/ matched against the whole history (conn_state's RSTOS0 test)."""
    n = F[s, L.HLEN]
    i = 0
    if i < n and H[s, i] == H_FLIPPED:
        i += 1
    if i >= n or H[s, i] != H_SYN:
        return False
    i += 1
    while i < n:
        c = H[s, i]
        if c == H_RST:
            return True
        # H A F G I Q end the match (plain comparisons: no tuple in the kernel)
        if c == H_SYN_ACK or c == H_ACK or c == H_FIN or c == H_GAP:  # noqa: SIM109
            return False
        if c == H_FIN_RST or c == H_MULTI_FLAG:  # noqa: SIM109
            return False
        i += 1
    return False
