"""The classic-pcap record walk (numba), for rstlens' own stream reader (`_pcapfile`).

Callers reach it through `rstlens._kernels` (compiled ahead of time when installed).
"""

from __future__ import annotations

import numba
import numpy as np

from ._pcapfile import ABSURD, FULL, NEED_MORE


@numba.njit(cache=True, nogil=True, inline="always")
def _u32(b, i, swap):
    if swap:
        return (
            (np.int64(b[i]) << 24) | (np.int64(b[i + 1]) << 16) | (np.int64(b[i + 2]) << 8)
        ) | np.int64(b[i + 3])
    return (
        (np.int64(b[i + 3]) << 24) | (np.int64(b[i + 2]) << 16) | (np.int64(b[i + 1]) << 8)
    ) | np.int64(b[i])


@numba.njit(cache=True, nogil=True)
def walk_pcap(buf, pos, swap, div, rec_len, limit, maxn, offs, caps, ts):
    """Walk classic-pcap records in `buf` from `pos`: up to `maxn` whole records.

    Returns (records found, position after them, outcome): FULL when `maxn` were found,
    ABSURD when the record at the returned position claims more than `limit` bytes,
    NEED_MORE when the buffer ends (the returned position starts the partial record).
    """
    n = buf.shape[0]
    k = 0
    while k < maxn:
        if n - pos < rec_len:
            return k, pos, NEED_MORE
        caplen = _u32(buf, pos + 8, swap)
        if caplen > limit:
            return k, pos, ABSURD
        if n - pos - rec_len < caplen:
            return k, pos, NEED_MORE
        offs[k] = pos + rec_len
        caps[k] = caplen
        ts[k] = _u32(buf, pos, swap) * 1_000_000 + _u32(buf, pos + 4, swap) // div
        pos += rec_len + caplen
        k += 1
    return k, pos, FULL
