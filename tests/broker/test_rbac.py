"""RBAC evaluation: same decisions and 403 texts as kube-apiserver's RBAC authorizer."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from submariner.broker.apiserver import rbac
from submariner.broker.apiserver.rbac import Attributes, Authorizer, UserInfo, service_account_user

G = rbac.RBAC_GROUP
BROKER_NS = "submariner-k8s-broker"


def role(ns: str, name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "Role", "metadata": {"namespace": ns, "name": name}, "rules": rules}


def cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "ClusterRole", "metadata": {"name": name}, "rules": rules}


def binding(ns: str, name: str, kind: str, ref: str, *subjects: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "RoleBinding",
        "metadata": {"namespace": ns, "name": name},
        "roleRef": {"apiGroup": G, "kind": kind, "name": ref},
        "subjects": list(subjects),
    }


def cluster_binding(name: str, ref: str, *subjects: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": G, "kind": "ClusterRole", "name": ref},
        "subjects": list(subjects),
    }


def user(name: str) -> dict[str, Any]:
    return {"kind": "User", "apiGroup": G, "name": name}


def group(name: str) -> dict[str, Any]:
    return {"kind": "Group", "apiGroup": G, "name": name}


def sa(name: str, ns: str | None = None) -> dict[str, Any]:
    s = {"kind": "ServiceAccount", "name": name}
    if ns is not None:
        s["namespace"] = ns
    return s


CRUD = ["create", "get", "list", "watch", "patch", "update", "delete"]

ROLES = [
    role("a", "pod-reader", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]),
    role(
        BROKER_NS,
        "submariner-k8s-broker-cluster",
        [
            {"apiGroups": ["submariner.io"], "resources": ["clusters", "endpoints"], "verbs": CRUD},
            {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceimports"], "verbs": CRUD},
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices", "endpointslices/restricted"],
                "verbs": CRUD,
            },
        ],
    ),
]
CLUSTER_ROLES = [
    *rbac.DEFAULT_CLUSTER_ROLES.values(),
    cluster_role("secret-reader", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]),
    cluster_role("node-viewer", [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]),
    cluster_role(
        "one-configmap",
        [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["cfg"],
                "verbs": ["get", "list", "update"],
            }
        ],
    ),
    cluster_role(
        "status-writer",
        [
            {"apiGroups": ["apps"], "resources": ["deployments/status"], "verbs": ["update", "patch"]},
            {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["patch"]},
        ],
    ),
    cluster_role("getter", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]}]),
    cluster_role("metrics", [{"nonResourceURLs": ["/metrics", "/logs/*"], "verbs": ["get"]}]),
]
ROLE_BINDINGS = [
    binding("a", "alice-pods", "Role", "pod-reader", user("alice")),
    binding("b", "bob-secrets", "ClusterRole", "secret-reader", user("bob")),
    binding("a", "carol-cfg", "ClusterRole", "one-configmap", user("carol")),
    binding("a", "dave-status", "ClusterRole", "status-writer", user("dave")),
    binding("a", "viewers", "ClusterRole", "view", group("viewers")),
    binding("a", "editors", "ClusterRole", "edit", group("editors")),
    # Namespace omitted: defaults to the binding's namespace, so this is submariner-k8s-broker/cluster1.
    binding(BROKER_NS, "cluster1", "Role", "submariner-k8s-broker-cluster", sa("cluster1")),
    binding("a", "sa-x-pods", "Role", "pod-reader", sa("x", "b")),
    binding("a", "broken", "Role", "does-not-exist", user("frank")),
]
CLUSTER_ROLE_BINDINGS = [
    *rbac.DEFAULT_CLUSTER_ROLE_BINDINGS.values(),
    cluster_binding("ops-nodes", "node-viewer", group("ops")),
    cluster_binding("eve-gets", "getter", user("eve")),
    cluster_binding("monitoring", "metrics", sa("prometheus", "monitoring")),
    cluster_binding("sa-without-ns", "getter", sa("ghost")),  # never matches: no namespace to default to
    cluster_binding("broken-cluster", "missing-clusterrole", user("frank")),
]


class Store:
    """What the server's storage would answer, plus a call counter to check caching."""

    def __init__(self) -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {
            rbac.ROLES_KEY: copy.deepcopy(ROLES),
            rbac.CLUSTER_ROLES_KEY: copy.deepcopy(CLUSTER_ROLES),
            rbac.ROLE_BINDINGS_KEY: copy.deepcopy(ROLE_BINDINGS),
            rbac.CLUSTER_ROLE_BINDINGS_KEY: copy.deepcopy(CLUSTER_ROLE_BINDINGS),
        }
        self.calls = 0

    def list(self, key: str) -> list[dict[str, Any]]:
        self.calls += 1
        return self.objects.get(key, [])


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def authz(store: Store) -> Authorizer:
    return Authorizer(store.list)


def U(name: str, *groups: str) -> UserInfo:
    return UserInfo(name, (*groups, "system:authenticated"))


def R(verb: str, resource: str, ns: str = "", name: str = "", group: str = "", sub: str = "") -> Attributes:
    return Attributes(verb=verb, api_group=group, resource=resource, subresource=sub, namespace=ns, name=name)


def P(verb: str, path: str) -> Attributes:
    return Attributes(verb=verb, path=path, is_resource_request=False)


BROKER_SA = service_account_user(BROKER_NS, "cluster1")

CASES: list[tuple[str, UserInfo, Attributes, bool]] = [
    # Role via RoleBinding: only in its namespace.
    ("role in its namespace", U("alice"), R("list", "pods", "a"), True),
    ("role get by name", U("alice"), R("get", "pods", "a", "p1"), True),
    ("role other namespace", U("alice"), R("list", "pods", "b"), False),
    ("role all namespaces", U("alice"), R("list", "pods"), False),
    ("role other verb", U("alice"), R("delete", "pods", "a", "p1"), False),
    ("role other resource", U("alice"), R("list", "services", "a"), False),
    ("role subresource not implied", U("alice"), R("get", "pods", "a", "p1", sub="log"), False),
    # ClusterRole via RoleBinding: confined to the binding's namespace.
    ("clusterrole via rolebinding", U("bob"), R("get", "secrets", "b", "s"), True),
    ("clusterrole via rolebinding elsewhere", U("bob"), R("get", "secrets", "a", "s"), False),
    ("clusterrole via rolebinding cluster-wide", U("bob"), R("list", "secrets"), False),
    # ClusterRoleBinding: everywhere, cluster-scoped resources included.
    ("clusterrolebinding cluster scope", U("olga", "ops"), R("list", "nodes"), True),
    ("clusterrolebinding get node", U("olga", "ops"), R("get", "nodes", name="n1"), True),
    ("clusterrolebinding verb", U("olga", "ops"), R("delete", "nodes", name="n1"), False),
    ("group not member", U("olga"), R("list", "nodes"), False),
    # resourceNames.
    ("resourceNames get match", U("carol"), R("get", "configmaps", "a", "cfg"), True),
    ("resourceNames update match", U("carol"), R("update", "configmaps", "a", "cfg"), True),
    ("resourceNames other name", U("carol"), R("get", "configmaps", "a", "other"), False),
    ("resourceNames list unnamed", U("carol"), R("list", "configmaps", "a"), False),
    ("resourceNames list by fieldSelector", U("carol"), R("list", "configmaps", "a", "cfg"), True),
    ("resourceNames create", U("carol"), R("create", "configmaps", "a"), False),
    # Subresources and */sub.
    ("subresource exact", U("dave"), R("update", "deployments", "a", "d", group="apps", sub="status"), True),
    ("subresource not parent", U("dave"), R("update", "deployments", "a", "d", group="apps"), False),
    ("star slash sub", U("dave"), R("patch", "statefulsets", "a", "s", group="apps", sub="scale"), True),
    ("star slash sub core", U("dave"), R("patch", "replicationcontrollers", "a", "r", sub="scale"), True),
    (
        "star slash other sub",
        U("dave"),
        R("patch", "deployments", "a", "d", group="apps", sub="status"),
        True,
    ),
    ("star slash wrong sub", U("dave"), R("patch", "pods", "a", "p", sub="eviction"), False),
    # Wildcards.
    ("wildcards any group", U("eve"), R("get", "widgets", "z", "w", group="example.com"), True),
    ("wildcards subresource", U("eve"), R("get", "pods", "z", "p", sub="log"), True),
    ("wildcards verb limited", U("eve"), R("list", "pods", "z"), False),
    ("wildcards no nonresource", U("eve"), P("get", "/metrics"), False),
    # system:masters.
    ("masters anything", UserInfo("admin", ("system:masters",)), R("deletecollection", "secrets", "x"), True),
    ("masters nonresource", UserInfo("admin", ("system:masters",)), P("post", "/anything"), True),
    # Service-account subjects.
    ("sa explicit ns", service_account_user("b", "x"), R("list", "pods", "a"), True),
    ("sa same name other ns", service_account_user("c", "x"), R("list", "pods", "a"), False),
    ("sa user name as User", U("system:serviceaccount:b:x"), R("list", "pods", "a"), True),
    ("sa crb with ns", service_account_user("monitoring", "prometheus"), P("get", "/metrics"), True),
    ("sa crb without ns", service_account_user("default", "ghost"), R("get", "pods", "a", "p"), False),
    # Broker-scoped service account.
    ("broker create cluster", BROKER_SA, R("create", "clusters", BROKER_NS, group="submariner.io"), True),
    ("broker list endpoints", BROKER_SA, R("list", "endpoints", BROKER_NS, group="submariner.io"), True),
    ("broker watch endpoints", BROKER_SA, R("watch", "endpoints", BROKER_NS, group="submariner.io"), True),
    (
        "broker update cluster",
        BROKER_SA,
        R("update", "clusters", BROKER_NS, "c1", group="submariner.io"),
        True,
    ),
    (
        "broker delete endpoint",
        BROKER_SA,
        R("delete", "endpoints", BROKER_NS, "e", group="submariner.io"),
        True,
    ),
    (
        "broker endpointslices",
        BROKER_SA,
        R("create", "endpointslices", BROKER_NS, group="discovery.k8s.io"),
        True,
    ),
    ("broker core endpoints", BROKER_SA, R("list", "endpoints", BROKER_NS), False),
    ("broker secrets", BROKER_SA, R("list", "secrets", BROKER_NS), False),
    ("broker secret by name", BROKER_SA, R("get", "secrets", BROKER_NS, "broker-secret"), False),
    ("broker other ns", BROKER_SA, R("list", "clusters", "default", group="submariner.io"), False),
    ("broker all ns", BROKER_SA, R("list", "clusters", group="submariner.io"), False),
    (
        "broker deletecollection",
        BROKER_SA,
        R("deletecollection", "clusters", BROKER_NS, group="submariner.io"),
        False,
    ),
    ("broker discovery", BROKER_SA, P("get", "/apis/submariner.io/v1"), True),
    # Non-resource URLs: system:discovery for every authenticated user.
    ("discovery /api", U("nobody"), P("get", "/api"), True),
    ("discovery /api/v1", U("nobody"), P("get", "/api/v1"), True),
    ("discovery /apis", U("nobody"), P("get", "/apis"), True),
    ("discovery /apis/apps/v1", U("nobody"), P("get", "/apis/apps/v1"), True),
    ("discovery /version", U("nobody"), P("get", "/version"), True),
    ("discovery /openapi/v3", U("nobody"), P("get", "/openapi/v3"), True),
    ("discovery /healthz", U("nobody"), P("get", "/healthz"), True),
    ("discovery post", U("nobody"), P("post", "/api"), False),
    ("discovery /metrics", U("nobody"), P("get", "/metrics"), False),
    ("discovery /apix", U("nobody"), P("get", "/apix"), False),
    ("unauthenticated", UserInfo("system:anonymous", ("system:unauthenticated",)), P("get", "/api"), False),
    ("prefix star", service_account_user("monitoring", "prometheus"), P("get", "/logs/kubelet.log"), True),
    ("prefix star bare", service_account_user("monitoring", "prometheus"), P("get", "/logs"), False),
    # Default aggregated roles.
    ("view reads pods", U("v", "viewers"), R("list", "pods", "a"), True),
    ("view no secrets", U("v", "viewers"), R("get", "secrets", "a", "s"), False),
    ("view no writes", U("v", "viewers"), R("create", "pods", "a"), False),
    ("edit secrets", U("e", "editors"), R("create", "secrets", "a"), True),
    ("edit deployments", U("e", "editors"), R("patch", "deployments", "a", "d", group="apps"), True),
    ("edit no rbac", U("e", "editors"), R("create", "roles", "a", group=G), False),
    ("edit confined", U("e", "editors"), R("create", "secrets", "b"), False),
    # Nothing at all.
    ("stranger", U("mallory"), R("get", "pods", "a", "p"), False),
]


@pytest.mark.parametrize(("who", "attrs", "allowed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_authorize(authz: Authorizer, who: UserInfo, attrs: Attributes, allowed: bool) -> None:
    ok, reason = authz.authorize(who, attrs)
    assert ok is allowed, reason


def test_allow_reason_names_the_binding(authz: Authorizer) -> None:
    assert authz.authorize(U("alice"), R("get", "pods", "a", "p")) == (
        True,
        'RBAC: allowed by RoleBinding "a/alice-pods" of Role "pod-reader" to User "alice"',
    )
    ok, reason = authz.authorize(BROKER_SA, R("list", "clusters", BROKER_NS, group="submariner.io"))
    assert ok
    assert reason == (
        f'RBAC: allowed by RoleBinding "{BROKER_NS}/cluster1" of Role "submariner-k8s-broker-cluster" '
        f'to ServiceAccount "cluster1/{BROKER_NS}"'
    )
    ok, reason = authz.authorize(U("olga", "ops"), R("list", "nodes"))
    assert (
        reason
        == 'RBAC: allowed by ClusterRoleBinding "ops-nodes" of ClusterRole "node-viewer" to Group "ops"'
    )


def test_deny_reason_reports_missing_roles(authz: Authorizer) -> None:
    assert authz.authorize(U("mallory"), R("get", "pods", "a", "p")) == (False, "")
    ok, reason = authz.authorize(U("frank"), R("get", "pods", "b", "p"))
    assert (ok, reason) == (False, f'RBAC: clusterrole.{G} "missing-clusterrole" not found')
    ok, reason = authz.authorize(U("frank"), R("get", "pods", "a", "p"))
    assert not ok
    assert reason == (
        f'RBAC: [clusterrole.{G} "missing-clusterrole" not found, role.{G} "does-not-exist" not found]'
    )


def test_invalidate_picks_up_changes(store: Store, authz: Authorizer) -> None:
    attrs = R("list", "pods", "c")
    assert authz.authorize(U("alice"), attrs)[0] is False

    store.objects[rbac.ROLE_BINDINGS_KEY].append(
        binding("c", "alice-c", "ClusterRole", "view", user("alice"))
    )
    assert authz.authorize(U("alice"), attrs)[0] is False  # cached until told
    authz.invalidate()
    assert authz.authorize(U("alice"), attrs)[0] is True

    # Changing a role's rules takes effect too.
    for cr in store.objects[rbac.CLUSTER_ROLES_KEY]:
        if cr["metadata"]["name"] == "view":
            cr["rules"] = []
    authz.invalidate()
    assert authz.authorize(U("alice"), attrs)[0] is False

    # And deleting a binding.
    store.objects[rbac.ROLE_BINDINGS_KEY] = [
        b for b in store.objects[rbac.ROLE_BINDINGS_KEY] if b["metadata"]["name"] != "alice-pods"
    ]
    assert authz.authorize(U("alice"), R("list", "pods", "a"))[0] is True
    authz.invalidate()
    assert authz.authorize(U("alice"), R("list", "pods", "a"))[0] is False


def test_rule_set_is_cached(store: Store, authz: Authorizer) -> None:
    for _ in range(500):
        authz.authorize(U("alice"), R("list", "pods", "a"))
        authz.authorize(BROKER_SA, R("list", "clusters", BROKER_NS, group="submariner.io"))
    assert store.calls == 4  # one index build: one list per RBAC storage key
    authz.invalidate()
    authz.authorize(U("alice"), R("list", "pods", "a"))
    assert store.calls == 8


def test_cache_is_bounded(store: Store) -> None:
    authz = Authorizer(store.list, cache_size=3)
    for i in range(10):
        authz.authorize(U(f"user{i}"), R("get", "pods", "a", "p"))
    assert len(authz._users) == 3
    assert authz.authorize(U("alice"), R("get", "pods", "a", "p"))[0]
    assert store.calls == 4


def test_rules_for(authz: Authorizer) -> None:
    rules = authz.rules_for(U("alice"), "a")
    assert {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]} in rules
    assert any(r.get("nonResourceURLs") for r in rules)  # system:discovery via system:authenticated
    assert {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["get", "list", "watch"],
    } not in authz.rules_for(U("alice"), "b")


def test_service_account_user() -> None:
    assert service_account_user("b", "x") == UserInfo(
        "system:serviceaccount:b:x",
        ("system:serviceaccounts", "system:serviceaccounts:b", "system:authenticated"),
    )


@pytest.mark.parametrize(
    ("attrs", "reason", "message"),
    [
        (
            R("list", "secrets", "b"),
            "",
            'secrets is forbidden: User "system:serviceaccount:b:x" cannot list resource "secrets" '
            'in API group "" in the namespace "b"',
        ),
        (
            R("list", "nodes"),
            "",
            'nodes is forbidden: User "system:serviceaccount:b:x" cannot list resource "nodes" '
            'in API group "" at the cluster scope',
        ),
        (
            R("get", "clusters", BROKER_NS, "c1", group="submariner.io"),
            "",
            'clusters.submariner.io "c1" is forbidden: User "system:serviceaccount:b:x" cannot get resource '
            f'"clusters" in API group "submariner.io" in the namespace "{BROKER_NS}"',
        ),
        (
            R("update", "deployments", "b", "d", group="apps", sub="status"),
            f'RBAC: role.{G} "r" not found',
            'deployments.apps "d" is forbidden: User "system:serviceaccount:b:x" cannot update resource '
            f'"deployments/status" in API group "apps" in the namespace "b": RBAC: role.{G} "r" not found',
        ),
        (
            P("get", "/metrics"),
            "",
            'forbidden: User "system:serviceaccount:b:x" cannot get path "/metrics"',
        ),
    ],
)
def test_forbidden_message(attrs: Attributes, reason: str, message: str) -> None:
    who = service_account_user("b", "x")
    assert rbac.forbidden_message(who, attrs, reason) == message
    err = rbac.forbidden_error(who, attrs, reason)
    assert err.code == 403
    status = err.status()
    assert status["reason"] == "Forbidden"
    assert status["message"] == message
    assert status["details"]["kind"] == attrs.resource


def test_default_policy_manifests() -> None:
    assert set(rbac.DEFAULT_CLUSTER_ROLES) >= {"cluster-admin", "admin", "edit", "view", "system:discovery"}
    for name, cr in rbac.DEFAULT_CLUSTER_ROLES.items():
        assert cr["apiVersion"] == f"{G}/v1" and cr["kind"] == "ClusterRole"
        assert cr["metadata"]["name"] == name
    discovery = rbac.DEFAULT_CLUSTER_ROLE_BINDINGS["system:discovery"]
    assert discovery["subjects"] == [{"apiGroup": G, "kind": "Group", "name": "system:authenticated"}]
    assert discovery["roleRef"] == {"apiGroup": G, "kind": "ClusterRole", "name": "system:discovery"}
    urls = rbac.DEFAULT_CLUSTER_ROLES["system:discovery"]["rules"][0]["nonResourceURLs"]
    assert set(urls) >= {
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/version",
        "/version/",
        "/openapi",
        "/openapi/*",
        "/healthz",
        "/livez",
        "/readyz",
    }
    admin = rbac.DEFAULT_CLUSTER_ROLE_BINDINGS["cluster-admin"]
    assert admin["subjects"][0]["name"] == "system:masters"


def test_cluster_admin_binding_grants_everything() -> None:
    objects = {
        rbac.CLUSTER_ROLES_KEY: list(rbac.DEFAULT_CLUSTER_ROLES.values()),
        rbac.CLUSTER_ROLE_BINDINGS_KEY: [cluster_binding("root", "cluster-admin", user("root"))],
    }
    authz = Authorizer(lambda key: objects.get(key, []))
    assert authz.authorize(U("root"), R("deletecollection", "widgets", "x", group="example.com"))[0]
    assert authz.authorize(U("root"), P("put", "/whatever"))[0]
