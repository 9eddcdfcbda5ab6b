"""The flow table: an open-addressing hash table of TCP connections, in numba.

One int64 row per open connection in `F` (columns in `layout`), its key row in `K` (the
canonical key, two 128-bit addresses, and the hash and key words a lookup compares: one
cache line, `layout.K_*`), its Zeek history letters in `H`, and what the row holds in `A`
(`layout.ROW_*`: an embryonic connection keeps its SYN in `E` instead of F and H).  The hash table
`T` maps hash positions to rows (-1 empty); linear probing with backward-shift deletion,
so no tombstones accumulate on long captures.  Free rows are kept on a stack.

Finished connections are copied to the output matrices (`FO`, `KO`, `HO`) and their rows
freed; Python drains the output between kernel calls.  The matrices themselves are
allocated and grown by `engine.FlowTable`; callers reach these kernels through
`rstlens.kernels`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rstlens.flows.layout import (
    COLD_SEGMENT_LINE_0,
    COLD_SEGMENT_LINE_1,
    HOT_COLS,
    K_EXTRA,
    K_HASH,
    K_PORTS,
    K_TUNNEL,
    ROW_FREE,
    ROW_FULL,
)
from rstlens.kernels.prefetch import prefetch

# The key hash: boost's hash_combine over the key words (the golden-ratio constant), from
# the FNV-1a offset basis, then splitmix64's finaliser so that the low bits (the slot) mix.
_GOLDEN64 = np.uint64(0x9E3779B97F4A7C15)
_FNV_OFFSET_BASIS = np.uint64(0xCBF29CE484222325)
_SPLITMIX_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_SPLITMIX_MUL2 = np.uint64(0x94D049BB133111EB)
_NON_NEGATIVE = np.uint64(0x7FFFFFFFFFFFFFFF)  # hashes are int64 >= 0
_WORDS_PER_LINE = 8  # int64 per 64-byte cache line


@njit(cache=True, inline="always")
def _mix(h: np.uint64, x: np.uint64) -> np.uint64:
    h ^= x + _GOLDEN64 + (h << np.uint64(6)) + (h >> np.uint64(2))
    return h


@njit(cache=True)
def key_hash(a_hi, a_lo, b_hi, b_lo, ports, extra) -> np.int64:  # type: ignore[no-untyped-def]
    h = _FNV_OFFSET_BASIS
    h = _mix(h, np.uint64(a_hi))
    h = _mix(h, np.uint64(a_lo))
    h = _mix(h, np.uint64(b_hi))
    h = _mix(h, np.uint64(b_lo))
    h = _mix(h, np.uint64(ports))
    h = _mix(h, np.uint64(extra))
    # final avalanche (splitmix64)
    h ^= h >> np.uint64(30)
    h *= _SPLITMIX_MUL1
    h ^= h >> np.uint64(27)
    h *= _SPLITMIX_MUL2
    h ^= h >> np.uint64(31)
    return np.int64(h & _NON_NEGATIVE)


@njit(cache=True, inline="always")
def lookup(T, K, h, a_hi, a_lo, b_hi, b_lo, ports, extra, tunnel):  # type: ignore[no-untyped-def]
    """Return (position in T, row) of the key; row is -1 and position is the free
    position where it would be inserted when absent.  Reads K only (one line a row)."""
    mask = T.shape[0] - 1
    pos = h & mask
    # K is uint64: the int64 words are compared as their bit patterns (no float promotion)
    hu, pu, eu, tu = np.uint64(h), np.uint64(ports), np.uint64(extra), np.uint64(tunnel)
    while True:
        s = T[pos]
        if s < 0:
            return pos, -1
        if (
            K[s, K_HASH] == hu
            and K[s, K_PORTS] == pu
            and K[s, K_EXTRA] == eu
            and K[s, K_TUNNEL] == tu
            and K[s, 0] == a_hi
            and K[s, 1] == a_lo
            and K[s, 2] == b_hi
            and K[s, 3] == b_lo
        ):
            return pos, s
        pos = (pos + 1) & mask


@njit(cache=True)
def remove(T, K, s) -> None:  # type: ignore[no-untyped-def]
    """Delete row `s` from the hash table (backward-shift deletion)."""
    mask = T.shape[0] - 1
    i = np.int64(K[s, K_HASH]) & mask
    while T[i] != s:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        t = T[j]
        if t < 0:
            break
        k = np.int64(K[t, K_HASH]) & mask
        # The entry at j may move to the hole at i unless its home k lies cyclically in (i, j].
        if i <= j:
            if i < k <= j:
                continue
        elif i < k or k <= j:
            continue
        T[i] = t
        i = j
    T[i] = -1


@njit(cache=True)
def rebuild(T, K, A) -> None:  # type: ignore[no-untyped-def]
    """Re-insert every row in use (after the table grew)."""
    for i in range(T.shape[0]):
        T[i] = -1
    mask = T.shape[0] - 1
    for s in range(A.shape[0]):
        if A[s] != ROW_FREE:
            pos = np.int64(K[s, K_HASH]) & mask
            while T[pos] >= 0:
                pos = (pos + 1) & mask
            T[pos] = s


@njit(cache=True, inline="always")
def prefetch_position(T, h) -> None:  # type: ignore[no-untyped-def]
    """Start loading the hash-table slot `lookup` will read first for hash `h`."""
    prefetch(T, (h & (T.shape[0] - 1),))


@njit(cache=True, inline="always")
def prefetch_row(T, F, K, A, E, X, h) -> None:  # type: ignore[no-untyped-def]
    """Start loading the row the slot for hash `h` points to; the slot itself should have
    been prefetched earlier.  Its key row, and then what the packet will read: a full row's
    hot lines and the two cold lines every segment updates (`layout.COLD_SEGMENT_LINE_*`);
    an embryonic or reset row's SYN line (E) and RST line (X), not F lines it does not use
    (A is one byte per row: in cache even for a scan's ~300,000 open rows)."""
    s = T[h & (T.shape[0] - 1)]
    if s >= 0:
        prefetch(K, (s, 0))
        if A[s] == ROW_FULL:
            for c in range(0, HOT_COLS, _WORDS_PER_LINE):  # rows start on a line
                prefetch(F, (s, c))
            prefetch(F, (s, COLD_SEGMENT_LINE_0))
            prefetch(F, (s, COLD_SEGMENT_LINE_1))
        else:
            prefetch(E, (s, 0))
            prefetch(X, (s, 0))


# --------------------------------------------------------------------------- rows
# Element loops, not slice assignments: slices are array views, which need numba's
# reference-counting runtime, and the ahead-of-time kernels are built without it.
@njit(cache=True, inline="always")
def copy_row(dst, i, src, j):  # type: ignore[no-untyped-def]
    """dst[i] = src[j], for the output matrices."""
    for c in range(src.shape[1]):
        dst[i, c] = src[j, c]


@njit(cache=True, inline="always")
def fill_row(M, i, value):  # type: ignore[no-untyped-def]
    """M[i] = value: a new connection's row, a new RST's row."""
    for c in range(M.shape[1]):
        M[i, c] = value
