"""The route agent process: watch Endpoints and Nodes, reconcile on change and periodically.

Level-triggered: an informer event only wakes the loop; each pass recomputes the whole desired state from
the caches (so missed or reordered events cannot leave stale kernel state) and the reconciler writes only
differences. Failures are retried with back-off; a periodic resync repairs state someone else changed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from submariner.broker.api.meta import APIResource
from submariner.broker.api.submariner import ENDPOINTS
from submariner.broker.kube import ClientFactory, Informer, Obj
from submariner.routeagent.config import Settings
from submariner.routeagent.reconciler import Reconciler
from submariner.routeagent.status import StatusReporter

log = logging.getLogger(__name__)

NODES = APIResource("", "v1", "Node", "nodes", "node", False)


class RouteAgent:
    def __init__(self, settings: Settings, kube: ClientFactory, reconciler: Reconciler,
                 backoff: tuple[float, float] = (0.5, 30.0), status: StatusReporter | None = None) -> None:
        self.settings = settings
        self.reconciler = reconciler
        self.status = status
        self._written_at = float("-inf")
        self._written_verdicts: list[Any] = []
        self.backoff = backoff
        self.wake = threading.Event()
        self.dirty = threading.Event()
        """An informer event since the last reconcile (a health verdict change only wakes the status report)."""
        self.stopped = threading.Event()
        self.passes = 0
        self.failures = 0
        self.endpoints = Informer(kube.resource(ENDPOINTS), namespace=settings.namespace, name="endpoints",
                                  on_add=self._changed, on_update=self._updated, on_delete=self._changed)
        self.nodes = Informer(kube.resource(NODES), name="nodes", on_add=self._changed, on_update=self._updated,
                              on_delete=self._changed, transform=_slim_node)

    def _changed(self, obj: Obj) -> None:
        self.dirty.set()
        self.wake.set()

    def _updated(self, old: Obj, new: Obj) -> None:
        self.dirty.set()
        self.wake.set()

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()

    def run(self) -> None:
        """Until stop(): sync the caches, then reconcile on every informer event or resync period, and write the
        RouteAgent object when a health verdict changed (without a reconcile) or every status_interval."""
        if self.status is not None:
            self.status.on_change = self.wake.set
        self.endpoints.start()
        self.nodes.start()
        try:
            while not self.stopped.is_set():
                if self.endpoints.wait_for_sync(0.5) and self.nodes.wait_for_sync(0.5):
                    break
            next_pass = float("-inf")
            while not self.stopped.is_set():
                self.wake.clear()
                now = time.monotonic()
                if self.dirty.is_set() or now >= next_pass:
                    self.dirty.clear()
                    next_pass = now + self._pass()
                delay = next_pass - time.monotonic()
                if self.status is not None:
                    delay = min(delay, self._report())
                self.wake.wait(max(0.05, delay))
        finally:
            self.endpoints.stop()
            self.nodes.stop()
            if self.status is not None:
                try:
                    self.status.close(delete=True)
                except Exception as e:
                    log.warning("could not delete RouteAgent %s: %s", self.settings.node_name, e)

    def _pass(self) -> float:
        """One reconcile; the time to wait before the next one."""
        endpoints = self.endpoints.list()
        failure = ""
        try:
            self.reconciler.reconcile(endpoints, self.nodes.list())
            self.passes += 1
            self.failures = 0
            delay = self.settings.resync
        except Exception as e:
            self.failures += 1
            failure = f"{type(e).__name__}: {e}"
            delay = min(self.backoff[1], self.backoff[0] * 2 ** (self.failures - 1))
            log.exception("reconcile failed (%d in a row); retrying in %.1fs", self.failures, delay)
        if self.status is not None:
            self.status.observe(endpoints, failure)
        return delay

    def _report(self) -> float:
        """Write the RouteAgent object when its verdicts changed or every status_interval; the time to the
        next periodic write."""
        assert self.status is not None
        now = time.monotonic()
        rendered = self.status.render()
        verdicts = [(e["spec"].get("cable_name"), e["status"], e["statusMessage"])
                    for e in rendered["status"]["remoteEndpoints"]] + [rendered["status"]["statusFailure"]]
        due = now - self._written_at >= self.settings.status_interval
        if due or verdicts != self._written_verdicts:
            try:
                self.status.write()
                self._written_at, self._written_verdicts = now, verdicts
            except Exception as e:
                log.warning("writing RouteAgent %s failed: %s", self.settings.node_name, e)
                return min(5.0, self.settings.status_interval)
        return self._written_at + self.settings.status_interval - now


def _slim_node(node: Obj) -> Obj:
    """Keep what the route agent reads: name, resourceVersion, annotations, addresses."""
    meta: dict[str, Any] = node.get("metadata") or {}
    return {
        "metadata": {k: meta[k] for k in ("name", "namespace", "resourceVersion", "annotations", "labels")
                     if k in meta},
        "status": {"addresses": (node.get("status") or {}).get("addresses") or []},
    }
