"""Shared fixtures: where the repository, its samples and the ../shared corpora are."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

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


def netns_skip_reason() -> str | None:
    """Why the real-kernel ground-truth scenarios cannot run here (None when they can)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (network namespaces)"
    missing = [t for t in ("ip", "tcpdump", "nft", "ss") if shutil.which(t) is None]
    return f"missing tools: {', '.join(missing)}" if missing else None


@pytest.fixture(scope="session")
def ground_truth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Every real-kernel scenario, run once per session: (output dir, results by name)."""
    why = netns_skip_reason()
    if why:
        pytest.skip(why)
    from rstlens.dev.scenarios import run_scenarios

    out = tmp_path_factory.mktemp("scenarios")
    results = run_scenarios(out, keep_provenance=True)
    return out, {r.name: r for r in results}
