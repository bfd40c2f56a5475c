"""Service + Pods → EndpointSlices (discovery.k8s.io/v1) and the legacy Endpoints object.

Everything downstream reads these: kube-proxy's NAT rules, the cluster DNS (headless names such as
`whereami-0.whereami-ss`), Lighthouse's exports. So readiness must flow through promptly (an endpoint's
`conditions.ready` follows the pod's Ready condition) and nothing may be rewritten when nothing changed —
every write wakes every watcher.

Pods whose ports resolve the same way share a slice; in practice that is one slice per Service (named
`<svc>-<random>` through generateName). A Service without endpoints keeps one empty placeholder slice, as
Kubernetes does.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from submariner.broker.kube import (
    ENDPOINT_SLICES,
    SERVICES,
    Obj,
    ObjectKey,
    create_or_update,
)

from .base import ENDPOINTS, PODS, Controller, delete_quietly
from .podutil import (
    controller_uid,
    is_active,
    is_ready,
    meta,
    name_of,
    owner_reference,
    same_json,
    spec,
    status,
    uid_of,
)

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"

_Ports = list[dict[str, Any]]


# ----------------------------------------------------------------------------------------- desired state


def selects(service: Obj, pod: Obj) -> bool:
    """Service selectors are plain equality maps; an empty one selects nothing (user-managed endpoints)."""
    selector = spec(service).get("selector") or {}
    if not selector or (meta(pod).get("namespace") or "") != (meta(service).get("namespace") or ""):
        return False
    labels = meta(pod).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def pod_ipv4(pod: Obj) -> str:
    """The pod's IPv4 address (slices here are addressType IPv4), "" if it has none yet."""
    candidates = [str(p.get("ip") or "") for p in status(pod).get("podIPs") or () if isinstance(p, dict)]
    candidates.append(str(status(pod).get("podIP") or ""))
    for ip in candidates:
        try:
            if ip and ipaddress.ip_address(ip).version == 4:
                return ip
        except ValueError:
            continue
    return ""


def resolve_ports(service: Obj, pod: Obj) -> _Ports:
    """Service ports with targetPort resolved for this pod (a named targetPort looks up container ports)."""
    out: _Ports = []
    containers = list(spec(pod).get("containers") or ())
    for sp in spec(service).get("ports") or ():
        protocol = sp.get("protocol") or "TCP"
        target = sp.get("targetPort", sp.get("port"))
        port: int | None = None
        if isinstance(target, int):
            port = target
        elif isinstance(target, str) and target.isdigit():
            port = int(target)
        elif isinstance(target, str):
            for c in containers:
                for cp in c.get("ports") or ():
                    if cp.get("name") == target and (cp.get("protocol") or "TCP") == protocol:
                        port = int(cp["containerPort"])
                        break
                if port is not None:
                    break
        if port is None:
            continue  # this pod does not expose the named port: it serves the others only
        entry: dict[str, Any] = {"name": sp.get("name") or "", "port": port, "protocol": protocol}
        if sp.get("appProtocol"):
            entry["appProtocol"] = sp["appProtocol"]
        out.append(entry)
    return out


def _ready(service: Obj, pod: Obj) -> bool:
    return is_ready(pod) or bool(spec(service).get("publishNotReadyAddresses"))


def _hostname(service: Obj, pod: Obj) -> str:
    """Headless StatefulSet pods are addressable as <hostname>.<service> only if their subdomain is it."""
    ps = spec(pod)
    if ps.get("hostname") and ps.get("subdomain") == name_of(service):
        return str(ps["hostname"])
    return ""


def _target_ref(pod: Obj) -> dict[str, Any]:
    return {"kind": "Pod", "namespace": meta(pod).get("namespace") or "", "name": name_of(pod), "uid": uid_of(pod)}


def slice_endpoint(service: Obj, pod: Obj, ip: str) -> dict[str, Any]:
    ready = _ready(service, pod)
    ep: dict[str, Any] = {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": ready, "terminating": False},
        "targetRef": _target_ref(pod),
    }
    if hostname := _hostname(service, pod):
        ep["hostname"] = hostname
    if node := spec(pod).get("nodeName"):
        ep["nodeName"] = node
    return ep


def legacy_address(service: Obj, pod: Obj, ip: str) -> dict[str, Any]:
    addr: dict[str, Any] = {"ip": ip, "targetRef": _target_ref(pod)}
    if hostname := _hostname(service, pod):
        addr["hostname"] = hostname
    if node := spec(pod).get("nodeName"):
        addr["nodeName"] = node
    return addr


def endpoint_groups(service: Obj, pods: list[Obj]) -> list[tuple[_Ports, list[Obj]]]:
    """Selected pods with an address, grouped by how the Service's ports resolve for them."""
    groups: dict[bytes, tuple[_Ports, list[Obj]]] = {}
    for pod in sorted(pods, key=name_of):
        if not selects(service, pod) or not is_active(pod) or not pod_ipv4(pod):
            continue
        ports = resolve_ports(service, pod)
        groups.setdefault(orjson.dumps(ports, option=orjson.OPT_SORT_KEYS), (ports, []))[1].append(pod)
    return [groups[k] for k in sorted(groups)]


def slice_labels(service: Obj) -> dict[str, str]:
    labels = {k: v for k, v in (meta(service).get("labels") or {}).items() if k != HEADLESS_LABEL}
    labels[SERVICE_NAME_LABEL] = name_of(service)
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    if spec(service).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    return labels


def desired_slices(service: Obj, pods: list[Obj]) -> list[Obj]:
    """The slice bodies (without names) the Service should have; at least one (the placeholder)."""
    ns = meta(service).get("namespace") or ""
    bodies: list[Obj] = []
    for ports, members in endpoint_groups(service, pods) or [([], [])]:
        bodies.append({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "namespace": ns,
                "generateName": f"{name_of(service)}-"[:58],
                "labels": slice_labels(service),
                "ownerReferences": [owner_reference(service, "Service", "v1")],
            },
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": [slice_endpoint(service, p, pod_ipv4(p)) for p in members],
        })
    return bodies


def desired_endpoints(service: Obj, pods: list[Obj]) -> Obj:
    """The legacy Endpoints object: ready addresses and notReadyAddresses per port set."""
    subsets: list[dict[str, Any]] = []
    for ports, members in endpoint_groups(service, pods):
        ready = [legacy_address(service, p, pod_ipv4(p)) for p in members if _ready(service, p)]
        not_ready = [legacy_address(service, p, pod_ipv4(p)) for p in members if not _ready(service, p)]
        subset: dict[str, Any] = {}
        if ready:
            subset["addresses"] = sorted(ready, key=lambda a: ipaddress.ip_address(a["ip"]))
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: ipaddress.ip_address(a["ip"]))
        if ports:
            subset["ports"] = [{k: v for k, v in p.items() if k != "name" or v} for p in ports]
        subsets.append(subset)
    labels = {k: v for k, v in (meta(service).get("labels") or {}).items() if k != HEADLESS_LABEL}
    labels[SKIP_MIRROR_LABEL] = "true"
    if spec(service).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    obj: Obj = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": name_of(service),
            "namespace": meta(service).get("namespace") or "",
            "labels": labels,
            "ownerReferences": [owner_reference(service, "Service", "v1")],
        },
    }
    if subsets:
        obj["subsets"] = subsets
    return obj


def _slice_content(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    return (obj.get("addressType"), obj.get("ports"), obj.get("endpoints"), meta(obj).get("labels"))


def _endpoints_content(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    return (obj.get("subsets"), meta(obj).get("labels"))


def _pod_view(pod: Obj) -> tuple[Any, ...]:
    """What about a pod can change its endpoints (status heartbeats and container states cannot)."""
    ps = spec(pod)
    return (meta(pod).get("labels"), pod_ipv4(pod), is_ready(pod), is_active(pod), ps.get("nodeName"),
            ps.get("hostname"), ps.get("subdomain"))


# ----------------------------------------------------------------------------------------- the controller


class EndpointSliceController(Controller):
    name = "endpointslice"

    def register(self) -> None:
        self.caches[SERVICES].add_handlers(
            on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new), on_delete=self._service_deleted,
        )
        self.caches[PODS].add_handlers(on_add=self._pod, on_update=self._pod_update, on_delete=self._pod)
        self.caches[ENDPOINT_SLICES].add_handlers(
            on_add=self._slice, on_update=lambda _old, new: self._slice(new), on_delete=self._slice,
        )
        self.caches[ENDPOINTS].add_handlers(
            on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new), on_delete=self.enqueue,
        )

    def _service_deleted(self, svc: Obj) -> None:
        self.expectations.forget((meta(svc).get("namespace") or "", name_of(svc)))

    def _pod(self, pod: Obj, also: Obj | None = None) -> None:
        ns = meta(pod).get("namespace") or ""
        for svc in self.caches.in_namespace(SERVICES, ns):
            if selects(svc, pod) or (also is not None and selects(svc, also)):
                self.queue.add((ns, name_of(svc)))

    def _pod_update(self, old: Obj, new: Obj) -> None:
        if not same_json(_pod_view(old), _pod_view(new)):
            self._pod(new, also=old)

    def _slice(self, eps: Obj) -> None:
        labels = meta(eps).get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) == MANAGED_BY and labels.get(SERVICE_NAME_LABEL):
            self.queue.add((meta(eps).get("namespace") or "", labels[SERVICE_NAME_LABEL]))

    def _managed_slices(self, ns: str, service: str) -> list[Obj]:
        return sorted(
            (s for s in self.caches.in_namespace(ENDPOINT_SLICES, ns)
             if (meta(s).get("labels") or {}).get(SERVICE_NAME_LABEL) == service
             and (meta(s).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY),
            key=name_of,
        )

    def reconcile(self, key: ObjectKey) -> float | None:
        ns, name = key
        svc = self.caches[SERVICES].get(ns, name)
        if svc is None:
            self.expectations.forget(key)
            return None  # slices and Endpoints are owned by the Service: the server collects them
        slices_cache = self.caches[ENDPOINT_SLICES]
        wait = self.expectations.pending(key, lambda n: slices_cache.get(ns, n))
        if wait is not None:
            return wait
        existing = self._managed_slices(ns, name)
        if not spec(svc).get("selector") or spec(svc).get("type") == "ExternalName":
            self._drop(key, svc, existing)
            return None
        pods = self.caches.in_namespace(PODS, ns)
        self._sync_slices(key, svc, existing, desired_slices(svc, pods))
        self._sync_endpoints(svc, desired_endpoints(svc, pods))
        return None

    def _drop(self, key: ObjectKey, svc: Obj, existing: list[Obj]) -> None:
        """A Service without a selector has user-managed endpoints: remove only what this controller made."""
        ns, name = key
        client = self.client(ENDPOINT_SLICES)
        for s in existing:
            self.expectations.deleted(key, name_of(s), uid_of(s))
            delete_quietly(client, ns, name_of(s))
        ep = self.caches[ENDPOINTS].get(ns, name)
        if ep is not None and controller_uid(ep) == uid_of(svc):
            delete_quietly(self.client(ENDPOINTS), ns, name)

    def _sync_slices(self, key: ObjectKey, svc: Obj, existing: list[Obj], desired: list[Obj]) -> None:
        ns, name = key
        client = self.client(ENDPOINT_SLICES)
        unmatched = list(existing)
        pairs: list[tuple[Obj, Obj | None]] = []
        pending: list[Obj] = []
        for body in desired:  # first keep slices whose ports already match (fewest rewrites)
            match = next((s for s in unmatched if same_json(s.get("ports"), body.get("ports"))), None)
            if match is not None:
                unmatched.remove(match)
                pairs.append((body, match))
            else:
                pending.append(body)
        for body in pending:
            pairs.append((body, unmatched.pop(0) if unmatched else None))

        for body, current in pairs:
            if current is None:
                for created in self.create_dependents(key, SERVICES, svc, client, [body]):
                    log.info("endpointslice created cluster=%s service=%s/%s slice=%s endpoints=%d",
                             self.cluster_name, ns, name, name_of(created), len(body["endpoints"]))
            elif not same_json(_slice_content(current), _slice_content(body)):
                target = {**body, "metadata": {**body["metadata"], "name": name_of(current)}}
                del target["metadata"]["generateName"]

                def mutate(obj: Obj, body: Obj = body) -> Obj:
                    for field in ("addressType", "ports", "endpoints"):
                        obj[field] = body[field]
                    obj["metadata"]["labels"] = body["metadata"]["labels"]
                    return obj

                create_or_update(client, target, mutate=mutate)
                log.debug("endpointslice updated cluster=%s service=%s/%s slice=%s endpoints=%d",
                          self.cluster_name, ns, name, name_of(current), len(body["endpoints"]))
        for s in unmatched:
            self.expectations.deleted(key, name_of(s), uid_of(s))
            delete_quietly(client, ns, name_of(s))

    def _sync_endpoints(self, svc: Obj, desired: Obj) -> None:
        ns, name = meta(desired)["namespace"], meta(desired)["name"]
        current = self.caches[ENDPOINTS].get(ns, name)
        if current is not None and same_json(_endpoints_content(current), _endpoints_content(desired)):
            return

        def mutate(obj: Obj) -> Obj:
            obj.pop("subsets", None)
            if desired.get("subsets"):
                obj["subsets"] = desired["subsets"]
            obj["metadata"]["labels"] = desired["metadata"]["labels"]
            return obj

        if current is None and self.owner_gone(SERVICES, svc):
            return
        op, _ = create_or_update(self.client(ENDPOINTS), desired, mutate=mutate)
        if op == "created" and self.owner_gone(SERVICES, svc):
            delete_quietly(self.client(ENDPOINTS), ns, name)
        log.debug("endpoints %s cluster=%s service=%s/%s", op, self.cluster_name, ns, name)
