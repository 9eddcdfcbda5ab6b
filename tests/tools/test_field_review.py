"""tools.field_review: the field-review aid lists exactly the RSTs tshark finds, with ladders."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tools.field_review import FIELD, facts, ladder, load, main

# a mail session closed by both sides, then two reactive RSTs from the client (frames 17, 19)
SAMPLE = FIELD / "OISF+suricata-verify/tests/bug-1045/smtpsuricataflowbitsFN.pcap"
# IPv6 on loopback (no IP ID), and 419 RSTs in bursts with identical seq and IP ID 0
IPV6 = FIELD / "zeek+zeek/doc/advanced/devel/spicy/examples/request-line.pcap"
BURSTS = FIELD / "nfstream+nfstream/tests/pcaps/ethereum.pcap"

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None or not SAMPLE.exists(),
                                reason="needs tshark and ../shared/corpus/field")


def _tshark_rst_frames(path: object) -> list[int]:
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", "tcp.flags.reset==1", "-T", "fields",
                          "-e", "frame.number"], capture_output=True, text=True, check=True).stdout
    return [int(x) for x in out.split()]


@pytest.mark.parametrize("path", [SAMPLE, IPV6, BURSTS], ids=["smtp", "ipv6", "bursts"])
def test_lists_exactly_the_rst_frames_tshark_finds(path: object) -> None:
    pkts = load(path)  # type: ignore[arg-type]
    expected = _tshark_rst_frames(path)
    assert expected, "the sample must contain RSTs"
    headers = [ln for ln in ladder(pkts) if ln.startswith("== RST frame ")]
    assert [int(h.split()[3]) for h in headers] == expected
    marked = [ln for ln in ladder(pkts) if ln.startswith(">")]
    assert [int(m.split()[0][1:] or m.split()[1]) for m in marked] == expected
    assert [r["frame"] for r in facts(pkts)] == expected


def test_ladder_shows_the_wire_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    rst17 = next(ln for ln in out.splitlines() if ln.startswith(">") and " 17 " in ln[:8])
    # the reactive form: bare RST, seq = the ack of the server's FIN (raw 193524383), IP ID 0, win 0
    assert " R " in rst17 and "193524383)" in rst17 and "id 0x0000 win     0" in rst17
    assert "BADCSUM" in out  # the capture host's offloaded checksums are shown, not hidden
    f = {r["frame"]: r for r in facts(load(SAMPLE))}
    assert f[17]["my_fin"] and f[17]["seq_eq_lp_ack"] and f[17]["role"] == "orig"
    assert f[19]["my_rst_before"]
