"""TCP flags as text, in the two spellings rstlens shows.

- ``"zeek"``: one letter per flag in the order ``SFRPAUECN`` (``RA`` for RST+ACK), Zeek's
  style; this is the `resets.flags` column, a public contract.
- ``"tcpdump"``: tcpdump's letters ``SFRPUEWN`` (``W`` for CWR) with ACK as a trailing
  ``"."`` (``R.`` for RST+ACK), ``"none"`` when no flag is set; for `rstlens packets`.
"""

from __future__ import annotations

import functools
from typing import Literal

from ._batch import ACK, CWR, ECE, FIN, NS, PSH, RST, SYN, URG

FlagStyle = Literal["zeek", "tcpdump"]

# (bit, Zeek's letter, tcpdump's letter), in Zeek's order; tcpdump writes ACK last, as "."
FLAG_LETTERS: tuple[tuple[int, str, str], ...] = (
    (SYN, "S", "S"),
    (FIN, "F", "F"),
    (RST, "R", "R"),
    (PSH, "P", "P"),
    (ACK, "A", "."),
    (URG, "U", "U"),
    (ECE, "E", "E"),
    (CWR, "C", "W"),
    (NS, "N", "N"),
)


@functools.lru_cache(maxsize=1024)
def flags_text(bits: int, style: FlagStyle = "zeek") -> str:
    """`bits` (the `PacketBatch.flags` bit set) as text in `style`."""
    if style == "zeek":
        return "".join(zeek for bit, zeek, _ in FLAG_LETTERS if bits & bit)
    text = "".join(tcpdump for bit, _, tcpdump in FLAG_LETTERS if bits & bit and bit != ACK)
    if bits & ACK:
        text += "."
    return text or "none"
