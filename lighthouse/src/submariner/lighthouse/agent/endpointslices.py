"""Lighthouse EndpointSlices (lighthouse-agent.md §3.5, §7): what DNS servers answer from.

ClusterIP exports: one slice per (service, cluster, address family) holding the service IP (or global IP)
with ready = "the service has a ready endpoint" (D10: the address type follows the published address).
Headless exports: one slice per Kubernetes EndpointSlice, endpoints copied with hostnames (StatefulSet pod
names); with Globalnet each address is replaced by the pod's global IP, and endpoints still waiting for one
are left out until it arrives (D9). Names are deterministic (see `naming`), so a restart recomputes the
same objects and writes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from submariner.broker.api import labels as L
from submariner.broker.api.multicluster import HEADLESS
from submariner.broker.kube import Obj
from submariner.lighthouse.agent.exports import Constituent
from submariner.lighthouse.agent.naming import ServiceKey, lh_slice_name

_ENDPOINT_FIELDS = ("addresses", "conditions", "hostname", "nodeName", "zone", "targetRef", "hints")
_DROPPED_LABEL_PREFIXES = ("endpointslice.kubernetes.io/",)
_DROPPED_LABELS = frozenset({L.K8S_SERVICE_NAME, L.CLUSTER_ID, L.ORIGINATING_NAMESPACE})

GlobalIpOf = Callable[[Mapping[str, Any]], str | None]
"""Global IP of one headless endpoint (by Pod targetRef, else by address), None while not allocated."""


def copied_labels(source: Mapping[str, str] | None) -> dict[str, str]:
    """Source labels minus the ones that would break ownership or loop prevention (D4: app.kubernetes.io/*
    and other `kubernetes.io/` keys are kept)."""
    return {k: v for k, v in (source or {}).items()
            if k not in _DROPPED_LABELS and not k.startswith(_DROPPED_LABEL_PREFIXES)}


def endpoint_ready(ep: Mapping[str, Any]) -> bool:
    """EndpointSlice semantics: a missing `ready` means ready."""
    return (ep.get("conditions") or {}).get("ready") is not False


def address_type(ip: str) -> str:
    return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"


def _labels(key: ServiceKey, cluster_id: str, headless: bool, extra: Mapping[str, str]) -> dict[str, str]:
    out = copied_labels(extra)
    out.update({
        L.ENDPOINTSLICE_MANAGED_BY: L.LIGHTHOUSE_MANAGED_BY,
        L.SOURCE_NAMESPACE: key.namespace,
        L.SOURCE_CLUSTER: cluster_id,
        L.SERVICE_NAME: key.name,
        L.IS_HEADLESS: str(headless).lower(),
    })
    return out


def _annotations(c: Constituent, globalnet: bool) -> dict[str, str]:
    return {
        L.PUBLISH_NOT_READY_ADDRESSES: str(c.publish_not_ready).lower(),
        L.GLOBALNET_ENABLED: str(globalnet and c.type == HEADLESS).lower(),
    }


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def desired_slices(key: ServiceKey, cluster_id: str, c: Constituent, k8s_slices: Sequence[Mapping[str, Any]],
                   *, globalnet: bool = False, global_ip_of: GlobalIpOf | None = None) -> list[Obj]:
    """Every Lighthouse EndpointSlice this cluster should publish for the service, in name order."""
    slices = sorted(k8s_slices, key=_name)
    if c.type == HEADLESS:
        out = [_headless(key, cluster_id, c, s, globalnet, global_ip_of) for s in slices
               if s.get("addressType") in ("IPv4", "IPv6")]
    else:
        out = _cluster_ip(key, cluster_id, c, slices, globalnet)
    return sorted(out, key=_name)


def _cluster_ip(key: ServiceKey, cluster_id: str, c: Constituent, slices: Sequence[Mapping[str, Any]],
                globalnet: bool) -> list[Obj]:
    ready = any(endpoint_ready(ep) for s in slices for ep in s.get("endpoints") or ())
    source_labels: dict[str, str] = dict(c.service_labels)
    for s in reversed(slices):  # the first slice (by name) wins; Kubernetes copies Service labels onto them
        source_labels.update((s.get("metadata") or {}).get("labels") or {})
    out: list[Obj] = []
    seen: set[str] = set()
    for ip in c.ips:
        family = address_type(ip)
        if family in seen:
            continue
        seen.add(family)
        out.append({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": lh_slice_name(key, cluster_id, family),
                "namespace": key.namespace,
                "labels": _labels(key, cluster_id, False, source_labels),
                "annotations": _annotations(c, globalnet),
            },
            "addressType": family,
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}}],
            "ports": c.port_dicts(),
        })
    return out


def _headless(key: ServiceKey, cluster_id: str, c: Constituent, source: Mapping[str, Any], globalnet: bool,
              global_ip_of: GlobalIpOf | None) -> Obj:
    endpoints: list[dict[str, Any]] = []
    for ep in source.get("endpoints") or ():
        copy = {k: ep[k] for k in _ENDPOINT_FIELDS if ep.get(k) is not None}
        if globalnet:
            gip = global_ip_of(ep) if global_ip_of is not None else None
            if gip is None:
                continue  # D9: published when its global IP arrives (the GlobalIngressIP event requeues)
            copy["addresses"] = [gip]
        endpoints.append(copy)
    labels = _labels(key, cluster_id, True, (source.get("metadata") or {}).get("labels") or {})
    labels[L.SOURCE_NAME] = _name(source)
    ports = [{k: p[k] for k in ("name", "protocol", "port", "appProtocol") if p.get(k) is not None}
             for p in source.get("ports") or ()]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": lh_slice_name(key, cluster_id, _name(source)),
            "namespace": key.namespace,
            "labels": labels,
            "annotations": _annotations(c, globalnet),
        },
        "addressType": "IPv4" if globalnet else str(source.get("addressType") or "IPv4"),
        "endpoints": endpoints,
        "ports": ports,
    }
