"""`rstlens analyze -i IFACE`: live capture through the whole pipeline (issue #4's linger
window for live capture), on a veth pair into a network namespace with real sockets."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

if TYPE_CHECKING:
    from conftest import Veth  # the fixture lives in tests/conftest.py

pytestmark = pytest.mark.netns  # the veth fixture skips without root and iproute2
RSTLENS = Path(sys.executable).with_name("rstlens")


def _in_ns(ns: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=20)  # fmt: skip


def test_live_capture_attributes_a_refused_connection(veth: Veth, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [str(RSTLENS), "analyze", "-i", veth.host_if, "-o", str(out), "--linger", "1",
         "--json", "tcp"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # blocks until the capture is open (or it failed)
        assert first.startswith(f"rstlens: listening on {veth.host_if}"), first
        # a listener on the host end serves one exchange; port+1 has no listener
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((veth.host, 0))
        srv.listen()
        port = srv.getsockname()[1]
        client = f"""
import socket
s = socket.create_connection(({veth.host!r}, {port}), timeout=5)
s.sendall(b"hello"); s.shutdown(socket.SHUT_WR); s.recv(100); s.close()
try:
    socket.create_connection(({veth.host!r}, {port + 1}), timeout=5)
except ConnectionRefusedError:
    print("refused")
"""
        srv.settimeout(10)
        from threading import Thread

        def serve() -> None:
            conn, _ = srv.accept()
            conn.recv(100)
            conn.sendall(b"world")
            conn.close()

        t = Thread(target=serve, daemon=True)
        t.start()
        res = _in_ns(veth.ns, client)
        assert res.stdout.strip() == "refused", res.stderr
        t.join(10)
        srv.close()
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert f"capture on {veth.host_if} stopped" in stderr
    resets = pd.read_parquet(out / "resets.parquet")
    flows = pd.read_parquet(out / "flows.parquet")
    refused = resets[resets.dst_p.astype(int) != port]
    assert len(refused) == 1, resets.to_string()
    assert refused.iloc[0].cause == "closed_port"
    assert refused.iloc[0].src_h == veth.host
    states = set(flows.conn_state.astype(str))
    assert {"REJ", "SF"} <= states, flows[["history", "conn_state"]].to_string()
    assert (flows.source.astype(str) == veth.host_if).all()
    summary = __import__("json").loads(stdout)
    assert summary["rst_causes"] == {"closed_port": 1}
    assert summary["inputs"][0]["format"] == "live"


def test_live_capture_on_a_missing_interface_is_one_line(tmp_path: Path) -> None:
    res = subprocess.run([str(RSTLENS), "analyze", "-i", "rstlens-no-such0", "-o", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("rstlens: error:"), res.stderr
    assert not any(tmp_path.iterdir())
