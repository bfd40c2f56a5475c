"""The Gateway CR syncer (dataplane.md §1, §2.10): this pod's HA role and cable connections, every few s.

Every gateway pod (active or passive) writes Gateway `<hostname>` so operators, subctl and Lighthouse DNS
see both the active gateway's connections and the passive ones' presence. Lighthouse DNS treats a cluster
as reachable when an `active` Gateway lists a `connected` connection whose `endpoint.cluster_id` is that
cluster — which is why the health checker's verdict is merged in here. The Gateway CRD has no status
subresource upstream, so status goes with a plain update (and through /status if one exists).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from submariner.broker.api import labels as L
from submariner.broker.api.names import sanitize_name
from submariner.broker.api.submariner import GATEWAYS, Connection, EndpointSpec
from submariner.broker.kube import AlreadyExists, ClientFactory, Conflict, KubeError, NotFound, Obj, deep_copy
from submariner.dataplane.healthcheck import CONNECTED, ERROR, UNKNOWN, HealthChecker

log = logging.getLogger(__name__)

VERSION = "0.1.0"
STALE_AFTER = 15.0


def merge_health(connections: list[Connection], health: HealthChecker | None) -> list[Connection]:
    """Driver status combined with the pinger's: pinger error wins over `connected`, pinger success
    repairs a driver `error`, an unknown pinger keeps the driver's word; RTT figures are copied."""
    out: list[Connection] = []
    for conn in connections:
        conn = dict(conn)  # type: ignore[assignment]
        pinger = health.latency_info(conn["endpoint"]) if health is not None else None
        if pinger is not None:
            if pinger.status == ERROR and conn["status"] == "connected":
                conn["status"], conn["statusMessage"] = "error", pinger.message
            elif pinger.status == CONNECTED and conn["status"] == "error":
                conn["status"], conn["statusMessage"] = "connected", ""
            elif pinger.status == UNKNOWN:
                pass
            latency = pinger.stats.latency()
            if latency is not None:
                conn["latencyRTT"] = latency
        out.append(conn)
    return out


class GatewayStatusSyncer:
    """Writes this node's Gateway object; deletes stale ones while active; deletes its own on exit."""

    def __init__(
        self,
        cluster: ClientFactory,
        namespace: str,
        hostname: str,
        *,
        local_endpoint: Callable[[], EndpointSpec],
        ha_status: Callable[[], str],
        connections: Callable[[], list[Connection]],
        health: HealthChecker | None = None,
        interval: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = cluster.resource(GATEWAYS)
        self.namespace = namespace
        self.name = sanitize_name(hostname)
        self.local_endpoint = local_endpoint
        self.ha_status = ha_status
        self.connections = connections
        self.health = health
        self.interval = interval
        self.wall_clock = wall_clock
        self.status_failure = ""
        self.on_written: Callable[[Obj], None] | None = None
        """Called with the Gateway as stored after each sync (Globalnet's health IP annotation lives there)."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def desired_status(self) -> dict[str, Any]:
        failure = self.status_failure
        try:
            conns = merge_health(self.connections(), self.health)
        except Exception as e:
            conns = []
            failure = failure or f"Error retrieving driver connections: {e}"
        return {"version": VERSION, "haStatus": self.ha_status(), "localEndpoint": dict(self.local_endpoint()),
                "statusFailure": failure, "connections": conns}

    def sync(self) -> Obj:
        """One write of Gateway `<hostname>` (annotations of others preserved; update-timestamp refreshed).

        Globalnet annotates the same object: a write that lost that race (409) is redone on a fresh read."""
        for attempt in range(3):
            try:
                return self._sync_once()
            except (Conflict, AlreadyExists):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _sync_once(self) -> Obj:
        with self._lock:
            status = self.desired_status()
            stamp = str(int(self.wall_clock()))
            try:
                current = self.client.get(self.namespace, self.name)
            except NotFound:
                current = None
            if current is None:
                obj: Obj = {"apiVersion": "submariner.io/v1", "kind": "Gateway",
                            "metadata": {"name": self.name, "namespace": self.namespace,
                                         "annotations": {L.UPDATE_TIMESTAMP: stamp}},
                            "status": status}
                written = self.client.create(obj)
            else:
                obj = deep_copy(current)
                obj.setdefault("metadata", {}).setdefault("annotations", {})[L.UPDATE_TIMESTAMP] = stamp
                obj["status"] = status
                written = self.client.update(obj)
            if written.get("status") != status:  # a CRD installed with a status subresource ignores it above
                written = self.client.update_status({**written, "status": status})
            if status["haStatus"] == "active":
                self._delete_stale()
        if self.on_written is not None:
            self.on_written(written)
        return written

    def _delete_stale(self) -> None:
        now = self.wall_clock()
        try:
            gateways, _ = self.client.list(self.namespace)
        except KubeError as e:
            log.debug("listing gateways failed: %s", e)
            return
        for gw in gateways:
            meta = gw.get("metadata") or {}
            if meta.get("name") == self.name:
                continue
            raw = (meta.get("annotations") or {}).get(L.UPDATE_TIMESTAMP)
            try:
                stale = now - float(str(raw)) >= STALE_AFTER
            except (TypeError, ValueError):
                stale = True
            if stale:
                log.info("deleting stale Gateway %s (update-timestamp %r)", meta.get("name"), raw)
                try:
                    self.client.delete(self.namespace, str(meta.get("name")))
                except NotFound:
                    pass
                except KubeError as e:
                    log.warning("deleting stale Gateway %s failed: %s", meta.get("name"), e)

    def delete_own(self) -> None:
        with contextlib.suppress(NotFound):
            self.client.delete(self.namespace, self.name)

    def sync_soon(self) -> None:
        """An HA transition or cable change: publish now instead of at the next 5 s tick."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except KubeError as e:
                log.warning("writing Gateway %s/%s failed: %s", self.namespace, self.name, e)
            except Exception:
                log.exception("gateway status sync failed")
            self._wake.wait(self.interval)
            self._wake.clear()
