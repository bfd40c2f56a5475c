"""The route agent's settings, from the upstream environment variable names (dataplane.md §3.1)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_NAMESPACE = "submariner-operator"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _cidrs(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    out = []
    for part in (env.get(key) or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ConfigError(f"{key}: {part!r} is not a CIDR (expected e.g. 10.8.0.0/16)") from None
        if net.version == 4:
            out.append(str(net))
    return tuple(out)


def _number(env: Mapping[str, str], key: str, default: float) -> float:
    raw = (env.get(key) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}: {raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{key}: must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    cluster_id: str
    node_name: str
    namespace: str = DEFAULT_NAMESPACE
    cluster_cidrs: tuple[str, ...] = ()
    service_cidrs: tuple[str, ...] = ()
    global_cidrs: tuple[str, ...] = ()
    uninstall: bool = False
    health_check_enabled: bool = True
    health_check_interval: float = 1.0
    health_check_max_loss: int = 5
    status_interval: float = 60.0
    network_plugin: str = "generic"
    resync: float = 30.0

    @property
    def globalnet(self) -> bool:
        return bool(self.global_cidrs)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        cluster_id = (env.get("SUBMARINER_CLUSTERID") or "").strip()
        if not cluster_id:
            raise ConfigError("SUBMARINER_CLUSTERID is required (the ID this cluster joined the broker with)")
        node = (env.get("NODE_NAME") or "").strip()
        if not node:
            raise ConfigError("NODE_NAME is required (set it from the Downward API: spec.nodeName)")
        plugin = (env.get("SUBMARINER_NETWORKPLUGIN") or "generic").strip()
        if plugin.lower() in ("ovnkubernetes", "ovn-kubernetes"):
            raise ConfigError("SUBMARINER_NETWORKPLUGIN=OVNKubernetes is not supported by this route agent "
                              "(only the kube-proxy handler is implemented); use generic")
        return cls(
            cluster_id=cluster_id,
            node_name=node,
            namespace=(env.get("SUBMARINER_NAMESPACE") or DEFAULT_NAMESPACE).strip(),
            cluster_cidrs=_cidrs(env, "SUBMARINER_CLUSTERCIDR"),
            service_cidrs=_cidrs(env, "SUBMARINER_SERVICECIDR"),
            global_cidrs=_cidrs(env, "SUBMARINER_GLOBALCIDR"),
            uninstall=truthy(env.get("SUBMARINER_UNINSTALL")),
            health_check_enabled=(env.get("SUBMARINER_HEALTHCHECKENABLED") or "true").strip().lower() != "false",
            health_check_interval=_number(env, "SUBMARINER_HEALTHCHECKINTERVAL", 1.0),
            health_check_max_loss=int(_number(env, "SUBMARINER_HEALTHCHECKMAXPACKETLOSSCOUNT", 5)),
            network_plugin=plugin,
            resync=_number(env, "SUBMARINER_ROUTEAGENT_RESYNC", 30.0),
        )
