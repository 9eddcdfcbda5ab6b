"""Kernel rows → Arrow record batches of the public schemas (`schema`)."""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa

from rstlens import kernels
from rstlens.flows import layout as L
from rstlens.flows.engine import Finished
from rstlens.output import arrow
from rstlens.output.schema import (
    CONN_STATES,
    END_REASONS,
    FLOWS_SCHEMA,
    TUNNEL_TYPE,
    enum_from_codes,
)
from rstlens.parsers._tunnels import describe


def is_ipv4(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Which 128-bit addresses are IPv4, stored in mapped form (`parsers._batch`)."""
    v4: np.ndarray = (hi == 0) & ((lo >> np.uint64(32)) == 0xFFFF)
    return v4


_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


_TEXT_WIDTH = 45  # the longest IPv6 text: ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255
_V6_CACHE_MAX = 65_536  # formatted IPv6 addresses kept per run (~250 bytes each)


def address_text(hi: np.ndarray, lo: np.ndarray, cache: dict[tuple[int, int], str] | None = None) -> pa.Array:
    """128-bit addresses (IPv4 in mapped form) as a string column.

    IPv4 text is written by a kernel; IPv6 addresses are formatted by `ipaddress`, each
    distinct one once (with `cache`, once per run)."""
    n = hi.shape[0]
    chars = np.zeros((n, _TEXT_WIDTH), np.uint8)
    kernels.ipv4_text(hi, lo, chars)
    v6 = np.flatnonzero(~is_ipv4(hi, lo))
    if v6.shape[0]:
        pairs = np.ascontiguousarray(np.stack([hi[v6], lo[v6]], axis=1)).view(np.dtype((np.void, 16))).ravel()
        _, first, inverse = np.unique(pairs, return_index=True, return_inverse=True)
        cache = {} if cache is None else cache
        if len(cache) > _V6_CACHE_MAX:  # a scan of many hosts: keep memory bounded, not the speed-up
            cache.clear()
        texts = []
        for h, low in zip(hi[v6[first]].tolist(), lo[v6[first]].tolist(), strict=True):
            t = cache.get((h, low))
            if t is None:
                t = cache[(h, low)] = str(ipaddress.IPv6Address((h << 64) | low))
            texts.append(t)
        unique_chars = np.array(texts, f"S{_TEXT_WIDTH}").view(np.uint8).reshape(-1, _TEXT_WIDTH)
        chars[v6] = unique_chars[inverse.reshape(-1)]
    return arrow.nul_padded_text(chars)


def _be_bytes(x: np.ndarray, width: int) -> np.ndarray:
    """Big-endian bytes of unsigned integers: (n, width) uint8, low-order `width` bytes."""
    full = x.astype(">u8").view(np.uint8).reshape(-1, 8)
    return full[:, 8 - width :]


_B64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8)


def _base64_sha1(digests: np.ndarray) -> np.ndarray:
    """Base64 of 20-byte digests, (n, 20) uint8 -> (n, 28) ASCII: 7 groups of 3 bytes
    (the last padded with a zero byte), 4 characters each, the last one '='."""
    n = digests.shape[0]
    padded = np.zeros((n, 21), np.uint32)
    padded[:, :20] = digests
    g = padded.reshape(n, 7, 3)
    word = (g[:, :, 0] << 16) | (g[:, :, 1] << 8) | g[:, :, 2]
    sextets = np.stack([(word >> s) & 63 for s in (18, 12, 6, 0)], axis=2).reshape(n, 28)
    text = _B64[sextets]
    text[:, 27] = ord("=")
    return text


def community_ids(K: np.ndarray, ports: np.ndarray) -> pa.Array:
    """Community ID v1 (seed 0, TCP) of canonical keys.

    The canonical key already orders endpoint A before B by address bytes, then port, which
    is the order the specification hashes them in.  The hashed tuples are laid out for all
    connections at once, hashed by a kernel and base64-encoded at once."""
    n = K.shape[0]
    text = np.empty((n, 30), np.uint8)
    text[:, 0], text[:, 1] = ord("1"), ord(":")
    v4 = is_ipv4(K[:, 0], K[:, 1]) & is_ipv4(K[:, 2], K[:, 3])
    ports = ports.astype(np.uint64)
    for rows, addr in ((np.flatnonzero(v4), 4), (np.flatnonzero(~v4), 16)):
        if rows.shape[0] == 0:
            continue
        k = K[rows]
        parts = [np.zeros((rows.shape[0], 2), np.uint8)]  # seed 0
        if addr == 4:
            parts += [_be_bytes(k[:, 1], 4), _be_bytes(k[:, 3], 4)]
        else:
            parts += [_be_bytes(k[:, 0], 8), _be_bytes(k[:, 1], 8),
                      _be_bytes(k[:, 2], 8), _be_bytes(k[:, 3], 8)]  # fmt: skip
        parts += [np.tile(np.array([6, 0], np.uint8), (rows.shape[0], 1)),  # TCP, padding
                  _be_bytes(ports[rows] >> np.uint64(16), 2), _be_bytes(ports[rows], 2)]  # fmt: skip
        digests = np.empty((rows.shape[0], 20), np.uint8)
        kernels.sha1_rows(np.ascontiguousarray(np.concatenate(parts, axis=1)), digests,
                           np.empty(80, np.int64))  # fmt: skip
        text[rows, 2:] = _base64_sha1(digests)
    return arrow.fixed_ascii(text)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed: np.ndarray = x ^ (x >> np.uint64(31))
    return mixed


def uids(serials: np.ndarray, first_ts: np.ndarray, hashes: np.ndarray) -> pa.Array:
    """Zeek-style connection uids ("C" + 17 base62 characters), deterministic for a given
    capture: a hash of the connection's number, first timestamp and key."""
    n = serials.shape[0]
    with np.errstate(over="ignore"):
        a = _splitmix(serials.astype(np.uint64) ^ _splitmix(first_ts.astype(np.uint64)))
        b = _splitmix(a ^ hashes.astype(np.uint64))
    alphabet = np.frombuffer(_B62.encode(), np.uint8)
    chars = np.empty((n, 18), np.uint8)
    chars[:, 0] = ord("C")
    for word, first, last in ((a, 1, 9), (b, 9, 18)):  # 8 digits from a, 9 from b
        w = word.copy()
        for d in range(first, last):
            chars[:, d] = alphabet[(w % np.uint64(62)).astype(np.intp)]
            w //= np.uint64(62)
    return arrow.fixed_ascii(chars)


def _ttl(F: np.ndarray, d: int, col: int) -> pa.Array:
    b = L.D + d * L.DSTRIDE
    seen = F[:, b + L.NONRST_PKTS] > 0
    return arrow.column(F[:, b + col], pa.uint8(), mask=~seen)


def _opt_u16(F: np.ndarray, d: int, col: int) -> pa.Array:
    v = F[:, L.D + d * L.DSTRIDE + col]
    return arrow.column(v, pa.uint16(), mask=v <= 0)


def tunnel_columns(ids: np.ndarray) -> dict[str, pa.Array]:
    """The `tunnel` and `tunnel_endpoints` columns of connections' tunnel identities (all
    null, without a lookup, when none is tunnelled)."""
    n = ids.shape[0]
    if not ids.any():
        return {"tunnel": pa.nulls(n, TUNNEL_TYPE), "tunnel_endpoints": pa.nulls(n, TUNNEL_TYPE)}
    uniq, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.reshape(-1)
    out: dict[str, pa.Array] = {}
    for name, texts in zip(("tunnel", "tunnel_endpoints"), describe(uniq.view(np.uint64)), strict=True):
        vocabulary = tuple(sorted({t for t in texts if t is not None}))
        codes = np.array([-1 if t is None else vocabulary.index(t) for t in texts], np.int64)[inverse]
        out[name] = arrow.enum(codes, vocabulary, TUNNEL_TYPE.index_type, mask=codes < 0)
    return out


def flow_table(
    fin: Finished, sources: list[str], names: dict[tuple[int, int], str] | None = None
) -> tuple[pa.Table, np.ndarray]:
    """Finished connections as a flows table (RST summary columns left null) and their
    serial numbers (to join RST verdicts later)."""
    F, K, H = fin.F, fin.K, fin.H
    n = F.shape[0]
    orig_a = F[:, L.ORIG_IS_A] == 1
    orig_hi, orig_lo = np.where(orig_a, K[:, 0], K[:, 2]), np.where(orig_a, K[:, 1], K[:, 3])
    resp_hi, resp_lo = np.where(orig_a, K[:, 2], K[:, 0]), np.where(orig_a, K[:, 3], K[:, 1])
    port_a = (F[:, L.KEY_PORTS] >> L.KEY_PORT_SHIFT).astype(np.uint16)
    port_b = (F[:, L.KEY_PORTS] & L.KEY_FIELD_MASK).astype(np.uint16)
    vlan = F[:, L.VLAN]
    inner = F[:, L.INNER_VLAN]
    o, r = L.D, L.D + L.DSTRIDE
    ts = F[:, L.TS_FIRST]
    cols = {
        "uid": uids(F[:, L.SERIAL], ts, F[:, L.HASH]),
        "ts": ts,
        "duration": (F[:, L.TS_LAST] - ts) / 1e6,
        "orig_h": address_text(orig_hi, orig_lo, names),
        "orig_p": np.where(orig_a, port_a, port_b),
        "resp_h": address_text(resp_hi, resp_lo, names),
        "resp_p": np.where(orig_a, port_b, port_a),
        "ip_version": F[:, L.IPV].astype(np.uint8),
        "vlan": arrow.column(vlan, pa.int32(), mask=vlan < 0),
        "inner_vlan": arrow.column(inner, pa.int32(), mask=inner < 0),
        **tunnel_columns(F[:, L.TUNNEL]),
        "community_id": community_ids(K, F[:, L.KEY_PORTS]),
        "conn_state": enum_from_codes(F[:, L.CONN_STATE], CONN_STATES),
        "history": arrow.nul_padded_text(H),  # letters from the start, zeros after
        "orig_pkts": F[:, o + L.PKTS],
        "resp_pkts": F[:, r + L.PKTS],
        "orig_bytes": F[:, L.ORIG_SIZE],
        "resp_bytes": F[:, L.RESP_SIZE],
        "start_seen": F[:, L.START_SEEN] == 1,
        "end_reason": enum_from_codes(F[:, L.END_REASON], END_REASONS),
        "rst_count": F[:, L.RST_COUNT].astype(np.int32),
        "rst_cause": pa.nulls(n, FLOWS_SCHEMA.field("rst_cause").type),
        "rst_subcause": pa.nulls(n, FLOWS_SCHEMA.field("rst_subcause").type),
        "rst_sender": pa.nulls(n, FLOWS_SCHEMA.field("rst_sender").type),
        "rst_confidence": pa.nulls(n, pa.float32()),
        "orig_ttl_min": _ttl(F, 0, L.TTL_MIN),
        "orig_ttl_max": _ttl(F, 0, L.TTL_MAX),
        "resp_ttl_min": _ttl(F, 1, L.TTL_MIN),
        "resp_ttl_max": _ttl(F, 1, L.TTL_MAX),
        "orig_mss": _opt_u16(F, 0, L.MSS),
        "resp_mss": _opt_u16(F, 1, L.MSS),
        "ts_option": (F[:, o + L.TS_OPT] == 1) & (F[:, r + L.TS_OPT] == 1),
        "source": enum_from_codes(F[:, L.SOURCE], tuple(sources), pa.int32()),
        "orig_dups": F[:, o + L.DUPS],
        "resp_dups": F[:, r + L.DUPS],
    }
    arrays = [arrow.to_arrow(cols[f.name], f.type) for f in FLOWS_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=FLOWS_SCHEMA), F[:, L.SERIAL].copy()
