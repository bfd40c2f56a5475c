"""Agent settings: one dataclass shared by the CLI, tests and the bench, validated once at start-up."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from submariner.broker.api.names import cluster_id_problems

DEFAULT_NAMESPACE = "submariner-operator"
DEFAULT_HEARTBEAT_TTL = 600.0


class ConfigError(ValueError):
    """A setting the agent cannot run with; the message names the setting, the value and the fix."""


@dataclass
class AgentConfig:
    cluster_id: str
    broker_namespace: str
    namespace: str = DEFAULT_NAMESPACE
    """Submariner namespace L: per-cluster ServiceImports live here."""
    globalnet: bool = False
    heartbeat_ttl: float = DEFAULT_HEARTBEAT_TTL
    """Peers prune this cluster's data when its heartbeat Lease is older than this (D2)."""
    heartbeat_interval: float = 0.0
    """0 = derived: ttl/3, clamped to [1 s, 10 s]; also the broker-reachability probe period."""
    clusterset_ip_cidr: str = ""
    clusterset_ip_enabled: bool = False
    """Default for exports without a `use-clusterset-ip` annotation; needs `clusterset_ip_cidr`."""
    export_node_port_and_load_balancer: bool = True
    """D5; False = upstream behaviour (UnsupportedServiceType)."""
    conflicts_on_all_exporters: bool = True
    """D6; False = upstream behaviour (Conflict only on the clusters that differ from the winner)."""
    workers: int = 4
    retry_backoff: tuple[float, float] = (0.1, 5.0)
    """Per-service retry delay bounds; the cap keeps convergence after an outage within seconds."""

    def validate(self) -> None:
        problems = cluster_id_problems(self.cluster_id)
        if problems:
            raise ConfigError(
                f"cluster ID {self.cluster_id!r} is not a valid DNS-1123 label: {'; '.join(problems)}; "
                "choose a name like 'cluster-a' (--cluster-id or SUBMARINER_CLUSTERID)"
            )
        if not self.broker_namespace:
            raise ConfigError("broker namespace is empty: pass --broker-namespace, --broker-info or "
                              "BROKER_K8S_REMOTENAMESPACE")
        if not self.namespace:
            raise ConfigError("Submariner namespace is empty: pass --namespace or SUBMARINER_NAMESPACE")
        if self.heartbeat_ttl <= 0:
            raise ConfigError(f"heartbeat TTL {self.heartbeat_ttl}s must be positive (e.g. --heartbeat-ttl 10m)")
        if self.clusterset_ip_cidr:
            try:
                ipaddress.ip_network(self.clusterset_ip_cidr)
            except ValueError as e:
                raise ConfigError(f"clusterset IP CIDR {self.clusterset_ip_cidr!r} is invalid: {e}") from None
        if self.workers < 1:
            raise ConfigError(f"workers {self.workers} must be at least 1")

    @property
    def effective_heartbeat_interval(self) -> float:
        if self.heartbeat_interval > 0:
            return self.heartbeat_interval
        return max(1.0, min(self.heartbeat_ttl / 3, 10.0))

    @property
    def vip_pool_enabled(self) -> bool:
        return bool(self.clusterset_ip_cidr)


def parse_duration(text: str) -> float:
    """`90`, `90s`, `10m`, `1h`, `1h30m`, `500ms` → seconds (Go-style durations, as upstream flags take)."""
    import re

    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    try:
        return float(s)
    except ValueError:
        pass
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h)", s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"{text!r} is not a duration like 30s, 10m or 1h30m")
    return total
