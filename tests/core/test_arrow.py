"""Arrow arrays built from buffers equal what `pyarrow.array` builds from the same values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rstlens.output import arrow

TS = pa.timestamp("us", tz="UTC")


@settings(deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=12))))
def test_strings(values: list[str | None]) -> None:
    got = arrow.strings(values)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.string()))


@settings(deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=12))))
def test_sparse_strings(values: list[str | None]) -> None:
    at = np.array([i for i, v in enumerate(values) if v is not None], np.int64)
    got = arrow.sparse_strings(len(values), at, [v for v in values if v is not None])
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.string()))


@settings(deadline=None)
@given(st.lists(st.lists(st.text(max_size=5), max_size=4)))
def test_string_lists(values: list[list[str]]) -> None:
    got = arrow.string_lists(values)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.list_(pa.string())))


@pytest.mark.parametrize(
    ("dtype", "type_"),
    [(np.int64, pa.int64()), (np.uint16, pa.uint16()), (np.int32, pa.int32()),
     (np.uint8, pa.uint8()), (np.float32, pa.float32()), (np.int64, TS)],
)  # fmt: skip
@settings(deadline=None)
@given(data=st.lists(st.tuples(st.integers(0, 200), st.booleans()), max_size=40))
def test_fixed_width_with_nulls(dtype: type, type_: pa.DataType, data: list[tuple[int, bool]]) -> None:
    values = np.array([v for v, _ in data], dtype)
    mask = np.array([m for _, m in data], bool)
    got = arrow.column(values.astype(np.int64) if type_ == TS else values, type_, mask)
    got.validate(full=True)
    assert got.equals(pa.array(values.astype(np.int64) if type_ == TS else values, type_, mask=mask))


@settings(deadline=None)
@given(st.lists(st.one_of(st.none(), st.booleans())))
def test_booleans(values: list[bool | None]) -> None:
    assert arrow.optional_bools(values).equals(pa.array(values, pa.bool_()))
    plain = [bool(v) for v in values]
    assert arrow.boolean_mask(np.array(plain, bool)).equals(pa.array(plain, pa.bool_()))


def test_enum_and_back_to_numpy() -> None:
    codes = np.array([2, 0, 1, 2])
    got = arrow.enum(codes, ("a", "b", "c"), pa.int8(), mask=codes == 1)
    assert got.to_pylist() == ["c", "a", None, "c"]
    assert got.type == pa.dictionary(pa.int8(), pa.string())
    chunked = pa.chunked_array([pa.array([1, 2], pa.uint16()), pa.array([3], pa.uint16())])
    assert arrow.numbers(chunked.slice(1), np.uint16).tolist() == [2, 3]
    schema = pa.schema([("a", pa.string())])
    assert arrow.empty_table(schema).schema == schema


def test_fixed_ascii_and_enum_codes() -> None:
    chars = np.frombuffer(b"abcxyz", np.uint8).reshape(2, 3)
    got = arrow.fixed_ascii(chars)
    got.validate(full=True)
    assert got.to_pylist() == ["abc", "xyz"]
    column = pa.chunked_array([
        pa.DictionaryArray.from_arrays(pa.array([1, 0, 1], pa.int8()), pa.array(["b", "a"])),
        pa.DictionaryArray.from_arrays(pa.array([0], pa.int8()), pa.array(["c"])),
    ])  # fmt: skip
    # values a, b, a | c; sliced: b, a, c
    assert arrow.enum_codes(column.slice(1), ("a", "b", "c")).tolist() == [1, 0, 2]


@settings(deadline=None)
@given(st.lists(st.text(alphabet="SAFRDdhtq^", max_size=8), max_size=30))
def test_nul_padded_text(values: list[str]) -> None:
    chars = np.array([v.encode() for v in values], "S8").view(np.uint8).reshape(-1, 8)
    got = arrow.nul_padded_text(chars)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.string()))


def _chunked_strings(parts: list[list[str]]) -> pa.ChunkedArray:
    """Chunks, some of them slices (a non-zero offset into their buffers)."""
    chunks = []
    for k, part in enumerate(parts):
        arr = pa.array(["pad", *part, "pad"], pa.string()) if k % 2 else pa.array(part, pa.string())
        chunks.append(arr.slice(1, len(part)) if k % 2 else arr)
    return pa.chunked_array(chunks, pa.string())


@settings(deadline=None)
@given(st.lists(st.lists(st.text(max_size=6), max_size=5), min_size=1, max_size=4), st.data())
def test_take_strings_matches_arrow_take(parts: list[list[str]], data: st.DataObject) -> None:
    import pyarrow.compute as pc

    values = _chunked_strings(parts)
    n = len(values)
    index = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=20) if n else st.just([])), np.int64)
    got = arrow.take_strings(values, index)
    got.validate(full=True)
    assert got.equals(pc.take(values, pa.array(index, pa.int64())).combine_chunks())


@settings(deadline=None)
@given(st.lists(st.lists(st.text(max_size=5), max_size=4), min_size=1, max_size=5), st.data())
def test_take_lists_matches_building_the_rows(distinct: list[list[str]], data: st.DataObject) -> None:
    index = data.draw(st.lists(st.integers(0, len(distinct) - 1), max_size=20))
    got = arrow.take_lists(distinct, np.array(index, np.int64))
    got.validate(full=True)
    assert got.equals(pa.array([distinct[i] for i in index], pa.list_(pa.string())))


@settings(deadline=None)
@given(st.lists(st.lists(st.booleans(), max_size=20), max_size=4))
def test_bools_reads_the_bitmaps(parts: list[list[bool]]) -> None:
    chunks = [pa.array([True, *p], pa.bool_()).slice(1) for p in parts]  # offset 1: bits unaligned
    got = arrow.bools(pa.chunked_array(chunks, pa.bool_()))
    assert got.dtype == bool
    assert got.tolist() == [v for p in parts for v in p]


def test_takes_refuse_nulls() -> None:
    with pytest.raises(ValueError, match="nulls"):
        arrow.take_strings(pa.array(["a", None]), np.array([0]))


def test_counts_keep_counters_order_of_first_appearance() -> None:
    """`string_counts` and `first_seen_counts` give what Counter over the objects gives,
    order of first appearance included (the summary's top RST hosts break ties by it)."""
    from collections import Counter

    import numpy as np
    import pyarrow as pa

    from rstlens.output.arrow import first_seen_counts, string_counts

    rng = np.random.default_rng(7)
    for n in (10, 20_000):
        words = [f"10.0.{k}.{k % 7}" for k in rng.integers(0, 300, n).tolist()]
        column = pa.chunked_array([pa.array(words[: n // 3]), pa.array(words[n // 3 :])])
        assert list(string_counts(column).items()) == list(Counter(words).items())
        values = rng.integers(0, 50, n)
        distinct, counts = first_seen_counts(values)
        assert list(zip(distinct.tolist(), counts.tolist(), strict=True)) == list(Counter(values.tolist()).items())


def test_enum_codes_or_null() -> None:
    import pyarrow as pa

    from rstlens.output.arrow import enum_codes_or_null

    vocabulary = ("a", "b", "c")
    arr = pa.array(["c", None, "a", "c", None]).dictionary_encode()
    column = pa.chunked_array([arr.slice(1), arr.slice(0, 1)])
    assert enum_codes_or_null(column, vocabulary).tolist() == [-1, 0, 2, -1, 2]
