"""The real-kernel ground truth is itself sound (checked with dpkt only, not with rstlens).

All scenarios run once per session (about 30 s) into a temporary directory; every test then
reads the observer pcaps, the label CSVs and the provenance captures.
"""

from __future__ import annotations

import csv
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import dpkt
import pytest

pytestmark = [pytest.mark.netns, pytest.mark.slow]

CLIENT = {"10.77.1.2", "fd77:1::2"}
SERVER = {"10.77.2.2", "fd77:2::2"}
TS_OPT = dpkt.tcp.TCP_OPT_TIMESTAMP
R, A, S, F, P = dpkt.tcp.TH_RST, dpkt.tcp.TH_ACK, dpkt.tcp.TH_SYN, dpkt.tcp.TH_FIN, dpkt.tcp.TH_PUSH


@dataclass
class W:
    """One TCP segment as dpkt sees it."""

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
    opts: list[int]
    data: bytes

    @property
    def plen(self) -> int:
        return len(self.data)

    @property
    def rst(self) -> bool:
        return bool(self.flags & R)

    @property
    def end(self) -> int:
        """Sequence number just after this segment."""
        return (self.seq + self.plen + bool(self.flags & S) + bool(self.flags & F)) & 0xFFFFFFFF

    def key(self) -> tuple:
        return (self.src, self.sport, self.dst, self.dport, self.flags, self.seq, self.ack,
                self.win, self.ip_id)

    def same_conn(self, other: W) -> bool:
        return {(self.src, self.sport), (self.dst, self.dport)} == {
            (other.src, other.sport), (other.dst, other.dport)}


def wire(path: Path) -> list[W]:
    out = []
    with path.open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        for i, (ts, buf) in enumerate(reader, start=1):
            eth = dpkt.ethernet.Ethernet(buf)
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
            opts = [k for k, _ in dpkt.tcp.parse_opts(tcp.opts)]
            out.append(W(i, ts, str(ipaddress.ip_address(ip.src)), tcp.sport,
                         str(ipaddress.ip_address(ip.dst)), tcp.dport, tcp.flags, tcp.seq,
                         tcp.ack, tcp.win, ttl, ip_id, df, opts, bytes(tcp.data)))
    return out


@dataclass
class Run:
    outdir: Path
    results: dict

    def pcap(self, name: str) -> list[W]:
        return wire(self.outdir / f"{name}.pcap")

    def prov(self, name: str, who: str) -> list[W]:
        return wire(self.outdir / "provenance" / f"{name}.{who}.pcap")

    def labels(self, name: str) -> list[dict]:
        with (self.outdir / f"{name}.labels.csv").open(newline="") as f:
            return list(csv.DictReader(f))

    def rsts(self, name: str) -> list[tuple[W, dict]]:
        """(segment, label row) for every RST in the observer capture, in frame order."""
        pkts = {p.frame: p for p in self.pcap(name)}
        return [(pkts[int(row["frame"])], row) for row in self.labels(name)]


@pytest.fixture(scope="session")
def gt(ground_truth) -> Run:
    out, results = ground_truth
    return Run(out, results)


def before(pkts: list[W], rst: W) -> list[W]:
    return [p for p in pkts if p.frame < rst.frame and p.same_conn(rst)]


def last_from(pkts: list[W], rst: W, src: str) -> W:
    """The last segment of the RST's connection that `src` sent before the RST."""
    cands = [p for p in before(pkts, rst) if p.src == src]
    assert cands, f"nothing from {src} before frame {rst.frame}"
    return cands[-1]


def is_reactive(p: W) -> None:
    """Linux's no-socket reset path: IP ID 0, DF, window 0, no TCP options."""
    if p.ip_id is not None:
        assert p.ip_id == 0 and p.df, p
    assert p.win == 0 and p.opts == [], p


def server_ttls(pkts: list[W]) -> set[int]:
    return {p.ttl for p in pkts if p.src in SERVER and not p.rst}


# ---------------------------------------------------------------------------------------------


def core(gt: Run) -> list[str]:
    """The original scenarios (Ethernet observers, senders client/server/router); the issue-17
    field scenarios have their own checks in test_field_scenarios.py."""
    return [name for name, r in gt.results.items() if r.group == "core"]


def test_every_scenario_ran_cleanly(gt: Run) -> None:
    from tools.scenarios import SCENARIOS

    assert set(gt.results) == {s.name for s in SCENARIOS}
    for name, r in gt.results.items():
        if r.group != "core" and (r.error or "").startswith("skipped:"):
            continue  # a Debian tool it needs is missing (test_field_scenarios says which)
        assert r.error is None, (name, r.error, r.events)
        lo, hi = r.expected_rsts
        assert lo <= len(r.rsts) <= hi, (name, len(r.rsts), r.events)
        assert r.ok, name
    total = sum(r.duration for r in gt.results.values())
    assert total < 300, f"scenarios took {total:.0f}s"  # ~30 s on an idle 2-core machine


def test_manifest(gt: Run) -> None:
    with (gt.outdir / "manifest.csv").open(newline="") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    assert set(rows) == set(gt.results)
    for name, row in rows.items():
        if row["error"].startswith("skipped:"):
            continue
        assert row["ip_version"] in ("4", "6")
        assert row["negative_control"] == ("true" if gt.results[name].negative else "false")
        lo, _, hi = row["expected_rsts"].partition("-")
        assert int(lo) <= int(row["observed_rsts"]) <= int(hi or lo)
        assert row["description"]


def test_every_rst_has_exactly_one_matching_label(gt: Run) -> None:
    causes = {"closed_port", "half_open", "abort", "middlebox"}
    for name in core(gt):
        pkts = gt.pcap(name)
        rst_frames = [p.frame for p in pkts if p.rst]
        rows = gt.labels(name)
        assert [int(r["frame"]) for r in rows] == rst_frames, name
        by_frame = {p.frame: p for p in pkts}
        for row in rows:
            p = by_frame[int(row["frame"])]
            assert row["scenario"] == name
            assert (row["src_h"], int(row["src_p"]), row["dst_h"], int(row["dst_p"])) == (
                p.src, p.sport, p.dst, p.dport)
            assert (int(row["seq"]), int(row["ack"]), int(row["ttl"])) == (p.seq, p.ack, p.ttl)
            assert row["ip_id"] == ("" if p.ip_id is None else str(p.ip_id))
            assert abs(float(row["ts"]) - p.ts) < 1e-5
            assert row["flags"] == ("RA" if p.flags & A else "R")
            assert row["true_sender"] in ("client", "server", "router")
            assert row["cause"] in causes, row


def test_negative_controls_have_no_rst(gt: Run) -> None:
    for name in ("clean_close", "syn_dropped"):
        assert gt.results[name].negative
        pkts = gt.pcap(name)
        assert pkts, name
        assert not [p for p in pkts if p.rst], name
    syns = [p for p in gt.pcap("syn_dropped") if p.flags == S]
    assert len(syns) >= 2 and len({p.seq for p in syns}) == 1  # a retransmitted SYN, no answer
    assert all(p.src in CLIENT for p in gt.pcap("syn_dropped"))
    fins = [p for p in gt.pcap("clean_close") if p.flags & F]
    assert {p.src in CLIENT for p in fins} == {True, False}


@pytest.mark.parametrize("name", ["closed_port_v4", "closed_port_v6"])
def test_closed_port(gt: Run, name: str) -> None:
    pkts = gt.pcap(name)
    rsts = gt.rsts(name)
    assert len(rsts) == 3
    syn_ports = set()
    for p, row in rsts:
        syn = last_from(pkts, p, p.dst)
        assert syn.flags == S
        assert p.flags == R | A and p.seq == 0 and p.ack == (syn.seq + 1) & 0xFFFFFFFF
        is_reactive(p)
        assert p.src in SERVER and row["true_sender"] == "server"
        assert (row["cause"], row["subcause"]) == ("closed_port", "no_listener")
        syn_ports.add(p.dport)
    assert len(syn_ports) == 3
    # the RST's TTL is the server's own, as seen on the clean connection to the open port
    assert server_ttls(pkts) == {63} == {p.ttl for p, _ in rsts}
    srv_sent = {q.key() for q in gt.prov(name, "server")}
    assert all(p.key() in srv_sent for p, _ in rsts)


ABORTS = {"abort_linger0_client": ("client", "linger_zero"),
          "abort_linger0_server": ("server", "linger_zero"),
          "abort_linger0_client_v6": ("client", "linger_zero"),
          "abort_unread_data": ("server", "unread_data"),
          "abort_keepalive_timeout": ("client", "keepalive_timeout")}


@pytest.mark.parametrize("name", sorted(ABORTS))
def test_abort_is_active_rst(gt: Run, name: str) -> None:
    who, sub = ABORTS[name]
    pkts = gt.pcap(name)
    [(p, row)] = gt.rsts(name)
    me = CLIENT if who == "client" else SERVER
    assert p.src in me and row["true_sender"] == who
    assert (row["cause"], row["subcause"]) == ("abort", sub)
    assert p.flags == R | A
    mine = [q for q in before(pkts, p) if q.src == p.src]
    theirs = [q for q in before(pkts, p) if q.src == p.dst]
    if sub == "keepalive_timeout":
        # unanswered probes: empty ACKs with seq = SND.UNA - 1 (only our side is visible)
        probes = [q for q in mine if q.plen == 0 and q.flags == A and q.seq == p.seq - 1]
        assert len(probes) >= 2, mine
        assert p.seq == max(q.end for q in mine)
    else:
        assert p.seq == max(q.end for q in mine)  # SND.NXT
    assert p.ack == max(q.end for q in theirs)  # RCV.NXT: everything the peer sent
    assert p.win > 0 and TS_OPT in p.opts  # a live socket's window and timestamps
    assert p.ttl == mine[-1].ttl
    if p.ip_id is not None:
        assert p.df and p.ip_id != 0
        assert 0 < (p.ip_id - mine[-1].ip_id) % 65536 <= 3  # continues the socket's IP IDs
    if sub == "unread_data":
        assert theirs[-1].plen > 0 and theirs[-1].end == p.ack  # the unread bytes were ACKed


HALF_OPEN = {"half_open_killed": "lost_state", "half_open_killed_v6": "lost_state",
             "half_open_data_after_close": "data_after_close",
             "half_open_server_restarted": "lost_state"}


@pytest.mark.parametrize("name", sorted(HALF_OPEN))
def test_half_open_server_bare_rst(gt: Run, name: str) -> None:
    pkts = gt.pcap(name)
    [(p, row)] = gt.rsts(name)
    assert p.src in SERVER and row["true_sender"] == "server"
    assert (row["cause"], row["subcause"]) == ("half_open", HALF_OPEN[name])
    trigger = last_from(pkts, p, p.dst)
    assert trigger.flags & A and trigger.plen > 0
    assert p.flags == R and p.seq == trigger.ack and p.ack == 0
    is_reactive(p)  # no timestamp option ...
    syn = next(q for q in pkts if q.flags == S and q.same_conn(p))
    assert TS_OPT in syn.opts  # ... although timestamps were negotiated
    assert p.ttl == 63
    server_fin = [q for q in before(pkts, p) if q.src in SERVER and q.flags & F]
    if HALF_OPEN[name] == "data_after_close":
        assert server_fin  # the server had said goodbye
    else:
        assert not server_fin  # the server vanished without a word visible to the observer


@pytest.mark.parametrize("name", ["half_open_killed", "half_open_killed_v6",
                                  "half_open_server_restarted"])
def test_half_open_hidden_server_reset(gt: Run, name: str) -> None:
    """The server's own abort RST existed but was dropped before the observer."""
    hidden = gt.results[name].hidden_rsts
    assert any(h["sender"] == "server" and h["flags"] == "RA" and h["reached_router"]
               for h in hidden), hidden
    srv_rst = [q for q in gt.prov(name, "server") if q.rst and q.flags & A]
    observed = {q.key() for q in gt.pcap(name)}
    assert srv_rst and all(q.key() not in observed for q in srv_rst)


def test_server_restarted_then_reconnects(gt: Run) -> None:
    pkts = gt.pcap("half_open_server_restarted")
    [(p, _)] = gt.rsts("half_open_server_restarted")
    later_synacks = [q for q in pkts if q.frame > p.frame and q.flags == S | A]
    assert later_synacks and all(not q.same_conn(p) for q in later_synacks)


def test_half_open_stale_reuse(gt: Run) -> None:
    pkts = gt.pcap("half_open_stale_reuse")
    [(p, row)] = gt.rsts("half_open_stale_reuse")
    assert p.src in CLIENT and row["true_sender"] == "client"
    assert (row["cause"], row["subcause"]) == ("half_open", "stale_reuse")
    prior = before(pkts, p)
    challenge, syn = prior[-1], prior[-2]
    assert syn.src in CLIENT and syn.flags == S
    assert challenge.src in SERVER and challenge.flags == A and challenge.plen == 0
    assert challenge.ack != (syn.seq + 1) & 0xFFFFFFFF  # the old connection's ack
    assert p.flags == R and p.seq == challenge.ack and p.ack == 0
    is_reactive(p)
    retry = [q for q in pkts if q.frame > p.frame and q.flags == S and q.same_conn(p)]
    assert retry and retry[0].seq == syn.seq and retry[0].ts - p.ts < 0.5
    synack = [q for q in pkts if q.frame > retry[0].frame and q.flags == S | A and q.same_conn(p)]
    assert synack and synack[0].ack == (syn.seq + 1) & 0xFFFFFFFF
    # the client's own abort of the old connection never reached the wire
    assert not [q for q in prior if q.rst]
    assert [q for q in prior if q.flags == S | A]  # the first connection was the same 4-tuple


@pytest.mark.parametrize("name", ["middlebox_reject_syn", "middlebox_reject_syn_v6"])
def test_reject_syn(gt: Run, name: str) -> None:
    pkts = gt.pcap(name)
    rsts = gt.rsts(name)
    assert len(rsts) == 3
    srv_sent = {q.key() for q in gt.prov(name, "server")}
    for p, row in rsts:
        syn = last_from(pkts, p, p.dst)
        assert syn.flags == S
        assert p.flags == R | A and p.seq == 0 and p.ack == (syn.seq + 1) & 0xFFFFFFFF
        is_reactive(p)  # the same form as a closed port ...
        assert p.ttl == 64  # ... but the router's TTL
        assert p.key() not in srv_sent and row["true_sender"] == "router"
        assert (row["cause"], row["subcause"]) == ("middlebox", "reject")
    assert server_ttls(pkts) == {63}
    # the server never even saw those SYNs
    blocked = {p.dport for p, _ in rsts}
    assert not [q for q in gt.prov(name, "server") if q.src in CLIENT and q.sport in blocked]


def test_reject_midconn(gt: Run) -> None:
    name = "middlebox_reject_midconn"
    pkts = gt.pcap(name)
    (rej, rrow), (sec, srow) = gt.rsts(name)
    dropped = last_from(pkts, rej, rej.dst)
    assert dropped.plen > 0 and dropped.flags & P
    assert rej.src in SERVER and rej.flags == R and rej.seq == dropped.ack
    is_reactive(rej)
    assert rej.ttl == 64 and server_ttls(pkts) == {63}
    assert (rrow["true_sender"], rrow["cause"], rrow["subcause"]) == ("router", "middlebox", "reject")
    assert rej.key() not in {q.key() for q in gt.prov(name, "server")}
    # the server's later data hits the reset client: a secondary half-open RST
    late = last_from(pkts, sec, sec.dst)
    assert late.plen > 0 and late.frame > rej.frame
    assert sec.src in CLIENT and sec.flags == R and sec.seq == late.ack
    is_reactive(sec)
    assert (srow["true_sender"], srow["cause"], srow["subcause"], srow["note"]) == (
        "client", "half_open", "lost_state", "secondary:middlebox")


@pytest.mark.parametrize(("name", "secondary_from"), [("middlebox_injector", "server"),
                                                      ("middlebox_injector_client_only", "client")])
def test_injector(gt: Run, name: str, secondary_from: str) -> None:
    res = gt.results[name]
    pkts = gt.pcap(name)
    rsts = gt.rsts(name)
    srv_sent = {q.key() for q in gt.prov(name, "server")}
    trigger = next(q for q in pkts if q.src in CLIENT and b"FORBIDDEN" in q.data)
    injected = [(p, row) for p, row in rsts if row["true_sender"] == "router"]
    assert len(injected) == 4 == len([i for i in res.injected if i["dst"] in CLIENT])
    for p, row in injected:
        assert p.src in SERVER and p.dst in CLIENT  # claims to be the server
        assert p.key() not in srv_sent  # but the server never sent it
        assert p.ttl == 64 and p.win > 0 and p.ip_id != 0 and not p.df
        assert (row["cause"], row["subcause"]) == ("middlebox", "injected")
    bare = [p for p, _ in injected if p.flags == R]
    ra = [p for p, _ in injected if p.flags == R | A]
    assert len(bare) == 1 and len(ra) == 3
    assert bare[0].seq == trigger.ack
    assert [(p.seq - trigger.ack) % 2**32 for p in ra] == [0, 1460, 4380]
    assert {p.ack for p in ra} == {trigger.end}
    # the genuine server keeps talking: its packets after the trigger reach the client too
    genuine = [q for q in pkts if q.src in SERVER and q.frame > trigger.frame and not q.rst]
    assert genuine and all(q.key() in srv_sent and q.ttl == 63 for q in genuine)
    # the to-server half of the burst (not visible to the observer) exists only when aimed at both
    to_server = [i for i in res.injected if i["dst"] in SERVER]
    assert len(to_server) == (4 if secondary_from == "server" else 0)
    secondaries = [row["true_sender"] for _, row in rsts if row["true_sender"] != "router"]
    assert secondary_from in secondaries
    for p, row in rsts:
        if row["true_sender"] != "router":
            assert p.flags == R and row["cause"] == "half_open"
            assert row["note"] == "secondary:middlebox"
            assert p.key() in {q.key() for q in gt.prov(name, row["true_sender"])}
            is_reactive(p)
            trig = last_from(pkts, p, p.dst)  # what the reset endpoint's kernel answered
            assert p.seq == trig.ack and trig.frame > injected[0][0].frame
