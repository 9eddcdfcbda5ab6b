"""Drives the numba core over a stream of batches and makes room when it asks.

`FlowEngine.feed()` runs `core.process` over a `PacketBatch`; when the kernel stops
because the table, the output or the RST log is full, the engine grows the table (up to
`max_flows`), evicts the longest-idle connections, drains finished connections, or settles
the RST rows of ended connections out of the RST log (growing it only when that is not
enough), then resumes at the packet where the kernel stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rstlens import kernels
from rstlens.flows import layout as L
from rstlens.flows.ports import likely_server_ports
from rstlens.options import CoreOptions
from rstlens.parsers import BATCH_COLUMNS, PacketBatch

# Rows are zero pages until a connection first uses one, so a roomy start costs address
# space, not memory; growing (copy + rehash of every row) cost ~0.1 s per doubling on the
# 5 M-packet benchmark, whose ~39,000 open connections now fit from the start.
INITIAL_FLOWS = 65_536
# RST rows of ended connections are moved out of R when it fills (see SettledRsts), so R
# holds about the RSTs of open connections and rarely grows
INITIAL_RSTS = 4096
EVICT_FRACTION = 0.05  # of the table, per eviction round
DRAIN_ROWS = 4096  # finished connections handed over at a time


@dataclass(slots=True)
class Finished:
    """Connections emitted by the kernel: copies of their rows."""

    F: np.ndarray
    K: np.ndarray
    H: np.ndarray


# The PacketBatch columns `core.process` takes, in its argument order: those of
# `BATCH_COLUMNS` (the one definition), in its order, less the ones the flow core never
# reads.  tests/core/test_columns.py checks the kernel's `def` against this.
NOT_READ_BY_PROCESS = frozenset({"ts_val", "ts_ecr"})
PROCESS_COLUMNS = tuple(name for name in BATCH_COLUMNS if name not in NOT_READ_BY_PROCESS)
# and the arguments that follow the columns
PROCESS_ARGS = (
    "raw", "likely_server", "start", "F", "K", "H", "T", "free", "nfree", "DL", "R", "nr",
    "FO", "KO", "HO", "nout", "P", "C", "hashes",
)  # fmt: skip


class FlowTable:
    """The matrices of the flow table (`hashtable`), sized `capacity` rows, and their growth."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.F = _line_aligned_rows(capacity)
        self.K = np.zeros((capacity, 4), np.uint64)
        self.H = np.zeros((capacity, L.HMAX), np.uint8)
        self.T = np.full(_table_size(capacity), -1, np.int64)
        # free rows, popped from the end: lowest rows first keeps the table compact
        self.free = np.arange(capacity - 1, -1, -1, dtype=np.int64)
        self.nfree = np.array([capacity], np.int64)
        # per row, a time before which it cannot expire (see core.sweep)
        self.DL = np.full(capacity, np.iinfo(np.int64).max, np.int64)

    def grow(self, capacity: int, params: np.ndarray) -> None:
        old = self.capacity
        F = _line_aligned_rows(capacity)
        K = np.zeros((capacity, 4), np.uint64)
        H = np.zeros((capacity, L.HMAX), np.uint8)
        F[:old] = self.F
        K[:old] = self.K
        H[:old] = self.H
        self.F, self.K, self.H = F, K, H
        self.DL = np.concatenate([self.DL, np.full(capacity - old, np.iinfo(np.int64).max, np.int64)])
        self.T = np.full(_table_size(capacity), -1, np.int64)
        kernels.rebuild(self.T, self.F)
        free_old = self.free[: self.nfree[0]]
        self.free = np.concatenate([np.arange(capacity - 1, old - 1, -1, dtype=np.int64), free_old])
        self.free = np.concatenate([self.free, np.zeros(capacity - self.free.shape[0], np.int64)])
        self.nfree[0] = capacity - params[L.P_LIVE]
        self.capacity = capacity


def _line_aligned_rows(capacity: int) -> np.ndarray:
    """Zeroed F rows starting on a cache line (a row is a whole number of lines), so the
    hot columns of a row take the fewest lines."""
    line = 64 // 8
    buf = np.zeros(capacity * L.NF + line, np.int64)
    skip = (-buf.ctypes.data % 64) // 8
    return buf[skip : skip + capacity * L.NF].reshape(capacity, L.NF)


class SettledRsts:
    """RST rows of connections that have ended, moved out of the kernel's log R.

    Their values can no longer change, so each column is kept in the narrowest integer type
    that holds its values (a row of R is 42 int64s; here ~100 bytes): a file's RSTs wait
    for their verdicts until the end of the input, and should not weigh 336 bytes each."""

    def __init__(self) -> None:
        self._blocks: list[list[np.ndarray]] = []  # per block, one array per R column

    def __len__(self) -> int:
        return sum(len(b[0]) for b in self._blocks)

    def add(self, rows: np.ndarray) -> None:
        if len(rows):
            self._blocks.append([_narrowest(rows[:, c]) for c in range(rows.shape[1])])

    def rows(self) -> np.ndarray:
        """All settled rows as int64 R rows, in the order they were added."""
        return _widen(self._blocks)

    def take(self, serials: np.ndarray) -> np.ndarray:
        """Remove and return the rows of connections `serials` (the rest stay narrow)."""
        taken, kept = [], []
        for block in self._blocks:
            done = np.isin(block[L.R_SERIAL], serials)
            if not done.any():
                kept.append(block)
                continue
            taken.append([col[done] for col in block])
            if not done.all():
                kept.append([col[~done] for col in block])
        self._blocks = kept
        return _widen(taken)


def _widen(blocks: list[list[np.ndarray]]) -> np.ndarray:
    out = np.empty((sum(len(b[0]) for b in blocks), L.NR), np.int64)
    start = 0
    for block in blocks:
        end = start + len(block[0])
        for c, col in enumerate(block):
            out[start:end, c] = col
        start = end
    return out


def _narrowest(values: np.ndarray) -> np.ndarray:
    lo, hi = (int(values.min()), int(values.max())) if len(values) else (0, 0)
    for dtype in _NARROW:
        if dtype.min <= lo and hi <= dtype.max:
            return np.asarray(values.astype(dtype.dtype))
    return np.array(values)  # a copy: a view of a row block's column would keep the whole block


_NARROW = [np.iinfo(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)]


def _in_arrival_order(rows: np.ndarray) -> np.ndarray:
    return rows[np.argsort(rows[:, L.R_ORDINAL], kind="stable")]


def _table_size(capacity: int) -> int:
    size = 1
    while size < 2 * capacity:
        size <<= 1
    return size


class FlowEngine:
    def __init__(self, options: CoreOptions, on_finished: Callable[[Finished], None],
                 initial_flows: int = INITIAL_FLOWS, initial_rsts: int = INITIAL_RSTS) -> None:  # fmt: skip
        self.options = options
        self._on_finished = on_finished
        cap = min(initial_flows, max(16, options.max_flows))
        self.table = FlowTable(cap)
        self._alloc_output()
        self.R = np.zeros((initial_rsts, L.NR), np.int64)
        self.nr = np.zeros(2, np.int64)  # rows used in R, RSTs logged in the run
        self.settled = SettledRsts()
        # connections that ended with rows still in R (settled when R fills up)
        self._ended_with_rsts: list[np.ndarray] = []
        self.P = np.zeros(L.NP, np.int64)
        self.P[L.P_IDLE_US] = int(options.idle_timeout * 1e6)
        self.P[L.P_SHORT_IDLE_US] = int(options.handshake_idle_timeout * 1e6)
        self.P[L.P_CLOSE_DELAY_US] = int(options.close_delay * 1e6)
        self.P[L.P_ATTEMPT_US] = int(options.attempt_timeout * 1e6)
        self.P[L.P_SWEEP_US] = 1_000_000
        self.P[L.P_LAST_SWEEP] = np.iinfo(np.int64).min // 2
        self.P[L.P_MAX_TS] = np.iinfo(np.int64).min // 2
        self.C = np.zeros(L.NC, np.int64)
        self._likely_server = likely_server_ports()
        self._hashes = np.empty(4096, np.int64)

    def _alloc_output(self) -> None:
        # The kernels stop when the output is full (sweeps resume after the drain), so its
        # size is the drain size, whatever the number of open connections.
        rows = DRAIN_ROWS + 16
        self.FO = np.zeros((rows, L.NF), np.int64)
        self.KO = np.zeros((rows, 4), np.uint64)
        self.HO = np.zeros((rows, L.HMAX), np.uint8)
        self.nout = np.zeros(1, np.int64)

    @property
    def rsts(self) -> np.ndarray:
        """Every RST logged so far, in arrival order (one row each, columns `layout.R_*`):
        the settled rows of ended connections and the rows still in R."""
        live = self.R[: self.nr[0]]
        if not len(self.settled):
            return live
        return _in_arrival_order(np.concatenate([self.settled.rows(), live]))

    def take_rsts(self, serials: np.ndarray) -> np.ndarray:
        """Remove and return, in arrival order, the RST rows of ended connections `serials`."""
        rows = np.concatenate([self.settled.take(serials), self._take_from_log(serials)])
        return _in_arrival_order(rows)

    def _take_from_log(self, serials: np.ndarray) -> np.ndarray:
        """Remove the rows of connections `serials` from R (they can no longer change).

        The rows left are compacted and the indices that point at them (open connections'
        newest RST, each row's previous RST) are renumbered."""
        n = int(self.nr[0])
        R = self.R[:n]
        done = np.isin(R[:, L.R_SERIAL], serials)
        if not done.any():
            return np.array(R[:0])
        taken = np.array(R[done])
        keep = ~done
        renumber = np.full(n, -1, np.int64)
        renumber[keep] = np.arange(int(keep.sum()))
        kept = R[keep]
        prev = kept[:, L.R_PREV_IN_FLOW]
        kept[:, L.R_PREV_IN_FLOW] = np.where(prev >= 0, renumber[np.maximum(prev, 0)], -1)
        self.R[: kept.shape[0]] = kept
        self.nr[0] = kept.shape[0]
        F = self.table.F
        open_rows = np.flatnonzero(F[: self.P[L.P_ROWS_USED], L.ACTIVE] == 1)
        newest = F[open_rows, L.LAST_RST]
        F[open_rows, L.LAST_RST] = np.where(newest >= 0, renumber[np.maximum(newest, 0)], -1)
        return taken

    def _settle_rsts(self) -> None:
        """Move the rows of ended connections from R to `settled`."""
        if self._ended_with_rsts:
            self.settled.add(self._take_from_log(np.concatenate(self._ended_with_rsts)))
            self._ended_with_rsts.clear()

    def _make_rst_space(self) -> None:
        """R is full: settle the rows of ended connections; grow R only when that left it
        more than half full (the RSTs of open connections need the room)."""
        self.drain()  # connections that ended since the last drain are settled too
        self._settle_rsts()
        if self.nr[0] > self.R.shape[0] // 2:
            grown = np.zeros((2 * self.R.shape[0], L.NR), np.int64)  # untouched pages stay free
            grown[: self.R.shape[0]] = self.R
            self.R = grown

    def advance(self, now_us: int) -> None:
        """Let time pass without packets (a quiet live link): run Zeek's timers up to
        `now_us`, so connections that closed or went idle end without waiting for traffic."""
        if now_us - self.P[L.P_LAST_SWEEP] < self.P[L.P_SWEEP_US] or now_us < self.now:
            return
        t = self.table
        while not kernels.sweep(t.F, t.K, t.H, t.T, t.free, t.nfree, t.DL, self.FO, self.KO,
                                 self.HO, self.nout, self.P, self.C, now_us):  # fmt: skip
            self.drain()
        self.P[L.P_LAST_SWEEP] = now_us
        self.drain()

    @property
    def now(self) -> int:
        """The newest capture timestamp seen (µs)."""
        return int(self.P[L.P_MAX_TS])

    def feed(self, b: PacketBatch) -> None:
        i = 0
        n = len(b)
        # the compiled kernel takes contiguous columns (what the decoders make: no copies)
        cols = [np.ascontiguousarray(getattr(b, name)) for name in PROCESS_COLUMNS]
        # the bytes the batch was decoded from: checksums and RST payload text are read there
        raw = np.ascontiguousarray(b.raw, np.uint8)
        while i < n:
            t = self.table
            i, status = kernels.process(
                *cols, raw, self._likely_server,
                i, t.F, t.K, t.H, t.T, t.free, t.nfree, t.DL, self.R, self.nr,
                self.FO, self.KO, self.HO, self.nout, self.P, self.C, self._scratch(n),
            )  # fmt: skip
            if status == L.NEED_OUTPUT:
                self.drain()
            elif status == L.NEED_RST_SPACE:
                self._make_rst_space()
            elif status == L.NEED_SLOT:
                self._make_room()
        if self.nout[0] >= DRAIN_ROWS:
            self.drain()

    def _scratch(self, n: int) -> np.ndarray:
        """Per-packet scratch space for `process` (the kernels allocate nothing)."""
        if self._hashes.shape[0] < n:
            self._hashes = np.empty(max(n, 2 * self._hashes.shape[0]), np.int64)
        return self._hashes

    def _make_room(self) -> None:
        t = self.table
        if t.capacity < self.options.max_flows:
            self.drain()
            t.grow(min(2 * t.capacity, self.options.max_flows), self.P)
            return
        # Full at the limit: evict the connections idle the longest.
        active = np.flatnonzero(t.F[: self.P[L.P_ROWS_USED], L.ACTIVE] == 1)
        k = max(1, int(len(active) * EVICT_FRACTION))
        idle_order = np.argpartition(t.F[active, L.TS_LAST], k - 1)[:k]
        rows = active[idle_order]
        self.C[L.C_EVICTED] += len(rows)
        for start in range(0, len(rows), DRAIN_ROWS):  # the output holds DRAIN_ROWS
            self.drain()
            kernels.emit_rows(
                t.F, t.K, t.H, t.T, t.free, t.nfree, self.FO, self.KO, self.HO, self.nout,
                self.P, rows[start : start + DRAIN_ROWS], L.END_EVICTED,
            )  # fmt: skip
        self.drain()

    def drain(self) -> None:
        n = int(self.nout[0])
        if n:
            out = self.FO[:n]
            ended = out[out[:, L.RST_COUNT] > 0, L.SERIAL]
            if len(ended):
                self._ended_with_rsts.append(ended)
                if sum(map(len, self._ended_with_rsts)) > self.R.shape[0]:
                    self._settle_rsts()  # bounded even when R never fills (linger takes rows)
            self._on_finished(Finished(self.FO[:n].copy(), self.KO[:n].copy(), self.HO[:n].copy()))
            self.nout[0] = 0

    def finish(self) -> None:
        """End of input: every open connection is emitted (reason end_of_capture), a few
        thousand at a time so that turning them into records stays small in memory."""
        t = self.table
        self.drain()
        while kernels.emit_all(
            t.F, t.K, t.H, t.T, t.free, t.nfree, self.FO, self.KO, self.HO, self.nout,
            self.P, L.END_EOF, DRAIN_ROWS,
        ):  # fmt: skip
            self.drain()
        self.table = FlowTable(1)  # the matrices are no longer needed: give their memory back

    @property
    def live(self) -> int:
        return int(self.P[L.P_LIVE])

    def counters(self) -> dict[str, int]:
        return {
            "connections": int(self.C[L.C_FLOWS]),
            "expired_idle": int(self.C[L.C_IDLE]),
            "evicted": int(self.C[L.C_EVICTED]),
            "port_reuse": int(self.C[L.C_REUSE]),
            "rst_packets": int(self.C[L.C_RSTS]),
            "time_went_backwards": int(self.C[L.C_TIME_BACKWARDS]),
            "capture_duplicates": int(self.C[L.C_DUPS]),
        }
