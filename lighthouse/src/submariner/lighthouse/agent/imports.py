"""The imported ServiceImport `N/S` on every cluster (lighthouse-agent.md §3.4, §5.5): what DNS reads.

A `ResourceSyncer` copies each broker aggregate into the service's namespace under the service's name
(missing namespaces park the copy until they appear). The aggregate's identity annotations and the
constituent records are internal to the broker and are stripped; timestamps stay (they also mark the copy
as ours for orphan clean-up). Renaming means the syncer's own reconcile cannot map copies back to
sources, so orphans are found here by identity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from submariner.broker.api import labels as L
from submariner.broker.kube import NotFound, Obj, ResourceClient, key_of
from submariner.broker.sync import Op
from submariner.lighthouse.agent.aggregation import CONSTITUENT_PREFIX
from submariner.lighthouse.agent.naming import ServiceKey, aggregate_identity, annotations_of, labels_of

log = logging.getLogger(__name__)

_STRIPPED = (L.SERVICE_NAME, L.SOURCE_NAMESPACE)


def to_local_import(obj: Obj, requeues: int, op: Op) -> tuple[Obj | None, bool]:
    """Transform: broker aggregate → `N/S` (None for anything that is not an aggregate)."""
    key = aggregate_identity(obj)
    if key is None:
        return None, False
    annotations = {k: v for k, v in annotations_of(obj).items()
                   if k not in _STRIPPED and not k.startswith(CONSTITUENT_PREFIX)}
    out: Obj = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {"name": key.name, "namespace": key.namespace, "annotations": annotations},
        "spec": obj.get("spec") or {},
    }
    if obj.get("status"):
        out["status"] = obj["status"]
    return out, False


def is_aggregate(obj: Obj, op: Op) -> bool:
    return aggregate_identity(obj) is not None


def looks_imported(obj: Mapping[str, Any], excluded_namespaces: Iterable[str]) -> bool:
    """A ServiceImport this agent made from an aggregate: no labels, a timestamp annotation, and not in the
    Submariner or broker namespace (never a broker aggregate itself: D8)."""
    if key_of(obj)[0] in set(excluded_namespaces) or labels_of(obj):
        return False
    ann = annotations_of(obj)
    if L.SERVICE_NAME in ann:
        return False
    return any(k.startswith(L.EXPORT_TIMESTAMP_PREFIX) for k in ann)


def delete_orphans(client: ResourceClient, known: Callable[[ServiceKey], bool],
                   excluded_namespaces: Iterable[str]) -> int:
    """Delete imported ServiceImports whose aggregate no longer exists on the broker (restart case)."""
    items, _ = client.list(None)
    excluded = list(excluded_namespaces)
    deleted = 0
    for obj in items:
        if not looks_imported(obj, excluded):
            continue
        ns, name = key_of(obj)
        if known(ServiceKey(ns, name)):
            continue
        try:
            client.delete(ns, name)
            deleted += 1
            log.info("orphaned service import deleted service=%s/%s", ns, name)
        except NotFound:
            pass
    return deleted
