"""Environment parsing and the local Endpoint (§2.1, §2.2), including the no-default-route fallbacks."""

from __future__ import annotations

from typing import Any

import pytest

from submariner.dataplane.netlink import FakeNetlink, Route
from submariner.gateway.config import ConfigError, GatewayConfig
from submariner.gateway.endpoint import (
    EndpointError,
    backend_config_from_node,
    build_local_endpoint,
    discover_private_ip,
    host_ip,
    interface_mtu,
    resolve_public_ip,
)

ENV = {"SUBMARINER_CLUSTERID": "east", "NODE_NAME": "east-worker", "SUBMARINER_CLUSTERCIDR": "10.1.0.0/16",
       "SUBMARINER_SERVICECIDR": "10.96.0.0/16", "SUBMARINER_CABLEDRIVER": "vxlan"}


def test_env_defaults_and_overrides() -> None:
    cfg = GatewayConfig.from_env(ENV)
    assert (cfg.namespace, cfg.cable_driver, cfg.health.enabled, cfg.health.interval, cfg.health.max_packet_loss) == (
        "submariner-operator", "vxlan", True, 1.0, 5)
    assert (cfg.leadership.lease_duration, cfg.leadership.renew_deadline, cfg.leadership.retry_period) == (15, 10, 2)
    assert cfg.leadership.release_on_exit
    cfg = GatewayConfig.from_env({**ENV, "LEADERSHIP_LEASEDURATION": "3", "LEADERSHIP_RENEWDEADLINE": "2",
                                  "LEADERSHIP_RETRYPERIOD": "0.2", "SUBMARINER_HEALTHCHECKENABLED": "false",
                                  "SUBMARINER_HEALTHCHECKINTERVAL": "0.5", "CE_IPSEC_NATTPORT": "4600",
                                  "SUBMARINER_NATENABLED": "true"})
    assert (cfg.leadership.lease_duration, cfg.leadership.retry_period, cfg.health.enabled, cfg.health.interval,
            cfg.ipsec_natt_port, cfg.nat_enabled) == (3, 0.2, False, 0.5, 4600, True)


@pytest.mark.parametrize("env, message", [
    ({"SUBMARINER_CLUSTERID": ""}, "SUBMARINER_CLUSTERID is required"),
    ({"SUBMARINER_CLUSTERID": "East_1"}, "not a valid cluster ID"),
    ({"NODE_NAME": ""}, "NODE_NAME"),
    ({"SUBMARINER_CLUSTERCIDR": "10.1.0.0/33"}, "SUBMARINER_CLUSTERCIDR"),
    ({"LEADERSHIP_RENEWDEADLINE": "20"}, "LEADERSHIP_LEASEDURATION > LEADERSHIP_RENEWDEADLINE"),
    ({"CE_IPSEC_NATTPORT": "70000"}, "CE_IPSEC_NATTPORT"),
])
def test_env_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GatewayConfig.from_env({**ENV, **env})


def lab_netlink(default_route: bool = False) -> FakeNetlink:
    nl = FakeNetlink()
    nl.add_link("eth0", mtu=1400, addresses=["198.18.0.5/20"])
    nl.add_link("cni0", addresses=["10.1.0.1/32"])
    if default_route:
        nl.add_link("wan0", mtu=9000, addresses=["172.31.0.2/24"])
        nl.tables[254].add(Route("0.0.0.0/0", gateway="172.31.0.1", oif="wan0", src="172.31.0.2"))
    return nl


NODE: dict[str, Any] = {"metadata": {"name": "east-worker", "labels": {"gateway.submariner.io/udp-port": "4600"},
                                     "annotations": {"gateway.submariner.io/udp-port": "4700",
                                                     "gateway.submariner.io/public-ip": "ipv4:203.0.113.9"}},
                        "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.7"}]}}


def test_private_ip_fallbacks_without_default_route() -> None:
    nl = lab_netlink()
    # no route to 8.8.8.8 and no broker: the Node's InternalIP
    assert discover_private_ip(nl, node=NODE) == "198.18.0.7"
    # the source the kernel picks toward the broker API host
    assert discover_private_ip(nl, broker_host="https://198.18.0.1:6443", node=NODE) == "198.18.0.5"
    assert interface_mtu(nl, "198.18.0.5") == 1400
    with pytest.raises(EndpointError, match="private IP"):
        discover_private_ip(nl, node={})
    # with a default route, upstream's probe wins
    nl = lab_netlink(default_route=True)
    assert discover_private_ip(nl, broker_host="198.18.0.1:6443", node=NODE) == "172.31.0.2"
    assert interface_mtu(nl, "172.31.0.2") == 9000


def test_host_ip_forms() -> None:
    assert host_ip("198.18.0.1:6443") == "198.18.0.1"
    assert host_ip("https://198.18.0.1:6443/") == "198.18.0.1"
    assert host_ip("localhost") == "127.0.0.1"


def test_backend_config_annotations_win_and_unknown_keys_are_fatal() -> None:
    cfg = backend_config_from_node(NODE, 4500, 4490)
    assert cfg == {"udp-port": "4700", "natt-discovery-port": "4490", "public-ip": "ipv4:203.0.113.9"}
    bad = {"metadata": {"name": "n", "labels": {"gateway.submariner.io/mtu": "1400"}}}
    with pytest.raises(EndpointError, match=r"unknown gateway setting 'gateway\.submariner\.io/mtu'"):
        backend_config_from_node(bad, 4500, 4490)


def test_public_ip_resolvers_never_go_outside_unless_configured() -> None:
    assert resolve_public_ip("") == ""
    assert resolve_public_ip("ipv4:1.2.3.4,api:x") == "1.2.3.4"
    asked: list[str] = []
    assert resolve_public_ip("api:ip.example", http_get=lambda u: asked.append(u) or "you are 5.6.7.8\n") == "5.6.7.8"
    assert asked == ["https://ip.example"]
    assert resolve_public_ip("lb:gw-svc", lb=lambda n: "9.9.9.9") == "9.9.9.9"
    with pytest.raises(EndpointError, match="air-gapped"):
        resolve_public_ip("api:ip.example", air_gapped=True, http_get=lambda u: "1.1.1.1")
    with pytest.raises(EndpointError, match="unknown method"):
        resolve_public_ip("stun:x")


def test_build_local_endpoint() -> None:
    cfg = GatewayConfig.from_env(ENV)
    spec = build_local_endpoint(cfg, lab_netlink(), node=NODE, broker_host="198.18.0.1:6443")
    assert spec == {
        "cluster_id": "east", "cable_name": "submariner-cable-east-198-18-0-5", "hostname": "east-worker",
        "subnets": ["10.96.0.0/16", "10.1.0.0/16"], "private_ip": "198.18.0.5", "public_ip": "203.0.113.9",
        "nat_enabled": False, "backend": "vxlan", "healthCheckIP": "10.1.0.1",
        "backend_config": {"udp-port": "4700", "natt-discovery-port": "4490", "public-ip": "ipv4:203.0.113.9"}}
    # Globalnet: the GlobalCIDR is the only subnet; lb: marks using-loadbalancer
    cfg = GatewayConfig.from_env({**ENV, "SUBMARINER_GLOBALCIDR": "242.1.0.0/16", "SUBMARINER_PUBLICIP": "lb:gw"})
    spec = build_local_endpoint(cfg, lab_netlink(), node={}, broker_host="198.18.0.1", lb=lambda n: "5.5.5.5")
    assert spec["subnets"] == ["242.1.0.0/16"] and spec["public_ip"] == "5.5.5.5"
    assert spec["backend_config"]["using-loadbalancer"] == "true" and "healthCheckIP" not in spec


def test_missing_cni_interface_is_fatal_only_with_health_check() -> None:
    nl = FakeNetlink()
    nl.add_link("eth0", addresses=["198.18.0.5/20"])
    cfg = GatewayConfig.from_env(ENV)
    with pytest.raises(EndpointError, match="SUBMARINER_HEALTHCHECKENABLED=false"):
        build_local_endpoint(cfg, nl, node=NODE)
    cfg = GatewayConfig.from_env({**ENV, "SUBMARINER_HEALTHCHECKENABLED": "false"})
    assert "healthCheckIP" not in build_local_endpoint(cfg, nl, node=NODE)
