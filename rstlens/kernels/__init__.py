"""The compiled kernels, one import for every caller.

The kernels are written for numba, beside the code that uses them:

- `parsers/_pcap_kernel.py`: `walk_pcap` (classic-pcap record walk of the stream reader),
  `libpcap_meta` (libpcap's batch metadata to record columns)
- `parsers/_decode_kernel.py`: `decode` (link layer -> IPv4/IPv6 -> TCP columns)
- `rstlens/flows/hashtable.py`: `rebuild` (and the hash-table helpers the core inlines)
- `rstlens/flows/core.py`: `process`, `sweep`, `emit_all`, `emit_rows`, from the per-packet
  parts in `flows/`: `states` (Zeek's endpoint state machine, conn_state), `endpoint`,
  `history`, `rstlog`, `lifetime`, `seqspace`
- `rstlens/output/records_kernel.py`: the record columns' text in one pass each: `uid_chars`,
  `community_chars` (`sha1_rows` for tests), `address_strings`, `nul_trimmed` (history),
  `gather_strings` (string columns taken by index)
- `rstlens/surges_kernel.py`: `track_attempts` (failed attempts counted into the tracked
  keys of `surges`)

Installing the package also compiles them ahead of time into the extension module
`rstlens.kernels._compiled` (`kernels/aot.py`, run by `setup.py`), so that a run imports neither numba
nor LLVM: those cost about 0.65 s per run, longer than analysing a small capture.  The
extension carries a hash of the sources it was built from.  When it is missing (no C
compiler at install time) or stale (an edited checkout), numba compiles the same kernels
on first use instead; `RSTLENS_JIT=1` forces that path.  `backend()` says which is in use.
"""

from __future__ import annotations

import importlib
import os
import zlib
from pathlib import Path
from typing import Any

# kernel name -> (module, function) of its numba source
SOURCES: dict[str, tuple[str, str]] = {
    "walk_pcap": ("rstlens.parsers._pcap_kernel", "walk_pcap"),
    "libpcap_meta": ("rstlens.parsers._pcap_kernel", "libpcap_meta"),
    "decode": ("rstlens.parsers._decode_kernel", "decode_kernel"),
    "rebuild": ("rstlens.flows.hashtable", "rebuild"),
    "process": ("rstlens.flows.core", "process"),
    "sweep": ("rstlens.flows.core", "sweep"),
    "emit_all": ("rstlens.flows.core", "emit_all"),
    "emit_rows": ("rstlens.flows.core", "emit_rows"),
    "sha1_rows": ("rstlens.output.records_kernel", "sha1_rows"),
    "uid_chars": ("rstlens.output.records_kernel", "uid_chars"),
    "community_chars": ("rstlens.output.records_kernel", "community_chars"),
    "address_strings": ("rstlens.output.records_kernel", "address_strings"),
    "nul_trimmed": ("rstlens.output.records_kernel", "nul_trimmed"),
    "gather_strings": ("rstlens.output.records_kernel", "gather_strings"),
    "track_attempts": ("rstlens.surges_kernel", "track_attempts"),
}

# Every file whose code or constants end up compiled into a kernel.
HASHED_FILES = (
    ("rstlens.parsers", "_batch.py"),
    ("rstlens.parsers", "_decode.py"),
    ("rstlens.parsers", "_decode_kernel.py"),
    ("rstlens.parsers", "_linktypes.py"),
    ("rstlens.parsers", "_wire.py"),
    ("rstlens.parsers", "_pcap_kernel.py"),
    ("rstlens.parsers", "_pcapfile.py"),
    ("rstlens.flows", "layout.py"),
    ("rstlens.kernels", "prefetch.py"),
    ("rstlens.flows", "hashtable.py"),
    ("rstlens.flows", "seqspace.py"),
    ("rstlens.flows", "history.py"),
    ("rstlens.flows", "endpoint.py"),
    ("rstlens.flows", "states.py"),
    ("rstlens.flows", "lifetime.py"),
    ("rstlens.flows", "rstlog.py"),
    ("rstlens.flows", "checksum.py"),
    ("rstlens.flows", "core.py"),
    ("rstlens.output", "records_kernel.py"),
    ("rstlens", "surges_kernel.py"),
    # the build itself: signatures and flags (release_gil) end up in the extension, so an
    # extension built before a change there (one holding the GIL) is not taken as current
    ("rstlens.kernels", "aot.py"),
)

# The hashed modules that are pure numba kernels (untyped numba functions only: for type
# checkers to skip).  The other hashed files hold the constants, dtypes and column orders
# the kernels compile in, and are ordinary typed Python.
KERNEL_MODULES = (
    "rstlens.parsers._pcap_kernel",
    "rstlens.parsers._decode_kernel",
    "rstlens.kernels.prefetch",
    "rstlens.flows.hashtable",
    "rstlens.flows.seqspace",
    "rstlens.flows.history",
    "rstlens.flows.endpoint",
    "rstlens.flows.states",
    "rstlens.flows.lifetime",
    "rstlens.flows.rstlog",
    "rstlens.flows.checksum",
    "rstlens.flows.core",
    "rstlens.output.records_kernel",
    "rstlens.surges_kernel",
)

AOT_MODULE = "rstlens.kernels._compiled"
FORCE_JIT_ENV = "RSTLENS_JIT"

_loaded: dict[str, Any] = {}
_backend: list[str] = []


def source_hash() -> int:
    """A 63-bit checksum of the kernel sources (what the extension was built from).

    It tells an edited checkout from the build, nothing more: CRC-32 and Adler-32 from zlib
    (loaded anyway, for gzip input) rather than hashlib, whose OpenSSL took ~4 ms of every
    run's start-up."""
    crc, adler = 0, 1
    for package, name in HASHED_FILES:
        folder = Path(importlib.import_module(package).__file__ or "").parent
        data = name.encode() + b"\0" + (folder / name).read_bytes()
        crc, adler = zlib.crc32(data, crc), zlib.adler32(data, adler)
    return ((crc << 32) | adler) & 0x7FFF_FFFF_FFFF_FFFF


def _load() -> None:
    if _loaded:
        return
    why = _aot_unusable()
    if why is None:
        aot = importlib.import_module(AOT_MODULE)
        for name in SOURCES:
            _loaded[name] = getattr(aot, name)
        _backend.append("aot")
        return
    for name, (module, function) in SOURCES.items():
        _loaded[name] = getattr(importlib.import_module(module), function)
    _backend.append(f"jit ({why})")


def _aot_unusable() -> str | None:
    """Why the ahead-of-time extension cannot be used, or None when it can."""
    if os.environ.get(FORCE_JIT_ENV, "") not in ("", "0"):
        return f"{FORCE_JIT_ENV} is set"
    try:
        aot = importlib.import_module(AOT_MODULE)
    except ImportError:
        return "extension not built"
    except Exception as exc:  # e.g. built against another numpy ABI
        return f"extension unusable: {exc}"
    if int(aot.source_hash()) != source_hash():
        return "extension built from other sources"
    return None


def backend() -> str:
    """"aot", or "jit (reason)" when numba compiles the kernels at run time."""
    _load()
    return _backend[0]


def __getattr__(name: str) -> Any:
    if name not in SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _load()
    globals().update(_loaded)  # later lookups skip this function
    return _loaded[name]
