"""`Summary`: what one run saw, as printed by `rstlens analyze`, returned by `rstlens.analyze`
and stored in every output file's metadata (``rstlens_run`` → ``summary``)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from rstlens.parsers._info import InputInfo


@dataclass
class Surge:
    """A SYN flood or SYN scan seen in the run (`rstlens.surges`, where the thresholds are)."""

    kind: str  # "syn_flood": many sources at one target host; "syn_scan": one source, many targets
    host: str  # the flood's target, or the scan's source
    sources: int  # distinct sources of its failed attempts (estimated; 1 for a scan)
    targets: int  # distinct (host, port) targets (estimated; 1 host for a flood)
    attempts: int  # failed connection attempts (S0 or REJ, SYN seen)
    rate: float  # attempts per second between the first and the last
    first_ts: int  # µs since the epoch
    last_ts: int


@dataclass
class Summary:
    """Counters, per-input outcome, and the RST verdicts in brief."""

    packets: int = 0  # records read, every protocol
    tcp_packets: int = 0
    connections: int = 0
    rst_packets: int = 0
    conn_states: dict[str, int] = field(default_factory=dict)  # Zeek conn_state -> connections
    rst_causes: dict[str, int] = field(default_factory=dict)  # cause -> RSTs, most first
    top_rst_hosts: list[tuple[str, int]] = field(default_factory=list)  # RST senders as on the wire
    top_rst_ports: list[tuple[int, int]] = field(default_factory=list)  # service ports
    inputs: list[InputInfo] = field(default_factory=list)  # their errors and warnings are there
    warnings: list[str] = field(default_factory=list)  # the run's own (evictions, fragments)
    decode: dict[str, int] = field(default_factory=dict)  # parsers.DecodeStats counters
    core: dict[str, int] = field(default_factory=dict)  # FlowEngine.counters()
    notes: list[str] = field(default_factory=list)  # neither warnings nor errors (clean-up done)
    skipped: list[str] = field(default_factory=list)  # non-captures skipped in directory arguments
    # libpcap's counters and the capture-loss estimate (`rstlens.sensor.CaptureStats.to_dict`):
    # received, dropped (kernel), if_dropped (interface), gap_connections, loss_estimate
    capture: dict[str, float] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)  # --rotate: the part ids this run committed
    packet_files: list[str] = field(default_factory=list)  # -w: the packet files written
    # SYN floods and scans (`rstlens.surges`): most attempts first
    surges: list[Surge] = field(default_factory=list)
    interrupted: bool = False  # stopped by SIGINT/SIGTERM (or the end of a live capture)
    seconds: float = 0.0

    @property
    def unreadable_inputs(self) -> int:
        return sum(1 for i in self.inputs if i.error)

    @property
    def partial_inputs(self) -> int:
        """Inputs read only in part: cut short (truncated, corrupt further on)."""
        return sum(1 for i in self.inputs if not i.error and i.cut_short)

    @property
    def nothing_readable(self) -> bool:
        """Every input (duplicates aside, which are not read) could not be read at all."""
        read = [i for i in self.inputs if i.duplicate_of is None]
        return all(i.error for i in read)

    def skipped_inputs(self, directory: str) -> list[str]:
        """The files skipped as not captures below `directory` (one of the arguments)."""
        import os

        top = os.path.join(directory, "")
        return [p for p in self.skipped if p.startswith(top)]

    @property
    def has_warnings(self) -> bool:
        return bool(self.warnings) or any(i.warnings for i in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (the form of ``--json`` and of the files' metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        """The inverse of `to_dict`; keys it does not know (a newer writer's) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        input_fields = {f.name for f in dataclasses.fields(InputInfo)}
        values["inputs"] = [
            InputInfo(**{k: v for k, v in i.items() if k in input_fields}) for i in values.get("inputs", [])
        ]
        surge_fields = {f.name for f in dataclasses.fields(Surge)}
        values["surges"] = [Surge(**{k: v for k, v in x.items() if k in surge_fields})
                            for x in values.get("surges", [])]  # fmt: skip
        for key in ("top_rst_hosts", "top_rst_ports"):
            values[key] = [tuple(pair) for pair in values.get(key, [])]
        return cls(**values)
