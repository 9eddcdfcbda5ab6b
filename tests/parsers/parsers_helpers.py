"""Helpers for the parser tests: corpus paths, read a capture to one batch, build captures."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import dpkt
import pytest

from rstlens.parsers import CaptureReader, PacketBatch

REPO = Path(__file__).resolve().parents[2]
RSTLENS = REPO / ".venv" / "bin" / "rstlens"
CORPUS = REPO.parent / "shared" / "corpus"
ZEEK = CORPUS / "zeek" / "traces"
ROBUST = CORPUS / "robust"
needs_corpus = pytest.mark.skipif(
    not ROBUST.is_dir() or not ZEEK.is_dir(), reason="../shared/corpus absent"
)


def robust(name: str) -> Path:
    """A robust-corpus file by the end of its path (unique)."""
    hits = [p for p in ROBUST.rglob("*") if str(p).endswith(name)]
    assert len(hits) == 1, (name, hits)
    return hits[0]


def read_all(paths: Sequence[str | Path], **kw) -> tuple[PacketBatch, CaptureReader]:
    """Every decoded TCP row of `paths` as one batch, and the reader (for inputs/stats)."""
    reader = CaptureReader([str(p) for p in paths], **kw)
    return PacketBatch.concat(list(reader)), reader


def write_pcap(
    path: Path, packets: list[tuple[float, bytes]], linktype: int = 1, nano: bool = False
) -> Path:
    """A classic pcap written by dpkt."""
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh, linktype=linktype, snaplen=262144, nano=nano)
        for ts, buf in packets:
            w.writepkt(buf, ts)
    return path


def tcp_ipv4(
    src: str = "10.0.0.1", dst: str = "10.0.0.2", sport: int = 1234, dport: int = 80,
    flags: int = dpkt.tcp.TH_SYN, seq: int = 100, ack: int = 0, opts: bytes = b"",
    data: bytes = b"", ip_opts: bytes = b"", ttl: int = 64, ip_id: int = 7, off: int = 0,
) -> bytes:  # fmt: skip
    tcp = dpkt.tcp.TCP(
        sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=1000, opts=opts, data=data
    )
    tcp.off = 5 + (len(opts) + 3) // 4  # dpkt does not derive the data offset from opts
    ip = dpkt.ip.IP(
        src=bytes(map(int, src.split("."))), dst=bytes(map(int, dst.split("."))), p=6, ttl=ttl,
        id=ip_id, opts=ip_opts, data=tcp,
    )  # fmt: skip
    ip.hl = 5 + len(ip_opts) // 4
    ip._flags_offset = off  # raw flags+fragment-offset word
    return bytes(ip)


def ether(payload: bytes, ethertype: int = 0x0800, tags: Sequence[tuple[int, int]] = ()) -> bytes:
    """Ethernet frame; `tags` = [(tpid, vid), ...] outermost first."""
    hdr = b"\x02" * 6 + b"\x04" * 6
    for tpid, vid in tags:
        hdr += struct.pack(">H", tpid)
        hdr += struct.pack(">H", vid)
    return hdr + struct.pack(">H", ethertype) + payload
