"""The VXLAN cable driver (dataplane.md §2.7): unencrypted L2 tunnel `vxlan-tunnel`, routes in table 100.

One FDB-driven device (VNI 1000, dst port = udp-port) reaches every remote gateway: a remote's cable is an
all-zero FDB entry to its IP plus, per remote subnet, a table-100 route via the remote's 241.x VTEP address.
Every step reads the kernel first and writes only what differs, so reconnecting changes nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from submariner.broker.api.submariner import UDP_PORT_CONFIG, Connection, EndpointSpec
from submariner.dataplane.netlink import Fdb, Netlink, Route, Rule, Vxlan
from submariner.gateway.cable.driver import (
    CableDriver,
    DriverContext,
    DriverError,
    NATEndpointInfo,
    connection,
    register,
    register_leftovers,
)

log = logging.getLogger(__name__)

NAME = "vxlan"
DEVICE = "vxlan-tunnel"
VNI = 1000
TABLE = 100
PRIORITY = 100
METRIC = 100
VTEP_PREFIX = 241
MTU_OVERHEAD = 50


def vtep_ip(private_ip: str) -> str:
    """`241.<b>.<c>.<d>` from octets 2-4 of a gateway's private IP."""
    octets = str(ipaddress.IPv4Address(private_ip)).split(".")
    return ".".join([str(VTEP_PREFIX), *octets[1:]])


def udp_port(spec: EndpointSpec, default: int = 4500) -> int:
    try:
        return int((spec.get("backend_config") or {}).get(UDP_PORT_CONFIG, default))
    except ValueError:
        return default


class VxlanDriver:
    def __init__(self, ctx: DriverContext, netlink: Netlink, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.ctx = ctx
        self.nl = netlink
        self.sleep = sleep
        self._connections: dict[str, tuple[EndpointSpec, str]] = {}  # cable name -> (spec, use ip)

    def name(self) -> str:
        return NAME

    def init(self) -> None:
        local = self.ctx.local
        mtu = self.ctx.mtu - MTU_OVERHEAD if self.ctx.mtu else None
        self.nl.ensure_vxlan(Vxlan(DEVICE, VNI, udp_port(local), local=local["private_ip"], mtu=mtu))
        self.nl.ensure_link_up(DEVICE)
        self.nl.ensure_address(DEVICE, f"{vtep_ip(local['private_ip'])}/8")
        self._ensure_sysctl(f"net.ipv4.conf.{DEVICE}.rp_filter", "2", tries=10)
        self._ensure_sysctl(f"net.ipv4.conf.{DEVICE}.forwarding", "1", tries=1)
        self.nl.ensure_rule(Rule(TABLE, PRIORITY))
        if self.ctx.nat_enabled:
            log.warning("vxlan cable driver: NAT is enabled locally but vxlan does not traverse NAT")

    def _ensure_sysctl(self, key: str, value: str, *, tries: int) -> None:
        """Write only when different; re-check because some kernels ignore the first write (issue #2422)."""
        for _ in range(tries):
            if self.nl.get_sysctl(key) == value:
                return
            self.nl.set_sysctl(key, value)
            if self.nl.get_sysctl(key) == value:
                return
            self.sleep(0.1)
        if self.nl.get_sysctl(key) != value:
            raise DriverError(f"could not set {key}={value} on {DEVICE}")

    def _routes_for(self, spec: EndpointSpec) -> list[Route]:
        via = vtep_ip(spec["private_ip"])
        src = self.ctx.cni_ip or None
        return [Route(dst=str(ipaddress.IPv4Network(s, strict=False)), table=TABLE, gateway=via, oif=DEVICE,
                      src=src, metric=METRIC) for s in spec.get("subnets") or []]

    def connect_to_endpoint(self, info: NATEndpointInfo) -> str:
        spec = info.spec
        if spec["cluster_id"] == self.ctx.local["cluster_id"]:
            return info.use_ip
        ip = info.use_ip or spec["private_ip"]
        previous = self._connections.get(info.cable_name)
        self.nl.ensure_fdb(Fdb(DEVICE, ip))
        if previous is not None and previous[1] != ip and not self._ip_in_use(previous[1], info.cable_name):
            self.nl.delete_fdb(Fdb(DEVICE, previous[1]))  # NAT discovery changed its mind (public → private)
        existing = {r.normalised() for r in self.nl.routes(TABLE)}
        desired = self._routes_for(spec)
        for route in desired:
            if route not in existing:
                self.nl.replace_route(route)
        via = vtep_ip(spec["private_ip"])
        for route in existing:  # subnets this remote no longer has
            if route.gateway == via and route.oif == DEVICE and route not in desired:
                self.nl.delete_route(route)
        self._connections[info.cable_name] = (spec, ip)
        log.info("vxlan cable connected cable=%s ip=%s subnets=%s", info.cable_name, ip, spec.get("subnets"))
        return ip

    def _ip_in_use(self, ip: str, except_cable: str) -> bool:
        return any(use == ip for name, (_, use) in self._connections.items() if name != except_cable)

    def disconnect_from_endpoint(self, endpoint: dict[str, Any]) -> None:
        spec: EndpointSpec = endpoint["spec"]
        known = self._connections.pop(spec["cable_name"], None)
        ips = {spec["private_ip"], spec.get("public_ip") or ""} | ({known[1]} if known else set())
        for ip in sorted(i for i in ips if i):
            # only drop an FDB entry no other cable uses (two remotes never share an IP in practice)
            if not any(use == ip for _, use in self._connections.values()):
                self.nl.delete_fdb(Fdb(DEVICE, ip))
        for route in self._routes_for(spec):
            self.nl.delete_route(route)

    def get_active_connections(self) -> list[Connection]:
        return self.get_connections()

    def get_connections(self) -> list[Connection]:
        return [connection(spec, "connected", "", using_ip=ip) for spec, ip in self._connections.values()]

    def cleanup(self) -> None:
        remove_leftovers(self.nl)
        self._connections.clear()


def remove_leftovers(nl: Netlink) -> bool:
    """The device, table-100 routes and rule; True if any was there."""
    routes = nl.flush_table(TABLE)
    device = nl.delete_link(DEVICE)
    rule = nl.delete_rule(Rule(TABLE, PRIORITY))
    return bool(routes or device or rule)


def _factory(ctx: DriverContext) -> CableDriver:
    netlink = ctx.extra.get("netlink")
    if netlink is None:
        from submariner.dataplane.netlink import KernelNetlink

        netlink = KernelNetlink()
    return VxlanDriver(ctx, netlink)


register(NAME, _factory)
register_leftovers(NAME, remove_leftovers)
