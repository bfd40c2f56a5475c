"""Shared builders for the gateway tests: Endpoint specs/objects, a fake clock, a recording driver."""

from __future__ import annotations

from typing import Any

from submariner.broker.api.names import cable_name, endpoint_name
from submariner.gateway.cable.driver import NATEndpointInfo, connection


def spec(cluster: str, private_ip: str, *, subnets: list[str] | None = None, public_ip: str = "",
         backend: str = "vxlan", hostname: str = "gw", health_ip: str = "", **cfg: str) -> dict[str, Any]:
    s: dict[str, Any] = {
        "cluster_id": cluster, "cable_name": cable_name(cluster, private_ip), "hostname": hostname,
        "subnets": subnets or ["10.99.0.0/16"], "private_ip": private_ip, "public_ip": public_ip,
        "nat_enabled": False, "backend": backend,
        "backend_config": {"natt-discovery-port": "4490", "udp-port": "4500", **cfg},
    }
    if health_ip:
        s["healthCheckIP"] = health_ip
    return s


def endpoint(s: dict[str, Any], created: str = "2026-01-01T00:00:00Z", namespace: str = "submariner-operator"
             ) -> dict[str, Any]:
    return {"apiVersion": "submariner.io/v1", "kind": "Endpoint",
            "metadata": {"name": endpoint_name(s["cluster_id"], s["cable_name"]), "namespace": namespace,
                         "creationTimestamp": created}, "spec": s}


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingDriver:
    """A CableDriver that records what the engine asks of it."""

    def __init__(self, fail_init: bool = False) -> None:
        self.fail_init = fail_init
        self.calls: list[tuple[str, str]] = []
        self.conns: dict[str, NATEndpointInfo] = {}
        self.status = "connected"

    def name(self) -> str:
        return "recording"

    def init(self) -> None:
        if self.fail_init:
            raise RuntimeError("no kernel support")
        self.calls.append(("init", ""))

    def connect_to_endpoint(self, info: NATEndpointInfo) -> str:
        self.calls.append(("connect", info.cable_name))
        self.conns[info.cable_name] = info
        return info.use_ip

    def disconnect_from_endpoint(self, ep: dict[str, Any]) -> None:
        self.calls.append(("disconnect", ep["spec"]["cable_name"]))
        self.conns.pop(ep["spec"]["cable_name"], None)

    def get_active_connections(self) -> list[Any]:
        return self.get_connections()

    def get_connections(self) -> list[Any]:
        return [connection(i.spec, self.status, "", using_ip=i.use_ip) for i in self.conns.values()]

    def cleanup(self) -> None:
        self.calls.append(("cleanup", ""))
