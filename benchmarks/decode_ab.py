"""Paired A/B timing of the decode kernel built from two git revisions.

Usage::

    python benchmarks/decode_ab.py REV_A REV_B [--capture F] [--count N] [--rounds 10]

Like `kernel_ab.py` (whose `build` it uses): both revisions' kernels are compiled ahead of
time, loaded into one process, and the capture's raw record batches (read once, copied)
are decoded alternately by A and B (A B, B A, ...), each call with the arrays its own
revision's `decode_arrays` allocates.  The revisions may differ in the decode signature:
each variant's argument list is derived from its own `BATCH_COLUMNS` (read from the
revision's `parsers/_batch.py`) and whether it takes the tunnel depth and side array
(issue 21).  Prints each variant's median and minimum.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_ab import REPO, build, load


def _columns(rev: str) -> tuple[list[np.dtype], int, bool]:
    """(column dtypes, counter slots, takes depth + side array) of `rev`'s decode kernel."""
    batch = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:parsers/_batch.py"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    decode = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:parsers/_decode.py"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    body = batch[batch.index("BATCH_COLUMNS") : batch.index("}", batch.index("BATCH_COLUMNS"))]
    dtypes = [np.dtype(getattr(np, t)) for t in re.findall(r'^\s+"\w+": np\.dtype\(np\.(\w+)\)', body, re.M)]
    tunnels = "C_TUNNEL_BASE" in decode
    found = re.search(r"^N_TUNNEL_TYPES = (\d+)", batch, re.M)
    n_counters = 11 + int(found.group(1)) if tunnels and found else 8
    return dtypes, n_counters, tunnels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev_a")
    ap.add_argument("rev_b")
    ap.add_argument("--capture", default="/work/benchdata/synth-1M.pcap")
    ap.add_argument("--count", type=int, default=None, help="records read from the capture")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()

    import rstlens.parsers._sources as sources
    from rstlens.parsers import CaptureReader
    from rstlens.parsers._decode import RawBatch

    raws: list[RawBatch] = []
    real = sources.decode_raw

    def keep(raw, *rest):  # type: ignore[no-untyped-def]
        raws.append(RawBatch(raw.buf.copy(), raw.offs.copy(), raw.caps.copy(), raw.ts_us.copy(),
                             raw.linktype.copy(), raw.iface.copy(), raw.frame.copy()))  # fmt: skip
        return real(raw, *rest)

    sources.decode_raw = keep  # type: ignore[assignment]
    for _ in CaptureReader([args.capture], count=args.count):
        pass
    sources.decode_raw = real
    with tempfile.TemporaryDirectory(prefix="rstlens-dab-") as tmp:
        variants = {tag: (load(f"d{tag}", build(rev, Path(tmp) / tag)).decode, _columns(rev))
                    for tag, rev in (("A", args.rev_a), ("B", args.rev_b))}  # fmt: skip
    from rstlens.parsers._decode import _side_array

    def run(tag: str) -> tuple[float, int]:
        decode, (dtypes, n_counters, tunnels) = variants[tag]
        rows = 0
        start = time.perf_counter()
        for raw in raws:
            n = raw.offs.shape[0]
            cols = [np.empty(n, d) for d in dtypes]
            counters = np.zeros(n_counters, np.int64)
            head = (raw.buf, raw.offs, raw.caps, raw.linktype, raw.ts_us, raw.frame, raw.iface,
                    np.uint16(0))  # fmt: skip
            if tunnels:
                side = _side_array(n)
                rows += decode(*head, np.int64(2), *cols, side, counters)
                counters[11:].any()
            else:
                rows += decode(*head, *cols, counters)
        return time.perf_counter() - start, rows

    times: dict[str, list[float]] = {"A": [], "B": []}
    rows = {}
    for r in range(args.rounds):
        for tag in ("A", "B") if r % 2 == 0 else ("B", "A"):
            t, rows[tag] = run(tag)
            times[tag].append(t)
    records = sum(len(r) for r in raws)
    for tag, rev in (("A", args.rev_a), ("B", args.rev_b)):
        t = times[tag]
        print(f"{tag} {rev}: median {statistics.median(t):.4f} s, min {min(t):.4f} s over {len(t)} "
              f"runs of {records:,} records ({rows[tag]:,} TCP rows)")  # fmt: skip
    ratio = statistics.median(times["B"]) / statistics.median(times["A"])
    print(f"B/A median ratio {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
