"""Drives the numba core over a stream of batches and makes room when it asks.

`FlowEngine.feed()` runs `core.process` over a `PacketBatch`; when the kernel stops
because the table, the output or the RST log is full, the engine grows the table (up to
`max_flows`), evicts the longest-idle connections, drains finished connections, or settles
the RST rows of ended connections out of the RST log (growing it only when that is not
enough), then resumes at the packet where the kernel stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rstlens import kernels
from rstlens.flows import layout as L
from rstlens.flows.columns import RstColumns, among, narrow_columns
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
# Rows are lent to `on_finished` (FlowEngine's `lend_rows`) from this many on.  A one-row
# block's column is contiguous, and Arrow would take it as its buffer: a view of the output
# that the kernel writes again.  From two rows on, a column of the 960-byte rows is strided
# and every record column a copy; below 16 copying costs nothing.  Copying each drain (960 B
# a connection) had been ~3% of a SYN flood's time.
LENT_MIN_ROWS = 16
# SYN + RST connections kept as reset rows through the close delay (`layout.ROW_RESET`); the
# tests turn it off to compare with the full rows' outputs
RESET_ROWS = True


@dataclass(slots=True)
class Finished:
    """Connections emitted by the kernel: copies of their rows, or views of the engine's
    output lent for the call only (`FlowEngine(lend_rows=True)`)."""

    F: np.ndarray
    K: np.ndarray
    H: np.ndarray
    # emitted by `FlowEngine.finish`: still in the table when the input ended (open, or in
    # their close delay), so no packet of the input came after them on their key
    at_end: bool = False


# The PacketBatch columns `core.process` takes, in its argument order: those of
# `BATCH_COLUMNS` (the one definition), in its order, less the ones the flow core never
# reads (none today: the TCP timestamps feed the RST log, issue 17 item 6).
# tests/core/test_columns.py checks the kernel's `def` against this.
NOT_READ_BY_PROCESS: frozenset[str] = frozenset()
PROCESS_COLUMNS = tuple(name for name in BATCH_COLUMNS if name not in NOT_READ_BY_PROCESS)
# and the arguments that follow the columns
PROCESS_ARGS = (
    "raw", "likely_server", "start", "F", "K", "H", "A", "E", "X", "FS", "HS", "NRS", "T", "free",
    "nfree", "DL", "R", "nr", "FO", "KO", "HO", "RO", "nout", "P", "C", "hashes",
)  # fmt: skip


class FlowTable:
    """The matrices of the flow table (`hashtable`), sized `capacity` rows, and their growth.

    Per row: F (full state, 960 bytes) and H (history) only for full connections, K (key
    row, one line), A (what the row holds), E (an embryonic or reset connection's SYN, one
    line), X (a reset connection's RST, one line), DL; plus the hash table T.  Untouched
    rows of F, H and X are zero pages that cost nothing, so an embryonic connection costs
    K + E + A + DL + free + its share of T: ~170 bytes, a reset one X more (`resident_bytes`
    measures it)."""

    def __init__(self, capacity: int, reserve: int | None = None) -> None:
        self.capacity = capacity
        # The row matrices are views of buffers of `reserve` rows: pages never written cost
        # no memory, so a roomy reserve is address space only, and growing within it is a
        # new view, not a copy (copying 500,000 rows of 832 bytes had briefly held both).
        self.reserve = max(capacity, reserve or capacity)
        try:
            self._buffers = _row_buffers(self.reserve)
        except MemoryError:  # a small machine that will not map that much: grow by copying
            self.reserve = capacity
            self._buffers = _row_buffers(capacity)
        self._view(capacity)
        # one scratch row where embryonic connections are replayed (expiry, emission)
        self.FS = _line_aligned_rows(1, L.NF, np.int64)
        self.HS = np.zeros((1, L.HMAX), np.uint8)
        self.NRS = np.zeros(2, np.int64)  # a reset row's RST replayed into RO: rows used there
        self.T = np.full(_table_size(capacity), -1, np.int64)
        # free rows, popped from the end: lowest rows first keeps the table compact
        self.free = np.arange(capacity - 1, -1, -1, dtype=np.int64)
        self.nfree = np.array([capacity], np.int64)

    def _view(self, capacity: int) -> None:
        b = self._buffers
        self.F, self.K, self.H, self.A, self.E, self.X = (b[name][:capacity] for name in "FKHAEX")
        # per row, a time before which it cannot expire (see core.sweep)
        self.DL = b["DL"][:capacity]

    def arrays(self) -> list[np.ndarray]:
        return [self.F, self.K, self.H, self.A, self.E, self.X, self.FS, self.HS, self.NRS, self.T,
                self.free, self.DL]  # fmt: skip

    def grow(self, capacity: int, params: np.ndarray) -> None:
        old = self.capacity
        if capacity > self.reserve:
            # beyond the reserve: new buffers, and only the rows in use copied (F and H of
            # embryonic and free rows stay zero pages), a block at a time
            buffers = _row_buffers(capacity)
            for name, kinds in (("F", (L.ROW_FULL,)), ("H", (L.ROW_FULL,)),
                                ("E", (L.ROW_EMBRYONIC, L.ROW_RESET)), ("X", (L.ROW_RESET,)),
                                ("K", (L.ROW_FULL, L.ROW_EMBRYONIC, L.ROW_RESET))):  # fmt: skip
                rows = np.flatnonzero(np.isin(self.A, kinds))
                for start in range(0, rows.shape[0], COPY_ROWS):
                    block = rows[start : start + COPY_ROWS]
                    buffers[name][block] = self._buffers[name][block]
            buffers["A"][:old] = self.A
            buffers["DL"][:old] = self.DL
            self._buffers, self.reserve = buffers, capacity
        self._view(capacity)
        self.T = np.full(_table_size(capacity), -1, np.int64)
        kernels.rebuild(self.T, self.K, self.A)
        free_old = self.free[: self.nfree[0]]
        self.free = np.concatenate([np.arange(capacity - 1, old - 1, -1, dtype=np.int64), free_old])
        self.free = np.concatenate([self.free, np.zeros(capacity - self.free.shape[0], np.int64)])
        self.nfree[0] = capacity - params[L.P_LIVE]
        self.capacity = capacity


COPY_ROWS = 1 << 15  # rows copied at a time when the table outgrows its reserve
RELEASE_STEP = 1 << 15  # rows given back at least at a time in `finish`


def _row_buffers(rows: int) -> dict[str, np.ndarray]:
    return {
        "F": _sparse_rows(rows, L.NF, np.int64, HUGE_ROWS),
        "K": _line_aligned_rows(rows, L.NK, np.uint64),
        "H": _sparse_rows(rows, L.HMAX, np.uint8),
        "A": np.zeros(rows, np.int8),
        "E": _line_aligned_rows(rows, L.NE, np.int64),
        "X": _sparse_rows(rows, L.NX, np.int64),
        # zero pages: a row's DL is written when the row is taken, and sweeps stop at the
        # rows ever taken (P_ROWS_USED)
        "DL": np.zeros(rows, np.int64),
    }


def resident_bytes(arrays: list[np.ndarray]) -> int:
    """Bytes of the arrays' pages resident in memory (Linux mincore(2)): what the table
    really costs, since pages never written are not."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page = mmap.PAGESIZE
    total = 0
    for a in arrays:
        start = a.ctypes.data // page * page
        length = a.ctypes.data + a.nbytes - start
        pages = -(-length // page)
        vec = (ctypes.c_ubyte * pages)()
        if libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(length), vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        total += page * sum(v & 1 for v in vec)
    return total


HUGE_ROWS = INITIAL_FLOWS  # F rows that may sit in transparent huge pages (the table's start)
_HUGE_PAGE = 2 << 20


def _sparse_rows(capacity: int, width: int, dtype: type[np.generic], huge_rows: int = 0) -> np.ndarray:
    """Zeroed rows in 4 KiB pages (no transparent huge pages), except the first `huge_rows`.

    Rows written only by some connections (F and H: full ones, X: reset ones) scatter among
    rows that never touch them: in 2 MB huge pages, which numpy asks for on large arrays, a
    scan's 58 full rows among 300,000 reset rows had made 94 MB of F resident.  The first
    rows, where the free list puts an ordinary capture's connections, keep huge pages (fewer
    TLB misses in the flow kernel)."""
    import mmap

    size = max(1, capacity * width * np.dtype(dtype).itemsize)
    try:
        buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError as exc:
        raise MemoryError(str(exc)) from exc
    huge = min(size, huge_rows * width * np.dtype(dtype).itemsize) // _HUGE_PAGE * _HUGE_PAGE
    with contextlib.suppress(OSError, AttributeError, ValueError):
        if huge:
            buf.madvise(mmap.MADV_HUGEPAGE, 0, huge)
        if size > huge:
            buf.madvise(mmap.MADV_NOHUGEPAGE, huge, size - huge)
    return np.frombuffer(buf, dtype, count=capacity * width).reshape(capacity, width)


def _release_rows(matrices: list[np.ndarray], rows: int) -> None:
    """Give the pages that hold only rows 0..`rows` - 1 of `matrices` back to the system
    (madvise MADV_DONTNEED: they read as zeros afterwards).  Linux; elsewhere nothing."""
    global _madvise
    if _madvise is None:
        try:
            import ctypes

            _madvise = ctypes.CDLL("libc.so.6", use_errno=True).madvise
            _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        except (OSError, AttributeError):
            _madvise = False
    if not callable(_madvise) or rows <= 0:
        return
    import mmap

    page = mmap.PAGESIZE
    for M in matrices:
        start = -(-M.ctypes.data // page) * page
        end = (M.ctypes.data + min(rows, M.shape[0]) * M.strides[0]) // page * page
        if end > start:
            _madvise(start, end - start, 4)  # MADV_DONTNEED


_madvise: Callable[[int, int, int], int] | bool | None = None


def _line_aligned_rows(capacity: int, width: int, dtype: type[np.generic]) -> np.ndarray:
    """Zeroed rows of `width` 8-byte words starting on a cache line (a row is a whole
    number of lines), so the hot columns of a row take the fewest lines."""
    line = 64 // 8
    buf = np.zeros(capacity * width + line, dtype)
    skip = (-buf.ctypes.data % 64) // 8
    return buf[skip : skip + capacity * width].reshape(capacity, width)


class SettledRsts:
    """RST rows of connections that have ended, moved out of the kernel's log R.

    Their values can no longer change, so each column is kept in the narrowest integer type
    that holds its values (a row of R is `layout.NR` int64s, 560 bytes; here ~100 bytes): a
    file's RSTs wait for their verdicts until the end of the input."""

    def __init__(self) -> None:
        self._blocks: list[list[np.ndarray]] = []  # per block, one array per R column

    def __len__(self) -> int:
        return sum(len(b[0]) for b in self._blocks)

    def add(self, rows: np.ndarray) -> None:
        if len(rows):
            self._blocks.append(narrow_columns(rows))

    def rows(self) -> np.ndarray:
        """All settled rows as int64 R rows, in the order they were added."""
        return _widen(self._blocks)

    def merged_with(self, live: np.ndarray) -> np.ndarray:
        """The settled rows and the `live` rows of R as one int64 matrix in arrival order
        (`R_ORDINAL`), each row written once, straight into its place."""
        parts = [block[L.R_ORDINAL] for block in self._blocks] + [live[:, L.R_ORDINAL]]
        place = np.argsort(np.argsort(np.concatenate(parts), kind="stable"), kind="stable")
        out = np.empty((place.shape[0], L.NR), np.int64)
        start = 0
        for block in self._blocks:
            at = place[start : start + len(block[0])]
            for c, col in enumerate(block):
                out[at, c] = col
            start += len(block[0])
        out[place[start:]] = live
        return out

    def take_all(self, live: np.ndarray) -> RstColumns:
        """Every settled row and the `live` rows of R, narrow, in arrival order; the settled
        rows are given up column by column as they are copied (no int64 matrix of them all)."""
        blocks = self._blocks
        self._blocks = []
        if len(live):
            blocks.append(narrow_columns(live))
        if not blocks:
            return RstColumns.of(np.zeros((0, L.NR), np.int64))
        ordinals = np.concatenate([b[L.R_ORDINAL] for b in blocks])
        # ordinals are distinct (arrival numbers): any sort gives the one order
        order = None if (ordinals[1:] >= ordinals[:-1]).all() else np.argsort(ordinals)
        return RstColumns.concat_in_order(blocks, order)

    def take(self, serials: np.ndarray) -> np.ndarray:
        """Remove and return the rows of connections `serials` (the rest stay narrow)."""
        taken, kept = [], []
        for block in self._blocks:
            done = among(block[L.R_SERIAL], serials)
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


def _zeros_or_none(shape: tuple[int, int]) -> np.ndarray | None:
    try:
        return np.zeros(shape, np.int64)
    except MemoryError:
        return None


def _in_arrival_order(rows: np.ndarray) -> np.ndarray:
    return rows[np.argsort(rows[:, L.R_ORDINAL], kind="stable")]


def _table_size(capacity: int) -> int:
    size = 1
    while size < 2 * capacity:
        size <<= 1
    return size


class FlowEngine:
    def __init__(self, options: CoreOptions, on_finished: Callable[[Finished], None],
                 initial_flows: int = INITIAL_FLOWS, initial_rsts: int = INITIAL_RSTS,
                 lend_rows: bool = False) -> None:  # fmt: skip
        """`lend_rows`: `on_finished` is handed views of the output buffers, valid until it
        returns (it keeps copies of what it keeps), not copies of them: for a caller that
        is done with the rows when it returns (`analyze -j 1`; not the records thread of
        `-j 2`, which works on them after the kernel has written the next ones)."""
        self.options = options
        self._on_finished = on_finished
        self._lend_rows = lend_rows
        self._at_end = False  # `finish` has begun: see `Finished.at_end`
        cap = min(initial_flows, max(16, options.max_flows))
        self.table = FlowTable(cap, reserve=max(16, options.max_flows))
        self._alloc_output()
        # R is a view of a buffer of up to max_flows rows (address space until written), so
        # that it grows without copying
        self._R_buffer = _zeros_or_none((max(initial_rsts, options.max_flows), L.NR))
        self.R = (self._R_buffer[:initial_rsts] if self._R_buffer is not None
                  else np.zeros((initial_rsts, L.NR), np.int64))  # fmt: skip
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
        self.P[L.P_RESET_ROWS] = int(RESET_ROWS)
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
        self.KO = np.zeros((rows, L.NKO), np.uint64)
        self.HO = np.zeros((rows, L.HMAX), np.uint8)
        # the RST rows of emitted reset connections (`layout.ROW_RESET`): at most one per
        # emitted connection; they go straight to `settled`, never through R
        self.RO = np.zeros((rows, L.NR), np.int64)
        self.nout = np.zeros(2, np.int64)  # rows used in FO, in RO

    @property
    def rsts(self) -> np.ndarray:
        """Every RST logged so far, in arrival order (one row each, columns `layout.R_*`):
        the settled rows of ended connections and the rows still in R, written once into
        their places (concatenating, then sorting, had held three copies of every row)."""
        live = self.R[: self.nr[0]]
        if not len(self.settled):
            # a reset row's RST is logged into R when the row is replayed, after later RSTs
            ordinals = live[:, L.R_ORDINAL]
            return live if (ordinals[1:] >= ordinals[:-1]).all() else _in_arrival_order(live)
        return self.settled.merged_with(live)

    def take_all_rsts(self) -> RstColumns:
        """End of input (after `finish`): every RST logged, in arrival order, as narrow columns
        (`rsts` as int64 was 464 bytes a row); R and its buffer are given back."""
        live = self.R[: self.nr[0]]
        out = self.settled.take_all(live)
        self.R = np.zeros((0, L.NR), np.int64)
        self._R_buffer = None
        self.nr[0] = 0
        return out

    def take_rsts(self, serials: np.ndarray) -> np.ndarray:
        """Remove and return, in arrival order, the RST rows of ended connections `serials`."""
        rows = np.concatenate([self.settled.take(serials), self._take_from_log(serials)])
        return _in_arrival_order(rows)

    def _take_from_log(self, serials: np.ndarray, into: SettledRsts | None = None) -> np.ndarray:
        """Remove the rows of connections `serials` from R (they can no longer change) and
        return them, or add them to `into` (then an empty array is returned).

        The rows left are compacted in place, a block at a time, and the indices that point
        at them (open connections' newest RST, each row's previous RST) are renumbered."""
        n = int(self.nr[0])
        R = self.R[:n]
        done = among(R[:, L.R_SERIAL], serials)
        if not done.any():
            return np.array(R[:0])
        taken_at = np.flatnonzero(done)
        if into is None:
            taken = np.array(R[taken_at])
        else:
            taken = np.array(R[:0])
            for a in range(0, taken_at.shape[0], COPY_ROWS):
                into.add(R[taken_at[a : a + COPY_ROWS]])
        keep = np.flatnonzero(~done)
        renumber = np.full(n, -1, np.int64)
        renumber[keep] = np.arange(keep.shape[0])
        for a in range(0, keep.shape[0], COPY_ROWS):
            # destinations never pass their sources, so blocks in order copy safely in place
            block = R[keep[a : a + COPY_ROWS]]
            prev = block[:, L.R_PREV_IN_FLOW]
            block[:, L.R_PREV_IN_FLOW] = np.where(prev >= 0, renumber[np.maximum(prev, 0)], -1)
            R[a : a + block.shape[0]] = block
        self.nr[0] = keep.shape[0]
        F = self.table.F
        open_rows = np.flatnonzero(self.table.A[: self.P[L.P_ROWS_USED]] == L.ROW_FULL)
        newest = F[open_rows, L.LAST_RST]
        F[open_rows, L.LAST_RST] = np.where(newest >= 0, renumber[np.maximum(newest, 0)], -1)
        return taken

    def _settle_rsts(self) -> None:
        """Move the rows of ended connections from R to `settled`."""
        if self._ended_with_rsts:
            self._take_from_log(np.concatenate(self._ended_with_rsts), into=self.settled)
            self._ended_with_rsts.clear()

    def _make_rst_space(self) -> None:
        """R is full: settle the rows of ended connections; grow R only when that left it
        more than half full (the RSTs of open connections need the room)."""
        self.drain()  # connections that ended since the last drain are settled too
        self._settle_rsts()
        if self.nr[0] > self.R.shape[0] // 2:
            rows = 2 * self.R.shape[0]
            if self._R_buffer is not None and rows <= self._R_buffer.shape[0]:
                self.R = self._R_buffer[:rows]  # the same memory: the rows in use stay
                return
            grown = np.zeros((rows, L.NR), np.int64)  # untouched pages stay free
            grown[: self.R.shape[0]] = self.R
            self.R = grown

    def advance(self, now_us: int) -> None:
        """Let time pass without packets (a quiet live link): run Zeek's timers up to
        `now_us`, so connections that closed or went idle end without waiting for traffic."""
        if now_us - self.P[L.P_LAST_SWEEP] < self.P[L.P_SWEEP_US] or now_us < self.now:
            return
        t = self.table
        while not kernels.sweep(t.F, t.K, t.H, t.A, t.E, t.X, t.FS, t.HS, t.NRS, t.T, t.free,
                                 t.nfree, t.DL, self.FO, self.KO, self.HO, self.RO, self.nout,
                                 self.R, self.nr, self.P, self.C, now_us):  # fmt: skip
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
                i, t.F, t.K, t.H, t.A, t.E, t.X, t.FS, t.HS, t.NRS, t.T, t.free, t.nfree, t.DL,
                self.R, self.nr, self.FO, self.KO, self.HO, self.RO, self.nout, self.P, self.C,
                self._scratch(n),
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
        # Full at the limit: evict the connections idle the longest (an embryonic one's last
        # packet is its SYN, a reset one's its RST)
        kind = t.A[: self.P[L.P_ROWS_USED]]
        active = np.flatnonzero(kind != L.ROW_FREE)
        k = max(1, int(len(active) * EVICT_FRACTION))
        last = t.E[active, L.E_TS]
        full = kind[active] == L.ROW_FULL
        last[full] = t.F[active[full], L.TS_LAST]
        reset = kind[active] == L.ROW_RESET
        last[reset] = t.X[active[reset], L.X_TS]
        idle_order = np.argpartition(last, k - 1)[:k]
        rows = active[idle_order]
        self.C[L.C_EVICTED] += len(rows)
        for start in range(0, len(rows), DRAIN_ROWS):  # the output holds DRAIN_ROWS
            self.drain()
            kernels.emit_rows(
                t.F, t.K, t.H, t.A, t.E, t.X, t.FS, t.HS, t.NRS, t.T, t.free, t.nfree, self.FO,
                self.KO, self.HO, self.RO, self.nout, self.R, self.nr, self.P, self.C,
                rows[start : start + DRAIN_ROWS], L.END_EVICTED,
            )  # fmt: skip
        self.drain()

    def drain(self) -> None:
        n = int(self.nout[0])
        if n:
            out = self.FO[:n]
            ended = out[out[:, L.RST_COUNT] > 0, L.SERIAL]
            nro = int(self.nout[1])
            if nro:
                # emitted reset rows: their RST rows are final, and were never in R
                reset = self.RO[:nro]
                self.settled.add(reset)
                ended = ended[~among(ended, reset[:, L.R_SERIAL])]
                self.nout[1] = 0
            if len(ended):
                self._ended_with_rsts.append(ended)
                if sum(map(len, self._ended_with_rsts)) > self.R.shape[0]:
                    self._settle_rsts()  # bounded even when R never fills (linger takes rows)
            rows = Finished(self.FO[:n], self.KO[:n], self.HO[:n], self._at_end)
            if not (self._lend_rows and n >= LENT_MIN_ROWS):
                rows = Finished(rows.F.copy(), rows.K.copy(), rows.H.copy(), self._at_end)
            self._on_finished(rows)
            self.nout[0] = 0

    def finish(self) -> None:
        """End of input: every open connection is emitted (reason end_of_capture), a few
        thousand at a time so that turning them into records stays small in memory."""
        t = self.table
        self.drain()
        self._at_end = True  # what is drained from here on was still in the table
        done = 0  # rows before this one are free
        while kernels.emit_all(
            t.F, t.K, t.H, t.A, t.E, t.X, t.FS, t.HS, t.NRS, t.T, t.free, t.nfree, self.FO, self.KO,
            self.HO, self.RO, self.nout, self.R, self.nr, self.P, self.C, L.END_EOF, DRAIN_ROWS,
        ):  # fmt: skip
            self.drain()
            # emit_all walks the rows in order and goes on where it stopped (P_EMIT_FROM): the
            # rows before are never read again, and their pages go back while the records
            # pile up (P_EMIT_FROM is 0 again once the last call got to the end)
            done = max(done, int(self.P[L.P_EMIT_FROM]))
            if done >= RELEASE_STEP:
                _release_rows([t.F, t.K, t.H, t.E, t.X], done)
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
