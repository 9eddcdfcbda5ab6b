"""Ended connections' sequence space, remembered for the whole input (issue 17, item 3).

A RST can come long after its connection's last packet: a CLOSE_WAIT socket reset hours
later, a client aborting a socket that is still in SYN-SENT after the flow expired.  By
then Zeek's timers have removed the connection, so the RST starts a connection of its own
in which its sender sent nothing before: `unknown.unsolicited` / `no_match` unless
something remembers what the sender's sequence numbers were.  `EndedConnections` keeps,
per ended connection, its key and each side's initial sequence number (Zeek's start_seq),
next sequence number and highest ack, bounded (the oldest are evicted, and counted), and
`match` tells for RSTs whose sender sent nothing before in their own connection whether
their seq is the remembered ISN or ISN + 1 (`OLD_ISN`) or the sender's next sequence
number, as the sender sent it or as its peer acknowledged it (`OLD_SND_NXT`).

The connections still in the flow table when the input ends (`engine.Finished.at_end`) are
not added: no packet came after them on their key, so none can be the earlier connection of
an RST, and being the last to end they would evict the ones that can (a SYN flood ends with
~600,000 attempts open, more than `MAX_REMEMBERED`).
"""

from __future__ import annotations

import numpy as np

from rstlens.flows import layout as L
from rstlens.flows.columns import RstRows, distinct

MASK32 = 0xFFFF_FFFF  # (not from flows.seqspace: that module imports numba, which a run must not)

NO_MATCH, OLD_ISN, OLD_SND_NXT = range(3)
MAX_REMEMBERED = 262_144  # ended connections kept (~140 bytes each); the oldest go first

# the columns of one remembered connection
_HASH, _PORTS, _EXTRA, _TUNNEL, _K0, _K1, _K2, _K3, _SERIAL, _LAST = range(10)
_SIDE = 10  # then per canonical side (A, B): ISN, next seq, highest ack sent (-1: unknown)
_ISN, _NXT, _ACK = range(3)
_WIDTH = _SIDE + 2 * 3
# the remembered columns copied from the kernel row as they are, and their sources
_ROW_COLUMNS = [_HASH, _PORTS, _EXTRA, _TUNNEL, _SERIAL, _LAST]
_ROW_SOURCES = [L.HASH, L.KEY_PORTS, L.KEY_EXTRA, L.TUNNEL, L.SERIAL, L.PKT_LAST]
# a side's columns read for its ISN, next sequence number and highest ack sent
_SIDE_COLUMNS = (L.PKTS, L.START, L.NXT_SET, L.NXT32, L.MYACK_SET, L.MYACK32)
_ORIG_SOURCES = [L.D + c for c in _SIDE_COLUMNS]
_RESP_SOURCES = [L.D + L.DSTRIDE + c for c in _SIDE_COLUMNS]


class EndedConnections:
    """The sequence space of ended connections, for `match`."""

    def __init__(self, capacity: int = MAX_REMEMBERED) -> None:
        self.capacity = capacity
        self._blocks: list[np.ndarray] = []
        self._rows = 0
        self._evicted = 0

    def __len__(self) -> int:
        self._settle()
        return self._rows

    @property
    def evicted(self) -> int:
        """Connections forgotten so far (the oldest-ended ones past `capacity`)."""
        self._settle()
        return self._evicted

    def add(self, F: np.ndarray, K: np.ndarray) -> None:
        """Finished connections (kernel rows and keys)."""
        n = F.shape[0]
        if not n:
            return
        M = np.empty((n, _WIDTH), np.int64)
        M[:, _ROW_COLUMNS] = F[:, _ROW_SOURCES]
        M[:, _K0 : _K3 + 1] = K.view(np.int64)
        # each canonical side's (pkts, start, nxt set, nxt, ack set, ack) from the
        # originator's or the responder's columns: one gather and one choice for all of them
        orig, resp = F[:, _ORIG_SOURCES], F[:, _RESP_SOURCES]
        orig_a = (F[:, L.ORIG_IS_A] == 1)[:, None]
        for canonical, side in enumerate((np.where(orig_a, orig, resp), np.where(orig_a, resp, orig))):
            base = _SIDE + 3 * canonical
            M[:, base + _ISN] = np.where(side[:, 0] > 0, side[:, 1] & MASK32, -1)
            M[:, base + _NXT] = np.where(side[:, 2] == 1, side[:, 3], -1)
            M[:, base + _ACK] = np.where(side[:, 4] == 1, side[:, 5], -1)
        self._blocks.append(M)
        self._rows += n
        # Evicting is a sort of everything kept, so it runs only once a quarter of the
        # capacity has piled up (a scan ends 500 k connections: evicting per batch was 60
        # sorts of 262 k rows, ~0.9 s).  Keeping the latest `capacity` by (end, arrival)
        # gives the same rows whether it runs after every batch or once before `match`.
        if self._rows > self.capacity + self.capacity // 4:
            self._settle()

    def _settle(self) -> None:
        """Keep the `capacity` connections that ended last (ties: the later added)."""
        if self._rows <= self.capacity:
            return
        # the rows a stable sort by end would put first, without sorting or concatenating
        # the rows (a flood settles a dozen times): those that ended before the drop-th
        # smallest end, then of those that ended at it, the first added.  Blocks wholly
        # kept stay as they are; only the blocks the cut goes through are copied.
        last = np.concatenate([block[:, _LAST] for block in self._blocks])
        drop = last.shape[0] - self.capacity
        cut = np.partition(last, drop - 1)[drop - 1]
        keep = last > cut
        at_cut = np.flatnonzero(last == cut)
        keep[at_cut[drop - int(np.count_nonzero(last < cut)) :]] = True
        blocks: list[np.ndarray] = []
        start = 0
        for block in self._blocks:
            kept = keep[start : start + block.shape[0]]
            start += block.shape[0]
            if kept.all():
                blocks.append(block)
            elif kept.any():
                blocks.append(block[kept])
        self._evicted += drop
        self._blocks = blocks
        self._rows = self.capacity

    def match(self, R: RstRows, conn: np.ndarray, keys: np.ndarray, src_is_a: np.ndarray,
              candidates: np.ndarray) -> np.ndarray:  # fmt: skip
        """Per RST of the log `R` (`conn`: its connection's `KEY_COLUMNS`, `keys`: its K row,
        `src_is_a`: it came from canonical endpoint A): NO_MATCH, OLD_ISN or OLD_SND_NXT
        against the latest connection on the same key that began before the RST's own, for
        the RSTs marked in `candidates` (NO_MATCH for the others).  Column-wise: the latest
        earlier connection with the same key hash, then its whole key compared."""
        out = np.full(R.shape[0], NO_MATCH, np.int64)
        want = np.flatnonzero(candidates)
        self._settle()
        if not want.shape[0] or not self._rows:
            return out
        M = np.concatenate(self._blocks) if len(self._blocks) > 1 else self._blocks[0]
        self._blocks = [M]
        hashes, _, group = distinct(M[:, _HASH])
        combined = group.astype(np.int64) << _SERIAL_BITS | M[:, _SERIAL]
        order = np.argsort(combined)  # distinct values (the serial is unique): any sort
        combined = combined[order]
        h = conn[want, 0]
        g = np.minimum(np.searchsorted(hashes, h), hashes.shape[0] - 1)
        known = hashes[g] == h
        target = g.astype(np.int64) << _SERIAL_BITS | R[want, L.R_SERIAL]
        at = np.maximum(np.searchsorted(combined, target) - 1, 0)  # the latest before the RST's
        m = M[order[at]]
        same = (
            known & (combined[at] < target) & ((combined[at] >> _SERIAL_BITS) == g)
            & (m[:, _PORTS : _TUNNEL + 1] == conn[want, 1:]).all(axis=1)
            & (m[:, _K0 : _K3 + 1] == keys[want].view(np.int64)).all(axis=1)
        )  # fmt: skip
        a = src_is_a[want]
        snd = np.where(a[:, None], m[:, _SIDE : _SIDE + 3], m[:, _SIDE + 3 : _SIDE + 6])
        rcv = np.where(a[:, None], m[:, _SIDE + 3 : _SIDE + 6], m[:, _SIDE : _SIDE + 3])
        seq = R[want, L.R_SEQ]
        isn = snd[:, _ISN]
        at_isn = (isn >= 0) & ((seq == isn) | (seq == ((isn + 1) & MASK32)))
        at_nxt = (snd[:, _NXT] == seq) | (rcv[:, _ACK] == seq)
        out[want] = np.where(same & at_nxt, OLD_SND_NXT, np.where(same & at_isn, OLD_ISN, NO_MATCH))
        return out


_SERIAL_BITS = 40  # connection numbers stay below 2**40

# the kernel row columns `match` compares (with the key K)
KEY_COLUMNS = (L.HASH, L.KEY_PORTS, L.KEY_EXTRA, L.TUNNEL)
