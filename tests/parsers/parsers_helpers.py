"""Helpers for the parser tests: corpus paths and reading a capture to one batch (capture
builders are in tests/builders.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from rstlens.parsers import CaptureReader, PacketBatch

REPO = Path(__file__).resolve().parents[2]
RSTLENS = REPO / ".venv" / "bin" / "rstlens"
CORPUS = REPO.parent / "shared" / "corpus"
ZEEK = CORPUS / "zeek" / "traces"
ROBUST = CORPUS / "robust"
needs_corpus = pytest.mark.skipif(
    not ROBUST.is_dir() or not ZEEK.is_dir(), reason="../shared/corpus absent"
)


def robust(name: str) -> Path:
    """A robust-corpus file by the end of its path (unique)."""
    hits = [p for p in ROBUST.rglob("*") if str(p).endswith(name)]
    assert len(hits) == 1, (name, hits)
    return hits[0]


def read_all(paths: Sequence[str | Path], **kw) -> tuple[PacketBatch, CaptureReader]:
    """Every decoded TCP row of `paths` as one batch, and the reader (for inputs/stats)."""
    reader = CaptureReader([str(p) for p in paths], **kw)
    return PacketBatch.concat(list(reader)), reader
