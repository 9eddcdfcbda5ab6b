"""From the RST log to resets.parquet rows and each connection's RST summary.

Verdicts are final only at the end of the input (files) because some evidence comes later
than the RST: the claimed sender carrying on, and the TTLs a host shows in connections seen
afterwards.  What is kept until then is small: the RST log (the rows of ended connections
settled in narrow columns: `flows.engine.SettledRsts`), the connections that had RSTs as
their rows' record columns, narrowed (`rst_flows.RstFlows`), and one set of TTLs per host.
Then `attribute_chunks` works out what needs the whole log once and hands the rows over a
chunk at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from rstlens.attribution.bursts import burst_features
from rstlens.attribution.ended import KEY_COLUMNS, EndedConnections
from rstlens.attribution.facts import RstLog, columns_from_log
from rstlens.attribution.fingerprints import one_counter_senders, shared_ipid_counter
from rstlens.attribution.hops import known_hop_ranges, same_hops_ttl_columns
from rstlens.attribution.hosts import HostProfiles
from rstlens.attribution.rst_flows import RstFlows
from rstlens.attribution.rules import Verdict, decide
from rstlens.attribution.signals import Signals, host_ttls_usable, signal_arrays
from rstlens.attribution.speakers import relayed
from rstlens.flows import layout as L
from rstlens.flows.columns import NarrowRows, RstColumns, RstRows, distinct
from rstlens.options import FINAL_CHUNK
from rstlens.output import arrow
from rstlens.output.records import address_text, endpoints, flow_table, is_ipv4, uids
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
    columns = signal_arrays(facts)
    n = columns[0].shape[0]
    if not n:
        return [], np.empty(0, np.intp)
    # one integer per row, each signal a digit of its own radix (signals are small and >= 0;
    # np.unique over rows sorts them as byte strings, ~30x slower), made in place from the
    # columns as they are (mostly bool): copied into an int64 matrix first, with a new code
    # array per column, this function took ~1.2x as long (0.135 s of a 500,000-RST scan)
    code = np.zeros(n, np.int64)
    span = 1
    for column in columns:
        radix = int(column.max()) + 1
        span *= radix
        assert (column.dtype == np.bool_ or column.min() >= 0) and span < 2**62, \
            "signals must be small non-negative integers"
        code *= radix
        code += column
    _, first, which = distinct(code)
    rows = zip(*(column[first].astype(np.int64).tolist() for column in columns), strict=True)
    verdicts = [decide(Signals._make(row)) for row in rows]
    return verdicts, which


VERDICT_CHUNK = 1 << 16  # RSTs whose signals are computed at a time (~40 columns each)


def log_verdicts(log: RstLog, chunk: int = VERDICT_CHUNK) -> tuple[list[Verdict], np.ndarray]:
    """`verdicts_of` the RSTs of the log, a chunk of rows at a time: the signal columns of
    500,000 RSTs at once had held ~300 MB of int64 columns for a few hundred distinct rows.
    The chunks' distinct verdicts are merged (equal verdicts, one entry)."""
    n = log.R.shape[0]
    distinct: list[Verdict] = []
    index: dict[Verdict, int] = {}
    which = np.empty(n, np.intp)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
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
    hop distance (`hops.same_hops_ttls`)?

    Both depend on the (sender, TTL) pair alone, so they are looked up once per distinct
    IPv4 pair (an address and a TTL make one integer): a scan's 500,000 RSTs come from a
    few thousand hosts at one TTL each, and ten profile searches per RST had cost ~0.1 s."""
    ttl = np.asarray(ttl, np.int64)
    v4 = is_ipv4(senders[:, 0], senders[:, 1]) & (ttl >= 0) & (ttl <= 0xFF)
    if np.count_nonzero(v4) < DISTINCT_LOOKUPS_FROM:
        return _hops_in_host_ttls_of_rows(profiles, senders, ttl)
    known = np.zeros(ttl.shape[0], bool)
    seen = np.zeros(ttl.shape[0], bool)
    pair = ((senders[v4, 1] & np.uint64(0xFFFF_FFFF)) << np.uint64(8)) | ttl[v4].astype(np.uint64)
    _, first, which = distinct(pair)
    rows4 = np.flatnonzero(v4)[first]
    known_4, seen_4 = _hops_in_host_ttls_of_rows(profiles, senders[rows4], ttl[rows4])
    known[v4], seen[v4] = known_4[which], seen_4[which]
    rest = ~v4  # IPv6 senders: each row
    if rest.any():
        known[rest], seen[rest] = _hops_in_host_ttls_of_rows(profiles, senders[rest], ttl[rest])
    return known, seen


# IPv4 RSTs from which `_hops_in_host_ttls` looks each distinct (sender, TTL) pair up once
# (fewer: every row, without the sort)
DISTINCT_LOOKUPS_FROM = 2048


def _hops_in_host_ttls_of_rows(profiles: HostProfiles, senders: np.ndarray,
                               ttl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`_hops_in_host_ttls`, looked up row by row."""
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


def _kept_payloads(R: RstRows) -> Iterator[tuple[int, bytes]]:
    """(row, its kept payload bytes: `flows.layout.R_TEXT`) of every RST row with payload."""
    rows = np.flatnonzero(R[:, L.R_PLEN] > 0)
    if not rows.shape[0]:
        return
    words = np.ascontiguousarray(R[rows, L.R_TEXT : L.R_TEXT + L.TEXT_BYTES // 8]).astype("<i8")
    raw = words.view(np.uint8).reshape(-1, L.TEXT_BYTES)
    for j, (i, n) in enumerate(zip(rows.tolist(), R[rows, L.R_TEXT_LEN].tolist(), strict=True)):
        yield i, raw[j, :n].tobytes()


def payload_texts(R: RstRows) -> pa.Array:
    """Per RST row: its kept payload as escaped text (null without payload)."""
    kept = list(_kept_payloads(R))
    return arrow.sparse_strings(R.shape[0], np.array([i for i, _ in kept], np.int64),
                                [escape_text(b) for _, b in kept])  # fmt: skip


def payload_is_text(R: RstRows) -> np.ndarray:
    """Per RST row: whether its kept payload is printable text (`is_text`)."""
    text = np.zeros(R.shape[0], bool)
    for i, b in _kept_payloads(R):
        text[i] = is_text(b)
    return text


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
    ended: EndedConnections | None = None, chunk: int = FINAL_CHUNK,
) -> tuple[pa.Table, pa.Table]:
    """Verdicts for every logged RST (`rsts`: the log as an int64 matrix or as narrow
    columns, read a column at a time).  Returns (resets table, the RST connections' flow
    rows with their summary columns filled in): `attribute_chunks`' pieces joined."""
    resets: list[pa.Table] = []
    rows: list[pa.Table] = []
    for kind, table in attribute_chunks(rsts, flows, profiles, sources, ended, chunk):
        (resets if kind == RESETS else rows).append(table)
    return (pa.concat_tables(resets) if resets else arrow.empty_table(RESETS_SCHEMA),
            pa.concat_tables(rows) if rows else arrow.empty_table(FLOWS_SCHEMA))  # fmt: skip


RESETS, FLOWS = "resets", "flows"  # what `attribute_chunks` hands over


@dataclasses.dataclass
class _Verdicts:
    """Per RST of the log: its verdict's codes (from `which`, an index into `distinct`)."""

    distinct: list[Verdict]
    which: np.ndarray

    def codes(self) -> tuple[np.ndarray, ...]:
        """(cause, subcause, confidence, ended code, acceptability, sender) per distinct verdict."""
        cause_s, sub_s, conf_s, _, acc_s, ended_s, sender_s = (
            zip(*self.distinct, strict=True) if self.distinct else [()] * 7)
        return (codes_of(cause_s, CAUSES), codes_of(sub_s, SUBCAUSES),
                np.array(conf_s, np.float32).reshape(-1),
                np.array([-1 if e is None else int(e) for e in ended_s], np.int8).reshape(-1),
                codes_of(acc_s, ACCEPTABILITY), codes_of(sender_s, SENDERS))  # fmt: skip


def attribute_chunks(
    rsts: RstRows, flows: RstFlows, profiles: HostProfiles, sources: list[str],
    ended: EndedConnections | None = None, chunk: int = FINAL_CHUNK,
) -> Iterator[tuple[str, pa.Table]]:
    """`attribute`, handed over a piece at a time: (RESETS, rows of resets.parquet) for
    `chunk` RSTs at a time in the log's order, then (FLOWS, the RST connections' flow rows)
    `chunk` connections at a time in `flows`' order.

    What looks across RSTs (capture copies, bursts, a device's IP-ID counter shared by
    several hosts, relayed upstream RSTs, each connection's deciding RST) and across the
    capture (host TTL and checksum profiles, ended connections) is computed once for the
    whole log, as a few small columns per RST; the verdicts are decided `VERDICT_CHUNK` RSTs
    at a time; then each chunk's resets rows are built from the log and the connections'
    records, handed over and dropped.  The pieces joined are the same whatever `chunk`."""
    R = RstColumns.of(rsts)
    if not len(flows):
        return
    chunk = max(1, chunk)
    n = R.shape[0]
    held = flows.held()
    F = held.F
    n_flows = len(held)
    serials = F[:, L.SERIAL]
    order = np.argsort(serials)
    pos = order[np.searchsorted(serials, R[:, L.R_SERIAL], sorter=order)]
    del serials, order
    start_seen = (F[:, L.START_SEEN] == 1)[pos]
    src_is_a = R[:, L.R_SRC_IS_A] == 1
    orig_is_a = (F[:, L.ORIG_IS_A] == 1)[pos]
    is_orig = src_is_a == orig_is_a
    K = held.K  # per connection, narrow
    senders = _senders(K, pos, src_is_a)
    host_ttls_known = np.zeros(n, bool)
    hops_in_host_ttls = np.zeros(n, bool)
    checksum = np.zeros(n, np.int8)
    for a in range(0, n, VERDICT_CHUNK):  # lookups in the capture's profiles, bounded in memory
        b = min(n, a + VERDICT_CHUNK)
        host_ttls_known[a:b], hops_in_host_ttls[a:b] = _hops_in_host_ttls(profiles, senders[a:b],
                                                                          R[a:b, L.R_TTL])  # fmt: skip
        checksum[a:b] = checksum_status(R[a:b], profiles.checksum_counts(senders[a:b]),
                                        profiles.checksums_good, profiles.checksums_bad)  # fmt: skip
    corrupt = checksum == CHECKSUMS.index("bad")
    original = _originals(R)
    text = np.zeros(n, bool)
    for a in range(0, n, VERDICT_CHUNK):
        text[a : a + VERDICT_CHUNK] = payload_is_text(R[a : a + VERDICT_CHUNK])
    old = None
    if ended is not None:
        # nothing of the connection seen before the RST: where `unknown.unsolicited` would apply
        lonely = np.flatnonzero((R[:, L.R_SND_PKTS] == 0) & (R[:, L.R_TRIG_FLAGS] < 0) & (original < 0))
        old = np.zeros(n, np.int8)
        if lonely.shape[0]:
            conn = np.stack([F[pos[lonely], c] for c in KEY_COLUMNS], axis=1)
            old[lonely] = ended.match(R[lonely], conn, K[pos[lonely]].matrix(L.NKO), src_is_a[lonely],
                                      np.ones(lonely.shape[0], bool))  # fmt: skip
            del conn
    # no evidence: capture copies, corrupt segments, SYN+RST (no stack sends it: malformed)
    no_evidence = (original >= 0) | corrupt | ((R[:, L.R_FLAGS] & SYN) != 0)
    # a device's fingerprint is looked for only where the verdict hinges on it: a host-level
    # hop-distance anomaly that this connection cannot back by itself (`host_ttls_usable`)
    unbacked = host_ttls_known & ~hops_in_host_ttls & ~host_ttls_usable(
        host_ttls_known, start_seen, R[:, L.R_SND_PKTS], R[:, L.R_TRIG_FLAGS], False)
    shared = shared_ipid_counter(R, senders, unbacked, ignore=no_evidence)
    one_counter = one_counter_senders(R, senders, no_evidence)
    del senders, unbacked
    log = RstLog(R, is_orig, start_seen, host_ttls_known, hops_in_host_ttls,
                 burst_features(R, src_is_a, ignore=no_evidence), corrupt, text, old,
                 relayed=_relayed(R, F, pos, K, src_is_a, orig_is_a, start_seen),
                 shared_ipid=shared, one_counter=one_counter)  # fmt: skip
    del no_evidence, text, old, shared, one_counter
    verdicts = _Verdicts(*_copies_take_originals_verdicts(*log_verdicts(log, min(chunk, VERDICT_CHUNK)), original))
    del log
    cause_c, sub_c, conf_c, ended_c, acc_c, sender_c = verdicts.codes()
    which = verdicts.which

    # the resets rows, a chunk of RSTs at a time; everything but the verdict comes straight
    # from the RST log and the connections' records (the text columns made once)
    orig_hi, orig_lo, resp_hi, resp_lo, orig_p_all, resp_p_all = endpoints(F, K)
    del K
    # every originator, then every responder: one column, whose halves are flows' orig_h, resp_h
    both = address_text(np.concatenate([orig_hi, resp_hi]), np.concatenate([orig_lo, resp_lo]))
    del orig_hi, orig_lo, resp_hi, resp_lo
    given = {"uid": uids(F[:, L.SERIAL], F[:, L.TS_FIRST], F[:, L.HASH]),
             "orig_h": both.slice(0, n_flows), "resp_h": both.slice(n_flows)}  # fmt: skip
    uid = arrow.joined_strings(given["uid"])
    hosts = arrow.joined_strings(both)
    evidence_s = [v.evidence for v in verdicts.distinct]
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        yield RESETS, _resets_rows(R, a, b, pos[a:b], is_orig[a:b], which[a:b], original, checksum[a:b],
                                   n_flows, uid, hosts, orig_p_all, resp_p_all, sources,
                                   (cause_c, sub_c, conf_c, ended_c, acc_c, sender_c), evidence_s)  # fmt: skip
    del uid, hosts, orig_p_all, resp_p_all
    # the connections' rows with their summary columns, a chunk of connections at a time
    summary = _flow_summary(n_flows, pos, is_orig, R, which, (cause_c, sub_c, conf_c, ended_c, sender_c))
    del pos, is_orig, which
    for a in range(0, n_flows, chunk):
        part = {name: col.slice(a, chunk) for name, col in (*given.items(), *summary.items())}
        yield FLOWS, flow_table(held[a : a + chunk], sources, given=part)[0]


def _senders(K: NarrowRows, pos: np.ndarray, src_is_a: np.ndarray) -> np.ndarray:
    """(hi, lo) of each RST's claimed sender, from its connection's key row."""
    out = np.empty((pos.shape[0], 2), np.uint64)
    for a in range(0, pos.shape[0], VERDICT_CHUNK):
        p, s = pos[a : a + VERDICT_CHUNK], src_is_a[a : a + VERDICT_CHUNK]
        for j in (0, 1):
            out[a : a + VERDICT_CHUNK, j] = np.where(s, K[p, j], K[p, 2 + j])
    return out


def _resets_rows(R: RstColumns, a: int, b: int, pos: np.ndarray, is_orig: np.ndarray,
                 which: np.ndarray, original: np.ndarray, checksum: np.ndarray, n_flows: int,
                 uid: tuple[np.ndarray, np.ndarray], hosts: tuple[np.ndarray, np.ndarray],
                 orig_p_all: np.ndarray, resp_p_all: np.ndarray, sources: list[str],
                 codes: tuple[np.ndarray, ...], evidence_s: list[tuple[str, ...]]) -> pa.Table:  # fmt: skip
    """The resets rows of RSTs a..b of the log (`pos`, `is_orig`, `which`, `checksum`: theirs;
    `original`: the whole log's)."""
    cause_c, sub_c, conf_c, ended_c, acc_c, sender_c = codes
    Rc = R[a:b]
    ended_code = ended_c[which]
    resp_at = pos + n_flows  # where a connection's responder is in `hosts`
    distinct_flags, flag_index = np.unique(Rc[:, L.R_FLAGS], return_inverse=True)
    orig_p, resp_p = orig_p_all[pos], resp_p_all[pos]
    snd_un, rcv_un = Rc[:, L.R_SND_UNACKED], Rc[:, L.R_RCV_UNACKED]
    ip_id = Rc[:, L.R_IPID]
    no_ts = (Rc[:, L.R_OPTS] & OPT_TIMESTAMP) == 0
    orig = original[a:b]
    texts = payload_texts(Rc)
    cols: dict[str, object] = {
        "ts": Rc[:, L.R_TS],
        "uid": arrow.take_joined_strings(*uid, pos),
        "src_h": arrow.take_joined_strings(*hosts, np.where(is_orig, pos, resp_at)),
        "src_p": np.where(is_orig, orig_p, resp_p),
        "dst_h": arrow.take_joined_strings(*hosts, np.where(is_orig, resp_at, pos)),
        "dst_p": np.where(is_orig, resp_p, orig_p),
        "direction": enum_from_codes(np.where(is_orig, 0, 1), DIRECTIONS),
        "flags": arrow.take_strings(arrow.strings([flags_text(f) for f in distinct_flags.tolist()]),
                                     flag_index.reshape(-1)),
        "seq": Rc[:, L.R_SEQ],
        "ack": Rc[:, L.R_ACK],
        "ttl": Rc[:, L.R_TTL],
        "outer_ttl": arrow.column(Rc[:, L.R_OUTER_TTL], pa.uint8(), mask=Rc[:, L.R_OUTER_TTL] < 0),
        "ip_id": arrow.column(ip_id, pa.int32(), mask=ip_id < 0),
        "window": Rc[:, L.R_WIN],
        "payload_len": Rc[:, L.R_PLEN],
        "acceptability": enum_from_codes(acc_c[which], ACCEPTABILITY),
        "ended_connection": arrow.column(ended_code == 1, pa.bool_(), mask=ended_code < 0),
        "sender": enum_from_codes(sender_c[which], SENDERS),
        "cause": enum_from_codes(cause_c[which], CAUSES),
        "subcause": enum_from_codes(sub_c[which], SUBCAUSES),
        "confidence": conf_c[which],
        "evidence": arrow.take_lists(evidence_s, which),
        "unacked_bytes": snd_un + rcv_un,
        "orig_unacked_bytes": np.where(is_orig, snd_un, rcv_un),
        "resp_unacked_bytes": np.where(is_orig, rcv_un, snd_un),
        "frame": Rc[:, L.R_FRAME],
        "source": enum_from_codes(Rc[:, L.R_SOURCE], tuple(sources), pa.int32()),
        "duplicate_of": arrow.column(R[np.maximum(orig, 0), L.R_FRAME], pa.int64(), mask=orig < 0),
        "checksum": enum_from_codes(checksum.astype(np.int64), CHECKSUMS),
        "payload_text": texts,
        "ts_val": arrow.column(Rc[:, L.R_TSVAL], pa.uint32(), mask=no_ts),
        "ts_ecr": arrow.column(Rc[:, L.R_TSECR], pa.uint32(), mask=no_ts),
    }
    arrays = [arrow.to_arrow(c, f.type) for f, c in zip(RESETS_SCHEMA, cols.values(), strict=True)]
    return pa.Table.from_arrays(arrays, schema=RESETS_SCHEMA)


def _relayed(R: RstRows, F: NarrowRows, pos: np.ndarray, keys: NarrowRows,
             src_is_a: np.ndarray, orig_is_a: np.ndarray, start_seen: np.ndarray) -> np.ndarray:
    """`speakers.relayed` of the RSTs: addresses and connections as numbers (`K`: the
    connections' key rows, `pos`: each RST's connection)."""
    n = R.shape[0]
    # a relay's RST to its client comes from a side that had sent on a connection whose
    # opening was captured: without one (a scan's refusals) nothing is relayed
    if n < 2 or not (start_seen & (R[:, L.R_SND_PKTS] > 0)).any():
        return np.zeros(n, np.int64)
    K = keys.matrix(L.NKO)
    pairs = np.ascontiguousarray(np.concatenate([K[:, :2], K[:, 2:]])).view("V16").ravel()
    _, number = np.unique(pairs, return_inverse=True)
    number = number.reshape(-1)
    a, b = number[: K.shape[0]][pos], number[K.shape[0] :][pos]
    # the originator's lowest TTL (0: none), as flows.orig_ttl_min holds it
    ttl = np.where(F[:, L.D + L.NONRST_PKTS] > 0, F[:, L.D + L.TTL_MIN].astype(np.uint8), 0)
    return relayed(R, pos, np.where(src_is_a, a, b), np.where(src_is_a, b, a),
                   F[:, L.TS_FIRST][pos], start_seen,
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


def _flow_summary(n: int, pos: np.ndarray, is_orig: np.ndarray, R: RstColumns, which: np.ndarray,
                  codes: tuple[np.ndarray, ...]) -> dict[str, pa.Array]:  # fmt: skip
    """rst_cause/subcause/sender/confidence of the RST that ended each of `n` connections
    (the first that did; else its last RST).  Per RST `i`: its connection `pos[i]` and its
    verdict `which[i]`, whose (cause, subcause, confidence, ended, sender) codes are `codes`."""
    cause_c, sub_c, conf_c, ended_c, sender_c = codes
    ended = ended_c[which] == 1
    chosen = np.full(n, -1, np.int64)
    if pos.shape[0]:
        order = np.lexsort((R[:, L.R_TS], pos))  # by connection, then in time
        conn = pos[order]
        starts = np.flatnonzero(np.r_[True, conn[1:] != conn[:-1]])
        ends = np.r_[starts[1:], order.shape[0]]
        first_ended = np.minimum.reduceat(np.where(ended[order], np.arange(order.shape[0]), order.shape[0]), starts)
        chosen[conn[starts]] = order[np.where(first_ended < ends, first_ended, ends - 1)]
        del order, conn, starts, ends, first_ended
    none = chosen < 0
    if not pos.shape[0]:  # nothing to take from: every connection's summary is null
        which, is_orig = np.zeros(1, np.intp), np.zeros(1, bool)
        cause_c = sub_c = sender_c = np.full(1, -1, np.int64)
        conf_c = np.zeros(1, np.float32)
    c = np.maximum(chosen, 0)
    v = which[c]  # each connection's deciding verdict
    cause, subcause, confidence = cause_c[v], sub_c[v], conf_c[v]
    # `orig`/`resp`: the side it claims to come from; `middlebox` when `resets.sender` says a
    # middlebox sent it (whatever the cause)
    middlebox = sender_c[v] == SENDERS.index("middlebox")
    sender = np.where(middlebox, RST_SENDERS.index("middlebox"),
                      np.where(is_orig[c], RST_SENDERS.index("orig"), RST_SENDERS.index("resp")))  # fmt: skip
    return {
        "rst_cause": enum_from_codes(np.where(none, -1, cause), CAUSES),
        "rst_subcause": enum_from_codes(np.where(none, -1, subcause), SUBCAUSES),
        "rst_sender": enum_from_codes(np.where(none, -1, sender), RST_SENDERS),
        "rst_confidence": arrow.column(np.where(none, 0, confidence).astype(np.float32),
                                        pa.float32(), mask=none),
    }
