"""rstlens.reports' tidy frames, each checked against a count made independently from the
Parquet files with pyarrow (or from first principles on the bundled samples)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from report_helpers import analyze_samples, parquet_counts

from rstlens import reports


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return analyze_samples(tmp_path_factory.mktemp("frames") / "out")


@pytest.fixture(scope="module")
def run(run_dir: Path) -> reports.Run:
    return reports.load(run_dir)


@pytest.fixture(scope="module")
def rows(run_dir: Path) -> tuple[list[dict], list[dict]]:
    return (pq.read_table(run_dir / "flows.parquet").to_pylist(), pq.read_table(run_dir / "resets.parquet").to_pylist())


def test_import_is_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, rstlens.reports; print(any(m in sys.modules for m in ('pandas', 'jinja2', 'pyarrow')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_causes_match_parquet(run: reports.Run, run_dir: Path, rows) -> None:
    got = reports.causes(run.resets)
    truth = parquet_counts(run_dir)["by_cause_subcause"]
    assert {(r.cause, r.subcause): r.rsts for r in got.itertuples()} == dict(truth)
    conns = defaultdict(set)
    for r in rows[1]:
        conns[(r["cause"], r["subcause"] or "")].add(r["uid"])
    assert {(r.cause, r.subcause): r.connections for r in got.itertuples()} == {k: len(v) for k, v in conns.items()}
    assert got["share"].sum() == pytest.approx(1.0)
    # the same from a run directory
    pd.testing.assert_frame_equal(reports.causes(run_dir), got)


def test_timeline_counts_every_rst_and_attempt(run: reports.Run, rows) -> None:
    flows, resets = rows
    for freq in (None, "1s", "10s", "5min"):
        t = reports.timeline(run.flows, run.resets, freq=freq)
        rst = t[t["kind"] == "rst"]
        assert Counter(dict(rst.groupby("series")["count"].sum())) == Counter(r["cause"] for r in resets)
        attempts = t[(t["kind"] == "connections") & (t["series"] == "attempts")]["count"].sum()
        assert attempts == sum(1 for f in flows if f["start_seen"])
        failed = t[(t["kind"] == "connections") & (t["series"] == "failed")]["count"].sum()
        assert failed == sum(1 for f in flows if f["start_seen"] and f["conn_state"] in ("S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR"))
    ten = reports.timeline(run.flows, run.resets, freq="10s")
    assert (ten["time"].dt.second % 10 == 0).all() and (ten["time"].dt.microsecond == 0).all()


def test_top_talkers_match_parquet(run: reports.Run, rows) -> None:
    resets = rows[1]
    for by, key_of in (("sender", lambda r: r["src_h"]), ("receiver", lambda r: r["dst_h"]),
                       ("service_port", lambda r: str(r["dst_p"] if r["direction"] == "orig" else r["src_p"]))):  # fmt: skip
        got = reports.top_talkers(run.resets, by=by, n=3)
        counts = Counter(key_of(r) for r in resets)
        expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        firsts = got.drop_duplicates("key")
        assert list(zip(firsts["key"], firsts["total"], strict=True)) == expected, by
        # the split by cause adds up to the total
        assert (got.groupby("key")["rsts"].sum() == got.groupby("key")["total"].first()).all()


def test_services_split_who_reset(run: reports.Run, rows) -> None:
    flows = rows[0]
    got = reports.services(run.flows, n=100)
    for s in got.itertuples():
        mine = [f for f in flows if f"{f['resp_h']}:{f['resp_p']}" == s.service]
        assert s.connections == len(mine)
        assert s.reset == sum(1 for f in mine if f["rst_count"] > 0)
        assert s.by_middlebox == sum(1 for f in mine if f["rst_sender"] == "middlebox")
        assert s.by_client == sum(1 for f in mine if f["rst_sender"] == "orig")


def test_middlebox_groups(run: reports.Run, rows) -> None:
    got = reports.middlebox_groups(run.flows, run.resets)
    mb = [r for r in rows[1] if r["cause"] == "middlebox"]
    assert got["rsts"].sum() == len(mb)
    for g in got.itertuples():
        mine = [r for r in mb if f"middlebox.{r['subcause']}" == g.verdict and r["ttl"] == g.ttl]
        assert g.rsts == len(mine) and g.connections == len({r["uid"] for r in mine})
        per_conn = Counter(r["uid"] for r in mine)
        assert g.bursts == sum(1 for n in per_conn.values() if n >= 2)
    # the injector scenario sends bursts of forged RSTs: its group shows them
    injected = got[got["verdict"] == "middlebox.injected"]
    assert (injected["bursts"] > 0).all() and len(injected)


def test_shared_ipid_counter_detection() -> None:
    from rstlens.reports._frames import _shared_ipid_counter

    ts = pd.date_range("2024-01-01", periods=5, freq="1s", tz="UTC")
    assert _shared_ipid_counter(pd.DataFrame({"ts": ts, "ip_id": pd.array([100, 101, 103, 104, 110], "Int32")}))
    assert not _shared_ipid_counter(pd.DataFrame({"ts": ts, "ip_id": pd.array([100, 9000, 40, 30000, 7], "Int32")}))
    assert not _shared_ipid_counter(pd.DataFrame({"ts": ts, "ip_id": pd.array([0, 0, 0, 0, 0], "Int32")}))


def test_damage_per_connection(run: reports.Run, rows) -> None:
    flows, resets = rows
    lost = defaultdict(int)
    for r in resets:
        lost[r["uid"]] = max(lost[r["uid"]], r["unacked_bytes"])
    by_cause = defaultdict(int)
    conns = Counter()
    for f in flows:
        if f["rst_count"]:
            by_cause[f["rst_cause"]] += lost[f["uid"]]
            conns[f["rst_cause"]] += 1
    got = reports.damage(run.flows, run.resets, by="cause")
    assert dict(zip(got["key"], got["unacked_bytes"], strict=True)) == dict(by_cause)
    assert dict(zip(got["key"], got["connections"], strict=True)) == dict(conns)
    svc = reports.damage(run.flows, run.resets, by="service", n=3)
    assert list(svc["unacked_bytes"]) == sorted(svc["unacked_bytes"], reverse=True)


def test_stages(run: reports.Run, rows) -> None:
    flows = rows[0]
    got = reports.stages(run.flows)
    assert got["connections"].sum() == sum(1 for f in flows if f["rst_count"])
    # a refused SYN dies right after it
    closed = got[got["cause"] == "closed_port"]
    assert set(closed["signature"]) == {"SYN→RST"}
    assert closed["connections"].sum() == sum(1 for f in flows if f["rst_cause"] == "closed_port")
    # connections reset by several RSTs carry ;RST
    multi = sum(1 for f in flows if f["rst_count"] >= 2)
    assert got[got["signature"].str.contains(";RST")]["connections"].sum() == multi


def test_evidence_and_confidence(run: reports.Run, rows) -> None:
    resets = rows[1]
    got = reports.evidence(run.resets)
    expected = Counter((r["cause"], code) for r in resets for code in r["evidence"])
    assert {(e.cause, e.code): e.rsts for e in got.itertuples()} == dict(expected)
    conf = reports.confidence(run.resets)
    assert conf["rsts"].sum() == len(resets)
    for c in conf.itertuples():
        # by the confidence's two-decimal value, as the report prints it (0.70 is in 0.7-0.8)
        tenth = {r_: int(f"{r_:.2f}"[2]) for r_ in {r["confidence"] for r in resets} if r_ < 1}
        assert c.rsts == sum(1 for r in resets if r["cause"] == c.cause and tenth.get(r["confidence"], 9) == round(c.bin * 10))


def test_drilldown_covers_every_verdict(run: reports.Run, rows) -> None:
    resets = rows[1]
    verdicts = {r["cause"] + ("." + r["subcause"] if r["subcause"] else "") for r in resets}
    assert len(verdicts) >= 8  # the samples cover most causes and subcauses
    got = reports.drilldown(run.flows, run.resets, n=len(verdicts))
    assert len(got) == len(verdicts) and set(got["verdict"]) == verdicts
    assert got.iloc[0]["verdict"].startswith("middlebox")


def test_filter_run(run: reports.Run, rows) -> None:
    flows, resets = rows
    f, r = reports.filter_run(run.flows, run.resets, host="fd77:2::2")
    assert len(f) == sum(1 for x in flows if "fd77:2::2" in (x["orig_h"], x["resp_h"]))
    assert set(r["uid"]) <= set(f["uid"])
    f, r = reports.filter_run(run.flows, run.resets, port=8150)
    assert len(r) == sum(1 for x in resets if 8150 in (x["src_p"], x["dst_p"]))
    cut = sorted(x["ts"] for x in flows)[10]
    f, r = reports.filter_run(run.flows, run.resets, since=cut.isoformat())
    assert len(f) == sum(1 for x in flows if x["ts"] >= cut)
    f, r = reports.filter_run(run.flows, run.resets, cause="middlebox")
    assert set(r["cause"]) == {"middlebox"} and set(f["rst_cause"]) == {"middlebox"}


def test_partitioned_dataset(run_dir: Path, tmp_path: Path) -> None:
    """A directory of parts reads as one run (the live sensor's layout)."""
    import shutil

    for part in ("part-0001", "part-0002"):
        shutil.copytree(run_dir, tmp_path / "dataset" / part)
    both = reports.load(tmp_path / "dataset")
    single = parquet_counts(run_dir)
    assert len(both.parts) == 2 and len(both.resets) == 2 * single["rsts"]
    assert isinstance(both.resets["cause"].dtype, pd.CategoricalDtype)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match=r"no flows\.parquet"):
        reports.load(tmp_path / "nothing")
