"""Real-kernel tunnels: TCP through vxlan, geneve, gre, gretap, erspan, ip6tnl (ip6ip6), sit
(6in4) and ipip devices between two network namespaces, tcpdump on the underlay.

For every tunnel type the same three connections (a clean close, a connect to a closed
port, an abort with SO_LINGER 0) run once through the tunnel and once over the underlay
directly; rstlens must see the inner connections with the same conn_state and history and
the RSTs with the same verdicts, plus the tunnel stack.  And two tenants' identical inner
5-tuples in two VXLAN VNIs are two connections.

Needs root and a kernel with the tunnel's driver; a tunnel type the running kernel does not
offer is skipped (naming the missing device type).  Everything happens inside namespaces
created here (names `rstl<pid>x<tag>[cs]`, which tools/_netns.py recognises as stale when
their creator is gone) and is removed in `finally` blocks; each scenario is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools._netns import NS_PREFIX, Capture, delete_netns, run

pytestmark = [pytest.mark.netns]

U4C, U4S, U6C, U6S = "10.78.0.1", "10.78.0.2", "fd78::1", "fd78::2"  # underlay
I4C, I4S, I6C, I6S = "10.79.0.1", "10.79.0.2", "fd79::1", "fd79::2"  # inside the tunnel
OPEN, CLOSED = 8080, 8081

# tunnel -> (ip link arguments, inner IP version, point to point, expected `tunnel` type)
TUNNELS: dict[str, tuple[str, int, bool, str]] = {
    "vxlan": ("type vxlan id 42 local {u} remote {peer} dstport 4789 dev {dev}", 4, False, "vxlan:42"),
    "geneve": ("type geneve id 43 remote {peer}", 4, False, "geneve:43"),
    "gre": ("type gre local {u} remote {peer} key 5", 4, True, "gre:5"),
    "gretap": ("type gretap local {u} remote {peer} key 6", 4, False, "gretap:6"),
    "erspan": ("type erspan local {u} remote {peer} seq key 7 erspan_ver 1 erspan 9", 4, False, "erspan2:9"),
    "ip6tnl": ("type ip6tnl mode ip6ip6 local {u6} remote {peer6}", 6, True, "ip6in6"),
    "sit": ("type sit local {u} remote {peer}", 6, True, "ip6in4"),
    "ipip": ("type ipip local {u} remote {peer}", 4, True, "ip4in4"),
}  # fmt: skip

SERVER = r"""
import socket, sys, threading
srv = socket.socket(socket.AF_INET6)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
srv.bind(("::", int(sys.argv[1])))
srv.listen(16)
print("ready", flush=True)
def serve(c):
    try:
        if c.recv(100):
            c.sendall(b"ok")
        while c.recv(100):
            pass
    except OSError:
        pass
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

CLIENT = r"""
import socket, struct, sys, time
dst, op, cp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sport = int(sys.argv[4]) if len(sys.argv) > 4 else 0
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
def conn(port):
    s = socket.socket(fam)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sport:
        s.bind(("", sport))
    s.settimeout(3)
    s.connect((dst, port))
    return s
s = conn(op)                      # a clean close
s.sendall(b"hello")
assert s.recv(10) == b"ok"
time.sleep(0.05)
s.close()
time.sleep(0.2)
if sport:
    sys.exit(0)
try:                              # a closed port
    conn(cp)
except ConnectionRefusedError:
    pass
time.sleep(0.1)
s = conn(op)                      # an abort: SO_LINGER 0
s.sendall(b"hello")
assert s.recv(10) == b"ok"
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
time.sleep(0.3)
"""


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if any(subprocess.run(["which", t], capture_output=True).returncode for t in ("ip", "tcpdump")):
        return "needs ip and tcpdump"
    return None


class Pair:
    """Two namespaces (c, s) joined by a veth underlay, IPv4 and IPv6."""

    def __init__(self, tag: int) -> None:
        base = f"{NS_PREFIX}{os.getpid()}x{tag}"
        self.c, self.s = base + "c", base + "s"
        self.vc, self.vs = f"tl{os.getpid() % 10**7}c", f"tl{os.getpid() % 10**7}s"
        self.created: list[str] = []

    def up(self) -> None:
        for ns in (self.c, self.s):
            run(["ip", "netns", "add", ns])
            self.created.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0",
                 "net.ipv6.conf.default.accept_dad=0"])  # fmt: skip
        run(["ip", "-n", self.c, "link", "add", self.vc, "type", "veth", "peer", "name", self.vs,
             "netns", self.s])  # fmt: skip
        for ns, dev, a4, a6 in ((self.c, self.vc, U4C, U6C), (self.s, self.vs, U4S, U6S)):
            run(["ip", "-n", ns, "-batch", "-"], input=f"addr add {a4}/24 dev {dev}\n"
                f"addr add {a6}/64 dev {dev} nodad\nlink set {dev} up\n")  # fmt: skip

    def tunnel(self, kind: str, name: str = "tn0", netns: tuple[str, str] | None = None) -> None:
        """The tunnel device in both namespaces (moved to `netns` after creation: its
        underlay socket stays where it was made), with the inner addresses."""
        spec, version, p2p, _ = TUNNELS[kind]
        for k, (ns, dev, u, u6, peer, peer6) in enumerate(
            ((self.c, self.vc, U4C, U6C, U4S, U6S), (self.s, self.vs, U4S, U6S, U4C, U6C))
        ):
            args = spec.format(u=u, u6=u6, peer=peer, peer6=peer6, dev=dev).split()
            run(["ip", "-n", ns, "link", "add", name, *args])
            target = ns if netns is None else netns[k]
            if target != ns:
                run(["ip", "-n", ns, "link", "set", name, "netns", target])
            mine, other = (I4C, I4S) if version == 4 else (I6C, I6S)
            if k == 1:
                mine, other = other, mine
            addr = f"{mine} peer {other}" if p2p else f"{mine}/{24 if version == 4 else 64}"
            extra = " nodad" if version == 6 else ""
            run(["ip", "-n", target, "-batch", "-"], input=f"addr add {addr} dev {name}{extra}\n"
                f"link set {name} up\n")  # fmt: skip

    def down(self) -> None:
        for ns in reversed(self.created):
            delete_netns(ns)
        self.created.clear()


def _supported(kind: str) -> bool:
    """Whether the running kernel offers the tunnel's device type (tried in a scratch ns)."""
    probe = Pair(990 + list(TUNNELS).index(kind))
    try:
        probe.up()
        probe.tunnel(kind)
        return True
    except Exception:
        return False
    finally:
        probe.down()


@contextlib.contextmanager
def _server(ns: str) -> Iterator[None]:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, str(OPEN)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def _client(ns: str, dst: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, dst, str(OPEN),
                             str(CLOSED), *extra], text=True, stderr=subprocess.PIPE)  # fmt: skip


def _finish(client: subprocess.Popen[str]) -> None:
    try:
        _, err = client.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        client.kill()
        client.communicate()
        raise
    assert client.returncode == 0, err


def _session(pair: Pair, dst: str, pcap: Path) -> None:
    cap = Capture(pair.c, pair.vc, pcap, bpf="ip or ip6")
    try:
        cap.start()
        with _server(pair.s):
            time.sleep(0.2)  # ARP/ND, tunnel neighbours
            _finish(_client(pair.c, dst))
            time.sleep(0.3)
    finally:
        cap.stop()


def _verdicts(pcap: Path, out: Path):  # type: ignore[no-untyped-def]
    from rstlens.api import analyze

    res = analyze(pcap, outdir=out)
    tcp = res.flows[res.flows.resp_p.isin([OPEN, CLOSED])].sort_values("ts")
    rst = res.resets.sort_values("ts")
    return (res, [(str(f.conn_state), f.history, f.resp_p) for f in tcp.itertuples()],
            [(str(r.cause), str(r.direction)) for r in rst.itertuples()])  # fmt: skip


@pytest.mark.parametrize("kind", list(TUNNELS))
def test_tcp_through_a_real_tunnel(tmp_path: Path, kind: str) -> None:
    why = _skip_reason()
    if why:
        pytest.skip(why)
    if not _supported(kind):
        pytest.skip(f"the running kernel has no '{kind}' device type")
    _, version, _, expected = TUNNELS[kind]
    pair = Pair(900 + list(TUNNELS).index(kind))
    try:
        pair.up()
        pair.tunnel(kind)
        _session(pair, U6S if version == 6 else U4S, tmp_path / "plain.pcap")
        _session(pair, I6S if version == 6 else I4S, tmp_path / "tunnel.pcap")
    finally:
        pair.down()
    _, plain_flows, plain_rsts = _verdicts(tmp_path / "plain.pcap", tmp_path / "o-plain")
    res, tun_flows, tun_rsts = _verdicts(tmp_path / "tunnel.pcap", tmp_path / "o-tunnel")
    assert [f[0] for f in plain_flows] == ["SF", "REJ", "RSTO"]
    assert tun_flows == plain_flows
    assert tun_rsts == plain_rsts and ("closed_port", "resp") in tun_rsts and ("abort", "orig") in tun_rsts
    inner = res.flows[res.flows.resp_p.isin([OPEN, CLOSED])]
    assert set(inner.tunnel.astype(str)) == {expected}
    assert set(inner.tunnel_endpoints.astype(str)) == {f"{U6C}-{U6S}" if kind == "ip6tnl" else f"{U4C}-{U4S}"}
    assert res.resets.outer_ttl.notna().all()
    assert res.summary.decode["tunnel_depth_exceeded"] == 0


def test_two_vnis_with_the_same_inner_connection_stay_apart(tmp_path: Path) -> None:
    why = _skip_reason()
    if why:
        pytest.skip(why)
    if not _supported("vxlan"):
        pytest.skip("the running kernel has no 'vxlan' device type")
    under, t1, t2 = Pair(950), Pair(951), Pair(952)
    pcap = tmp_path / "vnis.pcap"
    try:
        under.up()
        for t in (t1, t2):  # tenant namespaces: no underlay of their own
            for ns in (t.c, t.s):
                run(["ip", "netns", "add", ns])
                t.created.append(ns)
                run(["ip", "-n", ns, "link", "set", "lo", "up"])
        spec = TUNNELS["vxlan"]
        for vni, t in ((1, t1), (2, t2)):
            TUNNELS["vx"] = (spec[0].replace("id 42", f"id {vni}"), 4, False, f"vxlan:{vni}")
            under.tunnel("vx", name=f"vx{vni}", netns=(t.c, t.s))
        TUNNELS.pop("vx")
        cap = Capture(under.c, under.vc, pcap, bpf="udp port 4789")
        try:
            cap.start()
            with _server(t1.s), _server(t2.s):
                time.sleep(0.2)
                clients = [_client(t.c, I4S, "45000") for t in (t1, t2)]  # the same 5-tuple
                for c in clients:
                    _finish(c)
                time.sleep(0.3)
        finally:
            cap.stop()
    finally:
        TUNNELS.pop("vx", None)
        for p in (t2, t1, under):
            p.down()
    res, _, _ = _verdicts(pcap, tmp_path / "o")
    inner = res.flows[res.flows.resp_p == OPEN]
    assert len(inner) == 2 and set(inner.orig_p) == {45000}
    assert sorted(inner.tunnel.astype(str)) == ["vxlan:1", "vxlan:2"]
    assert list(inner.conn_state.astype(str)) == ["SF", "SF"]


# ---- captures on tunnel devices: Linux cooked (SLL, SLL2) and raw, by ARPHRD_ type ------------
# This kernel may lack the tunnel drivers themselves (ipip, gre, sit, ip6tnl, ip6gre, ppp,
# wireguard): the devices here are tun devices (ARPHRD_NONE, as wireguard's and OpenVPN's)
# joined by a userspace forwarder, given the tunnel drivers' ARPHRD_ types with TUNSETLINK.
# What a capture records of a device — libpcap's choice of link type (raw IP for
# ARPHRD_TUNNEL/SIT/NONE, cooked for the others, `any` always cooked), the ARPHRD_ type in
# the cooked header, the protocol field (skb->protocol, which tun sets from its packet
# information header as a GRE device sets it from the GRE protocol type) — comes from the
# kernel's packet socket and libpcap alone, whichever driver made the device.
ARPHRD = {"tunnel": (768, 4), "tunnel6": (769, 6), "sit": (776, 6), "ipgre": (778, 4),
          "ip6gre": (823, 6), "none": (0xFFFE, 4), "ppp": (512, 4)}  # fmt: skip
# libpcap's link type on the device itself (pcap-linux.c map_arphrd_to_dlt; -1: cooked)
DEVICE_LINKTYPE = {768: 101, 776: 101, 0xFFFE: 101}

FORWARDER = r"""
import ctypes, fcntl, os, select, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET, TUNSETIFF, TUNSETLINK, IFF_TUN = 0x40000000, 0x400454CA, 0x400454CD, 0x0001
name, arphrd = sys.argv[1].encode(), int(sys.argv[2])
home = os.open("/proc/self/ns/net", os.O_RDONLY)
fds = []
for ns in sys.argv[3:5]:
    nsfd = os.open("/var/run/netns/" + ns, os.O_RDONLY)
    if libc.setns(nsfd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    fd = os.open("/dev/net/tun", os.O_RDWR)
    # with the packet information header: flags, protocol (passed on as read: skb->protocol)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name, IFF_TUN))
    if arphrd != 0xFFFE:
        fcntl.ioctl(fd, TUNSETLINK, arphrd)
    fds.append(fd)
    os.close(nsfd)
libc.setns(home, CLONE_NEWNET)
print("ready", flush=True)
peer = {fds[0]: fds[1], fds[1]: fds[0]}
while True:
    for fd in select.select(fds, [], [])[0]:
        packet = os.read(fd, 65536)
        try:
            os.write(peer[fd], packet)
        except OSError:  # the other device not up yet (EIO): dropped, as a link down would
            pass
"""


@contextlib.contextmanager
def _tun_pair(tag: int, arphrd: int) -> Iterator[tuple[str, str, str]]:
    """Two namespaces joined by a tun device each (ARPHRD_ type `arphrd`), a forwarder
    between them; yields (client ns, server ns, device name)."""
    base = f"{NS_PREFIX}{os.getpid()}x{tag}"
    c, s, dev = base + "c", base + "s", "tnl0"
    created: list[str] = []
    fwd = None
    try:
        for ns in (c, s):
            run(["ip", "netns", "add", ns])
            created.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0",
                 "net.ipv6.conf.default.accept_dad=0"])  # fmt: skip
        fwd = subprocess.Popen([sys.executable, "-c", FORWARDER, dev, str(arphrd), c, s],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert fwd.stdout is not None and fwd.stdout.readline().strip() == "ready", fwd.stderr
        for ns, (m4, p4, m6, p6) in ((c, (I4C, I4S, I6C, I6S)), (s, (I4S, I4C, I6S, I6C))):
            # no link-local address (both ends would make the same one from the null hardware
            # address); addresses after `up`, which on an ARPHRD_TUNNEL6 device drops IPv6 ones
            run(["ip", "-n", ns, "-batch", "-"], input=f"link set {dev} addrgenmode none\n"
                f"link set {dev} up\naddr add {m4} peer {p4} dev {dev}\n"
                f"addr add {m6} peer {p6} dev {dev} nodad\n")  # fmt: skip
        yield c, s, dev
    finally:
        if fwd is not None:
            fwd.kill()
            fwd.wait(timeout=5)
            for f in (fwd.stdout, fwd.stderr):
                if f is not None:
                    f.close()
        for ns in reversed(created):
            delete_netns(ns)


def _first_header(pcap: Path) -> tuple[int, bytes]:
    import dpkt

    with pcap.open("rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        return reader.datalink(), next(iter(reader))[1]


@pytest.mark.parametrize("kind", list(ARPHRD))
def test_captures_on_a_tunnel_device(tmp_path: Path, kind: str) -> None:
    """tcpdump on the device and on `any` (SLL and SLL2) of one session: the three captures
    carry the device's ARPHRD_ type, decode as the reference decoder does, and give the
    connections and RST verdicts the session had."""
    why = _skip_reason()
    if why:
        pytest.skip(why)
    if not Path("/dev/net/tun").exists():
        pytest.skip("no /dev/net/tun")
    from decode_check import assert_same_as_reference

    from rstlens.parsers import CaptureReader, PacketBatch

    arphrd, version = ARPHRD[kind]
    caps = {"device": tmp_path / "device.pcap", "sll": tmp_path / "sll.pcap", "sll2": tmp_path / "sll2.pcap"}
    with _tun_pair(960 + list(ARPHRD).index(kind), arphrd) as (c, s, dev):
        running = [Capture(c, dev, caps["device"], bpf="ip or ip6"),
                   Capture(c, "any", caps["sll"], bpf="ip or ip6", extra=("-y", "LINUX_SLL")),
                   Capture(c, "any", caps["sll2"], bpf="ip or ip6", extra=("-y", "LINUX_SLL2"))]  # fmt: skip
        try:
            for cap in running:
                cap.start()
            with _server(s):
                time.sleep(0.2)
                _finish(_client(c, I6S if version == 6 else I4S))
                time.sleep(0.3)
        finally:
            for cap in running:
                cap.stop()
    want_lt = {"device": DEVICE_LINKTYPE.get(arphrd, 113), "sll": 113, "sll2": 276}
    verdicts = []
    for name, pcap in caps.items():
        linktype, first = _first_header(pcap)
        assert linktype == want_lt[name], name
        if linktype == 113:
            assert int.from_bytes(first[2:4], "big") == arphrd, name  # sll_hatype
        elif linktype == 276:
            assert int.from_bytes(first[8:10], "big") == arphrd, name  # sll2_hatype
        reader = CaptureReader([str(pcap)])
        got = PacketBatch.concat(list(reader))
        assert reader.inputs[0].link_types == [linktype] and reader.stats.unsupported_link == 0
        assert set(got.ip_version.tolist()) == {version} and reader.stats.non_ip == 0
        assert_same_as_reference(pcap)
        _, flows, rsts = _verdicts(pcap, tmp_path / f"o-{name}")
        verdicts.append((flows, rsts))
    flows, rsts = verdicts[0]
    assert [f[0] for f in flows] == ["SF", "REJ", "RSTO"]
    assert ("closed_port", "resp") in rsts and ("abort", "orig") in rsts
    assert verdicts[1] == verdicts[0] and verdicts[2] == verdicts[0]
