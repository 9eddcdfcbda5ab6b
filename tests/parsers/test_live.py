"""`LiveReader` on a real interface: a veth pair into a network namespace, real TCP.

The host end (10.78.N.1/30) is captured; the namespace end (10.78.N.2/30) refuses one
connection (RST+ACK) and serves one small exchange.  Every wait is bounded.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest

from rstlens.parsers import CaptureError, LiveReader, PacketBatch

if TYPE_CHECKING:
    from conftest import Veth  # the fixture lives in tests/conftest.py

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


needs_netns = pytest.mark.netns  # the veth fixture skips without root and iproute2


SYN, RST, ACK, FIN, PSH = 0x002, 0x004, 0x010, 0x001, 0x008


def _v4(addr: str) -> int:
    return 0xFFFF_0000_0000 | int.from_bytes(socket.inet_aton(addr), "big")


class Collector:
    """Iterate a LiveReader in a thread, keeping every batch (copied) and the empty ones."""

    def __init__(self, reader: LiveReader) -> None:
        self.reader = reader
        self.batches: list[PacketBatch] = []
        self.empty = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for b in self.reader:
                if len(b) == 0:
                    self.empty += 1
                else:  # raw is only valid until the next read: keep a copy
                    self.batches.append(PacketBatch.concat([b, PacketBatch.empty()]))
        except BaseException as exc:
            self.error = exc

    def rows(self) -> PacketBatch:
        return PacketBatch.concat(list(self.batches))

    def wait_for(self, pred, timeout: float = 5.0) -> PacketBatch:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.rows()
            if pred(got):
                return got
            time.sleep(0.05)
        return self.rows()

    def stop(self) -> None:
        self.reader.stop()
        self.thread.join(5)
        assert not self.thread.is_alive(), "LiveReader did not stop"
        assert self.error is None, self.error


SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080)); s.listen(1); s.settimeout(10)
print("ready", flush=True)
c, _ = s.accept(); c.settimeout(10)
data = b""
while len(data) < 5:
    chunk = c.recv(5 - len(data))
    if not chunk:
        break
    data += chunk
c.sendall(b"world:" + data)
c.shutdown(socket.SHUT_WR); c.recv(10); c.close()
"""


@needs_netns
def test_live_capture_rst_and_exchange(veth: Veth) -> None:
    reader = LiveReader(veth.host_if, bpf=f"tcp and net {veth.net}", timeout_ms=100)
    info = reader.inputs[0]
    assert (info.path, info.format, info.link_types) == (veth.host_if, "live", [1])
    col = Collector(reader)
    try:
        # 1. a closed port: the namespace's kernel answers RST+ACK, seq 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((veth.peer, 9), timeout=5).close()
        # 2. a small exchange with a server inside the namespace
        with subprocess.Popen(
            ["ip", "netns", "exec", veth.ns, sys.executable, "-c", SERVER, veth.peer],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ) as srv:  # fmt: skip
            try:
                ready, _w, _x = select.select([srv.stdout], [], [], 10)
                assert ready and srv.stdout.readline().strip() == "ready"
                with socket.create_connection((veth.peer, 8080), timeout=5) as c:
                    sport = c.getsockname()[1]
                    c.sendall(b"hello")
                    reply = b""
                    while chunk := c.recv(100):
                        reply += chunk
                assert reply == b"world:hello"
                _out, err = srv.communicate(timeout=10)
                assert srv.returncode == 0, err
            finally:
                if srv.poll() is None:
                    srv.kill()
                    srv.communicate(timeout=5)
        fin_both = lambda g: int(((g.flags & FIN) != 0).sum()) >= 2  # noqa: E731
        got = col.wait_for(fin_both)
        time.sleep(0.3)  # a quiet spell: the reader must hand back empty batches
    finally:
        col.stop()
    got = col.rows()
    host, peer = _v4(veth.host), _v4(veth.peer)
    assert np.all(got.ip_version == 4) and np.all(got.vlan == -1)
    assert np.all(
        ((got.src_lo == host) & (got.dst_lo == peer))
        | ((got.src_lo == peer) & (got.dst_lo == host))
    )

    # the refused connection: SYN, then RST+ACK with seq 0 acknowledging SYN+1
    ref = got.take((got.dport == 9) | (got.sport == 9))
    assert ref.flags.tolist()[:2] == [SYN, RST | ACK]
    syn, rst = 0, 1
    assert ref.src_lo[syn] == host and ref.src_lo[rst] == peer
    assert ref.seq[rst] == 0 and ref.ack[rst] == (int(ref.seq[syn]) + 1) % 2**32
    assert ref.window[rst] == 0 and ref.payload_len[rst] == 0
    assert ref.mss[syn] > 0 and ref.wscale[syn] >= 0 and ref.tcp_opts[syn] & 0x01  # TS

    # the exchange: handshake, both payloads with their bytes, both FINs
    ex = got.take((got.sport == sport) | (got.dport == sport))
    fl = ex.flags.tolist()
    assert fl[:3] == [SYN, SYN | ACK, ACK]
    assert ex.ack[1] == (int(ex.seq[0]) + 1) % 2**32
    data = {}
    for i in np.flatnonzero(ex.payload_len > 0).tolist():
        off, n = int(ex.payload_off[i]), int(ex.captured_payload[i])
        data[int(ex.sport[i])] = data.get(int(ex.sport[i]), b"") + bytes(ex.raw[off : off + n])
    assert data == {sport: b"hello", 8080: b"world:hello"}
    assert {int(ex.sport[i]) for i in np.flatnonzero(ex.flags & FIN).tolist()} == {sport, 8080}
    assert not np.any(ex.flags & RST)

    # bookkeeping
    assert col.empty >= 1
    assert info.packets == reader.stats.packets == reader.stats.tcp == len(got)
    assert np.array_equal(got.frame, np.arange(1, len(got) + 1))
    assert np.all(np.diff(got.ts_us) >= 0)
    assert reader.kernel_stats[0] >= len(got)


@needs_netns
def test_live_count_stops_by_itself(veth: Veth) -> None:
    reader = LiveReader(veth.host_if, bpf=f"tcp and net {veth.net}", count=2, timeout_ms=50)
    col = Collector(reader)
    for port in (9, 10, 11):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((veth.peer, port), timeout=5).close()
    col.thread.join(5)
    assert not col.thread.is_alive() and col.error is None  # ended without stop()
    got = col.rows()
    assert got.flags.tolist() == [SYN, RST | ACK] and reader.stats.packets == 2


@needs_netns
def test_live_ctrl_c_ends_iteration_cleanly(veth: Veth) -> None:
    # deterministic: the interrupt arrives while the generator is suspended at a yield
    reader = LiveReader(veth.host_if, timeout_ms=20)
    it = iter(reader)
    assert len(next(it)) == 0  # a quiet link yields empty batches
    with pytest.raises(StopIteration):
        it.throw(KeyboardInterrupt)
    assert reader.interrupted and reader._closed
    # a real SIGINT while the reader waits in poll() (the main thread is iterating); Python's
    # own handler, whatever this process inherited (a background job starts with it ignored)
    reader = LiveReader(veth.host_if, timeout_ms=1000)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    start = time.monotonic()
    timer.start()
    try:
        for _b in reader:
            assert time.monotonic() - start < 5
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    assert reader.interrupted and reader._closed and time.monotonic() - start < 5


def test_missing_interface_is_one_capture_error() -> None:
    with pytest.raises(CaptureError, match="cannot capture on 'rlnone0'") as exc:
        LiveReader("rlnone0")
    assert "\n" not in str(exc.value)


@pytest.mark.skipif(not ROOT or shutil.which("capsh") is None, reason="needs root and capsh")
def test_no_permission_is_one_capture_error() -> None:
    code = (
        "from rstlens.parsers import LiveReader, CaptureError\n"
        "try:\n    LiveReader('lo')\nexcept CaptureError as e:\n    print('E', e)\n"
    )
    res = subprocess.run(
        ["capsh", "--drop=cap_net_raw", "--", "-c", f'exec "{sys.executable}" -c "{code}"'],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and res.stderr == "", res.stderr
    line = res.stdout.strip()
    assert line.startswith("E cannot capture on 'lo':") and "permission" in line
    assert "\n" not in line


def test_bad_bpf_is_one_capture_error() -> None:
    if not ROOT:
        pytest.skip("needs root to open an interface")
    with pytest.raises(CaptureError, match="bad BPF expression") as exc:
        LiveReader("lo", bpf="tcp and and")
    assert "\n" not in str(exc.value)


@needs_netns
@pytest.mark.parametrize("buffer_kib", [None, 1024])
def test_the_wire_length_callback_is_compiled_before_the_capture_opens(
        veth: Veth, monkeypatch: pytest.MonkeyPatch, buffer_kib: int | None) -> None:  # fmt: skip
    """-w's callback (numba, seconds to compile) is ready before libpcap opens the capture:
    compiled after, those seconds of packets queue in the kernel's ring, and under a small
    -B they are dropped (the live drop test saw 8 lost before its first connection)."""
    import pcapy

    from rstlens.parsers import _wirecopy

    _wirecopy._callback.cache_clear()
    compiled_at_open: list[int] = []

    def spy(name: str):  # type: ignore[no-untyped-def]
        real = getattr(pcapy, name)

        def opened(*args: object):  # type: ignore[no-untyped-def]
            compiled_at_open.append(_wirecopy._callback.cache_info().currsize)
            return real(*args)

        return opened

    for name in ("open_live", "create"):
        monkeypatch.setattr(pcapy, name, spy(name))
    reader = LiveReader(veth.host_if, timeout_ms=20, wire_lengths=True, buffer_kib=buffer_kib)
    try:
        assert compiled_at_open == [1]
        assert reader._wire is not None and _wirecopy._callback.cache_info().hits == 1  # not compiled again
    finally:
        reader.close()
