"""``-w FILE``: the captured packets kept as pcap or pcapng, rotated and pruned like tcpdump's
``-w``/``-G``/``-C``/``-W``.

Each file is named ``FILE`` with the start of its interval inserted before the extension
(``cap.pcap`` → ``cap-20261201T102300Z-<run id>-0000.pcap``), written as a hidden
temporary file and renamed into place when it is closed (rotation or the end of the run),
so a visible packet file is always whole.  Retention: past ``count`` files or ``max_bytes``
bytes (over this run's and earlier runs' files of that pattern) the oldest are removed.
The format follows the name, as with dumpcap: ``.pcapng`` (or ``.ntar``) is pcapng (a
section header, one interface description block with the link type, the snap length,
``if_tsresol`` 6 (microseconds) and the interface's name, then an enhanced packet block per
packet), anything else classic pcap (microseconds); ``--write-format`` overrides it.  Each
record carries libpcap's wire length (``pcap_pkthdr.len``, `parsers/_wirecopy.py`) beside
its captured length: a packet cut by ``-s`` says how long it was on the wire.
"""

from __future__ import annotations

import os
import re
import struct
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rstlens.output.commit import _fsync_dir, clean_stale_temps, temp_name

_PCAP_MAGIC_US = 0xA1B2C3D4
SNAPLEN = 262144
PCAPNG_EXTENSIONS = (".pcapng", ".ntar")
FORMATS = ("pcap", "pcapng")


def format_for(name: str, wanted: str | None = None) -> str:
    """The packet file format: `wanted` when given, else by the name's extension."""
    if wanted is not None:
        if wanted not in FORMATS:
            raise ValueError(f"packet file format {wanted!r}: pcap or pcapng")
        return wanted
    return "pcapng" if name.lower().endswith(PCAPNG_EXTENSIONS) else "pcap"


def _option(code: int, value: bytes) -> bytes:
    pad = -len(value) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def pcapng_head(linktype: int, snaplen: int, interface: str | None) -> bytes:
    """Section header + one interface description block (link type, snap length,
    if_tsresol = 10^-6, if_name), little-endian."""
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
                 + _option(4, b"rstlens") + _option(0, b""))  # shb_userappl, opt_endofopt
    opts = b""
    if interface:
        opts += _option(2, interface.encode()[:256])  # if_name
    opts += _option(9, b"\x06") + _option(0, b"")  # if_tsresol: microseconds
    idb = _block(1, struct.pack("<HHI", linktype, 0, snaplen) + opts)
    return shb + idb


def pcap_head(linktype: int, snaplen: int) -> bytes:
    return struct.pack("<IHHiIII", _PCAP_MAGIC_US, 2, 4, 0, 0, snaplen, linktype)


def records(buf: np.ndarray, m: np.ndarray, fmt: str) -> bytes:
    """The records of `m` rows (sec, usec, offset, caplen[, len]) of `buf`: pcap records
    or pcapng enhanced packet blocks (interface 0), gathered with numpy (no loop)."""
    k = m.shape[0]
    if k == 0:
        return b""
    caps = m[:, 3].astype(np.int64)
    wire = m[:, 4] if m.shape[1] > 4 else m[:, 3]
    if fmt == "pcap":
        head = 16
        hdr = np.empty((k, 4), "<u4")
        hdr[:, 0], hdr[:, 1], hdr[:, 2], hdr[:, 3] = m[:, 0], m[:, 1], caps, wire
        padded = caps
        tail = 0
    else:
        head = 28
        padded = caps + (-caps % 4)
        tail = 4
        total = head + padded + tail
        us = m[:, 0].astype(np.uint64) * np.uint64(1_000_000) + m[:, 1].astype(np.uint64)
        hdr = np.empty((k, 7), "<u4")
        hdr[:, 0] = 6  # enhanced packet block
        hdr[:, 1] = total
        hdr[:, 2] = 0  # interface id
        hdr[:, 3] = (us >> np.uint64(32)).astype(np.uint32)
        hdr[:, 4] = (us & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        hdr[:, 5], hdr[:, 6] = caps, wire
    sizes = head + padded + tail
    out = np.zeros(int(sizes.sum()), np.uint8)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    out[(starts[:, None] + np.arange(head)).ravel()] = hdr.view(np.uint8).ravel()
    # the packets' bytes: one gather of the concatenated ranges
    n = int(caps.sum())
    first = np.concatenate(([0], np.cumsum(caps)[:-1]))
    within = np.arange(n, dtype=np.int64) - np.repeat(first, caps)
    src = np.repeat(m[:, 2].astype(np.int64), caps) + within
    dst = np.repeat(starts + head, caps) + within
    out[dst] = buf[src]
    if tail:
        end = (starts + sizes - 4)[:, None] + np.arange(4)
        out[end.ravel()] = sizes.astype("<u4").view(np.uint8)
    return out.tobytes()


def _stamp(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")


class PacketFiles:
    """Writes raw captured batches into rotating pcap files."""

    def __init__(self, pattern: str, linktype: int, run_id: str, rotate_s: float | None,
                 size: int | None, count: int | None, max_bytes: int | None,
                 fmt: str | None = None, snaplen: int = SNAPLEN,
                 interface: str | None = None) -> None:  # fmt: skip
        self.pattern = Path(pattern).absolute()
        self.pattern.parent.mkdir(parents=True, exist_ok=True)
        stem, dot, ext = self.pattern.name.partition(".")
        self._stem, self._ext = stem, (dot + ext) if dot else ".pcap"
        self._re = re.compile(rf"^{re.escape(stem)}-\d{{8}}T\d{{6}}Z-[0-9a-f]{{16}}-\d{{4,}}{re.escape(self._ext)}$")
        self.linktype = linktype
        self.format = format_for(self.pattern.name, fmt)
        self.snaplen = snaplen
        self._head = (pcap_head(linktype, snaplen) if self.format == "pcap"
                      else pcapng_head(linktype, snaplen, interface))  # fmt: skip
        self.run_id = run_id
        self.rotate_us = None if rotate_s is None else max(1, int(rotate_s * 1e6))
        self.size = size
        self.count = count
        self.max_bytes = max_bytes
        self.seq = 0
        self.written: list[str] = []  # closed files of this run, oldest first (absolute paths)
        self.removed: list[str] = []
        self.cleaned = clean_stale_temps(self.pattern.parent, accept=lambda n: self._re.match(n) is not None)
        self._fh: object | None = None
        self._path: Path | None = None
        self._tmp: Path | None = None
        self._bytes = 0
        self._end_us = 0
        self.packets = 0

    @property
    def current(self) -> str | None:
        return None if self._path is None else str(self._path)

    def _open(self, ts_us: int) -> None:
        start = ts_us if self.rotate_us is None else ts_us - ts_us % self.rotate_us
        self._end_us = start + self.rotate_us if self.rotate_us is not None else 1 << 62
        self._path = self.pattern.with_name(f"{self._stem}-{_stamp(start)}-{self.run_id}-{self.seq:04d}{self._ext}")
        self.seq += 1
        self._tmp = temp_name(self._path)
        fh = open(self._tmp, "xb")  # noqa: SIM115 - closed in _close
        fh.write(self._head)
        self._fh = fh
        self._bytes = len(self._head)

    def _close(self) -> None:
        if self._fh is None or self._path is None or self._tmp is None:
            return
        fh = self._fh
        fh.flush()  # type: ignore[attr-defined]
        os.fsync(fh.fileno())  # type: ignore[attr-defined]
        fh.close()  # type: ignore[attr-defined]
        os.replace(self._tmp, self._path)
        _fsync_dir(self._path.parent)
        self.written.append(str(self._path))
        self._fh = self._path = self._tmp = None
        self._prune()

    def write(self, data: bytes, meta: np.ndarray) -> None:
        """One raw batch: `meta` rows (ts_s, ts_us, offset, caplen[, wire length]) into
        `data` (without the wire length, the captured length stands for it)."""
        if meta.shape[0] == 0:
            return
        ts = meta[:, 0].astype(np.int64) * 1_000_000 + meta[:, 1]
        buf = np.frombuffer(data, np.uint8)
        k0 = 0
        n = meta.shape[0]
        while k0 < n:
            if self._fh is None:
                self._open(int(ts[k0]))
            # the records up to the interval's end (and the size limit)
            k1 = k0 + int(np.searchsorted(ts[k0:], self._end_us, side="left"))
            if k1 == k0 and ts[k0] >= self._end_us:
                self._close()
                continue
            if self.size is not None:
                # -C: as many records as fit (at least one in a new file)
                room = self.size - self._bytes
                c = meta[k0:k1, 3].astype(np.int64)
                rec = 16 + c if self.format == "pcap" else 32 + c + (-c % 4)
                fit = int(np.searchsorted(np.cumsum(rec), room, side="right"))
                if fit == 0 and self._bytes > len(self._head):
                    self._close()
                    continue
                k1 = k0 + max(fit, 1)
            chunk = records(buf, meta[k0:k1], self.format)
            self._fh.write(chunk)  # type: ignore[union-attr]
            self._bytes += len(chunk)
            self.packets += k1 - k0
            k0 = k1
            if k0 < n and ts[k0] >= self._end_us:
                self._close()

    def tick(self, now_us: int) -> None:
        """Close the open file once its interval is over (a quiet link still rotates)."""
        if self._fh is not None and now_us >= self._end_us:
            self._close()

    def files(self) -> list[Path]:
        """Every closed packet file of this pattern (this run's and earlier ones'), oldest first."""
        d = self.pattern.parent
        found = [p for p in d.iterdir() if self._re.match(p.name)]
        return sorted(found, key=lambda p: (p.name.split("-")[1], p.stat().st_mtime, p.name))

    def _prune(self) -> None:
        files = self.files()
        if self.count is not None:
            while len(files) > self.count:
                self._remove(files.pop(0))
        if self.max_bytes is not None:
            sizes = [p.stat().st_size for p in files]
            while files and sum(sizes) > self.max_bytes and len(files) > 1:
                self._remove(files.pop(0))
                sizes.pop(0)

    def _remove(self, p: Path) -> None:
        p.unlink(missing_ok=True)
        self.removed.append(str(p))

    def close(self) -> None:
        self._close()

    def abort(self) -> None:
        """Keep what was captured: an open file is closed and renamed too."""
        try:
            self._close()
        except OSError:
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)
