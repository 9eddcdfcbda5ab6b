"""``-w FILE``: the captured packets kept as classic pcap, rotated and pruned like tcpdump's
``-w``/``-G``/``-C``/``-W``.

Each file is named ``FILE`` with the start of its interval inserted before the extension
(``cap.pcap`` → ``cap-20261201T102300Z-<run id>-0000.pcap``), written as a hidden
temporary file and renamed into place when it is closed (rotation or the end of the run),
so a visible packet file is always whole.  Retention: past ``count`` files or ``max_bytes``
bytes (over this run's and earlier runs' files of that pattern) the oldest are removed.
Records are written with their captured length as the wire length (libpcap's batch read
gives the captured length only; the snap length is 256 KiB, so they are the same unless
the packet was cut).
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


def _stamp(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")


class PacketFiles:
    """Writes raw captured batches into rotating pcap files."""

    def __init__(self, pattern: str, linktype: int, run_id: str, rotate_s: float | None,
                 size: int | None, count: int | None, max_bytes: int | None) -> None:  # fmt: skip
        self.pattern = Path(pattern).absolute()
        self.pattern.parent.mkdir(parents=True, exist_ok=True)
        stem, dot, ext = self.pattern.name.partition(".")
        self._stem, self._ext = stem, (dot + ext) if dot else ".pcap"
        self._re = re.compile(rf"^{re.escape(stem)}-\d{{8}}T\d{{6}}Z-[0-9a-f]{{16}}-\d{{4,}}{re.escape(self._ext)}$")
        self.linktype = linktype
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
        fh.write(struct.pack("<IHHiIII", _PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, self.linktype))
        self._fh = fh
        self._bytes = 24

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
        """One raw batch: `meta` rows (ts_s, ts_us, offset, caplen) into `data`."""
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
                fit = int(np.searchsorted(np.cumsum(16 + meta[k0:k1, 3].astype(np.int64)), room, side="right"))
                if fit == 0 and self._bytes > 24:
                    self._close()
                    continue
                k1 = k0 + max(fit, 1)
            chunk = self._records(buf, meta[k0:k1])
            self._fh.write(chunk)  # type: ignore[union-attr]
            self._bytes += len(chunk)
            self.packets += k1 - k0
            k0 = k1
            if k0 < n and ts[k0] >= self._end_us:
                self._close()

    @staticmethod
    def _records(buf: np.ndarray, m: np.ndarray) -> bytes:
        k = m.shape[0]
        caps = m[:, 3].astype(np.int64)
        hdr = np.empty((k, 4), "<u4")
        hdr[:, 0], hdr[:, 1], hdr[:, 2], hdr[:, 3] = m[:, 0], m[:, 1], m[:, 3], m[:, 3]
        sizes = 16 + caps
        out = np.empty(int(sizes.sum()), np.uint8)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        hb = hdr.view(np.uint8).reshape(k, 16)
        for j in range(k):  # a copy per record: numpy has no ragged gather
            s = int(starts[j])
            out[s:s + 16] = hb[j]
            o, c = int(m[j, 2]), int(caps[j])
            out[s + 16:s + 16 + c] = buf[o:o + c]
        return out.tobytes()

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
