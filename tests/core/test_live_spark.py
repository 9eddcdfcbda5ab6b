"""Spark reads the live sensor's dataset as it grows (issue 19): `spark.read.parquet` on
OUTDIR/flows and OUTDIR/resets discovers the hive partitions (date, hour) and skips the
hidden temporary files of the part being written.  Behind ``-m spark`` (a JVM start and
a Spark session take a minute); skipped without pyspark or java."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest
from test_live_sensor import Sensor, Traffic

from rstlens.output.dataset import list_parts

if TYPE_CHECKING:
    from conftest import Veth

pytestmark = [pytest.mark.netns, pytest.mark.spark]


@pytest.fixture(scope="module")
def spark():
    if shutil.which("java") is None:
        pytest.skip("needs java (Debian: default-jre-headless)")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # the driver stays on loopback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyspark warns about the pandas version on import
        pyspark_sql = pytest.importorskip("pyspark.sql")
        session = (pyspark_sql.SparkSession.builder.master("local[1]").appName("rstlens-live")
                   .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
                   .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
                   .getOrCreate())  # fmt: skip
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _read(spark, out: Path) -> tuple[int, int, set[str], int]:
    """Spark's view: flows rows, resets rows, the files it read, resets without their
    connection in the flows it read (a left anti join)."""
    from pyspark.sql.functions import input_file_name

    flows = spark.read.parquet(str(out / "flows")).withColumn("file", input_file_name())
    resets = spark.read.parquet(str(out / "resets")).withColumn("file", input_file_name())
    assert {"date", "hour"} <= set(flows.columns) and {"date", "hour"} <= set(resets.columns)
    f = flows.select("uid", "file", "date", "hour").collect()
    r = resets.select("uid", "file", "cause").collect()
    orphans = resets.join(flows, on="uid", how="left_anti").count()
    files = {row.file.removeprefix("file://") for row in [*f, *r]}
    # the partition columns agree with the directories (hive discovery)
    for row in f:
        assert f"date={row.date:%Y-%m-%d}/hour={row.hour:02d}/" in row.file
    assert all(row.cause == "closed_port" for row in r)
    return len(f), len(r), files, orphans


def test_spark_reads_the_live_dataset_while_it_grows(veth: Veth, tmp_path: Path, spark) -> None:
    out = tmp_path / "out"
    traffic = Traffic(veth)
    try:
        s = Sensor(["-i", veth.host_if, "-o", str(out), "--rotate", "2", "--linger", "1",
                    "--stats-interval", "0", "tcp"])  # fmt: skip
        traffic.round(3)
        s.wait_for(lambda: sum(1 for p in list_parts(out) if p.resets is not None
                               and pq.read_metadata(p.resets).num_rows) >= 1)  # fmt: skip
        n1, r1, files1, orphans1 = _read(spark, out)
        traffic.round(4)
        s.wait_for(lambda: sum(pq.read_metadata(p.resets).num_rows for p in list_parts(out)
                               if p.resets is not None) >= r1 + 4, timeout=30)  # fmt: skip
        n2, r2, files2, orphans2 = _read(spark, out)
        assert s.proc.poll() is None  # read while it runs
        assert s.stop() == 0
    finally:
        traffic.close()
    # what Spark read is whole parts only (no temporary file), and their rows exactly
    for files, n, r in ((files1, n1, r1), (files2, n2, r2)):
        assert not [f for f in files if Path(f).name.startswith(".")]
        rows = {f: pq.read_metadata(f).num_rows for f in files}
        assert sum(v for f, v in rows.items() if "/flows/" in f) == n
        assert sum(v for f, v in rows.items() if "/resets/" in f) == r
    assert orphans1 == orphans2 == 0  # every RST's connection row is there
    assert r1 >= 3 and r2 >= r1 + 4 and n2 > n1 and files1 < files2 | files1
