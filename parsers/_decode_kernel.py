"""The decode kernel (numba): link layer -> IPv4/IPv6 -> TCP for a batch of records.

Ethernet-family links also walk Cisco FabricPath (0x8903, outermost only), 802.1Q/802.1ad
VLAN tags, an MPLS label stack (0x8847/0x8848) and PPPoE session frames (0x8864).

The kernel reads only through explicit checks against the record's captured end (numba
does no bounds checking), so arbitrary bytes can never make it read outside `buf`.  Callers
reach it through `rstlens.kernels` (compiled ahead of time when installed), never directly.
"""

from __future__ import annotations

import numba
import numpy as np

from rstlens.kernels.prefetch import prefetch

from . import _linktypes as LT
from . import _wire as W  # protocol numbers and header sizes
from ._batch import (
    IPV4_MAPPED,
    OPT_AO,
    OPT_MALFORMED,
    OPT_MD5,
    OPT_MSS,
    OPT_SACK,
    OPT_SACK_PERM,
    OPT_TIMESTAMP,
    OPT_WSCALE,
)
from ._decode import (
    C_BYTES,
    C_FRAG,
    C_MALFORMED,
    C_NON_IP,
    C_NON_TCP,
    C_TCP,
    C_TRUNC,
    C_UNSUPPORTED,
)

# Outcome of one record.
_TCP, _NON_IP, _NON_TCP, _FRAG, _TRUNC, _MALF, _UNSUP = range(7)

_MAX_TAGS = 8  # VLAN tags / IPv6 extension headers walked before giving up
_MAX_LABELS = 16  # MPLS labels walked before calling the stack malformed
# Records ahead whose first two cache lines (link, IP and TCP headers) are fetched while
# the current one is decoded: libpcap's batch buffer (~1 MB) does not stay in the L2
# cache, so reading each record's headers was a miss.  -14% decode time.
AHEAD = 4
_CACHE_LINE = 64


# Every read goes through `_u8` with an unsigned index: numba wraps a signed index
# (negative counts from the end) with a compare and a select at every access, while the
# checks below already keep each index within the record.  Half the kernel's instructions
# (cachegrind, 1 M-packet file: 545 -> 267 per record).
@numba.njit(cache=True, nogil=True, inline="always")
def _u8(b, i):
    return np.int64(b[np.uint64(i)])


@numba.njit(cache=True, nogil=True, inline="always")
def _be16(b, i):
    return (_u8(b, i) << 8) | _u8(b, i + 1)


@numba.njit(cache=True, nogil=True, inline="always")
def _be32(b, i):
    return ((_u8(b, i) << 24) | (_u8(b, i + 1) << 16) | (_u8(b, i + 2) << 8)) | _u8(b, i + 3)


@numba.njit(cache=True, nogil=True, inline="always")
def _be64(b, i):
    return (np.uint64(_be32(b, i)) << np.uint64(32)) | np.uint64(_be32(b, i + 4))


@numba.njit(cache=True, nogil=True, inline="always")
def _be32_le(b, i):
    """The 32-bit word at i in little-endian order."""
    return ((_u8(b, i + 3) << 24) | (_u8(b, i + 2) << 16) | (_u8(b, i + 1) << 8)) | _u8(b, i)


# ---- link layers: each returns (outcome, offset past its header, EtherType) ------------------
@numba.njit(cache=True, nogil=True, inline="always")
def _ethernet(buf, p, end):
    """Ethernet II (LINKTYPE_ETHERNET), and Cisco FabricPath around an inner Ethernet frame
    (outermost only, as Zeek's FabricPath analyzer decodes it)."""
    if end - p < W.ETHERNET_HLEN:
        return _TRUNC, p, W.BY_VERSION_NIBBLE
    et = _be16(buf, p + W.ETHERTYPE_OFFSET)
    if et == W.ETHERTYPE_FABRICPATH:
        inner = p + W.FABRICPATH_HLEN
        if end - inner < W.ETHERNET_HLEN:
            return _TRUNC, p, et
        return _TCP, inner + W.ETHERNET_HLEN, _be16(buf, inner + W.ETHERTYPE_OFFSET)
    return _TCP, p + W.ETHERNET_HLEN, et


@numba.njit(cache=True, nogil=True, inline="always")
def _linux_sll(buf, p, end):
    """Linux cooked capture v1 (LINKTYPE_LINUX_SLL): the protocol is the last field."""
    if end - p < W.SLL_HLEN:
        return _TRUNC, p, W.BY_VERSION_NIBBLE
    return _TCP, p + W.SLL_HLEN, _be16(buf, p + W.SLL_PROTOCOL_OFFSET)


@numba.njit(cache=True, nogil=True, inline="always")
def _linux_sll2(buf, p, end):
    """Linux cooked capture v2 (LINKTYPE_LINUX_SLL2): the protocol is the first field."""
    if end - p < W.SLL2_HLEN:
        return _TRUNC, p, W.BY_VERSION_NIBBLE
    return _TCP, p + W.SLL2_HLEN, _be16(buf, p)


@numba.njit(cache=True, nogil=True, inline="always")
def _known_family(fam):
    return (
        fam == W.AF_INET or fam == W.AF_INET6_BSD or fam == W.AF_INET6_FREEBSD
        or fam == W.AF_INET6_DARWIN
    )  # fmt: skip


@numba.njit(cache=True, nogil=True, inline="always")
def _null_loop(buf, p, end, lt):
    """BSD loopback: a 4-byte address family, in network order for LT.LOOP and in the capturing
    host's order (unknown here: either is accepted) for LT.NULL."""
    if end - p < W.NULL_HLEN:
        return _TRUNC, p, W.BY_VERSION_NIBBLE
    fam_be = _be32(buf, p)
    fam = fam_be if lt == LT.LOOP else _be32_le(buf, p)
    if lt == LT.NULL and not _known_family(fam):
        fam = fam_be
    p += W.NULL_HLEN
    if fam == W.AF_INET:
        return _TCP, p, W.ETHERTYPE_IPV4
    if _known_family(fam):  # the IPv6 values (AF_INET returned above)
        return _TCP, p, W.ETHERTYPE_IPV6
    return _NON_IP, p, W.BY_VERSION_NIBBLE


@numba.njit(cache=True, nogil=True, inline="always")
def _link_header(buf, p, end, lt):
    """The record's link-layer header, by its LINKTYPE."""
    if lt == LT.ETHERNET:
        return _ethernet(buf, p, end)
    if lt == LT.LINUX_SLL:
        return _linux_sll(buf, p, end)
    if lt == LT.LINUX_SLL2:
        return _linux_sll2(buf, p, end)
    if lt == LT.RAW or lt == LT.RAW_BSD12 or lt == LT.RAW_BSD14:
        return _TCP, p, W.BY_VERSION_NIBBLE
    if lt == LT.IPV4:
        return _TCP, p, W.ETHERTYPE_IPV4
    if lt == LT.IPV6:
        return _TCP, p, W.ETHERTYPE_IPV6
    if lt == LT.NULL or lt == LT.LOOP:
        return _null_loop(buf, p, end, lt)
    return _UNSUP, p, W.BY_VERSION_NIBBLE


# ---- what Ethernet-family links carry before IP ---------------------------------------------
@numba.njit(cache=True, nogil=True, inline="always")
def _is_vlan_tag(et):
    return et == W.ETHERTYPE_VLAN or et == W.ETHERTYPE_QINQ or et == W.ETHERTYPE_QINQ_OLD


@numba.njit(cache=True, nogil=True, inline="always")
def _vlan_tags(buf, p, end, et):
    """802.1Q, 802.1ad and the old 0x9100 QinQ tags, outer first.  Returns (outcome, offset,
    EtherType after the tags, outer VLAN id, inner VLAN id), ids -1 when absent."""
    v_out = -1
    v_in = -1
    k = 0
    while _is_vlan_tag(et) and k < _MAX_TAGS:
        if end - p < W.VLAN_TAG_LEN:
            return _TRUNC, p, et, v_out, v_in
        vid = _be16(buf, p) & W.VLAN_VID_MASK
        if v_out < 0:
            v_out = vid
        elif v_in < 0:
            v_in = vid
        et = _be16(buf, p + 2)
        p += W.VLAN_TAG_LEN
        k += 1
    return _TCP, p, et, v_out, v_in


@numba.njit(cache=True, nogil=True, inline="always")
def _mpls_labels(buf, p, end):
    """An MPLS label stack, to bottom-of-stack; the payload's version nibble then says IPv4
    or IPv6 (anything else is not IP to us)."""
    for _ in range(_MAX_LABELS):
        if end - p < W.MPLS_LABEL_LEN:
            return _TRUNC, p, W.BY_VERSION_NIBBLE
        bottom = _u8(buf, p + 2) & W.MPLS_BOTTOM_OF_STACK
        p += W.MPLS_LABEL_LEN
        if bottom:
            return _TCP, p, W.BY_VERSION_NIBBLE
    return _MALF, p, W.BY_VERSION_NIBBLE


@numba.njit(cache=True, nogil=True, inline="always")
def _pppoe_session(buf, p, end, et):
    """PPPoE session stage: the 6-byte PPPoE header, then the PPP protocol (2 bytes, or 1
    byte with protocol-field compression, RFC 1661 6.5: an odd first byte)."""
    if end - p < W.PPPOE_HLEN + 1:
        return _TRUNC, p, et
    p += W.PPPOE_HLEN
    if _u8(buf, p) & W.PPP_COMPRESSED:
        proto = _u8(buf, p)
        p += 1
    elif end - p < 2:
        return _TRUNC, p, et
    else:
        proto = _be16(buf, p)
        p += 2
    if proto == W.PPP_IPV4:
        return _TCP, p, W.ETHERTYPE_IPV4
    if proto == W.PPP_IPV6:
        return _TCP, p, W.ETHERTYPE_IPV6
    return _NON_IP, p, et


@numba.njit(cache=True, nogil=True, inline="always")
def _ip_version(buf, p, end, et):
    """(outcome, 4 or 6) from the EtherType, or from the version nibble when there is none."""
    if et == W.ETHERTYPE_IPV4:
        return _TCP, 4
    if et == W.ETHERTYPE_IPV6:
        return _TCP, 6
    if et != W.BY_VERSION_NIBBLE:
        return _NON_IP, 0
    if end - p < 1:
        return _TRUNC, 0
    nibble = _u8(buf, p) >> 4
    if nibble == 4 or nibble == 6:
        return _TCP, nibble
    return _NON_IP, 0


@numba.njit(cache=True, nogil=True, inline="always")
def _link_layer(buf, p, end, lt):
    """Everything below IP.  Returns (outcome, offset of the IP header, IP version, outer
    VLAN id, inner VLAN id)."""
    outcome, p, et = _link_header(buf, p, end, lt)
    if outcome != _TCP:
        return outcome, p, 0, -1, -1
    outcome, p, et, v_out, v_in = _vlan_tags(buf, p, end, et)
    if outcome == _TCP and (et == W.ETHERTYPE_MPLS_UNICAST or et == W.ETHERTYPE_MPLS_MULTICAST):
        outcome, p, et = _mpls_labels(buf, p, end)
    elif outcome == _TCP and et == W.ETHERTYPE_PPPOE_SESSION:
        outcome, p, et = _pppoe_session(buf, p, end, et)
    if outcome != _TCP:
        return outcome, p, 0, v_out, v_in
    outcome, version = _ip_version(buf, p, end, et)
    return outcome, p, version, v_out, v_in


# ---- network layer: (outcome, TCP header offset, TCP length per IP, ttl, id, df, IP hlen) ----
@numba.njit(cache=True, nogil=True, inline="always")
def _ipv4(buf, p, end, uj, src_hi, src_lo, dst_hi, dst_lo):
    """The IPv4 header (RFC 791); writes row uj's addresses in IPv4-mapped form."""
    if end - p < W.IPV4_MIN_HLEN:
        return _TRUNC, 0, 0, 0, -1, False, 0
    if (_u8(buf, p) >> 4) != 4:
        return _MALF, 0, 0, 0, -1, False, 0
    ihl = (_u8(buf, p) & 0x0F) * 4
    total = _be16(buf, p + 2)
    fo = _be16(buf, p + 6)
    if ihl < W.IPV4_MIN_HLEN:
        return _MALF, 0, 0, 0, -1, False, 0
    if (fo & W.IP_MF) != 0 or (fo & W.IP_OFFSET_MASK) != 0:
        return _FRAG, 0, 0, 0, -1, False, 0
    if _u8(buf, p + 9) != W.IPPROTO_TCP:
        return _NON_TCP, 0, 0, 0, -1, False, 0
    if end - p < ihl:
        return _TRUNC, 0, 0, 0, -1, False, 0
    if total != 0 and total < ihl:
        return _MALF, 0, 0, 0, -1, False, 0
    if total == 0:  # TSO/GSO capture: length not filled in yet
        total = end - p
    src_hi[uj] = 0
    src_lo[uj] = IPV4_MAPPED | np.uint64(_be32(buf, p + 12))
    dst_hi[uj] = 0
    dst_lo[uj] = IPV4_MAPPED | np.uint64(_be32(buf, p + 16))
    return _TCP, p + ihl, total - ihl, _u8(buf, p + 8), _be16(buf, p + 4), (fo & W.IP_DF) != 0, ihl


@numba.njit(cache=True, nogil=True, inline="always")
def _ipv6_extension_headers(buf, q, end, nh):
    """Walk hop-by-hop, routing, destination options, AH and (first-fragment-only) fragment
    headers from q.  Returns (outcome, offset past them, next header)."""
    k = 0
    while (
        nh == W.IPPROTO_HOPOPTS or nh == W.IPPROTO_ROUTING or nh == W.IPPROTO_DSTOPTS
        or nh == W.IPPROTO_FRAGMENT or nh == W.IPPROTO_AH
    ):  # fmt: skip
        if k >= _MAX_TAGS:
            return _MALF, q, nh
        k += 1
        if end - q < W.IPV6_EXT_MIN_LEN:
            return _TRUNC, q, nh
        if nh == W.IPPROTO_FRAGMENT:
            offset_flags = _be16(buf, q + 2)
            if (offset_flags >> 3) != 0 or (offset_flags & 1) != 0:  # offset, or M bit
                return _FRAG, q, nh
            hl = W.IPV6_FRAGMENT_HLEN
        elif nh == W.IPPROTO_AH:
            hl = (_u8(buf, q + 1) + 2) * 4
        else:
            hl = (_u8(buf, q + 1) + 1) * 8
        nh = _u8(buf, q)
        if end - q < hl:
            return _TRUNC, q, nh
        q += hl
    return _TCP, q, nh


@numba.njit(cache=True, nogil=True, inline="always")
def _ipv6(buf, p, end, uj, src_hi, src_lo, dst_hi, dst_lo):
    """The IPv6 header (RFC 8200) and its extension headers; writes row uj's addresses."""
    if end - p < W.IPV6_HLEN:
        return _TRUNC, 0, 0, 0, -1, False, 0
    if (_u8(buf, p) >> 4) != 6:
        return _MALF, 0, 0, 0, -1, False, 0
    plen = _be16(buf, p + 4)
    outcome, q, nh = _ipv6_extension_headers(buf, p + W.IPV6_HLEN, end, _u8(buf, p + 6))
    if outcome != _TCP:
        return outcome, 0, 0, 0, -1, False, 0
    ext = q - p - W.IPV6_HLEN
    if nh != W.IPPROTO_TCP:
        return _NON_TCP, 0, 0, 0, -1, False, 0
    if plen != 0 and plen < ext:
        return _MALF, 0, 0, 0, -1, False, 0
    if plen == 0:  # jumbogram or TSO capture: use what was captured
        plen = end - p - W.IPV6_HLEN
    src_hi[uj] = _be64(buf, p + 8)
    src_lo[uj] = _be64(buf, p + 16)
    dst_hi[uj] = _be64(buf, p + 24)
    dst_lo[uj] = _be64(buf, p + 32)
    return _TCP, q, plen - ext, _u8(buf, p + 7), -1, False, q - p


# ---- TCP ------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True, inline="always")
def _tcp_header_length(buf, t, end, l4len):
    """(outcome, data offset * 4) of the TCP header at t, `l4len` bytes long per IP."""
    if end - t < W.TCP_MIN_HLEN:
        return _TRUNC, 0
    thl = (_u8(buf, t + 12) >> 4) * 4
    if thl < W.TCP_MIN_HLEN or l4len < thl:
        return _MALF, thl
    return _TCP, thl


@numba.njit(cache=True, nogil=True, inline="always")
def _tcp_options(buf, t, thl, end):
    """Walk the options in [t+20, t+thl), stopping silently where the capture ends.
    Returns (OPT_* bits, TSval, TSecr, MSS, window-scale shift or -1)."""
    bits = 0
    r_tsv = 0
    r_tse = 0
    r_mss = 0
    r_ws = -1
    q = t + W.TCP_MIN_HLEN
    lim = t + thl
    while q < lim and q < end:
        kind = _u8(buf, q)
        if kind == W.TCPOPT_EOL:
            break
        if kind == W.TCPOPT_NOP:
            q += 1
            continue
        if q + 1 >= lim:
            bits |= OPT_MALFORMED
            break
        if q + 1 >= end:
            break
        ln = _u8(buf, q + 1)
        if ln < 2 or q + ln > lim:
            bits |= OPT_MALFORMED
            break
        if q + ln > end:
            break
        if kind == W.TCPOPT_MSS:
            if ln == W.TCPOLEN_MSS:
                bits |= OPT_MSS
                r_mss = _be16(buf, q + 2)
            else:
                bits |= OPT_MALFORMED
        elif kind == W.TCPOPT_WSCALE:
            if ln == W.TCPOLEN_WSCALE:
                bits |= OPT_WSCALE
                r_ws = min(_u8(buf, q + 2), W.TCP_MAX_WSCALE)
            else:
                bits |= OPT_MALFORMED
        elif kind == W.TCPOPT_SACK_PERM:
            bits |= OPT_SACK_PERM
        elif kind == W.TCPOPT_SACK:
            bits |= OPT_SACK
        elif kind == W.TCPOPT_TIMESTAMP:
            if ln == W.TCPOLEN_TIMESTAMP:
                bits |= OPT_TIMESTAMP
                r_tsv = _be32(buf, q + 2)
                r_tse = _be32(buf, q + 6)
            else:
                bits |= OPT_MALFORMED
        elif kind == W.TCPOPT_MD5:
            bits |= OPT_MD5
        elif kind == W.TCPOPT_AO:
            bits |= OPT_AO
        q += ln
    return bits, r_tsv, r_tse, r_mss, r_ws


# ---- the batch ------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True, inline="always")
def _prefetch_headers(buf, o, nbuf):
    """Start loading the first two cache lines (link, IP and TCP headers) of the record at o."""
    if o >= 0 and o + _CACHE_LINE < nbuf:
        prefetch(buf, (o,))
        prefetch(buf, (o + _CACHE_LINE,))


@numba.njit(cache=True, nogil=True, inline="always")
def _count_skipped(counters, outcome):
    """Count a record that did not make a row, by why."""
    if outcome == _NON_IP:
        counters[C_NON_IP] += 1
    elif outcome == _NON_TCP:
        counters[C_NON_TCP] += 1
    elif outcome == _FRAG:
        counters[C_FRAG] += 1
    elif outcome == _TRUNC:
        counters[C_TRUNC] += 1
    elif outcome == _MALF:
        counters[C_MALFORMED] += 1
    else:
        counters[C_UNSUPPORTED] += 1


@numba.njit(cache=True, nogil=True)
def decode_kernel(
    buf, offs, caps, linktype, ts_in, frame_in, iface_in, source_in,
    ts_us, source, iface, frame, ip_version, src_hi, src_lo, dst_hi, dst_lo, sport, dport, seq,
    ack, flags, window, ttl, ip_id, df, ip_hlen, tcp_hlen, payload_len, payload_off,
    captured_payload, vlan, inner_vlan, tcp_opts, ts_val, ts_ecr, mss, wscale, counters,
):  # fmt: skip
    """Decode records `buf[offs[i] : offs[i] + caps[i]]` into the column arrays (one row per
    TCP packet, in record order) and count the others.  Returns the number of rows."""
    nbuf = buf.shape[0]
    n = offs.shape[0]
    j = 0
    captured = 0
    for i in range(n):
        uj = np.uint64(j)  # the row this record fills if it is TCP (unsigned: see `_u8`)
        if i + AHEAD < n:
            _prefetch_headers(buf, offs[i + AHEAD], nbuf)
        o = offs[i]
        c = caps[i]
        captured += c
        if o < 0 or c < 0 or o > nbuf:
            counters[C_MALFORMED] += 1
            continue
        end = o + c
        if end > nbuf:
            end = nbuf

        # One exit for the records that make no row: three early `continue`s cost ~4% more
        # instructions per record (callgrind), the flow merges badly in LLVM.
        outcome, p, version, v_out, v_in = _link_layer(buf, o, end, linktype[i])
        t = 0  # the TCP header
        l4len = 0  # TCP header + payload per the IP header
        r_ttl = 0
        r_id = -1
        r_df = False
        r_hlen = 0
        thl = 0
        if outcome == _TCP:
            if version == 4:
                outcome, t, l4len, r_ttl, r_id, r_df, r_hlen = _ipv4(
                    buf, p, end, uj, src_hi, src_lo, dst_hi, dst_lo
                )
            else:
                outcome, t, l4len, r_ttl, r_id, r_df, r_hlen = _ipv6(
                    buf, p, end, uj, src_hi, src_lo, dst_hi, dst_lo
                )
        if outcome == _TCP:
            outcome, thl = _tcp_header_length(buf, t, end, l4len)
        if outcome != _TCP:
            _count_skipped(counters, outcome)
            continue

        ts_us[uj] = ts_in[i]
        source[uj] = source_in
        iface[uj] = iface_in[i]
        frame[uj] = frame_in[i]
        ip_version[uj] = version
        ttl[uj] = r_ttl
        ip_id[uj] = r_id
        df[uj] = r_df
        ip_hlen[uj] = r_hlen
        vlan[uj] = v_out
        inner_vlan[uj] = v_in
        sport[uj] = _be16(buf, t)
        dport[uj] = _be16(buf, t + 2)
        seq[uj] = _be32(buf, t + 4)
        ack[uj] = _be32(buf, t + 8)
        flags[uj] = ((_u8(buf, t + 12) & W.TCP_FLAGS_NS) << 8) | _u8(buf, t + 13)
        window[uj] = _be16(buf, t + 14)
        tcp_hlen[uj] = thl
        tcp_payload = l4len - thl
        payload_len[uj] = tcp_payload
        poff = t + thl
        payload_off[uj] = poff
        have = end - poff
        if have < 0:
            have = 0
        if have > tcp_payload:
            have = tcp_payload  # bytes past the IP length are link padding, not payload
        captured_payload[uj] = have
        bits, r_tsv, r_tse, r_mss, r_ws = _tcp_options(buf, t, thl, end)
        tcp_opts[uj] = bits
        ts_val[uj] = r_tsv
        ts_ecr[uj] = r_tse
        mss[uj] = r_mss
        wscale[uj] = r_ws
        j += 1
    counters[C_TCP] += j
    counters[C_BYTES] += captured
    return j
