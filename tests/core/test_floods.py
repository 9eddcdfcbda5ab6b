"""SYN floods and scans: small state per embryonic connection, evictions counted, and the
summary telling that a flood or a scan happened (issue 20, issue 22 §1).

Expected values come from the generator's own packet arrays (`tools.synscan`): who sent
each SYN, with which TTL and port, and how many distinct sources and targets there are."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import rstlens
from rstlens.flows import engine as flow_engine
from rstlens.flows.engine import FlowEngine, resident_bytes
from rstlens.options import CoreOptions
from rstlens.parsers import CaptureReader
from rstlens.summary import Summary
from tools import synscan

# What an embryonic connection may cost in the flow table (K + E rows of 64 bytes, DL,
# free list, row kind, hash-table share): a full row is ~1,000 bytes
EMBRYONIC_MAX_BYTES = 256


def _records(path: Path) -> np.ndarray:
    return np.fromfile(path, synscan._RECORD, offset=24)


def _resident_per_connection(path: Path) -> tuple[float, int]:
    """Feed the capture (no emission: nothing expires in its 1 s) and measure the flow
    table's resident bytes per open connection (mincore), above an empty table's.  numpy
    asks for huge pages on large arrays (madvise), so a touched 2 MB region may count
    whole: enough connections amortise it (20,000 had measured 195 or 283 bytes from run
    to run; 100,000 measure ~166)."""
    engine = FlowEngine(CoreOptions(), lambda _: None, initial_flows=1 << 16)
    empty = resident_bytes(engine.table.arrays())
    for b in CaptureReader([path]):
        engine.feed(b)
    live = engine.live
    return (resident_bytes(engine.table.arrays()) - empty) / live, live


def test_an_embryonic_connection_is_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flood, scan = tmp_path / "flood.pcap", tmp_path / "scan.pcap"
    synscan.generate_flood(flood, 100_000, seed=3)  # 1 s: nothing expires; THP pages amortised
    synscan.generate(scan, 10_000, seed=3)  # SYN + RST: a reset row each (one line more)
    per_embryonic, live = _resident_per_connection(flood)
    assert live == 100_000
    assert per_embryonic < EMBRYONIC_MAX_BYTES
    per_reset, live = _resident_per_connection(scan)
    assert live == 10_000  # reset, but within the close delay
    monkeypatch.setattr(flow_engine, "RESET_ROWS", False)  # every one a full row
    per_full, live = _resident_per_connection(scan)
    assert live == 10_000
    assert per_full > 4 * per_embryonic  # the measurement sees the full rows
    assert per_reset < per_full / 2  # (test_reset_rows measures it over more connections)


def test_a_flood_is_recorded_from_its_syns(tmp_path: Path) -> None:
    """Embryonic connections come out as the full path makes them: one S0 per SYN, with
    the SYN's addresses, ports and TTL."""
    cap = tmp_path / "flood.pcap"
    synscan.generate_flood(cap, 3_000, seed=4)
    rec = _records(cap)
    result = rstlens.analyze([str(cap)], outdir=tmp_path / "out")
    flows = pq.read_table(tmp_path / "out" / "flows.parquet").to_pandas()
    assert len(flows) == 3_000
    assert set(flows["conn_state"]) == {"S0"} and set(flows["history"]) == {"S"}
    assert (flows["orig_pkts"] == 1).all() and (flows["resp_pkts"] == 0).all()
    assert set(flows["end_reason"]) == {"end_of_capture"}  # 30 ms of capture: nothing expired
    by_port = flows.set_index("orig_h")
    src = [".".join(str(int(a) >> s & 255) for s in (24, 16, 8, 0)) for a in rec["ip_src"]]
    assert sorted(by_port.index) == sorted(src)
    assert by_port.loc[src, "orig_p"].tolist() == rec["sport"].tolist()
    assert by_port.loc[src, "orig_ttl_min"].tolist() == rec["ttl"].tolist()
    assert set(flows["resp_h"]) == {"10.2.0.10"} and set(flows["resp_p"]) == {80}
    assert result.summary.core["connections"] == 3_000


def test_summary_names_a_flood_and_a_scan(tmp_path: Path) -> None:
    flood, scan = tmp_path / "flood.pcap", tmp_path / "scan.pcap"
    synscan.generate_flood(flood, 5_000, seed=5)
    synscan.generate(scan, 2_000, seed=5)
    (f,) = rstlens.analyze([str(flood)]).summary.surges
    assert (f.kind, f.host, f.attempts, f.targets) == ("syn_flood", "10.2.0.10", 5_000, 1)
    assert abs(f.sources - 5_000) < 0.15 * 5_000  # a HyperLogLog estimate: ~6.5 % error
    assert f.rate == pytest.approx(5_000 / ((5_000 - 1) * 10e-6), rel=1e-3)
    rec = _records(scan)[0::2]  # the SYNs
    targets = len(set(zip(rec["ip_dst"].tolist(), rec["dport"].tolist(), strict=True)))
    (s,) = rstlens.analyze([str(scan)]).summary.surges
    assert (s.kind, s.host, s.attempts, s.sources) == ("syn_scan", "10.99.0.1", 2_000, 1)
    assert abs(s.targets - targets) < 0.15 * targets
    # in the run's metadata too, typed again when read back
    rstlens.analyze([str(scan)], outdir=tmp_path / "o")
    meta = json.loads(pq.read_metadata(tmp_path / "o" / "flows.parquet").metadata[b"rstlens_run"])
    assert Summary.from_dict(meta["summary"]).surges == [s]


def test_ordinary_traffic_is_no_flood(tmp_path: Path) -> None:
    from tools.synth import generate

    cap = tmp_path / "synth.pcap"
    generate(cap, 40_000, seed=2)
    assert rstlens.analyze([str(cap)]).summary.surges == []


def test_flood_past_max_flows_is_evicted_and_counted(tmp_path: Path) -> None:
    cap = tmp_path / "flood.pcap"
    synscan.generate_flood(cap, 12_000, seed=6)
    result = rstlens.analyze([str(cap)], outdir=tmp_path / "out", max_flows=4_096)
    flows = pq.read_table(tmp_path / "out" / "flows.parquet", columns=["end_reason"]).to_pandas()
    evicted = int((flows["end_reason"] == "evicted").sum())
    assert len(flows) == 12_000 and evicted > 0
    assert result.summary.core["evicted"] == evicted
    assert any("evicted" in w for w in result.summary.warnings)


@pytest.mark.flood_big
def test_ten_million_syn_flood_stays_under_a_gigabyte(tmp_path: Path) -> None:
    """10 M distinct sources in 10 s (1 µs apart): 5 M would be open at once, so the
    default max_flows (1 M) evicts; the whole process stays under 1 GB."""
    cap = tmp_path / "flood10m.pcap"
    synscan.generate_flood(cap, 10_000_000, seed=1, gap_us=1)
    out = tmp_path / "out"
    exe = Path(sys.executable).parent / "rstlens"
    done = subprocess.run([str(exe), "analyze", str(cap), "-o", str(out), "--json"],
                          capture_output=True, check=False)  # fmt: skip
    summary = json.loads(done.stdout)
    assert done.returncode == 0, summary
    # the largest child this process waited for (only the analysis is a child here)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_mb = usage.ru_maxrss / 1024
    print(f"10 M SYN flood: peak RSS {peak_mb:.0f} MB, evicted {summary['core']['evicted']:,}")
    assert peak_mb < 1024
    assert summary["connections"] == 10_000_000
    assert summary["core"]["evicted"] > 0
    assert [x["kind"] for x in summary["surges"]] == ["syn_flood"]

