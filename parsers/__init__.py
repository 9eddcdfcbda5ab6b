"""Capture input: sources (files, pipes, live interfaces), link layers, IPv4/IPv6, TCP.

Turns bytes into columnar `PacketBatch`es for the core.  Installed as `rstlens.parsers`.
"""

from ._batch import BATCH_COLUMNS, DecodeStats, PacketBatch

__all__ = ["BATCH_COLUMNS", "DecodeStats", "PacketBatch"]
