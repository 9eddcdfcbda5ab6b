"""Capture input: sources (files, pipes, stdin), link layers, IPv4/IPv6, TCP.

Turns bytes into columnar `PacketBatch`es for the core.  Installed as `rstlens.parsers`.

    reader = CaptureReader(["a.pcap", "b.pcapng.gz"], bpf="port 443")
    for batch in reader:          # TCP packets only, all inputs merged by timestamp
        ...
    reader.inputs, reader.stats   # per-input outcome, decode counters

    live = LiveReader("eth0", bpf="tcp")   # the same batches from an interface; an empty
    for batch in live: ...                 # one every timeout_ms when nothing arrives
"""

from ._batch import BATCH_COLUMNS, DecodeStats, PacketBatch
from ._decode import RawBatch, decode_arrays
from ._errors import CaptureError, RstlensError
from ._info import InputInfo
from ._live import LiveReader
from ._sources import CaptureReader, compile_bpf

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
