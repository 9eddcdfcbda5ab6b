"""rstlens' own streaming pcap / pcapng reader (the fallback where libpcap cannot read).

Reads from any binary stream (gzip decompressed on the fly, stdin, named pipes) without
seeking, and yields the same `RawBatch`es as the libpcap path.  Nothing here raises for
bad data: a fault is written to the `InputInfo` and reading stops there, keeping what was
read before.  Memory is bounded: a record or block larger than the limits below stops
the input instead of being allocated.
"""

from __future__ import annotations

import contextlib
import gzip
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

import numpy as np

from rstlens import kernels

from . import _linktypes as lt
from ._decode import RawBatch
from ._info import InputInfo

GZIP_MAGIC = b"\x1f\x8b"
PCAP_MAGICS = {
    # magic as read little-endian -> (byte order, format, ns?, record header length)
    0xA1B2C3D4: ("<", "pcap", False, 16),
    0xD4C3B2A1: (">", "pcap", False, 16),
    0xA1B23C4D: ("<", "pcap-ns", True, 16),
    0x4D3CB2A1: (">", "pcap-ns", True, 16),
    0xA1B2CD34: ("<", "pcap-modified", False, 24),  # Kuznetzov's patched libpcap
    0x34CDB2A1: (">", "pcap-modified", False, 24),
}
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D

MAX_CAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN
MAX_CAPLEN_HARD = 16 << 20  # even when the file's snaplen claims more
MAX_BLOCK = MAX_CAPLEN_HARD + 4096
_TS_MIN, _TS_MAX = -(2**63), 2**63 - 1  # the int64 range of PacketBatch.ts_us

BpfMatch = Callable[[int, bytes], bool]  # (linktype, record bytes) -> keep?


class _Stop(Exception):
    """Internal: stop reading this input (the InputInfo already says why)."""


class _Bytes:
    """Exact reads from a stream, tracking the offset; decompression errors stop it."""

    def __init__(
        self, stream: BinaryIO, info: InputInfo, prefix: bytes = b"", streaming: bool = False
    ) -> None:
        self.stream = stream
        self.info = info
        self.pos = 0
        self._prefix = prefix
        self.failed = False  # a read error was recorded on `info`; nothing more comes
        # a pipe or stdin: hand over what has arrived instead of waiting for a full chunk
        self.streaming = streaming

    def read(self, n: int) -> bytes:
        """Up to `n` bytes; fewer only at end of stream.  _Stop after a read error."""
        out = self.read_avail(n)
        if self.failed:
            raise _Stop
        return out

    def read_avail(self, n: int, at_least: int | None = None) -> bytes:
        """Up to `n` bytes, waiting for `at_least` (default `n`); fewer only at end of
        stream or after a read error (`failed` set), in which case the bytes before the
        error are still returned."""
        need = n if at_least is None else min(n, at_least)
        if self.failed:
            return b""
        parts: list[bytes] = []
        have = 0
        if self._prefix:
            head, self._prefix = self._prefix[:n], self._prefix[n:]
            parts.append(head)
            have = len(head)
        # read1 where the stream has it: gzip's read(n) drops what it had decompressed
        # when the compressed data breaks off; read1 returns it first, then raises.
        read = getattr(self.stream, "read1", self.stream.read)
        try:
            while have < need:
                chunk = read(n - have)
                if not chunk:
                    break
                parts.append(chunk)
                have += len(chunk)
        except (OSError, EOFError, zlib.error, _Stop) as exc:  # BadGzipFile is an OSError
            self.pos += have
            self.failed = True
            if not isinstance(exc, _Stop):
                self.info.warn(f"compressed data corrupt or cut short after byte {self.pos}: {exc}")
                self.info.truncated_at = self.pos
            return b"".join(parts)
        self.pos += have
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (OSError, ValueError, AttributeError):
        return False


def sniff(head: bytes) -> str | None:
    """Format of a capture from its first 4+ bytes: "gzip", "pcap*", "pcapng" or None."""
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if len(head) < 4:
        return None
    (magic,) = struct.unpack("<I", head[:4])
    if magic in PCAP_MAGICS:
        return PCAP_MAGICS[magic][1]
    if magic == PCAPNG_SHB:
        return "pcapng"
    return None


class StreamReader:
    """Iterate `RawBatch`es from a pcap/pcapng byte stream (optionally gzip)."""

    def __init__(
        self,
        stream: BinaryIO,
        info: InputInfo,
        *,
        batch_size: int = 4096,
        bpf: Callable[[int], BpfMatch | None] | None = None,
        limit: int | None = None,
        skip: int = 0,
    ) -> None:
        self.info = info
        self.batch_size = batch_size
        self._bpf_for = bpf
        self._bpf: dict[int, BpfMatch | None] = {}
        self.limit = limit
        self.skip = skip
        self.count = 0  # records accepted (after BPF), including skipped ones
        self._raw = stream
        self._src: _Bytes | None = None
        self.interrupted = False  # ended by KeyboardInterrupt
        self._reset_batch()

    # ---- batch accumulation -------------------------------------------------------
    def _reset_batch(self) -> None:
        self._data = bytearray()
        self._offs: list[int] = []
        self._caps: list[int] = []
        self._ts: list[int] = []
        self._lts: list[int] = []
        self._ifs: list[int] = []
        self._frames: list[int] = []

    def _flush(self) -> RawBatch:
        raw = RawBatch(
            buf=np.frombuffer(bytes(self._data), np.uint8),
            offs=np.array(self._offs, np.int64),
            caps=np.array(self._caps, np.int64),
            ts_us=np.array(self._ts, np.int64),
            linktype=np.array(self._lts, np.int32),
            iface=np.array(self._ifs, np.uint16),
            frame=np.array(self._frames, np.int64),
        )
        self._reset_batch()
        return raw

    def _matches(self, linktype: int, data: bytes) -> bool:
        if self._bpf_for is None:
            return True
        if linktype not in self._bpf:
            self._bpf[linktype] = self._bpf_for(linktype)
        match = self._bpf[linktype]
        return True if match is None else match(linktype, data)

    def _add(self, ts_us: int, linktype: int, iface: int, data: bytes) -> bool:
        """Queue one record; True when the batch is full."""
        if not self._matches(linktype, data):
            return False
        self.count += 1
        self.info.packets = self.count
        if self.count <= self.skip:
            return False
        self._offs.append(len(self._data))
        self._caps.append(len(data))
        self._data += data
        # a pcapng if_tsoffset/resolution can put a record past int64 microseconds: clamp
        self._ts.append(min(max(ts_us, _TS_MIN), _TS_MAX))
        self._lts.append(linktype)
        self._ifs.append(iface)
        self._frames.append(self.count)
        return len(self._offs) >= self.batch_size

    def _done(self) -> bool:
        return self.limit is not None and self.count >= self.limit

    @property
    def bytes_read(self) -> int:
        """Bytes consumed from the underlying (possibly compressed) stream."""
        try:
            return int(self._raw.tell())
        except (OSError, ValueError, AttributeError):
            return self._src.pos if self._src else 0

    # ---- iteration ------------------------------------------------------------------
    def __iter__(self) -> Iterator[RawBatch]:
        try:
            with contextlib.suppress(_Stop):
                yield from self._read()
        except KeyboardInterrupt:
            # Ctrl-C: what was read so far is still handed over, then the input ends.
            self.interrupted = True  # the caller reports it (CaptureReader.interrupted)
        if self._offs:
            yield self._flush()

    def _read(self) -> Iterator[RawBatch]:
        head = self._raw.read(4)
        if not head:
            self.info.error = "empty file (0 bytes)"
            return
        kind = sniff(head)
        stream: BinaryIO = self._raw
        streaming = not _seekable(self._raw)
        gz = False
        if kind == "gzip":
            gz = True
            rest = _Bytes(self._raw, self.info, head)
            # both are binary streams; typeshed types neither as BinaryIO
            stream = cast("BinaryIO", gzip.GzipFile(fileobj=cast("BinaryIO", _Prefixed(rest)), mode="rb"))
            src = _Bytes(stream, self.info)
            head = src.read(4)
            kind = sniff(head)
            if kind is None or kind == "gzip":
                self.info.format = "gzip"
                self.info.error = "gzip file does not hold a pcap or pcapng capture"
                return
            src = _Bytes(stream, self.info, head, streaming)
        else:
            src = _Bytes(self._raw, self.info, head, streaming)
        self._src = src
        if kind is None:
            self.info.error = f"not a pcap or pcapng capture (starts with 0x{head.hex()})"
            return
        self.info.format = kind + ("+gzip" if gz else "")
        if kind == "pcapng":
            yield from self._read_pcapng(src)
        else:
            yield from self._read_pcap(src)

    # ---- classic pcap -----------------------------------------------------------------
    def _read_pcap(self, src: _Bytes) -> Iterator[RawBatch]:
        hdr = src.read(24)
        if len(hdr) < 24:
            self.info.error = f"file header cut short ({len(hdr)} of 24 bytes)"
            return
        (magic,) = struct.unpack("<I", hdr[:4])
        bo, _fmt, nano, rec_len = PCAP_MAGICS[magic]
        major, minor, _zone, _sig, snaplen, network = struct.unpack(bo + "HHiIII", hdr[4:24])
        if major != 2:
            self.info.error = f"unsupported pcap version {major}.{minor}"
            return
        linktype = network & lt.LINKTYPE_MASK
        self.info.add_link_type(linktype)
        limit = MAX_CAPLEN if snaplen <= MAX_CAPLEN else min(snaplen, MAX_CAPLEN_HARD)
        walk = _PcapWalk(bo == ">", 1000 if nano else 1, rec_len, limit, linktype)
        out = _Pieces()
        carry = b""
        base = src.pos  # stream offset of buf[0]
        while not self._done():
            try:
                chunk = src.read_avail(CHUNK, 1 if src.streaming else CHUNK)
            except KeyboardInterrupt:
                if out.n:
                    yield out.flush()  # the records already walked, before giving up
                raise
            eof = not chunk if src.streaming else len(chunk) < CHUNK
            buf = carry + chunk if carry else chunk
            arr = np.frombuffer(buf, np.uint8)
            pos = 0
            status = NEED_MORE
            while not self._done():
                want = self.batch_size - out.n
                if self.limit is not None and self._bpf_for is None:
                    want = min(want, self.limit - self.count)
                k, pos, status = walk.run(arr, pos, want)
                if k:
                    self._take_pieces(out, arr, walk, k, linktype)
                    if out.n >= self.batch_size:
                        yield out.flush()
                if status != FULL:
                    break
            if self._done():
                break
            if status == ABSURD:
                caplen = walk.caplen_at(arr, pos)
                self.info.warn(
                    f"record at byte {base + pos} claims {caplen} captured bytes (limit "
                    f"{limit}): file corrupt, stopped reading it there"
                )
                break
            carry = buf[pos:]
            if eof or src.failed:
                start = base + pos
                if src.failed:
                    pass  # the read error is already recorded
                elif len(carry) == 0:
                    pass  # clean end of file
                elif len(carry) < rec_len:
                    self._cut(start, f"record header at byte {start} cut short")
                else:
                    caplen = walk.caplen_at(arr, pos)
                    self._cut(
                        start,
                        f"record at byte {start} cut short "
                        f"({len(carry) - rec_len} of {caplen} bytes)",
                    )
                break
            base += pos
        if out.n:
            yield out.flush()

    def _take_pieces(
        self, out: _Pieces, arr: np.ndarray, walk: _PcapWalk, k: int, linktype: int
    ) -> None:
        """Queue the `k` records the walk just found (BPF, skip and limit applied)."""
        offs, caps, ts = walk.offs[:k], walk.caps[:k], walk.ts[:k]
        if self._bpf_for is not None:
            keep = np.fromiter(
                (self._matches(linktype, arr[o : o + c].tobytes()) for o, c in zip(
                    offs.tolist(), caps.tolist(), strict=True)),
                bool, k,
            )  # fmt: skip
            idx = np.flatnonzero(keep)
            if self.limit is not None:
                idx = idx[: max(0, self.limit - self.count)]
            offs, caps, ts = offs[idx], caps[idx], ts[idx]
        m = int(offs.shape[0])
        frames = np.arange(self.count + 1, self.count + m + 1, dtype=np.int64)
        self.count += m
        self.info.packets = self.count
        if self.skip and frames.shape[0] and frames[0] <= self.skip:
            drop = int(np.searchsorted(frames, self.skip, side="right"))
            offs, caps, ts, frames = offs[drop:], caps[drop:], ts[drop:], frames[drop:]
        if frames.shape[0]:
            out.add(arr, offs, caps, ts, frames, linktype)

    def _cut(self, offset: int, what: str) -> None:
        self.info.truncated_at = offset
        self.info.warn(f"file cut short: {what}; kept the records before it")

    # ---- pcapng -------------------------------------------------------------------------
    def _read_pcapng(self, src: _Bytes) -> Iterator[RawBatch]:
        bo = "<"
        ifaces: list[tuple[int, int, int, int, int]] = []  # linktype, snaplen, base, exp, off
        last_ts = 0
        first = True
        while not self._done():
            start = src.pos
            bh = src.read(8)
            if not bh:
                if first:
                    self.info.error = "empty file"
                return
            if len(bh) < 8:
                self._cut(start, f"block header at byte {start} cut short")
                return
            btype = struct.unpack(bo + "I", bh[:4])[0]  # SHB magic reads the same both ways
            if btype == PCAPNG_SHB:
                bom_b = src.read(4)
                if len(bom_b) < 4:
                    self._cut(start, f"section header at byte {start} cut short")
                    return
                if struct.unpack("<I", bom_b)[0] == PCAPNG_BOM:
                    bo = "<"
                elif struct.unpack(">I", bom_b)[0] == PCAPNG_BOM:
                    bo = ">"
                else:
                    self._corrupt(start, "section header with a bad byte-order magic")
                    return
                blen = struct.unpack(bo + "I", bh[4:])[0]
                body = self._block_body(src, start, blen, 12)
                if body is None:
                    return
                major, minor = struct.unpack(bo + "HH", body[:4]) if len(body) >= 4 else (0, 0)
                if major != 1:
                    msg = f"pcapng section at byte {start} has unsupported version {major}.{minor}"
                    if first:
                        self.info.error = msg
                    else:
                        self.info.warn(msg + ": stopped reading there")
                    return
                ifaces = []
                first = False
                continue
            if first:
                self.info.error = "pcapng file does not start with a section header"
                return
            blen = struct.unpack(bo + "I", bh[4:])[0]
            body = self._block_body(src, start, blen, 8)
            if body is None:
                return
            # trailer check done in _block_body; body excludes the trailing length
            if btype == 1:  # interface description
                if len(body) < 8:
                    self._corrupt(start, "interface block too short")
                    return
                link, _res, snap = struct.unpack(bo + "HHI", body[:8])
                base, exp, off = _idb_options(body[8:], bo)
                ifaces.append((link, snap, base, exp, off))
                self.info.add_link_type(link)
            elif btype in (6, 2):  # enhanced / obsolete packet block
                if btype == 6:
                    if len(body) < 20:
                        self._corrupt(start, "packet block too short")
                        return
                    ifid, hi, lo, caplen, _orig = struct.unpack(bo + "IIIII", body[:20])
                else:
                    if len(body) < 20:
                        self._corrupt(start, "packet block too short")
                        return
                    ifid, _drops, hi, lo, caplen, _orig = struct.unpack(bo + "HHIIII", body[:20])
                if ifid >= len(ifaces):
                    self._corrupt(start, f"packet block for undeclared interface {ifid}")
                    return
                if caplen > len(body) - 20:
                    self._corrupt(
                        start, f"packet block captured length {caplen} overruns the block"
                    )
                    return
                link, _snap, base, exp, off = ifaces[ifid]
                last_ts = _ticks_to_us((hi << 32) | lo, base, exp) + off * 1_000_000
                if self._add(last_ts, link, ifid, body[20 : 20 + caplen]):
                    yield self._flush()
            elif btype == 3:  # simple packet block: no timestamp, interface 0
                if not ifaces or len(body) < 4:
                    self._corrupt(start, "simple packet block without an interface")
                    return
                (orig,) = struct.unpack(bo + "I", body[:4])
                link, snap = ifaces[0][0], ifaces[0][1]
                caplen = min(orig, len(body) - 4, snap or orig)
                # No timestamp in an SPB: reuse the previous one so the timeline stays sorted.
                if self._add(last_ts, link, 0, body[4 : 4 + caplen]):
                    yield self._flush()
            # every other block type (NRB, ISB, custom, DSB, unknown) is skipped

    def _block_body(self, src: _Bytes, start: int, blen: int, have: int) -> bytes | None:
        """Rest of a block whose first `have` bytes were read; None (and a warning) if bad."""
        if blen < 12 or blen % 4 or blen > MAX_BLOCK:
            self._corrupt(start, f"block with impossible length {blen}")
            return None
        rest = src.read(blen - have)
        if len(rest) < blen - have:
            self._cut(
                start, f"block at byte {start} cut short ({have + len(rest)} of {blen} bytes)"
            )
            return None
        trailer = rest[-4:]
        if trailer not in (struct.pack("<I", blen), struct.pack(">I", blen)):
            self._corrupt(start, "block trailer length does not match its header")
            return None
        return rest[:-4]

    def _corrupt(self, offset: int, what: str) -> None:
        self.info.warn(f"corrupt pcapng at byte {offset}: {what}; stopped reading there")


CHUNK = 4 << 20  # bytes read from the stream per step of the classic-pcap walk

# Outcome of one record walk (`_pcap_kernel.walk_pcap`).
NEED_MORE, FULL, ABSURD = range(3)


class _PcapWalk:
    """The record walk (`_pcap_kernel.walk_pcap`) with its output arrays and the file's constants."""

    def __init__(self, swap: bool, div: int, rec_len: int, limit: int, linktype: int) -> None:
        self.swap, self.div, self.rec_len, self.limit = swap, div, rec_len, limit
        self.linktype = linktype
        self.offs = np.empty(0, np.int64)
        self.caps = np.empty(0, np.int64)
        self.ts = np.empty(0, np.int64)

    def run(self, arr: np.ndarray, pos: int, maxn: int) -> tuple[int, int, int]:
        if self.offs.shape[0] < maxn:
            self.offs = np.empty(maxn, np.int64)
            self.caps = np.empty(maxn, np.int64)
            self.ts = np.empty(maxn, np.int64)
        k, pos, status = kernels.walk_pcap(
            arr, pos, self.swap, self.div, self.rec_len, self.limit, maxn,
            self.offs, self.caps, self.ts,
        )  # fmt: skip
        return int(k), int(pos), int(status)

    def caplen_at(self, arr: np.ndarray, pos: int) -> int:
        return int.from_bytes(arr[pos + 8 : pos + 12].tobytes(), "big" if self.swap else "little")


class _Pieces:
    """Records gathered for one `RawBatch`, as pieces of the chunks they were read from.

    A batch inside one chunk is a view of it (no copy); one spanning chunks is joined.
    """

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.n = 0
        self.linktype = 0

    def add(self, arr: np.ndarray, offs: np.ndarray, caps: np.ndarray, ts: np.ndarray,
            frames: np.ndarray, linktype: int) -> None:  # fmt: skip
        """Records at `offs` in chunk `arr`; the index arrays are copied (callers reuse)."""
        lo = int(offs[0])
        hi = int(offs[-1] + caps[-1])
        self.parts.append((arr[lo:hi], offs - lo, caps.copy(), ts.copy(), frames))
        self.n += int(offs.shape[0])
        self.linktype = linktype

    def flush(self) -> RawBatch:
        parts, self.parts, n, self.n = self.parts, [], self.n, 0
        if len(parts) == 1:
            buf, offs, caps, ts, frames = parts[0]
        else:
            bases = np.cumsum([0] + [p[0].shape[0] for p in parts[:-1]])
            buf = np.concatenate([p[0] for p in parts])
            offs = np.concatenate([p[1] + b for p, b in zip(parts, bases, strict=True)])
            caps = np.concatenate([p[2] for p in parts])
            ts = np.concatenate([p[3] for p in parts])
            frames = np.concatenate([p[4] for p in parts])
        return RawBatch(
            buf=buf, offs=offs, caps=caps, ts_us=ts,
            linktype=np.full(n, self.linktype, np.int32), iface=np.zeros(n, np.uint16),
            frame=frames,
        )  # fmt: skip


class _Prefixed:
    """File-like adapter so gzip can read through a `_Bytes` (which re-feeds the magic)."""

    def __init__(self, src: _Bytes) -> None:
        self.src = src

    def read(self, n: int = -1) -> bytes:
        return self.src.read(n if n >= 0 else 1 << 20)

    def readable(self) -> bool:
        return True


def _idb_options(opts: bytes, bo: str) -> tuple[int, int, int]:
    """(base, exponent, tsoffset seconds) from IDB options; default microseconds."""
    base, exp, off = 10, 6, 0
    i = 0
    while i + 4 <= len(opts):
        code, ln = struct.unpack(bo + "HH", opts[i : i + 4])
        val = opts[i + 4 : i + 4 + ln]
        if code == 0:
            break
        if code == 9 and ln >= 1:
            base, exp = (2, val[0] & 0x7F) if val[0] & 0x80 else (10, val[0])
        elif code == 14 and ln >= 8:
            (off,) = struct.unpack(bo + "q", val[:8])
        i += 4 + ln + (-ln % 4)
    return base, exp, off


def _ticks_to_us(ticks: int, base: int, exp: int) -> int:
    if base == 10:
        # int ** int is typed Any (a negative exponent gives a float): int() says it is not
        return ticks // int(10 ** (exp - 6)) if exp >= 6 else ticks * int(10 ** (6 - exp))
    return (ticks * 1_000_000) >> exp
