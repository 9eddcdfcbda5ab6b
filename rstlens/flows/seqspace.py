"""TCP sequence-number arithmetic for the flow kernels (numba): 32-bit wire values,
compared by signed distance (RFC 9293 3.4), and 64-bit unwrapped values."""

from __future__ import annotations

from numba import njit

MASK32 = 0xFFFF_FFFF
HALF_SPACE = 0x8000_0000  # distances of 2**31 and more count as negative
SEQ_SPACE = 1 << 32
# Unwrapped values start one sequence space up, so that they stay positive below the
# initial sequence number (Zeek's init_endpoint works on 64-bit values the same way).
UNWRAP_BASE = SEQ_SPACE


@njit(cache=True, inline="always")
def seq_delta(a, b):  # type: ignore[no-untyped-def]
    """Signed distance a - b in 32-bit sequence space."""
    d = (a - b) & MASK32
    if d >= HALF_SPACE:
        d -= SEQ_SPACE
    return d


@njit(cache=True, inline="always")
def unwrap(ref, x32):  # type: ignore[no-untyped-def]
    """Unwrap raw 32-bit `x32` to the 64-bit value nearest the unwrapped `ref`."""
    return ref + seq_delta(x32, ref & MASK32)
