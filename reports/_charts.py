"""Vega-Lite specifications (plain dicts) of the report's charts, from the tidy frames.

Vega-Lite because a chart is then a few hundred bytes of JSON over aggregates, rendered
in the browser by one inlined copy of vega + vega-lite + vega-embed (~0.9 MB, from
vl-convert's `javascript_bundle`): tooltips and crisp SVG, where plotly.js alone is
~4.5 MB.  The specs are written by hand, not through altair, to keep the report's
dependencies (and its start-up) small.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

Spec = dict[str, Any]

# One colour per cause everywhere in the report; connection series are greys.
CAUSE_COLORS = {
    "closed_port": "#4c78a8",
    "half_open": "#f58518",
    "abort": "#54a24b",
    "middlebox": "#e45756",
    "unknown": "#9d755d",
}
SERIES_COLORS = {"attempts": "#555555", "failed": "#b279a2"}
WIDTH = 760


def _cause_scale(causes: list[str]) -> dict[str, Any]:
    domain = [c for c in CAUSE_COLORS if c in causes] + sorted(set(causes) - set(CAUSE_COLORS))
    return {"domain": domain, "range": [CAUSE_COLORS.get(c, "#bab0ac") for c in domain]}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = frame.copy()
    for name, dtype in out.dtypes.items():
        if isinstance(dtype, pd.DatetimeTZDtype):
            out[name] = out[name].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rows: list[dict[str, Any]] = out.astype(object).where(out.notna(), None).to_dict("records")
    return rows


def _base(title: str, height: int = 220, width: int = WIDTH) -> Spec:
    return {
        "title": {"text": title, "anchor": "start", "fontSize": 13},
        "width": width, "height": height,
        "config": {"view": {"stroke": None}, "axis": {"labelLimit": 260}},
    }  # fmt: skip


def timeline_chart(frame: pd.DataFrame, freq: str) -> Spec:
    """RSTs per bin stacked by cause (bars), connection attempts and failures as lines on
    the same count axis."""
    rst = frame[frame["kind"] == "rst"]
    conn = _with_empty_bins(frame[frame["kind"] == "connections"], frame, freq)
    spec = _base(f"RSTs by cause and connection attempts per {freq}", height=260)
    x = {"field": "time", "type": "temporal", "title": None}
    layers: list[Spec] = []
    if not rst.empty:
        layers.append({
            "data": {"values": _records(rst)},
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {
                # a time unit stepped like the bins: each bar spans its bin, not one second
                "x": {**x, "timeUnit": _time_unit(freq)},
                "y": {"field": "count", "type": "quantitative", "stack": True, "title": f"per {freq}"},
                "color": {"field": "series", "type": "nominal", "title": "RSTs by cause",
                          "scale": _cause_scale(sorted(rst["series"].unique()))},
            },
        })  # fmt: skip
    if not conn.empty:
        layers.append({
            "data": {"values": _records(conn)},
            "mark": {"type": "line", "point": {"size": 12}, "tooltip": True, "strokeWidth": 1.5},
            "encoding": {
                "x": {**x, "scale": {"type": "utc"}},
                "y": {"field": "count", "type": "quantitative", "title": f"per {freq}"},
                "color": {"field": "series", "type": "nominal", "title": "connections",
                          "scale": {"domain": list(SERIES_COLORS), "range": list(SERIES_COLORS.values())}},
                "strokeDash": {"field": "series", "type": "nominal", "legend": None,
                               "scale": {"domain": list(SERIES_COLORS), "range": [[1, 0], [4, 2]]}},
            },
        })  # fmt: skip
    spec["layer"] = layers or [{"data": {"values": []}, "mark": "bar"}]
    spec["resolve"] = {"scale": {"color": "independent"}}
    return spec


def _time_unit(freq: str) -> dict[str, Any]:
    """The Vega-Lite UTC time unit whose step is one bin of `freq` ("30s", "5min", "1h")."""
    seconds = int(pd.Timedelta(freq).total_seconds())
    for unit, size in (("utcyearmonthdate", 86_400), ("utcyearmonthdatehours", 3600),
                       ("utcyearmonthdatehoursminutes", 60)):  # fmt: skip
        if seconds >= size and seconds % size == 0:
            return {"unit": unit, "step": seconds // size}
    return {"unit": "utcyearmonthdatehoursminutesseconds", "step": seconds}


def _with_empty_bins(conn: pd.DataFrame, frame: pd.DataFrame, freq: str) -> pd.DataFrame:
    """Connection series with a 0 in every empty bin, so a line drops to 0 in a quiet
    spell instead of bridging it."""
    if conn.empty:
        return conn
    bins = pd.date_range(frame["time"].min(), frame["time"].max(), freq=freq)
    parts = []
    for name, series in conn.groupby("series", sort=True):
        counts = series.set_index("time")["count"].reindex(bins, fill_value=0)
        parts.append(pd.DataFrame({"time": bins, "kind": "connections", "series": name, "count": counts.to_numpy()}))
    return pd.concat(parts, ignore_index=True)


def stacked_bars(frame: pd.DataFrame, key: str, value: str, title: str, key_title: str,
                 sort: list[str] | None = None, color: str = "cause") -> Spec:
    """Horizontal bars of `value` per `key`, stacked by cause."""
    rows = max(frame[key].nunique(), 1)
    spec = _base(title, height=min(22 * rows + 10, 480), width=WIDTH - 220)
    spec["data"] = {"values": _records(frame)}
    spec["mark"] = {"type": "bar", "tooltip": True}
    spec["encoding"] = {
        "y": {"field": key, "type": "nominal", "title": key_title,
              "sort": sort if sort is not None else "-x"},
        "x": {"field": value, "type": "quantitative", "title": value.replace("_", " ")},
        "color": {"field": color, "type": "nominal", "title": color,
                  "scale": _cause_scale(sorted(frame[color].astype(str).unique()))},
        "order": {"field": value, "sort": "descending"},
    }  # fmt: skip
    return spec


def heatmap(frame: pd.DataFrame, title: str) -> Spec:
    """Evidence code (rows) by cause (columns): share of that cause's RSTs, count as text."""
    codes = frame["code"].nunique()
    spec = _base(title, height=max(18 * codes, 40), width=90 * max(frame["cause"].nunique(), 1))
    spec["data"] = {"values": _records(frame)}
    enc = {
        "x": {"field": "cause", "type": "nominal", "title": None, "axis": {"orient": "top", "labelAngle": 0}},
        "y": {"field": "code", "type": "nominal", "title": None},
    }
    spec["layer"] = [
        {"mark": {"type": "rect", "tooltip": True},
         "encoding": {**enc, "color": {"field": "share", "type": "quantitative", "title": "share of the cause's RSTs",
                                       "scale": {"scheme": "blues", "domain": [0, 1]}}}},
        {"mark": {"type": "text", "fontSize": 10},
         "encoding": {**enc, "text": {"field": "rsts", "type": "quantitative"},
                      "color": {"condition": {"test": "datum.share > 0.6", "value": "white"}, "value": "black"}}},
    ]  # fmt: skip
    return spec


def histogram(frame: pd.DataFrame, x: str, value: str, title: str, x_title: str, order_field: str | None = None) -> Spec:
    """Vertical bars of `value` per bin `x`, stacked by cause."""
    spec = _base(title, height=200, width=WIDTH - 260)
    spec["data"] = {"values": _records(frame)}
    sort: Any = {"field": order_field} if order_field else "ascending"
    spec["mark"] = {"type": "bar", "tooltip": True}
    spec["encoding"] = {
        "x": {"field": x, "type": "ordinal", "title": x_title, "sort": sort, "axis": {"labelAngle": 0}},
        "y": {"field": value, "type": "quantitative", "title": value.replace("_", " ")},
        "color": {"field": "cause", "type": "nominal", "scale": _cause_scale(sorted(frame["cause"].unique()))},
    }  # fmt: skip
    return spec
