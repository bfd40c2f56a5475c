"""Resource syncer and broker syncer against fake clusters: round trips, no echoes, orphans, faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from submariner.broker.api.labels import CLUSTER_ID, ORIGINATING_NAMESPACE
from submariner.broker.api.submariner import ENDPOINTS
from submariner.broker.kube import CONFIGMAPS, NAMESPACES, Conflict, NotFound, Unavailable
from submariner.broker.kube.fake import FakeCluster
from submariner.broker.sync import (
    BrokerSyncer,
    BrokerSyncerConfig,
    CreateOrUpdateFederator,
    Direction,
    Op,
    ResourceConfig,
    ResourceSyncer,
    SyncerConfig,
    UpdateStatusFederator,
    process_every_update,
)

B = "submariner-k8s-broker"


def ep(name: str, ns: str = "ns1", labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    return {"metadata": meta, "spec": spec or {"cable_name": name}}


def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def names(cluster: FakeCluster, ns: str | None = None) -> set[str]:
    return {o["metadata"]["name"] for o in cluster.objects(ENDPOINTS)
            if ns is None or o["metadata"]["namespace"] == ns}


class World:
    """A broker and member clusters, each with a BrokerSyncer for Endpoints."""

    def __init__(self) -> None:
        self.broker = FakeCluster("broker")
        self.clusters: dict[str, FakeCluster] = {}
        self.syncers: dict[str, BrokerSyncer] = {}

    def cluster(self, cid: str, **kw: Any) -> FakeCluster:
        self.clusters[cid] = FakeCluster(cid, **kw)
        return self.clusters[cid]

    def start(self, cid: str, **rc: Any) -> BrokerSyncer:
        s = BrokerSyncer(BrokerSyncerConfig(
            local=self.clusters[cid], broker=self.broker, broker_namespace=B, local_cluster_id=cid,
            resources=[ResourceConfig(ENDPOINTS, **rc)],
        ))
        s.start(timeout=5)
        self.syncers[cid] = s
        return s

    def stop(self, cid: str) -> None:
        self.syncers.pop(cid).stop()

    def all_clusters(self) -> list[FakeCluster]:
        return [self.broker, *self.clusters.values()]

    def quiesce(self, timeout: float = 10.0) -> None:
        """Wait until every syncer is idle and no cluster has been written for a while."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            total = sum(len(c.writes) for c in self.all_clusters())
            idle = all(s.wait_idle(0.5) for s in self.syncers.values())
            if total != last or not idle:
                last, since = total, time.monotonic()
            elif time.monotonic() - since > 0.3:
                return
            time.sleep(0.02)
        raise AssertionError("sync did not settle")

    def writes(self) -> dict[str, list[tuple[str, str, str]]]:
        return {c.name: [(w.verb, w.namespace, w.name) for w in c.writes] for c in self.all_clusters()}


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    for s in w.syncers.values():
        s.stop()


def test_round_trip_no_echo_and_single_propagation(world: World) -> None:
    c1, c2 = world.cluster("c1"), world.cluster("c2")
    world.start("c1")
    world.start("c2")
    eps1 = c1.resource(ENDPOINTS)
    eps1.create(ep("e1", cable_name="a"))
    c2.resource(ENDPOINTS).create(ep("e2", ns="ns2"))
    world.quiesce()

    on_broker = {o["metadata"]["name"]: o for o in world.broker.objects(ENDPOINTS)}
    assert set(on_broker) == {"e1", "e2"}
    assert on_broker["e1"]["metadata"]["namespace"] == B
    assert on_broker["e1"]["metadata"]["labels"] == {CLUSTER_ID: "c1", ORIGINATING_NAMESPACE: "ns1"}
    assert on_broker["e2"]["metadata"]["labels"] == {CLUSTER_ID: "c2", ORIGINATING_NAMESPACE: "ns2"}
    imported = c2.resource(ENDPOINTS).get("ns1", "e1")
    assert imported["spec"] == {"cable_name": "a"}
    assert imported["metadata"]["labels"] == {CLUSTER_ID: "c1", ORIGINATING_NAMESPACE: "ns1"}
    assert c1.resource(ENDPOINTS).get("ns2", "e2")["metadata"]["labels"][CLUSTER_ID] == "c2"
    assert names(c1) == names(c2) == {"e1", "e2"}  # nothing echoed back as a second copy
    assert "labels" not in eps1.get("ns1", "e1")["metadata"]  # the source is never written

    # steady state: zero writes anywhere
    before = world.writes()
    time.sleep(0.3)
    world.quiesce()
    assert world.writes() == before

    # one update -> exactly one write on the broker and one on the other cluster
    counts = {c.name: len(c.writes) for c in world.all_clusters()}
    obj = eps1.get("ns1", "e1")
    obj["spec"]["cable_name"] = "b"
    eps1.update(obj)
    world.quiesce()
    assert world.broker.writes[counts["broker"]:] == [world.broker.writes[-1]]
    assert world.broker.writes[-1].verb == "update"
    assert [w.verb for w in c2.writes[counts["c2"]:]] == ["update"]
    assert len(c1.writes) == counts["c1"] + 1  # only the user's own update
    assert c2.resource(ENDPOINTS).get("ns1", "e1")["spec"] == {"cable_name": "b"}

    # one delete -> exactly one delete on each side
    counts = {c.name: len(c.writes) for c in world.all_clusters()}
    eps1.delete("ns1", "e1")
    world.quiesce()
    assert [(w.verb, w.name) for w in world.broker.writes[counts["broker"]:]] == [("delete", "e1")]
    assert [(w.verb, w.name) for w in c2.writes[counts["c2"]:]] == [("delete", "e1")]
    assert names(c2) == {"e2"} and names(world.broker) == {"e2"}


def test_orphans_removed_on_start_and_clean_restart_writes_nothing(world: World) -> None:
    c1, c2 = world.cluster("c1"), world.cluster("c2")
    broker_eps = world.broker.resource(ENDPOINTS)
    c1.resource(ENDPOINTS).create(ep("live"))
    stamp = {CLUSTER_ID: "c1", ORIGINATING_NAMESPACE: "ns1"}
    broker_eps.create(ep("live", ns=B, labels=stamp))
    broker_eps.create(ep("stale", ns=B, labels=stamp))  # c1 deleted it while its agent was down
    broker_eps.create(ep("from-c3", ns=B, labels={CLUSTER_ID: "c3", ORIGINATING_NAMESPACE: "ns1"}))
    # an import whose broker original is gone, and a local object of c2's own
    c2.resource(ENDPOINTS).create(ep("ghost", labels={CLUSTER_ID: "c3", ORIGINATING_NAMESPACE: "ns1"}))
    c2.resource(ENDPOINTS).create(ep("mine"))

    world.start("c1")
    world.quiesce()
    assert names(world.broker) == {"live", "from-c3"}
    assert world.broker.write_count(verb="delete") == 1
    assert names(c1) == {"live", "from-c3"}

    world.start("c2")
    world.quiesce()
    assert names(c2) == {"mine", "from-c3", "live"}  # ghost deleted, others imported
    assert names(world.broker) == {"live", "from-c3", "mine"}

    # a normal restart after a successful sync deletes and writes nothing
    before = world.writes()
    world.stop("c1")
    world.stop("c2")
    world.start("c1")
    world.start("c2")
    world.quiesce()
    assert world.writes() == before


def test_conflicts_and_outages_are_retried(world: World) -> None:
    c1, c2 = world.cluster("c1"), world.cluster("c2")
    world.start("c1")
    world.start("c2")
    eps1 = c1.resource(ENDPOINTS)
    eps1.create(ep("e1", cable_name="a"))
    world.quiesce()

    world.broker.fail_next("update", Conflict("stale", status=409, reason="Conflict"), count=3)
    obj = eps1.get("ns1", "e1")
    obj["spec"]["cable_name"] = "b"
    eps1.update(obj)
    eventually(lambda: c2.resource(ENDPOINTS).get("ns1", "e1")["spec"] == {"cable_name": "b"})

    # beyond create_or_update's own retries: the syncer requeues with backoff
    world.broker.fail_next("create", Unavailable("broker down"), count=4)
    eps1.create(ep("e2"))
    eventually(lambda: "e2" in names(c2))
    world.quiesce()
    assert world.broker.write_count(verb="create") == 2
    assert world.syncers["c1"].local_syncer(ENDPOINTS).stats["failed"] >= 1


def test_broker_watch_expiry_relists_without_loss_or_duplicates(world: World) -> None:
    c1, c2 = world.cluster("c1"), world.cluster("c2")
    world.start("c1")
    world.start("c2")
    eps1 = c1.resource(ENDPOINTS)
    for name in ("keep", "change", "gone"):
        eps1.create(ep(name))
    world.quiesce()
    c2_before = len(c2.writes)

    with world.broker.blackout(ENDPOINTS.plural):  # c2's broker watch misses all of this, then gets 410
        obj = eps1.get("ns1", "change")
        obj["spec"]["cable_name"] = "changed"
        eps1.update(obj)
        eps1.delete("ns1", "gone")
        eps1.create(ep("new"))
        eventually(lambda: names(world.broker) == {"keep", "change", "new"})
        eventually(lambda: world.broker.resource(ENDPOINTS).get(B, "change")["spec"]["cable_name"] == "changed")
    world.quiesce()
    assert sorted((w.verb, w.name) for w in c2.writes[c2_before:]) == [
        ("create", "new"), ("delete", "gone"), ("update", "change"),
    ]
    assert names(c2) == {"keep", "change", "new"}
    assert world.syncers["c2"].broker_syncer(ENDPOINTS).informer.relists == 1


def test_status_changes_follow_the_equivalence_check(world: World) -> None:
    c1 = world.cluster("c1")
    world.cluster("c2")
    world.start("c1")
    eps1 = c1.resource(ENDPOINTS)
    obj = eps1.create(ep("e1"))
    world.quiesce()
    broker_writes = len(world.broker.writes)
    obj["status"] = {"health": "ok"}
    eps1.update_status(obj)
    world.quiesce()
    assert len(world.broker.writes) == broker_writes  # default: status-only changes are not synced

    world.stop("c1")
    world.start("c1", local_resources_equivalent=process_every_update)
    world.quiesce()  # start-up sync of the existing object carries its status
    assert world.broker.resource(ENDPOINTS).get(B, "e1")["status"] == {"health": "ok"}
    obj = eps1.get("ns1", "e1")
    obj["status"] = {"health": "bad"}
    eps1.update_status(obj)
    world.quiesce()
    assert world.broker.resource(ENDPOINTS).get(B, "e1")["status"] == {"health": "bad"}
    assert world.broker.writes[-1].verb == "update_status"


def test_import_waits_for_its_namespace(world: World) -> None:
    c1 = world.cluster("c1")
    c2 = world.cluster("c2", enforce_namespaces=True)
    world.start("c1")
    world.start("c2")
    c1.resource(ENDPOINTS).create(ep("e1", ns="apps"))
    eventually(lambda: names(world.broker) == {"e1"})
    world.quiesce()  # parked keys do not count as pending work
    assert names(c2) == set()
    assert world.syncers["c2"].broker_syncer(ENDPOINTS).stats["failed"] == 0

    c2.resource(NAMESPACES).create({"metadata": {"name": "apps"}})
    eventually(lambda: names(c2) == {"e1"})

    c2.resource(NAMESPACES).delete("", "apps")  # takes the import with it
    assert names(c2) == set()
    c2.resource(NAMESPACES).create({"metadata": {"name": "apps"}})
    eventually(lambda: names(c2) == {"e1"})  # recreated namespace is repopulated


def test_import_into_fixed_namespace_and_selector(world: World) -> None:
    c1, c2 = world.cluster("c1"), world.cluster("c2")
    world.start("c1", local_namespace="submariner-operator", label_selector="app=gw")
    world.start("c2", local_namespace="submariner-operator", label_selector="app=gw")
    c1.resource(ENDPOINTS).create(ep("e1", ns="submariner-operator", labels={"app": "gw"}))
    c1.resource(ENDPOINTS).create(ep("other-ns", ns="default", labels={"app": "gw"}))
    c1.resource(ENDPOINTS).create(ep("unselected", ns="submariner-operator"))
    world.quiesce()
    assert names(world.broker) == {"e1"}
    copy = c2.resource(ENDPOINTS).get("submariner-operator", "e1")
    assert copy["metadata"]["labels"] == {"app": "gw", CLUSTER_ID: "c1"}  # no originatingNamespace


# ----------------------------------------------------------------------------- ResourceSyncer directly


class RecordingFederator:
    """Records calls; can block to let events pile up while an op is in flight."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def distribute(self, obj: dict[str, Any]) -> None:
        self.gate.wait(5)
        self.calls.append(("distribute", obj["metadata"]["name"], obj))

    def delete(self, obj: dict[str, Any]) -> None:
        self.gate.wait(5)
        self.calls.append(("delete", obj["metadata"]["name"], obj))


def syncer(source: FakeCluster, fed: Any, **kw: Any) -> ResourceSyncer:
    s = ResourceSyncer(SyncerConfig(name="test", source=source.resource(CONFIGMAPS), federator=fed, **kw))
    s.start(timeout=5)
    return s


def test_per_key_op_order_survives_delete_and_recreate() -> None:
    src = FakeCluster()
    fed = RecordingFederator()
    s = syncer(src, fed, source_namespace="ns1")
    cms = src.resource(CONFIGMAPS)
    fed.gate.clear()
    cms.create({"metadata": {"name": "a", "namespace": "ns1"}, "data": {"v": "1"}})
    eventually(lambda: not s._queue.idle())
    time.sleep(0.05)  # the create is in flight, blocked in the federator
    cms.delete("ns1", "a")
    cms.create({"metadata": {"name": "a", "namespace": "ns1"}, "data": {"v": "2"}})
    obj = cms.get("ns1", "a")
    obj["data"]["v"] = "3"
    cms.update(obj)
    fed.gate.set()
    assert s.wait_idle(5)
    ops = [(c[0], c[2].get("data", {}).get("v")) for c in fed.calls]
    # the delete is not lost and the final state wins; the update coalesces into the pending create
    assert ops[1] == ("delete", "1") and ops[-1] == ("distribute", "3") and len(ops) == 3
    s.stop()


def test_transform_skip_requeue_and_on_successful_sync() -> None:
    src = FakeCluster()
    fed = RecordingFederator()
    seen: list[tuple[str, int, Op]] = []
    synced: list[tuple[str, Op]] = []

    def transform(obj: dict[str, Any], requeues: int, op: Op) -> tuple[dict[str, Any] | None, bool]:
        name = obj["metadata"]["name"]
        seen.append((name, requeues, op))
        if name == "skip":
            return None, False
        if name == "later" and requeues < 2:
            return None, True
        obj["data"] = {"transformed": "yes"}
        return obj, False

    def on_sync(obj: dict[str, Any], op: Op) -> bool:
        synced.append((obj["metadata"]["name"], op))
        return False

    s = syncer(src, fed, transform=transform, on_successful_sync=on_sync,
               retry_backoff=(0.01, 0.05))
    cms = src.resource(CONFIGMAPS)
    for name in ("skip", "later", "plain"):
        cms.create({"metadata": {"name": name, "namespace": "ns1"}})
    eventually(lambda: len(fed.calls) == 2)
    assert s.wait_idle(5)
    assert sorted(c[1] for c in fed.calls) == ["later", "plain"]
    assert all(c[2]["data"] == {"transformed": "yes"} for c in fed.calls)
    assert [r for n, r, _ in seen if n == "later"] == [0, 1, 2]
    assert sorted(synced) == [("later", Op.CREATE), ("plain", Op.CREATE)]
    # source is "all namespaces": the origin is recorded
    assert fed.calls[0][2]["metadata"]["labels"] == {ORIGINATING_NAMESPACE: "ns1"}
    s.stop()


def test_direction_filters_by_cluster_id() -> None:
    src = FakeCluster()
    cms = src.resource(CONFIGMAPS)
    cms.create({"metadata": {"name": "own", "namespace": "ns1"}})
    cms.create({"metadata": {"name": "mine-stamped", "namespace": "ns1", "labels": {CLUSTER_ID: "me"}}})
    cms.create({"metadata": {"name": "foreign", "namespace": "ns1", "labels": {CLUSTER_ID: "other"}}})
    got = {}
    for direction in Direction:
        fed = RecordingFederator()
        s = syncer(src, fed, direction=direction, local_cluster_id="me")
        assert s.wait_idle(5)
        got[direction] = sorted(c[1] for c in fed.calls)
        s.stop()
    assert got[Direction.LOCAL_TO_REMOTE] == ["own"]
    assert got[Direction.REMOTE_TO_LOCAL] == ["foreign"]
    assert got[Direction.NONE] == ["foreign", "mine-stamped", "own"]


def test_reconcile_deletes_only_orphans_and_list_resources() -> None:
    src, dst = FakeCluster("src"), FakeCluster("dst")
    src.resource(CONFIGMAPS).create({"metadata": {"name": "a", "namespace": "ns1", "labels": {"k": "v"}}})
    src.resource(CONFIGMAPS).create({"metadata": {"name": "b", "namespace": "ns1"}})
    for name in ("a", "orphan"):
        dst.resource(CONFIGMAPS).create({"metadata": {"name": name, "namespace": "ns1"}})
    s = syncer(src, CreateOrUpdateFederator(dst.resource(CONFIGMAPS)), source_namespace="ns1")
    s.reconcile(lambda: dst.resource(CONFIGMAPS).list()[0])
    eventually(lambda: {o["metadata"]["name"] for o in dst.objects(CONFIGMAPS)} == {"a", "b"})
    assert [o["metadata"]["name"] for o in s.list_resources("k=v")] == ["a"]
    assert s.get_resource("b", "ns1") is not None and s.get_resource("zz", "ns1") is None
    writes = len(dst.writes)
    s.requeue_resource("a", "ns1")
    assert s.wait_idle(5)
    assert len(dst.writes) == writes  # requeue of an in-sync object: federated, but nothing to write
    s.stop()


def test_should_process_veto_and_delete_of_missing_target() -> None:
    src, dst = FakeCluster("src"), FakeCluster("dst")
    s = syncer(src, CreateOrUpdateFederator(dst.resource(CONFIGMAPS), "target"), source_namespace="ns1",
               should_process=lambda obj, op: obj["metadata"]["name"] != "vetoed")
    cms = src.resource(CONFIGMAPS)
    cms.create({"metadata": {"name": "vetoed", "namespace": "ns1"}})
    cms.create({"metadata": {"name": "ok", "namespace": "ns1"}})
    eventually(lambda: [o["metadata"]["name"] for o in dst.objects(CONFIGMAPS)] == ["ok"])
    assert dst.objects(CONFIGMAPS)[0]["metadata"]["namespace"] == "target"
    dst.resource(CONFIGMAPS).delete("target", "ok")
    cms.delete("ns1", "ok")  # target already gone: NotFound counts as success
    assert s.wait_idle(5)
    assert s.stats["failed"] == 0
    s.stop()


def test_update_status_federator() -> None:
    src, dst = FakeCluster("src"), FakeCluster("dst")
    dst.resource(ENDPOINTS).create(ep("e1"))
    fed = UpdateStatusFederator(dst.resource(ENDPOINTS))
    fed.distribute({**ep("e1"), "status": {"up": True}})
    assert dst.resource(ENDPOINTS).get("ns1", "e1")["status"] == {"up": True}
    writes = len(dst.writes)
    fed.distribute({**ep("e1"), "status": {"up": True}})
    fed.distribute({**ep("missing"), "status": {"up": True}})  # never creates
    fed.delete(ep("e1"))  # never deletes
    assert len(dst.writes) == writes
    dst.fail_next("update_status", Conflict("stale", status=409))
    fed.distribute({**ep("e1"), "status": {"up": False}})
    assert dst.resource(ENDPOINTS).get("ns1", "e1")["status"] == {"up": False}
    with pytest.raises(NotFound):
        src.resource(ENDPOINTS).get("ns1", "e1")


def test_a_failing_transform_is_retried_not_dropped() -> None:
    src = FakeCluster()
    fed = RecordingFederator()
    attempts: list[int] = []

    def flaky(obj: dict[str, Any], requeues: int, op: Op) -> tuple[dict[str, Any] | None, bool]:
        attempts.append(requeues)
        if len(attempts) < 3:
            raise RuntimeError("transform bug")
        return obj, False

    s = syncer(src, fed, transform=flaky, retry_backoff=(0.01, 0.05))
    src.resource(CONFIGMAPS).create({"metadata": {"name": "a", "namespace": "ns1"}})
    eventually(lambda: len(fed.calls) == 1)
    assert attempts == [0, 1, 2]
    s.stop()
