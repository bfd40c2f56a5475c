"""Leader election on a Lease and the per-node daemon (gateway transitions), through FakeCluster."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from gntest import CONFIG, wait_until

from submariner.broker.api.multicluster import SERVICE_EXPORTS as SERVICE_EXPORTS_RES
from submariner.broker.api.submariner import CLUSTER_GLOBAL_EGRESS_IPS, ENDPOINTS, GLOBAL_INGRESS_IPS
from submariner.broker.kube import LEASES, SERVICES
from submariner.broker.kube.fake import FakeCluster
from submariner.dataplane.packetfilter import FakePacketFilter
from submariner.dataplane.packetfilter.ipset import FakeIPSets
from submariner.globalnet import rules as R
from submariner.globalnet.daemon import Globalnet, remote_subnets, uninstall
from submariner.globalnet.leader import LeaderElector
from submariner.globalnet.names import LEASE_NAME

NS = "submariner-operator"
FAST = (0.6, 0.4, 0.05)


class Candidate:
    def __init__(self, cluster: FakeCluster, identity: str) -> None:
        self.events: list[str] = []
        self.lock = threading.Lock()
        self.elector = LeaderElector(cluster.resource(LEASES), NS, LEASE_NAME, identity,
                                     on_started_leading=lambda: self._ev("start"),
                                     on_stopped_leading=lambda: self._ev("stop"),
                                     lease_duration=FAST[0], renew_deadline=FAST[1], retry_period=FAST[2])

    def _ev(self, what: str) -> None:
        with self.lock:
            self.events.append(what)


def _holder(cluster: FakeCluster) -> str:
    leases = [lease for lease in cluster.objects(LEASES) if lease["metadata"]["name"] == LEASE_NAME]
    return str(leases[0]["spec"].get("holderIdentity") or "") if leases else ""


def test_one_leader_and_a_prompt_handover_on_release() -> None:
    cluster = FakeCluster()
    a, b = Candidate(cluster, "n1-submariner-gateway"), Candidate(cluster, "n2-submariner-gateway")
    a.elector.start()
    wait_until(lambda: a.elector.leading, what="a leads")
    b.elector.start()
    try:
        # b keeps trying for longer than a lease duration: a renews, so b never leads
        threading.Event().wait(FAST[0] * 2)
        assert not b.elector.leading and b.events == []
        assert _holder(cluster) == "n1-submariner-gateway"
        a.elector.stop()
        assert a.events == ["start", "stop"]
        # released (holder cleared): b takes over without waiting out the lease
        wait_until(lambda: b.elector.leading, timeout=FAST[0], what="b leads after release")
        assert _holder(cluster) == "n2-submariner-gateway"
        (lease,) = cluster.objects(LEASES)
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        a.elector.stop()
        b.elector.stop()


def test_a_dead_holders_lease_expires_and_a_cut_off_leader_steps_down() -> None:
    cluster = FakeCluster()
    cluster.resource(LEASES).create({"metadata": {"name": LEASE_NAME, "namespace": NS},
                                     "spec": {"holderIdentity": "gone-submariner-gateway",
                                              "leaseDurationSeconds": 1, "renewTime": "2020-01-01T00:00:00.000000Z"}})
    c = Candidate(cluster, "n1-submariner-gateway")
    c.elector.start()
    try:
        threading.Event().wait(FAST[0] / 2)
        assert not c.elector.leading  # not before a full lease duration of seeing no change
        wait_until(lambda: c.elector.leading, timeout=FAST[0] * 3, what="expired lease taken")
        cluster.set_unavailable(True)
        wait_until(lambda: "stop" in c.events, timeout=FAST[1] * 4, what="step down")
        assert not c.elector.leading
        cluster.set_unavailable(False)
        wait_until(lambda: c.elector.leading, timeout=2, what="re-elected")
        assert c.events == ["start", "stop", "start"]
    finally:
        cluster.set_unavailable(False)
        c.elector.stop()


def _endpoint(name: str, cluster_id: str, hostname: str, subnets: list[str], created: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    return {"metadata": meta, "spec": {"cluster_id": cluster_id, "cable_name": f"submariner-cable-{name}",
                                       "hostname": hostname, "subnets": subnets, "private_ip": "192.0.2.1",
                                       "public_ip": "", "nat_enabled": False, "backend": "vxlan"}}


def test_remote_subnets_take_the_newest_endpoint_per_cluster() -> None:
    old = _endpoint("g2-a", "g2", "h", ["242.2.0.0/16"])
    old["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    new = _endpoint("g2-b", "g2", "h", ["242.9.0.0/16"])
    new["metadata"]["creationTimestamp"] = "2024-02-01T00:00:00Z"
    local = _endpoint("g1-a", "g1", "g1-worker", ["242.1.0.0/16"])
    assert remote_subnets([old, new, local], "g1") == ("242.9.0.0/16",)


def test_daemon_leads_on_the_gateway_and_flushes_when_the_gateway_moves() -> None:
    cluster = FakeCluster("g1")
    pf, ipsets = FakePacketFilter(), FakeIPSets()
    sysctls: dict[str, str] = {}
    config = replace(CONFIG, lease_timings=FAST)
    daemon = Globalnet(config, cluster, pf, ipsets, set_sysctl=sysctls.__setitem__)
    eps = cluster.resource(ENDPOINTS)
    eps.create(_endpoint("g2-remote", "g2", "g2-gw", ["242.0.0.0/16"]))
    daemon.start()
    try:
        wait_until(lambda: pf.chain_rules("nat", R.MARK_CHAIN) == [], what="mark chain on every pod")
        assert pf.chain_rules("nat", R.EGRESS) is None  # not a gateway: no egress chains
        eps.create(_endpoint("g1-local", "g1", "g1-worker", ["242.1.0.0/16"]))
        wait_until(lambda: daemon.engine is not None and daemon.engine.idle(), what="leading engine")
        wait_until(lambda: len(pf.chain_rules("nat", R.EGRESS_CLUSTER) or []) == 2, what="cluster egress rules")
        assert len(pf.chain_rules("nat", R.MARK_CHAIN) or []) == 1
        assert sysctls == {"net.ipv4.tcp_mtu_probing": "2", "net.ipv4.tcp_base_mss": "1024"}
        assert _holder(cluster) == "g1-worker-submariner-gateway"
        # a new remote cluster: its MARK rule follows while leading
        eps.create(_endpoint("g3-remote", "g3", "g3-gw", ["242.3.0.0/16"]))
        wait_until(lambda: len(pf.chain_rules("nat", R.MARK_CHAIN) or []) == 2, what="second mark rule")
        # the gateway moves to another node: stop, flush, release
        local = eps.get(NS, "g1-local")
        local["spec"]["hostname"] = "g1-other"
        eps.update(local)
        wait_until(lambda: daemon.engine is None and pf.chain_rules("nat", R.EGRESS) == [], what="flush")
        assert pf.chain_rules("nat", R.INGRESS) == [] and pf.chain_rules("nat", R.MARK_CHAIN) == []
        assert _holder(cluster) == ""
    finally:
        daemon.stop()


def test_uninstall_removes_chains_sets_objects_and_internal_services() -> None:
    from gntest import Harness, export, service

    h = Harness().start()
    h.cluster.resource(SERVICES).create(service("sample", "nginx", selector={"app": "nginx"}))
    h.cluster.resource(SERVICE_EXPORTS_RES).create(export("sample", "nginx"))
    h.settle()
    h.ipsets.ensure("SM-GN-TEST")
    h.ipsets.ensure("OTHER-SET")
    h.stop()
    assert h.cluster.objects(GLOBAL_INGRESS_IPS) and h.cluster.objects(CLUSTER_GLOBAL_EGRESS_IPS)
    uninstall(CONFIG, h.cluster, h.pf, h.ipsets)
    assert h.cluster.objects(GLOBAL_INGRESS_IPS) == [] and h.cluster.objects(CLUSTER_GLOBAL_EGRESS_IPS) == []
    assert [s["metadata"]["name"] for s in h.cluster.objects(SERVICES)] == ["nginx"]
    assert h.ipsets.names() == ["OTHER-SET"]
    for chain in R.ALL_CHAINS:
        assert h.pf.chain_rules("nat", chain) is None
