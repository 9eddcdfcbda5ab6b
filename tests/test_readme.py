"""The README documents the public contracts: keep it in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

from rstlens.attribution.evidence import EVIDENCE
from rstlens.output.schema import FLOWS_SCHEMA, RESETS_SCHEMA

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_evidence_code_is_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z]+\.[a-z_0-9]+)` \|", README, re.M))
    assert documented == set(EVIDENCE)


def test_every_output_column_is_documented() -> None:
    cells = " ".join(re.findall(r"^\| ([^|]+) \|", README, re.M))
    for field in [*FLOWS_SCHEMA, *RESETS_SCHEMA]:
        assert f"`{field.name}`" in cells, field.name


def test_two_newcomer_commands() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    # one command installs, analyses the samples and writes their report; the other tests
    assert quick_start.splitlines() == [
        "python3 -m venv .venv && .venv/bin/pip install -e '.[report]' && .venv/bin/rstlens "
        "analyze sample_pcaps/*.pcap -o out && .venv/bin/rstlens report out -o out/report.html"
    ]
    assert "\nscripts/test\n" in README
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "scripts/test" in ci
