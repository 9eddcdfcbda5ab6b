"""Bursts: each RST compared with the other RSTs of its connection (RST_SIGNALS §0 rule 4).

Real stacks send one RST per trigger; injectors often send several within milliseconds,
with changing seq, ack or TTL, or toward both ends at once (§2.4).
"""

from __future__ import annotations

import numpy as np

from rstlens.flows import layout as L
from rstlens.flows.columns import RstRows
from rstlens.parsers._batch import ACK

BURST_WINDOW_US = 2_000_000  # RSTs from one side this close together form a burst (§2.4 table)
BOTH_WAYS_WINDOW_US = 1_000_000  # RSTs toward both ends this close together (§2.4, Clayton)
# Khattak's RST SEQ CHANGE threshold: seq values more than 2 apart (§2.4 table)
SEQ_CHANGE_OVER = 2

# the columns of `burst_features`, in order
SEQ_CHANGE, ACK_CHANGE, TTL_CHANGE, BOTH_DIRECTIONS, LATER_CHANGE = range(5)
BURST_COLUMNS = ("burst_seq_change", "burst_ack_change", "burst_ttl_change", "both_directions",
                 "burst_later")  # fmt: skip


def burst_features(R: RstRows, src_is_a: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Per RST of the log `R`: (n, 5) booleans, columns `BURST_COLUMNS`, against the earlier
    RSTs of the same connection (`src_is_a`: the RST's sender is the connection's A end);
    `burst_later` marks the earlier RST of each such changing pair: the first RST of a burst
    is not "one RST per trigger" either (§0 rule 4).  RSTs marked in `ignore` (capture
    copies, corrupt segments: no evidence) take no part."""
    out = np.zeros((R.shape[0], len(BURST_COLUMNS)), bool)
    if R.shape[0] < 2:
        return out
    keys = (R[:, L.R_TS], R[:, L.R_SERIAL])
    if ignore is not None and ignore.any():
        kept = np.flatnonzero(~ignore)
        out[kept] = burst_features(R[kept], src_is_a[kept])
        return out
    order = np.lexsort(keys)
    serial = R[order, L.R_SERIAL]
    starts = np.flatnonzero(np.r_[True, serial[1:] != serial[:-1]])
    ends = np.r_[starts[1:], len(order)]
    several = ends - starts >= 2  # a lone RST has nothing to be compared with
    for a, b in zip(starts[several].tolist(), ends[several].tolist(), strict=True):
        idx = order[a:b]
        for j_pos, j in enumerate(idx.tolist()):
            for k in idx[:j_pos].tolist():
                dt = R[j, L.R_TS] - R[k, L.R_TS]
                if src_is_a[k] == src_is_a[j]:
                    if dt <= BURST_WINDOW_US:
                        seq_delta = abs(int(R[j, L.R_SEQ]) - int(R[k, L.R_SEQ]))
                        out[j, SEQ_CHANGE] |= seq_delta > SEQ_CHANGE_OVER
                        both_ack = R[j, L.R_FLAGS] & R[k, L.R_FLAGS] & ACK
                        out[j, ACK_CHANGE] |= bool(both_ack) and R[j, L.R_ACK] != R[k, L.R_ACK]
                        out[j, TTL_CHANGE] |= R[j, L.R_TTL] != R[k, L.R_TTL]
                        changed = (seq_delta > SEQ_CHANGE_OVER or R[j, L.R_TTL] != R[k, L.R_TTL]
                                   or (bool(both_ack) and R[j, L.R_ACK] != R[k, L.R_ACK]))
                        out[k, LATER_CHANGE] |= changed
                elif dt <= BOTH_WAYS_WINDOW_US:
                    out[j, BOTH_DIRECTIONS] = True
                    out[k, BOTH_DIRECTIONS] = True
    return out
