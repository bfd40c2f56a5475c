"""Helpers for the subctl tests: results, the three-server environment, kind-like seeding, snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submariner.broker.kube import Cluster, KubeError, NotFound
from submariner.lab.daemon import KIND_COREFILE  # kind's default Corefile, as the lab seeds it


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Env:
    """Three servers, one merged kubeconfig (contexts test-broker, test-c1, test-c2), a work directory."""

    servers: dict[str, Any]
    kubeconfig: str
    workdir: Path

    def kube(self, name: str) -> Cluster:
        server = self.servers[name]
        return Cluster.from_kubeconfig(server.kubeconfig, server.context)

    def url(self, name: str) -> str:
        return str(self.servers[name].url)


def _node(name: str, pod_cidr: str, labels: dict[str, str]) -> dict[str, Any]:
    base = {"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {**base, **labels}},
            "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}}


def seed_kind_like(kube: Cluster, name: str, pod_subnet: str, workers: int = 1, kubeadm: bool = True) -> None:
    """Nodes as kind registers them, and kind's coredns ConfigMap (what join edits)."""
    from submariner.cli.resources import CONFIGMAPS, NODES

    prefix = pod_subnet.split(".")[:2]
    nodes = kube.resource(NODES)
    nodes.create(_node(f"{name}-control-plane", ".".join(prefix) + ".0.0/24",
                       {"node-role.kubernetes.io/control-plane": ""}))
    for i in range(workers):
        suffix = "" if i == 0 else str(i + 1)
        nodes.create(_node(f"{name}-worker{suffix}", ".".join(prefix) + f".{i + 1}.0/24", {}))
    cms = kube.resource(CONFIGMAPS)
    cms.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"},
                "data": {"Corefile": KIND_COREFILE}})
    if kubeadm:
        cms.create({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
                    "data": {"ClusterConfiguration": f"apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"
                             f"networking:\n  podSubnet: {pod_subnet}\n  serviceSubnet: 10.96.0.0/12\n"}})


def snapshot(kube: Cluster) -> dict[str, Any]:
    """What a failed command must not have changed: namespaces, CRDs, node labels, ConfigMaps, SAs, Secrets."""
    from submariner.cli.resources import CONFIGMAPS, CRDS, NAMESPACES, NODES, SECRETS, SERVICE_ACCOUNTS, SERVICES

    def names(res: Any, ns: str | None = None) -> list[Any]:
        try:
            return sorted((o["metadata"].get("namespace", ""), o["metadata"]["name"],
                           o["metadata"].get("labels"), o.get("data"))
                          for o in kube.resource(res).list(ns)[0])
        except (NotFound, KubeError):
            return []

    return {res.plural: names(res) for res in (NAMESPACES, CRDS, NODES, CONFIGMAPS, SECRETS, SERVICE_ACCOUNTS,
                                                SERVICES)}
