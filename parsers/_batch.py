"""The columnar packet batch: the one contract between `rstlens.parsers` and the core.

A `PacketBatch` holds the decoded TCP packets of one read from a capture source, one
numpy array per field, all of the same length.  Non-TCP packets never appear in a batch;
they are only counted in `DecodeStats`.

Addresses are 128-bit, split in two uint64 halves.  IPv4 addresses are stored in their
IPv4-mapped IPv6 form (``::ffff:a.b.c.d``: ``hi == 0``, ``lo == 0xFFFF_0000_0000 | v4``),
so one key layout serves both families and ``ip_version`` tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

# Bits of `PacketBatch.tcp_opts`: which TCP options the segment carried.
OPT_TIMESTAMP = 0x01
OPT_MSS = 0x02
OPT_WSCALE = 0x04
OPT_SACK_PERM = 0x08
OPT_SACK = 0x10
OPT_MD5 = 0x20  # RFC 2385 (kind 19)
OPT_AO = 0x40  # RFC 5925 TCP-AO (kind 29)
OPT_MALFORMED = 0x80  # option list overran the header

# TCP flag bits as on the wire (low 9 bits of the offset/flags word).
FIN = 0x001
SYN = 0x002
RST = 0x004
PSH = 0x008
ACK = 0x010
URG = 0x020
ECE = 0x040
CWR = 0x080
NS = 0x100

IPV4_MAPPED = np.uint64(0xFFFF_0000_0000)

# Tunnel layer types (the decode kernel's codes; `TUNNEL_NAMES` are the records' words).
TUNNEL_VXLAN = 1
TUNNEL_GENEVE = 2
TUNNEL_GRE = 3  # GRE carrying IP (also WCCP redirect, MPLS)
TUNNEL_GRETAP = 4  # GRE carrying Ethernet (0x6558: gretap, NVGRE)
TUNNEL_ERSPAN1 = 5
TUNNEL_ERSPAN2 = 6
TUNNEL_ERSPAN3 = 7
TUNNEL_IP4IN4 = 8
TUNNEL_IP6IN4 = 9
TUNNEL_IP4IN6 = 10
TUNNEL_IP6IN6 = 11
TUNNEL_TEREDO = 12
TUNNEL_GTPU = 13
TUNNEL_MPLS_UDP = 14
TUNNEL_PPTP = 15  # enhanced GRE (version 1) carrying PPP
N_TUNNEL_TYPES = 16
TUNNEL_NAMES: dict[int, str] = {
    TUNNEL_VXLAN: "vxlan", TUNNEL_GENEVE: "geneve", TUNNEL_GRE: "gre", TUNNEL_GRETAP: "gretap",
    TUNNEL_ERSPAN1: "erspan1", TUNNEL_ERSPAN2: "erspan2", TUNNEL_ERSPAN3: "erspan3",
    TUNNEL_IP4IN4: "ip4in4", TUNNEL_IP6IN4: "ip6in4", TUNNEL_IP4IN6: "ip4in6",
    TUNNEL_IP6IN6: "ip6in6", TUNNEL_TEREDO: "teredo", TUNNEL_GTPU: "gtpu",
    TUNNEL_MPLS_UDP: "mpls-udp", TUNNEL_PPTP: "pptp",
}  # fmt: skip
# The decode kernel describes each tunnelled row's layers, outermost first, in a side array
# of TUNNEL_MAX_LAYERS * TUNNEL_LAYER_WIDTH int64 per row: type (0 ends the stack), id (VNI,
# GRE key, ERSPAN session; -1 when the encapsulation has none, or one differing per
# direction: GTP-U's TEIDs, PPTP's call ids), the outer
# addresses in canonical order (lower first, so both directions agree), and the VLAN ids of
# the Ethernet frame the layer carried ((outer + 1) << 16 | (inner + 1), 0 when none).
TUNNEL_MAX_LAYERS = 4
TL_TYPE, TL_ID, TL_A_HI, TL_A_LO, TL_B_HI, TL_B_LO, TL_VLANS = range(7)
TUNNEL_LAYER_WIDTH = 7

# name -> numpy dtype, in the order documented in the README.
BATCH_COLUMNS: dict[str, np.dtype] = {
    "ts_us": np.dtype(np.int64),  # capture time, microseconds since the epoch (UTC)
    "source": np.dtype(np.uint16),  # index of the input (file) in the run
    "iface": np.dtype(np.uint16),  # interface id within the source (pcapng IDB index, else 0)
    "frame": np.dtype(np.int64),  # 1-based record number within its source, as Wireshark counts
    "ip_version": np.dtype(np.uint8),  # 4 or 6
    "src_hi": np.dtype(np.uint64),
    "src_lo": np.dtype(np.uint64),
    "dst_hi": np.dtype(np.uint64),
    "dst_lo": np.dtype(np.uint64),
    "sport": np.dtype(np.uint16),
    "dport": np.dtype(np.uint16),
    "seq": np.dtype(np.uint32),
    "ack": np.dtype(np.uint32),
    "flags": np.dtype(np.uint16),  # FIN..NS bits above
    "window": np.dtype(np.uint16),  # raw, unscaled
    "ttl": np.dtype(np.uint8),  # IPv4 TTL or IPv6 hop limit
    "ip_id": np.dtype(np.int32),  # IPv4 identification; -1 for IPv6
    "df": np.dtype(np.bool_),  # IPv4 don't-fragment bit (False for IPv6)
    "ip_hlen": np.dtype(np.uint16),  # IPv4 IHL*4, or 40 + IPv6 extension headers
    "tcp_hlen": np.dtype(np.uint8),  # data offset * 4
    "payload_len": np.dtype(np.int32),  # TCP payload length from the IP length fields (not caplen)
    "payload_off": np.dtype(np.int64),  # offset of the TCP payload in `raw` (bytes may be cut by snaplen)
    "captured_payload": np.dtype(np.int32),  # payload bytes actually present in `raw`
    "vlan": np.dtype(np.int32),  # outer 802.1Q/802.1ad VLAN id, -1 when untagged
    "inner_vlan": np.dtype(np.int32),  # inner VLAN id of a QinQ stack, -1 when absent
    "tunnel": np.dtype(np.uint64),  # tunnel identity (hash of the TUNNEL_LAYER_FIELDS), 0: none
    "outer_ttl": np.dtype(np.int16),  # TTL/hop limit of the innermost tunnel's outer IP header, -1
    "tcp_opts": np.dtype(np.uint8),  # OPT_* bits
    "ts_val": np.dtype(np.uint32),  # TCP timestamp option TSval (0 when absent)
    "ts_ecr": np.dtype(np.uint32),  # TCP timestamp option TSecr (0 when absent)
    "mss": np.dtype(np.uint16),  # MSS option (0 when absent)
    "wscale": np.dtype(np.int8),  # window-scale shift (-1 when absent)
}


@dataclass(slots=True)
class PacketBatch:
    """Decoded TCP packets, one numpy array per column (see `BATCH_COLUMNS`).

    `raw` is the byte buffer the packets were decoded from; `payload_off` indexes into it.
    It is only valid until the next batch is read, so keep copies, not views.
    """

    ts_us: np.ndarray
    source: np.ndarray
    iface: np.ndarray
    frame: np.ndarray
    ip_version: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    seq: np.ndarray
    ack: np.ndarray
    flags: np.ndarray
    window: np.ndarray
    ttl: np.ndarray
    ip_id: np.ndarray
    df: np.ndarray
    ip_hlen: np.ndarray
    tcp_hlen: np.ndarray
    payload_len: np.ndarray
    payload_off: np.ndarray
    captured_payload: np.ndarray
    vlan: np.ndarray
    inner_vlan: np.ndarray
    tunnel: np.ndarray
    outer_ttl: np.ndarray
    tcp_opts: np.ndarray
    ts_val: np.ndarray
    ts_ecr: np.ndarray
    mss: np.ndarray
    wscale: np.ndarray
    raw: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint8))

    def __len__(self) -> int:
        return int(self.ts_us.shape[0])

    @classmethod
    def empty(cls, n: int = 0) -> PacketBatch:
        """A batch of `n` zeroed rows (the decoders fill it in place)."""
        return cls(**{name: np.zeros(n, dtype) for name, dtype in BATCH_COLUMNS.items()})

    def take(self, index: np.ndarray | slice) -> PacketBatch:
        """Rows selected by a boolean mask, index array or slice (sharing `raw`)."""
        cols = {f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "raw"}
        return PacketBatch(**cols, raw=self.raw)

    @classmethod
    def concat(cls, batches: list[PacketBatch]) -> PacketBatch:
        """Join batches.  `payload_off` is rebased onto the joined `raw` buffer."""
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        raw = np.concatenate([b.raw for b in batches])
        bases = np.cumsum([0] + [b.raw.shape[0] for b in batches[:-1]])
        cols = {}
        for name in BATCH_COLUMNS:
            if name == "payload_off":
                cols[name] = np.concatenate(
                    [b.payload_off + base for b, base in zip(batches, bases, strict=True)]
                )
            else:
                cols[name] = np.concatenate([getattr(b, name) for b in batches])
        return cls(**cols, raw=raw)


@dataclass(slots=True)
class DecodeStats:
    """Counters kept by the decoders, summed over a run (all packets, not only TCP)."""

    packets: int = 0  # records read
    bytes: int = 0  # captured bytes of those records
    tcp: int = 0  # packets that reached a batch
    non_ip: int = 0  # link layer understood, no IPv4/IPv6 inside (ARP, LLDP, ...)
    non_tcp: int = 0  # IP, but UDP/ICMP/other
    ip_fragments: int = 0  # IP fragments: counted, never reassembled
    truncated: int = 0  # cut by snaplen before the TCP header was complete
    malformed: int = 0  # header fields that contradict each other (bad IHL, data offset < 5, ...)
    unsupported_link: int = 0  # records on a link type rstlens does not decode
    tunnel_depth_exceeded: int = 0  # tunnelled deeper than the tunnel depth: dropped, as Zeek
    esp: int = 0  # IPsec ESP packets (encrypted: opaque; also counted in non_tcp)
    tunnel_id_collisions: int = 0  # two tunnel stacks with one 64-bit identity (warned)
    # tunnel layers decoded, per encapsulation (a packet counts once per layer)
    vxlan: int = 0
    geneve: int = 0
    gre: int = 0  # GRE carrying IP or Ethernet (gretap, NVGRE, WCCP)
    erspan: int = 0  # types I, II, III
    ip_in_ip: int = 0  # 4in4, 6in4, 4in6, 6in6
    teredo: int = 0
    gtpu: int = 0
    mpls_udp: int = 0
    pptp: int = 0

    def add(self, other: DecodeStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
