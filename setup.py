"""Builds the ahead-of-time kernel extension (`rstlens/kernels/aot.py`); everything else about the
package is in pyproject.toml.  Without a C compiler (or numba's pycc) the install goes on
without the extension and numba compiles the kernels at run time (`rstlens/kernels/__init__.py`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _source_tree_packages() -> None:
    """Make `rstlens` and `rstlens.parsers` (folder `parsers/`) importable from the checkout."""
    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location(
        "rstlens.parsers", ROOT / "parsers" / "__init__.py",
        submodule_search_locations=[str(ROOT / "parsers")],
    )  # fmt: skip
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rstlens.parsers"] = module
    spec.loader.exec_module(module)


class OptionalKernels(build_ext):
    """build_ext that LLVM-compiles the kernels first and never fails the install."""

    def build_extension(self, ext):  # type: ignore[no-untyped-def]
        try:
            from rstlens.kernels.aot import gil_released, scratch_tempdir

            with scratch_tempdir(), gil_released():  # the kernels release the GIL (-j)
                ext._prepare_object_files(self)  # numba.pycc: kernels -> object files
                super().build_extension(ext)
        except Exception as exc:  # any failure: fall back to run-time compilation
            print(f"rstlens: kernels not compiled ahead of time ({exc}); "
                  "numba will compile them at run time", file=sys.stderr)  # fmt: skip


def _extensions() -> list:  # type: ignore[type-arg]
    try:
        _source_tree_packages()
        from rstlens.kernels.aot import compiler, scratch_tempdir

        with scratch_tempdir():
            return [compiler().distutils_extension()]
    except Exception as exc:
        print(f"rstlens: kernels not compiled ahead of time ({exc})", file=sys.stderr)
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalKernels})
