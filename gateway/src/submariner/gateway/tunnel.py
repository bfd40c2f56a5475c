"""The tunnel controller (dataplane.md §2.4): Endpoints in SUBMARINER_NAMESPACE → cable engine.

Add/update installs (NAT discovery first), delete removes; a 30 s resync re-installs everything, which is
also how failed connects are retried (the engine and NAT discovery make a repeat of a done cable a no-op).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from submariner.broker.api.submariner import ENDPOINTS
from submariner.broker.kube import ClientFactory, Informer, Obj
from submariner.dataplane.healthcheck import HealthChecker
from submariner.gateway.engine import CableEngine

log = logging.getLogger(__name__)

RESYNC = 30.0


class TunnelController:
    def __init__(self, cluster: ClientFactory, namespace: str, engine: CableEngine,
                 health: HealthChecker | None = None, *, resync: float = RESYNC) -> None:
        self.engine = engine
        self.health = health
        self.resync = resync
        self.informer = Informer(cluster.resource(ENDPOINTS), namespace=namespace, name="gateway-endpoints",
                                 on_add=self._added, on_update=lambda old, new: self._added(new),
                                 on_delete=self._deleted)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _added(self, obj: Obj) -> None:
        try:
            self.engine.install_cable(obj)
        except Exception:
            log.exception("installing cable for Endpoint %s failed", _name(obj))
        if self.health is not None and obj.get("spec"):
            self.health.endpoint_updated(obj["spec"])

    def _deleted(self, obj: Obj) -> None:
        try:
            self.engine.remove_cable(obj)
        except Exception:
            log.exception("removing cable for Endpoint %s failed", _name(obj))
        if self.health is not None and obj.get("spec"):
            self.health.endpoint_removed(obj["spec"])

    def start(self, timeout: float = 30.0) -> None:
        self.informer.start()
        self.informer.wait_for_sync(timeout)
        self._thread = threading.Thread(target=self._resync_loop, name="tunnel-resync", daemon=True)
        self._thread.start()

    def _resync_loop(self) -> None:
        while not self._stop.wait(self.resync):
            for obj in self.informer.list():
                self._added(obj)

    def stop(self) -> None:
        self._stop.set()
        self.informer.stop()
        if self._thread is not None:
            self._thread.join(2)


def _name(obj: Any) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")
