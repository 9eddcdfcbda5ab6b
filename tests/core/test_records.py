"""Record building: address text as `ipaddress` writes it, and the per-host TTL profiles."""

from __future__ import annotations

import hashlib
import ipaddress

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rstlens import kernels
from rstlens.attribution.hosts import HostProfiles, _sorted_distinct
from rstlens.flows import layout as L
from rstlens.output.records import address_text

MAPPED = 0xFFFF_0000_0000

# IPv4 (stored mapped), IPv6, and the IPv6 addresses next to the mapped range
addresses = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v4: MAPPED | v4),
    st.integers(0, 2**128 - 1),
    st.sampled_from([0, 1, MAPPED - 1, MAPPED | 2**32, 2**64 | MAPPED | 1, 2**128 - 1]),
)


def _expected(a: int) -> str:
    if a >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(a & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address(a))


@settings(deadline=None)
@given(st.lists(addresses, max_size=40))
def test_address_text_matches_ipaddress(values: list[int]) -> None:
    hi = np.array([a >> 64 for a in values], np.uint64)
    lo = np.array([a & (2**64 - 1) for a in values], np.uint64)
    cache: dict[tuple[int, int], str] = {}
    for _ in range(2):  # the second time from the cache
        got = address_text(hi, lo, cache)
        got.validate(full=True)
        assert got.to_pylist() == [_expected(a) for a in values]


@settings(deadline=None, max_examples=60)
@given(st.lists(st.tuples(addresses, addresses, st.integers(1, 255), st.integers(1, 255),
                          st.booleans(), st.booleans()), max_size=30),
       st.lists(addresses, max_size=10))  # fmt: skip
def test_host_profiles_collect_each_hosts_ttls(rows: list, others: list[int]) -> None:
    """Each host's TTL set: min and max of every direction it sent non-RST packets in;
    asked per (host, TTL): does the host have a profile, and is the TTL in it?"""
    n = len(rows)
    F = np.zeros((n, L.NF), np.int64)
    K = np.zeros((n, 4), np.uint64)
    expected: dict[int, set[int]] = {}
    for i, (a, b, ttl_lo, ttl_hi, orig_is_a, b_silent) in enumerate(rows):
        K[i] = [a >> 64, a & (2**64 - 1), b >> 64, b & (2**64 - 1)]
        F[i, L.ORIG_IS_A] = orig_is_a
        for d, sender in ((0, a if orig_is_a else b), (1, b if orig_is_a else a)):
            base = L.D + d * L.DSTRIDE
            if sender == b and b_silent:
                continue  # no non-RST packets from it: no TTLs
            F[i, base + L.NONRST_PKTS] = 3
            F[i, base + L.TTL_MIN], F[i, base + L.TTL_MAX] = min(ttl_lo, ttl_hi), max(ttl_lo, ttl_hi)
            expected.setdefault(sender, set()).update({ttl_lo, ttl_hi})
    profiles = HostProfiles()
    half = n // 2  # two batches of finished connections, merged
    profiles.add(F[:half], K[:half])
    profiles.add(F[half:], K[half:])
    hosts = [a for r in rows for a in r[:2]] + others
    queries = [(h, ttl) for h in hosts for ttl in sorted({r[2] for r in rows} | {r[3] for r in rows} | {1})]
    wanted = np.array([[h >> 64, h & (2**64 - 1)] for h, _ in queries], np.uint64).reshape(-1, 2)
    known, seen = profiles.ttl_profile(wanted, np.array([t for _, t in queries], np.int64))
    assert known.tolist() == [h in expected for h, _ in queries]
    assert seen.tolist() == [t in expected.get(h, ()) for h, t in queries]
    # a TTL range per host, IPv4 and IPv6 alike (an IPv6 host showing only hop limit 1 shows
    # none in [34, 64]: the ttl_socket_1_v6 scenario's server)
    hosts_arr = np.array([[h >> 64, h & (2**64 - 1)] for h in hosts], np.uint64).reshape(-1, 2)
    for lo, hi in ((1, 1), (2, 32), (34, 64), (98, 128), (225, 255), (1, 255)):
        got = profiles.shows_ttl_between(hosts_arr, lo, hi)
        assert got.tolist() == [any(lo <= t <= hi for t in expected.get(h, ())) for h in hosts]


@settings(deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=40), st.lists(st.binary(min_size=17, max_size=17), max_size=40))
def test_sorted_distinct_is_np_unique(ints: list[int], rows: list[bytes]) -> None:
    """HostProfiles' merge: IPv4 pairs as integers, IPv6 ones as 17-byte void rows."""
    for values in (np.array(ints, np.uint64), np.array(rows, "V17")):
        got = _sorted_distinct(values)
        assert got.dtype == values.dtype
        assert got.tobytes() == np.unique(values).tobytes()


def test_sha1_kernel_matches_hashlib() -> None:
    """The Community ID hash: every length one SHA-1 block holds, random bytes."""
    rng = np.random.default_rng(7)
    for width in range(56):
        msgs = rng.integers(0, 256, (40, width), dtype=np.uint8)
        out = np.zeros((40, 20), np.uint8)
        kernels.sha1_rows(msgs, out, np.empty(80, np.int64))
        assert [bytes(r) for r in out] == [hashlib.sha1(bytes(m)).digest() for m in msgs]
