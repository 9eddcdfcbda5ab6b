"""From the RST log to resets.parquet rows and each connection's RST summary.

Verdicts are final only at the end of the input (files) because some evidence comes later
than the RST: the claimed sender carrying on, and the TTLs a host shows in connections seen
afterwards.  What is kept until then is small: the RST log (the rows of ended connections
settled in narrow columns, ~100 bytes per RST: `flows.engine.SettledRsts`), the records of
connections that had RSTs, and one set of TTLs per host.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from rstlens.attribution.rules import (
    BOTH_WAYS_WINDOW_US,
    BURST_WINDOW_US,
    Signals,
    Verdict,
    decide,
    signal_columns,
)
from rstlens.flows import layout as L
from rstlens.output import arrow
from rstlens.output.records import is_ipv4
from rstlens.output.schema import (
    ACCEPTABILITY,
    CAUSES,
    DIRECTIONS,
    FLOWS_SCHEMA,
    RESETS_SCHEMA,
    RST_SENDERS,
    SUBCAUSES,
    codes_of,
    enum_from_codes,
)

_FLAG_LETTERS = ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x10, "A"), (0x20, "U"),
                 (0x40, "E"), (0x80, "C"), (0x100, "N"))  # fmt: skip


@functools.lru_cache(maxsize=512)
def flags_text(fl: int) -> str:
    return "".join(ch for bit, ch in _FLAG_LETTERS if fl & bit)


_U32 = np.uint64(0xFFFF_FFFF)


def _v6_bytes(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """(n, 16) big-endian address bytes: byte order sorts as the addresses do."""
    return np.stack([hi, lo], axis=1).astype(">u8").view(np.uint8).reshape(-1, 16)


class HostProfiles:
    """TTL / hop-limit values each host shows in its non-RST packets, across all flows.

    Kept as the sorted distinct (address, TTL) pairs, so memory follows the hosts, not the
    traffic: IPv4 ones as one integer each (address << 8 | TTL, which sorts fast), IPv6
    ones as 17 bytes.  Pairs from finished connections are merged a few hundred thousand
    at a time.
    """

    MERGE_ROWS = 1 << 18

    def __init__(self) -> None:
        self._v4 = np.empty(0, np.uint64)
        self._v6 = np.empty(0, "V17")  # 16 address bytes + the TTL
        self._pending4: list[np.ndarray] = []
        self._pending6: list[np.ndarray] = []
        self._pending_rows = 0

    def add(self, F: np.ndarray, K: np.ndarray) -> None:
        """Finished connections (kernel rows and keys)."""
        orig_a = F[:, L.ORIG_IS_A] == 1
        for d in (0, 1):
            b = L.D + d * L.DSTRIDE
            seen = F[:, b + L.NONRST_PKTS] > 0
            from_a = (orig_a if d == 0 else ~orig_a)[seen]
            hi = np.where(from_a, K[seen, 0], K[seen, 2])
            lo = np.where(from_a, K[seen, 1], K[seen, 3])
            v4 = is_ipv4(hi, lo)
            v6 = ~v4
            for col in (L.TTL_MIN, L.TTL_MAX):
                ttl = F[seen, b + col].astype(np.uint64) & np.uint64(255)
                self._pending4.append(((lo[v4] & _U32) << np.uint64(8)) | ttl[v4])
                if v6.any():
                    pairs = np.concatenate([_v6_bytes(hi[v6], lo[v6]), ttl[v6, None].astype(np.uint8)], axis=1)
                    self._pending6.append(pairs.view("V17").ravel())
                self._pending_rows += ttl.shape[0]
        if self._pending_rows >= self.MERGE_ROWS:
            self._merge()

    def _merge(self) -> None:
        if self._pending4:
            self._v4 = _sorted_distinct(np.concatenate([self._v4, *self._pending4]))
        if self._pending6:
            self._v6 = _sorted_distinct(np.concatenate([self._v6, *self._pending6]))
        self._pending4, self._pending6, self._pending_rows = [], [], 0

    def ttl_profile(self, hosts: np.ndarray, ttls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each (hi, lo) row of `hosts` (n, 2) and TTL: does the host show any TTL in
        non-RST packets, and was `ttls[i]` among them?"""
        self._merge()
        n = hosts.shape[0]
        known = np.zeros(n, bool)
        seen = np.zeros(n, bool)
        ttl = ttls.astype(np.uint64) & np.uint64(255)
        v4 = is_ipv4(hosts[:, 0], hosts[:, 1])
        key = (hosts[v4, 1] & _U32) << np.uint64(8)
        known[v4] = _any_between(self._v4, key, key | np.uint64(255))
        pair4 = key | ttl[v4]
        seen[v4] = _any_between(self._v4, pair4, pair4)
        v6 = ~v4
        if v6.any() and self._v6.shape[0]:
            address = np.ascontiguousarray(_v6_bytes(hosts[v6, 0], hosts[v6, 1]))
            known_addresses = np.ascontiguousarray(self._v6.view(np.uint8).reshape(-1, 17)[:, :16])
            a16 = known_addresses.view("V16").ravel()
            want16 = address.view("V16").ravel()
            known[v6] = _any_between(a16, want16, want16)
            pairs = np.concatenate([address, ttl[v6, None].astype(np.uint8)], axis=1)
            pair6 = np.ascontiguousarray(pairs).view("V17").ravel()
            seen[v6] = _any_between(self._v6, pair6, pair6)
        return known, seen


def _sorted_distinct(values: np.ndarray) -> np.ndarray:
    """`np.unique(values)`, without numpy 2's `np.ma` check that imports numpy.ma (~25 ms
    of start-up, a tenth of tcpdump's time for a 1 M-packet file)."""
    values = np.sort(values)
    keep = np.empty(values.shape[0], bool)
    keep[:1] = True
    keep[1:] = values[1:] != values[:-1]  # the operator, not np.not_equal: it compares void rows
    return values[keep]


def _any_between(sorted_values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Whether `sorted_values` holds any value in [lo[i], hi[i]], for each i."""
    return np.searchsorted(sorted_values, hi, "right") > np.searchsorted(sorted_values, lo, "left")


@dataclass
class RstFlows:
    """The connections that had RSTs, held until their verdicts are final."""

    tables: list[pa.Table] = field(default_factory=list)
    serials: list[np.ndarray] = field(default_factory=list)
    orig_is_a: list[np.ndarray] = field(default_factory=list)
    keys: list[np.ndarray] = field(default_factory=list)
    ended: list[np.ndarray] = field(default_factory=list)  # time of each one's last packet

    def add(self, table: pa.Table, serials: np.ndarray, orig_is_a: np.ndarray,
            keys: np.ndarray, ended: np.ndarray) -> None:  # fmt: skip
        if table.num_rows:
            self.tables.append(table)
            self.serials.append(serials)
            self.orig_is_a.append(orig_is_a)
            self.keys.append(keys)
            self.ended.append(ended)

    def __len__(self) -> int:
        return sum(t.num_rows for t in self.tables)

    def split(self, ended_before: int) -> RstFlows:
        """Take out the connections whose last packet came before `ended_before` (µs)."""
        if not self.tables:
            return RstFlows()
        ended = np.concatenate(self.ended)
        done = ended < ended_before
        taken, kept = RstFlows(), RstFlows()
        table = pa.concat_tables(self.tables)
        for part, mask in ((taken, done), (kept, ~done)):
            if mask.any():
                part.add(table.filter(arrow.boolean_mask(mask)), np.concatenate(self.serials)[mask],
                         np.concatenate(self.orig_is_a)[mask], np.concatenate(self.keys)[mask],
                         ended[mask])  # fmt: skip
        self.tables, self.serials, self.orig_is_a = kept.tables, kept.serials, kept.orig_is_a
        self.keys, self.ended = kept.keys, kept.ended
        return taken

    def all_serials(self) -> np.ndarray:
        return np.concatenate(self.serials) if self.serials else np.empty(0, np.int64)


def _burst_features(R: np.ndarray, src_is_a: np.ndarray) -> np.ndarray:
    """Per RST: [seq change, ack change, ttl change, both directions] against the other RSTs
    of the same connection (§0 rule 4)."""
    out = np.zeros((R.shape[0], 4), bool)
    if R.shape[0] < 2:
        return out
    order = np.lexsort((R[:, L.R_TS], R[:, L.R_SERIAL]))
    serial = R[order, L.R_SERIAL]
    starts = np.flatnonzero(np.r_[True, serial[1:] != serial[:-1]])
    ends = np.r_[starts[1:], len(order)]
    several = ends - starts >= 2  # a lone RST has nothing to be compared with
    for a, b in zip(starts[several].tolist(), ends[several].tolist(), strict=True):
        idx = order[a:b]
        for j_pos, j in enumerate(idx.tolist()):
            for k in idx[:j_pos].tolist():
                dt = R[j, L.R_TS] - R[k, L.R_TS]
                if src_is_a[k] == src_is_a[j]:
                    if dt <= BURST_WINDOW_US:
                        out[j, 0] |= abs(int(R[j, L.R_SEQ]) - int(R[k, L.R_SEQ])) > 2
                        both_ack = R[j, L.R_FLAGS] & R[k, L.R_FLAGS] & 0x10
                        out[j, 1] |= bool(both_ack) and R[j, L.R_ACK] != R[k, L.R_ACK]
                        out[j, 2] |= R[j, L.R_TTL] != R[k, L.R_TTL]
                elif dt <= BOTH_WAYS_WINDOW_US:
                    out[j, 3] = True
                    out[k, 3] = True
    return out


def _facts_columns(R: np.ndarray, is_orig: np.ndarray, start_seen: np.ndarray,
                   host_ttls: tuple[np.ndarray, np.ndarray], burst: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    """The columns `signal_columns` takes, from the RST log."""
    flags = R[:, L.R_FLAGS]
    has_trig = R[:, L.R_TRIG_FLAGS] >= 0
    return {
        "from_resp": ~is_orig,
        "flags": flags, "seq": R[:, L.R_SEQ], "ttl": R[:, L.R_TTL],
        "ip_id": R[:, L.R_IPID], "df": R[:, L.R_DF] != 0, "window": R[:, L.R_WIN],
        "payload_len": R[:, L.R_PLEN], "tcp_opts": R[:, L.R_OPTS], "ip_version": R[:, L.R_IPV],
        "snd_state": R[:, L.R_SND_ST], "rcv_state": R[:, L.R_RCV_ST],
        "snd_pkts": R[:, L.R_SND_PKTS], "snd_ttl_min": R[:, L.R_SND_TTL_MIN],
        "snd_ttl_max": R[:, L.R_SND_TTL_MAX], "snd_fin": R[:, L.R_SND_FIN] != 0,
        "rcv_fin": R[:, L.R_RCV_FIN] != 0, "snd_seq_known": R[:, L.R_SND_SEQ_SET] != 0,
        "seq_vs_snd_nxt": R[:, L.R_SEQ_VS_SND_NXT], "rcv_ack_known": R[:, L.R_RCV_ACK_SET] != 0,
        "seq_vs_rcv_ack": R[:, L.R_SEQ_VS_RCV_ACK], "rcv_window": R[:, L.R_RCV_WIN_BYTES],
        "ack_vs_rcv_nxt": R[:, L.R_ACK_VS_RCV_NXT],
        "ack_vs_rcv_nxt_known": ((flags & 0x10) != 0) & has_trig,
        "trig_flags": R[:, L.R_TRIG_FLAGS], "trig_ack": R[:, L.R_TRIG_ACK],
        "trig_gap_us": np.where(has_trig, R[:, L.R_TS] - R[:, L.R_TRIG_TS], 0),
        "snd_last_data_ts": R[:, L.R_SND_LAST_DATA_TS],
        "rcv_last_data_ts": R[:, L.R_RCV_LAST_DATA_TS],
        "start_seen": start_seen,
        "after_snd_adv": R[:, L.R_AFTER_SND_ADV],
        "after_snd_synack": R[:, L.R_AFTER_SND_SYNACK] != 0,
        "after_rcv_nonrst": R[:, L.R_AFTER_RCV_NONRST],
        "after_rcv_challenge": R[:, L.R_AFTER_RCV_CHALLENGE] != 0,
        "host_ttls_known": host_ttls[0], "ttl_in_host_ttls": host_ttls[1],
        "burst_seq_change": burst[:, 0], "burst_ack_change": burst[:, 1],
        "burst_ttl_change": burst[:, 2], "both_directions": burst[:, 3],
    }  # fmt: skip


def verdicts_of(facts: dict[str, np.ndarray]) -> tuple[list[Verdict], np.ndarray]:
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


def attribute(
    R: np.ndarray, flows: RstFlows, profiles: HostProfiles, sources: list[str]
) -> tuple[pa.Table, pa.Table]:
    """Verdicts for every logged RST.  Returns (resets table, the RST connections' flow rows
    with their summary columns filled in)."""
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
    burst = _burst_features(R, src_is_a)
    keys = np.concatenate(flows.keys)[pos]
    senders = np.where(src_is_a[:, None], keys[:, :2], keys[:, 2:])
    host_ttls = profiles.ttl_profile(senders, R[:, L.R_TTL])
    distinct, which = verdicts_of(_facts_columns(R, is_orig, start_seen[pos], host_ttls, burst))

    # the verdicts column-wise (Verdict's field order), from the distinct ones
    cause_s, sub_s, conf_s, evidence_s, acc_s, ended_s = zip(*distinct, strict=True) if distinct else [()] * 6
    cause = codes_of(cause_s, CAUSES)[which]
    subcause = codes_of(sub_s, SUBCAUSES)[which]
    confidence = np.array(conf_s, np.float32).reshape(-1)[which]
    ended_code = np.array([-1 if e is None else int(e) for e in ended_s], np.int8).reshape(-1)[which]
    ended = arrow.column(ended_code == 1, pa.bool_(), mask=ended_code < 0)
    acceptability = codes_of(acc_s, ACCEPTABILITY)[which]

    # everything but the verdict comes straight from the RST log, column by column
    hosts = pa.chunked_array(ftab.column("orig_h").chunks + ftab.column("resp_h").chunks)
    resp_at = pos + ftab.num_rows  # where a connection's responder is in `hosts`
    distinct_flags, flag_index = np.unique(R[:, L.R_FLAGS], return_inverse=True)
    orig_p = arrow.numbers(ftab.column("orig_p"), np.uint16)[pos]
    resp_p = arrow.numbers(ftab.column("resp_p"), np.uint16)[pos]
    snd_un, rcv_un = R[:, L.R_SND_UNACKED], R[:, L.R_RCV_UNACKED]
    ip_id = R[:, L.R_IPID]
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
        "ip_id": arrow.column(ip_id, pa.int32(), mask=ip_id < 0),
        "window": R[:, L.R_WIN],
        "payload_len": R[:, L.R_PLEN],
        "acceptability": enum_from_codes(acceptability, ACCEPTABILITY),
        "ended_connection": ended,
        "cause": enum_from_codes(cause, CAUSES),
        "subcause": enum_from_codes(subcause, SUBCAUSES),
        "confidence": confidence,
        "evidence": arrow.take_lists(evidence_s, which),
        "unacked_bytes": snd_un + rcv_un,
        "orig_unacked_bytes": np.where(is_orig, snd_un, rcv_un),
        "resp_unacked_bytes": np.where(is_orig, rcv_un, snd_un),
        "frame": R[:, L.R_FRAME],
        "source": enum_from_codes(R[:, L.R_SOURCE], tuple(sources), pa.int32()),
    }
    arrays = [arrow.to_arrow(c, f.type) for f, c in zip(RESETS_SCHEMA, cols.values(), strict=True)]
    resets = pa.Table.from_arrays(arrays, schema=RESETS_SCHEMA)
    return resets, _flow_summary(ftab, pos, is_orig, R, cause, subcause, confidence, ended_code == 1)


def _flow_summary(ftab: pa.Table, pos: np.ndarray, is_orig: np.ndarray, R: np.ndarray,
                  cause: np.ndarray, subcause: np.ndarray, confidence: np.ndarray,
                  ended: np.ndarray) -> pa.Table:  # fmt: skip
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
    middlebox = cause[c] == CAUSES.index("middlebox")
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
