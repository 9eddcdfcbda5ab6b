"""The engine's bookkeeping around the kernel: growing the flow table changes nothing."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from rstlens.flows import engine as flow_engine
from rstlens.flows import layout as L
from rstlens.flows.columns import (
    SEARCHED_MAX,
    TABLE_RANGE,
    among,
    distinct,
    distinct_pairs,
    narrow_columns,
    narrowest,
)
from rstlens.flows.engine import INITIAL_RSTS, CoreOptions, Finished, FlowEngine, SettledRsts
from rstlens.parsers import CaptureReader, PacketBatch
from tools import synscan
from tools.synth import generate


def _run(batches: list, initial_flows: int, initial_rsts: int = INITIAL_RSTS
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, FlowEngine, int]:  # fmt: skip
    done: list[Finished] = []
    engine = FlowEngine(CoreOptions(), done.append, initial_flows=initial_flows, initial_rsts=initial_rsts)
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
    # LAST_RST and R_PREV_IN_FLOW are row indices within R: where a reset row's RST is
    # logged (R on promotion, else straight to the settled rows) follows the drains
    state = [c for c in range(L.NF) if c != L.LAST_RST]
    np.testing.assert_array_equal(F1[:, state], F2[:, state])
    np.testing.assert_array_equal(K1, K2)
    np.testing.assert_array_equal(H1, H2)
    facts = [c for c in range(L.NR) if c != L.R_PREV_IN_FLOW]
    np.testing.assert_array_equal(small.rsts[:, facts], roomy.rsts[:, facts])
    assert small.counters() == roomy.counters()


def test_settling_rsts_of_ended_connections_gives_the_same_log(tmp_path: Path) -> None:
    path = tmp_path / "s.pcap"
    generate(path, 60_000, seed=6)
    batches = list(CaptureReader([path]))
    F1, _, _, small, _ = _run(batches, initial_flows=1 << 16, initial_rsts=32)
    F2, _, _, roomy, _ = _run(batches, initial_flows=1 << 16, initial_rsts=1 << 16)
    n = len(roomy.rsts)
    # the roomy log never filled up: only emitted reset rows' RSTs (never in R) are settled
    assert n > 300 and len(roomy.settled) < len(small.settled)
    assert len(small.settled) > n // 2 and small.R.shape[0] < n // 2  # settled, barely grown
    # values and arrival order; R_PREV_IN_FLOW is a row index within R, meaningless outside
    facts = [c for c in range(L.NR) if c != L.R_PREV_IN_FLOW]
    np.testing.assert_array_equal(small.rsts[:, facts], roomy.rsts[:, facts])
    np.testing.assert_array_equal(small.rsts[:, L.R_ORDINAL], np.arange(n))
    state = [c for c in range(L.NF) if c != L.LAST_RST]  # LAST_RST: an index within R too
    np.testing.assert_array_equal(F1[:, state], F2[:, state])


def test_settled_rows_keep_their_values_in_narrow_columns() -> None:
    rng = np.random.default_rng(3)
    extremes = [0, -1, 255, 256, 65_535, -32_769, 2**32 - 1, 2**31, -(2**63), 2**63 - 1]
    rows = rng.choice(extremes, size=(40, L.NR)).astype(np.int64)
    rows[:, L.R_SERIAL] = np.arange(40) % 7
    rows[:, 3] = 5  # a column of small values is stored in a byte
    store = SettledRsts()
    store.add(rows[:25])
    store.add(rows[25:])
    store.add(rows[:0])
    np.testing.assert_array_equal(store.rows(), rows)
    assert store._blocks[0][3].itemsize == 1
    # no views of `rows`; a column of one value (column 3) is that value broadcast: no memory
    assert not any(np.shares_memory(col, rows) for block in store._blocks for col in block)
    assert store._blocks[0][3].strides == (0,)
    taken = store.take(np.array([2, 5]))
    np.testing.assert_array_equal(taken, rows[np.isin(rows[:, L.R_SERIAL], [2, 5])])
    np.testing.assert_array_equal(store.rows(), rows[~np.isin(rows[:, L.R_SERIAL], [2, 5])])


def test_a_few_rows_drained_at_a_time_give_the_same_connections_in_the_same_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep and the end of input stop when the output is full and go on after the drain
    where they stopped (`layout.P_SWEEP_FROM`, `P_EMIT_FROM`): the same connections, in the
    same order, as with room for thousands."""
    flood, mixed = tmp_path / "flood.pcap", tmp_path / "mixed.pcap"
    # 12 s of 2,500 unanswered SYNs a second: each sweep expires thousands of attempts
    synscan.generate_flood(flood, 30_000, seed=4, gap_us=400)
    generate(mixed, 150_000, seed=6)
    roomy = flow_engine.DRAIN_ROWS
    for path in (flood, mixed):
        batches = list(CaptureReader([path]))
        runs = []
        for rows in (roomy, 37):
            monkeypatch.setattr(flow_engine, "DRAIN_ROWS", rows)
            done: list[Finished] = []
            engine = FlowEngine(CoreOptions(), done.append, initial_flows=1 << 16)
            for b in batches:
                engine.feed(b)
            engine.finish()
            runs.append((np.concatenate([f.F for f in done]), np.concatenate([f.K for f in done]), len(done)))
        (F1, K1, drains1), (F2, K2, drains2) = runs
        assert drains2 > 10 * drains1 and F1.shape[0] > 1000, path.name
        # LAST_RST is a row index within R, which follows the drains
        state = [c for c in range(L.NF) if c != L.LAST_RST]
        np.testing.assert_array_equal(F1[:, state], F2[:, state])
        np.testing.assert_array_equal(K1, K2)


def test_the_end_of_input_empties_the_table_and_marks_what_it_emits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`emit_all` frees the rows without deleting their hash slots one by one and empties
    the table after the last row, however many calls it takes; what `finish` drains is
    marked `at_end` (kept from the ended-connection memory), what came before is not."""
    path = tmp_path / "mixed.pcap"
    generate(path, 60_000, seed=8)
    monkeypatch.setattr(flow_engine, "DRAIN_ROWS", 37)
    done: list[Finished] = []
    engine = FlowEngine(CoreOptions(), done.append, initial_flows=1 << 14)
    for b in CaptureReader([path]):
        engine.feed(b)
    engine.drain()  # what ended in the last batch
    table, before = engine.table, len(done)
    open_rows = int(np.count_nonzero(table.A != L.ROW_FREE))
    assert open_rows > 100 and int((table.T >= 0).sum()) == open_rows
    engine.finish()
    assert len(done) - before > 10  # many emit_all calls, a drain between each
    assert (table.T == -1).all() and (table.A == L.ROW_FREE).all() and engine.live == 0
    assert [f.at_end for f in done] == [False] * before + [True] * (len(done) - before)
    assert sum(f.F.shape[0] for f in done[before:]) == open_rows
    serials = np.concatenate([f.F[:, L.SERIAL] for f in done])
    assert np.unique(serials).shape[0] == serials.shape[0] == engine.counters()["connections"]


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
@pytest.mark.parametrize("n", [0, 1, 2, 50])
def test_columns_narrowed_together_equal_each_narrowed_alone(dtype: type, n: int) -> None:
    rng = np.random.default_rng(n)
    extremes = [0, 1, 255, 256, 65_535, 2**32 - 1, 2**31, 2**63 - 1]
    if dtype is np.int64:
        extremes += [-1, -32_769, -(2**63)]
    M = rng.choice(extremes, size=(n, 9)).astype(dtype)
    M[:, 4] = 7  # one value throughout
    for which in (None, [0, 4, 8], [8, 2]):
        cols = range(M.shape[1]) if which is None else which
        got = narrow_columns(M, which)
        assert len(got) == len(cols)
        for c, col in zip(cols, got, strict=True):
            alone = narrowest(M[:, c])
            assert col.dtype == alone.dtype and col.strides == alone.strides, c
            np.testing.assert_array_equal(col, M[:, c])
            assert not np.shares_memory(col, M)
        if n > 1:
            constant = got[list(cols).index(4)] if 4 in cols else None
            assert constant is None or (constant.strides == (0,) and not constant.flags.writeable)


@pytest.mark.parametrize("span", [10, 100_000, TABLE_RANGE + 1, 2**62])
@pytest.mark.parametrize("size", [1, 64, SEARCHED_MAX + 1])
def test_lookups_by_table_or_search_equal_isin(span: int, size: int) -> None:
    """`columns.among` (a lookup table over the set's range while it is small, else a binary
    search while the set is small, else numpy's sort) gives what `np.isin` gives: serial
    numbers, narrow and constant columns looked up, 64-bit hash keys."""
    rng = np.random.default_rng(span % 1000 + size)
    for dtype in (np.int64, np.uint64):
        of = np.unique(rng.integers(0, span, size, dtype=np.uint64)).astype(dtype)
        for values in (rng.integers(0, span + 5, 3000, dtype=np.uint64).astype(dtype), np.concatenate([of, of[::3] + 1]),
                       narrowest(rng.integers(0, min(span, 60_000), 500)), narrowest(np.full(40, of[0])),
                       np.empty(0, dtype)):  # fmt: skip
            np.testing.assert_array_equal(among(values, of), np.isin(values, of))
        assert among(of, of).all() and not among(of, of[:0]).any()


@pytest.mark.parametrize("span", [1, 7, 5_000, 2**40, 2**63])
def test_distinct_equals_unique(span: int) -> None:
    """`columns.distinct` gives np.unique's distinct values and inverse, and an index of
    one occurrence of each value (not necessarily the first): narrow, wide, unsigned,
    constant and empty columns, the 40-bit (sender, TTL) pairs of attribution."""
    rng = np.random.default_rng(span % 977)
    for values in (rng.integers(0, span, 70_000, dtype=np.uint64), rng.integers(0, span, 300, dtype=np.uint64).astype(np.int64),
                   narrowest(rng.integers(0, min(span, 200), 1000)), np.full(50, span - 1, np.uint64),
                   np.empty(0, np.int64)):  # fmt: skip
        got, one, inverse = distinct(values)
        want, want_inverse = np.unique(values, return_inverse=True)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(inverse, want_inverse.reshape(-1))
        np.testing.assert_array_equal(values[one], got)
        np.testing.assert_array_equal(got[inverse], values)


@pytest.mark.parametrize("mix", ["ipv4", "mixed", "ipv6", "empty"])
def test_distinct_pairs_are_sorted_128_bit_values(mix: str) -> None:
    """`columns.distinct_pairs`: one row of each distinct (hi, lo) pair, in the ascending
    order of the 128-bit values, and each row's position among them (what np.unique of
    the Python integers gives)."""
    rng = np.random.default_rng(len(mix))
    n = 0 if mix == "empty" else 5_000
    lo = rng.integers(0, 300, n, dtype=np.uint64) | np.uint64(0xFFFF_0000_0000)
    hi = np.zeros(n, np.uint64)
    if mix != "ipv4":
        v6 = rng.random(n) < (0.2 if mix == "mixed" else 1.0)
        hi[v6] = rng.integers(0, 4, int(v6.sum()), dtype=np.uint64) << np.uint64(62)
        lo[v6] = rng.integers(0, 50, int(v6.sum()), dtype=np.uint64)
    one, inverse = distinct_pairs(hi, lo)
    values = [(int(h) << 64) | int(v) for h, v in zip(hi.tolist(), lo.tolist(), strict=True)]
    want = sorted(set(values))
    assert [values[i] for i in one.tolist()] == want
    assert [want[i] for i in inverse.tolist()] == values


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


def test_row_layout_hot_columns_first_and_rows_on_cache_lines() -> None:
    """Every column of F has one owner; what a plain segment touches lies in the first
    HOT_COLS columns (the lines `prefetch_row` fetches), and rows start on 64-byte lines,
    also after the table grows."""
    names = ("ACTIVE", "HASH", "KEY_PORTS", "KEY_EXTRA", "ORIG_IS_A", "HLEN", "HSEEN", "ATTEMPT_DL",
             "TS_LAST", "CLOSE_DL", "LONG_TIMEOUT", "PKT_LAST", "SERIAL", "LAST_RST", "IPV",
             "TS_FIRST", "START_SEEN", "RST_COUNT", "SOURCE", "VLAN", "INNER_VLAN", "END_REASON",
             "CONN_STATE", "ORIG_SIZE", "RESP_SIZE")  # fmt: skip
    flow = [getattr(L, name) for name in names]
    sides = [L.D + d * L.DSTRIDE + x for d in (0, 1) for x in L.DIR_FIELDS]
    used = flow + sides
    assert len(flow) == 25 and len(set(used)) == len(used) and max(used) < L.NF
    hot_sides = [L.D + d * L.DSTRIDE + x for d in (0, 1) for x in range(L.DSTRIDE)]
    assert max(hot_sides) < L.HOT_COLS <= 64 and L.LAST_RST < L.D and L.NF % 8 == 0
    engine = FlowEngine(CoreOptions(), lambda _: None, initial_flows=16)
    for capacity in (16, 32):
        F = engine.table.F
        assert F.ctypes.data % 64 == 0 and F.strides == (L.NF * 8, 8) and F.shape[0] == capacity
        engine.table.grow(2 * capacity, engine.P)


def test_lent_rows_are_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`analyze -j 1` lends the kernel's output rows to the records (`lend_rows`): whatever
    keeps a view of them instead of a copy would see the next drain's rows.  Every lent
    block is overwritten with garbage as soon as the records are made from it; the output
    must equal a run whose blocks are all copies."""
    from rstlens import pipeline
    from rstlens.options import RunOptions

    scan, flood, mixed = tmp_path / "scan.pcap", tmp_path / "flood.pcap", tmp_path / "mixed.pcap"
    synscan.generate(scan, 20_000, seed=5)  # drains of RST connections (held for verdicts)
    synscan.generate_flood(flood, 30_000, seed=5, gap_us=300)  # 9 s: S0 connections expire
    generate(str(mixed), 30_000, seed=5)  # ordinary traffic: mixed drains, small and large
    lent: list[bool] = []

    class PoisoningEngine(FlowEngine):
        def __init__(self, options: CoreOptions, on_finished, **kw) -> None:  # type: ignore[no-untyped-def]
            def poisoned(fin: Finished) -> None:
                on_finished(fin)
                lent.append(np.shares_memory(fin.F, self.FO))
                if lent[-1]:
                    fin.F[...] = -0x5A5A5A5A5A5A5A5
                    fin.K[...] = 0xA5A5A5A5A5A5A5A5
                    fin.H[...] = ord("!")

            super().__init__(options, poisoned, **kw)

    def tables(path: Path, out: Path) -> list[object]:
        d = pipeline.run([str(path)], out, RunOptions(jobs=1)).to_dict()
        counts = {k: d[k] for k in ("connections", "rst_packets", "conn_states", "rst_causes", "core", "surges")}
        return [*(pq.read_table(out / f).replace_schema_metadata(None) for f in ("flows.parquet", "resets.parquet")),
                counts]  # fmt: skip

    seen: list[bool] = []
    small = Path(__file__).parents[2] / "sample_pcaps" / "abort_linger0_client.pcap"
    for path in (scan, flood, mixed, small):
        monkeypatch.setattr(pipeline, "FlowEngine", PoisoningEngine)
        poisoned = tables(path, tmp_path / f"{path.stem}-lent")
        seen += lent
        lent.clear()
        monkeypatch.setattr(flow_engine, "LENT_MIN_ROWS", 1 << 62)  # every block a copy
        copied = tables(path, tmp_path / f"{path.stem}-copied")
        assert not any(lent)
        lent.clear()
        monkeypatch.undo()
        assert poisoned[0].num_rows > (500 if path != small else 0)
        for a, b in zip(poisoned[:2], copied[:2], strict=True):
            assert a.equals(b), path.name  # type: ignore[attr-defined]
        assert poisoned[2] == copied[2], path.name
    assert any(seen) and not all(seen)  # blocks lent, and small ones (the sample's) copied
