"""A tiny socket agent run inside a namespace (``ip netns exec NS python -m tools._agent``).

The orchestrator drives it with one JSON object per line on stdin; every command gets exactly
one JSON reply line on stdout (``{"ok": true, ...}`` or ``{"ok": false, "err": "..."}``).
Only the standard library is used so start-up is quick.  Every blocking call has a timeout.

Ops: listen, accept, connect, tfo_connect, send, recv, recv_all, recv_reply, wait_readable,
linger0, ttl, shutdown, close, keepalive, info, sleep, exit (``os._exit``: the process dies and the kernel closes what is left).
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import struct
import sys
import time

IPPROTO_MPTCP = getattr(socket, "IPPROTO_MPTCP", 262)


class Agent:
    def __init__(self) -> None:
        self.socks: dict[str, socket.socket] = {}

    def _fam(self, cmd: dict) -> int:
        return socket.AF_INET6 if cmd.get("family", 4) == 6 else socket.AF_INET

    def _socket(self, cmd: dict) -> socket.socket:
        """A stream socket: plain TCP, or MPTCP (`"proto": "mptcp"`); `ttl` sets IP_TTL /
        IPV6_UNICAST_HOPS on it (inherited by accepted sockets when set on a listener)."""
        proto = IPPROTO_MPTCP if cmd.get("proto") == "mptcp" else 0
        s = socket.socket(self._fam(cmd), socket.SOCK_STREAM, proto)
        if cmd.get("ttl"):
            self._set_ttl(s, cmd["ttl"])
        return s

    @staticmethod
    def _set_ttl(s: socket.socket, ttl: int) -> None:
        if s.family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)

    def op_listen(self, cmd: dict) -> dict:
        s = self._socket(cmd)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if cmd.get("fastopen"):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, int(cmd["fastopen"]))
        s.bind((cmd["addr"], cmd["port"]))
        s.listen(16)
        self.socks[cmd["name"]] = s
        return {}

    def op_accept(self, cmd: dict) -> dict:
        ls = self.socks[cmd["listener"]]
        ls.settimeout(cmd.get("timeout", 3.0))
        s, peer = ls.accept()
        s.settimeout(None)
        self.socks[cmd["name"]] = s
        return {"peer": list(peer[:2])}

    def op_connect(self, cmd: dict) -> dict:
        s = self._socket(cmd)
        if cmd.get("sport"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", cmd["sport"]))
        if cmd.get("syncnt"):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, cmd["syncnt"])
        s.settimeout(cmd.get("timeout", 3.0))
        try:
            s.connect((cmd["addr"], cmd["port"]))
        except OSError:
            s.close()
            raise
        s.settimeout(None)
        self.socks[cmd["name"]] = s
        return {"sport": s.getsockname()[1]}

    def op_tfo_connect(self, cmd: dict) -> dict:
        """TCP Fast Open: the first `data` goes in the SYN (sendto with MSG_FASTOPEN)."""
        s = self._socket(cmd)
        s.settimeout(cmd.get("timeout", 3.0))
        try:
            n = s.sendto(cmd["data"].encode(), socket.MSG_FASTOPEN, (cmd["addr"], cmd["port"]))
        except OSError:
            s.close()
            raise
        self.socks[cmd["name"]] = s
        return {"n": n, "sport": s.getsockname()[1]}

    def op_ttl(self, cmd: dict) -> dict:
        self._set_ttl(self.socks[cmd["name"]], cmd["ttl"])
        return {}

    def op_send(self, cmd: dict) -> dict:
        data = cmd["data"].encode() if "data" in cmd else b"x" * cmd["n"]
        s = self.socks[cmd["name"]]
        s.settimeout(cmd.get("timeout", 2.0))
        s.sendall(data)
        return {"n": len(data)}

    def op_recv(self, cmd: dict) -> dict:
        """One recv() of up to n bytes; b'' means EOF."""
        s = self.socks[cmd["name"]]
        s.settimeout(cmd.get("timeout", 2.0))
        data = s.recv(cmd.get("n", 65536))
        return {"n": len(data), "eof": not data, "data": data.decode(errors="replace")[:200]}

    def op_recv_all(self, cmd: dict) -> dict:
        """Read exactly n bytes (or until EOF)."""
        s = self.socks[cmd["name"]]
        s.settimeout(cmd.get("timeout", 2.0))
        want, got = cmd["n"], b""
        while len(got) < want:
            chunk = s.recv(want - len(got))
            if not chunk:
                break
            got += chunk
        return {"n": len(got), "eof": len(got) < want}

    def op_wait_readable(self, cmd: dict) -> dict:
        """Wait until the socket has at least `n` unread bytes queued (SIOCINQ)."""
        import fcntl
        import termios

        s = self.socks[cmd["name"]]
        deadline = time.monotonic() + cmd.get("timeout", 2.0)
        want = cmd.get("n", 1)
        while True:
            buf = fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0")
            queued = struct.unpack("i", buf)[0]
            if queued >= want:
                return {"queued": queued}
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {queued} bytes queued")
            select.select([s], [], [], 0.01)

    def op_linger0(self, cmd: dict) -> dict:
        self.socks[cmd["name"]].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
        return {}

    def op_keepalive(self, cmd: dict) -> dict:
        s = self.socks[cmd["name"]]
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, cmd.get("idle", 1))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, cmd.get("intvl", 1))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, cmd.get("cnt", 2))
        return {}

    def op_shutdown(self, cmd: dict) -> dict:
        how = {"rd": socket.SHUT_RD, "wr": socket.SHUT_WR, "rdwr": socket.SHUT_RDWR}[cmd.get("how", "wr")]
        self.socks[cmd["name"]].shutdown(how)
        return {}

    def op_close(self, cmd: dict) -> dict:
        s = self.socks.pop(cmd["name"], None)
        if s is not None:
            s.close()
        return {}

    def op_info(self, cmd: dict) -> dict:
        s = self.socks[cmd["name"]]
        return {"local": list(s.getsockname()[:2])}

    def op_recv_reply(self, cmd: dict) -> dict:
        """recv() once, then send `reply` after `delay` s (no round trip through the orchestrator)."""
        s = self.socks[cmd["name"]]
        s.settimeout(cmd.get("timeout", 2.0))
        data = s.recv(cmd.get("n", 65536))
        if not data:
            return {"n": 0, "eof": True, "sent": 0}
        time.sleep(min(float(cmd.get("delay", 0.0)), 5.0))
        s.sendall(cmd["reply"].encode())
        return {"n": len(data), "eof": False, "sent": len(cmd["reply"])}

    def op_sleep(self, cmd: dict) -> dict:
        time.sleep(min(float(cmd.get("s", 0.1)), 5.0))
        return {}


def main() -> int:
    agent = Agent()
    out = sys.stdout
    out.write(json.dumps({"ok": True, "ready": True, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        op = cmd.get("op")
        if op == "exit":
            out.write(json.dumps({"ok": True}) + "\n")
            out.flush()
            os._exit(0)
        try:
            reply = {"ok": True, **getattr(agent, f"op_{op}")(cmd)}
        except (OSError, TimeoutError, KeyError, ValueError) as e:
            name = errno.errorcode.get(getattr(e, "errno", None) or 0, "")
            if isinstance(e, (socket.timeout, TimeoutError)) and not name:
                name = "TIMEOUT"  # our own timeout, not the kernel's ETIMEDOUT
            reply = {"ok": False, "err": name or type(e).__name__, "msg": str(e)}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
