"""The RouteAgent `<node>` object (dataplane.md §3.6): this node's view of each remote Endpoint.

Non-gateway nodes ping each remote `healthCheckIP` (through vx-submariner and the gateway, so a reply proves
the whole path from this node) every HEALTHCHECKINTERVAL x 60 s with the gateway's loss threshold; the
gateway node reports `none` (the gateway's own checker covers it). The pinger is the one the gateway runs
(`submariner.dataplane.healthcheck`), so both report the same way; while a path is unconfirmed it repeats its
echo within the minute, and each verdict change is written at once (`on_change`), so a node does not stay
"connecting" for minutes after its first echo was lost to a cable still being built.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from submariner.broker.api.submariner import ROUTE_AGENTS
from submariner.broker.kube import ClientFactory, NotFound, Obj, create_or_update
from submariner.dataplane.healthcheck import CONNECTED, ERROR, HealthChecker, IcmpProber, Pinger, Prober
from submariner.routeagent.config import Settings
from submariner.routeagent.model import select_endpoints, spec_of

log = logging.getLogger(__name__)

VERSION = "0.1.0"
NOT_ENABLED = "Health check is not enabled"
ON_GATEWAY = "Health check is not performed on gateway nodes"
NO_IP = "Health checker IP is not configured"


def remote_status(pinger: Pinger | None, spec: Mapping[str, Any], *, enabled: bool, on_gateway: bool
                  ) -> dict[str, Any]:
    """One `remoteEndpoints[]` entry."""
    entry: dict[str, Any] = {"spec": dict(spec)}
    if not enabled:
        return {"status": "none", "statusMessage": NOT_ENABLED, **entry}
    if on_gateway:
        return {"status": "none", "statusMessage": ON_GATEWAY, **entry}
    if not spec.get("healthCheckIP"):
        return {"status": "none", "statusMessage": NO_IP, **entry}
    if pinger is None or pinger.status not in (CONNECTED, ERROR):
        return {"status": "connecting", "statusMessage": pinger.message if pinger else "", **entry}
    out = {"status": pinger.status, "statusMessage": pinger.message, **entry}
    latency = pinger.stats.latency()
    if pinger.status == CONNECTED and latency is not None:
        out["latencyRTT"] = dict(latency)
    return out


class StatusReporter:
    """Keeps the pingers in line with the remote Endpoints and writes the RouteAgent object."""

    def __init__(self, settings: Settings, kube: ClientFactory, *,
                 checker_factory: Callable[[], HealthChecker] | None = None,
                 prober_factory: Callable[[str], Prober] = IcmpProber) -> None:
        self.settings = settings
        self.prober_factory = prober_factory
        self.client = kube.resource(ROUTE_AGENTS)
        self.on_change: Callable[[], None] | None = None
        """Called from a pinger's thread when a verdict changed (the agent writes the RouteAgent then)."""
        self.checker = (checker_factory or self._default_checker)()
        self.on_gateway = False
        self.remotes: list[Mapping[str, Any]] = []
        self.failure = ""
        self._lock = threading.Lock()
        self._pinged: dict[str, Mapping[str, Any]] = {}

    def _default_checker(self) -> HealthChecker:
        return HealthChecker(self.settings.cluster_id, interval=self.settings.health_check_interval * 60,
                             max_loss=self.settings.health_check_max_loss, prober_factory=self.prober_factory,
                             on_change=self._verdict_changed)

    def _verdict_changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def observe(self, endpoints: Iterable[Mapping[str, Any]], failure: str = "") -> None:
        """After each reconcile: the current remotes, whether we are the gateway, and any reconcile error."""
        local, remotes = select_endpoints(endpoints, self.settings.cluster_id)
        on_gateway = local is not None and spec_of(local).get("hostname") == self.settings.node_name
        ping = self.settings.health_check_enabled and not on_gateway
        with self._lock:
            self.on_gateway, self.remotes, self.failure = on_gateway, remotes, failure
            wanted = {str(spec_of(ep).get("cable_name") or ""): spec_of(ep) for ep in remotes} if ping else {}
            for name, spec in list(self._pinged.items()):
                if name not in wanted:
                    self.checker.endpoint_removed(dict(spec))  # type: ignore[arg-type]
                    del self._pinged[name]
            for name, spec in wanted.items():
                self.checker.endpoint_updated(dict(spec))  # type: ignore[arg-type]
                self._pinged[name] = spec

    def render(self) -> Obj:
        with self._lock:
            remotes, on_gateway, failure = list(self.remotes), self.on_gateway, self.failure
        entries = []
        for ep in remotes:
            spec = spec_of(ep)
            pinger = self.checker.latency_info(dict(spec)) if not on_gateway else None  # type: ignore[arg-type]
            entries.append(remote_status(pinger, spec, enabled=self.settings.health_check_enabled,
                                         on_gateway=on_gateway))
        return {"apiVersion": "submariner.io/v1", "kind": "RouteAgent",
                "metadata": {"name": self.settings.node_name, "namespace": self.settings.namespace},
                "status": {"version": VERSION, "statusFailure": failure, "remoteEndpoints": entries}}

    def write(self) -> None:
        create_or_update(self.client, self.render())

    def close(self, delete: bool = True) -> None:
        """Stop the pingers and (on a clean stop) delete our RouteAgent object, as the reference does."""
        self.checker.stop()
        if delete:
            with contextlib.suppress(NotFound):
                self.client.delete(self.settings.namespace, self.settings.node_name)
