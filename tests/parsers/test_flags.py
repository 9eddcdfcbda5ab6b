"""One TCP-flags formatter, two spellings: both as they were before they shared a table."""

from __future__ import annotations

from rstlens.parsers._batch import ACK, CWR, ECE, FIN, NS, PSH, RST, SYN, URG
from rstlens.parsers._flags import flags_text

# the two formatters as they were (attribution.attribute and parsers._show), the reference
_ZEEK = ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x10, "A"), (0x20, "U"),
         (0x40, "E"), (0x80, "C"), (0x100, "N"))  # fmt: skip
_TCPDUMP = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (URG, "U"), (ECE, "E"), (CWR, "W"),
            (NS, "N"))  # fmt: skip


def _old_zeek(fl: int) -> str:
    return "".join(ch for bit, ch in _ZEEK if fl & bit)


def _old_tcpdump(flags: int) -> str:
    s = "".join(ch for bit, ch in _TCPDUMP if flags & bit)
    if flags & ACK:
        s += "."
    return s or "none"


def test_both_styles_are_what_they_were_for_every_flag_set() -> None:
    for bits in range(1 << 9):
        assert flags_text(bits) == flags_text(bits, "zeek") == _old_zeek(bits), bits
        assert flags_text(bits, "tcpdump") == _old_tcpdump(bits), bits


def test_examples() -> None:
    assert flags_text(RST | ACK) == "RA"
    assert flags_text(RST | ACK, "tcpdump") == "R."
    assert flags_text(SYN | ACK | CWR, "tcpdump") == "SW."
    assert flags_text(0, "tcpdump") == "none"
    assert flags_text(0) == ""
