"""Private helpers for the ground-truth generator: namespaces, veths, nftables, tcpdump.

Topology (one per scenario, torn down afterwards)::

    client ns            router ns                     server ns
    <p>c  ---------- <p>rc      <p>rs ---------------- <p>s
    10.77.1.2/24     10.77.1.1  10.77.2.1              10.77.2.2/24
    fd77:1::2/64     fd77:1::1  fd77:2::1              fd77:2::2/64

With ``hops=2`` a second router (``router2``, ns suffix ``t``) sits between the router and the
server: router <p>rs 10.77.3.1 — 10.77.3.2 <p>tr, router2 <p>ts 10.77.2.1 — server (the
server's gateway address stays 10.77.2.1, so the server side looks the same).

Everything is created *inside* the namespaces (``ip -n NS link add ... peer ... netns NS2``),
so nothing ever appears in the caller's namespace.  Names carry a prefix and the pid of the
creating process so concurrent runs by other people do not collide, and so stale leftovers of
dead runs can be recognised and removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# RSTLENS_NETNS_PREFIX lets one engineer's runs carry their own prefix (e.g. "scn-").
NS_PREFIX = os.environ.get("RSTLENS_NETNS_PREFIX", "rstl")
REPO_ROOT = Path(__file__).resolve().parents[1]

CLIENT4, ROUTER_C4, ROUTER_S4, SERVER4 = "10.77.1.2", "10.77.1.1", "10.77.2.1", "10.77.2.2"
CLIENT6, ROUTER_C6, ROUTER_S6, SERVER6 = "fd77:1::2", "fd77:1::1", "fd77:2::1", "fd77:2::2"
# the link between the two routers (hops=2)
R1_T4, R2_T4, R1_T6, R2_T6 = "10.77.3.1", "10.77.3.2", "fd77:3::1", "fd77:3::2"

_NS_RE = re.compile(rf"^{re.escape(NS_PREFIX)}(\d+)x\d+[a-z]$")


class NetnsError(RuntimeError):
    pass


def run(cmd: list[str], *, timeout: float = 10.0, check: bool = True, input: str | None = None
        ) -> subprocess.CompletedProcess:
    """Run a short command, bounded in time."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def missing_tools() -> list[str]:
    return [t for t in ("ip", "tcpdump", "nft", "ss") if shutil.which(t) is None]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_netns() -> list[str]:
    proc = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _kill_ns_pids(ns: str) -> None:
    """Kill processes left inside one of *our* namespaces (by pid, never by name)."""
    proc = run(["ip", "netns", "pids", ns], check=False, timeout=5)
    for tok in proc.stdout.split():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(tok), signal.SIGKILL)


def delete_netns(ns: str) -> None:
    _kill_ns_pids(ns)
    run(["ip", "netns", "del", ns], check=False, timeout=10)


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces with our prefix whose creating process is gone."""
    removed = []
    for ns in list_netns():
        m = _NS_RE.match(ns)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            delete_netns(ns)
            removed.append(ns)
    return removed


def ns_cmd(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def py_module_cmd(ns: str, module: str, *args: str) -> list[str]:
    return ns_cmd(ns, sys.executable, "-m", module, *args)


_SIOCETHTOOL = 0x8946
_ETHTOOL_STXCSUM = 0x17


def disable_tx_csum(ifname: str) -> None:
    """ETHTOOL_STXCSUM off on `ifname` in the *current* namespace (ethtool may be absent).

    veth otherwise hands CHECKSUM_PARTIAL skbs around and every capture shows bad TCP
    checksums, which an analyzer might take for evasion packets.
    """
    import array
    import fcntl
    import socket
    import struct

    data = array.array("B", struct.pack("II", _ETHTOOL_STXCSUM, 0))
    addr, _ = data.buffer_info()
    ifr = struct.pack("16sP", ifname.encode(), addr) + b"\0" * 16
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), _SIOCETHTOOL, ifr)


@dataclass
class Topology:
    """client — router — server, IPv4 and IPv6, router forwarding on."""

    tag: int
    pid: int = field(default_factory=os.getpid)
    created: list[str] = field(default_factory=list)
    hops: int = 1  # routers between client and server: 1 or 2
    # sysctls set in a namespace right after it is made, by role ("client", "server", ...)
    sysctls: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base = base = f"{NS_PREFIX}{self.pid}x{self.tag}"
        self.client, self.router, self.server = base + "c", base + "r", base + "s"
        self.router2 = base + "t" if self.hops == 2 else None
        short = f"rl{self.pid}"
        self.if_c, self.if_rc, self.if_rs, self.if_s = short + "c", short + "rc", short + "rs", short + "s"
        self.if_tr, self.if_ts = short + "tr", short + "ts"  # router2's two sides

    def roles(self) -> dict[str, str]:
        """Role -> namespace, for every namespace of this topology."""
        out = {"client": self.client, "router": self.router, "server": self.server}
        if self.router2:
            out["router2"] = self.router2
        return out

    def extra_ns(self, suffix: str) -> str:
        """One more namespace of this topology (deleted with it by down())."""
        ns = self.base + suffix
        run(["ip", "netns", "add", ns])
        self.created.append(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    # -- life cycle ---------------------------------------------------------------------------
    def up(self) -> None:
        if self.hops not in (1, 2):
            raise NetnsError(f"hops must be 1 or 2, not {self.hops}")
        for role, ns in self.roles().items():
            run(["ip", "netns", "add", ns])
            self.created.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            # No duplicate address detection, and ND retries after 100 ms instead of 1 s (the
            # very first solicitation can go out before the peer listens on its group).
            run(ns_cmd(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0",
                       "net.ipv6.conf.default.accept_dad=0"))
            if self.sysctls.get(role):
                run(ns_cmd(ns, "sysctl", "-q", "-w", *self.sysctls[role]))
        run(["ip", "-n", self.client, "link", "add", self.if_c, "type", "veth",
             "peer", "name", self.if_rc, "netns", self.router])
        if self.router2:
            run(["ip", "-n", self.router2, "link", "add", self.if_tr, "type", "veth",
                 "peer", "name", self.if_rs, "netns", self.router])
            run(["ip", "-n", self.server, "link", "add", self.if_s, "type", "veth",
                 "peer", "name", self.if_ts, "netns", self.router2])
        else:
            run(["ip", "-n", self.server, "link", "add", self.if_s, "type", "veth",
                 "peer", "name", self.if_rs, "netns", self.router])
        links = [(self.client, [self.if_c]), (self.router, [self.if_rc, self.if_rs]),
                 (self.server, [self.if_s])]
        if self.router2:
            links.append((self.router2, [self.if_tr, self.if_ts]))
        for ns, ifs in links:
            run(ns_cmd(ns, "sysctl", "-q", "-w",
                       *(f"net.ipv6.neigh.{i}.retrans_time_ms=100" for i in ifs)))
        batch = {
            self.client: [
                f"addr add {CLIENT4}/24 dev {self.if_c}",
                f"addr add {CLIENT6}/64 dev {self.if_c} nodad",
                f"link set {self.if_c} up",
                f"route add default via {ROUTER_C4}",
                f"route add ::/0 via {ROUTER_C6}",
            ],
            self.router: [
                f"addr add {ROUTER_C4}/24 dev {self.if_rc}",
                f"addr add {ROUTER_C6}/64 dev {self.if_rc} nodad",
                f"addr add {ROUTER_S4}/24 dev {self.if_rs}" if not self.router2 else
                f"addr add {R1_T4}/24 dev {self.if_rs}",
                f"addr add {ROUTER_S6}/64 dev {self.if_rs} nodad" if not self.router2 else
                f"addr add {R1_T6}/64 dev {self.if_rs} nodad",
                f"link set {self.if_rc} up",
                f"link set {self.if_rs} up",
                *([f"route add 10.77.2.0/24 via {R2_T4}", f"route add fd77:2::/64 via {R2_T6}"]
                  if self.router2 else []),
            ],
            self.server: [
                f"addr add {SERVER4}/24 dev {self.if_s}",
                f"addr add {SERVER6}/64 dev {self.if_s} nodad",
                f"link set {self.if_s} up",
                f"route add default via {ROUTER_S4}",
                f"route add ::/0 via {ROUTER_S6}",
            ],
        }
        if self.router2:
            batch[self.router2] = [
                f"addr add {R2_T4}/24 dev {self.if_tr}",
                f"addr add {R2_T6}/64 dev {self.if_tr} nodad",
                f"addr add {ROUTER_S4}/24 dev {self.if_ts}",
                f"addr add {ROUTER_S6}/64 dev {self.if_ts} nodad",
                f"link set {self.if_tr} up",
                f"link set {self.if_ts} up",
                f"route add 10.77.1.0/24 via {R1_T4}",
                f"route add fd77:1::/64 via {R1_T6}",
            ]
        for ns, lines in batch.items():
            run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")
        for ns in (self.router, self.router2):
            if ns:
                run(ns_cmd(ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                           "net.ipv6.conf.all.forwarding=1"))
        # Real checksums on the wire (see disable_tx_csum), in every namespace.
        for ns, ifs in links:
            run(py_module_cmd(ns, "tools._netns", "txcsum-off", *ifs), check=False)
        self.wait_reachable()

    def wait_reachable(self, timeout: float = 5.0) -> None:
        """TCP-probe the server (v4 and v6) from the client so that ARP/ND are warm and
        forwarding works before any capture starts (a refused connection is a success)."""
        code = ("import socket,sys,time\n"
                "end = time.monotonic() + float(sys.argv[1])\n"
                "for a in sys.argv[2:]:\n"
                "    while True:\n"
                "        s = socket.socket(socket.AF_INET6 if ':' in a else socket.AF_INET)\n"
                "        s.settimeout(0.15)\n"
                "        try:\n"
                "            s.connect((a, 9)); break\n"
                "        except ConnectionRefusedError: break\n"
                "        except OSError:\n"
                "            if time.monotonic() > end: sys.exit(a + ' unreachable')\n"
                "            time.sleep(0.05)\n"
                "        finally: s.close()\n")
        run(ns_cmd(self.client, sys.executable, "-c", code, str(timeout), SERVER4, SERVER6),
            timeout=timeout + 5)

    def down(self) -> None:
        for ns in reversed(self.created):
            delete_netns(ns)
        self.created.clear()

    # -- nftables -----------------------------------------------------------------------------
    def nft(self, ns: str, script: str) -> None:
        run(ns_cmd(ns, "nft", "-f", "-"), input=script)

    def nft_base(self, ns: str) -> None:
        """A table `inet rstl` with accept-policy chains rl_fwd (forward) and rl_out (output)."""
        self.nft(ns, "add table inet rstl\n"
                     "add chain inet rstl rl_fwd { type filter hook forward priority 0; policy accept; }\n"
                     "add chain inet rstl rl_out { type filter hook output priority 0; policy accept; }\n")

    def nft_add(self, ns: str, chain: str, rule: str) -> None:
        self.nft(ns, f"add rule inet rstl rl_{chain} {rule}\n")

    def nft_flush(self, ns: str, chain: str) -> None:
        self.nft(ns, f"flush chain inet rstl rl_{chain}\n")


class Capture:
    """tcpdump -U writing classic pcap; start() waits until it is really capturing."""

    def __init__(self, ns: str, iface: str, path: Path, bpf: str = "tcp") -> None:
        self.ns, self.iface, self.path, self.bpf = ns, iface, path, bpf
        self.proc: subprocess.Popen | None = None

    def spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        cmd = ns_cmd(self.ns, "tcpdump", "-i", self.iface, "-U", "-n", "-s", "0", "-Z", "root",
                     "--immediate-mode", "-w", str(self.path), self.bpf)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_ready(self, timeout: float = 5.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.path.exists() and self.path.stat().st_size >= 24:
                time.sleep(0.05)  # header written => socket bound; a moment more for safety
                return
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.proc = None
                raise NetnsError(f"tcpdump on {self.ns}/{self.iface} died: {err}")
            if time.monotonic() > deadline:
                self.stop()
                raise NetnsError(f"tcpdump on {self.ns}/{self.iface} not ready in {timeout}s")
            time.sleep(0.01)

    def start(self, timeout: float = 5.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def stop(self, timeout: float = 3.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(2)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None


def _main(argv: list[str]) -> int:
    if argv[:1] == ["txcsum-off"]:
        rc = 0
        for ifname in argv[1:]:
            try:
                disable_tx_csum(ifname)
            except OSError as e:
                print(f"tx-checksum off failed on {ifname}: {e}", file=sys.stderr)
                rc = 1
        return rc
    print("usage: python -m tools._netns txcsum-off IFACE...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
