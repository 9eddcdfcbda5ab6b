"""The HTML report: one self-contained file (styles, scripts and chart data inline; nothing
fetched when it is opened), built from the tidy frames of `rstlens.reports._frames`.

jinja2 renders the page (reports/templates/report.html.j2, autoescaped); the charts are
Vega-Lite specs drawn in the browser by one inlined copy of the vega libraries.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rstlens.reports import _charts as C
from rstlens.reports import _frames as F
from rstlens.reports._load import Run, evidence_text, explain_lines, load, rstlens_version

TOP_N = 10
MIDDLEBOX_GROUPS = 12  # the largest groups; the rest are summed up in one line
DRILLDOWN_ROWS = 300
# The `explain` ladder re-reads the captures (one pass per connection): embedded only
# when the inputs are small enough for that to take a moment, else the report says which
# command shows it.
LADDER_INPUT_LIMIT = 64 * 1024 * 1024


# What each cause means, for a reader who has never seen rstlens (the README's table, short).
CAUSE_MEANINGS = {
    "closed_port": "a connection attempt refused: nothing listens on the port (the server's kernel answered the SYN)",
    "half_open": "the RST's sender had no state for a connection its peer still believed open (crash, restart, close, lost state)",
    "abort": "an endpoint that still had the connection tore it down (SO_LINGER 0, close with unread data, keepalive timeout)",
    "middlebox": "the RST did not come from the endpoint it claims: a firewall REJECT, a load balancer, an injector",
    "unknown": "not enough evidence (capture started mid-connection, nothing seen before the RST, no rule matched)",
}


class MissingReportPackages(ImportError):
    """jinja2 or vl-convert-python (the `report` extra) is not installed."""


@dataclass
class ReportOptions:
    since: str | None = None
    until: str | None = None
    host: str | None = None
    port: int | None = None
    cause: str | None = None
    ladders: int = 5
    title: str | None = None


@dataclass
class ReportResult:
    path: Path
    bytes: int
    seconds: float
    connections: int
    rsts: int
    timings: dict[str, float] = field(default_factory=dict)


def check_dependencies() -> None:
    """Raise `MissingReportPackages` unless the `report` extra's packages import."""
    try:
        import jinja2  # noqa: F401
        import vl_convert  # noqa: F401
    except ImportError as exc:
        raise MissingReportPackages(str(exc)) from exc


def vega_bundle() -> str:
    """vega, vega-lite and vega-embed as one script (vl-convert bundles them offline).
    Bundling takes ~1.5 s, so the result is cached per vl-convert version in the user's
    cache directory (recomputed when that is not writable)."""
    import vl_convert

    version = getattr(vl_convert, "__version__", "unknown")
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cached = cache_home / "rstlens" / f"vega-bundle-{version}.js"
    try:
        return cached.read_text()
    except OSError:
        pass
    # the stub wants a snippet; without one the bundle sets window.vegaEmbed and friends
    bundle: str = vl_convert.javascript_bundle()  # type: ignore[call-arg]
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(bundle)
        os.replace(tmp, cached)
    except OSError:
        pass
    return bundle


def _script_safe(text: str) -> str:
    """Text that cannot end the <script> element it is inlined in: ``</script`` and
    ``<!--`` escaped the way JavaScript (and JSON) read them unchanged.  (Only those: the
    bundle has ``</`` inside regular-expression literals, where ``<\\/`` would change them.)"""
    text = re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE)
    return text.replace("<!--", "<\\u0021--")


def _fmt_time(t: pd.Timestamp | None) -> str:
    return "—" if t is None or pd.isna(t) else t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _ladders(run: Run, table: pd.DataFrame, count: int) -> list[dict[str, Any]]:
    """`rstlens explain` for the first `count` connections of the drill-down (one per
    verdict), or the reason it is left out."""
    if count <= 0 or table.empty:
        return []
    picked = table.drop_duplicates("verdict").drop_duplicates("uid").head(count)
    inputs = [i for m in run.metadata for i in m.get("inputs", [])]
    total = sum(int(i.get("size") or 0) for i in inputs)
    out = []
    for row in picked.itertuples():
        entry = {"uid": row.uid, "verdict": row.verdict, "text": None, "why": None}
        if not inputs:
            entry["why"] = "the run records no capture file to re-read the packets from"
        elif total > LADDER_INPUT_LIMIT:
            entry["why"] = (f"inputs are {total / 2**20:.0f} MB: the packets are not re-read here; "
                            f"run `rstlens explain RUN {row.uid}`")  # fmt: skip
        else:
            entry["text"] = _explain_in_parts(run.parts, row.uid)
        out.append(entry)
    return out


def _explain_in_parts(parts: Sequence[Path], uid: str) -> str:
    for part in parts:
        try:
            return "\n".join(explain_lines(part, uid))
        except LookupError:  # not in this part
            continue
        except Exception as exc:  # a capture that moved or broke must not sink the report
            return f"(explain failed: {exc})"
    return "(connection not found)"


def build_context(run: Run, options: ReportOptions) -> tuple[dict[str, Any], dict[str, float]]:
    """Everything the template shows, computed from `run`."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        timings[name] = now - t0
        t0 = now

    flows, resets = F.filter_run(run.flows, run.resets, since=options.since, until=options.until,
                                 host=options.host, port=options.port, cause=options.cause)  # fmt: skip
    lap("filter")
    start, end = F.time_span(flows, resets)
    freq = F.choose_freq(start, end)
    causes = F.causes(resets)
    states = F.conn_states(flows)
    health = F.health(run.summaries)
    timeline = F.timeline(flows, resets, freq=freq)
    lap("overview+when")
    talkers = {by: F.top_talkers(resets, by, TOP_N) for by in F.TALKER_KEYS}
    services = F.services(flows, TOP_N + 5)
    lap("where")
    middle = F.middlebox_groups(flows, resets)
    lap("middleboxes")
    damage_cause = F.damage(flows, resets, by="cause")
    damage_service = F.damage(flows, resets, by="service", n=TOP_N)
    ages = F.age_histogram(flows, resets)
    stages = F.stages(flows)
    lap("damage")
    evidence = F.evidence(resets)
    conf = F.confidence(resets)
    lap("evidence")
    drill = F.drilldown(flows, resets, DRILLDOWN_ROWS)
    ladders = _ladders(run, drill, options.ladders)
    lap("drilldown")

    cause_totals = causes.groupby("cause", sort=False)[["rsts", "connections"]].sum().reset_index()
    charts: dict[str, Any] = {"when": C.timeline_chart(timeline, freq)}
    titles = {"sender": ("Top RST senders (src_h, the claimed sender)", "sender"),
              "receiver": ("Top RST receivers (dst_h)", "receiver"),
              "service_port": ("Top service ports (the responder's port)", "port"),
              "pair": ("Top host pairs (client → service)", "pair")}  # fmt: skip
    for by, frame in talkers.items():
        if not frame.empty:
            order = frame.drop_duplicates("key")["key"].tolist()
            charts[f"where-{by}"] = C.stacked_bars(frame, "key", "rsts", titles[by][0], titles[by][1], sort=order)
    if not damage_cause.empty:
        lost = damage_cause.rename(columns={"key": "cause"})
        charts["damage-bytes"] = C.stacked_bars(lost, "cause", "unacked_bytes", "Unacknowledged bytes at reset, by cause",
                                                "cause", sort=lost["cause"].tolist())  # fmt: skip
    if not ages.empty:
        charts["damage-age"] = C.histogram(ages, "age", "connections", "Connection age at the first RST", "age",
                                           order_field="order")  # fmt: skip
    if not stages.empty:
        sig = stages.groupby(["order", "signature", "cause"], sort=True)["connections"].sum().reset_index()
        charts["damage-stages"] = C.stacked_bars(sig, "signature", "connections", "Stage at which reset connections died",
                                                 "signature", sort=sig.drop_duplicates("signature")["signature"].tolist())  # fmt: skip
    if not evidence.empty:
        charts["evidence-codes"] = C.heatmap(evidence, "Evidence codes per cause (count; colour: share of the cause's RSTs)")
    if not conf.empty:
        charts["evidence-confidence"] = C.histogram(conf, "label", "rsts", "Confidence of the verdicts", "confidence",
                                                    order_field="bin")  # fmt: skip
    lap("charts")

    filters = {k: v for k, v in (("since", options.since), ("until", options.until), ("host", options.host),
                                 ("port", options.port), ("cause", options.cause)) if v is not None}  # fmt: skip
    top_sender = talkers["sender"].iloc[0] if not talkers["sender"].empty else None
    context = {
        "title": options.title or "rstlens report",
        "version": rstlens_version(),
        "generated": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M:%S UTC"),
        "parts": [str(p) for p in run.parts],
        "filters": filters,
        "start": _fmt_time(start), "end": _fmt_time(end),
        "span_s": (end - start).total_seconds() if start is not None and end is not None else 0.0,
        "connections": len(flows), "rsts": len(resets),
        "reset_connections": int((flows["rst_count"].to_numpy() > 0).sum()) if len(flows) else 0,
        "packets": health["totals"]["packets"], "tcp_packets": health["totals"]["tcp_packets"],
        "health": health,
        "causes": causes.to_dict("records"), "cause_totals": cause_totals.to_dict("records"),
        "conn_states": states.to_dict("records"),
        "freq": freq,
        "timeline_peak": _timeline_peak(timeline),
        "talkers": {by: _pivot_talkers(frame) for by, frame in talkers.items()},
        "top_sender": None if top_sender is None else {"key": top_sender["key"], "total": int(top_sender["total"])},
        "services": services.to_dict("records"),
        "middlebox": _records(middle.head(MIDDLEBOX_GROUPS)),
        "middlebox_rest": {"groups": max(len(middle) - MIDDLEBOX_GROUPS, 0),
                           "rsts": int(middle["rsts"].iloc[MIDDLEBOX_GROUPS:].sum()) if len(middle) else 0},
        "damage_cause": damage_cause.to_dict("records"), "damage_service": damage_service.to_dict("records"),
        "stages": stages.to_dict("records"),
        "evidence": evidence.to_dict("records"),
        "evidence_help": {code: evidence_text(code) for code in evidence["code"].unique()} if not evidence.empty else {},
        "confidence": _confidence_summary(resets),
        "drilldown": _records(drill), "drilldown_total": len(resets),
        "ladders": ladders,
        "charts_json": _script_safe(json.dumps(charts, separators=(",", ":"), allow_nan=False)),
        "cause_colors": C.CAUSE_COLORS,
        "cause_meanings": {c: CAUSE_MEANINGS.get(c, "") for c in cause_totals["cause"]},
        "headline": _headline(causes, len(resets), top_sender, middle),
    }  # fmt: skip
    lap("context")
    return context, timings


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = frame.to_dict("records")
    for row in rows:
        for key, value in row.items():
            if isinstance(value, pd.Timestamp):
                row[key] = _fmt_time(value)
            elif value is None or (isinstance(value, float) and pd.isna(value)):
                row[key] = None
    return rows


def _pivot_talkers(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per key: rank, key, total and a {cause: rsts} split."""
    rows: dict[str, dict[str, Any]] = {}
    for rec in frame.itertuples():
        row = rows.setdefault(rec.key, {"rank": int(rec.rank), "key": rec.key, "total": int(rec.total), "split": {}})
        row["split"][rec.cause] = int(rec.rsts)
    return list(rows.values())


def _timeline_peak(frame: pd.DataFrame) -> dict[str, Any] | None:
    rst = frame[frame["kind"] == "rst"]
    if rst.empty:
        return None
    per_bin = rst.groupby("time")["count"].sum()
    t = per_bin.idxmax()
    return {"time": _fmt_time(t), "rsts": int(per_bin.max()), "bins": int(per_bin.size)}


def _confidence_summary(resets: pd.DataFrame) -> list[dict[str, Any]]:
    if resets.empty:
        return []
    frame = pd.DataFrame({"cause": resets["cause"].astype(str), "c": resets["confidence"].astype(float)})
    out = frame.groupby("cause", sort=False)["c"].agg(["size", "min", "median", "mean"]).reset_index()
    low = frame[frame["c"] < 0.7].groupby("cause").size()
    out["below_0_7"] = out["cause"].map(low).fillna(0).astype(int)
    order = {c: k for k, c in enumerate(C.CAUSE_COLORS)}
    rows: list[dict[str, Any]] = out.sort_values("cause", key=lambda s: s.map(order).fillna(99)).to_dict("records")
    return rows


def _headline(causes: pd.DataFrame, rsts: int, top_sender: pd.Series | None, middle: pd.DataFrame) -> str:
    """One sentence answering "who reset these connections and why"."""
    if rsts == 0:
        return "No TCP RST in this run: nothing reset these connections."
    per_cause = causes.groupby("cause", sort=False)["rsts"].sum().sort_values(ascending=False)
    lead, n = per_cause.index[0], int(per_cause.iloc[0])
    text = f"{rsts:,} RSTs; most are {lead} ({n:,}, {n / rsts:.0%})"
    if top_sender is not None:
        text += f"; the top sender is {top_sender['key']} ({int(top_sender['total']):,} RSTs)"
    if not middle.empty:
        text += f"; {int(middle['rsts'].sum()):,} come from middleboxes in {len(middle)} group(s)"
    return text + "."


def render(context: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("rstlens.reports", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip
    env.filters["n"] = lambda v: "—" if v is None else f"{int(v):,}"
    env.filters["pct"] = lambda v: f"{100 * float(v):.1f}%"
    env.filters["f2"] = lambda v: "—" if v is None else f"{float(v):.2f}"
    env.filters["secs"] = _seconds
    env.filters["bytes"] = _bytes
    return env.get_template("report.html.j2").render(**context, vega_js=_script_safe(vega_bundle()))


def _seconds(v: float | None) -> str:
    if v is None or pd.isna(v):
        return "—"
    v = float(v)
    if v < 1e-3:
        return f"{v * 1e6:.0f} µs"
    if v < 1:
        return f"{v * 1e3:.1f} ms"
    if v < 120:
        return f"{v:.1f} s"
    return f"{v / 60:.1f} min" if v < 7200 else f"{v / 3600:.1f} h"


def _bytes(v: float | None) -> str:
    if v is None or pd.isna(v):
        return "—"
    v = float(v)
    for unit in ("B", "KB", "MB", "GB"):
        if v < 1024 or unit == "GB":
            return f"{v:,.0f} {unit}" if unit == "B" else f"{v:,.1f} {unit}"
        v /= 1024
    return f"{v:.1f} GB"


def write_report(runs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Run,
                 output: str | os.PathLike[str], options: ReportOptions | None = None) -> ReportResult:
    """Read `runs` (analyze output directories or partitioned datasets) and write the HTML
    report to `output`."""
    check_dependencies()
    started = time.perf_counter()
    options = options or ReportOptions()
    run = runs if isinstance(runs, Run) else load(runs)
    loaded = time.perf_counter()
    context, timings = build_context(run, options)
    timings = {"load": loaded - started, **timings}
    t = time.perf_counter()
    html = render(context)
    timings["render"] = time.perf_counter() - t
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return ReportResult(out, out.stat().st_size, time.perf_counter() - started,
                        context["connections"], context["rsts"], timings)  # fmt: skip
