"""RST verdicts finalised a linger window after their connection ends (issue #4), instead of
at the end of the input: same verdicts when the evidence arrives within the window, and
the RST log shrinks as verdicts are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rstlens
from rstlens.flows import layout as L
from rstlens.flows.engine import FlowEngine
from rstlens.options import CoreOptions
from rstlens.parsers import CaptureReader
from tools.synth import generate

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("linger") / "s.pcap"
    generate(path, 100_000, seed=11)
    return path


def _verdicts(a: rstlens.Analysis) -> pd.DataFrame:
    cols = ["cause", "subcause", "confidence", "acceptability", "ended_connection"]
    v = a.resets.set_index(["source", "frame"])[cols]
    return v.astype(object).where(v.notna(), "-").astype(str).sort_index()


@pytest.mark.parametrize("linger", [5.0, 30.0])
def test_linger_gives_the_end_of_input_verdicts(capture: Path, linger: float) -> None:
    at_end = rstlens.analyze(capture)
    lingered = rstlens.analyze(capture, linger=linger)
    assert len(at_end.resets) > 300
    pd.testing.assert_frame_equal(_verdicts(at_end), _verdicts(lingered))
    key = ["uid", "rst_count", "rst_cause", "rst_sender"]
    a = at_end.flows[key].astype(str).sort_values("uid").reset_index(drop=True)
    b = lingered.flows[key].astype(str).sort_values("uid").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_linger_on_the_samples_keeps_the_labelled_causes() -> None:
    pcaps = sorted(SAMPLES.glob("*.pcap"))
    pd.testing.assert_frame_equal(
        _verdicts(rstlens.analyze(pcaps)), _verdicts(rstlens.analyze(pcaps, linger=1.0))
    )


def test_taking_rsts_renumbers_what_points_at_the_rest(capture: Path) -> None:
    finished: list[np.ndarray] = []
    engine = FlowEngine(CoreOptions(), lambda fin: finished.append(fin.F[:, L.SERIAL].copy()))
    batches = list(CaptureReader([capture]))
    for b in batches[: len(batches) // 2]:
        engine.feed(b)
    engine.drain()
    before = engine.rsts.copy()
    done = np.concatenate(finished)
    taken = engine.take_rsts(done)
    kept = engine.rsts
    assert len(taken) and len(kept)
    assert len(taken) + len(kept) == len(before)
    assert not np.isin(kept[:, L.R_SERIAL], done).any()
    prev = kept[:, L.R_PREV_IN_FLOW]
    linked = prev >= 0
    assert (kept[prev[linked], L.R_SERIAL] == kept[linked, L.R_SERIAL]).all()
    F = engine.table.F
    open_rows = (F[:, L.ACTIVE] == 1) & (F[:, L.LAST_RST] >= 0)
    assert open_rows.any()
    assert (kept[F[open_rows, L.LAST_RST], L.R_SERIAL] == F[open_rows, L.SERIAL]).all()
    # and the run goes on from there without a hitch
    for b in batches[len(batches) // 2 :]:
        engine.feed(b)
    engine.finish()


def test_time_passing_without_packets_ends_closed_connections() -> None:
    """On a quiet live link the wall clock runs Zeek's timers (`FlowEngine.advance`)."""
    ended: list[int] = []
    engine = FlowEngine(CoreOptions(), lambda fin: ended.extend(fin.F[:, L.SERIAL].tolist()))
    batches = list(CaptureReader([SAMPLES / "closed_port_v4.pcap"]))
    for b in batches:
        engine.feed(b)
    engine.drain()
    open_before = engine.live
    assert open_before >= 3  # the refused attempts and the clean connection are still open
    engine.advance(engine.now + 1_000_000)  # 1 s later: within the 5 s close delay
    assert engine.live == open_before
    engine.advance(engine.now + 6_000_000)  # past the close delay: they end without traffic
    assert engine.live == 0
    assert len(ended) >= open_before
