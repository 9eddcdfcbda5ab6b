"""`EndedConnections` keeps the latest-ended connections up to its capacity, whenever it
evicts: batches of ended connections in arbitrary end order give the same rows and the same
eviction count as one sort of everything added (the reference below)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builders import T0, A, P, R, S, frame, write_pcap

import rstlens
from rstlens import pipeline
from rstlens.attribution import ended as E
from rstlens.flows import layout as L


def _rows(rng: np.random.Generator, n: int, first_serial: int) -> tuple[np.ndarray, np.ndarray]:
    F = np.zeros((n, L.NF), np.int64)
    F[:, L.HASH] = rng.integers(0, 1 << 40, n)
    F[:, L.SERIAL] = np.arange(first_serial, first_serial + n)
    F[:, L.PKT_LAST] = rng.integers(0, 50, n)  # many ties
    K = rng.integers(0, 1 << 62, (n, L.NKO)).astype(np.uint64)
    return F, K


def test_lazy_eviction_keeps_the_latest_ended_like_one_sort() -> None:
    rng = np.random.default_rng(7)
    ended = E.EndedConnections(capacity=1000)
    added: list[np.ndarray] = []
    serial = 0
    for n in rng.integers(1, 400, 40):
        F, K = _rows(rng, int(n), serial)
        serial += int(n)
        ended.add(F, K)
        added.append(F)
    everything = np.concatenate(added)
    # reference: order by (end time, arrival), keep the last `capacity`
    order = np.lexsort((np.arange(everything.shape[0]), everything[:, L.PKT_LAST]))
    want = np.sort(everything[order[-1000:], L.SERIAL])
    assert len(ended) == 1000
    assert ended.evicted == everything.shape[0] - 1000
    kept = np.concatenate(ended._blocks)
    assert np.array_equal(np.sort(kept[:, E._SERIAL]), want)


def test_under_capacity_nothing_is_evicted() -> None:
    rng = np.random.default_rng(3)
    ended = E.EndedConnections(capacity=1000)
    F, K = _rows(rng, 999, 0)
    ended.add(F, K)
    assert (len(ended), ended.evicted) == (999, 0)


def _late_rst_capture(path: Path, open_at_end: int) -> Path:
    """An established connection that goes idle and expires (Zeek's 300 s inactivity
    timer), the client's RST at its next sequence number 400 s later (a CLOSE_WAIT socket
    aborted: `ctx.old_connection`), then `open_at_end` SYNs still unanswered when the
    capture ends."""
    c, s = "10.0.0.1", "10.0.0.2"
    packets = [
        (T0, frame(c, 40000, s, 80, S, seq=1000)),
        (T0 + 0.01, frame(s, 80, c, 40000, S | A, seq=5000, ack=1001)),
        (T0 + 0.02, frame(c, 40000, s, 80, A, seq=1001, ack=5001)),
        (T0 + 0.03, frame(c, 40000, s, 80, A | P, seq=1001, ack=5001, data=b"x" * 10)),
        (T0 + 0.04, frame(s, 80, c, 40000, A, seq=5001, ack=1011)),
        (T0 + 400, frame(c, 40000, s, 80, R | A, seq=1011, ack=5001)),
    ]
    packets += [(T0 + 400.5 + k * 1e-3, frame(f"10.1.{k >> 8}.{k & 255}", 20000, s, 443, S, seq=k))
                for k in range(open_at_end)]  # fmt: skip
    write_pcap(path, packets)
    return path


@pytest.mark.parametrize("jobs", [1, 2])  # -j 2: the rows reach the records thread as copies
def test_connections_open_at_the_end_neither_are_remembered_nor_evict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int,
) -> None:  # fmt: skip
    """The connections still open when the input ends are not remembered: none can be an
    RST's earlier connection, and, ending last, they used to evict the ones that can.  With
    room for 4, the 10 attempts open at the end left the expired connection remembered, so
    its late RST is still told an abort of the old connection."""
    monkeypatch.setattr(pipeline, "EndedConnections", lambda: E.EndedConnections(capacity=4))
    capture = _late_rst_capture(tmp_path / "late.pcap", open_at_end=10)
    run = rstlens.analyze([str(capture)], outdir=tmp_path / "out", jobs=jobs)
    (rst,) = run.resets.itertuples()
    assert (rst.cause, "ctx.old_connection" in rst.evidence) == ("abort", True)
    assert (run.summary.core["ended_remembered"], run.summary.core["ended_evicted"]) == (1, 0)
    ends = run.flows.set_index("orig_h").end_reason
    assert ends["10.0.0.1"].tolist() == ["idle", "rst"]  # the expired one and the RST's own
    assert (ends.drop("10.0.0.1") == "end_of_capture").sum() == 10
