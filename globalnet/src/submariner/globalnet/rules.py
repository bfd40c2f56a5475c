"""Desired Globalnet state → the nat chains that implement it (dataplane.md §4.4), as pure functions.

Why pure: the controllers only edit a `GlobalnetState`; one function renders every chain from it and the
packet-filter seam applies the whole `Ruleset` in one atomic iptables-restore. Rules come out in a fixed
order (sorted by address), so an unchanged state renders identical chains and a re-apply is a no-op.
Argument order follows upstream's renderer: proto, -s, -d, mark match, set match, -j, NAT target.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from submariner.dataplane.packetfilter import Hook, Ruleset, RuleSpec
from submariner.globalnet.ipam import snat_target

NAT = "nat"
MARK = "0xC0000/0xC0000"
"""The mark SUBMARINER-GN-MARK sets on traffic to remote clusters; only marked traffic is SNATed."""

INGRESS = "SUBMARINER-GN-INGRESS"
EGRESS = "SUBMARINER-GN-EGRESS"
MARK_CHAIN = "SUBMARINER-GN-MARK"
EGRESS_PODS = "SM-GN-EGRESS-PODS"
EGRESS_HDLS_PODS = "SM-GN-EGRESS-HDLS-PODS"
EGRESS_HDLS_EPS = "SM-GN-EGRESS-HDLS-EPS"
EGRESS_NS = "SM-GN-EGRESS-NS"
EGRESS_CLUSTER = "SM-GN-EGRESS-CLUSTER"
POSTROUTING = "SUBMARINER-POSTROUTING"
"""Shared with the route agent, which owns its other rules; Globalnet only keeps its jump at position 1."""

EGRESS_ORDER = (MARK_CHAIN, EGRESS_PODS, EGRESS_HDLS_PODS, EGRESS_HDLS_EPS, EGRESS_NS, EGRESS_CLUSTER)
"""SUBMARINER-GN-EGRESS positions 1-6: mark first, then precedence pod selector > headless > namespace >
cluster (the first SNAT that matches wins)."""
ALL_CHAINS = (INGRESS, EGRESS, *EGRESS_ORDER)

HOOKS = (
    Hook(NAT, "PREROUTING", INGRESS, "first"),
    Hook(NAT, "POSTROUTING", POSTROUTING, "first"),
    Hook(NAT, POSTROUTING, EGRESS, "first"),
)


@dataclass(frozen=True)
class HealthIngress:
    """The gateway health-check global IP and the CNI IP pings to it are DNATed to."""

    global_ip: str
    cni_ip: str


@dataclass
class GlobalnetState:
    """Everything the leader's rules depend on; controllers edit it, `ruleset` renders it."""

    local_cidrs: tuple[str, ...] = ()
    """Cluster and service CIDRs: one cluster-egress SNAT rule each."""
    cluster_egress: tuple[str, ...] = ()
    """ClusterGlobalEgressIP's allocated block."""
    pod_egress: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """ipset name → IPs, for GlobalEgressIPs with a podSelector."""
    namespace_egress: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """ipset name → IPs, for GlobalEgressIPs without one."""
    headless_pods: dict[str, tuple[str, str]] = field(default_factory=dict)
    """GlobalIngressIP key → (pod IP, global IP)."""
    headless_endpoints: dict[str, tuple[str, str]] = field(default_factory=dict)
    """GlobalIngressIP key → (endpoint IP, global IP)."""
    health: HealthIngress | None = None
    remote_subnets: tuple[str, ...] = ()


def _ip_key(ip: str) -> int:
    """Sort key of an address (or the first of a range); inet_aton: sorting 20,000 of them is on every apply."""
    return int.from_bytes(socket.inet_aton(ip.split("/")[0].split("-")[0]), "big")


def _net_key(cidr: str) -> tuple[int, int]:
    net = ipaddress.IPv4Network(cidr, strict=False)
    return int(net.network_address), net.prefixlen


# ------------------------------------------------------------------------------------- rule shapes


def mark_rule(remote_subnet: str) -> RuleSpec:
    return RuleSpec(("-d", remote_subnet, "-j", "MARK", "--set-mark", MARK))


def cluster_egress_rule(local_cidr: str, ips: list[str]) -> RuleSpec:
    return RuleSpec(("-p", "all", "-s", local_cidr, "-m", "mark", "--mark", MARK,
                     "-j", "SNAT", "--to-source", snat_target(ips)))


def set_egress_rule(ipset: str, ips: list[str]) -> RuleSpec:
    return RuleSpec(("-p", "all", "-m", "mark", "--mark", MARK, "-m", "set", "--match-set", ipset, "src",
                     "-j", "SNAT", "--to-source", snat_target(ips)))


def headless_egress_rule(pod_ip: str, global_ip: str) -> RuleSpec:
    return RuleSpec(("-p", "all", "-s", pod_ip, "-m", "mark", "--mark", MARK,
                     "-j", "SNAT", "--to-source", global_ip))


def headless_ingress_rule(global_ip: str, pod_ip: str) -> RuleSpec:
    return RuleSpec(("-d", global_ip, "-j", "DNAT", "--to-destination", pod_ip))


def health_ingress_rule(health: HealthIngress) -> RuleSpec:
    return RuleSpec(("-p", "icmp", "-d", health.global_ip, "-j", "DNAT", "--to-destination", health.cni_ip))


# ------------------------------------------------------------------------------------- chains


def mark_rules(remote_subnets: Iterable[str], global_cidrs: Collection[str] = ()) -> list[RuleSpec]:
    """One MARK per remote subnet; remotes overlapping our GlobalCIDR are ignored (§4.2)."""
    ours = [ipaddress.IPv4Network(c, strict=False) for c in global_cidrs]
    subnets = {str(ipaddress.IPv4Network(s, strict=False)) for s in remote_subnets}
    keep = [s for s in subnets if not any(ipaddress.IPv4Network(s).overlaps(o) for o in ours)]
    return [mark_rule(s) for s in sorted(keep, key=_net_key)]


def _set_rules(sets: Mapping[str, tuple[str, ...]]) -> list[RuleSpec]:
    return [set_egress_rule(name, list(ips)) for name, ips in sorted(sets.items(), key=lambda kv: _ip_key(kv[1][0]))
            if ips]


def _pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(backend IP, global IP) pairs, deduplicated, by global IP."""
    return sorted(set(pairs), key=lambda p: (_ip_key(p[1]), _ip_key(p[0])))


def ruleset(state: GlobalnetState, global_cidrs: Collection[str] = ()) -> Ruleset:
    """The leader's complete Globalnet ruleset: all eight chains and the three hooks."""
    pods = _pairs(state.headless_pods.values())
    eps = _pairs(state.headless_endpoints.values())
    ingress: list[RuleSpec] = []
    if state.health is not None:
        ingress.append(health_ingress_rule(state.health))
    ingress.extend(headless_ingress_rule(gip, ip) for ip, gip in pods)
    ingress.extend(headless_ingress_rule(gip, ip) for ip, gip in eps)
    cluster = list(state.cluster_egress)
    chains: dict[tuple[str, str], list[RuleSpec]] = {
        (NAT, INGRESS): ingress,
        (NAT, EGRESS): [RuleSpec(("-j", chain)) for chain in EGRESS_ORDER],
        (NAT, MARK_CHAIN): mark_rules(state.remote_subnets, global_cidrs),
        (NAT, EGRESS_PODS): _set_rules(state.pod_egress),
        (NAT, EGRESS_HDLS_PODS): [headless_egress_rule(ip, gip) for ip, gip in pods],
        (NAT, EGRESS_HDLS_EPS): [headless_egress_rule(ip, gip) for ip, gip in eps],
        (NAT, EGRESS_NS): _set_rules(state.namespace_egress),
        (NAT, EGRESS_CLUSTER): [cluster_egress_rule(c, cluster) for c in state.local_cidrs] if cluster else [],
    }
    return Ruleset(chains=chains, hooks=list(HOOKS))


def mark_only_ruleset(remote_subnets: Iterable[str], global_cidrs: Collection[str] = ()) -> Ruleset:
    """What every Globalnet pod keeps: the MARK chain (filled on the gateway, empty elsewhere)."""
    return Ruleset(chains={(NAT, MARK_CHAIN): mark_rules(remote_subnets, global_cidrs)})


def flushed_ruleset(remote_subnets: Iterable[str] = (), global_cidrs: Collection[str] = ()) -> Ruleset:
    """Leaving the gateway role: INGRESS and EGRESS emptied, MARK as for any pod. The SM-GN-EGRESS-* chains
    are emptied too: the seam keeps jumps into chains a ruleset does not own (other components' hooks), so
    EGRESS can only be flushed while its six targets are ours as well."""
    chains: dict[tuple[str, str], list[RuleSpec]] = {(NAT, chain): [] for chain in ALL_CHAINS}
    chains[(NAT, MARK_CHAIN)] = mark_rules(remote_subnets, global_cidrs)
    return Ruleset(chains=chains)


def uninstall_ruleset() -> Ruleset:
    """Every Globalnet chain and hook, for `PacketFilter.delete` (§4.7). The shared SUBMARINER-POSTROUTING
    itself belongs to the route agent and is left to it; only our jump in it goes."""
    return Ruleset(chains={(NAT, chain): [] for chain in ALL_CHAINS},
                   hooks=[h for h in HOOKS if h.target != POSTROUTING])
