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

    def add_link_type(self, linktype: int) -> None:
        if linktype not in self.link_types:
            self.link_types.append(linktype)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)


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
