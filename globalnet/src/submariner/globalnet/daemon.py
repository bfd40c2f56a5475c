"""The Globalnet process on one node (dataplane.md §4.2, §4.7).

Every pod watches Endpoints: remote Endpoints give the MARK rules, the local Endpoint says whether this node
is the active gateway. On the gateway it campaigns for the Lease; while leading an `Engine` runs the
controllers. Leaving the gateway role (or shutting down) stops the engine, flushes the Globalnet chains and
releases the lease; losing the lease while still gateway stops the engine *without* flushing (the rules
keep traffic flowing until the next leader takes over) and campaigns again.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
from collections.abc import Callable

from submariner.broker.api import labels as L
from submariner.broker.api.submariner import (
    CLUSTER_GLOBAL_EGRESS_IPS,
    ENDPOINTS,
    GLOBAL_EGRESS_IPS,
    GLOBAL_INGRESS_IPS,
)
from submariner.broker.kube import LEASES, SERVICES, ClientFactory, Informer, KubeError, NotFound, Obj
from submariner.dataplane.packetfilter import PacketFilter, Ruleset
from submariner.dataplane.packetfilter.ipset import IPSets
from submariner.globalnet import rules
from submariner.globalnet.config import Config
from submariner.globalnet.engine import Engine
from submariner.globalnet.leader import LeaderElector
from submariner.globalnet.metrics import Metrics
from submariner.globalnet.names import IPSET_PREFIX, LEASE_NAME, lease_identity

log = logging.getLogger(__name__)

MTU_SYSCTLS = (("net.ipv4.tcp_mtu_probing", "2"), ("net.ipv4.tcp_base_mss", "1024"))


def remote_subnets(endpoints: list[Obj], cluster_id: str) -> tuple[str, ...]:
    """Subnets of the newest Endpoint of every other cluster (older ones are stale gateways)."""
    newest: dict[str, Obj] = {}
    for ep in endpoints:
        cid = str((ep.get("spec") or {}).get("cluster_id") or "")
        if not cid or cid == cluster_id:
            continue
        stamp = str((ep.get("metadata") or {}).get("creationTimestamp") or "")
        old = newest.get(cid)
        if old is None or stamp > str((old.get("metadata") or {}).get("creationTimestamp") or ""):
            newest[cid] = ep
    subnets: set[str] = set()
    for ep in newest.values():
        for s in (ep.get("spec") or {}).get("subnets") or ():
            with contextlib.suppress(ValueError):
                subnets.add(str(ipaddress.IPv4Network(str(s), strict=False)))
    return tuple(sorted(subnets))


def is_local_gateway(endpoints: list[Obj], cluster_id: str, node_name: str) -> bool:
    return any((ep.get("spec") or {}).get("cluster_id") == cluster_id
               and (ep.get("spec") or {}).get("hostname") == node_name for ep in endpoints)


class Globalnet:
    def __init__(self, config: Config, cluster: ClientFactory, pf: PacketFilter, ipsets: IPSets, *,
                 cni_ip: str | None = None, set_sysctl: Callable[[str, str], None] | None = None,
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.cluster = cluster
        self.pf = pf
        self.ipsets = ipsets
        self.cni_ip = cni_ip
        self._set_sysctl = set_sysctl
        self.metrics = metrics
        self._pf_lock = threading.Lock()
        self._lock = threading.RLock()
        self._engine_lock = threading.Lock()
        self.engine: Engine | None = None
        self.gateway = False
        self.remote: tuple[str, ...] = ()
        lease, renew, retry = config.lease_timings
        self.elector = LeaderElector(cluster.resource(LEASES), config.namespace, LEASE_NAME,
                                     lease_identity(config.node_name), on_started_leading=self._lead,
                                     on_stopped_leading=self._unlead, lease_duration=lease, renew_deadline=renew,
                                     retry_period=retry)
        self._endpoints = Informer(cluster.resource(ENDPOINTS), namespace=config.namespace,
                                   name="globalnet-endpoints", on_add=self._changed,
                                   on_update=lambda o, n: self._changed(n), on_delete=self._changed)

    # ------------------------------------------------------------------ packet filter (shared with the engine)

    def apply(self, ruleset: Ruleset) -> bool:
        with self._pf_lock:
            return self.pf.apply(ruleset)

    def _mark_only(self) -> None:
        self.apply(rules.mark_only_ruleset(self.remote if self.gateway else (), self.config.global_cidrs))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._mark_only()  # every pod has the MARK chain
        self._endpoints.start()

    def stop(self) -> None:
        self._endpoints.stop()
        with self._lock:
            was_gateway, self.gateway = self.gateway, False
        self.elector.stop()
        if was_gateway:
            self._flush()

    # ------------------------------------------------------------------ gateway role

    def _changed(self, _obj: Obj | None = None) -> None:
        endpoints = self._endpoints.list()
        gateway = is_local_gateway(endpoints, self.config.cluster_id, self.config.node_name)
        remote = remote_subnets(endpoints, self.config.cluster_id)
        with self._lock:
            became, left = gateway and not self.gateway, self.gateway and not gateway
            self.gateway = gateway
            remote_changed = remote != self.remote
            self.remote = remote
        if became:
            log.info("globalnet transition to gateway node=%s", self.config.node_name)
            self._mtu_sysctls()
            self._mark_only()
            self.elector.start()
        elif left:
            log.info("globalnet transition to non-gateway node=%s", self.config.node_name)
            self.elector.stop()
            self._flush()
        if remote_changed:
            with self._engine_lock:
                engine = self.engine
            if engine is not None:
                engine.set_remote_subnets(remote)
            else:
                self._mark_only()

    def _mtu_sysctls(self) -> None:
        if self._set_sysctl is None:
            return
        for key, value in MTU_SYSCTLS:
            try:
                self._set_sysctl(key, value)
            except Exception as e:  # a missing sysctl must not keep the gateway from working
                log.warning("globalnet cannot set sysctl key=%s error=%s", key, e)

    def _flush(self) -> None:
        try:
            self.apply(rules.flushed_ruleset(self.remote if self.gateway else (), self.config.global_cidrs))
        except Exception as e:
            log.error("globalnet flush failed error=%s", e)

    def _lead(self) -> None:
        engine = Engine(self.config, self.cluster, self.ipsets, self.apply, remote_subnets=self.remote,
                        cni_ip=self.cni_ip, metrics=self.metrics)
        if self.metrics is not None:
            self.metrics.leader.set(1)
        with self._engine_lock:
            self.engine = engine
        engine.start()

    def _unlead(self) -> None:
        with self._engine_lock:
            engine, self.engine = self.engine, None
        if engine is not None:
            engine.stop()
        if self.metrics is not None:
            self.metrics.leader.set(0)


def uninstall(config: Config, cluster: ClientFactory, pf: PacketFilter, ipsets: IPSets) -> None:
    """§4.7: chains and hooks, `SM-GN-*` ipsets, every Globalnet CR and internal Service (finalizers first)."""
    pf.delete(rules.uninstall_ruleset())
    for name in ipsets.names(IPSET_PREFIX):
        ipsets.destroy(name)
    for res in (CLUSTER_GLOBAL_EGRESS_IPS, GLOBAL_EGRESS_IPS, GLOBAL_INGRESS_IPS):
        client = cluster.resource(res)
        items, _ = client.list()
        for obj in items:
            meta = obj.get("metadata") or {}
            with contextlib.suppress(NotFound):
                client.delete(str(meta.get("namespace") or ""), str(meta.get("name")))
    services = cluster.resource(SERVICES)
    items, _ = services.list(label_selector=L.EXPORTED_SERVICE_REF)
    for svc in items:
        meta = svc.get("metadata") or {}
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        try:
            if meta.get("finalizers"):
                services.patch(ns, name, {"metadata": {"finalizers": None}})
            services.delete(ns, name)
        except NotFound:
            pass
        except KubeError as e:
            log.warning("globalnet uninstall cannot delete internal Service %s/%s error=%r", ns, name, e.message)
