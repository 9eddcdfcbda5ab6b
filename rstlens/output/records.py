"""Kernel rows → Arrow record batches of the public schemas (`schema`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from rstlens import kernels
from rstlens.flows import layout as L
from rstlens.flows.columns import NarrowRows, distinct_pairs
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


_V6_CACHE_MAX = 65_536  # formatted IPv6 addresses kept per run (~250 bytes each)
_V4_TEXT = 15  # the longest IPv4 text: 255.255.255.255


def address_text(hi: np.ndarray, lo: np.ndarray, cache: dict[tuple[int, int], str] | None = None) -> pa.Array:
    """128-bit addresses (IPv4 in mapped form) as a string column.

    A kernel writes the column's bytes in one pass: IPv4 text itself, IPv6 addresses
    copied from their text, which `ipaddress` formats once per distinct address (with
    `cache`, once per run)."""
    n = hi.shape[0]
    v6 = np.flatnonzero(~is_ipv4(hi, lo))
    index = np.full(n, -1, np.int64)
    v6_offsets = np.zeros(1, np.int64)
    v6_data = np.empty(0, np.uint8)
    v6_bytes = 0
    if v6.shape[0]:
        first, inverse = distinct_pairs(hi[v6], lo[v6])
        cache = {} if cache is None else cache
        if len(cache) > _V6_CACHE_MAX:  # a scan of many hosts: keep memory bounded, not the speed-up
            cache.clear()
        texts = []
        for h, low in zip(hi[v6[first]].tolist(), lo[v6[first]].tolist(), strict=True):
            t = cache.get((h, low))
            if t is None:
                t = cache[(h, low)] = str(ipaddress.IPv6Address((h << 64) | low))
            texts.append(t)
        lengths = np.fromiter(map(len, texts), np.int64, count=len(texts))
        v6_offsets = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(lengths, out=v6_offsets[1:])
        v6_data = np.frombuffer("".join(texts).encode("ascii"), np.uint8)
        index[v6] = inverse
        v6_bytes = int(lengths[inverse].sum())
    offsets = np.empty(n + 1, np.int32)
    data = np.empty((n - v6.shape[0]) * _V4_TEXT + v6_bytes, np.uint8)
    used = kernels.address_strings(hi, lo, index, v6_offsets, v6_data, offsets, data)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data[:used])], 0)


def community_ids(K: np.ndarray, ports: np.ndarray) -> pa.Array:
    """Community ID v1 (seed 0, TCP) of canonical keys.

    The canonical key already orders endpoint A before B by address bytes, then port, which
    is the order the specification hashes them in.  A kernel makes each connection's
    SHA-1 block from its key words, hashes it and writes the base64 text."""
    text = np.empty((K.shape[0], 30), np.uint8)
    kernels.community_chars(K, ports, np.empty(160, np.int64), text)
    return arrow.fixed_ascii(text)


def uids(serials: np.ndarray, first_ts: np.ndarray, hashes: np.ndarray) -> pa.Array:
    """Zeek-style connection uids ("C" + 17 base62 characters), deterministic for a given
    capture: a hash of the connection's number, first timestamp and key (a kernel:
    `records_kernel.uid_chars`)."""
    chars = np.empty((serials.shape[0], 18), np.uint8)
    kernels.uid_chars(serials, first_ts, hashes, chars)
    return arrow.fixed_ascii(chars)


def _ttl(F: FlowRows, d: int, col: int) -> pa.Array:
    b = L.D + d * L.DSTRIDE
    seen = F[:, b + L.NONRST_PKTS] > 0
    return arrow.column(F[:, b + col], pa.uint8(), mask=~seen)


def _opt_u16(F: FlowRows, d: int, col: int) -> pa.Array:
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


# The kernel row columns `flow_table` reads (the per-side ones for both sides): what a
# connection's record is made of, kept narrow while it waits for its RSTs' verdicts
RECORD_COLUMNS: tuple[int, ...] = (
    L.ORIG_IS_A, L.KEY_PORTS, L.VLAN, L.INNER_VLAN, L.TS_FIRST, L.TS_LAST, L.SERIAL, L.HASH,
    L.IPV, L.TUNNEL, L.CONN_STATE, L.ORIG_SIZE, L.RESP_SIZE, L.START_SEEN, L.END_REASON,
    L.RST_COUNT, L.SOURCE,
    *(L.D + d * L.DSTRIDE + c for d in (0, 1)
      for c in (L.PKTS, L.NONRST_PKTS, L.TTL_MIN, L.TTL_MAX, L.MSS, L.TS_OPT, L.DUPS)),
)  # fmt: skip


@dataclass(slots=True)
class HeldRows:
    """Finished connections in narrow form (`RECORD_COLUMNS` and more of F, the key rows,
    the history as text): what `flow_table` makes their records from."""

    F: NarrowRows
    K: NarrowRows
    history: pa.Array | pa.ChunkedArray

    def __len__(self) -> int:
        return len(self.F)

    def __getitem__(self, rows: slice) -> HeldRows:
        h = self.history[rows]
        return HeldRows(self.F[rows], self.K[rows],
                        h.combine_chunks() if isinstance(h, pa.ChunkedArray) else h)  # fmt: skip


FlowRows = np.ndarray | NarrowRows  # kernel flow rows as `flow_table` reads them


def endpoints(F: FlowRows, K: FlowRows) -> tuple[np.ndarray, ...]:
    """(orig_hi, orig_lo, resp_hi, resp_lo, orig_p, resp_p) of connections: Zeek's
    originator and responder from the canonical key (K's A and B ends)."""
    orig_a = F[:, L.ORIG_IS_A] == 1
    orig_hi, orig_lo = np.where(orig_a, K[:, 0], K[:, 2]), np.where(orig_a, K[:, 1], K[:, 3])
    resp_hi, resp_lo = np.where(orig_a, K[:, 2], K[:, 0]), np.where(orig_a, K[:, 3], K[:, 1])
    port_a = (F[:, L.KEY_PORTS] >> L.KEY_PORT_SHIFT).astype(np.uint16)
    port_b = (F[:, L.KEY_PORTS] & L.KEY_FIELD_MASK).astype(np.uint16)
    return (orig_hi, orig_lo, resp_hi, resp_lo, np.where(orig_a, port_a, port_b),
            np.where(orig_a, port_b, port_a))  # fmt: skip


def flow_table(
    fin: Finished | HeldRows, sources: list[str], names: dict[tuple[int, int], str] | None = None,
    given: dict[str, pa.Array] | None = None,
) -> tuple[pa.Table, np.ndarray]:
    """Finished connections as a flows table (RST summary columns left null, or as `given`,
    like any column `given`: computed before) and their serial numbers (to join RST
    verdicts later)."""
    if isinstance(fin, HeldRows):
        F: FlowRows = fin.F
        K = fin.K.matrix(L.NKO)
        history = fin.history
    else:
        F, K = fin.F, fin.K
        history = arrow.nul_padded_text(fin.H)  # letters from the start, zeros after
    given = given or {}
    n = F.shape[0]
    orig_hi, orig_lo, resp_hi, resp_lo, orig_p, resp_p = endpoints(F, K)
    vlan = F[:, L.VLAN]
    inner = F[:, L.INNER_VLAN]
    o, r = L.D, L.D + L.DSTRIDE
    ts = F[:, L.TS_FIRST]
    made: dict[str, Callable[[], pa.Array]] = {
        "uid": lambda: uids(F[:, L.SERIAL], ts, F[:, L.HASH]),
        "orig_h": lambda: address_text(orig_hi, orig_lo, names),
        "resp_h": lambda: address_text(resp_hi, resp_lo, names),
    }
    cols = {
        **{name: given[name] if name in given else make() for name, make in made.items()},
        "ts": ts,
        "duration": (F[:, L.TS_LAST] - ts) / 1e6,
        "orig_p": orig_p,
        "resp_p": resp_p,
        "ip_version": F[:, L.IPV].astype(np.uint8),
        "vlan": arrow.column(vlan, pa.int32(), mask=vlan < 0),
        "inner_vlan": arrow.column(inner, pa.int32(), mask=inner < 0),
        **tunnel_columns(F[:, L.TUNNEL]),
        "community_id": community_ids(K, F[:, L.KEY_PORTS]),
        "conn_state": enum_from_codes(F[:, L.CONN_STATE], CONN_STATES),
        "history": history,
        "orig_pkts": F[:, o + L.PKTS],
        "resp_pkts": F[:, r + L.PKTS],
        "orig_bytes": F[:, L.ORIG_SIZE],
        "resp_bytes": F[:, L.RESP_SIZE],
        "start_seen": F[:, L.START_SEEN] == 1,
        "end_reason": enum_from_codes(F[:, L.END_REASON], END_REASONS),
        "rst_count": F[:, L.RST_COUNT].astype(np.int32),
        **{name: given.get(name, pa.nulls(n, FLOWS_SCHEMA.field(name).type))
           for name in ("rst_cause", "rst_subcause", "rst_sender", "rst_confidence")},
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
    return pa.Table.from_arrays(arrays, schema=FLOWS_SCHEMA), np.array(F[:, L.SERIAL])
