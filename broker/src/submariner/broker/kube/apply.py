"""Create-or-update (Admiral's `util.CreateOrUpdate`, lighthouse-agent.md §10.1).

Why it matters: every sync goes through here, so it must converge under concurrent writers (retry on 409)
and must not write when nothing changed — a write is an event on every other cluster.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from submariner.broker.kube.client import (
    AlreadyExists,
    Conflict,
    KubeError,
    NotFound,
    Obj,
    ResourceClient,
    deep_copy,
    key_of,
)

log = logging.getLogger(__name__)

Operation = Literal["created", "updated", "unchanged"]
Mutate = Callable[[Obj], Obj]

_KEPT_METADATA = ("name", "namespace", "generateName", "labels", "annotations")
_SERVER_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "finalizers",
                    "ownerReferences", "deletionTimestamp", "deletionGracePeriodSeconds")


def strip_metadata(obj: Mapping[str, Any]) -> Obj:
    """A copy fit for writing into another cluster: metadata keeps only name, namespace, generateName,
    labels and annotations (uid, resourceVersion, ownerReferences, ... belong to the source cluster)."""
    out = deep_copy(dict(obj))
    meta = out.get("metadata") or {}
    out["metadata"] = {k: meta[k] for k in _KEPT_METADATA if meta.get(k)}
    return out


def _norm(value: Any) -> Any:
    """None, {} and [] are the same to the API (omitempty)."""
    return value if value not in (None, {}, []) else None


def content_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Everything a write changes except status: labels, annotations and every top-level field but
    metadata/status/apiVersion/kind (spec for CRDs, data for ConfigMaps, endpoints for slices)."""
    meta = obj.get("metadata") or {}
    out = {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind") and _norm(v)}
    out["metadata.labels"] = _norm(meta.get("labels"))
    out["metadata.annotations"] = _norm(meta.get("annotations"))
    return out


def _replace_into(existing: Obj, desired: Obj) -> Obj:
    """`desired`, carrying over the target's own metadata; labels and annotations are replaced."""
    result = deep_copy(desired)
    meta = result.setdefault("metadata", {})
    old = existing.get("metadata") or {}
    for k in _SERVER_METADATA:
        if k in old:
            meta[k] = old[k]
    for k in ("labels", "annotations"):
        if not meta.get(k):
            meta.pop(k, None)
    return result


def _find(client: ResourceClient, obj: Obj) -> Obj:
    """Get by name; a name-less object (generateName) is found by its labels, which must identify it."""
    namespace, name = key_of(obj)
    if name:
        return client.get(namespace, name)
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if not labels:
        raise KubeError(f"{client.resource.kind} has neither a name nor labels to find it by", status=422)
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    items, _ = client.list(namespace or None, label_selector=selector)
    if not items:
        raise NotFound(f"no {client.resource.plural} match {selector}", status=404)
    if len(items) > 1:
        raise KubeError(
            f"{len(items)} {client.resource.plural} in {namespace!r} match {selector}; expected at most one",
            status=409,
        )
    return items[0]


def create_or_update(
    client: ResourceClient,
    obj: Obj,
    *,
    mutate: Mutate | None = None,
    attempts: int = 5,
) -> tuple[Operation, Obj]:
    """Make the target hold `obj`; returns what was done and the object as stored.

    `obj` is written as given (strip source metadata first with `strip_metadata`). `mutate`, if given,
    turns a copy of the existing object into the desired one instead of the default "replace with obj,
    keeping the target's uid/resourceVersion/creationTimestamp". Status is written through the status
    subresource, only when `obj` carries one and it differs (server-populated status is left alone).
    Conflicts (409, or AlreadyExists from a racing creator) retry with a fresh read.
    """
    for attempt in range(attempts):
        try:
            return _create_or_update_once(client, obj, mutate)
        except (Conflict, AlreadyExists) as e:
            if attempt == attempts - 1:
                raise
            log.debug("create_or_update conflict kind=%s key=%s attempt=%d error=%r",
                      client.resource.kind, "/".join(key_of(obj)), attempt + 1, e.message)
            time.sleep(0.01 * (1 + 0.1 * random.random()) * (attempt + 1))
    raise AssertionError("unreachable")


def _create_or_update_once(client: ResourceClient, obj: Obj, mutate: Mutate | None) -> tuple[Operation, Obj]:
    try:
        existing = _find(client, obj)
    except NotFound:
        existing = None
    if existing is None:
        created = client.create(obj)
        status = obj.get("status")
        if status and _norm(created.get("status")) != _norm(status):
            created["status"] = deep_copy(status)
            with contextlib.suppress(NotFound):  # no status subresource: the create stored it
                created = client.update_status(created)
        return "created", created

    desired = mutate(deep_copy(existing)) if mutate is not None else _replace_into(existing, obj)
    meta = desired.setdefault("metadata", {})
    meta["name"] = existing["metadata"]["name"]
    meta["resourceVersion"] = existing["metadata"].get("resourceVersion")
    if existing["metadata"].get("namespace"):
        meta["namespace"] = existing["metadata"]["namespace"]

    op: Operation = "unchanged"
    result = existing
    if content_of(desired) != content_of(existing):
        result = client.update(desired)
        op = "updated"
    if "status" in desired and _norm(desired["status"]) != _norm(result.get("status")):
        to_write = deep_copy(result)
        to_write["status"] = deep_copy(desired["status"] or {})
        try:
            result = client.update_status(to_write)
        except NotFound:
            result = client.update(to_write)  # no status subresource: status travels with the object
        op = "updated"
    return op, result
