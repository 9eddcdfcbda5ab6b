"""numpy columns -> Arrow arrays by their buffers, without `pyarrow.array`.

`pyarrow.array()` imports pandas on its first call whatever it is given (to check for
pandas types), which costs about 0.3 s of every run's start-up.  The record builders only
need a few layouts, and Arrow's are simple: a validity bitmap, then fixed-width values,
or int32 offsets into UTF-8 bytes, or offsets into a child array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pyarrow as pa

# Arrow's compute functions through its extension module: pyarrow.compute's Python layer
# costs ~30 ms to import (its docstring scraping), the extension module ~5 ms.  Importing it
# also registers the kernels that Parquet's C++ writer looks up (`unique`, for dictionary
# columns): a row group written in a thread before that (`analyze -j 2`, the writer's own
# thread) had failed with "No function registered with name: unique".
try:
    import pyarrow._compute as _compute
except ImportError:  # pragma: no cover - a pyarrow that moved it
    import pyarrow.compute as _compute


def compute(name: str, *args: Any) -> Any:
    """Arrow compute function `name` (what `pyarrow.compute.<name>` calls) over `args`."""
    return _compute.call_function(name, list(args))


def _validity(mask: np.ndarray | None) -> pa.Buffer | None:
    """Arrow's validity bitmap from a numpy mask that is True where the value is null."""
    if mask is None or not mask.any():
        return None
    return pa.py_buffer(np.packbits(~mask, bitorder="little"))


def _null_count(mask: np.ndarray | None) -> int:
    return 0 if mask is None else int(mask.sum())


def _numpy_dtype(type_: pa.DataType) -> np.dtype:
    if pa.types.is_timestamp(type_):
        return np.dtype(np.int64)
    dtype: np.dtype = np.dtype(type_.to_pandas_dtype())
    return dtype


def column(values: np.ndarray, type_: pa.DataType, mask: np.ndarray | None = None) -> pa.Array:
    """A fixed-width (integer, float, timestamp) or boolean column; `mask` marks nulls."""
    n = values.shape[0]
    if pa.types.is_boolean(type_):
        data = pa.py_buffer(np.packbits(values.astype(bool), bitorder="little"))
    else:
        data = pa.py_buffer(np.ascontiguousarray(values, _numpy_dtype(type_)))
    return pa.Array.from_buffers(type_, n, [_validity(mask), data], _null_count(mask))


def optional_bools(values: Sequence[bool | None]) -> pa.Array:
    """A boolean column from True/False/None."""
    mask = np.fromiter((v is None for v in values), bool, count=len(values))
    return column(np.fromiter((bool(v) for v in values), bool, count=len(values)), pa.bool_(), mask)


def strings(values: Sequence[str | None] | np.ndarray) -> pa.Array:
    """A UTF-8 string column; None is null."""
    given: list[str | None] = values.tolist() if isinstance(values, np.ndarray) else list(values)
    n = len(given)
    offsets = np.zeros(n + 1, np.int32)
    mask = None
    if None in given:
        mask = np.fromiter((v is None for v in given), bool, count=n)
    items = cast("list[str]", given) if mask is None else ["" if v is None else v for v in given]
    joined = "".join(items)
    if joined.isascii():  # the usual case (addresses, uids, flags): characters are bytes
        lengths = np.fromiter(map(len, items), np.int64, count=n)
        data = joined.encode("ascii")
    else:
        encoded = [v.encode() for v in items]
        lengths = np.fromiter(map(len, encoded), np.int64, count=n)
        data = b"".join(encoded)
    np.cumsum(lengths, out=offsets[1:])
    buffers = [_validity(mask), pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.string(), n, buffers, _null_count(mask))


def sparse_strings(n: int, at: np.ndarray, values: Sequence[str]) -> pa.Array:
    """An `n`-row string column holding `values[j]` at row `at[j]` (rows ascending) and null
    elsewhere: for a column that is mostly null (an RST's payload text), without a Python
    object per row."""
    mask = np.ones(n, bool)
    mask[at] = False
    encoded = [v.encode() for v in values]
    lengths = np.zeros(n, np.int64)
    lengths[at] = np.fromiter(map(len, encoded), np.int64, count=len(encoded))
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    buffers = [_validity(mask), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), n, buffers, _null_count(mask))


def fixed_ascii(chars: np.ndarray) -> pa.Array:
    """A string column from an (n, width) matrix of ASCII bytes: every value `width` long."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = pa.py_buffer(np.ascontiguousarray(chars, np.uint8))
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), data], 0)


def nul_padded_text(chars: np.ndarray) -> pa.Array:
    """A string column from an (n, width) matrix of ASCII bytes, NUL bytes dropped: each
    row is one value, padded with zeros to the width (one pass of a kernel)."""
    from rstlens import kernels

    n = chars.shape[0]
    offsets = np.empty(n + 1, np.int32)
    data = np.empty(chars.size, np.uint8)
    used = kernels.nul_trimmed(chars, offsets, data)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data[:used])], 0)


def string_lists(values: Sequence[Sequence[str]]) -> pa.Array:
    """A list<string> column (no nulls)."""
    n = len(values)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.fromiter(map(len, values), np.int64, count=n), out=offsets[1:])
    child = strings([s for row in values for s in row])
    return pa.Array.from_buffers(
        pa.list_(pa.string()), n, [None, pa.py_buffer(offsets)], 0, children=[child]
    )


def enum(codes: np.ndarray, vocabulary: Sequence[str], index: pa.DataType,
         mask: np.ndarray | None = None) -> pa.DictionaryArray:  # fmt: skip
    """A dictionary-encoded column: integer `codes` into `vocabulary`; `mask` marks nulls."""
    return pa.DictionaryArray.from_arrays(column(codes, index, mask), _dictionary(tuple(vocabulary)))


_DICTIONARIES: dict[tuple[str, ...], pa.Array] = {}
_DICTIONARIES_MAX = 256  # vocabularies kept (enums, a run's sources, tunnel stacks)


def _dictionary(vocabulary: tuple[str, ...]) -> pa.Array:
    """The string array of a vocabulary, built once (a flows table has ~8 enum columns per
    few thousand rows; Arrow arrays are immutable, so one can be shared)."""
    found = _DICTIONARIES.get(vocabulary)
    if found is None:
        if len(_DICTIONARIES) >= _DICTIONARIES_MAX:
            _DICTIONARIES.clear()
        found = _DICTIONARIES[vocabulary] = strings(list(vocabulary))
    return found


def boolean_mask(values: np.ndarray) -> pa.Array:
    """A boolean array for `Table.filter`."""
    return column(values, pa.bool_())


def to_arrow(values: object, type_: pa.DataType) -> pa.Array:
    """Any of the above by the target type; Arrow arrays pass through."""
    if isinstance(values, pa.Array):
        return values
    if pa.types.is_string(type_):
        return strings(values)  # type: ignore[arg-type]
    if pa.types.is_list(type_):
        return string_lists(values)  # type: ignore[arg-type]
    if pa.types.is_boolean(type_) and not isinstance(values, np.ndarray):
        return optional_bools(values)  # type: ignore[arg-type]
    return column(np.asarray(values), type_)


def _chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    if any(c.null_count for c in chunks):
        raise ValueError("column has nulls")
    return chunks


def _string_buffers(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets, one per value and one past the end; UTF-8 bytes) of a string column
    without nulls, its chunks joined."""
    chunks = _chunks(values)
    if len(chunks) == 1:  # the bytes as they are (a view), the offsets widened
        _, offset_buf, data_buf = chunks[0].buffers()
        o = np.frombuffer(offset_buf, np.int32)[chunks[0].offset : chunks[0].offset + len(chunks[0]) + 1]
        data_one = np.frombuffer(data_buf, np.uint8)[o[0] : o[-1]] if data_buf is not None else np.empty(0, np.uint8)
        return o.astype(np.int64) - int(o[0]), data_one
    offsets, data, base = [np.zeros(1, np.int64)], [], 0
    for chunk in chunks:
        _, offset_buf, data_buf = chunk.buffers()
        o = np.frombuffer(offset_buf, np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
        o = o.astype(np.int64)
        offsets.append(o[1:] - o[0] + base)
        base += int(o[-1] - o[0])
        if data_buf is not None:
            data.append(np.frombuffer(data_buf, np.uint8)[o[0] : o[-1]])
    return np.concatenate(offsets), np.concatenate(data) if data else np.empty(0, np.uint8)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranges [starts[i], starts[i] + lengths[i]) laid end to end: their offsets in the
    result (one per range and one past the end) and, per element, where it comes from."""
    offsets = np.zeros(starts.shape[0] + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])


def take_strings(values: pa.Array | pa.ChunkedArray, index: np.ndarray) -> pa.Array:
    """`values[index]` of a string column without nulls (`Array.take` would import
    pyarrow.compute; a detour through Python strings cost ~1 µs per value; numpy's
    per-byte index arrays ~0.1 µs per byte): the bytes copied by a kernel."""
    return take_joined_strings(*_string_buffers(values), index)


def joined_strings(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A string column without nulls as (int64 offsets, bytes), its chunks joined once, for
    many `take_joined_strings` calls."""
    return _string_buffers(values)


def take_joined_strings(offsets: np.ndarray, data: np.ndarray, index: np.ndarray) -> pa.Array:
    """`take_strings` of a column given as `joined_strings`."""
    from rstlens import kernels

    index = np.ascontiguousarray(index, np.int64)
    out_offsets = np.empty(index.shape[0] + 1, np.int32)
    out_data = np.empty(int((offsets[index + 1] - offsets[index]).sum()), np.uint8)
    kernels.gather_strings(offsets, data, index, out_offsets, out_data)
    buffers = [None, pa.py_buffer(out_offsets), pa.py_buffer(out_data)]
    return pa.Array.from_buffers(pa.string(), index.shape[0], buffers, 0)


def take_lists(values: Sequence[Sequence[str]], index: np.ndarray) -> pa.Array:
    """A list<string> column of `values[i]` for each i of `index`: many rows drawn from few
    distinct lists (verdict evidence), joined as bytes rather than as Python strings."""
    from rstlens import kernels

    encoded = [[s.encode() for s in row] for row in values]
    row_bytes = [b"".join(row) for row in encoded]
    row_lengths = [np.array([len(s) for s in row], np.int64) for row in encoded]
    counts = np.array([len(row) for row in encoded], np.int64)
    index = np.ascontiguousarray(index, np.int64)
    first = np.zeros(len(values) + 1, np.int64)  # each distinct list's first string
    np.cumsum(counts, out=first[1:])
    list_offsets, strings = _ranges(first[index], counts[index])
    flat_lengths = np.concatenate(row_lengths) if row_lengths else np.empty(0, np.int64)
    string_offsets = np.zeros(strings.shape[0] + 1, np.int64)
    np.cumsum(flat_lengths[strings], out=string_offsets[1:])
    row_offsets = np.zeros(len(values) + 1, np.int64)  # each distinct list's bytes, joined
    np.cumsum(np.fromiter(map(len, row_bytes), np.int64, count=len(row_bytes)), out=row_offsets[1:])
    data = np.empty(int((row_offsets[index + 1] - row_offsets[index]).sum()), np.uint8)
    kernels.gather_strings(row_offsets, np.frombuffer(b"".join(row_bytes), np.uint8), index,
                           np.empty(index.shape[0] + 1, np.int32), data)  # fmt: skip
    child = pa.Array.from_buffers(
        pa.string(), strings.shape[0],
        [None, pa.py_buffer(string_offsets.astype(np.int32)), pa.py_buffer(data)], 0,
    )  # fmt: skip
    return pa.Array.from_buffers(
        pa.list_(pa.string()), index.shape[0], [None, pa.py_buffer(list_offsets.astype(np.int32))],
        0, children=[child],
    )  # fmt: skip


def bools(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean column without nulls as numpy (from its bitmaps, not Python objects)."""
    parts = []
    for chunk in _chunks(values):
        bits = np.unpackbits(np.frombuffer(chunk.buffers()[1], np.uint8), bitorder="little")
        parts.append(bits[chunk.offset : chunk.offset + len(chunk)].astype(bool))
    return np.concatenate(parts) if parts else np.empty(0, bool)


def numbers(values: pa.ChunkedArray, dtype: type) -> np.ndarray:
    """A fixed-width Arrow column without nulls as numpy, read from its buffers (its
    `to_numpy` would import pandas)."""
    parts: list[np.ndarray] = [np.frombuffer(c.buffers()[1], dtype)[c.offset : c.offset + len(c)] for c in values.chunks]
    return np.concatenate(parts) if parts else np.empty(0, dtype)


def enum_codes(values: pa.ChunkedArray, vocabulary: Sequence[str]) -> np.ndarray:
    """Codes into `vocabulary` of a dictionary column without nulls, as numpy."""
    parts = []
    for chunk in values.chunks:
        index = np.frombuffer(chunk.indices.buffers()[1], chunk.indices.type.to_pandas_dtype())
        index = index[chunk.offset : chunk.offset + len(chunk)]
        remap = np.array([vocabulary.index(v) for v in chunk.dictionary.to_pylist()], np.int64)
        parts.append(remap[index] if remap.size else index.astype(np.int64))
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def enum_codes_or_null(values: pa.ChunkedArray, vocabulary: Sequence[str]) -> np.ndarray:
    """Codes into `vocabulary` of a dictionary column, -1 where it is null."""
    parts = []
    for chunk in values.chunks:
        index = np.frombuffer(chunk.indices.buffers()[1], chunk.indices.type.to_pandas_dtype())
        index = index[chunk.offset : chunk.offset + len(chunk)]
        remap = np.array([vocabulary.index(v) for v in chunk.dictionary.to_pylist()] + [-1], np.int64)
        codes = remap[np.where(index < len(remap) - 1, index, len(remap) - 1)]
        validity = chunk.buffers()[0]
        if validity is not None and chunk.null_count:
            bits = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")
            codes = np.where(bits[chunk.offset : chunk.offset + len(chunk)] == 1, codes, -1)
        parts.append(codes)
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def first_seen_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts, in the order of their first appearance (the order
    `collections.Counter` keeps)."""
    distinct, first, counts = np.unique(values, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    return distinct[order], counts[order]


def string_counts(values: pa.ChunkedArray) -> dict[str, int]:
    """How often each string occurs, in the order of first appearance (what
    ``Counter(values.to_pylist())`` gives), counted by Arrow's ``value_counts``."""
    counted = compute("value_counts", values)
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True))


def empty_table(schema: pa.Schema) -> pa.Table:
    """A table with no rows (`Schema.empty_table` would import pandas)."""
    return pa.Table.from_batches([], schema=schema)
