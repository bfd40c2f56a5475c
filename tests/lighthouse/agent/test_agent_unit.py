"""Lighthouse agent logic against in-memory clusters (`FakeCluster`): broker + two or three clusters, agents
running in threads. Each test names the spec section (lighthouse-agent.md) or defect (D1-D10) it covers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from agenttest import (
    HTTP,
    OP_NS,
    B,
    addresses,
    conditions,
    endpoint,
    eventually,
    headless_service,
    k8s_slice,
    lh_slices,
    service,
    service_export,
)

from submariner.broker.api import labels as L
from submariner.broker.api.multicluster import SERVICE_EXPORTS, SERVICE_IMPORTS
from submariner.broker.api.submariner import GLOBAL_INGRESS_IPS
from submariner.broker.kube import CONFIGMAPS, ENDPOINT_SLICES, LEASES, SERVICES, NotFound
from submariner.broker.kube.fake import FakeCluster
from submariner.lighthouse.agent import conditions as C
from submariner.lighthouse.agent.agent import Agent
from submariner.lighthouse.agent.aggregation import members_of
from submariner.lighthouse.agent.config import AgentConfig, ConfigError, parse_duration
from submariner.lighthouse.agent.conflicts import Member, conflicts_for
from submariner.lighthouse.agent.naming import ServiceKey, lh_slice_name

NS = "sample"


class World:
    """A broker and member clusters in memory, with an agent per cluster."""

    def __init__(self, *names: str, **config: Any) -> None:
        self.broker = FakeCluster("broker")
        self.clusters = {n: FakeCluster(n) for n in names}
        self.config = config
        self.agents: dict[str, Agent] = {}

    def start(self, name: str, **overrides: Any) -> Agent:
        cfg = AgentConfig(name, B, **{**self.config, **overrides})
        agent = Agent(cfg, self.clusters[name], self.broker)
        agent.start(timeout=10)
        self.agents[name] = agent
        return agent

    def stop(self, name: str) -> None:
        self.agents.pop(name).stop()

    def idle(self) -> None:
        for a in self.agents.values():
            assert a.wait_idle(15), f"agent {a.config.cluster_id} did not settle: {a.status()}"

    def close(self) -> None:
        for a in self.agents.values():
            a.stop()

    def res(self, cluster: str, what: Any) -> Any:
        return (self.broker if cluster == "broker" else self.clusters[cluster]).resource(what)

    def export(self, cluster: str, svc: dict[str, Any], slices: list[dict[str, Any]] = (),  # type: ignore[assignment]
               annotations: dict[str, str] | None = None) -> None:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        self.res(cluster, SERVICES).create(svc)
        for s in slices:
            self.res(cluster, ENDPOINT_SLICES).create(s)
        self.res(cluster, SERVICE_EXPORTS).create(service_export(ns, name, annotations))

    def se(self, cluster: str, name: str, ns: str = NS) -> dict[str, Any]:
        obj: dict[str, Any] = self.res(cluster, SERVICE_EXPORTS).get(ns, name)
        return obj

    def imported(self, cluster: str, name: str, ns: str = NS) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.res(cluster, SERVICE_IMPORTS).get(ns, name)
            return obj
        except NotFound:
            return None

    def slices(self, cluster: str, name: str, source: str | None = None, ns: str = NS) -> list[dict[str, Any]]:
        c = self.broker if cluster == "broker" else self.clusters[cluster]
        return lh_slices(c.objects(ENDPOINT_SLICES), ns, name, source) if cluster != "broker" else [
            o for o in c.objects(ENDPOINT_SLICES)
            if (o["metadata"].get("labels") or {}).get(L.SERVICE_NAME) == name
            and (source is None or o["metadata"]["labels"].get(L.SOURCE_CLUSTER) == source)]

    def aggregate(self, name: str, ns: str = NS) -> dict[str, Any] | None:
        for o in self.broker.objects(SERVICE_IMPORTS):
            ann = o["metadata"].get("annotations") or {}
            if ann.get(L.SERVICE_NAME) == name and ann.get(L.SOURCE_NAMESPACE) == ns:
                return o
        return None

    def total_writes(self) -> int:
        return sum(c.write_count() for c in [self.broker, *self.clusters.values()]
                   ) - self.broker.write_count(LEASES.plural)


@pytest.fixture
def world() -> Iterator[World]:
    w = World("c1", "c2", "c3")
    yield w
    w.close()


def ready(w: World, cluster: str, name: str, ns: str = NS) -> bool:
    conds = conditions(w.se(cluster, name, ns))
    return conds.get("Ready", {}).get("status") == "True"


# -- export flow (§3, §5, §7) --------------------------------------------------------------------------------


def test_export_in_c2_reaches_c1_and_c2(world: World) -> None:
    for c in ("c1", "c2"):
        world.start(c)
    world.export("c2", service(NS, "nginx", "10.2.0.5", labels={"app.kubernetes.io/name": "nginx", "team": "a"}),
                 [k8s_slice(NS, "nginx", "nginx-x1", [endpoint("10.244.2.5")],
                            labels={"app.kubernetes.io/name": "nginx", "team": "a"})])
    eventually(lambda: ready(world, "c2", "nginx"), what="Ready=True on c2")
    world.idle()
    for c in ("c1", "c2"):
        si = world.imported(c, "nginx")
        assert si is not None, c
        assert si["spec"] == {"type": "ClusterSetIP", "ports": [HTTP]}
        assert si["status"]["clusters"] == [{"cluster": "c2"}]
        assert not si["metadata"].get("labels")
        assert L.SERVICE_NAME not in si["metadata"]["annotations"]
        (eps,) = world.slices(c, "nginx")
        assert eps["addressType"] == "IPv4"
        assert eps["endpoints"] == [{"addresses": ["10.2.0.5"], "conditions": {"ready": True}}]
        assert eps["ports"] == [HTTP]
        lab = eps["metadata"]["labels"]
        assert lab[L.SOURCE_CLUSTER] == "c2" and lab[L.SERVICE_NAME] == "nginx" and lab[L.SOURCE_NAMESPACE] == NS
        assert lab[L.ENDPOINTSLICE_MANAGED_BY] == L.LIGHTHOUSE_MANAGED_BY and lab[L.IS_HEADLESS] == "false"
        assert lab["app.kubernetes.io/name"] == "nginx" and lab["team"] == "a", "D4: app.kubernetes.io/* kept"
        assert L.K8S_SERVICE_NAME not in lab
        assert eps["metadata"]["annotations"] == {L.PUBLISH_NOT_READY_ADDRESSES: "false",
                                                  L.GLOBALNET_ENABLED: "false"}
    assert world.slices("c1", "nginx")[0]["metadata"]["labels"][L.CLUSTER_ID] == "c2"
    (per_cluster,) = world.clusters["c2"].objects(SERVICE_IMPORTS)[:1]
    assert per_cluster["metadata"]["namespace"] == OP_NS and per_cluster["metadata"]["name"] == "nginx-sample-c2"
    assert per_cluster["spec"]["ips"] == ["10.2.0.5"]
    conds = conditions(world.se("c2", "nginx"))
    assert conds["Valid"]["status"] == "True"
    assert conds["Ready"]["message"] == C.READY_MESSAGE
    assert conds["Synced"] == {**conds["Synced"], "status": "True", "message": C.SYNCED_MESSAGE}
    assert "Conflict" not in conds
    # importing clusters never write ServiceExports or per-cluster imports of services they do not export
    assert world.clusters["c1"].write_count(SERVICE_EXPORTS.plural) == 0


def test_second_exporter_and_readiness(world: World) -> None:
    for c in ("c1", "c2"):
        world.start(c)
    world.export("c2", service(NS, "nginx", "10.2.0.5"), [k8s_slice(NS, "nginx", "s2", [endpoint("10.244.2.5")])])
    eventually(lambda: ready(world, "c2", "nginx"))
    world.export("c1", service(NS, "nginx", "10.1.0.5"),
                 [k8s_slice(NS, "nginx", "s1", [endpoint("10.244.1.5", ready=False)])])
    eventually(lambda: ready(world, "c1", "nginx"))
    world.idle()
    for c in ("c1", "c2"):
        assert addresses(world.slices(c, "nginx")) == ["10.1.0.5", "10.2.0.5"]
        assert sorted(x["cluster"] for x in world.imported(c, "nginx")["status"]["clusters"]) == ["c1", "c2"]
    (c1_slice,) = world.slices("c2", "nginx", "c1")
    assert c1_slice["endpoints"][0]["conditions"] == {"ready": False}, "ready = service has a ready endpoint"
    # the endpoint becomes ready → the published slice flips everywhere
    s1 = world.res("c1", ENDPOINT_SLICES).get(NS, "s1")
    s1["endpoints"][0]["conditions"]["ready"] = True
    world.res("c1", ENDPOINT_SLICES).update(s1)
    eventually(lambda: world.slices("c2", "nginx", "c1")[0]["endpoints"][0]["conditions"]["ready"] is True)


def test_headless_statefulset_hostnames(world: World) -> None:
    for c in ("c1", "c2"):
        world.start(c)
    eps = [endpoint(f"10.244.2.{i}", hostname=f"web-{i}", pod=f"web-{i}", ns=NS) for i in range(3)]
    eps[2]["conditions"] = {"ready": False}
    world.export("c2", headless_service(NS, "web", publishNotReadyAddresses=False),
                 [k8s_slice(NS, "web", "web-abc", eps, labels={"app.kubernetes.io/name": "web"})])
    eventually(lambda: ready(world, "c2", "web"))
    world.idle()
    si = world.imported("c1", "web")
    assert si["spec"] == {"type": "Headless", "ports": []}
    (s,) = world.slices("c1", "web")
    assert s["metadata"]["labels"][L.IS_HEADLESS] == "true"
    assert s["metadata"]["labels"][L.SOURCE_NAME] == "web-abc"
    assert s["metadata"]["labels"]["app.kubernetes.io/name"] == "web"
    assert [e["hostname"] for e in s["endpoints"]] == ["web-0", "web-1", "web-2"]
    assert s["endpoints"][2]["conditions"] == {"ready": False}, "not-ready copied; DNS filters"
    assert s["endpoints"][0]["targetRef"]["name"] == "web-0"
    # a second K8s slice → a second LH slice; deleting the first removes its LH slice everywhere
    world.res("c2", ENDPOINT_SLICES).create(k8s_slice(NS, "web", "web-def", [endpoint("10.244.2.9", hostname="web-9")]))
    eventually(lambda: len(world.slices("c1", "web")) == 2)
    world.res("c2", ENDPOINT_SLICES).delete(NS, "web-abc")
    eventually(lambda: [x["metadata"]["labels"][L.SOURCE_NAME] for x in world.slices("c1", "web")] == ["web-def"])


def test_unexport_and_service_deletion_clean_up_everywhere(world: World) -> None:
    for c in ("c1", "c2"):
        world.start(c)
    world.export("c2", service(NS, "nginx", "10.2.0.5"), [k8s_slice(NS, "nginx", "s2", [endpoint("10.244.2.5")])])
    world.export("c1", service(NS, "nginx", "10.1.0.5"), [k8s_slice(NS, "nginx", "s1", [endpoint("10.244.1.5")])])
    eventually(lambda: ready(world, "c1", "nginx") and ready(world, "c2", "nginx"))
    world.res("c2", SERVICE_EXPORTS).delete(NS, "nginx")
    eventually(lambda: addresses(world.slices("c1", "nginx")) == ["10.1.0.5"])
    eventually(lambda: [x["cluster"] for x in world.imported("c1", "nginx")["status"]["clusters"]] == ["c1"])
    assert world.slices("broker", "nginx", "c2") == []
    assert [o for o in world.clusters["c2"].objects(SERVICE_IMPORTS) if o["metadata"]["namespace"] == OP_NS] == []
    # Service deleted while exported: Valid=False ServiceUnavailable, everything withdrawn
    world.res("c1", SERVICES).delete(NS, "nginx")
    eventually(lambda: conditions(world.se("c1", "nginx"))["Valid"]["reason"] == "ServiceUnavailable")
    eventually(lambda: world.aggregate("nginx") is None)
    eventually(lambda: world.imported("c1", "nginx") is None and world.imported("c2", "nginx") is None)
    eventually(lambda: world.slices("c1", "nginx") == [] and world.slices("c2", "nginx") == [])
    conds = conditions(world.se("c1", "nginx"))
    assert conds["Ready"]["reason"] == "NoServiceImport"
    assert conds["Valid"]["message"] == "Service to be exported doesn't exist"
    # the Service returns → re-exported
    world.res("c1", SERVICES).create(service(NS, "nginx", "10.1.0.6"))
    eventually(lambda: ready(world, "c1", "nginx"))
    eventually(lambda: addresses(world.slices("c2", "nginx")) == ["10.1.0.6"])


def test_unsupported_types_and_d5_nodeport(world: World) -> None:
    world.start("c1")
    world.export("c1", service(NS, "ext", None, stype="ExternalName"))
    world.export("c1", service(NS, "np", "10.1.0.7", stype="NodePort"),
                 [k8s_slice(NS, "np", "np1", [endpoint("1.1.1.1")])])
    world.export("c1", service(NS, "lb", "10.1.0.8", stype="LoadBalancer"))
    eventually(lambda: conditions(world.se("c1", "ext")).get("Valid", {}).get("reason") == "UnsupportedServiceType")
    assert conditions(world.se("c1", "ext"))["Valid"]["message"] == "Service of type ExternalName not supported"
    eventually(lambda: ready(world, "c1", "np") and ready(world, "c1", "lb"))
    assert addresses(world.slices("c1", "np")) == ["10.1.0.7"]


def test_upstream_service_types_setting(world: World) -> None:
    world.start("c1", export_node_port_and_load_balancer=False)
    world.export("c1", service(NS, "np", "10.1.0.7", stype="NodePort"))
    eventually(lambda: conditions(world.se("c1", "np")).get("Valid", {}).get("message")
               == "Service of type NodePort not supported")


# -- conflicts (§6.3, D6, D7) --------------------------------------------------------------------------------


def test_port_and_affinity_conflicts_on_every_exporter(world: World) -> None:
    for c in ("c1", "c2"):
        world.start(c)
    world.export("c1", service(NS, "nginx", "10.1.0.5", sessionAffinity="ClientIP"))
    eventually(lambda: ready(world, "c1", "nginx"))
    time.sleep(1.1)  # creationTimestamps have second resolution: make c1 the oldest
    https = {"name": "https", "protocol": "TCP", "port": 443}
    world.export("c2", service(NS, "nginx", "10.2.0.5", ports=[HTTP, https]))
    for c in ("c1", "c2"):
        eventually(lambda c=c: "ConflictingPorts" in conditions(world.se(c, "nginx")).get("Conflict", {}).get(
            "reason", ""), what=f"port conflict on {c}")
    world.idle()
    for c in ("c1", "c2"):
        conflict = conditions(world.se(c, "nginx"))["Conflict"]
        assert conflict["status"] == "True"
        assert conflict["reason"] == "ConflictingPorts,ConflictingSessionAffinity", c
        assert "[c1, c2]" in conflict["message"] and "intersection" in conflict["message"]
    assert 'Using SessionAffinity "ClientIP" from the oldest exported service in cluster "c1"' in \
        conditions(world.se("c2", "nginx"))["Conflict"]["message"]
    agg = world.aggregate("nginx")
    assert agg["spec"]["sessionAffinity"] == "ClientIP"
    assert [p["port"] for p in agg["spec"]["ports"]] == [80, 443], "union by name, oldest first"
    # resolve: c2 drops the extra port and matches the affinity → the conflict clears on both
    svc = world.res("c2", SERVICES).get(NS, "nginx")
    svc["spec"]["ports"] = [HTTP]
    svc["spec"]["sessionAffinity"] = "ClientIP"
    world.res("c2", SERVICES).update(svc)
    for c in ("c1", "c2"):
        eventually(lambda c=c: conditions(world.se(c, "nginx"))["Conflict"]["status"] == "False")


def test_type_conflict_oldest_wins_and_flagged_everywhere(world: World) -> None:
    for c in ("c1", "c2"):
        world.start(c)
    world.export("c2", headless_service(NS, "db"),
                 [k8s_slice(NS, "db", "db2", [endpoint("10.244.2.1", hostname="db-0")])])
    eventually(lambda: ready(world, "c2", "db"))
    time.sleep(1.1)
    world.export("c1", service(NS, "db", "10.1.0.9"), [k8s_slice(NS, "db", "db1", [endpoint("10.244.1.1")])])
    eventually(lambda: conditions(world.se("c1", "db")).get("Ready", {}).get("message") == C.CONFLICT_MESSAGE)
    eventually(lambda: conditions(world.se("c2", "db")).get("Conflict", {}).get("reason") == "ConflictingType")
    c1 = conditions(world.se("c1", "db"))["Conflict"]
    assert c1["reason"] == "ConflictingType"
    assert 'The local service type ("ClusterSetIP") does not match the type ("Headless")' in c1["message"]
    world.idle()
    assert world.slices("c2", "db", "c1") == [] and world.slices("c1", "db", "c1") == [], "loser not exported"
    assert [x["cluster"] for x in world.aggregate("db")["status"]["clusters"]] == ["c2"]
    assert sorted(m.cluster for m in members_of(world.aggregate("db"))) == ["c1", "c2"]
    # the winner unexports → the loser becomes the oldest and is exported; conflicts clear
    world.res("c2", SERVICE_EXPORTS).delete(NS, "db")
    eventually(lambda: ready(world, "c1", "db"))
    eventually(lambda: world.imported("c2", "db")["spec"]["type"] == "ClusterSetIP")
    assert conditions(world.se("c1", "db"))["Conflict"]["status"] == "False"


def test_conflict_messages_pure() -> None:
    a = Member("c1", "ClusterSetIP", (("http", "TCP", 80, ""),), "None", None, False, 1)
    b = Member("c2", "ClusterSetIP", (("http", "TCP", 8080, ""),), "None", None, False, 2)
    assert conflicts_for("c2", [a, b], has_vip=False, only_differing=True)[0][0] == "ConflictingPorts"
    assert [r for r, _ in conflicts_for("c1", [a, b], has_vip=True)] == ["ConflictingPorts"]
    assert "union" in conflicts_for("c1", [a, b], has_vip=True)[0][1]
    assert conflicts_for("c1", [a, b], has_vip=False, only_differing=True) == [], "upstream: oldest not flagged"
    tie = Member("c0", "Headless", (), "", None, False, 2)
    assert conflicts_for("c0", [b, tie], has_vip=False)[0][0] == "ConflictingType", "ties by cluster name: c0 wins"
    assert "does not match" not in conflicts_for("c0", [b, tie], has_vip=False)[0][1]


# -- lifecycle (§9) -------------------------------------------------------------------------------------------


def test_restart_reconciles_and_steady_state_writes_nothing(world: World) -> None:
    for c in ("c1", "c2"):
        world.start(c)
    world.export("c2", service(NS, "keep", "10.2.0.1"), [k8s_slice(NS, "keep", "k1", [endpoint("10.244.2.1")])])
    world.export("c2", service(NS, "gone", "10.2.0.2"), [k8s_slice(NS, "gone", "g1", [endpoint("10.244.2.2")])])
    world.export("c2", service(NS, "hl", "None"), [k8s_slice(NS, "hl", "h1", [endpoint("10.244.2.3", hostname="a")]),
                                                 k8s_slice(NS, "hl", "h2", [endpoint("10.244.2.4", hostname="b")])])
    world.export("c2", service(NS, "chg", "10.2.0.5"), [k8s_slice(NS, "chg", "c1", [endpoint("10.244.2.5")])])
    for n in ("keep", "gone", "hl", "chg"):
        eventually(lambda n=n: ready(world, "c2", n))
    world.idle()

    # restart with nothing changed: zero writes (besides the heartbeat lease)
    world.stop("c2")
    before = world.total_writes()
    world.start("c2")
    world.idle()
    time.sleep(0.5)
    world.idle()
    assert world.total_writes() == before, [w for c in [world.broker, *world.clusters.values()] for w in c.writes][-10:]

    # changes while the agent is down
    world.stop("c2")
    world.res("c2", SERVICE_EXPORTS).delete(NS, "gone")
    world.res("c2", ENDPOINT_SLICES).delete(NS, "h2")
    svc = world.res("c2", SERVICES).get(NS, "chg")
    svc["spec"]["ports"] = [{"name": "dns", "protocol": "UDP", "port": 53}]
    world.res("c2", SERVICES).update(svc)
    world.export("c2", service(NS, "new", "10.2.0.6"), [k8s_slice(NS, "new", "n1", [endpoint("10.244.2.6")])])
    world.start("c2")
    eventually(lambda: world.imported("c1", "gone") is None and world.slices("c1", "gone") == [])
    eventually(lambda: addresses(world.slices("c1", "hl")) == ["10.244.2.3"])
    eventually(lambda: world.imported("c1", "chg")["spec"]["ports"] == [{"name": "dns", "protocol": "UDP", "port": 53}])
    eventually(lambda: addresses(world.slices("c1", "new")) == ["10.2.0.6"])
    assert addresses(world.slices("c1", "keep")) == ["10.2.0.1"]


def test_importer_restart_removes_orphans(world: World) -> None:
    for c in ("c1", "c2"):
        world.start(c)
    world.export("c2", service(NS, "nginx", "10.2.0.5"), [k8s_slice(NS, "nginx", "s2", [endpoint("10.244.2.5")])])
    eventually(lambda: world.imported("c1", "nginx") and world.slices("c1", "nginx"))
    world.stop("c1")
    world.res("c2", SERVICE_EXPORTS).delete(NS, "nginx")
    eventually(lambda: world.aggregate("nginx") is None)
    assert world.imported("c1", "nginx") is not None
    world.start("c1")
    eventually(lambda: world.imported("c1", "nginx") is None and world.slices("c1", "nginx") == [])


def test_broker_outage_reports_not_synced_and_converges() -> None:
    w = World("c1", "c2", heartbeat_interval=0.2)
    try:
        for c in ("c1", "c2"):
            w.start(c)
        w.export("c2", service(NS, "nginx", "10.2.0.5"), [k8s_slice(NS, "nginx", "s2", [endpoint("10.244.2.5")])])
        eventually(lambda: ready(w, "c2", "nginx"))
        w.broker.set_unavailable(True)
        eventually(lambda: conditions(w.se("c2", "nginx"))["Synced"]["status"] == "False")
        assert conditions(w.se("c2", "nginx"))["Synced"]["reason"] == C.BROKER_UNAVAILABLE_REASON
        w.export("c2", service(NS, "during", "10.2.0.8"), [k8s_slice(NS, "during", "d", [endpoint("10.244.2.8")])])
        eventually(lambda: conditions(w.se("c2", "during")).get("Ready", {}).get("reason") == "ExportFailed")
        time.sleep(1)
        w.broker.set_unavailable(False)
        eventually(lambda: ready(w, "c2", "during") and conditions(w.se("c2", "nginx"))["Synced"]["status"] == "True",
                   timeout=30)
        eventually(lambda: addresses(w.slices("c1", "during")) == ["10.2.0.8"], timeout=30)
    finally:
        w.close()


def test_vanished_cluster_expires_and_returns() -> None:
    w = World("c1", "c2", "c3", heartbeat_ttl=1.0, heartbeat_interval=0.2)
    try:
        for c in ("c1", "c2", "c3"):
            w.start(c)
        w.export("c3", service(NS, "nginx", "10.3.0.5"), [k8s_slice(NS, "nginx", "s3", [endpoint("10.244.3.5")])])
        w.export("c2", service(NS, "nginx", "10.2.0.5"), [k8s_slice(NS, "nginx", "s2", [endpoint("10.244.2.5")])])
        eventually(lambda: addresses(w.slices("c1", "nginx")) == ["10.2.0.5", "10.3.0.5"])
        w.stop("c3")  # vanishes without clean-up
        eventually(lambda: addresses(w.slices("c1", "nginx")) == ["10.2.0.5"], timeout=10)
        eventually(lambda: [x["cluster"] for x in w.imported("c1", "nginx")["status"]["clusters"]] == ["c2"])
        assert w.slices("broker", "nginx", "c3") == []
        with pytest.raises(NotFound):
            w.res("broker", LEASES).get(B, "lighthouse-heartbeat-c3")
        w.start("c3")  # comes back: republishes
        eventually(lambda: addresses(w.slices("c1", "nginx")) == ["10.2.0.5", "10.3.0.5"], timeout=10)
    finally:
        w.close()


# -- names (D1), Globalnet (§7.4, D9), clusterset VIP (§8, D3) ----------------------------------------------


def test_d1_names_cannot_collide(world: World) -> None:
    world.start("c1")
    world.start("c2")
    world.export("c1", service("b", "a-b", "10.1.0.1"), [k8s_slice("b", "a-b", "x", [endpoint("1.1.1.1")])])
    eventually(lambda: ready(world, "c1", "a-b", "b"))
    world.export("c1", service("b-b", "a", "10.1.0.2"), [k8s_slice("b-b", "a", "y", [endpoint("1.1.1.2")])])
    eventually(lambda: ready(world, "c1", "a", "b-b"))
    world.idle()
    aggs = {(o["metadata"]["annotations"][L.SOURCE_NAMESPACE], o["metadata"]["name"])
            for o in world.broker.objects(SERVICE_IMPORTS)}
    assert ("b", "a-b-b") in aggs and len(aggs) == 2
    assert next(n for ns, n in aggs if ns == "b-b").startswith("a-b-b-")
    assert world.imported("c2", "a-b", "b")["spec"]["ports"] == [HTTP]
    assert addresses(world.slices("c2", "a-b", ns="b")) == ["10.1.0.1"]
    assert addresses(world.slices("c2", "a", ns="b-b")) == ["10.1.0.2"]
    key = ServiceKey("b", "a-b")
    assert lh_slice_name(key, "c1", "IPv4") != lh_slice_name(ServiceKey("b-b", "a"), "c1", "IPv4")


def test_globalnet_cluster_ip_and_headless(world: World) -> None:
    world.start("c1")
    world.start("c2", globalnet=True)
    world.export("c2", service(NS, "nginx", "10.2.0.5"), [k8s_slice(NS, "nginx", "s2", [endpoint("10.244.2.5")])])
    eventually(lambda: conditions(world.se("c2", "nginx")).get("Valid", {}).get("reason")
               == "ServiceGlobalIPUnavailable")
    client = world.res("c2", GLOBAL_INGRESS_IPS)

    class _Giips:
        """Create then write status (the status subresource ignores status on create)."""

        def create(self, obj: dict[str, Any]) -> None:
            created = client.create(obj)
            created["status"] = obj["status"]
            client.update_status(created)

    giips = _Giips()
    giips.create({"metadata": {"name": "svc-nginx", "namespace": NS},
                  "spec": {"target": "ClusterIPService", "serviceRef": {"name": "nginx"}},
                  "status": {"allocatedIP": "242.0.255.1"}})
    eventually(lambda: ready(world, "c2", "nginx"))
    eventually(lambda: addresses(world.slices("c1", "nginx")) == ["242.0.255.1"])
    assert world.clusters["c2"].objects(SERVICE_IMPORTS)[0]["spec"]["ips"] == ["242.0.255.1"]
    # headless: endpoints are published as their global IPs arrive (D9)
    eps = [endpoint(f"10.244.2.{i}", hostname=f"web-{i}", pod=f"web-{i}", ns=NS) for i in range(2)]
    world.export("c2", headless_service(NS, "web"), [k8s_slice(NS, "web", "w1", eps)])
    giips.create({"metadata": {"name": "pod-web-0", "namespace": NS},
                  "spec": {"target": "HeadlessServicePod", "podRef": {"name": "web-0"}},
                  "status": {"allocatedIP": "242.0.255.10"}})
    eventually(lambda: addresses(world.slices("c1", "web")) == ["242.0.255.10"])
    assert world.slices("c1", "web")[0]["metadata"]["annotations"][L.GLOBALNET_ENABLED] == "true"
    giips.create({"metadata": {"name": "pod-web-1", "namespace": NS},
                  "spec": {"target": "HeadlessServicePod", "podRef": {"name": "web-1"}},
                  "status": {"allocatedIP": "242.0.255.11"}})
    eventually(lambda: addresses(world.slices("c1", "web")) == ["242.0.255.10", "242.0.255.11"])
    # allocation failure → the GlobalIngressIP's reason
    world.export("c2", service(NS, "fail", "10.2.0.9"))
    giips.create({"metadata": {"name": "svc-fail", "namespace": NS},
                  "spec": {"target": "ClusterIPService", "serviceRef": {"name": "fail"}},
                  "status": {"conditions": [{"type": "Allocated", "status": "False",
                                             "reason": "IPPoolAllocationFailed", "message": "pool exhausted",
                                             "lastTransitionTime": "2024-01-01T00:00:00Z"}]}})
    eventually(lambda: conditions(world.se("c2", "fail")).get("Valid", {}).get("message")
               == "Unable to obtain global IP: pool exhausted")
    assert conditions(world.se("c2", "fail"))["Valid"]["reason"] == "IPPoolAllocationFailed"


def test_clusterset_vip_shared_allocation(world: World) -> None:
    cfg = {"clusterset_ip_cidr": "243.0.0.0/29", "clusterset_ip_enabled": True}
    world.start("c1", **cfg)
    world.start("c2", **cfg)
    for i in range(3):
        world.export("c1", service(NS, f"s{i}", f"10.1.0.{i + 1}"))
        world.export("c2", service(NS, f"t{i}", f"10.2.0.{i + 1}"))
    for i in range(3):
        eventually(lambda i=i: ready(world, "c1", f"s{i}") and ready(world, "c2", f"t{i}"))
    world.idle()
    vips = [world.aggregate(n)["spec"]["ips"][0] for n in ("s0", "s1", "s2", "t0", "t1", "t2")]
    assert len(set(vips)) == 6, vips
    cm = world.res("broker", CONFIGMAPS).get(B, "lighthouse-clusterset-ip-allocations")
    assert sorted(cm["data"]) == sorted(vips)
    assert world.imported("c2", "s0")["spec"]["ips"] == [world.aggregate("s0")["spec"]["ips"][0]]
    assert world.aggregate("s0")["metadata"]["annotations"][L.CLUSTERSET_IP_ALLOCATED_BY] == "c1"
    # pool of 6 exhausted → ExportFailed; unexport frees one → the waiting export gets it
    world.export("c1", service(NS, "late", "10.1.0.9"))
    eventually(lambda: "exhausted" in conditions(world.se("c1", "late")).get("Ready", {}).get("message", ""))
    world.res("c2", SERVICE_EXPORTS).delete(NS, "t0")
    eventually(lambda: ready(world, "c1", "late"), timeout=20)
    assert world.aggregate("late")["spec"]["ips"][0] == vips[3]


# -- configuration -------------------------------------------------------------------------------------------


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="not a valid DNS-1123 label"):
        AgentConfig("Cluster_1", B).validate()
    with pytest.raises(ConfigError, match="broker namespace"):
        AgentConfig("c1", "").validate()
    assert parse_duration("10m") == 600 and parse_duration("1h30m") == 5400 and parse_duration("2.5") == 2.5
    assert parse_duration("500ms") == 0.5
    with pytest.raises(ValueError):
        parse_duration("ten minutes")
    assert AgentConfig("c1", B).effective_heartbeat_interval == 10.0
    assert AgentConfig("c1", B, heartbeat_ttl=3).effective_heartbeat_interval == 1.0


def test_constituent_annotation_round_trip(world: World) -> None:
    world.start("c1")
    world.export("c1", service(NS, "nginx", "10.1.0.5", sessionAffinity="ClientIP",
                               sessionAffinityConfig={"clientIP": {"timeoutSeconds": 30}}))
    eventually(lambda: ready(world, "c1", "nginx"))
    agg = world.aggregate("nginx")
    (m,) = members_of(agg)
    assert m.cluster == "c1" and m.session_affinity_config == {"clientIP": {"timeoutSeconds": 30}}
    recorded = json.loads(agg["metadata"]["annotations"]["constituent.lighthouse.submariner.io/c1"])
    assert recorded["type"] == "ClusterSetIP"
    assert agg["metadata"]["annotations"]["timestamp.submariner.io/c1"].isdigit()
    assert agg["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 30}}
