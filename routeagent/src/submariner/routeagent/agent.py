"""The route agent process: watch Endpoints and Nodes, reconcile on change and periodically.

Level-triggered: an informer event only wakes the loop; each pass recomputes the whole desired state from
the caches (so missed or reordered events cannot leave stale kernel state) and the reconciler writes only
differences. Failures are retried with back-off; a periodic resync repairs state someone else changed.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from submariner.broker.api.meta import APIResource
from submariner.broker.api.submariner import ENDPOINTS
from submariner.broker.kube import ClientFactory, Informer, Obj
from submariner.routeagent.config import Settings
from submariner.routeagent.reconciler import Reconciler

log = logging.getLogger(__name__)

NODES = APIResource("", "v1", "Node", "nodes", "node", False)


class RouteAgent:
    def __init__(self, settings: Settings, kube: ClientFactory, reconciler: Reconciler,
                 backoff: tuple[float, float] = (0.5, 30.0)) -> None:
        self.settings = settings
        self.reconciler = reconciler
        self.backoff = backoff
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.passes = 0
        self.failures = 0
        self.endpoints = Informer(kube.resource(ENDPOINTS), namespace=settings.namespace, name="endpoints",
                                  on_add=self._changed, on_update=self._updated, on_delete=self._changed)
        self.nodes = Informer(kube.resource(NODES), name="nodes", on_add=self._changed, on_update=self._updated,
                              on_delete=self._changed, transform=_slim_node)

    def _changed(self, obj: Obj) -> None:
        self.wake.set()

    def _updated(self, old: Obj, new: Obj) -> None:
        self.wake.set()

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()

    def run(self) -> None:
        """Until stop(): sync the caches, then reconcile on every wake-up or resync period."""
        self.endpoints.start()
        self.nodes.start()
        try:
            while not self.stopped.is_set():
                if self.endpoints.wait_for_sync(0.5) and self.nodes.wait_for_sync(0.5):
                    break
            delay = self.settings.resync
            while not self.stopped.is_set():
                self.wake.clear()
                try:
                    self.reconciler.reconcile(self.endpoints.list(), self.nodes.list())
                    self.passes += 1
                    self.failures = 0
                    delay = self.settings.resync
                except Exception:
                    self.failures += 1
                    delay = min(self.backoff[1], self.backoff[0] * 2 ** (self.failures - 1))
                    log.exception("reconcile failed (%d in a row); retrying in %.1fs", self.failures, delay)
                self.wake.wait(delay)
        finally:
            self.endpoints.stop()
            self.nodes.stop()


def _slim_node(node: Obj) -> Obj:
    """Keep what the route agent reads: name, resourceVersion, annotations, addresses."""
    meta: dict[str, Any] = node.get("metadata") or {}
    return {
        "metadata": {k: meta[k] for k in ("name", "namespace", "resourceVersion", "annotations", "labels")
                     if k in meta},
        "status": {"addresses": (node.get("status") or {}).get("addresses") or []},
    }
