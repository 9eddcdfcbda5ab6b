"""Arrow arrays built from buffers equal what `pyarrow.array` builds from the same values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rstlens import _arrow

TS = pa.timestamp("us", tz="UTC")


@settings(deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=12))))
def test_strings(values: list[str | None]) -> None:
    got = _arrow.strings(values)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.string()))


@settings(deadline=None)
@given(st.lists(st.lists(st.text(max_size=5), max_size=4)))
def test_string_lists(values: list[list[str]]) -> None:
    got = _arrow.string_lists(values)
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
    got = _arrow.column(values.astype(np.int64) if type_ == TS else values, type_, mask)
    got.validate(full=True)
    assert got.equals(pa.array(values.astype(np.int64) if type_ == TS else values, type_, mask=mask))


@settings(deadline=None)
@given(st.lists(st.one_of(st.none(), st.booleans())))
def test_booleans(values: list[bool | None]) -> None:
    assert _arrow.optional_bools(values).equals(pa.array(values, pa.bool_()))
    plain = [bool(v) for v in values]
    assert _arrow.boolean_mask(np.array(plain, bool)).equals(pa.array(plain, pa.bool_()))


def test_enum_and_back_to_numpy() -> None:
    codes = np.array([2, 0, 1, 2])
    got = _arrow.enum(codes, ("a", "b", "c"), pa.int8(), mask=codes == 1)
    assert got.to_pylist() == ["c", "a", None, "c"]
    assert got.type == pa.dictionary(pa.int8(), pa.string())
    chunked = pa.chunked_array([pa.array([1, 2], pa.uint16()), pa.array([3], pa.uint16())])
    assert _arrow.numbers(chunked.slice(1), np.uint16).tolist() == [2, 3]
    assert _arrow.objects(pa.chunked_array([["x", None]])).tolist() == ["x", None]
    schema = pa.schema([("a", pa.string())])
    assert _arrow.empty_table(schema).schema == schema


def test_fixed_ascii_and_enum_codes() -> None:
    chars = np.frombuffer(b"abcxyz", np.uint8).reshape(2, 3)
    got = _arrow.fixed_ascii(chars)
    got.validate(full=True)
    assert got.to_pylist() == ["abc", "xyz"]
    column = pa.chunked_array([
        pa.DictionaryArray.from_arrays(pa.array([1, 0, 1], pa.int8()), pa.array(["b", "a"])),
        pa.DictionaryArray.from_arrays(pa.array([0], pa.int8()), pa.array(["c"])),
    ])  # fmt: skip
    # values a, b, a | c; sliced: b, a, c
    assert _arrow.enum_codes(column.slice(1), ("a", "b", "c")).tolist() == [1, 0, 2]


@settings(deadline=None)
@given(st.lists(st.text(alphabet="SAFRDdhtq^", max_size=8), max_size=30))
def test_nul_padded_text(values: list[str]) -> None:
    chars = np.array([v.encode() for v in values], "S8").view(np.uint8).reshape(-1, 8)
    got = _arrow.nul_padded_text(chars)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.string()))
