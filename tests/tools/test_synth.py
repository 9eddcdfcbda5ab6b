"""The benchmark capture generator: determinism, wire validity, mix and RST ground truth."""

from __future__ import annotations

import csv
import hashlib
import itertools
import socket
import struct
from collections import defaultdict

import dpkt
import pytest

from tools.counts import parse_count
from tools.synth import generate

N = 50_000
RST, SYN, FIN, ACK = dpkt.tcp.TH_RST, dpkt.tcp.TH_SYN, dpkt.tcp.TH_FIN, dpkt.tcp.TH_ACK


def _csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    pcap, truth, conns = d / "s.pcap", d / "s.truth.csv", d / "s.conns.csv"
    summary = generate(pcap, N, seed=7, truth_path=truth, conn_truth_path=conns)
    return pcap, truth, conns, summary


@pytest.fixture(scope="module")
def parsed(capture):
    """Every record decoded with dpkt: list of dicts (frame numbers are 1-based)."""
    pcap = capture[0]
    rows = []
    with open(pcap, "rb") as f:
        r = dpkt.pcap.Reader(f)
        assert r.datalink() == dpkt.pcap.DLT_EN10MB
        for ts, buf in r:
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            assert isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)), type(ip)
            l4 = ip.data
            row = {"ts": ts, "v6": isinstance(ip, dpkt.ip6.IP6), "len": len(buf)}
            if isinstance(ip, dpkt.ip.IP):
                row.update(ttl=ip.ttl, id=ip.id, df=bool(ip.df), src=ip.src, dst=ip.dst)
                assert ip.len == len(buf) - 14
            else:
                row.update(ttl=ip.hlim, id=None, df=True, src=ip.src, dst=ip.dst)
                assert ip.plen == len(buf) - 54
            if isinstance(l4, dpkt.tcp.TCP):
                opts = dpkt.tcp.parse_opts(l4.opts)
                ts_opt = [o[1] for o in opts if o[0] == dpkt.tcp.TCP_OPT_TIMESTAMP]
                row.update(
                    proto="tcp",
                    sport=l4.sport,
                    dport=l4.dport,
                    seq=l4.seq,
                    ack=l4.ack,
                    flags=l4.flags,
                    win=l4.win,
                    plen=len(l4.data),
                    nopts=len(l4.opts),
                    tsval=struct.unpack("!II", ts_opt[0])[0] if ts_opt else None,
                    tsecr=struct.unpack("!II", ts_opt[0])[1] if ts_opt else None,
                )
            elif isinstance(l4, dpkt.udp.UDP):
                row["proto"] = "udp"
            else:
                assert isinstance(l4, (dpkt.icmp.ICMP, dpkt.icmp6.ICMP6)), type(l4)
                row["proto"] = "icmp"
            rows.append(row)
    return rows


def _key(p):
    a, b = (p["src"], p["sport"]), (p["dst"], p["dport"])
    return (a, b) if a < b else (b, a)


@pytest.fixture(scope="module")
def flows(parsed):
    """TCP packets grouped by 4-tuple: {key: [(frame, row), ...]} in file order."""
    out = defaultdict(list)
    for i, p in enumerate(parsed, 1):
        if p["proto"] == "tcp":
            out[_key(p)].append((i, p))
    return out


def test_parse_count():
    assert parse_count("5M") == 5_000_000
    assert parse_count("20k") == 20_000
    assert parse_count("1500") == 1500


def test_deterministic(tmp_path):
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    generate(a, 20_000, seed=3)
    generate(b, 20_000, seed=3)
    generate(c, 20_000, seed=4)
    assert _sha(a) == _sha(b)
    assert _sha(a) != _sha(c)


def test_tiny_counts(tmp_path):
    for n in (1, 2, 17):
        s = generate(tmp_path / f"t{n}.pcap", n, seed=1)
        with open(tmp_path / f"t{n}.pcap", "rb") as f:
            assert sum(1 for _ in dpkt.pcap.Reader(f)) == n == s.packets


def test_every_record_parses_and_mix(capture, parsed):
    summary = capture[3]
    assert len(parsed) == N == summary.packets
    ts = [p["ts"] for p in parsed]
    assert all(x <= y for x, y in itertools.pairwise(ts))
    v6 = sum(p["v6"] for p in parsed) / N
    non_tcp = sum(p["proto"] != "tcp" for p in parsed) / N
    assert 0.05 <= v6 <= 0.16, v6
    assert 0.03 <= non_tcp <= 0.08, non_tcp
    assert summary.ipv6_packets == sum(p["v6"] for p in parsed)
    assert summary.tcp_packets == sum(p["proto"] == "tcp" for p in parsed)
    tcp = [p for p in parsed if p["proto"] == "tcp"]
    assert max(p["plen"] for p in tcp) == 1448
    assert any(p["plen"] == 0 for p in tcp)
    # hundreds of connections, a good share of them concurrent; RSTs of every cause
    assert summary.connections > 600
    assert summary.mean_concurrent > 0.15 * summary.connections
    assert all(v > 0 for v in summary.rsts_by_cause.values()), summary.rsts_by_cause


def test_checksums_valid(parsed, capture):
    """dpkt recomputes checksums when asked to pack with sum=0: compare on a sample."""
    with open(capture[0], "rb") as f:
        for i, (_, buf) in enumerate(dpkt.pcap.Reader(f)):
            if i % 97:
                continue
            ip = dpkt.ethernet.Ethernet(buf).data
            l4 = ip.data
            want = l4.sum
            l4.sum = 0
            if isinstance(ip, dpkt.ip.IP):
                ipsum = ip.sum
                ip.sum = 0
                raw = bytes(ip)
                assert ipsum == dpkt.ip.IP(raw).sum
            else:
                raw = bytes(ip)
            again = (dpkt.ip.IP(raw) if isinstance(ip, dpkt.ip.IP) else dpkt.ip6.IP6(raw)).data
            assert again.sum == want, (i, type(l4).__name__)


def test_per_host_ttl_consistent(parsed, capture):
    """Apart from forged or firewall RSTs (in the truth file), a host always has one TTL."""
    forged = {int(r["frame"]) for r in _csv(capture[1]) if r["sender"] == "middlebox"}
    ttls = defaultdict(set)
    for i, p in enumerate(parsed, 1):
        if i not in forged:
            ttls[p["src"]].add(p["ttl"])
    assert all(len(v) == 1 for v in ttls.values())


def test_acks_and_echoes_refer_to_what_was_seen(capture, flows):
    """In every connection whose start was captured: no ACK covers bytes the peer has not
    sent yet (in capture time order), and every TSecr is a TSval the peer sent before."""
    checked = 0
    for pkts in flows.values():
        first = pkts[0][1]
        if not (first["flags"] & SYN):
            continue
        isn = {}
        top = {}
        tsvals = defaultdict(set)
        for _, p in pkts:
            me = (p["src"], p["sport"])
            peer = (p["dst"], p["dport"])
            if p["flags"] & SYN and me not in isn:
                isn[me] = p["seq"]
            if p["flags"] & RST:
                continue  # RSTs are checked against the truth file
            if me in isn:
                end = (p["seq"] - isn[me] + p["plen"] + bool(p["flags"] & (SYN | FIN))) % 2**32
                top[me] = max(top.get(me, 0), end)
            if p["flags"] & ACK and peer in isn:
                assert (p["ack"] - isn[peer]) % 2**32 <= top[peer], p
                checked += 1
            if p["tsecr"]:
                assert p["tsecr"] in tsvals[peer], p
            if p["tsval"] is not None:
                tsvals[me].add(p["tsval"])
    assert checked > 10_000


def test_truth_rows_match_the_wire(capture, parsed, flows):
    truth = _csv(capture[1])
    summary = capture[3]
    assert len(truth) == summary.rst_packets > 0
    frames = {int(r["frame"]) for r in truth}
    all_rst = {i for i, p in enumerate(parsed, 1) if p["proto"] == "tcp" and p["flags"] & RST}
    assert frames == all_rst  # one row per RST packet, no more, no less
    pos = {}
    for pkts in flows.values():
        for j, (frame, _) in enumerate(pkts):
            pos[frame] = (pkts, j)
    causes = defaultdict(int)
    for r in truth:
        frame = int(r["frame"])
        p = parsed[frame - 1]
        pkts, j = pos[frame]
        before = [q for _, q in pkts[:j]]
        after = [q for _, q in pkts[j + 1 :]]
        me = (p["src"], p["sport"])
        mine = [q for q in before if (q["src"], q["sport"]) == me]
        theirs = [q for q in before if (q["src"], q["sport"]) != me]
        reactive = p["win"] == 0 and p["nopts"] == 0 and (p["v6"] or (p["id"] == 0 and p["df"]))
        cause, sub = r["cause"], r["subcause"]
        causes[cause] += 1
        if cause == "closed_port" or (cause, sub) == ("middlebox", "reject"):
            assert p["flags"] == RST | ACK and p["seq"] == 0 and reactive
            syns = [q for q in theirs if q["flags"] == SYN]
            if r["conn_start_seen"] == "1":
                assert syns and p["ack"] == (syns[-1]["seq"] + 1) % 2**32
            if sub == "reject" and mine:
                assert p["ttl"] != mine[0]["ttl"]
        elif cause == "half_open" or sub == "data_after_close":
            assert p["flags"] == RST and p["ack"] == 0 and reactive
            assert theirs and p["seq"] == theirs[-1]["ack"]
        elif cause == "abort":
            assert p["flags"] == RST | ACK and p["win"] > 0
            assert p["v6"] or p["id"] != 0 or mine[-1]["id"] == 0xFFFF or not mine
            if mine:
                assert (p["tsval"] is None) == (mine[-1]["tsval"] is None)
                if sub == "keepalive_timeout":  # after probes at SND.NXT - 1
                    nxt = (mine[-1]["seq"] + 1) % 2**32
                else:
                    last = mine[-1]
                    nxt = (last["seq"] + last["plen"] + bool(last["flags"] & (SYN | FIN))) % 2**32
                assert p["seq"] == nxt, (r, p)
            if theirs:
                last = theirs[-1]
                assert p["ack"] == (last["seq"] + last["plen"] + bool(last["flags"] & FIN)) % 2**32
        elif cause == "middlebox":
            assert p["nopts"] == 0 and p["win"] > 0 and r["claimed"] != r["sender"]
            real = [q for q in mine if not q["flags"] & RST]
            if real:
                assert p["ttl"] != real[-1]["ttl"]
            later = [q for q in after if (q["src"], q["sport"]) == me and not q["flags"] & RST]
            assert later or not after  # the claimed sender carries on (unless the end was cut)
        else:
            pytest.fail(f"unknown cause {cause}")
    assert set(causes) == {"closed_port", "abort", "half_open", "middlebox"}


def test_open_at_start_and_at_end(capture, flows):
    conns = _csv(capture[2])
    assert len(conns) == capture[3].connections
    assert any(c["start_seen"] == "0" for c in conns)
    assert any(c["end_seen"] == "0" for c in conns)
    states = {c["conn_state"] for c in conns}
    assert {"SF", "S1", "REJ", "S0", "RSTO", "RSTR", "OTH"} <= states
    by_key = {}
    for c in conns:
        a = (
            socket.inet_pton(
                socket.AF_INET6 if c["ip_version"] == "6" else socket.AF_INET, c["orig_h"]
            ),
            int(c["orig_p"]),
        )
        b = (
            socket.inet_pton(
                socket.AF_INET6 if c["ip_version"] == "6" else socket.AF_INET, c["resp_h"]
            ),
            int(c["resp_p"]),
        )
        by_key[(a, b) if a < b else (b, a)] = c
    assert set(by_key) == set(flows)  # 4-tuples are unique per connection
    midstream = [k for k, c in by_key.items() if c["start_seen"] == "0"]
    assert midstream
    assert all(
        not (flows[k][0][1]["flags"] & SYN) or by_key[k]["scenario"].startswith("s0")
        for k in midstream
    )
    for k, c in by_key.items():
        assert int(c["packets"]) == len(flows[k])
        if c["end_seen"] == "0":
            last = flows[k][-1][1]["flags"]
            assert not (last & RST) or c["conn_state"] in ("OTH", "S1")
