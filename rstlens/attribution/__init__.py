"""RST attribution: from each RST's facts to a cause, a confidence and the evidence.

In the order the data flows:

- `facts`: what is known about one RST (`RstFacts`), and `FACT_COLUMNS`, the one table that
  reads those facts column-wise from the RST log (and from `RstFacts`, for the tests)
- `hops`: hop distance from a TTL (the nearest common initial TTL minus it)
- `hosts`: each host's TTL profile across the capture (`HostProfiles`)
- `bursts`: each RST against the other RSTs of its connection (seq/ack/TTL changes)
- `signals`: the facts reduced to the small integers the rules test (`Signals`), per RST
  and column-wise, including the receiver's view (`acceptability`)
- `rules`: the rule table (`RULES`, first match wins), `decide` and `classify`
- `evidence`: every evidence code and what it means (RST_SIGNALS.md sections)
- `rst_flows`: the connections that had RSTs, held until their verdicts are final
- `attribute`: verdicts for a whole RST log, as resets.parquet rows and flow summaries
"""
