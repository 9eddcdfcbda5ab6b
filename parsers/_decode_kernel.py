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

_MAPPED = np.uint64(0xFFFF_0000_0000)
_MAX_TAGS = 8  # VLAN tags / IPv6 extension headers walked before giving up
_MAX_LABELS = 16  # MPLS labels walked before calling the stack malformed
# Records ahead whose first two cache lines (link, IP and TCP headers) are fetched while
# the current one is decoded: libpcap's batch buffer (~1 MB) does not stay in the L2
# cache, so reading each record's headers was a miss.  -14% decode time.
AHEAD = 4


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


@numba.njit(cache=True, nogil=True)
def decode_kernel(
    buf, offs, caps, linktype, ts_in, frame_in, iface_in, source_in,
    ts_us, source, iface, frame, ip_version, src_hi, src_lo, dst_hi, dst_lo, sport, dport, seq, ack,
    flags, window, ttl, ip_id, df, ip_hlen, tcp_hlen, payload_len, payload_off,
    captured_payload, vlan, inner_vlan, tcp_opts, ts_val, ts_ecr, mss, wscale, counters,
):  # fmt: skip
    nbuf = buf.shape[0]
    n = offs.shape[0]
    j = 0
    captured = 0
    for i in range(n):
        uj = np.uint64(j)  # the row this record fills if it is TCP (unsigned: see `_u8`)
        if i + AHEAD < n:
            nxt = offs[i + AHEAD]
            if nxt >= 0 and nxt + 64 < nbuf:
                prefetch(buf, (nxt,))
                prefetch(buf, (nxt + 64,))
        o = offs[i]
        c = caps[i]
        captured += c
        if o < 0 or c < 0 or o > nbuf:
            counters[C_MALFORMED] += 1
            continue
        end = o + c
        if end > nbuf:
            end = nbuf
        lt = linktype[i]
        p = o
        et = -1  # ethertype of the network layer, -1 = look at the IP version nibble
        v_out = -1
        v_in = -1
        outcome = _TCP
        # ---- link layer -------------------------------------------------------------
        if lt == 1:
            if end - p < 14:
                outcome = _TRUNC
            else:
                et = _be16(buf, p + 12)
                p += 14
                if et == 0x8903:
                    # Cisco FabricPath: outer MACs + 0x8903 + FTag/TTL (16 bytes), then
                    # the inner Ethernet frame (as Zeek decodes it).
                    if end - o < 30:
                        outcome = _TRUNC
                    else:
                        et = _be16(buf, o + 28)
                        p = o + 30
        elif lt == 113:
            if end - p < 16:
                outcome = _TRUNC
            else:
                et = _be16(buf, p + 14)
                p += 16
        elif lt == 276:
            if end - p < 20:
                outcome = _TRUNC
            else:
                et = _be16(buf, p)
                p += 20
        elif lt == 101 or lt == 12 or lt == 14:
            et = -1
        elif lt == 228:
            et = 0x0800
        elif lt == 229:
            et = 0x86DD
        elif lt == 0 or lt == 108:
            if end - p < 4:
                outcome = _TRUNC
            else:
                fam_be = _be32(buf, p)
                fam_le = (
                    (_u8(buf, p + 3) << 24) | (_u8(buf, p + 2) << 16)
                    | (_u8(buf, p + 1) << 8) | _u8(buf, p)
                )  # fmt: skip
                # NULL is in the capturing host's order (unknown here): accept either.
                fam = fam_be if lt == 108 else fam_le
                if lt == 0 and not (fam == 2 or fam == 24 or fam == 28 or fam == 30):
                    fam = fam_be
                p += 4
                if fam == 2:
                    et = 0x0800
                elif fam == 24 or fam == 28 or fam == 30:
                    et = 0x86DD
                else:
                    outcome = _NON_IP
        else:
            outcome = _UNSUP
        # VLAN tags: 802.1Q, 802.1ad, the old 0x9100 QinQ; outer first, then inner.
        if outcome == _TCP and et >= 0:
            k = 0
            while (et == 0x8100 or et == 0x88A8 or et == 0x9100) and k < _MAX_TAGS:
                if end - p < 4:
                    outcome = _TRUNC
                    break
                vid = _be16(buf, p) & 0xFFF
                if v_out < 0:
                    v_out = vid
                elif v_in < 0:
                    v_in = vid
                et = _be16(buf, p + 2)
                p += 4
                k += 1
        # MPLS (unicast, multicast): walk the label stack to bottom-of-stack, then the
        # payload's version nibble says IPv4 or IPv6 (anything else is not IP to us).
        if outcome == _TCP and (et == 0x8847 or et == 0x8848):
            k = 0
            while True:
                if k >= _MAX_LABELS:
                    outcome = _MALF
                    break
                if end - p < 4:
                    outcome = _TRUNC
                    break
                bos = _u8(buf, p + 2) & 1
                p += 4
                k += 1
                if bos:
                    et = -1
                    break
        # PPPoE session stage: 6-byte PPPoE header, then the PPP protocol (2 bytes, or
        # 1 byte when protocol-field compression is on: odd first byte).
        elif outcome == _TCP and et == 0x8864:
            if end - p < 7:
                outcome = _TRUNC
            else:
                p += 6
                if _u8(buf, p) & 1:
                    proto = _u8(buf, p)
                    p += 1
                elif end - p < 2:
                    proto = -1
                    outcome = _TRUNC
                else:
                    proto = _be16(buf, p)
                    p += 2
                if proto == 0x0021:
                    et = 0x0800
                elif proto == 0x0057:
                    et = 0x86DD
                elif outcome == _TCP:
                    outcome = _NON_IP
        version = 0
        if outcome == _TCP:
            if et == 0x0800:
                version = 4
            elif et == 0x86DD:
                version = 6
            elif et == -1:
                if end - p < 1:
                    outcome = _TRUNC
                else:
                    nib = _u8(buf, p) >> 4
                    if nib == 4:
                        version = 4
                    elif nib == 6:
                        version = 6
                    else:
                        outcome = _NON_IP
            else:
                outcome = _NON_IP
        # ---- network layer --------------------------------------------------------
        t = 0  # start of the TCP header
        l4len = 0  # TCP header + payload length per the IP header
        r_ttl = 0
        r_id = -1
        r_df = False
        r_hlen = 0
        if outcome == _TCP and version == 4:
            if end - p < 20:
                outcome = _TRUNC
            elif (_u8(buf, p) >> 4) != 4:
                outcome = _MALF
            else:
                ihl = (_u8(buf, p) & 0x0F) * 4
                total = _be16(buf, p + 2)
                fo = _be16(buf, p + 6)
                if ihl < 20:
                    outcome = _MALF
                elif (fo & 0x2000) != 0 or (fo & 0x1FFF) != 0:
                    outcome = _FRAG
                elif _u8(buf, p + 9) != 6:
                    outcome = _NON_TCP
                elif end - p < ihl:
                    outcome = _TRUNC
                elif total != 0 and total < ihl:
                    outcome = _MALF
                else:
                    if total == 0:  # TSO/GSO capture: length not filled in yet
                        total = end - p
                    r_ttl = _u8(buf, p + 8)
                    r_id = _be16(buf, p + 4)
                    r_df = (fo & 0x4000) != 0
                    r_hlen = ihl
                    t = p + ihl
                    l4len = total - ihl
                    src_hi[uj] = 0
                    src_lo[uj] = _MAPPED | np.uint64(_be32(buf, p + 12))
                    dst_hi[uj] = 0
                    dst_lo[uj] = _MAPPED | np.uint64(_be32(buf, p + 16))
        elif outcome == _TCP and version == 6:
            if end - p < 40:
                outcome = _TRUNC
            elif (_u8(buf, p) >> 4) != 6:
                outcome = _MALF
            else:
                plen = _be16(buf, p + 4)
                nh = _u8(buf, p + 6)
                q = p + 40
                k = 0
                while outcome == _TCP and (nh == 0 or nh == 43 or nh == 60 or nh == 44 or nh == 51):
                    if k >= _MAX_TAGS:
                        outcome = _MALF
                        break
                    k += 1
                    if end - q < 8:
                        outcome = _TRUNC
                        break
                    if nh == 44:
                        ff = _be16(buf, q + 2)
                        if (ff >> 3) != 0 or (ff & 1) != 0:
                            outcome = _FRAG
                            break
                        hl = 8
                    elif nh == 51:
                        hl = (_u8(buf, q + 1) + 2) * 4
                    else:
                        hl = (_u8(buf, q + 1) + 1) * 8
                    nh = _u8(buf, q)
                    if end - q < hl:
                        outcome = _TRUNC
                        break
                    q += hl
                if outcome == _TCP:
                    ext = q - p - 40
                    if nh != 6:
                        outcome = _NON_TCP
                    elif plen != 0 and plen < ext:
                        outcome = _MALF
                    else:
                        if plen == 0:  # jumbogram or TSO capture: use what was captured
                            plen = end - p - 40
                        r_ttl = _u8(buf, p + 7)
                        r_hlen = q - p
                        t = q
                        l4len = plen - ext
                        src_hi[uj] = _be64(buf, p + 8)
                        src_lo[uj] = _be64(buf, p + 16)
                        dst_hi[uj] = _be64(buf, p + 24)
                        dst_lo[uj] = _be64(buf, p + 32)
        # ---- TCP --------------------------------------------------------------------
        if outcome == _TCP:
            if end - t < 20:
                outcome = _TRUNC
            else:
                thl = (_u8(buf, t + 12) >> 4) * 4
                if thl < 20 or l4len < thl:
                    outcome = _MALF
        if outcome != _TCP:
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
            continue
        thl = (_u8(buf, t + 12) >> 4) * 4
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
        flags[uj] = ((_u8(buf, t + 12) & 1) << 8) | _u8(buf, t + 13)
        window[uj] = _be16(buf, t + 14)
        tcp_hlen[uj] = thl
        plen_tcp = l4len - thl
        payload_len[uj] = plen_tcp
        poff = t + thl
        payload_off[uj] = poff
        have = end - poff
        if have < 0:
            have = 0
        if have > plen_tcp:
            have = plen_tcp  # bytes past the IP length are link padding, not payload
        captured_payload[uj] = have
        # Options: walk [t+20, t+thl), stopping silently where the capture ends.
        bits = 0
        r_tsv = 0
        r_tse = 0
        r_mss = 0
        r_ws = -1
        q = t + 20
        lim = t + thl
        while q < lim and q < end:
            kind = _u8(buf, q)
            if kind == 0:
                break
            if kind == 1:
                q += 1
                continue
            if q + 1 >= lim:
                bits |= 0x80
                break
            if q + 1 >= end:
                break
            ln = _u8(buf, q + 1)
            if ln < 2 or q + ln > lim:
                bits |= 0x80
                break
            if q + ln > end:
                break
            if kind == 2:
                if ln == 4:
                    bits |= 0x02
                    r_mss = _be16(buf, q + 2)
                else:
                    bits |= 0x80
            elif kind == 3:
                if ln == 3:
                    bits |= 0x04
                    r_ws = min(_u8(buf, q + 2), 14)  # RFC 7323 2.3: larger means 14
                else:
                    bits |= 0x80
            elif kind == 4:
                bits |= 0x08
            elif kind == 5:
                bits |= 0x10
            elif kind == 8:
                if ln == 10:
                    bits |= 0x01
                    r_tsv = _be32(buf, q + 2)
                    r_tse = _be32(buf, q + 6)
                else:
                    bits |= 0x80
            elif kind == 19:
                bits |= 0x20
            elif kind == 29:
                bits |= 0x40
            q += ln
        tcp_opts[uj] = bits
        ts_val[uj] = r_tsv
        ts_ecr[uj] = r_tse
        mss[uj] = r_mss
        wscale[uj] = r_ws
        j += 1
    counters[C_TCP] += j
    counters[C_BYTES] += captured
    return j
