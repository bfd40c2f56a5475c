"""The gateway process (dataplane.md §2.11): election, and what the active and passive roles run.

Every gateway pod writes its Gateway CR and campaigns for the Lease. The winner starts the cable engine
(driver Init), labels its pod active, publishes Cluster + Endpoint, and runs the tunnel controller, NAT
discovery and the health checker; losing undoes that in reverse (kernel state stays for route-agent
clean-up). A clean stop releases the Lease so a passive gateway takes over at once (our deviation).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
from collections.abc import Callable
from typing import Any

from submariner.broker.api import labels as L
from submariner.broker.api.meta import APIResource
from submariner.broker.api.submariner import Connection, EndpointSpec
from submariner.broker.kube import LEASES, SERVICES, ClientFactory, Informer, KubeError, NotFound
from submariner.dataplane.healthcheck import HealthChecker
from submariner.dataplane.netlink import Netlink
from submariner.gateway.cable.driver import CableDriver, DriverContext, new_driver, remove_other_drivers_leftovers
from submariner.gateway.config import LEASE_NAME, GatewayConfig
from submariner.gateway.datastore import DatastoreSyncer, cluster_object
from submariner.gateway.election import LeaderElector
from submariner.gateway.endpoint import (
    EndpointError,
    backend_config_from_node,
    build_local_endpoint,
    cni_ip,
    interface_mtu,
    resolve_public_ip,
)
from submariner.gateway.engine import CableEngine
from submariner.gateway.gatewaystatus import GatewayStatusSyncer
from submariner.gateway.natdiscovery import NATDiscovery
from submariner.gateway.tunnel import TunnelController

log = logging.getLogger(__name__)

NODES = APIResource("", "v1", "Node", "nodes", "node", False)
PODS = APIResource("", "v1", "Pod", "pods", "pod", True)
PUBLIC_IP_INTERVAL = 60.0


class FatalError(RuntimeError):
    """The gateway cannot work (driver Init failed, no private IP, ...): reported in statusFailure, then exit."""


class Gateway:
    def __init__(
        self,
        cfg: GatewayConfig,
        local: ClientFactory,
        broker: ClientFactory | None,
        netlink: Netlink,
        *,
        broker_host: str = "",
        driver_extra: dict[str, Any] | None = None,
        health_enabled: bool | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.local = local
        self.broker = broker
        self.nl = netlink
        self.broker_host = broker_host
        self.driver_extra = dict(driver_extra or {})
        self.health_enabled = cfg.health.enabled if health_enabled is None else health_enabled
        self.on_fatal = on_fatal
        self.spec: EndpointSpec = self._build_endpoint()
        self.driver: CableDriver | None = None
        self.engine: CableEngine | None = None
        self.discovery: NATDiscovery | None = None
        self.health: HealthChecker | None = None
        self.tunnels: TunnelController | None = None
        self.datastore: DatastoreSyncer | None = None
        self._lease_watch: Informer | None = None
        self._role_lock = threading.Lock()
        self._leading = threading.Event()
        self._watcher: threading.Thread | None = None
        self.public_ip_interval = PUBLIC_IP_INTERVAL
        self._stop_watch = threading.Event()
        self._term = 0
        self.status = GatewayStatusSyncer(
            local, cfg.namespace, cfg.hostname, local_endpoint=lambda: self.spec,
            ha_status=self._ha_status, connections=self._connections, health=None,
            interval=cfg.status_interval)
        self.status.on_written = self._gateway_written
        lead = cfg.leadership
        self.elector = LeaderElector(
            local.resource(LEASES), cfg.namespace, LEASE_NAME, f"{cfg.hostname}-submariner-gateway",
            lease_duration=lead.lease_duration, renew_deadline=lead.renew_deadline, retry_period=lead.retry_period,
            on_started_leading=self._start_activation, on_stopped_leading=self._stopped_leading)

    # ------------------------------------------------------------------------------------- building blocks

    def _node(self) -> dict[str, Any] | None:
        try:
            return self.local.resource(NODES).get("", self.cfg.node_name)
        except KubeError as e:
            log.warning("reading Node %s failed (%s); using defaults for its gateway settings", self.cfg.node_name, e)
            return None

    def _lb_lookup(self, name: str) -> str:
        svc = self.local.resource(SERVICES).get(self.cfg.namespace, name)
        for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            if ing.get("ip") or ing.get("hostname"):
                return str(ing.get("ip") or ing.get("hostname"))
        return ""

    def _build_endpoint(self) -> EndpointSpec:
        return build_local_endpoint(self.cfg, self.nl, node=self._node(), broker_host=self.broker_host,
                                    lb=self._lb_lookup,
                                    health_check_ip=None if self.health_enabled or self.cfg.global_cidrs else "")

    def new_driver(self) -> CableDriver:
        ctx = DriverContext(
            local=self.spec, cluster_cidrs=self.cfg.cluster_cidrs,
            cni_ip=cni_ip(self.nl, self.cfg.cluster_cidrs), mtu=interface_mtu(self.nl, self.spec["private_ip"]),
            psk=self.cfg.ipsec_psk, nat_enabled=self.cfg.nat_enabled, force_encaps=self.cfg.ipsec_force_encaps,
            extra={"netlink": self.nl, "ipsec_debug": self.cfg.ipsec_debug,
                   "on_fatal": self._driver_fatal, **self.driver_extra})
        return new_driver(self.cfg.cable_driver, ctx)

    @property
    def active(self) -> bool:
        """Leading with everything started (engine, datastore sync, tunnel controller, health checker)."""
        return self._leading.is_set()

    def _driver_fatal(self, msg: str) -> None:
        log.error("cable driver failed: %s", msg)
        self.status.status_failure = msg
        self.status.sync_soon()
        if self.on_fatal is not None:
            self.on_fatal(msg)

    def _ha_status(self) -> str:
        engine = self.engine
        return engine.ha_status() if engine is not None else "passive"

    def _connections(self) -> list[Connection]:
        engine = self.engine
        return engine.list_connections() if engine is not None else []

    def _label_pod(self, status: str) -> None:
        if not self.cfg.pod_name:
            return
        patch = {"metadata": {"labels": {L.GATEWAY_POD_STATUS: status, L.GATEWAY_POD_NODE: self.cfg.node_name}}}
        try:
            self.local.resource(PODS).patch(self.cfg.namespace, self.cfg.pod_name, patch)
        except KubeError as e:
            log.warning("labelling pod %s/%s %s failed: %s", self.cfg.namespace, self.cfg.pod_name, status, e)

    # ------------------------------------------------------------------------------------- roles

    def _start_activation(self) -> None:
        """Activation runs beside the election loop (client-go starts OnStartedLeading in a goroutine): a slow
        start-up must not stop the Lease renewals, or a second gateway would take over meanwhile."""
        threading.Thread(target=self._started_leading, name="become-active", daemon=True).start()

    def _started_leading(self) -> None:
        with self._role_lock:
            if not self.elector.leading:
                return  # lost again before we got to start: stay passive
            try:
                self._become_active()
            except Exception as e:
                msg = f"starting the gateway engine failed: {e}"
                log.exception("%s", msg)
                self.status.status_failure = msg
                self._become_passive()
                self.status.sync_soon()
                if self.on_fatal is not None:
                    self.on_fatal(msg)

    def _become_active(self) -> None:
        if self.nl.get_sysctl("net.ipv4.conf.all.send_redirects") not in (None, "0"):
            self.nl.set_sysctl("net.ipv4.conf.all.send_redirects", "0")  # the node's netns (hostNetwork pod)
        removed = remove_other_drivers_leftovers(self.cfg.cable_driver, self.nl)
        if removed:
            log.info("removed kernel state left by the %s cable driver(s)", ", ".join(removed))
        driver = self.new_driver()  # drivers may add backend_config keys (wireguard publicKey) to self.spec
        self.driver = driver
        engine = CableEngine(self.spec, driver)
        engine.on_change = self.status.sync_soon
        discovery = NATDiscovery(self.spec, engine.on_ready, port=int(self.spec["backend_config"].get(
            "natt-discovery-port", self.cfg.natt_discovery_port) or 0))
        engine.discovery = discovery
        engine.start()
        self.engine = engine
        discovery.start()
        self.discovery = discovery
        self._label_pod("active")
        self.status.sync_soon()
        if self.broker is not None:
            cluster = cluster_object(self.cfg.cluster_id, self.cfg.namespace, cluster_cidrs=self.cfg.cluster_cidrs,
                                     service_cidrs=self.cfg.service_cidrs, global_cidrs=self.cfg.global_cidrs)
            self.datastore = DatastoreSyncer(
                self.local, self.broker, namespace=self.cfg.namespace, broker_namespace=self.cfg.broker_namespace,
                cluster_id=self.cfg.cluster_id, cluster=cluster, endpoint=self.spec)
            self.datastore.start()
        if self.health_enabled:
            # a verdict change is published at once, not at the next status tick (dead-cluster detection)
            self.health = HealthChecker(self.cfg.cluster_id, interval=self.cfg.health.interval,
                                        max_loss=self.cfg.health.max_packet_loss, on_change=self.status.sync_soon)
            self.status.health = self.health
        self.tunnels = TunnelController(self.local, self.cfg.namespace, engine, self.health)
        self.tunnels.start()
        self._leading.set()
        self._term += 1
        self._watcher = threading.Thread(target=self._watch_public_ip, args=(self._term,), name="public-ip-watcher",
                                         daemon=True)
        self._watcher.start()
        log.info("gateway active node=%s cable=%s driver=%s", self.cfg.node_name, self.spec["cable_name"],
                 self.cfg.cable_driver)

    def _stopped_leading(self) -> None:
        with self._role_lock:
            self._become_passive()
            self.status.sync_soon()

    def _become_passive(self) -> None:
        self._leading.clear()
        for stop in (self.tunnels, self.health, self.datastore, self.discovery):
            if stop is not None:
                try:
                    stop.stop()
                except Exception:
                    log.exception("stopping %s failed", type(stop).__name__)
        self.tunnels = self.health = self.datastore = self.discovery = None
        self.status.health = None
        if self.engine is not None:
            self.engine.stop()
        close = getattr(self.driver, "close", None)
        if callable(close):
            close()
        self.engine = None
        self._label_pod("passive")
        log.info("gateway passive node=%s", self.cfg.node_name)

    def _republish(self, why: str) -> None:
        log.info("local Endpoint changed (%s): republishing", why)
        if self.datastore is not None:
            self.datastore.update_endpoint(self.spec)
        self.status.sync_soon()

    def check_public_ip(self) -> bool:
        """The leader re-resolves the public IP (node annotation, else SUBMARINER_PUBLICIP); True if it moved."""
        node = self._node()
        try:
            public_spec = backend_config_from_node(node, self.cfg.ipsec_natt_port, self.cfg.natt_discovery_port).get(
                "public-ip") or self.cfg.public_ip
            if not public_spec:
                return False
            ip = resolve_public_ip(public_spec, air_gapped=self.cfg.air_gapped, lb=self._lb_lookup)
        except (EndpointError, KubeError) as e:
            log.warning("re-resolving the public IP failed: %s", e)
            return False
        if ip == self.spec.get("public_ip"):
            return False
        self.spec["public_ip"] = ip
        self._republish(f"public IP {ip}")
        return True

    def _watch_public_ip(self, term: int) -> None:
        """Every 60 s while this leadership term lasts (a later term runs its own watcher)."""
        while not self._stop_watch.wait(self.public_ip_interval):
            if not self._leading.is_set() or term != self._term:
                return
            self.check_public_ip()

    def _gateway_written(self, gw: dict[str, Any]) -> None:
        """Globalnet: the gateway's global IP (annotation set by Globalnet) becomes the Endpoint's healthCheckIP."""
        if not self.cfg.global_cidrs:
            return
        gip = ((gw.get("metadata") or {}).get("annotations") or {}).get(L.GLOBAL_IP, "")
        try:
            inside = any(ipaddress.IPv4Address(gip) in ipaddress.IPv4Network(c) for c in self.cfg.global_cidrs)
        except ValueError:
            return
        if inside and self.spec.get("healthCheckIP") != gip:
            self.spec["healthCheckIP"] = gip
            self._republish(f"health check IP {gip}")

    # ------------------------------------------------------------------------------------- life cycle

    def start(self) -> None:
        self._label_pod("passive")
        self.status.start()
        self._lease_watch = Informer(self.local.resource(LEASES), namespace=self.cfg.namespace,
                                     field_selector=f"metadata.name={LEASE_NAME}", name="gateway-lease",
                                     on_add=self.elector.observe,
                                     on_update=lambda old, new: self.elector.observe(new),
                                     on_delete=lambda obj: self.elector.poke())
        self._lease_watch.start()
        self.elector.start()

    def stop(self) -> None:
        """SIGTERM: step down, release the Lease (deviation), delete our Gateway object."""
        self._stop_watch.set()
        self.elector.stop(release=self.cfg.leadership.release_on_exit)
        if self._lease_watch is not None:
            self._lease_watch.stop()
        self.status.stop()
        try:
            self.status.delete_own()
        except KubeError as e:
            log.warning("deleting Gateway %s failed: %s", self.status.name, e)

    def uninstall(self) -> None:
        """SUBMARINER_UNINSTALL: remove our Gateway, the driver's kernel state, our Cluster/Endpoint."""
        with contextlib.suppress(NotFound):
            self.status.delete_own()
        driver = self.driver or self.new_driver()
        driver.cleanup()
        if self.broker is not None:
            cluster = cluster_object(self.cfg.cluster_id, self.cfg.namespace, cluster_cidrs=self.cfg.cluster_cidrs,
                                     service_cidrs=self.cfg.service_cidrs, global_cidrs=self.cfg.global_cidrs)
            DatastoreSyncer(self.local, self.broker, namespace=self.cfg.namespace,
                            broker_namespace=self.cfg.broker_namespace, cluster_id=self.cfg.cluster_id,
                            cluster=cluster, endpoint=self.spec).withdraw()
