"""Kubernetes RBAC authorization over the stored Role/ClusterRole/RoleBinding/ClusterRoleBinding objects.

Semantics follow kube-apiserver's RBAC authorizer (rule matching, subject matching, the 403 message text), so
that clients scoped with real RBAC manifests - the Broker's service accounts above all - behave the same here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError

RBAC_GROUP = "rbac.authorization.k8s.io"
ROLES_KEY = f"{RBAC_GROUP}/roles"
ROLE_BINDINGS_KEY = f"{RBAC_GROUP}/rolebindings"
CLUSTER_ROLES_KEY = f"{RBAC_GROUP}/clusterroles"
CLUSTER_ROLE_BINDINGS_KEY = f"{RBAC_GROUP}/clusterrolebindings"
RBAC_KEYS = (ROLES_KEY, ROLE_BINDINGS_KEY, CLUSTER_ROLES_KEY, CLUSTER_ROLE_BINDINGS_KEY)

SYSTEM_MASTERS = "system:masters"
SYSTEM_AUTHENTICATED = "system:authenticated"
SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class UserInfo:
    """An authenticated identity: the user name and its groups."""

    name: str
    groups: tuple[str, ...] = ()


def service_account_user(namespace: str, name: str) -> UserInfo:
    """The identity a service account token authenticates as (same name and groups as Kubernetes)."""
    return UserInfo(
        name=f"{SA_PREFIX}{namespace}:{name}",
        groups=("system:serviceaccounts", f"system:serviceaccounts:{namespace}", SYSTEM_AUTHENTICATED),
    )


@dataclass(frozen=True)
class Attributes:
    """What a request does, as kube-apiserver's RequestInfo describes it.

    For resource requests on a namespace object itself (`/api/v1/namespaces/NS`), `namespace` is NS, as in
    Kubernetes, so RoleBindings in NS apply. For list/watch, `name` is set only when the request selects a
    single object (fieldSelector metadata.name=X), which lets resourceNames rules allow it.
    """

    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""
    is_resource_request: bool = True


# --- compiled rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """A PolicyRule prepared for fast matching; None means "any"."""

    verbs: frozenset[str] | None
    groups: frozenset[str] | None
    resources: frozenset[str]
    any_resource: bool
    sub_wildcards: frozenset[str]  # subresources granted by "*/sub"
    names: frozenset[str] | None
    urls: frozenset[str]
    url_prefixes: tuple[str, ...]
    any_url: bool
    raw: dict[str, Any] = field(compare=False, hash=False)

    @classmethod
    def compile(cls, rule: dict[str, Any]) -> _Rule:
        def strs(key: str) -> list[str]:
            return [str(v) for v in rule.get(key) or []]

        verbs, groups, resources = strs("verbs"), strs("apiGroups"), strs("resources")
        names, urls = strs("resourceNames"), strs("nonResourceURLs")
        return cls(
            verbs=None if "*" in verbs else frozenset(verbs),
            groups=None if "*" in groups else frozenset(groups),
            resources=frozenset(resources),
            any_resource="*" in resources,
            sub_wildcards=frozenset(r[2:] for r in resources if r.startswith("*/") and len(r) > 2),
            names=frozenset(names) if names else None,
            urls=frozenset(urls),
            url_prefixes=tuple(u[:-1] for u in urls if u.endswith("*") and u != "*"),
            any_url="*" in urls,
            raw=rule,
        )

    def allows(self, a: Attributes) -> bool:
        if self.verbs is not None and a.verb not in self.verbs:
            return False
        if not a.is_resource_request:
            return self.any_url or a.path in self.urls or any(a.path.startswith(p) for p in self.url_prefixes)
        if self.groups is not None and a.api_group not in self.groups:
            return False
        if not self.any_resource:
            combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
            if combined not in self.resources and not (a.subresource and a.subresource in self.sub_wildcards):
                return False
        # resourceNames constrain only when present; a create (no name yet) never matches them.
        return self.names is None or a.name in self.names


_Grant = tuple[_Rule, str]  # a rule and the human description of where it came from


@dataclass
class _UserRules:
    cluster: list[_Grant] = field(default_factory=list)
    namespaced: dict[str, list[_Grant]] = field(default_factory=dict)
    cluster_errors: list[str] = field(default_factory=list)
    namespace_errors: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Index:
    """All RBAC objects of one generation, roles pre-compiled."""

    roles: dict[tuple[str, str], list[_Rule]]
    cluster_roles: dict[str, list[_Rule]]
    role_bindings: list[dict[str, Any]]
    cluster_role_bindings: list[dict[str, Any]]


def _describe_subject(s: dict[str, Any], binding_ns: str) -> str:
    kind, name = s.get("kind", ""), s.get("name", "")
    if kind == "ServiceAccount":
        # Kubernetes prints "name/namespace" here (sic).
        return f'{kind} "{name}/{s.get("namespace") or binding_ns}"'
    return f'{kind} "{name}"'


def _matching_subject(
    user: UserInfo, subjects: Iterable[dict[str, Any]], binding_ns: str
) -> dict[str, Any] | None:
    for s in subjects:
        kind, name = s.get("kind"), s.get("name", "")
        if kind == "User":
            if user.name == name:
                return s
        elif kind == "Group":
            if name in user.groups:
                return s
        elif kind == "ServiceAccount":
            ns = s.get("namespace") or binding_ns
            if ns and user.name == f"{SA_PREFIX}{ns}:{name}":
                return s
    return None


class Authorizer:
    """Decides requests by RBAC; the rule set per user is cached until `invalidate()`.

    `list_objects(storage_key)` returns every stored object of one of RBAC_KEYS. The server must call
    `invalidate()` whenever any RBAC object is created, changed or deleted.
    """

    def __init__(
        self, list_objects: Callable[[str], Iterable[dict[str, Any]]], *, cache_size: int = 1024
    ) -> None:
        self._list = list_objects
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._generation = 0
        self._index: _Index | None = None
        self._users: OrderedDict[UserInfo, _UserRules] = OrderedDict()

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._index = None
            self._users.clear()

    def authorize(self, user: UserInfo, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason). On denial the reason is empty unless bindings referenced missing roles."""
        if SYSTEM_MASTERS in user.groups:
            return True, f'allowed by group "{SYSTEM_MASTERS}"'
        rules = self._rules(user)
        for rule, source in rules.cluster:
            if rule.allows(attrs):
                return True, f"RBAC: allowed by {source}"
        errors = list(rules.cluster_errors)
        if attrs.namespace and attrs.is_resource_request:
            for rule, source in rules.namespaced.get(attrs.namespace, ()):
                if rule.allows(attrs):
                    return True, f"RBAC: allowed by {source}"
            errors += rules.namespace_errors.get(attrs.namespace, [])
        if not errors:
            return False, ""
        return False, "RBAC: " + (errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")

    def rules_for(self, user: UserInfo, namespace: str = "") -> list[dict[str, Any]]:
        """PolicyRules that apply to `user` in `namespace`, cluster-wide ones included (for rules reviews)."""
        if SYSTEM_MASTERS in user.groups:
            return [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ]
        rules = self._rules(user)
        grants = list(rules.cluster)
        if namespace:
            grants += rules.namespaced.get(namespace, [])
        return [rule.raw for rule, _ in grants]

    # --- internals ---

    def _rules(self, user: UserInfo) -> _UserRules:
        with self._lock:
            cached = self._users.get(user)
            if cached is not None:
                self._users.move_to_end(user)
                return cached
            generation = self._generation
            index = self._index
        if index is None:
            index = self._build_index()
        compiled = self._compile(user, index)
        with self._lock:
            if generation == self._generation:  # drop results computed from data that changed meanwhile
                self._index = index
                self._users[user] = compiled
                while len(self._users) > self._cache_size:
                    self._users.popitem(last=False)
        return compiled

    def _build_index(self) -> _Index:
        roles: dict[tuple[str, str], list[_Rule]] = {}
        for r in self._list(ROLES_KEY):
            meta = r.get("metadata") or {}
            roles[(meta.get("namespace", ""), meta.get("name", ""))] = [
                _Rule.compile(x) for x in r.get("rules") or []
            ]
        cluster_roles = {
            (r.get("metadata") or {}).get("name", ""): [_Rule.compile(x) for x in r.get("rules") or []]
            for r in self._list(CLUSTER_ROLES_KEY)
        }
        return _Index(
            roles=roles,
            cluster_roles=cluster_roles,
            role_bindings=list(self._list(ROLE_BINDINGS_KEY)),
            cluster_role_bindings=list(self._list(CLUSTER_ROLE_BINDINGS_KEY)),
        )

    @staticmethod
    def _compile(user: UserInfo, index: _Index) -> _UserRules:
        out = _UserRules()
        for b in index.cluster_role_bindings:
            subject = _matching_subject(user, b.get("subjects") or [], "")
            if subject is None:
                continue
            ref = b.get("roleRef") or {}
            name = ref.get("name", "")
            if ref.get("kind") != "ClusterRole":
                continue
            rules = index.cluster_roles.get(name)
            if rules is None:
                out.cluster_errors.append(f'clusterrole.{RBAC_GROUP} "{name}" not found')
                continue
            source = (
                f'ClusterRoleBinding "{(b.get("metadata") or {}).get("name", "")}" of ClusterRole "{name}" '
                f"to {_describe_subject(subject, '')}"
            )
            out.cluster.extend((r, source) for r in rules)
        for b in index.role_bindings:
            meta = b.get("metadata") or {}
            ns = meta.get("namespace", "")
            subject = _matching_subject(user, b.get("subjects") or [], ns)
            if subject is None or not ns:
                continue
            ref = b.get("roleRef") or {}
            kind, name = ref.get("kind", ""), ref.get("name", "")
            if kind == "ClusterRole":
                found = index.cluster_roles.get(name)
                missing = f'clusterrole.{RBAC_GROUP} "{name}" not found'
            elif kind == "Role":
                found = index.roles.get((ns, name))
                missing = f'role.{RBAC_GROUP} "{name}" not found'
            else:
                continue
            if found is None:
                out.namespace_errors.setdefault(ns, []).append(missing)
                continue
            source = (
                f'RoleBinding "{ns}/{meta.get("name", "")}" of {kind} "{name}" '
                f"to {_describe_subject(subject, ns)}"
            )
            out.namespaced.setdefault(ns, []).extend((r, source) for r in found)
        return out


# --- 403 text -------------------------------------------------------------------------------------------


def forbidden_message(user: UserInfo, attrs: Attributes, reason: str = "") -> str:
    """The message kube-apiserver puts in a 403 Status, e.g.

    `secrets is forbidden: User "u" cannot list resource "secrets" in API group "" in the namespace "b"`.
    """
    if not attrs.is_resource_request:
        text = f'User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
    else:
        resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        text = (
            f'User "{user.name}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}"'
        )
        text += f' in the namespace "{attrs.namespace}"' if attrs.namespace else " at the cluster scope"
    if reason:
        text = f"{text}: {reason}"
    qualified = ""
    if attrs.is_resource_request and attrs.resource:
        qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    if not qualified:
        return f"forbidden: {text}"
    if attrs.name:
        return f'{qualified} "{attrs.name}" is forbidden: {text}'
    return f"{qualified} is forbidden: {text}"


def forbidden_error(user: UserInfo, attrs: Attributes, reason: str = "") -> ApiError:
    """A 403 ApiError shaped like kube-apiserver's (message and details)."""
    details: dict[str, Any] = {"group": attrs.api_group, "kind": attrs.resource}
    if attrs.name:
        details["name"] = attrs.name
    return ApiError(403, forbidden_message(user, attrs, reason), reason="Forbidden", details=details)


# --- default policy -------------------------------------------------------------------------------------

_BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_AUTOUPDATE = {"rbac.authorization.kubernetes.io/autoupdate": "true"}
_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]


def _cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": dict(_BOOTSTRAP_LABELS), "annotations": dict(_AUTOUPDATE)},
        "rules": rules,
    }


def _cluster_role_binding(name: str, role: str, group: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": dict(_BOOTSTRAP_LABELS), "annotations": dict(_AUTOUPDATE)},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group}],
    }


# Namespaced workload and config resources every aggregated role talks about (secrets handled separately:
# "view" must not read them).
_CORE_VIEW = [
    "configmaps", "endpoints", "events", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
    "pods/log", "pods/status", "replicationcontrollers", "replicationcontrollers/scale",
    "replicationcontrollers/status", "resourcequotas", "resourcequotas/status", "serviceaccounts",
    "services", "services/status", "limitranges", "bindings",
]  # fmt: skip
_APPS = [
    "controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale",
    "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "statefulsets",
    "statefulsets/scale", "statefulsets/status",
]  # fmt: skip
_CORE_EDIT = [
    "configmaps", "endpoints", "persistentvolumeclaims", "pods", "pods/attach", "pods/exec",
    "pods/portforward", "pods/proxy", "replicationcontrollers", "replicationcontrollers/scale",
    "secrets", "serviceaccounts", "services", "services/proxy",
]  # fmt: skip

_VIEW_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": _CORE_VIEW, "verbs": _READ},
    {"apiGroups": [""], "resources": ["namespaces", "namespaces/status"], "verbs": _READ},
    {"apiGroups": ["apps"], "resources": _APPS, "verbs": _READ},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": _READ},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": _READ},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": _READ},
]
_EDIT_RULES: list[dict[str, Any]] = [
    *_VIEW_RULES,
    {"apiGroups": [""], "resources": ["secrets"], "verbs": _READ},
    {"apiGroups": [""], "resources": _CORE_EDIT, "verbs": _WRITE},
    {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
    {"apiGroups": ["apps"], "resources": _APPS, "verbs": _WRITE},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": _WRITE},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": _WRITE},
]
_ADMIN_RULES: list[dict[str, Any]] = [
    *_EDIT_RULES,
    {"apiGroups": [RBAC_GROUP], "resources": ["roles", "rolebindings"], "verbs": [*_READ, *_WRITE]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]},
]

DISCOVERY_URLS = [
    "/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/openapi", "/openapi/*",
    "/healthz", "/livez", "/readyz",
]  # fmt: skip

DEFAULT_CLUSTER_ROLES: dict[str, dict[str, Any]] = {
    "cluster-admin": _cluster_role(
        "cluster-admin",
        [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ],
    ),
    "admin": _cluster_role("admin", _ADMIN_RULES),
    "edit": _cluster_role("edit", _EDIT_RULES),
    "view": _cluster_role("view", _VIEW_RULES),
    "system:discovery": _cluster_role(
        "system:discovery", [{"nonResourceURLs": DISCOVERY_URLS, "verbs": ["get"]}]
    ),
    # What every authenticated client needs for `kubectl auth can-i` and self-inspection.
    "system:basic-user": _cluster_role(
        "system:basic-user",
        [
            {
                "apiGroups": ["authorization.k8s.io"],
                "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                "verbs": ["create"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["selfsubjectreviews"],
                "verbs": ["create"],
            },
        ],
    ),
}

DEFAULT_CLUSTER_ROLE_BINDINGS: dict[str, dict[str, Any]] = {
    "cluster-admin": _cluster_role_binding("cluster-admin", "cluster-admin", SYSTEM_MASTERS),
    "system:discovery": _cluster_role_binding("system:discovery", "system:discovery", SYSTEM_AUTHENTICATED),
    "system:basic-user": _cluster_role_binding(
        "system:basic-user", "system:basic-user", SYSTEM_AUTHENTICATED
    ),
}
