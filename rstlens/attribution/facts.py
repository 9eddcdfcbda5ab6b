"""The facts of an RST: what the rules may look at, defined once.

`RstFacts` is the per-RST reference form (tests, `classify`).  `attribute` works on columns
instead: `FACT_COLUMNS` says, for every column `signals.signal_columns` takes, which
`RstFacts` field it stands for and how it is read from the RST log (`flows.layout.R_*`)
and from one `RstFacts`.  Both column dicts (`columns_from_log`, `columns_from_facts`) are
built from that one table, and the tests hold it to `RstFacts`' fields.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rstlens.attribution import bursts as B
from rstlens.attribution.hops import HOPS_UNKNOWN, hop_distance, same_hops_ttls
from rstlens.flows import layout as L
from rstlens.flows.columns import RstRows
from rstlens.parsers._batch import ACK


class RstFacts(NamedTuple):
    """Everything `classify` looks at for one RST (see `flows.layout.R_*` for the raw columns).

    The per-RST reference form: `attribute` works on columns of these facts instead
    (`FACT_COLUMNS`), and the tests hold the two to the same signals."""

    direction: str  # "orig" or "resp": who the RST claims to come from
    flags: int
    seq: int
    ack: int
    ttl: int
    ip_id: int
    df: bool
    window: int
    payload_len: int
    tcp_opts: int
    ip_version: int
    snd_state: int  # Zeek endpoint state of the sender before the RST
    rcv_state: int
    snd_pkts: int  # non-RST packets the sender had sent in this connection
    snd_ttl_min: int
    snd_ttl_max: int
    snd_fin: bool
    rcv_fin: bool
    snd_seq_known: bool
    seq_vs_snd_nxt: int
    rcv_ack_known: bool
    seq_vs_rcv_ack: int
    rcv_window: int  # bytes, -1 unknown
    ack_vs_rcv_nxt: int | None  # None when the RST has no ACK or the receiver sent nothing
    trig_flags: int  # -1: nothing from the receiver before
    trig_ack: int
    trig_gap_us: int  # time between the trigger and the RST
    trig_data: bool  # the trigger was the receiver's last segment with payload
    snd_last_data_ts: int
    rcv_last_data_ts: int
    start_seen: bool
    after_snd_adv: int  # claimed sender's packets afterwards at/after the RST's seq
    after_snd_synack: bool
    after_rcv_nonrst: int
    after_rcv_challenge: bool
    host_ttls: frozenset[int]  # TTLs the sender's host shows in non-RST packets, whole capture
    burst_seq_change: bool
    burst_ack_change: bool
    burst_ttl_change: bool
    both_directions: bool
    burst_later: bool  # a later RST from the same side within 2 s changes seq, ack or TTL
    # issue 17 (capture artefacts and payload text), defaulted so that older call sites hold
    checksum_bad: bool = False  # wrong checksum, the sender's checksums otherwise good (README "Checksums")
    payload_text: bool = False  # the payload is printable text (`payload.text`)
    # the sender sent nothing before in this connection, and the RST's seq is the ISN (or
    # ISN + 1: 1) or the next sequence number (2) of an ended connection on the same key
    # (`ended.EndedConnections`); 0 otherwise
    old_seq_match: int = 0
    # who speaks for the sender's address (issue 17 item 8): the TTL of its SYN / SYN-ACK
    # (0: none seen) and the TTL range of its payload segments (min > max: none seen)
    snd_hs_ttl: int = 0
    snd_data_ttl_min: int = 256
    snd_data_ttl_max: int = 0
    # a proxy relaying an upstream RST (`relays.relayed`): RELAY_* codes, 0 none
    relayed: int = 0
    # another RST claiming a different source carries the same TTL and the next IP IDs of
    # one counter (`fingerprints.shared_ipid_counter`): one device speaking for several hosts
    shared_ipid: bool = False
    # the claimed sender's address shares one IP-ID counter with another address
    # (`fingerprints.one_counter_senders`): one stack (a user-mode NAT, a proxy) answers for both
    one_counter: bool = False
    # the sender's last segment before the RST (`flows.layout.R_SND_LAST_*`): the RST's seq
    # minus its seq, its payload length, its flags (-1: the sender sent nothing) and its time
    snd_last_seq_delta: int = 0
    snd_last_len: int = 0
    snd_last_flags: int = -1
    snd_last_gap_us: int = 0  # time from it to the RST
    # TCP timestamps (issue 17 item 6; RFC 7323): the RST's TSecr (its option: `tcp_opts`),
    # and the TSvals the receiver had sent before it (`flows.layout.TSV_*`): how many of its
    # segments carried the option, the highest TSval, the first (with the TSV_ON_SYN /
    # TSV_SYN_WITHOUT bits)
    ts_ecr: int = 0
    rcv_tsv_n: int = 0
    rcv_tsv_max: int = 0
    rcv_tsv_first: int = 0


@dataclass(frozen=True)
class RstLog:
    """The RST log and what `attribute` looked up for its rows, one entry per RST."""

    R: RstRows  # the RST log (flows.layout.R_*)
    is_orig: np.ndarray  # the RST claims to come from its connection's originator
    start_seen: np.ndarray  # its connection's start was captured
    host_ttls_known: np.ndarray  # the claimed sender's host shows TTLs (of a known hop distance)
    hops_in_host_ttls: np.ndarray  # ... and one of them is at the RST's hop distance
    burst: np.ndarray  # bursts.burst_features
    checksum_bad: np.ndarray  # attribute.checksum_status == "bad"
    payload_text: np.ndarray  # attribute.is_text
    old_seq_match: np.ndarray | None = None  # ended.EndedConnections.match (None: all 0)
    relayed: np.ndarray | None = None  # relays.relayed (None: all 0)
    shared_ipid: np.ndarray | None = None  # fingerprints.shared_ipid_counter (None: all False)
    one_counter: np.ndarray | None = None  # fingerprints.one_counter_senders (None: all False)


FactValue = int | bool


class FactColumn(NamedTuple):
    """One column of `signal_columns`' input."""

    name: str
    fact: str  # the RstFacts field it stands for
    from_log: Callable[[RstLog], np.ndarray]
    from_facts: Callable[[RstFacts], FactValue]


def _logged(name: str, column: int) -> FactColumn:
    """A fact the RST log holds as it is."""
    return FactColumn(name, name, lambda log: log.R[:, column], operator.attrgetter(name))


def _logged_flag(name: str, column: int) -> FactColumn:
    """A boolean fact the RST log holds as 0 / 1."""
    return FactColumn(name, name, lambda log: log.R[:, column] != 0, operator.attrgetter(name))


def _looked_up(name: str, read: Callable[[RstLog], np.ndarray]) -> FactColumn:
    """A fact `attribute` finds outside the RST log (its connection, its host, its burst)."""
    return FactColumn(name, name, read, operator.attrgetter(name))


def _looked_up_or_zero(name: str, dtype: type) -> FactColumn:
    """A looked-up fact `attribute` may leave out (the RstLog field of that name is None):
    then 0 / False for every RST."""

    def read(log: RstLog) -> np.ndarray:
        values: np.ndarray | None = getattr(log, name)
        return np.zeros(log.R.shape[0], dtype) if values is None else values

    return _looked_up(name, read)


def _burst(name: str) -> FactColumn:
    j = B.BURST_COLUMNS.index(name)
    return _looked_up(name, lambda log: log.burst[:, j])


def _has_trigger(log: RstLog) -> np.ndarray:
    return log.R[:, L.R_TRIG_FLAGS] >= 0


def _trig_gap_us(log: RstLog) -> np.ndarray:
    return np.where(_has_trigger(log), log.R[:, L.R_TS] - log.R[:, L.R_TRIG_TS], 0)


def _snd_last_gap_us(log: RstLog) -> np.ndarray:
    sent = log.R[:, L.R_SND_LAST_FLAGS] >= 0
    return np.where(sent, log.R[:, L.R_TS] - log.R[:, L.R_SND_LAST_TS], 0)


def _trig_data(log: RstLog) -> np.ndarray:
    last_data = log.R[:, L.R_RCV_LAST_DATA_TS]
    is_data: np.ndarray = _has_trigger(log) & (last_data > 0) & (log.R[:, L.R_TRIG_TS] == last_data)
    return is_data


def _ack_vs_rcv_nxt_known(log: RstLog) -> np.ndarray:
    # the log's offset means something only when the RST has an ACK and the receiver sent
    known: np.ndarray = ((log.R[:, L.R_FLAGS] & ACK) != 0) & _has_trigger(log)
    return known


# In `RstFacts` order.  Columns whose name differs from their fact are where the two forms
# differ: `direction` becomes `from_resp`, the optional `ack_vs_rcv_nxt` becomes a value and
# a `_known` flag, and the host's TTL set becomes the two answers the rules need from it.
FACT_COLUMNS: tuple[FactColumn, ...] = (
    FactColumn("from_resp", "direction", lambda log: ~log.is_orig, lambda f: f.direction == "resp"),
    _logged("flags", L.R_FLAGS),
    _logged("seq", L.R_SEQ),
    _logged("ack", L.R_ACK),
    _logged("ttl", L.R_TTL),
    _logged("ip_id", L.R_IPID),
    _logged_flag("df", L.R_DF),
    _logged("window", L.R_WIN),
    _logged("payload_len", L.R_PLEN),
    _logged("tcp_opts", L.R_OPTS),
    _logged("ip_version", L.R_IPV),
    _logged("snd_state", L.R_SND_ST),
    _logged("rcv_state", L.R_RCV_ST),
    _logged("snd_pkts", L.R_SND_PKTS),
    _logged("snd_ttl_min", L.R_SND_TTL_MIN),
    _logged("snd_ttl_max", L.R_SND_TTL_MAX),
    _logged_flag("snd_fin", L.R_SND_FIN),
    _logged_flag("rcv_fin", L.R_RCV_FIN),
    _logged_flag("snd_seq_known", L.R_SND_SEQ_SET),
    _logged("seq_vs_snd_nxt", L.R_SEQ_VS_SND_NXT),
    _logged_flag("rcv_ack_known", L.R_RCV_ACK_SET),
    _logged("seq_vs_rcv_ack", L.R_SEQ_VS_RCV_ACK),
    _logged("rcv_window", L.R_RCV_WIN_BYTES),
    FactColumn("ack_vs_rcv_nxt", "ack_vs_rcv_nxt", lambda log: log.R[:, L.R_ACK_VS_RCV_NXT],
               lambda f: f.ack_vs_rcv_nxt or 0),
    FactColumn("ack_vs_rcv_nxt_known", "ack_vs_rcv_nxt", _ack_vs_rcv_nxt_known,
               lambda f: f.ack_vs_rcv_nxt is not None),
    _logged("trig_flags", L.R_TRIG_FLAGS),
    _logged("trig_ack", L.R_TRIG_ACK),
    _looked_up("trig_gap_us", _trig_gap_us),
    _looked_up("trig_data", _trig_data),
    _logged("snd_last_data_ts", L.R_SND_LAST_DATA_TS),
    _logged("rcv_last_data_ts", L.R_RCV_LAST_DATA_TS),
    _looked_up("start_seen", lambda log: log.start_seen),
    _logged("after_snd_adv", L.R_AFTER_SND_ADV),
    _logged_flag("after_snd_synack", L.R_AFTER_SND_SYNACK),
    _logged("after_rcv_nonrst", L.R_AFTER_RCV_NONRST),
    _logged_flag("after_rcv_challenge", L.R_AFTER_RCV_CHALLENGE),
    FactColumn("host_ttls_known", "host_ttls", lambda log: log.host_ttls_known,
               lambda f: any(hop_distance(t) != HOPS_UNKNOWN for t in f.host_ttls)),
    FactColumn("hops_in_host_ttls", "host_ttls", lambda log: log.hops_in_host_ttls,
               lambda f: bool(f.host_ttls & set(same_hops_ttls(f.ttl)))),
    *(_burst(name) for name in B.BURST_COLUMNS),
    _looked_up("checksum_bad", lambda log: log.checksum_bad),
    _looked_up("payload_text", lambda log: log.payload_text),
    _looked_up_or_zero("old_seq_match", np.int64),
    _logged("snd_hs_ttl", L.R_SND_HS_TTL),
    _logged("snd_data_ttl_min", L.R_SND_DATA_TTL_MIN),
    _logged("snd_data_ttl_max", L.R_SND_DATA_TTL_MAX),
    _looked_up_or_zero("relayed", np.int64),
    _looked_up_or_zero("shared_ipid", bool),
    _looked_up_or_zero("one_counter", bool),
    _logged("snd_last_seq_delta", L.R_SND_LAST_SEQ_DELTA),
    _logged("snd_last_len", L.R_SND_LAST_LEN),
    _logged("snd_last_flags", L.R_SND_LAST_FLAGS),
    _looked_up("snd_last_gap_us", _snd_last_gap_us),
    _logged("ts_ecr", L.R_TSECR),
    _logged("rcv_tsv_n", L.R_RCV_TSV_N),
    _logged("rcv_tsv_max", L.R_RCV_TSV_MAX),
    _logged("rcv_tsv_first", L.R_RCV_TSV_FIRST),
)  # fmt: skip

# The RST's own ack is reported (`resets.ack`) but no rule reads it: they test its offset
# from what the receiver sent (`ack_vs_rcv_nxt`) instead.
NOT_A_SIGNAL_INPUT = frozenset({"ack"})


def columns_from_log(log: RstLog) -> dict[str, np.ndarray]:
    """`signal_columns`' input for the RSTs of the log."""
    return {c.name: c.from_log(log) for c in FACT_COLUMNS}


def columns_from_facts(rows: Sequence[RstFacts]) -> dict[str, np.ndarray]:
    """`signal_columns`' input for RSTs given one by one (the tests' reference form)."""
    return {c.name: np.array([c.from_facts(f) for f in rows]) for c in FACT_COLUMNS}
