"""The cable engine (dataplane.md §2.4): which remote Endpoints get a cable, and replacing stale ones.

Endpoints arrive from the tunnel controller; each goes through NAT discovery first, and only its "ready"
verdict connects the driver. Per remote cluster at most one cable is installed: a newer Endpoint of the same
cluster replaces the old cable, an older one is ignored, an identical one is a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

from submariner.broker.api.submariner import HA_ACTIVE, HA_PASSIVE, Connection, EndpointSpec
from submariner.gateway.cable.driver import CableDriver, NATEndpointInfo

log = logging.getLogger(__name__)


class Discovery(Protocol):
    def add_endpoint(self, endpoint: dict[str, Any]) -> None: ...

    def remove_endpoint(self, cable_name: str) -> None: ...


def _timestamp(ep: dict[str, Any]) -> str:
    return str((ep.get("metadata") or {}).get("creationTimestamp") or "")


def specs_equal(a: EndpointSpec, b: EndpointSpec) -> bool:
    """The exclusive-endpoint check of §1: same identity and settings (backend_config ignored behind LBs)."""
    keys = ("cluster_id", "cable_name", "hostname", "backend")
    if any(a.get(k) != b.get(k) for k in keys):
        return False
    ca, cb = a.get("backend_config") or {}, b.get("backend_config") or {}
    if ca.get("using-loadbalancer") == "true" and cb.get("using-loadbalancer") == "true":
        return True
    return ca == cb


TUNNEL_NEUTRAL = ("healthCheckIP",)
"""Endpoint fields no cable driver builds anything from: a change there keeps the cable."""


def tunnel_view(spec: EndpointSpec) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in TUNNEL_NEUTRAL}


class _Installed:
    def __init__(self, info: NATEndpointInfo) -> None:
        self.info = info
        self.timestamp = _timestamp(info.endpoint)


class CableEngine:
    """Drives one cable driver from Endpoint events and NAT-discovery verdicts; thread-safe."""

    def __init__(self, local: EndpointSpec, driver: CableDriver, discovery: Discovery | None = None) -> None:
        self.local = local
        self.driver = driver
        self.discovery = discovery
        self._lock = threading.RLock()
        self._running = False
        self._pending: dict[str, int] = defaultdict(int)
        self._installed: dict[str, _Installed] = {}  # cable name -> installed cable
        self.errors: list[str] = []
        self.on_change: Callable[[], None] | None = None

    def start(self) -> None:
        """StartEngine: the driver's Init failing is a start failure (the caller treats it as fatal)."""
        with self._lock:
            self.driver.init()
            self._running = True

    def stop(self) -> None:
        """Become passive; kernel state stays for the route agent's clean-up (§2.11)."""
        with self._lock:
            self._running = False
            self._pending.clear()
            self._installed.clear()

    @property
    def running(self) -> bool:
        return self._running

    def ha_status(self) -> str:
        return HA_ACTIVE if self._running else HA_PASSIVE

    def list_connections(self) -> list[Connection]:
        """The driver's connections, each showing the Endpoint as last seen (drivers keep the spec they were
        connected with; a refreshed healthCheckIP would otherwise not appear)."""
        with self._lock:
            if not self._running:
                return []
            conns = self.driver.get_connections()
            latest = {n: i.info.spec for n, i in self._installed.items()}
        out: list[Connection] = []
        for conn in conns:
            spec = latest.get(str((conn.get("endpoint") or {}).get("cable_name") or ""))
            out.append({**conn, "endpoint": dict(spec)} if spec is not None else conn)  # type: ignore[typeddict-item]
        return out

    def install_cable(self, endpoint: dict[str, Any]) -> None:
        spec: EndpointSpec = endpoint["spec"]
        if spec["cluster_id"] == self.local["cluster_id"] or specs_equal(spec, self.local):
            return
        with self._lock:
            self._pending[spec["cable_name"]] += 1
        if self.discovery is not None:
            self.discovery.add_endpoint(endpoint)
        else:
            self.on_ready(NATEndpointInfo(endpoint, spec["private_ip"], False))

    def remove_cable(self, endpoint: dict[str, Any]) -> None:
        spec: EndpointSpec = endpoint["spec"]
        name = spec["cable_name"]
        if self.discovery is not None:
            self.discovery.remove_endpoint(name)
        with self._lock:
            self._pending.pop(name, None)
            installed = self._installed.pop(name, None)
            if installed is None:
                return
            self.driver.disconnect_from_endpoint(installed.info.endpoint)
        log.info("cable removed cable=%s", name)
        self._changed()

    def on_ready(self, info: NATEndpointInfo) -> None:
        """NAT discovery's verdict: connect, replacing this cluster's previous cable if it is older.

        The same cable (timestamp, name, UseIP, UseNAT) with an identical spec is a no-op; one whose spec
        changed only where the tunnel does not depend on it (healthCheckIP) keeps the cable and records the new
        Endpoint; any other change — backend, backend_config, subnets, IPs — rebuilds it. A remote gateway
        re-joined with another driver updates its Endpoint in place (same name and creationTimestamp), so
        comparing only backend_config would keep showing (and tunnelling to) the old Endpoint."""
        name = info.cable_name
        with self._lock:
            if self._pending.get(name, 0) <= 0:
                # a late second verdict (private answer overriding public) for an installed cable still counts
                if name not in self._installed:
                    return
            else:
                self._pending[name] -= 1
            if not self._running:
                return
            new_ts = _timestamp(info.endpoint)
            replaced = False
            for other_name, other in list(self._installed.items()):
                if other.info.spec["cluster_id"] != info.spec["cluster_id"]:
                    continue
                if new_ts and other.timestamp and new_ts < other.timestamp:
                    log.info("ignoring older endpoint cable=%s (installed %s is newer)", name, other_name)
                    return
                same_cable = (new_ts == other.timestamp and other_name == name and other.info.use_ip == info.use_ip
                              and other.info.use_nat == info.use_nat)
                if same_cable and other.info.spec == info.spec:
                    return
                if same_cable and tunnel_view(other.info.spec) == tunnel_view(info.spec):
                    other.info = NATEndpointInfo(info.endpoint, other.info.use_ip, other.info.use_nat)
                    log.info("cable kept, endpoint refreshed cable=%s", name)
                    break
                log.info("replacing cable old=%s new=%s", other_name, name)
                try:
                    self.driver.disconnect_from_endpoint(other.info.endpoint)
                except Exception as e:
                    log.warning("disconnecting old cable %s failed: %s", other_name, e)
                del self._installed[other_name]
                replaced = True
            else:
                if not self._connect(info) and not replaced:
                    return
        self._changed()

    def _connect(self, info: NATEndpointInfo) -> bool:
        name = info.cable_name
        try:
            used = self.driver.connect_to_endpoint(info)
        except Exception as e:
            msg = f"connecting cable {name} to {info.use_ip} failed: {e}"
            log.error("%s", msg)
            self.errors.append(msg)
            return False  # not installed: the tunnel controller's resync installs it again (and so retries)
        self._installed[name] = _Installed(NATEndpointInfo(info.endpoint, used or info.use_ip, info.use_nat))
        log.info("cable installed cable=%s ip=%s nat=%s", name, used, info.use_nat)
        return True

    def installed(self) -> dict[str, NATEndpointInfo]:
        with self._lock:
            return {k: v.info for k, v in self._installed.items()}

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
