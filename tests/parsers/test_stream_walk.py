"""The stream reader's numba record walk (classic pcap): same records, messages and byte
offsets whatever the chunk size, and the same rows as libpcap on the corpora."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from builders import tcp_ipv4, write_pcap
from parsers_helpers import ROBUST, ZEEK, needs_corpus, read_all

from rstlens.parsers import BATCH_COLUMNS, DecodeStats, InputInfo, PacketBatch, _pcapfile
from rstlens.parsers._decode import decode_raw


def _stream(data: bytes, chunk: int, batch_size: int, monkeypatch, **kw):
    monkeypatch.setattr(_pcapfile, "CHUNK", chunk)
    info, stats = InputInfo(path="x"), DecodeStats()
    raws = list(_pcapfile.StreamReader(io.BytesIO(data), info, batch_size=batch_size, **kw))
    assert all(len(r) <= batch_size for r in raws)
    got = PacketBatch.concat([decode_raw(r, 0, stats) for r in raws])
    return got, info, stats


def _same(a: PacketBatch, b: PacketBatch) -> None:
    assert len(a) == len(b)
    for name in BATCH_COLUMNS:
        if name != "payload_off":
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for i in range(len(a)):
        n, pa, pb = int(a.captured_payload[i]), int(a.payload_off[i]), int(b.payload_off[i])
        assert bytes(a.raw[pa : pa + n]) == bytes(b.raw[pb : pb + n])


PCAPS = [
    p
    for d in (ZEEK, ROBUST)
    if d.is_dir()
    for p in sorted(d.rglob("*"))
    if p.is_file() and _pcapfile.sniff(p.read_bytes()[:4]) in ("pcap", "pcap-ns", "pcap-modified")
]


@needs_corpus
def test_every_classic_pcap_whatever_the_chunk_size(monkeypatch) -> None:
    assert len(PCAPS) > 100
    for path in PCAPS:
        data = path.read_bytes()
        big, info_big, st_big = _stream(data, 4 << 20, 4096, monkeypatch)
        small, info_small, st_small = _stream(data, 97, 5, monkeypatch)  # chunk < most records
        assert info_small == info_big and st_small == st_big, path
        _same(small, big)
        if info_big.warnings or info_big.error:
            continue
        lib, reader = read_all([path])  # libpcap where it reads the file
        if reader.inputs[0].reader == "libpcap":
            # libpcap clips records to the file's snaplen, the stream reader does not
            # (slip-compressed_sl_print-oobr.pcap): compare all but the byte count
            reader.stats.bytes = st_big.bytes
            assert reader.stats == st_big, path
            _same(lib, big)


def _records(n: int) -> list[tuple[float, bytes]]:
    return [(1000.0 + i, tcp_ipv4(seq=i, data=b"x" * (i % 50))) for i in range(n)]


@pytest.mark.parametrize("chunk", [4 << 20, 1000, 61])
def test_damage_reported_at_the_same_byte(tmp_path: Path, monkeypatch, chunk: int) -> None:
    good = write_pcap(tmp_path / "g.pcap", _records(300), linktype=228).read_bytes()
    # offset of record 200's header: walk the file
    pos, starts = 24, []
    while pos < len(good):
        starts.append(pos)
        pos += 16 + struct.unpack_from("<I", good, pos + 8)[0]
    at = starts[200]

    got, info, _ = _stream(good[: at + 7], chunk, 64, monkeypatch)  # header cut
    assert len(got) == 200 and info.truncated_at == at
    assert info.warnings == [
        f"file cut short: record header at byte {at} cut short; kept the records before it"
    ]
    got, info, _ = _stream(good[: at + 16 + 10], chunk, 64, monkeypatch)  # data cut
    cap = struct.unpack_from("<I", good, at + 8)[0]
    assert len(got) == 200 and info.truncated_at == at
    assert info.warnings == [
        f"file cut short: record at byte {at} cut short (10 of {cap} bytes); "
        "kept the records before it"
    ]
    bad = bytearray(good)
    struct.pack_into("<I", bad, at + 8, 10_000_000)  # absurd caplen mid-file
    got, info, stats = _stream(bytes(bad), chunk, 64, monkeypatch)
    assert len(got) == 200 == stats.packets and info.truncated_at is None
    assert info.warnings == [
        f"record at byte {at} claims 10000000 captured bytes (limit 262144): file corrupt, "
        "stopped reading it there"
    ]
    # limit and skip (the libpcap fallback's resume) cut exactly
    got, info, _ = _stream(good, chunk, 64, monkeypatch, limit=150, skip=120)
    assert got.frame.tolist() == list(range(121, 151)) and info.packets == 150
    assert got.seq.tolist() == list(range(120, 150))


def test_big_endian_and_nanosecond_and_big_records(tmp_path: Path, monkeypatch) -> None:
    recs = [(1_700_000_000.5 + i, tcp_ipv4(seq=i, data=b"y" * (i * 5_000))) for i in range(12)]
    le = write_pcap(tmp_path / "le.pcap", recs, linktype=228, nano=True).read_bytes()
    # the same file byte-swapped by hand into a big-endian pcap
    be = bytearray(struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 228))
    pos = 24
    while pos < len(le):
        sec, frac, cap, orig = struct.unpack_from("<IIII", le, pos)
        be += struct.pack(">IIII", sec, frac, cap, orig) + le[pos + 16 : pos + 16 + cap]
        pos += 16 + cap
    a, ia, _ = _stream(le, 12_000, 4, monkeypatch)  # records up to 55 kB > chunk
    b, ib, _ = _stream(bytes(be), 12_000, 4, monkeypatch)
    assert ia.format == ib.format == "pcap-ns" and not ia.warnings and not ib.warnings
    _same(a, b)
    assert a.seq.tolist() == list(range(12)) and a.ts_us[0] == 1_700_000_000_500_000
    assert a.payload_len.tolist() == [i * 5_000 for i in range(12)]
