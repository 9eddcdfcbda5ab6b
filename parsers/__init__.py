"""Capture input: sources (files, pipes, stdin), link layers, IPv4/IPv6, TCP.

Turns bytes into columnar `PacketBatch`es for the core.  Installed as `rstlens.parsers`.

    reader = CaptureReader(["a.pcap", "b.pcapng.gz"], bpf="port 443")
    for batch in reader:          # TCP packets only, all inputs merged by timestamp
        ...
    reader.inputs, reader.stats   # per-input outcome, decode counters

    live = LiveReader("eth0", bpf="tcp")   # the same batches from an interface; an empty
    for batch in live: ...                 # one every timeout_ms when nothing arrives
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rstlens._lazy import lazy_getattr

if TYPE_CHECKING:
    from rstlens.errors import CaptureError, RstlensError

    from ._batch import BATCH_COLUMNS, DecodeStats, PacketBatch
    from ._decode import RawBatch, decode_arrays
    from ._info import InputInfo
    from ._live import LiveReader
    from ._sources import CaptureReader, compile_bpf

# Imported on first use, so that the kernel modules can be imported (and compiled ahead of
# time, `rstlens.kernels.aot`) without libpcap.
_LAZY = {
    "BATCH_COLUMNS": "._batch",
    "DecodeStats": "._batch",
    "PacketBatch": "._batch",
    "RawBatch": "._decode",
    "decode_arrays": "._decode",
    "CaptureError": "rstlens.errors",
    "RstlensError": "rstlens.errors",
    "InputInfo": "._info",
    "LiveReader": "._live",
    "CaptureReader": "._sources",
    "compile_bpf": "._sources",
}

__all__ = [
    "BATCH_COLUMNS",
    "CaptureError",
    "CaptureReader",
    "DecodeStats",
    "InputInfo",
    "LiveReader",
    "PacketBatch",
    "RawBatch",
    "RstlensError",
    "compile_bpf",
    "decode_arrays",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
