"""The resource types the server serves: built-in ones and those defined by CustomResourceDefinitions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One served resource: enough to route requests, store objects and answer discovery."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False
    verbs: tuple[str, ...] = ALL_VERBS
    # DNS-1123 "label" (63 chars, no dots) for namespaces/services; "subdomain" for most; "path" for RBAC.
    name_rule: str = "subdomain"
    # CRD-only: the version's additionalPrinterColumns, used for `kubectl get` tables.
    printer_columns: tuple[dict[str, Any], ...] = ()
    from_crd: bool = False
    # All versions served for this resource (CRDs may serve several; objects are stored once).
    served_versions: tuple[str, ...] = field(default=())

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Storage key: version-independent, so every served version sees the same objects."""
        return f"{self.group}/{self.plural}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _core(plural: str, singular: str, kind: str, namespaced: bool = True, **kw: Any) -> ResourceType:
    return ResourceType("", "v1", plural, singular, kind, namespaced, **kw)


BUILTIN: tuple[ResourceType, ...] = (
    _core("namespaces", "namespace", "Namespace", False, short_names=("ns",), has_status=True,
          name_rule="label", verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _core("services", "service", "Service", short_names=("svc",), has_status=True, name_rule="label",
          categories=("all",)),
    _core("endpoints", "endpoints", "Endpoints", short_names=("ep",)),
    _core("pods", "pod", "Pod", short_names=("po",), has_status=True, categories=("all",)),
    _core("nodes", "node", "Node", False, short_names=("no",), has_status=True),
    _core("configmaps", "configmap", "ConfigMap", short_names=("cm",)),
    _core("secrets", "secret", "Secret"),
    _core("serviceaccounts", "serviceaccount", "ServiceAccount", short_names=("sa",)),
    _core("events", "event", "Event", short_names=("ev",)),
    ResourceType("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", True),
    ResourceType("coordination.k8s.io", "v1", "leases", "lease", "Lease", True),
    ResourceType("apps", "v1", "deployments", "deployment", "Deployment", True, short_names=("deploy",),
                 has_status=True, categories=("all",)),
    ResourceType("apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, short_names=("ds",),
                 has_status=True, categories=("all",)),
    ResourceType("apps", "v1", "statefulsets", "statefulset", "StatefulSet", True, short_names=("sts",),
                 has_status=True, categories=("all",)),
    ResourceType("batch", "v1", "jobs", "job", "Job", True, has_status=True, categories=("all",)),
    ResourceType("batch", "v1", "cronjobs", "cronjob", "CronJob", True, short_names=("cj",), has_status=True,
                 categories=("all",)),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", True, name_rule="path"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", True,
                 name_rule="path"),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", False,
                 name_rule="path"),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding",
                 "ClusterRoleBinding", False, name_rule="path"),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "customresourcedefinition",
                 "CustomResourceDefinition", False, short_names=("crd", "crds"), has_status=True),
)


def resource_types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """Every served version of a CRD as a ResourceType (they share one storage key)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    served = tuple(v["name"] for v in versions)
    result = []
    for v in versions:
        subresources = v.get("subresources") or {}
        result.append(
            ResourceType(
                group=group,
                version=v["name"],
                plural=names.get("plural", ""),
                singular=names.get("singular") or names.get("kind", "").lower(),
                kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                has_status="status" in subresources,
                printer_columns=tuple(v.get("additionalPrinterColumns") or ()),
                from_crd=True,
                served_versions=served,
            )
        )
    return result


class Registry:
    """Lookup of served resources by (group, version, plural); CRDs add and remove entries at run time."""

    def __init__(self, types: Iterable[ResourceType] = BUILTIN) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._crd_owned: dict[str, list[ResourceType]] = {}
        for t in types:
            self._by_gvr[(t.group, t.version, t.plural)] = t

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def by_key(self, key: str) -> ResourceType | None:
        """Any served version for a storage key (for controllers that work on stored objects)."""
        for t in self._by_gvr.values():
            if t.key == key:
                return t
        return None

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for t in self._by_gvr.values():
            if t.group == group and t.version == version and t.kind == kind:
                return t
        return None

    def all(self) -> Iterator[ResourceType]:
        return iter(self._by_gvr.values())

    def add_crd(self, crd_name: str, types: list[ResourceType]) -> None:
        self.remove_crd(crd_name)
        for t in types:
            self._by_gvr[(t.group, t.version, t.plural)] = t
        self._crd_owned[crd_name] = types

    def remove_crd(self, crd_name: str) -> list[ResourceType]:
        removed = self._crd_owned.pop(crd_name, [])
        for t in removed:
            self._by_gvr.pop((t.group, t.version, t.plural), None)
        return removed

    def group_versions(self) -> dict[str, list[str]]:
        """group -> served versions, preferred (first seen) first; core group is ''."""
        out: dict[str, list[str]] = {}
        for t in self._by_gvr.values():
            versions = out.setdefault(t.group, [])
            if t.version not in versions:
                versions.append(t.version)
        return out
