"""Federators: where a syncer's objects go (lighthouse-agent.md §10.1).

A federator is the write half of a syncer; swapping it turns the same syncer into an exporter, an importer
or a watcher (`NoopFederator`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from submariner.broker.api.labels import CLUSTER_ID, ORIGINATING_NAMESPACE
from submariner.broker.kube.apply import create_or_update, strip_metadata
from submariner.broker.kube.client import Conflict, NotFound, Obj, ResourceClient, deep_copy, key_of

log = logging.getLogger(__name__)

Target = ResourceClient | Callable[[Obj], ResourceClient]
"""The target cluster's client for the object's type, or a function choosing it per object."""


class Federator(Protocol):
    """Writes synced objects somewhere; `delete` of a missing object is a success."""

    def distribute(self, obj: Obj) -> None: ...

    def delete(self, obj: Obj) -> None: ...


def _client_for(target: Target, obj: Obj) -> ResourceClient:
    if hasattr(target, "create"):
        return target  # type: ignore[return-value]
    return target(obj)  # type: ignore[operator]


class _Targeted:
    def __init__(self, target: Target, target_namespace: str, use_originating_namespace: bool) -> None:
        self._target = target
        self._target_namespace = target_namespace
        self._use_originating = use_originating_namespace

    def target_namespace_for(self, obj: Obj) -> str:
        """Fixed target namespace, else the originating-namespace label (if enabled), else the object's."""
        if self._target_namespace:
            return self._target_namespace
        meta = obj.get("metadata") or {}
        if self._use_originating:
            origin = (meta.get("labels") or {}).get(ORIGINATING_NAMESPACE)
            if origin:
                return str(origin)
        return str(meta.get("namespace") or "")

    def _place(self, obj: Obj) -> tuple[ResourceClient, Obj]:
        client = _client_for(self._target, obj)
        placed = strip_metadata(obj)
        meta = placed["metadata"]
        if client.resource.namespaced:
            meta["namespace"] = self.target_namespace_for(obj)
        else:
            meta.pop("namespace", None)
        return client, placed


class CreateOrUpdateFederator(_Targeted):
    """Create-or-update into the target, stamping `submariner-io/clusterID` when given a local ID.

    `use_originating_namespace` maps broker copies back to their original namespace (imports).
    """

    def __init__(
        self,
        target: Target,
        target_namespace: str = "",
        local_cluster_id: str = "",
        *,
        use_originating_namespace: bool = False,
    ) -> None:
        super().__init__(target, target_namespace, use_originating_namespace)
        self._local_cluster_id = local_cluster_id

    def distribute(self, obj: Obj) -> None:
        client, placed = self._place(obj)
        if self._local_cluster_id:
            placed["metadata"].setdefault("labels", {})[CLUSTER_ID] = self._local_cluster_id
        op, result = create_or_update(client, placed)
        if op != "unchanged":
            log.debug("federated op=%s kind=%s key=%s", op, client.resource.kind, "/".join(key_of(result)))

    def delete(self, obj: Obj) -> None:
        client, placed = self._place(obj)
        namespace, name = key_of(placed)
        try:
            client.delete(namespace, name)
        except NotFound:
            return
        log.debug("federated op=deleted kind=%s key=%s/%s", client.resource.kind, namespace, name)


class UpdateStatusFederator(_Targeted):
    """Copies `.status` onto an existing target object (never creates or deletes)."""

    def __init__(self, target: Target, target_namespace: str = "", *, attempts: int = 5) -> None:
        super().__init__(target, target_namespace, False)
        self._attempts = attempts

    def distribute(self, obj: Obj) -> None:
        client, placed = self._place(obj)
        namespace, name = key_of(placed)
        for attempt in range(self._attempts):
            try:
                existing = client.get(namespace, name)
            except NotFound:
                return
            status = deep_copy(obj).get("status") or {}
            if (existing.get("status") or {}) == status:
                return
            existing["status"] = status
            try:
                client.update_status(existing)
                return
            except Conflict:
                if attempt == self._attempts - 1:
                    raise
                time.sleep(0.01 * (1 + 0.1 * random.random()))
            except NotFound:
                return

    def delete(self, obj: Obj) -> None:
        return None


class NoopFederator:
    """Writes nothing: for syncers used only for their callbacks (a "watcher")."""

    def distribute(self, obj: Obj) -> None:
        return None

    def delete(self, obj: Obj) -> None:
        return None
