"""Fuzzing the capture readers and decoders (issue 20).

* `test_fuzz_for_the_ci_budget`: atheris (libFuzzer, coverage-guided over rstlens' Python
  code; the numba kernels and libpcap are C and not instrumented) for `CI_SECONDS`, seeded
  with a sample of small captures from ../shared/corpus/robust and zeek (copied to a
  scratch directory, never into the repository) plus a few built here.  Where atheris is
  not installed: a plain random-mutation loop over the same seeds for the same time (not
  coverage-guided; says so).
* `test_fuzz_long` (marker ``fuzz_long``, run with ``pytest -m fuzz_long``): the same for
  ``RSTLENS_FUZZ_SECONDS`` (default 600).
* `test_saved_inputs_replay`: every input in tests/data/fuzz (crashes found and fixed)
  through the fuzz target.
The property everywhere: no exception but `RstlensError`, no hang (libFuzzer -timeout),
bounded memory (-rss_limit_mb).
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import syn_rst_pcap

REPO = Path(__file__).resolve().parents[2]
TARGET = REPO / "tests" / "fuzz" / "fuzz_captures.py"
SAVED = REPO / "tests" / "data" / "fuzz"
CORPUS = REPO.parent / "shared" / "corpus"
CI_SECONDS = 45
SUFFIXES = (".pcap", ".pcapng", ".cap", ".gz")
HAVE_ATHERIS = importlib.util.find_spec("atheris") is not None


def _target():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("fuzz_captures", TARGET)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def seeds(into: Path) -> Path:
    """A sample of small corpus captures (every 4th under 20 KB, sorted) and built ones."""
    into.mkdir(parents=True, exist_ok=True)
    files = sorted(p for sub in ("robust", "zeek") if (CORPUS / sub).is_dir()
                   for p in (CORPUS / sub).rglob("*")
                   if p.is_file() and p.name.endswith(SUFFIXES) and p.stat().st_size < 20_000)  # fmt: skip
    for k, p in enumerate(files[::4]):
        (into / f"corpus-{k:03d}").write_bytes(p.read_bytes())
    syn_rst_pcap(into / "built-refused", 3)
    syn_rst_pcap(into / "built-vlan", 2, vlan=7)
    for p in sorted(q for q in SAVED.glob("*") if q.suffix != ".md"):
        (into / f"saved-{p.name}").write_bytes(p.read_bytes())
    return into


def run_atheris(tmp_path: Path, seconds: int) -> dict[str, str]:
    corpus = seeds(tmp_path / "corpus")
    art = tmp_path / "artifacts"
    art.mkdir()
    res = subprocess.run(
        [sys.executable, str(TARGET), str(corpus), f"-max_total_time={seconds}", "-timeout=10",
         "-rss_limit_mb=2048", "-print_final_stats=1", f"-artifact_prefix={art}/"],
        capture_output=True, text=True, timeout=seconds + 120, cwd=tmp_path,
        env={**os.environ, "RSTLENS_FUZZ_SCRATCH": str(tmp_path / "scratch")},
    )  # fmt: skip
    crashes = sorted(art.iterdir())
    stats = dict(re.findall(r"stat::(\w+):\s+(\d+)", res.stderr))
    cov = re.findall(r"cov: (\d+) ft: (\d+)", res.stderr)
    if cov:
        stats["cov"], stats["ft"] = cov[-1]
    print(f"atheris {seconds} s: {stats}")
    assert res.returncode == 0 and not crashes, (
        f"fuzzer found {[c.name for c in crashes]} (save it under tests/data/fuzz/ once fixed):\n"
        + res.stderr[-4000:]
    )
    return stats


def run_mutations(tmp_path: Path, seconds: int) -> int:
    """Without atheris: random byte flips, inserts and cuts over the seeds, same target."""
    os.environ["RSTLENS_FUZZ_SCRATCH"] = str(tmp_path / "scratch")
    target = _target()
    inputs = [p.read_bytes() for p in sorted(seeds(tmp_path / "corpus").iterdir())]
    rnd = random.Random(20)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        data = bytearray(rnd.choice(inputs))
        for _ in range(rnd.randint(1, 8)):
            op = rnd.random()
            at = rnd.randrange(len(data) + 1)
            if op < 0.6 and data:
                data[min(at, len(data) - 1)] = rnd.randrange(256)
            elif op < 0.8:
                data[at:at] = os.urandom(rnd.randint(1, 8))
            else:
                del data[at:]
        target.one_input(bytes(data))
        n += 1
    print(f"random mutations (atheris not installed, not coverage-guided): {n} inputs")
    return n


def test_fuzz_for_the_ci_budget(tmp_path: Path) -> None:
    if HAVE_ATHERIS:
        stats = run_atheris(tmp_path, CI_SECONDS)
        assert int(stats.get("number_of_executed_units", 0)) > 100
    else:
        assert run_mutations(tmp_path, CI_SECONDS) > 100


@pytest.mark.fuzz_long
def test_fuzz_long(tmp_path: Path) -> None:
    seconds = int(os.environ.get("RSTLENS_FUZZ_SECONDS", "600"))
    if HAVE_ATHERIS:
        run_atheris(tmp_path, seconds)
    else:
        run_mutations(tmp_path, seconds)


def test_saved_inputs_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSTLENS_FUZZ_SCRATCH", str(tmp_path))
    target = _target()
    saved = sorted(p for p in SAVED.glob("*") if p.suffix != ".md")
    for p in saved:
        target.one_input(p.read_bytes())
