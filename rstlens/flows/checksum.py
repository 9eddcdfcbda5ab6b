"""IPv4 header and TCP checksums (RFC 791, RFC 9293 §3.1, RFC 8200 §8.1), in numba.

The flow core verifies a segment only where attribution reads it (`core.process`: every RST,
every segment of a connection after its first RST, and the first `CSUM_SAMPLE` segments of
each side, the baseline that tells a corrupt segment from checksum offload), so ordinary
segments cost nothing.  A wrong TCP checksum whose field holds the pseudo-header sum, or 0,
is the mark of checksum offload (the capture was taken on the sending host before the NIC
filled it in: Linux's CHECKSUM_PARTIAL leaves `~tcp_v4_check(len, saddr, daddr, 0)` there),
not of corruption.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rstlens.flows import layout as L

TCP_PROTOCOL = 6
CHECKSUM_OFFSET = 16  # of the TCP checksum in the TCP header
ALL_ONES = 0xFFFF


@njit(cache=True, inline="always")
def _fold(s):  # type: ignore[no-untyped-def]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@njit(cache=True, inline="always")
def _sum16(raw, start, n):  # type: ignore[no-untyped-def]
    """Sum of the big-endian 16-bit words of raw[start : start + n] (a last odd byte padded),
    unfolded."""
    s = 0
    i = np.uint64(start)
    end = np.uint64(start + n)
    while i + np.uint64(1) < end:
        s += (np.int64(raw[i]) << 8) | np.int64(raw[i + np.uint64(1)])
        i += np.uint64(2)
    if i < end:
        s += np.int64(raw[i]) << 8
    return s


@njit(cache=True, inline="always")
def _words64(x):  # type: ignore[no-untyped-def]
    """Sum of the four 16-bit words of a 64-bit address half."""
    x = np.uint64(x)
    m = np.uint64(0xFFFF)
    return np.int64((x & m) + ((x >> np.uint64(16)) & m) + ((x >> np.uint64(32)) & m) + (x >> np.uint64(48)))


@njit(cache=True)
def segment_checksum(raw, ip_version, src_hi, src_lo, dst_hi, dst_lo, tcp_off, tcp_hlen, ip_hlen,
                     payload_len, captured):  # type: ignore[no-untyped-def]
    """The checksum status (`layout.CK_*`) of the TCP segment whose header is at `tcp_off` in
    `raw` (addresses from the batch columns, IPv4 in mapped form)."""
    tcp_len = tcp_hlen + payload_len
    if captured < payload_len or tcp_off < 0 or tcp_off + tcp_len > raw.shape[0]:
        return L.CK_UNVERIFIED
    if ip_version == 4:
        pseudo = _words64(np.uint64(src_lo) & np.uint64(0xFFFF_FFFF)) + _words64(
            np.uint64(dst_lo) & np.uint64(0xFFFF_FFFF)
        )
    else:
        pseudo = _words64(src_hi) + _words64(src_lo) + _words64(dst_hi) + _words64(dst_lo)
    pseudo += TCP_PROTOCOL + (tcp_len >> 16) + (tcp_len & 0xFFFF)
    tcp_ok = _fold(pseudo + _sum16(raw, tcp_off, tcp_len)) == ALL_ONES
    if not tcp_ok:
        field = (np.int64(raw[np.uint64(tcp_off + CHECKSUM_OFFSET)]) << 8) | np.int64(
            raw[np.uint64(tcp_off + CHECKSUM_OFFSET + 1)]
        )
        if field == 0 or field == _fold(pseudo):
            return L.CK_OFFLOAD
        return L.CK_BAD
    if ip_version == 4:
        ip_off = tcp_off - ip_hlen
        if ip_off < 0:
            return L.CK_UNVERIFIED
        if _fold(_sum16(raw, ip_off, ip_hlen)) != ALL_ONES:
            return L.CK_BAD
    return L.CK_GOOD
