"""From the RST log to resets.parquet rows and each connection's RST summary.

Verdicts are final only at the end of the input (files) because some evidence comes later
than the RST: the claimed sender carrying on, and the TTLs a host shows in connections seen
afterwards.  What is kept until then is small: the RST log (one int64 row per RST), the
rows of connections that had RSTs, and one set of TTLs per host.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from rstlens import _layout as L
from rstlens._attribution import BOTH_WAYS_WINDOW_US, BURST_WINDOW_US, RstFacts, Verdict, classify
from rstlens._schema import ACCEPTABILITY, CAUSES, DIRECTIONS, RESETS_SCHEMA, RST_SENDERS

SUBCAUSES = (
    "reject", "injected", "data_after_close", "stale_reuse", "unexpected_synack", "after_reset",
    "lost_state", "after_close", "unsolicited", "no_match", "evasion",
)  # fmt: skip

_FLAG_LETTERS = ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x10, "A"), (0x20, "U"),
                 (0x40, "E"), (0x80, "C"), (0x100, "N"))  # fmt: skip


@functools.lru_cache(maxsize=512)
def flags_text(fl: int) -> str:
    return "".join(ch for bit, ch in _FLAG_LETTERS if fl & bit)


class HostProfiles:
    """TTL / hop-limit values each host shows in its non-RST packets, across all flows.

    Kept as unique (address hi, address lo, ttl) rows: a few per host, whatever the traffic.
    """

    _ROW = np.dtype([("hi", np.uint64), ("lo", np.uint64), ("ttl", np.int64)])

    def __init__(self) -> None:
        self._rows = np.empty(0, self._ROW)
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    def add(self, F: np.ndarray, K: np.ndarray) -> None:
        """Finished connections (kernel rows and keys)."""
        orig_a = F[:, L.ORIG_IS_A] == 1
        for d in (0, 1):
            b = L.D + d * L.DSTRIDE
            seen = F[:, b + L.NONRST_PKTS] > 0
            from_a = orig_a if d == 0 else ~orig_a
            hi = np.where(from_a, K[:, 0], K[:, 2])[seen]
            lo = np.where(from_a, K[:, 1], K[:, 3])[seen]
            for col in (L.TTL_MIN, L.TTL_MAX):
                rows = np.empty(hi.shape[0], self._ROW)
                rows["hi"], rows["lo"], rows["ttl"] = hi, lo, F[seen, b + col]
                self._pending.append(rows)
                self._pending_n += rows.shape[0]
        if self._pending_n > 200_000:
            self._compact()

    def _compact(self) -> None:
        if self._pending:
            self._rows = np.unique(np.concatenate([self._rows, *self._pending]))
            self._pending, self._pending_n = [], 0

    def ttls_of(self, hosts: np.ndarray) -> list[frozenset[int]]:
        """The TTL set of each (hi, lo) row of `hosts` (n, 2)."""
        self._compact()
        table: dict[tuple[int, int], set[int]] = {}
        wanted = {(int(h), int(lo)) for h, lo in hosts.tolist()}
        for h, lo, ttl in self._rows.tolist():
            if (h, lo) in wanted:
                table.setdefault((h, lo), set()).add(ttl)
        empty: frozenset[int] = frozenset()
        frozen = {k: frozenset(v) for k, v in table.items()}
        return [frozen.get((int(h), int(lo)), empty) for h, lo in hosts.tolist()]


@dataclass
class RstFlows:
    """The connections that had RSTs, held until their verdicts are final."""

    tables: list[pa.Table] = field(default_factory=list)
    serials: list[np.ndarray] = field(default_factory=list)
    orig_is_a: list[np.ndarray] = field(default_factory=list)
    keys: list[np.ndarray] = field(default_factory=list)

    def add(self, table: pa.Table, serials: np.ndarray, orig_is_a: np.ndarray,
            keys: np.ndarray) -> None:  # fmt: skip
        if table.num_rows:
            self.tables.append(table)
            self.serials.append(serials)
            self.orig_is_a.append(orig_is_a)
            self.keys.append(keys)


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
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        if b - a < 2:
            continue
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


def attribute(
    R: np.ndarray, flows: RstFlows, profiles: HostProfiles, sources: list[str]
) -> tuple[pa.Table, pa.Table]:
    """Verdicts for every logged RST.  Returns (resets table, the RST connections' flow rows
    with their summary columns filled in)."""
    if not flows.tables:
        return RESETS_SCHEMA.empty_table(), pa.table({})
    ftab = pa.concat_tables(flows.tables)
    serials = np.concatenate(flows.serials)
    orig_is_a = np.concatenate(flows.orig_is_a)
    order = np.argsort(serials)
    pos = order[np.searchsorted(serials, R[:, L.R_SERIAL], sorter=order)]
    uid = ftab.column("uid").to_pylist()
    orig_h = ftab.column("orig_h").to_pylist()
    resp_h = ftab.column("resp_h").to_pylist()
    orig_p = ftab.column("orig_p").to_pylist()
    resp_p = ftab.column("resp_p").to_pylist()
    start_seen = ftab.column("start_seen").to_pylist()
    src_is_a = R[:, L.R_SRC_IS_A] == 1
    is_orig = src_is_a == (orig_is_a[pos] == 1)
    burst = _burst_features(R, src_is_a)
    keys = np.concatenate(flows.keys)[pos]
    senders = np.where(src_is_a[:, None], keys[:, :2], keys[:, 2:])
    host_ttls = profiles.ttls_of(senders)

    rows: dict[str, list] = {f.name: [] for f in RESETS_SCHEMA}
    verdicts: list[Verdict] = []
    for i, r in enumerate(R.tolist()):
        j = int(pos[i])
        orig = bool(is_orig[i])
        src_h, dst_h = (orig_h[j], resp_h[j]) if orig else (resp_h[j], orig_h[j])
        src_p, dst_p = (orig_p[j], resp_p[j]) if orig else (resp_p[j], orig_p[j])
        has_trig = r[L.R_TRIG_FLAGS] >= 0
        facts = RstFacts(
            direction="orig" if orig else "resp",
            flags=r[L.R_FLAGS], seq=r[L.R_SEQ], ack=r[L.R_ACK], ttl=r[L.R_TTL],
            ip_id=r[L.R_IPID], df=bool(r[L.R_DF]), window=r[L.R_WIN],
            payload_len=r[L.R_PLEN], tcp_opts=r[L.R_OPTS], ip_version=r[L.R_IPV],
            snd_state=r[L.R_SND_ST], rcv_state=r[L.R_RCV_ST], snd_pkts=r[L.R_SND_PKTS],
            snd_ttl_min=r[L.R_SND_TTL_MIN], snd_ttl_max=r[L.R_SND_TTL_MAX],
            snd_fin=bool(r[L.R_SND_FIN]), rcv_fin=bool(r[L.R_RCV_FIN]),
            snd_seq_known=bool(r[L.R_SND_SEQ_SET]), seq_vs_snd_nxt=r[L.R_SEQ_VS_SND_NXT],
            rcv_ack_known=bool(r[L.R_RCV_ACK_SET]), seq_vs_rcv_ack=r[L.R_SEQ_VS_RCV_ACK],
            rcv_window=r[L.R_RCV_WIN_BYTES],
            ack_vs_rcv_nxt=r[L.R_ACK_VS_RCV_NXT] if (r[L.R_FLAGS] & 0x10 and has_trig) else None,
            trig_flags=r[L.R_TRIG_FLAGS], trig_ack=r[L.R_TRIG_ACK],
            trig_gap_us=r[L.R_TS] - r[L.R_TRIG_TS] if has_trig else 0,
            snd_last_data_ts=r[L.R_SND_LAST_DATA_TS], rcv_last_data_ts=r[L.R_RCV_LAST_DATA_TS],
            start_seen=bool(start_seen[j]),
            after_snd_adv=r[L.R_AFTER_SND_ADV], after_snd_ttl=r[L.R_AFTER_SND_TTL],
            after_snd_synack=bool(r[L.R_AFTER_SND_SYNACK]),
            after_rcv_nonrst=r[L.R_AFTER_RCV_NONRST],
            after_rcv_challenge=bool(r[L.R_AFTER_RCV_CHALLENGE]),
            host_ttls=host_ttls[i],
            burst_seq_change=bool(burst[i, 0]), burst_ack_change=bool(burst[i, 1]),
            burst_ttl_change=bool(burst[i, 2]), both_directions=bool(burst[i, 3]),
        )  # fmt: skip
        v = classify(facts)
        verdicts.append(v)
        snd_un, rcv_un = r[L.R_SND_UNACKED], r[L.R_RCV_UNACKED]
        rows["ts"].append(r[L.R_TS])
        rows["uid"].append(uid[j])
        rows["src_h"].append(src_h)
        rows["src_p"].append(src_p)
        rows["dst_h"].append(dst_h)
        rows["dst_p"].append(dst_p)
        rows["direction"].append(facts.direction)
        rows["flags"].append(flags_text(r[L.R_FLAGS]))
        rows["seq"].append(r[L.R_SEQ])
        rows["ack"].append(r[L.R_ACK])
        rows["ttl"].append(r[L.R_TTL])
        rows["ip_id"].append(r[L.R_IPID] if r[L.R_IPID] >= 0 else None)
        rows["window"].append(r[L.R_WIN])
        rows["payload_len"].append(r[L.R_PLEN])
        rows["acceptability"].append(v.acceptability)
        rows["ended_connection"].append(v.ended_connection)
        rows["cause"].append(v.cause)
        rows["subcause"].append(v.subcause)
        rows["confidence"].append(v.confidence)
        rows["evidence"].append(list(v.evidence))
        rows["unacked_bytes"].append(snd_un + rcv_un)
        rows["orig_unacked_bytes"].append(snd_un if orig else rcv_un)
        rows["resp_unacked_bytes"].append(rcv_un if orig else snd_un)
        rows["frame"].append(r[L.R_FRAME])
        rows["source"].append(sources[r[L.R_SOURCE]])

    enums = {"direction": DIRECTIONS, "acceptability": ACCEPTABILITY, "cause": CAUSES,
             "subcause": SUBCAUSES, "source": tuple(sources)}  # fmt: skip
    arrays = []
    for f in RESETS_SCHEMA:
        if f.name == "ts":
            arrays.append(pa.array(rows["ts"], pa.timestamp("us", tz="UTC")))
        elif f.name in enums:
            arrays.append(_enum(rows[f.name], enums[f.name], f.type))
        else:
            arrays.append(pa.array(rows[f.name], f.type))
    resets = pa.Table.from_arrays(arrays, schema=RESETS_SCHEMA)
    return resets, _flow_summary(ftab, pos, is_orig, verdicts, R)


def _enum(values: list, vocabulary: tuple[str, ...], typ: pa.DataType) -> pa.Array:
    index = {v: k for k, v in enumerate(vocabulary)}
    codes = pa.array([index[v] if v is not None else None for v in values], typ.index_type)
    return pa.DictionaryArray.from_arrays(codes, pa.array(list(vocabulary), pa.string()))


def _flow_summary(ftab: pa.Table, pos: np.ndarray, is_orig: np.ndarray,
                  verdicts: list[Verdict], R: np.ndarray) -> pa.Table:  # fmt: skip
    """rst_cause/subcause/sender/confidence of the RST that ended each connection (the first
    that did; else its last RST)."""
    n = ftab.num_rows
    chosen: list[int | None] = [None] * n
    order = np.lexsort((R[:, L.R_TS], pos))
    for i in order.tolist():
        j = int(pos[i])
        c = chosen[j]
        if c is None or (verdicts[c].ended_connection is not True):
            chosen[j] = i
    cause, sub, sender, conf = [], [], [], []
    for c in chosen:
        if c is None:
            cause.append(None), sub.append(None), sender.append(None), conf.append(None)
            continue
        v = verdicts[c]
        cause.append(v.cause)
        sub.append(v.subcause)
        sender.append("middlebox" if v.cause == "middlebox" else ("orig" if is_orig[c] else "resp"))
        conf.append(v.confidence)
    schema = ftab.schema
    cols = {
        "rst_cause": _enum(cause, CAUSES, schema.field("rst_cause").type),
        "rst_subcause": _enum(sub, SUBCAUSES, schema.field("rst_subcause").type),
        "rst_sender": _enum(sender, RST_SENDERS, schema.field("rst_sender").type),
        "rst_confidence": pa.array(conf, pa.float32()),
    }
    for name, arr in cols.items():
        ftab = ftab.set_column(schema.get_field_index(name), schema.field(name), arr)
    return ftab
