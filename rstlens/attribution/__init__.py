"""RST attribution: from each RST's facts to a cause, a confidence and the evidence.

- `rules`: the facts of one RST (`RstFacts`), the signals they reduce to, and the rules
- `evidence`: every evidence code and what it means (RST_SIGNALS.md sections)
- `attribute`: column-wise facts and verdicts for many RSTs, host TTL profiles, bursts
"""
