"""Device fingerprints shared across RSTs: one IP-ID counter speaking for several hosts.

Two facts: `shared_ipid_counter` (two RSTs on one counter, corroboration for a TTL anomaly)
and `one_counter_senders` (a sample of another address inside a stretch of this one's
counter: one stack answering for both, who sent the RST).

A device that resets connections on behalf of several servers (an idle-reset firewall, a
NAT, a load balancer) sends its RSTs from its own stack: one TTL and one IPv4 IP-ID counter,
whatever address each RST claims.  Two RSTs that claim *different* source addresses but
carry the same TTL and consecutive IP IDs, close in time, came from one box (§2.4: the
injector's own IP-ID/TTL pattern; §0 rule 3).  A lone RST whose hop distance differs from
its host's elsewhere has no such corroboration: one address at several hop distances is
common in the field (anycast, NATs, load balancers) — so `signals` counts the host's TTLs
on other connections against a RST whose connection shows nothing of the sender's own
path only when this fingerprint backs it (issue 17; §0 rule 8).
"""

from __future__ import annotations

import numpy as np

from rstlens.flows import layout as L
from rstlens.flows.columns import RstRows

# Two RSTs this close in time, IP IDs this close (mod 2**16, later one higher), same TTL,
# different claimed sources: one device's counter.  By chance two unrelated hosts' IP IDs
# fall this close about once in 500 pairs (span/65,536), and only RSTs whose verdict
# hinges on it (a host-level hop-distance anomaly on a connection that shows nothing of the
# sender) read it.
SHARED_WINDOW_US = 10_000_000
SHARED_IPID_SPAN = 128


_TS_BITS = 52  # capture times in µs stay below 2**52 (year 2112): TTL above them in one key


def _ttl_time(ttl: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """One int64 key ordering by TTL, then time (negative times as 0)."""
    key: np.ndarray = (ttl << _TS_BITS) | np.maximum(ts, 0)
    return key


def shared_ipid_counter(R: RstRows, senders: np.ndarray, wanted: np.ndarray,
                        ignore: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Per RST of the log `R` marked in `wanted` (the others get False): does another RST
    claiming a different source address (rows of `senders`: (hi, lo) per RST) carry the
    same TTL and an IP ID 1..SHARED_IPID_SPAN away in one counter (the later one higher),
    within SHARED_WINDOW_US?  IPv4 only, IP ID 0 (Linux's no-socket RSTs) excluded; RSTs
    marked in `ignore` (capture copies, corrupt segments) take no part."""
    out = np.zeros(R.shape[0], bool)
    use = (R[:, L.R_IPV] == 4) & (R[:, L.R_IPID] > 0)
    if ignore is not None:
        use &= ~ignore
    asked = np.flatnonzero(wanted & use)
    if not asked.shape[0]:
        return out
    rows = np.flatnonzero(use)
    key = _ttl_time(R[:, L.R_TTL], R[:, L.R_TS])
    order = rows[np.argsort(key[rows], kind="stable")]
    sorted_key = key[order]
    for i in asked.tolist():
        a = np.searchsorted(sorted_key, key[i] - SHARED_WINDOW_US, "left")
        b = np.searchsorted(sorted_key, key[i] + SHARED_WINDOW_US, "right")
        near = order[a:b]
        other = (senders[near, 0] != senders[i, 0]) | (senders[near, 1] != senders[i, 1])
        later = R[near, L.R_TS] >= R[i, L.R_TS]
        step = np.where(later, R[near, L.R_IPID] - R[i, L.R_IPID],
                        R[i, L.R_IPID] - R[near, L.R_IPID]) & 0xFFFF
        out[i] = bool((other & (step >= 1) & (step <= SHARED_IPID_SPAN)).any())
    return out


# One stack answering for several addresses (issue 17 item 8): a user-mode NAT (slirp: QEMU,
# VirtualBox, slirp4netns) or a terminating proxy numbers the packets of every connection it
# answers from one IP-ID counter, whatever address each claims.  A sender's last segment
# and its RST bound a stretch of its counter; a packet claiming another address, at the
# same TTL, whose IP ID falls strictly inside that stretch in the same span of time was
# numbered by the same counter.  By chance (two hosts' counters) that needs an IP ID within
# a few steps of another host's in a window of milliseconds: the stretch's length over
# 65,536 per packet inside it.
STRETCH_MAX_US = SHARED_WINDOW_US
STRETCH_MAX_IDS = SHARED_IPID_SPAN
_PAIRS_PER_STEP = 1 << 20  # candidate (stretch, packet) pairs looked at per step (memory)


def one_counter_senders(R: RstRows, senders: np.ndarray,
                        ignore: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Per RST of the log `R`: was its claimed source address (rows of `senders`: (hi, lo)
    per RST), at the RST's TTL, shown to share one IP-ID counter with another address?

    The counter's samples are each RST's IP ID and that of its sender's last non-RST segment
    before it (`layout.R_SND_LAST_IPID`, when all of the sender's TTLs equal the RST's),
    dated by the sender's last segment (`R_SND_LAST_TS`: later when RSTs came between, so a
    shorter stretch).  An address is shown when a stretch of its counter (last segment ->
    RST, 2..STRETCH_MAX_IDS IDs and at most STRETCH_MAX_US apart) holds a sample of another
    address strictly inside, or one of its samples lies inside another address's stretch;
    then every RST from it at that TTL counts.  IPv4 only; IP ID 0 (Linux's no-socket RSTs)
    is no sample; RSTs marked in `ignore` (capture copies, corrupt segments) take no part."""
    n = R.shape[0]
    out = np.zeros(n, bool)
    use = R[:, L.R_IPV] == 4
    if ignore is not None:
        use &= ~ignore
    ipid, ttl, ts = R[:, L.R_IPID], R[:, L.R_TTL], R[:, L.R_TS]
    last_id, last_ts = R[:, L.R_SND_LAST_IPID], R[:, L.R_SND_LAST_TS]
    one_ttl = (R[:, L.R_SND_TTL_MIN] == ttl) & (R[:, L.R_SND_TTL_MAX] == ttl)
    ids = (ipid - last_id) & 0xFFFF
    gap = ts - last_ts
    has_last = use & (last_id > 0) & one_ttl
    stretch = np.flatnonzero(has_last & (ipid > 0) & (ids >= 2) & (ids <= STRETCH_MAX_IDS)
                             & (gap >= 0) & (gap <= STRETCH_MAX_US))  # fmt: skip
    if not stretch.shape[0]:
        return out
    at_rst = np.flatnonzero(use & (ipid > 0))
    at_last = np.flatnonzero(has_last)
    row = np.concatenate([at_rst, at_last])  # each sample's RST
    s_id = np.concatenate([ipid[at_rst], last_id[at_last]])
    s_key = _ttl_time(ttl[row], np.concatenate([ts[at_rst], last_ts[at_last]]))
    order = np.argsort(s_key, kind="stable")
    sorted_key = s_key[order]
    lo = np.searchsorted(sorted_key, _ttl_time(ttl[stretch], last_ts[stretch]))
    hi = np.searchsorted(sorted_key, _ttl_time(ttl[stretch], ts[stretch]), "right")
    counts = hi - lo
    if not counts.any():
        return out
    shown = np.zeros(n, bool)
    bounds = np.searchsorted(np.cumsum(counts), np.arange(0, counts.sum(), _PAIRS_PER_STEP), "right")
    for a, b in zip(bounds.tolist(), [*bounds[1:].tolist(), stretch.shape[0]], strict=True):
        k = np.repeat(np.arange(a, b), counts[a:b])  # stretch of each candidate pair
        first = np.cumsum(counts[a:b]) - counts[a:b]
        j = order[lo[k] + np.arange(k.shape[0]) - np.repeat(first, counts[a:b])]
        owner, other = stretch[k], row[j]
        step = (s_id[j] - last_id[owner]) & 0xFFFF
        hit = ((step >= 1) & (step < ids[owner])
               & ((senders[other, 0] != senders[owner, 0]) | (senders[other, 1] != senders[owner, 1])))  # fmt: skip
        shown[owner[hit]] = True
        shown[other[hit]] = True
    if not shown.any():
        return out
    # every RST from a shown address at its TTL
    key = np.ascontiguousarray(np.column_stack([senders[:, 0], senders[:, 1], ttl]).astype(np.int64))
    flat = key.view("V24").ravel()
    out[:] = use & np.isin(flat, flat[shown])
    return out
