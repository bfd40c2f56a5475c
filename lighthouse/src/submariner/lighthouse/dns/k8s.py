"""The one Kubernetes connection of a lighthouse-dns process, shared by the `lighthouse` and `kubernetes`
plugins (and kept across reloads)."""

from __future__ import annotations

import os
from typing import Any

from submariner.broker.kube import ClientFactory, Cluster


def cluster_for(process: Any, kubeconfig: str | None = None, context: str | None = None) -> ClientFactory:
    """`process.kube` if already set (tests put a fake there), else one built from, in order: the plugin's
    `kubeconfig` option, the `-kubeconfig` flag, in-cluster service-account credentials, $KUBECONFIG."""
    if process.kube is not None:
        return process.kube  # type: ignore[no-any-return]
    path = kubeconfig or process.kubeconfig
    cluster: Cluster
    if path:
        cluster = Cluster.from_kubeconfig(path, context)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        cluster = Cluster.in_cluster()
    else:
        cluster = Cluster.from_kubeconfig(None, context)
    process.kube = cluster
    return cluster
