"""The package passes `mypy --strict` (configuration in pyproject.toml; the numba kernels are
exempt there), checked as installed: `parsers/` is `rstlens.parsers`, `reports/` is
`rstlens.reports` (setuptools package-dir), so mypy reads a tree of links laid out that way."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"parsers": REPO / "parsers", "reports": REPO / "reports"}


def installed_layout(root: Path) -> Path:
    """`root`/rstlens: links to rstlens/'s entries, plus the package-dir subpackages."""
    package = root / "rstlens"
    package.mkdir(parents=True)
    for entry in (REPO / "rstlens").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in PACKAGE_DIRS.items():
        (package / name).symlink_to(folder)
    return package


def test_mypy_strict_passes(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    installed_layout(tmp_path / "tree")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), "-p", "rstlens"],
        cwd=tmp_path / "tree", capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # every module was checked, none skipped for want of a path
    found = re.search(r"in (\d+) source files", done.stdout)
    assert found is not None, done.stdout
    checked = int(found.group(1))
    # every source file, and the compiled kernel extension (a module mypy reads as Any)
    expected = sum(1 for d in [REPO / "rstlens", *PACKAGE_DIRS.values()] for p in d.rglob("*")
                   if p.suffix in (".py", ".so"))  # fmt: skip
    assert checked == expected, done.stdout


def test_the_package_says_it_is_typed() -> None:
    assert (REPO / "rstlens" / "py.typed").is_file()


def test_the_modules_exempt_from_mypy_are_the_kernels() -> None:
    import tomllib

    from rstlens import kernels

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]["overrides"]
    exempt = [set(o["module"]) for o in config if o.get("ignore_errors")]
    assert exempt == [set(kernels.KERNEL_MODULES)]
