"""Record kernels (numba): per-connection text and hashes for flows.parquet.

Callers reach them through `rstlens.kernels` (compiled ahead of time when installed).
Both replace per-connection Python calls that cost more than the work itself: address
text (a numpy pass per octet and per step) and SHA-1 for Community IDs (hashlib's call
overhead was ~80% of the hashing; the inputs are one short block each).
"""

from __future__ import annotations

import numba
import numpy as np

_M32 = 0xFFFF_FFFF
_MAPPED = np.uint64(0xFFFF)


@numba.njit(cache=True, nogil=True, inline="always")
def _put_octet(chars, i, pos, v):
    if v >= 100:
        chars[i, pos] = 48 + v // 100
        pos += 1
    if v >= 10:
        chars[i, pos] = 48 + (v // 10) % 10
        pos += 1
    chars[i, pos] = 48 + v % 10
    return pos + 1


@numba.njit(cache=True, nogil=True)
def ipv4_text(hi, lo, chars):
    """Dotted quads of the IPv4 (mapped) addresses among `hi`/`lo` into the rows of
    `chars` (n, >= 15), NUL after the text; IPv6 rows are left as they are."""
    for i in range(hi.shape[0]):
        if hi[i] != 0 or (lo[i] >> np.uint64(32)) != _MAPPED:
            continue
        a = np.int64(lo[i] & np.uint64(_M32))
        pos = 0
        for shift in (24, 16, 8):
            pos = _put_octet(chars, i, pos, (a >> shift) & 255)
            chars[i, pos] = 46  # "."
            pos += 1
        pos = _put_octet(chars, i, pos, a & 255)
        if pos < chars.shape[1]:
            chars[i, pos] = 0


@numba.njit(cache=True, nogil=True, inline="always")
def _rotl(x, n):
    return ((x << n) | (x >> (32 - n))) & _M32


@numba.njit(cache=True, nogil=True)
def sha1_rows(msgs, out, w):
    """SHA-1 (FIPS 180-4) of each row of `msgs` (n, width <= 55 bytes: one block each)
    into the rows of `out` (n, 20).  `w` is scratch for the message schedule (80,)."""
    n, width = msgs.shape
    for r in range(n):
        for t in range(16):
            w[t] = 0
        for j in range(width):
            w[j >> 2] |= np.int64(msgs[r, j]) << (24 - 8 * (j & 3))
        w[width >> 2] |= np.int64(0x80) << (24 - 8 * (width & 3))
        w[15] = width * 8  # length in bits (the high word, w[14], stays 0)
        for t in range(16, 80):
            w[t] = _rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
        h0, h1, h2, h3, h4 = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0
        a, b, c, d, e = h0, h1, h2, h3, h4
        for t in range(80):
            if t < 20:
                f = (b & c) | ((~b & _M32) & d)
                k = 0x5A827999
            elif t < 40:
                f = b ^ c ^ d
                k = 0x6ED9EBA1
            elif t < 60:
                f = (b & c) | (b & d) | (c & d)
                k = 0x8F1BBCDC
            else:
                f = b ^ c ^ d
                k = 0xCA62C1D6
            temp = (_rotl(a, 5) + f + e + k + w[t]) & _M32
            e = d
            d = c
            c = _rotl(b, 30)
            b = a
            a = temp
        h0 = (h0 + a) & _M32
        h1 = (h1 + b) & _M32
        h2 = (h2 + c) & _M32
        h3 = (h3 + d) & _M32
        h4 = (h4 + e) & _M32
        for q, h in enumerate((h0, h1, h2, h3, h4)):
            out[r, 4 * q] = (h >> 24) & 255
            out[r, 4 * q + 1] = (h >> 16) & 255
            out[r, 4 * q + 2] = (h >> 8) & 255
            out[r, 4 * q + 3] = h & 255
