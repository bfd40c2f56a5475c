"""The lab's network and lifecycle, on the real kernel (root): a private instance per test, cleaned up always.

Covers: create/delete idempotence, crash clean-up, half-built delete, name-prefix isolation between
clusters, no default route in any node/underlay namespace, the root namespace gets only its underlay /20,
nothing left behind, and the API server reachable from the root namespace and from every node.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from labharness import Lab, foreign_lab_route, kind_config, lab_instance, needs_root, root_routes
from submariner.lab import state, topology
from submariner.lab.config import parse_config
from submariner.lab.daemon import KIND_COREFILE
from submariner.lab.names import Instance

pytestmark = [pytest.mark.root, needs_root]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with lab_instance(tmp_path) as lab:
        yield lab
    assert not lab.leftovers(), f"left behind: {lab.leftovers()}"


def _ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


def _snapshot(lab: Lab, netns: list[str]) -> dict[str, str]:
    """Links, addresses and routes of the given namespaces (what must not change on a second ensure)."""
    out = {}
    for ns in netns:
        out[ns] = "\n".join(
            subprocess.run(["ip", "-n", ns, *cmd], capture_output=True, text=True, check=True).stdout
            for cmd in (["-br", "link"], ["-br", "-4", "addr"], ["-4", "route", "show", "table", "all"])
        )
    return out


def test_create_cluster_end_to_end(lab: Lab) -> None:
    """The seed's c1 config, unchanged: nodes, DNS seed objects, kubeconfig, reachability, routes, safety."""
    routes_before, forward_before = root_routes(), _ip_forward()
    cluster = lab.create(kind_config("c1"))
    cp, worker = cluster.nodes
    assert (cp.name, worker.name) == ("c1-control-plane", "c1-worker")
    assert (cp.pod_cidr, worker.pod_cidr) == ("10.8.0.0/24", "10.8.1.0/24")
    assert lab.sublab("get", "clusters").stdout.split() == ["c1"]
    assert lab.sublab("kubeconfig").stdout.strip() == str(lab.instance.kubeconfig)

    # The user's kubeconfig got context lab-c1 (current, like kind) and kubectl works through it.
    assert "lab-c1" in lab.kubeconfig.read_text()
    nodes = json.loads(lab.kubectl("c1", "get", "nodes", "-o", "json").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert sorted(by_name) == ["c1-control-plane", "c1-worker"]
    for node in cluster.nodes:
        obj = by_name[node.name]
        labels = obj["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == node.name and labels["kubernetes.io/os"] == "linux"
        assert ("node-role.kubernetes.io/control-plane" in labels) == node.is_control_plane
        assert obj["spec"]["podCIDR"] == node.pod_cidr
        assert {"type": "InternalIP", "address": node.address} in obj["status"]["addresses"]
        ready = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"

    # Cluster DNS, as kind seeds it.
    cm = json.loads(lab.kubectl("c1", "-n", "kube-system", "get", "configmap", "coredns", "-o", "json").stdout)
    assert cm["data"]["Corefile"] == KIND_COREFILE
    dep = json.loads(lab.kubectl("c1", "-n", "kube-system", "get", "deployment", "coredns", "-o", "json").stdout)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.k8s.io/coredns/coredns:v1.11.3"
    assert container["args"] == ["-conf", "/etc/coredns/Corefile"]
    assert container["volumeMounts"][0]["mountPath"] == "/etc/coredns"
    svc = json.loads(lab.kubectl("c1", "-n", "kube-system", "get", "service", "kube-dns", "-o", "json").stdout)
    assert svc["spec"]["clusterIP"] == "10.88.0.10"
    assert {(p["port"], p["protocol"]) for p in svc["spec"]["ports"]} == {(53, "UDP"), (53, "TCP"), (9153, "TCP")}
    assert svc["spec"]["selector"] == {"k8s-app": "kube-dns"}

    # The API server answers from the root namespace and from every node, on the control plane's address.
    assert lab.api_get(cluster, "/healthz") == (200, b"ok")
    ca = state.paths(lab.instance, "c1").apiserver_data / "ca.crt"
    for node in cluster.nodes:
        out = lab.in_netns(node.netns, "curl", "-sS", "--max-time", "10", "--cacert", str(ca),
                           f"{cluster.api_url}/healthz")
        assert out.stdout == "ok"

    # Nodes: forwarding on, a route to the other node's pod slice, no default route anywhere in the lab.
    for node in cluster.nodes:
        assert lab.in_netns(node.netns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
        other = next(n for n in cluster.nodes if n is not node)
        routes = lab.in_netns(node.netns, "ip", "-4", "route").stdout
        assert f"{other.pod_cidr} via {other.address} dev eth0" in routes
    for ns in lab.netns():
        for family in ("-4", "-6"):
            default = subprocess.run(["ip", "-n", ns, family, "route", "show", "default"], capture_output=True,
                                     text=True, check=True).stdout
            if "-pod-" not in ns:  # a pod may route to its node; nodes and the underlay never route out
                assert default.strip() == "", f"default route in {ns}: {default}"

    # The root namespace: exactly one route added (the underlay /20), forwarding untouched.
    added = set(root_routes()) - set(routes_before)
    added = {r for r in added if not foreign_lab_route(r, lab.instance)}
    assert added == {f"{lab.instance.underlay} dev {lab.instance.root_veth} proto kernel scope link "
                     f"src {lab.instance.root_address}"}
    assert [r for r in root_routes("-6") if lab.instance.root_veth in r] == []  # no fe80::/64 either
    assert _ip_forward() == forward_before

    # Same name again: a clear error, and the running cluster is untouched.
    again = lab.sublab("create", "cluster", "--config", "-", input=kind_config("c1"), check=False)
    assert again.returncode == 1
    assert 'cluster "c1" already exists' in again.stderr
    assert lab.api_get(cluster, "/healthz") == (200, b"ok")

    daemon = cluster.daemon_pid
    session = state.session_members(daemon or 0)
    assert len(session) >= 2  # the daemon and its API server
    lab.sublab("delete", "cluster", "--name", "c1")
    assert lab.processes(session) == []
    assert lab.leftovers() == {}
    assert "lab-c1" not in lab.kubeconfig.read_text()
    assert [r for r in root_routes() if not foreign_lab_route(r, lab.instance)] == \
        [r for r in routes_before if not foreign_lab_route(r, lab.instance)]
    # Deleting again (and deleting what never existed) is fine, as with kind.
    lab.sublab("delete", "cluster", "--name", "c1")
    lab.sublab("delete", "clusters", "c1", "nothing")
    assert lab.sublab("get", "clusters").stdout == ""


def test_topology_is_idempotent(lab: Lab) -> None:
    """Ensuring a cluster's network twice changes nothing; deleting twice is fine."""
    config = parse_config(kind_config("c2", workers=2, pod="10.9.0.0/16", service="10.99.0.0/16"))
    with state.locked(lab.instance):
        cluster = state.plan(lab.instance, config)
        state.save(lab.instance, cluster)
    topology.ensure_cluster(lab.instance, cluster)
    namespaces = lab.netns()
    assert sorted(namespaces) == sorted([lab.instance.underlay_netns, *(n.netns for n in cluster.nodes)])
    first = _snapshot(lab, namespaces)
    topology.ensure_cluster(lab.instance, cluster)
    assert _snapshot(lab, namespaces) == first
    # Three nodes: every node routes to both others' pod slices.
    for node in cluster.nodes:
        routes = lab.in_netns(node.netns, "ip", "-4", "route").stdout
        assert sum(1 for other in cluster.nodes if f"{other.pod_cidr} via {other.address}" in routes) == 2
    topology.delete_cluster(lab.instance, "c2")
    topology.delete_cluster(lab.instance, "c2")
    assert lab.netns() == [lab.instance.underlay_netns]
    topology.delete_underlay(lab.instance)
    topology.delete_underlay(lab.instance)
    assert lab.netns() == [] and lab.root_links() == []
    state.paths(lab.instance, "c2").state.unlink()
    state.paths(lab.instance, "c2").root.rmdir()


def test_delete_finishes_a_half_built_cluster(lab: Lab) -> None:
    """State written, the underlay and one node made, then the creator died: delete removes it all."""
    config = parse_config(kind_config("half"))
    with state.locked(lab.instance):
        cluster = state.plan(lab.instance, config)
        state.save(lab.instance, cluster)
    topology.ensure_underlay(lab.instance)
    topology.ensure_node(lab.instance, cluster.nodes[0])
    assert lab.netns()
    lab.sublab("delete", "cluster", "--name", "half")
    assert lab.leftovers() == {}


def test_crash_cleanup(lab: Lab) -> None:
    """SIGKILL the daemon: its API server lives on; `sublab delete` still removes every process and name."""
    cluster = lab.create(kind_config("crash", workers=0, pod="10.7.0.0/16", service="10.77.0.0/16"))
    assert cluster.daemon_pid
    session = state.session_members(cluster.daemon_pid)
    os.kill(cluster.daemon_pid, signal.SIGKILL)
    lab.wait_for("the daemon to die", lambda: not state.process_alive(cluster.daemon_pid, cluster.daemon_start))
    survivors = lab.processes([p for p in session if p != cluster.daemon_pid])
    assert survivors, "the API server should outlive its daemon (that is what clean-up must handle)"
    assert lab.api_get(cluster, "/healthz") == (200, b"ok")
    lab.sublab("delete", "clusters", "crash")
    assert lab.processes(session) == []
    assert lab.leftovers() == {}


def test_clusters_with_prefix_names_stay_apart(lab: Lab) -> None:
    """Deleting `broker` must not touch `broker-globalnet`, whose names start with broker's prefix."""
    clusters = []
    for name in ("broker", "broker-globalnet"):
        config = parse_config(kind_config(name, workers=0, pod="10.7.0.0/16", service="10.77.0.0/16"))
        with state.locked(lab.instance):
            cluster = state.plan(lab.instance, config)
            state.save(lab.instance, cluster)
        topology.ensure_cluster(lab.instance, cluster)
        clusters.append(cluster)
    # Same pod CIDRs in both (as the seed's Globalnet clusters): they only exist inside their namespaces.
    assert clusters[0].nodes[0].pod_cidr == clusters[1].nodes[0].pod_cidr
    assert clusters[0].nodes[0].address != clusters[1].nodes[0].address
    lab.sublab("delete", "cluster", "--name", "broker")
    assert sorted(lab.netns()) == sorted([lab.instance.underlay_netns, clusters[1].nodes[0].netns])
    lab.sublab("delete", "cluster", "--name", "broker-globalnet")
    assert lab.leftovers() == {}


def test_underlay_collision_is_refused(lab: Lab) -> None:
    """Another interface already on the instance's /20 (another lab): refuse rather than share a route."""
    topology.ensure_underlay(lab.instance)
    # Another prefix whose /20 is the same: what two homes hashing to the same index would look like.
    clash = next(inst for i in range(1000)
                 if (inst := Instance(lab.home / "other", f"slzz{i:x}")).underlay == lab.instance.underlay)
    try:
        with pytest.raises(topology.TopologyError, match="already used by interface"):
            topology.ensure_underlay(clash)
        assert not [n for n in topology.list_netns() if n.startswith(clash.prefix + "-")]  # refused up front
    finally:
        topology.purge_instance(clash)
    topology.delete_underlay(lab.instance)
