"""Timestamp echoes the receiver never sent (issue 17 item 6, `ts.echo_never_sent`).

RFC 7323 §4.3: a segment's TSecr echoes TS.Recent, the TSval of a segment its sender took
from the peer; Linux's active RST (tcp_send_active_reset) carries the option when it was
negotiated, its no-socket RSTs (tcp_v4_send_reset, tcp_v6_send_reset) never do.  So a RST+ACK
whose TSecr is no TSval the receiver sent was crafted.  Built captures, one connection each:
what every RST echoes is set by the test, so the truth is the construction, not rstlens."""

from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd
from builders import T0, A, P, R, S, frame, write_pcap

import rstlens
from rstlens.attribution.signals import TS_ECHO_SLACK

CLI, SRV = ("10.0.0.1", 40000), ("10.0.0.2", 8080)
CISN, SISN = 1000, 5000
CODE = "ts.echo_never_sent"


def ts(val: int, ecr: int) -> bytes:
    """NOP, NOP, timestamps (kind 8): what Linux puts in every segment once negotiated."""
    return b"\x01\x01\x08\x0a" + struct.pack("!II", val % 2**32, ecr % 2**32)


class Conv:
    """One connection's packets, in order; each side's IP IDs count up (a segment whose IP ID
    is not newer than its side's last one before a RST does not count as sent afterwards)."""

    def __init__(self) -> None:
        self.packets: list[tuple[float, bytes]] = []
        self.t = T0
        self.ipid = {"c": 100, "s": 20000}

    def c(self, flags: int, seq: int, ack: int, opts: bytes = b"", data: bytes = b"",
          ttl: int = 64) -> Conv:  # fmt: skip
        return self._add("c", CLI, SRV, flags, seq, ack, opts, data, ttl)

    def s(self, flags: int, seq: int, ack: int, opts: bytes = b"", data: bytes = b"",
          ttl: int = 64) -> Conv:  # fmt: skip
        return self._add("s", SRV, CLI, flags, seq, ack, opts, data, ttl)

    def _add(self, side: str, src: tuple[str, int], dst: tuple[str, int], flags: int, seq: int,
             ack: int, opts: bytes, data: bytes, ttl: int) -> Conv:  # fmt: skip
        self.t += 0.01
        self.ipid[side] += 1
        self.packets.append((self.t, frame(*src, *dst, flags, seq=seq, ack=ack, data=data,
                                           opts=opts, ttl=ttl, ip_id=self.ipid[side])))
        return self

    def resets(self, tmp_path: Path) -> pd.DataFrame:
        path = write_pcap(tmp_path / "c.pcap", self.packets)
        return rstlens.analyze(path).resets.reset_index(drop=True)


def handshake(c0: int, s0: int, server_ts: bool = True) -> Conv:
    """SYN (client TSval c0), SYN-ACK (server TSval s0, or no option), ACK, 10 bytes each way."""
    v = Conv()
    v.c(S, CISN, 0, ts(c0, 0))
    v.s(S | A, SISN, CISN + 1, ts(s0, c0) if server_ts else b"")
    cts = (lambda val, ecr: ts(val, ecr)) if server_ts else (lambda val, ecr: b"")
    v.c(A, CISN + 1, SISN + 1, cts(c0 + 1, s0))
    v.c(A | P, CISN + 1, SISN + 1, cts(c0 + 2, s0), data=b"x" * 10)
    v.s(A | P, SISN + 1, CISN + 11, ts(s0 + 3, c0 + 2) if server_ts else b"", data=b"y" * 10)
    return v


def insertion_then_carry_on(v: Conv, c_next: int, s_next: int, rst_opts: bytes, c_ts: int,
                            s_ts: int, ttl: int = 1) -> Conv:  # fmt: skip
    """The client's RST+ACK at its SND.NXT (TTL 1: it dies before the server), then its real
    connection carries on: more data at that seq, answered."""
    v.c(R | A, c_next, s_next, rst_opts, ttl=ttl)
    v.c(A | P, c_next, s_next, ts(c_ts, s_ts), data=b"z" * 10)
    v.s(A, s_next, c_next + 10, ts(s_ts + 1, c_ts))
    return v


def _rst(resets: pd.DataFrame) -> pd.Series:
    assert len(resets) == 1, resets
    return resets.iloc[0]


def test_insertion_rst_echoing_before_the_receivers_first_tsval_is_evasion(tmp_path: Path) -> None:
    """The field scenario's form: the echo is far below the server's SYN-ACK TSval."""
    v = insertion_then_carry_on(handshake(4_227_023_345, 1_831_886_773), CISN + 11, SISN + 11,
                                ts(1_108_322_059, 11_330_797), 4_227_023_400, 1_831_886_780)
    got = _rst(v.resets(tmp_path))
    assert (got.cause, got.subcause, got.sender) == ("unknown", "evasion", "claimed")
    assert CODE in got.evidence and "inj.sender_continued" in got.evidence
    assert (got.ts_val, got.ts_ecr) == (1_108_322_059, 11_330_797)


def test_the_same_rst_echoing_the_receivers_last_tsval_is_no_evasion(tmp_path: Path) -> None:
    """The same insertion RST, but echoing the server's latest TSval: nothing in the option is
    crafted, the TTL and the continuation say what they said before (a middlebox's)."""
    s0 = 1_831_886_773
    v = insertion_then_carry_on(handshake(4_227_023_345, s0), CISN + 11, SISN + 11,
                                ts(4_227_023_350, s0 + 3), 4_227_023_400, s0 + 10)
    got = _rst(v.resets(tmp_path))
    assert got.subcause != "evasion" and CODE not in got.evidence
    assert got.cause == "middlebox"


def test_ahead_of_the_highest_tsval_only_beyond_the_slack(tmp_path: Path) -> None:
    """An echo a little ahead of the server's highest TSval (its segment missed or reordered by
    the capture) says nothing; one more than TS_ECHO_SLACK ahead echoes nothing it sent."""
    s0 = 70_000
    for ahead, crafted in ((1_000, False), (TS_ECHO_SLACK + 1, True), (2**31 - 1, True)):
        v = insertion_then_carry_on(handshake(10, s0), CISN + 11, SISN + 11,
                                    ts(20, s0 + 3 + ahead), 30, s0 + 10)
        got = _rst(v.resets(tmp_path))
        assert (CODE in got.evidence) is crafted, (ahead, got.evidence)
        assert (got.subcause == "evasion") is crafted


def test_wrap_of_the_timestamp_clock(tmp_path: Path) -> None:
    """The server's clock wraps between its SYN-ACK (2**32 - 16) and its data (TSval 3):
    compared modulo 2**32, an echo between them was sent; beyond the highest or before the
    first (on the SYN-ACK) was not."""
    s0 = 2**32 - 16
    for ecr, crafted in ((2**32 - 4, False), (3, False), (3 + TS_ECHO_SLACK + 5, True),
                         (s0 - TS_ECHO_SLACK - 5, True)):  # fmt: skip
        v = handshake(10, s0)
        v.s(A, SISN + 11, CISN + 11, ts(3, 12))  # the server's clock has wrapped
        v = insertion_then_carry_on(v, CISN + 11, SISN + 11, ts(20, ecr), 30, 10)
        got = _rst(v.resets(tmp_path))
        assert (CODE in got.evidence) is crafted, (ecr, got.evidence)


def test_retransmitted_and_reordered_tsvals(tmp_path: Path) -> None:
    """The server retransmits its data with its old TSval and a later segment arrives before
    an earlier one (its TSval goes back): the highest stays the highest, and echoes of any of
    them, the repeated one included, were sent."""
    s0 = 900_000
    v = handshake(10, s0)
    v.s(A | P, SISN + 1, CISN + 11, ts(s0 + 3, 12), data=b"y" * 10)  # retransmission, same TSval
    v.s(A, SISN + 11, CISN + 11, ts(s0 + 9, 12))
    v.s(A, SISN + 11, CISN + 11, ts(s0 + 6, 12))  # reordered: older TSval after a newer one
    for ecr, crafted in ((s0 + 3, False), (s0 + 6, False), (s0 + 9, False),
                         (s0 + 9 + TS_ECHO_SLACK + 1, True)):  # fmt: skip
        w = Conv()
        w.packets = list(v.packets)
        w.t, w.ipid = v.t, dict(v.ipid)
        got = _rst(insertion_then_carry_on(w, CISN + 11, SISN + 11, ts(20, ecr), 30,
                                           s0 + 20).resets(tmp_path))
        assert (CODE in got.evidence) is crafted, (ecr, got.evidence)


def test_capture_started_mid_connection(tmp_path: Path) -> None:
    """No handshake seen: the server's first TSval in the capture is not its first in the
    connection, so an echo behind it says nothing (the client may have taken an older one);
    an echo far ahead of its highest still echoes nothing it sent."""
    s0 = 3_000_000
    for ecr, crafted in ((s0 - 2_000_000_000, False), (s0 + 5 + TS_ECHO_SLACK + 1, True)):
        v = Conv()
        v.c(A | P, CISN + 1, SISN + 1, ts(10, s0 - 1), data=b"x" * 10)
        v.s(A | P, SISN + 1, CISN + 11, ts(s0, 10), data=b"y" * 10)
        v.s(A, SISN + 11, CISN + 11, ts(s0 + 5, 10))
        got = _rst(insertion_then_carry_on(v, CISN + 11, SISN + 11, ts(20, ecr), 30,
                                           s0 + 10).resets(tmp_path))
        assert (CODE in got.evidence) is crafted, (ecr, got.evidence)


def test_receiver_without_timestamps(tmp_path: Path) -> None:
    """The server declined timestamps (SYN-ACK without the option, no option afterwards): no
    stack of that connection sends one, so a RST+ACK echoing any TSecr was crafted.  A
    one-way capture (nothing of the server seen) says nothing."""
    v = handshake(10, 0, server_ts=False)
    v.c(R | A, CISN + 11, SISN + 11, ts(20, 777), ttl=1)
    v.c(A | P, CISN + 11, SISN + 11, data=b"z" * 10)
    v.s(A, SISN + 11, CISN + 21)
    got = _rst(v.resets(tmp_path))
    assert (got.subcause, CODE in got.evidence) == ("evasion", True)

    one_way = Conv()
    one_way.c(S, CISN, 0, ts(10, 0))
    one_way.c(A, CISN + 1, SISN + 1, ts(11, 5))
    one_way.c(A | P, CISN + 1, SISN + 1, ts(12, 5), data=b"x" * 10)
    one_way.c(R | A, CISN + 11, SISN + 1, ts(20, 999_999_999), ttl=1)
    one_way.c(A | P, CISN + 11, SISN + 1, ts(30, 5), data=b"z" * 10)
    got = _rst(one_way.resets(tmp_path))
    assert CODE not in got.evidence and got.subcause != "evasion"


def test_responder_echo_before_the_originators_syn(tmp_path: Path) -> None:
    """The server's insertion RST echoing below the client's SYN TSval (2**32 - 2**28: the
    SYN waits as an embryonic connection and is replayed when the SYN-ACK comes, its TSval
    with it), then the server carries on.  Echoing the client's last TSval instead is no
    crafted echo."""
    c0 = 2**32 - 2**28
    for ecr, crafted in ((c0 - 2**26, True), (c0 + 2, False)):
        v = handshake(c0, 123_456)
        v.s(R | A, SISN + 11, CISN + 11, ts(123_470, ecr), ttl=1)
        v.s(A | P, SISN + 11, CISN + 11, ts(123_480, c0 + 2), data=b"w" * 10)
        v.c(A, CISN + 11, SISN + 21, ts(c0 + 5, 123_480))
        got = _rst(v.resets(tmp_path))
        assert (got.direction, CODE in got.evidence) == ("resp", crafted), got.evidence
        assert (got.subcause == "evasion") is crafted


def test_an_injectors_burst_with_a_bogus_echo_stays_a_middleboxs(tmp_path: Path) -> None:
    """Two RST+ACKs 'from the server' with different seqs (an injector's burst, §0 rule 4),
    each echoing a TSecr the client never sent, and the server carries on: forged, but by
    something that bursts, not by a tool at the sender: middlebox.injected, the echo noted."""
    c0 = 50_000
    v = handshake(c0, 123_456)
    v.s(R | A, SISN + 11, CISN + 11, ts(9, c0 + 2**30), ttl=1)
    v.s(R | A, SISN + 11 + 1460, CISN + 11, ts(9, c0 + 2**30), ttl=1)
    v.s(A | P, SISN + 11, CISN + 11, ts(123_480, c0 + 2), data=b"w" * 10)
    v.c(A, CISN + 11, SISN + 21, ts(c0 + 5, 123_480))
    resets = v.resets(tmp_path)
    assert len(resets) == 2
    for got in resets.itertuples():
        assert (got.cause, got.subcause) == ("middlebox", "injected")
        assert CODE in got.evidence
    # the later RST of the pair is the one that changes seq (the first is its burst's start)
    assert "inj.rst_seq_change" in resets.iloc[1].evidence


def test_rsts_without_the_option(tmp_path: Path) -> None:
    """A RST without the timestamp option (Linux's no-socket path never adds one) has null
    ts_val/ts_ecr and no timestamp evidence."""
    v = handshake(10, 70_000)
    v.c(R, CISN + 11, 0)
    got = _rst(v.resets(tmp_path))
    assert pd.isna(got.ts_val) and pd.isna(got.ts_ecr)
    assert CODE not in got.evidence
