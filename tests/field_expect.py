"""What current rstlens gets wrong on the issue-17 field scenarios (tools/scenarios.py,
group "field"), one reason per scenario.

Shared by the live run (tests/core/test_ground_truth.py) and the committed sample
(tests/core/test_field_samples.py): a scenario listed here is checked under
``pytest.mark.xfail(strict=True)``, so the check turns into a failure the moment the rules
get all of that scenario's RSTs right, and its entry must then be removed.  Measured on the
committed sample (tests/data/scenarios) with rstlens at main 1852917; since fixed: items 1,
3 and 10 (dup_any_router, closewait_late_reset, corrupt_segment), items 2, 4 and 5
(ttl_socket_255, ttl_socket_1, late_data_after_fin, nmap_scans), item 8 (haproxy_resets:
relayed upstream RSTs, `attribution.speakers`), item 6 (evasion_insertion: the TSecr
insertion RST, since the RST log keeps timestamps).
"""

from __future__ import annotations

import pytest

KNOWN_WRONG: dict[str, str] = {
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
