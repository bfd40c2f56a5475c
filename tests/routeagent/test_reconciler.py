"""The route agent through the fakes: worker vs gateway, gateway moves, remote changes, overlaps, MSS,
uninstall — and no kernel call at all when a reconcile has nothing new to do."""

from __future__ import annotations

from typing import Any

import pytest

from submariner.dataplane.netlink import FakeNetlink, Fdb, Route, Rule, Vxlan
from submariner.dataplane.packetfilter import FakePacketFilter, PacketFilterError, canonical
from submariner.dataplane.packetfilter.ipset import FakeIPSets
from submariner.routeagent.config import ConfigError, Settings
from submariner.routeagent.model import select_endpoints, vtep_ip
from submariner.routeagent.reconciler import ReconcileError, Reconciler

CLUSTER_CIDR = "10.8.0.0/16"
SERVICE_CIDR = "100.8.0.0/16"
NODES = {"c1-control-plane": "192.168.1.10", "c1-worker": "192.168.1.11", "c1-worker2": "192.168.1.12"}
CNI = {"c1-control-plane": "10.8.0.1", "c1-worker": "10.8.1.1", "c1-worker2": "10.8.2.1"}


def endpoint(cluster: str, host: str, ip: str, subnets: list[str], created: str = "2024-01-01T00:00:00Z",
             backend: str = "libreswan", backend_config: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": f"{cluster}-submariner-cable-{cluster}-{ip.replace('.', '-')}",
                         "namespace": "submariner-operator", "creationTimestamp": created},
            "spec": {"cluster_id": cluster, "cable_name": f"submariner-cable-{cluster}-{ip.replace('.', '-')}",
                     "hostname": host, "private_ip": ip, "public_ip": "", "nat_enabled": False,
                     "subnets": subnets, "backend": backend, "backend_config": backend_config or {}}}


def node(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": annotations or {}},
            "status": {"addresses": [{"type": "InternalIP", "address": NODES[name]},
                                     {"type": "Hostname", "address": name}]}}


ALL_NODES = [node(n) for n in NODES]
LOCAL_ON_CP = endpoint("c1", "c1-control-plane", NODES["c1-control-plane"], [SERVICE_CIDR, CLUSTER_CIDR])
LOCAL_ON_W2 = endpoint("c1", "c1-worker2", NODES["c1-worker2"], [SERVICE_CIDR, CLUSTER_CIDR],
                       created="2024-01-02T00:00:00Z")
REMOTE_C2 = endpoint("c2", "c2-gw", "172.18.0.5", ["100.9.0.0/16", "10.9.0.0/16"])
REMOTE_C3 = endpoint("c3", "c3-gw", "172.18.0.6", ["10.10.0.0/16"])


def settings(node_name: str, **kw: Any) -> Settings:
    return Settings(cluster_id="c1", node_name=node_name, cluster_cidrs=(CLUSTER_CIDR,),
                    service_cidrs=(SERVICE_CIDR,), **kw)


class Node:
    """One node's fakes and its reconciler."""

    def __init__(self, name: str, **kw: Any) -> None:
        self.nl = FakeNetlink()
        self.nl.add_link("eth0", 1500, [f"{NODES[name]}/24"])
        self.nl.add_link("cni0", 1500, [f"{CNI[name]}/32"])
        self.pf = FakePacketFilter()
        self.pf.seed("nat", "KUBE-POSTROUTING", [("-j", "MASQUERADE")])
        self.pf.table("nat").chains["POSTROUTING"].append(("-j", "KUBE-POSTROUTING"))
        self.sets = FakeIPSets()
        self.r = Reconciler(settings(name, **kw), self.nl, self.pf, self.sets)

    def run(self, endpoints: list[dict[str, Any]], nodes: list[dict[str, Any]] = ALL_NODES) -> None:
        self.r.reconcile(endpoints, nodes)

    def assert_no_churn(self, endpoints: list[dict[str, Any]], nodes: list[dict[str, Any]] = ALL_NODES) -> None:
        self.nl.calls.clear()
        self.sets.calls.clear()
        before = self.pf.transactions
        self.r.reconcile(endpoints, nodes)
        assert self.nl.calls == []
        assert self.sets.calls == []
        assert self.pf.transactions == before
        assert self.r.changes == 0

    def main_routes(self) -> list[Route]:
        return [r for r in self.nl.routes(254) if r.oif == "vx-submariner" and r.proto_static]

    def nat(self) -> list[tuple[str, ...]]:
        return self.pf.chain_rules("nat", "SUBMARINER-POSTROUTING") or []


def test_worker_node() -> None:
    w = Node("c1-worker")
    eps = [LOCAL_ON_CP, REMOTE_C2]
    w.run(eps)
    assert w.nl.vxlan("vx-submariner") == Vxlan("vx-submariner", 100, 4800, remote="192.168.1.10", mtu=1450)
    assert ("vx-submariner", "240.168.1.11/8") in w.nl.addresses()
    assert w.main_routes() == [
        Route("10.9.0.0/16", gateway="240.168.1.10", oif="vx-submariner", proto_static=True),
        Route("100.9.0.0/16", gateway="240.168.1.10", oif="vx-submariner", proto_static=True)]
    assert w.nl.routes(150) == [] and Rule(150, 150) not in w.nl.rules()
    assert w.nl.sysctls["net.ipv4.conf.vx-submariner.rp_filter"] == "2"
    assert w.nl.sysctls["net.ipv4.conf.cni0.rp_filter"] == "2"
    assert w.nat() == [canonical(a) for a in (
        ("-s", "240.0.0.0/8", "-o", "vx-submariner", "-j", "SNAT", "--to-source", "10.8.1.1"),
        ("-s", CLUSTER_CIDR, "-d", "100.9.0.0/16", "-j", "ACCEPT"),
        ("-s", "100.9.0.0/16", "-d", CLUSTER_CIDR, "-j", "ACCEPT"),
        ("-s", CLUSTER_CIDR, "-d", "10.9.0.0/16", "-j", "ACCEPT"),
        ("-s", "10.9.0.0/16", "-d", CLUSTER_CIDR, "-j", "ACCEPT"))]
    assert w.pf.chain_rules("filter", "SUBMARINER-INPUT") == [canonical(("-p", "udp", "--dport", "4800",
                                                                         "-j", "ACCEPT"))]
    assert w.pf.chain_rules("filter", "FORWARD") == [canonical(("-j", "SUBMARINER-FORWARD"))]
    assert (w.pf.chain_rules("nat", "POSTROUTING") or [])[0] == canonical(("-j", "SUBMARINER-POSTROUTING"))
    assert w.pf.chain_rules("nat", "KUBE-POSTROUTING") == [canonical(("-j", "MASQUERADE"))]
    mangle = w.pf.chain_rules("mangle", "SUBMARINER-POSTROUTING") or []
    assert len(mangle) == 2 and all("--clamp-mss-to-pmtu" in r for r in mangle)
    assert w.sets.sets == {"SUBMARINER-LOCALCIDRS": {CLUSTER_CIDR, SERVICE_CIDR},
                           "SUBMARINER-REMOTECIDRS": {"10.9.0.0/16", "100.9.0.0/16"}}
    w.assert_no_churn(eps)


def test_gateway_node() -> None:
    gw = Node("c1-control-plane")
    eps = [LOCAL_ON_CP, REMOTE_C2]
    gw.run(eps)
    assert gw.nl.vxlan("vx-submariner") == Vxlan("vx-submariner", 100, 4800, remote=None, mtu=1450)
    assert gw.nl.fdb("vx-submariner") == [Fdb("vx-submariner", "192.168.1.11"), Fdb("vx-submariner", "192.168.1.12")]
    assert gw.main_routes() == []
    assert Rule(150, 150) in gw.nl.rules()
    assert gw.nl.routes(150) == [
        Route("10.9.0.0/16", 150, oif="eth0", src="10.8.0.1", scope_link=True, proto_static=True),
        Route("100.9.0.0/16", 150, oif="eth0", src="10.8.0.1", scope_link=True, proto_static=True)]
    gw.assert_no_churn(eps)
    # a node joins: its FDB entry follows
    more = [*ALL_NODES, {"metadata": {"name": "c1-worker3"},
                         "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.13"}]}}]
    gw.run(eps, more)
    assert Fdb("vx-submariner", "192.168.1.13") in gw.nl.fdb("vx-submariner")
    gw.run(eps, ALL_NODES)
    assert Fdb("vx-submariner", "192.168.1.13") not in gw.nl.fdb("vx-submariner")


def test_gateway_routes_use_the_cable_interface_when_the_endpoint_names_one() -> None:
    gw = Node("c1-control-plane")
    wg = endpoint("c1", "c1-control-plane", NODES["c1-control-plane"], [SERVICE_CIDR, CLUSTER_CIDR],
                  backend="wireguard", backend_config={"interface-name": "submariner"})
    gw.run([wg, REMOTE_C3])
    assert gw.nl.routes(150) == []  # the cable device does not exist yet: wait, do not fail
    gw.nl.add_link("submariner", 1420)
    gw.run([wg, REMOTE_C3])
    assert gw.nl.routes(150) == [Route("10.10.0.0/16", 150, oif="submariner", src="10.8.0.1", scope_link=True,
                                       proto_static=True)]


def test_gateway_moves_to_another_node() -> None:
    w = Node("c1-worker")
    w.run([LOCAL_ON_CP, REMOTE_C2])
    first = w.nl.link_index("vx-submariner")
    w.run([LOCAL_ON_CP, LOCAL_ON_W2, REMOTE_C2])  # the newer local Endpoint wins
    assert w.nl.vxlan("vx-submariner") == Vxlan("vx-submariner", 100, 4800, remote="192.168.1.12", mtu=1450)
    assert w.nl.link_index("vx-submariner") != first
    assert {r.gateway for r in w.main_routes()} == {"240.168.1.12"}
    assert len(w.main_routes()) == 2
    w.assert_no_churn([LOCAL_ON_CP, LOCAL_ON_W2, REMOTE_C2])


def test_worker_becomes_gateway_and_back() -> None:
    n = Node("c1-worker2")
    n.run([LOCAL_ON_CP, REMOTE_C2])
    assert len(n.main_routes()) == 2
    n.run([LOCAL_ON_W2, REMOTE_C2])  # TransitionToGateway
    assert n.main_routes() == [] and len(n.nl.routes(150)) == 2 and Rule(150, 150) in n.nl.rules()
    assert n.nl.vxlan("vx-submariner").remote is None  # type: ignore[union-attr]
    # the gateway's vxlan cable driver puts its state here while we are gateway
    n.nl.ensure_vxlan(Vxlan("vxlan-tunnel", 1000, 4500))
    n.nl.ensure_rule(Rule(100, 100))
    n.nl.replace_route(Route("10.9.0.0/16", 100, gateway="241.18.0.5", oif="vxlan-tunnel", metric=100))
    n.assert_no_churn([LOCAL_ON_W2, REMOTE_C2])  # never touched while gateway
    gone = dict(LOCAL_ON_CP, metadata=dict(LOCAL_ON_CP["metadata"], creationTimestamp="2024-01-03T00:00:00Z"))
    n.run([gone, REMOTE_C2])  # TransitionToNonGateway
    assert n.nl.routes(150) == [] and Rule(150, 150) not in n.nl.rules()
    assert n.nl.link_index("vxlan-tunnel") is None and n.nl.routes(100) == [] and Rule(100, 100) not in n.nl.rules()
    assert {r.gateway for r in n.main_routes()} == {"240.168.1.10"}
    n.assert_no_churn([gone, REMOTE_C2])


def test_remote_endpoint_removal_removes_its_routes_rules_and_set_members() -> None:
    w = Node("c1-worker")
    w.run([LOCAL_ON_CP, REMOTE_C2, REMOTE_C3])
    assert len(w.main_routes()) == 3
    assert len(w.nat()) == 1 + 2 * 3
    w.run([LOCAL_ON_CP, REMOTE_C3])
    assert [r.dst for r in w.main_routes()] == ["10.10.0.0/16"]
    assert not [r for r in w.nat() if "10.9.0.0/16" in r or "100.9.0.0/16" in r]
    assert w.sets.sets["SUBMARINER-REMOTECIDRS"] == {"10.10.0.0/16"}
    gw = Node("c1-control-plane")
    gw.run([LOCAL_ON_CP, REMOTE_C2, REMOTE_C3])
    gw.run([LOCAL_ON_CP, REMOTE_C3])
    assert [r.dst for r in gw.nl.routes(150)] == ["10.10.0.0/16"]


def test_overlapping_remote_subnets_are_skipped() -> None:
    w = Node("c1-worker")
    clash = endpoint("c4", "c4-gw", "172.18.0.7", ["10.8.128.0/17", "100.0.0.0/8", "10.44.0.0/16"])
    desired = w.r.reconcile([LOCAL_ON_CP, clash], ALL_NODES)
    assert desired.skipped == ["10.8.128.0/17", "100.0.0.0/8"]
    assert [r.dst for r in w.main_routes()] == ["10.44.0.0/16"]
    assert w.sets.sets["SUBMARINER-REMOTECIDRS"] == {"10.44.0.0/16"}
    assert not [r for r in w.nat() if "10.8.128.0/17" in r]


def test_only_the_newest_endpoint_of_a_remote_cluster_counts() -> None:
    old = endpoint("c2", "c2-gw", "172.18.0.5", ["10.9.0.0/16"], created="2024-01-01T00:00:00Z")
    new = endpoint("c2", "c2-gw2", "172.18.0.9", ["10.99.0.0/16"], created="2024-01-05T00:00:00Z")
    local, remotes = select_endpoints([new, LOCAL_ON_CP, old], "c1")
    assert local is LOCAL_ON_CP and remotes == [new]
    w = Node("c1-worker")
    w.run([LOCAL_ON_CP, old, new])
    assert [r.dst for r in w.main_routes()] == ["10.99.0.0/16"]


def test_remote_endpoints_before_any_local_one_get_rules_but_no_routes() -> None:
    w = Node("c1-worker")
    w.run([REMOTE_C2])
    assert w.nl.link_index("vx-submariner") is None
    assert w.main_routes() == []
    assert len(w.nat()) == 1 + 4  # SNAT (CNI IP known) + two ACCEPTs per remote subnet
    w.assert_no_churn([REMOTE_C2])
    w.run([LOCAL_ON_CP, REMOTE_C2])
    assert len(w.main_routes()) == 2
    w.run([REMOTE_C2])  # LocalEndpointRemoved: the device (and its routes) go
    assert w.nl.link_index("vx-submariner") is None and w.main_routes() == []


def test_forced_mss_from_annotation_and_globalnet() -> None:
    w = Node("c1-worker")
    annotated = [node(n, {"submariner.io/tcp-clamp-mss": "1300"} if n == "c1-worker" else None) for n in NODES]
    w.run([REMOTE_C2], annotated)
    assert all("--clamp-mss-to-pmtu" in r for r in w.pf.chain_rules("mangle", "SUBMARINER-POSTROUTING") or [])
    w.run([LOCAL_ON_CP, REMOTE_C2], annotated)  # LocalEndpointCreated: forced value
    rules = w.pf.chain_rules("mangle", "SUBMARINER-POSTROUTING") or []
    assert len(rules) == 2 and all(r[-2:] == ("--set-mss", "1300") for r in rules)
    g = Node("c1-control-plane", global_cidrs=("242.1.0.0/16",))
    vx_local = dict(LOCAL_ON_CP, spec=dict(LOCAL_ON_CP["spec"], backend="vxlan"))
    g.run([vx_local, REMOTE_C2])
    assert all(r[-2:] == ("--set-mss", "1450") for r in g.pf.chain_rules("mangle", "SUBMARINER-POSTROUTING") or [])
    assert g.nl.sysctls["net.ipv4.tcp_mtu_probing"] == "2" and g.nl.sysctls["net.ipv4.tcp_base_mss"] == "1024"
    g.run([LOCAL_ON_CP, REMOTE_C2])
    assert all(r[-2:] == ("--set-mss", "1380") for r in g.pf.chain_rules("mangle", "SUBMARINER-POSTROUTING") or [])


def test_globalnet_jump_into_the_shared_chain_survives_our_reconciles() -> None:
    w = Node("c1-worker")
    w.run([LOCAL_ON_CP, REMOTE_C2])
    w.pf.seed("nat", "SUBMARINER-GN-EGRESS")
    w.pf.table("nat").chains["SUBMARINER-POSTROUTING"].insert(0, ("-j", "SUBMARINER-GN-EGRESS"))
    w.assert_no_churn([LOCAL_ON_CP, REMOTE_C2])
    w.run([LOCAL_ON_CP, REMOTE_C3])
    assert w.nat()[0] == canonical(("-j", "SUBMARINER-GN-EGRESS"))


def test_uninstall_removes_everything_it_created() -> None:
    gw = Node("c1-control-plane")
    gw.run([LOCAL_ON_CP, REMOTE_C2])
    gw.r.uninstall()
    assert gw.nl.link_index("vx-submariner") is None
    assert gw.nl.routes(150) == [] and Rule(150, 150) not in gw.nl.rules()
    assert gw.sets.sets == {}
    for table in ("filter", "nat", "mangle"):
        chains = gw.pf.table(table).chains
        assert not [c for c in chains if c.startswith("SUBMARINER")]
        assert not [r for rules in chains.values() for r in rules if "SUBMARINER" in r[-1]]
    assert gw.pf.chain_rules("nat", "KUBE-POSTROUTING") == [canonical(("-j", "MASQUERADE"))]


def test_uplink_falls_back_without_a_default_route() -> None:
    """No default route: the interface holding the Node's InternalIP; without one, the way to the gateway."""
    w = Node("c1-worker")
    w.nl.add_link("eth1", 9000, ["192.168.7.11/24"])
    w.run([LOCAL_ON_CP, REMOTE_C2])
    assert ("vx-submariner", "240.168.1.11/8") in w.nl.addresses()  # eth0 holds the InternalIP
    no_ip = [{"metadata": {"name": "c1-worker"}, "status": {"addresses": []}}]
    moved = endpoint("c1", "c1-control-plane", "192.168.7.10", [CLUSTER_CIDR], created="2024-01-09T00:00:00Z")
    w2 = Node("c1-worker")
    w2.nl.add_link("eth1", 9000, ["192.168.7.11/24"])
    w2.run([moved, REMOTE_C2], no_ip)
    assert ("vx-submariner", "240.168.7.11/8") in w2.nl.addresses()
    assert w2.nl.link_mtu("vx-submariner") == 8950


def test_vtep_ip() -> None:
    assert vtep_ip("192.168.1.100") == "240.168.1.100"
    assert vtep_ip("172.18.0.5") == "240.18.0.5"


def test_settings_from_env() -> None:
    env = {"SUBMARINER_CLUSTERID": "c1", "NODE_NAME": "n1", "SUBMARINER_CLUSTERCIDR": "10.8.0.0/16",
           "SUBMARINER_SERVICECIDR": "100.8.0.0/16", "SUBMARINER_GLOBALCIDR": "", "SUBMARINER_UNINSTALL": "true"}
    s = Settings.from_env(env)
    assert (s.namespace, s.cluster_cidrs, s.service_cidrs, s.global_cidrs, s.uninstall) == (
        "submariner-operator", ("10.8.0.0/16",), ("100.8.0.0/16",), (), True)
    with pytest.raises(ConfigError, match="NODE_NAME"):
        Settings.from_env({"SUBMARINER_CLUSTERID": "c1"})
    with pytest.raises(ConfigError, match="SUBMARINER_CLUSTERCIDR"):
        Settings.from_env({**env, "SUBMARINER_CLUSTERCIDR": "10.8.0.0/33"})


def test_gateway_route_goes_via_the_next_hop_when_the_remote_gateway_is_inside_its_subnet() -> None:
    gw = Node("c1-control-plane")
    gw.nl.replace_route(Route("10.0.0.0/8", gateway="192.168.1.1", oif="eth0"))  # the underlay's way out
    inside = endpoint("c5", "c5-gw", "10.50.0.5", ["10.50.0.0/16", "10.51.0.0/16"])
    gw.run([LOCAL_ON_CP, inside])
    assert gw.nl.routes(150) == [
        Route("10.50.0.0/16", 150, gateway="192.168.1.1", oif="eth0", src="10.8.0.1", proto_static=True),
        Route("10.51.0.0/16", 150, oif="eth0", src="10.8.0.1", scope_link=True, proto_static=True)]
    gw.assert_no_churn([LOCAL_ON_CP, inside])


def test_a_failing_step_does_not_stop_the_others() -> None:
    w = Node("c1-worker")

    def broken(ruleset: object) -> bool:
        raise PacketFilterError("iptables-restore: no such module")

    w.pf.apply = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(ReconcileError, match="iptables: iptables-restore: no such module"):
        w.run([LOCAL_ON_CP, REMOTE_C2])
    assert len(w.main_routes()) == 2  # routes still programmed
