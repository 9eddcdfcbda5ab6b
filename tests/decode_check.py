"""The fast decoder against the dpkt reference decoder (rstlens.parsers._reference), field by
field: shared by the parser tests and the real-kernel capture tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rstlens.parsers import BATCH_COLUMNS, CaptureReader, PacketBatch
from rstlens.parsers._reference import read_reference

STATS = ("packets", "tcp", "non_ip", "non_tcp", "ip_fragments", "truncated", "malformed",
         "unsupported_link", "tunnel_depth_exceeded", "esp", "tunnel_id_collisions", "vxlan",
         "geneve", "gre", "erspan", "ip_in_ip", "teredo", "gtpu", "mpls_udp", "pptp")  # fmt: skip


def assert_same_as_reference(path: Path, tunnel_depth: int = 2) -> None:
    """Every counter and every column of every row equal (ts within dpkt's float rounding,
    payloads compared as bytes)."""
    reader = CaptureReader([str(path)], tunnel_depth=tunnel_depth)
    got = PacketBatch.concat(list(reader))
    ref, ref_stats = read_reference(str(path), tunnel_depth=tunnel_depth)
    for name in STATS:
        assert getattr(reader.stats, name) == getattr(ref_stats, name), name
    assert len(got) == len(ref)
    for name in BATCH_COLUMNS:
        a, b = getattr(got, name), getattr(ref, name)
        if name == "ts_us":  # dpkt gives float seconds: allow its rounding
            assert np.all(np.abs(a - b) <= 1), name
        elif name != "payload_off":  # offsets into different buffers: bytes compared below
            assert np.array_equal(a, b), name
    for i in range(len(got)):  # the same payload bytes
        n = int(got.captured_payload[i])
        pa_, pb = int(got.payload_off[i]), int(ref.payload_off[i])
        assert bytes(got.raw[pa_ : pa_ + n]) == bytes(ref.raw[pb : pb + n])
