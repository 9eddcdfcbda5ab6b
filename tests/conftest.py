"""Shared fixtures: where the repository, its samples and the ../shared corpora are."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
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


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def netns_skip_reason() -> str | None:
    """Why the real-kernel ground-truth scenarios cannot run here (None when they can)."""
    if not _is_root():
        return "needs root (network namespaces)"
    missing = [t for t in ("ip", "tcpdump", "nft", "ss") if shutil.which(t) is None]
    return f"missing tools: {', '.join(missing)}" if missing else None


@pytest.fixture(scope="session")
def ground_truth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Every real-kernel scenario, run once per session: (output dir, results by name)."""
    why = netns_skip_reason()
    if why:
        pytest.skip(why)
    from tools.scenarios import run_scenarios

    out = tmp_path_factory.mktemp("scenarios")
    results = run_scenarios(out, keep_provenance=True)
    return out, {r.name: r for r in results}


# ---- a veth pair into a network namespace, for live-capture tests ---------------------------
def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Veth:
    def __init__(self) -> None:
        tag = os.getpid() % 100_000
        # RSTLENS_NETNS_PREFIX: whose namespaces these are, when several people share a host
        prefix = os.environ.get("RSTLENS_NETNS_PREFIX", "rl")[:5]
        self.ns = f"{prefix}ns{tag}"
        self.host_if = f"{prefix}h{tag}"
        self.peer_if = f"{prefix}p{tag}"
        octet = os.getpid() % 250 + 2
        self.net = f"10.78.{octet}.0/30"
        self.host = f"10.78.{octet}.1"
        self.peer = f"10.78.{octet}.2"


@pytest.fixture
def veth() -> Iterator[Veth]:
    """A veth pair: the host end (captured) and a namespace end, 10.78.N.0/30."""
    if not _is_root() or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (ip) for a veth pair in a network namespace")
    v = Veth()
    try:
        _ip("netns", "add", v.ns)
        _ip("link", "add", v.host_if, "type", "veth", "peer", "name", v.peer_if, "netns", v.ns)
        _ip("addr", "add", f"{v.host}/30", "dev", v.host_if)
        _ip("-n", v.ns, "addr", "add", f"{v.peer}/30", "dev", v.peer_if)
        _ip("-n", v.ns, "link", "set", "lo", "up")
        _ip("-n", v.ns, "link", "set", v.peer_if, "up")
        _ip("link", "set", v.host_if, "up")
        deadline = time.monotonic() + 5
        while (
            "LOWER_UP"
            not in subprocess.run(
                ["ip", "link", "show", v.host_if], capture_output=True, text=True, timeout=5
            ).stdout
        ):
            assert time.monotonic() < deadline, "veth did not come up"
            time.sleep(0.05)
        yield v
    finally:
        subprocess.run(["ip", "link", "del", v.host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", v.ns], capture_output=True, timeout=10)




def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`fuzz_long`, `soak`, `spark` and `flood_big` tests run only when asked for: ``pytest -m
    fuzz_long``, ``pytest -m soak``, ``pytest -m spark``, ``pytest -m flood_big``."""
    wanted = config.getoption("-m") or ""
    for marker, why in (("fuzz_long", "the long fuzzing run: pytest -m fuzz_long"),
                        ("soak", "the multi-minute live soak: pytest -m soak"),
                        ("spark", "Spark reading the live dataset: pytest -m spark"),
                        ("flood_big", "the 10 M-SYN flood: pytest -m flood_big")):  # fmt: skip
        if marker in wanted:
            continue
        skip = pytest.mark.skip(reason=why)
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)
