"""Endpoints + Nodes + host facts → the kernel state this node should have (dataplane.md §3.2-§3.5).

Pure functions, no I/O: `desired_state` is the whole route agent's decision, so tests can check worker vs
gateway, gateway changes, removals and overlaps without a kernel, and the reconciler only diffs and applies.

The reference's handler events map onto this as levels: LocalEndpointCreated/Removed = a local Endpoint
appears/disappears; TransitionToGateway/NonGateway = its hostname becomes/stops being this node;
RemoteEndpointCreated/Removed = the remote set changes. Whatever happened in between, the desired state
depends only on what exists now.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from submariner.broker.api.labels import TCP_CLAMP_MSS
from submariner.broker.api.submariner import BACKEND_VXLAN, INTERFACE_NAME_CONFIG
from submariner.dataplane.netlink import Fdb, Route, Vxlan
from submariner.dataplane.packetfilter import Hook, Ruleset, RuleSpec
from submariner.routeagent.config import Settings

log = logging.getLogger(__name__)

VX_IFACE = "vx-submariner"
VX_VNI = 100
VX_PORT = 4800
VX_OVERHEAD = 50
VX_PREFIX = 240
GATEWAY_TABLE = 150
GATEWAY_RULE_PRIORITY = 150
MAIN_TABLE = 254
CABLE_VXLAN_IFACE = "vxlan-tunnel"  # the gateway's vxlan cable driver (§2.7): cleaned when we stop being gateway
CABLE_VXLAN_TABLE = 100
PROBE_IP = "8.8.8.8"

INPUT_CHAIN = "SUBMARINER-INPUT"
FORWARD_CHAIN = "SUBMARINER-FORWARD"
POSTROUTING_CHAIN = "SUBMARINER-POSTROUTING"
LOCAL_CIDRS_SET = "SUBMARINER-LOCALCIDRS"
REMOTE_CIDRS_SET = "SUBMARINER-REMOTECIDRS"
IPSEC_WIREGUARD_MSS_OVERHEAD = 120

Obj = dict[str, Any]


@dataclass(frozen=True)
class HostFacts:
    """What this node's kernel says, read before every reconcile.

    `ifname`/`ip` stand for the reference's "default-route interface" and its first IPv4. Lab node namespaces
    have no default route, so the reconciler falls back to the interface holding the Node's InternalIP, then
    to the interface the kernel picks towards the gateway's private_ip (see `reconciler.host_facts`).
    """

    ifname: str | None = None
    ip: str | None = None
    mtu: int | None = None
    cni_ifname: str | None = None
    cni_ip: str | None = None
    links: frozenset[str] = frozenset()
    nexthops: Mapping[str, str | None] = field(default_factory=dict)  # remote gateway IP → main-table next hop


@dataclass
class Desired:
    """Everything the route agent owns on one node."""

    on_gateway: bool
    vxlan: Vxlan | None                     # None: no vx-submariner device
    vxlan_address: str | None               # "240.b.c.d/8"
    fdb: list[Fdb] | None                   # gateway: exact FDB of vx-submariner; None: not managed (worker)
    main_routes: list[Route]                # vx-submariner routes in main (workers)
    gateway_routes: list[Route] | None      # table 150 (gateway); None: table flushed and rule removed
    ruleset: Ruleset
    ipsets: dict[str, list[str]]
    sysctls: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # remote subnets refused (overlap), for logs/status


# -- Endpoints -----------------------------------------------------------------------------------------
def spec_of(endpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    return endpoint.get("spec") or {}


def _created(endpoint: Mapping[str, Any]) -> tuple[str, str]:
    meta = endpoint.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


def select_endpoints(endpoints: Iterable[Mapping[str, Any]], cluster_id: str
                     ) -> tuple[Mapping[str, Any] | None, list[Mapping[str, Any]]]:
    """(local Endpoint, remote Endpoints): per cluster only the newest (creationTimestamp, then name)."""
    newest: dict[str, Mapping[str, Any]] = {}
    for ep in endpoints:
        cid = str(spec_of(ep).get("cluster_id") or "")
        if not cid:
            continue
        if cid not in newest or _created(ep) > _created(newest[cid]):
            newest[cid] = ep
    local = newest.pop(cluster_id, None)
    return local, [newest[c] for c in sorted(newest)]


def vtep_ip(ip: str) -> str:
    """240.<octets 2-4 of ip>: the vx-submariner address that stands for a node."""
    octets = ipaddress.IPv4Address(ip).packed
    return str(ipaddress.IPv4Address(bytes([VX_PREFIX, *octets[1:]])))


def node_internal_ip(node: Mapping[str, Any]) -> str | None:
    for address in (node.get("status") or {}).get("addresses") or ():
        if address.get("type") == "InternalIP" and ":" not in str(address.get("address") or ":"):
            return str(address["address"])
    return None


def _nets(cidrs: Iterable[str]) -> list[ipaddress.IPv4Network]:
    out = []
    for c in cidrs:
        try:
            net = ipaddress.ip_network(c, strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network):
            out.append(net)
    return out


def remote_subnets(settings: Settings, remotes: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(usable remote subnets in order, skipped ones): subnets overlapping a local cluster/service CIDR are
    skipped, as the reference does (they could not be routed without Globalnet)."""
    local = _nets([*settings.cluster_cidrs, *settings.service_cidrs])
    usable: list[str] = []
    skipped: list[str] = []
    for ep in remotes:
        for net in _nets(spec_of(ep).get("subnets") or ()):
            text = str(net)
            if any(net.overlaps(mine) for mine in local):
                if text not in skipped:
                    skipped.append(text)
            elif text not in usable:
                usable.append(text)
    return usable, skipped


# -- rules -----------------------------------------------------------------------------------------------
def mss_rules(value: int | None) -> list[RuleSpec]:
    """§3.5: clamp to PMTU (default) or force a value, both directions between local and remote CIDRs."""
    tail = ("-j", "TCPMSS", "--clamp-mss-to-pmtu") if value is None else ("-j", "TCPMSS", "--set-mss", str(value))
    syn = ("-p", "tcp", "-m", "tcp", "--tcp-flags", "SYN,RST", "SYN")
    return [
        RuleSpec((*syn, "-m", "set", "--match-set", LOCAL_CIDRS_SET, "src",
                  "-m", "set", "--match-set", REMOTE_CIDRS_SET, "dst", *tail)),
        RuleSpec((*syn, "-m", "set", "--match-set", REMOTE_CIDRS_SET, "src",
                  "-m", "set", "--match-set", LOCAL_CIDRS_SET, "dst", *tail)),
    ]


def ruleset(settings: Settings, subnets: Sequence[str], cni_ip: str | None, mss: int | None) -> Ruleset:
    """§3.3 (kube-proxy handler) and §3.5 (MTU handler) chains with their hooks."""
    post: list[RuleSpec] = []
    if cni_ip:
        post.append(RuleSpec(("-s", f"{VX_PREFIX}.0.0.0/8", "-o", VX_IFACE, "-j", "SNAT", "--to-source", cni_ip)))
    for subnet in subnets:
        for mine in settings.cluster_cidrs:
            post.append(RuleSpec(("-s", mine, "-d", subnet, "-j", "ACCEPT")))
            post.append(RuleSpec(("-s", subnet, "-d", mine, "-j", "ACCEPT")))
    return Ruleset(
        chains={
            ("filter", INPUT_CHAIN): [RuleSpec(("-p", "udp", "-m", "udp", "--dport", str(VX_PORT), "-j", "ACCEPT"))],
            ("filter", FORWARD_CHAIN): [RuleSpec(("-o", VX_IFACE, "-j", "ACCEPT"))],
            ("nat", POSTROUTING_CHAIN): post,
            ("mangle", POSTROUTING_CHAIN): mss_rules(mss),
        },
        hooks=[
            Hook("filter", "INPUT", INPUT_CHAIN, "append", ("-p", "udp", "-m", "udp")),
            Hook("filter", "FORWARD", FORWARD_CHAIN, "first"),
            Hook("nat", "POSTROUTING", POSTROUTING_CHAIN, "first"),
            Hook("mangle", "POSTROUTING", POSTROUTING_CHAIN, "first"),
        ],
    )


def uninstall_ruleset() -> Ruleset:
    """Every chain and hook the route agent creates (contents do not matter for delete)."""
    return ruleset(Settings(cluster_id="-", node_name="-"), (), None, None)


def forced_mss(settings: Settings, local: Mapping[str, Any] | None, node: Mapping[str, Any] | None,
               facts: HostFacts) -> int | None:
    """§3.5: a forced MSS once a local Endpoint exists, from the node annotation or (Globalnet) the MTU."""
    if local is None:
        return None
    annotations = ((node or {}).get("metadata") or {}).get("annotations") or {}
    raw = str(annotations.get(TCP_CLAMP_MSS) or "").strip()
    if raw:
        try:
            value = int(raw)
            if value > 0:
                return value
        except ValueError:
            pass
        log.warning("node annotation %s=%r is not a positive integer; ignored", TCP_CLAMP_MSS, raw)
    if not settings.globalnet or facts.mtu is None:
        return None
    overhead = VX_OVERHEAD if spec_of(local).get("backend") == BACKEND_VXLAN else IPSEC_WIREGUARD_MSS_OVERHEAD
    return facts.mtu - overhead


def endpoint_gateway_ip(endpoint: Mapping[str, Any]) -> str:
    """§1 helper: public_ip if non-empty, else private_ip."""
    spec = spec_of(endpoint)
    return str(spec.get("public_ip") or "") or str(spec.get("private_ip") or "")


def _gateway_route(subnet: str, oif: str, facts: HostFacts, remotes: Sequence[Mapping[str, Any]]) -> Route:
    """A table-150 route; `via <nexthop>` when the remote gateway's own IP lies inside the subnet (issue #1106:
    a scope-link route would otherwise swallow the tunnel's outer packets to that gateway)."""
    net = ipaddress.ip_network(subnet)
    for ep in remotes:
        ip = endpoint_gateway_ip(ep)
        if subnet in (spec_of(ep).get("subnets") or ()) and ip and ipaddress.ip_address(ip) in net:
            nexthop = facts.nexthops.get(ip)
            if nexthop:
                return Route(subnet, GATEWAY_TABLE, gateway=nexthop, oif=oif, src=facts.cni_ip, proto_static=True)
    return Route(subnet, GATEWAY_TABLE, oif=oif, src=facts.cni_ip, scope_link=True, proto_static=True)


# -- the whole decision ----------------------------------------------------------------------------------
def desired_state(settings: Settings, endpoints: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]],
                  facts: HostFacts) -> Desired:
    local, remotes = select_endpoints(endpoints, settings.cluster_id)
    nodes = list(nodes)
    me = next((n for n in nodes if (n.get("metadata") or {}).get("name") == settings.node_name), None)
    subnets, skipped = remote_subnets(settings, remotes)
    local_spec = spec_of(local) if local is not None else {}
    on_gateway = local is not None and local_spec.get("hostname") == settings.node_name
    gateway_ip = str(local_spec.get("private_ip") or "") or None

    vxlan: Vxlan | None = None
    address: str | None = None
    sysctls: dict[str, str] = {}
    if local is not None and facts.ip is not None:
        mtu = facts.mtu - VX_OVERHEAD if facts.mtu else None
        vxlan = Vxlan(VX_IFACE, VX_VNI, VX_PORT, remote=None if on_gateway else gateway_ip, mtu=mtu)
        address = f"{vtep_ip(facts.ip)}/8"
        sysctls[f"net.ipv4.conf.{VX_IFACE}.rp_filter"] = "2"
        sysctls[f"net.ipv4.conf.{VX_IFACE}.forwarding"] = "1"
    if facts.cni_ifname:
        sysctls[f"net.ipv4.conf.{facts.cni_ifname}.rp_filter"] = "2"

    fdb: list[Fdb] | None = None
    if vxlan is not None and on_gateway:
        own = {facts.ip}
        ips = sorted({ip for n in nodes if (ip := node_internal_ip(n)) and ip not in own})
        fdb = [Fdb(VX_IFACE, ip) for ip in ips]

    main: list[Route] = []
    if vxlan is not None and not on_gateway and gateway_ip:
        via = vtep_ip(gateway_ip)
        main = [Route(s, MAIN_TABLE, gateway=via, oif=VX_IFACE, proto_static=True) for s in subnets]

    gateway_routes: list[Route] | None = None
    if on_gateway:
        cable = str((local_spec.get("backend_config") or {}).get(INTERFACE_NAME_CONFIG) or "") or None
        oif = cable or facts.ifname
        gateway_routes = []
        if oif is not None and oif in facts.links:
            gateway_routes = [_gateway_route(s, oif, facts, remotes) for s in subnets]
        elif oif is not None:
            log.info("table %d waits for interface %s (not present yet)", GATEWAY_TABLE, oif)
        if settings.globalnet:
            sysctls["net.ipv4.tcp_mtu_probing"] = "2"
            sysctls["net.ipv4.tcp_base_mss"] = "1024"

    local_cidrs = [*(str(s) for s in local_spec.get("subnets") or ()), *settings.cluster_cidrs]
    ipsets = {LOCAL_CIDRS_SET: sorted(set(local_cidrs)), REMOTE_CIDRS_SET: sorted(set(subnets))}
    mss = forced_mss(settings, local, me, facts)
    return Desired(on_gateway=on_gateway, vxlan=vxlan, vxlan_address=address, fdb=fdb, main_routes=main,
                   gateway_routes=gateway_routes, ruleset=ruleset(settings, subnets, facts.cni_ip, mss),
                   ipsets=ipsets, sysctls=sysctls, skipped=skipped)
