"""numpy columns -> Arrow arrays by their buffers, without `pyarrow.array`.

`pyarrow.array()` imports pandas on its first call whatever it is given (to check for
pandas types), which costs about 0.3 s of every run's start-up.  The record builders only
need a few layouts, and Arrow's are simple: a validity bitmap, then fixed-width values,
or int32 offsets into UTF-8 bytes, or offsets into a child array.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


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
    return np.dtype(type_.to_pandas_dtype())


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
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    n = len(items)
    offsets = np.zeros(n + 1, np.int32)
    mask = None
    if None in items:
        mask = np.fromiter((v is None for v in items), bool, count=n)
        items = ["" if v is None else v for v in items]
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


def fixed_ascii(chars: np.ndarray) -> pa.Array:
    """A string column from an (n, width) matrix of ASCII bytes: every value `width` long."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = pa.py_buffer(np.ascontiguousarray(chars, np.uint8))
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), data], 0)


def nul_padded_text(chars: np.ndarray) -> pa.Array:
    """A string column from an (n, width) matrix of ASCII bytes, NUL bytes dropped: each
    row is one value, padded with zeros to the width."""
    used = chars != 0
    offsets = np.zeros(chars.shape[0] + 1, np.int32)
    np.cumsum(used.sum(axis=1), out=offsets[1:])
    data = pa.py_buffer(np.ascontiguousarray(chars[used]))
    return pa.Array.from_buffers(pa.string(), chars.shape[0], [None, pa.py_buffer(offsets), data], 0)


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
    return pa.DictionaryArray.from_arrays(column(codes, index, mask), strings(list(vocabulary)))


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


def objects(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow column as a numpy object array (`to_numpy` would import pandas for strings)."""
    items = values.to_pylist()
    out = np.empty(len(items), object)
    out[:] = items
    return out


def numbers(values: pa.ChunkedArray, dtype: type) -> np.ndarray:
    """A fixed-width Arrow column without nulls as numpy, read from its buffers (its
    `to_numpy` would import pandas)."""
    parts = [np.frombuffer(c.buffers()[1], dtype)[c.offset : c.offset + len(c)] for c in values.chunks]
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


def empty_table(schema: pa.Schema) -> pa.Table:
    """A table with no rows (`Schema.empty_table` would import pandas)."""
    return pa.Table.from_batches([], schema=schema)
