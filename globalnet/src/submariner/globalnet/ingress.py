"""Ingress: a global IP per exported Service or headless backend (dataplane.md §4.6).

Two halves, as upstream: the *export* side decides which GlobalIngressIPs should exist (one named after an
exported ClusterIP Service; one `pod-<pod>` per ready pod of an exported headless Service with a selector;
one `ep-<name>-<ip>` per Endpoints address of a selector-less one) and creates/deletes them; the
*GlobalIngressIP* side allocates an IP for each and makes it reachable: an internal Service
`submariner-<hash>` with the IP as externalIP (kube-proxy does the DNAT), or DNAT+SNAT rules for headless
backends. The Lighthouse agent reads `status.allocatedIP`, finding objects by `spec.serviceRef.name`
(ClusterIPService), `spec.podRef.name` (HeadlessServicePod) or the `headless-svc-endpoints-ip` annotation.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from submariner.broker.api import labels as L
from submariner.broker.api.multicluster import SERVICE_EXPORTS
from submariner.broker.api.submariner import (
    GLOBAL_INGRESS_IPS,
    TARGET_CLUSTER_IP_SERVICE,
    TARGET_HEADLESS_SERVICE_ENDPOINTS,
    TARGET_HEADLESS_SERVICE_POD,
)
from submariner.broker.kube import SERVICES, AlreadyExists, KubeError, NotFound, Obj, create_or_update, deep_copy
from submariner.globalnet.context import (
    CORE_ENDPOINTS,
    GIIP,
    INTERNAL,
    SERVICE,
    Allocation,
    Context,
    Key,
    Retry,
    deleting,
    ensure_ips,
    reserve,
)
from submariner.globalnet.ipam import IPAMError
from submariner.globalnet.names import headless_endpoints_ingress_name, headless_pod_ingress_name, internal_service_name
from submariner.globalnet.selectors import service_selector_matches
from submariner.globalnet.status import ALLOCATED, Reason, allocated_ip, condition, write_status

log = logging.getLogger(__name__)

_SUPPORTED_TYPES = ("", "ClusterIP", "NodePort", "LoadBalancer")
"""Upstream gives only ClusterIP Services a global IP; this project's Lighthouse agent exports NodePort and
LoadBalancer Services like ClusterIP ones (lighthouse-agent.md D5), so they get one too (their internal
Service is a plain ClusterIP Service with the same ports). ExternalName has nothing to reach."""


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.get("metadata") or {})


def is_headless(svc: Mapping[str, Any]) -> bool:
    return (svc.get("spec") or {}).get("clusterIP") == "None"


def internal_service(svc: Mapping[str, Any], global_ip: str) -> Obj:
    """The Service kube-proxy turns into `global IP:port → backends` (same ports and selector)."""
    meta, spec = _meta(svc), dict(svc.get("spec") or {})
    ports = [{k: p[k] for k in ("name", "protocol", "port", "targetPort", "appProtocol") if k in p}
             for p in spec.get("ports") or ()]
    out_spec: dict[str, Any] = {"type": "ClusterIP", "ports": ports, "externalIPs": [global_ip],
                                "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]}
    if spec.get("selector"):
        out_spec["selector"] = dict(spec["selector"])
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": internal_service_name(str(meta.get("name"))), "namespace": meta.get("namespace"),
                     "labels": {L.EXPORTED_SERVICE_REF: str(meta.get("name"))},
                     "finalizers": [L.INTERNAL_SERVICE_FINALIZER]},
        "spec": out_spec,
    }


def _giip(namespace: str, name: str, service: str, target: str, *, pod: str | None = None,
          annotation: tuple[str, str] | None = None) -> Obj:
    spec: dict[str, Any] = {"target": target}
    if target == TARGET_CLUSTER_IP_SERVICE:
        spec["serviceRef"] = {"name": service}
    if pod is not None:
        spec["podRef"] = {"name": pod}
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {L.SERVICE_REF: service}}
    if annotation is not None:
        meta["annotations"] = {annotation[0]: annotation[1]}
    return {"apiVersion": GLOBAL_INGRESS_IPS.api_version, "kind": GLOBAL_INGRESS_IPS.kind, "metadata": meta,
            "spec": spec}


class Ingress:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.giips = ctx.client(GLOBAL_INGRESS_IPS)
        self.services = ctx.client(SERVICES)
        self.endpoints = ctx.client(CORE_ENDPOINTS)
        ctx.informer(SERVICE_EXPORTS).add_handlers(on_add=self._export_event,
                                                   on_update=lambda o, n: self._export_event(n),
                                                   on_delete=self._export_event)
        ctx.informer(SERVICES).add_handlers(on_add=self._service_event, on_update=lambda o, n: self._service_event(n),
                                            on_delete=self._service_event)
        ctx.informer(CORE_ENDPOINTS).add_handlers(on_add=self._endpoints_event,
                                                  on_update=lambda o, n: self._endpoints_event(n),
                                                  on_delete=self._endpoints_event)
        ctx.informer(GLOBAL_INGRESS_IPS).add_handlers(on_add=self._giip_event,
                                                      on_update=lambda o, n: self._giip_event(n),
                                                      on_delete=self._giip_event)

    # ------------------------------------------------------------------ events → keys

    def _export_event(self, obj: Obj) -> None:
        meta = _meta(obj)
        self.ctx.enqueue(SERVICE, str(meta.get("namespace")), str(meta.get("name")))

    def _service_event(self, obj: Obj) -> None:
        meta = _meta(obj)
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        if (meta.get("labels") or {}).get(L.EXPORTED_SERVICE_REF):
            self.ctx.enqueue(INTERNAL, ns, name)
        elif self.ctx.get(SERVICE_EXPORTS, ns, name) is not None or self.ctx.get(GLOBAL_INGRESS_IPS, ns, name):
            # exported, or its ClusterIP GlobalIngressIP outlived the export (headless ones go with the export)
            self.ctx.enqueue(SERVICE, ns, name)

    def _endpoints_event(self, obj: Obj) -> None:
        meta = _meta(obj)
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        if self.ctx.get(SERVICE_EXPORTS, ns, name) is not None:
            self.ctx.enqueue(SERVICE, ns, name)
            self.ctx.enqueue(GIIP, ns, name)  # a selector-less ClusterIP Service: refresh the clone

    def _giip_event(self, obj: Obj) -> None:
        meta = _meta(obj)
        self.ctx.enqueue(GIIP, str(meta.get("namespace")), str(meta.get("name")))

    def pods_changed(self, namespace: str) -> None:
        """Pods of a namespace changed: its exported headless Services may need other GlobalIngressIPs."""
        for export in self.ctx.objects(SERVICE_EXPORTS):
            meta = _meta(export)
            if meta.get("namespace") == namespace:
                svc = self.ctx.get(SERVICES, namespace, str(meta.get("name")))
                if svc is not None and is_headless(svc):
                    self.ctx.enqueue(SERVICE, namespace, str(meta.get("name")))

    def _giips_of(self, namespace: str, service: str) -> list[Obj]:
        out = []
        for g in self.ctx.objects(GLOBAL_INGRESS_IPS):
            meta = _meta(g)
            if meta.get("namespace") == namespace and (meta.get("labels") or {}).get(L.SERVICE_REF) == service:
                out.append(g)
        return out

    # ------------------------------------------------------------------ restart

    def reserve(self) -> None:
        for obj in self.ctx.objects(GLOBAL_INGRESS_IPS):
            meta = _meta(obj)
            ip = allocated_ip(obj)
            if ip:
                reserve(self.ctx, (GIIP, str(meta.get("namespace")), str(meta.get("name"))), [ip])

    def enqueue_all(self) -> None:
        for export in self.ctx.objects(SERVICE_EXPORTS):
            self._export_event(export)
        for g in self.ctx.objects(GLOBAL_INGRESS_IPS):
            self._giip_event(g)
            label = (_meta(g).get("labels") or {}).get(L.SERVICE_REF)
            if label:
                self.ctx.enqueue(SERVICE, str(_meta(g).get("namespace")), str(label))
        for svc in self.ctx.objects(SERVICES):
            if (_meta(svc).get("labels") or {}).get(L.EXPORTED_SERVICE_REF):
                self._service_event(svc)

    # ------------------------------------------------------------------ exports → GlobalIngressIPs

    def desired_giips(self, namespace: str, name: str) -> dict[str, Obj]:
        export = self.ctx.get(SERVICE_EXPORTS, namespace, name)
        svc = self.ctx.get(SERVICES, namespace, name)
        if deleting(export) or deleting(svc):
            return {}
        assert svc is not None
        spec = svc.get("spec") or {}
        if not is_headless(svc):
            if str(spec.get("type") or "") not in _SUPPORTED_TYPES:
                return {}
            return {name: _giip(namespace, name, name, TARGET_CLUSTER_IP_SERVICE)}
        out: dict[str, Obj] = {}
        publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
        selector = spec.get("selector") or {}
        if selector:
            for pod in self.ctx.pods.in_namespace(namespace):
                pmeta, pstatus = _meta(pod), pod.get("status") or {}
                ip = pstatus.get("podIP")
                if not ip or pmeta.get("deletionTimestamp"):
                    continue
                if not service_selector_matches(selector, pmeta.get("labels")):
                    continue
                if pstatus.get("phase") != "Running" and not publish_not_ready:
                    continue
                pod_name = str(pmeta.get("name"))
                giip_name = headless_pod_ingress_name(pod_name)
                out[giip_name] = _giip(namespace, giip_name, name, TARGET_HEADLESS_SERVICE_POD, pod=pod_name,
                                       annotation=(L.HEADLESS_SVC_POD_IP, str(ip)))
            return out
        eps = self.ctx.get(CORE_ENDPOINTS, namespace, name) or {}
        for subset in eps.get("subsets") or ():
            addresses = list(subset.get("addresses") or ())
            if publish_not_ready:
                addresses += list(subset.get("notReadyAddresses") or ())
            for addr in addresses:
                ip = str(addr.get("ip") or "")
                if not ip:
                    continue
                giip_name = headless_endpoints_ingress_name(name, ip)
                out[giip_name] = _giip(namespace, giip_name, name, TARGET_HEADLESS_SERVICE_ENDPOINTS,
                                       annotation=(L.HEADLESS_SVC_ENDPOINTS_IP, ip))
        return out

    def reconcile_service(self, namespace: str, name: str) -> None:
        desired = self.desired_giips(namespace, name)
        existing = {str(_meta(g).get("name")): g for g in self._giips_of(namespace, name)}
        cluster_ip = self.ctx.get(GLOBAL_INGRESS_IPS, namespace, name)
        if cluster_ip is not None and (cluster_ip.get("spec") or {}).get("target") == TARGET_CLUSTER_IP_SERVICE:
            existing[name] = cluster_ip
        for gname in sorted(set(existing) - set(desired)):
            with contextlib.suppress(NotFound):
                self.giips.delete(namespace, gname)
        for gname, want in desired.items():
            have = existing.get(gname)
            if have is None:
                try:
                    self.giips.create(want)
                except AlreadyExists:
                    have = self.ctx.get(GLOBAL_INGRESS_IPS, namespace, gname)
                    if have is None:
                        raise Retry(f"GlobalIngressIP {namespace}/{gname} exists but is not cached yet") from None
            if have is not None and (have.get("spec") != want["spec"] or
                                     _meta(have).get("annotations") != want["metadata"].get("annotations")):
                create_or_update(self.giips, want)
            if gname == name:
                self.ctx.enqueue(GIIP, namespace, gname)  # the Service changed: refresh the internal Service

    # ------------------------------------------------------------------ GlobalIngressIP → IP + reachability

    def reconcile_giip(self, namespace: str, name: str) -> None:
        key: Key = (GIIP, namespace, name)
        obj = self.ctx.get(GLOBAL_INGRESS_IPS, namespace, name)
        if deleting(obj):
            self._release(key)
            return
        assert obj is not None
        spec = obj.get("spec") or {}
        target = spec.get("target")
        if target == TARGET_CLUSTER_IP_SERVICE:
            self._cluster_ip(key, obj, str((spec.get("serviceRef") or {}).get("name") or ""))
        elif target in (TARGET_HEADLESS_SERVICE_POD, TARGET_HEADLESS_SERVICE_ENDPOINTS):
            self._headless(key, obj, str(target))
        else:
            write_status(self.giips, obj, condition(ALLOCATED, False, Reason.INVALID_INPUT,
                                                    f"Unsupported target {target!r}"))

    def _allocate(self, key: Key, obj: Obj) -> str:
        try:
            return ensure_ips(self.ctx, key, 1)[0]
        except IPAMError as e:
            write_status(self.giips, obj, condition(ALLOCATED, False, Reason.IP_POOL_ALLOCATION_FAILED,
                                                    f"Error allocating a global IP from the pool: {e}"),
                         allocatedIP=None)
            raise Retry(str(e)) from e

    def _cluster_ip(self, key: Key, obj: Obj, service: str) -> None:
        svc = self.ctx.get(SERVICES, key[1], service)
        if deleting(svc):
            return  # the export side deletes this GlobalIngressIP
        assert svc is not None
        ip = self._allocate(key, obj)
        alloc = self.ctx.owned[key]
        alloc.detail["internal"] = internal_service_name(service)
        want = internal_service(svc, ip)
        current = self.ctx.get(SERVICES, key[1], alloc.detail["internal"])
        if current is not None and _meta(current).get("deletionTimestamp"):
            raise Retry("the internal Service is being deleted; recreating it once it is gone")
        try:
            create_or_update(self.services, want, mutate=lambda existing: _merge_internal(existing, want))
        except KubeError as e:
            write_status(self.giips, obj, condition(ALLOCATED, False, Reason.INTERNAL_SERVICE_CREATION_FAILED,
                                                    f"Error creating the internal Service: {e.message}"))
            raise Retry(e.message) from e
        if not (svc.get("spec") or {}).get("selector"):
            self._clone_endpoints(key[1], service, alloc.detail["internal"])
        write_status(self.giips, obj, condition(ALLOCATED, True, Reason.SUCCESS, "Allocated global IP"),
                     allocatedIP=ip)

    def _clone_endpoints(self, namespace: str, service: str, internal: str) -> None:
        """A selector-less Service's Endpoints, copied to the internal name (kube-proxy needs them there)."""
        eps = self.ctx.get(CORE_ENDPOINTS, namespace, service)
        if eps is None:
            return
        want = {"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": internal, "namespace": namespace, "labels": {L.ENDPOINTS_CLONED_FROM: service}},
                "subsets": deep_copy({"s": eps.get("subsets") or []})["s"]}
        create_or_update(self.endpoints, want)

    def _headless(self, key: Key, obj: Obj, target: str) -> None:
        annotation = L.HEADLESS_SVC_POD_IP if target == TARGET_HEADLESS_SERVICE_POD else L.HEADLESS_SVC_ENDPOINTS_IP
        backend = (_meta(obj).get("annotations") or {}).get(annotation)
        if not backend:
            return
        ip = self._allocate(key, obj)
        table = self.ctx.state.headless_pods if target == TARGET_HEADLESS_SERVICE_POD else \
            self.ctx.state.headless_endpoints
        skey = f"{key[1]}/{key[2]}"
        self.ctx.owned[key].detail["rules"] = target
        if table.get(skey) != (str(backend), ip):
            table[skey] = (str(backend), ip)
            self.ctx.changed()
        self.ctx.later(key, lambda ok: self._report(key, ip, ok))

    def _report(self, key: Key, ip: str, ok: bool) -> None:
        obj = self.ctx.get(GLOBAL_INGRESS_IPS, key[1], key[2])
        alloc = self.ctx.owned.get(key)
        if deleting(obj) or alloc is None or alloc.ips != (ip,):
            return
        assert obj is not None
        if ok:
            write_status(self.giips, obj, condition(ALLOCATED, True, Reason.SUCCESS, "Allocated global IP"),
                         allocatedIP=ip)
        else:
            write_status(self.giips, obj, condition(ALLOCATED, False, Reason.PROGRAM_IPTABLE_RULES_FAILED,
                                                    "Error programming the ingress rules"))
            raise Retry("rules not programmed")

    def _release(self, key: Key) -> None:
        alloc: Allocation | None = self.ctx.release(key)
        skey = f"{key[1]}/{key[2]}"
        state = self.ctx.state
        if state.headless_pods.pop(skey, None) is not None or state.headless_endpoints.pop(skey, None) is not None:
            self.ctx.changed()
        if alloc is not None and alloc.detail.get("internal"):
            self.delete_internal(key[1], str(alloc.detail["internal"]))

    # ------------------------------------------------------------------ internal Services

    def delete_internal(self, namespace: str, name: str) -> None:
        """Finalizer off, then delete (the finalizer only guards against deletion behind Globalnet's back)."""
        svc = self.ctx.get(SERVICES, namespace, name)
        if svc is not None and L.INTERNAL_SERVICE_FINALIZER in (_meta(svc).get("finalizers") or ()):
            left = [f for f in _meta(svc).get("finalizers") or () if f != L.INTERNAL_SERVICE_FINALIZER]
            with contextlib.suppress(NotFound):
                self.services.patch(namespace, name, {"metadata": {"finalizers": left or None}})
        with contextlib.suppress(NotFound):
            self.services.delete(namespace, name)
        clone = self.ctx.get(CORE_ENDPOINTS, namespace, name)
        if clone is not None and (_meta(clone).get("labels") or {}).get(L.ENDPOINTS_CLONED_FROM):
            with contextlib.suppress(NotFound):
                self.endpoints.delete(namespace, name)

    def reconcile_internal(self, namespace: str, name: str) -> None:
        """A `submariner-*` Service whose GlobalIngressIP is gone (missed delete, restart) is removed."""
        svc = self.ctx.get(SERVICES, namespace, name)
        if svc is None:
            return
        ref = (_meta(svc).get("labels") or {}).get(L.EXPORTED_SERVICE_REF)
        if not ref:
            return
        if name != internal_service_name(str(ref)):
            return  # not one of ours
        giip = self.ctx.get(GLOBAL_INGRESS_IPS, namespace, str(ref))
        if deleting(giip) or (giip or {}).get("spec", {}).get("target") != TARGET_CLUSTER_IP_SERVICE:
            self.delete_internal(namespace, name)
        elif _meta(svc).get("deletionTimestamp"):
            # deleted behind Globalnet's back: let it go, and recreate it for the still-exported Service
            self.delete_internal(namespace, name)
            self.ctx.queue.add_after((GIIP, namespace, str(ref)), 0.2)


def _merge_internal(existing: Obj, want: Obj) -> Obj:
    """Keep what the API server assigned (clusterIP, families); set our labels, finalizer and spec fields."""
    out = deep_copy(existing)
    meta = out.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **want["metadata"]["labels"]}
    finalizers = list(meta.get("finalizers") or ())
    if L.INTERNAL_SERVICE_FINALIZER not in finalizers:
        finalizers.append(L.INTERNAL_SERVICE_FINALIZER)
    meta["finalizers"] = finalizers
    spec = out.setdefault("spec", {})
    for k in ("ports", "externalIPs", "ipFamilyPolicy"):
        spec[k] = want["spec"][k]
    if "selector" in want["spec"]:
        spec["selector"] = want["spec"]["selector"]
    else:
        spec.pop("selector", None)
    return out
