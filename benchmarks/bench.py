"""Benchmark rstlens against tcpdump, a plain dpkt loop and tshark on synthetic captures.

Usage::

    python benchmarks/bench.py [--sizes 1M,5M] [--runs 3] [--seed 1]
                               [--data-dir benchmarks/data] [--json results.json] [--small]

* Captures come from `tools.synth` and are cached in ``--data-dir`` (git-ignored) as
  ``synth-<packets>-s<seed>-v<generator version>.pcap``; they are reused when present.
* Each file is read once (to warm the page cache), then every tool runs ``--runs`` times,
  round-robin (tcpdump, rstlens, dpkt, tshark, tcpdump, ...), never back to back:
    - ``tcpdump -r F -w /dev/null``: the floor (read and write back every packet);
    - ``rstlens analyze F -o TMPDIR``: the console script next to this Python;
    - ``python benchmarks/dpkt_flows.py F``: the plain dpkt loop + dict of flows;
    - ``tshark -q -z conv,tcp -r F``: only on files of at most 1 M packets, if installed.
* Per run, for the child process alone (``os.wait4`` rusage): wall time, CPU time
  (user+sys) and peak RSS.  The table shows medians of wall and CPU, packets/s from the
  median wall, the largest peak RSS over the runs and the ratio to tcpdump's median wall.
  A tool that is missing or fails shows as FAILED with its one-line error; the script
  itself still exits 0 (it exits 1 only when tcpdump, the reference, fails).
  Linux carries the launching process's RSS high-water mark into a child's ``ru_maxrss``
  (fork/vfork + exec), so this script imports nothing beyond the standard library and
  generates captures in a subprocess; the remaining floor (``/bin/true`` measured the
  same way, ~13 MB) is printed and stored as ``rss_floor_mb``: RSS figures near it mean
  "at most that much".
* Start-up: ``rstlens analyze`` on a one-packet capture (median wall over ``--runs``).
* rstlens' modules are compiled to bytecode first (``compileall``), as a regular install
  or the first run would leave them: with ``PYTHONDONTWRITEBYTECODE`` set, an editable
  install otherwise compiles its sources again in every run.
* ``--json PATH`` writes all numbers (every run) so README tables can be regenerated.
* ``--small``: one ~20,000-packet file, one run each: a smoke test for CI.
* ``--floods``: instead of the synthetic files, the RST-heavy and embryonic ends (issue
  22 §1): a SYN scan (``--scan`` connections, default 500 k: 1 M packets, every one
  refused) and a SYN flood (``--flood`` SYNs, default 1 M, distinct sources, unanswered),
  both from `tools.synscan` at 10 µs spacing, with ``argus -r F -w OUT`` (argus-server)
  and ``tcptrace -n F`` as references where installed, beside tcpdump and rstlens.
  ``--flood-big N`` (e.g. 10M) adds rstlens alone on an N-SYN flood 1 µs apart (more open
  at once than the default --max-flows: evictions), for its peak RSS.
  Each table also gives rstlens' median ratio to the tcpdump run of the same round.
* ``--targets``: issue 22's targets in one invocation: the 5 M-packet file, the SYN scan and
  the SYN flood (``--scan``, ``--flood``), each with tcpdump, ``rstlens analyze`` and
  ``rstlens analyze -j 2`` in alternating rounds; then each file's ``-j 2`` tables compared
  with ``-j 1``'s row for row, and a table of the targets (rstlens' median ratio to tcpdump's
  run of the same round, its peak RSS, met or not).  With ``--small``: a 20,000-packet file
  and a 5,000-connection scan and 10,000-SYN flood.  Exits 1 when tcpdump fails or the
  tables differ (a target not met is a finding, not a failure).
* ``--report``: instead of the comparison, time ``rstlens report RUN -o F.html`` on the
  analyze output of each ``--sizes`` capture and of a SYN scan of ``--scan`` connections
  (`tools.synscan`, 2 packets each; ``--scan 0`` skips it), and give the HTML's
  size.  Each capture is analysed once (cached beside it in ``--data-dir``).
"""

from __future__ import annotations

# Standard library only: see the note on peak RSS above.
import argparse
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tools.counts import parse_count  # noqa: E402  (standard library only)

SYNTH = REPO / "tools" / "synth.py"
TSHARK_MAX_PACKETS = 1_000_000
SMALL_PACKETS = 20_000


def write_one_tcp_packet(path: Path) -> None:
    """A classic pcap holding one Ethernet/IPv4/TCP SYN (checksums left 0)."""
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0x4000, 64, 6, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))  # fmt: skip
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)
    frame = eth + ip + tcp
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    rec = struct.pack("<IIII", 1_700_000_000, 0, len(frame), len(frame))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + rec + frame)


def generator_version() -> str:
    m = re.search(r'^GENERATOR_VERSION = "([^"]+)"', SYNTH.read_text(), re.M)
    return m.group(1) if m else "unknown"


GENERATOR_VERSION = generator_version()


def capture_path(data_dir: Path, packets: int, seed: int) -> Path:
    return data_dir / f"synth-{packets}-s{seed}-v{GENERATOR_VERSION}.pcap"


def generated(path: Path, module: str, *args: str) -> tuple[Path, float | None]:
    """`path`, made first by ``python -m module TMP args...`` if missing (a generator of
    tools/, run in a child so that this process stays lean).  Returns (path, seconds or
    None when it was cached)."""
    if path.exists():
        return path, None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pcap.partial")
    t = time.perf_counter()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    subprocess.run([sys.executable, "-m", module, str(tmp), *args], check=True, env=env)
    took = time.perf_counter() - t
    os.replace(tmp, path)
    return path, took


def ensure_capture(data_dir: Path, packets: int, seed: int) -> tuple[Path, float | None]:
    """The cached synthetic benchmark capture of `packets` records."""
    return generated(capture_path(data_dir, packets, seed), "tools.synth",
                     "--packets", str(packets), "--seed", str(seed), "-q")  # fmt: skip


def warm(path: Path) -> None:
    """Page-cache the file (in a child: reading it here would raise our own RSS)."""
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)


def run_once(argv: list[str], timeout: float) -> dict:
    """Run argv; measure the child alone.  {ok, wall, cpu, rss_mb, error}."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        except OSError as e:
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                proc.returncode = -9
                return {"ok": False, "error": f"timed out after {timeout:.0f}s"}
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        res = {
            "wall": wall,
            "cpu": ru.ru_utime + ru.ru_stime,
            "rss_mb": ru.ru_maxrss / 1024.0,  # Linux reports KiB
            "ok": proc.returncode == 0,
        }
        if not res["ok"]:
            err.seek(0)
            lines = [ln.strip() for ln in err.read().decode(errors="replace").splitlines()]
            lines = [ln for ln in lines if ln]
            res["error"] = f"exit {proc.returncode}: " + (lines[-1] if lines else "(no stderr)")
        return res


def rstlens_exe() -> Path:
    return Path(sys.executable).parent / "rstlens"


COMPILE_BYTECODE = """
import compileall, sys, rstlens, rstlens.parsers, rstlens.reports
dirs = {p for m in (rstlens, rstlens.parsers, rstlens.reports) for p in m.__path__}
sys.exit(not all(compileall.compile_dir(d, quiet=1) for d in sorted(dirs)))
"""


def compile_bytecode() -> str | None:
    """Compile rstlens' modules to bytecode once, as a regular install or any earlier run
    does; with PYTHONDONTWRITEBYTECODE set (this environment) an editable install would
    otherwise compile its sources on every run (~0.06 s).  Returns an error or None."""
    res = subprocess.run([sys.executable, "-c", COMPILE_BYTECODE], capture_output=True, text=True)
    return None if res.returncode == 0 else (res.stderr.strip().splitlines() or ["failed"])[-1]


class Tool:
    def __init__(self, name: str, make_argv, needs: str | None = None):
        self.name = name
        self.make_argv = make_argv  # (path, tmpdir) -> argv
        self.needs = needs  # an executable that must exist

    def missing(self) -> str | None:
        if self.needs is None:
            return None
        if os.sep in self.needs:
            return None if os.access(self.needs, os.X_OK) else f"{self.needs} not found"
        return None if shutil.which(self.needs) else f"{self.needs} not installed"


def rstlens_tools(jobs: list[int]) -> list[Tool]:
    """`rstlens analyze` once per `-j` value (plain `rstlens analyze` for -j 1)."""
    def tool(j: int) -> Tool:
        name = "rstlens analyze" if j == 1 else f"rstlens analyze -j {j}"
        extra = [] if j == 1 else ["-j", str(j)]
        return Tool(name, lambda f, d: [str(rstlens_exe()), "analyze", str(f), "-o", d, *extra],
                    str(rstlens_exe()))  # fmt: skip

    return [tool(j) for j in jobs]


def tools_for(packets: int, jobs: list[int] | None = None) -> list[Tool]:
    tools = [
        Tool("tcpdump", lambda f, d: ["tcpdump", "-r", str(f), "-w", "/dev/null"], "tcpdump"),
        *rstlens_tools(jobs or [1]),
        Tool(
            "dpkt loop",
            lambda f, d: [sys.executable, str(REPO / "benchmarks" / "dpkt_flows.py"), str(f)],
        ),
    ]
    if packets <= TSHARK_MAX_PACKETS and shutil.which("tshark"):
        tools.append(
            Tool(
                "tshark conv,tcp",
                lambda f, d: ["tshark", "-q", "-z", "conv,tcp", "-r", str(f)],
                "tshark",
            )
        )
    return tools


SLOW_TOOLS = ("dpkt loop", "tshark conv,tcp", "argus -r F -w OUT", "tcptrace -n F")


def flood_tools() -> list[Tool]:
    """tcpdump and rstlens, with the flow meters argus and tcptrace as references."""
    tcpdump, rstlens = tools_for(2 * TSHARK_MAX_PACKETS)[:2]
    return [
        tcpdump,
        rstlens,
        Tool("argus -r F -w OUT", lambda f, d: ["argus", "-r", str(f), "-w", os.path.join(d, "out.argus")],
             "argus"),
        Tool("tcptrace -n F", lambda f, d: ["tcptrace", "-n", str(f)], "tcptrace"),
    ]  # fmt: skip


def bench_file(path: Path, packets: int, runs: int, timeout: float, log,
               slow_runs: int | None = None, jobs: list[int] | None = None,
               tools: list[Tool] | None = None) -> list[dict]:  # fmt: skip
    """Alternate the tools `runs` times; the slow reference tools (dpkt, tshark) only in the
    first `slow_runs` rounds when given (they take minutes on large files)."""
    tools = tools_for(packets, jobs) if tools is None else tools
    results = {t.name: {"tool": t.name, "runs": [], "error": t.missing()} for t in tools}
    warm(path)
    for r in range(runs):
        for t in tools:
            res = results[t.name]
            if res["error"]:
                continue  # missing or already failed: do not burn time on it again
            if slow_runs is not None and t.name in SLOW_TOOLS and r >= slow_runs:
                continue
            d = tempfile.mkdtemp(prefix="rstlens-bench-")
            try:
                one = run_once(t.make_argv(path, d), timeout)
            finally:
                shutil.rmtree(d, ignore_errors=True)
            if not one["ok"]:
                res["error"] = one["error"]
                log(f"  run {r + 1}: {t.name}: FAILED ({one['error']})")
                continue
            res["runs"].append(one)
            log(
                f"  run {r + 1}: {t.name}: {one['wall']:.2f}s wall, {one['cpu']:.2f}s CPU, "
                f"{one['rss_mb']:.0f} MB"
            )
    out = []
    for t in tools:
        res = results[t.name]
        ok = not res["error"] and res["runs"]
        res["ok"] = bool(ok)
        if ok:
            res["median_wall"] = statistics.median(x["wall"] for x in res["runs"])
            res["median_cpu"] = statistics.median(x["cpu"] for x in res["runs"])
            res["packets_per_s"] = packets / res["median_wall"] if res["median_wall"] else None
            res["peak_rss_mb"] = max(x["rss_mb"] for x in res["runs"])
        out.append(res)
    ref = results["tcpdump"].get("median_wall")
    ref_runs = results["tcpdump"]["runs"]
    for res in out:
        res["ratio_tcpdump"] = res["median_wall"] / ref if res["ok"] and ref else None
        # paired: each run against tcpdump's run of the same round (when both ran every round)
        if res["ok"] and ref and len(res["runs"]) == len(ref_runs):
            res["median_pair_ratio"] = statistics.median(
                a["wall"] / b["wall"] for a, b in zip(res["runs"], ref_runs, strict=True))
    return out


def format_table(title: str, rows: list[dict]) -> str:
    head = ("tool", "wall s", "CPU s", "packets/s", "peak RSS MB", "x tcpdump")
    lines = [title, "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        if r["ok"]:
            ratio = f"{r['ratio_tcpdump']:.1f}" if r["ratio_tcpdump"] is not None else "-"
            cells = (
                r["tool"],
                f"{r['median_wall']:.2f}",
                f"{r['median_cpu']:.2f}",
                f"{r['packets_per_s']:,.0f}",
                f"{r['peak_rss_mb']:.0f}",
                ratio,
            )
        elif r["error"]:
            cells = (r["tool"], f"FAILED: {r['error']}", "", "", "", "")
        else:
            cells = (r["tool"], "not run (--slow-runs)", "", "", "", "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def flood_capture(data_dir: Path, syns: int, seed: int, gap_us: int = 10) -> tuple[Path, float | None]:
    """The cached SYN-flood capture of `syns` distinct sources, `gap_us` apart."""
    return generated(data_dir / f"synflood-{syns}-s{seed}-g{gap_us}.pcap", "tools.synscan",
                     "--flood", str(syns), "--seed", str(seed), "--gap-us", str(gap_us))  # fmt: skip


def main_floods(args, runs: int, log) -> int:
    """The scan and the flood side by side with tcpdump, argus and tcptrace."""
    captures = [("SYN scan", *scan_capture(args.data_dir, args.scan, args.seed), 2 * args.scan),
                ("SYN flood", *flood_capture(args.data_dir, args.flood, args.seed), args.flood)]  # fmt: skip
    report: dict = {"runs": runs, "files": []}
    for label, path, took, packets in captures:
        log(f"{path.name}: {packets} packets ({'cached' if took is None else f'generated in {took:.1f}s'})")
        rows = bench_file(path, packets, runs, args.timeout, log, args.slow_runs, tools=flood_tools())
        report["files"].append({"file": path.name, "label": label, "packets": packets, "results": rows})
        print(format_table(f"\n{label}, {path.name}: {packets:,} packets, median of {runs} run(s)", rows))
        paired = rows[1].get("median_pair_ratio")
        if paired is not None:
            print(f"rstlens / tcpdump, median of the {runs} paired rounds: {paired:.1f}")
    if args.flood_big:
        path, took = flood_capture(args.data_dir, args.flood_big, args.seed, gap_us=1)
        log(f"{path.name}: {args.flood_big} packets ({'cached' if took is None else f'generated in {took:.1f}s'})")
        warm(path)
        tool = tools_for(1)[1]
        d = tempfile.mkdtemp(prefix="rstlens-bench-")
        try:
            res = run_once(tool.make_argv(path, d), args.timeout)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        report["flood_big"] = {"file": path.name, "packets": args.flood_big, **res}
        if res["ok"]:
            print(f"\nSYN flood, {args.flood_big:,} SYNs 1 µs apart: rstlens {res['wall']:.1f}s wall, "
                  f"{res['cpu']:.1f}s CPU, peak RSS {res['rss_mb']:.0f} MB")  # fmt: skip
        else:
            print(f"\nSYN flood, {args.flood_big:,} SYNs: FAILED: {res['error']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(f["results"][0]["ok"] for f in report["files"]) else 1


def scan_capture(data_dir: Path, connections: int, seed: int) -> tuple[Path, float | None]:
    """The cached SYN-scan capture of `connections` closed ports."""
    return generated(data_dir / f"synscan-{connections}-s{seed}.pcap", "tools.synscan",
                     "--connections", str(connections), "--seed", str(seed))  # fmt: skip


def analyzed(capture: Path, timeout: float) -> Path:
    """The analyze output of `capture` (cached in a directory beside it)."""
    out = capture.with_suffix(".run")
    if (out / "resets.parquet").exists() and (out / "flows.parquet").stat().st_mtime > capture.stat().st_mtime:
        return out
    res = run_once([str(rstlens_exe()), "analyze", str(capture), "-o", str(out), "-q"], timeout)
    if not res["ok"]:
        raise RuntimeError(f"rstlens analyze {capture.name}: {res['error']}")
    return out


def bench_reports(captures: list[tuple[str, Path]], runs: int, timeout: float, log) -> list[dict]:
    """Median wall/CPU/peak RSS of `rstlens report` per run directory, and the HTML size."""
    rows = []
    for label, capture in captures:
        run = analyzed(capture, timeout)
        html = Path(tempfile.mkdtemp(prefix="rstlens-bench-")) / "report.html"
        results = []
        for _ in range(runs):
            res = run_once([str(rstlens_exe()), "report", str(run), "-o", str(html)], timeout)
            results.append(res)
            if not res["ok"]:
                break
        ok = all(r["ok"] for r in results)
        row = {"run": label, "ok": ok, "runs": results, "html_bytes": html.stat().st_size if ok else None}
        if ok:
            row["median_wall"] = statistics.median(r["wall"] for r in results)
            row["median_cpu"] = statistics.median(r["cpu"] for r in results)
            row["peak_rss_mb"] = max(r["rss_mb"] for r in results)
        else:
            row["error"] = results[-1]["error"]
        shutil.rmtree(html.parent, ignore_errors=True)
        log(f"{label}: " + (f"{row['median_wall']:.2f}s, {row['html_bytes'] / 1e6:.2f} MB" if ok else row["error"]))
        rows.append(row)
    return rows


def format_report_table(rows: list[dict], runs: int) -> str:
    lines = [f"\nrstlens report, median of {runs} run(s)",
             "| run | wall s | CPU s | peak RSS MB | HTML MB |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        if r["ok"]:
            lines.append(f"| {r['run']} | {r['median_wall']:.2f} | {r['median_cpu']:.2f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['html_bytes'] / 1e6:.2f} |")  # fmt: skip
        else:
            lines.append(f"| {r['run']} | FAILED: {r['error']} | | | |")
    return "\n".join(lines)


def main_report(args, sizes: list[int], runs: int, log) -> int:
    captures = []
    for n in sizes:
        path, _ = ensure_capture(args.data_dir, n, args.seed)
        captures.append((f"{path.name} ({n:,} packets)", path))
    if args.scan:
        path, _ = scan_capture(args.data_dir, args.scan, args.seed)
        captures.append((f"{path.name} ({args.scan:,} connections)", path))
    rows = bench_reports(captures, runs, args.timeout, log)
    print(format_report_table(rows, runs))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "reports": rows}, indent=2) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


def split_pcap(src: Path, pieces: int) -> list[bytes]:
    """A classic pcap's records cut into `pieces` runs of consecutive records (each with
    the file header): time-contiguous pieces, as a sensor's rotation writes them."""
    data = src.read_bytes()
    head, body = data[:24], memoryview(data)[24:]
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    starts, off = [], 0
    while off + 16 <= len(body):
        starts.append(off)
        off += 16 + struct.unpack_from(order + "I", body, off + 8)[0]
    bounds = [starts[len(starts) * k // pieces] for k in range(pieces)] + [off]
    return [head + bytes(body[a:b]) for a, b in itertools.pairwise(bounds)]


def dask_sensors(capture: Path, sensors: int = 4, files: int = 4) -> Path:
    """`capture` cut by time into `sensors` sensor directories of `files` files each
    (cached beside it)."""
    root = capture.with_suffix(f".sensors{sensors}x{files}")
    if (root / "done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for k, piece in enumerate(split_pcap(capture, sensors)):
        d = root / f"sensor{k}"
        d.mkdir(parents=True)
        tmp = d / "whole.pcap"
        tmp.write_bytes(piece)
        for j, part in enumerate(split_pcap(tmp, files)):
            (d / f"trace{j:02d}.pcap").write_bytes(part)
        tmp.unlink()
    (root / "done").write_text("")
    return root


DASK_RUN = """
import json, sys, time, tempfile
from distributed import LocalCluster, Client
from pathlib import Path
from rstlens.options import RunOptions
from rstlens.parallel.cluster import run_on_cluster, sensors_of
root, workers = sys.argv[1], int(sys.argv[2])
dirs = sorted(str(p) for p in __import__("pathlib").Path(root).iterdir() if p.is_dir())
with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
        Client(cl) as client:
    # every worker imports rstlens and runs one small analysis before the clock starts (the
    # first run in a process pays ~0.8 s of imports and first calls)
    warm_file = sorted(Path(dirs[0]).iterdir())[0]
    def warm():
        from rstlens.parallel.cluster import analyze_sensor
        with tempfile.TemporaryDirectory() as tmp:
            analyze_sensor("warm", [str(warm_file)], tmp, RunOptions(count=2000), 3600.0)
    client.run(warm)
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()  # as `rstlens analyze --dask`: the dataset written, not read back
        summary = run_on_cluster(client, sensors_of(dirs), Path(out), RunOptions())
        wall = time.perf_counter() - t
print(json.dumps({"wall": wall, "packets": summary.packets, "connections": summary.connections}))
"""


def main_dask(args, packets: int, runs: int, log) -> int:
    """analyze --dask: a LocalCluster of 1, 2 and 4 worker processes (one thread each) over
    the capture cut into 4 sensors; wall time from submitting the tasks to the last part
    committed (what `rstlens analyze --dask` does), cluster start-up excluded."""
    path, _ = ensure_capture(args.data_dir, packets, args.seed)
    root = dask_sensors(path)
    rows = []
    for workers in (1, 2, 4):
        walls = []
        for _ in range(runs):
            res = subprocess.run([sys.executable, "-c", DASK_RUN, str(root), str(workers)],
                                 capture_output=True, text=True, timeout=args.timeout)  # fmt: skip
            if res.returncode != 0:
                log(f"{workers} worker(s): FAILED: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
                return 1
            one = json.loads(res.stdout.strip().splitlines()[-1])
            walls.append(one["wall"])
            log(f"  {workers} worker(s): {one['wall']:.2f}s, {one['packets']} packets")
        wall = statistics.median(walls)
        rows.append({"workers": workers, "walls": walls, "median_wall": wall, "packets": one["packets"],
                     "packets_per_s": one["packets"] / wall,
                     "per_worker": one["packets"] / wall / workers})  # fmt: skip
    lines = [f"\nanalyze --dask, {path.name} as 4 sensors x 4 files, median of {runs} run(s), "
             f"{os.cpu_count()} CPUs", "| workers | wall s | packets/s | packets/s per worker |",
             "|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['workers']} | {r['median_wall']:.2f} | {r['packets_per_s']:,.0f} | {r['per_worker']:,.0f} |")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"dask": rows}, indent=2) + "\n")
    return 0


# issue 22's time and memory targets, each as (label, file, tool, most x tcpdump, most MB)
TARGETS = (
    ("SYN scan: under 10x tcpdump and 300 MB", "scan", "rstlens analyze", 10.0, 300.0),
    ("SYN flood: under 10x tcpdump and 300 MB", "flood", "rstlens analyze", 10.0, 300.0),
    ("the 5 M-packet benchmark with -j 2: at most 1.2x tcpdump", "5M", "rstlens analyze -j 2", 1.2, None),
    ("SYN scan with -j 2: at most 6x tcpdump", "scan", "rstlens analyze -j 2", 6.0, None),
)

SAME_ROWS = """
import sys, pyarrow.parquet as pq
one, two = sys.argv[1:3]
for name in ("flows.parquet", "resets.parquet"):
    a = pq.read_table(f"{one}/{name}").replace_schema_metadata(None)
    b = pq.read_table(f"{two}/{name}").replace_schema_metadata(None)
    if not a.equals(b):
        sys.exit(f"{name}: {a.num_rows} rows with -j 1, {b.num_rows} with -j 2, not equal")
print(sum(pq.read_metadata(f"{one}/{n}").num_rows for n in ("flows.parquet", "resets.parquet")))
"""


def same_rows_with_two_jobs(path: Path, timeout: float) -> dict:
    """`rstlens analyze -j 1` and `-j 2` of `path` once more, their tables compared row for
    row (in a child: pyarrow is not imported here).  {ok, rows, error}."""
    dirs = [tempfile.mkdtemp(prefix="rstlens-bench-") for _ in range(2)]
    try:
        for d, extra in zip(dirs, ([], ["-j", "2"]), strict=True):
            res = run_once([str(rstlens_exe()), "analyze", str(path), "-o", d, *extra], timeout)
            if not res["ok"]:
                return {"ok": False, "error": res["error"]}
        cmp = subprocess.run([sys.executable, "-c", SAME_ROWS, *dirs], capture_output=True, text=True)
        if cmp.returncode:
            lines = cmp.stderr.strip().splitlines() or ["failed"]
            return {"ok": False, "error": lines[-1]}
        return {"ok": True, "rows": int(cmp.stdout.strip())}
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def main_targets(args, runs: int, log) -> int:
    """Issue 22's targets in one invocation: the 5 M-packet file, the SYN scan and the SYN
    flood, each with tcpdump, rstlens and rstlens -j 2 in alternating rounds; each target
    judged on rstlens' median ratio to tcpdump's run of the same round and on its peak RSS;
    and the -j 2 tables compared with -j 1's."""
    big = SMALL_PACKETS if args.small else 5_000_000
    scan = 5_000 if args.small else args.scan
    flood = 10_000 if args.small else args.flood
    captures = {"5M": (f"{big:,} packets", *ensure_capture(args.data_dir, big, args.seed), big),
                "scan": ("SYN scan", *scan_capture(args.data_dir, scan, args.seed), 2 * scan),
                "flood": ("SYN flood", *flood_capture(args.data_dir, flood, args.seed), flood)}  # fmt: skip
    report: dict = {"runs": runs, "cpus": os.cpu_count(), "files": {}, "targets": []}
    status = 0
    for key, (label, path, took, packets) in captures.items():
        log(f"{path.name}: {packets} packets ({'cached' if took is None else f'generated in {took:.1f}s'})")
        tools = tools_for(2 * TSHARK_MAX_PACKETS, [1, 2])[:3]  # tcpdump, rstlens, rstlens -j 2
        rows = bench_file(path, packets, runs, args.timeout, log, tools=tools)
        same = same_rows_with_two_jobs(path, args.timeout)
        report["files"][key] = {"file": path.name, "label": label, "packets": packets, "results": rows,
                                "same_rows": same}  # fmt: skip
        print(format_table(f"\n{label}, {path.name}: {packets:,} packets, median of {runs} run(s)", rows))
        print("-j 2 tables equal -j 1's: "
              + (f"yes ({same['rows']:,} rows)" if same["ok"] else f"NO: {same['error']}"))
        if not rows[0]["ok"] or not same["ok"]:
            status = 1
    lines = [f"\nissue 22 targets, {os.cpu_count()} CPUs, median of {runs} paired round(s):",
             "| target | file | x tcpdump (paired) | peak RSS MB | met |",
             "|---|---|---:|---:|---|"]  # fmt: skip
    for label, key, tool, most_x, most_mb in TARGETS:
        r = next(x for x in report["files"][key]["results"] if x["tool"] == tool)
        x = r.get("median_pair_ratio")
        time_met = r["ok"] and x is not None and x <= most_x
        memory_met = r["ok"] and (most_mb is None or r["peak_rss_mb"] < most_mb)
        report["targets"].append({"target": label, "tool": tool, "file": key, "ratio": x,
                                  "peak_rss_mb": r.get("peak_rss_mb"), "time_met": bool(time_met),
                                  "memory_met": bool(memory_met),
                                  "met": bool(time_met and memory_met)})  # fmt: skip
        missed = [what for what, ok in (("time", time_met), ("memory", memory_met)) if not ok]
        cells = (label, report["files"][key]["file"], "FAILED" if x is None else f"{x:.1f}",
                 f"{r['peak_rss_mb']:.0f}" if r["ok"] else "-",
                 f"no ({', '.join(missed)})" if missed else "yes")  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return status


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1M,5M", help="comma-separated packet counts")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data-dir", type=Path, default=REPO / "benchmarks" / "data")
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per run, seconds")
    ap.add_argument("--slow-runs", type=int, default=None,
                    help="run the dpkt loop and tshark only this many times (default: --runs)")
    ap.add_argument(
        "--small",
        action="store_true",
        help=f"one {SMALL_PACKETS}-packet file, one run each (CI smoke test)",
    )
    ap.add_argument("--report", action="store_true",
                    help="time `rstlens report` on the analysed captures instead of the comparison")
    ap.add_argument("--scan", type=parse_count, default=500_000,
                    help="with --report: also a SYN scan of this many connections (0: none); "
                         "with --floods: the scan's connections")
    ap.add_argument("--jobs", default="1",
                    help="comma-separated -j values: one rstlens row each (e.g. 1,2)")
    ap.add_argument("--scan-compare", type=parse_count, default=0, metavar="N",
                    help="also compare the tools on a SYN scan of N connections (tools.synscan)")
    ap.add_argument("--dask", action="store_true",
                    help="instead: analyze --dask on a LocalCluster of 1, 2 and 4 worker processes "
                    "over the first --sizes capture cut into 4 sensors of 4 files; throughput per worker")
    ap.add_argument("--floods", action="store_true",
                    help="the SYN scan and SYN flood against tcpdump, argus and tcptrace instead")
    ap.add_argument("--targets", action="store_true",
                    help="instead: issue 22's targets in one invocation (5 M file, SYN scan and flood; "
                         "tcpdump, rstlens, rstlens -j 2; -j 2 tables compared with -j 1's)")
    ap.add_argument("--flood", type=parse_count, default=1_000_000, help="with --floods: SYNs")
    ap.add_argument("--flood-big", type=parse_count, default=0,
                    help="with --floods: also rstlens alone on a flood of this many SYNs, 1 µs apart")
    args = ap.parse_args(argv)
    jobs = [int(j) for j in args.jobs.split(",") if j]
    sizes = [SMALL_PACKETS] if args.small else [parse_count(s) for s in args.sizes.split(",") if s]
    runs = 1 if args.small else max(1, args.runs)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.report:
        compile_bytecode()
        return main_report(args, sizes, runs, log)
    if args.dask:
        compile_bytecode()
        return main_dask(args, sizes[0], runs, log)
    if args.floods:
        compile_bytecode()
        return main_floods(args, runs, log)
    if args.targets:
        compile_bytecode()
        return main_targets(args, runs, log)

    report = {
        "generator_version": GENERATOR_VERSION,
        "seed": args.seed,
        "runs": runs,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "files": [],
    }
    error = compile_bytecode()
    if error:
        log(f"warning: rstlens' bytecode not compiled ({error}): runs include compiling it")
    floor = [run_once(["true"], 60.0) for _ in range(3)]
    report["rss_floor_mb"] = max((x.get("rss_mb", 0.0) for x in floor), default=None)
    status = 0
    for n in sizes:
        path, took = ensure_capture(args.data_dir, n, args.seed)
        size_mb = path.stat().st_size / 1e6
        gen = f"generated in {took:.1f}s" if took is not None else "cached"
        log(f"{path.name}: {n} packets, {size_mb:.0f} MB ({gen})")
        rows = bench_file(path, n, runs, args.timeout, log, args.slow_runs, jobs)
        report["files"].append(
            {
                "file": path.name,
                "packets": n,
                "bytes": path.stat().st_size,
                "generate_seconds": took,
                "results": rows,
            }
        )
        print(
            format_table(
                f"\n{path.name}: {n:,} packets, {size_mb:.0f} MB, median of {runs} run(s)", rows
            )
        )
        if not rows[0]["ok"]:
            status = 1

    if args.scan_compare:
        path, _ = scan_capture(args.data_dir, args.scan_compare, args.seed)
        n = 2 * args.scan_compare  # a SYN and its RST/ACK per connection
        log(f"{path.name}: {n} packets ({args.scan_compare} refused connections)")
        rows = bench_file(path, n, runs, args.timeout, log, 0, jobs)
        report["files"].append({"file": path.name, "packets": n, "bytes": path.stat().st_size,
                                "results": rows})  # fmt: skip
        print(format_table(f"\n{path.name}: SYN scan, {n:,} packets, median of {runs} run(s)", rows))

    # start-up cost: one TCP packet (so every stage, the flow core included, is loaded)
    one = args.data_dir / "one-tcp-syn.pcap"
    write_one_tcp_packet(one)
    tool = tools_for(1)[1]
    start = {"tool": tool.name, "runs": [], "error": tool.missing()}
    for _ in range(runs):
        if start["error"]:
            break
        d = tempfile.mkdtemp(prefix="rstlens-bench-")
        try:
            res = run_once(tool.make_argv(one, d), args.timeout)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        if res["ok"]:
            start["runs"].append(res)
        else:
            start["error"] = res["error"]
    start["ok"] = not start["error"] and bool(start["runs"])
    if start["ok"]:
        start["median_wall"] = statistics.median(x["wall"] for x in start["runs"])
        print(f"\nstart-up (rstlens analyze, 1 packet): {start['median_wall']:.2f}s median wall")
    else:
        print(f"\nstart-up (rstlens analyze, 1 packet): FAILED: {start['error']}")
    report["startup"] = start
    floor += [run_once(["true"], 60.0) for _ in range(3)]
    report["rss_floor_mb"] = max((x.get("rss_mb", 0.0) for x in floor), default=None)
    print(
        f"(peak RSS includes up to {report['rss_floor_mb']:.0f} MB inherited from this "
        "launcher: /bin/true measures that much)"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
