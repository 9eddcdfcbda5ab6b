"""Issue 17 item 8: who speaks for an address (`rstlens.attribution.speakers`), on real
captures whose truth comes from outside rstlens: the lab's HAProxy scenario (labels from the
namespaces' captures and counters, tests/data/scenarios) and the reviewed field reading of
nfstream's alexa-app capture (tests/core/data/field_rst_truth.csv)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import rstlens
from rstlens.attribution.speakers import (
    DATA_SPEAKER,
    FRONT_END,
    NO_SPEAKERS,
    raw_hops,
    speaker_column,
)

DATA = Path(__file__).parent / "data"
SAMPLE = Path(__file__).parents[1] / "data" / "scenarios"
FIELD = Path(__file__).parents[3] / "shared" / "corpus" / "field"
ALEXA = "nfstream+nfstream/tests/pcaps/alexa-app.pcapng"


def test_raw_hops_are_uncapped() -> None:
    # 212 is 43 hops below 255: too far for `hops.hop_distance`, still a speaker's distance
    assert raw_hops(np.array([231, 212, 64, 39, 1])).tolist() == [24, 43, 0, 25, 31]


def test_speaker_codes() -> None:
    ttl, hs, lo, hi, reactive = (np.array(v) for v in zip(
        (231, 231, 212, 212, False),  # RST at the handshake's TTL, data elsewhere: front end
        (212, 231, 212, 212, False),  # RST at the data TTL: the data speaker's
        (231, 231, 212, 212, True),  # the reactive form: the kernel's default TTL, no claim
        (231, 231, 230, 230, False),  # one hop apart: a path change, one speaker
        (231, 231, 212, 229, False),  # the data TTLs spread over 17 hops: no single speaker
        (231, 0, 212, 212, False),  # no handshake seen
        (231, 231, 256, 0, False),  # no data seen
        strict=True))  # fmt: skip
    got = speaker_column(ttl, hs, lo, hi, reactive).tolist()
    assert got == [FRONT_END, DATA_SPEAKER] + [NO_SPEAKERS] * 5


def _labels(name: str) -> list[dict[str, str]]:
    with open(SAMPLE / f"{name}.labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_haproxy_relays_on_the_proxy_host() -> None:
    """HAProxy's RSTs to its client after its backend refused or reset are relays
    (`who.relay`: closed_port, abort), its policy reject the relay host's own RST; the
    backend's own RSTs (labelled who=endpoint) carry no `who.*` code."""
    labels = {int(r["frame"]): r for r in _labels("haproxy_resets")}
    resets = rstlens.analyze([str(SAMPLE / "haproxy_resets.pcap")]).resets
    codes = {int(f): [c for c in ev if c.startswith("who.")]
             for f, ev in zip(resets.frame, resets.evidence, strict=True)}  # fmt: skip
    assert set(codes) == set(labels)
    want = {"upstream_refused": ["who.relay"], "upstream_abort": ["who.relay"],
            "proxy_reject": ["who.relay_host"]}  # fmt: skip
    for frame, row in labels.items():
        expected = want[row["subcause"]] if row["who"] == "middlebox" else []
        assert codes[frame] == expected, (frame, row["note"], codes[frame])
    # and the relays' causes are their upstream's (the labels'), not their own wire form's
    got = dict(zip(resets.frame.astype(int), resets.cause.astype(str), strict=True))
    assert {f: got[f] for f in labels} == {f: r["cause"] for f, r in labels.items()}


def test_front_end_idle_resets_in_the_field() -> None:
    """In alexa-app, `who.front_end` marks exactly the RSTs the reviewer judged a front
    end's (middlebox), and none of the 24 others (endpoints' RSTs and 1537, undecidable)."""
    path = FIELD / ALEXA
    if not path.exists():
        pytest.skip(f"{path} is not here")
    with open(DATA / "field_rst_truth.csv", newline="") as f:
        truth = {int(r["frame"]): r for r in csv.DictReader(f) if r["source"] == ALEXA}
    middlebox = {f for f, r in truth.items() if r["sender"] == "middlebox"}
    assert middlebox and len(truth) > len(middlebox)  # both kinds are there to be told apart
    resets = rstlens.analyze([str(path)]).resets
    marked = {int(f) for f, ev in zip(resets.frame, resets.evidence, strict=True)
              if "who.front_end" in list(ev)}  # fmt: skip
    assert marked == middlebox
    by_frame = resets.set_index("frame")
    for f in middlebox:
        assert (by_frame.loc[f].sender, by_frame.loc[f].cause) == ("middlebox", "middlebox")
