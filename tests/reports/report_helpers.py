"""Inputs for the report tests: the bundled samples, an empty run, a run without RSTs and a
run of 1 M connections, plus independent counts read straight from the Parquet files."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import rstlens
from rstlens.output.schema import FLOWS_SCHEMA, RESETS_SCHEMA

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "sample_pcaps").glob("*.pcap"))
ARTIFACTS = REPO / "tests" / "artifacts" / "report"
SECTIONS = ("overview", "when", "where", "middleboxes", "damage", "evidence", "drilldown")


def analyze_samples(out: Path) -> Path:
    rstlens.analyze([str(p) for p in SAMPLES], outdir=out)
    return out


def analyze_empty(out: Path) -> Path:
    """A capture with a pcap header and no packet."""
    cap = out.parent / f"{out.name}.pcap"
    cap.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    rstlens.analyze([str(cap)], outdir=out)
    return out


def analyze_without_rsts(out: Path) -> Path:
    rstlens.analyze([str(REPO / "sample_pcaps" / "clean_close.pcap")], outdir=out)
    return out


def write_million_connections(out: Path, n: int = 1_000_000, seed: int = 7) -> Path:
    """A run of `n` connections written straight to the output schema (analysing a capture
    that large takes longer than this whole test module should): 70% SYN-scan style REJ
    (one closed_port RST each), 20% SF, 8% RSTR aborts, 2% middlebox injections (two RSTs
    each), over one hour from 500 clients to 2,000 servers."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(4, n, p=[0.70, 0.20, 0.08, 0.02])
    ts = 1_717_243_200_000_000 + np.sort(rng.integers(0, 3_600_000_000, n))
    uid = np.char.add("C", np.char.zfill(np.arange(n).astype(str), 17))
    clients = np.char.add("10.0.", np.char.add((rng.integers(0, 500, n) // 250).astype(str),
                                               np.char.add(".", (rng.integers(0, 250, n)).astype(str))))  # fmt: skip
    servers = np.char.add("192.168.", np.char.add((rng.integers(0, 2000, n) // 250).astype(str),
                                                   np.char.add(".", rng.integers(1, 250, n).astype(str))))  # fmt: skip
    sport = rng.integers(1024, 65535, n).astype(np.uint16)
    dport = rng.choice(np.array([22, 80, 443, 445, 3389, 8080], np.uint16), n)
    state = np.array(["REJ", "SF", "RSTR", "RSTR"])[kind]
    history = np.array(["Sr", "ShADadFf", "ShADadr", "ShADadrr"])[kind]
    cause = np.array(["closed_port", None, "abort", "middlebox"], dtype=object)[kind]
    rst_count = np.array([1, 0, 1, 2], np.int32)[kind]
    data = kind >= 1
    flows = pa.table(
        {
            "uid": uid, "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "duration": np.where(data, rng.random(n) * 5, 1e-4), "orig_h": clients,
            "orig_p": sport, "resp_h": servers, "resp_p": dport, "ip_version": np.full(n, 4, np.uint8),
            "vlan": pa.nulls(n, pa.int32()), "inner_vlan": pa.nulls(n, pa.int32()),
            "tunnel": pa.nulls(n, pa.string()).dictionary_encode(),
            "tunnel_endpoints": pa.nulls(n, pa.string()).dictionary_encode(),
            "community_id": np.char.add("1:", uid), "conn_state": pa.array(state).dictionary_encode(),
            "history": history, "orig_pkts": np.where(data, 6, 1), "resp_pkts": np.where(data, 4, 1),
            "orig_bytes": np.where(data, 64, 0), "resp_bytes": np.where(data, 300, 0),
            "start_seen": np.ones(n, bool), "end_reason": pa.array(np.where(kind == 1, "fin", "rst")).dictionary_encode(),
            "rst_count": rst_count, "rst_cause": pa.array(cause, pa.string()).dictionary_encode(),
            "rst_subcause": pa.array(np.where(kind == 3, "injected", None), pa.string()).dictionary_encode(),
            "rst_sender": pa.array(np.array([ "resp", None, "resp", "middlebox"], dtype=object)[kind], pa.string()).dictionary_encode(),
            "rst_confidence": pa.array(np.where(kind == 1, np.nan, 0.9).astype(np.float32), mask=kind == 1),
            "orig_ttl_min": np.full(n, 64, np.uint8), "orig_ttl_max": np.full(n, 64, np.uint8),
            "resp_ttl_min": np.full(n, 58, np.uint8), "resp_ttl_max": np.full(n, 58, np.uint8),
            "orig_mss": np.full(n, 1460, np.uint16), "resp_mss": np.full(n, 1460, np.uint16),
            "ts_option": np.ones(n, bool), "source": pa.array(np.full(n, "synthetic.pcap")).dictionary_encode(),
            "orig_dups": np.zeros(n, np.int64), "resp_dups": np.zeros(n, np.int64),
        }
    )  # fmt: skip
    flows = flows.cast(FLOWS_SCHEMA)
    # one RST per reset connection, a second one for the injected connections
    conn = np.concatenate([np.flatnonzero(kind != 1), np.flatnonzero(kind == 3)])
    conn.sort()
    m = len(conn)
    k = kind[conn]
    resets = pa.table(
        {
            "ts": pa.array(ts[conn] + 200, pa.timestamp("us", tz="UTC")), "uid": uid[conn],
            "src_h": servers[conn], "src_p": dport[conn], "dst_h": clients[conn], "dst_p": sport[conn],
            "direction": pa.array(np.full(m, "resp")).dictionary_encode(),  # the servers' RSTs
            "flags": np.where(k == 0, "RA", "R"), "seq": rng.integers(0, 2**32, m, dtype=np.uint64).astype(np.uint32),
            "ack": rng.integers(0, 2**32, m, dtype=np.uint64).astype(np.uint32),
            "ttl": np.where(k == 3, 61, 58).astype(np.uint8), "outer_ttl": pa.nulls(m, pa.uint8()), "ip_id": np.where(k == 3, rng.integers(1, 65535, m), 0).astype(np.int32),
            "window": np.zeros(m, np.uint16), "payload_len": np.zeros(m, np.int32),
            "acceptability": pa.array(np.full(m, "exact")).dictionary_encode(), "ended_connection": np.ones(m, bool),
            "sender": pa.array(np.where(k == 3, "middlebox", "claimed")).dictionary_encode(),
            "cause": pa.array(cause[conn].astype(str)).dictionary_encode(),
            "subcause": pa.array(np.where(k == 3, "injected", None), pa.string()).dictionary_encode(),
            "confidence": np.full(m, 0.9, np.float32),
            "evidence": pa.array([["acc.exact", "seq.zero_acks_syn"] if x == 0 else ["acc.exact", "inj.ttl_host"] if x == 3
                                  else ["acc.exact", "form.active"] for x in k.tolist()], pa.list_(pa.string())),
            "unacked_bytes": np.where(k == 2, 100, 0).astype(np.int64), "orig_unacked_bytes": np.zeros(m, np.int64),
            "resp_unacked_bytes": np.where(k == 2, 100, 0).astype(np.int64), "frame": np.arange(1, m + 1, dtype=np.int64),
            "source": pa.array(np.full(m, "synthetic.pcap")).dictionary_encode(),
            "duplicate_of": pa.nulls(m, pa.int64()),
            "checksum": pa.array(np.full(m, "good")).dictionary_encode(), "payload_text": pa.nulls(m, pa.string()),
            "ts_val": pa.nulls(m, pa.uint32()), "ts_ecr": pa.nulls(m, pa.uint32()),
        }
    )  # fmt: skip
    resets = resets.cast(RESETS_SCHEMA)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(flows, out / "flows.parquet", compression="zstd")
    pq.write_table(resets, out / "resets.parquet", compression="zstd")
    return out


# ---- independent truth, from the Parquet files with pyarrow alone --------------------------
def parquet_counts(run: Path) -> dict[str, object]:
    """Counts computed from the Parquet files directly (no rstlens.reports code)."""
    resets = pq.read_table(run / "resets.parquet", columns=["cause", "subcause", "src_h"]).to_pylist()
    flows = pq.read_table(run / "flows.parquet", columns=["conn_state", "rst_count"]).to_pylist()
    senders = Counter(r["src_h"] for r in resets)
    top = sorted(senders.items(), key=lambda kv: (-kv[1], kv[0]))[:1]
    return {
        "rsts": len(resets),
        "connections": len(flows),
        "reset_connections": sum(1 for f in flows if f["rst_count"] > 0),
        "by_cause_subcause": Counter((r["cause"], r["subcause"] or "") for r in resets),
        "conn_states": Counter(f["conn_state"] for f in flows),
        "top_sender": top[0] if top else None,
    }

