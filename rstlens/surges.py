"""SYN scans and SYN floods, told from the connections that never completed a handshake.

A *failed attempt* is a connection that started with a SYN (`start_seen`) and ended as
Zeek's S0 (no answer) or REJ (refused).  `SurgeDetector` counts them, with bounded memory
whatever the traffic (a 10 M-source flood included), two ways:

* per **target host** (the responder's address): attempts and distinct sources;
* per **source host** (the originator's address): attempts and distinct targets (host, port).

Only the `TRACKED` keys with the most attempts are kept, each with a HyperLogLog sketch of
its distinct peers (`HLL_REGISTERS` registers: ~6.5 % standard error; a key entering the
tracked set starts its sketch then, so its peer count is a lower bound).  Attempts are
counted 65,536 at a time, and in each such batch a key seen only once (and not yet
tracked) is not counted: the most frequent keys are found without sorting a flood's
million distinct sources (a scanner slower than one attempt in 65,536 failed ones of
other hosts can be missed).  At the end:

* a **SYN flood** is a target host with at least `FLOOD_MIN_ATTEMPTS` failed attempts from
  at least `FLOOD_MIN_SOURCES` distinct sources at `MIN_RATE` attempts per second or more
  (over the time between its first and last attempt);
* a **SYN scan** is a source host with at least `SCAN_MIN_ATTEMPTS` failed attempts to at
  least `SCAN_MIN_TARGETS` distinct (host, port) targets, at `MIN_RATE` or more.

Each becomes a `summary.Surge` (kind, the host, sources, targets, attempts, rate, first and
last time) in `Summary.surges`: printed by `rstlens analyze`, stored in the run metadata.
The thresholds are far above what the benchmark's ordinary traffic reaches (its busiest
server: ~90 failed attempts in 5 minutes, at 0.3 per second).
"""

from __future__ import annotations

import numpy as np

from rstlens import kernels
from rstlens.flows import layout as L
from rstlens.output.schema import CONN_STATES
from rstlens.summary import Surge

FLOOD_MIN_ATTEMPTS = 1000
FLOOD_MIN_SOURCES = 100
SCAN_MIN_ATTEMPTS = 100
SCAN_MIN_TARGETS = 100
MIN_RATE = 10.0  # failed attempts per second
TRACKED = 64  # keys kept per kind (the most attempts)
HLL_BITS = 8
HLL_REGISTERS = 1 << HLL_BITS
PREFILTER_BUCKETS = 1 << 18

_FAILED = np.array([CONN_STATES.index("S0"), CONN_STATES.index("REJ")])
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: well-spread 64-bit hashes."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M2
        x = (x ^ (x >> np.uint64(27))) * _M3
    mixed: np.ndarray = x ^ (x >> np.uint64(31))
    return mixed


def _hash(hi: np.ndarray, lo: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = _mix(hi * _M1 + lo)
        if extra is not None:
            h = _mix(h ^ (extra.astype(np.uint64) * _M1))
    return h


class _Scratch:
    """The counting kernel's prefilter buckets (zeros) and hash map (-1), which it leaves
    as it found them: one pair for the trackers of a detector, which count in turn."""

    def __init__(self) -> None:
        self.buckets = np.zeros(PREFILTER_BUCKETS, np.int32)
        self._slots = np.full(0, -1, np.int64)

    def slots(self, keys: int) -> np.ndarray:
        """A hash map for `keys` distinct keys (at most half full)."""
        if self._slots.shape[0] < 2 * keys:
            self._slots = np.full(1 << (2 * keys - 1).bit_length(), -1, np.int64)
        return self._slots


class _Tracked:
    """The TRACKED keys with the most failed attempts, with a sketch of their peers (the
    counting is a kernel: `surges_kernel.track_attempts`)."""

    def __init__(self, scratch: _Scratch | None = None) -> None:
        self._scratch = scratch or _Scratch()
        self._keys = np.zeros(TRACKED, np.uint64)
        self._hi = np.zeros(TRACKED, np.uint64)
        self._lo = np.zeros(TRACKED, np.uint64)
        self._attempts = np.zeros(TRACKED, np.int64)
        self._first = np.zeros(TRACKED, np.int64)
        self._last = np.zeros(TRACKED, np.int64)
        self._hll = np.zeros((TRACKED, HLL_REGISTERS), np.uint8)
        self._next_hll = np.zeros((TRACKED, HLL_REGISTERS), np.uint8)
        self._sel = np.zeros(TRACKED, np.int64)
        self._set(0)

    def _set(self, m: int) -> None:
        self.keys, self.hi, self.lo = self._keys[:m], self._hi[:m], self._lo[:m]
        self.attempts, self.first, self.last = self._attempts[:m], self._first[:m], self._last[:m]
        self.hll = self._hll[:m]

    def add(self, key: np.ndarray, hi: np.ndarray, lo: np.ndarray, peer: np.ndarray,
            ts: np.ndarray) -> None:  # fmt: skip
        # Only keys seen twice in the batch (by a 2**18-bucket count) or already tracked
        # can be among the most frequent: a flood's million one-off sources are dropped
        # before anything is grouped.
        n = key.shape[0]
        distinct = n + TRACKED
        # (the rows of the distinct keys are fresh each call: only the few written are
        # faulted in; kept from call to call they had added ~15 MB to a scan's peak)
        m = kernels.track_attempts(
            *(np.ascontiguousarray(c, np.uint64) for c in (key, hi, lo, peer)),
            np.ascontiguousarray(ts, np.int64), self._keys, self._hi, self._lo, self._attempts,
            self._first, self._last, self._hll, self.keys.shape[0], HLL_BITS,
            self._scratch.buckets, self._scratch.slots(distinct),
            np.empty((distinct, 3), np.uint64), np.empty((distinct, 6), np.int64),
            np.empty(n, np.int64), self._sel, self._next_hll,
        )  # fmt: skip
        self._hll, self._next_hll = self._next_hll, self._hll
        self._set(int(m))

    def distinct(self) -> np.ndarray:
        """HyperLogLog estimates of each key's distinct peers."""
        m = float(HLL_REGISTERS)
        alpha = 0.7213 / (1 + 1.079 / m)
        raw = alpha * m * m / np.sum(np.exp2(-self.hll.astype(np.float64)), axis=1)
        zeros = np.sum(self.hll == 0, axis=1)
        linear = m * np.log(m / np.maximum(zeros, 1))
        est = np.where((raw <= 2.5 * m) & (zeros > 0), linear, raw)
        counts: np.ndarray = np.rint(est).astype(np.int64)
        return counts


class SurgeDetector:
    """Failed attempts of finished connections, counted per target and per source (a few
    hundred thousand at a time: the counting's fixed cost is per call)."""

    PENDING_ROWS = 1 << 16

    def __init__(self) -> None:
        scratch = _Scratch()
        self._targets = _Tracked(scratch)
        self._sources = _Tracked(scratch)
        self._pending: list[tuple[np.ndarray, ...]] = []
        self._pending_rows = 0

    def add(self, F: np.ndarray, K: np.ndarray) -> None:
        """Finished connections (kernel rows and keys, as `engine.Finished` holds them)."""
        state = F[:, L.CONN_STATE]
        failed = ((state == _FAILED[0]) | (state == _FAILED[1])) & (F[:, L.START_SEEN] == 1)
        rows = np.flatnonzero(failed)
        if not rows.shape[0]:
            return
        # the few columns needed, not copies of whole 960-byte rows (a scan's and a flood's
        # connections all failed)
        every = rows.shape[0] == F.shape[0]

        def col(M: np.ndarray, c: int) -> np.ndarray:
            return M[:, c] if every else M[rows, c]

        orig_a = col(F, L.ORIG_IS_A) == 1
        k0, k1, k2, k3 = (col(K, c) for c in range(4))
        o_hi, o_lo = np.where(orig_a, k0, k2), np.where(orig_a, k1, k3)
        r_hi, r_lo = np.where(orig_a, k2, k0), np.where(orig_a, k3, k1)
        ports = col(F, L.KEY_PORTS)
        resp_p = np.where(orig_a, ports & L.KEY_FIELD_MASK, ports >> L.KEY_PORT_SHIFT)
        self._pending.append((o_hi, o_lo, r_hi, r_lo, resp_p, np.array(col(F, L.TS_FIRST))))
        self._pending_rows += rows.shape[0]
        if self._pending_rows >= self.PENDING_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        o_hi, o_lo, r_hi, r_lo, resp_p, ts = (np.concatenate(c) for c in zip(*self._pending, strict=True))
        self._pending, self._pending_rows = [], 0
        source, target = _hash(o_hi, o_lo), _hash(r_hi, r_lo)
        self._targets.add(target, r_hi, r_lo, source, ts)
        self._sources.add(source, o_hi, o_lo, _hash(r_hi, r_lo, resp_p), ts)

    def surges(self) -> list[Surge]:
        from rstlens.output.records import address_text

        self._flush()
        out: list[Surge] = []
        for kind, tracked in (("syn_flood", self._targets), ("syn_scan", self._sources)):
            if not tracked.keys.shape[0]:
                continue
            peers = tracked.distinct()
            span = (tracked.last - tracked.first) / 1e6
            rate = tracked.attempts / np.maximum(span, 1e-6)
            if kind == "syn_flood":
                hit = (tracked.attempts >= FLOOD_MIN_ATTEMPTS) & (peers >= FLOOD_MIN_SOURCES)
            else:
                hit = (tracked.attempts >= SCAN_MIN_ATTEMPTS) & (peers >= SCAN_MIN_TARGETS)
            hit &= rate >= MIN_RATE
            rows = np.flatnonzero(hit)
            rows = rows[np.argsort(-tracked.attempts[rows], kind="stable")]
            names = address_text(tracked.hi[rows], tracked.lo[rows]).to_pylist()
            for j, name in zip(rows.tolist(), names, strict=True):
                n_peers = int(min(peers[j], tracked.attempts[j]))
                out.append(Surge(
                    kind=kind, host=name,
                    sources=n_peers if kind == "syn_flood" else 1,
                    targets=1 if kind == "syn_flood" else n_peers,
                    attempts=int(tracked.attempts[j]), rate=round(float(rate[j]), 1),
                    first_ts=int(tracked.first[j]), last_ts=int(tracked.last[j]),
                ))  # fmt: skip
        return out
