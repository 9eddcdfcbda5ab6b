"""Device fingerprints shared across RSTs: one IP-ID counter speaking for several hosts.

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
    ts = np.maximum(R[:, L.R_TS], 0)
    key = (R[:, L.R_TTL] << _TS_BITS) | ts
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
