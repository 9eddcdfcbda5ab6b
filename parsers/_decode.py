"""The columnar decoder: link layer -> IPv4/IPv6 -> TCP, one compiled kernel per batch.

`decode_raw` turns a `RawBatch` (one buffer + per-record offsets, lengths, link types)
into a `PacketBatch` of the TCP rows.  The kernel itself is `_decode_kernel.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from rstlens import kernels

from ._batch import BATCH_COLUMNS, DecodeStats, PacketBatch

# Counter slots returned by the kernel.
C_NON_IP, C_NON_TCP, C_FRAG, C_TRUNC, C_MALFORMED, C_UNSUPPORTED, C_TCP, C_BYTES = range(8)
N_COUNTERS = 8


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
RECORD_ARGS = ("buf", "offs", "caps", "linktype", "ts_in", "frame_in", "iface_in", "source_in")
COLUMN_ORDER = tuple(BATCH_COLUMNS)
COUNTER_ARGS = ("counters",)
_KERNEL_DTYPES = tuple(BATCH_COLUMNS.values())
assert [f.name for f in fields(PacketBatch)] == [*BATCH_COLUMNS, "raw"]


def decode_arrays(
    buf: np.ndarray,
    offs: np.ndarray,
    caps: np.ndarray,
    linktype: np.ndarray,
    ts_us: np.ndarray,
    frame: np.ndarray,
    iface: np.ndarray,
    source: int = 0,
) -> tuple[PacketBatch, np.ndarray]:
    """Decode records given as arrays; returns (TCP rows, kernel counters).

    Arguments are coerced to the kernel's dtypes, so any integer arrays will do.
    """
    n = int(offs.shape[0])
    # per batch (~2,000 packets) this runs ~2,500 times on a 5 M-packet file: plain lists
    # and positional arguments (a dict of columns and keywords cost ~25 µs more per batch)
    cols = [np.empty(n, dtype) for dtype in _KERNEL_DTYPES]
    counters = np.zeros(N_COUNTERS, np.int64)
    k = kernels.decode(
        np.ascontiguousarray(buf, np.uint8),
        np.ascontiguousarray(offs, np.int64),
        np.ascontiguousarray(caps, np.int64),
        np.ascontiguousarray(linktype, np.int32),
        np.ascontiguousarray(ts_us, np.int64),
        np.ascontiguousarray(frame, np.int64),
        np.ascontiguousarray(iface, np.uint16),
        np.uint16(source),
        *cols,
        counters,
    )
    batch = PacketBatch(**{name: col[:k] for name, col in zip(COLUMN_ORDER, cols, strict=True)}, raw=buf)
    return batch, counters


def decode_raw(raw: RawBatch, source: int, stats: DecodeStats) -> PacketBatch:
    """Decode one raw batch, adding its counters to `stats`."""
    batch, c = decode_arrays(
        raw.buf, raw.offs, raw.caps, raw.linktype, raw.ts_us, raw.frame, raw.iface, source
    )
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
    return batch
