"""Record building: address text as `ipaddress` writes it, and the per-host TTL profiles."""

from __future__ import annotations

import hashlib
import ipaddress

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rstlens import kernels
from rstlens.attribution.hosts import HostProfiles, _merged_distinct
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


def test_hop_lookups_per_distinct_sender_and_ttl_equal_those_per_rst() -> None:
    """`attribute._hops_in_host_ttls` looks each distinct IPv4 (sender, TTL) pair up once
    (`DISTINCT_LOOKUPS_FROM` RSTs and more): the same answers as row by row, IPv6 senders
    and odd TTLs among them."""
    from rstlens.attribution.attribute import (
        DISTINCT_LOOKUPS_FROM,
        _hops_in_host_ttls,
        _hops_in_host_ttls_of_rows,
    )

    rng = np.random.default_rng(11)
    hosts = [MAPPED | int(v) for v in rng.integers(0, 2**32, 40)] + [int(v) << 64 | 5 for v in rng.integers(1, 2**60, 10)]
    n = 400
    F = np.zeros((n, L.NF), np.int64)
    K = np.zeros((n, 4), np.uint64)
    for i in range(n):
        a, b = rng.choice(len(hosts), 2, replace=False)
        K[i] = [hosts[a] >> 64, hosts[a] & (2**64 - 1), hosts[b] >> 64, hosts[b] & (2**64 - 1)]
        F[i, L.ORIG_IS_A] = 1
        for d in (0, 1):
            base = L.D + d * L.DSTRIDE
            F[i, base + L.NONRST_PKTS] = 1
            lo_ttl = int(rng.choice([1, 30, 52, 63, 64, 120, 128, 250, 255]))
            F[i, base + L.TTL_MIN], F[i, base + L.TTL_MAX] = lo_ttl, min(255, lo_ttl + int(rng.integers(0, 3)))
    profiles = HostProfiles()
    profiles.add(F, K)
    rsts = 3 * DISTINCT_LOOKUPS_FROM
    picked = rng.integers(0, len(hosts) + 5, rsts)  # and a few hosts never seen
    senders = np.array([[hosts[p] >> 64, hosts[p] & (2**64 - 1)] if p < len(hosts) else [0, MAPPED | int(p)]
                        for p in picked], np.uint64)  # fmt: skip
    ttl = rng.choice([-1, 0, 1, 29, 30, 52, 60, 63, 64, 65, 128, 200, 255, 256], rsts).astype(np.int64)
    grouped = _hops_in_host_ttls(profiles, senders, ttl)
    each = _hops_in_host_ttls_of_rows(profiles, senders, ttl)
    assert grouped[0].tolist() == each[0].tolist() and grouped[1].tolist() == each[1].tolist()
    assert each[0].any() and not each[0].all() and each[1].any() and not each[1].all()  # both answers occur


@settings(deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=40), st.lists(st.binary(min_size=17, max_size=17), max_size=40),
       st.lists(st.integers(0, 40), max_size=3), st.integers(0, 40))  # fmt: skip
def test_merged_distinct_is_np_unique(ints: list[int], rows: list[bytes], cuts: list[int], kept: int) -> None:
    """HostProfiles' merge (IPv4 pairs as integers, IPv6 ones as 17-byte void rows): the
    distinct values kept so far, merged with pending pieces (duplicates within and across
    them), equal `np.unique` of all of them."""
    for values in (np.array(ints, np.uint64), np.array(rows, "V17")):
        before = np.unique(values[:kept])
        rest = values[kept:]
        pieces = np.split(rest, sorted(min(c, rest.shape[0]) for c in cuts))
        got = _merged_distinct(before, [*pieces, values[: kept // 2]])
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


def _community_id_reference(a: int, b: int, port_a: int, port_b: int) -> str:
    """Community ID v1 (seed 0, TCP) by the specification, with hashlib and base64."""
    import base64
    import struct

    if a >> 32 == 0xFFFF and b >> 32 == 0xFFFF:
        addresses = struct.pack("!II", a & 0xFFFF_FFFF, b & 0xFFFF_FFFF)
    else:
        addresses = a.to_bytes(16, "big") + b.to_bytes(16, "big")
    data = struct.pack("!H", 0) + addresses + struct.pack("!BBHH", 6, 0, port_a, port_b)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


@settings(deadline=None)
@given(st.lists(st.tuples(addresses, addresses, st.integers(0, 65535), st.integers(0, 65535)), max_size=40))
def test_community_ids_match_the_specification(rows: list[tuple[int, int, int, int]]) -> None:
    """The kernel's tuple layout, SHA-1 and base64 against hashlib over the same tuple
    (IPv4 as 4 bytes only when both ends are IPv4)."""
    from rstlens.output.records import community_ids

    K = np.array([[a >> 64, a & (2**64 - 1), b >> 64, b & (2**64 - 1), 7] for a, b, _, _ in rows],
                 np.uint64).reshape(-1, 5)  # a key row is wider than the 4 address words
    ports = np.array([(pa_ << L.KEY_PORT_SHIFT) | pb for _, _, pa_, pb in rows], np.int64)
    got = community_ids(K, ports)
    got.validate(full=True)
    assert got.to_pylist() == [_community_id_reference(*r) for r in rows]


def _splitmix(x: int) -> int:
    m = 2**64 - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def _uid_reference(serial: int, ts: int, h: int) -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    m = 2**64 - 1
    a = _splitmix((serial & m) ^ _splitmix(ts & m))
    b = _splitmix(a ^ (h & m))
    text = "C"
    for word, digits in ((a, 8), (b, 9)):
        for _ in range(digits):
            text += alphabet[word % 62]
            word //= 62
    return text


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**40), st.integers(-(2**62), 2**62),
                          st.integers(-(2**63), 2**63 - 1)), max_size=40))  # fmt: skip
def test_uids_are_the_documented_hash(rows: list[tuple[int, int, int]]) -> None:
    """uid = "C" + 8 base62 digits of a = splitmix(serial ^ splitmix(ts)) and 9 of
    b = splitmix(a ^ hash), low digit first, in Python integers; the kernel reads strided
    kernel-row columns."""
    from rstlens.output.records import uids

    F = np.array(rows, np.int64).reshape(-1, 3)
    got = uids(F[:, 0], F[:, 1], F[:, 2])
    got.validate(full=True)
    assert got.to_pylist() == [_uid_reference(*r) for r in rows]


@settings(deadline=None)
@given(st.lists(addresses, max_size=60), st.booleans())
def test_distinct_addresses_are_np_unique(values: list[int], v4_only: bool) -> None:
    """HostProfiles' checksum merge: distinct 16-byte addresses and each one's index, what
    `np.unique(..., return_inverse=True)` gives over the void rows."""
    from rstlens.attribution.hosts import _distinct_addresses, _v6_bytes

    if v4_only:
        values = [MAPPED | (a & 0xFFFF_FFFF) for a in values]
    hi = np.array([a >> 64 for a in values], np.uint64)
    lo = np.array([a & (2**64 - 1) for a in values], np.uint64)
    hosts = np.ascontiguousarray(_v6_bytes(hi, lo)).view("V16").ravel()
    distinct, inverse = _distinct_addresses(hosts)
    want, want_inverse = np.unique(hosts, return_inverse=True)
    assert distinct.dtype == hosts.dtype and distinct.tobytes() == want.tobytes()
    assert inverse.tolist() == want_inverse.reshape(-1).tolist()


@settings(deadline=None)
@given(st.lists(st.lists(st.tuples(addresses, st.integers(0, 40), st.integers(0, 40)), max_size=30), max_size=4))
def test_checksum_counts_merge_per_host(batches: list[list[tuple[int, int, int]]]) -> None:
    """HostProfiles' checksum counts, merged from pending batches (`_merge_checksums`, in two
    merges): per distinct address the sums of its good and bad counts, as a dict sums them."""
    from rstlens.attribution.hosts import HostProfiles, _v6_bytes

    profiles = HostProfiles()
    want: dict[int, list[int]] = {}
    for k, batch in enumerate(batches):
        hi = np.array([a >> 64 for a, _, _ in batch], np.uint64)
        lo = np.array([a & (2**64 - 1) for a, _, _ in batch], np.uint64)
        address = np.ascontiguousarray(_v6_bytes(hi, lo)).view("V16").ravel()
        profiles._ck_pending.append((address, np.array([[g, b] for _, g, b in batch], np.int64).reshape(-1, 2)))
        for a, g, b in batch:
            want.setdefault(a, [0, 0])
            want[a][0] += g
            want[a][1] += b
        if k == 1:
            profiles._merge_checksums()
    profiles._merge_checksums()
    got = {int.from_bytes(h.tobytes(), "big"): c for h, c in zip(profiles._ck_hosts, profiles._ck_counts.tolist(), strict=True)}
    assert got == want
