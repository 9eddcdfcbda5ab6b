"""The fast path: libpcap (pcapy-ng `next_batch`) reading regular pcap/pcapng files.

libpcap 1.9.1 (bundled in the pcapy-ng wheel) cannot read gzip, rejects pcapng with
mixed link types, records longer than 262144 bytes and pcap versions other than 2.4,
and when it hits a fault mid-file `next_batch` raises and drops the records it had
already gathered for that call.  The caller then switches to the stream reader, which
skips the records libpcap delivered and goes on to the fault itself.
"""

from __future__ import annotations

import ctypes
import functools
import os
import stat
from collections.abc import Iterator
from typing import Any

import numpy as np
import pcapy

from rstlens import kernels

from ._decode import RawBatch
from ._info import InputInfo

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _tune_malloc() -> None:
    # next_batch allocates a fresh ~MB bytes object per call; with default glibc
    # thresholds each one is an mmap/munmap pair (~85k page faults per million packets).
    try:
        libc = ctypes.CDLL(None)  # the C library is already loaded (find_library runs ldconfig)
        libc.mallopt(_M_MMAP_THRESHOLD, 4 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


_tune_malloc()

PcapError = pcapy.PcapError

_STDIO_BUFFER = 256 << 10
_IOFBF = 0
# pcapy-ng's Reader: PyObject_HEAD, then the pcap_t * (the layout of every pcapy since
# 2014); 104 bytes is 2.x's full struct.  Another size: leave libpcap's buffer alone.
_READER_SIZE = 104


@functools.cache
def _stdio_libraries() -> tuple[ctypes.CDLL, ctypes.CDLL] | None:
    """(the libpcap pcapy-ng runs on, glibc), or None where either is missing.

    pcapy-ng's wheel bundles a renamed libpcap: it is the one libpcap mapped (with two,
    which one pcapy-ng uses is unknown).
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {f[5].strip() for f in (line.split(None, 5) for line in maps) if len(f) == 6}
        found = [p for p in paths if os.path.basename(p).startswith("libpcap")]
        if len(found) != 1:
            return None
        libpcap = ctypes.CDLL(found[0])  # already loaded: the same handle
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (see _widen_stdio_buffer)
    except (OSError, AttributeError):
        return None
    libpcap.pcap_file.restype = ctypes.c_void_p
    libpcap.pcap_file.argtypes = [ctypes.c_void_p]
    libpcap.pcap_get_selectable_fd.argtypes = [ctypes.c_void_p]
    libc.fileno.argtypes = [ctypes.c_void_p]
    libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    return libpcap, libc


def _widen_stdio_buffer(reader: Any) -> ctypes.Array[ctypes.c_char] | None:
    """Give the capture file's stdio stream a 256 KiB buffer; returns it (keep it alive).

    libpcap reads a savefile through stdio with the file system's block size (4 KiB): a
    `read` call per ~8 packets, about 40% of reading a 1 M-packet file.  setvbuf after the
    header was read is fine on glibc: it seeks the descriptor back over what was buffered
    and unread, which only a regular file allows (a pipe would lose those bytes).
    """
    libs = _stdio_libraries()
    if libs is None or type(reader).__basicsize__ != _READER_SIZE:
        return None
    libpcap, libc = libs
    fd = reader.getfd()
    handle = ctypes.c_void_p.from_address(id(reader) + object.__basicsize__).value
    if not handle or libpcap.pcap_get_selectable_fd(handle) != fd:
        return None  # not the pcap_t getfd() answered from
    stream = libpcap.pcap_file(handle)
    if not stream or libc.fileno(stream) != fd or not stat.S_ISREG(os.fstat(fd).st_mode):
        return None
    buffer = ctypes.create_string_buffer(_STDIO_BUFFER)
    if libc.setvbuf(stream, buffer, _IOFBF, _STDIO_BUFFER) != 0:
        return None
    return buffer


class LibpcapFailed(Exception):
    """libpcap stopped after `delivered` records; `reason` is its message."""

    def __init__(self, delivered: int, reason: str) -> None:
        super().__init__(reason)
        self.delivered = delivered
        self.reason = reason


class LibpcapReader:
    """Iterate `RawBatch`es from a regular capture file through libpcap."""

    def __init__(
        self, path: str, info: InputInfo, *, batch_size: int, bpf: str | None, limit: int | None
    ) -> None:
        self._pcap = pcapy.open_offline(path)  # PcapError -> caller falls back
        self.stdio_buffer = _widen_stdio_buffer(self._pcap)
        self.linktype = int(self._pcap.datalink()) & 0xFFFF
        if bpf:
            self._pcap.setfilter(bpf)  # PcapError -> caller records it
        self.info = info
        self.batch_size = batch_size
        self.limit = limit
        self.count = 0
        self.bytes_read = 24
        # one link type and interface for every record: batches share read-only columns
        self._linktypes = np.full(batch_size, self.linktype, np.int32)
        self._ifaces = np.zeros(batch_size, np.uint16)

    def __iter__(self) -> Iterator[RawBatch]:
        while self.limit is None or self.count < self.limit:
            want = self.batch_size
            if self.limit is not None:
                want = min(want, self.limit - self.count)
            try:
                data, meta = self._pcap.next_batch(want)
            except PcapError as exc:
                raise LibpcapFailed(self.count, str(exc)) from None
            if not meta:
                return
            m = np.frombuffer(meta, np.uint32).reshape(-1, 4)
            k = m.shape[0]
            cols = np.empty((4, k), np.int64)
            top, captured = kernels.libpcap_meta(m, self.count + 1, cols)
            if top >= 1_000_000:
                # A sub-second field >= 1 s: libpcap 1.9.1 mangles it when scaling ns
                # to us; the stream reader computes sec + frac like everyone else.
                raise LibpcapFailed(self.count, "sub-second timestamp field >= 1 s")
            raw = RawBatch(
                buf=np.frombuffer(data, np.uint8),
                offs=cols[0],
                caps=cols[1],
                ts_us=cols[2],
                linktype=self._linktypes[:k],
                iface=self._ifaces[:k],
                frame=cols[3],
            )
            self.count += k
            self.info.packets = self.count
            self.bytes_read += captured + 16 * k
            yield raw

    def close(self) -> None:
        self._pcap.close()
        self.stdio_buffer = None  # only after libpcap's fclose: the stream used it
