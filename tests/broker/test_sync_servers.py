"""The real seam (`Cluster`) and the broker syncer against real API server processes: broker + 2 clusters."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from submariner.broker.api.crds import crd
from submariner.broker.api.labels import CLUSTER_ID, ORIGINATING_NAMESPACE
from submariner.broker.api.submariner import ENDPOINTS
from submariner.broker.kube import (
    CONFIGMAPS,
    CRDS,
    NAMESPACES,
    AlreadyExists,
    Cluster,
    Conflict,
    Expired,
    Forbidden,
    Informer,
    NotFound,
    Unavailable,
    missing_namespace,
)
from submariner.broker.sync import BrokerSyncer, BrokerSyncerConfig, ResourceConfig

B = "submariner-k8s-broker"
SELECTOR = "app=sync-test"


def eventually(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (NotFound, Unavailable):
            pass
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def endpoint(name: str, ns: str, cable: str = "c") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "cluster_id": "c1", "cable_name": cable, "hostname": "gw", "subnets": ["10.0.0.0/16"],
            "private_ip": "192.168.0.1", "public_ip": "1.2.3.4", "nat_enabled": False, "backend": "vxlan",
        },
    }


def configmap(name: str, ns: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "labels": {"app": "sync-test", **(labels or {})}},
            "data": dict(data)}


class Events:
    """Counts watch events per (type, name) on one cluster: how tests see writes on a real server."""

    def __init__(self, cluster: Cluster, res: Any, namespace: str | None = None) -> None:
        self.log: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.informer = Informer(
            cluster.resource(res), namespace=namespace,
            on_add=lambda o: self._rec("ADDED", o),
            on_update=lambda old, new: self._rec("MODIFIED", new),
            on_delete=lambda o: self._rec("DELETED", o),
        )
        self.informer.start()
        assert self.informer.wait_for_sync(10)

    def _rec(self, etype: str, obj: dict[str, Any]) -> None:
        with self._lock:
            self.log.append((etype, obj["metadata"]["name"]))

    def mark(self) -> int:
        with self._lock:
            return len(self.log)

    def since(self, mark: int) -> list[tuple[str, str]]:
        with self._lock:
            return self.log[mark:]

    def names(self) -> set[str]:
        return {o["metadata"]["name"] for o in self.informer.list()}


def wait_quiet(*recorders: Events, quiet: float = 1.0, timeout: float = 20.0) -> None:
    """Until no recorder has seen an event for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    marks = [r.mark() for r in recorders]
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = [r.mark() for r in recorders]
        if now != marks:
            marks, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise AssertionError("clusters did not go quiet")


class Setup:
    def __init__(self, factory: Callable[..., Any], broker_args: list[str] | None = None) -> None:
        self.servers = {"broker": factory("broker", broker_args), "c1": factory("c1"), "c2": factory("c2")}
        self.clusters = {
            name: Cluster.from_kubeconfig(s.kubeconfig, s.context) for name, s in self.servers.items()
        }
        b = self.servers["broker"]
        # the broker case: URL + bearer token + CA, as an agent gets them from broker-info
        self.broker = Cluster.from_token(
            b.url, b.admin_token, ca_data=base64.b64encode((b.data_dir / "ca.crt").read_bytes())
        )
        self.clusters["broker"].resource(NAMESPACES).create({"metadata": {"name": B}})
        self.syncers: dict[str, BrokerSyncer] = {}
        self.recorders: list[Events] = []

    def start(self, cid: str, rc: ResourceConfig) -> BrokerSyncer:
        s = BrokerSyncer(BrokerSyncerConfig(
            local=self.clusters[cid], broker=self.broker, broker_namespace=B, local_cluster_id=cid,
            resources=[rc],
        ))
        s.start(timeout=15)
        self.syncers[cid] = s
        return s

    def events(self, name: str, res: Any, namespace: str | None = None) -> Events:
        e = Events(self.clusters[name], res, namespace)
        self.recorders.append(e)
        return e

    def close(self) -> None:
        for s in self.syncers.values():
            s.stop()
        for r in self.recorders:
            r.informer.stop()


@pytest.fixture
def setup(api_server_factory: Callable[..., Any]) -> Iterator[Setup]:
    s = Setup(api_server_factory)
    yield s
    s.close()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_real_client_semantics(api_server_factory: Callable[..., Any]) -> None:
    server = api_server_factory("solo", ["--watch-history", "2"])
    c = Cluster.from_kubeconfig(server.kubeconfig, server.context)
    cms = c.resource(CONFIGMAPS)
    with pytest.raises(NotFound) as err:
        cms.create(configmap("a", "nope"))
    assert missing_namespace(err.value) == "nope"
    c.resource(NAMESPACES).create({"metadata": {"name": "ns1"}})
    created = cms.create(configmap("a", "ns1", x="1"))
    assert created["kind"] == "ConfigMap" and created["metadata"]["uid"]
    with pytest.raises(AlreadyExists):
        cms.create(configmap("a", "ns1"))
    created["data"] = {"x": "2"}
    updated = cms.update(created)
    with pytest.raises(Conflict):
        cms.update(created)
    assert cms.patch("ns1", "a", {"data": {"y": "3"}})["data"] == {"x": "2", "y": "3"}
    items, rv = cms.list("ns1", label_selector=SELECTOR)
    assert [i["metadata"]["name"] for i in items] == ["a"] and items[0]["kind"] == "ConfigMap"
    assert int(rv) > int(updated["metadata"]["resourceVersion"])

    # a watch is closed promptly from another thread
    w = cms.watch(None, rv, timeout_seconds=60)
    threading.Timer(0.2, w.close).start()
    started = time.monotonic()
    assert list(w) == []
    assert time.monotonic() - started < 5

    # history of 2 events: resuming from an old version is answered with 410
    for i in range(4):
        cms.create(configmap(f"z{i}", "ns1"))
    with pytest.raises(Expired):
        list(cms.watch(None, rv, timeout_seconds=5))

    cms.delete("ns1", "a")
    with pytest.raises(NotFound):
        cms.delete("ns1", "a")
    with pytest.raises(Forbidden):
        Cluster.from_token(server.url, "not-the-token", insecure=True).resource(CONFIGMAPS).list()
    with pytest.raises(Unavailable):  # the server's CA is not trusted without ca_data
        Cluster.from_token(server.url, server.admin_token).resource(CONFIGMAPS).list()


def test_endpoint_round_trip_without_echo(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("broker", "c1", "c2"):
        setup.clusters[name].resource(CRDS).create(crd(ENDPOINTS))
    for cluster in setup.clusters.values():
        eps = cluster.resource(ENDPOINTS)
        eventually(lambda eps=eps: eps.list() is not None)  # type: ignore[misc]
    setup.clusters["c1"].resource(NAMESPACES).create({"metadata": {"name": "ns1"}})
    rc = ResourceConfig(ENDPOINTS)
    setup.start("c1", rc)
    setup.start("c2", rc)
    on_c1 = setup.events("c1", ENDPOINTS)
    on_broker = setup.events("broker", ENDPOINTS, B)
    on_c2 = setup.events("c2", ENDPOINTS)
    eps1 = setup.clusters["c1"].resource(ENDPOINTS)
    eps2 = setup.clusters["c2"].resource(ENDPOINTS)

    eps1.create(endpoint("e1", "ns1"))
    eventually(lambda: on_broker.names() == {"e1"})
    copy = setup.clusters["broker"].resource(ENDPOINTS).get(B, "e1")
    assert copy["metadata"]["labels"] == {CLUSTER_ID: "c1", ORIGINATING_NAMESPACE: "ns1"}
    assert copy["spec"]["cable_name"] == "c"

    # c2 has no ns1 yet: the import waits for it, then lands
    time.sleep(0.5)
    assert on_c2.names() == set()
    setup.clusters["c2"].resource(NAMESPACES).create({"metadata": {"name": "ns1"}})
    eventually(lambda: on_c2.names() == {"e1"})
    imported = eps2.get("ns1", "e1")
    assert imported["metadata"]["labels"] == {CLUSTER_ID: "c1", ORIGINATING_NAMESPACE: "ns1"}
    assert imported["spec"] == copy["spec"]

    # steady state: no writes anywhere, nothing echoed back
    wait_quiet(on_c1, on_broker, on_c2)
    marks = [r.mark() for r in (on_c1, on_broker, on_c2)]
    time.sleep(1.5)
    assert [r.mark() for r in (on_c1, on_broker, on_c2)] == marks
    assert on_c1.names() == {"e1"} and on_broker.names() == {"e1"}

    # one update: exactly one write on each side
    obj = eps1.get("ns1", "e1")
    obj["spec"]["cable_name"] = "changed"
    eps1.update(obj)
    eventually(lambda: eps2.get("ns1", "e1")["spec"]["cable_name"] == "changed")
    wait_quiet(on_c1, on_broker, on_c2)
    assert [r.since(m) for r, m in zip((on_c1, on_broker, on_c2), marks, strict=True)] == [
        [("MODIFIED", "e1")], [("MODIFIED", "e1")], [("MODIFIED", "e1")],
    ]

    # one delete: exactly one delete on each side
    marks = [r.mark() for r in (on_c1, on_broker, on_c2)]
    eps1.delete("ns1", "e1")
    eventually(lambda: on_c2.names() == set())
    wait_quiet(on_c1, on_broker, on_c2)
    assert [r.since(m) for r, m in zip((on_c1, on_broker, on_c2), marks, strict=True)] == [
        [("DELETED", "e1")], [("DELETED", "e1")], [("DELETED", "e1")],
    ]
    for server in setup.servers.values():
        assert server.admin_token not in caplog.text


def test_orphans_removed_on_start(setup: Setup) -> None:
    c1, c2, broker = (setup.clusters[n].resource(CONFIGMAPS) for n in ("c1", "c2", "broker"))
    for n in ("c1", "c2"):
        setup.clusters[n].resource(NAMESPACES).create({"metadata": {"name": "ns1"}})
    c1.create(configmap("live", "ns1", v="1"))
    mine = {CLUSTER_ID: "c1", ORIGINATING_NAMESPACE: "ns1"}
    broker.create(configmap("live", B, mine, v="1"))
    broker.create(configmap("stale", B, mine, v="1"))  # deleted on c1 while its agent was down
    broker.create(configmap("from-c3", B, {CLUSTER_ID: "c3", ORIGINATING_NAMESPACE: "ns1"}, v="1"))
    c2.create(configmap("ghost", "ns1", {CLUSTER_ID: "c3", ORIGINATING_NAMESPACE: "ns1"}))
    rc = ResourceConfig(CONFIGMAPS, label_selector=SELECTOR)

    setup.start("c1", rc)
    eventually(lambda: {o["metadata"]["name"] for o in broker.list(B)[0]} == {"live", "from-c3"})
    setup.start("c2", rc)
    eventually(lambda: {o["metadata"]["name"] for o in c2.list("ns1")[0]} == {"from-c3", "live"})
    on_broker = setup.events("broker", CONFIGMAPS, B)
    on_c1 = setup.events("c1", CONFIGMAPS)
    on_c2 = setup.events("c2", CONFIGMAPS)
    wait_quiet(on_broker, on_c1, on_c2)

    # a normal restart after a successful sync writes nothing
    marks = [r.mark() for r in (on_broker, on_c1, on_c2)]
    for cid in ("c1", "c2"):
        setup.syncers.pop(cid).stop()
    setup.start("c1", rc)
    setup.start("c2", rc)
    time.sleep(1.0)
    wait_quiet(on_broker, on_c1, on_c2)
    assert [r.mark() for r in (on_broker, on_c1, on_c2)] == marks


def test_broker_restart_forces_relist_without_loss_or_duplicates(setup: Setup) -> None:
    c1, c2 = (setup.clusters[n].resource(CONFIGMAPS) for n in ("c1", "c2"))
    for n in ("c1", "c2"):
        setup.clusters[n].resource(NAMESPACES).create({"metadata": {"name": "ns1"}})
    rc = ResourceConfig(CONFIGMAPS, label_selector=SELECTOR)
    setup.start("c1", rc)
    s2 = setup.start("c2", rc)
    on_c2 = setup.events("c2", CONFIGMAPS, "ns1")
    for name in ("keep", "change", "gone"):
        c1.create(configmap(name, "ns1", v="1"))
    eventually(lambda: on_c2.names() == {"keep", "change", "gone"})
    wait_quiet(on_c2)
    # an unrelated write moves the broker past what c2's watch has seen, so after the restart (which
    # starts with an empty watch history) resuming from c2's version is answered with 410
    setup.clusters["broker"].resource(CONFIGMAPS).create(
        {"metadata": {"name": "unrelated", "namespace": B}, "data": {}}
    )
    mark = on_c2.mark()
    relists = s2.broker_syncer(CONFIGMAPS).informer.relists

    broker = setup.servers["broker"]
    broker.kill()
    obj = c1.get("ns1", "change")
    obj["data"] = {"v": "2"}
    c1.update(obj)
    c1.delete("ns1", "gone")
    c1.create(configmap("new", "ns1", v="1"))
    time.sleep(0.5)  # exports fail meanwhile and are retried
    broker.start()

    eventually(lambda: on_c2.names() == {"keep", "change", "new"}, timeout=60)
    eventually(lambda: c2.get("ns1", "change")["data"] == {"v": "2"}, timeout=30)
    wait_quiet(on_c2)
    assert sorted(on_c2.since(mark)) == [("ADDED", "new"), ("DELETED", "gone"), ("MODIFIED", "change")]
    assert s2.broker_syncer(CONFIGMAPS).informer.relists > relists
