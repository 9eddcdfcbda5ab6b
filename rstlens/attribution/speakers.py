"""Who speaks for an address (issue 17 item 8): a front end answering for the host behind it,
and a proxy relaying its upstream's RST.

Two facts, both from what the wire shows, never from verdicts:

* **Two speakers for one address** (`speaker`, per RST): the sender's SYN / SYN-ACK came from
  one hop distance and every one of its payload segments from another, at least
  `SPEAKER_HOPS` apart: a TCP front end (SYN proxy, accelerator, splitting load balancer)
  answered the handshake and the server behind it sends the data.  A RST at the handshake
  speaker's TTL, and not at any data TTL, was sent by the front end (`FRONT_END`), a
  middlebox whatever its reason (RST_SIGNALS §0 rule 3: the IP layer of the claimed sender;
  §2.2's middlebox form, §2.4 confusions: load-balancer resets).  A RST from the data
  speaker (`DATA_SPEAKER`) is noted, nothing more: which of the two is the endpoint the
  packets do not say.
* **A relayed upstream RST** (`relayed`, per RST, `attribute` computes it over all RSTs): an
  observer that sees both legs of a proxy (on the proxy host, or on a path both cross) sees
  the proxy open an upstream connection right after a client connected to it, the upstream
  refuse or reset it, and the proxy reset the client's connection right after, from the same
  hop distance as its upstream leg.  That RST was sent by a middlebox (the proxy) for its
  upstream's reason: a refused upstream is `closed_port`, a reset one an `abort`.  Any other
  RST from an address proven to be such a relay is the proxy's own (`RELAY_HOST`).
"""

from __future__ import annotations

import numpy as np

from rstlens.attribution.hops import INITIAL_TTLS
from rstlens.flows import layout as L
from rstlens.flows.columns import RstRows

# Two TTLs come from different speakers when their hop distances (uncapped: the nearest
# initial TTL at or above, minus the TTL) differ by at least this: a path change moves a
# connection's TTL by a hop or two, a second device sits elsewhere (§2.4 "Medium for a
# single IP-layer mismatch, since routing changes, ECMP and NAT also alter these fields").
SPEAKER_HOPS = 3
# `speaker` codes
NO_SPEAKERS, FRONT_END, DATA_SPEAKER = range(3)

# a relay: the upstream connection opened at most this long after the client's ...
RELAY_WITHIN_US = 200_000
# ... and the proxy's RST to its client at most this long after the upstream's: a proxy
# passes its upstream's refusal or reset on at once
RELAY_REACT_US = 50_000
# RSTs looked back at per RST for its upstream: a relay amid more RSTs than this within
# RELAY_WITHIN_US (a scan, a flood) is not looked for
RELAY_LOOKBACK = 32
# `relayed` codes
NOT_RELAYED, RELAY_REFUSED, RELAY_RESET, RELAY_HOST = range(4)


def raw_hops(ttl: np.ndarray) -> np.ndarray:
    """Hop distance without the plausibility cap of `hops.hop_distance`: a front end's
    TTL-255 stack 24 hops off and the server's 43 hops off are two speakers, not two
    unknowns."""
    ttl = np.asarray(ttl, np.int64)
    initial = np.select([ttl <= i for i in INITIAL_TTLS], INITIAL_TTLS, 255)
    hops: np.ndarray = initial - ttl
    return hops


def _apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    apart: np.ndarray = np.abs(raw_hops(a) - raw_hops(b)) >= SPEAKER_HOPS
    return apart


def speaker_column(ttl: np.ndarray, hs_ttl: np.ndarray, data_min: np.ndarray,
                   data_max: np.ndarray, reactive: np.ndarray) -> np.ndarray:  # fmt: skip
    """`speaker` codes per RST.  Only RSTs from a socket (not Linux's reactive no-socket
    form) count: a host whose application set its own TTL after the handshake answers with
    its kernel's default TTL there, which may be its handshake's."""
    ttl, hs = np.asarray(ttl, np.int64), np.asarray(hs_ttl, np.int64)
    lo, hi = np.asarray(data_min, np.int64), np.asarray(data_max, np.int64)
    seen = (hs > 0) & (lo <= hi)
    two = seen & _apart(hs, lo) & _apart(hs, hi)
    # the data TTLs themselves one speaker: the range no wider than a path change
    two &= ~_apart(lo, hi)
    socket = ~np.asarray(reactive, bool)
    at_hs = np.abs(raw_hops(ttl) - raw_hops(hs)) <= 1
    at_data = (raw_hops(ttl) >= raw_hops(hi) - 1) & (raw_hops(ttl) <= raw_hops(lo) + 1)
    out = np.full(ttl.shape[0], NO_SPEAKERS, np.int64)
    out[two & socket & at_hs & ~at_data] = FRONT_END
    out[two & socket & at_data & ~at_hs] = DATA_SPEAKER
    return out


def speaker(ttl: int, hs_ttl: int, data_min: int, data_max: int, reactive: bool) -> int:
    """`speaker_column` of one RST."""
    return int(speaker_column(np.array([ttl]), np.array([hs_ttl]), np.array([data_min]),
                              np.array([data_max]), np.array([reactive]))[0])  # fmt: skip


def relayed(R: RstRows, conn: np.ndarray, sender: np.ndarray, receiver: np.ndarray,
            starts: np.ndarray, start_seen: np.ndarray, originator: np.ndarray,
            orig_ttl: np.ndarray) -> np.ndarray:  # fmt: skip
    """`relayed` codes per RST row of `R`.

    `conn` numbers each RST's connection; `sender`/`receiver` number its addresses (equal
    numbers, equal addresses); `starts` is its connection's first timestamp (`start_seen`:
    its opening was captured, which the timing link needs on both legs), `originator`
    the number of its connection's originator and `orig_ttl` that originator's lowest TTL
    (0: none).  RST `r` (connection A, from its responder P, which had sent on A, to its
    originator C: the proxy's client connected to it) relays RST `u` (connection B, to Q)
    when B was opened by Q, after A and at most RELAY_WITHIN_US later; `u` came at most
    RELAY_REACT_US before `r`; Q's TTL on B is `r`'s within one (the proxy's two legs: one
    stack at one distance); both openings were captured; P, Q, C and `u`'s sender are four
    addresses, and exactly one such `u` exists (copies of one RST count once).  Candidates
    are found by a look-back of at most RELAY_LOOKBACK RSTs in time order, column-wise."""
    n = R.shape[0]
    out = np.zeros(n, np.int64)
    if n < 2:
        return out
    ts = R[:, L.R_TS]
    order = np.argsort(ts, kind="stable")
    ttl = R[:, L.R_TTL]
    # the upstream's reason from its own wire form: a RST from a side that sent nothing to
    # an originator still in SYN-SENT is a refusal; any other RST resets the upstream
    refused = ((R[:, L.R_SND_ST] == L.INACTIVE) & (R[:, L.R_RCV_ST] == L.SYN_SENT)
               & (R[:, L.R_SND_PKTS] == 0))  # fmt: skip
    opened = np.asarray(start_seen, bool)
    upstream = (receiver == originator) & (orig_ttl > 0) & opened  # a RST to the leg's opener
    to_client = (receiver == originator) & opened  # ... and the proxy's RST to its own client
    # the proxy had accepted its client (sent on that connection): a scan's or a flood's
    # refusals never are relays, and the look-back below runs over the few that may be
    to_client &= R[:, L.R_SND_PKTS] > 0
    at = np.flatnonzero(to_client[order])  # positions in time order of the candidates
    r = order[at]
    found = np.zeros(n, np.int64)  # matching upstream connections per RST
    match = np.full(n, -1, np.int64)
    for k in range(1, RELAY_LOOKBACK + 1):
        back = at - k
        ok = back >= 0
        uu = order[np.maximum(back, 0)]  # the k-th RST before each candidate, in time
        ok &= upstream[uu] & (ts[r] - ts[uu] <= RELAY_REACT_US) & (conn[uu] != conn[r])
        ok &= (starts[uu] >= starts[r]) & (starts[uu] <= starts[r] + RELAY_WITHIN_US)
        ok &= ((receiver[uu] != sender[r]) & (receiver[uu] != receiver[r])
               & (sender[uu] != sender[r]) & (sender[uu] != receiver[r]))  # fmt: skip
        ok &= np.abs(orig_ttl[uu] - ttl[r]) <= 1
        # copies of one upstream RST (same connection) count once
        first = match[r] < 0
        new = ok & (first | (conn[np.maximum(match[r], 0)] != conn[uu]))
        found[r[new]] += 1
        match[r[new & first]] = uu[new & first]
        if not ((back >= 0) & (ts[r] - ts[uu] <= RELAY_REACT_US)).any():
            break
    one = found == 1
    out[one] = np.where(refused[match[one]], RELAY_REFUSED, RELAY_RESET)
    # every other RST from a relay's address is the proxy's own
    relays = np.unique(sender[out != NOT_RELAYED])
    out[(out == NOT_RELAYED) & np.isin(sender, relays)] = RELAY_HOST
    return out
