"""The bundled sample_pcaps/ (a committed run of the real-kernel scenarios, with labels):
the README's first command analyses them, and every RST must get its labelled cause.

Unlike test_ground_truth this needs no root: it guards the verdicts on fixed captures."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pandas as pd

import rstlens

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"


def _labels() -> pd.DataFrame:
    frames = []
    for path in sorted(SAMPLES.glob("*.labels.csv")):
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        frames.append(pd.DataFrame(rows, columns=["scenario", "frame", "cause", "true_sender"]))
    return pd.concat(frames, ignore_index=True)


def test_samples_are_small_and_labelled() -> None:
    pcaps = sorted(SAMPLES.glob("*.pcap"))
    assert len(pcaps) >= 15
    assert sum(p.stat().st_size for p in pcaps) < 1_000_000
    for p in pcaps:
        assert p.with_name(p.stem + ".labels.csv").exists(), p


def test_sample_verdicts_match_labels() -> None:
    labels = _labels()
    got = []
    for name, group in labels.groupby("scenario"):
        resets = rstlens.analyze(SAMPLES / f"{name}.pcap").resets
        verdict = dict(zip(resets.frame.astype(int), resets.cause.astype(str), strict=True))
        got += [(name, int(f), c, verdict.get(int(f))) for f, c in zip(group.frame, group.cause, strict=True)]
    wrong = [g for g in got if g[2] != g[3]]
    assert len(got) >= 30
    assert not wrong, wrong


def test_readme_command_runs_on_the_samples(tmp_path: Path) -> None:
    """`rstlens analyze sample_pcaps/*.pcap -o out` as a newcomer runs it."""
    exe = Path(sys.executable).with_name("rstlens")
    pcaps = [str(p) for p in sorted(SAMPLES.glob("*.pcap"))]
    proc = subprocess.run([str(exe), "analyze", *pcaps, "-o", str(tmp_path)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "RSTs by cause" in proc.stderr
    for cause in ("closed_port", "half_open", "abort", "middlebox"):
        assert cause in proc.stderr
    flows = pd.read_parquet(tmp_path / "flows.parquet")
    resets = pd.read_parquet(tmp_path / "resets.parquet")
    labels = _labels()
    assert len(resets) == len(labels)
    assert set(resets.uid) <= set(flows.uid)
    # read as one merged timeline, the verdicts are still the labelled ones
    got = {(str(s), int(f)): str(c) for s, f, c in zip(resets.source, resets.frame, resets.cause, strict=True)}
    for scenario, frame, cause in zip(labels.scenario, labels.frame, labels.cause, strict=True):
        assert got[(f"{scenario}.pcap", int(frame))] == cause, (scenario, frame)
