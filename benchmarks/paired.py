"""Paired whole-process runs of `rstlens analyze` from two checkouts on the same file.

    python benchmarks/paired.py BASE_CHECKOUT NEW_CHECKOUT FILE [--pairs N] [-- ANALYZE_ARGS...]

Each checkout is a tree with its own `.venv` (e.g. ``git worktree add ../base REV``, a copy of
the `.venv` with its paths pointed at the worktree, and, when the kernel sources are equal,
the compiled kernel extension copied over).  The two run alternately, BASE first in each
pair; per pair it prints wall time, CPU time and peak RSS of each (`bench.run_once`), and the
ratio NEW / BASE of the wall times; at the end the median ratio.  On a shared, noisy machine
the median of paired ratios is what compares two revisions: a spell slows both sides of a
pair alike.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench import run_once, warm  # the benchmark's own child measurement (os.wait4)


def analyze_once(checkout: Path, capture: Path, args: list[str], timeout: float) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one `rstlens analyze` of `checkout`."""
    out = tempfile.mkdtemp(prefix="rstlens-paired-")
    try:
        argv = [str(checkout / ".venv" / "bin" / "rstlens"), "analyze", *args, str(capture), "-o", out]
        res = run_once(argv, timeout)
        if not res["ok"]:
            raise SystemExit(f"{' '.join(argv)}: {res['error']}")
        return res["wall"], res["cpu"], res["rss_mb"]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("capture", type=Path)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--timeout", type=float, default=600, help="per run, seconds")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a = ap.parse_args(argv[:cut])
    a.analyze_args = argv[cut + 1 :]  # after --: passed to rstlens analyze
    warm(a.capture)  # into the page cache before the first pair
    ratios = []
    for i in range(a.pairs):
        b = analyze_once(a.base, a.capture, a.analyze_args, a.timeout)
        n = analyze_once(a.new, a.capture, a.analyze_args, a.timeout)
        ratios.append(n[0] / b[0])
        print(f"pair {i + 1}: base {b[0]:.2f} s, CPU {b[1]:.2f} s, {b[2]:.0f} MB | "
              f"new {n[0]:.2f} s, CPU {n[1]:.2f} s, {n[2]:.0f} MB | ratio {ratios[-1]:.3f}", flush=True)  # fmt: skip
    print(f"median ratio new / base over {a.pairs} pairs: {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
