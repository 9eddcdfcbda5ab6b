"""flows.parquet and resets.parquet: schema, dtypes, metadata, joins, Community ID, atomicity.

The captures are built with dpkt into tmp_path; the outputs are read back with pyarrow and
pandas (no mocks of Parquet or libpcap).  The expected schema is spelled out here, not
taken from `_schema`, so a change to the public contract fails a test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders import MSS_1460, T0, A, F, P, R, S, frame, pcap_bytes, write_pcap

import rstlens
from rstlens.flows.engine import FlowEngine
from rstlens.output.schema import (
    ACCEPTABILITY,
    CAUSES,
    CONN_STATES,
    DIRECTIONS,
    END_REASONS,
    FLOWS_SCHEMA,
    RESETS_SCHEMA,
    RST_SENDERS,
)
from rstlens.output.writer import read_metadata

REPO = Path(__file__).resolve().parents[2]
RSTLENS = REPO / ".venv" / "bin" / "rstlens"


def session(t: float, c: str, cp: int, s: str, sp: int, *, end: str = "fin", data: int = 100,
            vlan: int | None = None) -> list[tuple[float, bytes]]:  # fmt: skip
    """Handshake (MSS on both SYNs), client data, then a FIN close, a client RST or nothing."""
    ci, si = 1000, 50_000
    out = [
        (t, frame(c, cp, s, sp, S, ci, opts=MSS_1460, vlan=vlan)),
        (t + 0.01, frame(s, sp, c, cp, S | A, si, ci + 1, opts=MSS_1460, vlan=vlan)),
        (t + 0.02, frame(c, cp, s, sp, A, ci + 1, si + 1, vlan=vlan)),
        (t + 0.03, frame(c, cp, s, sp, P | A, ci + 1, si + 1, b"q" * data, vlan=vlan)),
        (t + 0.04, frame(s, sp, c, cp, A, si + 1, ci + 1 + data, vlan=vlan)),
    ]
    cn = ci + 1 + data
    if end == "fin":
        out += [
            (t + 0.05, frame(c, cp, s, sp, F | A, cn, si + 1, vlan=vlan)),
            (t + 0.06, frame(s, sp, c, cp, F | A, si + 1, cn + 1, vlan=vlan)),
            (t + 0.07, frame(c, cp, s, sp, A, cn + 1, si + 2, vlan=vlan)),
        ]
    elif end == "rst":
        out.append((t + 0.05, frame(c, cp, s, sp, R | A, cn, si + 1, vlan=vlan)))
    return out


def rejected(t: float, c: str, cp: int, s: str, sp: int) -> list[tuple[float, bytes]]:
    return [
        (t, frame(c, cp, s, sp, S, 777)),
        (t + 0.001, frame(s, sp, c, cp, R | A, 0, 778)),
    ]


# Community ID v1 spec example (github.com/corelight/community-id-spec, "tcp" baseline).
SPEC_TUPLE = ("128.232.110.120", 34855, "66.35.250.204", 80)
SPEC_ID = "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


def mixed_capture(path: Path) -> Path:
    pk: list[tuple[float, bytes]] = []
    pk += session(0.0, "10.0.0.9", 40001, "10.0.0.1", 8080)  # SF
    pk += session(0.1, "10.0.0.9", 40002, "10.0.0.1", 8080, end="rst", vlan=42)  # RSTO, VLAN
    pk += rejected(0.2, "10.0.0.9", 40003, "10.0.0.1", 8081)  # REJ
    pk += session(0.3, "2001:db8::20", 50001, "2001:db8::1", 443, end="rst")  # RSTO, IPv6
    pk += rejected(0.4, "2001:db8:ffff::5", 50002, "2001:db8::1", 444)  # REJ, IPv6
    pk += session(0.5, "127.0.0.1", 5000, "127.0.0.1", 80, end="open")  # same address
    c, cp, s, sp = SPEC_TUPLE
    pk.append((0.6, frame(c, cp, s, sp, S, 1)))  # S0
    return write_pcap(path, [(T0 + t, b) for t, b in pk], sort=True)


MIXED_BPF = "tcp or (vlan and tcp)"  # a plain "tcp" does not match VLAN-tagged frames


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("mixed")
    cap = mixed_capture(tmp / "mixed.pcap")
    rstlens.analyze(cap, outdir=tmp / "out", bpf=MIXED_BPF, idle_timeout=120.0)
    return tmp / "out"


# --------------------------------------------------------------------------- schema
EXPECTED_FLOWS = [
    ("uid", "string", False), ("ts", "timestamp[us, tz=UTC]", False),
    ("duration", "double", False), ("orig_h", "string", False), ("orig_p", "uint16", False),
    ("resp_h", "string", False), ("resp_p", "uint16", False), ("ip_version", "uint8", False),
    ("vlan", "int32", True), ("inner_vlan", "int32", True), ("tunnel", "enum32", True),
    ("tunnel_endpoints", "enum32", True), ("community_id", "string", False),
    ("conn_state", "enum8", False), ("history", "string", False), ("orig_pkts", "int64", False),
    ("resp_pkts", "int64", False), ("orig_bytes", "int64", False), ("resp_bytes", "int64", False),
    ("start_seen", "bool", False), ("end_reason", "enum8", False), ("rst_count", "int32", False),
    ("rst_cause", "enum8", True), ("rst_subcause", "enum8", True), ("rst_sender", "enum8", True),
    ("rst_confidence", "float", True), ("orig_ttl_min", "uint8", True),
    ("orig_ttl_max", "uint8", True), ("resp_ttl_min", "uint8", True),
    ("resp_ttl_max", "uint8", True), ("orig_mss", "uint16", True), ("resp_mss", "uint16", True),
    ("ts_option", "bool", False), ("source", "enum32", False),
    ("orig_dups", "int64", False), ("resp_dups", "int64", False),
]  # fmt: skip
EXPECTED_RESETS = [
    ("ts", "timestamp[us, tz=UTC]", False), ("uid", "string", False), ("src_h", "string", False),
    ("src_p", "uint16", False), ("dst_h", "string", False), ("dst_p", "uint16", False),
    ("direction", "enum8", False), ("flags", "string", False), ("seq", "uint32", False),
    ("ack", "uint32", False), ("ttl", "uint8", False), ("outer_ttl", "uint8", True),
    ("ip_id", "int32", True),
    ("window", "uint16", False), ("payload_len", "int32", False),
    ("acceptability", "enum8", False), ("ended_connection", "bool", True),
    ("sender", "enum8", False),
    ("cause", "enum8", False), ("subcause", "enum8", True), ("confidence", "float", False),
    ("evidence", "list<item: string>", False), ("unacked_bytes", "int64", False),
    ("orig_unacked_bytes", "int64", False), ("resp_unacked_bytes", "int64", False),
    ("frame", "int64", False), ("source", "enum32", False),
    ("duplicate_of", "int64", True), ("checksum", "enum8", False), ("payload_text", "string", True),
    ("ts_val", "uint32", True), ("ts_ecr", "uint32", True),
]  # fmt: skip


def _type_name(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        assert t.value_type == pa.string(), t
        assert not t.ordered
        return f"enum{t.index_type.bit_width}"
    if pa.types.is_list(t):
        return f"list<item: {t.value_type}>"
    return str(t)


@pytest.mark.parametrize(
    ("name", "expected", "documented"),
    [("flows.parquet", EXPECTED_FLOWS, FLOWS_SCHEMA), ("resets.parquet", EXPECTED_RESETS, RESETS_SCHEMA)],
)  # fmt: skip
def test_parquet_schema_is_the_documented_one(mixed_run: Path, name, expected, documented) -> None:
    schema = pq.read_schema(mixed_run / name)
    got = [(f.name, _type_name(f.type), f.nullable) for f in schema]
    assert got == expected
    assert schema.remove_metadata().equals(documented.remove_metadata(), check_metadata=False)
    # the same types when the whole table is read, and they survive a pandas round trip
    table = pq.read_table(mixed_run / name)
    assert table.schema.remove_metadata().equals(documented.remove_metadata())
    assert table.num_rows > 0
    assert pq.ParquetFile(mixed_run / name).metadata.num_row_groups >= 1


def test_timestamps_are_utc_microseconds(mixed_run: Path) -> None:
    flows = pq.read_table(mixed_run / "flows.parquet")
    assert flows.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    first = min(flows.column("ts").to_pylist())
    assert first.tzinfo is not None and first.utcoffset().total_seconds() == 0
    assert first.timestamp() == pytest.approx(T0, abs=1e-6)
    df = flows.to_pandas()
    assert str(df.ts.dtype) == "datetime64[us, UTC]"
    assert df.ts.min() == pd.Timestamp(T0, unit="s", tz="UTC")


@pytest.mark.parametrize("name", ["flows.parquet", "resets.parquet"])
def test_row_groups_carry_bounds_of_times_and_numbers_not_of_strings(mixed_run: Path, name: str) -> None:
    """Range filters (``ts BETWEEN``) prune row groups by the bounds; strings have none
    (`output.writer._statistics_columns`)."""
    meta = pq.ParquetFile(mixed_run / name).metadata
    group = meta.row_group(0)
    by_name = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    ts = by_name["ts"].statistics
    assert ts is not None and ts.has_min_max and ts.min <= ts.max
    for number in ("orig_p" if name == "flows.parquet" else "src_p",):
        assert by_name[number].statistics is not None and by_name[number].statistics.has_min_max
    for string in ("uid", "community_id" if name == "flows.parquet" else "src_h"):
        stats = by_name[string].statistics
        assert stats is None or not stats.has_min_max, string


def _dictionary_pages(path: Path) -> dict[str, bool]:
    group = pq.ParquetFile(path).metadata.row_group(0)
    return {group.column(i).path_in_schema: group.column(i).has_dictionary_page for i in range(group.num_columns)}


@pytest.mark.parametrize("distinct", [1, 3_000, 10_000])
def test_addresses_get_a_dictionary_only_where_they_repeat(tmp_path: Path, distinct: int) -> None:
    """An address column is dictionary-encoded when its first row group repeats its values
    (ordinary traffic) and written plain when they are mostly distinct (a flood's sources:
    `output.writer.DICTIONARY_MAX_DISTINCT`); its values read back the same either way."""
    from rstlens.output.writer import ParquetSink

    rows = 10_000
    schema = pa.schema([("orig_h", pa.string()), ("uid", pa.string()),
                        ("conn_state", pa.dictionary(pa.int8(), pa.string()))])  # fmt: skip
    table = pa.table({
        "orig_h": [f"10.{i % distinct // 256}.{i % distinct % 256}.1" for i in range(rows)],
        "uid": [f"C{i:017d}" for i in range(rows)],
        "conn_state": pa.array(["S0", "REJ"] * (rows // 2)).dictionary_encode().cast(schema.field(2).type),
    }, schema=schema)  # fmt: skip
    sink = ParquetSink(tmp_path / "f.parquet", schema, {})
    sink.write(table)
    path = sink.commit()
    pages = _dictionary_pages(path)
    assert pages["orig_h"] is (distinct <= rows // 2)
    assert pages["uid"] is False  # never: unique by design
    assert pages["conn_state"] is True  # enums always
    assert pq.read_table(path).equals(table)


@pytest.mark.parametrize("encoding, wanted", [
    ("DELTA_LENGTH_BYTE_ARRAY", {"flows": ("uid", "community_id"), "resets": ("uid",)}),
    ("DELTA_BINARY_PACKED", {"flows": ("ts",), "resets": ("ts", "frame")}),
])  # fmt: skip
def test_distinct_strings_and_growing_numbers_are_delta_encoded(
    mixed_run: Path, encoding: str, wanted: dict[str, tuple[str, ...]]
) -> None:
    """uids and Community IDs (`schema.DISTINCT_STRINGS`) are written DELTA_LENGTH_BYTE_ARRAY
    in both files and times and frame numbers (`schema.GROWING_NUMBERS`) DELTA_BINARY_PACKED,
    no other column either; DuckDB decodes them to what pyarrow reads."""
    duckdb = pytest.importorskip("duckdb")
    for name, columns in wanted.items():
        path = mixed_run / f"{name}.parquet"
        group = pq.ParquetFile(path).metadata.row_group(0)
        encodings = {group.column(i).path_in_schema: group.column(i).encodings for i in range(group.num_columns)}
        for column, used in encodings.items():
            assert (encoding in used) is (column in columns), (name, column, used)
        mine = pq.read_table(path, columns=list(columns))
        assert mine.num_rows > 0
        theirs = duckdb.sql(f"select {', '.join(columns)} from read_parquet('{path}')").fetchall()
        assert theirs == list(zip(*(mine.column(c).to_pylist() for c in columns), strict=True)), name


def test_enumerations_hold_only_documented_values(mixed_run: Path) -> None:
    flows = pq.read_table(mixed_run / "flows.parquet").to_pandas()
    resets = pq.read_table(mixed_run / "resets.parquet").to_pandas()
    for col, allowed in [("conn_state", CONN_STATES), ("end_reason", END_REASONS),
                         ("rst_cause", CAUSES), ("rst_sender", RST_SENDERS)]:  # fmt: skip
        assert set(flows[col].dropna().astype(str)) <= set(allowed), col
    for col, allowed in [("direction", DIRECTIONS), ("acceptability", ACCEPTABILITY),
                         ("cause", CAUSES)]:  # fmt: skip
        assert set(resets[col].dropna().astype(str)) <= set(allowed), col
    assert set(flows.conn_state.astype(str)) == {"SF", "RSTO", "REJ", "S1", "S0"}
    assert set(flows.source.astype(str)) == {"mixed.pcap"}
    assert set(resets.source.astype(str)) == {"mixed.pcap"}


def test_read_gives_documented_pandas_dtypes(mixed_run: Path) -> None:
    res = rstlens.read(mixed_run)
    fl, rs = res.flows, res.resets
    expect_flows = {
        "ts": "datetime64[us, UTC]", "duration": "Float64", "orig_p": "UInt16", "resp_p": "UInt16",
        "ip_version": "UInt8", "vlan": "Int32", "inner_vlan": "Int32", "conn_state": "category",
        "tunnel": "category", "tunnel_endpoints": "category",
        "orig_pkts": "Int64", "resp_pkts": "Int64", "orig_bytes": "Int64", "resp_bytes": "Int64",
        "start_seen": "boolean", "end_reason": "category", "rst_count": "Int32",
        "rst_cause": "category", "rst_subcause": "category", "rst_sender": "category",
        "rst_confidence": "Float32", "orig_ttl_min": "UInt8", "orig_ttl_max": "UInt8",
        "resp_ttl_min": "UInt8", "resp_ttl_max": "UInt8", "orig_mss": "UInt16",
        "resp_mss": "UInt16", "ts_option": "boolean", "source": "category",
    }  # fmt: skip
    expect_resets = {
        "ts": "datetime64[us, UTC]", "src_p": "UInt16", "dst_p": "UInt16",
        "direction": "category", "seq": "UInt32", "ack": "UInt32", "ttl": "UInt8", "outer_ttl": "UInt8",
        "ip_id": "Int32", "window": "UInt16", "payload_len": "Int32",
        "acceptability": "category", "ended_connection": "boolean", "cause": "category",
        "subcause": "category", "confidence": "Float32", "unacked_bytes": "Int64",
        "frame": "Int64", "source": "category",
    }  # fmt: skip
    assert list(fl.columns) == [f.name for f in FLOWS_SCHEMA]
    assert list(rs.columns) == [f.name for f in RESETS_SCHEMA]
    assert {c: str(fl[c].dtype) for c in expect_flows} == expect_flows
    assert {c: str(rs[c].dtype) for c in expect_resets} == expect_resets
    for c in ("uid", "orig_h", "resp_h", "community_id", "history"):
        assert pd.api.types.is_string_dtype(fl[c]), c
    for c in ("uid", "src_h", "dst_h", "flags"):
        assert pd.api.types.is_string_dtype(rs[c]), c
    evidence = [list(e) for e in rs.evidence]  # list<string> arrives as arrays of str
    assert all(len(e) > 0 and all(isinstance(x, str) for x in e) for e in evidence)
    assert all(x.count(".") == 1 for e in evidence for x in e)  # codes like "acc.exact"
    # nulls are pandas NA in the nullable columns, values where there is one
    tagged = fl[fl.orig_p == 40002]
    assert tagged.vlan.tolist() == [42]
    assert fl[fl.orig_p != 40002].vlan.isna().all()
    assert fl.inner_vlan.isna().all()
    assert fl.tunnel.isna().all() and fl.tunnel_endpoints.isna().all()  # untunnelled input
    assert rs.outer_ttl.isna().all()
    sf = fl[fl.orig_p == 40001].iloc[0]
    assert (sf.orig_mss, sf.resp_mss) == (1460, 1460)
    assert (sf.orig_ttl_min, sf.orig_ttl_max) == (64, 64)
    s0 = fl[fl.orig_p == SPEC_TUPLE[1]].iloc[0]
    assert pd.isna(s0.resp_ttl_min) and pd.isna(s0.resp_mss) and pd.isna(s0.orig_mss)
    assert pd.isna(s0.rst_cause) and pd.isna(s0.rst_confidence)
    assert fl[fl.rst_count == 0].rst_cause.isna().all()
    assert fl[fl.rst_count > 0].rst_cause.notna().all()
    # IPv4 RSTs carry the IP ID; IPv6 has none
    v4 = rs[~rs.src_h.str.contains(":")]
    v6 = rs[rs.src_h.str.contains(":")]
    assert len(v4) == 2 and len(v6) == 2
    assert v4.ip_id.notna().all() and set(v4.ip_id.tolist()) == {9}
    assert v6.ip_id.isna().all()
    # the summary stored in the file comes back too
    assert res.summary.connections == len(fl)
    assert res.summary.rst_packets == len(rs)


def test_metadata_records_versions_inputs_and_options(mixed_run: Path) -> None:
    cap = mixed_run.parent / "mixed.pcap"
    for name in ("flows.parquet", "resets.parquet"):
        meta = read_metadata(mixed_run / name)
        assert meta["schema_version"] == "1.3"
        assert meta["rstlens_version"] == rstlens.__version__
        head = hashlib.sha256(cap.read_bytes()[:65536]).hexdigest()
        assert meta["inputs"] == [{"path": str(cap), "size": cap.stat().st_size,
                                   "abspath": str(cap.resolve()), "head_sha256": head}]  # fmt: skip
        assert len(meta["run_id"]) == 16
        opts = meta["options"]
        assert opts["bpf"] == MIXED_BPF
        assert opts["count"] is None
        assert opts["idle_timeout"] == 120.0
        assert opts["close_delay"] == 5.0
        assert opts["attempt_timeout"] == 5.0
        assert opts["max_flows"] == 1_000_000
        summary = meta["run"]["summary"]
        assert summary["packets"] == summary["tcp_packets"] > 0
        assert summary["interrupted"] is False
        # the raw key-value metadata: the schema part is under "rstlens"
        kv = pq.read_metadata(mixed_run / name).metadata
        assert json.loads(kv[b"rstlens"])["schema_version"] == "1.3"
        assert b"rstlens_run" in kv


def test_uid_joins_resets_to_flows(mixed_run: Path) -> None:
    fl = pq.read_table(mixed_run / "flows.parquet").to_pandas()
    rs = pq.read_table(mixed_run / "resets.parquet").to_pandas()
    assert fl.uid.is_unique
    assert fl.uid.str.fullmatch(r"C[0-9A-Za-z]{17}").all()
    assert len(rs) == 4
    joined = rs.merge(fl, on="uid", how="left", suffixes=("", "_flow"), validate="many_to_one")
    assert joined.conn_state.notna().all()
    # each RST joins the connection of its own 5-tuple
    for r in joined.itertuples():
        ends = {(r.src_h, r.src_p), (r.dst_h, r.dst_p)}
        assert ends == {(r.orig_h, r.orig_p), (r.resp_h, r.resp_p)}
        if r.direction == "orig":
            assert (r.src_h, r.src_p) == (r.orig_h, r.orig_p)
        else:
            assert (r.src_h, r.src_p) == (r.resp_h, r.resp_p)
    per_uid = rs.groupby("uid").size()
    counts = fl.set_index("uid").rst_count
    assert (counts[per_uid.index] == per_uid).all()
    assert counts.sum() == len(rs)
    # the flow's RST summary agrees with its (only) RST
    for r in joined.itertuples():
        assert r.rst_cause == r.cause
    rej = joined[joined.conn_state == "REJ"]
    assert len(rej) == 2 and (rej.direction == "resp").all()
    rsto = joined[joined.conn_state == "RSTO"]
    assert len(rsto) == 2 and (rsto.direction == "orig").all()


# --------------------------------------------------------------------------- Community ID
def community_id(saddr: str, sport: int, daddr: str, dport: int, seed: int = 0) -> str:
    """Community ID v1 for TCP, straight from the spec."""
    fam = socket.AF_INET6 if ":" in saddr else socket.AF_INET
    s, d = socket.inet_pton(fam, saddr), socket.inet_pton(fam, daddr)
    if s > d or (s == d and sport > dport):  # order the endpoints
        s, d, sport, dport = d, s, dport, sport
    data = struct.pack("!H", seed) + s + d + struct.pack("!BBHH", 6, 0, sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


def test_own_community_id_matches_the_spec_example() -> None:
    assert community_id(*SPEC_TUPLE) == SPEC_ID
    c, cp, s, sp = SPEC_TUPLE
    assert community_id(s, sp, c, cp) == SPEC_ID  # direction does not matter


@pytest.mark.parametrize(
    "tup",
    [
        SPEC_TUPLE,  # IPv4, originator's address sorts last
        ("10.0.0.9", 40001, "10.0.0.1", 8080),  # IPv4
        ("2001:db8::20", 50001, "2001:db8::1", 443),  # IPv6
        ("2001:db8:ffff::5", 50002, "2001:db8::1", 444),  # IPv6, REJ (responder's RST)
        ("127.0.0.1", 5000, "127.0.0.1", 80),  # equal addresses: ordered by port
    ],
)
def test_community_id_matches_v1(mixed_run: Path, tup: tuple[str, int, str, int]) -> None:
    fl = pq.read_table(mixed_run / "flows.parquet").to_pandas()
    c, cp, s, sp = tup
    row = fl[(fl.orig_h == c) & (fl.orig_p == cp) & (fl.resp_h == s) & (fl.resp_p == sp)]
    assert len(row) == 1, tup
    assert row.community_id.iloc[0] == community_id(c, cp, s, sp)
    if tup == SPEC_TUPLE:
        assert row.community_id.iloc[0] == SPEC_ID


# --------------------------------------------------------------------------- atomic writes
def _syn_flood(n: int) -> list[tuple[float, bytes]]:
    return [
        (T0 + k * 1e-4,
         frame(f"10.{k // 60000 + 1}.{(k // 250) % 240}.{k % 250 + 1}", 10000 + k % 50000,
               "10.0.0.1", 443, S, k))
        for k in range(n)
    ]  # fmt: skip


def _leftovers(d: Path) -> list[str]:
    """Temporary files (the run marker `.rstlens-run` is not one)."""
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp")
                  or (p.name.startswith(".") and p.name != ".rstlens-run"))  # fmt: skip


def test_failed_run_leaves_nothing_and_keeps_earlier_output(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    small = write_pcap(tmp_path / "small.pcap", session(0.0, "10.0.0.9", 40001, "10.0.0.1", 80), sort=True)
    rstlens.analyze(small, outdir=out)
    before = {n: (out / n).read_bytes() for n in ("flows.parquet", "resets.parquet")}
    mtimes = {n: (out / n).stat().st_mtime_ns for n in before}
    assert pq.read_table(out / "flows.parquet").num_rows == 1

    big = write_pcap(tmp_path / "big.pcap", _syn_flood(12_000), sort=True)  # three batches
    real_feed = FlowEngine.feed
    fed: list[int] = []

    def feed_then_fail(self, batch):  # type: ignore[no-untyped-def]
        real_feed(self, batch)
        fed.append(len(batch))
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(FlowEngine, "feed", feed_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        rstlens.analyze(big, outdir=out)
    assert len(fed) == 1 and fed[0] > 0
    assert sorted(p.name for p in out.iterdir()) == [".rstlens-run", "flows.parquet", "resets.parquet"]
    assert {n: (out / n).read_bytes() for n in before} == before
    assert {n: (out / n).stat().st_mtime_ns for n in before} == mtimes

    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="disk on fire"):
        rstlens.analyze(big, outdir=fresh)
    assert list(fresh.iterdir()) == []

    monkeypatch.setattr(FlowEngine, "feed", real_feed)  # and a good run replaces it whole
    rstlens.analyze(big, outdir=out)
    assert pq.read_table(out / "flows.parquet").num_rows == 12_000
    assert _leftovers(out) == []


def test_failed_run_during_attribution_leaves_no_temp_files(tmp_path: Path, monkeypatch) -> None:
    """The exception comes late, after every row was written to the temporary files."""
    import rstlens.pipeline as pipeline

    out = tmp_path / "out"
    cap = mixed_capture(tmp_path / "m.pcap")

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ValueError("attribution broke")

    monkeypatch.setattr(pipeline, "attribute", broken)  # live: all at once
    monkeypatch.setattr(pipeline, "attribute_chunks", broken)  # files: a chunk at a time
    with pytest.raises(ValueError, match="attribution broke"):
        rstlens.analyze(cap, outdir=out)
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------- Ctrl-C
def _blocked_reading_stdin(pid: int) -> bool:
    """True while the process sits in read(0, ...): everything sent so far was consumed."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return fields[:2] == ["0", "0x0"]


def _wait_blocked(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not _blocked_reading_stdin(proc.pid):
        assert proc.poll() is None, "rstlens exited early"
        assert time.monotonic() < deadline, "rstlens never waited for more input"
        time.sleep(0.02)


def _records(packets: list[tuple[float, bytes]]) -> tuple[bytes, list[bytes]]:
    data = pcap_bytes(packets)
    header, recs, off = data[:24], [], 24
    while off < len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        recs.append(data[off : off + 16 + incl])
        off += 16 + incl
    return header, recs


needs_proc = pytest.mark.skipif(
    not Path(f"/proc/{os.getpid()}/syscall").exists(), reason="needs /proc/PID/syscall"
)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell starts a background job, `cmd &`


def _interrupt(
    tmp_path: Path, first: int, trickle: int, sig: int = signal.SIGINT, background: bool = False
) -> tuple[subprocess.CompletedProcess, Path]:
    """Feed `first` records at once, then `trickle` slowly, then `sig`; return the result."""
    out = tmp_path / "out"
    header, recs = _records(_syn_flood(first + trickle + 5000))
    proc = subprocess.Popen(
        [str(RSTLENS), "analyze", "-", "-o", str(out), "-q"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=_ignore_sigint if background else None,
    )  # fmt: skip
    try:
        assert proc.stdin is not None
        proc.stdin.write(header + b"".join(recs[:first]))
        proc.stdin.flush()
        _wait_blocked(proc)
        for rec in recs[first : first + trickle]:
            proc.stdin.write(rec)
            proc.stdin.flush()
            time.sleep(0.002)
        _wait_blocked(proc)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out


@needs_proc
@pytest.mark.parametrize(
    ("sig", "background", "status", "says"),
    [(signal.SIGINT, False, 130, "rstlens: interrupted"),
     (signal.SIGINT, True, 130, "rstlens: interrupted"),  # started with SIGINT ignored
     (signal.SIGTERM, False, 143, "rstlens: terminated")],
    ids=["sigint", "sigint-background-job", "sigterm"],
)  # fmt: skip
def test_stop_signals_exit_128_plus_signal_and_write_valid_output(
    tmp_path: Path, sig: int, background: bool, status: int, says: str
) -> None:
    first = 3 * 4096
    done, out = _interrupt(tmp_path, first, trickle=50, sig=sig, background=background)
    assert done.returncode == status
    err = done.stderr.decode()
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith(says), err
    assert done.stdout == b""
    assert _leftovers(out) == []
    flows = pq.read_table(out / "flows.parquet")
    resets = pq.read_table(out / "resets.parquet")
    assert flows.schema.remove_metadata().equals(FLOWS_SCHEMA.remove_metadata())
    assert resets.schema.remove_metadata().equals(RESETS_SCHEMA.remove_metadata())
    assert resets.num_rows == 0
    meta = read_metadata(out / "flows.parquet")
    summary = meta["run"]["summary"]
    assert summary["interrupted"] is True
    assert meta["inputs"] == [{"path": "-", "size": None, "abspath": None, "head_sha256": None}]
    # what the file holds is consistent: one connection per SYN analysed, all of them sent
    # before the interrupt, none made up
    assert flows.num_rows == summary["packets"] == summary["connections"]
    assert flows.num_rows <= first + 50
    sent = {(f"10.{k // 60000 + 1}.{(k // 250) % 240}.{k % 250 + 1}", 10000 + k % 50000)
            for k in range(first + 50)}  # fmt: skip
    got = set(zip(flows.column("orig_h").to_pylist(), flows.column("orig_p").to_pylist(),
                  strict=True))  # fmt: skip
    assert len(got) == flows.num_rows and got <= sent
    assert set(flows.column("conn_state").to_pylist()) <= {"S0"}


@needs_proc
def test_ctrl_c_output_covers_every_record_read(tmp_path: Path) -> None:
    first, trickle = 3 * 4096, 100
    done, out = _interrupt(tmp_path, first, trickle)
    assert done.returncode == 130
    flows = pq.read_table(out / "flows.parquet")
    assert flows.num_rows == first + trickle
    assert read_metadata(out / "flows.parquet")["run"]["summary"]["packets"] == first + trickle


def test_outputs_get_the_usual_file_mode(mixed_run: Path) -> None:
    """Written through a private temporary file, but readable like any file the user makes."""
    umask = os.umask(0)
    os.umask(umask)
    for name in ("flows.parquet", "resets.parquet"):
        assert (mixed_run / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_nothing_readable_leaves_earlier_output_alone(mixed_run: Path, tmp_path: Path) -> None:
    """`rstlens analyze missing.pcap -o OUT` must not replace OUT's results with empty files."""
    out = tmp_path / "out"
    shutil.copytree(mixed_run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = subprocess.run([str(Path(sys.executable).with_name("rstlens")), "analyze",
                          str(tmp_path / "missing.pcap"), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "no such file" in res.stderr, res.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_the_writer_registers_the_compute_kernels_parquet_needs() -> None:
    """Parquet's C++ writer looks up compute kernels (`unique`) that pyarrow registers only on
    importing its compute extension; a row group written in a thread before any lazy import
    failed (`analyze -j 2`, "No function registered with name: unique").  Importing the
    writer registers them, in a fresh interpreter."""
    import subprocess
    import sys

    code = ("import sys, rstlens.output.writer; import pyarrow._compute as c; "
            "print('pyarrow._compute' in sys.modules, 'unique' in c.list_functions())")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
