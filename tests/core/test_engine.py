"""The engine's bookkeeping around the kernel: growing the flow table changes nothing."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np

from rstlens import _layout as L
from rstlens._engine import CoreOptions, Finished, FlowEngine
from rstlens.dev.synth import generate
from rstlens.parsers import CaptureReader, PacketBatch


def _run(batches: list, initial_flows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, FlowEngine, int]:
    done: list[Finished] = []
    engine = FlowEngine(CoreOptions(), done.append, initial_flows=initial_flows)
    grown = []
    for b in batches:
        engine.feed(b)
        grown.append(engine.table.capacity)
    engine.finish()
    F = np.concatenate([f.F for f in done])
    order = np.argsort(F[:, L.SERIAL], kind="stable")
    K = np.concatenate([f.K for f in done])[order]
    H = np.concatenate([f.H for f in done])[order]
    return F[order], K, H, engine, max(grown)


def test_growing_the_table_gives_the_same_connections(tmp_path: Path) -> None:
    path = tmp_path / "g.pcap"
    generate(path, 60_000, seed=5)
    batches = list(CaptureReader([path]))
    F1, K1, H1, small, small_cap = _run(batches, initial_flows=16)
    F2, K2, H2, roomy, roomy_cap = _run(batches, initial_flows=1 << 16)
    assert small_cap >= 256 and roomy_cap == 1 << 16  # one grew 5+ times, one never
    assert F1.shape[0] > 1000 and F1.shape == F2.shape
    np.testing.assert_array_equal(F1, F2)
    np.testing.assert_array_equal(K1, K2)
    np.testing.assert_array_equal(H1, H2)
    np.testing.assert_array_equal(small.rsts, roomy.rsts)
    assert small.counters() == roomy.counters()


def _strided(b: PacketBatch) -> PacketBatch:
    """The same rows, every column a strided view (every other element of a doubled array)."""
    cols = {}
    for f in fields(b):
        if f.name != "raw":
            col = getattr(b, f.name)
            cols[f.name] = np.repeat(col, 2)[::2]
            assert not cols[f.name].flags.c_contiguous or len(col) <= 1
    return PacketBatch(**cols, raw=b.raw)


def test_columns_that_are_not_contiguous_give_the_same_connections(tmp_path: Path) -> None:
    path = tmp_path / "s.pcap"
    generate(path, 20_000, seed=9)
    batches = list(CaptureReader([path]))
    F1, K1, H1, _, _ = _run(batches, initial_flows=1 << 16)
    F2, K2, H2, _, _ = _run([_strided(b) for b in batches], initial_flows=1 << 16)
    assert F1.shape[0] > 100
    np.testing.assert_array_equal(F1, F2)
    np.testing.assert_array_equal(K1, K2)
    np.testing.assert_array_equal(H1, H2)
