"""Issue 17, capture artefacts on real captures: capture copies (items 1), checksums
(item 10) and text in RSTs (item 9).

The labels come from reading the packets (tshark), not from rstlens: each case says what
the packets show.  Where ../shared/corpus has no capture of a phenomenon, a real capture of
it is edited the way the phenomenon edits packets on the wire (one flipped flag bit; a
payload appended to a RST by a load balancer), and the edit is the label.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd
import pytest

import rstlens

FIELD = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "field"
ROUTER_ANY = Path(__file__).parent / "data" / "router_any.pcap"  # tools/router_any_capture.py


def _field(path: str) -> Path:
    p = FIELD / path
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


def _resets(path: Path, tmp_path: Path) -> pd.DataFrame:
    return rstlens.analyze([str(path)], outdir=tmp_path / path.stem).resets.set_index("frame")


# --------------------------------------------------------------------------- copies (item 1)
# aimini-http.pcap: a capture taken at a router (each packet seen as it came in, TTL 128,
# and as it went out, TTL 127, with the same IP ID, seq, ack and flags, 0.1-0.8 ms later).
# Read with tshark -T fields -e frame.number -e ip.id -e ip.ttl -e tcp.seq_raw -e tcp.ack_raw:
# copy frame -> original frame, for every RST.
AIMINI_RST_COPIES = {88: 85, 89: 86, 96: 93, 97: 94, 124: 118, 125: 117, 126: 121, 129: 123, 139: 137}


def test_every_copy_of_a_rst_points_at_its_original_and_carries_its_verdict(tmp_path: Path) -> None:
    a = rstlens.analyze([str(_field("nfstream+nfstream/tests/pcaps/aimini-http.pcap"))], outdir=tmp_path)
    r = a.resets.set_index("frame")
    copies = r[r.duplicate_of.notna()]
    assert {int(f): int(o) for f, o in copies.duplicate_of.items()} == AIMINI_RST_COPIES
    for copy, original in AIMINI_RST_COPIES.items():
        for col in ("cause", "subcause", "confidence", "acceptability", "uid"):
            assert str(r.at[copy, col]) == str(r.at[original, col]), (copy, col)
        assert list(r.at[copy, "evidence"]) == [*r.at[original, "evidence"], "capture.duplicate"]
    originals = r[r.duplicate_of.isna()]
    # a copy one hop on is no TTL change inside a burst
    assert not any("inj.rst_ttl_change" in ev for ev in originals.evidence)
    # the copies are in the packet counts (as Zeek counts them) and counted per side
    f = a.flows
    assert int((f.orig_dups + f.resp_dups).sum()) > len(AIMINI_RST_COPIES)
    assert (f.orig_dups <= f.orig_pkts).all() and (f.resp_dups <= f.resp_pkts).all()


def test_tcpdump_any_on_a_real_router_every_forwarded_packet_twice(tmp_path: Path) -> None:
    """tests/core/data/router_any.pcap (`python -m tools.router_any_capture`): real Linux
    sockets in network namespaces, client -- router -- server, captured with `tcpdump -i
    any` on the router, IPv4 and IPv6: closed ports, a SO_LINGER 0 abort by the client, a
    close with unread data by the server.  The labels are the capture's own: the cooked
    header's packet type says which records are the outgoing copies (rstlens does not read
    it)."""
    from tools.router_any_capture import packet_types

    outgoing = {i + 1 for i, t in enumerate(packet_types(ROUTER_ANY)) if t == 4}
    assert len(outgoing) == 28
    a = rstlens.analyze([str(ROUTER_ANY)], outdir=tmp_path)
    assert int((a.flows.orig_dups + a.flows.resp_dups).sum()) == len(outgoing)
    assert (a.flows.orig_pkts + a.flows.resp_pkts).sum() == 2 * len(outgoing)  # Zeek's counts
    r = a.resets.set_index("frame")
    copies = {int(f) for f in r.index[r.duplicate_of.notna()]}
    assert copies == outgoing & set(r.index)
    assert len(copies) == 6
    for copy in copies:
        original = int(r.at[copy, "duplicate_of"])
        assert original not in outgoing and original < copy
        assert (r.at[copy, "cause"], str(r.at[copy, "subcause"])) == (r.at[original, "cause"], str(r.at[original, "subcause"]))
    # what the sockets did: two closed ports, four aborts; no middlebox among them
    originals = r.drop(index=sorted(copies))
    assert sorted(originals.cause.astype(str)) == ["abort"] * 4 + ["closed_port"] * 2


def test_repeated_reactive_rsts_without_an_ip_id_are_not_taken_for_copies(tmp_path: Path) -> None:
    """ethereum.pcap: a far host (TTL 45) answers each of a burst of segments with a reactive
    RST (IP ID 0, the same seq), 14 µs to 5 ms apart, all with the same TTL: separate RSTs
    to separate segments (frames 127-139 are the segments), which the header cannot tell
    from copies, so none is taken for one."""
    r = _resets(_field("nfstream+nfstream/tests/pcaps/ethereum.pcap"), tmp_path)
    assert r.loc[[132, 133, 145], "duplicate_of"].isna().all()
    assert r.duplicate_of.isna().all()


# --------------------------------------------------------------------------- checksums (item 10)
def test_offloaded_checksums_of_the_capturing_host_are_not_corruption(tmp_path: Path) -> None:
    """community-id-ipv4: every packet 172.26.0.39 sent has a wrong TCP checksum but for the
    kernel's bare reactive RST (computed in software): the capture was taken on that host
    with checksum offload.  Its RST+ACK (frame 24, wrong checksum) is not corrupt."""
    r = _resets(_field("OISF+suricata-verify/tests/community-id-ipv4/input.pcap"), tmp_path)
    assert set(r.checksum.astype(str)) <= {"good", "offload", "unreliable"}
    assert "good" in set(r.checksum.astype(str))
    assert not (r.subcause.astype(str) == "corrupt").any()


def test_a_host_whose_checksums_are_all_wrong_is_not_corrupt(tmp_path: Path) -> None:
    """base64_0x27_detptr_bug.pcap: all of 192.168.0.37's segments, its RST included, carry
    wrong checksums (a rewritten capture), the other host's are good."""
    r = _resets(_field("OISF+suricata-verify/tests/bug-7842-01/base64_0x27_detptr_bug.pcap"), tmp_path)
    assert (r.checksum.astype(str) != "bad").all()
    assert not (r.subcause.astype(str) == "corrupt").any()


def _pcap_records(data: bytes) -> list[tuple[int, int]]:
    """(offset of the packet bytes, their length) of each record of a classic pcap."""
    out, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        out.append((off + 16, incl))
        off += 16 + incl
    return out


def _inet_sum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _fix_checksums(pkt: bytearray) -> None:
    """Ethernet + IPv4 + TCP: recompute both checksums (RFC 791, RFC 9293 §3.1)."""
    ip = 14
    ihl = (pkt[ip] & 0x0F) * 4
    pkt[ip + 10 : ip + 12] = b"\0\0"
    pkt[ip + 10 : ip + 12] = struct.pack("!H", 0xFFFF - _inet_sum(bytes(pkt[ip : ip + ihl])))
    total = struct.unpack_from("!H", pkt, ip + 2)[0]
    tcp = ip + ihl
    seg = bytes(pkt[tcp : ip + total])
    seg = seg[:16] + b"\0\0" + seg[18:]
    pseudo = bytes(pkt[ip + 12 : ip + 20]) + struct.pack("!BBH", 0, 6, len(seg))
    pkt[tcp + 16 : tcp + 18] = struct.pack("!H", 0xFFFF - _inet_sum(pseudo + seg))


CURL = "nfstream+nfstream/tests/pcaps/443-curl.pcap"  # Ethernet, every checksum good (tshark)


def test_a_data_segment_whose_flag_byte_turned_into_rst_is_no_evidence(tmp_path: Path) -> None:
    """443-curl.pcap, frame 95 (the server's 1,405-byte PSH+ACK) with one bit flipped on the
    way: flags 0x18 -> 0x1c (RST set), the checksum left as sent."""
    data = bytearray(_field(CURL).read_bytes())
    off, _ = _pcap_records(bytes(data))[94]
    flags_at = off + 14 + 20 + 13
    assert data[flags_at] == 0x18
    data[flags_at] = 0x1C
    edited = tmp_path / "corrupt.pcap"
    edited.write_bytes(bytes(data))
    r = _resets(edited, tmp_path)
    before = _resets(_field(CURL), tmp_path / "before")
    assert r.at[95, "checksum"] == "bad"
    assert (r.at[95, "cause"], r.at[95, "subcause"]) == ("unknown", "corrupt")
    assert "capture.bad_checksum" in list(r.at[95, "evidence"])
    assert r.at[95, "ended_connection"] is False or not bool(r.at[95, "ended_connection"])
    assert (r.drop(index=95).checksum.astype(str) == "good").all()
    assert set(before.index) == set(r.index) - {95}


# --------------------------------------------------------------------------- text (item 9)
def _with_payload(frame: int, payload: bytes, tmp_path: Path) -> Path:
    """443-curl.pcap with `payload` appended to the RST of `frame` (as a load balancer
    writes its diagnostic into the RST), lengths and checksums made right."""
    data = bytes(_field(CURL).read_bytes())
    records = _pcap_records(data)
    off, incl = records[frame - 1]
    pkt = bytearray(data[off : off + incl])
    total = struct.unpack_from("!H", pkt, 16)[0]
    pkt = pkt[: 14 + total] + payload
    struct.pack_into("!H", pkt, 16, total + len(payload))
    _fix_checksums(pkt)
    hdr = bytearray(data[off - 16 : off])
    struct.pack_into("<II", hdr, 8, len(pkt), len(pkt))
    out = tmp_path / "text.pcap"
    out.write_bytes(data[: off - 16] + bytes(hdr) + bytes(pkt) + data[off + incl :])
    return out


def test_text_in_a_rst_is_kept_escaped_and_is_evidence(tmp_path: Path) -> None:
    text = b"TCP RST from remote system\\\x00"
    r = _resets(_with_payload(105, text, tmp_path), tmp_path)
    assert r.at[105, "checksum"] == "good"
    assert r.at[105, "payload_len"] == len(text)
    assert r.at[105, "payload_text"] == "TCP RST from remote system\\\\\\x00"
    assert {"payload.present", "payload.text"} <= set(r.at[105, "evidence"])
    assert pd.isna(r.at[106, "payload_text"]) and "payload.text" not in list(r.at[106, "evidence"])


def test_a_binary_marker_is_payload_but_not_text(tmp_path: Path) -> None:
    """The Henan firewall's marker, 01 02 ... 09 00 (RST_SIGNALS §0 rule 10)."""
    marker = bytes(range(1, 10)) + b"\x00"
    r = _resets(_with_payload(105, marker, tmp_path), tmp_path)
    assert r.at[105, "payload_text"] == "".join(f"\\x{c:02x}" for c in marker)
    assert "payload.present" in list(r.at[105, "evidence"])
    assert "payload.text" not in list(r.at[105, "evidence"])


def test_rst_text_is_bounded(tmp_path: Path) -> None:
    r = _resets(_with_payload(105, b"x" * 200, tmp_path), tmp_path)
    assert r.at[105, "payload_len"] == 200 and r.at[105, "payload_text"] == "x" * 64
