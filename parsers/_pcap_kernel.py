"""Record-level kernels (numba): the classic-pcap record walk of rstlens' own stream
reader (`_pcapfile`), and the unpacking of libpcap's batch metadata (`_libpcap`).

Callers reach it through `rstlens.kernels` (compiled ahead of time when installed).
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


@numba.njit(cache=True, nogil=True)
def libpcap_meta(meta, first_frame, out):
    """pcapy-ng `next_batch` metadata, (k, 4) rows of [seconds, microseconds, offset,
    captured length], into `out` (4, k): offsets, captured lengths, timestamps (µs) and
    frame numbers from `first_frame`.  Returns (the largest microseconds field, the
    captured bytes)."""
    top = np.int64(0)
    total = np.int64(0)
    for i in range(meta.shape[0]):
        sub = np.int64(meta[i, 1])
        if sub > top:
            top = sub
        cap = np.int64(meta[i, 3])
        out[0, i] = meta[i, 2]
        out[1, i] = cap
        out[2, i] = np.int64(meta[i, 0]) * 1_000_000 + sub
        out[3, i] = first_frame + i
        total += cap
    return top, total
