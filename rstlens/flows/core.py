"""The per-packet TCP core, compiled with numba: the batch walk and the connections' lifetime.

`process()` walks one decoded batch.  For every packet it finds (or creates) the
connection, advances both endpoints' Zeek states, appends history letters, keeps the
per-direction counters attribution needs, and logs every RST with a snapshot of both
endpoints at that moment.  Later packets of the same connection fill in the RST's
"afterwards" columns (did the claimed sender carry on? did the receiver answer?).

The parts, one module each: `states` (Zeek's endpoint state machine, conn_state),
`endpoint` (a side's sequence space), `history` (the history letters), `rstlog` (the RST
log), `lifetime` (Zeek's timers, connection reuse), `hashtable` (the flow table),
`seqspace` (sequence arithmetic).  Per-packet helpers are inlined into `process`: one
compiled body, no calls and no reference counting per packet.

The kernel never allocates: when the flow table, the output or the RST log is full it
returns a status and the index to resume from, and Python makes room (`engine`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rstlens.flows import layout as L
from rstlens.flows.checksum import segment_checksum
from rstlens.flows.endpoint import (
    ack_peer,
    ack_received,
    data_sent,
    endpoint_size,
    init_endpoint,
    update_last_seq,
)
from rstlens.flows.hashtable import (
    copy_row,
    fill_row,
    key_hash,
    lookup,
    prefetch_position,
    prefetch_row,
    remove,
)
from rstlens.flows.history import (
    H_FLIPPED,
    H_ZERO_WINDOW,
    add_history,
    scaled_history,
    update_history,
)
from rstlens.flows.lifetime import (
    NEVER,
    earliest_expiry,
    end_reason,
    expired,
    is_reuse,
    syn_only_expiry,
)
from rstlens.flows.rstlog import after_rst, keep_text, log_rst, rst_original, ts_seen
from rstlens.flows.seqspace import MASK32, seq_delta, unwrap
from rstlens.flows.states import conn_state, connection_closed, update_state_machine
from rstlens.kernels.prefetch import prefetch
from rstlens.parsers._batch import ACK, FIN, OPT_TIMESTAMP, RST, SYN

AHEAD = 4  # packets between prefetching a row and using it
SWEEP_AHEAD = 8  # rows a sweep looks ahead for due rows whose hash slots it prefetches
TTL_NONE = 256  # above any TTL: a side's minimum before its first packet
# A capture copy (`_is_copy`) comes at most this long after the segment it copies: copies
# from two taps, a SPAN of both directions or `-i any` on a router are microseconds apart
# (0.001-0.8 ms in ../shared/corpus/field), while a retransmission waits for a timeout or
# for duplicate ACKs and carries a new IP ID.
DUP_WINDOW_US = 5_000
DUP_TTL_HOPS = 1  # a copy's TTL may differ by this much (captured one hop further on)
# each side's segments without payload among its first CSUM_SAMPLE are checksummed (SYN,
# SYN-ACK, ACKs: a header's worth of summing): the baseline that tells a corrupt segment
# (others good) from checksum offload or a rewritten capture (all bad)
CSUM_SAMPLE = 4
_U16 = 0xFFFF
_E_TSVAL_SHIFT = 28  # of an embryonic SYN's TSval in `layout.E_ORIGIN`


# --------------------------------------------------------------------------- the key
@njit(cache=True, inline="always")
def _key_extra(vlan, inner_vlan, iface):  # type: ignore[no-untyped-def]
    """VLAN ids (+1, so that untagged is 0), and the interface, packed (layout.KEY_EXTRA)."""
    return (
        ((vlan + 1) & L.KEY_FIELD_MASK) << L.KEY_VLAN_SHIFT
        | ((inner_vlan + 1) & L.KEY_FIELD_MASK) << L.KEY_INNER_VLAN_SHIFT
        | (iface & L.KEY_FIELD_MASK)
    )


@njit(cache=True, inline="always")
def _packet_key(src_hi, src_lo, dst_hi, dst_lo, sport, dport, vlan, inner_vlan, iface, tunnel, i):  # type: ignore[no-untyped-def]
    """Packet i's canonical key (endpoint A is the lower address/port), whether the packet
    comes from A, and its tunnel identity (a key word of its own, 0 untunnelled: hashed as
    `extra ^ tunnel`, so untunnelled keys hash as before, and compared whole)."""
    s_hi = np.uint64(src_hi[i])
    s_lo = np.uint64(src_lo[i])
    d_hi = np.uint64(dst_hi[i])
    d_lo = np.uint64(dst_lo[i])
    sp = np.int64(sport[i])
    dp = np.int64(dport[i])
    src_is_a = s_hi < d_hi or (s_hi == d_hi and (s_lo < d_lo or (s_lo == d_lo and sp <= dp)))
    if src_is_a:
        a_hi, a_lo, b_hi, b_lo = s_hi, s_lo, d_hi, d_lo
        ports = (sp << L.KEY_PORT_SHIFT) | dp
    else:
        a_hi, a_lo, b_hi, b_lo = d_hi, d_lo, s_hi, s_lo
        ports = (dp << L.KEY_PORT_SHIFT) | sp
    extra = _key_extra(np.int64(vlan[i]), np.int64(inner_vlan[i]), np.int64(iface[i]))
    return a_hi, a_lo, b_hi, b_lo, ports, extra, src_is_a, np.int64(tunnel[i])


# --------------------------------------------------------------------------- batch steps
@njit(cache=True, inline="always")
def _hash_keys(src_hi, src_lo, dst_hi, dst_lo, sport, dport, vlan, inner_vlan, iface, tunnel, hashes, start, n):  # type: ignore[no-untyped-def]
    """The key hashes of packets start..n, known up front so that lookups can be prefetched."""
    for i in range(start, n):
        key = _packet_key(src_hi, src_lo, dst_hi, dst_lo, sport, dport, vlan, inner_vlan, iface, tunnel, i)
        hashes[i] = key_hash(key[0], key[1], key[2], key[3], key[4], key[5] ^ key[7])


@njit(cache=True, inline="always")
def _prefetch_ahead(T, F, K, A, E, X, hashes, raw, payload_len, payload_off, tcp_hlen, ip_hlen, i, n):  # type: ignore[no-untyped-def]
    """The table is far larger than the cache: most lookups miss.  Fetch the slot of packet
    i + 2 * AHEAD and the row of packet i + AHEAD while packet i is worked on; for a
    segment without payload (the ones `segment_checksum` reads: RSTs and each side's first
    header-only segments), also the first line of its IP header in the batch's bytes."""
    if AHEAD and i + 2 * AHEAD < n:
        prefetch_position(T, hashes[i + 2 * AHEAD])
    if AHEAD and i + AHEAD < n:
        j = np.uint64(i + AHEAD)
        prefetch_row(T, F, K, A, E, X, hashes[j])
        if payload_len[j] == 0:
            end = np.int64(payload_off[j])
            begin = end - np.int64(tcp_hlen[j]) - np.int64(ip_hlen[j])
            if begin >= 0 and begin < end <= raw.shape[0]:
                prefetch(raw, (begin,))


@njit(cache=True, inline="always")
def _room(FO, nout, R, nr, nfree):  # type: ignore[no-untyped-def]
    """L.OK when the packet's own emissions (expiry or reuse of its connection), its RST and
    a new row all fit; else what Python must make room for."""
    if nout[0] + 2 > FO.shape[0]:
        return L.NEED_OUTPUT
    if nr[0] + 2 > R.shape[0]:  # a reset row's RST replayed, then the packet's own
        return L.NEED_RST_SPACE
    if nfree[0] < 1:
        return L.NEED_SLOT
    return L.OK


@njit(cache=True, inline="always")
def _advance_clock(P, C, t):  # type: ignore[no-untyped-def]
    """The newest timestamp seen; older ones are counted, not reordered."""
    if t >= P[L.P_MAX_TS]:
        P[L.P_MAX_TS] = t
    else:
        C[L.C_TIME_BACKWARDS] += 1


@njit(cache=True, inline="always")
def _find_connection(F, K, H, A, E, X, FS, HS, NRS, T, free, nfree, DL, FO, KO, HO, RO, nout,
                     R, nr, P, C, h, key, t, fl, seq32, resettable):  # type: ignore[no-untyped-def]
    """(hash position, row) of the packet's connection (`key`: `_packet_key`), row -1 when
    it must be created: a connection Zeek's timers would have removed by now, or one this
    SYN reuses, is emitted first.  An embryonic connection's SYN (a reset row's SYN and RST)
    is replayed into its full row first, unless the packet is `resettable` and the
    connection embryonic and not yet expired (DL is its exact expiry): then the row is
    returned as it is, to become a reset row.  (Few arguments: calls of more than 30
    compile to *args, which numba cannot inline.)"""
    a_hi, a_lo, b_hi, b_lo, ports, extra, _, tun = key
    pos, s = lookup(T, K, h, a_hi, a_lo, b_hi, b_lo, ports, extra, tun)
    if s >= 0:
        kind = A[s]
        if kind == L.ROW_EMBRYONIC:
            if resettable and t < DL[s]:
                return pos, s
            _materialize(F, H, s, K, E, s, R, nr, C, P[L.P_CLOSE_DELAY_US], P[L.P_ATTEMPT_US])
            A[s] = L.ROW_FULL
        elif kind == L.ROW_RESET:
            _replay(F, H, s, K, E, X, s, R, nr, C, P[L.P_CLOSE_DELAY_US], P[L.P_ATTEMPT_US])
            A[s] = L.ROW_FULL
        reason = expired(F, s, t, P[L.P_IDLE_US], P[L.P_SHORT_IDLE_US])
        if reason >= 0:
            if reason == L.END_IDLE:
                C[L.C_IDLE] += 1
            emit(F, K, H, A, E, X, FS, HS, NRS, T, free, nfree, FO, KO, HO, RO, nout, R, nr, P,
                 C, s, reason)
            s = -1
        elif is_reuse(F, s, fl, seq32):
            C[L.C_REUSE] += 1
            emit(F, K, H, A, E, X, FS, HS, NRS, T, free, nfree, FO, KO, HO, RO, nout, R, nr, P,
                 C, s, end_reason(F, s))
            s = -1
        if s < 0:
            pos, s = lookup(T, K, h, a_hi, a_lo, b_hi, b_lo, ports, extra, tun)
    return pos, s


@njit(cache=True, inline="always")
def _sender_is_responder(fl, sp, dp, likely_server):  # type: ignore[no-untyped-def]
    """Zeek's WantConnection: the sender is the originator, unless a packet other than a
    plain SYN comes from a likely server port (to a port that is not one)."""
    if ((fl & SYN) == 0 or (fl & ACK) != 0) and likely_server[sp]:
        return fl & SYN == 0 and sp < dp if likely_server[dp] else True
    return False


@njit(cache=True, inline="always")
def _take_row(K, A, T, free, nfree, P, C, pos, h, key, kind):  # type: ignore[no-untyped-def]
    """A free row for a new connection, entered in the hash table with its key row.
    Returns (row, the connection's serial number)."""
    a_hi, a_lo, b_hi, b_lo, ports, extra, _, tun = key
    nfree[0] -= 1
    s = free[nfree[0]]
    if s >= P[L.P_ROWS_USED]:
        P[L.P_ROWS_USED] = s + 1
    T[pos] = s
    P[L.P_LIVE] += 1
    C[L.C_FLOWS] += 1
    K[s, L.K_A_HI] = a_hi
    K[s, L.K_A_LO] = a_lo
    K[s, L.K_B_HI] = b_hi
    K[s, L.K_B_LO] = b_lo
    K[s, L.K_HASH] = np.uint64(h)
    K[s, L.K_PORTS] = np.uint64(ports)
    K[s, L.K_EXTRA] = np.uint64(extra)
    K[s, L.K_TUNNEL] = np.uint64(tun)
    A[s] = kind
    serial = P[L.P_NEXT_SERIAL]
    P[L.P_NEXT_SERIAL] += 1
    return s, serial


@njit(cache=True, inline="always")
def _init_row(F, H, s, serial, h, ports, extra, tun, ipv, t, source, vlan, inner_vlan,
              start_seen, orig_is_a):  # type: ignore[no-untyped-def]
    """A new connection's F and H row, before its first packet."""
    fill_row(F, s, 0)
    fill_row(H, s, 0)
    F[s, L.ACTIVE] = 1
    F[s, L.SERIAL] = serial
    F[s, L.HASH] = h
    F[s, L.KEY_PORTS] = ports
    F[s, L.KEY_EXTRA] = extra
    F[s, L.TUNNEL] = tun
    F[s, L.IPV] = ipv
    F[s, L.TS_FIRST] = t
    F[s, L.TS_LAST] = t
    F[s, L.SOURCE] = source
    F[s, L.VLAN] = vlan
    F[s, L.INNER_VLAN] = inner_vlan
    F[s, L.LAST_RST] = -1
    F[s, L.START_SEEN] = start_seen
    for dd in range(2):
        b = L.D + dd * L.DSTRIDE
        F[s, b + L.WSCALE] = -1
        F[s, b + L.TTL_MIN] = TTL_NONE
        F[s, b + L.DATA_TTL_MIN] = TTL_NONE
    F[s, L.ORIG_IS_A] = orig_is_a


@njit(cache=True, inline="always")
def _new_connection(F, K, H, A, T, free, nfree, P, C, pos, h, key, t, fl, sp, dp, likely_server,
                    ip_version, source, vlan, inner_vlan, ui):  # type: ignore[no-untyped-def]
    """Take a free row for the packet's new connection; returns it."""
    _, _, _, _, ports, extra, src_is_a, tun = key
    s, serial = _take_row(K, A, T, free, nfree, P, C, pos, h, key, L.ROW_FULL)
    flip = _sender_is_responder(fl, sp, dp, likely_server)
    _init_row(F, H, s, serial, h, ports, extra, tun, ip_version[ui], t, source[ui], vlan[ui],
              inner_vlan[ui], (fl & (SYN | ACK | RST)) == SYN,
              (not src_is_a) if flip else src_is_a)
    if flip:
        add_history(F, H, s, H_FLIPPED)
    return s


# --------------------------------------------------------------------------- embryonic rows
@njit(cache=True, inline="always")
def _plain_syn(fl, plen):  # type: ignore[no-untyped-def]
    """A packet that may start an embryonic connection: SYN without ACK, RST or FIN, and
    without payload (never a role flip: `_sender_is_responder` is False for it)."""
    return (fl & (SYN | ACK | RST | FIN)) == SYN and plen == 0


@njit(cache=True, inline="always")
def _store_syn(E, s, serial, t, fl, seq32, ack32, win, ttl, ipid, df, opts, mss, wscale,
               frame, source, outer_ttl, ipv, vlan, inner_vlan, src_is_a, ck, tsv):  # type: ignore[no-untyped-def]
    """An embryonic connection's row of E: its SYN (`layout.E_*`); F and H stay untouched."""
    E[s, L.E_TS] = t
    E[s, L.E_FRAME] = frame
    E[s, L.E_SERIAL] = serial
    E[s, L.E_SEQ_ACK] = (seq32 & MASK32) | ((ack32 & MASK32) << 32)
    E[s, L.E_PACKET] = fl | (win << 16) | (ttl << 32) | ((outer_ttl + 1) << 40) | (df << 50) | (ipv << 51)
    E[s, L.E_OPTIONS] = (ipid + 1) | (mss << 33) | ((wscale + 1) << 49)
    E[s, L.E_ORIGIN] = (source | (opts << 16) | (np.int64(src_is_a) << 24) | ((ck + 1) << 25)
                        | ((tsv & MASK32) << _E_TSVAL_SHIFT))
    E[s, L.E_VLANS] = ((vlan + 1) & MASK32) | (((inner_vlan + 1) & MASK32) << 32)


@njit(cache=True)
def _materialize(F, H, r, K, E, s, R, nr, C, close_us, attempt_us):  # type: ignore[no-untyped-def]
    """Row `r` of F/H becomes embryonic connection `s` as the full path would have left
    it: a new row, then its SYN through `_packet` (a plain SYN logs no RST).  Called, not
    inlined: once per connection, and each inlined copy of `_packet` costs the ahead-of-time
    build about a minute (four callers)."""
    t = E[s, L.E_TS]
    w = E[s, L.E_PACKET]
    o = E[s, L.E_OPTIONS]
    g = E[s, L.E_ORIGIN]
    v = E[s, L.E_VLANS]
    sa = E[s, L.E_SEQ_ACK]
    source = g & 0xFFFF
    _init_row(F, H, r, E[s, L.E_SERIAL], np.int64(K[s, L.K_HASH]), np.int64(K[s, L.K_PORTS]),
              np.int64(K[s, L.K_EXTRA]), np.int64(K[s, L.K_TUNNEL]), (w >> 51) & 0xF, t, source,
              (v & MASK32) - 1, ((v >> 32) & MASK32) - 1, True, ((g >> 24) & 1) == 1)
    _packet(F, H, R, nr, r, 0, t, w & 0xFFFF, sa & MASK32, (sa >> 32) & MASK32, 0, 0,
            (w >> 16) & 0xFFFF, (w >> 32) & 0xFF, (o & 0x1FFFFFFFF) - 1, (w >> 50) & 1,
            (g >> 16) & 0xFF, (o >> 33) & 0xFFFF, ((o >> 49) & 0xFF) - 1, E[s, L.E_FRAME],
            source, ((w >> 40) & 0x3FF) - 1, close_us, attempt_us, C, False, -1,
            ((g >> 25) & 0x7) - 1, ((g >> _E_TSVAL_SHIFT) & MASK32) << 32, -1)


@njit(cache=True, inline="always")
def _resettable(fl, plen, cap):  # type: ignore[no-untyped-def]
    """A packet that may turn an embryonic connection into a reset row (`layout.ROW_RESET`):
    an RST without SYN or FIN (never a reuse, never a role flip) and without payload (no
    text to keep)."""
    return (fl & (SYN | RST | FIN)) == RST and plen == 0 and cap == 0


@njit(cache=True, inline="always")
def _store_rst(X, s, t, frame, ordinal, fl, seq32, ack32, win, ttl, outer_ttl, df, d, ipid,
               opts, ck, source, tsp):  # type: ignore[no-untyped-def]
    """A reset row's RST (`layout.X_*`), from side `d` (`tsp`: TSval << 32 | TSecr)."""
    X[s, L.X_TSP] = tsp
    X[s, L.X_TS] = t
    X[s, L.X_FRAME] = frame
    X[s, L.X_ORDINAL] = ordinal
    X[s, L.X_SEQ_ACK] = (seq32 & MASK32) | ((ack32 & MASK32) << 32)
    X[s, L.X_PACKET] = fl | (win << 16) | (ttl << 32) | ((outer_ttl + 1) << 40) | (df << 50) | (np.int64(d) << 51)
    X[s, L.X_ORIGIN] = (ipid + 1) | (opts << 33) | ((ck + 1) << 41) | (source << 44)


@njit(cache=True)
def _replay(F, H, r, K, E, X, s, R, nr, C, close_us, attempt_us):  # type: ignore[no-untyped-def]
    """Row `r` of F/H becomes reset row `s` as the full path would have left it: its SYN
    (`_materialize`), then its RST through `_packet`, logged at row nr[0] of `R` with the
    ordinal it took on arrival (neither counted again nor taken for a copy: the
    connection had no RST before it).  Called, not inlined: once per reset connection,
    and six inlined copies of `_packet` had made the build take minutes longer."""
    _materialize(F, H, r, K, E, s, R, nr, C, close_us, attempt_us)
    w = X[s, L.X_PACKET]
    o = X[s, L.X_ORIGIN]
    sa = X[s, L.X_SEQ_ACK]
    _packet(F, H, R, nr, r, (w >> 51) & 1, X[s, L.X_TS], w & 0xFFFF, sa & MASK32,
            (sa >> 32) & MASK32, 0, 0, (w >> 16) & 0xFFFF, (w >> 32) & 0xFF,
            (o & 0x1FFFFFFFF) - 1, (w >> 50) & 1, (o >> 33) & 0xFF, 0, -1, X[s, L.X_FRAME],
            (o >> 44) & 0xFFFF, ((w >> 40) & 0x3FF) - 1, close_us, attempt_us, C, False, -1,
            ((o >> 41) & 0x7) - 1, X[s, L.X_TSP], X[s, L.X_ORDINAL])


@njit(cache=True)
def _to_scratch(FS, HS, K, E, X, s, kind, R, nr, RO, NRS, C, P):  # type: ignore[no-untyped-def]
    """Embryonic or reset row `s` replayed into the scratch row 0 of FS/HS (a reset row's
    RST into RO at NRS[0], which the caller keeps only if it emits the row); its own rows
    stay untouched."""
    if kind == L.ROW_EMBRYONIC:
        _materialize(FS, HS, 0, K, E, s, R, nr, C, P[L.P_CLOSE_DELAY_US], P[L.P_ATTEMPT_US])
    else:
        _replay(FS, HS, 0, K, E, X, s, RO, NRS, C, P[L.P_CLOSE_DELAY_US], P[L.P_ATTEMPT_US])


@njit(cache=True)
def process(
    ts_us, source, iface, frame, ip_version, src_hi, src_lo, dst_hi, dst_lo, sport, dport,
    seq, ack, flags, window, ttl, ip_id, df, ip_hlen, tcp_hlen, payload_len, payload_off,
    captured_payload, vlan, inner_vlan, tunnel, outer_ttl, tcp_opts, ts_val, ts_ecr, mss, wscale, raw,
    likely_server, start, F, K, H, A, E, X, FS, HS, NRS, T, free, nfree, DL, R, nr, FO, KO, HO, RO, nout,
    P, C, hashes,
):  # type: ignore[no-untyped-def]
    """Walk packets `start..` of a batch (`hashes`: scratch space, at least one slot per
    packet; `FS`/`HS`: one scratch row of F/H, where embryonic and reset connections are
    replayed; `NRS`: the scratch counters of an RST replayed into the output's RST rows RO).
    Returns (next index, status)."""
    n = ts_us.shape[0]
    idle_us = P[L.P_IDLE_US]
    short_idle_us = P[L.P_SHORT_IDLE_US]
    close_us = P[L.P_CLOSE_DELAY_US]
    attempt_us = P[L.P_ATTEMPT_US]
    _hash_keys(src_hi, src_lo, dst_hi, dst_lo, sport, dport, vlan, inner_vlan, iface, tunnel, hashes,
               start, n)
    for i in range(start, n):
        _prefetch_ahead(T, F, K, A, E, X, hashes, raw, payload_len, payload_off, tcp_hlen, ip_hlen, i, n)
        status = _room(FO, nout, R, nr, nfree)
        if status != L.OK:
            return i, status
        ui = np.uint64(i)  # unsigned column index: no negative-index wrap (see `us`)
        t = np.int64(ts_us[ui])
        _advance_clock(P, C, t)
        if t - P[L.P_LAST_SWEEP] >= P[L.P_SWEEP_US]:
            if not sweep(F, K, H, A, E, X, FS, HS, NRS, T, free, nfree, DL, FO, KO, HO, RO, nout, R,
                         nr, P, C, t):
                return i, L.NEED_OUTPUT  # the sweep goes on after the drain
            P[L.P_LAST_SWEEP] = t

        sp = np.int64(sport[ui])
        dp = np.int64(dport[ui])
        key = _packet_key(src_hi, src_lo, dst_hi, dst_lo, sport, dport, vlan, inner_vlan, iface,
                          tunnel, ui)
        src_is_a = key[6]
        h = hashes[ui]
        fl = np.int64(flags[ui])
        seq32 = np.int64(seq[ui])
        ack32 = np.int64(ack[ui])
        plen = np.int64(payload_len[ui])
        cap = np.int64(captured_payload[ui])

        pos, s = _find_connection(F, K, H, A, E, X, FS, HS, NRS, T, free, nfree, DL, FO, KO, HO,
                                  RO, nout, R, nr, P, C, h, key, t, fl, seq32,
                                  P[L.P_RESET_ROWS] == 1 and _resettable(fl, plen, cap))
        if s >= 0 and A[s] == L.ROW_EMBRYONIC:
            # its SYN, then this RST: a reset row.  The RST takes its number and is counted
            # now; it is logged when the row is replayed.  The full path would check it
            # against the connection's earlier RSTs (there are none) and verify its checksum.
            us = np.uint64(s)
            ck = segment_checksum(raw, np.int64(ip_version[ui]), src_hi[ui], src_lo[ui], dst_hi[ui],
                                  dst_lo[ui], np.int64(payload_off[ui]) - np.int64(tcp_hlen[ui]),
                                  np.int64(tcp_hlen[ui]), np.int64(ip_hlen[ui]), plen, cap)
            orig_is_a = ((E[us, L.E_ORIGIN] >> 24) & 1) == 1
            ordinal = nr[1]
            nr[1] += 1
            C[L.C_RSTS] += 1
            _store_rst(X, us, t, np.int64(frame[ui]), ordinal, fl, seq32, ack32,
                       np.int64(window[ui]), np.int64(ttl[ui]), np.int64(outer_ttl[ui]),
                       np.int64(df[ui]), 0 if orig_is_a == src_is_a else 1, np.int64(ip_id[ui]),
                       np.int64(tcp_opts[ui]), ck, np.int64(source[ui]),
                       (np.int64(ts_val[ui]) << 32) | np.int64(ts_ecr[ui]))
            A[us] = L.ROW_RESET
            # its expiry, from the replayed row (the RST goes to a free row of RO, not kept)
            NRS[0] = nout[1]
            _replay(FS, HS, 0, K, E, X, us, RO, NRS, C, close_us, attempt_us)
            DL[us] = earliest_expiry(FS, 0, idle_us, short_idle_us)
            continue
        if s < 0 and _plain_syn(fl, plen):
            s, serial = _take_row(K, A, T, free, nfree, P, C, pos, h, key, L.ROW_EMBRYONIC)
            # a side's first segment is in the checksum sample (see below): verified now, as
            # the batch's bytes are gone when the SYN is replayed
            syn_ck = segment_checksum(raw, np.int64(ip_version[ui]), src_hi[ui], src_lo[ui],
                                      dst_hi[ui], dst_lo[ui],
                                      np.int64(payload_off[ui]) - np.int64(tcp_hlen[ui]),
                                      np.int64(tcp_hlen[ui]), np.int64(ip_hlen[ui]), plen,
                                      np.int64(captured_payload[ui]))
            _store_syn(E, s, serial, t, fl, seq32, ack32, np.int64(window[ui]), np.int64(ttl[ui]),
                       np.int64(ip_id[ui]), np.int64(df[ui]), np.int64(tcp_opts[ui]),
                       np.int64(mss[ui]), np.int64(wscale[ui]), np.int64(frame[ui]),
                       np.int64(source[ui]), np.int64(outer_ttl[ui]), np.int64(ip_version[ui]),
                       np.int64(vlan[ui]), np.int64(inner_vlan[ui]), src_is_a, syn_ck,
                       np.int64(ts_val[ui]))
            # what earliest_expiry gives the full row after this SYN (sweep checks it again on
            # the replayed row before emitting)
            DL[np.uint64(s)] = syn_only_expiry(t, short_idle_us, attempt_us)
            continue
        if s < 0:
            s = _new_connection(F, K, H, A, T, free, nfree, P, C, pos, h, key, t, fl, sp, dp,
                                likely_server, ip_version, source, vlan, inner_vlan, ui)

        d = 0 if (F[s, L.ORIG_IS_A] == 1) == src_is_a else 1
        # s is a valid row now: as an unsigned index, numba drops the negative-index wrap it
        # would otherwise put at many of the row accesses below
        us = np.uint64(s)
        e = L.D + d * L.DSTRIDE
        win = np.int64(window[ui])
        r_ttl = np.int64(ttl[ui])
        ipid = np.int64(ip_id[ui])
        rst = (fl & RST) != 0
        dup_of = -1
        if rst:  # against each of the connection's last RSTs: taps interleave their copies
            dup_of = rst_original(F, R, us, (F[us, L.ORIG_IS_A] == 1) == (d == 0), t, fl, seq32,
                                  ack32, plen, win, r_ttl, ipid, DUP_WINDOW_US, DUP_TTL_HOPS)
            dup = dup_of >= 0
        else:
            dup = _is_copy(F, us, e, t, fl, seq32, ack32, plen, win, r_ttl, ipid)
        ck = -1  # not verified
        sample = plen == 0 and F[us, e + L.NONRST_PKTS] < CSUM_SAMPLE  # header-only: cheap
        if rst or (not dup and (F[us, L.LAST_RST] >= 0 or sample)):
            ck = segment_checksum(raw, np.int64(ip_version[ui]), src_hi[ui], src_lo[ui], dst_hi[ui],
                                  dst_lo[ui], np.int64(payload_off[ui]) - np.int64(tcp_hlen[ui]),
                                  np.int64(tcp_hlen[ui]), np.int64(ip_hlen[ui]), plen, cap)
        _packet(F, H, R, nr, us, d, t, fl, seq32, ack32, plen, cap, win, r_ttl, ipid,
                np.int64(df[ui]), np.int64(tcp_opts[ui]), np.int64(mss[ui]),
                np.int64(wscale[ui]), np.int64(frame[ui]), np.int64(source[ui]),
                np.int64(outer_ttl[ui]), close_us, attempt_us, C, dup, dup_of, ck,
                (np.int64(ts_val[ui]) << 32) | np.int64(ts_ecr[ui]), -1)
        if rst:
            keep_text(R, nr[0] - 1, raw, np.int64(payload_off[ui]), cap)
        DL[us] = earliest_expiry(F, us, idle_us, short_idle_us)
    return n, L.OK


# --------------------------------------------------------------------------- one packet
@njit(cache=True, inline="always")
def _signature(seq32, ipid, plen):  # type: ignore[no-untyped-def]
    """What `layout.LAST_SIG` keeps of a segment."""
    return (seq32 << 32) | ((ipid & _U16) << 16) | (plen & _U16)


@njit(cache=True, inline="always")
def _last_segment(ttl, fl, ack32):  # type: ignore[no-untyped-def]
    """What `layout.LAST_SEG` keeps of a segment: its TTL, flags and ack."""
    return (ttl << L.SEG_TTL_SHIFT) | (fl << L.SEG_FLAGS_SHIFT) | ack32


@njit(cache=True, inline="always")
def _is_copy(F, s, e, t, fl, seq32, ack32, plen, win, ttl, ipid):  # type: ignore[no-untyped-def]
    """Is this segment a capture copy of the last one side `e` sent (two taps, a SPAN of both
    directions, `-i any` on a router)?  Same seq, ack, flags, payload length and window,
    within DUP_WINDOW_US, TTL within DUP_TTL_HOPS, and either the same non-zero IPv4 IP ID,
    or, without an IP ID to compare (IPv6, IP ID 0), a TTL one hop different: the same
    packet seen at two points.  Two identical segments with the same TTL and no IP ID (a
    reactive RST to each of a burst of segments) cannot be told from copies: they are not
    taken for copies."""
    if F[s, e + L.PKTS] == 0:
        return False
    dt = t - F[s, e + L.LAST_TS]
    if dt < 0 or dt > DUP_WINDOW_US:
        return False
    if F[s, e + L.LAST_SIG] != _signature(seq32, ipid, plen) or F[s, e + L.WIN] != win:
        return False
    last = F[s, e + L.LAST_SEG]
    if (last & ((1 << L.SEG_TTL_SHIFT) - 1)) != _last_segment(0, fl, ack32):
        return False
    dttl = ttl - (last >> L.SEG_TTL_SHIFT)
    if dttl > DUP_TTL_HOPS or dttl < -DUP_TTL_HOPS:
        return False
    return ipid > 0 or dttl != 0


@njit(cache=True, inline="always")
def _count_checksum(F, s, e, ck):  # type: ignore[no-untyped-def]
    if ck == L.CK_GOOD:
        F[s, e + L.CSUM_GOOD] += 1
    elif ck == L.CK_BAD:
        F[s, e + L.CSUM_BAD] += 1
    elif ck == L.CK_OFFLOAD:
        F[s, e + L.CSUM_OFFLOAD] += 1


@njit(cache=True, inline="always")
def _sender_view(F, s, e, fl, seq32, ack32, plen, ttl, opts, mss, wscale, tsp):  # type: ignore[no-untyped-def]
    """rstlens' own per-side view, which RSTs are judged against (RSTs excluded): packets,
    TTL range, highest sequence sent and acknowledged (raw 32-bit), handshake options,
    TSvals sent."""
    syn = (fl & SYN) != 0
    F[s, e + L.NONRST_PKTS] += 1
    if ttl < F[s, e + L.TTL_MIN]:
        F[s, e + L.TTL_MIN] = ttl
    if ttl > F[s, e + L.TTL_MAX]:
        F[s, e + L.TTL_MAX] = ttl
    nxt = (seq32 + plen + int(syn) + int((fl & FIN) != 0)) & MASK32
    if F[s, e + L.NXT_SET] == 0 or seq_delta(nxt, F[s, e + L.NXT32]) > 0:
        F[s, e + L.NXT32] = nxt
        F[s, e + L.NXT_SET] = 1
    if (fl & ACK) != 0 and (F[s, e + L.MYACK_SET] == 0 or seq_delta(ack32, F[s, e + L.MYACK32]) > 0):
        F[s, e + L.MYACK32] = ack32
        F[s, e + L.MYACK_SET] = 1
    if syn:
        F[s, e + L.WSCALE] = wscale
        F[s, e + L.MSS] = mss
        F[s, e + L.TS_OPT] = (opts & OPT_TIMESTAMP) != 0
        F[s, e + L.HS_TTL] = ttl
    if plen > 0:
        if ttl < F[s, e + L.DATA_TTL_MIN]:
            F[s, e + L.DATA_TTL_MIN] = ttl
        if ttl > F[s, e + L.DATA_TTL_MAX]:
            F[s, e + L.DATA_TTL_MAX] = ttl
    ts_seen(F, s, e, syn, opts, (tsp >> 32) & MASK32)


@njit(cache=True, inline="always")
def _packet(F, H, R, nr, s, d, t, fl, seq32, ack32, plen, cap, win, ttl, ipid, df, opts,
            mss, wscale, frame, source, outer_ttl, close_us, attempt_us, C, dup, dup_of, ck, tsp,
            ordinal):  # type: ignore[no-untyped-def]
    """One packet from side `d` (0 originator, 1 responder) of connection `s` (`tsp`: its
    TSval << 32 | TSecr, 0 without the timestamp option; `ordinal`: an RST's number in the
    run, -1 for a new RST; a replayed one has its own).

    Zeek's state machine sees every packet, capture copies (`dup`) and bad checksums
    included (as `zeek -C`: see the README on checksums).  rstlens' own evidence does not: a
    copy neither moves the sender's view nor counts as "afterwards"; a segment with a wrong
    checksum (`ck`) from a side whose checksums were all good so far does not count as
    "afterwards" (it stays in the sender's view: a capture whose payloads were edited
    without fixing the checksums has many)."""
    e = L.D + d * L.DSTRIDE
    p = L.D + (1 - d) * L.DSTRIDE
    is_orig = d == 0
    syn = (fl & SYN) != 0
    fin = (fl & FIN) != 0
    rst = (fl & RST) != 0
    has_ack = (fl & ACK) != 0

    # a first wrong checksum from a side whose checksums were all good: corrupt on the way
    corrupt = not rst and ck == L.CK_BAD and F[s, e + L.CSUM_GOOD] > 0 and F[s, e + L.CSUM_BAD] == 0
    if dup:
        F[s, e + L.DUPS] += 1
        C[L.C_DUPS] += 1
    elif ck >= 0 and not rst:
        _count_checksum(F, s, e, ck)

    # ---- the RST log: earlier RSTs' "afterwards", this one's snapshot
    if F[s, L.LAST_RST] >= 0 and not dup and not corrupt:
        src_a = (F[s, L.ORIG_IS_A] == 1) == (d == 0)
        after_rst(F, R, s, src_a, fl, seq32, plen, ipid)
    if rst:
        if ordinal < 0:
            C[L.C_RSTS] += 1
        log_rst(F, R, nr, s, e, p, d, t, frame, source, fl, seq32, ack32, ttl, ipid, df, win,
                plen, opts, outer_ttl, dup_of, ck, tsp, ordinal)
    elif not dup:
        _sender_view(F, s, e, fl, seq32, ack32, plen, ttl, opts, mss, wscale, tsp)
    if plen > 0 and not rst and not dup:
        F[s, e + L.LAST_DATA_TS] = t
    F[s, e + L.WIN] = win
    F[s, L.PKT_LAST] = t

    # ---- Zeek's TCPSessionAdapter::Process, in its order
    seg_len = plen + int(syn) + int(fin) - (plen if rst else 0)
    init_endpoint(F, s, e, seq32, seg_len, fl)
    seq_unw = unwrap(F[s, e + L.LAST], seq32)
    end_unw = seq_unw + seg_len
    rel_seq = seq_unw - F[s, e + L.START]
    update_history(F, H, s, e, is_orig, fl, rel_seq, plen)
    if win == 0 and not rst and F[s, p + L.ST] != L.CLOSED and F[s, e + L.ST] != L.RESET:
        scaled_history(F, H, s, e, is_orig, H_ZERO_WINDOW, L.ZWIN_CNT, L.ZWIN_THRESH)
    if not (F[s, L.D + L.DID_CLOSE] and F[s, L.D + L.DSTRIDE + L.DID_CLOSE]):
        F[s, L.TS_LAST] = t
    if fin:
        F[s, e + L.FIN_CNT] += 1
        F[s, e + L.FIN_SEQ] = rel_seq + seg_len
    rel_ack = 0
    if has_ack:
        rel_ack = ack_peer(F, s, p, ack32, rst)
    update_last_seq(F, H, s, e, is_orig, syn, fin, rst, plen, end_unw)

    do_close, flipped = update_state_machine(F, H, s, e, p, is_orig, fl, plen, t, attempt_us)
    if flipped:
        e, p = p, e
        is_orig = not is_orig
    if has_ack:
        ack_received(F, H, s, p, not is_orig, rel_ack)
    if plen > 0 and not rst and rel_seq >= 0 and cap >= plen:
        data_sent(F, s, e, rel_seq + int(syn), plen)
    if do_close:
        connection_closed(F, s, e, p, close_us)

    # Zeek's ConnSize counts the packet with the direction it had before any flip.
    F[s, L.D + d * L.DSTRIDE + L.PKTS] += 1
    # the trigger a reply RST would answer (a copy's original stays the trigger)
    if not dup:
        F[s, e + L.LAST_TS] = t
        F[s, e + L.LAST_SIG] = _signature(seq32, ipid, plen)
        F[s, e + L.LAST_SEG] = _last_segment(ttl, fl, ack32)


# --------------------------------------------------------------------------- emission
@njit(cache=True, inline="always")
def _output(F, H, r, K, s, FO, KO, HO, nout, reason):  # type: ignore[no-untyped-def]
    """Copy the finished connection in row `r` of F/H (key row `s`) to the output."""
    F[r, L.END_REASON] = reason
    F[r, L.CONN_STATE] = conn_state(F, H, r)
    F[r, L.ORIG_SIZE] = endpoint_size(F, r, 0)
    F[r, L.RESP_SIZE] = endpoint_size(F, r, 1)
    k = nout[0]
    copy_row(FO, k, F, r)
    for c in range(L.NKO):
        KO[k, c] = K[s, c]
    copy_row(HO, k, H, r)
    nout[0] = k + 1


@njit(cache=True, inline="always")
def _release_row(A, free, nfree, P, s):  # type: ignore[no-untyped-def]
    """Row `s` back on the free list (its hash-table slot is the caller's)."""
    A[s] = L.ROW_FREE
    free[nfree[0]] = s
    nfree[0] += 1
    P[L.P_LIVE] -= 1


@njit(cache=True, inline="always")
def _free_row(T, K, A, free, nfree, P, s):  # type: ignore[no-untyped-def]
    remove(T, K, s)
    _release_row(A, free, nfree, P, s)


@njit(cache=True, inline="always")
def _emit_row(F, K, H, A, E, X, FS, HS, NRS, FO, KO, HO, RO, nout, R, nr, P, C, s, reason):  # type: ignore[no-untyped-def]
    """Copy connection `s` to the output (an embryonic or reset one is replayed into the
    scratch row `FS`/`HS` first: its F row stays untouched; a reset row's RST is logged into
    the output's RST rows RO, nout[1] of them used).  Its row is the caller's to free."""
    kind = A[s]
    if kind != L.ROW_FULL:
        NRS[0] = nout[1]
        _to_scratch(FS, HS, K, E, X, s, kind, R, nr, RO, NRS, C, P)
        nout[1] = NRS[0]
        _output(FS, HS, 0, K, s, FO, KO, HO, nout, reason)
    else:
        _output(F, H, s, K, s, FO, KO, HO, nout, reason)
        F[s, L.ACTIVE] = 0


@njit(cache=True)
def emit(F, K, H, A, E, X, FS, HS, NRS, T, free, nfree, FO, KO, HO, RO, nout, R, nr, P, C, s,
         reason):  # type: ignore[no-untyped-def]
    """Finish connection `s`: copy it to the output (`_emit_row`) and free its row."""
    _emit_row(F, K, H, A, E, X, FS, HS, NRS, FO, KO, HO, RO, nout, R, nr, P, C, s, reason)
    _free_row(T, K, A, free, nfree, P, s)


@njit(cache=True)
def sweep(F, K, H, A, E, X, FS, HS, NRS, T, free, nfree, DL, FO, KO, HO, RO, nout, R, nr, P, C, t):  # type: ignore[no-untyped-def]
    """Emit every connection Zeek's timers would have removed by time `t`.

    `DL` holds each row's expiry time (`earliest_expiry`, kept by `process`), so a sweep
    reads one compact array and only the rows that are due, not every row of a table
    larger than the cache.  Returns False when it stopped because the output is full (call
    it again after draining: the rows it emitted are no longer due), True when done.
    """
    idle = P[L.P_IDLE_US]
    short_idle = P[L.P_SHORT_IDLE_US]
    # the rows before where a stopped sweep for this same time stopped were all judged
    # (nothing but a drain happens in between): it goes on from there
    start = P[L.P_SWEEP_FROM] if P[L.P_SWEEP_AT] == t else 0
    rows = min(DL.shape[0], P[L.P_ROWS_USED])
    mask = T.shape[0] - 1
    for s in range(start, rows):
        # Freeing a due row deletes its hash-table slot: a miss on the slot, and one on the
        # key row of the entry after it (backward shift), in a table far larger than the
        # cache (~80% of a SYN flood's sweeps).  Both are started ahead, for the due rows.
        a = s + 2 * SWEEP_AHEAD
        if a < rows and DL[a] <= t:
            prefetch(T, (np.int64(K[a, L.K_HASH]) & mask,))
        b = s + SWEEP_AHEAD
        if b < rows and DL[b] <= t:
            after = T[(np.int64(K[b, L.K_HASH]) + 1) & mask]
            if after >= 0:
                prefetch(K, (after, 0))
        if DL[s] > t:
            continue
        if nout[0] + 1 > FO.shape[0]:
            P[L.P_SWEEP_FROM] = s
            P[L.P_SWEEP_AT] = t
            return False
        kind = A[s]
        if kind == L.ROW_FREE:
            DL[s] = NEVER  # a free row: `process` sets it again when the row is reused
            continue
        if kind != L.ROW_FULL:  # embryonic or reset: judged in the scratch row
            NRS[0] = nout[1]  # a reset row's RST replayed into RO: kept only if it is emitted
            _to_scratch(FS, HS, K, E, X, s, kind, R, nr, RO, NRS, C, P)
            reason = expired(FS, 0, t, idle, short_idle)
            if reason >= 0:
                if reason == L.END_IDLE:
                    C[L.C_IDLE] += 1
                nout[1] = NRS[0]
                _output(FS, HS, 0, K, s, FO, KO, HO, nout, reason)
                _free_row(T, K, A, free, nfree, P, s)
                DL[s] = NEVER
            else:
                DL[s] = earliest_expiry(FS, 0, idle, short_idle)
            continue
        reason = expired(F, s, t, idle, short_idle)
        if reason >= 0:
            if reason == L.END_IDLE:
                C[L.C_IDLE] += 1
            emit(F, K, H, A, E, X, FS, HS, NRS, T, free, nfree, FO, KO, HO, RO, nout, R, nr, P, C,
                 s, reason)
            DL[s] = NEVER
        else:
            DL[s] = earliest_expiry(F, s, idle, short_idle)
    P[L.P_SWEEP_FROM] = 0
    return True


@njit(cache=True)
def emit_all(F, K, H, A, E, X, FS, HS, NRS, T, free, nfree, FO, KO, HO, RO, nout, R, nr, P, C,
             reason, limit):  # type: ignore[no-untyped-def]
    """End of input: emit open connections, at most `limit` per call (closed ones keep their
    fin/rst reason; an embryonic one is open, a reset one reset).  Returns how many were
    emitted.

    The rows are freed without deleting their hash-table slots one by one (each deletion
    was a miss or two in a table far larger than the cache: ~80% of `emit`'s samples in a
    SYN flood): nothing looks a key up before the last call, which empties the table at
    once.  Between the calls only the output is drained."""
    done = 0
    for s in range(P[L.P_EMIT_FROM], min(A.shape[0], P[L.P_ROWS_USED])):
        if done >= limit:
            P[L.P_EMIT_FROM] = s  # every row before is free now: the next call starts here
            return done
        kind = A[s]
        if kind != L.ROW_FREE:
            if kind == L.ROW_FULL:
                r = end_reason(F, s)
            else:  # an RST leaves its sender RESET whatever its state (`states`)
                r = L.END_RST if kind == L.ROW_RESET else L.END_IDLE
            _emit_row(F, K, H, A, E, X, FS, HS, NRS, FO, KO, HO, RO, nout, R, nr, P, C, s,
                      reason if r == L.END_IDLE else r)
            _release_row(A, free, nfree, P, s)
            done += 1
    for i in range(T.shape[0]):  # every row is free: an empty table
        T[i] = -1
    P[L.P_EMIT_FROM] = 0
    return done


@njit(cache=True)
def emit_rows(F, K, H, A, E, X, FS, HS, NRS, T, free, nfree, FO, KO, HO, RO, nout, R, nr, P, C,
              rows, reason):  # type: ignore[no-untyped-def]
    """Emit the listed rows that hold open connections (eviction)."""
    for s in rows:
        if A[s] != L.ROW_FREE:
            emit(F, K, H, A, E, X, FS, HS, NRS, T, free, nfree, FO, KO, HO, RO, nout, R, nr, P, C,
                 s, reason)
