"""The surge kernel (numba): failed attempts counted into the tracked keys of `surges`.

Callers reach it through `rstlens.kernels` (compiled ahead of time when installed).  One
call takes a batch of attempts (a key, its address, a peer hash and a time each) and the
tracked keys so far, and leaves the `TRACKED` keys with the most attempts, with their
HyperLogLog registers: a pass to count the batch's keys in the prefilter's buckets, a
hash-map pass grouping the candidates with the tracked keys, a bounded selection and a
pass over the registers.  numpy had taken a sort, three `ufunc.at` and a dozen array passes
per 65,536 attempts (~8 ms a flush of a SYN flood, ~0.18 s of the 1 M-SYN benchmark).
"""

from __future__ import annotations

import numba
import numpy as np

_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min
# the columns of the per-distinct-key scratch `dv` (int64) and `dk` (uint64)
_ATTEMPTS, _FIRST, _LAST, _SLOT, _ROW, _OLD = range(6)
_KEY, _HI, _LO = range(3)


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(x):
    """splitmix64's finaliser (`surges._mix`)."""
    x = (x ^ (x >> np.uint64(30))) * _M2
    x = (x ^ (x >> np.uint64(27))) * _M3
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True, nogil=True, inline="always")
def _leading_zeros(x):
    """Leading zero bits of a nonzero uint64."""
    n = 0
    if (x >> np.uint64(32)) == 0:
        n += 32
        x = x << np.uint64(32)
    if (x >> np.uint64(48)) == 0:
        n += 16
        x = x << np.uint64(16)
    if (x >> np.uint64(56)) == 0:
        n += 8
        x = x << np.uint64(8)
    if (x >> np.uint64(60)) == 0:
        n += 4
        x = x << np.uint64(4)
    if (x >> np.uint64(62)) == 0:
        n += 2
        x = x << np.uint64(2)
    if (x >> np.uint64(63)) == 0:
        n += 1
    return n


@numba.njit(cache=True, nogil=True, inline="always")
def _slot(slots, dk, k, smask):
    """The map position of key `k`: where it is, or the empty one where it would go."""
    s = np.int64(_mix(k) & smask)
    while slots[s] >= 0 and dk[slots[s], _KEY] != k:
        s = (s + 1) & np.int64(smask)
    return s


@numba.njit(cache=True, nogil=True, inline="always")
def _better(dv, dk, a, b):
    """Distinct key `a` goes before `b`: more attempts, then the smaller key."""
    return dv[a, _ATTEMPTS] > dv[b, _ATTEMPTS] or (
        dv[a, _ATTEMPTS] == dv[b, _ATTEMPTS] and dk[a, _KEY] < dk[b, _KEY])


@numba.njit(cache=True, nogil=True)
def track_attempts(key, hi, lo, peer, ts, keys, khi, klo, attempts, first, last, hll, m,
                   hll_bits, buckets, slots, dk, dv, elem, sel, new_hll):
    """Count the attempts (`key`, `hi`/`lo` its address, `peer` the peer's hash, `ts`) into
    the `m` tracked keys (`keys`, `khi`/`klo`, `attempts`, `first`, `last`, `hll`: arrays of
    `TRACKED` rows) and return how many are tracked now, written over the same arrays, with
    their registers in `new_hll`.

    As `surges._Tracked` defines it: a batch's key is a candidate when its prefilter bucket
    (`buckets`, zeros, left zero) counts it twice or it is tracked already; the candidates'
    and the tracked keys' attempts, first and last times are summed per key; the `TRACKED`
    with the most attempts are kept (ties: the smaller key), in ascending key order; the
    registers of the kept ones take the batch's peers (register: the hash's top `hll_bits`
    bits; rank: the position of the first 1 bit in the rest).  Scratch: `slots` (-1, left
    -1: a power of two over twice the keys), `dk` and `dv` (a row per distinct key), `elem`
    (a row per attempt), `sel` (`TRACKED`)."""
    n = key.shape[0]
    cap = keys.shape[0]
    bmask = np.uint64(buckets.shape[0] - 1)
    smask = np.uint64(slots.shape[0] - 1)
    for i in range(n):
        buckets[np.int64(key[i] & bmask)] += 1
    d = 0
    for j in range(m):  # the tracked keys are candidates whatever the batch holds
        s = _slot(slots, dk, keys[j], smask)
        slots[s] = d
        dk[d, _KEY], dk[d, _HI], dk[d, _LO] = keys[j], khi[j], klo[j]
        dv[d, _ATTEMPTS], dv[d, _FIRST], dv[d, _LAST] = attempts[j], first[j], last[j]
        dv[d, _SLOT], dv[d, _ROW], dv[d, _OLD] = s, -1, j
        d += 1
    for i in range(n):
        k = key[i]
        s = _slot(slots, dk, k, smask)
        e = slots[s]
        if e < 0:
            if buckets[np.int64(k & bmask)] < 2:
                elem[i] = -1
                continue
            e = d
            slots[s] = e
            dk[e, _KEY], dk[e, _HI], dk[e, _LO] = k, hi[i], lo[i]
            dv[e, _ATTEMPTS], dv[e, _FIRST], dv[e, _LAST] = 0, _INT64_MAX, _INT64_MIN
            dv[e, _SLOT], dv[e, _ROW], dv[e, _OLD] = s, -1, -1
            d += 1
        dv[e, _ATTEMPTS] += 1
        if ts[i] < dv[e, _FIRST]:
            dv[e, _FIRST] = ts[i]
        if ts[i] > dv[e, _LAST]:
            dv[e, _LAST] = ts[i]
        elem[i] = e
    for i in range(n):
        buckets[np.int64(key[i] & bmask)] = 0
    # the `cap` best, kept in order best first (an insertion into at most `cap`)
    t = 0
    for e in range(d):
        if t == cap and not _better(dv, dk, e, sel[t - 1]):
            continue
        p = t if t < cap else cap - 1
        while p > 0 and _better(dv, dk, e, sel[p - 1]):
            sel[p] = sel[p - 1]
            p -= 1
        sel[p] = e
        if t < cap:
            t += 1
    for r in range(1, t):  # then in ascending key order
        e = sel[r]
        p = r
        while p > 0 and dk[sel[p - 1], _KEY] > dk[e, _KEY]:
            sel[p] = sel[p - 1]
            p -= 1
        sel[p] = e
    for r in range(t):
        e = sel[r]
        dv[e, _ROW] = r
        old = dv[e, _OLD]
        for g in range(new_hll.shape[1]):
            new_hll[r, g] = hll[old, g] if old >= 0 else 0
    low = np.uint64(hll_bits)
    high = np.uint64(64 - hll_bits)
    for i in range(n):
        e = elem[i]
        if e < 0 or dv[e, _ROW] < 0:
            continue
        h = _mix(peer[i])
        rest = h << low
        rank = 64 - hll_bits + 1 if rest == 0 else _leading_zeros(rest) + 1
        r = dv[e, _ROW]
        g = np.int64(h >> high)
        if rank > new_hll[r, g]:
            new_hll[r, g] = rank
    for r in range(t):
        e = sel[r]
        keys[r], khi[r], klo[r] = dk[e, _KEY], dk[e, _HI], dk[e, _LO]
        attempts[r], first[r], last[r] = dv[e, _ATTEMPTS], dv[e, _FIRST], dv[e, _LAST]
    for e in range(d):
        slots[dv[e, _SLOT]] = -1
    return t
