"""Tunnel stacks: the decode kernel's per-row layer descriptions, named once per identity.

A tunnelled packet's row carries `tunnel`, a 64-bit identity hashed from its layers (type,
id, outer addresses in canonical order, VLAN ids of a carried Ethernet frame); the flow
table keys connections by it (see README, "How connections are rebuilt").  The registry
maps each identity seen to the stack's text, the records' `tunnel` and `tunnel_endpoints`
columns.  Two different stacks with one identity (a 64-bit collision, ~n^2 / 2^65 for n
stacks) would share connections: the registry keeps every stack it named, compares, and
counts such a collision in `DecodeStats.tunnel_id_collisions` (and the run warns).

The registry is process-wide: an identity always names the same stack, whichever run or
input saw it, and a run meets few distinct stacks (tunnel endpoints, not connections).
"""

from __future__ import annotations

import ipaddress

import numpy as np

from ._batch import (
    TL_A_HI,
    TL_A_LO,
    TL_B_HI,
    TL_B_LO,
    TL_ID,
    TL_TYPE,
    TL_VLANS,
    TUNNEL_LAYER_WIDTH,
    TUNNEL_MAX_LAYERS,
    TUNNEL_NAMES,
)

Layer = tuple[int, int, int, int, int, int, int]  # TL_* fields


def address(hi: int, lo: int) -> str:
    """A 128-bit address as text; IPv4-mapped ones as IPv4."""
    if hi == 0 and lo >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def layer_text(layer: Layer) -> str:
    """`vxlan:42`, `teredo`, `gretap:7,vlan=100`: the layer's type, id and carried VLANs."""
    kind, tid, vlans = layer[TL_TYPE], layer[TL_ID], layer[TL_VLANS]
    text = TUNNEL_NAMES.get(kind, f"type{kind}")
    if tid >= 0:
        text += f":{tid}"
    outer, inner = (vlans >> 16) - 1, (vlans & 0xFFFF) - 1
    if outer >= 0:
        text += f",vlan={outer}"
    if inner >= 0:
        text += f",inner_vlan={inner}"
    return text


def endpoints_text(layer: Layer) -> str:
    """The layer's outer addresses, lower first (the order both directions share)."""
    a = address(layer[TL_A_HI] & 0xFFFF_FFFF_FFFF_FFFF, layer[TL_A_LO] & 0xFFFF_FFFF_FFFF_FFFF)
    b = address(layer[TL_B_HI] & 0xFFFF_FFFF_FFFF_FFFF, layer[TL_B_LO] & 0xFFFF_FFFF_FFFF_FFFF)
    return f"{a}-{b}"


def layers_of(row: np.ndarray) -> list[Layer]:
    """The layers in one row of the kernel's side array, outermost first."""
    out: list[Layer] = []
    for k in range(TUNNEL_MAX_LAYERS):
        fields = row[k * TUNNEL_LAYER_WIDTH : (k + 1) * TUNNEL_LAYER_WIDTH].tolist()
        if fields[TL_TYPE] == 0:
            break
        out.append(tuple(fields))
    return out


class TunnelRegistry:
    """identity -> (layer row, stack text, endpoints text)."""

    def __init__(self) -> None:
        self._stacks: dict[int, tuple[np.ndarray, str, str]] = {}

    def register(self, ids: np.ndarray, side: np.ndarray) -> int:
        """Name the identities of rows with `ids != 0` (`side`: the kernel's layer rows, zero
        past the last layer).  Returns how many rows carry an identity already naming another
        stack (a collision: compared whole, in numpy, not per row in Python)."""
        tunnelled = np.flatnonzero(ids)
        if tunnelled.shape[0] == 0:
            return 0
        uniq, first, inverse = np.unique(ids[tunnelled], return_index=True, return_inverse=True)
        reps = np.empty((uniq.shape[0], side.shape[1]), np.int64)
        for k, (ident, row) in enumerate(zip(uniq.tolist(), tunnelled[first].tolist(), strict=True)):
            known = self._stacks.get(ident)
            if known is None:
                layers = tuple(layers_of(side[row]))
                self._stacks[ident] = (
                    side[row].copy(),
                    "/".join(layer_text(x) for x in layers),
                    "/".join(endpoints_text(x) for x in layers),
                )
                known = self._stacks[ident]
            reps[k] = known[0]
        return int((side[tunnelled] != reps[inverse]).any(axis=1).sum())

    def text(self, ident: int) -> tuple[str, str] | None:
        """(stack, endpoints) of an identity, None for 0 or one never seen."""
        known = self._stacks.get(ident)
        return None if known is None else (known[1], known[2])


REGISTRY = TunnelRegistry()


def describe(ids: np.ndarray) -> tuple[list[str | None], list[str | None]]:
    """The `tunnel` and `tunnel_endpoints` texts of identities (None where untunnelled)."""
    stacks: list[str | None] = []
    ends: list[str | None] = []
    for ident in np.asarray(ids, np.uint64).tolist():
        t = REGISTRY.text(ident) if ident else None
        stacks.append(None if t is None else t[0])
        ends.append(None if t is None else t[1])
    return stacks, ends
