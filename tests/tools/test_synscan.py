"""tools.synscan: a SYN scan of closed ports, every connection refused by the kernel."""

from __future__ import annotations

from pathlib import Path

import rstlens
from tools.counts import parse_count
from tools.synscan import generate


def test_synscan_is_refused_connections(tmp_path: Path) -> None:
    cap = tmp_path / "scan.pcap"
    assert generate(cap, 300, seed=3) == 600
    assert cap.stat().st_size == 24 + 600 * (16 + 54)
    result = rstlens.analyze([str(cap)])
    assert result.summary.packets == 600
    assert len(result.flows) == 300 and set(result.flows["conn_state"]) == {"REJ"}
    assert len(result.resets) == 300 and set(result.resets["cause"]) == {"closed_port"}
    assert generate(tmp_path / "again.pcap", 300, seed=3) == 600
    assert (tmp_path / "again.pcap").read_bytes() == cap.read_bytes()  # deterministic


def test_parse_count() -> None:
    assert (parse_count("500k"), parse_count("1M"), parse_count("42")) == (500_000, 1_000_000, 42)
