"""GlobalIngressIP lookups for Globalnet exports (lighthouse-agent.md §7.4).

The Globalnet controller allocates one GlobalIngressIP per exported ClusterIP Service (target
ClusterIPService) and one per headless backend (HeadlessServicePod by pod name, or HeadlessServiceEndpoints
by the endpoint IP for selector-less Services). The agent only reads them: any event requeues the services
that may use it, so missing IPs are published as soon as they arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from submariner.broker.api import labels as L
from submariner.broker.kube import Informer, Obj
from submariner.lighthouse.agent.cache import Index

CLUSTER_IP_SERVICE = "ClusterIPService"
HEADLESS_SERVICE_POD = "HeadlessServicePod"
HEADLESS_SERVICE_ENDPOINTS = "HeadlessServiceEndpoints"

GiipKey = tuple[str, str, str]
"""(namespace, target, ref): ref = service name, pod name, or endpoint IP."""


def giip_key(obj: Obj) -> GiipKey | None:
    spec = obj.get("spec") or {}
    meta = obj.get("metadata") or {}
    ns, target = str(meta.get("namespace") or ""), str(spec.get("target") or "")
    if target == CLUSTER_IP_SERVICE:
        ref = (spec.get("serviceRef") or {}).get("name")
    elif target == HEADLESS_SERVICE_POD:
        ref = (spec.get("podRef") or {}).get("name")
    elif target == HEADLESS_SERVICE_ENDPOINTS:
        ref = (meta.get("annotations") or {}).get(L.HEADLESS_SVC_ENDPOINTS_IP)
    else:
        return None
    return (ns, target, str(ref)) if ref else None


class GlobalIps:
    """Index of GlobalIngressIPs; `on_change(namespace, target, ref)` is called for every event."""

    def __init__(self, informer: Informer, on_change: Callable[[GiipKey], None]) -> None:
        self._index: Index[GiipKey] = Index(informer, giip_key, on_change)

    def _get(self, key: GiipKey) -> Obj | None:
        objs = self._index.get(key)
        return min(objs, key=lambda o: str((o.get("metadata") or {}).get("name"))) if objs else None

    def for_service(self, namespace: str, name: str) -> Obj | None:
        return self._get((namespace, CLUSTER_IP_SERVICE, name))

    def for_endpoint(self, namespace: str, endpoint: Mapping[str, Any]) -> str | None:
        """Global IP of a headless endpoint, None while not allocated."""
        ref = endpoint.get("targetRef") or {}
        if ref.get("kind") == "Pod" and ref.get("name"):
            obj = self._get((namespace, HEADLESS_SERVICE_POD, str(ref["name"])))
        else:
            addresses = endpoint.get("addresses") or ()
            obj = self._get((namespace, HEADLESS_SERVICE_ENDPOINTS, str(addresses[0]))) if addresses else None
        ip = ((obj or {}).get("status") or {}).get("allocatedIP")
        return str(ip) if ip else None
