"""Connection lifecycle in the flow core, on small dpkt-built captures (Ethernet/IPv4).

Port reuse, the idle and attempt timers, end reasons, the half-closed conn_states, the
originator choice, sequence wrap-around, VLAN separation and the bounded flow table.
Every capture is written to tmp_path and analysed through the public `rstlens.analyze`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import A, F, P, R, S, frame, write_pcap

import rstlens
from rstlens.flows.engine import DRAIN_ROWS

T0 = 1_700_000_000.0
CLIENT, SERVER = "10.0.0.9", "10.0.0.1"  # the client's address sorts after the server's


class Conv:
    """One TCP conversation between CLIENT:cport and SERVER:sport, tracking sequence numbers."""

    def __init__(self, cport: int = 40000, sport: int = 5555, c_isn: int = 1000,
                 s_isn: int = 90000, vlan: int | None = None,
                 client: str = CLIENT, server: str = SERVER) -> None:  # fmt: skip
        self.c = (client, cport)
        self.s = (server, sport)
        self.cseq, self.sseq = c_isn, s_isn
        self.vlan = vlan
        self.pkts: list[tuple[float, bytes]] = []

    def _put(self, t: float, from_client: bool, flags: int, data: bytes = b"") -> None:
        src, dst = (self.c, self.s) if from_client else (self.s, self.c)
        seq = self.cseq if from_client else self.sseq
        ack = self.sseq if from_client else self.cseq
        self.pkts.append(
            (T0 + t, frame(*src, *dst, flags, seq, ack if flags & A else 0, data, vlan=self.vlan))
        )
        used = len(data) + (1 if flags & (S | F) else 0)
        if from_client:
            self.cseq += used
        else:
            self.sseq += used

    def syn(self, t: float) -> Conv:
        self._put(t, True, S)
        return self

    def handshake(self, t: float) -> Conv:
        self._put(t, True, S)
        self._put(t + 0.01, False, S | A)
        self._put(t + 0.02, True, A)
        return self

    def data(self, t: float, from_client: bool, n: int) -> Conv:
        self._put(t, from_client, P | A, b"x" * n)
        self._put(t + 0.001, not from_client, A)
        return self

    def fin(self, t: float, from_client: bool) -> Conv:
        self._put(t, from_client, F | A)
        return self

    def ack(self, t: float, from_client: bool) -> Conv:
        self._put(t, from_client, A)
        return self

    def rst(self, t: float, from_client: bool) -> Conv:
        self._put(t, from_client, R | A)
        return self

    def close(self, t: float) -> Conv:
        """FIN from the client, FIN from the server, last ACK."""
        self.fin(t, True).fin(t + 0.01, False).ack(t + 0.02, True)
        return self


def run(tmp_path: Path, packets: list[tuple[float, bytes]], name: str = "cap.pcap", **kw):
    packets = sorted(packets, key=lambda p: p[0])
    path = write_pcap(tmp_path / name, packets)
    res = rstlens.analyze(path, outdir=tmp_path / "out", **kw)
    return res.flows.sort_values("ts", kind="stable").reset_index(drop=True), res


# --------------------------------------------------------------------------- port reuse
def test_syn_after_rst_starts_a_new_connection(tmp_path: Path) -> None:
    first = Conv(c_isn=1000).handshake(0).data(0.1, True, 100).rst(0.2, True)
    second = Conv(c_isn=5_000_000).handshake(1.0).data(1.1, True, 50).close(1.2)
    flows, _ = run(tmp_path, first.pkts + second.pkts)
    assert len(flows) == 2
    assert flows.uid.nunique() == 2
    a, b = flows.iloc[0], flows.iloc[1]
    assert a.end_reason == "rst" and a.conn_state == "RSTO" and a.orig_bytes == 100
    assert b.end_reason == "fin" and b.conn_state == "SF" and b.orig_bytes == 50
    assert b.history.startswith("ShAD")
    assert (a.orig_pkts, a.resp_pkts) == (4, 2)  # S A D R / SA A
    assert (b.orig_pkts, b.resp_pkts) == (5, 3)  # S A D F A / SA A F


def test_syn_after_fin_close_starts_a_new_connection(tmp_path: Path) -> None:
    first = Conv(c_isn=1000).handshake(0).data(0.1, False, 300).close(0.2)
    second = Conv(c_isn=777_777).handshake(1.0).data(1.1, False, 30)
    flows, res = run(tmp_path, first.pkts + second.pkts)
    assert len(flows) == 2 and flows.uid.nunique() == 2
    assert list(flows.conn_state) == ["SF", "S1"]
    assert list(flows.end_reason) == ["fin", "end_of_capture"]
    assert list(flows.resp_bytes) == [300, 30]
    assert res.summary.core["port_reuse"] == 1


def test_syn_with_new_isn_while_open_starts_a_new_connection(tmp_path: Path) -> None:
    first = Conv(c_isn=1000).handshake(0).data(0.1, True, 10)  # still open
    second = Conv(c_isn=3_000_000).handshake(0.5).data(0.6, True, 20).close(0.7)
    flows, res = run(tmp_path, first.pkts + second.pkts)
    assert len(flows) == 2 and flows.uid.nunique() == 2
    assert list(flows.orig_bytes) == [10, 20]
    assert flows.iloc[1].conn_state == "SF"
    assert res.summary.core["port_reuse"] == 1


def test_retransmitted_syn_with_same_isn_is_the_same_connection(tmp_path: Path) -> None:
    c = Conv(c_isn=1000)
    c.syn(0)
    c.cseq = 1000  # a retransmission: same ISN
    c.handshake(1.0).data(1.1, True, 5)
    flows, res = run(tmp_path, c.pkts)
    assert len(flows) == 1
    assert (flows.iloc[0].orig_pkts, flows.iloc[0].resp_pkts) == (4, 2)  # S S A D / SA A
    assert flows.iloc[0].history == "ShADa"
    assert res.summary.core["port_reuse"] == 0


# --------------------------------------------------------------------------- timers
def test_idle_timeout_ends_a_connection_and_a_later_packet_starts_another(tmp_path: Path) -> None:
    c = Conv().handshake(0).data(0.1, True, 10)
    c.data(100.0, True, 7)  # 100 s of silence, idle_timeout 30 s
    flows, res = run(tmp_path, c.pkts, idle_timeout=30.0)
    assert len(flows) == 2 and flows.uid.nunique() == 2
    first, later = flows.iloc[0], flows.iloc[1]
    assert first.end_reason == "idle"
    assert first.conn_state == "S1"
    assert bool(later.start_seen) is False  # its first packet is data, not a SYN
    assert bool(first.start_seen) is True
    assert later.end_reason == "end_of_capture"
    assert later.ts.timestamp() == pytest.approx(T0 + 100.0)
    assert later.orig_h == CLIENT  # data from the client, to a port that is no likely server
    assert res.summary.core["expired_idle"] >= 1


def test_no_idle_expiry_below_the_timeout(tmp_path: Path) -> None:
    c = Conv().handshake(0).data(0.1, True, 10).data(100.0, True, 7)  # the same 100 s gap
    flows, res = run(tmp_path, c.pkts)  # default idle_timeout: 300 s
    assert len(flows) == 1
    assert flows.iloc[0].orig_bytes == 17
    assert flows.iloc[0].end_reason == "end_of_capture"
    assert res.summary.core["expired_idle"] == 0


def test_unanswered_syn_is_s0_and_a_syn_after_the_attempt_delay_is_a_new_connection(
    tmp_path: Path,
) -> None:
    pk = []
    for t in (0.0, 1.0, 3.0, 7.0):  # same ISN each time: retransmissions
        pk.append((T0 + t, frame(CLIENT, 40000, SERVER, 5555, S, 1000)))
    flows, _ = run(tmp_path, pk)
    assert len(flows) == 2 and flows.uid.nunique() == 2
    assert list(flows.conn_state) == ["S0", "S0"]
    assert list(flows.orig_pkts) == [3, 1]  # the 7 s SYN is past Zeek's 5 s tcp_attempt_delay
    assert list(flows.resp_pkts) == [0, 0]
    assert all(flows.history == "S")
    assert flows.iloc[1].ts.timestamp() == pytest.approx(T0 + 7.0)
    assert all(flows.orig_h == CLIENT)


# --------------------------------------------------------------------------- end reasons, states
def test_end_reasons_fin_rst_end_of_capture(tmp_path: Path) -> None:
    fin = Conv(cport=40001).handshake(0).data(0.1, True, 10).close(0.2)
    rst = Conv(cport=40002).handshake(0).data(0.1, True, 10).rst(0.2, False)
    open_ = Conv(cport=40003).handshake(0).data(0.1, True, 10)
    flows, _ = run(tmp_path, fin.pkts + rst.pkts + open_.pkts)
    by_port = flows.set_index("orig_p")
    assert by_port.loc[40001, "end_reason"] == "fin"
    assert by_port.loc[40001, "conn_state"] == "SF"
    assert by_port.loc[40002, "end_reason"] == "rst"
    assert by_port.loc[40002, "conn_state"] == "RSTR"
    assert by_port.loc[40002, "rst_count"] == 1
    assert by_port.loc[40003, "end_reason"] == "end_of_capture"
    assert by_port.loc[40003, "conn_state"] == "S1"
    assert by_port.loc[40001, "rst_count"] == 0 and by_port.loc[40003, "rst_count"] == 0


def test_half_closed_states_s2_s3(tmp_path: Path) -> None:
    s2 = Conv(cport=40011).handshake(0).data(0.1, True, 10).fin(0.2, True)
    s3 = Conv(cport=40012).handshake(0).data(0.1, True, 10).fin(0.2, False)
    flows, _ = run(tmp_path, s2.pkts + s3.pkts)
    by_port = flows.set_index("orig_p")
    assert by_port.loc[40011, "conn_state"] == "S2"
    assert by_port.loc[40012, "conn_state"] == "S3"
    assert by_port.loc[40011, "history"] == "ShADaF"
    assert by_port.loc[40012, "history"] == "ShADaf"


def test_sh_and_shr(tmp_path: Path) -> None:
    # SH: the originator sends SYN then FIN and the responder never answers.
    sh = Conv(cport=40021)
    sh.syn(0).fin(0.5, True)
    sh.pkts[-1] = (sh.pkts[-1][0], frame(CLIENT, 40021, SERVER, 5555, F, 1001))
    # SHR: only the responder is seen, a SYN-ACK then a FIN (from port 80, a likely server).
    shr = [
        (T0 + 0.0, frame(SERVER, 80, CLIENT, 40022, S | A, 5000, 2001)),
        (T0 + 0.5, frame(SERVER, 80, CLIENT, 40022, F | A, 5001, 2001)),
    ]
    flows, _ = run(tmp_path, sh.pkts + shr)
    by_port = flows.set_index("orig_p")
    assert by_port.loc[40021, "conn_state"] == "SH"
    assert by_port.loc[40021, "history"] == "SF"
    assert by_port.loc[40022, "conn_state"] == "SHR"
    assert by_port.loc[40022, "orig_h"] == CLIENT  # roles flipped to the SYN-ACK's receiver
    assert by_port.loc[40022, "resp_p"] == 80
    assert by_port.loc[40022, "history"].startswith("^")
    assert by_port.loc[40022, "orig_pkts"] == 0 and by_port.loc[40022, "resp_pkts"] == 2


# --------------------------------------------------------------------------- orientation
@pytest.mark.parametrize(("client", "server"), [(CLIENT, SERVER), (SERVER, CLIENT)])
def test_originator_is_the_syn_sender(tmp_path: Path, client: str, server: str) -> None:
    c = Conv(client=client, server=server, cport=5555, sport=40000)  # port order misleads too
    c.handshake(0).data(0.1, False, 40).close(0.2)
    flows, _ = run(tmp_path, c.pkts)
    assert len(flows) == 1
    f = flows.iloc[0]
    assert (f.orig_h, f.orig_p, f.resp_h, f.resp_p) == (client, 5555, server, 40000)
    assert bool(f.start_seen) is True
    assert f.history == "ShAdFf"
    assert (f.orig_bytes, f.resp_bytes) == (0, 40)
    assert f.conn_state == "SF"


def test_capture_starting_mid_stream_has_start_seen_false(tmp_path: Path) -> None:
    c = Conv(cport=40030, sport=5555)
    c.cseq, c.sseq = 500_000, 900_000
    c.data(0, True, 100).data(0.1, False, 200).data(0.2, True, 50)
    flows, _ = run(tmp_path, c.pkts)
    assert len(flows) == 1
    f = flows.iloc[0]
    assert bool(f.start_seen) is False
    assert (f.orig_h, f.orig_p) == (CLIENT, 40030)  # the first packet's sender
    assert f.conn_state == "OTH"
    assert "S" not in f.history and "s" not in f.history.replace("^", "")


# --------------------------------------------------------------------------- sequence space
@pytest.mark.parametrize("isn", [2**32 - 1500, 2**32 - 1])
def test_sequence_wraparound_counts_bytes(tmp_path: Path, isn: int) -> None:
    c = Conv(c_isn=isn, s_isn=2**32 - 700)
    c.handshake(0)
    for k in range(4):
        c.data(0.1 + 0.01 * k, True, 1000)
    c.data(0.2, False, 1400)  # the server's data crosses 2**32 too
    c.close(0.3)
    flows, _ = run(tmp_path, c.pkts)
    assert len(flows) == 1
    f = flows.iloc[0]
    assert f.orig_bytes == 4000
    assert f.resp_bytes == 1400
    assert f.conn_state == "SF"
    assert "T" not in f.history and "G" not in f.history.upper()


# --------------------------------------------------------------------------- VLAN
def test_vlan_tagged_and_untagged_copies_are_different_connections(tmp_path: Path) -> None:
    plain = Conv(c_isn=1000).handshake(0).data(0.1, True, 10).close(0.2)
    tagged = Conv(c_isn=1000, vlan=10).handshake(0.0005).data(0.1005, True, 10).close(0.2005)
    other = Conv(c_isn=1000, vlan=20).handshake(0.001).data(0.101, True, 10).close(0.201)
    flows, _ = run(tmp_path, plain.pkts + tagged.pkts + other.pkts)
    assert len(flows) == 3 and flows.uid.nunique() == 3
    assert sorted(flows.vlan.dropna().tolist()) == [10, 20]
    assert int(flows.vlan.isna().sum()) == 1
    assert all(flows.conn_state == "SF")
    assert all(flows.orig_pkts == 5) and all(flows.resp_pkts == 3)
    # the same 5-tuple: Community ID ignores the VLAN
    assert flows.community_id.nunique() == 1


# --------------------------------------------------------------------------- bounded memory
def test_flow_table_is_bounded_and_evicts(tmp_path: Path) -> None:
    n = 20_000
    pk = []
    for k in range(n):
        src = f"10.1.{k // 250}.{k % 250 + 1}"
        pk.append((T0 + k * 50e-6, frame(src, 10000 + k % 50000, SERVER, 443, S, k * 7)))
    flows, res = run(tmp_path, pk, max_flows=1000)
    core = res.summary.core
    assert core["evicted"] > 0
    assert core["connections"] == n
    assert len(flows) == n
    assert flows.uid.nunique() == n
    reasons = flows.end_reason.value_counts()
    assert reasons.get("evicted", 0) == core["evicted"]
    assert reasons.get("evicted", 0) >= n - 1000
    assert reasons.get("end_of_capture", 0) <= 1000
    assert all(flows.conn_state == "S0")
    assert any("evicted" in w for w in res.summary.warnings)


def test_a_sweep_ending_more_connections_than_the_output_holds(tmp_path: Path) -> None:
    # Unanswered SYNs within a second, then one packet 10 s later: a single timer sweep ends
    # them all, about three times what the kernel's output holds between drains (the sweep
    # stops when it is full and resumes after the drain).
    n = 3 * DRAIN_ROWS - 300
    pk = [(T0 + k * 20e-6, frame(f"10.{2 + k // 40000}.{k // 250 % 160}.{k % 250 + 1}", 20000 + k % 40000,
                                 SERVER, 443, S, k * 11)) for k in range(n)]
    pk.append((T0 + 10.0, frame("10.3.0.1", 5555, SERVER, 443, S, 1)))
    flows, res = run(tmp_path, pk)
    assert len(flows) == n + 1 and flows.uid.nunique() == n + 1
    assert res.summary.core["expired_idle"] == n  # ended by the sweep, not at the end
    assert (flows.end_reason == "idle").sum() == n
    assert (flows.end_reason == "end_of_capture").sum() == 1
    assert all(flows.conn_state == "S0")
