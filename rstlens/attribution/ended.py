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
"""

from __future__ import annotations

import numpy as np

from rstlens.flows import layout as L
from rstlens.flows.seqspace import MASK32

NO_MATCH, OLD_ISN, OLD_SND_NXT = range(3)
MAX_REMEMBERED = 262_144  # ended connections kept (~140 bytes each); the oldest go first

# the columns of one remembered connection
_HASH, _PORTS, _EXTRA, _TUNNEL, _K0, _K1, _K2, _K3, _SERIAL, _LAST = range(10)
_SIDE = 10  # then per canonical side (A, B): ISN, next seq, highest ack sent (-1: unknown)
_ISN, _NXT, _ACK = range(3)
_WIDTH = _SIDE + 2 * 3


class EndedConnections:
    """The sequence space of ended connections, for `match`."""

    def __init__(self, capacity: int = MAX_REMEMBERED) -> None:
        self.capacity = capacity
        self._blocks: list[np.ndarray] = []
        self._rows = 0
        self.evicted = 0

    def __len__(self) -> int:
        return self._rows

    def add(self, F: np.ndarray, K: np.ndarray) -> None:
        """Finished connections (kernel rows and keys)."""
        n = F.shape[0]
        if not n:
            return
        M = np.empty((n, _WIDTH), np.int64)
        M[:, _HASH] = F[:, L.HASH]
        M[:, _PORTS] = F[:, L.KEY_PORTS]
        M[:, _EXTRA] = F[:, L.KEY_EXTRA]
        M[:, _TUNNEL] = F[:, L.TUNNEL]
        M[:, _K0 : _K3 + 1] = K.view(np.int64)
        M[:, _SERIAL] = F[:, L.SERIAL]
        M[:, _LAST] = F[:, L.PKT_LAST]
        orig_a = F[:, L.ORIG_IS_A] == 1
        for canonical in (0, 1):  # A, B
            # the side of the row that is canonical endpoint `canonical`
            d = np.where(orig_a, canonical, 1 - canonical)
            rows = np.arange(n)
            b = L.D + d * L.DSTRIDE
            seen = F[rows, b + L.PKTS] > 0
            base = _SIDE + 3 * canonical
            M[:, base + _ISN] = np.where(seen, F[rows, b + L.START] & MASK32, -1)
            M[:, base + _NXT] = np.where(F[rows, b + L.NXT_SET] == 1, F[rows, b + L.NXT32], -1)
            M[:, base + _ACK] = np.where(F[rows, b + L.MYACK_SET] == 1, F[rows, b + L.MYACK32], -1)
        self._blocks.append(M)
        self._rows += n
        if self._rows > self.capacity:
            self._evict()

    def _evict(self) -> None:
        """Keep the `capacity` connections that ended last."""
        M = np.concatenate(self._blocks)
        drop = M.shape[0] - self.capacity
        keep = np.argsort(M[:, _LAST], kind="stable")[drop:]
        self.evicted += drop
        self._blocks = [M[np.sort(keep)]]
        self._rows = self.capacity

    def match(self, R: np.ndarray, conn: np.ndarray, keys: np.ndarray, src_is_a: np.ndarray,
              candidates: np.ndarray) -> np.ndarray:  # fmt: skip
        """Per RST of the log `R` (`conn`: its connection's `KEY_COLUMNS`, `keys`: its K row,
        `src_is_a`: it came from canonical endpoint A): NO_MATCH, OLD_ISN or OLD_SND_NXT
        against the latest connection on the same key that began before the RST's own, for
        the RSTs marked in `candidates` (NO_MATCH for the others)."""
        out = np.full(R.shape[0], NO_MATCH, np.int64)
        want = np.flatnonzero(candidates)
        if not want.shape[0] or not self._rows:
            return out
        M = np.concatenate(self._blocks) if len(self._blocks) > 1 else self._blocks[0]
        self._blocks = [M]
        order = np.lexsort((M[:, _SERIAL], M[:, _HASH]))
        hashes = M[order, _HASH]
        lo = np.searchsorted(hashes, conn[want, 0], "left")
        hi = np.searchsorted(hashes, conn[want, 0], "right")
        k64 = keys.view(np.int64)
        for j, i in enumerate(want.tolist()):
            serial = int(R[i, L.R_SERIAL])
            for at in range(int(hi[j]) - 1, int(lo[j]) - 1, -1):  # latest first
                m = M[order[at]]
                if m[_SERIAL] >= serial or not (
                    np.array_equal(m[_PORTS : _TUNNEL + 1], conn[i, 1:])
                    and np.array_equal(m[_K0 : _K3 + 1], k64[i])
                ):
                    continue
                out[i] = _seq_match(m, int(R[i, L.R_SEQ]), bool(src_is_a[i]))
                break
        return out


# the kernel row columns `match` compares (with the key K)
KEY_COLUMNS = (L.HASH, L.KEY_PORTS, L.KEY_EXTRA, L.TUNNEL)


def _seq_match(m: np.ndarray, seq: int, src_is_a: bool) -> int:
    snd = _SIDE + (0 if src_is_a else 3)
    rcv = _SIDE + (3 if src_is_a else 0)
    isn = int(m[snd + _ISN])
    if int(m[snd + _NXT]) == seq or int(m[rcv + _ACK]) == seq:
        return OLD_SND_NXT
    if isn >= 0 and seq in (isn, (isn + 1) & MASK32):
        return OLD_ISN
    return NO_MATCH
