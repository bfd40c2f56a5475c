"""Globalnet and clusterset-IP CIDR allocation on the broker (subctl.md §7.4) — pure functions.

The broker ConfigMaps `submariner-globalnet-info` / `submariner-clustersetip-info` hold the range and every
cluster's block; join reads them, computes here, and writes back with compare-and-swap, so two clusters
joining at once never get the same block.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Network = ipaddress.IPv4Network

DEFAULT_GLOBALNET_RANGE = "242.0.0.0/8"
DEFAULT_GLOBALNET_CLUSTER_SIZE = 65536
DEFAULT_CLUSTERSET_IP_RANGE = "243.0.0.0/8"
DEFAULT_CLUSTERSET_IP_CLUSTER_SIZE = 4096


class CIDRError(ValueError):
    """A CIDR or size that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class Allocation:
    cluster_id: str
    cidrs: tuple[str, ...]


def parse_cidr(text: str, what: str = "CIDR") -> Network:
    """A strict IPv4 network (host bits must be zero), with a message naming `what`."""
    try:
        return ipaddress.IPv4Network(text.strip(), strict=True)
    except ValueError as e:
        raise CIDRError(f"invalid {what} {text!r}: {e}") from None


def validate_range(text: str, what: str = "Globalnet CIDR range") -> Network:
    """deploy-broker's check of a supernet: parses, and is not unspecified, loopback or link-local."""
    net = parse_cidr(text, what)
    base = net.network_address
    if base.is_unspecified or base.is_loopback or base.is_link_local:
        raise CIDRError(f"{what} {text} must not be an unspecified, loopback or link-local network")
    return net


def round_up_power_of_two(n: int) -> int:
    if n <= 1:
        return 1
    return 1 << (n - 1).bit_length()


def validate_cluster_size(size: int, supernet: Network, what: str = "Globalnet cluster size") -> int:
    """The size rounded up to a power of two; > 0 and at most half the range."""
    if size <= 0:
        raise CIDRError(f"{what} must be greater than 0, not {size}")
    rounded = round_up_power_of_two(size)
    if rounded > supernet.num_addresses // 2:
        raise CIDRError(
            f"{what} {size} (rounded up to {rounded}) is more than half of {supernet} ({supernet.num_addresses // 2})"
        )
    return rounded


def prefix_for_size(size: int) -> int:
    """prefix = 32 - ceil(log2 size)."""
    return 32 - math.ceil(math.log2(round_up_power_of_two(size)))


def allocate(supernet: Network, size: int, allocated: Sequence[Network]) -> Network:
    """The first free block of `size` addresses walking up from the range base (§7.4).

    A candidate conflicts with an allocation that contains the candidate's base or whose base the candidate
    contains; the walk then jumps past that allocation, to the next block boundary.
    """
    prefix = prefix_for_size(size)
    if prefix < supernet.prefixlen:
        raise CIDRError(f'no more allocations available in "{supernet}"')
    block = 1 << (32 - prefix)
    base = int(supernet.network_address)
    end = int(supernet.broadcast_address)
    while base + block - 1 <= end:
        candidate = Network((base, prefix))
        clash = next((a for a in allocated if candidate.network_address in a or a.network_address in candidate),
                     None)
        if clash is None:
            return candidate
        past = int(clash.broadcast_address) + 1
        base = max(base + block, -(-past // block) * block)
    raise CIDRError(f'no more allocations available in "{supernet}"')


def check_explicit(cidr: str, allocations: Sequence[Allocation], cluster_id: str, what: str = "CIDR") -> Network:
    """A user-given block must parse and not overlap another cluster's (§7.4)."""
    net = parse_cidr(cidr, what)
    for alloc in allocations:
        if alloc.cluster_id == cluster_id:
            continue
        for other in alloc.cidrs:
            try:
                other_net = ipaddress.IPv4Network(other, strict=False)
            except ValueError:
                continue
            if net.overlaps(other_net):
                raise CIDRError(f'invalid CIDR "{cidr}" overlaps with cluster "{alloc.cluster_id}"')
    return net


@dataclass(frozen=True)
class Decision:
    """What join does: the block and whether it came from an existing entry."""

    cidr: str
    reused: bool


def decide(
    *,
    cluster_id: str,
    supernet: Network,
    default_size: int,
    allocations: Sequence[Allocation],
    explicit_cidr: str = "",
    size: int = 0,
    what: str = "global CIDR",
) -> Decision:
    """Reuse this cluster's entry, else validate an explicit CIDR, else allocate by size (§7.4)."""
    if explicit_cidr and size:
        raise CIDRError("Only one of cluster size and global CIDR can be specified")
    for alloc in allocations:
        if alloc.cluster_id == cluster_id and alloc.cidrs and not explicit_cidr:
            return Decision(alloc.cidrs[0], True)
    if explicit_cidr:
        return Decision(str(check_explicit(explicit_cidr, allocations, cluster_id, what)), False)
    wanted = validate_cluster_size(size or default_size, supernet, f"{what} cluster size")
    taken = [ipaddress.IPv4Network(c, strict=False) for a in allocations if a.cluster_id != cluster_id
             for c in a.cidrs if _is_network(c)]
    return Decision(str(allocate(supernet, wanted, taken)), False)


def _is_network(text: str) -> bool:
    try:
        ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        return False
    return True


# --- the broker ConfigMaps ------------------------------------------------------------------------------


def parse_cluster_info(text: str | None) -> list[Allocation]:
    """`clusterinfo`: a JSON list of {"cluster_id", "global_cidr": [..]}; absent/empty → no entries."""
    if not text:
        return []
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise CIDRError(f"the broker's clusterinfo is not valid JSON: {e}") from None
    if not isinstance(doc, list):
        raise CIDRError("the broker's clusterinfo is not a JSON list")
    out = []
    for entry in doc:
        if not isinstance(entry, Mapping):
            continue
        cidrs = entry.get("global_cidr") or []
        out.append(Allocation(str(entry.get("cluster_id") or ""), tuple(str(c) for c in cidrs)))
    return out


def render_cluster_info(allocations: Sequence[Allocation]) -> str:
    """Tab-indented JSON, as the operator writes it."""
    doc: list[dict[str, Any]] = [{"cluster_id": a.cluster_id, "global_cidr": list(a.cidrs)} for a in allocations]
    return json.dumps(doc, indent="\t")


def with_allocation(allocations: Sequence[Allocation], cluster_id: str, cidr: str) -> list[Allocation]:
    """The list with this cluster's entry set (replaced in place, or appended)."""
    out = [a for a in allocations if a.cluster_id != cluster_id]
    index = next((i for i, a in enumerate(allocations) if a.cluster_id == cluster_id), len(out))
    out.insert(index, Allocation(cluster_id, (cidr,)))
    return out


def json_string(value: str) -> str:
    """ConfigMap values like `globalnetCidrRange` are JSON strings (`"\\"242.0.0.0/8\\""`)."""
    return json.dumps(value)


def unjson_string(value: str | None, default: str) -> str:
    if not value:
        return default
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, str) else default
