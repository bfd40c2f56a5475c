"""join's pure decisions: gateway choice on the lab's (= kind's) nodes, cluster IDs, flag parsing, readiness."""

from __future__ import annotations

import pytest

from submariner.cli import join
from submariner.cli.errors import CliError
from submariner.cli.main import bool_flags, cli, rewrite_bools
from submariner.lab.daemon import node_object
from submariner.lab.state import CONTROL_PLANE, ClusterState, NodeState


def lab_nodes(workers: int) -> list[dict[str, object]]:
    """Nodes exactly as the lab registers them for `- role: control-plane` + N workers."""
    nodes = [NodeState("c1-control-plane", CONTROL_PLANE, "ns0", "198.18.0.2", "v0", "10.8.0.0/24")]
    nodes += [NodeState(f"c1-worker{'' if i == 0 else i + 1}", "worker", f"ns{i + 1}", f"198.18.0.{i + 3}",
                        f"v{i + 1}", f"10.8.{i + 1}.0/24") for i in range(workers)]
    cluster = ClusterState("c1", "10.8.0.0/16", "10.88.0.0/16", nodes)
    return [node_object(cluster, n) for n in nodes]


def test_lab_cluster_with_one_worker_picks_the_worker_without_a_prompt() -> None:
    assert join.gateway_candidates(lab_nodes(1)) == ["c1-worker"]  # type: ignore[arg-type]
    assert join.gateway_candidates(lab_nodes(0)) == ["c1-control-plane"]  # type: ignore[arg-type]
    assert join.gateway_candidates(lab_nodes(2)) == ["c1-worker", "c1-worker2"]  # type: ignore[arg-type]


def test_worker_role_label_wins_and_labelled_gateways_are_listed() -> None:
    def node(name: str, **labels: str) -> dict[str, object]:
        return {"metadata": {"name": name, "labels": labels}}

    nodes = [node("a", **{"node-role.kubernetes.io/worker": ""}), node("b"),
             node("m", **{"node-role.kubernetes.io/master": ""})]
    assert join.gateway_candidates(nodes) == ["a"]  # type: ignore[arg-type]
    assert join.gateway_candidates(nodes[1:]) == ["b"]  # type: ignore[arg-type]
    assert join.gateway_candidates(nodes[2:]) == []  # type: ignore[arg-type]
    assert join.labelled_gateways([node("g", **{"submariner.io/gateway": "true"}), *nodes]) == ["g"]  # type: ignore[list-item]


def test_cluster_id_rules() -> None:
    join.validate_cluster_id("c1")
    for bad in ("C1", "a.b", "-a", "a" * 64, ""):
        with pytest.raises(CliError):
            join.validate_cluster_id(bad)
    assert join.default_cluster_id("abcde.g") == "abcde-g"
    assert join.default_cluster_id("-abcdef") == "0abcdef"
    assert join.default_cluster_id("a@#$b") == "a-b"
    assert join.default_cluster_id("kind-c1") == "kind-c1"


def test_coredns_configmap_reference() -> None:
    assert join.parse_coredns_configmap("") == ("kube-system", "coredns")
    assert join.parse_coredns_configmap("custom") == ("kube-system", "custom")
    assert join.parse_coredns_configmap("dns/custom") == ("dns", "custom")
    with pytest.raises(CliError, match="not a valid ConfigMap reference"):
        join.parse_coredns_configmap("a/b/c")


def test_image_overrides() -> None:
    assert join.parse_image_overrides(("submariner-gateway=x/y:z",)) == {"submariner-gateway": "x/y:z"}
    with pytest.raises(CliError, match='invalid image override component "gw"'):
        join.parse_image_overrides(("gw=x",))


def test_pflag_booleans() -> None:
    flags = bool_flags(cli)
    assert {"--globalnet", "--natt", "--label-gateway", "--check-broker-certificate", "--wait"} <= flags
    assert rewrite_bools(["join", "--globalnet=false", "--natt=true", "--clusterid=x"], flags) == [
        "join", "--no-globalnet", "--natt", "--clusterid=x"]


def test_connection_state() -> None:
    def gw(status: str, conns: list[tuple[str, str]], failure: str = "") -> dict[str, object]:
        return {"status": {"haStatus": status, "statusFailure": failure, "connections": [
            {"status": s, "endpoint": {"cluster_id": c}} for c, s in conns]}}

    assert join.connection_state([], {"c2"}) == (False, "no active gateway has reported yet")
    assert join.connection_state([gw("passive", [])], set())[0] is False
    assert join.connection_state([gw("active", [])], set()) == (True, "")
    assert join.connection_state([gw("active", [("c2", "connecting")])], {"c2"}) == (False,
                                                                                      "not connected yet to c2")
    assert join.connection_state([gw("active", [("c2", "connected")])], {"c2"}) == (True, "")
    assert join.connection_state([gw("active", [], "cable driver failed")], set())[1] == \
        "the gateway reports: cable driver failed"


def test_netperf_csv_becomes_header_value_lines() -> None:
    from submariner.cli.benchmark import format_latency

    out = ("MIGRATED TCP REQUEST/RESPONSE TEST from 0.0.0.0 () port 0 AF_INET to 10.9.1.8 () port 0 AF_INET\n"
           "Minimum Latency Microseconds,Mean Latency Microseconds,Maximum Latency Microseconds,"
           "Stddev Latency Microseconds,Transaction Rate Tran/s\n50,78.79,1702,17.54,12599.844\n")
    assert format_latency(out) == ("Minimum Latency Microseconds:\t50\nMean Latency Microseconds:\t78.79\n"
                                   "Maximum Latency Microseconds:\t1702\nStddev Latency Microseconds:\t17.54\n"
                                   "Transaction Rate Tran/s:\t12599.844")
    with pytest.raises(CliError):
        format_latency("netperf: cannot connect\n")


def test_cable_driver_default_comes_from_the_clusters_join_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from submariner.broker.kube.fake import FakeCluster
    from submariner.cli.reporter import Reporter
    from submariner.cli.resources import CONFIGMAPS

    kube = FakeCluster()
    assert join._default_cable_driver(kube, Reporter()) == "libreswan"  # upstream's default without the ConfigMap
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "submariner-join-defaults", "namespace": "kube-system"},
                 "data": {"cable-driver": "vxlan", "reason": "no ESP here"}}
    kube.resource(CONFIGMAPS).create(configmap)
    assert join._default_cable_driver(kube, Reporter()) == "vxlan"
    assert 'Using cable driver "vxlan" from ConfigMap kube-system/submariner-join-defaults: no ESP here' \
        in capsys.readouterr().err
    configmap["data"] = {"cable-driver": "gre"}
    kube.resource(CONFIGMAPS).update(configmap)
    with pytest.raises(CliError, match="names cable driver 'gre'"):
        join._default_cable_driver(kube, Reporter())
