"""Live batches with libpcap's wire length: `pcap_dispatch` into a compiled callback.

pcapy-ng's `next_batch` returns (sec, usec, offset, caplen) per packet: the wire length
(``pcap_pkthdr.len``) is lost, yet ``-w`` must write it (a record cut by ``-s`` still
says how long the packet was).  `WireBatches` calls libpcap's `pcap_dispatch` itself
(ctypes, once per batch) on the pcapy handle, with a numba `cfunc` as the callback: it
copies each packet and its header (sec, usec, offset, caplen, len) into one preallocated
buffer, and calls `pcap_breakloop` when the buffer has less than one snap length free.
No Python code runs per packet.

The callback is compiled in the running process (numba, 1-7 s here), not ahead
of time: the address of `pcap_breakloop` is compiled in, and it is only known there.
`LiveReader` compiles it (`prepare`) before it activates the capture: the kernel would
otherwise queue, and under a small ``-B`` drop, the packets of those seconds.  Only a live
run with ``-w`` pays for it.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import numpy as np

from ._libpcap import _READER_SIZE, _stdio_libraries

# the state block at the head of the buffer: int64 words
_N, _USED, _CAP, _HANDLE, _META, _DATA = range(6)
_STATE_WORDS = 8
META_COLS = 5  # sec, usec, offset, caplen, len


class WireCopyUnavailable(Exception):
    """This pcapy/libpcap build cannot be driven through ctypes (one line: why)."""


@functools.cache
def _callback(breakloop_addr: int, snaplen: int) -> Any:
    from numba import cfunc, types
    from numba.np.numpy_support import carray

    breakloop = ctypes.CFUNCTYPE(None, ctypes.c_uint64)(breakloop_addr)

    @cfunc(types.void(types.voidptr, types.voidptr, types.voidptr))
    def on_packet(user: Any, hdr: Any, data: Any) -> None:
        st = carray(user, _STATE_WORDS, np.int64)
        n, used, cap, meta_at, data_at = st[_N], st[_USED], st[_CAP], st[_META], st[_DATA]
        ts = carray(hdr, 2, np.int64)  # struct timeval: tv_sec, tv_usec (LP64)
        h32 = carray(hdr, 6, np.uint32)  # ... then caplen, len
        c = h32[4]
        meta = carray(user, data_at // 4, np.uint32)
        k = meta_at // 4 + n * META_COLS
        meta[k] = ts[0]
        meta[k + 1] = ts[1]
        meta[k + 2] = used
        meta[k + 3] = c
        meta[k + 4] = h32[5]
        buf = carray(user, data_at + cap, np.uint8)
        buf[data_at + used:data_at + used + c] = carray(data, c, np.uint8)
        st[_N] = n + 1
        st[_USED] = used + c
        if cap - (used + c) < snaplen:
            breakloop(st[_HANDLE])  # the next packet might not fit: end this dispatch

    return on_packet


def _breakloop_address(libpcap: ctypes.CDLL) -> int:
    addr = ctypes.cast(libpcap.pcap_breakloop, ctypes.c_void_p).value
    assert addr is not None
    return addr


def prepare(snaplen: int) -> None:
    """Compile the callback for `snaplen` now, before a capture is open (where libpcap is
    not found, nothing: `WireBatches` says why)."""
    libs = _stdio_libraries()
    if libs is not None:
        _callback(_breakloop_address(libs[0]), snaplen)


class WireBatches:
    """`next_batch(max_n)` with the wire length: (data, meta[n, 5] uint32) per call."""

    def __init__(self, reader: Any, snaplen: int, max_n: int, data_bytes: int = 4 << 20) -> None:
        libs = _stdio_libraries()
        if libs is None or type(reader).__basicsize__ != _READER_SIZE:
            raise WireCopyUnavailable("pcapy-ng's handle layout is not the one known")
        libpcap, _ = libs
        handle = ctypes.c_void_p.from_address(id(reader) + object.__basicsize__).value
        if not handle or libpcap.pcap_get_selectable_fd(handle) != reader.getfd():
            raise WireCopyUnavailable("the pcap_t behind pcapy's reader was not found")
        libpcap.pcap_dispatch.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                          ctypes.c_void_p]  # fmt: skip
        libpcap.pcap_dispatch.restype = ctypes.c_int
        libpcap.pcap_geterr.argtypes = [ctypes.c_void_p]
        libpcap.pcap_geterr.restype = ctypes.c_char_p
        self._lib = libpcap
        self._handle = handle
        self._reader = reader  # keeps the handle alive
        self._cb = _callback(_breakloop_address(libpcap), snaplen)
        self.max_n = max(1, int(max_n))
        meta_at = _STATE_WORDS * 8
        data_at = meta_at + self.max_n * META_COLS * 4
        cap = data_bytes + snaplen  # room for one more snap length after the limit
        self._mem = np.zeros(data_at + cap, np.uint8)
        st = self._mem[:_STATE_WORDS * 8].view(np.int64)
        st[_CAP], st[_HANDLE], st[_META], st[_DATA] = cap, handle, meta_at, data_at
        self._st = st
        self._meta_at, self._data_at = meta_at, data_at

    def next_batch(self, want: int) -> tuple[bytes, np.ndarray]:
        """Up to `want` packets (at most `max_n`): their bytes and (sec, usec, offset,
        caplen, len) rows; none when nothing is ready (non-blocking) — like next_batch."""
        import pcapy

        self._st[_N] = 0
        self._st[_USED] = 0
        r = self._lib.pcap_dispatch(self._handle, min(int(want), self.max_n), self._cb.address,
                                    self._mem.ctypes.data)  # fmt: skip
        n = int(self._st[_N])
        if r == -1:  # PCAP_ERROR (-2, PCAP_ERROR_BREAK, is our own pcap_breakloop)
            raise pcapy.PcapError((self._lib.pcap_geterr(self._handle) or b"").decode(errors="replace"))
        meta = self._mem[self._meta_at:self._meta_at + n * META_COLS * 4].view(np.uint32)
        data = self._mem[self._data_at:self._data_at + int(self._st[_USED])].tobytes()
        return data, meta.reshape(n, META_COLS).copy()
