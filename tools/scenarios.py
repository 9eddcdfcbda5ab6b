"""Ground-truth RST scenarios driven by the real Linux TCP stack in network namespaces.

    python -m tools.scenarios OUTDIR [--only NAME ...] [--list] [--keep-provenance]

Needs root, iproute2, tcpdump, nftables and ss.  For every scenario a fresh
client — router — server topology is built (see ``_netns``), real sockets are driven in the
client and server namespaces by small agent processes (``_agent``), the router applies
nftables rules or runs an on-path injector (``_injector``), and

* ``OUTDIR/<name>.pcap``: the passive observer, tcpdump on the router's client-facing veth;
* ``OUTDIR/<name>.labels.csv``: one row per RST in that pcap with its true sender and cause;
* ``OUTDIR/manifest.csv``: one row per scenario.

Provenance: tcpdumps inside the client and server namespaces (and on the router's server-facing
veth) record what each endpoint really put on the wire.  An RST in the observer capture that
claims to come from an endpoint but never left that endpoint's namespace was made by the
router.  Causes come from what the scenario did (which side aborted, which rule rejected...)
combined with that provenance and the RST's flags — never from TTL / IP-ID heuristics.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

from tools import _netns as nx

LABEL_COLUMNS = ["scenario", "frame", "ts", "src_h", "src_p", "dst_h", "dst_p", "flags", "seq",
                 "ack", "ttl", "ip_id", "true_sender", "cause", "subcause", "note", "win"]
MANIFEST_COLUMNS = ["name", "description", "ip_version", "expected_rsts", "negative_control",
                    "observed_rsts", "ok", "error"]

BASE_PORT = 8000


class ScenarioError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# Driving agents
# ---------------------------------------------------------------------------------------------


class AgentProc:
    """A socket agent subprocess in a namespace, spoken to with JSON lines (bounded waits)."""

    def __init__(self, ns: str, label: str, events: list) -> None:
        self.label, self.events = label, events
        self.proc = subprocess.Popen(nx.py_module_cmd(ns, "tools._agent"),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=nx.child_env())
        self._buf = b""
        self._pending: str | None = None
        hello = self._read_line(10.0)
        if not hello.get("ready"):
            raise ScenarioError(f"{label} agent did not start: {hello}")

    def _read_line(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ScenarioError(f"{self.label} agent: no reply within {timeout}s")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    raise ScenarioError(f"{self.label} agent exited: {err[-500:]}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def submit(self, op: str, **kw) -> None:
        assert self.proc.stdin is not None and self._pending is None
        self._pending = op
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
        self.proc.stdin.flush()

    def result(self, expect: str | None = None, rpc_timeout: float = 6.0) -> dict:
        """expect: None = must succeed; "any"; or an errno name (e.g. "ECONNREFUSED")
        or a "|"-separated set of acceptable outcomes ("ok" meaning success)."""
        op, self._pending = self._pending, None
        reply = self._read_line(rpc_timeout)
        outcome = "ok" if reply.get("ok") else reply.get("err", "?")
        self.events.append((time.time(), f"{self.label} {op} -> {outcome} {reply}"))
        if expect != "any":
            allowed = {"ok"} if expect is None else set(expect.split("|"))
            if outcome not in allowed:
                raise ScenarioError(f"{self.label} {op}: got {outcome} ({reply}), wanted {allowed}")
        return reply

    def call(self, op: str, expect: str | None = None, **kw) -> dict:
        """Run one op; `timeout` (if given) is the op's own, the RPC waits 3 s longer."""
        self.submit(op, **kw)
        return self.result(expect, float(kw.get("timeout", 3.0)) + 3.0)

    def exit(self) -> None:
        with contextlib.suppress(Exception):
            self.submit("exit")
            self._read_line(3.0)
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(3)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f:
                with contextlib.suppress(OSError):
                    f.close()


class InjectorProc:
    def __init__(self, ns: str, iface: str, port: int, trigger: str, lifetime: float = 20.0,
                 delay: float = 0.002, targets: str = "both") -> None:
        self.proc = subprocess.Popen(
            nx.py_module_cmd(ns, "tools._injector", iface, str(port), trigger, str(lifetime),
                             str(delay), targets),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=nx.child_env())
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], 10.0)
        line = self.proc.stdout.readline() if r else b""
        if b"ready" not in line:
            self.stop()
            raise ScenarioError(f"injector did not start: {line!r}")
        self.sent: list[dict] = []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)
        if self.proc.stdout:
            for line in self.proc.stdout.read().splitlines():
                with contextlib.suppress(ValueError):
                    self.sent.append(json.loads(line))
            self.proc.stdout.close()
        if self.proc.stderr:
            self.proc.stderr.close()


# ---------------------------------------------------------------------------------------------
# Scenario context and registry
# ---------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    topo: nx.Topology
    family: int
    port: int
    events: list = field(default_factory=list)
    agents: list = field(default_factory=list)
    injector: InjectorProc | None = None
    meta: dict = field(default_factory=dict)

    @property
    def caddr(self) -> str:
        return nx.CLIENT6 if self.family == 6 else nx.CLIENT4

    @property
    def saddr(self) -> str:
        return nx.SERVER6 if self.family == 6 else nx.SERVER4

    def client(self) -> AgentProc:
        a = AgentProc(self.topo.client, f"client{len(self.agents)}", self.events)
        self.agents.append(a)
        return a

    def server(self) -> AgentProc:
        a = AgentProc(self.topo.server, f"server{len(self.agents)}", self.events)
        self.agents.append(a)
        return a

    def note(self, text: str) -> None:
        self.events.append((time.time(), text))

    def router_rule(self, rule: str, chain: str = "fwd") -> None:
        self.note(f"router nft {chain}: {rule}")
        self.topo.nft_add(self.topo.router, chain, rule)

    def router_flush(self, chain: str = "fwd") -> None:
        self.note(f"router nft flush {chain}")
        self.topo.nft_flush(self.topo.router, chain)

    def client_rule(self, rule: str) -> None:
        self.note(f"client nft out: {rule}")
        self.topo.nft_add(self.topo.client, "out", rule)

    def client_flush(self) -> None:
        self.note("client nft flush out")
        self.topo.nft_flush(self.topo.client, "out")

    def listen(self, srv: AgentProc, port: int | None = None, name: str = "L") -> None:
        srv.call("listen", name=name, family=self.family, addr=self.saddr, port=port or self.port)

    def connect(self, cli: AgentProc, name: str = "C", port: int | None = None,
                expect: str | None = None, **kw) -> dict:
        return cli.call("connect", expect=expect, name=name, family=self.family, addr=self.saddr,
                        port=port or self.port, **kw)

    def exchange(self, cli: AgentProc, srv: AgentProc, c: str = "C", s: str = "S",
                 req: int = 64, resp: int = 300) -> None:
        """Request/response with the sizes given; both sides read everything."""
        cli.call("send", name=c, data="Q" * req)
        srv.call("recv_all", name=s, n=req)
        srv.call("send", name=s, data="A" * resp)
        cli.call("recv_all", name=c, n=resp)

    def established(self) -> tuple[AgentProc, AgentProc]:
        """Server and client agents with one connection (S / C) that has exchanged data."""
        srv, cli = self.server(), self.client()
        self.listen(srv)
        self.connect(cli)
        srv.call("accept", name="S", listener="L")
        self.exchange(cli, srv)
        return srv, cli

    def clean_session(self, cli: AgentProc, srv: AgentProc, port: int | None = None,
                      c: str = "B", s: str = "BS", listener: str = "L") -> None:
        """A complete, well-behaved connection with FIN close on both sides (no RSTs)."""
        self.connect(cli, name=c, port=port)
        srv.call("accept", name=s, listener=listener)
        self.exchange(cli, srv, c, s)
        cli.call("shutdown", name=c, how="wr")
        srv.call("recv", name=s)  # EOF
        srv.call("close", name=s)
        cli.call("recv", name=c)  # EOF
        cli.call("close", name=c)


Labeler = Callable[["RstRecord", Ctx], "tuple[str, str, str] | None"]


@dataclass
class Scenario:
    name: str
    description: str
    ip_version: int
    expected_rsts: tuple[int, int]
    negative: bool
    run: Callable[[Ctx], None]
    labeler: Labeler

    @property
    def expected_str(self) -> str:
        lo, hi = self.expected_rsts
        return str(lo) if lo == hi else f"{lo}-{hi}"


def rules(*table: tuple[str, str, str, str, str]) -> Labeler:
    """Label by (true_sender, 'R' | 'RA' | '*') -> (cause, subcause, note); first match wins."""

    def label(r: RstRecord, ctx: Ctx) -> tuple[str, str, str] | None:
        for sender, fl, cause, sub, note in table:
            if sender == r.true_sender and fl in ("*", r.flag_kind):
                return cause, sub, note
        return None

    return label


# ---------------------------------------------------------------------------------------------
# The scenarios
# ---------------------------------------------------------------------------------------------


def sc_closed_port(ctx: Ctx) -> None:
    srv, cli = ctx.server(), ctx.client()
    open_port = ctx.port + 1
    ctx.listen(srv, port=open_port)
    ctx.clean_session(cli, srv, port=open_port)  # the host is up: its own TTL is visible
    for i in range(3):
        ctx.connect(cli, name=f"X{i}", expect="ECONNREFUSED", timeout=1.5)
        time.sleep(0.05)


def sc_abort_linger0(side: str) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        srv, cli = ctx.server(), ctx.client()
        ctx.listen(srv)
        ctx.connect(cli)
        srv.call("accept", name="S", listener="L")
        ctx.exchange(cli, srv)
        ctx.exchange(cli, srv, req=200, resp=1000)
        time.sleep(0.05)
        aborter, peer, a, p = (cli, srv, "C", "S") if side == "client" else (srv, cli, "S", "C")
        aborter.call("linger0", name=a)
        aborter.call("close", name=a)
        time.sleep(0.05)
        peer.call("recv", name=p, expect="ECONNRESET", timeout=1.0)

    return run


def sc_abort_unread(ctx: Ctx) -> None:
    srv, cli = ctx.established()
    cli.call("send", name="C", data="U" * 120)
    srv.call("wait_readable", name="S", n=120)
    srv.call("close", name="S")  # 120 bytes never read -> RST+ACK
    time.sleep(0.05)
    cli.call("recv", name="C", expect="ECONNRESET", timeout=1.0)


def sc_half_open_killed(ctx: Ctx) -> None:
    _srv, cli = ctx.established()
    # The server's abort RST never reaches the client: dropped at the router.
    ctx.router_rule(f"tcp sport {ctx.port} tcp flags & rst == rst drop")
    p = nx.run(nx.ns_cmd(ctx.topo.server, "ss", "-K", "-tn", "state", "established",
                         "(", "sport", "=", f":{ctx.port}", ")"), timeout=5)
    ctx.note(f"ss -K in server: {p.stdout.strip()!r}")
    if str(ctx.port) not in p.stdout:
        raise ScenarioError(f"ss -K did not kill anything: {p.stdout} {p.stderr}")
    time.sleep(0.1)
    ctx.router_flush()
    time.sleep(0.05)
    cli.call("send", name="C", data="D" * 100)  # still believes the connection is up
    cli.call("recv", name="C", expect="ECONNRESET", timeout=1.0)


def sc_half_open_data_after_close(ctx: Ctx) -> None:
    srv, cli = ctx.established()
    srv.call("shutdown", name="S", how="wr")  # FIN
    srv.call("close", name="S")
    srv.exit()  # the server process is gone
    cli.call("recv", name="C")  # EOF seen, but the client ignores it and goes on
    time.sleep(0.1)
    cli.call("send", name="C", data="L" * 80)
    cli.call("recv", name="C", expect="any", timeout=0.5)  # EOF was seen already
    cli.call("send", name="C", data="L", expect="EPIPE|ECONNRESET")


def sc_half_open_server_restarted(ctx: Ctx) -> None:
    srv, cli = ctx.established()
    # The server host "crashes": nothing it sends from now on gets out.
    ctx.router_rule(f"tcp sport {ctx.port} drop")
    srv.exit()  # process dies -> FIN (dropped); the orphan lingers in FIN_WAIT1...
    time.sleep(0.05)
    p = nx.run(nx.ns_cmd(ctx.topo.server, "ss", "-K", "-tn", "(", "sport", "=", f":{ctx.port}", ")"),
               timeout=5)  # ...until the "reboot" wipes it (its RST is dropped too)
    ctx.note(f"ss -K in server: {p.stdout.strip()!r}")
    time.sleep(0.1)
    ctx.router_flush()
    srv2 = ctx.server()  # restarted, listening again
    ctx.listen(srv2)
    time.sleep(0.05)
    cli.call("send", name="C", data="K" * 100)  # on the old connection
    cli.call("recv", name="C", expect="ECONNRESET", timeout=1.0)
    cli.call("close", name="C")
    ctx.clean_session(cli, srv2)  # the client reconnects fine


def sc_half_open_stale_reuse(ctx: Ctx) -> None:
    srv, cli = ctx.server(), ctx.client()
    sport = 40000 + ctx.port % 1000
    ctx.listen(srv)
    ctx.connect(cli, sport=sport)
    srv.call("accept", name="S", listener="L")
    ctx.exchange(cli, srv)
    # The client host loses the connection without telling anyone: its abort RST never leaves
    # the client namespace (dropped on output there, so not even the observer sees it).
    ctx.client_rule(f"tcp sport {sport} tcp flags & rst == rst drop")
    cli.call("linger0", name="C")
    cli.call("close", name="C")
    time.sleep(0.05)
    ctx.client_flush()
    # Same 4-tuple again: server challenge-ACKs the SYN, client kernel RSTs, SYN retried.
    ctx.connect(cli, name="C2", sport=sport, timeout=3.0)
    srv.call("accept", name="S2", listener="L")
    ctx.exchange(cli, srv, "C2", "S2")
    srv.call("recv", name="S", expect="ECONNRESET", timeout=1.0)  # the old one was reset
    cli.call("shutdown", name="C2", how="wr")
    srv.call("recv", name="S2")
    srv.call("close", name="S2")
    cli.call("recv", name="C2")
    cli.call("close", name="C2")


def sc_reject_syn(ctx: Ctx) -> None:
    srv, cli = ctx.server(), ctx.client()
    open_port = ctx.port + 1
    ctx.listen(srv, port=open_port)
    ctx.listen(srv, name="L2")  # the server does listen on the blocked port
    ctx.router_rule(f"tcp dport {ctx.port} reject with tcp reset")
    ctx.clean_session(cli, srv, port=open_port)  # the server's own TTL, for comparison
    for i in range(3):
        ctx.connect(cli, name=f"X{i}", expect="ECONNREFUSED", timeout=1.5)
        time.sleep(0.05)


def sc_reject_midconn(ctx: Ctx) -> None:
    srv, cli = ctx.established()
    # Only the client's data segments are rejected; its bare RSTs still pass.
    ctx.router_rule(f"tcp dport {ctx.port} tcp flags & psh == psh reject with tcp reset")
    cli.call("send", name="C", data="M" * 100)
    cli.call("recv", name="C", expect="ECONNRESET", timeout=1.0)
    time.sleep(0.05)
    srv.call("send", name="S", data="late server data")  # hits the client's kernel: no socket
    srv.call("recv", name="S", expect="ECONNRESET", timeout=1.0)


TRIGGER = "FORBIDDEN"


def sc_injector(targets: str, inject_delay: float, reply_delay: float) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        srv, cli = ctx.server(), ctx.client()
        ctx.injector = InjectorProc(ctx.topo.router, ctx.topo.if_rc, ctx.port, TRIGGER,
                                    delay=inject_delay, targets=targets)
        ctx.listen(srv)
        ctx.connect(cli)
        srv.call("accept", name="S", listener="L")
        ctx.exchange(cli, srv)  # innocent traffic passes
        srv.submit("recv_reply", name="S", reply="<html>" + "R" * 500 + "</html>",
                   delay=reply_delay, timeout=2.0)
        time.sleep(0.02)
        ctx.note("client sends trigger")
        cli.call("send", name="C", data=f"GET /{TRIGGER} HTTP/1.1\r\nHost: x\r\n\r\n")
        srv.result(expect="ok|ECONNRESET|EPIPE")  # the real reply races the injected RSTs
        cli.call("recv", name="C", expect="any", timeout=0.5)
        time.sleep(0.2)
        # Both applications carry on as if nothing happened; whatever still arrives at a reset
        # endpoint draws its kernel's RST.
        cli.call("send", name="C", data="more?", expect="any")
        srv.call("send", name="S", data="more!", expect="any")
        time.sleep(0.2)
        cli.call("recv", name="C", expect="any", timeout=0.3)
        srv.call("recv", name="S", expect="any", timeout=0.3)

    return run


def sc_keepalive(ctx: Ctx) -> None:
    _srv, cli = ctx.established()
    cli.call("keepalive", name="C", idle=1, intvl=1, cnt=2)
    # The server vanishes from the client's point of view (its packets are dropped).
    ctx.router_rule(f"tcp sport {ctx.port} drop")
    cli.call("recv", name="C", expect="ETIMEDOUT", timeout=6.0)
    time.sleep(0.05)


def sc_clean_close(ctx: Ctx) -> None:
    srv, cli = ctx.server(), ctx.client()
    ctx.listen(srv)
    ctx.clean_session(cli, srv)


def sc_syn_dropped(ctx: Ctx) -> None:
    cli = ctx.client()
    ctx.router_rule(f"tcp dport {ctx.port} tcp flags & (syn|ack) == syn drop")
    ctx.connect(cli, expect="TIMEOUT", timeout=1.5)


SECONDARY = "secondary:middlebox"

SCENARIOS: list[Scenario] = [
    Scenario("closed_port_v4", "SYN to a port with no listener, 3 attempts (after one clean "
             "connection to an open port) -> server kernel RST+ACK each", 4, (3, 3), False,
             sc_closed_port, rules(("server", "RA", "closed_port", "no_listener", ""))),
    Scenario("closed_port_v6", "IPv6: SYN to a port with no listener, 3 attempts", 6, (3, 3), False,
             sc_closed_port, rules(("server", "RA", "closed_port", "no_listener", ""))),
    Scenario("abort_linger0_client", "established, data both ways, client SO_LINGER{1,0} close",
             4, (1, 1), False, sc_abort_linger0("client"),
             rules(("client", "RA", "abort", "linger_zero", ""))),
    Scenario("abort_linger0_server", "established, data both ways, server SO_LINGER{1,0} close",
             4, (1, 1), False, sc_abort_linger0("server"),
             rules(("server", "RA", "abort", "linger_zero", ""))),
    Scenario("abort_linger0_client_v6", "IPv6: client SO_LINGER{1,0} close", 6, (1, 1), False,
             sc_abort_linger0("client"), rules(("client", "RA", "abort", "linger_zero", ""))),
    Scenario("abort_unread_data", "server close()s with 120 bytes of client data unread",
             4, (1, 1), False, sc_abort_unread,
             rules(("server", "RA", "abort", "unread_data", ""))),
    Scenario("abort_keepalive_timeout", "server's packets blackholed; client keepalive "
             "(idle 1s, intvl 1s, cnt 2) gives up -> client RST+ACK", 4, (1, 1), False,
             sc_keepalive, rules(("client", "RA", "abort", "keepalive_timeout", ""))),
    Scenario("half_open_killed", "server socket destroyed with ss -K (its RST dropped at the "
             "router); the client's next data draws a bare RST", 4, (1, 1), False,
             sc_half_open_killed,
             rules(("server", "R", "half_open", "lost_state", ""),
                   ("server", "RA", "abort", "socket_destroyed", ""))),
    Scenario("half_open_killed_v6", "IPv6: server socket destroyed with ss -K, client sends",
             6, (1, 1), False, sc_half_open_killed,
             rules(("server", "R", "half_open", "lost_state", ""),
                   ("server", "RA", "abort", "socket_destroyed", ""))),
    Scenario("half_open_data_after_close", "server sends FIN and exits; the client keeps "
             "sending -> server bare RST", 4, (1, 1), False, sc_half_open_data_after_close,
             rules(("server", "R", "half_open", "data_after_close", ""))),
    Scenario("half_open_server_restarted", "server's FIN/RST blackholed while it dies, process "
             "restarts listening; client sends on the old connection -> bare RST, then a clean "
             "new connection", 4, (1, 1), False, sc_half_open_server_restarted,
             rules(("server", "R", "half_open", "lost_state", ""))),
    Scenario("half_open_stale_reuse", "client loses its connection silently and reconnects "
             "from the same port: challenge ACK, client bare RST, SYN retried", 4, (1, 1), False,
             sc_half_open_stale_reuse, rules(("client", "R", "half_open", "stale_reuse", ""))),
    Scenario("middlebox_reject_syn", "router nft 'reject with tcp reset' on the SYN (3 "
             "attempts; a clean connection to another port first)", 4, (3, 3), False,
             sc_reject_syn, rules(("router", "RA", "middlebox", "reject", ""))),
    Scenario("middlebox_reject_syn_v6", "IPv6: router nft 'reject with tcp reset' on the SYN",
             6, (3, 3), False, sc_reject_syn, rules(("router", "RA", "middlebox", "reject", ""))),
    Scenario("middlebox_reject_midconn", "router starts rejecting the client's data segments "
             "with tcp reset mid-connection; the server's later data draws the client's bare RST",
             4, (2, 2), False, sc_reject_midconn,
             rules(("router", "R", "middlebox", "reject", ""),
                   ("client", "R", "half_open", "lost_state", SECONDARY))),
    Scenario("middlebox_injector", "on-path injector on the router spoofs GFW-like RST bursts "
             "to both ends on b'FORBIDDEN' (2 ms late); the real server reply wins the race, the "
             "client survives, the server is reset and the client's next data draws its bare RST",
             4, (4, 7), False, sc_injector("both", 0.002, 0.0),
             rules(("router", "*", "middlebox", "injected", ""),
                   ("client", "R", "half_open", "lost_state", SECONDARY),
                   ("server", "R", "half_open", "lost_state", SECONDARY))),
    Scenario("middlebox_injector_client_only", "one-sided injector resets only the client, at "
             "at once; the server's next segment (its delayed ACK; its reply is 100 ms late) "
             "draws the reset client's bare RST, which resets the server", 4, (4, 6), False, sc_injector("client", 0.0, 0.1),
             rules(("router", "*", "middlebox", "injected", ""),
                   ("client", "R", "half_open", "lost_state", SECONDARY),
                   ("server", "R", "half_open", "lost_state", SECONDARY))),
    Scenario("clean_close", "negative control: request/response and FIN close", 4, (0, 0), True,
             sc_clean_close, rules()),
    Scenario("syn_dropped", "negative control: router drops the SYN; client gives up after "
             "1.5 s", 4, (0, 0), True, sc_syn_dropped, rules()),
]

_BY_NAME = {s.name: s for s in SCENARIOS}


# ---------------------------------------------------------------------------------------------
# Captures -> records
# ---------------------------------------------------------------------------------------------


@dataclass
class Pkt:
    frame: int
    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    flags: int
    seq: int
    ack: int
    win: int
    ttl: int
    ip_id: int | None
    df: bool
    opts: bytes
    payload: int

    @property
    def key(self) -> tuple:
        return (self.src, self.sport, self.dst, self.dport, self.flags, self.seq, self.ack,
                self.win, self.ip_id)

    @property
    def is_rst(self) -> bool:
        return bool(self.flags & dpkt.tcp.TH_RST)


def flag_str(flags: int) -> str:
    return "".join(c for bit, c in ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"),
                                    (0x10, "A"), (0x20, "U"), (0x40, "E"), (0x80, "C"))
                   if flags & bit)


def read_pcap(path: Path) -> list[Pkt]:
    import ipaddress

    out: list[Pkt] = []
    if not path.exists() or path.stat().st_size < 24:
        return out
    with path.open("rb") as f:
        for i, (ts, buf) in enumerate(dpkt.pcap.Reader(f), start=1):
            try:
                eth = dpkt.ethernet.Ethernet(buf)
            except dpkt.UnpackError:
                continue
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP):
                ttl, ip_id, df = ip.ttl, ip.id, bool(ip.df)
            elif isinstance(ip, dpkt.ip6.IP6):
                ttl, ip_id, df = ip.hlim, None, False
            else:
                continue
            tcp = ip.data
            if not isinstance(tcp, dpkt.tcp.TCP):
                continue
            out.append(Pkt(i, float(ts), str(ipaddress.ip_address(ip.src)), tcp.sport,
                           str(ipaddress.ip_address(ip.dst)), tcp.dport, tcp.flags, tcp.seq,
                           tcp.ack, tcp.win, ttl, ip_id, df, bytes(tcp.opts), len(tcp.data)))
    return out


@dataclass
class RstRecord:
    pkt: Pkt
    claimed: str  # which endpoint the source address belongs to
    true_sender: str
    cause: str = "unknown"
    subcause: str = ""
    note: str = ""

    @property
    def flag_kind(self) -> str:
        return "RA" if self.pkt.flags & dpkt.tcp.TH_ACK else "R"

    def row(self, scenario: str) -> dict:
        p = self.pkt
        return {"scenario": scenario, "frame": p.frame, "ts": f"{p.ts:.6f}", "src_h": p.src,
                "src_p": p.sport, "dst_h": p.dst, "dst_p": p.dport, "flags": flag_str(p.flags),
                "seq": p.seq, "ack": p.ack, "ttl": p.ttl,
                "ip_id": "" if p.ip_id is None else p.ip_id, "true_sender": self.true_sender,
                "cause": self.cause, "subcause": self.subcause, "note": self.note, "win": p.win}


def attribute(observer: list[Pkt], client_cap: list[Pkt], server_cap: list[Pkt]) -> list[RstRecord]:
    """True sender of every observed RST: the endpoint it claims, if that endpoint's own
    capture has the identical segment (same 4-tuple, flags, seq, ack, window, IP ID), else the
    router (netfilter reject or injector)."""
    client_addrs, server_addrs = {nx.CLIENT4, nx.CLIENT6}, {nx.SERVER4, nx.SERVER6}
    sent = {"client": Counter(p.key for p in client_cap if p.src in client_addrs),
            "server": Counter(p.key for p in server_cap if p.src in server_addrs)}
    out = []
    for p in observer:
        if not p.is_rst:
            continue
        claimed = "client" if p.src in client_addrs else "server" if p.src in server_addrs else "other"
        if claimed in sent and sent[claimed][p.key] > 0:
            sent[claimed][p.key] -= 1
            true_sender = claimed
        else:
            true_sender = "router"
        out.append(RstRecord(p, claimed, true_sender))
    return out


def hidden_rsts(observer: list[Pkt], client_cap: list[Pkt], server_cap: list[Pkt],
                router_s: list[Pkt]) -> list[dict]:
    """RSTs an endpoint really sent that the observer never saw (dropped on purpose by the
    scenario, e.g. the ss -K abort in half_open_killed)."""
    seen = Counter(p.key for p in observer if p.is_rst)
    at_router = Counter(p.key for p in router_s if p.is_rst)
    out = []
    for who, cap, addrs in (("client", client_cap, {nx.CLIENT4, nx.CLIENT6}),
                            ("server", server_cap, {nx.SERVER4, nx.SERVER6})):
        for p in cap:
            if not p.is_rst or p.src not in addrs:
                continue
            if seen[p.key] > 0:
                seen[p.key] -= 1
                continue
            out.append({"sender": who, "ts": p.ts, "flags": flag_str(p.flags), "seq": p.seq,
                        "ack": p.ack, "sport": p.sport, "dport": p.dport,
                        "reached_router": at_router[p.key] > 0 if who == "server" else None})
    return out


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    name: str
    description: str
    ip_version: int
    negative: bool
    expected_rsts: tuple[int, int]
    pcap: Path
    labels_csv: Path
    rsts: list[RstRecord]
    duration: float
    error: str | None = None
    events: list = field(default_factory=list)
    injected: list[dict] = field(default_factory=list)
    provenance: dict[str, Path] = field(default_factory=dict)
    hidden_rsts: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        lo, hi = self.expected_rsts
        return (self.error is None and lo <= len(self.rsts) <= hi
                and all(r.cause != "unknown" for r in self.rsts))


def _cleanup(steps: list[Callable[[], None]]) -> None:
    """Run every step even if one fails or a KeyboardInterrupt arrives meanwhile; re-raise the
    first problem afterwards.  topo.down() (last) SIGKILLs whatever is left in our namespaces."""
    first: BaseException | None = None
    for step in steps:
        for _attempt in range(2):  # a second Ctrl-C during a step gets one more try
            try:
                step()
                break
            except BaseException as e:
                first = first or e
    if first is not None:
        raise first


def _run_one(sc: Scenario, idx: int, outdir: Path, provdir: Path) -> ScenarioResult:
    t0 = time.monotonic()
    topo = nx.Topology(tag=idx)
    ctx = Ctx(topo, sc.ip_version, BASE_PORT + 10 * idx)
    pcap = outdir / f"{sc.name}.pcap"
    labels = outdir / f"{sc.name}.labels.csv"
    prov = {"client": provdir / f"{sc.name}.client.pcap",
            "server": provdir / f"{sc.name}.server.pcap",
            "router_s": provdir / f"{sc.name}.router_s.pcap"}
    error: str | None = None
    caps: list[nx.Capture] = []
    try:
        topo.up()
        for ns in (topo.router, topo.client, topo.server):
            topo.nft_base(ns)
        caps = [nx.Capture(topo.router, topo.if_rc, pcap), nx.Capture(topo.client, topo.if_c, prov["client"]),
                nx.Capture(topo.server, topo.if_s, prov["server"]),
                nx.Capture(topo.router, topo.if_rs, prov["router_s"])]
        for c in caps:
            c.spawn()
        for c in caps:
            c.wait_ready()
        ctx.note(f"start {sc.name}")
        try:
            sc.run(ctx)
        except (ScenarioError, nx.NetnsError, subprocess.TimeoutExpired) as e:
            error = f"{type(e).__name__}: {e}"
        time.sleep(0.15)  # let the last packets cross the router
    finally:
        steps = [a.stop for a in ctx.agents]
        if ctx.injector is not None:
            steps.append(ctx.injector.stop)
        steps += [c.stop for c in caps]
        steps.append(topo.down)
        _cleanup(steps)
    observed = read_pcap(pcap)
    client_cap, server_cap = read_pcap(prov["client"]), read_pcap(prov["server"])
    rsts = attribute(observed, client_cap, server_cap)
    hidden = hidden_rsts(observed, client_cap, server_cap, read_pcap(prov["router_s"]))
    for r in rsts:
        lab = sc.labeler(r, ctx)
        if lab is None:
            r.cause, r.subcause, r.note = "unknown", "", f"unexpected RST from {r.true_sender}"
        else:
            r.cause, r.subcause, r.note = lab
    with labels.open("w", newline="") as f:
        w = csv.DictWriter(f, LABEL_COLUMNS)
        w.writeheader()
        for r in rsts:
            w.writerow(r.row(sc.name))
    return ScenarioResult(sc.name, sc.description, sc.ip_version, sc.negative, sc.expected_rsts,
                          pcap, labels, rsts, time.monotonic() - t0, error, ctx.events,
                          ctx.injector.sent if ctx.injector else [], prov, hidden)


def write_manifest(outdir: Path, results: list[ScenarioResult]) -> Path:
    path = outdir / "manifest.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, MANIFEST_COLUMNS)
        w.writeheader()
        for r in results:
            sc = _BY_NAME[r.name]
            w.writerow({"name": r.name, "description": r.description, "ip_version": r.ip_version,
                        "expected_rsts": sc.expected_str, "negative_control": str(r.negative).lower(),
                        "observed_rsts": len(r.rsts), "ok": str(r.ok).lower(), "error": r.error or ""})
    return path


def preflight() -> str | None:
    """Why the generator cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root"
    missing = nx.missing_tools()
    if missing:
        return "missing tools: " + ", ".join(missing)
    return None


def run_scenarios(outdir: Path, names: list[str] | None = None,
                  keep_provenance: bool = False) -> list[ScenarioResult]:
    """Run the named scenarios (all by default) and write pcaps, labels and the manifest."""
    why = preflight()
    if why:
        raise RuntimeError(f"cannot run scenarios: {why}")
    unknown = [n for n in names or [] if n not in _BY_NAME]
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(unknown)}")
    selected = [s for s in SCENARIOS if names is None or s.name in names]
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    nx.remove_stale_namespaces()
    results = []
    with contextlib.ExitStack() as stack:
        if keep_provenance:
            provdir = outdir / "provenance"
            provdir.mkdir(exist_ok=True)
        else:
            provdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rstl-prov-")))
        for sc in selected:
            results.append(_run_one(sc, SCENARIOS.index(sc), outdir, provdir))
    write_manifest(outdir, results)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.scenarios", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path, nargs="?")
    ap.add_argument("--only", nargs="+", action="extend", metavar="NAME", default=None)
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--keep-provenance", action="store_true",
                    help="keep the endpoint/router provenance captures in OUTDIR/provenance")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each scenario's events")
    args = ap.parse_args(argv)
    if args.list:
        for s in SCENARIOS:
            kind = "negative control" if s.negative else f"{s.expected_str} RST"
            print(f"{s.name:28s} IPv{s.ip_version}  {kind:16s} {s.description}")
        return 0
    if args.outdir is None:
        ap.error("OUTDIR is required")

    def _term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    t0 = time.monotonic()
    try:
        results = run_scenarios(args.outdir, args.only, args.keep_provenance)
    except KeyboardInterrupt:
        print("interrupted; namespaces and processes cleaned up", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bad = 0
    for r in results:
        status = "ok " if r.ok else "BAD"
        bad += not r.ok
        causes = Counter(f"{x.true_sender}:{x.cause}/{x.subcause}" for x in r.rsts)
        print(f"{status} {r.name:28s} {r.duration:5.1f}s  {len(r.rsts)} RST  "
              f"{dict(causes) or ''} {r.error or ''}")
        if args.verbose or not r.ok:
            for ts, ev in r.events:
                print(f"      {ts:.6f} {ev}")
    print(f"{len(results)} scenarios in {time.monotonic() - t0:.1f}s -> {args.outdir}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
