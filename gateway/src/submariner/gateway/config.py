"""The gateway's settings, read from the upstream environment variable names (dataplane.md §2.1).

The DaemonSet renders these from the Submariner CR; keeping upstream's names lets the same manifests drive
this implementation. Everything is parsed and validated once, up front, so a typo fails the pod at start
with a message naming the variable instead of surfacing later as odd behaviour.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from submariner.broker.api.names import validate_cluster_id
from submariner.broker.api.submariner import (
    BACKEND_LIBRESWAN,
    DEFAULT_NATT_DISCOVERY_PORT,
    DEFAULT_UDP_PORT,
)

DEFAULT_NAMESPACE = "submariner-operator"
LEASE_NAME = "submariner-gateway-lock"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _cidrs(env: Mapping[str, str], name: str) -> list[str]:
    out = []
    for part in (env.get(name) or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(str(ipaddress.IPv4Network(part, strict=False)))
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not an IPv4 CIDR (e.g. 10.0.0.0/16)") from None
    return out


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}: {raw} must be at least {minimum:g}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = int(_number(env, name, default))
    if not 0 <= value <= 65535:
        raise ConfigError(f"{name}: {value} is not a UDP port (0-65535)")
    return value


@dataclass
class Leadership:
    """Lease timings in seconds (upstream 15/10/2); `LEADERSHIP_*` override them.

    `release_on_exit` is our deviation from upstream: a gateway stopping cleanly (SIGTERM) gives its Lease
    up so the passive one takes over at once instead of after the lease duration.
    """

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    release_on_exit: bool = True

    def validate(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ConfigError(
                "LEADERSHIP_LEASEDURATION > LEADERSHIP_RENEWDEADLINE > LEADERSHIP_RETRYPERIOD > 0 is required, "
                f"got {self.lease_duration:g} / {self.renew_deadline:g} / {self.retry_period:g}"
            )


@dataclass
class HealthCheck:
    enabled: bool = True
    interval: float = 1.0
    max_packet_loss: int = 5


@dataclass
class GatewayConfig:
    cluster_id: str
    node_name: str
    namespace: str = DEFAULT_NAMESPACE
    pod_name: str = ""
    cluster_cidrs: list[str] = field(default_factory=list)
    service_cidrs: list[str] = field(default_factory=list)
    global_cidrs: list[str] = field(default_factory=list)
    cable_driver: str = BACKEND_LIBRESWAN
    nat_enabled: bool = False
    public_ip: str = ""
    """Resolver spec (`ipv4:1.2.3.4`, `lb:svc`, `api:host`, `dns:name`); empty = none (no outside lookups)."""
    air_gapped: bool = False
    health: HealthCheck = field(default_factory=HealthCheck)
    metrics_port: int = 32780
    uninstall: bool = False
    ipsec_psk: str = ""
    ipsec_psk_secret: str = ""
    ipsec_natt_port: int = DEFAULT_UDP_PORT
    ipsec_force_encaps: bool = False
    ipsec_debug: bool = False
    preferred_server: bool = False
    natt_discovery_port: int = DEFAULT_NATT_DISCOVERY_PORT
    leadership: Leadership = field(default_factory=Leadership)
    broker_namespace: str = ""
    status_interval: float = 5.0

    @property
    def hostname(self) -> str:
        """The gateway's node name: lab pods share the machine's UTS namespace, so os.uname() would lie."""
        return self.node_name

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewayConfig:
        cluster_id = (env.get("SUBMARINER_CLUSTERID") or "").strip()
        if not cluster_id:
            raise ConfigError("SUBMARINER_CLUSTERID is required (the ID this cluster joined the broker with)")
        try:
            validate_cluster_id(cluster_id)
        except ValueError as e:
            raise ConfigError(f"SUBMARINER_CLUSTERID: {e}") from None
        node = (env.get("NODE_NAME") or "").strip()
        if not node:
            raise ConfigError("NODE_NAME is required (set it from the Downward API: spec.nodeName)")
        leadership = Leadership(
            lease_duration=_number(env, "LEADERSHIP_LEASEDURATION", 15.0),
            renew_deadline=_number(env, "LEADERSHIP_RENEWDEADLINE", 10.0),
            retry_period=_number(env, "LEADERSHIP_RETRYPERIOD", 2.0),
            release_on_exit=not truthy(env.get("LEADERSHIP_KEEPONEXIT")),
        )
        leadership.validate()
        health = HealthCheck(
            enabled=(env.get("SUBMARINER_HEALTHCHECKENABLED") or "true").strip().lower() != "false",
            interval=_number(env, "SUBMARINER_HEALTHCHECKINTERVAL", 1.0, minimum=0.01),
            max_packet_loss=int(_number(env, "SUBMARINER_HEALTHCHECKMAXPACKETLOSSCOUNT", 5, minimum=1)),
        )
        cfg = cls(
            cluster_id=cluster_id,
            node_name=node,
            namespace=(env.get("SUBMARINER_NAMESPACE") or DEFAULT_NAMESPACE).strip(),
            pod_name=(env.get("POD_NAME") or "").strip(),
            cluster_cidrs=_cidrs(env, "SUBMARINER_CLUSTERCIDR"),
            service_cidrs=_cidrs(env, "SUBMARINER_SERVICECIDR"),
            global_cidrs=_cidrs(env, "SUBMARINER_GLOBALCIDR"),
            cable_driver=(env.get("SUBMARINER_CABLEDRIVER") or BACKEND_LIBRESWAN).strip().lower(),
            nat_enabled=truthy(env.get("SUBMARINER_NATENABLED")),
            public_ip=(env.get("SUBMARINER_PUBLICIP") or "").strip(),
            air_gapped=truthy(env.get("AIR_GAPPED_DEPLOYMENT")),
            health=health,
            metrics_port=_port(env, "SUBMARINER_METRICSPORT", 32780),
            uninstall=truthy(env.get("SUBMARINER_UNINSTALL")),
            ipsec_psk=env.get("CE_IPSEC_PSK") or "",
            ipsec_psk_secret=(env.get("CE_IPSEC_PSKSECRET") or "").strip(),
            ipsec_natt_port=_port(env, "CE_IPSEC_NATTPORT", DEFAULT_UDP_PORT),
            ipsec_force_encaps=truthy(env.get("CE_IPSEC_FORCEENCAPS")),
            ipsec_debug=truthy(env.get("CE_IPSEC_DEBUG")),
            preferred_server=truthy(env.get("CE_IPSEC_PREFERREDSERVER")),
            natt_discovery_port=_port(env, "SUBMARINER_NATTDISCOVERYPORT", DEFAULT_NATT_DISCOVERY_PORT),
            leadership=leadership,
            broker_namespace=(env.get("BROKER_K8S_REMOTENAMESPACE") or "").strip(),
            status_interval=_number(env, "SUBMARINER_GATEWAYSTATUSINTERVAL", 5.0, minimum=0.05),
        )
        if not cfg.cluster_cidrs and not cfg.global_cidrs:
            raise ConfigError("SUBMARINER_CLUSTERCIDR is required (the pod CIDR, e.g. 10.8.0.0/16)")
        return cfg
