"""`LiveReader`: decoded TCP `PacketBatch`es from a network interface, as they arrive.

libpcap (pcapy-ng) in non-blocking mode: `next_batch` takes whatever the kernel has ready
and `poll` on the capture descriptor waits at most `timeout_ms` for more.  A wait that
brings nothing yields an *empty* batch, so a consumer looping over the reader gets
control back at least every `timeout_ms` (to run its timers) even on a silent link.
`stop()` (from any thread) or Ctrl-C ends the iteration cleanly.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pcapy

from rstlens.errors import CaptureError
from rstlens.options import DEFAULT_TUNNEL_DEPTH

from . import _linktypes as lt
from ._batch import DecodeStats, PacketBatch
from ._decode import RawBatch, decode_raw
from ._info import InputInfo
from ._wirecopy import WireBatches, WireCopyUnavailable
from ._wirecopy import prepare as prepare_wire_copy


class LiveReader:
    """Capture on `interface` and decode its TCP packets, batch by batch.

    `bpf` is applied in the kernel; `count` stops after that many captured records (after
    the filter, TCP or not, like ``tcpdump -c``).  Raises `CaptureError` (one line) when
    the interface does not exist, capturing is not permitted, or `bpf` is invalid.
    """

    def __init__(
        self,
        interface: str,
        *,
        bpf: str | None = None,
        snaplen: int = 262144,
        promisc: bool = False,
        timeout_ms: int = 200,
        count: int | None = None,
        batch_size: int = 4096,
        tunnel_depth: int = DEFAULT_TUNNEL_DEPTH,  # tunnel layers decoded (Zeek's max_depth)
        buffer_kib: int | None = None,
        on_raw: Callable[[bytes, np.ndarray], None] | None = None,
        wire_lengths: bool = False,
    ) -> None:
        self.tunnel_depth = tunnel_depth
        if count is not None and count < 0:
            raise CaptureError("count must be >= 0")
        self.interface = interface
        self.bpf = bpf.strip() if bpf and bpf.strip() else None
        self.timeout_ms = max(1, int(timeout_ms))
        self.count = count
        self.batch_size = max(1, int(batch_size))
        self.stats = DecodeStats()
        # `on_raw(data, meta)`: every batch as captured (meta rows: ts_s, ts_us, offset,
        # caplen, and with `wire_lengths` the wire length), before decoding: ``-w``'s writer
        self.on_raw = on_raw
        # the capture time of the first packet of the batch last yielded (None: it was
        # empty), TCP or not: when kernel drops counted after it can have begun (DropLog)
        self.batch_first_us: int | None = None
        self.snaplen = int(snaplen)
        if wire_lengths:
            prepare_wire_copy(self.snaplen)  # seconds of compiling, before packets queue up
        # when the capture was opened (wall clock): kernel drops counted at the first read
        # of the counters came after it (DropLog)
        self.opened_us = int(time.time() * 1e6)
        try:
            if buffer_kib is None:
                self._pcap = pcapy.open_live(
                    interface, int(snaplen), int(bool(promisc)), self.timeout_ms
                )
            else:  # -B: libpcap's capture buffer, set before activating
                self._pcap = pcapy.create(interface)
                self._pcap.set_snaplen(int(snaplen))
                self._pcap.set_promisc(int(bool(promisc)))
                self._pcap.set_timeout(self.timeout_ms)
                self._pcap.set_buffer_size(int(buffer_kib) * 1024)
                self._pcap.activate()
        except pcapy.PcapError as exc:
            raise CaptureError(f"cannot capture on {interface!r}: {_one_line(exc)}") from None
        try:
            if self.bpf:
                try:
                    self._pcap.setfilter(self.bpf)
                except pcapy.PcapError as exc:
                    raise CaptureError(
                        f"bad BPF expression {self.bpf!r}: {_one_line(exc)}"
                    ) from None
            self._pcap.setnonblock(1)
            self.linktype = int(self._pcap.datalink()) & lt.LINKTYPE_MASK
            # libpcap's wire length per packet (pcap_pkthdr.len), which next_batch drops:
            # the packets of -w keep it (parsers/_wirecopy.py)
            self._wire: WireBatches | None = None
            if wire_lengths:
                try:
                    self._wire = WireBatches(self._pcap, self.snaplen, self.batch_size)
                except WireCopyUnavailable as exc:
                    raise CaptureError(f"cannot keep wire lengths on {interface!r}: {exc}") from None
        except BaseException:
            self._pcap.close()
            raise
        info = InputInfo(path=interface, size=None, format="live", reader="libpcap")
        info.add_link_type(lt.RAW if self.linktype == lt.RAW_BSD12 else self.linktype)
        self.inputs: list[InputInfo] = [info]
        self.interrupted = False  # iteration ended by KeyboardInterrupt
        if self.linktype not in lt.SUPPORTED:
            info.warn(
                f"unsupported link type {lt.name(self.linktype)}: its records are counted, "
                "not decoded"
            )
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._started = False
        self._closed = False
        self._kernel = (0, 0, 0)

    # ---- control --------------------------------------------------------------------
    def stop(self) -> None:
        """End the iteration at its next step (safe from another thread or a handler)."""
        self._stopped.set()
        with self._lock:
            if not self._closed:
                with contextlib.suppress(OSError):  # pipe full: the flag is enough
                    os.write(self._wake_w, b"x")

    @property
    def kernel_stats(self) -> tuple[int, int, int]:
        """libpcap's (received, dropped by the kernel, dropped by the interface)."""
        if not self._closed:
            with contextlib.suppress(pcapy.PcapError):
                self._kernel = tuple(int(v) for v in self._pcap.stats())  # type: ignore[assignment]
        return self._kernel

    @property
    def bytes_read(self) -> int:
        return self.stats.bytes

    @property
    def bytes_total(self) -> None:
        return None

    # ---- iteration ------------------------------------------------------------------
    def __iter__(self) -> Iterator[PacketBatch]:
        if self._started:
            raise CaptureError("a LiveReader can be iterated only once")
        self._started = True
        try:
            yield from self._batches()
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            self._close()

    def _batches(self) -> Iterator[PacketBatch]:
        info = self.inputs[0]
        poller = select.poll()
        poller.register(self._pcap.getfd(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        link = np.int32(self.linktype)
        got = 0
        while not self._stopped.is_set():
            if self.count is not None and got >= self.count:
                return
            want = self.batch_size
            if self.count is not None:
                want = min(want, self.count - got)
            try:
                if self._wire is not None:
                    data, m = self._wire.next_batch(want)
                else:
                    data, meta = self._pcap.next_batch(want)
                    m = np.frombuffer(meta, np.uint32).reshape(-1, 4)
            except pcapy.PcapError as exc:
                info.warn(f"capture on {self.interface!r} failed: {_one_line(exc)}")
                return
            k = m.shape[0]
            if not k:
                if not poller.poll(self.timeout_ms):
                    self.batch_first_us = None
                    yield PacketBatch.empty()  # quiet link: hand control back
                continue
            if self.on_raw is not None:
                self.on_raw(data, m)
            raw = RawBatch(
                buf=np.frombuffer(data, np.uint8),
                offs=m[:, 2].astype(np.int64),
                caps=m[:, 3].astype(np.int64),
                ts_us=m[:, 0].astype(np.int64) * 1_000_000 + m[:, 1],
                linktype=np.full(k, link, np.int32),
                iface=np.zeros(k, np.uint16),
                frame=np.arange(got + 1, got + k + 1, dtype=np.int64),
            )
            got += k
            info.packets = got
            self.batch_first_us = int(raw.ts_us[0])
            yield decode_raw(raw, 0, self.stats, self.tunnel_depth)

    def _close(self) -> None:
        if self._closed:
            return
        _ = self.kernel_stats  # keep the last counters
        with self._lock:
            self._closed = True
            self._pcap.close()
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def close(self) -> None:
        """Release the capture without iterating (iteration closes it by itself)."""
        if not self._started:
            self._close()

    def __enter__(self) -> LiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
