"""Record kernels (numba): per-connection text and hashes for flows.parquet.

Callers reach them through `rstlens.kernels` (compiled ahead of time when installed).
Each writes a whole text column in one pass, where numpy had taken a pass (and a
temporary array) per octet, digit or byte column, and Python calls had cost more than the
work itself (hashlib's call overhead was ~80% of the Community ID hashing: the inputs are
one short block each): uids, Community IDs, address text, history letters, and string
columns taken by index.  The string kernels write Arrow's layout (int32 offsets, bytes).
"""

from __future__ import annotations

import numba
import numpy as np

_M32 = 0xFFFF_FFFF
_MAPPED = np.uint64(0xFFFF)
_ZERO = np.uint64(0)


@numba.njit(cache=True, nogil=True, inline="always")
def _rotl(x, n):
    return ((x << n) | (x >> (32 - n))) & _M32


@numba.njit(cache=True, nogil=True)
def sha1_rows(msgs, out, w):
    """SHA-1 (FIPS 180-4) of each row of `msgs` (n, width <= 55 bytes: one block each)
    into the rows of `out` (n, 20).  `w` is scratch for the message schedule (80,)."""
    n, width = msgs.shape
    for r in range(n):
        h = _sha1_block(msgs[r], width, w)
        for q in range(5):
            out[r, 4 * q] = (h[q] >> 24) & 255
            out[r, 4 * q + 1] = (h[q] >> 16) & 255
            out[r, 4 * q + 2] = (h[q] >> 8) & 255
            out[r, 4 * q + 3] = h[q] & 255


# --- whole text columns, one pass each (issue 22 §1: numpy built these a digit, a byte
# column or an octet at a time, with a temporary array per step) ---------------------------

_U64 = np.uint64


@numba.njit(cache=True, nogil=True, inline="always")
def _splitmix(x):
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


# The digit alphabets, looked up: a digest's or a uid's digits are random, so branches on
# their ranges had been mispredicted (~2/3 of the uid's time), and the branchless sums that
# replaced them took 6-12 operations a character; a load from a table is one (uids ~31%
# faster; Community IDs ~20%, with the schedule of `_sha1_words_2`).  numba freezes a
# global array into the compiled code.
_BASE62 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", np.uint8).copy()
_BASE64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8).copy()


@numba.njit(cache=True, nogil=True)
def uid_chars(serials, first_ts, hashes, chars):
    """Zeek-style uids into the rows of `chars` (n, 18): "C", 8 base62 digits of
    a = splitmix(serial ^ splitmix(first_ts)), 9 of b = splitmix(a ^ hash), low first."""
    for i in range(serials.shape[0]):
        a = _splitmix(_U64(serials[i]) ^ _splitmix(_U64(first_ts[i])))
        b = _splitmix(a ^ _U64(hashes[i]))
        chars[i, 0] = 67  # "C"
        w = a
        for d in range(1, 9):
            chars[i, d] = _BASE62[w % _U64(62)]
            w = w // _U64(62)
        w = b
        for d in range(9, 18):
            chars[i, d] = _BASE62[w % _U64(62)]
            w = w // _U64(62)


@numba.njit(cache=True, nogil=True, inline="always")
def _sha1_block(msg, width, w):
    """SHA-1 of msg[:width] (width <= 55: one block) as its five 32-bit words."""
    for t in range(16):
        w[t] = 0
    for j in range(width):
        w[j >> 2] |= np.int64(msg[j]) << (24 - 8 * (j & 3))
    w[width >> 2] |= np.int64(0x80) << (24 - 8 * (width & 3))
    w[15] = width * 8
    return _sha1_words(w)


@numba.njit(cache=True, nogil=True, inline="always")
def _sha1_words(w):
    """SHA-1 of one padded block whose 16 big-endian words are w[:16] (`w`: 80 long, the
    rest the schedule), as its five 32-bit words: `_sha1_words_2` with the block as both
    (one hash's work twice, for the odd row of a call and the test kernel)."""
    h = _sha1_words_2(w, w)
    return h[0], h[1], h[2], h[3], h[4]


@numba.njit(cache=True, nogil=True, inline="always")
def _put_base64(out, i, at, word):
    """The 24 low bits of `word` as 4 base64 characters at out[i, at:at + 4]."""
    out[i, at] = _BASE64[(word >> 18) & 63]
    out[i, at + 1] = _BASE64[(word >> 12) & 63]
    out[i, at + 2] = _BASE64[(word >> 6) & 63]
    out[i, at + 3] = _BASE64[word & 63]


@numba.njit(cache=True, nogil=True, inline="always")
def _message_tail(w, at, prev, ports, nbytes):
    """The SHA-1 block's words from w[at] on, after the address words: the last address's
    low 2 bytes (`prev`) with protocol 6 and the zero byte, the two ports, the padding bit,
    zeros, and the message length in bits (`nbytes`: 16 for IPv4, 40 for IPv6)."""
    w[at] = ((prev & 0xFFFF) << 16) | 0x0600
    w[at + 1] = ports
    w[at + 2] = 0x8000_0000
    for t in range(at + 3, 15):
        w[t] = 0
    w[15] = nbytes * 8


_CHOOSE, _PARITY, _MAJORITY = 0, 1, 2  # SHA-1's round functions (FIPS 180-4 §4.1.1)


@numba.njit(cache=True, nogil=True, inline="always")
def _round_function(kind, b, c, d):
    """Ch, Parity or Maj of b, c, d (`kind` is a constant where it is inlined: no test)."""
    if kind == _CHOOSE:
        return (b & c) | ((~b & _M32) & d)
    if kind == _MAJORITY:
        return (b & c) | (b & d) | (c & d)
    return b ^ c ^ d


@numba.njit(cache=True, nogil=True, inline="always")
def _twenty_rounds_2(kind, k, start, w, v, x):
    """Rounds start..start + 19 of two SHA-1 chains (`x`: their working variables a..e of
    the first, then the second's) with round function `kind` and constant `k`."""
    a, b, c, d, e, p, q, r, s, u = x
    for t in range(start, start + 20):
        ta = (_rotl(a, 5) + _round_function(kind, b, c, d) + e + k + w[t]) & _M32
        tp = (_rotl(p, 5) + _round_function(kind, q, r, s) + u + k + v[t]) & _M32
        e, d, c, b, a = d, c, _rotl(b, 30), a, ta
        u, s, r, q, p = s, r, _rotl(q, 30), p, tp
    return a, b, c, d, e, p, q, r, s, u


@numba.njit(cache=True, nogil=True, inline="always")
def _sha1_words_2(w, v):
    """SHA-1 of two padded blocks at once (`w`, `v`: 80 words each, the first 16 given; the
    rest their schedules), as the first's five 32-bit words then the second's: each round of
    a hash depends on the one before, so two independent chains side by side keep the CPU's
    units busy (~24% less time per hash than one at a time).  The message schedules are
    made first, both in one loop: made inside the rounds as each needed its word, the hash
    took ~8% longer (a store into one schedule there may alias the other's words, `w` and
    `v` being one array for `_sha1_words`, which keeps them from staying in registers)."""
    for t in range(16, 80):
        w[t] = _rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
        v[t] = _rotl(v[t - 3] ^ v[t - 8] ^ v[t - 14] ^ v[t - 16], 1)
    h0, h1, h2, h3, h4 = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0
    x = (h0, h1, h2, h3, h4, h0, h1, h2, h3, h4)
    x = _twenty_rounds_2(_CHOOSE, 0x5A827999, 0, w, v, x)
    x = _twenty_rounds_2(_PARITY, 0x6ED9EBA1, 20, w, v, x)
    x = _twenty_rounds_2(_MAJORITY, 0x8F1BBCDC, 40, w, v, x)
    a, b, c, d, e, p, q, r, s, u = _twenty_rounds_2(_PARITY, 0xCA62C1D6, 60, w, v, x)
    return ((h0 + a) & _M32, (h1 + b) & _M32, (h2 + c) & _M32, (h3 + d) & _M32, (h4 + e) & _M32,
            (h0 + p) & _M32, (h1 + q) & _M32, (h2 + r) & _M32, (h3 + s) & _M32, (h4 + u) & _M32)


@numba.njit(cache=True, nogil=True, inline="always")
def _community_block(K, ports, i, w):
    """The Community ID's SHA-1 block of key row `i` as its 16 words in w[:16]: seed (2
    zero bytes), the addresses (4 bytes each when both ends are IPv4, else 16), protocol 6,
    a zero byte and the two ports, big-endian, made from the key's words directly."""
    p = np.int64(ports[i] & 0xFFFF_FFFF)  # port A << 16 | port B
    if (K[i, 0] == _ZERO and (K[i, 1] >> _U64(32)) == _MAPPED
            and K[i, 2] == _ZERO and (K[i, 3] >> _U64(32)) == _MAPPED):  # fmt: skip
        a = np.int64(K[i, 1] & _U64(_M32))
        b = np.int64(K[i, 3] & _U64(_M32))
        w[0] = a >> 16
        w[1] = ((a & 0xFFFF) << 16) | (b >> 16)
        _message_tail(w, 2, b, p, 16)
    else:
        # the 32 address bytes as 8 words s0..s7, shifted 2 bytes by the seed
        prev = 0
        for c in range(4):
            for half in range(2):
                s = np.int64((K[i, c] >> _U64(32 * (1 - half))) & _U64(_M32))
                t = 2 * c + half
                w[t] = ((prev & 0xFFFF) << 16) | (s >> 16) if t else s >> 16
                prev = s
        _message_tail(w, 8, prev, p, 40)


@numba.njit(cache=True, nogil=True, inline="always")
def _community_text(out, i, h0, h1, h2, h3, h4):
    """ "1:" and the base64 of the digest (h0..h4) into out[i]."""
    out[i, 0] = 49  # "1"
    out[i, 1] = 58  # ":"
    # 20 digest bytes in 7 groups of 3 (the last padded with a zero byte)
    _put_base64(out, i, 2, h0 >> 8)
    _put_base64(out, i, 6, ((h0 & 0xFF) << 16) | (h1 >> 16))
    _put_base64(out, i, 10, ((h1 & 0xFFFF) << 8) | (h2 >> 24))
    _put_base64(out, i, 14, h2 & 0xFF_FFFF)
    _put_base64(out, i, 18, h3 >> 8)
    _put_base64(out, i, 22, ((h3 & 0xFF) << 16) | (h4 >> 16))
    _put_base64(out, i, 26, (h4 & 0xFFFF) << 8)
    out[i, 29] = 61  # "=" (the last group's fourth character)


@numba.njit(cache=True, nogil=True)
def community_chars(K, ports, w, out):
    """Community ID v1 (seed 0, TCP) of canonical keys `K` (n, >= 4: hi, lo of A and B, A
    first in the specification's order) and `KEY_PORTS` words into the rows of `out`
    (n, 30): "1:" and the base64 of the SHA-1 of `_community_block`.  Two rows are hashed
    at a time (`_sha1_words_2`); `w` (160) is scratch for their blocks."""
    n = K.shape[0]
    wa = w[:80]
    wb = w[80:160]
    for i in range(0, n - 1, 2):
        _community_block(K, ports, i, wa)
        _community_block(K, ports, i + 1, wb)
        h = _sha1_words_2(wa, wb)
        _community_text(out, i, h[0], h[1], h[2], h[3], h[4])
        _community_text(out, i + 1, h[5], h[6], h[7], h[8], h[9])
    if n % 2:
        _community_block(K, ports, n - 1, wa)
        h0, h1, h2, h3, h4 = _sha1_words(wa)
        _community_text(out, n - 1, h0, h1, h2, h3, h4)


@numba.njit(cache=True, nogil=True)
def address_strings(hi, lo, v6_index, v6_offsets, v6_data, offsets, data):
    """Address text as an Arrow string column's offsets (n + 1, int32) and bytes: IPv4
    (mapped) addresses written here, the others copied from their text `v6_index[i]` in
    (`v6_offsets`, `v6_data`).  Returns the bytes written."""
    pos = 0
    offsets[0] = 0
    for i in range(hi.shape[0]):
        k = v6_index[i]
        if k < 0:
            a = np.int64(lo[i] & _U64(_M32))
            for shift in (24, 16, 8):
                pos = _put_digits(data, pos, (a >> shift) & 255)
                data[pos] = 46  # "."
                pos += 1
            pos = _put_digits(data, pos, a & 255)
        else:
            for j in range(v6_offsets[k], v6_offsets[k + 1]):
                data[pos] = v6_data[j]
                pos += 1
        offsets[i + 1] = pos
    return pos


@numba.njit(cache=True, nogil=True, inline="always")
def _put_digits(data, pos, v):
    if v >= 100:
        data[pos] = 48 + v // 100
        pos += 1
    if v >= 10:
        data[pos] = 48 + (v // 10) % 10
        pos += 1
    data[pos] = 48 + v % 10
    return pos + 1


@numba.njit(cache=True, nogil=True)
def nul_trimmed(chars, offsets, data):
    """Rows of `chars` (n, width) without their NUL bytes, as an Arrow string column's
    offsets (n + 1, int32) and bytes.  Returns the bytes written."""
    pos = 0
    offsets[0] = 0
    for i in range(chars.shape[0]):
        for j in range(chars.shape[1]):
            c = chars[i, j]
            if c != 0:
                data[pos] = c
                pos += 1
        offsets[i + 1] = pos
    return pos


@numba.njit(cache=True, nogil=True)
def gather_strings(offsets, data, index, out_offsets, out_data):
    """values[index] of a string column (int64 `offsets`, one past the end too, and its
    bytes) into `out_offsets` (len(index) + 1, int32) and `out_data`.  Returns the bytes."""
    pos = 0
    out_offsets[0] = 0
    for i in range(index.shape[0]):
        k = index[i]
        for j in range(offsets[k], offsets[k + 1]):
            out_data[pos] = data[j]
            pos += 1
        out_offsets[i + 1] = pos
    return pos
