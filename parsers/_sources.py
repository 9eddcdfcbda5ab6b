"""`CaptureReader`: every input of a run -> one timeline of decoded TCP `PacketBatch`es."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import BinaryIO

import pcapy

from rstlens.errors import CaptureError
from rstlens.options import DEFAULT_TUNNEL_DEPTH

from . import _linktypes as lt
from ._batch import DecodeStats, PacketBatch
from ._decode import RawBatch, decode_raw
from ._info import InputInfo, head_digest, input_size
from ._libpcap import LibpcapFailed, LibpcapReader, PcapError
from ._merge import RecordCut, merge_streams
from ._pcapfile import BpfMatch, StreamReader, sniff

_BPF_SNAPLEN = 262144


def compile_bpf(expr: str, linktype: int = lt.ETHERNET) -> pcapy.BPFProgram:
    """Compile a BPF expression for a link type; CaptureError (one line) when invalid."""
    try:
        return pcapy.compile(lt.dlt_for_bpf(linktype), _BPF_SNAPLEN, expr, 1, 0)
    except PcapError as exc:
        raise CaptureError(f"bad BPF expression {expr!r}: {exc}") from None


class CaptureReader:
    """Read captures, decode their TCP packets, merge all inputs by timestamp.

    `paths`: files, named pipes or "-" (stdin).  `bpf`: a filter applied to every input.
    `count`: stop after that many records (like ``tcpdump -c``), counted over all inputs
    on the merged timeline: every record counts (after `bpf`), TCP or not.
    Iterating never raises for bad input: problems land on `inputs[i]` and that input
    stops; the others go on.  Raises `CaptureError` only for a bad BPF expression.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        bpf: str | None = None,
        count: int | None = None,
        # 2048 records (~1.1 MB from libpcap) mostly stay in the 1 MB L2 cache while the
        # decoder and the flow core work on them: 4096 was ~13% slower end to end (5 M
        # file); 1024 paid its per-batch Python twice (~0.04 s more per 1 M packets).
        batch_size: int = 2048,
        tunnel_depth: int = DEFAULT_TUNNEL_DEPTH,  # tunnel layers decoded (Zeek's max_depth)
        # wraps each input's raw record stream (libpcap or the stream reader), e.g. to read
        # it in a thread of its own ahead of the decoder (`analyze -j`: rstlens.parallel);
        # may also be set on `read_ahead` before iterating, once `paths` (directories
        # expanded) says how many inputs there are
        read_ahead: Callable[[Iterator[RawBatch]], Iterator[RawBatch]] | None = None,
    ) -> None:
        self.tunnel_depth = tunnel_depth
        self.read_ahead = read_ahead
        given = [os.fspath(p) for p in paths]
        # directories: the capture files below them (by content), sorted
        self.paths, self.skipped = expand_inputs(given)
        self.bpf = bpf.strip() if bpf and bpf.strip() else None
        if self.bpf:
            compile_bpf(self.bpf)  # fail early, before any input is touched
        if count is not None and count < 0:
            raise CaptureError("count must be >= 0")
        self.count = count
        self.batch_size = max(1, int(batch_size))
        self.inputs: list[InputInfo] = [InputInfo(path=p) for p in self.paths]
        self.stats = DecodeStats()
        self._progress: list[LibpcapReader | StreamReader | None] = [None] * len(self.paths)
        self._started = False
        self._stopping = False
        seen: dict[tuple[int, str], InputInfo] = {}
        for info in self.inputs:
            info.size = input_size(info.path)
            if info.path != "-":
                info.abspath = os.path.abspath(info.path)
            digest = head_digest(info.path)
            if digest is None:
                continue
            info.head_sha256 = digest[1]
            first = seen.setdefault(digest, info)
            if first is not info:
                info.duplicate_of = first.path
                info.warn(f"identical to {first.path} (same size and first 64 KiB): read once")

    def stop(self) -> None:
        """End every input after what it has delivered (SIGINT/SIGTERM): the records read
        and decoded so far still come out of the iteration, nothing more is read."""
        self._stopping = True

    # ---- progress -------------------------------------------------------------------
    @property
    def bytes_total(self) -> int | None:
        """Sum of input sizes; None when any input's size is unknown (stdin, pipe)."""
        sizes = [i.size for i in self.inputs]
        known = [s for s in sizes if s is not None]
        return sum(known) if len(known) == len(sizes) else None

    @property
    def bytes_read(self) -> int:
        """Bytes consumed so far (compressed bytes for gzip inputs)."""
        return sum(rd.bytes_read for rd in self._progress if rd is not None)

    # ---- iteration ------------------------------------------------------------------
    def __iter__(self) -> Iterator[PacketBatch]:
        if self._started:
            raise CaptureError("a CaptureReader can be iterated only once")
        self._started = True
        n = len(self.paths)
        if not n:
            return
        raws = [self._stoppable(self._raw_batches(i, self.inputs[i])) for i in range(n)]
        if self.read_ahead is not None:
            raws = [self.read_ahead(r) for r in raws]
        if self.count is not None and n > 1:
            # -c counts records of the merged timeline, TCP or not: cut before decoding.
            raws = RecordCut(raws, self.count, self.inputs).streams()
        streams = [self._input_batches(i, raws[i]) for i in range(n)]
        for batch in merge_streams(streams, self.batch_size):
            yield batch
            if self.interrupted:
                self.stop()  # the other inputs end too; what was decoded still comes out

    def _stoppable(self, raws: Iterator[RawBatch]) -> Iterator[RawBatch]:
        try:
            while not self._stopping:
                raw = next(raws, None)
                if raw is None:
                    return
                yield raw
        finally:
            close = getattr(raws, "close", None)
            if close is not None:
                close()

    @property
    def interrupted(self) -> bool:
        """An input ended because of Ctrl-C (what it read before is still delivered)."""
        return any(getattr(rd, "interrupted", False) for rd in self._progress)

    def _input_batches(self, index: int, raws: Iterator[RawBatch]) -> Iterator[PacketBatch]:
        info = self.inputs[index]
        warned: set[int] = set()
        try:
            for raw in raws:
                before = self.stats.unsupported_link
                batch = decode_raw(raw, index, self.stats, self.tunnel_depth)
                if self.stats.unsupported_link != before:
                    for link in sorted(set(raw.linktype.tolist())):
                        if link not in lt.SUPPORTED and link not in warned:
                            warned.add(link)
                            info.warn(
                                f"unsupported link type {lt.name(link)}: its records are "
                                "counted, not decoded"
                            )
                if len(batch):
                    yield batch
        except MemoryError:
            info.warn("out of memory while reading: stopped there")
        else:
            if self.bpf is None and not self._stopping:
                info.unreadable_if_nothing_read()
        finally:
            close = getattr(raws, "close", None)
            if close is not None:
                close()  # a read-ahead thread ends before its libpcap handle is closed
            rd = self._progress[index]
            if isinstance(rd, LibpcapReader):
                rd.close()

    def _raw_batches(self, index: int, info: InputInfo) -> Iterator[RawBatch]:
        path = info.path
        if info.duplicate_of is not None:
            return
        if path == "-":
            info.path = "<stdin>"
            yield from self._stream(index, info, sys.stdin.buffer)
            return
        try:
            st = os.stat(path)
        except FileNotFoundError:
            info.error = "no such file"
            return
        except OSError as exc:
            info.error = f"cannot open: {exc.strerror or exc}"
            return
        if stat.S_ISDIR(st.st_mode):
            info.error = "is a directory with no capture file in it"
            return
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed in the finally below
        except OSError as exc:
            info.error = f"cannot open: {exc.strerror or exc}"
            return
        try:
            if not stat.S_ISREG(st.st_mode):  # FIFO, character device: no seeking, no libpcap
                yield from self._stream(index, info, fh)
                return
            if st.st_size == 0:
                info.error = "empty file (0 bytes)"
                return
            head = fh.read(24)
            kind = sniff(head)
            if kind in ("pcap", "pcap-ns", "pcapng") and len(head) >= 24:
                delivered = yield from self._fast(index, info, head, kind)
                if delivered is None:
                    return
                fh.seek(0)
                yield from self._stream(index, info, fh, skip=delivered)
                return
            fh.seek(0)
            yield from self._stream(index, info, fh)
        finally:
            fh.close()

    def _fast(self, index: int, info: InputInfo, head: bytes, kind: str) -> Generator[RawBatch, None, int | None]:
        """libpcap path.  Returns None when done, or the records delivered before it failed."""
        try:
            rd = LibpcapReader(
                info.path, info, batch_size=self.batch_size, bpf=self.bpf, limit=self.count
            )
        except PcapError as exc:
            if "filter" in str(exc) or "syntax" in str(exc):
                info.error = f"BPF filter not usable on this input: {exc}"
                return None
            return 0  # libpcap refuses the file: let the stream reader say why (or read it)
        self._progress[index] = rd
        info.reader = "libpcap"
        info.format = kind
        if kind.startswith("pcap") and kind != "pcapng":
            info.add_link_type(_pcap_header_linktype(head))
        else:
            info.add_link_type(lt.RAW if rd.linktype == lt.RAW_BSD12 else rd.linktype)
        try:
            yield from rd
        except LibpcapFailed as exc:
            rd.close()
            info.reader = "stream"
            return exc.delivered
        return None

    def _stream(
        self, index: int, info: InputInfo, fh: BinaryIO, skip: int = 0
    ) -> Iterator[RawBatch]:
        info.reader = "stream"
        rd = StreamReader(
            fh,
            info,
            batch_size=self.batch_size,
            bpf=self._bpf_factory(info) if self.bpf else None,
            limit=self.count,
            skip=skip,
        )
        self._progress[index] = rd
        yield from rd

    def _bpf_factory(self, info: InputInfo) -> Callable[[int], BpfMatch | None]:
        expr = self.bpf
        assert expr is not None

        def make(linktype: int) -> BpfMatch | None:
            try:
                prog = compile_bpf(expr, linktype)
            except CaptureError as exc:
                info.warn(f"{exc} on link type {lt.name(linktype)}: its records are skipped")
                return lambda _lt, _data: False
            return lambda _lt, data: prog.filter(data) != 0

        return make


def is_capture(path: str) -> bool:
    """A regular file whose first bytes are a pcap or pcapng magic (also inside gzip)."""
    import gzip

    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            kind = sniff(head)
            if kind == "gzip":
                fh.seek(0)
                with gzip.GzipFile(fileobj=fh) as gz:
                    kind = sniff(gz.read(4))
    except (OSError, EOFError):
        return False
    return kind not in (None, "gzip")


def expand_inputs(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """Inputs with each directory replaced by the capture files below it (recursively, by
    content, sorted; symbolic links to directories are not followed); also the files
    skipped there as not captures.  A directory holding no capture stays as it is (its
    reader reports it)."""
    out: list[str] = []
    skipped: list[str] = []
    for p in paths:
        if p == "-" or not os.path.isdir(p):
            out.append(p)
            continue
        found: list[str] = []
        for root, dirs, names in os.walk(p):
            dirs.sort()
            for name in sorted(names):
                f = os.path.join(root, name)
                if not os.path.isfile(f):
                    continue
                (found if is_capture(f) else skipped).append(f)
        out.extend(found or [p])
    return out, skipped


def _pcap_header_linktype(head: bytes) -> int:
    bo = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    return int.from_bytes(head[20:24], "little" if bo == "<" else "big") & lt.LINKTYPE_MASK
