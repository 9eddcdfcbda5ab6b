"""The RST log column by column, each column in the narrowest integer type holding its values.

The kernel's log `R` is an int64 matrix (`layout.R_*`, 464 bytes a row).  Attribution
reads it whole at the end of the input, for a SYN scan 500,000 rows: 232 MB as int64, ~45 MB
as narrow columns.  `RstColumns` is that narrow form, read the way the matrix was read:
``cols[:, L.R_TS]`` (a column, widened to int64 as it is read, so arithmetic on it is
int64 arithmetic as before), ``cols[rows]`` (the rows selected, still narrow),
``cols[rows, L.R_TEXT : L.R_TEXT + 8]`` (an int64 block), ``cols[i, c]`` (one value).
Plain numpy: no kernel reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rstlens.flows import layout as L

# (min, max, type) of the narrow types, narrowest first, as Python ints (iinfo objects' bounds
# cost a property call each: a scan picks types for ~13,000 columns)
_NARROW = [(int(np.iinfo(t).min), int(np.iinfo(t).max), np.dtype(t))
           for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)]  # fmt: skip


def narrowest(values: np.ndarray) -> np.ndarray:
    """`values` (a copy) in the narrowest integer type that holds them; a column of one
    value repeated (most of a scan's RST columns) is that value broadcast, read-only, and
    costs nothing."""
    lo, hi = (int(values.min()), int(values.max())) if len(values) else (0, 0)
    return _narrowed(values, lo, hi)


def narrow_columns(M: np.ndarray, which: Sequence[int] | None = None) -> list[np.ndarray]:
    """Columns `which` (default all) of the row-major matrix `M`, each as `narrowest` makes
    it.  A column read alone touches every row's cache lines, and 3 such passes (min, max,
    copy) per column had cost a 500,000-RST scan ~0.25 s: the bounds of every column come
    from one pass over the rows, and the columns that narrow to one type are converted
    together, a pass over the rows per type (each column then copied out of that small
    block, which the cache holds), not a pass per column."""
    cols = list(range(M.shape[1]) if which is None else which)
    n = M.shape[0]
    if n < 2:
        return [narrowest(M[:, c]) for c in cols]
    sub = M if which is None else M[:, cols]  # the columns wanted, contiguous rows
    out: list[np.ndarray] = []
    by_type: dict[np.dtype, list[int]] = {}
    for j, (lo, hi) in enumerate(zip(sub.min(axis=0).tolist(), sub.max(axis=0).tolist(), strict=True)):
        dtype = _narrow_type(lo, hi, sub.dtype)
        if lo == hi:
            out.append(repeated(lo, dtype, n))
        else:
            out.append(sub[:0, 0])  # a placeholder: set from its type's block below
            by_type.setdefault(dtype, []).append(j)
    for dtype, js in by_type.items():
        block = (sub[:, js] if len(js) < sub.shape[1] else sub).astype(dtype, copy=False)
        for k, j in enumerate(js):
            out[j] = np.array(block[:, k])  # its own memory: the column outlives the block
    return out


def _narrow_type(lo: int, hi: int, wide: np.dtype) -> np.dtype:
    for t_min, t_max, dtype in _NARROW:
        if t_min <= lo and hi <= t_max:
            return dtype
    return wide


def _narrowed(values: np.ndarray, lo: int, hi: int) -> np.ndarray:
    dtype = _narrow_type(lo, hi, values.dtype)
    if lo == hi and len(values) > 1:
        return repeated(values[0], dtype, len(values))
    # a copy: a view of a row block's column would keep the whole block
    return np.array(values, dtype)


def repeated(value: Any, dtype: np.dtype | type, n: int) -> np.ndarray:
    """`value` as an `n`-row read-only column of stride 0 (`np.broadcast_to`'s result, at
    under half its cost).  Read-only, so equal ones are one array: a scan makes ~12,000,
    nearly all the same few values in blocks of one size."""
    key = (int(value), np.dtype(dtype).str, n)
    out = _REPEATED.get(key)
    if out is None:
        one = np.array([value], dtype)
        out = np.ndarray((n,), one.dtype, one, 0, (0,))
        out.flags.writeable = False
        if len(_REPEATED) >= _REPEATED_MAX:
            _REPEATED.clear()
        _REPEATED[key] = out
    return out


_REPEATED: dict[tuple[int, str, int], np.ndarray] = {}
_REPEATED_MAX = 4096


# `among` looks values up in a table spanning the range of the integers they are looked up
# in (numpy's kind="table": a byte per value of the range) while that range is below this,
# and by binary search of the set while it holds at most `SEARCHED_MAX` values.  numpy's own
# choice sorts both arrays once the set has more than ~50 values or a range over 6 times
# their length: ~0.5 ms per 4,096 serial numbers of a scan's drain, ~1.5 ms per 65,536
# surge keys among the 64 tracked.
TABLE_RANGE = 1 << 22
SEARCHED_MAX = 4096


def among(values: np.ndarray, of: np.ndarray) -> np.ndarray:
    """`np.isin(values, of)` for integer arrays, the cheaper way when `of` spans a small
    range or holds few values."""
    if not values.shape[0] or not of.shape[0]:
        return np.zeros(values.shape[0], bool)
    if int(of.max()) - int(of.min()) < TABLE_RANGE:
        in_table: np.ndarray = np.isin(values, of, kind="table")
        return in_table
    if of.shape[0] <= SEARCHED_MAX:
        ordered = np.sort(of)
        at = np.minimum(np.searchsorted(ordered, values), ordered.shape[0] - 1)
        found: np.ndarray = ordered[at] == values
        return found
    return np.isin(values, of)


def distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the distinct values sorted, the index of one occurrence of each, each value's
    position among them) of a 1-D integer array: `np.unique(values, return_index=True,
    return_inverse=True)` but for which occurrence is given, by numpy's quicksort (its
    SIMD argsort) rather than the stable sort np.unique needs for first occurrences: ~3x
    faster over the 65,536 (sender, TTL) pairs of a scan's verdict chunk."""
    order = np.argsort(values)
    ordered = values[order]
    first, inverse = _groups(order, ordered)
    return ordered[first], order[first], inverse


def distinct_pairs(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the index of one occurrence of each distinct (hi, lo) pair, in ascending (hi, lo)
    order; each row's position among them) of two unsigned 64-bit columns: 128-bit
    addresses.  numpy sorts 16-byte void rows a byte comparison at a time, and `np.lexsort`
    is a stable sort per key: here the lower halves by SIMD quicksort, then a stable sort
    of the upper halves, which mostly repeat (IPv4's mapped prefix) or are all equal."""
    order = np.argsort(lo)
    if hi.shape[0] and not (hi == hi[0]).all():
        order = order[np.argsort(hi[order], kind="stable")]
    first, inverse = _groups(order, hi[order], lo[order])
    return order[first], inverse


def _groups(order: np.ndarray, *ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows put in `order` (the columns `ordered`, so sorted): which sorted rows begin a
    run of equal ones, and each original row's run number."""
    first = np.empty(order.shape[0], bool)
    first[:1] = True
    first[1:] = False
    for column in ordered:
        first[1:] |= column[1:] != column[:-1]
    inverse = np.empty(order.shape[0], np.intp)
    inverse[order] = np.cumsum(first) - 1
    return first, inverse


def constant(values: np.ndarray) -> bool:
    """A column `narrowest` made of one value broadcast."""
    return values.ndim == 1 and values.strides[0] == 0 and values.shape[0] > 1


def joined(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Narrow columns one after another, narrowest again (one value throughout stays one
    value: no memory)."""
    if not parts:
        return np.empty(0, np.int64)
    if len(parts) == 1:
        return parts[0]
    if all(constant(p) or p.shape[0] == 1 for p in parts):
        first = parts[0][:1]
        if all((p[:1] == first).all() for p in parts if p.shape[0]):
            return repeated(first[0], first.dtype, sum(p.shape[0] for p in parts))
    return narrowest(np.concatenate(parts))


class RstColumns:
    """RST log rows as one array per `layout.R_*` column (any integer dtypes)."""

    def __init__(self, columns: Sequence[np.ndarray]) -> None:
        assert len(columns) == L.NR
        self.columns = list(columns)
        self.shape = (int(self.columns[0].shape[0]), L.NR)

    @classmethod
    def of(cls, R: np.ndarray | RstColumns) -> RstColumns:
        """`R` as columns (an int64 matrix's are views of it)."""
        if isinstance(R, RstColumns):
            return R
        return cls([R[:, c] for c in range(L.NR)])

    @classmethod
    def narrow(cls, R: np.ndarray) -> RstColumns:
        """An int64 matrix's columns, each narrowed (copies)."""
        return cls(narrow_columns(R))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(0 if constant(c) else c.nbytes for c in self.columns)

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return RstColumns([c[key] for c in self.columns])
        rows, col = key
        if isinstance(col, slice):
            picked = self.columns[col]
            out = np.empty((len(picked[0][rows]) if picked else 0, len(picked)), np.int64)
            for j, c in enumerate(picked):
                out[:, j] = c[rows]
            return out
        value = np.asarray(self.columns[col][rows])
        return value.astype(np.int64) if value.ndim else np.int64(value)

    def to_matrix(self) -> np.ndarray:
        """The int64 matrix (for tests and small logs)."""
        out = np.empty(self.shape, np.int64)
        for j, c in enumerate(self.columns):
            out[:, j] = c
        return out

    @classmethod
    def concat_in_order(cls, parts: list[list[np.ndarray]], order: np.ndarray | None) -> RstColumns:
        """The rows of `parts` (each one array per column) one after another, then put in
        `order` (None: as they come), a column at a time; each part's columns are given up
        as they are copied (no second copy of them all)."""
        cols = []
        for c in range(L.NR):
            col = joined([p[c] for p in parts])
            for p in parts:
                p[c] = p[c][:0]
            cols.append(col if order is None or constant(col) else col[order])
        return cls(cols)


RstRows = np.ndarray | RstColumns  # the RST log as attribution reads it: either form


class NarrowRows:
    """Some columns of a row matrix (the kernel's flow rows F, key rows K), each in the
    narrowest type that holds it (`narrowest`), read the way the matrix was read:
    ``rows[:, c]`` (column `c`, widened to the matrix's `dtype`), ``rows[sel]`` (the rows
    selected, still narrow), ``len(rows)``.  A column not kept raises KeyError."""

    def __init__(self, columns: dict[int, np.ndarray], n: int, dtype: np.dtype | type = np.int64) -> None:
        self.columns = columns
        self.dtype = np.dtype(dtype)
        self.shape = (n, max(columns, default=-1) + 1)

    @classmethod
    def of(cls, M: np.ndarray, which: Sequence[int]) -> NarrowRows:
        """Columns `which` of matrix `M`, narrowed (copies)."""
        return cls(dict(zip(which, narrow_columns(M, which), strict=True)), M.shape[0], M.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(0 if constant(c) else c.nbytes for c in self.columns.values())

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            cols = {c: v[key] for c, v in self.columns.items()}
            n = next(iter(cols.values())).shape[0] if cols else 0
            return NarrowRows(cols, n, self.dtype)
        rows, col = key
        return np.asarray(self.columns[col][rows]).astype(self.dtype)

    def matrix(self, width: int) -> np.ndarray:
        """The rows as a `width`-column matrix of `dtype` (columns not kept are 0)."""
        out = np.zeros((self.shape[0], width), self.dtype)
        for c, v in self.columns.items():
            out[:, c] = v
        return out

    @classmethod
    def join(cls, parts: Sequence[NarrowRows]) -> NarrowRows:
        """The rows of `parts` one after another; each part's columns are given up as they
        are copied (no second copy of them all)."""
        if not parts:
            return cls({}, 0)
        out: dict[int, np.ndarray] = {}
        for c in list(parts[0].columns):
            out[c] = joined([p.columns[c] for p in parts])
            for p in parts:
                p.columns[c] = p.columns[c][:0]
        return cls(out, sum(p.shape[0] for p in parts), parts[0].dtype)
