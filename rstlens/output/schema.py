"""The public output contracts: flows.parquet and resets.parquet.

Column names follow Zeek's conn.log where Zeek has one (without the ``id.`` prefix).
Timestamps are ``timestamp[us, tz=UTC]``, enumerations are dictionary-encoded, and every
file carries `SCHEMA_VERSION` in its key-value metadata under the key ``rstlens``.
Bump `SCHEMA_VERSION` on any change a reader could notice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from rstlens.output import arrow

SCHEMA_VERSION = "1.3"  # 1.1: flows tunnel, tunnel_endpoints; resets outer_ttl
# 1.2: resets sender; flows orig_dups, resp_dups; resets duplicate_of, checksum, payload_text
# 1.3: subcauses idle (middlebox), keepalive_timeout, retransmit_timeout (abort); resets ts_val,
#      ts_ecr
METADATA_KEY = b"rstlens"  # schema metadata, known when the file is opened
RUN_METADATA_KEY = b"rstlens_run"  # file key-value metadata, written when it is closed

_TS = pa.timestamp("us", tz="UTC")
_ENUM = pa.dictionary(pa.int8(), pa.string())
_SOURCE = pa.dictionary(pa.int32(), pa.string())  # input file names
TUNNEL_TYPE = pa.dictionary(pa.int32(), pa.string())  # tunnel stacks: few per run

CONN_STATES = (
    "S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH",
)  # fmt: skip
END_REASONS = ("fin", "rst", "idle", "evicted", "end_of_capture")
CAUSES = ("closed_port", "half_open", "abort", "middlebox", "unknown")
SUBCAUSES = (
    "reject", "injected", "data_after_close", "stale_reuse", "unexpected_synack", "after_reset",
    "lost_state", "after_close", "unsolicited", "no_match", "evasion", "corrupt", "idle",
    "keepalive_timeout", "retransmit_timeout",
)  # fmt: skip
RST_SENDERS = ("orig", "resp", "middlebox")
SENDERS = ("claimed", "middlebox", "unknown")  # resets.sender: who sent it (rules.SENDERS)
DIRECTIONS = ("orig", "resp")
# string columns whose values repeat across rows (written with Parquet dictionary pages)
REPEATING_STRINGS = ("orig_h", "resp_h", "src_h", "dst_h", "history", "flags", "evidence")
# string columns of (nearly) distinct values, written DELTA_LENGTH_BYTE_ARRAY: the lengths
# apart from the characters, which zstd then takes ~30% faster than plain pages' interleaved
# lengths and characters (a 1 M SYN flood's community_id 144 -> 93 ms, uid 107 -> 75 ms)
DISTINCT_STRINGS = ("uid", "community_id")
# integer columns that mostly grow from row to row (capture times, frame numbers), written
# DELTA_BINARY_PACKED: the small differences bit-packed before zstd (the 500 k scan's resets
# 189 -> 169 ms to write and 8% smaller, its flows 217 -> 200 ms; a 1 M flood's flows 500 ->
# 483 ms; columns alone, best of 5)
GROWING_NUMBERS = ("ts", "frame")
ACCEPTABILITY = ("exact", "in_window", "out_of_window", "unknown")
# resets.checksum: the RST's IPv4 header and TCP checksums (README "Checksums")
CHECKSUMS = ("good", "bad", "unreliable", "offload", "unverified")

FLOWS_SCHEMA = pa.schema(
    [
        pa.field("uid", pa.string(), nullable=False),
        pa.field("ts", _TS, nullable=False),
        pa.field("duration", pa.float64(), nullable=False),
        pa.field("orig_h", pa.string(), nullable=False),
        pa.field("orig_p", pa.uint16(), nullable=False),
        pa.field("resp_h", pa.string(), nullable=False),
        pa.field("resp_p", pa.uint16(), nullable=False),
        pa.field("ip_version", pa.uint8(), nullable=False),
        pa.field("vlan", pa.int32()),
        pa.field("inner_vlan", pa.int32()),
        # the tunnel stack, outermost first: "vxlan:42/gre:7" (type:id per layer), and each
        # layer's outer addresses, "198.51.100.1-198.51.100.2/..."; null when untunnelled
        pa.field("tunnel", TUNNEL_TYPE),
        pa.field("tunnel_endpoints", TUNNEL_TYPE),
        pa.field("community_id", pa.string(), nullable=False),
        pa.field("conn_state", _ENUM, nullable=False),
        pa.field("history", pa.string(), nullable=False),
        pa.field("orig_pkts", pa.int64(), nullable=False),
        pa.field("resp_pkts", pa.int64(), nullable=False),
        pa.field("orig_bytes", pa.int64(), nullable=False),
        pa.field("resp_bytes", pa.int64(), nullable=False),
        pa.field("start_seen", pa.bool_(), nullable=False),
        pa.field("end_reason", _ENUM, nullable=False),
        pa.field("rst_count", pa.int32(), nullable=False),
        pa.field("rst_cause", _ENUM),
        pa.field("rst_subcause", _ENUM),
        pa.field("rst_sender", _ENUM),
        pa.field("rst_confidence", pa.float32()),
        pa.field("orig_ttl_min", pa.uint8()),
        pa.field("orig_ttl_max", pa.uint8()),
        pa.field("resp_ttl_min", pa.uint8()),
        pa.field("resp_ttl_max", pa.uint8()),
        pa.field("orig_mss", pa.uint16()),
        pa.field("resp_mss", pa.uint16()),
        pa.field("ts_option", pa.bool_(), nullable=False),
        pa.field("source", _SOURCE, nullable=False),
        # capture copies of each side's segments (two taps, SPAN, -i any on a router): they
        # are in orig_pkts/resp_pkts, as Zeek counts them, but never used as evidence
        pa.field("orig_dups", pa.int64(), nullable=False),
        pa.field("resp_dups", pa.int64(), nullable=False),
    ]
)

RESETS_SCHEMA = pa.schema(
    [
        pa.field("ts", _TS, nullable=False),
        pa.field("uid", pa.string(), nullable=False),
        pa.field("src_h", pa.string(), nullable=False),
        pa.field("src_p", pa.uint16(), nullable=False),
        pa.field("dst_h", pa.string(), nullable=False),
        pa.field("dst_p", pa.uint16(), nullable=False),
        pa.field("direction", _ENUM, nullable=False),
        pa.field("flags", pa.string(), nullable=False),
        pa.field("seq", pa.uint32(), nullable=False),
        pa.field("ack", pa.uint32(), nullable=False),
        pa.field("ttl", pa.uint8(), nullable=False),
        pa.field("outer_ttl", pa.uint8()),  # the innermost tunnel's outer IP TTL/hop limit
        pa.field("ip_id", pa.int32()),
        pa.field("window", pa.uint16(), nullable=False),
        pa.field("payload_len", pa.int32(), nullable=False),
        pa.field("acceptability", _ENUM, nullable=False),
        pa.field("ended_connection", pa.bool_()),
        pa.field("sender", _ENUM, nullable=False),  # who sent it; `cause` says why
        pa.field("cause", _ENUM, nullable=False),
        pa.field("subcause", _ENUM),
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("evidence", pa.list_(pa.string()), nullable=False),
        pa.field("unacked_bytes", pa.int64(), nullable=False),
        pa.field("orig_unacked_bytes", pa.int64(), nullable=False),
        pa.field("resp_unacked_bytes", pa.int64(), nullable=False),
        pa.field("frame", pa.int64(), nullable=False),
        pa.field("source", _SOURCE, nullable=False),
        # a capture copy of another RST: that RST's frame (its row has the same uid); the
        # copy's row carries its verdict.  Null for the RSTs that are no copy.
        pa.field("duplicate_of", pa.int64()),
        pa.field("checksum", _ENUM, nullable=False),  # CHECKSUMS
        # the payload's first bytes (at most 64) as text, other than printable ASCII escaped
        # as \xNN; null without payload
        pa.field("payload_text", pa.string()),
        # the RST's TCP timestamp option (RFC 7323): TSval and TSecr, null without the option
        pa.field("ts_val", pa.uint32()),
        pa.field("ts_ecr", pa.uint32()),
    ]
)


def codes_of(values: Sequence[str | None], vocabulary: tuple[str, ...]) -> np.ndarray:
    """Codes into `vocabulary` of strings from it; None is -1."""
    index: dict[str | None, int] = {v: k for k, v in enumerate(vocabulary)}
    index[None] = -1
    return np.fromiter(map(index.__getitem__, values), np.int64, count=len(values))


def enum_from_codes(codes: np.ndarray, vocabulary: tuple[str, ...], index: pa.DataType = _ENUM.index_type) -> pa.DictionaryArray:
    """A dictionary-encoded column from integer codes into `vocabulary`; -1 is null."""
    return arrow.enum(codes, vocabulary, index, mask=codes < 0)
