"""Output integrity (issue 20): a run's results are whole or absent, whatever happens, and
never silently wrong.  One test (or a parametrised set) per row of the issue's table:
signals at several moments of a run, a tiny tmpfs, corrupt first records, SIGKILL then a new
run, duplicate inputs, explain from elsewhere and on VLANs, --json failures, directory
arguments, `read()` errors.  Real subprocesses, real signals, a real tmpfs (as root)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from builders import T0, pcap_bytes, syn_rst_pcap, write_pcap

import rstlens
from rstlens.output.commit import MARKER, clean_stale_temps
from rstlens.output.writer import read_metadata

REPO = Path(__file__).resolve().parents[2]
RSTLENS = str(REPO / ".venv" / "bin" / "rstlens")
SAMPLES = REPO / "sample_pcaps"
N = 60_000  # refused connections in the large capture: 120,000 packets

# Runs `rstlens` with one phase of the run held for a while, a flag file written when it
# starts: the test sends its signals then.  Nothing else is changed.
HOLD = r"""
import sys, time, pathlib
hold, flag = sys.argv[1], pathlib.Path(sys.argv[2])
hold = hold.removeprefix("api-")
del sys.argv[1:3]
if hold == "reading":
    from rstlens.flows import engine
    real_feed, calls = engine.FlowEngine.feed, [0]
    def feed(self, batch):
        real_feed(self, batch)
        calls[0] += 1
        if calls[0] == 3:
            flag.write_text("x"); time.sleep(1.5)
    engine.FlowEngine.feed = feed
elif hold == "finishing":
    import rstlens.pipeline as p
    real_attr = p.attribute_chunks  # files: the verdicts a chunk of RSTs at a time
    def attribute_chunks(*a, **k):
        flag.write_text("x"); time.sleep(1.5)
        return real_attr(*a, **k)
    p.attribute_chunks = attribute_chunks
elif hold == "startup":  # the sub-command's imports, before its signal handlers exist
    from rstlens.cli import main as m
    real_get = m._Commands.get_command
    def get_command(self, ctx, name):
        flag.write_text("x"); time.sleep(1.0)
        return real_get(self, ctx, name)
    m._Commands.get_command = get_command
elif hold == "commit":
    from rstlens.output import writer
    real_finish = writer.ParquetSink.finish
    def finish(self, *a, **k):
        flag.write_text("x"); time.sleep(0.7)
        return real_finish(self, *a, **k)
    writer.ParquetSink.finish = finish
if sys.argv[1] == "api":  # the Python API instead of the command line
    import json, rstlens
    try:
        a = rstlens.analyze(sys.argv[2], outdir=sys.argv[3])
    except KeyboardInterrupt:
        print("KeyboardInterrupt"); sys.exit(0)
    print(json.dumps({"interrupted": a.summary.interrupted, "flows": len(a.flows)})); sys.exit(0)
from rstlens.cli.main import console
sys.argv[0] = "rstlens"
console()
"""


def rstlens_cmd(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RSTLENS, *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return syn_rst_pcap(tmp_path_factory.mktemp("big") / "refused.pcap", N)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return syn_rst_pcap(tmp_path_factory.mktemp("small") / "three.pcap", 3)


def temps(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def assert_consistent(out: Path) -> dict:  # type: ignore[type-arg]
    """The pair is one run's, whole, and its summary is what the files hold."""
    assert temps(out) == []
    flows = pq.read_table(out / "flows.parquet")
    resets = pq.read_table(out / "resets.parquet")
    mf, mr = read_metadata(out / "flows.parquet"), read_metadata(out / "resets.parquet")
    assert mf["run_id"] == mr["run_id"] == json.loads((out / MARKER).read_text())["run_id"]
    s = mf["run"]["summary"]
    assert s == mr["run"]["summary"]
    assert flows.num_rows == s["connections"] == sum(s["conn_states"].values())
    assert resets.num_rows == s["rst_packets"] == sum(s["rst_causes"].values())
    # SYN + RST pairs: every connection is REJ, every RST closed_port, packets = 2 x flows
    assert set(flows.column("conn_state").to_pylist()) <= {"REJ"}
    assert s["packets"] == 2 * flows.num_rows == 2 * resets.num_rows
    got = rstlens.read(out)
    assert len(got.flows) == flows.num_rows and set(got.resets.uid) == set(got.flows.uid)
    return s  # type: ignore[no-any-return]


@contextlib.contextmanager
def held(phase: str, tmp_path: Path, *args: str | Path) -> Iterator[subprocess.Popen[str]]:
    flag = tmp_path / f"flag-{phase}"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, phase, str(flag), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # and close the pipes


# ---------------------------------------------------------------- row 1 and row 5: one signal
@pytest.mark.parametrize(
    ("phase", "sig"),
    [("reading", signal.SIGINT), ("finishing", signal.SIGINT), ("finishing", signal.SIGTERM),
     ("commit", signal.SIGINT), ("commit", signal.SIGTERM)],
)  # fmt: skip
@pytest.mark.parametrize("jobs", ["1", "2"])  # -j 2: the reader runs ahead in its threads
def test_one_signal_at_any_moment_exits_128_plus_and_writes_consistent_results(
    tmp_path: Path, big: Path, phase: str, sig: int, jobs: str
) -> None:
    out = tmp_path / "out"
    with held(phase, tmp_path, "analyze", big, "-o", out, "-q", "-j", jobs) as proc:
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    word = "terminated" if sig == signal.SIGTERM else "interrupted"
    assert stderr.count("\n") == 1 and stderr.startswith(f"rstlens: {word}: results cover"), stderr
    s = assert_consistent(out)
    assert s["interrupted"] is (phase == "reading")  # the reading was cut short
    if phase == "reading":  # stopped after the batch being read: fewer, but whole
        assert 0 < s["packets"] < 2 * N
    else:  # reading had ended: everything is there
        assert s["packets"] == 2 * N


# ---------------------------------------------------------------- row 6: two signals
@pytest.mark.parametrize("phase", ["reading", "finishing"])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_two_signals_stop_faster_exit_130_and_keep_the_earlier_output(
    tmp_path: Path, big: Path, small: Path, phase: str, jobs: str
) -> None:
    out = tmp_path / "out"
    assert rstlens_cmd("analyze", small, "-o", out, "-q").returncode == 0
    before = snapshot(out)
    with held(phase, tmp_path, "analyze", big, "-o", out, "-q", "-j", jobs) as proc:
        start = time.monotonic()  # from the moment the hold began, not the process start
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - start < 1.4  # did not sit out the 1.5 s hold, nor write
    assert stderr.count("\n") == 1 and "interrupted again" in stderr and "earlier output" in stderr
    assert snapshot(out) == before


def test_signal_before_the_run_starts_is_still_130(tmp_path: Path, small: Path) -> None:
    """During the sub-command's imports ("Aborted!" and status 1 before), also when started
    with SIGINT ignored (this test's own shell may have started it so)."""
    with held("startup", tmp_path, "analyze", small, "-o", tmp_path / "o") as proc:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip() == "rstlens: interrupted"  # after the newline click puts after ^C
    assert not (tmp_path / "o").exists()
    (tmp_path / "flag-startup").unlink()  # the second run's hold writes it afresh
    with held("startup", tmp_path, "analyze", small, "-o", tmp_path / "o", "--json") as proc:
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert json.loads(stdout) == {"error": "interrupted before the run began", "exit_status": 130}


@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_in_the_python_api(tmp_path: Path, big: Path, small: Path, signals: int) -> None:
    """One Ctrl-C while `analyze()` writes: whole results returned; two: KeyboardInterrupt,
    the earlier output kept."""
    out = tmp_path / "out"
    rstlens.analyze(small, outdir=out)
    before = snapshot(out)
    with held("api-finishing", tmp_path, "api", big, out) as proc:
        for _ in range(signals):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.02)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    if signals == 1:
        assert json.loads(stdout) == {"interrupted": False, "flows": N}
        assert_consistent(out)
    else:
        assert stdout.strip() == "KeyboardInterrupt"
        assert snapshot(out) == before


# ---------------------------------------------------------------- row 2: disk full
@pytest.fixture(scope="module")
def big_output_bytes(big: Path, tmp_path_factory: pytest.TempPathFactory) -> int:
    """What the big run writes (~3.6 MB: flows ~2.4 MB, resets ~1.2 MB), measured: how
    Parquet encodes the columns decides it, not the test."""
    out = tmp_path_factory.mktemp("big-output")
    assert rstlens_cmd("analyze", big, "-o", out, "-q").returncode == 0
    return sum(p.stat().st_size for p in out.iterdir())


@pytest.fixture(params=[0.27, 0.54, 0.81, 0.97])
def tiny_tmpfs(tmp_path: Path, request: pytest.FixtureRequest, big_output_bytes: int) -> Iterator[Path]:
    """A tmpfs too small for the big run's output, at a share of its size: the writes fail
    at different points, up to the last row groups and footers."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    d = tmp_path / "tmpfs"
    d.mkdir()
    size = f"{int(request.param * big_output_bytes) // 1024}k"
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                         capture_output=True, text=True)  # fmt: skip
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_disk_full_during_the_commit_keeps_the_old_pair_whole(tiny_tmpfs: Path, small: Path,
                                                              big: Path) -> None:  # fmt: skip
    out = tiny_tmpfs / "out"
    assert rstlens_cmd("analyze", small, "-o", out, "-q").returncode == 0
    before = snapshot(out)
    res = rstlens_cmd("analyze", big, "-o", out, "--json")
    assert res.returncode == 3, res.stderr
    assert res.stderr.count("\n") == 1 and "No space left on device" in res.stderr
    assert "earlier output" in res.stderr
    err = json.loads(res.stdout)
    assert err["exit_status"] == 3 and "No space left" in err["error"]
    assert snapshot(out) == before  # the old pair, whole, and no temporary file
    assert len(rstlens.read(out).resets) == 3


def test_read_refuses_a_mixed_pair(tmp_path: Path, small: Path) -> None:
    """What a reader would see if a commit were cut off between its two renames."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        assert rstlens_cmd("analyze", small, "-o", d, "-q").returncode == 0
    shutil.copy(b / "resets.parquet", a / "resets.parquet")  # resets renamed first
    (a / MARKER).unlink()  # the commit removes the old marker before its renames
    with pytest.raises(rstlens.RstlensError, match="mixed outputs of two runs"):
        rstlens.read(a)
    uid = pq.read_table(a / "flows.parquet").column("uid")[0].as_py()
    res = rstlens_cmd("explain", a, uid)
    assert res.returncode == 2 and "mixed outputs of two runs" in res.stderr
    shutil.copy(b / "flows.parquet", a / "flows.parquet")  # the second rename: whole again
    assert len(rstlens.read(a).flows) == 3
    shutil.copy(b / "resets.parquet", tmp_path / "keep")
    (a / MARKER).write_text(json.dumps({"run_id": "0" * 16, "files": {}}))
    with pytest.raises(rstlens.RstlensError, match="mixed outputs of two runs"):
        rstlens.read(a)


# ---------------------------------------------------------------- row 3: corrupt first record
def _pcapng_bad_first_block() -> bytes:
    shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    return shb + struct.pack("<II", 1, 1 << 30) + b"\0" * 40  # an IDB of impossible length


@pytest.mark.parametrize(
    "content",
    [pcap_bytes([]) + struct.pack("<IIII", 1, 0, 10**8, 10**8) + b"\0" * 64,  # absurd length
     pcap_bytes([]) + b"\0" * 7,  # cut inside the first record header
     _pcapng_bad_first_block()],
    ids=["pcap-absurd-first-record", "pcap-cut-first-record", "pcapng-bad-first-block"],
)  # fmt: skip
def test_corrupt_from_the_first_record_is_nothing_readable(tmp_path: Path, small: Path,
                                                           content: bytes) -> None:  # fmt: skip
    out = tmp_path / "out"
    assert rstlens_cmd("analyze", small, "-o", out, "-q").returncode == 0
    before = snapshot(out)
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(content)
    res = rstlens_cmd("analyze", bad, "-o", out, "--json")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"rstlens: {bad}: error: no record readable")
    assert json.loads(res.stdout)["exit_status"] == 2
    assert snapshot(out) == before
    with pytest.raises(rstlens.RstlensError, match="no input could be read"):
        rstlens.analyze(bad, outdir=out)
    assert snapshot(out) == before


def test_truncated_file_exits_1_as_tcpdump_and_says_where(tmp_path: Path, small: Path) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(small.read_bytes()[:-10])
    res = rstlens_cmd("analyze", cut, "-o", tmp_path / "o", "--json")
    assert res.returncode == 1, res.stderr
    assert f"rstlens: {cut}: warning: file cut short" in res.stderr
    s = json.loads(res.stdout)
    assert s["exit_status"] == 1 and s["inputs"][0]["truncated_at"] is not None


def test_strict_makes_any_warning_exit_1(tmp_path: Path, small: Path) -> None:
    odd = write_pcap(tmp_path / "odd.pcap", [(T0, b"\x00" * 40)], linktype=147)  # USER0
    ok = rstlens_cmd("analyze", small, odd, "-o", tmp_path / "o1", "-q")
    assert ok.returncode == 0 and "unsupported link type" in ok.stderr
    strict = rstlens_cmd("analyze", small, odd, "-o", tmp_path / "o2", "-q", "--strict")
    assert strict.returncode == 1


# ---------------------------------------------------------------- row 4: SIGKILL, then a run
def test_sigkill_leftovers_are_cleaned_by_the_next_run(tmp_path: Path, big: Path,
                                                       small: Path) -> None:  # fmt: skip
    out = tmp_path / "out"
    assert rstlens_cmd("analyze", small, "-o", out, "-q").returncode == 0
    with held("finishing", tmp_path, "analyze", big, "-o", out, "-q") as proc:
        proc.kill()
        proc.wait()
    left = temps(out)
    assert len(left) == 2 and all(str(proc.pid) in n for n in left)
    assert len(rstlens.read(out).flows) == 3  # the earlier output is still whole
    # someone else's file and a live writer's are left alone
    (out / "notes.tmp").write_text("mine")
    live = out / f".flows.parquet.{os.getpid()}.{'a' * 12}.tmp"
    live.write_text("a running writer")
    res = rstlens_cmd("analyze", small, "-o", out, "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert any("removed 2 temporary file(s)" in n for n in s["notes"]), s["notes"]
    assert s["warnings"] == [] and "rstlens: note: removed 2" in res.stderr
    assert temps(out) == sorted(["notes.tmp", live.name])
    old = out / f".resets.parquet.{'b' * 12}.tmp"  # the pattern without a PID: by age
    old.write_text("x")
    assert clean_stale_temps(out) == []
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert clean_stale_temps(out) == [old.name]


# ---------------------------------------------------------------- row 7: the same file twice
def test_identical_inputs_are_read_once(tmp_path: Path, small: Path) -> None:
    copy = tmp_path / "copy.pcap"
    shutil.copy(small, copy)
    res = rstlens_cmd("analyze", small, copy, "-o", tmp_path / "o", "--json")
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("identical to") == 1 and "read once" in res.stderr
    s = json.loads(res.stdout)
    assert s["rst_packets"] == 3 and s["rst_causes"] == {"closed_port": 3}
    assert s["inputs"][1]["duplicate_of"] == str(small)
    twice = rstlens_cmd("analyze", small, small, "-o", tmp_path / "o2", "--json")
    assert json.loads(twice.stdout)["rst_packets"] == 3


def test_same_named_inputs_in_different_directories_get_distinct_sources(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "x", tmp_path / "b" / "x"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    syn_rst_pcap(a / "input.pcap", 2)
    syn_rst_pcap(b / "input.pcap", 3, vlan=7)  # other connections than a's
    res = rstlens_cmd("analyze", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "o", "-q")
    assert res.returncode == 0, res.stderr
    resets = pq.read_table(tmp_path / "o" / "resets.parquet").to_pylist()
    by_source: dict[str, int] = {}
    for r in resets:
        by_source[r["source"]] = by_source.get(r["source"], 0) + 1
    assert by_source == {"a/x/input.pcap": 2, "b/x/input.pcap": 3}
    # explain names the inputs the same way, so it marks the RST of the right file
    uid = next(r["uid"] for r in resets if r["source"] == "b/x/input.pcap")
    lines = _explain_lines(rstlens_cmd("explain", tmp_path / "o", uid))
    assert sum(ln.startswith("> ") for ln in lines) == 1


# ---------------------------------------------------------------- rows 8 and 9: explain
def _explain_lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    assert res.returncode == 0, res.stderr
    assert "packet ladder" in res.stdout, res.stdout
    return [ln for ln in res.stdout.splitlines() if ln.startswith(("> ", "  2"))]


def test_explain_from_another_directory_and_with_r(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    syn_rst_pcap(work / "cap.pcap", 3)
    assert rstlens_cmd("analyze", "cap.pcap", "-o", "out", "-q", cwd=work).returncode == 0
    uid = pq.read_table(work / "out" / "flows.parquet").column("uid")[0].as_py()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lines = _explain_lines(rstlens_cmd("explain", work / "out", uid, cwd=elsewhere))
    assert len(lines) == 2 and lines[1].startswith("> ")
    moved = tmp_path / "moved.pcap"
    (work / "cap.pcap").rename(moved)
    gone = rstlens_cmd("explain", work / "out", uid, cwd=elsewhere)
    assert "give it with -r FILE" in gone.stderr
    assert len(_explain_lines(rstlens_cmd("explain", work / "out", uid, "-r", moved))) == 2
    other = syn_rst_pcap(tmp_path / "other.pcap", 4)
    res = rstlens_cmd("explain", work / "out", uid, "-r", other)
    assert res.returncode == 0


def test_explain_works_on_vlan_tagged_captures(tmp_path: Path) -> None:
    cap = syn_rst_pcap(tmp_path / "vlan.pcap", 3, vlan=42)
    assert rstlens_cmd("analyze", cap, "-o", tmp_path / "o", "-q").returncode == 0
    flows = pq.read_table(tmp_path / "o" / "flows.parquet").to_pylist()
    assert {f["vlan"] for f in flows} == {42}
    lines = _explain_lines(rstlens_cmd("explain", tmp_path / "o", flows[1]["uid"]))
    assert len(lines) == 2 and "<- closed_port" in lines[1]


def test_explain_notes_a_capture_that_changed(tmp_path: Path) -> None:
    cap = syn_rst_pcap(tmp_path / "c.pcap", 3)
    assert rstlens_cmd("analyze", cap, "-o", tmp_path / "o", "-q").returncode == 0
    uid = pq.read_table(tmp_path / "o" / "flows.parquet").column("uid")[0].as_py()
    syn_rst_pcap(cap, 5)
    res = rstlens_cmd("explain", tmp_path / "o", uid)
    assert "not the capture the run read" in res.stderr


# ---------------------------------------------------------------- row 10: --json on failure
@pytest.mark.parametrize(
    ("args", "status", "needle"),
    [(["{missing}", "-o", "{o}"], 2, "no input could be read"),
     (["-o", "{o}"], 2, "no input file"),
     (["{small}"], 2, "Missing option"),
     (["{small}", "-o", "{o}", "-f", "tcp port"], 2, "bad BPF expression"),
     (["{small}", "-o", "{o}", "--bogus"], 2, "No such option")],
    ids=["nothing-readable", "no-input", "no-outdir", "bad-filter", "bad-option"],
)  # fmt: skip
def test_json_prints_one_error_object_on_failure(tmp_path: Path, small: Path, args: list[str],
                                                 status: int, needle: str) -> None:  # fmt: skip
    argv = [a.format(missing=tmp_path / "missing.pcap", o=tmp_path / "o", small=small) for a in args]
    res = rstlens_cmd("analyze", *argv, "--json")
    assert res.returncode == status, res.stderr
    obj = json.loads(res.stdout)  # exactly one object
    assert obj["exit_status"] == status and needle in obj["error"]


def test_a_bug_is_status_70_with_a_json_error_object(tmp_path: Path, small: Path) -> None:
    script = ("import sys, rstlens.pipeline as p\n"
              "def boom(*a, **k): raise ZeroDivisionError('planted')\n"
              "p.run = boom\n"
              "from rstlens.cli.main import console\n"
              "sys.argv[0] = 'rstlens'\n"
              "console()\n")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", script, "analyze", str(small), "-o",
                          str(tmp_path / "o"), "--json"], capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 70, res.stderr
    assert "ZeroDivisionError" in res.stderr and "internal error" in res.stderr
    obj = json.loads(res.stdout)
    assert obj["exit_status"] == 70 and "planted" in obj["error"]


def test_json_on_success_carries_the_exit_status(tmp_path: Path, small: Path) -> None:
    res = rstlens_cmd("analyze", small, "-o", tmp_path / "o", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["exit_status"] == 0


# ---------------------------------------------------------------- row 11: directories
def test_directory_argument_recurses_into_captures_by_content(tmp_path: Path) -> None:
    res = rstlens_cmd("analyze", SAMPLES, "-o", tmp_path / "o", "--json")
    assert res.returncode == 0, res.stderr
    notes = res.stderr.splitlines()
    assert len(notes) == 1 and notes[0].startswith(f"rstlens: {SAMPLES}: note: skipped ")
    assert ".labels.csv" in notes[0]
    s = json.loads(res.stdout)
    expected = sorted(str(p) for p in SAMPLES.glob("*.pcap"))
    assert [i["path"] for i in s["inputs"]] == expected
    assert s["rst_packets"] == 34
    # a capture without the usual suffix, in a subdirectory, is found by its content
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    syn_rst_pcap(tree / "sub" / "capture.bin", 2)
    (tree / "readme.txt").write_text("hello")
    res = rstlens_cmd("analyze", tree, "-o", tmp_path / "o2", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["rst_packets"] == 2
    assert "skipped 1 file(s)" in res.stderr


# ---------------------------------------------------------------- row 12: read() errors
def test_read_errors_are_rstlens_errors(tmp_path: Path) -> None:
    with pytest.raises(rstlens.RstlensError, match="not a directory"):
        rstlens.read(tmp_path / "missing")
    with pytest.raises(rstlens.RstlensError, match=r"flows\.parquet is missing"):
        rstlens.read(tmp_path)
    (tmp_path / "flows.parquet").write_text("not parquet")
    (tmp_path / "resets.parquet").write_text("not parquet")
    with pytest.raises(rstlens.RstlensError, match="not a readable Parquet file"):
        rstlens.read(tmp_path)


# ---------------------------------------------------------------- row 5 at unheld moments
@pytest.mark.parametrize("delay", [0.4, 0.8, 1.2, 1.6])
def test_signal_at_a_random_moment_leaves_summary_and_files_in_agreement(
    tmp_path: Path, big: Path, delay: float
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([RSTLENS, "analyze", str(big), "-o", str(out), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    if proc.returncode == -signal.SIGINT:
        pytest.skip("the signal came before Python had started")
    assert proc.returncode in (0, 130), stderr
    s = json.loads(stdout)
    assert s["exit_status"] == proc.returncode
    if not out.joinpath("flows.parquet").exists():  # before the run had begun: nothing
        assert proc.returncode == 130
        return
    written = assert_consistent(out)
    assert {k: s[k] for k in ("packets", "connections", "rst_packets", "conn_states")} == {
        k: written[k] for k in ("packets", "connections", "rst_packets", "conn_states")}


def test_readme_exit_table_is_the_cli_one() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| status | meaning |"):]
    table = table[: table.index("\n\n")]
    import re

    assert [int(n) for n in re.findall(r"^\s*\| (\d+) \|", table, re.M)] == [0, 1, 2, 3, 130, 143, 70]
    from rstlens.cli import analyze

    doc = analyze.__doc__ or ""
    for part in ("0 success", "1 partial input", "2 usage error", "3 the results could not",
                 "130 interrupted", "143 terminated", "70 internal error"):  # fmt: skip
        assert part in doc
