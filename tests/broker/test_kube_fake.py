"""The in-memory seam behaves like an API server where syncers rely on it; create_or_update on top of it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from submariner.broker.api.submariner import ENDPOINTS
from submariner.broker.kube import (
    CONFIGMAPS,
    NAMESPACES,
    AlreadyExists,
    Conflict,
    Expired,
    Forbidden,
    Invalid,
    KubeError,
    NotFound,
    Unavailable,
    create_or_update,
    label_selector_matches,
    missing_namespace,
    strip_metadata,
)
from submariner.broker.kube.client import error_from_status, field_selector_matches
from submariner.broker.kube.fake import FakeCluster


def cm(name: str, ns: str = "ns1", labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    return {"metadata": meta, "data": dict(data)}


def ep(name: str, ns: str = "ns1", *, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": ns}, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


# ----------------------------------------------------------------------------------------------- CRUD


def test_crud_and_resource_versions() -> None:
    c = FakeCluster()
    cms = c.resource(CONFIGMAPS)
    created = cms.create(cm("a", x="1"))
    assert created["kind"] == "ConfigMap" and created["apiVersion"] == "v1"
    assert created["metadata"]["uid"] and created["metadata"]["creationTimestamp"]
    rv1 = created["metadata"]["resourceVersion"]
    assert cms.get("ns1", "a")["data"] == {"x": "1"}

    with pytest.raises(AlreadyExists):
        cms.create(cm("a"))
    created["data"]["x"] = "2"
    updated = cms.update(created)
    assert int(updated["metadata"]["resourceVersion"]) > int(rv1)
    with pytest.raises(Conflict):
        cms.update(created)  # stale resourceVersion
    # a no-op write does not bump the resourceVersion (no event churn)
    assert cms.update(updated)["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]

    patched = cms.patch("ns1", "a", {"data": {"y": "3", "x": None}})
    assert patched["data"] == {"y": "3"}

    items, rv = cms.list("ns1")
    assert [o["metadata"]["name"] for o in items] == ["a"] and rv == patched["metadata"]["resourceVersion"]
    assert cms.list("other")[0] == []
    assert len(cms.list(None)[0]) == 1

    cms.delete("ns1", "a")
    with pytest.raises(NotFound):
        cms.get("ns1", "a")
    with pytest.raises(NotFound):
        cms.delete("ns1", "a")
    assert [w.verb for w in c.writes] == ["create", "update", "patch", "delete"]


def test_status_subresource_semantics() -> None:
    eps = FakeCluster().resource(ENDPOINTS)
    created = eps.create(ep("e", cable_name="x", status={"ignored": True}))
    assert "status" not in created  # create ignores status when the type has a status subresource
    created["status"] = {"phase": "up"}
    with_status = eps.update_status(created)
    assert with_status["status"] == {"phase": "up"} and with_status["spec"] == {"cable_name": "x"}
    with_status["spec"] = {"cable_name": "y"}
    with_status["status"] = {"phase": "down"}
    after = eps.update(with_status)
    assert after["status"] == {"phase": "up"} and after["spec"] == {"cable_name": "y"}
    assert after["metadata"]["generation"] == 2


def test_generate_name_and_validation() -> None:
    cms = FakeCluster().resource(CONFIGMAPS)
    obj = cms.create({"metadata": {"generateName": "svc-", "namespace": "ns1"}})
    assert obj["metadata"]["name"].startswith("svc-") and len(obj["metadata"]["name"]) == 9
    with pytest.raises(Invalid):
        cms.create({"metadata": {"name": "x"}})  # namespaced type without namespace


def test_missing_namespace_is_reported() -> None:
    c = FakeCluster(enforce_namespaces=True)
    with pytest.raises(NotFound) as err:
        c.resource(CONFIGMAPS).create(cm("a", ns="nope"))
    assert missing_namespace(err.value) == "nope"
    assert missing_namespace(NotFound('configmaps "a" not found')) is None
    c.resource(NAMESPACES).create({"metadata": {"name": "nope"}})
    c.resource(CONFIGMAPS).create(cm("a", ns="nope"))
    c.resource(NAMESPACES).delete("", "nope")
    assert c.objects(CONFIGMAPS) == []  # namespace deletion removes its objects


def test_fault_injection_and_unavailable() -> None:
    c = FakeCluster()
    cms = c.resource(CONFIGMAPS)
    c.fail_next("create", Forbidden("no", status=403))
    with pytest.raises(Forbidden):
        cms.create(cm("a"))
    cms.create(cm("a"))
    c.set_unavailable(True)
    with pytest.raises(Unavailable):
        cms.get("ns1", "a")
    c.set_unavailable(False)
    assert cms.get("ns1", "a")


# ---------------------------------------------------------------------------------------------- watch


def test_watch_from_list_version_and_selector_transitions() -> None:
    c = FakeCluster()
    cms = c.resource(CONFIGMAPS)
    cms.create(cm("before", labels={"app": "x"}))
    _, rv = cms.list()
    w = cms.watch(None, rv, label_selector="app=x", timeout_seconds=2)
    cms.create(cm("a", labels={"app": "x"}))
    cms.create(cm("b", labels={"app": "y"}))  # not selected
    obj = cms.get("ns1", "a")
    obj["metadata"]["labels"] = {"app": "y"}
    cms.update(obj)  # leaves the selection -> DELETED
    obj = cms.get("ns1", "b")
    obj["metadata"]["labels"] = {"app": "x"}
    cms.update(obj)  # enters the selection -> ADDED
    cms.delete("ns1", "b")
    got = [(e.type, e.object["metadata"]["name"]) for e in _take(w, 4)]
    assert got == [("ADDED", "a"), ("DELETED", "a"), ("ADDED", "b"), ("DELETED", "b")]
    w.close()
    assert list(w) == []


def test_watch_without_version_starts_with_current_state() -> None:
    cms = FakeCluster().resource(CONFIGMAPS)
    cms.create(cm("a"))
    w = cms.watch(timeout_seconds=1)
    assert [e.type for e in _take(w, 1)] == ["ADDED"]
    w.close()


def test_watch_expiry() -> None:
    c = FakeCluster()
    cms = c.resource(CONFIGMAPS)
    _, rv = cms.list()
    w = cms.watch(None, rv, timeout_seconds=5)
    cms.create(cm("a"))
    assert next(iter(w)).type == "ADDED"
    c.expire_watches()
    with pytest.raises(Expired):
        next(iter(w))
    with pytest.raises(Expired):  # the history before the compaction is gone
        cms.watch(None, rv)
    _, rv2 = cms.list()
    c.expire_next_watch("configmaps")
    with pytest.raises(Expired):  # forced, whatever the version
        cms.watch(None, rv2)
    cms.watch(None, rv2).close()


def test_watch_timeout_and_close_from_another_thread() -> None:
    c = FakeCluster()
    cms = c.resource(CONFIGMAPS)
    assert list(cms.watch(None, "0", timeout_seconds=1)) == []  # server-side timeout ends the stream
    w = cms.watch(None, "0")
    threading.Timer(0.1, w.close).start()
    assert list(w) == []
    assert c.watch_count() == 0


def _take(w: Any, n: int) -> list[Any]:
    out = []
    for e in w:
        out.append(e)
        if len(out) == n:
            break
    return out


# ------------------------------------------------------------------------------------------ selectors


@pytest.mark.parametrize(
    ("selector", "labels", "match"),
    [
        ("", {}, True),
        ("a=1", {"a": "1"}, True),
        ("a==1", {"a": "2"}, False),
        ("a!=1", {}, True),
        ("a!=1", {"a": "1"}, False),
        ("a", {"a": ""}, True),
        ("!a", {"a": ""}, False),
        ("!a", {"b": "1"}, True),
        ("a in (1, 2),b notin (3)", {"a": "2"}, True),
        ("a in (1,2),b notin (3)", {"a": "2", "b": "3"}, False),
        ("submariner-io/clusterID=c1", {"submariner-io/clusterID": "c1"}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], match: bool) -> None:
    assert label_selector_matches(selector, labels) is match


def test_bad_selector_and_field_selectors() -> None:
    with pytest.raises(ValueError):
        label_selector_matches("a=(", {})
    obj = {"metadata": {"name": "x", "namespace": "n"}}
    assert field_selector_matches("metadata.name=x,metadata.namespace==n", obj)
    assert not field_selector_matches("metadata.name!=x", obj)


def test_error_mapping() -> None:
    assert isinstance(error_from_status(404, b'{"message":"m"}'), NotFound)
    assert isinstance(error_from_status(409, b'{"reason":"AlreadyExists"}'), AlreadyExists)
    assert isinstance(error_from_status(409, b'{"reason":"Conflict"}'), Conflict)
    assert isinstance(error_from_status(410, None), Expired)
    assert isinstance(error_from_status(503, b"oops"), Unavailable)
    err = error_from_status(500, b'{"message":"boom","reason":"InternalError"}')
    assert type(err) is KubeError and err.message == "boom" and err.status == 500


# ----------------------------------------------------------------------------------- create_or_update


def test_strip_metadata_keeps_only_portable_fields() -> None:
    src: dict[str, Any] = {
        "metadata": {
            "name": "a", "namespace": "n", "uid": "u", "resourceVersion": "5", "labels": {"x": "1"},
            "annotations": {"y": "2"}, "ownerReferences": [{}], "managedFields": [{}], "generation": 3,
            "creationTimestamp": "t", "finalizers": ["f"],
        },
        "spec": {"k": 1},
        "status": {"s": 1},
    }
    out = strip_metadata(src)
    assert out["metadata"] == {"name": "a", "namespace": "n", "labels": {"x": "1"}, "annotations": {"y": "2"}}
    assert out["spec"] == {"k": 1} and out["status"] == {"s": 1}
    assert src["metadata"]["uid"] == "u"  # the input is not modified


def test_create_or_update_converges_without_churn() -> None:
    c = FakeCluster()
    eps = c.resource(ENDPOINTS)
    op, obj = create_or_update(eps, ep("e", cable="a", status={"up": True}))
    assert op == "created" and obj["status"] == {"up": True}
    assert [w.verb for w in c.writes] == ["create", "update_status"]

    op, _ = create_or_update(eps, ep("e", cable="a", status={"up": True}))
    assert op == "unchanged" and len(c.writes) == 2

    desired = ep("e", cable="b", status={"up": True})
    desired["metadata"]["labels"] = {"new": "1"}
    op, obj = create_or_update(eps, desired)
    assert op == "updated" and obj["spec"] == {"cable": "b"} and obj["metadata"]["labels"] == {"new": "1"}
    assert c.writes[-1].verb == "update"

    op, obj = create_or_update(eps, ep("e", cable="b", status={"up": False}))
    assert op == "updated" and obj["status"] == {"up": False}
    assert "labels" not in obj["metadata"]  # labels are replaced, not merged
    assert [w.verb for w in c.writes[-2:]] == ["update", "update_status"]

    # no status in the desired object: the target's status is left alone
    op, obj = create_or_update(eps, ep("e", cable="b"))
    assert op == "unchanged" and obj["status"] == {"up": False}


def test_create_or_update_keeps_target_identity() -> None:
    c = FakeCluster()
    cms = c.resource(CONFIGMAPS)
    first = cms.create(cm("a", x="1"))
    desired = cm("a", x="2")
    desired["metadata"]["uid"] = "from-elsewhere"
    _, after = create_or_update(cms, strip_metadata(desired))
    assert after["metadata"]["uid"] == first["metadata"]["uid"]
    assert after["metadata"]["creationTimestamp"] == first["metadata"]["creationTimestamp"]


def test_create_or_update_retries_conflicts() -> None:
    c = FakeCluster()
    cms = c.resource(CONFIGMAPS)
    cms.create(cm("a", x="1"))
    c.fail_next("update", Conflict("stale", status=409), count=2)
    op, obj = create_or_update(cms, cm("a", x="2"))
    assert op == "updated" and obj["data"] == {"x": "2"}

    c.fail_next("create", AlreadyExists("raced", status=409, reason="AlreadyExists"))
    op, obj = create_or_update(cms, cm("b", x="1"))
    assert op == "created"

    c.fail_next("update", Conflict("stale", status=409), count=5)
    with pytest.raises(Conflict):
        create_or_update(cms, cm("a", x="3"))


def test_create_or_update_mutate_and_generate_name() -> None:
    c = FakeCluster()
    cms = c.resource(CONFIGMAPS)
    gen = {"metadata": {"generateName": "s-", "namespace": "ns1", "labels": {"svc": "s"}}, "data": {"v": "1"}}
    op, first = create_or_update(cms, gen)
    assert op == "created"
    gen["data"] = {"v": "2"}
    op, second = create_or_update(cms, gen)
    assert op == "updated" and second["metadata"]["name"] == first["metadata"]["name"]

    def bump(existing: dict[str, Any]) -> dict[str, Any]:
        existing["data"]["v"] = str(int(existing["data"]["v"]) + 1)
        return existing

    op, third = create_or_update(cms, gen, mutate=bump)
    assert op == "updated" and third["data"] == {"v": "3"}

    cms.create({"metadata": {"name": "dup", "namespace": "ns1", "labels": {"svc": "s"}}})
    with pytest.raises(KubeError):
        create_or_update(cms, gen)  # two objects match the identifying labels
