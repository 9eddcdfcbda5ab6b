"""Bad input through the real command line: exit 0 with warnings or a one-line error,
never a traceback or a hang; good inputs beside bad ones are still analysed."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from parsers_helpers import ROBUST, RSTLENS, ZEEK, needs_corpus, read_all, robust

pytestmark = needs_corpus


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # ulimit -v bounds memory: an absurd record length must not be allocated
    cmd = "ulimit -v 4000000; exec " + " ".join(f"'{a}'" for a in [str(RSTLENS), "packets", *args])
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=timeout)


def _damaged() -> set[str]:
    """Files whose README row says tshark fails on them: each gets its own run."""
    out = set()
    for line in (ROBUST / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 8 and cells[1].startswith("`") and cells[7].startswith("error"):
            out.add(cells[1].strip("`"))
    return out


def _check(res: subprocess.CompletedProcess[str], n_inputs: int) -> None:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode in (0, 1, 2), res.stderr
    for line in res.stderr.splitlines():
        assert line.startswith("rstlens: "), line  # one line per message
    errors = [line for line in res.stderr.splitlines() if ": error: " in line]
    if res.returncode == 0:
        assert not errors
    else:
        assert errors and len(errors) <= n_inputs


def test_every_robust_file_through_the_cli() -> None:
    files = sorted(p for p in ROBUST.rglob("*") if p.is_file() and p.name != "README.md")
    assert len(files) == 126
    damaged = _damaged()
    assert len(damaged) >= 15
    single = [[str(p)] for p in files if str(p.relative_to(ROBUST)) in damaged]
    rest = [str(p) for p in files if str(p.relative_to(ROBUST)) not in damaged]
    groups = single + [rest[i : i + 20] for i in range(0, len(rest), 20)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda g: (g, _run(*g)), groups))
    for group, res in results:
        _check(res, len(group))
        if len(group) > 1:
            assert res.returncode == 0, (group, res.stderr)


def test_truncated_file_keeps_records_before_the_cut() -> None:
    path = robust("http-mime-truncated/input.pcap")  # libpcap fails; stream reader goes on
    got, reader = read_all([path])
    info = reader.inputs[0]
    assert info.truncated_at == 2715459 and info.error is None
    assert len(got) == 2696 and got.frame[-1] == 2696
    assert any("cut short" in w for w in info.warnings)
    res = _run(str(path))
    assert res.returncode == 0 and res.stdout.count("\n") == 2696 and "cut short" in res.stderr


def test_cut_in_the_middle_of_a_record(tmp_path: Path) -> None:
    data = (ZEEK / "ssh.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:500_000])
    got, reader = read_all([cut])
    whole, _ = read_all([ZEEK / "ssh.pcap"])
    info = reader.inputs[0]
    assert info.truncated_at is not None and info.truncated_at <= 500_000
    assert 0 < len(got) < len(whole)
    assert (got.seq == whole.seq[: len(got)]).all()


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("smtp-to-comma/10.7.29.101_49898-178.63.41.150_25.pcap", 18),
        ("bug-1450-04/tls_DER-incomplete-header.pcap", 6),
    ],
)
def test_absurd_record_length_stops_with_a_message(name: str, kept: int) -> None:
    _got, reader = read_all([robust(name)])
    info = reader.inputs[0]
    assert reader.stats.packets == kept and info.error is None
    assert len(info.warnings) == 1 and "claims" in info.warnings[0]


def test_bad_inputs_beside_a_good_one(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("this is not a capture\n")
    good = ZEEK / "syn-then-rst.pcap"
    res = _run(str(empty), str(tmp_path), str(tmp_path / "missing.pcap"), str(text), str(good))
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 4
    assert "empty file" in errors[0] and "directory" in errors[1]
    assert "no such file" in errors[2] and "not a pcap" in errors[3]
    assert res.stdout.count("\n") == 2 and "[R]" in res.stdout
    res = _run(str(empty), str(text))
    assert res.returncode == 2 and res.stdout == ""


def test_bad_bpf_on_the_cli() -> None:
    res = _run(str(ZEEK / "ssh.pcap"), "tcp", "and", "and")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "bad BPF" in res.stderr


def test_rst_only_and_count() -> None:
    res = _run("--rst-only", str(ZEEK / "syn-then-rst.pcap"))
    assert res.returncode == 0
    assert res.stdout.splitlines() == [
        "2020-09-11T23:00:59.118961Z 1.1.1.1:13131 > 1.1.1.2:31313 [R] seq 0 ack 0 win 8192 ttl 64 id 1 len 0"
    ]
    res = _run("-c", "5", str(ZEEK / "ssh.pcap"))
    assert res.stdout.count("\n") == 5
