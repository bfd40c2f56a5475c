"""The leader's controllers for one term of leadership (dataplane.md §4.2).

Start: informers synced → every recorded IP re-reserved (so nothing is handed out twice after a restart or
failover) → the cluster-egress instance ensured → all objects queued → one worker reconciles batches and
applies the ruleset once per batch. Stop: informers and worker end; the pool dies with the engine (the next
term rebuilds it from object statuses).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from submariner.broker.api.multicluster import SERVICE_EXPORTS
from submariner.broker.api.submariner import CLUSTER_GLOBAL_EGRESS_IPS, GLOBAL_EGRESS_IPS
from submariner.broker.kube import ClientFactory, Conflict, KubeError, Obj
from submariner.dataplane.packetfilter import Ruleset
from submariner.dataplane.packetfilter.ipset import IPSets
from submariner.globalnet import rules
from submariner.globalnet.config import Config
from submariner.globalnet.context import (
    CGEIP,
    GATEWAY,
    GEIP,
    GIIP,
    INTERNAL,
    PODS,
    PROGRAM,
    SERVICE,
    Context,
    Key,
    Retry,
)
from submariner.globalnet.egress import ClusterEgress, NamespaceEgress
from submariner.globalnet.health import GatewayHealth
from submariner.globalnet.ingress import Ingress
from submariner.globalnet.ipam import IPPool
from submariner.globalnet.metrics import Metrics
from submariner.globalnet.names import CLUSTER_EGRESS_NAME, IPSET_PREFIX, egress_ipset_name

log = logging.getLogger(__name__)


def _pod_facts(pod: Obj) -> tuple[object, ...]:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    return (meta.get("labels"), status.get("podIP"), status.get("phase"), meta.get("deletionTimestamp"))


class Engine:
    """Controllers + worker; `apply` is the (locked) packet-filter apply the daemon shares with us."""

    def __init__(self, config: Config, cluster: ClientFactory, ipsets: IPSets, apply: Callable[[Ruleset], bool],
                 *, remote_subnets: tuple[str, ...] = (), cni_ip: str | None = None, batch_limit: int = 20_000,
                 metrics: Metrics | None = None) -> None:
        if not config.global_cidrs:
            raise ValueError("Globalnet needs a GlobalCIDR: set SUBMARINER_GLOBALCIDR or the Cluster CR's global_cidr")
        self.config = config
        self.pool = IPPool(config.global_cidrs[0])
        self.ctx = Context(config, cluster, self.pool, ipsets)
        self.ctx.state.remote_subnets = tuple(remote_subnets)
        self._apply = apply
        self.metrics = metrics
        self._batch_limit = batch_limit
        self.cluster_egress = ClusterEgress(self.ctx)
        self.egress = NamespaceEgress(self.ctx)
        self.ingress = Ingress(self.ctx)
        self.health = GatewayHealth(self.ctx, cni_ip)
        self.ctx.informer(PODS).add_handlers(on_add=self._pod_added, on_update=self._pod_updated,
                                             on_delete=self._pod_added)
        self._applied_version = -1
        self._remote_lock = threading.Lock()
        self._remote_pending: tuple[str, ...] | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.started = threading.Event()
        self.batches = 0
        self.applies = 0

    # ------------------------------------------------------------------ events

    def _pod_added(self, pod: Obj) -> None:
        ns = str((pod.get("metadata") or {}).get("namespace") or "")
        self.egress.pods_changed(ns)
        self.ingress.pods_changed(ns)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if _pod_facts(old) != _pod_facts(new):
            self._pod_added(new)

    def set_remote_subnets(self, subnets: tuple[str, ...]) -> None:
        """From the daemon's Endpoint watch (any thread): MARK rules follow the remote clusters."""
        with self._remote_lock:
            self._remote_pending = tuple(subnets)
        self.ctx.enqueue(PROGRAM, "", "remote-subnets")

    # ------------------------------------------------------------------ lifecycle

    def start(self, sync_timeout: float = 60.0) -> None:
        """Start informers and the worker; returns once the worker runs (IPs re-reserved)."""
        for inf in self.ctx.informers.values():
            inf.start()
        self._thread = threading.Thread(target=self._run, args=(sync_timeout,), name="globalnet-engine",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopped.set()
        self.ctx.queue.shutdown()
        for inf in self.ctx.informers.values():
            inf.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self, sync_timeout: float) -> None:
        deadline = time.monotonic() + sync_timeout
        optional = self.ctx.informer(SERVICE_EXPORTS)
        for inf in self.ctx.informers.values():
            while not inf.wait_for_sync(max(0.1, deadline - time.monotonic())):
                if self._stopped.is_set():
                    return
                if inf is optional:
                    # no ServiceExport CRD (no service discovery installed): egress still works; exports are
                    # picked up whenever the CRD appears. Every other cache must be complete before IPs are
                    # re-reserved, or an IP recorded in an unseen status could be handed out twice.
                    log.warning("globalnet ServiceExports not readable; continuing without them")
                    break
                log.warning("globalnet informer not synced informer=%s; still waiting", inf.name)
        self.cluster_egress.reserve()
        self.egress.reserve()
        self.ingress.reserve()
        self.health.reserve()
        log.info("globalnet reserved recorded IPs pool=%s allocated=%d", self.pool.cidr,
                 self.pool.size - self.pool.free_count)
        self._ensure_instance()
        for obj in self.ctx.objects(CLUSTER_GLOBAL_EGRESS_IPS):
            self.ctx.enqueue(CGEIP, "", str(obj["metadata"]["name"]))
        for obj in self.ctx.objects(GLOBAL_EGRESS_IPS):
            self.ctx.enqueue(GEIP, str(obj["metadata"]["namespace"]), str(obj["metadata"]["name"]))
        self.ingress.enqueue_all()
        self.ctx.enqueue(PROGRAM, "", "initial")  # chains exist even with nothing to NAT yet
        self.started.set()
        while not self._stopped.is_set():
            batch = self.ctx.queue.get_batch(self._batch_limit)
            if batch is None:
                return
            try:
                self._process(batch)
            except Exception:  # the worker must survive anything a batch throws
                log.exception("globalnet batch failed")

    def _ensure_instance(self) -> None:
        for attempt in range(5):
            try:
                self.cluster_egress.ensure_instance()
                return
            except KubeError as e:
                log.warning("globalnet cannot create %s error=%r attempt=%d", CLUSTER_EGRESS_NAME, e.message,
                            attempt + 1)
                if self._stopped.wait(1.0):
                    return

    # ------------------------------------------------------------------ the worker

    def _reconcile(self, key: Key) -> None:
        kind, ns, name = key
        if kind == CGEIP:
            self.cluster_egress.reconcile(ns, name)
        elif kind == GEIP:
            self.egress.reconcile(ns, name)
        elif kind == SERVICE:
            self.ingress.reconcile_service(ns, name)
        elif kind == GIIP:
            self.ingress.reconcile_giip(ns, name)
        elif kind == INTERNAL:
            self.ingress.reconcile_internal(ns, name)
        elif kind == GATEWAY:
            self.health.reconcile(ns, name)
        elif kind == PROGRAM:
            with self._remote_lock:
                pending, self._remote_pending = self._remote_pending, None
            if pending is not None and pending != self.ctx.state.remote_subnets:
                self.ctx.state.remote_subnets = pending
                self.ctx.changed()
            if name == "retry":
                self._applied_version = -1
            if name == "initial":
                self.ctx.later(key, self._destroy_stale_ipsets)

    def _destroy_stale_ipsets(self, ok: bool) -> None:
        """`SM-GN-*` sets no GlobalEgressIP maps to (deleted while no leader ran), once no rule uses them."""
        if not ok:
            raise Retry("rules not programmed yet")
        wanted = {egress_ipset_name(str(o["metadata"]["namespace"]), str(o["metadata"]["name"]))
                  for o in self.ctx.objects(GLOBAL_EGRESS_IPS)}
        for name in self.ctx.ipsets.names(IPSET_PREFIX):
            if name not in wanted:
                try:
                    self.ctx.ipsets.destroy(name)
                    log.info("globalnet destroyed stale ipset name=%s", name)
                except Exception as e:
                    log.warning("globalnet cannot destroy stale ipset name=%s error=%s", name, e)

    def _handle(self, key: Key, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Retry as e:
            delay = self.ctx.queue.retry(key)
            log.info("globalnet retry object=%s reason=%s in_s=%.2f", "/".join(key), e, delay)
        except Conflict as e:
            delay = self.ctx.queue.retry(key)
            log.info("globalnet conflict object=%s error=%r in_s=%.2f", "/".join(key), e.message, delay)
        except Exception as e:
            delay = self.ctx.queue.retry(key)
            log.warning("globalnet reconcile failed object=%s error=%r in_s=%.2f", "/".join(key), e, delay)
        else:
            self.ctx.queue.forget(key)

    def _process(self, batch: list[Key]) -> None:
        self.batches += 1
        try:
            for key in batch:
                self._handle(key, lambda k=key: self._reconcile(k))  # type: ignore[misc]
        finally:
            for key in batch:
                self.ctx.queue.done(key)
        ok = self._program()
        pending, self.ctx.after_apply = self.ctx.after_apply, []
        for key, fn in pending:
            self._handle(key, lambda f=fn: f(ok))  # type: ignore[misc]
        if self.metrics is not None:
            self.metrics.observe_pool(self.pool)

    def _program(self) -> bool:
        if self._applied_version == self.ctx.version:
            return True
        version = self.ctx.version
        try:
            self._apply(rules.ruleset(self.ctx.state, self.config.global_cidrs))
        except Exception as e:
            log.error("globalnet rules apply failed error=%s action=retry", e)
            self.ctx.queue.add_after((PROGRAM, "", "retry"), 1.0)
            return False
        self.applies += 1
        self._applied_version = version
        return True

    def idle(self) -> bool:
        """Started, nothing queued or in flight (tests wait for this)."""
        return self.started.is_set() and self.ctx.queue.idle()
