"""rstlens against the reviewed ground truth of every RST in ../shared/corpus/field.

The truth (tests/core/data/field_rst_truth.csv) was labelled by reading the packets
(tools/field_review.py ladders; method and clusters in tests/core/data/field_review.md),
never from rstlens' verdicts.  Every difference between rstlens' cause and the truth is
listed in field_known_misses.csv, exactly: a new miss fails, and so does a listed miss that
now agrees (regenerate the list after a rule change, and review the diff):

    python -m tools.field_review --write-known-misses
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

import rstlens
from tools.field_review import FIELD, field_files

DATA = Path(__file__).parent / "data"
CAUSES = ("closed_port", "half_open", "abort", "middlebox", "unknown")
SENDERS = ("endpoint", "middlebox", "unknown")
CONFIDENCE = ("sure", "likely", "undecidable")
SUBCAUSES = ("", "data_after_close", "stale_reuse", "unexpected_synack", "after_reset",
             "lost_state", "after_close", "reject", "injected", "unsolicited", "evasion",
             "no_match")

Key = tuple[str, int]


def _rows(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def truth() -> dict[Key, dict[str, str]]:
    return {(r["source"], int(r["frame"])): r for r in _rows("field_rst_truth.csv")}


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[Key, tuple[str, str]]:
    """rstlens' (cause, subcause) per RST: one analyze call per capture, default options."""
    if not FIELD.is_dir():
        pytest.skip("../shared/corpus/field is not beside the repository")
    out: dict[Key, tuple[str, str]] = {}
    for n, f in enumerate(field_files()):
        rel = str(f.relative_to(FIELD))
        res = rstlens.analyze(f, outdir=tmp_path_factory.mktemp(f"field{n}")).resets
        for frame, cause, sub in zip(res["frame"], res["cause"].astype(str),
                                     res["subcause"].astype(object), strict=True):
            key = (rel, int(frame))
            assert key not in out, f"two resets rows for {key}"
            out[key] = (cause, "" if sub is None or sub != sub else str(sub))
    return out


def test_truth_file_is_well_formed(truth: dict[Key, dict[str, str]]) -> None:
    assert len(truth) == 1055  # the corpus README's tshark count
    if FIELD.is_dir():
        assert {s for s, _ in truth} <= {str(f.relative_to(FIELD)) for f in field_files()}
    for (src, _frame), r in truth.items():
        assert r["sender"] in SENDERS and r["cause"] in CAUSES, r
        assert r["subcause"] in SUBCAUSES and r["confidence_note"] in CONFIDENCE, r
        assert r["reason"].strip(), r
        if r["dup_of"]:
            orig = truth[(src, int(r["dup_of"]))]  # the original is a truth row too
            assert int(r["dup_of"]) < int(r["frame"]) and not orig["dup_of"]
            assert (orig["sender"], orig["cause"]) == (r["sender"], r["cause"])
        if r["confidence_note"] == "undecidable":
            assert r["cause"] == "unknown", r


def test_every_rst_has_a_verdict_and_a_truth(truth: dict[Key, dict[str, str]],
                                             verdicts: dict[Key, tuple[str, str]]) -> None:
    assert sorted(set(truth) - set(verdicts)) == [], "truth rows rstlens has no resets row for"
    assert sorted(set(verdicts) - set(truth)) == [], "resets rows with no reviewed truth"


def test_verdicts_agree_except_the_known_misses(truth: dict[Key, dict[str, str]],
                                                verdicts: dict[Key, tuple[str, str]]) -> None:
    table = Counter((truth[k]["cause"], verdicts[k][0]) for k in truth if k in verdicts)
    width = max(map(len, CAUSES)) + 2
    print("\nfield RSTs: truth (rows) x rstlens (columns)")
    print("".ljust(width) + "".join(c.rjust(width) for c in CAUSES))
    for t in CAUSES:
        print(t.ljust(width) + "".join(str(table[t, v]).rjust(width) for v in CAUSES))
    for v in CAUSES:  # precision of each rstlens cause against the truth
        said = sum(table[t, v] for t in CAUSES)
        if said:
            print(f"precision {v}: {table[v, v]}/{said}")

    listed = {(r["source"], int(r["frame"])): r for r in _rows("field_known_misses.csv")}
    misses = {k for k in truth if k in verdicts and verdicts[k][0] != truth[k]["cause"]}
    assert sorted(misses - set(listed)) == [], "new disagreements with the reviewed truth"
    assert sorted(set(listed) - misses) == [], "listed misses that now agree: regenerate the list"
    for k, r in listed.items():  # the list describes what rstlens says now
        assert (r["rstlens_cause"], r["rstlens_subcause"]) == verdicts[k], k
        assert r["truth_cause"] == truth[k]["cause"], k
