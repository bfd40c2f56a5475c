"""The API server driven by the official `kubernetes` client, as every component will drive it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import client, dynamic, watch
from kubernetes.client.rest import ApiException

from apiservers import RunningServer

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.io"},
    "spec": {
        "group": "example.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            "subresources": {"status": {}},
        }],
    },
}


def ns_obj(name: str) -> client.V1Namespace:
    return client.V1Namespace(metadata=client.V1ObjectMeta(name=name))


def test_core_crud_and_conflicts(api_server: RunningServer) -> None:
    core = client.CoreV1Api(api_server.api_client())
    core.create_namespace(ns_obj("demo"))
    cm = core.create_namespaced_config_map(
        "demo", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg", labels={"app": "x"}),
                                   data={"k": "v"}))
    assert cm.metadata.uid and cm.metadata.creation_timestamp and int(cm.metadata.resource_version) > 0

    cm.data["k"] = "v2"
    updated = core.replace_namespaced_config_map("cfg", "demo", cm)
    assert int(updated.metadata.resource_version) > int(cm.metadata.resource_version)

    # A write based on the stale object is a 409 Conflict.
    with pytest.raises(ApiException) as stale:
        core.replace_namespaced_config_map("cfg", "demo", cm)
    assert stale.value.status == 409

    with pytest.raises(ApiException) as dup:
        core.create_namespaced_config_map("demo", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg")))
    assert dup.value.status == 409 and "AlreadyExists" in dup.value.body

    patched = core.patch_namespaced_config_map("cfg", "demo", {"metadata": {"labels": {"tier": "web"}}})
    assert patched.metadata.labels == {"app": "x", "tier": "web"}

    listed = core.list_namespaced_config_map("demo", label_selector="app=x,tier in (web,db)")
    assert [i.metadata.name for i in listed.items] == ["cfg"]
    assert core.list_namespaced_config_map("demo", label_selector="app!=x").items == []
    by_field = core.list_config_map_for_all_namespaces(field_selector="metadata.name=cfg")
    assert [i.metadata.namespace for i in by_field.items] == ["demo"]

    core.delete_namespaced_config_map("cfg", "demo")
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("cfg", "demo")
    assert gone.value.status == 404


def test_invalid_input_changes_nothing(api_server: RunningServer) -> None:
    api = api_server.api_client()
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as bad_name:
        core.create_namespace(ns_obj("Not_Valid"))
    assert bad_name.value.status == 422
    with pytest.raises(ApiException) as missing_ns:
        core.create_namespaced_config_map("nope", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a")))
    assert missing_ns.value.status == 404
    # Malformed JSON straight through the REST layer: a 400 Status, nothing stored.
    status, body = api_server.request("POST", "/api/v1/namespaces/default/configmaps", b"{not json",
                                      {"Content-Type": "application/json"})
    assert status == 400 and b"not valid JSON" in body
    status, body = api_server.request("POST", "/api/v1/namespaces/default/configmaps", b"a: [unclosed",
                                      {"Content-Type": "application/yaml"})
    assert status == 400 and b"not valid YAML" in body
    status, body = api_server.request("POST", "/api/v1/namespaces/default/configmaps", b"[1, 2]",
                                      {"Content-Type": "application/json"})
    assert status == 400
    assert core.list_namespaced_config_map("default").items == []
    # Oversized body: 413.
    huge = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="huge"), data={"x": "a" * (4 * 1024 * 1024)})
    with pytest.raises(ApiException) as too_big:
        core.create_namespaced_config_map("default", huge)
    assert too_big.value.status == 413


def test_services_get_cluster_ips(api_server: RunningServer) -> None:
    core = client.CoreV1Api(api_server.api_client())

    def svc(name: str, cluster_ip: str | None = None) -> client.V1Service:
        return client.V1Service(metadata=client.V1ObjectMeta(name=name), spec=client.V1ServiceSpec(
            cluster_ip=cluster_ip, ports=[client.V1ServicePort(port=80)], selector={"app": name}))

    ips = {core.create_namespaced_service("default", svc(f"s{i}")).spec.cluster_ip for i in range(20)}
    assert len(ips) == 20 and all(ip.startswith(("10.96.", "10.97.", "10.98.", "10.99.", "10.10", "10.11"))
                                  for ip in ips)
    headless = core.create_namespaced_service("default", svc("hl", "None"))
    assert headless.spec.cluster_ip == "None"
    explicit = core.create_namespaced_service("default", svc("fixed", "10.96.0.77"))
    assert explicit.spec.cluster_ip == "10.96.0.77"
    with pytest.raises(ApiException) as taken:
        core.create_namespaced_service("default", svc("again", "10.96.0.77"))
    assert taken.value.status == 422 and "already allocated" in taken.value.body
    with pytest.raises(ApiException) as outside:
        core.create_namespaced_service("default", svc("out", "192.0.2.1"))
    assert outside.value.status == 422
    # Released on delete, then reusable.
    core.delete_namespaced_service("fixed", "default")
    assert core.create_namespaced_service("default", svc("fixed2", "10.96.0.77")).spec.cluster_ip == "10.96.0.77"


def test_crd_lifecycle_and_custom_objects(api_server: RunningServer) -> None:
    api = api_server.api_client()
    ext = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    ext.create_custom_resource_definition(CRD)
    obj = custom.create_namespaced_custom_object("example.io", "v1", "default", "widgets", {
        "apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 1},
        "status": {"ignored": True}})
    assert obj["metadata"]["generation"] == 1 and "status" not in obj
    obj["spec"]["size"] = 2
    obj = custom.replace_namespaced_custom_object("example.io", "v1", "default", "widgets", "w1", obj)
    assert obj["metadata"]["generation"] == 2
    obj["status"] = {"ready": True}
    obj = custom.replace_namespaced_custom_object_status("example.io", "v1", "default", "widgets", "w1", obj)
    assert obj["status"] == {"ready": True} and obj["metadata"]["generation"] == 2
    patched = custom.patch_namespaced_custom_object("example.io", "v1", "default", "widgets", "w1",
                                                    {"spec": {"color": "red"}})
    assert patched["spec"] == {"size": 2, "color": "red"}

    dyn = dynamic.DynamicClient(api)
    widgets = dyn.resources.get(api_version="example.io/v1", kind="Widget")
    assert [w.metadata.name for w in widgets.get(namespace="default").items] == ["w1"]
    widgets.create(body={"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w2"}},
                   namespace="default")
    assert len(widgets.get(namespace="default").items) == 2

    ext.delete_custom_resource_definition("widgets.example.io")
    with pytest.raises(ApiException) as gone:
        custom.list_namespaced_custom_object("example.io", "v1", "default", "widgets")
    assert gone.value.status == 404


def test_watch_streams_changes_in_order(api_server: RunningServer) -> None:
    core = client.CoreV1Api(api_server.api_client())
    start_rv = core.list_namespaced_config_map("default").metadata.resource_version
    for i in range(5):
        core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"c{i}")))
    core.delete_namespaced_config_map("c0", "default")
    seen: list[tuple[str, str, int]] = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, "default", resource_version=start_rv,
                          timeout_seconds=5):
        obj = event["object"]
        seen.append((event["type"], obj.metadata.name, int(obj.metadata.resource_version)))
        if len(seen) == 6:
            w.stop()
    assert [(t, n) for t, n, _ in seen] == [("ADDED", f"c{i}") for i in range(5)] + [("DELETED", "c0")]
    rvs = [rv for _, _, rv in seen]
    assert rvs == sorted(rvs) and len(set(rvs)) == 6


def test_watch_label_selector_transitions(api_server: RunningServer) -> None:
    core = client.CoreV1Api(api_server.api_client())
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a")))
    core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"sel": "yes"}}})
    core.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"sel": "no"}}})
    w = watch.Watch()
    types = []
    for event in w.stream(core.list_namespaced_config_map, "default", label_selector="sel=yes",
                          resource_version=rv, timeout_seconds=3):
        types.append(event["type"])
        if len(types) == 2:
            w.stop()
    assert types == ["ADDED", "DELETED"]


def _raw_watch(server: RunningServer, path: str) -> list[dict[str, Any]]:
    import json

    status, body = server.request("GET", path)
    assert status == 200
    return [json.loads(line) for line in body.decode().splitlines() if line]


def test_watch_expired_resource_version_is_410(api_server_factory: Any) -> None:
    server = api_server_factory("small", ["--watch-history", "5"])
    api = server.api_client()
    core = client.CoreV1Api(api)
    old_rv = core.list_namespaced_config_map("default").metadata.resource_version
    for i in range(10):
        core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"x{i}")))
    events = _raw_watch(server, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={old_rv}"
                             "&timeoutSeconds=1")
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


def test_informer_relists_after_410(api_server_factory: Any) -> None:
    """An informer-style list+watch loop survives a forced 410 and ends with the true state."""
    server = api_server_factory("inf", ["--watch-history", "5"])
    api = server.api_client()
    core = client.CoreV1Api(api)
    cache: dict[str, str] = {}
    relists = 0
    stop = threading.Event()

    def informer() -> None:
        nonlocal relists
        while not stop.is_set():
            listed = core.list_namespaced_config_map("default")
            relists += 1
            cache.clear()
            cache.update({i.metadata.name: i.data.get("v") if i.data else "" for i in listed.items})
            rv = listed.metadata.resource_version
            time.sleep(0.3)  # fall behind so the history window passes us by
            try:
                for event in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                                  resource_version=rv, timeout_seconds=1):
                    obj = event["object"]
                    if event["type"] == "DELETED":
                        cache.pop(obj.metadata.name, None)
                    else:
                        cache[obj.metadata.name] = obj.data.get("v") if obj.data else ""
            except ApiException as exc:
                assert exc.status == 410
                continue

    t = threading.Thread(target=informer, daemon=True)
    t.start()
    time.sleep(0.1)
    for i in range(30):
        core.create_namespaced_config_map("default", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=f"k{i}"), data={"v": str(i)}))
    for i in range(0, 30, 3):
        core.delete_namespaced_config_map(f"k{i}", "default")
    expected = {f"k{i}": str(i) for i in range(30) if i % 3}
    deadline = time.monotonic() + 15
    while cache != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    t.join(timeout=10)
    assert cache == expected
    assert relists >= 2


def test_owner_references_garbage_collected(api_server: RunningServer) -> None:
    core = client.CoreV1Api(api_server.api_client())
    owner = core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="own")))
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="own", uid=owner.metadata.uid)
    core.create_namespaced_secret("default", client.V1Secret(metadata=client.V1ObjectMeta(
        name="dep", owner_references=[ref])))
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name="dep2", owner_references=[ref])))
    core.delete_namespaced_config_map("own", "default")
    names = {s.metadata.name for s in core.list_namespaced_secret("default").items}
    assert "dep" not in names
    assert "dep2" not in {c.metadata.name for c in core.list_namespaced_config_map("default").items}

    owner = core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="o2")))
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="o2", uid=owner.metadata.uid)
    core.create_namespaced_secret("default", client.V1Secret(metadata=client.V1ObjectMeta(
        name="kept", owner_references=[ref])))
    core.delete_namespaced_config_map("o2", "default", propagation_policy="Orphan")
    kept = core.read_namespaced_secret("kept", "default")
    assert not kept.metadata.owner_references


def test_finalizers_and_namespace_deletion(api_server: RunningServer) -> None:
    core = client.CoreV1Api(api_server.api_client())
    core.create_namespace(ns_obj("tmp"))
    core.create_namespaced_config_map("tmp", client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name="held", finalizers=["example.io/hold"])))
    core.create_namespaced_config_map("tmp", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="free")))
    core.delete_namespace("tmp")
    ns = core.read_namespace("tmp")
    assert ns.status.phase == "Terminating" and ns.metadata.deletion_timestamp
    held = core.read_namespaced_config_map("held", "tmp")
    assert held.metadata.deletion_timestamp
    assert [c.metadata.name for c in core.list_namespaced_config_map("tmp").items] == ["held"]
    with pytest.raises(ApiException) as closed:
        core.create_namespaced_config_map("tmp", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="new")))
    assert closed.value.status == 403
    core.patch_namespaced_config_map("held", "tmp", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as gone:
        core.read_namespace("tmp")
    assert gone.value.status == 404


def test_list_pagination(api_server: RunningServer) -> None:
    core = client.CoreV1Api(api_server.api_client())
    for i in range(25):
        core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"p{i:02}")))
    names: list[str] = []
    token = None
    pages = 0
    while True:
        page = core.list_namespaced_config_map("default", limit=10, _continue=token)
        pages += 1
        names += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert pages == 3 and names == [f"p{i:02}" for i in range(25)]


def test_generate_name(api_server: RunningServer) -> None:
    core = client.CoreV1Api(api_server.api_client())
    made = {core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(generate_name="gen-"))).metadata.name for _ in range(10)}
    assert len(made) == 10 and all(n.startswith("gen-") and len(n) == 9 for n in made)


def test_discovery(api_server: RunningServer) -> None:
    api = api_server.api_client()
    assert client.VersionApi(api).get_code().git_version.startswith("v1.")
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"apps", "discovery.k8s.io", "coordination.k8s.io", "rbac.authorization.k8s.io",
            "apiextensions.k8s.io"} <= groups
    resources = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert resources["services"].short_names == ["svc"] and resources["services"].namespaced
    assert not resources["nodes"].namespaced and "watch" in resources["pods"].verbs


def test_watch_bookmarks_when_asked(api_server: RunningServer) -> None:
    core = client.CoreV1Api(api_server.api_client())
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="bm")))
    events = _raw_watch(api_server, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
                                    "&allowWatchBookmarks=true&timeoutSeconds=1")
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    bookmark = events[-1]["object"]
    assert bookmark["kind"] == "ConfigMap" and int(bookmark["metadata"]["resourceVersion"]) >= int(rv) + 1
    plain = _raw_watch(api_server, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
                                   "&timeoutSeconds=1")
    assert [e["type"] for e in plain] == ["ADDED"]
