"""The compiled kernels: built ahead of time by the install, current, and equal to numba's JIT."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rstlens import kernels
from tools.synth import generate

SAMPLE_PCAPS = Path(__file__).resolve().parents[2] / "sample_pcaps"


def test_the_install_built_current_ahead_of_time_kernels() -> None:
    # CI installs the package the way the README does: the extension must have been built
    # and from these very sources, or every run pays ~0.65 s of numba start-up.
    assert kernels._aot_unusable() is None
    assert kernels.backend() == "aot"


def test_version_names_the_kernels_in_use() -> None:
    done = subprocess.run([sys.executable, "-c", "from rstlens.cli.main import main; main()", "--version"],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert done.stdout.strip().endswith("(kernels: aot)"), done.stdout


def test_an_extension_built_from_other_sources_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "source_hash", lambda: 12345)
    assert kernels._aot_unusable() == "extension built from other sources"


def test_the_environment_forces_jit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernels.FORCE_JIT_ENV, "1")
    assert kernels._aot_unusable() == f"{kernels.FORCE_JIT_ENV} is set"


def test_the_source_hash_covers_every_kernel_module() -> None:
    hashed = {(pkg, name.removesuffix(".py")) for pkg, name in kernels.HASHED_FILES}
    for module, _ in kernels.SOURCES.values():
        package, _, name = module.rpartition(".")
        assert (package, name) in hashed, module


def test_kernel_modules_are_hashed_and_hold_every_kernel() -> None:
    hashed = {f"{pkg}.{name.removesuffix('.py')}" for pkg, name in kernels.HASHED_FILES}
    assert set(kernels.KERNEL_MODULES) <= hashed
    for module, _ in kernels.SOURCES.values():
        assert module in kernels.KERNEL_MODULES, module


def _analyze(inputs: list[str], out: Path, *, jit: bool, stdin: Path | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k != kernels.FORCE_JIT_ENV}
    if jit:
        env[kernels.FORCE_JIT_ENV] = "1"
    code = (
        "import sys; from rstlens import kernels; from rstlens.cli.main import main; "
        "print(kernels.backend(), file=sys.stderr); main()"
    )
    cmd = [sys.executable, "-c", code, "analyze", "-q", *inputs, "-o", str(out)]
    # A JIT run compiles every kernel first: ~4.5-7 min on this 2-core machine since the reset
    # rows' replay (the ahead-of-time build is ~9.5 min), far more on a loaded one
    with open(stdin or os.devnull, "rb") as f:
        done = subprocess.run(cmd, env=env, stdin=f, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("jit" if jit else "aot"), done.stderr


@pytest.fixture(scope="module")
def synth_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kernels") / "synth.pcap"
    generate(path, 30_000, seed=3)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", ["samples", "zeek", "synth", "synth-stdin"])
def test_ahead_of_time_and_jit_kernels_write_identical_records(
    case: str, synth_capture: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    stdin = None
    if case == "samples":
        inputs = sorted(str(p) for p in SAMPLE_PCAPS.glob("*.pcap"))
    elif case == "zeek":
        corpus = request.getfixturevalue("zeek_corpus")
        inputs = sorted(str(p) for p in corpus.rglob("*.pcap"))[:15]
    elif case == "synth":
        inputs = [str(synth_capture)]
    else:  # the stream reader (and its record-walk kernel) instead of libpcap
        inputs, stdin = ["-"], synth_capture
    for jit in (False, True):
        _analyze(inputs, tmp_path / str(jit), jit=jit, stdin=stdin)
    for name in ("flows.parquet", "resets.parquet"):
        aot, jit_ = (pq.read_table(tmp_path / str(j) / name) for j in (False, True))
        assert aot.num_rows > 0
        assert aot.equals(jit_), name


def test_analyze_imports_neither_numba_nor_pandas(tmp_path: Path) -> None:
    # what start-up time is made of: both cost ~0.3 s to import
    capture = sorted(SAMPLE_PCAPS.glob("*.pcap"))
    code = (
        "import sys; from rstlens.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print(sorted(m for m in ('numba', 'pandas', 'llvmlite') if m in sys.modules))"
    )
    cmd = [sys.executable, "-c", code, "analyze", "-q", *map(str, capture), "-o", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    assert pq.read_table(tmp_path / "resets.parquet").num_rows > 0


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_the_build_leaves_no_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """numba's compiler check leaves directories in the temporary folder; the build runs it
    inside one of its own that is removed afterwards."""
    from rstlens.kernels.aot import scratch_tempdir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc is marked for deprecation
        from numba.pycc import platform
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with scratch_tempdir():
        assert platform.external_compiler_works.__wrapped__()  # the check itself, uncached
    assert list(tmp_path.iterdir()) == []
    assert tempfile.tempdir == str(tmp_path)
