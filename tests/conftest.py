"""Shared fixtures: where the repository, its samples and the ../shared corpora are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
ZEEK_CORPUS = SHARED / "corpus" / "zeek"
ROBUST_CORPUS = SHARED / "corpus" / "robust"
SAMPLE_PCAPS = REPO_ROOT / "sample_pcaps"

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".gz", ".pcap.gz", ".pcapng.gz")


def corpus_files(root: Path) -> list[Path]:
    """Every capture file below `root`, sorted (empty when the corpus is absent)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(CAPTURE_SUFFIXES))


@pytest.fixture(scope="session")
def zeek_corpus() -> Path:
    if not ZEEK_CORPUS.is_dir():
        pytest.skip("../shared/corpus/zeek is not beside the repository")
    return ZEEK_CORPUS


@pytest.fixture(scope="session")
def robust_corpus() -> Path:
    if not ROBUST_CORPUS.is_dir():
        pytest.skip("../shared/corpus/robust is not beside the repository")
    return ROBUST_CORPUS
