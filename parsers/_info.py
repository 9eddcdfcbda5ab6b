"""`InputInfo`: what happened to one input of a run (filled in as reading goes)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field


@dataclass(slots=True)
class InputInfo:
    """One input (file, pipe or stdin) of a `CaptureReader` run.

    `error` is set when the input could not be read at all; `warnings` hold one line per
    problem that stopped or degraded reading after it had started (what was read before
    is kept).  `truncated_at` is the byte offset (in the decompressed stream for gzip)
    of the first incomplete record when the file was cut short.
    """

    path: str
    size: int | None = None
    format: str = "unknown"  # "pcap", "pcap-ns", "pcap-modified", "pcapng", + "+gzip"
    link_types: list[int] = field(default_factory=list)
    reader: str = "stream"  # "libpcap" or "stream"
    packets: int = 0  # records read (after the BPF filter)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    truncated_at: int | None = None
    abspath: str | None = None  # the file's absolute path (None: stdin)
    head_sha256: str | None = None  # SHA-256 of its first 64 KiB (regular files): `HEAD_BYTES`
    duplicate_of: str | None = None  # identical to this earlier input (size + head): not read

    def add_link_type(self, linktype: int) -> None:
        if linktype not in self.link_types:
            self.link_types.append(linktype)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    @property
    def cut_short(self) -> bool:
        """Reading stopped before the end of the input (truncated, corrupt, out of memory):
        what came before is analysed, the rest is missing."""
        return self.truncated_at is not None or any(_stopped(w) for w in self.warnings)

    def unreadable_if_nothing_read(self) -> None:
        """An input that stopped on a fault before its first record was not readable at all:
        the fault becomes its `error` (a capture corrupt from its first record, a pcapng
        whose first block is bad)."""
        if self.error is None and self.packets == 0 and self.duplicate_of is None and self.cut_short:
            fault = next((w for w in self.warnings if _stopped(w)), None) or (
                f"cut short at byte {self.truncated_at}")
            self.warnings = [w for w in self.warnings if w != fault]
            self.error = f"no record readable: {fault}"


def _stopped(warning: str) -> bool:
    return "stopped reading" in warning or "cut short" in warning or "stopped there" in warning


HEAD_BYTES = 64 * 1024  # identical inputs: the same size and SHA-256 of this many first bytes


def head_digest(path: str) -> tuple[int, str] | None:
    """(size, SHA-256 hex of the first `HEAD_BYTES`) of a regular file; None otherwise."""
    import hashlib

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError:
        return None
    return st.st_size, hashlib.sha256(head).hexdigest()


def input_size(path: str) -> int | None:
    """The size of an input in bytes; None when it has none to tell (standard input, a pipe,
    a device) or cannot be looked at (its reader then reports why)."""
    if path == "-":
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None
