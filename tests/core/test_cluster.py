"""`analyze --dask` / `analyze(client=...)` on a real `dask.distributed.LocalCluster` (worker
processes): a rotated capture set of several sensors, cut by tcpdump -C as a sensor writes
it, gives one partitioned dataset whose rows equal, sensor by sensor, a single-process run
over that sensor's files read as one timeline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import rstlens
from rstlens.errors import RstlensError
from rstlens.parallel.cluster import sensors_of
from tests.conftest import REPO_ROOT, SAMPLE_PCAPS

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump (-C splits)")

INTERVAL = 60.0  # seconds per part: the synthetic captures span a few minutes


@pytest.fixture(scope="module")
def sensors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Three sensors: two synthetic captures (tools.synth, different seeds) each cut into
    files of 2 MB by `tcpdump -r F -w trace -C 2` (trace, trace1, trace2, ...), and a lab
    sensor of six separate sample captures (one timeline merged by timestamp)."""
    root = tmp_path_factory.mktemp("sensors")
    out: dict[str, list[Path]] = {}
    for name, seed, packets in (("edge-a", 3, "24k"), ("edge-b", 4, "16k")):
        whole = root / f"{name}.pcap"
        subprocess.run([sys.executable, "-m", "tools.synth", str(whole), "-n", packets, "--seed", str(seed), "-q"],
                       cwd=REPO_ROOT, check=True)  # fmt: skip
        d = root / "set" / name
        d.mkdir(parents=True)
        # as root, tcpdump -C drops to user tcpdump before opening the next file: -Z root
        as_root = ["-Z", "root"] if os.geteuid() == 0 else []
        subprocess.run(["tcpdump", "-r", str(whole), "-w", str(d / "trace"), "-C", "2", *as_root],
                       check=True, capture_output=True)  # fmt: skip
        out[name] = sorted(d.iterdir())
        assert len(out[name]) >= 4, "the split should give several files"
    lab = root / "set" / "lab"
    lab.mkdir()
    for p in sorted(SAMPLE_PCAPS.glob("*.pcap"))[:6]:
        shutil.copy(p, lab / p.name)
    out["lab"] = sorted(lab.iterdir())
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c:  # fmt: skip
        yield c


@pytest.fixture(scope="module")
def dask_run(sensors: dict[str, list[Path]], cluster: object, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, rstlens.Analysis]:
    out = tmp_path_factory.mktemp("dataset")
    dirs = [str(sensors[n][0].parent) for n in sensors]
    with distributed.Client(cluster) as client:
        result = rstlens.analyze(dirs, outdir=out, client=client, interval=INTERVAL)
    return out, result


def _plain(table: pa.Table, keys: list[str]) -> pa.Table:
    """Dictionary columns decoded (each part has its own dictionaries), sorted by `keys`."""
    cols = []
    for field, col in zip(table.schema, table.columns, strict=True):
        cols.append(col.cast(field.type.value_type) if pa.types.is_dictionary(field.type) else col)
    plain = pa.table(cols, names=table.column_names).combine_chunks()
    return plain.sort_by([(k, "ascending") for k in keys])


FLOW_KEYS = ["uid"]
RESET_KEYS = ["uid", "ts", "frame"]


def _sensor_rows(out: Path, sub: str, sensor: str, schema_names: list[str]) -> pa.Table:
    data = ds.dataset(out / sub, format="parquet", partitioning="hive")
    return data.to_table(filter=ds.field("sensor") == sensor).select(schema_names)


def test_rows_equal_a_single_process_run_per_sensor(dask_run: tuple[Path, rstlens.Analysis],
                                                     sensors: dict[str, list[Path]], tmp_path: Path) -> None:  # fmt: skip
    out, _ = dask_run
    for name, files in sensors.items():
        single = tmp_path / name
        rstlens.analyze(files, outdir=single)
        for sub, keys in (("flows", FLOW_KEYS), ("resets", RESET_KEYS)):
            want = pq.read_table(single / f"{sub}.parquet")
            got = _sensor_rows(out, sub, name, want.column_names)
            assert got.num_rows == want.num_rows > 0, (name, sub)
            assert _plain(got, keys).equals(_plain(want, keys)), (name, sub)


def test_connections_crossing_a_file_boundary_are_stitched(dask_run: tuple[Path, rstlens.Analysis],
                                                           sensors: dict[str, list[Path]], tmp_path: Path) -> None:  # fmt: skip
    """Each file of edge-a analysed alone cuts connections in two (more rows, other
    verdicts); the dataset has the one-timeline rows, not those."""
    out, _ = dask_run
    files = sensors["edge-a"]
    cut = sum(len(rstlens.analyze(f, outdir=tmp_path / f.name).flows) for f in files)
    stitched = _sensor_rows(out, "flows", "edge-a", ["uid"]).num_rows
    assert cut > stitched
    whole = rstlens.analyze(files, outdir=tmp_path / "whole")
    assert len(whole.flows) == stitched


def test_the_dataset_reads_as_one(dask_run: tuple[Path, rstlens.Analysis], sensors: dict[str, list[Path]]) -> None:
    """rstlens.read, pyarrow and DuckDB read it; every part's RSTs have their connection in
    the same part; each sensor has its own run id; the parts follow the live layout."""
    out, result = dask_run
    again = rstlens.read(out)
    assert len(again.flows) == len(result.flows) == result.summary.connections
    assert len(again.resets) == len(result.resets) == result.summary.rst_packets
    run_ids = {}
    for part in (out / "flows").rglob("part-*.parquet"):
        rel = part.relative_to(out / "flows")
        sensor, date, hour = rel.parts[:3]
        assert sensor.startswith("sensor=") and date.startswith("date=") and hour.startswith("hour=")
        twin = out / "resets" / rel
        f_uids = set(pq.read_table(part, columns=["uid"]).column("uid").to_pylist())
        r_uids = set(pq.read_table(twin, columns=["uid"]).column("uid").to_pylist())
        assert r_uids <= f_uids, rel
        meta = json.loads(pq.read_metadata(part).metadata[b"rstlens"])
        run_ids.setdefault(sensor, set()).add(meta["run_id"])
        assert meta["sensor"] == sensor.removeprefix("sensor=")
    assert set(run_ids) == {f"sensor={n}" for n in sensors}
    assert all(len(v) == 1 for v in run_ids.values())
    assert len({v.pop() for v in run_ids.values()}) == len(sensors)
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(f"select sensor, count(*) from read_parquet('{out}/flows/**/*.parquet', "
                      "hive_partitioning=true) group by 1 order by 1").fetchall()  # fmt: skip
    assert [r[0] for r in rows] == sorted(sensors)
    assert sum(r[1] for r in rows) == len(again.flows)


def test_the_command_line(sensors: dict[str, list[Path]], cluster: object, tmp_path: Path) -> None:
    dirs = [str(sensors[n][0].parent) for n in ("edge-a", "lab")]
    address = cluster.scheduler_address  # type: ignore[attr-defined]
    res = subprocess.run([str(Path(sys.executable).parent / "rstlens"), "analyze", "--dask", address, *dirs,
                          "-o", str(tmp_path / "out"), "--rotate", "120", "--json"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    got = rstlens.read(tmp_path / "out")
    assert summary["connections"] == len(got.flows) > 0
    assert all(p.startswith(("sensor=edge-a/", "sensor=lab/")) for p in summary["parts"])


def test_sensor_names() -> None:
    with pytest.raises(RstlensError, match="two sensors named"):
        sensors_of(["/a/x/f.pcap", "/b/x/g.pcap"])
    assert sensors_of({"s1": ["a.pcap"], "s2": ["b.pcap", "c.pcap"]}) == {"s1": ["a.pcap"], "s2": ["b.pcap", "c.pcap"]}
    with pytest.raises(RstlensError, match="sensor name"):
        sensors_of({"a/b": ["x.pcap"]})
    assert sensors_of(["/x/edge/one.pcap", "/x/edge/two.pcap"]) == {"edge": ["/x/edge/one.pcap", "/x/edge/two.pcap"]}
