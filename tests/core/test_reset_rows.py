"""Reset rows (`flows.layout.ROW_RESET`, issue 22 §1): a connection that is a plain SYN and an
RST waits out Zeek's close delay as its two packets, replayed when a third packet comes
(promotion), when it expires, when it is evicted and at the end of the input.

Expected values are Zeek's rules for the packets written here (REJ and `Sr` for a SYN
answered by RST+ACK, a SYN on a closed connection is a reuse, the close delay of 5 s) and
the capture's own frame numbers; every scenario is also run with reset rows turned off
(`engine.RESET_ROWS`: every connection a full row, the path before reset rows) and must
give the same tables, row for row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import A, R, S, frame, write_pcap

import rstlens
from rstlens.flows import engine as flow_engine
from rstlens.flows.engine import FlowEngine, resident_bytes
from rstlens.options import CoreOptions
from rstlens.parsers import CaptureReader
from tools import synscan

T0 = 1_700_000_000.0
SCANNER, TARGET = "10.0.0.9", "10.0.0.1"


def _rej(t: float, sport: int, dport: int = 23, isn: int = 5000, ip_id: int = 77,
         ttl: int = 60) -> list[tuple[float, bytes]]:  # fmt: skip
    """A SYN to a closed port and the target's RST+ACK (seq 0, ack ISN + 1) 1 ms later."""
    return [
        (T0 + t, frame(SCANNER, sport, TARGET, dport, S, seq=isn)),
        (T0 + t + 0.001, frame(TARGET, dport, SCANNER, sport, R | A, seq=0, ack=isn + 1,
                               ip_id=ip_id, ttl=ttl, win=0)),
    ]  # fmt: skip


def _run(tmp_path: Path, packets: list[tuple[float, bytes]], monkeypatch: pytest.MonkeyPatch,
         **kw: object) -> tuple[rstlens.Analysis, rstlens.Analysis]:  # fmt: skip
    """The capture analysed with reset rows (returned first) and without; the two must agree."""
    cap = write_pcap(tmp_path / "c.pcap", packets)
    out = []
    for on in (True, False):
        monkeypatch.setattr(flow_engine, "RESET_ROWS", on)
        out.append(rstlens.analyze([str(cap)], outdir=tmp_path / f"out-{on}", **kw))  # type: ignore[arg-type]
    with_rows, without = out
    pd.testing.assert_frame_equal(with_rows.flows, without.flows)
    pd.testing.assert_frame_equal(with_rows.resets, without.resets)
    assert with_rows.summary.core == without.summary.core
    return with_rows, without


def test_a_rejected_syn_expires_after_the_close_delay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # another connection's packet 7 s later lets the sweep find the reset row due (5 s)
    later = (T0 + 7, frame("10.0.0.50", 1111, "10.0.0.51", 80, S, seq=1))
    res, _ = _run(tmp_path, [*_rej(0, 40000), later], monkeypatch)
    rej = res.flows[res.flows["orig_p"] == 40000].iloc[0]
    assert (rej["conn_state"], rej["history"], rej["end_reason"]) == ("REJ", "Sr", "rst")
    assert (rej["orig_pkts"], rej["resp_pkts"]) == (1, 1)
    (rst,) = res.resets.itertuples()
    assert (rst.uid, rst.direction, rst.frame, rst.ack, rst.ttl) == (rej["uid"], "resp", 2, 5001, 60)
    assert rst.duplicate_of is None or pd.isna(rst.duplicate_of)
    assert res.summary.core["rst_packets"] == 1


def test_end_of_input_emits_a_reset_row_as_reset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res, _ = _run(tmp_path, _rej(0, 40000), monkeypatch)
    (rej,) = res.flows.itertuples()
    assert (rej.conn_state, rej.history, rej.end_reason) == ("REJ", "Sr", "rst")
    assert len(res.resets) == 1


def test_a_copy_of_the_rst_promotes_and_is_marked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third packet within the close delay: a second tap's copy of the RST (same IP ID,
    one hop further on, 0.2 ms later).  The connection becomes a full row by replaying its
    SYN and RST; the RST is logged once and the copy points at it."""
    packets = _rej(0, 40000, ip_id=77, ttl=60)
    packets.append((T0 + 0.0012, frame(TARGET, 23, SCANNER, 40000, R | A, seq=0, ack=5001,
                                       ip_id=77, ttl=59, win=0)))  # fmt: skip
    res, _ = _run(tmp_path, packets, monkeypatch)
    (rej,) = res.flows.itertuples()
    assert (rej.conn_state, rej.orig_pkts, rej.resp_pkts, rej.resp_dups) == ("REJ", 1, 2, 1)
    assert res.resets["frame"].tolist() == [2, 3]
    assert res.resets["duplicate_of"].tolist()[1] == 2
    assert res.summary.core["rst_packets"] == 2 and res.summary.core["capture_duplicates"] == 1


def test_a_syn_after_the_rst_is_a_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scanner's SYN retransmitted 1 s later, within the close delay: the connection has
    closed (the RST), so Zeek takes the SYN for a new connection (IsReuse)."""
    packets = [*_rej(0, 40000), (T0 + 1, frame(SCANNER, 40000, TARGET, 23, S, seq=5000))]
    res, _ = _run(tmp_path, packets, monkeypatch)
    # (connections with RSTs are written once their verdicts are final: after the S0)
    flows = res.flows.sort_values("ts")
    assert flows["conn_state"].tolist() == ["REJ", "S0"]
    assert flows["history"].tolist() == ["Sr", "S"]
    assert res.resets["uid"].tolist() == [flows["uid"].iloc[0]]
    assert res.summary.core["port_reuse"] == 1


def test_rsts_come_out_in_arrival_order_after_a_late_promotion(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A reset row's RST is logged when the row is replayed: after another connection's
    later RST here.  resets keeps capture order (and the frames say which is which)."""
    other = [
        (T0 + 0.010, frame("10.0.0.5", 5000, "10.0.0.6", 80, S, seq=100)),
        (T0 + 0.011, frame("10.0.0.6", 80, "10.0.0.5", 5000, S | A, seq=900, ack=101)),
        (T0 + 0.012, frame("10.0.0.5", 5000, "10.0.0.6", 80, A, seq=101, ack=901)),
        (T0 + 0.013, frame("10.0.0.5", 5000, "10.0.0.6", 80, R | A, seq=101, ack=901)),
    ]
    copy = (T0 + 0.014, frame(TARGET, 23, SCANNER, 40000, R | A, seq=0, ack=5001, ip_id=77,
                              ttl=59, win=0))  # fmt: skip
    res, _ = _run(tmp_path, [*_rej(0, 40000), *other, copy], monkeypatch)
    assert res.resets["frame"].tolist() == [2, 6, 7]
    assert res.resets["ts"].is_monotonic_increasing


def test_reset_rows_past_max_flows_are_evicted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """64 rejected SYNs, 1 ms apart, into a table of 16: the oldest are evicted (their last
    packet, the RST, is the oldest), each with its one RST."""
    packets = [p for k in range(64) for p in _rej(0.002 * k, 41000 + k, isn=7000 + k)]
    res, _ = _run(tmp_path, packets, monkeypatch, max_flows=16)
    flows = res.flows
    assert len(flows) == 64 and set(flows["conn_state"]) == {"REJ"}
    evicted = int((flows["end_reason"] == "evicted").sum())
    assert evicted > 0 and res.summary.core["evicted"] == evicted
    assert sorted(res.resets["uid"]) == sorted(flows["uid"])
    assert res.resets["ack"].tolist() == [7001 + k for k in range(64)]


@pytest.mark.parametrize("linger", [0.5, 3.0])
def test_linger_finalises_each_rst_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linger: float) -> None:
    cap = tmp_path / "scan.pcap"
    synscan.generate(cap, 3_000, seed=7)  # 60 ms of capture; more is spread over 12 s below
    rec = np.fromfile(cap, synscan._RECORD, offset=24)
    t = synscan.START_US + np.arange(len(rec), dtype=np.int64) * 4_000  # 250 packets/s: 12 s
    rec["ts_sec"], rec["ts_usec"] = t // 1_000_000, t % 1_000_000
    cap.write_bytes(cap.read_bytes()[:24] + rec.tobytes())
    out = []
    for on in (True, False):
        monkeypatch.setattr(flow_engine, "RESET_ROWS", on)
        out.append(rstlens.analyze([str(cap)], outdir=tmp_path / f"o-{on}", linger=linger))
    res, full = out
    assert len(res.resets) == 3_000 and res.resets["uid"].is_unique
    assert sorted(res.resets["uid"]) == sorted(res.flows["uid"])
    assert set(res.flows["conn_state"]) == {"REJ"}
    # rows are written as verdicts become final (by connection), so compare as sets of rows
    key = ["uid", "frame"]
    pd.testing.assert_frame_equal(res.resets.sort_values(key).reset_index(drop=True),
                                  full.resets.sort_values(key).reset_index(drop=True))  # fmt: skip
    pd.testing.assert_frame_equal(res.flows.sort_values("uid").reset_index(drop=True),
                                  full.flows.sort_values("uid").reset_index(drop=True))  # fmt: skip


def test_a_reset_connection_is_small(tmp_path: Path) -> None:
    """Within the close delay a scan's connection costs its K, E and X lines and a little
    more (mincore over the table), not a full row."""
    cap = tmp_path / "scan.pcap"
    # 2 s: nothing expires; enough rows that huge pages touched whole amortise (as in
    # test_floods)
    synscan.generate(cap, 100_000, seed=3)
    engine = FlowEngine(CoreOptions(), lambda _: None, initial_flows=1 << 17)
    empty = resident_bytes(engine.table.arrays())
    for b in CaptureReader([cap]):
        engine.feed(b)
    assert engine.live == 100_000
    per_connection = (resident_bytes(engine.table.arrays()) - empty) / engine.live
    assert per_connection < 3 * 64 + 128  # K + E + X, plus DL, A, free, T and page rounding
    assert engine.nr[0] == 0 and engine.nr[1] == 100_000  # no RST in R, every one numbered
