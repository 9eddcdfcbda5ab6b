"""Paired A/B timing of the flow kernel built from two git revisions.

Usage::

    python benchmarks/kernel_ab.py REV_A REV_B [--capture F] [--rounds 8]

Single runs on this shared machine vary by ±25%, far more than most kernel changes, so two
runs minutes apart cannot tell variants apart.  This script compiles the kernels of both
revisions ahead of time (`rstlens.kernels.aot`, each from its own checkout under a temporary
directory), loads both extension modules into one process, decodes the capture once (with
the working tree's parsers) and then feeds every batch through a fresh `FlowEngine`
alternately with A's and B's kernels (A B, B A, A B, ...), printing each variant's median
and minimum.  Only the kernels differ between the variants: the revisions must agree on the
kernel signatures and on the `_layout` constants the Python side uses.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = """
import importlib.util, sys
from pathlib import Path
root = Path(sys.argv[1])
sys.path.insert(0, str(root))
spec = importlib.util.spec_from_file_location(
    "rstlens.parsers", root / "parsers" / "__init__.py",
    submodule_search_locations=[str(root / "parsers")])
module = importlib.util.module_from_spec(spec)
sys.modules["rstlens.parsers"] = module
spec.loader.exec_module(module)
try:
    from rstlens.kernels.aot import compiler
except ImportError:  # revisions before the subpackage layout
    from rstlens._aot import compiler
compiler(Path(sys.argv[2])).compile()
"""


def build(rev: str, work: Path) -> Path:
    """Compile `rev`'s kernels in `work` (a fresh folder); returns the extension's path."""
    tree, out = work / "tree", work / "out"
    tree.mkdir(parents=True)
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    # any revision's build: its temporary files (numba's compiler check leaves some) stay in `work`
    scratch = work / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    subprocess.run([sys.executable, "-c", BUILD, str(tree), str(out)], check=True, cwd=work, env=env)
    return next(out.glob("*.so"))  # _compiled*.so (_kernels_aot*.so before the layout change)


def load(tag: str, path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"{tag}.{path.name.split('.')[0]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev_a")
    ap.add_argument("rev_b")
    ap.add_argument("--capture", default=str(REPO / "benchmarks/data/synth-5000000-s1-v1.pcap"))
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()

    from rstlens import kernels
    from rstlens.flows.engine import FlowEngine
    from rstlens.options import CoreOptions
    from rstlens.parsers import CaptureReader

    # the two builds at once: each is one compiler process, ~7 CPU-minutes since the reset
    # rows, so on two cores this halves the wait
    with tempfile.TemporaryDirectory(prefix="rstlens-ab-") as tmp, ThreadPoolExecutor(2) as pool:
        built = {tag: pool.submit(build, rev, Path(tmp) / tag)
                 for tag, rev in (("A", args.rev_a), ("B", args.rev_b))}  # fmt: skip
        variants = {tag: load(tag, future.result()) for tag, future in built.items()}
    batches = list(CaptureReader([args.capture]))
    times: dict[str, list[float]] = {"A": [], "B": []}
    for r in range(args.rounds):
        for tag in ("A", "B") if r % 2 == 0 else ("B", "A"):
            for name in kernels.SOURCES:
                setattr(kernels, name, getattr(variants[tag], name))
            engine = FlowEngine(CoreOptions(), lambda finished: None)
            start = time.perf_counter()
            for batch in batches:
                engine.feed(batch)
            times[tag].append(time.perf_counter() - start)
    packets = sum(len(b) for b in batches)
    for tag, rev in (("A", args.rev_a), ("B", args.rev_b)):
        t = times[tag]
        print(f"{tag} {rev}: median {statistics.median(t):.3f} s, min {min(t):.3f} s "
              f"over {len(t)} runs of {packets:,} TCP packets")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
