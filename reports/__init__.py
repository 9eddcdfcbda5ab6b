"""Reports over the Parquet records rstlens writes.  Installed as `rstlens.reports`.

    >>> from rstlens import reports
    >>> run = reports.load("out")                  # one analyze output (or several)
    >>> reports.causes(run.resets)                 # RSTs by cause and subcause
    >>> reports.timeline(run.flows, run.resets, freq="10s")
    >>> reports.write_report("out", "out/report.html")

Every frame function takes the flows/resets DataFrames (or a run directory) and returns a
tidy DataFrame; the HTML report (`write_report`, `rstlens report`) is one consumer of them.
The exports (`export`, `rstlens export`) write Zeek conn.log, JSON lines or CSV.
Names are imported on first use, so `import rstlens.reports` costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rstlens._lazy import lazy_getattr

if TYPE_CHECKING:
    from rstlens.reports._export import FORMATS, export
    from rstlens.reports._frames import (
        age_histogram,
        causes,
        confidence,
        conn_states,
        damage,
        drilldown,
        evidence,
        filter_run,
        middlebox_groups,
        services,
        stages,
        timeline,
        top_talkers,
    )
    from rstlens.reports._html import MissingReportPackages, ReportOptions, write_report
    from rstlens.reports._load import Run, load

_LAZY = {
    "Run": "rstlens.reports._load",
    "load": "rstlens.reports._load",
    **dict.fromkeys(
        ("age_histogram", "causes", "conn_states", "confidence", "damage", "drilldown", "evidence",
         "filter_run", "middlebox_groups", "services", "stages", "timeline", "top_talkers"),
        "rstlens.reports._frames",
    ),
    "MissingReportPackages": "rstlens.reports._html",
    "ReportOptions": "rstlens.reports._html",
    "write_report": "rstlens.reports._html",
    "FORMATS": "rstlens.reports._export",
    "export": "rstlens.reports._export",
}

__all__ = [
    "FORMATS",
    "MissingReportPackages",
    "ReportOptions",
    "Run",
    "age_histogram",
    "causes",
    "confidence",
    "conn_states",
    "damage",
    "drilldown",
    "evidence",
    "export",
    "filter_run",
    "load",
    "middlebox_groups",
    "services",
    "stages",
    "timeline",
    "top_talkers",
    "write_report",
]  # fmt: skip
assert sorted(__all__) == sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
