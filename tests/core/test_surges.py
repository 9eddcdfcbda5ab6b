"""The surge kernel (`surges_kernel.track_attempts`) against the numpy counting it replaced,
kept here as the reference: the same tracked keys, attempts, first and last times,
addresses and HyperLogLog registers after every batch, whatever the mix of keys."""

from __future__ import annotations

import numpy as np
import pytest

from rstlens import surges as S
from rstlens.flows.columns import among, distinct


class _Reference:
    """`surges._Tracked` as numpy computed it until 2026-12-03."""

    def __init__(self) -> None:
        self.keys = np.empty(0, np.uint64)
        self.hi = np.empty(0, np.uint64)
        self.lo = np.empty(0, np.uint64)
        self.attempts = np.empty(0, np.int64)
        self.first = np.empty(0, np.int64)
        self.last = np.empty(0, np.int64)
        self.hll = np.zeros((0, S.HLL_REGISTERS), np.uint8)

    def add(self, key: np.ndarray, hi: np.ndarray, lo: np.ndarray, peer: np.ndarray,
            ts: np.ndarray) -> None:  # fmt: skip
        buckets = (key & np.uint64(S.PREFILTER_BUCKETS - 1)).astype(np.intp)
        repeated = np.bincount(buckets, minlength=S.PREFILTER_BUCKETS)[buckets] >= 2
        candidate = repeated | among(key, self.keys)
        key, hi, lo, peer, ts = key[candidate], hi[candidate], lo[candidate], peer[candidate], ts[candidate]
        if not key.shape[0]:
            return
        n_old = self.keys.shape[0]
        keys = np.concatenate([self.keys, key])
        distinct_keys, at, group = distinct(keys)
        n_keys = distinct_keys.shape[0]
        attempts = np.zeros(n_keys, np.int64)
        np.add.at(attempts, group, np.concatenate([self.attempts, np.ones(key.shape[0], np.int64)]))
        first = np.full(n_keys, np.iinfo(np.int64).max)
        np.minimum.at(first, group, np.concatenate([self.first, ts]))
        last = np.full(n_keys, np.iinfo(np.int64).min)
        np.maximum.at(last, group, np.concatenate([self.last, ts]))
        addr_hi, addr_lo = np.concatenate([self.hi, hi])[at], np.concatenate([self.lo, lo])[at]
        keep = np.sort(np.argsort(-attempts, kind="stable")[: S.TRACKED])
        row_of_group = np.full(n_keys, -1, np.int64)
        row_of_group[keep] = np.arange(keep.shape[0])
        rows = row_of_group[group]
        hll = np.zeros((keep.shape[0], S.HLL_REGISTERS), np.uint8)
        old_rows = rows[:n_old]
        hll[old_rows[old_rows >= 0]] = self.hll[old_rows >= 0]
        batch_rows = rows[n_old:]
        kept = batch_rows >= 0
        h = S._mix(peer[kept])
        register = (h >> np.uint64(64 - S.HLL_BITS)).astype(np.intp)
        rest = h << np.uint64(S.HLL_BITS)
        rank = np.where(rest == 0, 64 - S.HLL_BITS + 1,
                        64 - np.floor(np.log2(np.maximum(rest, 1).astype(np.float64))).astype(np.int64))  # fmt: skip
        np.maximum.at(hll.reshape(-1), batch_rows[kept] * S.HLL_REGISTERS + register, rank.astype(np.uint8))
        self.keys, self.attempts = distinct_keys[keep], attempts[keep]
        self.first, self.last, self.hll = first[keep], last[keep], hll
        self.hi, self.lo = addr_hi[keep], addr_lo[keep]


def _batch(rng: np.random.Generator, mix: str, n: int, t0: int) -> tuple[np.ndarray, ...]:
    """Attempts whose keys are one host (a flood's target), all distinct (its sources), a
    few heavy hitters in noise, or keys that share prefilter buckets without being equal."""
    if mix == "one":
        address = np.full(n, 7, np.uint64)
    elif mix == "distinct":
        address = rng.integers(0, 2**40, n).astype(np.uint64)
    elif mix == "heavy":
        address = np.where(rng.random(n) < 0.5, rng.integers(0, 200, n),
                           rng.integers(0, 2**40, n)).astype(np.uint64)  # fmt: skip
    else:  # "buckets": 300 addresses whose keys collide in the prefilter's low bits
        address = rng.integers(0, 300, n).astype(np.uint64)
    key = S._hash(np.zeros(n, np.uint64), address)
    if mix == "buckets":
        key = (key & ~np.uint64(S.PREFILTER_BUCKETS - 1)) | np.uint64(5)
    hi = np.zeros(n, np.uint64)
    peer = rng.integers(0, 2**63, n).astype(np.uint64)
    ts = t0 + rng.integers(0, 10**6, n)
    return key, hi, address, peer, ts


@pytest.mark.parametrize("mix", ["one", "distinct", "heavy", "buckets"])
def test_the_kernel_tracks_what_numpy_tracked(mix: str) -> None:
    rng = np.random.default_rng(len(mix))
    kernel, reference = S._Tracked(), _Reference()
    for b in range(12):
        n = int(rng.integers(1, 70_000)) if b % 3 else int(rng.integers(1, 50))
        batch = _batch(rng, mix, n, b * 10**6)
        kernel.add(*batch)
        reference.add(*batch)
        for name in ("keys", "hi", "lo", "attempts", "first", "last", "hll"):
            np.testing.assert_array_equal(getattr(kernel, name), getattr(reference, name), err_msg=f"{name} {b}")
    assert kernel.keys.shape[0] == (1 if mix == "one" else S.TRACKED)


def test_an_empty_batch_changes_nothing() -> None:
    tracked = S._Tracked()
    rng = np.random.default_rng(1)
    tracked.add(*_batch(rng, "heavy", 20_000, 0))
    before = [getattr(tracked, c).copy() for c in ("keys", "attempts", "first", "last", "hll")]
    empty = np.empty(0, np.uint64)
    tracked.add(empty, empty, empty, empty, np.empty(0, np.int64))
    for was, name in zip(before, ("keys", "attempts", "first", "last", "hll"), strict=True):
        np.testing.assert_array_equal(getattr(tracked, name), was)
