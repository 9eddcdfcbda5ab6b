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
import os
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
U64 = types.Array(types.uint64, 1, "C")
HIST = types.Array(types.uint8, 2, "C")
ANY_VEC = types.Array(i8, 1, "A")
BYTES = types.Array(types.uint8, 1, "C")
OFFSETS = types.Array(types.int32, 1, "C")  # an Arrow string column's


def _column(name: str, layout: Literal["C", "A"]) -> types.Array:
    dtype: types.Type = from_dtype(BATCH_COLUMNS[name])
    return types.Array(dtype, 1, layout)


def signatures() -> dict[str, Any]:
    from rstlens.parsers._decode import COLUMN_ORDER

    # F, K, H, A, E, X, FS, HS, NRS (the rows and scratch), then T, free, nfree (process,
    # sweep: + DL)
    rows = (MAT, KEYS, HIST, types.Array(types.int8, 1, "C"), MAT, MAT, MAT, HIST, VEC)
    table = (*rows, VEC, VEC, VEC)
    output = (MAT, KEYS, HIST, MAT, VEC)  # FO, KO, HO, RO, nout
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
            types.Array(types.uint8, 1, "C"), types.Array(types.boolean, 1, "C"), i8, *table, VEC,
            *log, *output, VEC, VEC, VEC,
        ),
        "sweep": types.boolean(*table, VEC, *output, *log, VEC, VEC, i8),
        "emit_all": i8(*table, *output, *log, VEC, VEC, i8, i8),
        "emit_rows": types.none(*table, *output, *log, VEC, VEC, types.Array(i8, 1, "A"), i8),
        "sha1_rows": types.none(HIST, HIST, VEC),
        # record columns: kernel-row columns are strided views ("A")
        "uid_chars": types.none(ANY_VEC, ANY_VEC, ANY_VEC, HIST),
        "community_chars": types.none(types.Array(types.uint64, 2, "A"), ANY_VEC, VEC, HIST),
        "address_strings": i8(types.Array(types.uint64, 1, "A"), types.Array(types.uint64, 1, "A"),
                              VEC, VEC, BYTES, OFFSETS, BYTES),
        "nul_trimmed": i8(types.Array(types.uint8, 2, "A"), OFFSETS, BYTES),
        "gather_strings": i8(VEC, BYTES, VEC, OFFSETS, BYTES),
        "track_attempts": i8(
            U64, U64, U64, U64, VEC, U64, U64, U64, VEC, VEC, VEC, HIST, i8, i8,
            types.Array(types.int32, 1, "C"), VEC, KEYS, MAT, VEC, VEC, HIST,
        ),
    }
    # fmt: on


@contextlib.contextmanager
def gil_released() -> Iterator[None]:
    """Compile the exported kernels with `release_gil` (numba's ``nogil=True``): their
    Python wrappers let go of the GIL while the kernel runs, so `analyze -j N` can decode
    one batch in the reader thread while the flow core walks the previous one
    (`rstlens.pipeline_threads`).  pycc's `Flags()` has no such option of its own; the
    kernels touch no Python object, which is what `nogil` requires."""
    import numba.pycc.compiler as pycc_compiler

    plain: Any = getattr(pycc_compiler, "Flags")  # noqa: B009 - not re-exported (mypy)

    class NoGilFlags(plain):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.release_gil = True

    setattr(pycc_compiler, "Flags", NoGilFlags)  # noqa: B010
    try:
        yield
    finally:
        setattr(pycc_compiler, "Flags", plain)  # noqa: B010


def compiler(output_dir: Path | None = None, only: tuple[str, ...] | None = None) -> Any:
    """The `numba.pycc.CC` that builds `rstlens.kernels._compiled` (`only`: just those
    kernels, for tests; such an extension is not a usable `_compiled`)."""
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
        if only is not None and name not in only:
            continue
        src_module, function = kernels.SOURCES[name]
        cc.export(name, sig)(getattr(importlib.import_module(src_module), function).py_func)
    built_from = kernels.source_hash()

    def source_hash() -> int:
        return built_from

    cc.export("source_hash", i8())(source_hash)
    return cc


def _dispatchers() -> list[Any]:
    """Every numba dispatcher of the kernel modules (imported here if they were not)."""
    from numba.core.registry import CPUDispatcher

    found: dict[int, Any] = {}
    for name in kernels.KERNEL_MODULES:
        for value in vars(importlib.import_module(name)).values():
            if isinstance(value, CPUDispatcher):
                found[id(value)] = value
    return list(found.values())


@contextlib.contextmanager
def fresh_numba_cache(directory: str) -> Iterator[None]:
    """numba's on-disk cache in `directory` (new, empty) while the extension is built.

    A kernel's callee that is not inlined (`_tunnelled`, ...) is compiled through its
    dispatcher, which loads numba's cache when one is there.  That cache is keyed by the
    source file's time stamp and the function's own bytecode only: an edited constant in
    another file (`_wire.py`, `_batch.py`, ...) or a checkout that keeps time stamps leaves it
    looking current, and the extension would link the old code while carrying the new
    sources' hash.  The dispatchers' caches are pointed at `directory` (numba's
    NUMBA_CACHE_DIR) for the build and back afterwards."""
    from numba.core import config as numba_config

    config: Any = numba_config  # its settings are set at import, unknown to type checkers
    saved = config.CACHE_DIR, os.environ.get("NUMBA_CACHE_DIR")
    config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"] = directory
    dispatchers = _dispatchers()
    for d in dispatchers:
        d.enable_caching()  # a cache object made now locates itself under config.CACHE_DIR
    try:
        yield
    finally:
        config.CACHE_DIR = saved[0]
        if saved[1] is None:
            os.environ.pop("NUMBA_CACHE_DIR", None)
        else:
            os.environ["NUMBA_CACHE_DIR"] = saved[1]
        for d in dispatchers:
            d.enable_caching()


@contextlib.contextmanager
def scratch_tempdir() -> Iterator[None]:
    """Temporary files of the build go to a directory removed afterwards: numba's check that
    a C compiler works (`pycc.platform.external_compiler_works`) leaves two directories in
    /tmp per build (its clean-up passes the file object to `os.remove`).  numba's cache is a
    fresh directory in it too (`fresh_numba_cache`): a stale cache never reaches the build."""
    with tempfile.TemporaryDirectory(prefix="rstlens-aot-") as scratch:
        before, tempfile.tempdir = tempfile.tempdir, scratch
        cache = os.path.join(scratch, "numba-cache")
        os.mkdir(cache)
        try:
            with fresh_numba_cache(cache):
                yield
        finally:
            tempfile.tempdir = before


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else None
    with scratch_tempdir(), gil_released():
        compiler(out).compile()
    print(f"built {kernels.AOT_MODULE} in {out or Path(__file__).parent}")


if __name__ == "__main__":
    main(sys.argv[1:])
