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

from rstlens.flows import layout as L
from rstlens.flows.columns import among
from rstlens.flows.columns import distinct as distinct_values
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


class _Tracked:
    """The TRACKED keys with the most failed attempts, with a sketch of their peers."""

    def __init__(self) -> None:
        self.keys = np.empty(0, np.uint64)
        self.hi = np.empty(0, np.uint64)
        self.lo = np.empty(0, np.uint64)
        self.attempts = np.empty(0, np.int64)
        self.first = np.empty(0, np.int64)
        self.last = np.empty(0, np.int64)
        self.hll = np.zeros((0, HLL_REGISTERS), np.uint8)

    def add(self, key: np.ndarray, hi: np.ndarray, lo: np.ndarray, peer: np.ndarray,
            ts: np.ndarray) -> None:  # fmt: skip
        # Only keys seen twice in the batch (by a 2**18-bucket count) or already tracked
        # can be among the most frequent: a flood's million one-off sources are dropped
        # before anything is sorted.
        buckets = (key & np.uint64(PREFILTER_BUCKETS - 1)).astype(np.intp)
        repeated = np.bincount(buckets, minlength=PREFILTER_BUCKETS)[buckets] >= 2
        candidate = repeated | among(key, self.keys)
        key, hi, lo, peer, ts = key[candidate], hi[candidate], lo[candidate], peer[candidate], ts[candidate]
        if not key.shape[0]:
            return
        n_old = self.keys.shape[0]
        keys = np.concatenate([self.keys, key])
        # per distinct key (`at`: one element of each, its address; any will do, equal keys
        # are one address) the attempts, and the first and last of them
        distinct_keys, at, group = distinct_values(keys)
        n_keys = distinct_keys.shape[0]
        attempts = np.zeros(n_keys, np.int64)
        np.add.at(attempts, group, np.concatenate([self.attempts, np.ones(key.shape[0], np.int64)]))
        first = np.full(n_keys, np.iinfo(np.int64).max)
        np.minimum.at(first, group, np.concatenate([self.first, ts]))
        last = np.full(n_keys, np.iinfo(np.int64).min)
        np.maximum.at(last, group, np.concatenate([self.last, ts]))
        addr_hi, addr_lo = np.concatenate([self.hi, hi])[at], np.concatenate([self.lo, lo])[at]
        keep = np.sort(np.argsort(-attempts, kind="stable")[:TRACKED])
        row_of_group = np.full(n_keys, -1, np.int64)
        row_of_group[keep] = np.arange(keep.shape[0])
        rows = row_of_group[group]
        hll = np.zeros((keep.shape[0], HLL_REGISTERS), np.uint8)
        old_rows = rows[:n_old]
        hll[old_rows[old_rows >= 0]] = self.hll[old_rows >= 0]
        batch_rows = rows[n_old:]
        kept = batch_rows >= 0
        h = _mix(peer[kept])
        register = (h >> np.uint64(64 - HLL_BITS)).astype(np.intp)
        rest = h << np.uint64(HLL_BITS)
        rank = np.where(rest == 0, 64 - HLL_BITS + 1,
                        64 - np.floor(np.log2(np.maximum(rest, 1).astype(np.float64))).astype(np.int64))  # fmt: skip
        # on the flat registers: numpy's fast path of `ufunc.at` is for one index array
        # (~7x a (row, register) pair of them)
        np.maximum.at(hll.reshape(-1), batch_rows[kept] * HLL_REGISTERS + register, rank.astype(np.uint8))
        self.keys, self.attempts = distinct_keys[keep], attempts[keep]
        self.first, self.last, self.hll = first[keep], last[keep], hll
        self.hi, self.lo = addr_hi[keep], addr_lo[keep]

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
        self._targets = _Tracked()
        self._sources = _Tracked()
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
