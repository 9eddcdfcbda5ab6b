"""The ahead-of-time build never links a stale numba cache (rstlens/kernels/aot.py).

numba's on-disk cache of a function is keyed by its source file's time stamp and its own
bytecode, not by the constants it compiles in from other modules.  The decode kernel's
out-of-line tunnel walk (`_tunnelled`, not inlined) is compiled through its dispatcher, so a
build over a checkout whose `__pycache__` holds an earlier build's entry — made before an
edit to `parsers/_wire.py` — would link the old code.  Here, in a copy of the sources: a
plain build populates the cache, VXLAN's port is moved (4789 -> 4788) in `_wire.py`, then the
build as setup.py and `python -m rstlens.kernels.aot` run it (`scratch_tempdir`: a fresh
cache) must decode by the new port, while the same build without the fresh cache (the
control) shows the hazard is real: it still decodes by the old one.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest
from builders import ether, tcp_ipv4

REPO = Path(__file__).resolve().parents[2]

BUILD_AND_DECODE = r"""
import importlib.util, json, sys
from pathlib import Path
import numpy as np
root, mode, out, record = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), bytes.fromhex(sys.argv[4])
sys.path.insert(0, str(root))
spec = importlib.util.spec_from_file_location(
    "rstlens.parsers", root / "parsers" / "__init__.py",
    submodule_search_locations=[str(root / "parsers")])
module = importlib.util.module_from_spec(spec)
sys.modules["rstlens.parsers"] = module
spec.loader.exec_module(module)
from rstlens.kernels.aot import compiler, scratch_tempdir
out.mkdir()
if mode == "fresh":
    with scratch_tempdir():
        compiler(out, only=("decode",)).compile()
else:
    compiler(out, only=("decode",)).compile()
so = next(out.glob("*.so"))
spec = importlib.util.spec_from_file_location(mode + "." + so.name.split(".")[0], so)
ext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ext)
from rstlens.parsers._batch import BATCH_COLUMNS, TUNNEL_LAYER_WIDTH, TUNNEL_MAX_LAYERS
from rstlens.parsers._decode import C_NON_TCP, C_TUNNEL_BASE, N_COUNTERS, TUNNEL_VXLAN
buf = np.frombuffer(record, np.uint8).copy()
one = lambda v, t: np.array([v], t)
cols = [np.empty(1, d) for d in BATCH_COLUMNS.values()]
counters = np.zeros(N_COUNTERS, np.int64)
side = np.zeros((1, TUNNEL_MAX_LAYERS * TUNNEL_LAYER_WIDTH), np.int64)
rows = ext.decode(buf, one(0, np.int64), one(len(record), np.int64), one(1, np.int32),
                  one(0, np.int64), one(1, np.int64), one(0, np.uint16), np.uint16(0),
                  np.int64(2), *cols, side, counters)
print(json.dumps({"rows": int(rows), "vxlan": int(counters[C_TUNNEL_BASE + TUNNEL_VXLAN]),
                  "non_tcp": int(counters[C_NON_TCP])}))
"""


def _vxlan_record(dport: int) -> bytes:
    inner = ether(tcp_ipv4())
    body = struct.pack(">HHHH", 40000, dport, 8 + 8 + len(inner), 0) + b"\x08\x00\x00\x00" + struct.pack(">I", 42 << 8) + inner
    ip = dpkt.ip.IP(src=b"\xc0\x00\x02\x01", dst=b"\xc0\x00\x02\x02", p=17, ttl=60, data=body)
    ip.len = 20 + len(body)
    return ether(bytes(ip))


def _run(tree: Path, mode: str, out: Path, record: bytes) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT")}
    proc = subprocess.run([sys.executable, "-c", BUILD_AND_DECODE, str(tree), mode, str(out), record.hex()],
                          capture_output=True, text=True, env=dict(env, TMPDIR=str(out.parent)),
                          timeout=600, cwd=out.parent)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
def test_a_stale_numba_cache_never_reaches_the_extension(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for package in ("rstlens", "parsers"):
        shutil.copytree(REPO / package, tree / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.nbi", "*.nbc"))  # fmt: skip
    on_4788 = _vxlan_record(4788)
    before = _run(tree, "plain", tmp_path / "b0", on_4788)  # writes tree/parsers/__pycache__
    assert before == {"rows": 0, "vxlan": 0, "non_tcp": 1}  # 4788 is no VXLAN port yet
    assert list((tree / "parsers" / "__pycache__").glob("_decode_kernel._tunnelled*.nbi"))
    wire = tree / "parsers" / "_wire.py"
    text = wire.read_text()
    assert "PORT_VXLAN = 4789" in text
    wire.write_text(text.replace("PORT_VXLAN = 4789", "PORT_VXLAN = 4788"))
    fresh = _run(tree, "fresh", tmp_path / "b1", on_4788)
    assert fresh == {"rows": 1, "vxlan": 1, "non_tcp": 0}  # decoded by the edited constant
    control = _run(tree, "plain", tmp_path / "b2", on_4788)
    assert control == before, "numba no longer reuses the stale entry: the control shows nothing"
