"""Hop distance: how far a packet came, from its TTL / hop limit (RST_SIGNALS §0 rule 3).

The attribution compares hop distances, not raw TTLs: applications set their own TTL (BGP's
1, GTSM's 255) while the kernel's no-socket RSTs use the host's default, and stacks start
from 64, 128 or 255, so one host can show several TTLs from one distance.  A middlebox still
stands out: a firewall a hop nearer than the server, a censor 30 hops off a 23-hop path.
"""

from __future__ import annotations

import numpy as np

# Hop distance (§0 rule 3): stacks start at one of these TTLs, so the nearest one at or above
# an observed TTL, minus it, is the hops the packet came.  Compared instead of raw TTLs: one
# host's sockets and its kernel's no-socket RSTs can start from different values (GTSM's 255,
# a default of 64) yet arrive from the same distance.
INITIAL_TTLS = (32, 64, 128, 255)
# A hop distance over this says the initial TTL was no stack default but an application's
# own (BGP's TTL 1 arrives as 1: "31 hops"): such a TTL says nothing about the distance.
MAX_HOPS = 30
HOPS_UNKNOWN = -1


def hop_distance(ttl: int) -> int:
    """Hops from the nearest common initial TTL at or above `ttl`; HOPS_UNKNOWN if implausible."""
    for initial in INITIAL_TTLS:
        if ttl <= initial:
            hops = initial - ttl
            return hops if hops <= MAX_HOPS else HOPS_UNKNOWN
    return HOPS_UNKNOWN


def hop_distances(ttl: np.ndarray) -> np.ndarray:
    """`hop_distance` of many TTLs."""
    ttl = np.asarray(ttl, np.int64)
    initial = np.select([ttl <= i for i in INITIAL_TTLS], INITIAL_TTLS, 256)
    hops = initial - ttl
    return np.where((hops <= MAX_HOPS) & (initial <= 255), hops, HOPS_UNKNOWN)


def same_hops_ttls(ttl: int) -> tuple[int, ...]:
    """The TTLs at the same hop distance as `ttl` (at most one per initial TTL); `(ttl,)`
    when its hop distance is unknown (only the same TTL then fits)."""
    hops = hop_distance(ttl)
    if hops == HOPS_UNKNOWN:
        return (ttl,)
    return tuple(t for t in (i - hops for i in INITIAL_TTLS) if t > 0 and hop_distance(t) == hops)


def same_hops_ttl_columns(ttl: np.ndarray) -> list[np.ndarray]:
    """`same_hops_ttls` of many TTLs, as one column per initial TTL (-1 where none)."""
    ttl = np.asarray(ttl, np.int64)
    hops = hop_distances(ttl)
    columns = []
    for k, initial in enumerate(INITIAL_TTLS):
        t = initial - hops
        fits = (hops != HOPS_UNKNOWN) & (t > 0) & (hop_distances(t) == hops)
        if k == 0:  # an unknown distance: the TTL itself
            columns.append(np.where(hops == HOPS_UNKNOWN, ttl, np.where(fits, t, -1)))
        else:
            columns.append(np.where(fits, t, -1))
    return columns


def known_hop_ranges() -> list[tuple[int, int]]:
    """The TTL ranges [lo, hi] whose hop distance is known (at most MAX_HOPS below an
    initial TTL, above the one before it)."""
    ranges, previous = [], 0
    for initial in INITIAL_TTLS:
        ranges.append((max(previous + 1, initial - MAX_HOPS), initial))
        previous = initial
    return ranges
