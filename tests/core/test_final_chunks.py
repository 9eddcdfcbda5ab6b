"""The verdicts finalised a chunk of RSTs at a time (`attribution.attribute.attribute_chunks`,
`RunOptions.final_chunk`) equal those of one chunk, where they depend on other RSTs in other
chunks: a capture copy and its original, a burst of RSTs, a connection whose deciding RST
is not its last, and a host's TTLs seen in other connections.

The capture is built packet by packet (tests/builders.py); what each RST is follows from
how it was built (comments), and the test checks that those facts are there (so that it
could fail), then that every chunk size gives the same tables, row for row.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rstlens.options import RunOptions
from rstlens.pipeline import run
from tests.builders import T0, A, P, R, S, frame, write_pcap

SERVER = "10.0.0.2"


def _capture(path: Path) -> Path:
    pkts: list[tuple[float, bytes]] = []
    t = T0

    def at(dt: float, f: bytes) -> None:
        nonlocal t
        t += dt
        pkts.append((t, f))

    def refused(k: int) -> None:
        """A closed port: SYN, the server's RST+ACK (TTL 64, as all its packets)."""
        c = f"10.0.1.{k}"
        at(0.001, frame(c, 30000 + k, SERVER, 81, S, seq=1000 * k))
        at(0.0002, frame(SERVER, 81, c, 30000 + k, R | A, 0, 1000 * k + 1, ip_id=0))

    # an established connection the server speaks in (its TTL 64 in the profiles)
    at(0.0, frame("10.0.0.1", 40000, SERVER, 80, S, seq=100))
    at(0.0005, frame(SERVER, 80, "10.0.0.1", 40000, S | A, seq=500, ack=101))
    at(0.0005, frame("10.0.0.1", 40000, SERVER, 80, A, seq=101, ack=501))
    at(0.001, frame("10.0.0.1", 40000, SERVER, 80, P | A, seq=101, ack=501, data=b"x" * 10))
    # a burst: the client's three RSTs, seq changing, the later two at TTL 50 (forged), 0.2 s
    # apart, refusals in between (other chunks); the first ends the connection, so its
    # verdict is the connection's
    for i in range(3):
        at(0.2, frame("10.0.0.1", 40000, SERVER, 80, R | A, seq=111 + 1000 * i, ack=501, ip_id=50 + i,
                      ttl=64 if i == 0 else 50))
        for k in range(3):
            refused(10 * i + k + 1)
    # a RST and its capture copy (same IP ID, seq, ack; one hop further on, ~3 ms later) with
    # other RSTs between them
    at(0.01, frame("10.0.0.3", 40001, SERVER, 80, S, seq=700))
    at(0.0005, frame(SERVER, 80, "10.0.0.3", 40001, S | A, seq=900, ack=701))
    at(0.0005, frame("10.0.0.3", 40001, SERVER, 80, A, seq=701, ack=901))
    at(0.001, frame("10.0.0.3", 40001, SERVER, 80, R | A, seq=701, ack=901, ttl=64, ip_id=77))
    refused(40)
    refused(41)
    at(0.0003, frame("10.0.0.3", 40001, SERVER, 80, R | A, seq=701, ack=901, ttl=63, ip_id=77))
    # a RST claiming the server at a hop distance it shows nowhere (TTL 50), answering a SYN
    at(0.01, frame("10.0.0.4", 40002, SERVER, 80, S, seq=300))
    at(0.0002, frame(SERVER, 80, "10.0.0.4", 40002, R | A, 0, 301, ttl=50, ip_id=0))
    for k in range(50, 56):
        refused(k)
    return write_pcap(path, pkts)


def _tables(cap: Path, out: Path, chunk: int) -> tuple:
    run([str(cap)], out, RunOptions(final_chunk=chunk))
    return pq.read_table(out / "flows.parquet"), pq.read_table(out / "resets.parquet")


def test_chunked_verdicts_equal_one_chunk(tmp_path: Path) -> None:
    cap = _capture(tmp_path / "c.pcap")
    flows, resets = _tables(cap, tmp_path / "whole", 1 << 16)
    r = resets.to_pandas()
    assert len(r) == 3 + 9 + 2 + 2 + 1 + 6  # every RST built above is a row
    # the facts that cross chunks are there
    copy = r[r.duplicate_of.notna()]
    assert len(copy) == 1 and "capture.duplicate" in list(copy.evidence.iloc[0])
    burst = r[(r.src_h == "10.0.0.1")]
    assert len(burst) == 3 and all("inj.rst_seq_change" in list(e) for e in burst.evidence[1:])
    far = r[(r.dst_h == "10.0.0.4")]
    assert "inj.ttl_host" in list(far.evidence.iloc[0])
    f = flows.to_pandas().set_index("uid")
    first = burst.sort_values("ts").iloc[0]
    assert f.at[first.uid, "rst_cause"] == first.cause  # the burst's first RST decides
    for chunk in (1, 2, 3, 5):
        f2, r2 = _tables(cap, tmp_path / f"c{chunk}", chunk)
        assert f2.equals(flows), chunk
        assert r2.equals(resets), chunk


def test_final_chunk_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RunOptions(final_chunk=0)
