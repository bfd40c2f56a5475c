"""Globalnet's configuration: upstream's environment (dataplane.md §4.2), overridable by flags.

The Cluster CR (`<namespace>/<cluster id>`, written by the gateway) wins over SUBMARINER_GLOBALCIDR and
supplies the cluster and service CIDRs the cluster-egress rules SNAT; SUBMARINER_CLUSTERCIDR and
SUBMARINER_SERVICECIDR are only a fallback when the CR has none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from submariner.broker.api import sanitize_name
from submariner.broker.api.submariner import CLUSTERS
from submariner.broker.kube import ClientFactory, KubeError, NotFound

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "submariner-operator"
DEFAULT_METRICS_PORT = 32781


class ConfigError(ValueError):
    """A missing or malformed setting; the message names the variable and the fix."""


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Config:
    cluster_id: str
    node_name: str
    namespace: str = DEFAULT_NAMESPACE
    global_cidrs: tuple[str, ...] = ()
    cluster_cidrs: tuple[str, ...] = ()
    service_cidrs: tuple[str, ...] = ()
    uninstall: bool = False
    metrics_port: int = DEFAULT_METRICS_PORT
    cni_ip: str | None = None
    """The CNI IP the gateway health IP is DNATed to; discovered from the node's addresses when None."""
    lease_timings: tuple[float, float, float] = (20.0, 15.0, 2.0)
    """Lease duration, renew deadline, retry period (upstream's values)."""

    @property
    def local_cidrs(self) -> tuple[str, ...]:
        return self.cluster_cidrs + self.service_cidrs

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        cluster_id = env.get("SUBMARINER_CLUSTERID", "").strip()
        if not cluster_id:
            raise ConfigError("SUBMARINER_CLUSTERID is required: set it to this cluster's ID (e.g. g1)")
        node = env.get("NODE_NAME", "").strip()
        if not node:
            raise ConfigError("NODE_NAME is required: set it from the Downward API (spec.nodeName)")
        port = env.get("SUBMARINER_METRICSPORT", "").strip()
        try:
            metrics_port = int(port) if port else DEFAULT_METRICS_PORT
        except ValueError as e:
            raise ConfigError(f"SUBMARINER_METRICSPORT={port!r} is not a port number") from e
        return cls(
            cluster_id=cluster_id,
            node_name=node,
            namespace=env.get("SUBMARINER_NAMESPACE", "").strip() or DEFAULT_NAMESPACE,
            global_cidrs=_split(env.get("SUBMARINER_GLOBALCIDR")),
            cluster_cidrs=_split(env.get("SUBMARINER_CLUSTERCIDR")),
            service_cidrs=_split(env.get("SUBMARINER_SERVICECIDR")),
            uninstall=_truthy(env.get("SUBMARINER_UNINSTALL")),
            metrics_port=metrics_port,
        )


def with_cluster_cr(config: Config, cluster: ClientFactory, *, attempts: int = 100, delay: float = 3.0,
                    sleep: Callable[[float], None] = time.sleep) -> Config:
    """Overlay the Cluster CR's CIDRs (upstream reads it with 100 x 3 s retries); env values if never found."""
    client = cluster.resource(CLUSTERS)
    name = sanitize_name(config.cluster_id)
    for attempt in range(attempts):
        try:
            spec = client.get(config.namespace, name).get("spec") or {}
        except NotFound:
            log.info("globalnet waiting for Cluster CR namespace=%s name=%s attempt=%d", config.namespace, name,
                     attempt + 1)
        except KubeError as e:
            log.warning("globalnet cannot read Cluster CR name=%s error=%r", name, e.message)
        else:
            return replace(
                config,
                global_cidrs=tuple(spec.get("global_cidr") or ()) or config.global_cidrs,
                cluster_cidrs=tuple(spec.get("cluster_cidr") or ()) or config.cluster_cidrs,
                service_cidrs=tuple(spec.get("service_cidr") or ()) or config.service_cidrs,
            )
        if attempt < attempts - 1:
            sleep(delay)
    log.warning("globalnet found no Cluster CR name=%s; using the environment's CIDRs", name)
    return config
