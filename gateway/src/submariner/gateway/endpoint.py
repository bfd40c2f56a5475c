"""Building the local Endpoint (dataplane.md §2.2): addresses, backend_config, public IP, subnets.

Lab deviation, on purpose: lab node namespaces have no default route, so upstream's "source IP of a UDP
connect to 8.8.8.8" has no answer there. `private_ip` then falls back to the source the kernel picks toward
the broker's API host, then to the Node's InternalIP; the MTU comes from the interface holding `private_ip`
instead of the default-route interface. Public IP resolution never contacts outside services unless a
resolver is configured explicitly (node annotation or SUBMARINER_PUBLICIP): an empty `public_ip` is valid.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from submariner.broker.api import labels as L
from submariner.broker.api.names import cable_name, endpoint_name
from submariner.broker.api.submariner import (
    NATT_DISCOVERY_PORT_CONFIG,
    NODE_CONFIGURABLE_KEYS,
    PREFERRED_SERVER_CONFIG,
    PUBLIC_IP_CONFIG,
    UDP_PORT_CONFIG,
    USING_LOAD_BALANCER_CONFIG,
    EndpointSpec,
)
from submariner.dataplane.netlink import Netlink
from submariner.gateway.config import GatewayConfig

log = logging.getLogger(__name__)

PROBE_IP = "8.8.8.8"
"""Upstream's probe destination; only a routing lookup is done, nothing is sent."""


class EndpointError(RuntimeError):
    """The local Endpoint cannot be built (fatal for the gateway); the message says what to fix."""


def node_internal_ip(node: Mapping[str, Any] | None) -> str:
    for addr in ((node or {}).get("status") or {}).get("addresses") or []:
        if addr.get("type") == "InternalIP" and ":" not in str(addr.get("address", "")):
            return str(addr["address"])
    return ""


def host_ip(host: str) -> str:
    """An IPv4 for the broker API host (`host:port` or URL); "" if it cannot be resolved."""
    h = re.sub(r"^[a-z]+://", "", host.strip()).split("/", 1)[0]
    h = h.rsplit(":", 1)[0] if h.count(":") == 1 else h
    h = h.strip("[]")
    if not h:
        return ""
    try:
        return str(ipaddress.IPv4Address(h))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(h, None, socket.AF_INET)[0][4][0])
    except (OSError, IndexError):
        return ""


def discover_private_ip(nl: Netlink, *, broker_host: str = "", node: Mapping[str, Any] | None = None) -> str:
    """Upstream's 8.8.8.8 source; else the source toward the broker API host; else the Node's InternalIP."""
    found = nl.route_source(PROBE_IP)
    if found:
        return found[1]
    broker_ip = host_ip(broker_host) if broker_host else ""
    if broker_ip and not ipaddress.IPv4Address(broker_ip).is_loopback:
        found = nl.route_source(broker_ip)
        if found:
            return found[1]
    internal = node_internal_ip(node)
    if internal:
        return internal
    raise EndpointError("cannot determine the gateway's private IP: no route to 8.8.8.8 or the broker API host "
                        "and the Node has no InternalIP address")


def interface_of(nl: Netlink, ip: str) -> str | None:
    for ifname, cidr in nl.addresses():
        if cidr.split("/", 1)[0] == ip:
            return ifname
    return None


def interface_mtu(nl: Netlink, private_ip: str) -> int | None:
    """MTU of the default-route interface upstream; here of the interface holding private_ip (no default
    route in the lab, and it is the interface cables leave through)."""
    found = nl.route_source(PROBE_IP)
    ifname = found[0] if found else interface_of(nl, private_ip)
    return nl.link_mtu(ifname) if ifname else None


def cni_ip(nl: Netlink, cluster_cidrs: list[str]) -> str:
    """The first host IPv4 inside the local pod CIDR (the CNI interface's address)."""
    nets = [ipaddress.IPv4Network(c, strict=False) for c in cluster_cidrs]
    for _, cidr in nl.addresses():
        ip = ipaddress.IPv4Address(cidr.split("/", 1)[0])
        if any(ip in n for n in nets):
            return str(ip)
    return ""


def backend_config_from_node(node: Mapping[str, Any] | None, default_udp_port: int, default_natt_port: int
                             ) -> dict[str, str]:
    """`gateway.submariner.io/<key>` node labels, then annotations (annotations win); unknown keys are fatal."""
    meta = (node or {}).get("metadata") or {}
    cfg = {UDP_PORT_CONFIG: str(default_udp_port), NATT_DISCOVERY_PORT_CONFIG: str(default_natt_port)}
    for source in (meta.get("labels") or {}, meta.get("annotations") or {}):
        for key, value in source.items():
            if not key.startswith(L.GATEWAY_CONFIG_PREFIX):
                continue
            name = key[len(L.GATEWAY_CONFIG_PREFIX):]
            if name not in NODE_CONFIGURABLE_KEYS:
                raise EndpointError(f"node {meta.get('name')!r}: unknown gateway setting {key!r}; allowed: "
                                    + ", ".join(L.GATEWAY_CONFIG_PREFIX + k for k in NODE_CONFIGURABLE_KEYS))
            cfg[name] = str(value)
    return cfg


LoadBalancerLookup = Callable[[str], str]
"""Service name → its LoadBalancer ingress IP/hostname ("" while pending)."""


def resolve_public_ip(spec: str, *, air_gapped: bool = False, lb: LoadBalancerLookup | None = None,
                      http_get: Callable[[str], str] | None = None) -> str:
    """`method:param[,…]`, first success wins. Empty spec → "" (we never pick outside services ourselves)."""
    errors = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        method, _, param = part.partition(":")
        method = method.strip().lower()
        try:
            if method == "ipv4":
                return str(ipaddress.IPv4Address(param.strip()))
            if air_gapped:
                errors.append(f"{part}: only ipv4: is allowed in an air-gapped deployment")
                continue
            if method == "lb":
                if lb is None:
                    errors.append(f"{part}: no API access for LoadBalancer lookups")
                    continue
                value = lb(param.strip())
                if value:
                    return host_ip(value) or value
                errors.append(f"{part}: LoadBalancer has no ingress yet")
            elif method == "dns":
                ip = host_ip(param.strip())
                if ip:
                    return ip
                errors.append(f"{part}: does not resolve")
            elif method == "api":
                url = param.strip() if "://" in param else f"https://{param.strip()}"
                body = (http_get or _http_get)(url)
                m = re.search(r"\b(\d{1,3}(?:\.\d{1,3}){3})\b", body)
                if m:
                    return str(ipaddress.IPv4Address(m.group(1)))
                errors.append(f"{part}: no IPv4 address in the answer")
            else:
                errors.append(f"{part}: unknown method {method!r} (ipv4, lb, api, dns)")
        except (OSError, ValueError) as e:
            errors.append(f"{part}: {e}")
    if errors:
        raise EndpointError("cannot resolve the public IP: " + "; ".join(errors))
    return ""


def _http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        body: bytes = resp.read(65536)
        return body.decode(errors="replace")


def build_local_endpoint(
    cfg: GatewayConfig,
    nl: Netlink,
    *,
    node: Mapping[str, Any] | None,
    broker_host: str = "",
    lb: LoadBalancerLookup | None = None,
    health_check_ip: str | None = None,
) -> EndpointSpec:
    """The spec this gateway publishes; drivers add their keys afterwards (publicKey, interface-name)."""
    private_ip = discover_private_ip(nl, broker_host=broker_host, node=node)
    backend_config = backend_config_from_node(node, cfg.ipsec_natt_port, cfg.natt_discovery_port)
    public_spec = backend_config.get(PUBLIC_IP_CONFIG) or cfg.public_ip
    if public_spec.startswith("lb:"):
        backend_config[USING_LOAD_BALANCER_CONFIG] = "true"
    public_ip = resolve_public_ip(public_spec, air_gapped=cfg.air_gapped, lb=lb) if public_spec else ""
    if cfg.preferred_server and PREFERRED_SERVER_CONFIG not in backend_config:
        backend_config[PREFERRED_SERVER_CONFIG] = "true"
    subnets = list(cfg.global_cidrs) if cfg.global_cidrs else [*cfg.service_cidrs, *cfg.cluster_cidrs]
    spec: EndpointSpec = {
        "cluster_id": cfg.cluster_id,
        "cable_name": cable_name(cfg.cluster_id, private_ip),
        "hostname": cfg.hostname,
        "subnets": subnets,
        "private_ip": private_ip,
        "public_ip": public_ip,
        "nat_enabled": cfg.nat_enabled,
        "backend": cfg.cable_driver,
        "backend_config": backend_config,
    }
    if health_check_ip is None and not cfg.global_cidrs:
        health_check_ip = cni_ip(nl, cfg.cluster_cidrs)
        if not health_check_ip and cfg.health.enabled:
            raise EndpointError(
                f"no CNI interface: no local address inside the cluster CIDR {', '.join(cfg.cluster_cidrs)}; "
                "the health check needs one (set SUBMARINER_HEALTHCHECKENABLED=false to run without it)")
    if health_check_ip:
        spec["healthCheckIP"] = health_check_ip
    return spec


def endpoint_object(spec: EndpointSpec, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "submariner.io/v1", "kind": "Endpoint",
        "metadata": {"name": endpoint_name(spec["cluster_id"], spec["cable_name"]), "namespace": namespace},
        "spec": dict(spec),
    }
