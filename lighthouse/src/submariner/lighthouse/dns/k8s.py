"""The one Kubernetes connection of a lighthouse-dns process, shared by the `lighthouse` and `kubernetes`
plugins (and kept across reloads), and what their informers keep of each object."""

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


class Kept(dict[str, Any]):
    """An informer's cached object reduced to its metadata: the metadata dict itself, which answers
    `obj["metadata"]` and `obj.get("metadata")` with itself (one dict per cached object instead of two; tens
    of thousands of them). Read-only, like every cached object."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        return self if key == "metadata" else dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self if key == "metadata" else dict.get(self, key, default)


def _copy(value: Any) -> Any:
    """A string as a new object: kept strings must not pin the memory of the decoded list they came from (a
    few survivors per object keep most of the allocator's arenas a large initial list filled)."""
    if value.__class__ is str:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    return value


def metadata_only(obj: dict[str, Any], *, labels: bool = False, annotations: bool = False,
                  copy: bool = True) -> dict[str, Any]:
    """An informer `keep`: what a model that copies its data out of every add and update needs of the cached
    object, for deletes and the relist diff (name, namespace, resourceVersion; optionally the label and
    annotation dicts, shared with the handlers' object, not copied). `copy=False` when an informer transform
    already copied the strings."""
    meta = obj.get("metadata")
    out = Kept()
    if not isinstance(meta, dict):
        return out
    for k in ("name", "namespace", "resourceVersion"):
        if k in meta:
            out[k] = _copy(meta[k]) if copy else meta[k]
    if labels and meta.get("labels"):
        out["labels"] = meta["labels"]
    if annotations and meta.get("annotations"):
        out["annotations"] = meta["annotations"]
    return out


def metadata_and_labels(obj: dict[str, Any]) -> dict[str, Any]:
    """`keep` after a transform that copied the strings (lighthouse's EndpointSlices)."""
    return metadata_only(obj, labels=True, copy=False)


def metadata_labels_annotations(obj: dict[str, Any]) -> dict[str, Any]:
    """`keep` after a transform that copied the strings (lighthouse's ServiceImports)."""
    return metadata_only(obj, labels=True, annotations=True, copy=False)
