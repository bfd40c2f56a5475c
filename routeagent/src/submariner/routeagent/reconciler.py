"""Apply the route agent's desired state through the Netlink, PacketFilter and IPSets seams.

Each step compares first and writes only differences, so a reconcile with nothing new makes no kernel call
(`FakeNetlink.calls`, `FakePacketFilter.transactions`, `FakeIPSets.calls` stay empty) and no iptables-restore.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from submariner.dataplane.netlink import Fdb, Netlink, Route, Rule
from submariner.dataplane.netlink import reconcile_routes as _reconcile_routes
from submariner.dataplane.packetfilter import PacketFilter
from submariner.dataplane.packetfilter.ipset import IPSets
from submariner.routeagent.config import Settings
from submariner.routeagent.model import (
    CABLE_VXLAN_IFACE,
    CABLE_VXLAN_TABLE,
    GATEWAY_RULE_PRIORITY,
    GATEWAY_TABLE,
    LOCAL_CIDRS_SET,
    MAIN_TABLE,
    PROBE_IP,
    REMOTE_CIDRS_SET,
    VX_IFACE,
    Desired,
    HostFacts,
    desired_state,
    endpoint_gateway_ip,
    node_internal_ip,
    select_endpoints,
    spec_of,
    uninstall_ruleset,
)
from submariner.routeagent.xfrm import Xfrm
from submariner.routeagent.xfrm import cleanup as xfrm_cleanup

log = logging.getLogger(__name__)

GATEWAY_RULE = Rule(GATEWAY_TABLE, GATEWAY_RULE_PRIORITY)
CABLE_VXLAN_RULE = Rule(CABLE_VXLAN_TABLE, CABLE_VXLAN_TABLE)


def _interface_holding(nl: Netlink, ip: str) -> str | None:
    for ifname, cidr in nl.addresses():
        if cidr.split("/", 1)[0] == ip:
            return ifname
    return None


def next_hop(nl: Netlink, ip: str) -> str | None:
    """The `via` of the most specific main-table route to ip (not one of ours), None if directly reachable."""
    addr = ipaddress.ip_address(ip)
    best: Route | None = None
    for route in nl.routes(MAIN_TABLE):
        net = ipaddress.ip_network(route.dst)
        if addr in net and route.oif != VX_IFACE and (
                best is None or net.prefixlen > ipaddress.ip_network(best.dst).prefixlen):
            best = route
    return best.gateway if best is not None else None


def host_facts(nl: Netlink, settings: Settings, node: Mapping[str, Any] | None,
               gateway_ip: str | None, remote_gateway_ips: Iterable[str] = ()) -> HostFacts:
    """The node's uplink, its address and MTU, and the CNI interface.

    The reference uses "the default-route interface" (the one the kernel picks for 8.8.8.8). Lab node
    namespaces have NO default route (a safety rule of the lab), so when there is none we fall back to the
    interface holding the Node's InternalIP (from the Node object), and then to the interface the kernel picks
    towards the active gateway's private_ip. On a real node all three agree.
    """
    ifname: str | None = None
    ip: str | None = None
    found = nl.route_source(PROBE_IP)
    if found is not None:
        ifname, ip = found
    internal = node_internal_ip(node) if node is not None else None
    if ifname is None and internal is not None:
        ifname = _interface_holding(nl, internal)
        ip = internal if ifname is not None else None
    if ifname is None and gateway_ip:
        found = nl.route_source(gateway_ip)
        if found is not None and found[0] != "lo":
            ifname, ip = found
    if ifname is not None and ip is None:
        first = nl.addresses(ifname)
        ip = first[0][1].split("/", 1)[0] if first else None
    cni_ifname = cni_ip = None
    nets = [ipaddress.ip_network(c, strict=False) for c in settings.cluster_cidrs]
    for name, cidr in nl.addresses():
        addr = ipaddress.ip_address(cidr.split("/", 1)[0])
        if any(addr in n for n in nets):
            cni_ifname, cni_ip = name, str(addr)
            break
    return HostFacts(ifname=ifname, ip=ip, mtu=nl.link_mtu(ifname) if ifname else None, cni_ifname=cni_ifname,
                     cni_ip=cni_ip, links=frozenset(nl.link_names()),
                     nexthops={r: next_hop(nl, r) for r in remote_gateway_ips})


class ReconcileError(RuntimeError):
    """Some steps of a reconcile failed; the message lists each step and its error."""


def _owned_main(route: Route) -> bool:
    return route.oif == VX_IFACE and route.proto_static


@dataclass
class Reconciler:
    """One node's route agent state machine: `reconcile(endpoints, nodes)` is idempotent."""

    settings: Settings
    nl: Netlink
    pf: PacketFilter
    ipsets: IPSets
    xfrm: Xfrm | None = None
    was_gateway: bool = False
    last: Desired | None = None
    changes: int = 0  # kernel-changing steps of the last reconcile (0 = nothing to do)

    def desired(self, endpoints: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]]) -> Desired:
        endpoints, nodes = list(endpoints), list(nodes)
        local, remotes = select_endpoints(endpoints, self.settings.cluster_id)
        me = next((n for n in nodes if (n.get("metadata") or {}).get("name") == self.settings.node_name), None)
        gateway_ip = str(spec_of(local).get("private_ip") or "") if local is not None else None
        on_gateway = local is not None and spec_of(local).get("hostname") == self.settings.node_name
        remote_ips = [ip for ep in remotes if (ip := endpoint_gateway_ip(ep))] if on_gateway else []
        facts = host_facts(self.nl, self.settings, me, gateway_ip, remote_ips)
        return desired_state(self.settings, endpoints, nodes, facts)

    def reconcile(self, endpoints: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]]) -> Desired:
        """Apply every step; a failing step does not stop the others (routes still follow when iptables
        fails); the failures are raised together at the end so the caller retries."""
        want = self.desired(endpoints, nodes)
        self.changes = 0
        if want.skipped and (self.last is None or self.last.skipped != want.skipped):
            log.warning("remote subnets %s overlap local cluster/service CIDRs %s; not routed", want.skipped,
                        [*self.settings.cluster_cidrs, *self.settings.service_cidrs])
        errors: list[str] = []

        def step(name: str, fn: Callable[[], None]) -> None:
            try:
                fn()
            except Exception as e:
                log.debug("step %s failed", name, exc_info=True)
                errors.append(f"{name}: {e}")

        step("ipsets", lambda: self._ipsets(want))
        step("iptables", lambda: self._rules(want))
        step("vx-submariner", lambda: self._device(want))
        step("sysctls", lambda: self._sysctls(want))
        step("fdb", lambda: self._fdb(want))
        step("routes", lambda: self._main_routes(want))
        step(f"table {GATEWAY_TABLE}", lambda: self._gateway_table(want))
        if self.was_gateway and not want.on_gateway:
            step("cable clean-up", self._cable_cleanup)
        self.was_gateway = want.on_gateway
        self.last = want
        if errors:
            raise ReconcileError("; ".join(errors))
        return want

    def _rules(self, want: Desired) -> None:
        if self.pf.apply(want.ruleset):
            self.changes += 1

    def _main_routes(self, want: Desired) -> None:
        self.changes += _reconcile_routes(self.nl, want.main_routes, MAIN_TABLE, _owned_main)

    # -- steps -------------------------------------------------------------------------------------------
    def _ipsets(self, want: Desired) -> None:
        for name, members in want.ipsets.items():
            if name not in self.ipsets.names(name):
                self.ipsets.ensure(name)
                self.changes += 1
            if self.ipsets.set_members(name, members):
                self.changes += 1

    def _device(self, want: Desired) -> None:
        if want.vxlan is None:
            if self.nl.link_index(VX_IFACE) is not None:
                self.nl.delete_link(VX_IFACE)
                self.changes += 1
            return
        if self.nl.ensure_vxlan(want.vxlan):
            self.changes += 1
        if want.vxlan_address and self.nl.ensure_address(VX_IFACE, want.vxlan_address):
            self.changes += 1

    def _sysctls(self, want: Desired) -> None:
        for key, value in want.sysctls.items():
            if self.nl.get_sysctl(key) != value:
                self.nl.set_sysctl(key, value)
                self.changes += 1

    def _fdb(self, want: Desired) -> None:
        if want.fdb is None or want.vxlan is None:
            return
        current = set(self.nl.fdb(VX_IFACE))
        wanted = set(want.fdb)
        for entry in sorted(current - wanted, key=lambda f: f.dst):
            if entry.mac == Fdb(VX_IFACE, entry.dst).mac:  # leave learned unicast entries to the kernel
                self.changes += self.nl.delete_fdb(entry)
        for entry in sorted(wanted - current, key=lambda f: f.dst):
            self.changes += self.nl.ensure_fdb(entry)

    def _gateway_table(self, want: Desired) -> None:
        if want.gateway_routes is not None:
            if self.nl.ensure_rule(GATEWAY_RULE):
                self.changes += 1
            self.changes += _reconcile_routes(self.nl, want.gateway_routes, GATEWAY_TABLE, lambda r: True)
            return
        self.changes += self.nl.flush_table(GATEWAY_TABLE)
        if GATEWAY_RULE in self.nl.rules():
            self.nl.delete_rule(GATEWAY_RULE)
            self.changes += 1

    def _cable_cleanup(self) -> None:
        """TransitionToNonGateway: the vxlan cable driver's leftovers (§2.7) and the libreswan driver's XFRM
        policies (§2.5) go when this node stops being the gateway (the gateway pod here is passive or gone and
        will not clean them)."""
        log.info("node %s is no longer the gateway: removing %s, table %d and its rule", self.settings.node_name,
                 CABLE_VXLAN_IFACE, CABLE_VXLAN_TABLE)
        self.changes += self.nl.flush_table(CABLE_VXLAN_TABLE)
        if self.nl.delete_rule(CABLE_VXLAN_RULE):
            self.changes += 1
        if self.nl.delete_link(CABLE_VXLAN_IFACE):
            self.changes += 1
        if self.xfrm is not None:
            self.changes += xfrm_cleanup(self.xfrm)

    def uninstall(self) -> None:
        """SUBMARINER_UNINSTALL: remove everything the route agent creates (§3.3, §3.4, §3.5 uninstall).

        Unlike the reference, SUBMARINER-FORWARD goes too (the reference leaves it behind)."""
        self.pf.delete(uninstall_ruleset())
        for name in (LOCAL_CIDRS_SET, REMOTE_CIDRS_SET):
            self.ipsets.destroy(name)
        self.nl.flush_table(GATEWAY_TABLE)
        self.nl.delete_rule(GATEWAY_RULE)
        self.nl.delete_link(VX_IFACE)  # its main-table routes and FDB entries go with it
