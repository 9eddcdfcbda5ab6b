"""What current rstlens gets wrong on the issue-17 field scenarios (tools/scenarios.py,
group "field"), one reason per scenario.

Shared by the live run (tests/core/test_ground_truth.py) and the committed sample
(tests/core/test_field_samples.py): a scenario listed here is checked under
``pytest.mark.xfail(strict=True)``, so the check turns into a failure the moment the rules
get all of that scenario's RSTs right, and its entry must then be removed.  Measured on the
committed sample (tests/data/scenarios) with rstlens at main 1852917.
"""

from __future__ import annotations

import pytest

KNOWN_WRONG: dict[str, str] = {
    "dup_any_router": "issue 17 item 1: the second copy of the closed-port RST (tcpdump -i any "
                      "on the router) gets unknown.no_match instead of the original's closed_port",
    "ttl_socket_255": "issue 17 item 2: the host's default-TTL kernel RSTs (closed port, "
                      "half-open) beside an IP_TTL 255 socket are called middlebox.reject",
    "ttl_socket_1": "issue 17 item 2: the host's default-TTL kernel RSTs (closed port, half-open) "
                    "beside an IP_TTL 1 socket are called middlebox.reject",
    "nmap_scans": "issue 17 item 5: closed-port replies to nmap FIN/NULL/Xmas probes get "
                  "unknown.no_match; the scanner kernel's RST to a SYN-ACK (nmap's raw SYN has "
                  "its own TTL) is called middlebox.reject",
    "haproxy_resets": "issue 17 item 8: HAProxy's RST after its backend refused (visible on the "
                      "proxy host) is called abort; its reason is closed_port",
    "late_data_after_fin": "issue 17 item 4: the RST at the FIN's sequence number (RCV.NXT - 1) "
                           "answering a late segment gets unknown.no_match",
    "evasion_insertion": "issue 17 item 6: the client's own insertion RSTs (TTL 1, TCP-AO; a "
                         "TSecr the server never sent) are called middlebox.injected, not "
                         "unknown.evasion",
    "corrupt_segment": "issue 17 item 10: a data segment whose flipped RST bit left its TCP "
                       "checksum wrong is called middlebox.injected; it is evidence of nothing",
    "closewait_late_reset": "issue 17 item 3: a CLOSE_WAIT socket's RST 2 h after the last packet "
                            "gets unknown.unsolicited",
}


def field_param(name: str) -> object:
    """`name` as a pytest parameter, strictly expected to fail while it is in KNOWN_WRONG."""
    if name in KNOWN_WRONG:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_WRONG[name]))
    return name


def verdict_matches(label: dict[str, str], verdict: object) -> bool:
    """Does rstlens' verdict row (None: no row for that frame) hold to the label?  A segment
    labelled `unknown.bad_checksum` is no RST at all: no verdict or an `unknown` one holds.
    Otherwise the cause must be the label's, and an endpoint's RST never a middlebox's."""
    if label["cause"] == "unknown" and label["subcause"] == "bad_checksum":
        return verdict is None or str(verdict.cause) == "unknown"  # type: ignore[attr-defined]
    if verdict is None:
        return False
    cause = str(verdict.cause)  # type: ignore[attr-defined]
    return cause == label["cause"] and not (label["who"] == "endpoint" and cause == "middlebox")
