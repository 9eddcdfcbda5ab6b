"""The packet columns have one definition, `parsers._batch.BATCH_COLUMNS`: everything that
lists them (PacketBatch, the kernels' parameters, the AOT signatures) must follow it."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import fields

from numba import from_dtype

from rstlens import kernels
from rstlens.flows.engine import PROCESS_ARGS, PROCESS_COLUMNS
from rstlens.kernels.aot import signatures
from rstlens.parsers import BATCH_COLUMNS, PacketBatch
from rstlens.parsers._decode import COLUMN_ORDER, COUNTER_ARGS, RECORD_ARGS


def _parameters(kernel: str) -> tuple[str, ...]:
    module, function = kernels.SOURCES[kernel]
    py_func = getattr(importlib.import_module(module), function).py_func
    return tuple(inspect.signature(py_func).parameters)


def test_packet_batch_fields_are_the_batch_columns() -> None:
    assert [f.name for f in fields(PacketBatch)] == [*BATCH_COLUMNS, "raw"]
    empty = PacketBatch.empty(3)
    for name, dtype in BATCH_COLUMNS.items():
        assert getattr(empty, name).dtype == dtype, name


def test_the_decode_kernel_takes_every_column_in_table_order() -> None:
    assert _parameters("decode") == RECORD_ARGS + COLUMN_ORDER + COUNTER_ARGS


def test_the_flow_kernel_takes_the_process_columns_in_table_order() -> None:
    assert set(PROCESS_COLUMNS) <= set(BATCH_COLUMNS)
    assert list(PROCESS_COLUMNS) == [name for name in BATCH_COLUMNS if name in PROCESS_COLUMNS]
    assert _parameters("process") == PROCESS_COLUMNS + PROCESS_ARGS


def test_the_ahead_of_time_signatures_follow_the_kernels() -> None:
    sigs = signatures()
    assert set(sigs) == set(kernels.SOURCES)
    for kernel, sig in sigs.items():
        assert len(sig.args) == len(_parameters(kernel)), kernel
    decode_columns = sigs["decode"].args[len(RECORD_ARGS) : len(RECORD_ARGS) + len(COLUMN_ORDER)]
    for name, arg in zip(COLUMN_ORDER, decode_columns, strict=True):
        assert arg.dtype == from_dtype(BATCH_COLUMNS[name]), name
    for name, arg in zip(PROCESS_COLUMNS, sigs["process"].args[: len(PROCESS_COLUMNS)], strict=True):
        assert arg.dtype == from_dtype(BATCH_COLUMNS[name]), name
