"""benchmarks/bench.py --small runs end to end (no timing assertions: CI is noisy)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks" / "bench.py"


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is the reference")
def test_bench_small(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--small",
            "--data-dir",
            str(tmp_path / "data"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {
        line.split("|")[1].strip(): line
        for line in proc.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| tool")
    }
    assert "tcpdump" in rows and "FAILED" not in rows["tcpdump"]
    assert "dpkt loop" in rows and "FAILED" not in rows["dpkt loop"]
    assert "rstlens analyze" in rows and "FAILED" not in rows["rstlens analyze"]
    assert "start-up (rstlens analyze, 1 packet): FAILED" not in proc.stdout
    assert "start-up (rstlens analyze, 1 packet)" in proc.stdout

    report = json.loads(out.read_text())
    (f,) = report["files"]
    assert f["packets"] == 20_000
    by_tool = {r["tool"]: r for r in f["results"]}
    assert by_tool["tcpdump"]["ok"] and by_tool["tcpdump"]["ratio_tcpdump"] == 1.0
    assert by_tool["rstlens analyze"]["ok"] and by_tool["rstlens analyze"]["ratio_tcpdump"] > 0
    assert report["startup"]["ok"]
    for r in f["results"]:
        if r["ok"]:
            assert r["median_wall"] > 0 and r["peak_rss_mb"] > 0 and len(r["runs"]) == 1
        else:
            assert r["error"] and "\n" not in r["error"]
    # the captures are cached: a second run reuses them
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "one-tcp-syn.pcap",
        "synth-20000-s1-v1.pcap",
    ]


@pytest.mark.slow
def test_kernel_ab_builds_two_revisions_and_times_them(tmp_path):
    from tools.synth import generate

    capture = tmp_path / "small.pcap"
    generate(capture, 20_000, seed=5)
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "kernel_ab.py"), "HEAD", "HEAD",
         "--capture", str(capture), "--rounds", "2"],
        # two ahead-of-time builds (at once): ~10 min on this 2-core machine
        capture_output=True, text=True, timeout=2400, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["A", "B"]
    assert all("over 2 runs of" in line for line in lines)


def test_paired_alternates_two_checkouts_and_prints_the_median_ratio() -> None:
    """benchmarks/paired.py with this checkout on both sides (its .venv's rstlens)."""
    if not (REPO / ".venv" / "bin" / "rstlens").exists():
        pytest.skip("paired.py runs a checkout's .venv/bin/rstlens; this one has none")
    capture = REPO / "sample_pcaps" / "clean_close.pcap"
    paired = [sys.executable, str(REPO / "benchmarks" / "paired.py"), str(REPO), str(REPO), str(capture)]
    proc = subprocess.run([*paired, "--pairs", "2", "--", "-j", "2"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["pair 1", "pair 2"]
    assert all(" MB | new " in line and "ratio" in line for line in lines[:2])
    assert lines[2].startswith("median ratio new / base over 2 pairs: ")
    assert float(lines[2].rsplit(" ", 1)[1]) > 0
    # analyze failing (an unknown option) ends the comparison with its exit status
    bad = subprocess.run([*paired, "--pairs", "1", "--", "--no-such-option"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "exit 2: " in bad.stderr


def test_bench_targets_small_judges_each_target_and_compares_the_jobs_tables(tmp_path):
    out = tmp_path / "targets.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--targets", "--small", "--data-dir", str(tmp_path / "data"),
         "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert sorted(report["files"]) == ["5M", "flood", "scan"]
    for key, f in report["files"].items():
        assert f["same_rows"]["ok"], (key, f["same_rows"])
        tools = {r["tool"]: r for r in f["results"]}
        assert sorted(tools) == ["rstlens analyze", "rstlens analyze -j 2", "tcpdump"]
        assert all(r["ok"] and len(r["runs"]) == 1 for r in tools.values())
    # the scan's -j 1 and -j 2 tables: 5,000 connections and 5,000 RSTs each
    assert report["files"]["scan"]["same_rows"]["rows"] == 10_000
    assert proc.stdout.count("-j 2 tables equal -j 1's: yes") == 3
    judged = {t["target"]: t for t in report["targets"]}
    assert len(judged) == 4
    for t in judged.values():
        r = next(x for x in report["files"][t["file"]]["results"] if x["tool"] == t["tool"])
        assert t["ratio"] == r["median_pair_ratio"] > 0
        assert t["time_met"] == (t["ratio"] <= float(re.search(r"([\d.]+)x", t["target"]).group(1)))
        assert t["memory_met"] == ("300 MB" not in t["target"] or t["peak_rss_mb"] < 300)
        assert t["met"] == (t["time_met"] and t["memory_met"])
        assert f"| {t['target']} | " in proc.stdout


def test_same_rows_check_reports_tables_that_differ(tmp_path):
    """The -j comparison of --targets can fail: two different analyses are not equal."""
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    samples = sorted((REPO / "sample_pcaps").glob("*.pcap"))[:2]
    dirs = []
    for i, p in enumerate(samples):
        d = tmp_path / f"out{i}"
        res = bench.run_once([str(bench.rstlens_exe()), "analyze", str(p), "-o", str(d)], 120)
        assert res["ok"], res
        dirs.append(str(d))
    cmp = subprocess.run([sys.executable, "-c", bench.SAME_ROWS, *dirs], capture_output=True, text=True)
    assert cmp.returncode != 0
    assert "not equal" in cmp.stderr
    same = subprocess.run([sys.executable, "-c", bench.SAME_ROWS, dirs[0], dirs[0]],
                          capture_output=True, text=True)  # fmt: skip
    assert same.returncode == 0 and int(same.stdout) > 0
