"""Informer: every change reaches the handlers exactly once, across disconnects, 410 relists and outages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from submariner.broker.kube import CONFIGMAPS, Informer, Unavailable
from submariner.broker.kube.fake import FakeCluster


def cm(name: str, ns: str = "ns1", **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "data": dict(data)}


def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


class Recorder:
    """Handler log plus a model of the source built only from events (must equal the server)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.model: dict[str, str] = {}
        self.lock = threading.Lock()

    def add(self, obj: dict[str, Any]) -> None:
        with self.lock:
            name = obj["metadata"]["name"]
            assert name not in self.model, f"duplicate add {name}"
            self.model[name] = obj["metadata"]["resourceVersion"]
            self.events.append(("add", name, (obj.get("data") or {}).get("v", "")))

    def update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        with self.lock:
            name = new["metadata"]["name"]
            assert self.model.get(name) == old["metadata"]["resourceVersion"], f"update of unknown {name}"
            assert old["metadata"]["resourceVersion"] != new["metadata"]["resourceVersion"]
            self.model[name] = new["metadata"]["resourceVersion"]
            self.events.append(("update", name, (new.get("data") or {}).get("v", "")))

    def delete(self, obj: dict[str, Any]) -> None:
        with self.lock:
            name = obj["metadata"]["name"]
            assert name in self.model, f"delete of unknown {name}"
            del self.model[name]
            self.events.append(("delete", name, ""))

    def handlers(self) -> dict[str, Any]:
        return {"on_add": self.add, "on_update": self.update, "on_delete": self.delete}


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def started(cluster: FakeCluster) -> Iterator[tuple[Informer, Recorder]]:
    rec = Recorder()
    inf = Informer(cluster.resource(CONFIGMAPS), backoff=(0.01, 0.05), **rec.handlers())
    inf.start()
    assert inf.wait_for_sync(5)
    yield inf, rec
    inf.stop()


def server_state(cluster: FakeCluster) -> dict[str, str]:
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in cluster.objects(CONFIGMAPS)}


def test_initial_list_then_watch(cluster: FakeCluster) -> None:
    cms = cluster.resource(CONFIGMAPS)
    cms.create(cm("pre", v="0"))
    rec = Recorder()
    inf = Informer(cms, **rec.handlers())
    assert not inf.has_synced()
    inf.start()
    assert inf.wait_for_sync(5) and inf.has_synced()
    assert rec.events == [("add", "pre", "0")]
    cms.create(cm("a", v="1"))
    obj = cms.get("ns1", "a")
    obj["data"]["v"] = "2"
    cms.update(obj)
    cms.delete("ns1", "pre")
    eventually(lambda: len(rec.events) == 4)
    assert rec.events[1:] == [("add", "a", "1"), ("update", "a", "2"), ("delete", "pre", "")]
    assert inf.get("ns1", "a")["data"] == {"v": "2"}  # type: ignore[index]
    assert [o["metadata"]["name"] for o in inf.list()] == ["a"]
    inf.stop()


def test_disconnect_rewatches_from_last_version(cluster: FakeCluster,
                                               started: tuple[Informer, Recorder]) -> None:
    inf, rec = started
    cms = cluster.resource(CONFIGMAPS)
    cms.create(cm("a", v="1"))
    eventually(lambda: len(rec.events) == 1)
    cluster.disconnect_watches()
    cms.create(cm("b", v="1"))  # made while no watch is open: replayed from history
    eventually(lambda: rec.model == server_state(cluster))
    assert rec.events == [("add", "a", "1"), ("add", "b", "1")]
    assert inf.relists == 0


def test_expiry_relists_without_losing_or_duplicating(cluster: FakeCluster,
                                                     started: tuple[Informer, Recorder]) -> None:
    inf, rec = started
    cms = cluster.resource(CONFIGMAPS)
    for name in ("keep", "change", "gone"):
        cms.create(cm(name, v="1"))
    eventually(lambda: len(rec.events) == 3)
    with cluster.blackout():  # these changes never reach the open watch; then it gets 410
        obj = cms.get("ns1", "change")
        obj["data"]["v"] = "2"
        cms.update(obj)
        cms.delete("ns1", "gone")
        cms.create(cm("new", v="1"))
        cms.create(cm("flash", v="1"))
        cms.delete("ns1", "flash")
    eventually(lambda: rec.model == server_state(cluster))
    assert inf.relists == 1
    assert sorted(rec.events[3:]) == [("add", "new", "1"), ("delete", "gone", ""), ("update", "change", "2")]
    # and the informer keeps watching after the relist
    cms.delete("ns1", "keep")
    eventually(lambda: rec.model == server_state(cluster))
    assert rec.events[-1] == ("delete", "keep", "")


def test_expired_on_rewatch_also_relists(cluster: FakeCluster, started: tuple[Informer, Recorder]) -> None:
    inf, rec = started
    cms = cluster.resource(CONFIGMAPS)
    cms.create(cm("a", v="1"))
    eventually(lambda: len(rec.events) == 1)
    cluster.expire_next_watch()
    cluster.disconnect_watches()  # the re-watch is answered with 410
    cms.create(cm("b", v="1"))
    eventually(lambda: rec.model == server_state(cluster))
    assert rec.events == [("add", "a", "1"), ("add", "b", "1")]
    assert inf.relists == 1


def test_reconnects_after_outage(cluster: FakeCluster, started: tuple[Informer, Recorder]) -> None:
    _, rec = started
    cms = cluster.resource(CONFIGMAPS)
    cluster.set_unavailable(True)
    time.sleep(0.1)  # a few failed reconnects with backoff
    cluster.set_unavailable(False)
    cms.create(cm("a", v="1"))
    eventually(lambda: rec.model == server_state(cluster))
    assert rec.events == [("add", "a", "1")]


def test_list_failure_is_retried(cluster: FakeCluster) -> None:
    cluster.fail_next("list", Unavailable("down"), count=2)
    cluster.resource(CONFIGMAPS).create(cm("a"))
    inf = Informer(cluster.resource(CONFIGMAPS), backoff=(0.01, 0.02))
    inf.start()
    assert inf.wait_for_sync(5)
    assert inf.get("ns1", "a") is not None
    inf.stop()


def test_add_handlers_replays_cache(cluster: FakeCluster, started: tuple[Informer, Recorder]) -> None:
    inf, _ = started
    cms = cluster.resource(CONFIGMAPS)
    cms.create(cm("a", v="1"))
    eventually(lambda: inf.get("ns1", "a") is not None)
    late = Recorder()
    inf.add_handlers(**late.handlers())
    cms.create(cm("b", v="1"))
    eventually(lambda: late.model == server_state(cluster))
    assert late.events == [("add", "a", "1"), ("add", "b", "1")]


def test_handler_errors_do_not_stop_the_informer(cluster: FakeCluster) -> None:
    seen: list[str] = []

    def on_add(obj: dict[str, Any]) -> None:
        seen.append(obj["metadata"]["name"])
        raise RuntimeError("handler bug")

    inf = Informer(cluster.resource(CONFIGMAPS), on_add=on_add)
    inf.start()
    cluster.resource(CONFIGMAPS).create(cm("a"))
    cluster.resource(CONFIGMAPS).create(cm("b"))
    eventually(lambda: seen == ["a", "b"])
    inf.stop()


def test_namespace_scope_and_stop_is_prompt(cluster: FakeCluster) -> None:
    cms = cluster.resource(CONFIGMAPS)
    cms.create(cm("a", ns="ns1"))
    cms.create(cm("b", ns="ns2"))
    inf = Informer(cms, namespace="ns2")
    inf.start()
    assert inf.wait_for_sync(5)
    assert [o["metadata"]["name"] for o in inf.list()] == ["b"]
    eventually(lambda: cluster.watch_count() == 1)
    started = time.monotonic()
    inf.stop()
    assert time.monotonic() - started < 1.0
    assert cluster.watch_count() == 0
    assert not inf.wait_for_sync(0.01) or inf.has_synced()


def test_transform_slims_cached_objects_and_relists_still_diff(cluster: FakeCluster) -> None:
    """`transform` runs before caching and before the handlers; the relist diff works on the slim objects."""
    cms = cluster.resource(CONFIGMAPS)
    cms.create({**cm("a", v="1", big="x" * 1000), "metadata": {
        "name": "a", "namespace": "ns1", "labels": {"keep": "yes"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}}})
    cms.create(cm("b", v="1"))

    def slim(obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        if meta["name"] == "boom":
            raise ValueError("transform bug")
        return {"metadata": {k: meta[k] for k in ("name", "namespace", "resourceVersion", "labels") if k in meta},
                "data": {"v": (obj.get("data") or {}).get("v", "")}}

    rec = Recorder()
    inf = Informer(cms, transform=slim, backoff=(0.01, 0.05), **rec.handlers())
    seen: list[dict[str, Any]] = []
    inf.add_handlers(on_add=seen.append, on_update=lambda old, new: seen.append(new))
    inf.start()
    assert inf.wait_for_sync(5)
    a = inf.get("ns1", "a")
    assert a is not None and a["data"] == {"v": "1"} and a["metadata"]["labels"] == {"keep": "yes"}
    assert "annotations" not in a["metadata"] and "uid" not in a["metadata"]
    assert all(set(o["data"]) == {"v"} for o in seen)  # handlers get the slim objects too
    obj = cms.get("ns1", "b")
    obj["data"]["v"] = "2"
    cms.update(obj)
    cms.create(cm("boom", v="3", other="kept"))
    eventually(lambda: len(rec.events) == 4)
    assert inf.get("ns1", "boom")["data"] == {"v": "3", "other": "kept"}  # type: ignore[index]
    with cluster.blackout():  # missed events: a 410, then a relist diffed against the slim cache
        cms.delete("ns1", "a")
        obj = cms.get("ns1", "b")
        obj["data"]["v"] = "3"
        cms.update(obj)
    eventually(lambda: len(rec.events) == 6)
    time.sleep(0.2)
    assert rec.events[2:] == [("update", "b", "2"), ("add", "boom", "3"), ("delete", "a", ""), ("update", "b", "3")]
    assert rec.model == server_state(cluster) and inf.relists == 1
    inf.stop()
