"""The decode kernel (numba): link layer -> IPv4/IPv6 [-> tunnel -> IP ...] -> TCP for a
batch of records.

Ethernet-family links also walk Cisco FabricPath (0x8903, outermost only), 802.1Q/802.1ad
VLAN tags, PPPoE session frames (0x8864) and an MPLS label stack (0x8847/0x8848); PPP
links (9, 50), Cisco HDLC (104) and Linux cooked captures of any device (the ARPHRD_ type
says whether the protocol field is an EtherType or a GRE protocol type) join that walk
at the protocol they name.

Tunnels: when the IP payload is not TCP, the out-of-line `_tunnelled` checks (`_tunnel`:
the IP protocol, then the UDP port) whether it is an encapsulation rstlens decodes; if so
the layer is recorded (type, id, outer addresses) and the inner packet decoded the same
way, up to the tunnel depth.  Untunnelled TCP never reaches it (one compare); what the
untunnelled path measures against the kernel before tunnels is in README, "Kernels".

The kernel reads only through explicit checks against the record's captured end (numba
does no bounds checking), so arbitrary bytes can never make it read outside `buf`.  Callers
reach it through `rstlens.kernels` (compiled ahead of time when installed), never directly.
"""

from __future__ import annotations

import numba
import numpy as np

from rstlens.kernels.prefetch import prefetch

from . import _batch as B
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
    C_DEPTH,
    C_ESP,
    C_FRAG,
    C_MALFORMED,
    C_NON_IP,
    C_NON_TCP,
    C_TCP,
    C_TRUNC,
    C_TUNNEL_BASE,
    C_UNSUPPORTED,
)

# Outcome of one record.
_TCP, _NON_IP, _NON_TCP, _FRAG, _TRUNC, _MALF, _UNSUP, _DEPTH = range(8)

_MAX_TAGS = 8  # VLAN tags / IPv6 extension headers walked before giving up
_MAX_LABELS = 16  # MPLS labels walked before calling the stack malformed
_MAX_GTP_EXTENSIONS = 8  # GTP-U extension headers walked before calling the header malformed
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
def _cooked_payload(buf, p, end, et, hatype):
    """What follows a cooked header: no link header (the protocol field says what), except
    that on GRE devices (ARPHRD_IPGRE, ARPHRD_IP6GRE) the field is a GRE protocol type, and
    0x6558 (transparent Ethernet bridging) there is an Ethernet frame."""
    if et == W.ETHERTYPE_TEB and (hatype == W.ARPHRD_IPGRE or hatype == W.ARPHRD_IP6GRE):
        return _ethernet(buf, p, end)
    return _TCP, p, et


@numba.njit(cache=True, nogil=True, inline="always")
def _linux_sll(buf, p, end):
    """Linux cooked capture v1 (LINKTYPE_LINUX_SLL): the protocol is the last field, the
    device's ARPHRD_ type the second."""
    if end - p < W.SLL_HLEN:
        return _TRUNC, p, W.BY_VERSION_NIBBLE
    et = _be16(buf, p + W.SLL_PROTOCOL_OFFSET)
    return _cooked_payload(buf, p + W.SLL_HLEN, end, et, _be16(buf, p + W.SLL_HATYPE_OFFSET))


@numba.njit(cache=True, nogil=True, inline="always")
def _linux_sll2(buf, p, end):
    """Linux cooked capture v2 (LINKTYPE_LINUX_SLL2): the protocol is the first field."""
    if end - p < W.SLL2_HLEN:
        return _TRUNC, p, W.BY_VERSION_NIBBLE
    return _cooked_payload(buf, p + W.SLL2_HLEN, end, _be16(buf, p), _be16(buf, p + W.SLL2_HATYPE_OFFSET))


@numba.njit(cache=True, nogil=True, inline="always")
def _cisco_hdlc(buf, p, end):
    """Cisco HDLC (LINKTYPE_C_HDLC, RFC 1547 4.3.1): address, control, then an EtherType."""
    if end - p < W.CHDLC_HLEN:
        return _TRUNC, p, W.BY_VERSION_NIBBLE
    return _TCP, p + W.CHDLC_HLEN, _be16(buf, p + 2)


@numba.njit(cache=True, nogil=True, inline="always")
def _ppp_hdlc(buf, p, end):
    """LINKTYPE_PPP_HDLC: PPP in HDLC-like framing (RFC 1662: 0xFF, 0x03, the protocol) or,
    by its first byte 0x0F/0x8F, Cisco HDLC; the frames are not octet-stuffed."""
    if end - p < 1:
        return _TRUNC, p, W.BY_VERSION_NIBBLE
    a = _u8(buf, p)
    if a == W.PPP_ADDRESS:
        return _ppp_payload(buf, p + 2, end, 0)
    if a == W.CHDLC_UNICAST or a == W.CHDLC_BROADCAST:
        return _cisco_hdlc(buf, p, end)
    return _NON_IP, p, 0


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
    if lt == LT.PPP:  # HDLC-like framing's 0xFF03 when present, then the protocol
        return _ppp_protocol(buf, p, end)
    if lt == LT.PPP_HDLC:
        return _ppp_hdlc(buf, p, end)
    if lt == LT.C_HDLC:
        return _cisco_hdlc(buf, p, end)
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
    return _ppp_payload(buf, p + W.PPPOE_HLEN, end, et)


@numba.njit(cache=True, nogil=True, inline="always")
def _ppp_payload(buf, p, end, other):
    """The PPP protocol field at `p` (2 bytes, or 1 byte with protocol-field compression,
    RFC 1661 6.5: an odd first byte).  Returns (outcome, offset of the payload, its
    EtherType: IPv4, IPv6 or MPLS; `other` when it is none of them)."""
    if end - p < 1:
        return _TRUNC, p, other
    if _u8(buf, p) & W.PPP_COMPRESSED:
        proto = _u8(buf, p)
        p += 1
    elif end - p < 2:
        return _TRUNC, p, other
    else:
        proto = _be16(buf, p)
        p += 2
    if proto == W.PPP_IPV4:
        return _TCP, p, W.ETHERTYPE_IPV4
    if proto == W.PPP_IPV6:
        return _TCP, p, W.ETHERTYPE_IPV6
    if proto == W.PPP_MPLS_UNICAST or proto == W.PPP_MPLS_MULTICAST:
        return _TCP, p, W.ETHERTYPE_MPLS_UNICAST
    return _NON_IP, p, other


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
    return _after_link_header(buf, p, end, et)


@numba.njit(cache=True, nogil=True, inline="always")
def _after_link_header(buf, p, end, et):
    """VLAN tags, PPPoE, MPLS and the IP version after an Ethernet-family header (the
    capture's own, or the frame a tunnel carries), or after a link header whose protocol is
    an EtherType (cooked, Cisco HDLC) or a PPP protocol (PPP links, PPTP)."""
    outcome, p, et, v_out, v_in = _vlan_tags(buf, p, end, et)
    if outcome == _TCP and et == W.ETHERTYPE_PPPOE_SESSION:
        outcome, p, et = _pppoe_session(buf, p, end, et)
    if outcome == _TCP and (et == W.ETHERTYPE_MPLS_UNICAST or et == W.ETHERTYPE_MPLS_MULTICAST):
        outcome, p, et = _mpls_labels(buf, p, end)
    if outcome != _TCP:
        return outcome, p, 0, v_out, v_in
    outcome, version = _ip_version(buf, p, end, et)
    return outcome, p, version, v_out, v_in


# ---- network layer: (outcome, TCP header offset, TCP length per IP, ttl, id, df, IP hlen,
# protocol); for other protocols (_NON_TCP) the offset and length are the payload's --------
@numba.njit(cache=True, nogil=True, inline="always")
def _ipv4(buf, p, end, uj, src_hi, src_lo, dst_hi, dst_lo):
    """The IPv4 header (RFC 791); writes row uj's addresses in IPv4-mapped form."""
    if end - p < W.IPV4_MIN_HLEN:
        return _TRUNC, 0, 0, 0, -1, False, 0, 0
    if (_u8(buf, p) >> 4) != 4:
        return _MALF, 0, 0, 0, -1, False, 0, 0
    ihl = (_u8(buf, p) & 0x0F) * 4
    total = _be16(buf, p + 2)
    fo = _be16(buf, p + 6)
    if ihl < W.IPV4_MIN_HLEN:
        return _MALF, 0, 0, 0, -1, False, 0, 0
    if (fo & W.IP_MF) != 0 or (fo & W.IP_OFFSET_MASK) != 0:
        return _FRAG, 0, 0, 0, -1, False, 0, 0
    if total == 0:  # TSO/GSO capture: length not filled in yet
        total = end - p
    proto = _u8(buf, p + 9)
    if proto != W.IPPROTO_TCP:  # perhaps a tunnel: where its payload starts, and how long
        return _NON_TCP, p + ihl, total - ihl, _u8(buf, p + 8), -1, False, ihl, proto
    if end - p < ihl:
        return _TRUNC, 0, 0, 0, -1, False, 0, 0
    if total < ihl:
        return _MALF, 0, 0, 0, -1, False, 0, 0
    src_hi[uj] = 0
    src_lo[uj] = IPV4_MAPPED | np.uint64(_be32(buf, p + 12))
    dst_hi[uj] = 0
    dst_lo[uj] = IPV4_MAPPED | np.uint64(_be32(buf, p + 16))
    return _TCP, p + ihl, total - ihl, _u8(buf, p + 8), _be16(buf, p + 4), (fo & W.IP_DF) != 0, ihl, proto


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
        return _TRUNC, 0, 0, 0, -1, False, 0, 0
    if (_u8(buf, p) >> 4) != 6:
        return _MALF, 0, 0, 0, -1, False, 0, 0
    plen = _be16(buf, p + 4)
    outcome, q, nh = _ipv6_extension_headers(buf, p + W.IPV6_HLEN, end, _u8(buf, p + 6))
    if outcome != _TCP:
        return outcome, 0, 0, 0, -1, False, 0, 0
    ext = q - p - W.IPV6_HLEN
    if plen == 0:  # jumbogram or TSO capture: use what was captured
        plen = end - p - W.IPV6_HLEN
    if nh != W.IPPROTO_TCP:  # perhaps a tunnel
        return _NON_TCP, q, plen - ext, _u8(buf, p + 7), -1, False, q - p, nh
    if plen < ext:
        return _MALF, 0, 0, 0, -1, False, 0, 0
    src_hi[uj] = _be64(buf, p + 8)
    src_lo[uj] = _be64(buf, p + 16)
    dst_hi[uj] = _be64(buf, p + 24)
    dst_lo[uj] = _be64(buf, p + 32)
    return _TCP, q, plen - ext, _u8(buf, p + 7), -1, False, q - p, nh


# ---- tunnels: each returns (outcome, layer type, layer id, offset of the inner packet,
# what the inner packet is: ETHERTYPE_TEB for an Ethernet frame, an IP EtherType, MPLS, PPP
# or BY_VERSION_NIBBLE); _NON_TCP when the payload is no tunnel rstlens decodes -------------
@numba.njit(cache=True, nogil=True, inline="always")
def _vxlan(buf, u, end):
    """VXLAN (RFC 7348): flags (I bit: the VNI is valid), 24 reserved bits, the VNI, 8
    reserved bits, then an Ethernet frame.  Reserved bits are not checked (as Zeek)."""
    if end - u < W.VXLAN_HLEN:
        return _TRUNC, 0, -1, u, 0
    if (_u8(buf, u) & W.VXLAN_FLAG_I) == 0:
        return _NON_TCP, 0, -1, 0, 0
    return _TCP, B.TUNNEL_VXLAN, _be32(buf, u + 4) >> 8, u + W.VXLAN_HLEN, W.ETHERTYPE_TEB


@numba.njit(cache=True, nogil=True, inline="always")
def _geneve(buf, u, end):
    """GENEVE (RFC 8926): version 0, options length in 4-byte words, protocol type, VNI;
    the options are skipped.  Carries Ethernet (0x6558), IPv4 or IPv6."""
    if end - u < W.GENEVE_MIN_HLEN:
        return _TRUNC, 0, -1, u, 0
    if (_u8(buf, u) >> 6) != 0:
        return _NON_TCP, 0, -1, 0, 0
    hl = W.GENEVE_MIN_HLEN + (_u8(buf, u) & 0x3F) * 4
    ptype = _be16(buf, u + 2)
    if end - u < hl:
        return _TRUNC, 0, -1, u, 0
    if ptype != W.ETHERTYPE_TEB and ptype != W.ETHERTYPE_IPV4 and ptype != W.ETHERTYPE_IPV6:
        return _NON_TCP, 0, -1, 0, 0
    return _TCP, B.TUNNEL_GENEVE, _be32(buf, u + 4) >> 8, u + hl, ptype


@numba.njit(cache=True, nogil=True, inline="always")
def _gtpu(buf, u, end):
    """GTP-U version 1 G-PDU (3GPP TS 29.281): 8 bytes with the TEID, 4 more when any of
    E/S/PN is set, then the extension header chain (E); an IP packet follows.  The TEID is
    not the layer's id: uplink and downlink use different ones."""
    if end - u < W.GTPU_HLEN:
        return _TRUNC, 0, -1, u, 0
    fl = _u8(buf, u)
    if (fl >> 5) != 1 or (fl & 0x10) == 0 or _u8(buf, u + 1) != W.GTPU_G_PDU:
        return _NON_TCP, 0, -1, 0, 0
    x = u + W.GTPU_HLEN
    if fl & 0x07:
        if end - u < W.GTPU_HLEN + 4:
            return _TRUNC, 0, -1, u, 0
        nxt = _u8(buf, u + 11) if (fl & 0x04) else 0
        x += 4
        k = 0
        while nxt != 0:
            if k >= _MAX_GTP_EXTENSIONS:
                return _MALF, 0, -1, u, 0
            k += 1
            if end - x < 1:
                return _TRUNC, 0, -1, u, 0
            ln = _u8(buf, x) * 4
            if ln == 0:
                return _MALF, 0, -1, u, 0
            if end - x < ln:
                return _TRUNC, 0, -1, u, 0
            nxt = _u8(buf, x + ln - 1)
            x += ln
    # no id: each direction has its own TEID (uplink, downlink), which must not split them
    return _TCP, B.TUNNEL_GTPU, -1, x, W.BY_VERSION_NIBBLE


@numba.njit(cache=True, nogil=True, inline="always")
def _teredo_address(buf, a):
    """A Teredo address (2001:0::/32) or a link-local one (the bubbles' fe80::/10)."""
    return _be32(buf, a) == W.TEREDO_PREFIX or (_be16(buf, a) & 0xFFC0) == W.IPV6_LINK_LOCAL


@numba.njit(cache=True, nogil=True, inline="always")
def _teredo(buf, u, end, ulen, by_port):
    """Teredo (RFC 4380): optional authentication and origin indications, then an IPv6
    packet exactly filling the UDP payload.  On port 3544 that length check is the content
    check; on other ports (the client's mapped port, once qualified) an address of the
    packet must also be a Teredo or link-local address."""
    x = u
    if end - x >= 2 and _be16(buf, x) == W.TEREDO_AUTH:
        if end - x < 4:
            return _NON_TCP, 0, -1, 0, 0
        x += W.TEREDO_AUTH_MIN_LEN + _u8(buf, x + 2) + _u8(buf, x + 3)
    if end - x >= 2 and _be16(buf, x) == W.TEREDO_ORIGIN:
        x += W.TEREDO_ORIGIN_LEN
    if end - x < W.IPV6_HLEN or (_u8(buf, x) >> 4) != 6:
        return _NON_TCP, 0, -1, 0, 0
    if x + W.IPV6_HLEN + _be16(buf, x + 4) != u + ulen - W.UDP_HLEN:
        return _NON_TCP, 0, -1, 0, 0
    if not by_port and not (_teredo_address(buf, x + 8) or _teredo_address(buf, x + 24)):
        return _NON_TCP, 0, -1, 0, 0
    return _TCP, B.TUNNEL_TEREDO, -1, x, W.ETHERTYPE_IPV6


@numba.njit(cache=True, nogil=True, inline="always")
def _udp_tunnel(buf, q, end):
    """The UDP encapsulations, by destination port (VXLAN, GENEVE, MPLS-in-UDP), either
    port (GTP-U, Teredo) and, for Teredo, by content on any port."""
    if end - q < W.UDP_HLEN:
        return _NON_TCP, 0, -1, 0, 0
    sp = _be16(buf, q)
    dp = _be16(buf, q + 2)
    ulen = _be16(buf, q + 4)
    u = q + W.UDP_HLEN
    if dp == W.PORT_VXLAN or dp == W.PORT_VXLAN_LINUX:
        return _vxlan(buf, u, end)
    if dp == W.PORT_GENEVE:
        return _geneve(buf, u, end)
    if dp == W.PORT_GTPU or sp == W.PORT_GTPU:
        return _gtpu(buf, u, end)
    if dp == W.PORT_MPLS_UDP:
        return _TCP, B.TUNNEL_MPLS_UDP, -1, u, W.ETHERTYPE_MPLS_UNICAST
    if ulen >= W.UDP_HLEN + W.IPV6_HLEN:
        return _teredo(buf, u, end, ulen, sp == W.PORT_TEREDO or dp == W.PORT_TEREDO)
    return _NON_TCP, 0, -1, 0, 0


@numba.njit(cache=True, nogil=True, inline="always")
def _erspan(buf, x, end, ptype, seq):
    """ERSPAN over GRE: type I (0x88BE without a sequence number) has no header; type II
    (0x88BE) an 8-byte one, type III (0x22EB) 12 bytes and an optional 8-byte platform
    subheader (O bit).  The 10-bit session id is the layer's id; an Ethernet frame follows."""
    if ptype == W.ETHERTYPE_ERSPAN_II and not seq:
        return _TCP, B.TUNNEL_ERSPAN1, -1, x, W.ETHERTYPE_TEB
    if ptype == W.ETHERTYPE_ERSPAN_II:
        if end - x < W.ERSPAN_II_HLEN:
            return _TRUNC, 0, -1, x, 0
        session = _be16(buf, x + 2) & W.ERSPAN_SESSION_MASK
        return _TCP, B.TUNNEL_ERSPAN2, session, x + W.ERSPAN_II_HLEN, W.ETHERTYPE_TEB
    if end - x < W.ERSPAN_III_HLEN:
        return _TRUNC, 0, -1, x, 0
    session = _be16(buf, x + 2) & W.ERSPAN_SESSION_MASK
    hl = W.ERSPAN_III_HLEN
    if _be16(buf, x + 10) & 1:
        hl += W.ERSPAN_III_PLATFORM_HLEN
    if end - x < hl:
        return _TRUNC, 0, -1, x, 0
    return _TCP, B.TUNNEL_ERSPAN3, session, x + hl, W.ETHERTYPE_TEB


@numba.njit(cache=True, nogil=True, inline="always")
def _gre(buf, q, end):
    """GRE (RFC 2784, 2890): checksum, key and sequence words as flagged; the key is the
    layer's id (NVGRE's VSID and flow id).  Routing (RFC 1701) is not decoded.  Version 1 is
    PPTP's enhanced GRE (RFC 2637): key = payload length + call id, optional sequence and
    acknowledgment, PPP inside."""
    if end - q < W.GRE_MIN_HLEN:
        return _TRUNC, 0, -1, q, 0
    fv = _be16(buf, q)
    ptype = _be16(buf, q + 2)
    version = fv & W.GRE_VERSION_MASK
    x = q + W.GRE_MIN_HLEN
    if version == 1:
        if ptype != W.ETHERTYPE_PPP or (fv & W.GRE_K) == 0:
            return _NON_TCP, 0, -1, 0, 0
        if end - x < 4:
            return _TRUNC, 0, -1, q, 0
        empty = _be16(buf, x) == 0  # an acknowledgment alone
        x += 4 + (4 if fv & W.GRE_S else 0) + (4 if fv & W.GRE_A else 0)
        if empty:
            return _NON_TCP, 0, -1, 0, 0
        if end - x < 0:
            return _TRUNC, 0, -1, q, 0
        # no id: the call id is the receiving peer's, different each way
        return _TCP, B.TUNNEL_PPTP, -1, x, W.ETHERTYPE_PPP
    if version != 0 or (fv & W.GRE_R):
        return _NON_TCP, 0, -1, 0, 0
    if fv & W.GRE_C:
        x += 4
    key = -1
    if fv & W.GRE_K:
        if end - x < 4:
            return _TRUNC, 0, -1, q, 0
        key = _be32(buf, x)
        x += 4
    seq = (fv & W.GRE_S) != 0
    if seq:
        x += 4
    if end - x < 0:
        return _TRUNC, 0, -1, q, 0
    if ptype == W.ETHERTYPE_IPV4 or ptype == W.ETHERTYPE_IPV6:
        return _TCP, B.TUNNEL_GRE, key, x, ptype
    if ptype == W.ETHERTYPE_TEB:
        return _TCP, B.TUNNEL_GRETAP, key, x, ptype
    if ptype == W.ETHERTYPE_MPLS_UNICAST or ptype == W.ETHERTYPE_MPLS_MULTICAST:
        return _TCP, B.TUNNEL_GRE, key, x, W.ETHERTYPE_MPLS_UNICAST
    if ptype == W.ETHERTYPE_WCCP:
        if end - x < W.WCCP_HLEN:
            return _TRUNC, 0, -1, q, 0
        return _TCP, B.TUNNEL_GRE, key, x + W.WCCP_HLEN, W.BY_VERSION_NIBBLE
    if ptype == W.ETHERTYPE_ERSPAN_II or ptype == W.ETHERTYPE_ERSPAN_III:
        return _erspan(buf, x, end, ptype, seq)
    return _NON_TCP, 0, -1, 0, 0


@numba.njit(cache=True, nogil=True, inline="always")
def _tunnel(buf, q, end, proto, version, counters):
    """Whether the IP payload at q (protocol `proto`, in an IPv`version` packet) is an
    encapsulation rstlens decodes.  ESP is counted and stays opaque."""
    if proto == W.IPPROTO_UDP:
        return _udp_tunnel(buf, q, end)
    if proto == W.IPPROTO_GRE:
        return _gre(buf, q, end)
    if proto == W.IPPROTO_IPIP:
        kind = B.TUNNEL_IP4IN4 if version == 4 else B.TUNNEL_IP4IN6
        return _TCP, kind, -1, q, W.ETHERTYPE_IPV4
    if proto == W.IPPROTO_IPV6:
        kind = B.TUNNEL_IP6IN4 if version == 4 else B.TUNNEL_IP6IN6
        return _TCP, kind, -1, q, W.ETHERTYPE_IPV6
    if proto == W.IPPROTO_ESP:
        counters[C_ESP] += 1
    return _NON_TCP, 0, -1, 0, 0


@numba.njit(cache=True, nogil=True, inline="always")
def _ppp_protocol(buf, p, end):
    """A PPP frame as PPTP carries it: optional address/control (0xFF03), then the protocol
    (1 or 2 bytes).  Returns (outcome, offset, EtherType of the payload)."""
    if end - p >= 2 and _be16(buf, p) == W.PPP_ADDRESS_CONTROL:
        p += 2
    return _ppp_payload(buf, p, end, 0)


@numba.njit(cache=True, nogil=True, inline="always")
def _inner_packet(buf, p, end, et):
    """What a tunnel carries, down to the inner IP header.  Returns (outcome, offset of the
    IP header, IP version, VLAN ids of the carried Ethernet frame packed as TL_VLANS)."""
    if et == W.ETHERTYPE_TEB:
        outcome, p, et = _ethernet(buf, p, end)
        if outcome != _TCP:
            return outcome, p, 0, 0
    elif et == W.ETHERTYPE_PPP:
        outcome, p, et = _ppp_protocol(buf, p, end)
        if outcome != _TCP:
            return outcome, p, 0, 0
    outcome, p, version, v_out, v_in = _after_link_header(buf, p, end, et)
    return outcome, p, version, ((v_out + 1) << 16) | (v_in + 1)


_FNV_PRIME = np.uint64(0x100000001B3)


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(h, x):
    return (h ^ np.uint64(x)) * _FNV_PRIME


@numba.njit(cache=True, nogil=True, inline="always")
def _ip_addresses(buf, p, version):
    """The IP header's (src hi, src lo, dst hi, dst lo) at p, IPv4 in the mapped form."""
    if version == 4:
        z = np.uint64(0)
        return (z, IPV4_MAPPED | np.uint64(_be32(buf, p + 12)), z,
                IPV4_MAPPED | np.uint64(_be32(buf, p + 16)))  # fmt: skip
    return _be64(buf, p + 8), _be64(buf, p + 16), _be64(buf, p + 24), _be64(buf, p + 32)


@numba.njit(cache=True, nogil=True, inline="always")
def _record_layer(buf, tl, uj, depth, ip, version, kind, tid, vlans, h):
    """Row uj's tunnel layer `depth` (outer header at ip) into the side array; returns the
    tunnel identity hash with the layer mixed in."""
    s_hi, s_lo, d_hi, d_lo = _ip_addresses(buf, ip, version)
    if d_hi < s_hi or (d_hi == s_hi and d_lo < s_lo):  # canonical: lower address first
        s_hi, s_lo, d_hi, d_lo = d_hi, d_lo, s_hi, s_lo
    b = depth * B.TUNNEL_LAYER_WIDTH
    tl[uj, b + B.TL_TYPE] = kind
    tl[uj, b + B.TL_ID] = tid
    tl[uj, b + B.TL_A_HI] = np.int64(s_hi)
    tl[uj, b + B.TL_A_LO] = np.int64(s_lo)
    tl[uj, b + B.TL_B_HI] = np.int64(d_hi)
    tl[uj, b + B.TL_B_LO] = np.int64(d_lo)
    tl[uj, b + B.TL_VLANS] = vlans
    h = _mix(h, (np.int64(kind) << 48) ^ (np.int64(vlans) << 8) ^ tid)
    h = _mix(h, s_hi)
    h = _mix(h, s_lo)
    h = _mix(h, d_hi)
    return _mix(h, d_lo)


@numba.njit(cache=True, nogil=True, inline="always")
def _finish_identity(h):
    """Avalanche (splitmix64's finaliser); never 0, which means untunnelled."""
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h if h != 0 else np.uint64(1)


@numba.njit(cache=True, nogil=True)
def _tunnelled(buf, p, end, uj, version, proto, q, ttl, max_depth, src_hi, src_lo, dst_hi, dst_lo,
               tunnels, counters):  # fmt: skip
    """A record whose IP header (at p, version `version`) carries protocol `proto` at q, not
    TCP: while that is an encapsulation rstlens decodes, the layer is recorded in row uj of
    `tunnels` and the IP packet inside decoded, up to `max_depth` layers.  Not inlined: the
    untunnelled path keeps its code small.  Returns the decode kernel's IP results for the
    innermost packet (outcome, TCP offset, TCP length, ttl, id, df, IP header length,
    version), the tunnel identity (0 when no layer was decoded) and the outer TTL."""
    outcome = _NON_TCP
    t = 0
    l4len = 0
    r_ttl = 0
    r_id = -1
    r_df = False
    r_hlen = 0
    depth = 0
    h = np.uint64(0xCBF29CE484222325)  # FNV offset basis
    r_outer_ttl = -1
    while True:
        outcome, kind, tid, x, et = _tunnel(buf, q, end, proto, version, counters)
        if outcome != _TCP:
            break
        if depth >= max_depth or depth >= B.TUNNEL_MAX_LAYERS:
            outcome = _DEPTH
            break
        counters[C_TUNNEL_BASE + kind] += 1
        ip = p
        ip_version_outer = version
        outcome, p, version, vlans = _inner_packet(buf, x, end, et)
        h = _record_layer(buf, tunnels, uj, depth, ip, ip_version_outer, kind, tid, vlans, h)
        r_outer_ttl = ttl
        depth += 1
        if outcome != _TCP:
            break
        if version == 4:
            outcome, t, l4len, r_ttl, r_id, r_df, r_hlen, proto = _ipv4(
                buf, p, end, uj, src_hi, src_lo, dst_hi, dst_lo
            )
        else:
            outcome, t, l4len, r_ttl, r_id, r_df, r_hlen, proto = _ipv6(
                buf, p, end, uj, src_hi, src_lo, dst_hi, dst_lo
            )
        if outcome != _NON_TCP:
            break
        q = t
        ttl = r_ttl
    if outcome != _TCP or depth == 0:
        return outcome, t, l4len, r_ttl, r_id, r_df, r_hlen, version, np.uint64(0), r_outer_ttl
    for k in range(depth * B.TUNNEL_LAYER_WIDTH, B.TUNNEL_MAX_LAYERS * B.TUNNEL_LAYER_WIDTH):
        tunnels[uj, k] = 0  # unused layers zeroed: rows compare whole
    return outcome, t, l4len, r_ttl, r_id, r_df, r_hlen, version, _finish_identity(h), r_outer_ttl


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
    elif outcome == _DEPTH:
        counters[C_DEPTH] += 1
    else:
        counters[C_UNSUPPORTED] += 1


@numba.njit(cache=True, nogil=True)
def decode_kernel(
    buf, offs, caps, linktype, ts_in, frame_in, iface_in, source_in, max_depth,
    ts_us, source, iface, frame, ip_version, src_hi, src_lo, dst_hi, dst_lo, sport, dport, seq,
    ack, flags, window, ttl, ip_id, df, ip_hlen, tcp_hlen, payload_len, payload_off,
    captured_payload, vlan, inner_vlan, tunnel, outer_ttl, tcp_opts, ts_val, ts_ecr, mss, wscale,
    tunnels, counters,
):  # fmt: skip
    """Decode records `buf[offs[i] : offs[i] + caps[i]]` into the column arrays (one row per
    TCP packet, in record order) and count the others.  Up to `max_depth` (at most
    TUNNEL_MAX_LAYERS) tunnel layers are decoded; a tunnelled row's layers are described in
    `tunnels[row]`.  Returns the number of rows."""
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
        ident = np.uint64(0)  # the tunnel identity, 0: untunnelled
        r_outer_ttl = -1
        if outcome == _TCP:
            if version == 4:
                outcome, t, l4len, r_ttl, r_id, r_df, r_hlen, proto = _ipv4(
                    buf, p, end, uj, src_hi, src_lo, dst_hi, dst_lo
                )
            else:
                outcome, t, l4len, r_ttl, r_id, r_df, r_hlen, proto = _ipv6(
                    buf, p, end, uj, src_hi, src_lo, dst_hi, dst_lo
                )
            # Untunnelled TCP pays this one compare for tunnels; the rest is out of line.
            if outcome == _NON_TCP:
                outcome, t, l4len, r_ttl, r_id, r_df, r_hlen, version, ident, r_outer_ttl = _tunnelled(
                    buf, p, end, uj, version, proto, t, r_ttl, max_depth, src_hi, src_lo, dst_hi,
                    dst_lo, tunnels, counters,
                )  # fmt: skip
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
        outer_ttl[uj] = r_outer_ttl
        tunnel[uj] = ident
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
