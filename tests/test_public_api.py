"""Each package's `__all__` is exactly what it exports, and every name in it resolves."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ("rstlens", "rstlens.parsers")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert sorted(module.__all__) == list(module.__all__), "keep __all__ sorted"


@pytest.mark.parametrize("package", PACKAGES)
def test_star_import_gives_exactly_all(package: str) -> None:
    # a fresh interpreter: names resolved by earlier tests must not hide a missing one
    code = f"ns = {{}}; exec('from {package} import *', ns); print(sorted(k for k in ns if k != '__builtins__'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == str(sorted(importlib.import_module(package).__all__))


@pytest.mark.parametrize("package", PACKAGES)
def test_lazy_names_are_the_exported_ones(package: str) -> None:
    module = importlib.import_module(package)
    eager = {"__version__"}
    assert set(module._LAZY) == set(module.__all__) - eager
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018
