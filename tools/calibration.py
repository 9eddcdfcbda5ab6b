"""Reliability of rstlens' confidences on labelled RSTs (issue 17, "Confidence that means something").

Of the verdicts given confidence c, at least about c should be right.  This collects every RST
whose true cause is known, from up to three sources, and tabulates verdicts and right ones per
confidence:

* ``lab``: the real-kernel scenarios (``tools.scenarios``), labelled from captures inside
  each namespace (``<name>.pcap`` + ``<name>.labels.csv`` in a directory it writes);
* ``synth``: the benchmark generator's truth (``tools.synth``);
* ``field``: the hand-reviewed field corpus (``tests/core/data/field_rst_truth.csv``), when
  it is there.

A verdict is right when its cause is the true cause.  `unknown` verdicts name no cause: they
are counted apart (``abstained``) rather than scored, and a true cause of `unknown` (a field
RST the reviewer could not decide) is left out.

Usage::

    python -m tools.calibration [--lab DIR | --run-lab] [--synth PACKETS] [--field CSV]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

import rstlens

REPO = Path(__file__).resolve().parents[1]
FIELD_TRUTH = REPO / "tests" / "core" / "data" / "field_rst_truth.csv"
FIELD_CORPUS = REPO.parent / "shared" / "corpus" / "field"
COLUMNS = ["set", "source", "frame", "true_cause", "cause", "subcause", "confidence"]
# the confidence bins of the README table: [lower, upper)
BINS = (0.0, 0.5, 0.7, 0.8, 0.9, 1.01)


def _verdicts(path: Path) -> pd.DataFrame:
    r = rstlens.analyze(path).resets
    return pd.DataFrame({"frame": r.frame.astype(int), "cause": r.cause.astype(str),
                         "subcause": r.subcause.astype(str), "confidence": r.confidence.astype(float).round(4)})  # fmt: skip


def _joined(name: str, source: str, path: Path, truth: pd.DataFrame) -> pd.DataFrame:
    """Verdicts of `path` joined to `truth` (columns frame, true_cause) on the frame."""
    got = _verdicts(path).merge(truth, on="frame", how="inner")
    got.insert(0, "source", source)
    got.insert(0, "set", name)
    return got[COLUMNS]


def lab(directory: Path) -> pd.DataFrame:
    """Every labelled RST of the scenario captures in `directory`."""
    parts = []
    for labels in sorted(directory.glob("*.labels.csv")):
        name = labels.name[: -len(".labels.csv")]
        with open(labels, newline="") as fh:
            rows = [(int(r["frame"]), r["cause"]) for r in csv.DictReader(fh)]
        if rows:
            truth = pd.DataFrame(rows, columns=["frame", "true_cause"])
            parts.append(_joined("lab", name, directory / f"{name}.pcap", truth))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


def run_lab(directory: Path) -> pd.DataFrame:
    """Run the real-kernel scenarios into `directory` (root, network namespaces), then `lab`."""
    from tools.scenarios import run_scenarios

    run_scenarios(directory, keep_provenance=True)
    return lab(directory)


def synth(packets: int = 120_000, seed: int = 7, workdir: Path | None = None) -> pd.DataFrame:
    """The synthetic capture's RSTs (test_synth_truth's capture by default)."""
    from tools.synth import generate

    with tempfile.TemporaryDirectory(prefix="rstlens-calibration-") as tmp:
        d = workdir or Path(tmp)
        generate(d / "s.pcap", packets, seed=seed, truth_path=d / "truth.csv")
        truth = pd.read_csv(d / "truth.csv")[["frame", "cause"]].rename(columns={"cause": "true_cause"})
        return _joined("synth", f"synth-{packets}-{seed}", d / "s.pcap", truth)


def field(truth_csv: Path = FIELD_TRUTH, corpus: Path = FIELD_CORPUS) -> pd.DataFrame:
    """The reviewed field RSTs: a CSV with the capture's path under `corpus` (column `source`),
    `frame` and the reviewed `cause` (tests/core/data/field_rst_truth.csv)."""
    truth = pd.read_csv(truth_csv)
    parts = []
    for file, rows in truth.groupby("source"):
        t = rows[["frame", "cause"]].rename(columns={"cause": "true_cause"})
        parts.append(_joined("field", str(file), corpus / str(file), t))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


def scored(rows: pd.DataFrame) -> pd.DataFrame:
    """The verdicts that name a cause, of RSTs whose true cause is known, with `right`."""
    known = rows[(rows.true_cause != "unknown") & (rows.cause != "unknown")].copy()
    known["right"] = known.cause == known.true_cause
    return known


def by_confidence(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct confidence: verdicts, right, share right (the rules' confidences
    are a few named constants, so each is its own bin)."""
    s = scored(rows)
    t = s.groupby("confidence").right.agg(verdicts="size", right="sum").reset_index()
    t["share_right"] = t.right / t.verdicts
    return t


def reliability(rows: pd.DataFrame, bins: Iterable[float] = BINS) -> pd.DataFrame:
    """The reliability table: per confidence bin [lo, hi), verdicts, right, share right and the
    mean confidence given; last row: `unknown` verdicts (abstentions)."""
    edges = list(bins)
    s = scored(rows)
    out = []
    for lo, hi in itertools.pairwise(edges):
        b = s[(s.confidence >= lo) & (s.confidence < hi)]
        out.append({"confidence": f"[{lo:.2f}, {min(hi, 1.0):.2f}{']' if hi > 1 else ')'}",
                    "verdicts": len(b), "right": int(b.right.sum()),
                    "share_right": b.right.mean() if len(b) else float("nan"),
                    "mean_confidence": b.confidence.mean() if len(b) else float("nan")})  # fmt: skip
    abstained = rows[(rows.cause == "unknown") & (rows.true_cause != "unknown")]
    out.append({"confidence": "unknown (abstained)", "verdicts": len(abstained), "right": 0,
                "share_right": float("nan"),
                "mean_confidence": abstained.confidence.mean() if len(abstained) else float("nan")})  # fmt: skip
    return pd.DataFrame(out)


def miscalibrated(rows: pd.DataFrame, slack: float = 0.05) -> pd.DataFrame:
    """The confidences whose verdicts are right less often than the confidence says (minus
    `slack`, "about c")."""
    t = by_confidence(rows)
    return t[t.share_right < t.confidence - slack]


def markdown(table: pd.DataFrame) -> str:
    lines = ["| confidence | verdicts | right | share right | mean confidence |", "|---|---:|---:|---:|---:|"]
    for r in table.itertuples():
        share = "" if pd.isna(r.share_right) else f"{r.share_right:.3f}"
        mean = "" if pd.isna(r.mean_confidence) else f"{r.mean_confidence:.2f}"
        lines.append(f"| {r.confidence} | {r.verdicts:,} | {r.right:,} | {share} | {mean} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--lab", type=Path, help="directory with scenario captures and labels")
    ap.add_argument("--run-lab", type=Path, help="run the scenarios into this directory first")
    ap.add_argument("--synth", type=int, default=120_000, help="synthetic packets (0: none)")
    ap.add_argument("--field", type=Path, default=FIELD_TRUTH, help="reviewed field truth CSV")
    a = ap.parse_args(argv)
    parts = []
    if a.run_lab:
        parts.append(run_lab(a.run_lab))
    elif a.lab:
        parts.append(lab(a.lab))
    if a.synth:
        parts.append(synth(a.synth))
    if a.field and a.field.exists():
        parts.append(field(a.field))
    rows = pd.concat(parts, ignore_index=True)
    for name, part in rows.groupby("set"):
        print(f"{name}: {len(part):,} labelled RSTs", file=sys.stderr)
    print(markdown(reliability(rows)))
    print()
    print(by_confidence(rows).to_string(index=False))
    bad = miscalibrated(rows)
    if not bad.empty:
        print("\nmiscalibrated:\n" + bad.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
