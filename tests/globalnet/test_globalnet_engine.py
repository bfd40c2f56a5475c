"""Globalnet controllers through the fakes: FakeCluster (API), FakePacketFilter (nat rules), FakeIPSets."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from gntest import Harness, create_pod, export, pod, service, wait_until

from submariner.broker.api import labels as L
from submariner.broker.api.multicluster import SERVICE_EXPORTS
from submariner.broker.api.submariner import (
    CLUSTER_GLOBAL_EGRESS_IPS,
    GATEWAYS,
    GLOBAL_EGRESS_IPS,
    GLOBAL_INGRESS_IPS,
)
from submariner.broker.kube import SERVICES
from submariner.broker.kube.fake import FakeCluster
from submariner.dataplane.packetfilter import canonical
from submariner.globalnet import rules as R
from submariner.globalnet.context import PODS
from submariner.globalnet.names import CLUSTER_EGRESS_NAME, egress_ipset_name, internal_service_name


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    try:
        yield harness.start()
    finally:
        harness.stop()


def _cond(obj: dict[str, Any] | None, ctype: str = "Allocated") -> dict[str, Any]:
    assert obj is not None
    found = [c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == ctype]
    assert len(found) == 1, obj.get("status")
    return found[0]


def _reason(obj: dict[str, Any] | None) -> str | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or ():
        if c["type"] == "Allocated":
            return str(c["reason"])
    return None


def _c(*args: str) -> tuple[str, ...]:
    return canonical(args)


def _ips(first: str, n: int) -> list[str]:
    base = int(ipaddress.IPv4Address(first))
    return [str(ipaddress.IPv4Address(base + i)) for i in range(n)]


# ---------------------------------------------------------------------------------- cluster egress


def test_cluster_egress_instance_is_created_with_eight_ips_and_snat_rules(h: Harness) -> None:
    cgeip = h.get(CLUSTER_GLOBAL_EGRESS_IPS, "", CLUSTER_EGRESS_NAME)
    assert cgeip is not None and cgeip["spec"] == {"numGlobalIPs": 8}
    assert cgeip["status"]["allocatedIPs"] == _ips("242.1.0.1", 8)
    cond = _cond(cgeip)
    assert (cond["status"], cond["reason"]) == ("True", "Success")
    assert h.chain(R.EGRESS_CLUSTER) == [
        _c("-s", cidr, "-m", "mark", "--mark", "0xc0000/0xc0000", "-j", "SNAT", "--to-source",
           "242.1.0.1-242.1.0.8") for cidr in ("10.1.0.0/16", "100.1.0.0/16")]
    assert h.chain(R.MARK_CHAIN) == [_c("-d", "242.0.0.0/16", "-j", "MARK", "--set-mark", "0xC0000/0xC0000")]
    assert h.chain("SUBMARINER-POSTROUTING")[0] == ("-j", "SUBMARINER-GN-EGRESS")
    # settled: nothing more is written or applied
    writes, transactions = len(h.cluster.writes), h.pf.transactions
    h.engine.ctx.enqueue("cgeip", "", CLUSTER_EGRESS_NAME)
    h.settle()
    assert (len(h.cluster.writes), h.pf.transactions) == (writes, transactions)


def test_cluster_egress_count_changes_zero_negative_and_other_instances(h: Harness) -> None:
    client = h.cluster.resource(CLUSTER_GLOBAL_EGRESS_IPS)
    client.patch("", CLUSTER_EGRESS_NAME, {"spec": {"numGlobalIPs": 2}})
    h.settle()
    obj = h.get(CLUSTER_GLOBAL_EGRESS_IPS, "", CLUSTER_EGRESS_NAME)
    assert obj is not None and obj["status"]["allocatedIPs"] == ["242.1.0.1", "242.1.0.2"]
    assert h.engine.pool.free_count == h.engine.pool.size - 2
    assert all(r[-1] == "242.1.0.1-242.1.0.2" for r in h.chain(R.EGRESS_CLUSTER))

    client.patch("", CLUSTER_EGRESS_NAME, {"spec": {"numGlobalIPs": 0}})
    h.settle()
    obj = h.get(CLUSTER_GLOBAL_EGRESS_IPS, "", CLUSTER_EGRESS_NAME)
    assert _cond(obj)["reason"] == "ZeroInput" and not obj["status"].get("allocatedIPs")
    assert h.chain(R.EGRESS_CLUSTER) == [] and h.engine.pool.free_count == h.engine.pool.size

    client.patch("", CLUSTER_EGRESS_NAME, {"spec": {"numGlobalIPs": -3}})
    h.settle()
    assert _cond(h.get(CLUSTER_GLOBAL_EGRESS_IPS, "", CLUSTER_EGRESS_NAME))["reason"] == "InvalidInput"

    client.create({"metadata": {"name": "other"}, "spec": {"numGlobalIPs": 2}})
    h.settle()
    other = _cond(h.get(CLUSTER_GLOBAL_EGRESS_IPS, "", "other"))
    assert (other["status"], other["reason"]) == ("False", "InvalidInstance")
    assert h.engine.pool.free_count == h.engine.pool.size

    client.delete("", CLUSTER_EGRESS_NAME)
    h.settle()
    assert h.chain(R.EGRESS_CLUSTER) == []


def test_pool_exhaustion_is_reported_and_retried() -> None:
    cluster = FakeCluster("g1")
    # a /29 GlobalCIDR has 6 host addresses: 8 cluster egress IPs cannot fit
    from submariner.globalnet.config import Config
    h = Harness(cluster, config=Config(cluster_id="g1", node_name="n", global_cidrs=("242.1.0.0/29",),
                                       cluster_cidrs=("10.1.0.0/16",)))
    try:
        h.start(settle=False)
        obj = wait_until(lambda: (o := h.get(CLUSTER_GLOBAL_EGRESS_IPS, "", CLUSTER_EGRESS_NAME)) and
                         o.get("status") and o, what="status")
        assert _cond(obj)["reason"] == "IPPoolAllocationFailed"
        cluster.resource(CLUSTER_GLOBAL_EGRESS_IPS).patch("", CLUSTER_EGRESS_NAME, {"spec": {"numGlobalIPs": 4}})
        wait_until(lambda: (h.get(CLUSTER_GLOBAL_EGRESS_IPS, "", CLUSTER_EGRESS_NAME) or {}).get("status", {})
                   .get("allocatedIPs") == _ips("242.1.0.1", 4), what="allocation after the count fits")
    finally:
        h.stop()


def test_failed_rule_apply_is_reported_then_recovers() -> None:
    h = Harness()
    h.fail_applies = 1
    try:
        h.engine.start()
        wait_until(lambda: _reason(h.get(CLUSTER_GLOBAL_EGRESS_IPS, "", CLUSTER_EGRESS_NAME)) == "Success",
                   what="recovery")
        h.settle()
        assert h.fail_applies == 0 and h.chain(R.EGRESS_CLUSTER)
    finally:
        h.stop()


# ---------------------------------------------------------------------------------- GlobalEgressIP


def test_namespace_and_selector_egress_fill_ipsets_and_rules(h: Harness) -> None:
    create_pod(h.cluster, pod("apps", "web-1", "10.1.1.5", {"app": "web"}))
    create_pod(h.cluster, pod("apps", "db-1", "10.1.1.6", {"app": "db"}))
    create_pod(h.cluster, pod("apps", "pending", None, {"app": "db"}, phase="Pending"))
    create_pod(h.cluster, pod("other", "x", "10.1.9.9", {"app": "db"}))
    geips = h.cluster.resource(GLOBAL_EGRESS_IPS)
    geips.create({"metadata": {"name": "ns-egress", "namespace": "apps"}, "spec": {"numberOfIPs": 2}})
    geips.create({"metadata": {"name": "db", "namespace": "apps"},
                  "spec": {"podSelector": {"matchLabels": {"app": "db"}}}})
    h.settle()
    ns_set, db_set = egress_ipset_name("apps", "ns-egress"), egress_ipset_name("apps", "db")
    assert h.ipsets.sets[ns_set] == {"10.1.1.5/32", "10.1.1.6/32"}
    assert h.ipsets.sets[db_set] == {"10.1.1.6/32"}
    ns_obj, db_obj = h.get(GLOBAL_EGRESS_IPS, "apps", "ns-egress"), h.get(GLOBAL_EGRESS_IPS, "apps", "db")
    assert ns_obj is not None and db_obj is not None
    assert ns_obj["status"]["allocatedIPs"] == ["242.1.0.9", "242.1.0.10"]
    assert db_obj["status"]["allocatedIPs"] == ["242.1.255.254"]
    assert h.chain(R.EGRESS_NS) == [_c("-m", "mark", "--mark", "0xc0000/0xc0000", "-m", "set", "--match-set", ns_set,
                                       "src", "-j", "SNAT", "--to-source", "242.1.0.9-242.1.0.10")]
    assert h.chain(R.EGRESS_PODS) == [_c("-m", "mark", "--mark", "0xc0000/0xc0000", "-m", "set", "--match-set",
                                         db_set, "src", "-j", "SNAT", "--to-source", "242.1.255.254")]

    # a pod gets its IP, another leaves: the sets follow
    pods = h.cluster.resource(PODS)
    p = pods.get("apps", "pending")
    p["status"] = {"phase": "Running", "podIP": "10.1.1.7"}
    pods.update_status(p)
    pods.delete("apps", "web-1")
    h.settle()
    assert h.ipsets.sets[ns_set] == {"10.1.1.6/32", "10.1.1.7/32"}
    assert h.ipsets.sets[db_set] == {"10.1.1.6/32", "10.1.1.7/32"}
    h.assert_quiet()

    # a podSelector change is refused, the original selector stays programmed
    geips.patch("apps", "db", {"spec": {"podSelector": {"matchLabels": {"app": "web"}}}})
    h.settle()
    upd = _cond(h.get(GLOBAL_EGRESS_IPS, "apps", "db"), "Updated")
    assert (upd["status"], upd["reason"]) == ("False", "PodSelectorUpdateNotSupported")
    assert h.ipsets.sets[db_set] == {"10.1.1.6/32", "10.1.1.7/32"}

    # delete: rule, IPs and ipset go
    geips.delete("apps", "db")
    h.settle()
    assert h.chain(R.EGRESS_PODS) == [] and db_set not in h.ipsets.sets
    assert not h.engine.pool.is_allocated("242.1.255.254")


# ---------------------------------------------------------------------------------- GlobalIngressIP


def test_exported_cluster_ip_service_gets_a_global_ip_and_internal_service(h: Harness) -> None:
    h.cluster.resource(SERVICES).create(service("sample", "nginx", selector={"app": "nginx"}))
    h.settle()
    assert h.get(GLOBAL_INGRESS_IPS, "sample", "nginx") is None  # not exported yet
    h.cluster.resource(SERVICE_EXPORTS).create(export("sample", "nginx"))
    h.settle()
    giip = h.get(GLOBAL_INGRESS_IPS, "sample", "nginx")
    assert giip is not None
    assert giip["spec"] == {"target": "ClusterIPService", "serviceRef": {"name": "nginx"}}
    assert giip["status"]["allocatedIP"] == "242.1.255.254"
    assert _cond(giip)["reason"] == "Success"
    internal = h.get(SERVICES, "sample", internal_service_name("nginx"))
    assert internal is not None and internal["metadata"]["name"] == "submariner-lpq6zr4tl4o5qvrv2t7o3l3gawkagast"
    assert internal["spec"]["externalIPs"] == ["242.1.255.254"]
    assert internal["spec"]["selector"] == {"app": "nginx"}
    assert internal["spec"]["ports"] == [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
    assert internal["spec"]["ipFamilyPolicy"] == "SingleStack"
    assert internal["metadata"]["labels"] == {L.EXPORTED_SERVICE_REF: "nginx"}
    assert internal["metadata"]["finalizers"] == [L.INTERNAL_SERVICE_FINALIZER]
    assert h.chain(R.INGRESS) == []  # kube-proxy does the DNAT for externalIPs
    h.assert_quiet()

    # a port change reaches the internal Service
    svc = h.cluster.resource(SERVICES).get("sample", "nginx")
    svc["spec"]["ports"] = [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": 8443}]
    h.cluster.resource(SERVICES).update(svc)
    h.settle()
    internal = h.get(SERVICES, "sample", internal_service_name("nginx"))
    assert internal is not None and internal["spec"]["ports"][0]["port"] == 443

    # unexport: GlobalIngressIP, internal Service and the IP go
    h.cluster.resource(SERVICE_EXPORTS).delete("sample", "nginx")
    h.settle()
    assert h.get(GLOBAL_INGRESS_IPS, "sample", "nginx") is None
    assert h.get(SERVICES, "sample", internal_service_name("nginx")) is None
    assert not h.engine.pool.is_allocated("242.1.255.254")


def test_external_name_gets_no_global_ip_node_port_does(h: Harness) -> None:
    h.cluster.resource(SERVICES).create(service("sample", "ext", stype="ExternalName"))
    h.cluster.resource(SERVICE_EXPORTS).create(export("sample", "ext"))
    np = service("sample", "np", stype="NodePort", selector={"app": "np"})
    np["spec"]["ports"][0]["nodePort"] = 30080
    h.cluster.resource(SERVICES).create(np)
    h.cluster.resource(SERVICE_EXPORTS).create(export("sample", "np"))
    h.settle()
    assert h.get(GLOBAL_INGRESS_IPS, "sample", "ext") is None
    # the Lighthouse agent exports NodePort Services like ClusterIP ones (lighthouse-agent.md D5)
    assert h.get(GLOBAL_INGRESS_IPS, "sample", "np")["status"]["allocatedIP"]  # type: ignore[index]
    internal = h.get(SERVICES, "sample", internal_service_name("np"))
    assert internal is not None and internal["spec"]["type"] == "ClusterIP"
    assert "nodePort" not in internal["spec"]["ports"][0]


def test_headless_service_pods_get_global_ips_and_dnat_snat_rules(h: Harness) -> None:
    h.cluster.resource(SERVICES).create(service("sample", "whereami-ss", headless=True, selector={"app": "w"}))
    for i in range(3):
        create_pod(h.cluster, pod("sample", f"whereami-{i}", f"10.1.1.{7 + i}", {"app": "w"}))
    create_pod(h.cluster, pod("sample", "not-ready", "10.1.1.99", {"app": "w"}, phase="Pending"))
    h.cluster.resource(SERVICE_EXPORTS).create(export("sample", "whereami-ss"))
    h.settle()
    giips = {g["metadata"]["name"]: g for g in h.cluster.objects(GLOBAL_INGRESS_IPS)}
    assert sorted(giips) == ["pod-whereami-0", "pod-whereami-1", "pod-whereami-2"]
    pairs = {}
    for i in range(3):
        g = giips[f"pod-whereami-{i}"]
        assert g["spec"] == {"target": "HeadlessServicePod", "podRef": {"name": f"whereami-{i}"}}
        assert g["metadata"]["labels"] == {L.SERVICE_REF: "whereami-ss"}
        assert g["metadata"]["annotations"] == {L.HEADLESS_SVC_POD_IP: f"10.1.1.{7 + i}"}
        pairs[f"10.1.1.{7 + i}"] = g["status"]["allocatedIP"]
    assert sorted(pairs.values()) == ["242.1.255.252", "242.1.255.253", "242.1.255.254"]
    ingress = h.chain(R.INGRESS)
    egress = h.chain(R.EGRESS_HDLS_PODS)
    for ip, gip in pairs.items():
        assert _c("-d", gip, "-j", "DNAT", "--to-destination", ip) in ingress
        assert _c("-s", ip, "-m", "mark", "--mark", "0xc0000/0xc0000", "-j", "SNAT", "--to-source", gip) in egress
    assert len(ingress) == len(egress) == 3
    h.assert_quiet()

    # a pod goes: its GlobalIngressIP, rules and IP go
    h.cluster.resource(PODS).delete("sample", "whereami-1")
    h.settle()
    assert h.get(GLOBAL_INGRESS_IPS, "sample", "pod-whereami-1") is None
    assert len(h.chain(R.INGRESS)) == 2 and not h.engine.pool.is_allocated(pairs["10.1.1.8"])

    # the service is deleted: everything goes
    h.cluster.resource(SERVICES).delete("sample", "whereami-ss")
    h.settle()
    assert h.cluster.objects(GLOBAL_INGRESS_IPS) == []
    assert h.chain(R.INGRESS) == [] and h.chain(R.EGRESS_HDLS_PODS) == []


def test_selectorless_headless_service_uses_endpoints_addresses(h: Harness) -> None:
    from submariner.globalnet.context import CORE_ENDPOINTS
    h.cluster.resource(SERVICES).create(service("sample", "ext-db", headless=True))
    h.cluster.resource(CORE_ENDPOINTS).create({"metadata": {"name": "ext-db", "namespace": "sample"},
                                               "subsets": [{"addresses": [{"ip": "192.168.5.5"}]}]})
    h.cluster.resource(SERVICE_EXPORTS).create(export("sample", "ext-db"))
    h.settle()
    g = h.get(GLOBAL_INGRESS_IPS, "sample", "ep-ext-db-192.168.5.5")
    assert g is not None and g["spec"]["target"] == "HeadlessServiceEndpoints"
    assert g["metadata"]["annotations"] == {L.HEADLESS_SVC_ENDPOINTS_IP: "192.168.5.5"}
    gip = g["status"]["allocatedIP"]
    assert _c("-d", gip, "-j", "DNAT", "--to-destination", "192.168.5.5") in h.chain(R.INGRESS)
    assert h.chain(R.EGRESS_HDLS_EPS) == [
        _c("-s", "192.168.5.5", "-m", "mark", "--mark", "0xc0000/0xc0000", "-j", "SNAT", "--to-source", gip)]


def test_lighthouse_agent_finds_our_global_ips() -> None:
    """The Lighthouse agent's own index (lighthouse/agent/globalnet.py) reads our GlobalIngressIPs."""
    from submariner.broker.kube import Informer
    from submariner.lighthouse.agent.globalnet import GlobalIps

    h = Harness().start()
    try:
        h.cluster.resource(SERVICES).create(service("sample", "whereami-cs", selector={"app": "w"}))
        h.cluster.resource(SERVICES).create(service("sample", "whereami-ss", headless=True, selector={"app": "w"}))
        create_pod(h.cluster, pod("sample", "whereami-0", "10.1.1.7", {"app": "w"}))
        h.cluster.resource(SERVICE_EXPORTS).create(export("sample", "whereami-cs"))
        h.cluster.resource(SERVICE_EXPORTS).create(export("sample", "whereami-ss"))
        h.settle()
        informer = Informer(h.cluster.resource(GLOBAL_INGRESS_IPS))
        ips = GlobalIps(informer, lambda key: None)
        informer.start()
        try:
            assert informer.wait_for_sync(5)
            cs = ips.for_service("sample", "whereami-cs")
            assert cs is not None and cs["status"]["allocatedIP"] == h.get(
                GLOBAL_INGRESS_IPS, "sample", "whereami-cs")["status"]["allocatedIP"]  # type: ignore[index]
            endpoint = {"addresses": ["10.1.1.7"], "targetRef": {"kind": "Pod", "name": "whereami-0"}}
            pod_ip = ips.for_endpoint("sample", endpoint)
            assert pod_ip is not None and pod_ip == h.get(GLOBAL_INGRESS_IPS, "sample", "pod-whereami-0")[
                "status"]["allocatedIP"]  # type: ignore[index]
        finally:
            informer.stop()
    finally:
        h.stop()


# ---------------------------------------------------------------------------------- gateway health IP


def test_local_gateway_gets_a_health_ip_and_icmp_dnat() -> None:
    h = Harness(cni_ip="10.1.0.1")
    h.cluster.resource(GATEWAYS).create({"metadata": {"name": "g1-worker", "namespace": "submariner-operator"}})
    h.cluster.resource(GATEWAYS).create({"metadata": {"name": "g1-other", "namespace": "submariner-operator",
                                                      "annotations": {L.GLOBAL_IP: "242.1.255.254"}}})
    try:
        h.start()
        gw = h.get(GATEWAYS, "submariner-operator", "g1-worker")
        assert gw is not None
        ip = gw["metadata"]["annotations"][L.GLOBAL_IP]
        assert ip == "242.1.255.253"  # .254 stays reserved for the other gateway
        assert h.chain(R.INGRESS) == [_c("-p", "icmp", "-d", ip, "-j", "DNAT", "--to-destination", "10.1.0.1")]
        h.cluster.resource(GATEWAYS).delete("submariner-operator", "g1-other")
        h.settle()
        assert not h.engine.pool.is_allocated("242.1.255.254")
    finally:
        h.stop()


# ---------------------------------------------------------------------------------- restart safety


def _populate(h: Harness) -> None:
    h.cluster.resource(SERVICES).create(service("sample", "nginx", selector={"app": "nginx"}))
    h.cluster.resource(SERVICE_EXPORTS).create(export("sample", "nginx"))
    h.cluster.resource(SERVICES).create(service("sample", "ss", headless=True, selector={"app": "w"}))
    for i in range(4):
        create_pod(h.cluster, pod("sample", f"w-{i}", f"10.1.2.{i + 1}", {"app": "w"}))
    h.cluster.resource(SERVICE_EXPORTS).create(export("sample", "ss"))
    h.cluster.resource(GLOBAL_EGRESS_IPS).create({"metadata": {"name": "e", "namespace": "sample"},
                                                  "spec": {"numberOfIPs": 3}})


def _recorded(cluster: FakeCluster) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for res in (CLUSTER_GLOBAL_EGRESS_IPS, GLOBAL_EGRESS_IPS):
        for o in cluster.objects(res):
            out[f"{res.kind}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"] = \
                o["status"]["allocatedIPs"]
    for o in cluster.objects(GLOBAL_INGRESS_IPS):
        out[f"giip/{o['metadata']['namespace']}/{o['metadata']['name']}"] = [o["status"]["allocatedIP"]]
    return out


def test_restart_reserves_recorded_ips_and_writes_nothing() -> None:
    cluster = FakeCluster("g1")
    first = Harness(cluster).start()
    _populate(first)
    first.settle()
    # holes in the pool: a fresh allocation in another order would now give other IPs
    create_pod(cluster, pod("sample", "w-9", "10.1.2.99", {"app": "w"}))
    first.settle()
    cluster.resource(PODS).delete("sample", "w-1")
    first.settle()
    before = _recorded(cluster)
    allocated = first.engine.pool.allocated()
    first.stop()
    first.ipsets.ensure("SM-GN-STALEFROMADELETEDOBJEC")  # its GlobalEgressIP went while no leader ran
    first.ipsets.ensure("KUBE-SOMETHING")
    assert len(before) == 1 + 1 + 1 + 4
    held = [ip for ips in before.values() for ip in ips]
    assert len(held) == len(set(held)) == 8 + 3 + 1 + 4

    writes = len(cluster.writes)
    second = Harness(cluster, pf=first.pf, ipsets=first.ipsets).start()
    try:
        assert _recorded(cluster) == before
        assert second.engine.pool.allocated() == allocated
        assert len(cluster.writes) == writes, cluster.writes[writes:]
        assert second.ipsets.names() == ["KUBE-SOMETHING", egress_ipset_name("sample", "e")]
        # a new object after the restart gets a fresh IP, never one recorded before
        second.cluster.resource(SERVICES).create(service("sample", "new", selector={"app": "n"}))
        second.cluster.resource(SERVICE_EXPORTS).create(export("sample", "new"))
        second.settle()
        new_ip = second.get(GLOBAL_INGRESS_IPS, "sample", "new")["status"]["allocatedIP"]  # type: ignore[index]
        assert new_ip not in held
    finally:
        second.stop()


def test_conflicting_recorded_ips_are_reallocated_not_shared() -> None:
    cluster = FakeCluster("g1")
    first = Harness(cluster).start()
    _populate(first)
    first.settle()
    first.stop()
    # corrupt one status: pod w-1's GlobalIngressIP now claims w-0's IP
    giips = cluster.resource(GLOBAL_INGRESS_IPS)
    g0, g1 = giips.get("sample", "pod-w-0"), giips.get("sample", "pod-w-1")
    g1["status"]["allocatedIP"] = g0["status"]["allocatedIP"]
    giips.update_status(g1)

    second = Harness(cluster).start()
    try:
        rec = _recorded(cluster)
        held = [ip for ips in rec.values() for ip in ips]
        assert len(held) == len(set(held)), rec
        assert sorted(second.engine.pool.allocated()) == sorted(held)
        ingress = second.chain(R.INGRESS)
        assert len(ingress) == 4 and len({r[1] for r in ingress}) == 4
    finally:
        second.stop()


def test_remote_subnets_follow_the_daemon(h: Harness) -> None:
    h.engine.set_remote_subnets(("242.0.0.0/16", "242.2.0.0/16", "242.1.0.0/16"))
    h.settle()
    # 242.1.0.0/16 is our own GlobalCIDR: ignored
    assert [r[1] for r in h.chain(R.MARK_CHAIN)] == ["242.0.0.0/16", "242.2.0.0/16"]


def test_rewriting_one_condition_keeps_order_and_transition_time() -> None:
    """A condition rewritten with the same status keeps its place and lastTransitionTime (no write ping-pong
    between two conditions of one object)."""
    from submariner.globalnet.status import condition, merge_conditions

    a = {"type": "Allocated", "status": "True", "reason": "Success", "message": "", "lastTransitionTime": "t0"}
    u = {"type": "Updated", "status": "False", "reason": "X", "message": "", "lastTransitionTime": "t1"}
    dup = dict(a, lastTransitionTime="t-old")
    merged = merge_conditions([a, u, dup], condition("Allocated", True, "Success", "again"))
    assert [c["type"] for c in merged] == ["Allocated", "Updated"]
    assert merged[0]["lastTransitionTime"] == "t-old" and merged[0]["message"] == "again"
    flipped = merge_conditions(merged, condition("Updated", True, "Success", ""))
    assert [c["type"] for c in flipped] == ["Allocated", "Updated"] and flipped[1]["lastTransitionTime"] != "t1"


def test_selectorless_cluster_ip_service_gets_its_endpoints_cloned(h: Harness) -> None:
    from submariner.globalnet.context import CORE_ENDPOINTS
    eps = h.cluster.resource(CORE_ENDPOINTS)
    h.cluster.resource(SERVICES).create(service("sample", "legacy"))
    eps.create({"metadata": {"name": "legacy", "namespace": "sample"},
                "subsets": [{"addresses": [{"ip": "192.168.7.7"}], "ports": [{"port": 8080}]}]})
    h.cluster.resource(SERVICE_EXPORTS).create(export("sample", "legacy"))
    h.settle()
    internal = internal_service_name("legacy")
    clone = h.get(CORE_ENDPOINTS, "sample", internal)
    assert clone is not None and clone["metadata"]["labels"] == {L.ENDPOINTS_CLONED_FROM: "legacy"}
    assert clone["subsets"] == [{"addresses": [{"ip": "192.168.7.7"}], "ports": [{"port": 8080}]}]
    assert "selector" not in h.get(SERVICES, "sample", internal)["spec"]  # type: ignore[index]
    original = eps.get("sample", "legacy")
    original["subsets"][0]["addresses"].append({"ip": "192.168.7.8"})
    eps.update(original)
    h.settle()
    assert len(h.get(CORE_ENDPOINTS, "sample", internal)["subsets"][0]["addresses"]) == 2  # type: ignore[index]
    h.assert_quiet()
    h.cluster.resource(SERVICE_EXPORTS).delete("sample", "legacy")
    h.settle()
    assert h.get(CORE_ENDPOINTS, "sample", internal) is None and h.get(SERVICES, "sample", internal) is None


def test_cluster_egress_works_without_the_service_export_crd() -> None:
    from submariner.broker.kube import NotFound

    cluster = FakeCluster("g1")
    cluster.fail_next("list", NotFound("the server could not find the requested resource", status=404),
                      plural="serviceexports", count=10_000)
    h = Harness(cluster)
    try:
        h.engine.start(sync_timeout=0.3)
        wait_until(lambda: (h.get(CLUSTER_GLOBAL_EGRESS_IPS, "", CLUSTER_EGRESS_NAME) or {}).get("status", {})
                   .get("allocatedIPs") == _ips("242.1.0.1", 8), what="cluster egress without ServiceExports")
        assert len(h.chain(R.EGRESS_CLUSTER)) == 2
    finally:
        h.stop()
