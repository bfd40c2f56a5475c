"""uninstall removes what join made (bounded), keeps a broker that other clusters still use."""

from __future__ import annotations

from collections.abc import Callable

from subctl_harness import KIND_COREFILE, Env, Result

from submariner.broker.kube import NotFound
from submariner.cli.resources import CLUSTERS, CONFIGMAPS, CRDS, NAMESPACES, NODES

Run = Callable[..., Result]


def test_uninstall_member_and_broker(env3: Env, subctl: Run) -> None:
    kc = env3.kubeconfig
    assert subctl("--context", "test-broker", "deploy-broker", cwd=env3.workdir, kubeconfig=kc).code == 0
    assert subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "c1").code == 0
    broker, c1 = env3.kube("broker"), env3.kube("c1")
    cluster_obj = {"apiVersion": "submariner.io/v1", "kind": "Cluster",
                   "metadata": {"name": "c1", "namespace": "submariner-k8s-broker"},
                   "spec": {"cluster_id": "c1", "color_codes": ["blue"], "service_cidr": [], "cluster_cidr": [],
                            "global_cidr": []}}
    broker.resource(CLUSTERS).create(cluster_obj)

    r = subctl("uninstall", "--context", "test-c1")
    assert r.code == 1 and "pass --yes to uninstall" in r.err  # no terminal to confirm on
    r = subctl("uninstall", "--context", "test-c1", "--yes", "--timeout", "20")
    assert r.code == 0, r.err
    assert r.err.startswith(" • Deleting the Submariner resource - this may take some time  ...\n")
    for name in ("submariner-operator",):
        try:
            c1.resource(NAMESPACES).get("", name)
            raise AssertionError(f"namespace {name} still exists")
        except NotFound:
            pass
    assert not [c for c in c1.resource(CRDS).list()[0] if c["metadata"]["name"].endswith(".submariner.io")]
    assert "submariner.io/gateway" not in c1.resource(NODES).get("", "c1-worker")["metadata"]["labels"]
    assert c1.resource(CONFIGMAPS).get("kube-system", "coredns")["data"]["Corefile"] == KIND_COREFILE
    assert broker.resource(CLUSTERS).list("submariner-k8s-broker")[0] == []  # withdrawn from the broker

    # c1 can join again with the same ID.
    r = subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "c1")
    assert r.code == 0, r.err
    broker.resource(CLUSTERS).create(cluster_obj)
    # The broker cluster: its namespace is in use by c1, so it is kept.
    r = subctl("uninstall", "--context", "test-broker", "-y")
    assert r.code == 0, r.err
    assert ' ⚠ Broker namespace "submariner-k8s-broker" appears to be in use by other clusters (c1) - keeping the ' \
           "broker components.\n" in r.err
    assert broker.resource(NAMESPACES).get("", "submariner-k8s-broker")
