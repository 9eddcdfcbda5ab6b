"""Confidences that mean something (issue 17): of the verdicts given confidence c, at least
about c are right, on every labelled RST there is (tools.calibration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tools import calibration as C


def _rows(true: list[str], got: list[str], conf: list[float]) -> pd.DataFrame:
    n = len(true)
    return pd.DataFrame({"set": ["t"] * n, "source": ["x"] * n, "frame": range(n),
                         "true_cause": true, "cause": got, "subcause": [None] * n,
                         "confidence": conf})  # fmt: skip


def test_reliability_counts_right_verdicts_per_bin_and_abstentions_apart() -> None:
    rows = _rows(["abort", "abort", "half_open", "abort", "closed_port"],
                 ["abort", "half_open", "half_open", "unknown", "closed_port"],
                 [0.85, 0.85, 0.95, 0.2, 0.95])  # fmt: skip
    t = C.reliability(rows).set_index("confidence")
    assert (t.loc["[0.80, 0.90)", "verdicts"], t.loc["[0.80, 0.90)", "right"]) == (2, 1)
    assert (t.loc["[0.90, 1.00]", "verdicts"], t.loc["[0.90, 1.00]", "right"]) == (2, 2)
    assert t.loc["unknown (abstained)", "verdicts"] == 1
    bad = C.miscalibrated(rows)
    assert bad.confidence.tolist() == [0.85]  # half right at 0.85


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    return C.synth(120_000, seed=7)


def _assert_calibrated(rows: pd.DataFrame) -> None:
    assert len(C.scored(rows)) >= 30
    bad = C.miscalibrated(rows)
    assert bad.empty, C.by_confidence(rows).to_string()


def test_synthetic_truth_is_calibrated(synthetic: pd.DataFrame) -> None:
    _assert_calibrated(synthetic)


@pytest.mark.netns
@pytest.mark.slow
def test_lab_and_synthetic_truth_are_calibrated(ground_truth: tuple[Path, dict[str, Any]],
                                                synthetic: pd.DataFrame) -> None:  # fmt: skip
    outdir, _ = ground_truth
    lab = C.lab(outdir)
    assert len(lab) >= 30
    _assert_calibrated(lab)
    _assert_calibrated(pd.concat([lab, synthetic], ignore_index=True))


def test_field_truth_is_calibrated(synthetic: pd.DataFrame) -> None:
    if not C.FIELD_TRUTH.exists() or not C.FIELD_CORPUS.exists():
        pytest.skip("no reviewed field truth yet (tests/core/data/field_rst_truth.csv)")
    _assert_calibrated(pd.concat([C.field(), synthetic], ignore_index=True))
