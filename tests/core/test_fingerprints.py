"""`rstlens.attribution.fingerprints.one_counter_senders`: one stack answering for several
addresses (issue 17 item 8), on hand-made RST logs whose answer follows from the definition,
and on the slirp4netns sample whose labels come from the namespaces' captures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import rstlens
from rstlens.attribution.fingerprints import STRETCH_MAX_IDS, STRETCH_MAX_US, one_counter_senders
from rstlens.flows import layout as L
from rstlens.flows.columns import RstColumns

SAMPLE = Path(__file__).parents[1] / "data" / "scenarios"
HOST, FAR, OTHER = 0x0A000202, 0x0A4D0102, 0x0A4D0103


def _log(*rsts: tuple[int, int, int, int, int, int]) -> tuple[RstColumns, np.ndarray]:
    """RSTs as (address, ts µs, IP ID, TTL, the sender's last IP ID (0: none), its time)."""
    R = np.zeros((len(rsts), L.NR), np.int64)
    senders = np.zeros((len(rsts), 2), np.int64)
    for i, (addr, ts, ipid, ttl, last_id, last_ts) in enumerate(rsts):
        R[i, [L.R_IPV, L.R_TS, L.R_IPID, L.R_TTL]] = 4, ts, ipid, ttl
        R[i, [L.R_SND_LAST_IPID, L.R_SND_LAST_TS]] = (last_id, last_ts) if last_id else (-1, 0)
        R[i, [L.R_SND_TTL_MIN, L.R_SND_TTL_MAX]] = (ttl, ttl) if last_id else (256, 0)
        senders[i] = 0xFFFF, addr
    return RstColumns.of(R), senders


def test_a_refusal_inside_another_addresses_stretch_shows_one_stack() -> None:
    # FAR's connection: its last segment IP ID 7, its RST 10; HOST's refusal, ID 8, between
    R, s = _log((HOST, 1_000, 8, 64, 0, 0), (FAR, 1_500, 10, 64, 7, 500),
                (HOST, 90_000, 14, 64, 13, 89_000))  # HOST's later abort: same address, same TTL
    assert one_counter_senders(R, s).tolist() == [True, True, True]


@pytest.mark.parametrize("change, why", [
    ({0: (FAR, 1_000, 8, 64, 0, 0)}, "one address: its own counter"),
    ({0: (HOST, 1_000, 8, 128, 0, 0)}, "another TTL: another stack"),
    ({0: (HOST, 1_000, 11, 64, 0, 0)}, "the ID beyond the stretch"),
    ({0: (HOST, 1_000, 7, 64, 0, 0)}, "the ID at the stretch's end, not inside"),
    ({0: (HOST, 2_000, 8, 64, 0, 0)}, "after the RST in time"),
    ({1: (FAR, 1_500, 8, 64, 7, 500)}, "consecutive IDs: no room inside"),
    ({1: (FAR, 1_500, 7 + STRETCH_MAX_IDS + 1, 64, 7, 500)}, "a stretch too long"),
    ({1: (FAR, 1_500 + STRETCH_MAX_US, 10, 64, 7, 500)}, "a stretch too slow"),
    ({0: (HOST, 1_000, 0, 64, 0, 0)}, "IP ID 0: no sample"),
])  # fmt: skip
def test_no_shared_counter(change: dict[int, tuple[int, ...]], why: str) -> None:
    rows = [(HOST, 1_000, 8, 64, 0, 0), (FAR, 1_500, 10, 64, 7, 500)]
    for i, row in change.items():
        rows[i] = row  # type: ignore[assignment]
    R, s = _log(*rows)  # type: ignore[arg-type]
    assert not one_counter_senders(R, s).any(), why


def test_the_counter_wraps_and_a_last_segment_is_a_sample_too() -> None:
    # FAR's stretch 65,534 -> 2 holds HOST's last segment (ID 0xFFFF): the counter wrapped
    R, s = _log((FAR, 1_500, 2, 64, 65_534, 500), (HOST, 9_000, 3, 64, 0xFFFF, 900),
                (OTHER, 1_200, 1, 64, 0, 0))  # fmt: skip
    # OTHER's ID 1 lies inside too: three addresses, one stack
    assert one_counter_senders(R, s).tolist() == [True, True, True]


def test_copies_and_corrupt_segments_take_no_part() -> None:
    R, s = _log((HOST, 1_000, 8, 64, 0, 0), (FAR, 1_500, 10, 64, 7, 500))
    assert not one_counter_senders(R, s, ignore=np.array([True, False])).any()


def _reference(rows: list[tuple[int, int, int, int, int, int]]) -> list[bool]:
    """The definition, pair by pair."""
    samples = [(a, ts, ipid, ttl) for a, ts, ipid, ttl, _, _ in rows if ipid > 0]
    samples += [(a, lts, lid, ttl) for a, _, _, ttl, lid, lts in rows if lid > 0]
    shown = set()
    for a, ts, ipid, ttl, lid, lts in rows:
        span = (ipid - lid) & 0xFFFF
        if not (ipid > 0 and lid > 0 and 2 <= span <= STRETCH_MAX_IDS
                and 0 <= ts - lts <= STRETCH_MAX_US):
            continue
        for b, t, i, tl in samples:
            if b != a and tl == ttl and lts <= t <= ts and 1 <= (i - lid) & 0xFFFF < span:
                shown |= {(a, ttl), (b, ttl)}
    return [(a, ttl) in shown for a, _, _, ttl, _, _ in rows]


def test_many_rsts_against_the_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random logs (IDs crowded so that stretches do hold others' samples), also with the
    candidate pairs expanded a few at a time."""
    import rstlens.attribution.fingerprints as fp

    rng = np.random.default_rng(17)
    rows = []
    for i in range(300):
        ts = int(rng.integers(0, 50_000))
        ipid = 1 + int(rng.integers(0, 600))
        last = max(ipid - int(rng.integers(0, 12)), 0) if i % 4 else 0
        rows.append((OTHER + i % 12, ts, ipid, int(rng.choice([63, 64, 128])), last,
                     ts - int(rng.integers(0, 3_000))))
    R, s = _log(*rows)
    whole = one_counter_senders(R, s)
    assert whole.tolist() == _reference(rows) and 0 < whole.sum() < len(rows)
    monkeypatch.setattr(fp, "_PAIRS_PER_STEP", 3)
    assert np.array_equal(one_counter_senders(R, s), whole)


def test_slirp4netns_answering_for_two_hosts_is_the_sender(tmp_path: Path) -> None:
    """The lab's slirp4netns scenario (labels from the namespaces' captures): the guest is
    refused by its host (10.0.2.2) and by a second real host, and each host's application
    aborts a connection; slirp's stack sent all four RSTs, for both addresses."""
    import pyarrow.parquet as pq

    with (SAMPLE / "slirp_nat.labels.csv").open() as f:
        labels = list(csv.DictReader(f))
    assert {r["who"] for r in labels} == {"middlebox"} and len({r["src_h"] for r in labels}) == 2
    rstlens.analyze(SAMPLE / "slirp_nat.pcap", outdir=tmp_path)
    resets = pq.read_table(tmp_path / "resets.parquet").to_pylist()
    assert sorted(r["frame"] for r in resets) == sorted(int(r["frame"]) for r in labels)
    for r in resets:
        assert r["sender"] == "middlebox" and "who.one_counter" in r["evidence"], r
