"""Exports round-trip: zat (as analysts read Zeek logs) and pandas read the files back with
the same rows and values as the Parquet files; `rstlens report`/`export` on the command line."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from report_helpers import analyze_empty, analyze_samples

from rstlens.reports import export
from rstlens.reports._export import CONN_FIELDS, RESETS_FIELDS

RSTLENS = Path(sys.executable).with_name("rstlens")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return analyze_samples(tmp_path_factory.mktemp("export") / "out")


def _parquet(run_dir: Path, name: str) -> list[dict]:
    return pq.read_table(run_dir / name).to_pylist()


def _same(exported: object, original: object, column: str) -> None:
    """A value read back equals the Parquet one (times to the microsecond)."""
    if original is None:
        assert exported is None or (isinstance(exported, float) and math.isnan(exported)) or exported is pd.NA, column
    elif hasattr(original, "timestamp"):
        assert abs(pd.Timestamp(exported).timestamp() - original.timestamp()) < 1.5e-6, column
    elif isinstance(original, bool):
        assert exported in (original, "T" if original else "F"), column
    elif isinstance(original, float):
        value = exported.total_seconds() if hasattr(exported, "total_seconds") else float(exported)
        assert value == pytest.approx(original, abs=1e-6), column
    elif isinstance(original, list):
        assert (exported.split(",") if isinstance(exported, str) else list(exported)) == original, column
    elif isinstance(original, int):
        assert int(exported) == original, column
    else:
        assert str(exported) == str(original), column


def test_zeek_logs_read_back_with_zat(run_dir: Path, tmp_path: Path) -> None:
    zat = pytest.importorskip("zat.log_to_dataframe")
    export(run_dir, "zeek", tmp_path)
    for log, parquet, fields in (("conn.log", "flows.parquet", CONN_FIELDS),
                                 ("rstlens_resets.log", "resets.parquet", RESETS_FIELDS)):  # fmt: skip
        frame = zat.LogToDataFrame().create_dataframe(str(tmp_path / log), ts_index=False)
        original = _parquet(run_dir, parquet)
        assert len(frame) == len(original) and len(original) > 0
        flows_by_uid = {f["uid"]: f for f in _parquet(run_dir, "flows.parquet")}
        for got, want in zip(frame.to_dict("records"), original, strict=True):
            for name, column, _ in fields:
                if column is None or column == "proto":
                    continue
                if column == "community_id" and "community_id" not in want:
                    want = {**want, "community_id": flows_by_uid[want["uid"]]["community_id"]}
                value = got[name]
                _same(None if value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)) else value,
                      want[column], f"{log}:{name}")  # fmt: skip


def test_zeek_header_as_zeek_writes_it(run_dir: Path, tmp_path: Path) -> None:
    export(run_dir, "zeek", tmp_path)
    lines = (tmp_path / "conn.log").read_text().splitlines()
    assert lines[0] == "#separator \\x09"
    assert lines[1:5] == ["#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-", "#path\tconn"]
    assert lines[5].startswith("#open\t") and lines[-1].startswith("#close\t")
    fields = lines[6].split("\t")[1:]
    types = lines[7].split("\t")[1:]
    assert fields[:6] == ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"]
    assert dict(zip(fields, types, strict=True))["duration"] == "interval"
    rows = [line.split("\t") for line in lines[8:-1]]
    assert all(len(r) == len(fields) for r in rows)
    ts = [r[0] for r in rows]
    assert all(len(t.split(".")[1]) == 6 for t in ts)  # epoch seconds, six decimals
    service = fields.index("service")
    assert {r[service] for r in rows} == {"-"}  # unset, not empty


@pytest.mark.skipif(not (shutil.which("zeek-cut") or shutil.which("bro-cut")), reason="needs zeek-cut or bro-cut")
def test_zeek_cut_reads_the_export(run_dir: Path, tmp_path: Path) -> None:
    """zeek-cut (bro-cut in Debian's bro-aux) picks columns by the #fields header."""
    export(run_dir, "zeek", tmp_path)
    cut = shutil.which("zeek-cut") or shutil.which("bro-cut")
    for log, parquet, columns in (("conn.log", "flows.parquet", ("uid", "rst_cause", "orig_bytes")),
                                  ("rstlens_resets.log", "resets.parquet", ("uid", "cause", "ttl"))):  # fmt: skip
        with open(tmp_path / log) as fh:
            out = subprocess.run([cut, *columns], stdin=fh, capture_output=True, text=True, check=True).stdout
        got = [line.split("\t") for line in out.splitlines()]
        want = [[("-" if r[c] is None else str(r[c])) for c in columns] for r in _parquet(run_dir, parquet)]
        assert got == want


def test_zeek_escapes_separators(tmp_path: Path) -> None:
    import pyarrow as pa

    from rstlens.reports._export import _zeek_text

    col = pa.chunked_array([pa.array(["a\tb", "", None, "c\\d"])])
    assert _zeek_text(col, "string").to_pylist() == ["a\\x09b", "(empty)", "-", "c\\x5cd"]
    lists = pa.chunked_array([pa.array([["x", "y"], [], None], pa.list_(pa.string()))])
    assert _zeek_text(lists, "vector[string]").to_pylist() == ["x,y", "(empty)", "-"]


def test_jsonl_and_csv_round_trip(run_dir: Path, tmp_path: Path) -> None:
    export(run_dir, "jsonl", tmp_path / "j")
    export(run_dir, "csv", tmp_path / "c")
    for parquet, stem, fields in (("flows.parquet", "conn", CONN_FIELDS), ("resets.parquet", "resets", RESETS_FIELDS)):
        original = _parquet(run_dir, parquet)
        records = [json.loads(line) for line in (tmp_path / "j" / f"{stem}.jsonl").read_text().splitlines()]
        csv = pd.read_csv(tmp_path / "c" / f"{stem}.csv", keep_default_na=False, na_values=[""]).to_dict("records")
        assert len(records) == len(csv) == len(original)
        for got_j, got_c, want in zip(records, csv, original, strict=True):
            for name, column, _ in fields:
                if column is None or column not in want:
                    continue
                _same(pd.Timestamp(got_j[name], unit="s", tz="UTC") if name == "ts" else got_j[name], want[column], name)
                value = got_c[name]
                _same(None if isinstance(value, float) and math.isnan(value) else value, want[column], name)


def test_export_of_an_empty_run(tmp_path: Path) -> None:
    run = analyze_empty(tmp_path / "out")
    export(run, "zeek", tmp_path / "z")
    lines = (tmp_path / "z" / "conn.log").read_text().splitlines()
    assert [line[:6] for line in lines][-1] == "#close" and not [x for x in lines if not x.startswith("#")]


def _cli(*args: str | Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RSTLENS), *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


def test_cli_report_and_export(run_dir: Path, tmp_path: Path) -> None:
    res = _cli("report", run_dir, "-o", tmp_path / "r.html", "--cause", "closed_port")
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stderr and (tmp_path / "r.html").stat().st_size > 100_000
    res = _cli("export", run_dir, "--format", "jsonl", "-o", tmp_path / "e")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "e" / "conn.jsonl").is_file() and (tmp_path / "e" / "resets.jsonl").is_file()
    for bad in (("report", tmp_path, "-o", tmp_path / "x.html"), ("report", run_dir, "-o", tmp_path / "x.html", "--since", "soon")):
        res = _cli(*bad)
        assert res.returncode == 2 and res.stderr.startswith("rstlens: error:") and "Traceback" not in res.stderr


def test_report_without_the_extra_says_what_to_install(run_dir: Path, tmp_path: Path) -> None:
    """jinja2 made unimportable (as when the `report` extra is not installed)."""
    import os

    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "jinja2.py").write_text("raise ImportError('No module named jinja2')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    res = _cli("report", run_dir, "-o", tmp_path / "r.html", env=env)
    assert res.returncode == 2
    assert res.stderr.strip() == "rstlens: error: the report needs extra packages: pip install 'rstlens[report]'"
    assert not (tmp_path / "r.html").exists()
