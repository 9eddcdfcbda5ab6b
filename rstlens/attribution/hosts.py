"""Each host's TTL profile: the TTL / hop-limit values it shows in non-RST packets.

A RST whose TTL its claimed sender's host never shows elsewhere in the capture is a sign of
injection (`inj.ttl_host`, RST_SIGNALS §0 rule 3); `HostProfiles.ttl_profile` answers that
for every RST at once.
"""

from __future__ import annotations

import numpy as np

from rstlens.flows import layout as L
from rstlens.flows.columns import distinct_pairs
from rstlens.output.records import is_ipv4

# An IPv4 (address, TTL) pair as one integer: the address (the low 32 bits of the mapped
# form's `lo`) shifted past the TTL's 8 bits
_IPV4_ADDRESS = np.uint64(0xFFFF_FFFF)
_TTL_BITS = np.uint64(8)
_TTL_MASK = np.uint64(0xFF)


def _v6_bytes(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """(n, 16) big-endian address bytes: byte order sorts as the addresses do."""
    return np.stack([hi, lo], axis=1).astype(">u8").view(np.uint8).reshape(-1, 16)


class HostProfiles:
    """TTL / hop-limit values each host shows in its non-RST packets, across all flows.

    Kept as the sorted distinct (address, TTL) pairs, so memory follows the hosts, not the
    traffic: IPv4 ones as one integer each (address << 8 | TTL, which sorts fast), IPv6
    ones as 17 bytes.  Pairs from finished connections are merged a few hundred thousand
    at a time.
    """

    MERGE_ROWS = 1 << 18

    def __init__(self) -> None:
        self._v4 = np.empty(0, np.uint64)
        self._v6 = np.empty(0, "V17")  # 16 address bytes + the TTL
        self._pending4: list[np.ndarray] = []
        self._pending6: list[np.ndarray] = []
        self._pending_rows = 0
        # verified non-RST checksums per host (`flows.checksum`): good, bad, as sorted
        # distinct 16-byte addresses with counts
        self._ck_hosts = np.empty(0, "V16")
        self._ck_counts = np.zeros((0, 2), np.int64)
        self._ck_pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.checksums_good = 0  # the run's verified non-RST segments, all hosts
        self.checksums_bad = 0

    def add(self, F: np.ndarray, K: np.ndarray) -> None:
        """Finished connections (kernel rows and keys)."""
        orig_a = F[:, L.ORIG_IS_A] == 1
        self._add_checksums(F, K, orig_a)
        for d in (0, 1):
            b = L.D + d * L.DSTRIDE
            seen = F[:, b + L.NONRST_PKTS] > 0
            from_a = (orig_a if d == 0 else ~orig_a)[seen]
            hi = np.where(from_a, K[seen, 0], K[seen, 2])
            lo = np.where(from_a, K[seen, 1], K[seen, 3])
            ttl_min = F[seen, b + L.TTL_MIN].astype(np.uint64) & _TTL_MASK
            ttl_max = F[seen, b + L.TTL_MAX].astype(np.uint64) & _TTL_MASK
            # the maximum only where it differs: most sides show one TTL (a flood's and a
            # scan's all do), and each pair kept is sorted again at the merge
            two = ttl_max != ttl_min
            hi = np.concatenate([hi, hi[two]])
            lo = np.concatenate([lo, lo[two]])
            ttl = np.concatenate([ttl_min, ttl_max[two]])
            v4 = is_ipv4(hi, lo)
            v6 = ~v4
            self._pending4.append(((lo[v4] & _IPV4_ADDRESS) << _TTL_BITS) | ttl[v4])
            if v6.any():
                pairs = np.concatenate([_v6_bytes(hi[v6], lo[v6]), ttl[v6, None].astype(np.uint8)], axis=1)
                self._pending6.append(pairs.view("V17").ravel())
            self._pending_rows += ttl.shape[0]
        if self._pending_rows >= self.MERGE_ROWS:
            self._merge()

    def _add_checksums(self, F: np.ndarray, K: np.ndarray, orig_a: np.ndarray) -> None:
        for d in (0, 1):
            b = L.D + d * L.DSTRIDE
            good, bad = F[:, b + L.CSUM_GOOD], F[:, b + L.CSUM_BAD]
            checked = (good + bad) > 0
            if not checked.any():
                continue
            self.checksums_good += int(good.sum())
            self.checksums_bad += int(bad.sum())
            from_a = (orig_a if d == 0 else ~orig_a)[checked]
            hi = np.where(from_a, K[checked, 0], K[checked, 2])
            lo = np.where(from_a, K[checked, 1], K[checked, 3])
            address = np.ascontiguousarray(_v6_bytes(hi, lo)).view("V16").ravel()
            self._ck_pending.append((address, np.stack([good[checked], bad[checked]], axis=1)))
        if sum(len(a) for a, _ in self._ck_pending) >= self.MERGE_ROWS:
            self._merge_checksums()

    def _merge_checksums(self) -> None:
        if not self._ck_pending:
            return
        hosts = np.concatenate([self._ck_hosts, *(a for a, _ in self._ck_pending)])
        counts = np.concatenate([self._ck_counts, *(c for _, c in self._ck_pending)])
        self._ck_pending = []
        self._ck_hosts, inverse = _distinct_addresses(hosts)
        # summed through flat indices: numpy's fast path of `ufunc.at` is for a 1-D operand
        # (a 2-D one took ~25x as long: 48 ms for the 5 M-packet file's 270,000 hosts)
        merged = np.zeros(self._ck_hosts.shape[0] * 2, np.int64)
        for side in (0, 1):
            np.add.at(merged, inverse * 2 + side, counts[:, side])
        self._ck_counts = merged.reshape(-1, 2)

    def checksum_counts(self, hosts: np.ndarray) -> np.ndarray:
        """(n, 2) verified non-RST checksums (good, bad) of each (hi, lo) row of `hosts`,
        over the whole capture."""
        self._merge_checksums()
        out = np.zeros((hosts.shape[0], 2), np.int64)
        if not self._ck_hosts.shape[0] or not hosts.shape[0]:
            return out
        want = np.ascontiguousarray(_v6_bytes(hosts[:, 0], hosts[:, 1])).view("V16").ravel()
        at = np.minimum(np.searchsorted(self._ck_hosts, want), self._ck_hosts.shape[0] - 1)
        found = self._ck_hosts[at] == want
        out[found] = self._ck_counts[at[found]]
        return out

    def _merge(self) -> None:
        if self._pending4:
            self._v4 = _merged_distinct(self._v4, self._pending4)
        if self._pending6:
            self._v6 = _merged_distinct(self._v6, self._pending6)
        self._pending4, self._pending6, self._pending_rows = [], [], 0

    def shows_ttl_between(self, hosts: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """For each (hi, lo) row of `hosts` (n, 2): does the host show a TTL (IPv6: a hop
        limit) in [lo, hi] in non-RST packets?"""
        self._merge()
        n = hosts.shape[0]
        out = np.zeros(n, bool)
        v4 = is_ipv4(hosts[:, 0], hosts[:, 1])
        key = (hosts[v4, 1] & _IPV4_ADDRESS) << _TTL_BITS
        out[v4] = _any_between(self._v4, key | np.uint64(lo), key | np.uint64(hi))
        v6 = ~v4
        if v6.any():
            # (address, hop limit) pairs sort by address, then hop limit: the host's pairs in
            # [lo, hi] lie between (address, lo) and (address, hi)
            address = np.ascontiguousarray(_v6_bytes(hosts[v6, 0], hosts[v6, 1]))
            bounds = [np.ascontiguousarray(np.concatenate(
                [address, np.full((address.shape[0], 1), t, np.uint8)], axis=1)).view("V17").ravel()
                for t in (lo, hi)]  # fmt: skip
            out[v6] = _any_between(self._v6, bounds[0], bounds[1])
        return out

    def ttl_profile(self, hosts: np.ndarray, ttls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each (hi, lo) row of `hosts` (n, 2) and TTL: does the host show any TTL in
        non-RST packets, and was `ttls[i]` among them?"""
        self._merge()
        n = hosts.shape[0]
        known = np.zeros(n, bool)
        seen = np.zeros(n, bool)
        ttl = ttls.astype(np.uint64) & _TTL_MASK
        v4 = is_ipv4(hosts[:, 0], hosts[:, 1])
        key = (hosts[v4, 1] & _IPV4_ADDRESS) << _TTL_BITS
        known[v4] = _any_between(self._v4, key, key | _TTL_MASK)
        pair4 = key | ttl[v4]
        seen[v4] = _any_between(self._v4, pair4, pair4)
        v6 = ~v4
        if v6.any() and self._v6.shape[0]:
            address = np.ascontiguousarray(_v6_bytes(hosts[v6, 0], hosts[v6, 1]))
            known_addresses = np.ascontiguousarray(self._v6.view(np.uint8).reshape(-1, 17)[:, :16])
            a16 = known_addresses.view("V16").ravel()
            want16 = address.view("V16").ravel()
            known[v6] = _any_between(a16, want16, want16)
            pairs = np.concatenate([address, ttl[v6, None].astype(np.uint8)], axis=1)
            pair6 = np.ascontiguousarray(pairs).view("V17").ravel()
            seen[v6] = _any_between(self._v6, pair6, pair6)
        return known, seen


def _distinct_addresses(hosts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(hosts, return_inverse=True)` of 16-byte big-endian addresses ("V16"):
    sorted as their two 64-bit halves, whose order is the bytes' order
    (`flows.columns.distinct_pairs`; numpy sorts void rows a byte comparison at a time,
    ~40 ms for the 5 M-packet file's 270,000)."""
    halves = hosts.view(">u8").reshape(-1, 2).astype(np.uint64)
    one, inverse = distinct_pairs(halves[:, 0], halves[:, 1])
    return hosts[one], inverse


def _merged_distinct(kept: np.ndarray, pending: list[np.ndarray]) -> np.ndarray:
    """The sorted distinct values of `kept` (sorted and distinct already) and `pending`.

    The pending values are sorted alone, then the two sorted runs merged by a stable sort
    (numpy's timsort finds the runs and merges them in linear time): sorting all of them
    again at each merge sorted the hosts of a flood of 1 M sources ~4 times over."""
    values = np.concatenate([kept, np.sort(np.concatenate(pending))])
    values.sort(kind="stable")
    return _distinct(values)


def _distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values of sorted `values`: `np.unique` without numpy 2's `np.ma` check
    that imports numpy.ma (~25 ms of start-up, a tenth of tcpdump's time for a 1 M-packet
    file)."""
    keep = np.empty(values.shape[0], bool)
    keep[:1] = True
    keep[1:] = values[1:] != values[:-1]  # the operator, not np.not_equal: it compares void rows
    return values[keep]


def _any_between(sorted_values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Whether `sorted_values` holds any value in [lo[i], hi[i]], for each i."""
    return np.searchsorted(sorted_values, hi, "right") > np.searchsorted(sorted_values, lo, "left")
