"""The columnar decoder: link layer -> IPv4/IPv6 -> TCP, one compiled kernel per batch.

`decode_raw` turns a `RawBatch` (one buffer + per-record offsets, lengths, link types)
into a `PacketBatch` of the TCP rows.  The kernel itself is `_decode_kernel.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from rstlens import kernels
from rstlens.options import DEFAULT_TUNNEL_DEPTH

from ._batch import (
    BATCH_COLUMNS,
    N_TUNNEL_TYPES,
    TUNNEL_ERSPAN1,
    TUNNEL_ERSPAN2,
    TUNNEL_ERSPAN3,
    TUNNEL_GENEVE,
    TUNNEL_GRE,
    TUNNEL_GRETAP,
    TUNNEL_GTPU,
    TUNNEL_IP4IN4,
    TUNNEL_IP4IN6,
    TUNNEL_IP6IN4,
    TUNNEL_IP6IN6,
    TUNNEL_LAYER_WIDTH,
    TUNNEL_MAX_LAYERS,
    TUNNEL_MPLS_UDP,
    TUNNEL_PPTP,
    TUNNEL_TEREDO,
    TUNNEL_VXLAN,
    DecodeStats,
    PacketBatch,
)
from ._tunnels import REGISTRY

# Counter slots returned by the kernel.
C_NON_IP, C_NON_TCP, C_FRAG, C_TRUNC, C_MALFORMED, C_UNSUPPORTED, C_TCP, C_BYTES = range(8)
C_DEPTH, C_ESP = 8, 9  # dropped at the tunnel depth; IPsec ESP packets
C_COLLISIONS = 10  # rows whose tunnel identity names another stack (set in Python)
C_TUNNEL_BASE = 11  # + tunnel layer type: layers decoded of that type
N_COUNTERS = C_TUNNEL_BASE + N_TUNNEL_TYPES


@dataclass(slots=True)
class RawBatch:
    """Undecoded records: `buf[offs[i] : offs[i] + caps[i]]` is record i."""

    buf: np.ndarray  # uint8
    offs: np.ndarray  # int64
    caps: np.ndarray  # int64
    ts_us: np.ndarray  # int64
    linktype: np.ndarray  # int32 (LINKTYPE_* per record: pcapng interfaces differ)
    iface: np.ndarray  # uint16
    frame: np.ndarray  # int64, 1-based record number within the source

    def __len__(self) -> int:
        return int(self.offs.shape[0])

    def slice(self, start: int, stop: int) -> RawBatch:
        """Records [start, stop) (sharing `buf`)."""
        s = slice(start, stop)
        return RawBatch(
            self.buf, self.offs[s], self.caps[s], self.ts_us[s], self.linktype[s],
            self.iface[s], self.frame[s],
        )  # fmt: skip


# The decode kernel's arguments: the records to decode, every batch column in the table's
# order (`BATCH_COLUMNS` is the one definition: PacketBatch's fields and the AOT signature
# follow it), then the counters.  tests/core/test_columns.py checks the kernel's `def`.
RECORD_ARGS = (
    "buf", "offs", "caps", "linktype", "ts_in", "frame_in", "iface_in", "source_in", "max_depth",
)  # fmt: skip
COLUMN_ORDER = tuple(BATCH_COLUMNS)
COUNTER_ARGS = ("tunnels", "counters")  # the tunnel layers' side array, the counters

_KERNEL_DTYPES = tuple(BATCH_COLUMNS.values())
assert [f.name for f in fields(PacketBatch)] == [*BATCH_COLUMNS, "raw"]


_SIDE: list[np.ndarray] = [np.empty((0, TUNNEL_MAX_LAYERS * TUNNEL_LAYER_WIDTH), np.int64)]


def _side_array(n: int) -> np.ndarray:
    """The kernel's tunnel-layer side array for n records: one buffer, reused (a fresh one
    per batch, ~450 KB, cost untunnelled traffic 2-3% of the decode), read right after."""
    if _SIDE[0].shape[0] < n:
        _SIDE[0] = np.empty((max(n, 2 * _SIDE[0].shape[0]), TUNNEL_MAX_LAYERS * TUNNEL_LAYER_WIDTH), np.int64)
    return _SIDE[0][:n]


def decode_arrays(
    buf: np.ndarray,
    offs: np.ndarray,
    caps: np.ndarray,
    linktype: np.ndarray,
    ts_us: np.ndarray,
    frame: np.ndarray,
    iface: np.ndarray,
    source: int = 0,
    tunnel_depth: int = DEFAULT_TUNNEL_DEPTH,
    layers: list[np.ndarray] | None = None,
) -> tuple[PacketBatch, np.ndarray]:
    """Decode records given as arrays; returns (TCP rows, kernel counters).

    Arguments are coerced to the kernel's dtypes, so any integer arrays will do.  The
    tunnel stacks met are named in `_tunnels.REGISTRY` (the counters' C_COLLISIONS slot
    counts rows whose identity names another stack); `layers`, when given, receives the
    rows' tunnel layers (the kernel's side array, rows of untunnelled packets undefined).
    """
    n = int(offs.shape[0])
    # per batch (~2,000 packets) this runs ~2,500 times on a 5 M-packet file: plain lists
    # and positional arguments (a dict of columns and keywords cost ~25 µs more per batch)
    cols = [np.empty(n, dtype) for dtype in _KERNEL_DTYPES]
    counters = np.zeros(N_COUNTERS, np.int64)
    side = _side_array(n)
    k = kernels.decode(
        np.ascontiguousarray(buf, np.uint8),
        np.ascontiguousarray(offs, np.int64),
        np.ascontiguousarray(caps, np.int64),
        np.ascontiguousarray(linktype, np.int32),
        np.ascontiguousarray(ts_us, np.int64),
        np.ascontiguousarray(frame, np.int64),
        np.ascontiguousarray(iface, np.uint16),
        np.uint16(source),
        np.int64(tunnel_depth),
        *cols,
        side,
        counters,
    )
    batch = PacketBatch(**{name: col[:k] for name, col in zip(COLUMN_ORDER, cols, strict=True)}, raw=buf)
    if counters[C_TUNNEL_BASE:].any():  # some layer decoded: name the stacks
        counters[C_COLLISIONS] = REGISTRY.register(batch.tunnel, side[:k])
        if layers is not None:
            layers.append(side[:k].copy())
    return batch, counters


def decode_raw(
    raw: RawBatch, source: int, stats: DecodeStats, tunnel_depth: int = DEFAULT_TUNNEL_DEPTH
) -> PacketBatch:
    """Decode one raw batch, adding its counters to `stats`."""
    batch, c = decode_arrays(
        raw.buf, raw.offs, raw.caps, raw.linktype, raw.ts_us, raw.frame, raw.iface, source,
        tunnel_depth,
    )  # fmt: skip
    counts = c.tolist()
    stats.packets += len(raw)
    stats.bytes += counts[C_BYTES]
    stats.tcp += counts[C_TCP]
    stats.non_ip += counts[C_NON_IP]
    stats.non_tcp += counts[C_NON_TCP]
    stats.ip_fragments += counts[C_FRAG]
    stats.truncated += counts[C_TRUNC]
    stats.malformed += counts[C_MALFORMED]
    stats.unsupported_link += counts[C_UNSUPPORTED]
    if any(counts[C_DEPTH:]):
        add_tunnel_counts(stats, counts)
    return batch


# DecodeStats field -> the tunnel layer types it counts
TUNNEL_STATS: dict[str, tuple[int, ...]] = {
    "vxlan": (TUNNEL_VXLAN,),
    "geneve": (TUNNEL_GENEVE,),
    "gre": (TUNNEL_GRE, TUNNEL_GRETAP),
    "erspan": (TUNNEL_ERSPAN1, TUNNEL_ERSPAN2, TUNNEL_ERSPAN3),
    "ip_in_ip": (TUNNEL_IP4IN4, TUNNEL_IP6IN4, TUNNEL_IP4IN6, TUNNEL_IP6IN6),
    "teredo": (TUNNEL_TEREDO,),
    "gtpu": (TUNNEL_GTPU,),
    "mpls_udp": (TUNNEL_MPLS_UDP,),
    "pptp": (TUNNEL_PPTP,),
}


def add_tunnel_counts(stats: DecodeStats, counts: list[int]) -> None:
    """The tunnel counters of one batch (kernel counter list) into `stats`."""
    stats.tunnel_depth_exceeded += counts[C_DEPTH]
    stats.esp += counts[C_ESP]
    stats.tunnel_id_collisions += counts[C_COLLISIONS]
    for name, kinds in TUNNEL_STATS.items():
        setattr(stats, name, getattr(stats, name) + sum(counts[C_TUNNEL_BASE + k] for k in kinds))
