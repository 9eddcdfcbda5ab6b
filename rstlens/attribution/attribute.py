"""From the RST log to resets.parquet rows and each connection's RST summary.

Verdicts are final only at the end of the input (files) because some evidence comes later
than the RST: the claimed sender carrying on, and the TTLs a host shows in connections seen
afterwards.  What is kept until then is small: the RST log (the rows of ended connections
settled in narrow columns, ~100 bytes per RST: `flows.engine.SettledRsts`), the records of
connections that had RSTs, and one set of TTLs per host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from rstlens.attribution.bursts import burst_features
from rstlens.attribution.ended import EndedConnections
from rstlens.attribution.facts import RstLog, columns_from_log
from rstlens.attribution.fingerprints import one_counter_senders, shared_ipid_counter
from rstlens.attribution.hops import known_hop_ranges, same_hops_ttl_columns
from rstlens.attribution.hosts import HostProfiles
from rstlens.attribution.rst_flows import RstFlows
from rstlens.attribution.rules import Verdict, decide
from rstlens.attribution.signals import Signals, host_ttls_usable, signal_columns
from rstlens.attribution.speakers import relayed
from rstlens.flows import layout as L
from rstlens.flows.columns import RstColumns, RstRows
from rstlens.output import arrow
from rstlens.output.schema import (
    ACCEPTABILITY,
    CAUSES,
    CHECKSUMS,
    DIRECTIONS,
    FLOWS_SCHEMA,
    RESETS_SCHEMA,
    RST_SENDERS,
    SENDERS,
    SUBCAUSES,
    codes_of,
    enum_from_codes,
)
from rstlens.parsers._batch import OPT_TIMESTAMP, SYN
from rstlens.parsers._flags import flags_text


def verdicts_of(facts: Mapping[str, np.ndarray]) -> tuple[list[Verdict], np.ndarray]:
    """The distinct verdicts of many RSTs and, per RST, the index of its own.

    `decide` runs once per distinct `Signals` tuple (70 for the 38,158 RSTs of the 5 M-packet
    benchmark file), not once per RST."""
    signal_rows = signal_columns(facts)
    if not signal_rows.shape[0]:
        return [], np.empty(0, np.intp)
    # one integer per row, each signal a digit of its own radix (signals are small and >= 0;
    # np.unique over rows sorts them as byte strings, ~30x slower)
    code = np.zeros(signal_rows.shape[0], np.int64)
    span = 1
    for column in signal_rows.T:
        radix = int(column.max()) + 1
        span *= radix
        assert column.min() >= 0 and span < 2**62, "signals must be small non-negative integers"
        code = code * radix + column
    _, first, which = np.unique(code, return_index=True, return_inverse=True)
    verdicts = [decide(Signals._make(row)) for row in signal_rows[first].tolist()]
    return verdicts, which.reshape(-1)


VERDICT_CHUNK = 1 << 16  # RSTs whose signals are computed at a time (~40 columns each)


def log_verdicts(log: RstLog) -> tuple[list[Verdict], np.ndarray]:
    """`verdicts_of` the RSTs of the log, a chunk of rows at a time: the signal columns of
    500,000 RSTs at once had held ~300 MB of int64 columns for a few hundred distinct rows.
    The chunks' distinct verdicts are merged (equal verdicts, one entry)."""
    n = log.R.shape[0]
    distinct: list[Verdict] = []
    index: dict[Verdict, int] = {}
    which = np.empty(n, np.intp)
    for a in range(0, n, VERDICT_CHUNK):
        b = min(n, a + VERDICT_CHUNK)
        # every field a per-RST array (`old_seq_match` may be None: stays None)
        cut: dict[str, Any] = {f.name: None if (v := getattr(log, f.name)) is None else v[a:b]
                               for f in dataclasses.fields(RstLog)}  # fmt: skip
        part = RstLog(**cut)
        found, local = verdicts_of(columns_from_log(part))
        for v in found:
            if v not in index:
                index[v] = len(distinct)
                distinct.append(v)
        to_global = np.array([index[v] for v in found], np.intp)
        which[a:b] = to_global[local] if found else local
    return distinct, which


def _hops_in_host_ttls(profiles: HostProfiles, senders: np.ndarray,
                       ttl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per RST: does its claimed sender's host show TTLs of a known hop distance in non-RST
    packets (not only an application's own, like BGP's 1), and is one of them at the RST's
    hop distance (`hops.same_hops_ttls`)?"""
    known = np.zeros(ttl.shape[0], bool)
    for lo, hi in known_hop_ranges():
        known |= profiles.shows_ttl_between(senders, lo, hi)
    seen = np.zeros(ttl.shape[0], bool)
    for candidate in same_hops_ttl_columns(ttl):
        valid = candidate >= 0
        seen |= valid & profiles.ttl_profile(senders, np.maximum(candidate, 0))[1]
    return known, seen


DUPLICATE_CODE = "capture.duplicate"
# `payload.text`: at least this many payload bytes kept, this share of them printable
TEXT_MIN_PRINTABLE = 4
TEXT_PRINTABLE_SHARE = 0.75
_PRINTABLE = np.zeros(256, bool)
_PRINTABLE[0x20:0x7F] = True
_PRINTABLE[[0x09, 0x0A, 0x0D]] = True


def payload_text(R: RstRows) -> tuple[list[str | None], np.ndarray]:
    """Per RST row: its kept payload bytes (`flows.layout.R_TEXT`) as escaped text (None
    without payload), and whether they are printable text (`is_text`)."""
    texts: list[str | None] = [None] * R.shape[0]
    text = np.zeros(R.shape[0], bool)
    rows = np.flatnonzero(R[:, L.R_PLEN] > 0)
    if rows.shape[0]:
        words = np.ascontiguousarray(R[rows, L.R_TEXT : L.R_TEXT + L.TEXT_BYTES // 8]).astype("<i8")
        raw = words.view(np.uint8).reshape(-1, L.TEXT_BYTES)
        for j, (i, n) in enumerate(zip(rows.tolist(), R[rows, L.R_TEXT_LEN].tolist(), strict=True)):
            b = raw[j, :n].tobytes()
            texts[i] = escape_text(b)
            text[i] = is_text(b)
    return texts, text


def escape_text(b: bytes) -> str:
    """Printable ASCII as is (a backslash doubled), every other byte as \\xNN."""
    return "".join(_ESCAPED[c] for c in b)


_ESCAPED = [chr(c) if 0x20 <= c < 0x7F else f"\\x{c:02x}" for c in range(256)]
_ESCAPED[0x5C] = "\\\\"


def is_text(b: bytes) -> bool:
    """Printable text (a diagnostic), not a binary marker such as 01 02 ... 09 00 (§0 rule 10)."""
    if not b:
        return False
    printable = int(_PRINTABLE[np.frombuffer(b, np.uint8)].sum())
    return printable >= TEXT_MIN_PRINTABLE and printable >= TEXT_PRINTABLE_SHARE * len(b)


def checksum_status(R: RstRows, sender_counts: np.ndarray, run_good: int, run_bad: int) -> np.ndarray:
    """Codes into CHECKSUMS per RST.  A wrong checksum is `bad` (a corrupt segment) when the
    sender's verified non-RST segments in the capture are mostly good, or, when it shows
    none, the capture's are; else `unreliable` (offload on the capturing host, a rewritten
    capture: its checksums say nothing)."""
    ck = R[:, L.R_CSUM]
    good, bad = sender_counts[:, 0], sender_counts[:, 1]
    known = good + bad > 0
    trusted = np.where(known, good > bad, run_good > run_bad)
    out = np.full(ck.shape[0], CHECKSUMS.index("unverified"), np.int64)
    out[ck == L.CK_GOOD] = CHECKSUMS.index("good")
    out[ck == L.CK_OFFLOAD] = CHECKSUMS.index("offload")
    wrong = ck == L.CK_BAD
    out[wrong & trusted] = CHECKSUMS.index("bad")
    out[wrong & ~trusted] = CHECKSUMS.index("unreliable")
    return out


def _originals(R: RstRows) -> np.ndarray:
    """Per RST row, the row of the RST it is a capture copy of, -1 when none (or not here)."""
    dup_of = R[:, L.R_DUP_OF]
    out = np.full(R.shape[0], -1, np.int64)
    copies = np.flatnonzero(dup_of >= 0)
    if copies.shape[0]:
        ordinals = R[:, L.R_ORDINAL]
        order = np.argsort(ordinals)
        at = np.minimum(np.searchsorted(ordinals, dup_of[copies], sorter=order), order.shape[0] - 1)
        found = ordinals[order[at]] == dup_of[copies]
        out[copies[found]] = order[at[found]]
    return out


def attribute(
    rsts: RstRows, flows: RstFlows, profiles: HostProfiles, sources: list[str],
    ended: EndedConnections | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Verdicts for every logged RST (`rsts`: the log as an int64 matrix or as narrow
    columns, read a column at a time).  Returns (resets table, the RST connections' flow
    rows with their summary columns filled in)."""
    R = RstColumns.of(rsts)
    if not flows.tables:
        return arrow.empty_table(RESETS_SCHEMA), arrow.empty_table(FLOWS_SCHEMA)
    ftab = pa.concat_tables(flows.tables)
    serials = np.concatenate(flows.serials)
    orig_is_a = np.concatenate(flows.orig_is_a)
    order = np.argsort(serials)
    pos = order[np.searchsorted(serials, R[:, L.R_SERIAL], sorter=order)]
    start_seen = arrow.bools(ftab.column("start_seen"))
    src_is_a = R[:, L.R_SRC_IS_A] == 1
    is_orig = src_is_a == (orig_is_a[pos] == 1)
    keys = np.concatenate(flows.keys)[pos]
    senders = np.where(src_is_a[:, None], keys[:, :2], keys[:, 2:])
    host_ttls_known, hops_in_host_ttls = _hops_in_host_ttls(profiles, senders, R[:, L.R_TTL])
    checksum = checksum_status(R, profiles.checksum_counts(senders), profiles.checksums_good,
                               profiles.checksums_bad)  # fmt: skip
    corrupt = checksum == CHECKSUMS.index("bad")
    original = _originals(R)
    texts, text = payload_text(R)
    old = None
    if ended is not None:
        # nothing of the connection seen before the RST: where `unknown.unsolicited` would apply
        lonely = (R[:, L.R_SND_PKTS] == 0) & (R[:, L.R_TRIG_FLAGS] < 0) & (original < 0)
        old = ended.match(R, np.concatenate(flows.conn)[pos], keys, src_is_a, lonely)
    # no evidence: capture copies, corrupt segments, SYN+RST (no stack sends it: malformed)
    no_evidence = (original >= 0) | corrupt | ((R[:, L.R_FLAGS] & SYN) != 0)
    # a device's fingerprint is looked for only where the verdict hinges on it: a host-level
    # hop-distance anomaly that this connection cannot back by itself (`host_ttls_usable`)
    unbacked = host_ttls_known & ~hops_in_host_ttls & ~host_ttls_usable(
        host_ttls_known, start_seen[pos], R[:, L.R_SND_PKTS], R[:, L.R_TRIG_FLAGS], False)
    shared = shared_ipid_counter(R, senders, unbacked, ignore=no_evidence)
    log = RstLog(R, is_orig, start_seen[pos], host_ttls_known, hops_in_host_ttls,
                 burst_features(R, src_is_a, ignore=no_evidence), corrupt, text, old,
                 relayed=_relayed(R, ftab, pos, keys, src_is_a, orig_is_a[pos] == 1, start_seen[pos]),
                 shared_ipid=shared, one_counter=one_counter_senders(R, senders, no_evidence))  # fmt: skip
    distinct, which = log_verdicts(log)
    distinct, which = _copies_take_originals_verdicts(distinct, which, original)

    # the verdicts column-wise (Verdict's field order), from the distinct ones
    cause_s, sub_s, conf_s, evidence_s, acc_s, ended_s, sender_s = (
        zip(*distinct, strict=True) if distinct else [()] * 7)
    cause = codes_of(cause_s, CAUSES)[which]
    subcause = codes_of(sub_s, SUBCAUSES)[which]
    confidence = np.array(conf_s, np.float32).reshape(-1)[which]
    ended_code = np.array([-1 if e is None else int(e) for e in ended_s], np.int8).reshape(-1)[which]
    ended = arrow.column(ended_code == 1, pa.bool_(), mask=ended_code < 0)
    acceptability = codes_of(acc_s, ACCEPTABILITY)[which]
    sender = codes_of(sender_s, SENDERS)[which]

    # everything but the verdict comes straight from the RST log, column by column
    hosts = pa.chunked_array(ftab.column("orig_h").chunks + ftab.column("resp_h").chunks)
    resp_at = pos + ftab.num_rows  # where a connection's responder is in `hosts`
    distinct_flags, flag_index = np.unique(R[:, L.R_FLAGS], return_inverse=True)
    orig_p = arrow.numbers(ftab.column("orig_p"), np.uint16)[pos]
    resp_p = arrow.numbers(ftab.column("resp_p"), np.uint16)[pos]
    snd_un, rcv_un = R[:, L.R_SND_UNACKED], R[:, L.R_RCV_UNACKED]
    ip_id = R[:, L.R_IPID]
    no_ts = (R[:, L.R_OPTS] & OPT_TIMESTAMP) == 0
    cols: dict[str, object] = {
        "ts": R[:, L.R_TS],
        "uid": arrow.take_strings(ftab.column("uid"), pos),
        "src_h": arrow.take_strings(hosts, np.where(is_orig, pos, resp_at)),
        "src_p": np.where(is_orig, orig_p, resp_p),
        "dst_h": arrow.take_strings(hosts, np.where(is_orig, resp_at, pos)),
        "dst_p": np.where(is_orig, resp_p, orig_p),
        "direction": enum_from_codes(np.where(is_orig, 0, 1), DIRECTIONS),
        "flags": arrow.take_strings(arrow.strings([flags_text(f) for f in distinct_flags.tolist()]),
                                     flag_index.reshape(-1)),
        "seq": R[:, L.R_SEQ],
        "ack": R[:, L.R_ACK],
        "ttl": R[:, L.R_TTL],
        "outer_ttl": arrow.column(R[:, L.R_OUTER_TTL], pa.uint8(), mask=R[:, L.R_OUTER_TTL] < 0),
        "ip_id": arrow.column(ip_id, pa.int32(), mask=ip_id < 0),
        "window": R[:, L.R_WIN],
        "payload_len": R[:, L.R_PLEN],
        "acceptability": enum_from_codes(acceptability, ACCEPTABILITY),
        "ended_connection": ended,
        "sender": enum_from_codes(sender, SENDERS),
        "cause": enum_from_codes(cause, CAUSES),
        "subcause": enum_from_codes(subcause, SUBCAUSES),
        "confidence": confidence,
        "evidence": arrow.take_lists(evidence_s, which),
        "unacked_bytes": snd_un + rcv_un,
        "orig_unacked_bytes": np.where(is_orig, snd_un, rcv_un),
        "resp_unacked_bytes": np.where(is_orig, rcv_un, snd_un),
        "frame": R[:, L.R_FRAME],
        "source": enum_from_codes(R[:, L.R_SOURCE], tuple(sources), pa.int32()),
        "duplicate_of": arrow.column(R[np.maximum(original, 0), L.R_FRAME], pa.int64(), mask=original < 0),
        "checksum": enum_from_codes(checksum, CHECKSUMS),
        "payload_text": arrow.strings(texts),
        "ts_val": arrow.column(R[:, L.R_TSVAL], pa.uint32(), mask=no_ts),
        "ts_ecr": arrow.column(R[:, L.R_TSECR], pa.uint32(), mask=no_ts),
    }
    arrays = [arrow.to_arrow(c, f.type) for f, c in zip(RESETS_SCHEMA, cols.values(), strict=True)]
    resets = pa.Table.from_arrays(arrays, schema=RESETS_SCHEMA)
    return resets, _flow_summary(ftab, pos, is_orig, R, cause, subcause, confidence, ended_code == 1,
                                 sender)


def _relayed(R: RstRows, ftab: pa.Table, pos: np.ndarray, keys: np.ndarray,
             src_is_a: np.ndarray, orig_is_a: np.ndarray, start_seen: np.ndarray) -> np.ndarray:
    """`speakers.relayed` of the RSTs: addresses and connections as numbers."""
    n = R.shape[0]
    if n < 2:
        return np.zeros(n, np.int64)
    pairs = np.ascontiguousarray(np.concatenate([keys[:, :2], keys[:, 2:]])).view("V16").ravel()
    _, number = np.unique(pairs, return_inverse=True)
    a, b = number[:n], number[n:]
    ttl = arrow.numbers_or(ftab.column("orig_ttl_min"), np.uint8, 0)
    return relayed(R, pos, np.where(src_is_a, a, b), np.where(src_is_a, b, a),
                   arrow.numbers(ftab.column("ts"), np.int64)[pos], start_seen,
                   np.where(orig_is_a, a, b),
                   ttl.astype(np.int64)[pos])  # fmt: skip


def _copies_take_originals_verdicts(distinct: list[Verdict], which: np.ndarray,
                                     original: np.ndarray) -> tuple[list[Verdict], np.ndarray]:
    """Every capture copy gets its original's verdict, with `capture.duplicate` added."""
    copies = np.flatnonzero(original >= 0)
    if not copies.shape[0]:
        return distinct, which
    distinct = list(distinct)
    marked: dict[int, int] = {}
    which = which.copy()
    for c, v in zip(copies.tolist(), which[original[copies]].tolist(), strict=True):
        if v not in marked:
            marked[v] = len(distinct)
            distinct.append(distinct[v]._replace(evidence=(*distinct[v].evidence, DUPLICATE_CODE)))
        which[c] = marked[v]
    return distinct, which


def _flow_summary(ftab: pa.Table, pos: np.ndarray, is_orig: np.ndarray, R: RstColumns,
                  cause: np.ndarray, subcause: np.ndarray, confidence: np.ndarray,
                  ended: np.ndarray, sender: np.ndarray) -> pa.Table:  # fmt: skip
    """rst_cause/subcause/sender/confidence of the RST that ended each connection (the first
    that did; else its last RST).  Per RST `i`: its connection `pos[i]`, its verdict's
    codes, and whether it ended the connection."""
    n = ftab.num_rows
    chosen = np.full(n, -1, np.int64)
    if pos.shape[0]:
        order = np.lexsort((R[:, L.R_TS], pos))  # by connection, then in time
        conn = pos[order]
        starts = np.flatnonzero(np.r_[True, conn[1:] != conn[:-1]])
        ends = np.r_[starts[1:], order.shape[0]]
        first_ended = np.minimum.reduceat(np.where(ended[order], np.arange(order.shape[0]), order.shape[0]), starts)
        chosen[conn[starts]] = order[np.where(first_ended < ends, first_ended, ends - 1)]
    none = chosen < 0
    c = np.maximum(chosen, 0)
    # `orig`/`resp`: the side it claims to come from; `middlebox` when `resets.sender` says a
    # middlebox sent it (whatever the cause)
    middlebox = sender[c] == SENDERS.index("middlebox")
    sender = np.where(middlebox, RST_SENDERS.index("middlebox"),
                      np.where(is_orig[c], RST_SENDERS.index("orig"), RST_SENDERS.index("resp")))  # fmt: skip
    schema = ftab.schema
    cols = {
        "rst_cause": enum_from_codes(np.where(none, -1, cause[c]), CAUSES),
        "rst_subcause": enum_from_codes(np.where(none, -1, subcause[c]), SUBCAUSES),
        "rst_sender": enum_from_codes(np.where(none, -1, sender), RST_SENDERS),
        "rst_confidence": arrow.column(np.where(none, 0, confidence[c]).astype(np.float32),
                                        pa.float32(), mask=none),
    }
    for name, arr in cols.items():
        ftab = ftab.set_column(schema.get_field_index(name), schema.field(name), arr)
    return ftab
