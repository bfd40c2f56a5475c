"""Per-resource behaviour of kube-apiserver that clients rely on.

Services get ClusterIPs and NodePorts; service-account token Secrets get a token (the token controller);
Namespaces get a phase and are emptied before they disappear (the namespace controller); CRDs start and
stop serving their resources.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .allocators import ClusterIPAllocator, NodePortAllocator
from .errors import ApiError, invalid
from .pki import generate_token
from .resources import ResourceType, resource_types_from_crd
from .store import Event, Obj

if TYPE_CHECKING:
    from .core import Api

CRD_KEY = "apiextensions.k8s.io/customresourcedefinitions"
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"


@dataclass
class Context:
    cluster_ips: ClusterIPAllocator
    node_ports: NodePortAllocator = field(default_factory=NodePortAllocator)
    ca_pem: bytes = b""
    # bearer token -> (namespace, service account name); secret (ns, name) -> token
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)
    token_of_secret: dict[tuple[str, str], str] = field(default_factory=dict)


def startup(api: Api) -> None:
    """Rebuild allocations from stored Services (never hand out an address that is held)."""
    for entry in api.store.items("services"):
        spec = entry.obj.get("spec") or {}
        for ip in _cluster_ips(spec):
            if api.adm.cluster_ips.contains(ip):
                api.adm.cluster_ips.reserve(ip)
        for port in spec.get("ports") or ():
            if port.get("nodePort"):
                with contextlib.suppress(ApiError):
                    api.adm.node_ports.reserve(int(port["nodePort"]))


def _cluster_ips(spec: dict[str, Any]) -> list[str]:
    ips = [ip for ip in spec.get("clusterIPs") or () if ip and ip != "None"]
    if not ips and spec.get("clusterIP") and spec["clusterIP"] != "None":
        ips = [spec["clusterIP"]]
    return ips


# --------------------------------------------------------------------------- events (indexes, CRDs)

def on_event(api: Api, event: Event) -> None:
    if event.key == "secrets":
        _index_token(api.adm, event)
    elif event.key == CRD_KEY:
        name = event.name
        if event.type == "DELETED":
            for t in api.registry.remove_crd(name):
                if api.registry.by_key(t.key) is None:
                    api.hub.close_key(t.key)
        else:
            api.registry.add_crd(name, resource_types_from_crd(event.obj))


def _index_token(ctx: Context, event: Event) -> None:
    ident = (event.namespace, event.name)
    old = ctx.token_of_secret.pop(ident, None)
    if old is not None:
        ctx.tokens.pop(old, None)
    if event.type == "DELETED":
        return
    obj = event.obj
    if obj.get("type") != SA_TOKEN_TYPE:
        return
    sa = (obj["metadata"].get("annotations") or {}).get(SA_NAME_ANNOTATION)
    raw = (obj.get("data") or {}).get("token")
    if not sa or not raw:
        return
    try:
        token = base64.b64decode(raw).decode()
    except (binascii.Error, UnicodeDecodeError):
        return
    ctx.tokens[token] = (event.namespace, sa)
    ctx.token_of_secret[ident] = token


# --------------------------------------------------------------------------- create / update

def admit_create(api: Api, rtype: ResourceType, obj: Obj, *, dry_run: bool) -> None:
    key = rtype.key
    _apply_defaults(key, obj)
    if key == "services":
        _service_defaults(obj)
        _allocate_service(api.adm, obj, None, dry_run=dry_run)
    elif key == "secrets":
        _secret_data(obj)
        _fill_token(api.adm, obj)
    elif key == "namespaces":
        name = obj["metadata"]["name"]
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
    elif key == "pods":
        obj["status"] = {"phase": "Pending"}
    elif key == CRD_KEY:
        _check_crd(api, obj)
        obj["status"] = _crd_status(obj)
    elif key == "discovery.k8s.io/endpointslices" and not obj.get("addressType"):
        raise invalid("EndpointSlice", obj["metadata"].get("name", ""),
                      [("addressType", "Required value")], "discovery.k8s.io")


def admit_update(api: Api, rtype: ResourceType, old: Obj, new: Obj, *, dry_run: bool) -> None:
    key = rtype.key
    _apply_defaults(key, new)
    if key == "services":
        _service_defaults(new)
        _allocate_service(api.adm, new, old, dry_run=dry_run)
    elif key == "secrets":
        _secret_data(new)
        if new.get("type") != old.get("type"):
            raise invalid("Secret", new["metadata"]["name"], [("type", "field is immutable")])
        _fill_token(api.adm, new)
    elif key == "namespaces":
        labels = new["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = new["metadata"]["name"]
        new["spec"] = copy.deepcopy(old.get("spec") or {"finalizers": ["kubernetes"]})
        if "status" not in new:
            new["status"] = copy.deepcopy(old.get("status") or {"phase": "Active"})
    elif key == CRD_KEY:
        _check_crd(api, new)
        new["status"] = _crd_status(new)


_WORKLOAD_DEFAULTS: dict[str, dict[str, Any]] = {
    "apps/deployments": {
        "replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
    },
    "apps/statefulsets": {
        "replicas": 1, "revisionHistoryLimit": 10, "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
    },
    "apps/daemonsets": {
        "revisionHistoryLimit": 10,
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
    },
}


def _apply_defaults(key: str, obj: Obj) -> None:
    """The defaults kube-apiserver fills in that controllers and `kubectl rollout` rely on."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if key == "pods":
        _pod_spec_defaults(spec)
        return
    defaults = _WORKLOAD_DEFAULTS.get(key)
    if defaults is None:
        return
    for field_name, value in defaults.items():
        if field_name not in spec:
            spec[field_name] = copy.deepcopy(value)
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        _pod_spec_defaults(template["spec"])


def _pod_spec_defaults(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    for container in [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]:
        if not isinstance(container, dict):
            continue
        image = str(container.get("image") or "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2] if "@" not in image else "digest"
        container.setdefault("imagePullPolicy", "Always" if tag in ("", "latest") else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        for port in container.get("ports") or ():
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")


def _service_defaults(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        raise invalid("Service", obj["metadata"].get("name", ""), [("spec", "must be an object")])
    stype = spec.setdefault("type", "ClusterIP")
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        raise invalid("Service", obj["metadata"].get("name", ""),
                      [("spec.type", f'Unsupported value: "{stype}": supported values: "ClusterIP", '
                                     '"ExternalName", "LoadBalancer", "NodePort"')])
    spec.setdefault("sessionAffinity", "None")
    ports = spec.get("ports") or []
    if stype != "ExternalName" and not ports and spec.get("clusterIP") != "None":
        raise invalid("Service", obj["metadata"].get("name", ""), [("spec.ports", "Required value")])
    for port in ports:
        if not isinstance(port, dict) or not isinstance(port.get("port"), int) or not 0 < port["port"] < 65536:
            raise invalid("Service", obj["metadata"].get("name", ""),
                          [("spec.ports[].port", "must be between 1 and 65535, inclusive")])
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port["port"])
    if stype != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")


def _allocate_service(ctx: Context, obj: Obj, old: Obj | None, *, dry_run: bool) -> None:
    spec = obj["spec"]
    name = obj["metadata"].get("name", "")
    old_spec = (old or {}).get("spec") or {}
    old_ips = _cluster_ips(old_spec)
    old_headless = old_spec.get("clusterIP") == "None"
    taken: list[str] = []
    if spec["type"] == "ExternalName":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
    else:
        wanted = spec.get("clusterIP") or ((spec.get("clusterIPs") or [""])[0])
        if old is not None:
            if not wanted:
                wanted = "None" if old_headless else (old_ips[0] if old_ips else "")
            elif (old_ips and wanted != old_ips[0]) or (old_headless and wanted != "None"):
                raise invalid("Service", name, [("spec.clusterIPs[0]", f'Invalid value: "{wanted}": '
                                                 "field is immutable")])
        if wanted == "None":
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]
        else:
            if old is not None and old_ips and wanted == old_ips[0]:
                ip = wanted
            elif wanted:
                ctx.cluster_ips.reserve(wanted)
                ip = wanted
                taken.append(ip)
            else:
                ip = ctx.cluster_ips.allocate()
                taken.append(ip)
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        spec.setdefault("ipFamilies", ["IPv6" if ":" in spec["clusterIP"] else "IPv4"]
                        if spec["clusterIP"] != "None" else ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    held_ports = {p.get("nodePort") for p in old_spec.get("ports") or () if p.get("nodePort")}
    new_ports: list[int] = []
    try:
        if spec["type"] in ("NodePort", "LoadBalancer"):
            for port in spec.get("ports") or ():
                node_port = port.get("nodePort")
                if node_port and node_port in held_ports:
                    continue
                if node_port:
                    ctx.node_ports.reserve(int(node_port))
                else:
                    port["nodePort"] = ctx.node_ports.allocate()
                new_ports.append(port["nodePort"])
        else:
            for port in spec.get("ports") or ():
                port.pop("nodePort", None)
    except ApiError:
        for ip in taken:
            ctx.cluster_ips.release(ip)
        for p in new_ports:
            ctx.node_ports.release(p)
        raise
    if dry_run:
        for ip in taken:
            ctx.cluster_ips.release(ip)
        for p in new_ports:
            ctx.node_ports.release(p)
        return
    kept = {p.get("nodePort") for p in spec.get("ports") or () if p.get("nodePort")}
    for p in held_ports - kept:
        ctx.node_ports.release(int(p))
    if old is not None and spec["type"] == "ExternalName":
        for ip in old_ips:
            ctx.cluster_ips.release(ip)


def _secret_data(obj: Obj) -> None:
    obj.setdefault("type", "Opaque")
    data = obj.get("data") or {}
    if not isinstance(data, dict):
        raise invalid("Secret", obj["metadata"].get("name", ""), [("data", "must be a map of strings")])
    for k, v in data.items():
        try:
            base64.b64decode(v, validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise invalid("Secret", obj["metadata"].get("name", ""),
                          [(f"data[{k}]", "must be base64-encoded")]) from exc
    string_data = obj.pop("stringData", None)
    if string_data:
        if not isinstance(string_data, dict):
            raise invalid("Secret", obj["metadata"].get("name", ""), [("stringData", "must be a map")])
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()
    if data:
        obj["data"] = data


def _fill_token(ctx: Context, obj: Obj) -> None:
    """The token controller: a service-account token Secret gets token, ca.crt and namespace."""
    if obj.get("type") != SA_TOKEN_TYPE:
        return
    annotations = obj["metadata"].get("annotations") or {}
    if not annotations.get(SA_NAME_ANNOTATION):
        raise invalid("Secret", obj["metadata"].get("name", ""),
                      [(f"metadata.annotations[{SA_NAME_ANNOTATION}]", "Required value")])
    data = obj.setdefault("data", {})
    if not data.get("token"):
        data["token"] = base64.b64encode(generate_token().encode()).decode()
    data["ca.crt"] = base64.b64encode(ctx.ca_pem).decode()
    data["namespace"] = base64.b64encode((obj["metadata"].get("namespace") or "").encode()).decode()


def _check_crd(api: Api, obj: Obj) -> None:
    name = obj["metadata"].get("name", "")
    spec = obj.get("spec")
    causes: list[tuple[str, str]] = []
    if not isinstance(spec, dict):
        raise invalid("CustomResourceDefinition", name, [("spec", "Required value")], "apiextensions.k8s.io")
    group = spec.get("group") or ""
    names = spec.get("names") or {}
    plural = names.get("plural") or ""
    if not group or "." not in group:
        causes.append(("spec.group", f'Invalid value: "{group}": should be a domain with at least one dot'))
    if not plural:
        causes.append(("spec.names.plural", "Required value"))
    if not names.get("kind"):
        causes.append(("spec.names.kind", "Required value"))
    if plural and group and name != f"{plural}.{group}":
        causes.append(("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(("spec.scope", f'Unsupported value: "{spec.get("scope")}": supported values: '
                                     '"Cluster", "Namespaced"'))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(("spec.versions", "Required value: must have exactly one version marked as storage"))
    elif sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        causes.append(("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
    elif any(not isinstance(v, dict) or not v.get("name") for v in versions):
        causes.append(("spec.versions[].name", "Required value"))
    else:
        for v in versions:
            existing = api.registry.get(group, v["name"], plural)
            if existing is not None and not existing.from_crd:
                causes.append(("spec.names.plural", f'Invalid value: "{plural}": is served by a built-in API'))
                break
    if causes:
        raise invalid("CustomResourceDefinition", name, causes, "apiextensions.k8s.io")


def _crd_status(obj: Obj) -> Obj:
    spec = obj["spec"]
    names = dict(spec.get("names") or {})
    names.setdefault("singular", names.get("kind", "").lower())
    names.setdefault("listKind", names.get("kind", "") + "List")
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    now = obj["metadata"].get("creationTimestamp")
    return {
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": [storage],
    }


# --------------------------------------------------------------------------- deletion

def on_marked_for_deletion(api: Api, rtype: ResourceType, obj: Obj) -> None:
    if rtype.key == "namespaces":
        obj.setdefault("status", {})["phase"] = "Terminating"


def after_marked_for_deletion(api: Api, rtype: ResourceType, obj: Obj) -> None:
    """The namespace controller: empty a terminating namespace, then let it go."""
    if rtype.key != "namespaces":
        return
    ns = obj["metadata"]["name"]
    for key in api.store.resource_keys():
        if key == "namespaces":
            continue
        for entry in list(api.store.items(key, ns)):
            api.delete_internal(key, ns, entry.obj["metadata"]["name"])
    maybe_finish_namespace(api, ns)


def maybe_finish_namespace(api: Api, ns: str) -> None:
    entry = api.store.get("namespaces", "", ns)
    if entry is None or not entry.obj["metadata"].get("deletionTimestamp"):
        return
    for key in api.store.resource_keys():
        if key != "namespaces" and api.store.count(key, ns):
            return
    done = copy.deepcopy(entry.obj)
    done["spec"] = {"finalizers": []}
    if done["metadata"].get("finalizers"):
        api.put_internal("namespaces", done)
        return
    final = api.store.delete("namespaces", "", ns)
    if final is not None:
        on_deleted(api, api.registry.get("", "v1", "namespaces"), final.obj)


def on_deleted(api: Api, rtype: ResourceType | None, obj: Obj) -> None:
    key = rtype.key if rtype else ""
    meta = obj["metadata"]
    if key == "services":
        spec = obj.get("spec") or {}
        for ip in _cluster_ips(spec):
            api.adm.cluster_ips.release(ip)
        for port in spec.get("ports") or ():
            if port.get("nodePort"):
                api.adm.node_ports.release(int(port["nodePort"]))
    elif key == "serviceaccounts":
        ns = meta.get("namespace") or ""
        for entry in list(api.store.items("secrets", ns)):
            s = entry.obj
            if s.get("type") == SA_TOKEN_TYPE and \
                    (s["metadata"].get("annotations") or {}).get(SA_NAME_ANNOTATION) == meta["name"]:
                api.delete_internal("secrets", ns, s["metadata"]["name"])
    elif key == CRD_KEY:
        spec = obj.get("spec") or {}
        group = spec.get("group", "")
        plural = (spec.get("names") or {}).get("plural", "")
        cr_key = f"{group}/{plural}"
        for entry in list(api.store.items(cr_key)):
            m = entry.obj["metadata"]
            api.store.delete(cr_key, m.get("namespace") or "", m["name"])
