"""Issue 17's failure modes, each on a real capture that shows it.

The captures are third-party ones from ../shared/corpus/field (read by hand: the reading is in
each test's docstring) and one recorded here between two network namespaces (nmap's FIN, NULL
and Xmas scans).  What each test asserts comes from the packets, not from rstlens."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED

import rstlens

FIELD = SHARED / "corpus" / "field"
DATA = Path(__file__).parent / "data"


def _resets(path: Path) -> pd.DataFrame:
    if not path.exists():
        pytest.skip(f"{path} is not here")
    return rstlens.analyze(path).resets.set_index("frame")


def test_same_hop_distance_is_the_senders_own_ttl() -> None:
    """tls-fin-close-data-01/debug-s13: the server (172.217.132.169) sends with TTL 123 (128 - 5
    hops); after its FIN the client's late data and FIN draw three bare, reactive RSTs, two
    with TTL 59 (64 - 5 hops: the kernel's default TTL, not the socket's) and one with 123.
    Same distance: the server sent them, data after close (RST_SIGNALS §2.3d).  Raw TTLs
    called the first two a firewall's REJECT."""
    r = _resets(FIELD / "OISF+suricata-verify/tests/tls/tls-fin-close-data-01/debug-s13.pcap")
    for frame in (22, 23, 24):
        got = r.loc[frame]
        assert (got.cause, got.subcause, got.sender) == ("half_open", "data_after_close", "claimed")
        assert not {"inj.ttl_flow", "inj.reject_form"} & set(got.evidence)


def test_secondary_rsts_behind_rcv_nxt_after_the_senders_fin() -> None:
    """ethereum.pcap, 178.128.195.220:30303 -> 192.168.1.184:56626 (frames 199-211): the peer
    closed (FIN), the client's pipelined segments keep arriving, and each draws a bare RST whose
    seq is the ack of one of them: RCV.NXT - 1 (frame 199) and down to 65 bytes below
    (frame 209), so out of window.  Half-open (data after close), not "no match"."""
    r = _resets(FIELD / "nfstream+nfstream/tests/pcaps/ethereum.pcap")
    for frame in (199, 203, 205, 206, 207, 209):
        got = r.loc[frame]
        assert (got.cause, got.subcause) == ("half_open", "data_after_close"), frame
        assert "seq.stale_peer_ack" in got.evidence
        assert got.acceptability == "out_of_window"
    # 162.243.160.83: the same after its FIN, in the kernel's reactive form (IP ID 0, DF)
    for frame in (570, 571, 575):
        assert (r.loc[frame].cause, r.loc[frame].subcause) == ("half_open", "data_after_close")


def test_fin_null_xmas_probes_to_closed_ports() -> None:
    """nmap -sF, -sN, -sX from 10.77.7.1 to 10.77.7.2 ports 2221-2223 (2222 listening, which
    stays silent), recorded on the scanner's veth: the target kernel answers each probe to a
    closed port with RST+ACK, seq 0, ack = probe seq + 1 (FIN, Xmas) or + 0 (NULL).  One
    earlier connection to the open port gives the target host a TTL profile (64)."""
    r = _resets(DATA / "nmap_fin_null_xmas_scan.pcap")
    assert len(r) == 6
    assert (r.cause == "closed_port").all(), r[["cause", "subcause", "evidence"]]
    assert r.evidence.map(lambda e: "ctx.answers_probe" in e).all()
    assert (r.sender == "claimed").all()


def test_reject_form_only_at_a_foreign_hop_distance() -> None:
    """Over the whole field corpus, `inj.reject_form` never comes without a hop distance that
    is not the claimed sender's (issue 17 item 7; before, it fired on every reactive RST a
    middlebox rule took, e.g. debug-s13's above), and `sender` says middlebox exactly for the
    middlebox verdicts.  The lab's reject and injector forms are held by test_ground_truth."""
    if not FIELD.exists():
        pytest.skip(f"{FIELD} is not here")
    seen = 0
    # the field corpus has no true reject (tests/core/data/field_rst_truth.csv); the lab's
    # two-router REJECT (tests/data/scenarios) keeps this from holding vacuously
    lab = Path(__file__).parents[1] / "data" / "scenarios" / "two_routers_reject.pcap"
    assert lab.exists()
    for path in [*sorted(FIELD.rglob("*.pcap*")), lab]:
        resets = rstlens.analyze(path).resets
        for ev, sender, cause in zip(resets.evidence, resets.sender, resets.cause, strict=True):
            if "inj.reject_form" in ev:
                seen += 1
                assert {"inj.ttl_flow", "inj.ttl_host"} & set(ev), (path, ev)
            # who and why agree on the middlebox
            assert (sender == "middlebox") == (cause == "middlebox"), (path, ev)
    assert seen >= 1


def test_rst_from_syn_sent_then_the_connection_completes() -> None:
    """Recorded between two netns: the client (10.77.8.1:40123) sends a SYN the server's
    firewall drops; a raw socket on the server side answers with a SYN-ACK whose ack is ISN -
    100; the client kernel, in SYN-SENT, replies with a bare RST (seq = that ack, IP ID 0),
    keeps its socket, retransmits its SYN 10 ms later and the connection completes with data
    both ways.  The RST is the client's own: not a middlebox, whatever the client sends
    afterwards (issue 17 item 6)."""
    r = _resets(DATA / "rst_from_syn_sent_then_connects.pcap")
    assert len(r) == 1
    got = r.iloc[0]
    assert got.cause == "half_open" and got.sender == "claimed"
    assert "inj.sender_continued" not in got.evidence


def test_host_ttls_elsewhere_alone_make_no_middlebox_of_a_lone_rst() -> None:
    """A RST whose connection shows nothing of its sender's own path (the capture starts at
    the RST, or mid-connection with the sender silent) is no middlebox's on a hop distance
    its address shows on *other* connections only (§0 rule 8).  Read by hand:

    - tls-appdata.pcap 4-6: the capture starts mid-connection with three server segments; the
      client answers with bare RSTs seq = their ack, IP ID 0, window 0, TTL 63; the same
      address shows TTLs 109-195 on another connection.  A no-state reply (half_open), and
      who sent it cannot be told from a TTL seen nowhere else on this connection.
    - starcraft_battle.pcap 8 and 13: the capture starts at each RST+ACK (nothing else of
      those connections), TTL 243 against TTL 51 from the same addresses on port 80; their
      IP IDs (0x854a, 0xdf5a) are not one counter: nothing to decide (unknown)."""
    r = _resets(FIELD / "ntop+nDPI/tests/cfgs/default/pcap/tls-appdata.pcap")
    for frame in (4, 5, 6):
        assert r.loc[frame, "cause"] == "half_open", r.loc[frame]
        assert "inj.ttl_host" not in r.loc[frame, "evidence"]
        assert r.loc[frame, "sender"] == "unknown"
    r = _resets(FIELD / "nfstream+nfstream/tests/pcaps/starcraft_battle.pcap")
    for frame in (8, 13):
        assert r.loc[frame, "cause"] == "unknown", r.loc[frame]
        assert r.loc[frame, "sender"] == "unknown"


def test_one_device_fingerprint_across_hosts_is_a_middlebox() -> None:
    """Teredo.pcap 50, 51 and 78 (Zeek's corpus, reviewed middlebox in
    zeek_rst_verdicts.csv): each a lone RST+ACK after its connection had expired, claiming
    75.126.203.78 (50, 78) or 75.126.130.163 (51), all TTL 255 where both servers show TTL
    53, with IP IDs 0x9120, 0x9121, 0x9125 within 2 s: one device's counter speaking for
    two servers.  That shared fingerprint is what makes the host-level hop distance count;
    with the other server's RST filtered out (`not port 1576`), 50 and 78 share a counter
    only with RSTs claiming the *same* address, and no middlebox verdict is left."""
    path = SHARED / "corpus" / "zeek" / "traces" / "Teredo.pcap"
    r = _resets(path)
    for frame in (50, 51, 78):
        assert (r.loc[frame, "cause"], r.loc[frame, "sender"]) == ("middlebox", "middlebox")
        assert {"inj.ttl_host", "inj.shared_ipid"} <= set(r.loc[frame, "evidence"])
    alone = rstlens.analyze(path, bpf="not port 1576").resets
    assert len(alone) == 3 and (alone.ttl == 255).sum() == 2
    assert not (alone.cause == "middlebox").any(), alone[["frame", "cause", "evidence"]]


def test_syn_and_rst_in_one_segment_is_malformed() -> None:
    """transform-base64-7296 frame 36: flags byte 0xFF (SYN+FIN+RST+PSH+ACK+URG+ECE+CWR) and
    a corrupted first option byte on what is otherwise the server's ACK at seq 0 repeated in
    frame 37 (the server carries on as if nothing happened).  No stack sends SYN with RST:
    not a RST to attribute, whatever its (loopback, unreliable) checksum says."""
    r = _resets(FIELD / "OISF+suricata-verify/tests/transform-base64-7296/input.pcap")
    row = r.loc[36]
    assert (row["cause"], row["subcause"], row["sender"]) == ("unknown", "corrupt", "unknown")
    assert "capture.impossible_flags" in row["evidence"]
    assert not {"inj.sender_continued"} & set(row["evidence"])


def test_a_stack_giving_up_is_an_abort_with_its_reason() -> None:
    """The RST a stack sends when it gives up (Windows and BSD do; Linux sends none), read by
    hand:

    - avast.pcap 102 and 112: the server's keepalive probes (seq = SND.NXT - 1, no payload)
      every 14 s go unanswered, then a RST+ACK at the probes' seq + 1 with the server's own
      TTL and next IP ID (§2.3 (c)).  rstlens' flow had expired during the idle hours, so
      its connection begins at the probes.
    - http-sha256-drop-02 137: the server retransmits its first unacknowledged segment
      (76745, 1448 bytes) at 0.3, 0.9, 2.1, 4.5 and 9.3 s with nothing back, then RST+ACK at
      that segment's end (78193, below the 78489 it had sent: a timeout pulled SND.NXT back
      to SND.UNA), acking all the client's data."""
    r = _resets(FIELD / "ntop+nDPI/tests/cfgs/default/pcap/avast.pcap")
    for frame in (102, 112):
        assert (r.loc[frame, "cause"], r.loc[frame, "subcause"]) == ("abort", "keepalive_timeout")
        assert "ctx.keepalive_unanswered" in r.loc[frame, "evidence"]
        assert r.loc[frame, "sender"] == "claimed"
    r = _resets(FIELD / "OISF+suricata-verify/tests/http-sha256-drop-02/input.pcap")
    assert (r.loc[137, "cause"], r.loc[137, "subcause"]) == ("abort", "retransmit_timeout")
    assert "ctx.retransmit_unanswered" in r.loc[137, "evidence"]
    # the rule names only those: every other RST of these captures keeps another reason
    assert (r.subcause.astype(str) == "retransmit_timeout").sum() == 1


def test_a_reply_in_reset_form_after_the_senders_own_reset_or_fin_is_half_open() -> None:
    """No-state replies in the RST+ACK form (seq = the late segment's ack, ack = its end),
    read by hand:

    - aimini-http.pcap 121 and 123: after its own RST (117) the server answers late copies
      of the client's ACKs (120, 122: older IP IDs than the client's RST 118) with RST+ACK
      seq = their acks 2921 and 5841 (126, 129: capture copies): the server has no state.
    - pgsql-bug-6080-probe-test-01 12: the client sent its FIN (10), the server's data (11)
      arrives after, and the client answers RST+ACK seq = that segment's ack, ack = its end:
      data after close (§2.3d)."""
    r = _resets(FIELD / "nfstream+nfstream/tests/pcaps/aimini-http.pcap")
    for frame in (121, 123, 126, 129):
        assert (r.loc[frame, "cause"], r.loc[frame, "subcause"]) == ("half_open", "after_reset")
    assert "seq.eq_trigger_ack" in r.loc[121, "evidence"]
    r = _resets(FIELD / "OISF+suricata-verify/tests/pgsql-bug-6080-probe-test-01/input.pcap")
    assert (r.loc[12, "cause"], r.loc[12, "subcause"]) == ("half_open", "data_after_close")
    assert {"seq.eq_trigger_ack", "ctx.sender_fin_before"} <= set(r.loc[12, "evidence"])

# Every capture of ../shared/corpus with a RST that carries the timestamp option (found with
# `tcpdump 'tcp[tcpflags] & tcp-rst != 0'`, TS in the options): 28 RSTs, all RST+ACK, Linux
# active resets, load balancers (zoom's TSval 0), loopback.
TS_RST_CAPTURES = (
    "field/nfstream+nfstream/tests/pcaps/zoom.pcap",
    "zeek/traces/wstunnel-ssh.pcap",
    "field/ntop+nDPI/tests/cfgs/default/pcap/viber.pcap",
    "field/nfstream+nfstream/tests/pcaps/viber.pcap",
    "zeek/traces/ssh.pcap",
    "zeek/traces/https-to-http.pcap",
    "zeek/traces/http-to-ssh.pcap",
    "zeek/traces/get-to-ssh-server.pcap",
    "zeek/traces/deeply-nested-mime.pcap",
    "field/zeek+zeek/testing/btest/Traces/tls/heartbleed-success.pcap",
    "field/zeek+zeek/testing/btest/Traces/postgresql/bad-startup-message-1.pcap",
    "field/zeek+zeek/testing/btest/Traces/postgresql/bad-backend-message-1.pcap",
    "field/zeek+zeek/testing/btest/Traces/http/putty-upload.pcap",
    "field/ntop+nDPI/tests/cfgs/default/pcap/tls_1.2_unidirectional_client.pcapng",
    "field/ntop+nDPI/tests/cfgs/default/pcap/threema.pcap",
    "field/ntop+nDPI/tests/cfgs/default/pcap/roblox.pcapng",
    "field/nfstream+nfstream/tests/pcaps/alexa-app.pcapng",
    "field/OISF+suricata-verify/tests/tls/tls-fingerprint-alert/input.pcap",
    "field/OISF+suricata-verify/tests/tcp-fastopen-07/tcp_fastopen_segmentation.pcap",
    "field/OISF+suricata-verify/tests/smtp-startssl/input.pcap",
    "field/OISF+suricata-verify/tests/output-eve-anomaly-02/input.pcap",
    "field/OISF+suricata-verify/tests/issue-3703/input.pcap",
    "field/OISF+suricata-verify/tests/community-id-ipv4/input.pcap",
)


def _timestamped_rsts(path: Path) -> dict[int, tuple[int, int, set[int]]]:
    """Read with dpkt, not rstlens (the captures are all Ethernet): per frame of a RST with
    the timestamp option, its TSval, its TSecr and the TSvals its receiver had sent on that
    4-tuple before it."""
    import struct

    import dpkt

    with path.open("rb") as fh:
        pcapng = fh.read(4) == b"\x0a\x0d\x0d\x0a"
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if pcapng else dpkt.pcap.Reader(fh)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        sent: dict[tuple[bytes, int, bytes, int], set[int]] = {}
        out = {}
        for n, (_, buf) in enumerate(reader, start=1):
            tcp = getattr(ip := dpkt.ethernet.Ethernet(buf).data, "data", None)
            if not isinstance(tcp, dpkt.tcp.TCP):
                continue
            opts = dict(dpkt.tcp.parse_opts(tcp.opts))
            if dpkt.tcp.TCP_OPT_TIMESTAMP not in opts:
                continue
            tsval, tsecr = struct.unpack("!II", opts[dpkt.tcp.TCP_OPT_TIMESTAMP])
            if tcp.flags & dpkt.tcp.TH_RST:
                out[n] = (tsval, tsecr, set(sent.get((ip.dst, tcp.dport, ip.src, tcp.sport), ())))
            else:
                sent.setdefault((ip.src, tcp.sport, ip.dst, tcp.dport), set()).add(tsval)
        return out


def test_real_timestamp_echoes_are_no_crafted_ones() -> None:
    """Every real RST with the timestamp option in the corpora: its echo is a TSval its
    receiver sent before it (read with dpkt above), or its receiver is not in the capture at
    all (tls_1.2_unidirectional_client: a one-way capture).  None may get
    `ts.echo_never_sent` (issue 17 item 6: the no-false-positive side; roblox's and
    tls-fingerprint-alert's echo an older TSval than the receiver's latest, as a delayed ACK
    leaves TS.Recent), and resets.ts_val / ts_ecr are the option's."""
    corpus = SHARED / "corpus"
    if not corpus.exists():
        pytest.skip(f"{corpus} is not here")
    checked = one_way = 0
    for name in TS_RST_CAPTURES:
        path = corpus / name
        truth = _timestamped_rsts(path)
        assert truth, name
        r = rstlens.analyze(path).resets.set_index("frame")
        for frame, (tsval, tsecr, peer) in truth.items():
            got = r.loc[frame]
            assert (got.ts_val, got.ts_ecr) == (tsval, tsecr), (name, frame)
            assert "ts.echo_never_sent" not in got.evidence, (name, frame, got.evidence)
            if peer:
                assert tsecr in peer, (name, frame)  # the reading: a genuine echo
            else:
                one_way += 1
            checked += 1
        assert r.loc[~r.index.isin(list(truth))].ts_val.isna().all(), name  # RSTs without it
    assert (checked, one_way) == (28, 1)


def test_evasion_insertion_rst_echoing_a_tsecr_the_server_never_sent() -> None:
    """The lab's evasion scenario (committed sample tests/data/scenarios/evasion_insertion,
    recorded on the router's client side): after the client's trigger segment (frame 8, IP
    ID 8793), an evasion tool in the client's namespace sends two RST+ACKs at the client's
    SND.NXT (seq 373244581) with TTL 1: frame 9 with a TCP-AO option, frame 10 with TS val
    1305071693 ecr 2034573009, while the server's TSvals run 3108314831 (its SYN-ACK) to
    3108314833 before them: an echo of nothing it sent.  The client carries on (frame 12:
    data at that seq), so does the server: both are the tool's insertion RSTs
    (unknown.evasion, sent by the client's host), not a middlebox's.

    The tool numbers its RSTs from its own counter, 9050 and 9051, ahead of the client's
    stack: frame 12 carries IP ID 8794, below frame 9's.  It was sent after the RSTs all the
    same; the client's reference is its own last non-RST segment (8793), not the tool's RST
    (`rstlog._stack_ipid`).  When the reference was the last segment of any kind, frame 12
    counted as sent before frame 10, and frame 10 became middlebox.injected (CI, 1 run in
    ~25 with the tool's counter random)."""
    r = _resets(Path(__file__).parents[1] / "data" / "scenarios" / "evasion_insertion.pcap")
    assert list(r.index) == [9, 10]
    assert list(r.ip_id) == [9050, 9051]
    for frame in (9, 10):
        got = r.loc[frame]
        assert (got.cause, got.subcause, got.sender) == ("unknown", "evasion", "claimed"), frame
        assert "inj.sender_continued" in got.evidence
    assert "evasion.ao" in r.loc[9].evidence and "ts.echo_never_sent" not in r.loc[9].evidence
    assert "ts.echo_never_sent" in r.loc[10].evidence
    assert (r.loc[10].ts_val, r.loc[10].ts_ecr) == (1305071693, 2034573009)
    assert pd.isna(r.loc[9].ts_ecr)
