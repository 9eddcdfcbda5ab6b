"""Tidy DataFrames over a run: the questions the report answers, one function each.

Every function takes the run's ``flows`` and/or ``resets`` DataFrames (as `rstlens.read`
returns them) or, in their place, a run directory, and returns a long-form DataFrame with
plain columns (no index to reset), ready for a plot, a pivot or a join.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa

from rstlens.reports._load import Run, load, vocabularies

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rstlens.summary import Summary

Source: TypeAlias = "pd.DataFrame | Run | str | os.PathLike[str]"

# Connections that never got through the handshake: no answer (S0), refused (REJ), the
# originator's own RST or FIN after a lone SYN (RSTOS0, SH), a responder's SYN-ACK then RST
# without the originator's SYN seen (RSTRH) or a lone SYN-ACK and FIN (SHR).
FAILED_STATES = ("S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR")

# Bin widths a timeline may use, smallest first; the first that gives at most MAX_BINS
# bins over the run's span is taken.
TIMELINE_FREQS = ("1s", "2s", "5s", "10s", "15s", "30s", "1min", "2min", "5min", "10min",
                  "15min", "30min", "1h", "2h", "3h", "6h", "12h", "1D", "7D")  # fmt: skip
MAX_BINS = 150

# Stages at which a reset connection died, in the order a connection lives through them,
# with the signature used by connection-tampering measurements (SYN->RST, PSH->RST, ...).
STAGES = (
    ("after SYN", "SYN→RST"),
    ("after handshake", "SYN;ACK→RST"),
    ("after first data", "PSH→RST"),
    ("later", "DATA→RST"),
    ("midstream", "?→RST"),
)


# ---- inputs --------------------------------------------------------------------------------
def _frames(source: Source, resets: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(flows, resets) from a run directory, a `Run`, or the two DataFrames."""
    if isinstance(source, pd.DataFrame):
        if resets is None:
            raise TypeError("pass both the flows and the resets DataFrame (or a run directory)")
        return source, resets
    run = source if isinstance(source, Run) else load(source)
    return run.flows, run.resets


def _resets_only(source: Source) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    return _frames(source)[1]


def _flows_only(source: Source) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    return _frames(source)[0]


def filter_run(
    flows: pd.DataFrame,
    resets: pd.DataFrame,
    *,
    since: pd.Timestamp | str | None = None,
    until: pd.Timestamp | str | None = None,
    host: str | None = None,
    port: int | None = None,
    cause: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep connections (and their RSTs) that start at/after `since` and before `until`,
    have `host` or `port` at either end, and RSTs of `cause` (flows: whose deciding RST
    has it).  Times are ISO strings or Timestamps (naive ones are UTC)."""
    keep_f = pd.Series(True, index=flows.index)
    keep_r = pd.Series(True, index=resets.index)
    if since is not None:
        t = _utc(since)
        keep_f &= flows["ts"] >= t
        keep_r &= resets["ts"] >= t
    if until is not None:
        t = _utc(until)
        keep_f &= flows["ts"] < t
        keep_r &= resets["ts"] < t
    if host is not None:
        keep_f &= (flows["orig_h"] == host) | (flows["resp_h"] == host)
        keep_r &= (resets["src_h"] == host) | (resets["dst_h"] == host)
    if port is not None:
        keep_f &= (flows["orig_p"] == port) | (flows["resp_p"] == port)
        keep_r &= (resets["src_p"] == port) | (resets["dst_p"] == port)
    if cause is not None:
        keep_f &= (flows["rst_cause"] == cause).fillna(False).astype(bool)
        keep_r &= resets["cause"] == cause
    flows = flows[keep_f.to_numpy(bool)]
    resets = resets[keep_r.to_numpy(bool)]
    if since is not None or until is not None or host is not None or port is not None:
        # an RST belongs to the report when its connection does
        resets = resets[resets["uid"].isin(flows["uid"])]
    return flows.reset_index(drop=True), resets.reset_index(drop=True)


def _utc(value: pd.Timestamp | str) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def verdict(resets: pd.DataFrame) -> pd.Series:
    """``cause`` or ``cause.subcause`` per RST, as text."""
    pair = pd.DataFrame({"c": resets["cause"].astype(str), "s": resets["subcause"].astype(object)})
    # a few distinct pairs: format each once
    codes, uniques = pd.MultiIndex.from_frame(pair.fillna({"s": ""})).factorize()
    text = np.array([c + ("." + s if s else "") for c, s in uniques], dtype=object)
    return pd.Series(text[codes] if len(codes) else np.zeros(0, object), index=resets.index, dtype=object)


def _service_and_client(resets: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(service host, service port, client host) per RST: the endpoint the RST claims to
    come from is the originator when ``direction`` is orig, so the service is its peer."""
    from_orig = (resets["direction"] == "orig").to_numpy(bool)
    service_h = np.where(from_orig, resets["dst_h"].to_numpy(object), resets["src_h"].to_numpy(object))
    service_p = np.where(from_orig, resets["dst_p"].to_numpy(np.int64), resets["src_p"].to_numpy(np.int64))
    client_h = np.where(from_orig, resets["src_h"].to_numpy(object), resets["dst_h"].to_numpy(object))
    idx = resets.index
    return pd.Series(service_h, idx), pd.Series(service_p, idx), pd.Series(client_h, idx)


def _cause_order(values: Iterable[str]) -> list[str]:
    known = list(vocabularies()["cause"])
    present = set(values)
    return [c for c in known if c in present] + sorted(present - set(known))


# ---- overview ------------------------------------------------------------------------------
def causes(resets: Source) -> pd.DataFrame:
    """RSTs and reset connections by cause and subcause: columns cause, subcause ("" for
    none), rsts, connections, share (of all RSTs)."""
    r = _resets_only(resets)
    if r.empty:
        return pd.DataFrame({"cause": [], "subcause": [], "rsts": [], "connections": [], "share": []})
    frame = pd.DataFrame({
        "cause": r["cause"].astype(str).to_numpy(),
        "subcause": r["subcause"].astype(object).fillna("").astype(str).to_numpy(),
        "uid": r["uid"].to_numpy(),
    })  # fmt: skip
    out = (frame.groupby(["cause", "subcause"], sort=False)
           .agg(rsts=("uid", "size"), connections=("uid", "nunique")).reset_index())  # fmt: skip
    out["share"] = out["rsts"] / len(r)
    order = {c: k for k, c in enumerate(_cause_order(out["cause"]))}
    out = out.sort_values(["cause", "rsts"], key=lambda s: s.map(order) if s.name == "cause" else -s)
    return out.reset_index(drop=True)


def conn_states(flows: Source) -> pd.DataFrame:
    """Connections by Zeek conn_state, in Zeek's order: columns conn_state, connections, share."""
    f = _flows_only(flows)
    counts = f["conn_state"].astype(str).value_counts()
    states = [s for s in vocabularies()["conn_state"] if s in counts.index]
    out = pd.DataFrame({"conn_state": states, "connections": [int(counts[s]) for s in states]})
    out["share"] = out["connections"] / max(len(f), 1)
    return out


def time_span(flows: pd.DataFrame, resets: pd.DataFrame) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """First and last time seen (a connection's start or end, an RST)."""
    starts = [s for s in (flows["ts"].min(), resets["ts"].min()) if pd.notna(s)]
    ends = [e for e in (resets["ts"].max(),) if pd.notna(e)]
    if not flows.empty:
        ends.append((flows["ts"] + pd.to_timedelta(flows["duration"].astype(float), unit="s")).max())
    return (min(starts) if starts else None, max(ends) if ends else None)


# ---- when ----------------------------------------------------------------------------------
def choose_freq(start: pd.Timestamp | None, end: pd.Timestamp | None, max_bins: int = MAX_BINS) -> str:
    """The smallest bin width of `TIMELINE_FREQS` giving at most `max_bins` bins."""
    if start is None or end is None:
        return TIMELINE_FREQS[0]
    span = max((end - start).total_seconds(), 1.0)
    for freq in TIMELINE_FREQS:
        if span / pd.Timedelta(freq).total_seconds() <= max_bins:
            return freq
    return TIMELINE_FREQS[-1]


def timeline(flows: Source, resets: pd.DataFrame | None = None, freq: str | None = None) -> pd.DataFrame:
    """Counts per time bin: RSTs by cause (kind ``rst``), and connection attempts (a SYN
    seen) and failed attempts (never through the handshake, `FAILED_STATES`) by their
    start (kind ``connections``).  Columns: time (bin start, UTC), kind, series, count.
    `freq` is a pandas frequency ("10s", "5min"); by default one chosen from the span."""
    f, r = _frames(flows, resets)
    if freq is None:
        freq = choose_freq(*time_span(f, r))
    parts = []
    if not r.empty:
        parts.append(_binned(r["ts"], r["cause"].astype(str), freq, "rst"))
    if not f.empty:
        attempts = f[f["start_seen"].fillna(False).to_numpy(bool)]
        failed = attempts[attempts["conn_state"].astype(str).isin(FAILED_STATES).to_numpy(bool)]
        for name, frame in (("attempts", attempts), ("failed", failed)):
            if not frame.empty:
                parts.append(_binned(frame["ts"], pd.Series(name, index=frame.index), freq, "connections"))
    if not parts:
        return pd.DataFrame({"time": pd.Series([], dtype="datetime64[us, UTC]"), "kind": [], "series": [], "count": []})
    return pd.concat(parts, ignore_index=True).sort_values(["time", "kind", "series"], ignore_index=True)


def _binned(ts: pd.Series, series: pd.Series, freq: str, kind: str) -> pd.DataFrame:
    # integer microseconds: a tz-aware column would be converted to Timestamp objects
    width = int(pd.Timedelta(freq).total_seconds() * 1_000_000)
    micros = _micros(ts)
    frame = pd.DataFrame({"time": micros - micros % width, "series": series.to_numpy()})
    out = frame.groupby(["time", "series"], sort=True).size().rename("count").reset_index()
    out["time"] = pd.to_datetime(out["time"], unit="us", utc=True)
    out.insert(1, "kind", kind)
    return out


def _micros(ts: pd.Series) -> np.ndarray:
    """A timestamp column as int64 microseconds since the epoch (UTC)."""
    return ts.dt.tz_convert("UTC").dt.as_unit("us").array.asi8 if len(ts) else np.zeros(0, np.int64)


# ---- where ---------------------------------------------------------------------------------
TALKER_KEYS = ("sender", "receiver", "service_port", "pair")


def top_talkers(resets: Source, by: str = "sender", n: int = 10) -> pd.DataFrame:
    """The `n` keys with the most RSTs, split by cause.  `by`: ``sender`` (src_h as on the
    wire: the claimed sender), ``receiver`` (dst_h), ``service_port`` (the responder's port
    of the connection, whichever way the RST went) or ``pair`` (client → service host).
    Columns: rank, key, cause, rsts, total (the key's RSTs of every cause)."""
    r = _resets_only(resets)
    if by not in TALKER_KEYS:
        raise ValueError(f"by must be one of {', '.join(TALKER_KEYS)}")
    if r.empty:
        return pd.DataFrame({"rank": [], "key": [], "cause": [], "rsts": [], "total": []})
    cause = r["cause"].astype(str)
    if by in ("sender", "receiver"):
        frame = pd.DataFrame({"k0": r["src_h" if by == "sender" else "dst_h"], "cause": cause})
    elif by == "service_port":
        from_orig = (r["direction"] == "orig").to_numpy(bool)
        port = np.where(from_orig, r["dst_p"].to_numpy(np.int64), r["src_p"].to_numpy(np.int64))
        frame = pd.DataFrame({"k0": port, "cause": cause.to_numpy()})
    else:
        # the client is the originator: the RST's sender when it claims to be the orig side
        from_orig = (r["direction"] == "orig").to_numpy(bool)
        a = pd.DataFrame({"k0": r["src_h"][from_orig], "k1": r["dst_h"][from_orig], "cause": cause[from_orig]})
        b = pd.DataFrame({"k0": r["dst_h"][~from_orig], "k1": r["src_h"][~from_orig], "cause": cause[~from_orig]})
        frame = pd.concat([a, b], ignore_index=True)
    keys = [c for c in ("k0", "k1") if c in frame]
    split = frame.groupby([*keys, "cause"], sort=False).size().rename("rsts").reset_index()
    totals = split.groupby(keys, sort=False)["rsts"].sum().rename("total").reset_index()
    totals["key"] = _key_text(totals, by)
    # ties broken by key, so the table is the same on every run
    top = totals.sort_values(["total", "key"], ascending=[False, True]).head(n).copy()
    top["rank"] = np.arange(1, len(top) + 1)
    out = split.merge(top, on=keys)
    out = out.sort_values(["rank", "rsts"], ascending=[True, False], ignore_index=True)
    return out[["rank", "key", "cause", "rsts", "total"]]


def _key_text(frame: pd.DataFrame, by: str) -> pd.Series:
    if by == "pair":
        return frame["k0"].astype(str) + " → " + frame["k1"].astype(str)
    return frame["k0"].astype(str)


def services(flows: Source, n: int = 15) -> pd.DataFrame:
    """Per service (responder host:port), the connections reset and by whom: by the client
    (rst_sender orig), by the service itself (resp) or by a middlebox; top `n` by reset
    connections.  Columns: service, connections, reset, by_client, by_service,
    by_middlebox, closed_port (refused outright)."""
    f = _flows_only(flows)
    if f.empty:
        return pd.DataFrame({c: [] for c in ("service", "connections", "reset", "by_client",
                                              "by_service", "by_middlebox", "closed_port")})  # fmt: skip
    sender = f["rst_sender"]
    frame = pd.DataFrame({
        "h": f["resp_h"], "p": f["resp_p"].to_numpy(np.int64),
        "reset": f["rst_count"].to_numpy(np.int64) > 0,
        "by_client": (sender == "orig").to_numpy(bool), "by_service": (sender == "resp").to_numpy(bool),
        "by_middlebox": (sender == "middlebox").to_numpy(bool),
        "closed_port": (f["rst_cause"] == "closed_port").to_numpy(bool),
    })  # fmt: skip
    out = frame.groupby(["h", "p"], sort=False).agg(
        connections=("reset", "size"), reset=("reset", "sum"), by_client=("by_client", "sum"),
        by_service=("by_service", "sum"), by_middlebox=("by_middlebox", "sum"),
        closed_port=("closed_port", "sum"),
    )  # fmt: skip
    out = out[out["reset"] > 0].reset_index()
    out.insert(0, "service", out["h"].astype(str) + ":" + out["p"].astype(str))
    out = out.drop(columns=["h", "p"])
    return out.sort_values(["reset", "service"], ascending=[False, True]).head(n).reset_index(drop=True)


# ---- middleboxes ---------------------------------------------------------------------------
def initial_ttl(ttl: np.ndarray) -> np.ndarray:
    """The usual initial TTL (32, 64, 128, 255) a packet with `ttl` most likely left with."""
    ttl = np.asarray(ttl, np.int64)
    return np.select([ttl <= 32, ttl <= 64, ttl <= 128], [32, 64, 128], 255)


def middlebox_groups(flows: Source, resets: pd.DataFrame | None = None) -> pd.DataFrame:
    """Middlebox verdicts grouped by verdict and TTL (RSTs that left one device share its
    initial TTL and hop distance).  Columns: verdict, ttl, hops (hop distance of the RST),
    sender_hops (the claimed sender's usual hop distance, from its other packets),
    hop_delta, rsts, connections, claimed_senders, bursts (connections with 2+ such RSTs),
    ipid_counter (the RSTs' IPv4 IP IDs step up like one shared counter), first, last,
    services (the top 3 affected host:port), evidence (the top codes with counts)."""
    f, r = _frames(flows, resets)
    cols = ["verdict", "ttl", "hops", "sender_hops", "hop_delta", "rsts", "connections",
            "claimed_senders", "bursts", "ipid_counter", "first", "last", "services", "evidence"]  # fmt: skip
    mb = r[(r["cause"] == "middlebox").to_numpy(bool)]
    if mb.empty:
        return pd.DataFrame({c: [] for c in cols})
    mb = mb.assign(verdict=verdict(mb).to_numpy())
    usual = f[["uid", "orig_ttl_max", "resp_ttl_max", "resp_h", "resp_p"]]
    mb = mb.merge(usual, on="uid", how="left")
    from_orig = (mb["direction"] == "orig").to_numpy(bool)
    sender_ttl = np.where(from_orig, mb["orig_ttl_max"].astype("Float64").to_numpy(np.float64, na_value=np.nan),
                          mb["resp_ttl_max"].astype("Float64").to_numpy(np.float64, na_value=np.nan))  # fmt: skip
    ttl = mb["ttl"].to_numpy(np.int64)
    mb["hops"] = initial_ttl(ttl) - ttl
    has_usual = ~np.isnan(sender_ttl)
    usual_ttl = np.where(has_usual, sender_ttl, 0).astype(np.int64)
    mb["sender_hops"] = np.where(has_usual, initial_ttl(usual_ttl) - usual_ttl, np.nan)
    mb["service"] = mb["resp_h"].astype(str) + ":" + mb["resp_p"].astype(str)
    rows = []
    for (v, t), g in mb.groupby(["verdict", "ttl"], sort=True):
        per_conn = g["uid"].value_counts()
        rows.append({
            "verdict": v, "ttl": int(t), "hops": int(g["hops"].iloc[0]),
            "sender_hops": _median_or_none(g["sender_hops"]),
            "rsts": len(g), "connections": int(per_conn.size), "claimed_senders": int(g["src_h"].nunique()),
            "bursts": int((per_conn >= 2).sum()), "ipid_counter": _shared_ipid_counter(g),
            "first": g["ts"].min(), "last": g["ts"].max(),
            "services": _top_text(g["service"], 3), "evidence": _top_text(g["evidence"].explode(), 4),
        })  # fmt: skip
    out = pd.DataFrame(rows)
    out["hop_delta"] = out["hops"] - out["sender_hops"].astype(float)
    out = out.sort_values(["rsts", "verdict", "ttl"], ascending=[False, True, True], ignore_index=True)
    return out[cols]


def _median_or_none(values: pd.Series) -> float | None:
    v = values.dropna()
    return float(v.median()) if len(v) else None


def _top_text(values: pd.Series, k: int) -> str:
    counts = values.dropna().astype(str).value_counts()
    counts = counts.sort_index().sort_values(ascending=False, kind="stable").head(k)
    return ", ".join(f"{key} ({n})" for key, n in counts.items())


def _shared_ipid_counter(group: pd.DataFrame) -> bool:
    """True when 3+ IPv4 RSTs (IP ID not 0: reactive RSTs carry 0) in time order step up by
    1..1024 (mod 2^16) at least 80% of the time: one device's global IP-ID counter, not
    the per-connection counters of the hosts they claim to come from."""
    ids = group.sort_values("ts")["ip_id"].dropna().to_numpy(np.int64)
    ids = ids[ids != 0]
    if len(ids) < 3:
        return False
    steps = np.diff(ids) % 65536
    return bool(((steps >= 1) & (steps <= 1024)).mean() >= 0.8)


# ---- damage --------------------------------------------------------------------------------
def _reset_connections(f: pd.DataFrame, r: pd.DataFrame) -> pd.DataFrame:
    """One row per reset connection: its deciding cause, service (resp_h, resp_p), the
    data lost (the most unacknowledged bytes any of its RSTs found) and its age (seconds)
    at the first RST."""
    # Arrow's hash group-by and join: pandas' on 500,000 uid strings took seconds
    per = pa.table({"uid": pa.array(r["uid"], pa.string()), "first_us": _micros(r["ts"]),
                    "unacked_bytes": r["unacked_bytes"].to_numpy(np.int64, na_value=0)})  # fmt: skip
    per = per.group_by("uid", use_threads=False).aggregate([("first_us", "min"), ("unacked_bytes", "max")])
    reset = f[f["rst_count"].to_numpy(np.int64) > 0]
    rows = pa.table({"uid": pa.array(reset["uid"], pa.string()), "row": np.arange(len(reset))})
    joined = rows.join(per, "uid", join_type="inner").sort_by("row")
    take = joined["row"].to_numpy()
    picked = reset.iloc[take]
    age_us = joined["first_us_min"].to_numpy() - _micros(picked["ts"])
    return pd.DataFrame({
        "uid": picked["uid"].to_numpy(), "resp_h": picked["resp_h"].to_numpy(),
        "resp_p": picked["resp_p"].to_numpy(np.int64),
        "cause": picked["rst_cause"].astype(object).fillna("unknown").astype(str).to_numpy(),
        "age_s": np.maximum(age_us, 0) / 1e6, "unacked_bytes": joined["unacked_bytes_max"].to_numpy(),
    })  # fmt: skip


DAMAGE_KEYS = ("cause", "service")


def damage(flows: Source, resets: pd.DataFrame | None = None, by: str = "cause", n: int = 15) -> pd.DataFrame:
    """Data lost and connection age at reset, per reset connection, grouped `by` ``cause``
    (the connection's deciding verdict) or ``service`` (top `n` by bytes lost).  Columns:
    key, connections, with_loss (connections that lost data), unacked_bytes (total),
    unacked_p50, unacked_max, age_p50_s, age_p95_s (seconds from the first packet to the
    first RST)."""
    if by not in DAMAGE_KEYS:
        raise ValueError(f"by must be one of {', '.join(DAMAGE_KEYS)}")
    f, r = _frames(flows, resets)
    cols = ["key", "connections", "with_loss", "unacked_bytes", "unacked_p50", "unacked_max", "age_p50_s", "age_p95_s"]
    if r.empty or f.empty:
        return pd.DataFrame({c: [] for c in cols})
    conn = _reset_connections(f, r)
    conn["lost"] = conn["unacked_bytes"] > 0
    keys = ["cause"] if by == "cause" else ["resp_h", "resp_p"]
    grouped = conn.groupby(keys, sort=False)
    out = grouped.agg(
        connections=("uid", "size"), with_loss=("lost", "sum"), unacked_bytes=("unacked_bytes", "sum"),
        unacked_p50=("unacked_bytes", "median"), unacked_max=("unacked_bytes", "max"),
        age_p50_s=("age_s", "median"),
    )  # fmt: skip
    out["age_p95_s"] = grouped["age_s"].quantile(0.95)
    out = out.reset_index()
    if by == "cause":
        out = out.rename(columns={"cause": "key"})
    else:
        out.insert(0, "key", out["resp_h"].astype(str) + ":" + out["resp_p"].astype(str))
    if by == "cause":
        order = {c: k for k, c in enumerate(_cause_order(out["key"]))}
        out = out.sort_values("key", key=lambda s: s.map(order), ignore_index=True)
    else:
        out = out.sort_values(["unacked_bytes", "connections", "key"], ascending=[False, False, True])
        out = out.head(n).reset_index(drop=True)
    return out[cols]


def age_histogram(flows: Source, resets: pd.DataFrame | None = None) -> pd.DataFrame:
    """Reset connections by age at the first RST, in decade bins (<1 ms, 1-10 ms, ...),
    by cause.  Columns: age (bin label), order, cause, connections."""
    f, r = _frames(flows, resets)
    if r.empty or f.empty:
        return pd.DataFrame({"age": [], "order": [], "cause": [], "connections": []})
    conn = _reset_connections(f, r)
    edges = [0, 0.001, 0.01, 0.1, 1, 10, 60, 600, math.inf]
    labels = ["<1 ms", "1-10 ms", "10-100 ms", "0.1-1 s", "1-10 s", "10-60 s", "1-10 min", ">10 min"]
    bins = pd.cut(conn["age_s"], edges, labels=labels, right=False, include_lowest=True)
    out = (pd.DataFrame({"age": bins, "cause": conn["cause"]})
           .groupby(["age", "cause"], observed=True).size().rename("connections").reset_index())  # fmt: skip
    out["order"] = out["age"].cat.codes.astype(int)
    out["age"] = out["age"].astype(str)
    return out[["age", "order", "cause", "connections"]]


def stages(flows: Source) -> pd.DataFrame:
    """Reset connections by the stage they died at (`STAGES`): ``after SYN`` (no SYN-ACK:
    SYN→RST), ``after handshake`` (no payload: SYN;ACK→RST), ``after first data`` (payload
    from one side only, e.g. a request answered by RSTs: PSH→RST), ``later`` (both sides
    sent data) or ``midstream`` (the capture missed the start).  ``signature`` adds
    ``;RST`` per further RST (PSH→RST;RST).  Columns: stage, order, signature, cause,
    connections."""
    f = _flows_only(flows)
    reset = f[f["rst_count"].to_numpy(np.int64) > 0]
    cols = ["stage", "order", "signature", "cause", "connections"]
    if reset.empty:
        return pd.DataFrame({c: [] for c in cols})
    history = reset["history"].astype(str)
    synack = history.str.contains("h", regex=False).to_numpy(bool) | history.str.contains("H", regex=False).to_numpy(bool)
    orig_data = reset["orig_bytes"].to_numpy(np.int64) > 0
    resp_data = reset["resp_bytes"].to_numpy(np.int64) > 0
    start_seen = reset["start_seen"].fillna(False).to_numpy(bool)
    stage = np.select(
        [~start_seen, ~synack, ~orig_data & ~resp_data, orig_data ^ resp_data],
        [4, 0, 1, 2],
        3,
    )
    extra = np.minimum(reset["rst_count"].to_numpy(np.int64), 3) - 1  # RST;RST;RST at most
    signature = np.array([s for _, s in STAGES], dtype=object)[stage] + np.array(["", ";RST", ";RST;RST"], dtype=object)[extra]
    frame = pd.DataFrame({
        "order": stage, "signature": signature,
        "cause": reset["rst_cause"].astype(object).fillna("unknown").astype(str).to_numpy(),
    })  # fmt: skip
    out = frame.groupby(["order", "signature", "cause"], sort=True).size().rename("connections").reset_index()
    out["stage"] = [STAGES[k][0] for k in out["order"]]
    return out[cols]


# ---- evidence ------------------------------------------------------------------------------
def evidence(resets: Source) -> pd.DataFrame:
    """How often each evidence code supports each cause.  Columns: cause, code, rsts,
    share (of that cause's RSTs)."""
    r = _resets_only(resets)
    if r.empty:
        return pd.DataFrame({"cause": [], "code": [], "rsts": [], "share": []})
    # Evidence lists repeat (a few dozen distinct combinations per run): count the
    # combinations, then expand them, instead of exploding one row per code per RST.
    combos = pd.DataFrame({"cause": r["cause"].astype(str).to_numpy(),
                           "codes": r["evidence"].map(tuple).to_numpy()})  # fmt: skip
    counted = combos.groupby(["cause", "codes"], sort=False).size().rename("rsts").reset_index()
    counted = counted.explode("codes").dropna(subset=["codes"]).rename(columns={"codes": "code"})
    out = counted.groupby(["cause", "code"], sort=False)["rsts"].sum().reset_index()
    per_cause = r["cause"].astype(str).value_counts()
    out["share"] = out["rsts"] / out["cause"].map(per_cause).astype(float)
    order = {c: k for k, c in enumerate(_cause_order(out["cause"]))}
    out = out.sort_values(["cause", "rsts", "code"], key=lambda s: s.map(order) if s.name == "cause" else s,
                          ascending=[True, False, True], ignore_index=True)  # fmt: skip
    return out


def confidence(resets: Source, bins: int = 10) -> pd.DataFrame:
    """RSTs by confidence bin and cause.  Columns: bin (lower edge, 0.0-0.9), label
    ("0.6-0.7"), cause, rsts."""
    r = _resets_only(resets)
    if r.empty:
        return pd.DataFrame({"bin": [], "label": [], "cause": [], "rsts": []})
    # confidences are float32 (0.7 is 0.69999999): rounded first, so 0.7 falls in 0.7-0.8
    conf = np.round(r["confidence"].astype(float).to_numpy(), 6)
    k = np.clip(np.floor(conf * bins + 1e-9).astype(np.int64), 0, bins - 1)
    frame = pd.DataFrame({"k": k, "cause": r["cause"].astype(str).to_numpy()})
    out = frame.groupby(["k", "cause"], sort=True).size().rename("rsts").reset_index()
    out["bin"] = out["k"] / bins
    out["label"] = [f"{a:.1f}-{a + 1 / bins:.1f}" for a in out["bin"]]
    return out[["bin", "label", "cause", "rsts"]]


# ---- drill-down ----------------------------------------------------------------------------
# Which verdicts a reader is most likely to doubt or act on come first.
CAUSE_PRIORITY = {"middlebox": 0, "unknown": 1, "half_open": 2, "abort": 3, "closed_port": 4}


def drilldown(flows: Source, resets: pd.DataFrame | None = None, n: int = 300) -> pd.DataFrame:
    """The `n` most telling RSTs, one row each: every verdict is represented (taken in
    turn, middlebox and unknown first), within a verdict the RSTs that destroyed the most
    data first.  Columns: ts, uid, src, dst, service, direction, flags, verdict,
    confidence, acceptability, unacked_bytes, conn_state, history, evidence."""
    f, r = _frames(flows, resets)
    cols = ["ts", "uid", "src", "dst", "service", "direction", "flags", "verdict", "confidence",
            "acceptability", "unacked_bytes", "conn_state", "history", "evidence"]  # fmt: skip
    if r.empty:
        return pd.DataFrame({c: [] for c in cols})
    v = verdict(r)
    frame = pd.DataFrame({
        "pos": np.arange(len(r)), "verdict": v.to_numpy(),
        "priority": r["cause"].astype(str).map(CAUSE_PRIORITY).fillna(9).to_numpy(),
        "unacked": r["unacked_bytes"].to_numpy(np.float64, na_value=0),
        "ts": _micros(r["ts"]),
    })  # fmt: skip
    frame = frame.sort_values(["priority", "verdict", "unacked", "ts"], ascending=[True, True, False, True])
    frame["turn"] = frame.groupby("verdict", sort=False).cumcount()
    picked = frame.sort_values(["turn", "priority", "verdict"], kind="stable").head(n)["pos"].to_numpy()
    sel = r.iloc[picked]
    service_h, service_p, _ = _service_and_client(sel)
    info = f[["uid", "conn_state", "history"]].drop_duplicates("uid")
    out = pd.DataFrame({
        "ts": sel["ts"].reset_index(drop=True), "uid": sel["uid"].to_numpy(),
        "src": sel["src_h"].astype(str).to_numpy() + ":" + sel["src_p"].astype(str).to_numpy(),
        "dst": sel["dst_h"].astype(str).to_numpy() + ":" + sel["dst_p"].astype(str).to_numpy(),
        "service": service_h.astype(str).to_numpy() + ":" + service_p.astype(str).to_numpy(),
        "direction": sel["direction"].astype(str).to_numpy(), "flags": sel["flags"].to_numpy(),
        "verdict": v.iloc[picked].to_numpy(), "confidence": sel["confidence"].astype(float).round(2).to_numpy(),
        "acceptability": sel["acceptability"].astype(str).to_numpy(),
        "unacked_bytes": sel["unacked_bytes"].astype("float64").fillna(0).astype(np.int64).to_numpy(),
        "evidence": [", ".join(codes) for codes in sel["evidence"]],
    })  # fmt: skip
    out = out.merge(info, on="uid", how="left")
    return out[cols]


def health(summaries: Sequence[Summary]) -> dict[str, Any]:
    """Capture health from the runs' summaries: per-input rows (path, format, link types,
    packets, truncated at, error, warnings) and totals of the counters that mean lost or
    unreadable traffic."""
    inputs: list[dict[str, Any]] = []
    warnings: list[str] = []
    totals = {"packets": 0, "tcp_packets": 0, "connections": 0, "rst_packets": 0}
    counters: dict[str, int] = {}
    for s in summaries:
        totals["packets"] += s.packets
        totals["tcp_packets"] += s.tcp_packets
        totals["connections"] += s.connections
        totals["rst_packets"] += s.rst_packets
        for section, values in (("decode", s.decode), ("core", s.core)):
            for key, value in values.items():
                counters[f"{section}.{key}"] = counters.get(f"{section}.{key}", 0) + int(value or 0)
        inputs.extend(dataclasses.asdict(i) for i in s.inputs)
        warnings.extend(s.warnings)
    return {"totals": totals, "counters": counters, "inputs": inputs, "warnings": warnings,
            "interrupted": any(s.interrupted for s in summaries)}  # fmt: skip
