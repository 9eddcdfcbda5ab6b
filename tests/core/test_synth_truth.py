"""Verdicts at scale against the benchmark generator's truth (tools.synth).

The synthetic capture mixes thousands of connections with every RST kind in Linux wire form
(refused SYNs, firewall REJECTs, aborts, data after close, lost state, injected bursts and
the secondary RSTs they cause).  It complements the real-kernel scenarios with volume and
interleaving: tens of thousands of concurrent connections and per-host TTL profiles built
across flows."""

from __future__ import annotations

import pandas as pd
import pytest

import rstlens
from tools.synth import generate


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    d = tmp_path_factory.mktemp("synth")
    generate(d / "s.pcap", 120_000, seed=7, truth_path=d / "truth.csv")
    resets = rstlens.analyze(d / "s.pcap").resets
    truth = pd.read_csv(d / "truth.csv")
    got = resets[["frame", "cause", "subcause"]].astype({"cause": str, "subcause": str})
    return truth.merge(got, on="frame", how="left", suffixes=("_true", ""))


def test_every_rst_has_a_verdict(joined: pd.DataFrame) -> None:
    assert len(joined) > 500
    assert joined.cause.notna().all()


@pytest.mark.parametrize("cause", ["closed_port", "half_open", "abort", "middlebox"])
def test_cause_recall(joined: pd.DataFrame, cause: str) -> None:
    """Where the capture saw the connection start, every RST gets its true cause; where it
    did not, only `unknown` is an acceptable miss."""
    rows = joined[joined.cause_true == cause]
    assert len(rows) >= 20
    seen = rows[rows.conn_start_seen == 1]
    assert (seen.cause == cause).all(), seen[seen.cause != cause].head().to_string()
    cut = rows[rows.conn_start_seen == 0]
    assert cut.cause.isin([cause, "unknown"]).all(), cut[~cut.cause.isin([cause, "unknown"])].to_string()


def test_no_false_middlebox(joined: pd.DataFrame) -> None:
    innocent = joined[joined.cause_true != "middlebox"]
    assert (innocent.cause != "middlebox").all()


def test_subcauses(joined: pd.DataFrame) -> None:
    dac = joined[joined.subcause_true == "data_after_close"]
    assert len(dac) and (dac.subcause == "data_after_close").all()
    reject = joined[(joined.cause_true == "middlebox") & (joined.subcause_true == "reject")]
    assert len(reject) and (reject.subcause == "reject").all()
