"""Ahead-of-time compilation of the kernels (`rstlens.kernels`) into `rstlens.kernels._compiled`.

`setup.py` runs this at install time; by hand: ``python -m rstlens.kernels.aot [OUTDIR]`` (default:
next to this file).  Each kernel is exported with one fixed signature: the array dtypes are
those of the batch contract (`parsers._batch.BATCH_COLUMNS`) and of the engine's
matrices, so a caller passing other dtypes gets a TypeError instead of a silent
recompilation.  Needs numba (with its `pycc`) and a C compiler; nothing here runs at
analysis time.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from numba import from_dtype, types

from rstlens import kernels
from rstlens.flows.engine import PROCESS_COLUMNS
from rstlens.parsers._batch import BATCH_COLUMNS

i8 = types.int64
VEC = types.Array(i8, 1, "C")
MAT = types.Array(i8, 2, "C")
KEYS = types.Array(types.uint64, 2, "C")
HIST = types.Array(types.uint8, 2, "C")


def _column(name: str, layout: Literal["C", "A"]) -> types.Array:
    dtype: types.Type = from_dtype(BATCH_COLUMNS[name])
    return types.Array(dtype, 1, layout)


def signatures() -> dict[str, Any]:
    from rstlens.parsers._decode import COLUMN_ORDER

    # F, K, H, A, E, FS, HS (the rows), then T, free, nfree (process, sweep: + DL)
    rows = (MAT, KEYS, HIST, types.Array(types.int8, 1, "C"), MAT, MAT, HIST)
    table = (*rows, VEC, VEC, VEC)
    output = (MAT, KEYS, HIST, VEC)  # FO, KO, HO, nout
    log = (MAT, VEC)  # R, nr
    # fmt: off
    return {
        "walk_pcap": types.UniTuple(i8, 3)(
            types.Array(types.uint8, 1, "C"), i8, types.boolean, i8, i8, i8, i8, VEC, VEC, VEC
        ),
        "libpcap_meta": types.UniTuple(i8, 2)(types.Array(types.uint32, 2, "C"), i8, MAT),
        "decode": i8(
            types.Array(types.uint8, 1, "C"), VEC, VEC, types.Array(types.int32, 1, "C"),
            VEC, VEC, types.Array(types.uint16, 1, "C"), types.uint16, i8,
            *(_column(name, "C") for name in COLUMN_ORDER), MAT, VEC,
        ),
        "rebuild": types.none(VEC, KEYS, types.Array(types.int8, 1, "C")),
        # batch columns are contiguous (the engine makes sure): compiled for any layout, the
        # kernel indexed them through strides and ran ~25% slower (paired A/B, 5 M file)
        "process": types.UniTuple(i8, 2)(
            *(_column(name, "C") for name in PROCESS_COLUMNS),
            types.Array(types.boolean, 1, "C"), i8, *table, VEC, *log, *output, VEC, VEC, VEC,
        ),
        "sweep": types.boolean(*table, VEC, *output, *log, VEC, VEC, i8),
        "emit_all": i8(*table, *output, *log, VEC, VEC, i8, i8),
        "emit_rows": types.none(*table, *output, *log, VEC, VEC, types.Array(i8, 1, "A"), i8),
        "ipv4_text": types.none(types.Array(types.uint64, 1, "A"), types.Array(types.uint64, 1, "A"), HIST),
        "sha1_rows": types.none(HIST, HIST, VEC),
    }
    # fmt: on


def compiler(output_dir: Path | None = None) -> Any:
    """The `numba.pycc.CC` that builds `rstlens.kernels._compiled`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc is marked for deprecation; it is what exists
        from numba.pycc.cc import CC

    # the module named as source places the extension in its package (rstlens.kernels)
    cc = CC(kernels.AOT_MODULE.rpartition(".")[2], source_module=sys.modules[__name__])
    cc.output_dir = str(output_dir or Path(__file__).parent)
    cc.verbose = False
    # The kernels allocate nothing, so they need no reference counting: with it, every array
    # passed between the (inlined) helpers costs atomic increments and decrements per packet.
    cc.use_nrt = False
    for name, sig in signatures().items():
        src_module, function = kernels.SOURCES[name]
        cc.export(name, sig)(getattr(importlib.import_module(src_module), function).py_func)
    built_from = kernels.source_hash()

    def source_hash() -> int:
        return built_from

    cc.export("source_hash", i8())(source_hash)
    return cc


@contextlib.contextmanager
def scratch_tempdir() -> Iterator[None]:
    """Temporary files of the build go to a directory removed afterwards: numba's check that
    a C compiler works (`pycc.platform.external_compiler_works`) leaves two directories in
    /tmp per build (its clean-up passes the file object to `os.remove`)."""
    with tempfile.TemporaryDirectory(prefix="rstlens-aot-") as scratch:
        before, tempfile.tempdir = tempfile.tempdir, scratch
        try:
            yield
        finally:
            tempfile.tempdir = before


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else None
    with scratch_tempdir():
        compiler(out).compile()
    print(f"built {kernels.AOT_MODULE} in {out or Path(__file__).parent}")


if __name__ == "__main__":
    main(sys.argv[1:])
