"""`EndedConnections` keeps the latest-ended connections up to its capacity, whenever it
evicts: batches of ended connections in arbitrary end order give the same rows and the same
eviction count as one sort of everything added (the reference below)."""

from __future__ import annotations

import numpy as np

from rstlens.attribution import ended as E
from rstlens.flows import layout as L


def _rows(rng: np.random.Generator, n: int, first_serial: int) -> tuple[np.ndarray, np.ndarray]:
    F = np.zeros((n, L.NF), np.int64)
    F[:, L.HASH] = rng.integers(0, 1 << 40, n)
    F[:, L.SERIAL] = np.arange(first_serial, first_serial + n)
    F[:, L.PKT_LAST] = rng.integers(0, 50, n)  # many ties
    K = rng.integers(0, 1 << 62, (n, L.NKO)).astype(np.uint64)
    return F, K


def test_lazy_eviction_keeps_the_latest_ended_like_one_sort() -> None:
    rng = np.random.default_rng(7)
    ended = E.EndedConnections(capacity=1000)
    added: list[np.ndarray] = []
    serial = 0
    for n in rng.integers(1, 400, 40):
        F, K = _rows(rng, int(n), serial)
        serial += int(n)
        ended.add(F, K)
        added.append(F)
    everything = np.concatenate(added)
    # reference: order by (end time, arrival), keep the last `capacity`
    order = np.lexsort((np.arange(everything.shape[0]), everything[:, L.PKT_LAST]))
    want = np.sort(everything[order[-1000:], L.SERIAL])
    assert len(ended) == 1000
    assert ended.evicted == everything.shape[0] - 1000
    kept = np.concatenate(ended._blocks)
    assert np.array_equal(np.sort(kept[:, E._SERIAL]), want)


def test_under_capacity_nothing_is_evicted() -> None:
    rng = np.random.default_rng(3)
    ended = E.EndedConnections(capacity=1000)
    F, K = _rows(rng, 999, 0)
    ended.add(F, K)
    assert (len(ended), ended.evicted) == (999, 0)
