"""`rstlens analyze` and `rstlens explain` through the installed console script.

Exit codes, per-input error lines, -r/-c/-f and a trailing BPF expression, the --json
summary, every capture of both corpora, and the explain report.  Invocations are run as
real subprocesses, several at a time (each pays for loading the numba core).
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from builders import T0, A, F, P, R, S, frame, write_pcap

from rstlens.attribution.evidence import describe
from rstlens.output.schema import CAUSES

REPO = Path(__file__).resolve().parents[2]
RSTLENS = str(REPO / ".venv" / "bin" / "rstlens")
WORKERS = 4


# --------------------------------------------------------------------------- helpers
def rstlens_cmd(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RSTLENS, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


def run_all(jobs: dict[str, list]) -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {name: pool.submit(rstlens_cmd, *argv) for name, argv in jobs.items()}
        return {name: fut.result() for name, fut in futures.items()}


def no_traceback(res: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in res.stderr, res.stderr
    assert "Traceback" not in res.stdout


def session(t: float, c: str, cp: int, s: str, sp: int, end: str) -> list[tuple[float, bytes]]:
    ci, si = 1000, 70_000
    out = [
        (t, frame(c, cp, s, sp, S, ci)),
        (t + 0.01, frame(s, sp, c, cp, S | A, si, ci + 1)),
        (t + 0.02, frame(c, cp, s, sp, A, ci + 1, si + 1)),
        (t + 0.03, frame(c, cp, s, sp, P | A, ci + 1, si + 1, b"GET /\r\n")),
        (t + 0.04, frame(s, sp, c, cp, A, si + 1, ci + 8)),
    ]
    if end == "fin":
        out += [
            (t + 0.05, frame(c, cp, s, sp, F | A, ci + 8, si + 1)),
            (t + 0.06, frame(s, sp, c, cp, F | A, si + 1, ci + 9)),
            (t + 0.07, frame(c, cp, s, sp, A, ci + 9, si + 2)),
        ]
    else:
        out.append((t + 0.05, frame(c, cp, s, sp, R | A, ci + 8, si + 1)))
    return out


# The test capture: 25 packets, 5 connections, one after another.
#   t=0  10.0.0.9:40001 -> 10.0.0.1:80    SF    8 packets
#   t=1  10.0.0.9:40002 -> 10.0.0.1:443   SF    8 packets
#   t=2  10.0.0.7:40003 -> 10.0.0.2:443   RSTO  6 packets
#   t=3  10.0.0.9:40004 -> 10.0.0.1:8081  REJ   2 packets
#   t=4  10.0.0.8:40005 -> 10.0.0.1:22    S0    1 packet
def build_capture(path: Path) -> Path:
    pk = session(0.0, "10.0.0.9", 40001, "10.0.0.1", 80, "fin")
    pk += session(1.0, "10.0.0.9", 40002, "10.0.0.1", 443, "fin")
    pk += session(2.0, "10.0.0.7", 40003, "10.0.0.2", 443, "rst")
    pk += [(3.0, frame("10.0.0.9", 40004, "10.0.0.1", 8081, S, 5000)),
           (3.001, frame("10.0.0.1", 8081, "10.0.0.9", 40004, R | A, 0, 5001))]  # fmt: skip
    pk += [(4.0, frame("10.0.0.8", 40005, "10.0.0.1", 22, S, 9000))]
    return write_pcap(path, [(T0 + t, b) for t, b in pk], sort=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    build_capture(d / "web.pcap")
    (d / "empty.pcap").write_bytes(b"")
    (d / "adir").mkdir()
    (d / "notes.pcap").write_text("this is not a capture\n" * 4)
    return d


@pytest.fixture(scope="module")
def runs(work: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every analyze invocation of the tests below that reads the test capture, at once."""
    cap = work / "web.pcap"
    bad = {"missing": work / "missing.pcap", "empty": work / "empty.pcap",
           "dir": work / "adir", "notcap": work / "notes.pcap"}  # fmt: skip
    jobs: dict[str, list] = {
        "json": ["analyze", cap, "-o", work / "o-json", "--json"],
        "plain": ["analyze", cap, "-o", work / "o-plain"],
        "r": ["analyze", "-r", cap, "-o", work / "o-r", "-q"],
        "r2": ["analyze", "-r", cap, "-r", bad["empty"], "-o", work / "o-r2", "--json"],
        "c10": ["analyze", cap, "-c", "10", "-o", work / "o-c10", "--json"],
        "c1000": ["analyze", cap, "-c", "1000", "-o", work / "o-c1000", "--json"],
        "f443": ["analyze", cap, "-f", "tcp port 443", "-o", work / "o-f443", "--json"],
        "t443": ["analyze", cap, "tcp", "port", "443", "-o", work / "o-t443", "--json"],
        "thost": ["analyze", cap, "host", "10.0.0.7", "-o", work / "o-thost", "--json"],
        "thost-quoted": ["analyze", cap, "host 10.0.0.7", "-o", work / "o-thostq", "--json"],
        "none": ["analyze", *bad.values(), "-o", work / "o-none", "-q"],
    }
    for kind, path in bad.items():
        # the bad input first for two kinds, last for the others
        pair = [path, cap] if kind in ("missing", "dir") else [cap, path]
        jobs[f"bad-{kind}"] = ["analyze", *pair, "-o", work / f"o-bad-{kind}", "-q"]
    return run_all(jobs)


def flows_of(outdir: Path):  # type: ignore[no-untyped-def]
    return pq.read_table(outdir / "flows.parquet").to_pandas()


# --------------------------------------------------------------------------- success, --json
def test_json_summary(runs, work: Path) -> None:  # type: ignore[no-untyped-def]
    res = runs["json"]
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    s = json.loads(res.stdout)  # stdout is nothing but the JSON document
    assert s["packets"] == 25 and s["tcp_packets"] == 25
    assert s["connections"] == 5
    assert s["conn_states"] == {"SF": 2, "RSTO": 1, "REJ": 1, "S0": 1}
    assert s["rst_packets"] == 2
    assert set(s["rst_causes"]) <= set(CAUSES)
    assert sum(s["rst_causes"].values()) == 2
    resets = pq.read_table(work / "o-json" / "resets.parquet").to_pandas()
    assert dict(Counter(resets.cause.astype(str))) == s["rst_causes"]
    assert s["rst_causes"].get("closed_port") == 1  # the SYN answered by RST/ACK (REJ)
    assert s["interrupted"] is False
    assert [i["path"] for i in s["inputs"]] == [str(work / "web.pcap")]
    assert s["inputs"][0]["error"] is None and s["inputs"][0]["packets"] == 25
    flows = flows_of(work / "o-json")
    assert len(flows) == 5
    assert dict(Counter(flows.conn_state.astype(str))) == s["conn_states"]


def test_plain_summary_on_stderr(runs, work: Path) -> None:  # type: ignore[no-untyped-def]
    res = runs["plain"]
    no_traceback(res)
    assert res.returncode == 0
    assert res.stdout == ""
    assert "25 packets" in res.stderr and "5 TCP connections" in res.stderr
    assert "2 RST packets" in res.stderr
    assert str(work / "o-plain" / "flows.parquet") in res.stderr.replace("\n", "")


# --------------------------------------------------------------------------- -r, -c
def test_r_option_reads_like_a_positional_file(runs, work: Path) -> None:  # type: ignore[no-untyped-def]
    assert runs["r"].returncode == 0, runs["r"].stderr
    assert runs["r"].stderr == ""  # -q
    by_r = flows_of(work / "o-r").sort_values("uid")
    by_pos = flows_of(work / "o-json").sort_values("uid")
    assert by_r.uid.tolist() == by_pos.uid.tolist()
    assert by_r.conn_state.astype(str).tolist() == by_pos.conn_state.astype(str).tolist()
    # -r is repeatable; the empty second input is reported and the run exits 1
    r2 = runs["r2"]
    no_traceback(r2)
    assert r2.returncode == 1
    s = json.loads(r2.stdout)
    assert [i["path"] for i in s["inputs"]] == [str(work / "web.pcap"), str(work / "empty.pcap")]
    assert s["inputs"][1]["error"] == "empty file (0 bytes)"
    assert s["connections"] == 5


def test_count_stops_after_count_packets(runs, work: Path) -> None:  # type: ignore[no-untyped-def]
    s = json.loads(runs["c10"].stdout)
    assert runs["c10"].returncode == 0
    assert s["packets"] == 10
    assert s["connections"] == 2  # 8 packets of the first session, 2 of the second
    flows = flows_of(work / "o-c10").sort_values("ts")
    assert flows.orig_p.tolist() == [40001, 40002]
    assert flows.conn_state.astype(str).tolist() == ["SF", "S1"]
    assert int(flows.orig_pkts.sum() + flows.resp_pkts.sum()) == 10
    big = json.loads(runs["c1000"].stdout)
    assert runs["c1000"].returncode == 0
    assert big["packets"] == 25 and big["connections"] == 5


# --------------------------------------------------------------------------- filters
def test_filter_option_filters(runs, work: Path) -> None:  # type: ignore[no-untyped-def]
    res = runs["f443"]
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["packets"] == 14  # 8 + 6
    assert s["connections"] == 2
    flows = flows_of(work / "o-f443")
    assert set(flows.resp_p) == {443}
    assert sorted(flows.orig_p) == [40002, 40003]
    meta = json.loads(pq.read_metadata(work / "o-f443" / "flows.parquet").metadata[b"rstlens"])
    assert meta["options"]["bpf"] == "tcp port 443"


def test_trailing_filter_expression(runs, work: Path) -> None:  # type: ignore[no-untyped-def]
    res = runs["t443"]
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["packets"] == 14 and s["connections"] == 2
    assert [i["path"] for i in s["inputs"]] == [str(work / "web.pcap")]
    assert sorted(flows_of(work / "o-t443").uid) == sorted(flows_of(work / "o-f443").uid)
    host = json.loads(runs["thost"].stdout)
    assert runs["thost"].returncode == 0
    assert host["packets"] == 6 and host["connections"] == 1
    assert host["conn_states"] == {"RSTO": 1}
    flows = flows_of(work / "o-thost")
    assert flows.orig_h.tolist() == ["10.0.0.7"]


def test_trailing_filter_as_one_quoted_argument(runs, work: Path) -> None:  # type: ignore[no-untyped-def]
    res = runs["thost-quoted"]
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert [i["path"] for i in s["inputs"]] == [str(work / "web.pcap")]
    assert s["packets"] == 6 and s["connections"] == 1


# --------------------------------------------------------------------------- exit codes
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "no such file"),
        ("empty", "empty file"),
        ("dir", "is a directory"),
        ("notcap", "not a pcap or pcapng capture"),
    ],
)
def test_one_bad_input_of_two_exits_1(runs, work: Path, kind: str, message: str) -> None:  # type: ignore[no-untyped-def]
    res = runs[f"bad-{kind}"]
    no_traceback(res)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    path = {"missing": "missing.pcap", "empty": "empty.pcap", "dir": "adir",
            "notcap": "notes.pcap"}[kind]  # fmt: skip
    assert lines[0].startswith(f"rstlens: {work / path}: error: ")
    assert message in lines[0]
    flows = flows_of(work / f"o-bad-{kind}")
    assert len(flows) == 5  # the good input was analysed in full
    assert set(flows.source.astype(str)) == {"web.pcap"}


def test_no_readable_input_exits_2(runs, work: Path) -> None:  # type: ignore[no-untyped-def]
    res = runs["none"]
    no_traceback(res)
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 4, res.stderr
    for name in ("missing.pcap", "empty.pcap", "adir", "notes.pcap"):
        hits = [ln for ln in lines if ln.startswith(f"rstlens: {work / name}: error: ")]
        assert len(hits) == 1, (name, lines)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["analyze", "-o", "{o}"], "no input file"),
        (["analyze", "{cap}"], "Missing option '-o'"),
        (["analyze", "{cap}", "-o", "{o}", "-c", "0"], "Invalid value for '-c'"),
        (["analyze", "{cap}", "tcp", "-f", "tcp", "-o", "{o}"], "either with -f or after"),
        (["analyze", "{cap}", "-o", "{o}", "--bogus"], "No such option"),
        (["analyze", "{cap}", "-o", "{o}", "-f", "tcp port"], "bad BPF expression"),
        (["analyze", "{cap}", "tcp", "port", "-o", "{o}"], "bad BPF expression"),
    ],
)
def test_usage_errors_exit_2(work: Path, args: list[str], needle: str) -> None:
    argv = [a.format(o=work / "o-usage", cap=work / "web.pcap") for a in args]
    res = rstlens_cmd(*argv)
    no_traceback(res)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr
    assert res.stdout == ""
    if needle == "bad BPF expression":
        assert len(res.stderr.splitlines()) == 1
        assert not (work / "o-usage" / "flows.parquet").exists()


# --------------------------------------------------------------------------- the corpora
def _corpus_inputs(root: Path) -> list[Path]:
    """Every file of a corpus that is not its documentation or a CSV table."""
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() not in (".md", ".csv")
    )


def test_every_corpus_capture_runs_cleanly(zeek_corpus: Path, robust_corpus: Path,
                                           tmp_path: Path) -> None:  # fmt: skip
    files = _corpus_inputs(zeek_corpus) + _corpus_inputs(robust_corpus)
    assert len(files) > 150
    groups = [files[k : k + 10] for k in range(0, len(files), 10)]
    jobs = {
        f"g{i}": ["analyze", *g, "-o", tmp_path / f"g{i}", "--json"] for i, g in enumerate(groups)
    }
    results = run_all(jobs)
    seen = 0
    for i, group in enumerate(groups):
        res = results[f"g{i}"]
        no_traceback(res)
        assert res.returncode in (0, 1), (group, res.returncode, res.stderr)
        s = json.loads(res.stdout)
        assert [i["path"] for i in s["inputs"]] == [str(p) for p in group]
        bad = [inp for inp in s["inputs"] if inp["error"]]
        cut = [inp for inp in s["inputs"] if inp["truncated_at"] is not None
               or any("stopped" in w or "cut short" in w for w in inp["warnings"])]  # fmt: skip
        assert res.returncode == (1 if bad or cut else 0), res.stderr
        assert s["exit_status"] == res.returncode
        for line in res.stderr.splitlines():
            assert line.startswith("rstlens: /"), line
            assert ": warning: " in line or ": error: " in line, line
        for inp in bad:
            assert f"rstlens: {inp['path']}: error: {inp['error']}" in res.stderr
        flows = pq.read_table(tmp_path / f"g{i}" / "flows.parquet")
        resets = pq.read_table(tmp_path / f"g{i}" / "resets.parquet")
        assert flows.num_rows == s["connections"]
        assert resets.num_rows == s["rst_packets"]
        seen += len(group)
    assert seen == len(files)


# --------------------------------------------------------------------------- explain
@pytest.fixture(scope="module")
def pop3_run(zeek_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pop3") / "out"
    res = rstlens_cmd("analyze", zeek_corpus / "traces" / "pop3.pcap", "-o", out, "-q")
    assert res.returncode == 0, res.stderr
    return out


def test_explain_prints_verdict_evidence_and_ladder(pop3_run: Path) -> None:
    resets = pq.read_table(pop3_run / "resets.parquet").to_pandas()
    flows = pq.read_table(pop3_run / "flows.parquet").to_pandas()
    rst = resets.sort_values("ts").iloc[0]
    flow = flows[flows.uid == rst.uid].iloc[0]
    res = rstlens_cmd("explain", pop3_run, rst.uid)
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    # header: uid, endpoints, state
    assert out[0].startswith(
        f"{rst.uid}  {flow.orig_h}:{flow.orig_p} -> {flow.resp_h}:{flow.resp_p}"
    )
    assert f" {flow.conn_state} {flow.history} " in out[0]
    assert f"ended by {flow.end_reason}" in out[0]
    # the verdict of the RST
    cause = rst.cause + (f".{rst.subcause}" if isinstance(rst.subcause, str) else "")
    verdicts = [ln for ln in out if ln.strip().startswith("verdict:")]
    assert len(verdicts) == int(flow.rst_count)
    assert verdicts[0].split()[1] == cause
    assert f"confidence {rst.confidence:.2f}" in verdicts[0]
    assert any(ln.startswith("summary: ") and rst.cause in ln for ln in out)
    # every evidence code, with its explanation
    assert len(rst.evidence) >= 2
    for code in rst.evidence:
        assert f"  - {code}: {describe(code)}" in out
        assert describe(code) and describe(code) != code
    # the ladder: the SYN, and the RST marked with '>'
    i = out.index("packet ladder (> marks this connection's RSTs):")
    ladder = out[i + 1 :]
    marked = [ln for ln in ladder if ln.startswith("> ")]
    assert marked and all("[R" in ln for ln in marked)
    assert any(f"{rst.src_h}:{rst.src_p} > {rst.dst_h}:{rst.dst_p} [R" in ln for ln in marked)
    assert any(ln.startswith("  ") and "[S]" in ln for ln in ladder)
    assert all(ln.startswith(("> ", "  ")) for ln in ladder)


def test_explain_unknown_uid_exits_2(pop3_run: Path) -> None:
    res = rstlens_cmd("explain", pop3_run, "CnoSuchConnection0")
    no_traceback(res)
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("rstlens: error: no connection CnoSuchConnection0")


def test_explain_ladder_marks_only_this_connections_rsts(pop3_run: Path) -> None:
    flows = pq.read_table(pop3_run / "flows.parquet").to_pandas()
    rej = flows[flows.conn_state == "REJ"].sort_values("ts")
    same_tuple = rej[(rej.orig_p == rej.iloc[0].orig_p) & (rej.resp_h == rej.iloc[0].resp_h)]
    assert len(same_tuple) >= 2  # the 5-tuple is reused within seconds
    first = same_tuple.iloc[0]
    res = rstlens_cmd("explain", pop3_run, first.uid)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    ladder = out[out.index("packet ladder (> marks this connection's RSTs):") + 1 :]
    marked = [ln for ln in ladder if ln.startswith("> ")]
    assert len(marked) == int(first.rst_count) == 1


# --------------------------------------------------------------------------- quick exit
def test_console_script_ends_as_sys_exit_would(tmp_path: Path) -> None:
    """The console script skips interpreter teardown (os._exit) but keeps sys.exit's
    statuses, and what was printed still arrives through a pipe."""
    ok = rstlens_cmd("analyze", REPO / "sample_pcaps" / "clean_close.pcap", "-o", tmp_path, "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["packets"] > 0
    usage = rstlens_cmd("analyze", "--no-such-option")
    assert usage.returncode == 2 and "No such option" in usage.stderr
    code = "from rstlens.cli.main import _exit_status as s; print(s(None), s(3), s(256 + 4), s('bye'))"
    res = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", code],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert res.stdout.split() == ["0", "3", "4", "1"] and res.stderr == "bye\n"
