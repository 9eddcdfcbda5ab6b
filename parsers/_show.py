"""Text rendering of decoded packets, one tcpdump-like line each (for `rstlens packets`).

Flags use tcpdump's letters: S=SYN F=FIN R=RST P=PSH U=URG E=ECE W=CWR N=NS and "."
for ACK, e.g. ``[S.]`` for SYN+ACK (`_flags.flags_text`, style "tcpdump").
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timezone

import numpy as np

from ._batch import (
    OPT_AO,
    OPT_MALFORMED,
    OPT_MD5,
    OPT_MSS,
    OPT_SACK,
    OPT_SACK_PERM,
    OPT_TIMESTAMP,
    RST,
    PacketBatch,
)
from ._flags import flags_text
from ._tunnels import REGISTRY


def address(version: int, hi: int, lo: int) -> str:
    """IPv4 dotted quad (from the mapped form) or IPv6 text."""
    if version == 4:
        return str(ipaddress.IPv4Address(lo & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def timestamp_text(ts_us: int) -> str:
    """ISO 8601 UTC with microseconds, e.g. ``2020-08-12T18:37:43.527343Z``."""
    sec, us = divmod(int(ts_us), 1_000_000)
    try:
        base = datetime.fromtimestamp(sec, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        base = f"@{sec}"
    return f"{base}.{us:06d}Z"


def options_text(batch: PacketBatch, i: int) -> str:
    bits = int(batch.tcp_opts[i])
    parts = []
    if batch.mss[i] or bits & OPT_MSS:
        parts.append(f"mss {int(batch.mss[i])}")
    if batch.wscale[i] >= 0:
        parts.append(f"wscale {int(batch.wscale[i])}")
    if bits & OPT_SACK_PERM:
        parts.append("sackOK")
    if bits & OPT_SACK:
        parts.append("sack")
    if bits & OPT_TIMESTAMP:
        parts.append(f"TS val {int(batch.ts_val[i])} ecr {int(batch.ts_ecr[i])}")
    if bits & OPT_MD5:
        parts.append("md5")
    if bits & OPT_AO:
        parts.append("tcp-ao")
    if bits & OPT_MALFORMED:
        parts.append("malformed")
    return ",".join(parts)


def format_rows(batch: PacketBatch) -> list[str]:
    """One line per row of `batch`."""
    out = []
    cols = {name: getattr(batch, name).tolist() for name in (
        "ts_us", "ip_version", "src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "flags",
        "seq", "ack", "window", "ttl", "ip_id", "df", "payload_len", "vlan", "inner_vlan", "tunnel",
        "outer_ttl",
    )}  # fmt: skip
    for i in range(len(batch)):
        v = cols["ip_version"][i]
        src = address(v, cols["src_hi"][i], cols["src_lo"][i])
        dst = address(v, cols["dst_hi"][i], cols["dst_lo"][i])
        if v == 6:
            src, dst = f"[{src}]", f"[{dst}]"
        line = (
            f"{timestamp_text(cols['ts_us'][i])} {src}:{cols['sport'][i]} > {dst}:{cols['dport'][i]}"
            f" [{flags_text(cols['flags'][i], 'tcpdump')}] seq {cols['seq'][i]} ack {cols['ack'][i]}"
            f" win {cols['window'][i]} ttl {cols['ttl'][i]}"
        )
        if v == 4:
            line += f" id {cols['ip_id'][i]}" + (" DF" if cols["df"][i] else "")
        line += f" len {cols['payload_len'][i]}"
        if cols["vlan"][i] >= 0:
            line += f" vlan {cols['vlan'][i]}"
            if cols["inner_vlan"][i] >= 0:
                line += f".{cols['inner_vlan'][i]}"
        opts = options_text(batch, i)
        if opts:
            line += f" opts [{opts}]"
        line += tunnel_text(cols["tunnel"][i], cols["outer_ttl"][i])
        out.append(line)
    return out


def tunnel_text(ident: int, outer_ttl: int) -> str:
    """` tunnel vxlan:42 [192.0.2.1-192.0.2.2] outer ttl 60`: the layers, outermost first
    (empty when untunnelled)."""
    if not ident:
        return ""
    named = REGISTRY.text(ident)
    stack, ends = named if named is not None else (f"#{ident:016x}", "?")
    return f" tunnel {stack} [{ends}] outer ttl {outer_ttl}"


def tunnel_rows(batch: PacketBatch, flow: dict[str, object]) -> np.ndarray:
    """Rows of `batch` in the tunnelled connection `flow` (a flows.parquet row): its
    addresses, ports and tunnel stack (what `explain`'s BPF selects for other connections)."""
    ports = {int(flow["orig_p"]), int(flow["resp_p"])}  # type: ignore[call-overload]
    hosts = {flow["orig_h"], flow["resp_h"]}
    keep: np.ndarray = np.isin(batch.sport, list(ports)) & np.isin(batch.dport, list(ports))
    keep &= batch.tunnel != 0
    for ident in np.unique(batch.tunnel[keep]).tolist():
        named = REGISTRY.text(ident)
        if named is None or named[0] != flow["tunnel"]:
            keep &= batch.tunnel != ident
    for i in np.flatnonzero(keep).tolist():
        v = int(batch.ip_version[i])
        src = address(v, int(batch.src_hi[i]), int(batch.src_lo[i]))
        dst = address(v, int(batch.dst_hi[i]), int(batch.dst_lo[i]))
        keep[i] = src in hosts and dst in hosts
    return keep


def rst_mask(batch: PacketBatch) -> np.ndarray:
    """Rows with the RST flag."""
    mask: np.ndarray = (batch.flags & RST) != 0
    return mask
