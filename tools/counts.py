"""Packet counts as people write them: '5M', '1m', '20k', '1500'.  Standard library only:
`benchmarks/bench.py` imports it and measures its children's memory from a lean parent."""

from __future__ import annotations


def parse_count(text: str) -> int:
    """'5M', '1m', '20k', '1500', '1_000' -> int."""
    t = text.strip().lower().replace("_", "")
    mult = 1
    if t and t[-1] in "km":
        mult = 1000 if t[-1] == "k" else 1_000_000
        t = t[:-1]
    return int(float(t) * mult)
