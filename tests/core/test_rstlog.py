"""The RST log (rstlens/flows/rstlog.py): each side's own IP-ID counter before a RST, and
what each side did afterwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from builders import T0, A, P, R, S, frame, write_pcap

from rstlens.flows import layout as L
from rstlens.flows.engine import CoreOptions, FlowEngine
from rstlens.parsers import CaptureReader

C, SRV = ("10.0.0.1", 40000), ("10.0.0.2", 80)


def _rst_log(tmp_path: Path, packets: list[tuple[str, int, int, int, int, bytes, int]]) -> np.ndarray:
    """The RST rows of a capture of (from, flags, seq, ack, IP ID, payload, TTL) packets
    between C ("c") and SRV ("s"), 1 ms apart."""
    frames = []
    for i, (side, flags, seq, ack, ipid, data, ttl) in enumerate(packets):
        src, dst = (C, SRV) if side == "c" else (SRV, C)
        frames.append((T0 + i / 1000, frame(*src, *dst, flags, seq, ack, data, ttl=ttl, ip_id=ipid)))
    path = write_pcap(tmp_path / "c.pcap", frames)
    engine = FlowEngine(CoreOptions(), lambda finished: None)
    for batch in CaptureReader([path]):
        engine.feed(batch)
    engine.finish()
    return engine.rsts


def test_a_sides_ip_id_reference_is_its_last_non_rst_segment(tmp_path: Path) -> None:
    """Two RSTs at the client's SND.NXT from a tool with its own counter 256 ahead of the
    client's stack (TTL 1, IP IDs 358 and 359), a RST towards the client between them, then
    the client's next data segment (IP ID 103: below the tool's IDs, above its stack's last,
    102).  Each RST takes each side's last non-RST IP ID as that side's reference, through
    the RSTs between (the chain of logged RSTs), and the client's segment counts as sent
    after all three: it carried on.  Had a RST's own IP ID been the reference, the segment
    would have been "sent before" the third RST (359 - 103 < IPID_BEFORE_SPAN)."""
    rsts = _rst_log(tmp_path, [
        ("c", S, 1000, 0, 100, b"", 64),
        ("s", S | A, 5000, 1001, 7000, b"", 64),
        ("c", A, 1001, 5001, 101, b"", 64),
        ("c", P | A, 1001, 5001, 102, b"x" * 10, 64),
        ("c", R | A, 1011, 5001, 358, b"", 1),
        ("s", R | A, 5001, 1011, 7100, b"", 64),
        ("c", R | A, 1011, 5001, 359, b"", 1),
        ("c", P | A, 1011, 5001, 103, b"y" * 10, 64),
        ("s", A, 5001, 1021, 7001, b"", 64),
    ])  # fmt: skip
    assert rsts[:, L.R_IPID].tolist() == [358, 7100, 359]
    assert rsts[:, L.R_SND_LAST_IPID].tolist() == [102, 7000, 102]
    assert rsts[:, L.R_RCV_LAST_IPID].tolist() == [7000, 102, 7000]
    client = rsts[:, L.R_SRC_IS_A] == rsts[0, L.R_SRC_IS_A]
    assert client.tolist() == [True, False, True]
    assert (rsts[client, L.R_AFTER_SND_ADV] == 1).all()


def test_a_segment_older_than_the_senders_reference_is_not_afterwards(tmp_path: Path) -> None:
    """The client aborts (its stack's RST, IP ID 103, then a second, 104) after data with IP
    ID 102; a data segment at the RST's seq with IP ID 101 follows in the capture: it was
    sent before the RSTs (two taps, reordered), so the client did not carry on."""
    rsts = _rst_log(tmp_path, [
        ("c", S, 1000, 0, 100, b"", 64),
        ("s", S | A, 5000, 1001, 7000, b"", 64),
        ("c", P | A, 1001, 5001, 102, b"x" * 10, 64),
        ("c", R | A, 1011, 5001, 103, b"", 64),
        ("c", R | A, 1011, 5001, 104, b"", 64),
        ("c", P | A, 1011, 5001, 101, b"y" * 10, 64),
    ])  # fmt: skip
    assert rsts[:, L.R_SND_LAST_IPID].tolist() == [102, 102]
    assert rsts[:, L.R_AFTER_SND_ADV].tolist() == [0, 0]
