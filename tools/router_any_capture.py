"""A real-kernel capture of `tcpdump -i any` on a router: every forwarded packet twice.

    python -m tools.router_any_capture OUT.pcap     (as root; needs ip, tcpdump)

Builds client -- router -- server in three network namespaces (prefix `facts-`), captures
with `tcpdump -i any` inside the router namespace (each forwarded packet is seen as it comes
in on one veth and as it goes out on the other, its TTL one lower), and drives real sockets
over IPv4 and IPv6: a SYN to a closed port (the server kernel's RST+ACK), a connection the
client aborts with SO_LINGER 0 (its RST+ACK), and one the server closes with unread data
(its RST+ACK).  The copies are labelled by the capture itself: Linux cooked headers carry
the packet type (0 incoming, 4 outgoing), which rstlens never reads
(`tests/core/test_capture_artefacts.py` holds rstlens to it).
"""

from __future__ import annotations

import contextlib
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

NS = ("facts-c", "facts-r", "facts-s")
V4 = {"c": "10.77.1.2", "rc": "10.77.1.1", "rs": "10.77.2.1", "s": "10.77.2.2"}
V6 = {"c": "fd77:1::2", "rc": "fd77:1::1", "rs": "fd77:2::1", "s": "fd77:2::2"}
PORT_OPEN, PORT_CLOSED = 8080, 8081


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def ns(name: str, *args: str) -> None:
    sh("ip", "netns", "exec", name, *args)


@contextlib.contextmanager
def topology() -> Iterator[None]:
    for n in NS:
        subprocess.run(["ip", "netns", "del", n], capture_output=True)
        sh("ip", "netns", "add", n)
    try:
        sh("ip", "link", "add", "fc0", "netns", "facts-c", "type", "veth", "peer", "fr0", "netns", "facts-r")
        sh("ip", "link", "add", "fs0", "netns", "facts-s", "type", "veth", "peer", "fr1", "netns", "facts-r")
        for n, dev, a4, a6 in (("facts-c", "fc0", V4["c"], V6["c"]), ("facts-r", "fr0", V4["rc"], V6["rc"]),
                               ("facts-r", "fr1", V4["rs"], V6["rs"]), ("facts-s", "fs0", V4["s"], V6["s"])):  # fmt: skip
            ns(n, "ip", "link", "set", "lo", "up")
            ns(n, "ip", "addr", "add", f"{a4}/24", "dev", dev)
            ns(n, "ip", "-6", "addr", "add", f"{a6}/64", "dev", dev, "nodad")
            ns(n, "ip", "link", "set", dev, "up")
        ns("facts-c", "ip", "route", "add", "default", "via", V4["rc"])
        ns("facts-c", "ip", "-6", "route", "add", "default", "via", V6["rc"])
        ns("facts-s", "ip", "route", "add", "default", "via", V4["rs"])
        ns("facts-s", "ip", "-6", "route", "add", "default", "via", V6["rs"])
        ns("facts-r", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ns("facts-r", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        yield
    finally:
        for n in NS:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def _in_ns(name: str, code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", code])


SERVER = """
import socket, time
for fam, addr in ((socket.AF_INET, {s4!r}), (socket.AF_INET6, {s6!r})):
    l = socket.socket(fam); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((addr, {port})); l.listen(8); l.settimeout(10)
    c, _ = l.accept(); c.recv(100); time.sleep(0.3); c.close()      # client aborts (SO_LINGER 0)
    c, _ = l.accept(); time.sleep(0.3); c.close()                   # closes with unread data
    l.close()
"""

CLIENT = """
import socket, struct, time
for fam, addr in ((socket.AF_INET, {s4!r}), (socket.AF_INET6, {s6!r})):
    s = socket.socket(fam); s.settimeout(2)
    try: s.connect((addr, {closed}))
    except OSError: pass
    s.close(); time.sleep(0.1)
    s = socket.socket(fam); s.connect((addr, {port})); s.sendall(b"hello"); time.sleep(0.1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
    time.sleep(0.4)
    s = socket.socket(fam); s.connect((addr, {port})); s.sendall(b"unread data"); time.sleep(0.6)
    try: s.send(b"more")
    except OSError: pass
    s.close(); time.sleep(0.2)
"""


def capture(out: Path) -> None:
    with topology():
        dump = subprocess.Popen(["ip", "netns", "exec", "facts-r", "tcpdump", "-i", "any", "-U", "-w",
                                 str(out), "tcp"], stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(1.0)
        fmt = {"s4": V4["s"], "s6": V6["s"], "port": PORT_OPEN, "closed": PORT_CLOSED}
        server = _in_ns("facts-s", SERVER.format(**fmt))
        time.sleep(0.5)
        client = _in_ns("facts-c", CLIENT.format(**fmt))
        client.wait(timeout=30)
        server.wait(timeout=30)
        time.sleep(0.5)
        dump.terminate()
        dump.wait(timeout=10)


def packet_types(path: Path) -> list[int]:
    """The Linux cooked header's packet type of each record (0 incoming, 4 outgoing)."""
    data = path.read_bytes()
    linktype = struct.unpack_from("<I", data, 20)[0]
    out, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        rec = data[off + 16 : off + 16 + incl]
        out.append(rec[0] << 8 | rec[1] if linktype == 113 else rec[10])  # SLL: be16 at 0; SLL2: byte 10
        off += 16 + incl
    return out


if __name__ == "__main__":
    capture(Path(sys.argv[1]))
    types = packet_types(Path(sys.argv[1]))
    print(f"{len(types)} packets, {types.count(4)} outgoing copies")
