"""Hypothesis: arbitrary bytes never break the kernel or the readers; the merge matches
a head-of-queue merge."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parsers_helpers import read_all

from rstlens.parsers import CaptureError, PacketBatch, decode_arrays
from rstlens.parsers._decode import C_BYTES, C_TCP
from rstlens.parsers._merge import merge_streams

LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 127]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=300),
    recs=st.lists(
        st.tuples(st.integers(-5, 320), st.integers(-5, 400), st.sampled_from(LINKTYPES)),
        max_size=12,
    ),
)
def test_kernel_on_arbitrary_bytes(data: bytes, recs: list[tuple[int, int, int]]) -> None:
    # Copy into an exactly-sized buffer: any read past it would hit other memory, which the
    # explicit checks must prevent; results must stay inside the buffer.
    buf = np.frombuffer(bytes(data), np.uint8).copy()
    n = len(recs)
    offs = np.array([r[0] for r in recs], np.int64)
    caps = np.array([r[1] for r in recs], np.int64)
    lts = np.array([r[2] for r in recs], np.int32)
    z = np.zeros(n, np.int64)
    batch, counters = decode_arrays(buf, offs, caps, lts, z, z, z)
    # one outcome per record (the TCP count is len(batch)), and every record's bytes counted
    assert counters[:C_TCP].sum() + len(batch) == n and counters[C_TCP] == len(batch)
    assert counters[C_BYTES] == caps.sum()
    assert np.all(batch.payload_off + batch.captured_payload <= len(buf))
    assert np.all(batch.captured_payload >= 0) and np.all(batch.payload_len >= 0)


PCAP_HDR = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
NG_SHB = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from([b"", PCAP_HDR, NG_SHB, b"\x1f\x8b"]), body=st.binary(max_size=400))
def test_reader_on_arbitrary_bytes(prefix: bytes, body: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x"
        path.write_bytes(prefix + body)
        try:
            got, reader = read_all([path])
        except CaptureError:
            return
        info = reader.inputs[0]
        assert info.error is None or "\n" not in info.error
        assert len(got) <= reader.stats.packets


def _batch(ts: list[int], source: int, first: int) -> PacketBatch:
    b = PacketBatch.empty(len(ts))
    b.ts_us[:] = ts
    b.source[:] = source
    b.frame[:] = np.arange(first, first + len(ts))  # position within its input
    return b


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.lists(st.integers(0, 50), max_size=6), max_size=4), min_size=2, max_size=4)
)
def test_merge_matches_head_of_queue_merge(inputs: list[list[list[int]]]) -> None:
    streams = []
    for s, chunks in enumerate(inputs):
        starts = np.cumsum([0] + [len(c) for c in chunks])
        streams.append(iter([_batch(c, s, int(f)) for c, f in zip(chunks, starts, strict=False)]))
    out = PacketBatch.concat(list(merge_streams(streams, batch_size=3)))
    # Reference: repeatedly take the smallest head (ties to the lower input).
    queues = [[t for chunk in chunks for t in chunk] for chunks in inputs]
    pos = [0] * len(queues)
    want = []
    while True:
        heads = [(queues[s][pos[s]], s) for s in range(len(queues)) if pos[s] < len(queues[s])]
        if not heads:
            break
        _t, s = min(heads)
        want.append((s, pos[s]))
        pos[s] += 1
    assert list(zip(out.source.tolist(), out.frame.tolist(), strict=False)) == want
