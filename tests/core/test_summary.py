"""The end-of-run summary: plain aligned text off a terminal, rich tables on one."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from rstlens.cli.summary import print_summary
from rstlens.summary import Summary

REPO = Path(__file__).resolve().parents[2]

SUMMARY = Summary(
    packets=1_234_567, tcp_packets=1_200_000, connections=4_321, rst_packets=12, seconds=1.5,
    conn_states={"SF": 4000, "REJ": 321}, rst_causes={"closed_port": 10, "middlebox": 2},
    top_rst_hosts=[("10.0.0.1", 9), ("2001:db8::[1]", 3)], top_rst_ports=[(443, 11), (80, 1)],
    warnings=["3 IP fragments counted, not reassembled"],
)  # fmt: skip


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_text_off_a_terminal() -> None:
    out = io.StringIO()
    print_summary(SUMMARY, Path("/data/out"), out)
    assert out.getvalue().splitlines() == [
        "1,234,567 packets (1,200,000 TCP), 4,321 TCP connections, 12 RST packets in 1.50 s",
        "conn_state: SF 4,000, REJ 321",
        "RSTs by cause",
        "  cause        RSTs",
        "  closed_port    10",
        "  middlebox       2",
        "Top RST senders",
        "  host (as on the wire)  RSTs",
        "  10.0.0.1                  9",
        "  2001:db8::[1]             3",
        "Top service ports",
        "  port  RSTs",
        "  443     11",
        "  80       1",
        "warning: 3 IP fragments counted, not reassembled",
        "wrote /data/out/flows.parquet and /data/out/resets.parquet",
    ]


def test_rich_tables_on_a_terminal() -> None:
    out = _Terminal()
    print_summary(SUMMARY, Path("/data/out"), out)
    text = out.getvalue()
    assert "\x1b[" in text  # styled
    for shown in ("RSTs by cause", "closed_port", "2001:db8::[1]", "443", "warning:", "resets.parquet"):
        assert shown in text, shown


def test_analyze_off_a_terminal_imports_neither_rich_nor_other_commands(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("rstlens")
    pcap = sorted((REPO / "sample_pcaps").glob("*.pcap"))[0]
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")  # every import is listed on stderr
    out = subprocess.run([str(exe), "analyze", str(pcap), "-o", str(tmp_path)], capture_output=True,
                         text=True, env=env, check=True)  # fmt: skip
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "pyarrow.parquet" in imported and "numpy" in imported  # the listing works
    assert not {m for m in imported if m.split(".")[0] == "rich"}
    assert not imported & {"rstlens.cli.explain", "rstlens.cli.packets"}  # imported when used
    assert "numpy.ma" not in imported  # ~25 ms; np.unique without indices or counts imports it
    assert "RSTs by cause" in out.stderr


def test_summary_round_trips_through_its_dict_form() -> None:
    from rstlens.parsers import InputInfo

    s = Summary(**{**SUMMARY.__dict__, "inputs": [InputInfo("a.pcap", 10, "pcap", [1], "libpcap", 3, None, ["cut"], 99)]})
    back = Summary.from_dict(s.to_dict())
    assert back == s
    assert back.inputs[0].truncated_at == 99 and back.unreadable_inputs == 0
    # a newer writer's extra keys do not stop an older reader
    assert Summary.from_dict({**s.to_dict(), "future_counter": 1}) == s
