"""ServiceExport validation and this cluster's view of an exported service (lighthouse-agent.md §3.2, §5.1).

`evaluate` turns (ServiceExport, Service, Globalnet IP) into either a reason the export is invalid or a
`Constituent`: what this cluster contributes to the clusterset service. The constituent is both the
per-cluster ServiceImport in the Submariner namespace and the entry this cluster writes into the broker
aggregate, which is how every exporter sees every other one (conflicts, D6/D7).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from submariner.broker.api import labels as L
from submariner.broker.api.conditions import ExportReason as R
from submariner.broker.api.multicluster import API_VERSION, CLUSTER_SET_IP, HEADLESS
from submariner.lighthouse.agent.config import AgentConfig
from submariner.lighthouse.agent.naming import ServiceKey, annotations_of

MAX_TIMESTAMP = 2**63 - 2
"""Upstream's stand-in for "export time unknown": such a cluster never wins precedence."""
SUPPORTED_TYPES = ("", "ClusterIP", "NodePort", "LoadBalancer")


@dataclass(frozen=True)
class Invalid:
    """Why an export cannot be exported; `status` is "False" or "Unknown" (retry)."""

    reason: str
    message: str
    status: str = "False"


@dataclass(frozen=True)
class Constituent:
    """One cluster's contribution to a clusterset service."""

    type: str
    ports: tuple[tuple[str, str, int, str], ...]
    """(name, protocol, port, appProtocol), in Service order; empty for Headless."""
    ips: tuple[str, ...]
    """The cluster IPs (or global IP) this cluster publishes; empty for Headless."""
    session_affinity: str
    session_affinity_config: Mapping[str, Any] | None
    use_clusterset_ip: bool
    use_clusterset_ip_annotation: str | None
    timestamp: int
    publish_not_ready: bool
    service_labels: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The compact form stored in the broker aggregate's constituent annotation."""
        out: dict[str, Any] = {"type": self.type, "timestamp": self.timestamp,
                               "useClustersetIP": self.use_clusterset_ip}
        if self.ports:
            out["ports"] = [list(p) for p in self.ports]
        if self.session_affinity:
            out["sessionAffinity"] = self.session_affinity
        if self.session_affinity_config:
            out["sessionAffinityConfig"] = dict(self.session_affinity_config)
        return out

    def port_dicts(self) -> list[dict[str, Any]]:
        return [port_dict(p) for p in self.ports]


def port_dict(p: tuple[str, str, int, str]) -> dict[str, Any]:
    name, protocol, port, app = p
    d: dict[str, Any] = {"name": name, "protocol": protocol, "port": port}
    if app:
        d["appProtocol"] = app
    return d


def port_tuple(p: Mapping[str, Any]) -> tuple[str, str, int, str]:
    return (str(p.get("name") or ""), str(p.get("protocol") or "TCP"), int(p.get("port") or 0),
            str(p.get("appProtocol") or ""))


def timestamp_ns(obj: Mapping[str, Any] | None) -> int:
    """creationTimestamp as Unix nanoseconds: the precedence key of "oldest export wins"."""
    stamp = ((obj or {}).get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return MAX_TIMESTAMP
    try:
        dt = datetime.strptime(str(stamp).replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        try:
            dt = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError:
            return MAX_TIMESTAMP
    return int(dt.astimezone(UTC).timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def is_headless(service: Mapping[str, Any]) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def use_clusterset_ip(export: Mapping[str, Any], config: AgentConfig) -> tuple[bool, str | None]:
    """Effective VIP opt-in (§8): the export's annotation if present, else the global default."""
    raw = annotations_of(export).get(L.USE_CLUSTERSET_IP)
    enabled = raw == "true" if raw is not None else config.clusterset_ip_enabled
    return enabled and config.vip_pool_enabled, raw or None


def global_ip_problem(giip: Mapping[str, Any] | None) -> Invalid | None:
    """None when the GlobalIngressIP has an allocated IP, else the Valid=False reason for it (§6.1)."""
    if giip is not None and (giip.get("status") or {}).get("allocatedIP"):
        return None
    for c in ((giip or {}).get("status") or {}).get("conditions") or ():
        if c.get("type") == "Allocated" and c.get("status") == "False":
            return Invalid(str(c.get("reason") or R.SERVICE_GLOBAL_IP_UNAVAILABLE),
                           f"Unable to obtain global IP: {c.get('message') or ''}")
    return Invalid(R.SERVICE_GLOBAL_IP_UNAVAILABLE, "Service doesn't have a global IP yet")


def evaluate(export: Mapping[str, Any], service: Mapping[str, Any] | None, config: AgentConfig,
             global_ip: Mapping[str, Any] | None = None) -> Invalid | Constituent:
    """Validate the export against its Service (§5.1; D5: NodePort/LoadBalancer export like ClusterIP)."""
    if service is None:
        return Invalid(R.SERVICE_UNAVAILABLE, "Service to be exported doesn't exist")
    spec = service.get("spec") or {}
    stype = str(spec.get("type") or "")
    allowed = SUPPORTED_TYPES if config.export_node_port_and_load_balancer else ("", "ClusterIP")
    if stype not in allowed:
        return Invalid(R.UNSUPPORTED_SERVICE_TYPE, f"Service of type {stype} not supported")
    headless = is_headless(service)
    ips: tuple[str, ...] = ()
    if not headless:
        if config.globalnet:
            problem = global_ip_problem(global_ip)
            if problem is not None:
                return problem
            ips = (str((global_ip or {}).get("status", {}).get("allocatedIP")),)
        else:
            cluster_ips = [str(ip) for ip in spec.get("clusterIPs") or () if ip and ip != "None"]
            if not cluster_ips and spec.get("clusterIP"):
                cluster_ips = [str(spec["clusterIP"])]
            if not cluster_ips:
                return Invalid(R.SERVICE_RETRIEVAL_FAILED, "Error retrieving the Service: it has no cluster IP yet",
                               status="Unknown")
            ips = tuple(cluster_ips)
    vip, raw = use_clusterset_ip(export, config)
    affinity_config = spec.get("sessionAffinityConfig") or None
    return Constituent(
        type=HEADLESS if headless else CLUSTER_SET_IP,
        ports=() if headless else tuple(port_tuple(p) for p in spec.get("ports") or ()),
        ips=ips,
        session_affinity=str(spec.get("sessionAffinity") or ""),
        session_affinity_config=affinity_config,
        use_clusterset_ip=vip and not headless,
        use_clusterset_ip_annotation=raw,
        timestamp=timestamp_ns(export),
        publish_not_ready=bool(spec.get("publishNotReadyAddresses")),
        service_labels=dict((service.get("metadata") or {}).get("labels") or {}),
    )


def per_cluster_import(name: str, key: ServiceKey, c: Constituent, config: AgentConfig) -> dict[str, Any]:
    """The per-cluster ServiceImport `L/<S>-<N>-<C>` (§3.2): this cluster's record of the export."""
    annotations = {L.PUBLISH_NOT_READY_ADDRESSES: str(c.publish_not_ready).lower()}
    if c.use_clusterset_ip_annotation:
        annotations[L.USE_CLUSTERSET_IP] = c.use_clusterset_ip_annotation
    spec: dict[str, Any] = {"type": c.type, "ports": c.port_dicts()}
    if c.ips:
        spec["ips"] = list(c.ips[:1])
    if c.session_affinity:
        spec["sessionAffinity"] = c.session_affinity
    if c.session_affinity_config:
        spec["sessionAffinityConfig"] = dict(c.session_affinity_config)
    return {
        "apiVersion": API_VERSION,
        "kind": "ServiceImport",
        "metadata": {
            "name": name,
            "namespace": config.namespace,
            "labels": {L.SERVICE_NAME: key.name, L.SOURCE_NAMESPACE: key.namespace,
                       L.SOURCE_CLUSTER: config.cluster_id},
            "annotations": annotations,
        },
        "spec": spec,
        "status": {"clusters": [{"cluster": config.cluster_id}]},
    }
