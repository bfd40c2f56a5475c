"""The Lighthouse agent: wires informers, the broker sync library and the per-service reconciler.

Data flow (lighthouse-agent.md §4, with the D-fixes):
  ServiceExport/Service/EndpointSlice/GlobalIngressIP events → per-service reconcile (`reconciler`) →
    per-cluster ServiceImport in L, constituent in the broker aggregate (`aggregation`), Lighthouse
    EndpointSlices in N (`endpointslices`), ServiceExport conditions (`conditions`, `conflicts`);
  Lighthouse EndpointSlices ⇄ broker: `BrokerSyncer` (local→broker stamped with our cluster ID,
    broker→local for everyone else's, orphan clean-up on start);
  broker aggregates → `N/S` in every cluster: a `ResourceSyncer` (`imports`);
  heartbeat Lease per cluster, expiry of vanished clusters (`heartbeat`); shared clusterset VIPs
  (`clustersetip`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from submariner.broker.api import labels as L
from submariner.broker.api.multicluster import SERVICE_EXPORTS, SERVICE_IMPORTS
from submariner.broker.api.submariner import GLOBAL_INGRESS_IPS
from submariner.broker.kube import (
    CONFIGMAPS,
    ENDPOINT_SLICES,
    LEASES,
    NAMESPACES,
    SERVICES,
    ClientFactory,
    Informer,
    KubeError,
    NotFound,
    Obj,
    key_of,
)
from submariner.broker.kube.workqueue import WorkQueue, run_workers
from submariner.broker.sync import (
    BrokerSyncer,
    BrokerSyncerConfig,
    CreateOrUpdateFederator,
    Direction,
    Op,
    ResourceConfig,
    ResourceSyncer,
    SyncerConfig,
    process_every_update,
)
from submariner.lighthouse.agent import imports
from submariner.lighthouse.agent.aggregation import Aggregates, clusters_of, members_of
from submariner.lighthouse.agent.cache import Index, TargetCache, same_content
from submariner.lighthouse.agent.clustersetip import SharedVipPool
from submariner.lighthouse.agent.config import AgentConfig
from submariner.lighthouse.agent.globalnet import GiipKey, GlobalIps
from submariner.lighthouse.agent.heartbeat import Heartbeat
from submariner.lighthouse.agent.naming import (
    ServiceKey,
    is_lighthouse_slice,
    labelled_identity,
    source_cluster_of,
)
from submariner.lighthouse.agent.reconciler import BACKOFF, ServiceReconciler, Sources, Writers

log = logging.getLogger(__name__)

LH_SLICES = f"{L.ENDPOINTSLICE_MANAGED_BY}={L.LIGHTHOUSE_MANAGED_BY}"
K8S_SLICES = f"{L.K8S_SERVICE_NAME},{L.ENDPOINTSLICE_MANAGED_BY}!={L.LIGHTHOUSE_MANAGED_BY}"


class Agent:
    def __init__(self, config: AgentConfig, local: ClientFactory, broker: ClientFactory) -> None:
        config.validate()
        self.config = config
        self.local = local
        self.broker = broker
        cid = config.cluster_id
        self.queue: WorkQueue[ServiceKey] = WorkQueue(config.retry_backoff)
        self._threads: list[threading.Thread] = []
        self._started = False
        self._broker_ready = threading.Event()
        self._stopped = threading.Event()

        # local caches
        self.exports = Informer(local.resource(SERVICE_EXPORTS), name="serviceexports",
                                on_add=self._export_event, on_update=self._export_updated,
                                on_delete=self._export_event)
        self.services = Informer(local.resource(SERVICES), name="services")
        self.k8s_slice_informer = Informer(local.resource(ENDPOINT_SLICES), label_selector=K8S_SLICES,
                                           name="k8s-endpointslices")
        self.local_import_informer = Informer(local.resource(SERVICE_IMPORTS), namespace=config.namespace,
                                              label_selector=L.SERVICE_NAME, name="per-cluster-serviceimports")
        self.all_imports_informer = Informer(local.resource(SERVICE_IMPORTS), name="serviceimports")
        self._import_cache = TargetCache(self.all_imports_informer)
        self.giip_informer: Informer | None = None
        if config.globalnet:
            self.giip_informer = Informer(local.resource(GLOBAL_INGRESS_IPS), name="globalingressips")

        # Lighthouse EndpointSlices ⇄ broker (the sync library)
        self.slice_sync = BrokerSyncer(BrokerSyncerConfig(
            local=local, broker=broker, broker_namespace=config.broker_namespace, local_cluster_id=cid,
            resources=[ResourceConfig(ENDPOINT_SLICES, label_selector=LH_SLICES,
                                      local_transform=self._push_unless_present,
                                      broker_transform=self._pull_unless_present)],
        ))
        self.local_slices = self.slice_sync.local_syncer(ENDPOINT_SLICES)
        self.broker_slices = self.slice_sync.broker_syncer(ENDPOINT_SLICES)
        self._broker_slice_cache = TargetCache(self.broker_slices.informer)
        self._local_slice_cache = TargetCache(self.local_slices.informer)

        # broker aggregates → N/S everywhere (the sync library, renaming transform)
        self._namespaces = Informer(local.resource(NAMESPACES), name="import-namespaces")
        self.import_sync = ResourceSyncer(SyncerConfig(
            name="serviceimports-broker-to-local",
            source=broker.resource(SERVICE_IMPORTS),
            source_namespace=config.broker_namespace,
            direction=Direction.NONE,
            federator=CreateOrUpdateFederator(local.resource(SERVICE_IMPORTS)),
            transform=self._import_unless_present,
            should_process=imports.is_aggregate,
            resources_equivalent=process_every_update,
            wait_for_cache_sync=False,
            namespace_informer=self._namespaces,
        ))
        vips = None
        if config.vip_pool_enabled:
            vips = SharedVipPool(broker.resource(CONFIGMAPS), config.broker_namespace, config.clusterset_ip_cidr)
        self.aggregates = Aggregates(broker.resource(SERVICE_IMPORTS), config.broker_namespace, cid, vips)
        self.aggregates.attach(lambda name: self.import_sync.informer.get(config.broker_namespace, name))

        # indexes (their handlers enqueue the affected service)
        self.k8s_slices = Index(self.k8s_slice_informer, _k8s_slice_key, self._enqueue_if_relevant)
        writers = Writers(exports=local.resource(SERVICE_EXPORTS), imports=local.resource(SERVICE_IMPORTS),
                          slices=local.resource(ENDPOINT_SLICES))
        self.local_imports = Index(self.local_import_informer, self._own_labelled, self._enqueue_if_relevant,
                                   echo=writers.import_echoes)
        self.own_slices = Index(self.local_slices.informer, self._own_local_slice, self._enqueue_if_relevant,
                                echo=writers.slice_echoes)
        self.global_ips: GlobalIps | None = None
        if self.giip_informer is not None:
            self.global_ips = GlobalIps(self.giip_informer, self._giip_changed)
        self.services.add_handlers(on_add=self._service_event, on_update=lambda o, n: self._service_event(n),
                                   on_delete=self._service_event)
        self.import_sync.informer.add_handlers(
            on_add=self._aggregate_event, on_update=lambda o, n: self._aggregate_event(n),
            on_delete=lambda o: self._aggregate_event(o, deleted=True))
        self.broker_slices.informer.add_handlers(
            on_add=self._broker_slice_event, on_update=lambda o, n: self._broker_slice_event(n),
            on_delete=self._broker_slice_event)

        self.heartbeat = Heartbeat(
            broker.resource(LEASES), config.broker_namespace, cid, config.heartbeat_ttl,
            config.effective_heartbeat_interval, on_down=self._broker_down, on_up=self._broker_up,
            on_republish=self.republish, prune=self.prune_cluster)
        self._broker_error: str | None = None

        self.reconciler = ServiceReconciler(config, Sources(
            exports=self.exports, services=self.services, k8s_slices=self.k8s_slices,
            local_imports=self.local_imports, local_imports_informer=self.local_import_informer,
            own_slices=self.own_slices, broker_slices=self.broker_slices.informer, aggregates=self.aggregates,
            global_ips=self.global_ips, broker_synced=self._broker_ready.is_set,
            broker_problem=lambda: self._broker_error, requeue_push=self._requeue_push,
        ), writers)

    # ---------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 60.0) -> None:
        """Start everything; returns once local caches are listed (the broker may still be unreachable)."""
        cid = self.config.cluster_id
        log.info("lighthouse agent starting cluster=%s namespace=%s broker_namespace=%s globalnet=%s "
                 "heartbeat_ttl_s=%.0f", cid, self.config.namespace, self.config.broker_namespace,
                 self.config.globalnet, self.config.heartbeat_ttl)
        local_informers = [self.exports, self.services, self.k8s_slice_informer, self.local_import_informer,
                           self.all_imports_informer]
        if self.giip_informer is not None:
            local_informers.append(self.giip_informer)
        for inf in local_informers:
            inf.start()
        deadline = time.monotonic() + timeout
        for inf in local_informers:
            if not inf.wait_for_sync(max(0.1, deadline - time.monotonic())):
                raise TimeoutError(f"local cache {inf.name} not listed within {timeout}s")
        self._namespaces.start()
        self.slice_sync.start(max(0.1, deadline - time.monotonic()))
        self.import_sync.start()
        self.heartbeat.start()
        self._threads = run_workers(self.queue, self._handle, self.config.workers, "lighthouse-reconcile")
        for key in self._local_keys():
            self.queue.add(key)
        t = threading.Thread(target=self._after_broker_sync, name="lighthouse-broker-sync", daemon=True)
        t.start()
        self._threads.append(t)
        self._started = True
        log.info("lighthouse agent started cluster=%s exports=%d", cid, len(self.exports.list()))

    def stop(self) -> None:
        """Stop without cleaning up (data stays published; peers expire it only after the heartbeat TTL)."""
        self._stopped.set()
        self.queue.shutdown()
        self.heartbeat.stop()
        self.import_sync.stop()
        self.slice_sync.stop()
        self._namespaces.stop()
        for inf in (self.exports, self.services, self.k8s_slice_informer, self.local_import_informer,
                    self.all_imports_informer, self.giip_informer):
            if inf is not None:
                inf.stop()
        for t in self._threads:
            t.join(5)
        log.info("lighthouse agent stopped cluster=%s", self.config.cluster_id)

    def _after_broker_sync(self) -> None:
        """Once the broker is listed: reconcile what only the broker knows about (restart clean-up)."""
        while not self._stopped.is_set():
            if self.import_sync.informer.wait_for_sync(1.0) and self.broker_slices.informer.wait_for_sync(1.0):
                break
        if self._stopped.is_set():
            return
        self._broker_ready.set()
        cid = self.config.cluster_id
        mine = 0
        for key in self.aggregates.service_keys():
            agg = self.aggregates.cached(key)
            if cid in clusters_of(agg) or any(m.cluster == cid for m in members_of(agg)):
                self.queue.add(key)
                mine += 1
        for key in self._local_keys():
            self.queue.add(key)
        orphans = 0
        while not self._stopped.is_set():
            try:
                orphans = imports.delete_orphans(
                    self.local.resource(SERVICE_IMPORTS), lambda k: self.aggregates.name_of(k) is not None,
                    (self.config.namespace, self.config.broker_namespace))
                break
            except KubeError as e:
                log.warning("orphan service import scan failed error=%r action=retry", e.message)
                self._stopped.wait(2.0)
        log.info("broker caches synced cluster=%s aggregates=%d exported_here=%d orphan_imports_deleted=%d",
                 cid, len(self.aggregates.service_keys()), mine, orphans)

    def _handle(self, key: ServiceKey) -> None:
        try:
            outcome = self.reconciler.reconcile(key)
        except Exception:
            log.exception("reconcile failed service=%s action=retry", key)
            outcome = BACKOFF
        if outcome is None:
            self.queue.forget(key)
        elif outcome == BACKOFF:
            self.queue.retry(key)
        else:
            self.queue.add_after(key, outcome)

    def wait_idle(self, timeout: float = 30.0, settle: float = 0.3) -> bool:
        """Nothing queued or in flight anywhere for `settle` seconds (tests, bench)."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        while time.monotonic() < deadline:
            busy = (not self.queue.idle() or not self._broker_ready.is_set()
                    or not self.local_slices.idle() or not self.broker_slices.idle() or not self.import_sync.idle())
            if not busy:
                since = since or time.monotonic()
                if time.monotonic() - since >= settle:
                    return True
            else:
                since = None
            time.sleep(0.02)
        return False

    # ---------------------------------------------------------------- keys and events

    def _local_keys(self) -> set[ServiceKey]:
        keys = {ServiceKey(*key_of(o)) for o in self.exports.list()}
        keys.update(self.local_imports.keys())
        keys.update(self.own_slices.keys())
        return keys

    def _relevant(self, key: ServiceKey) -> bool:
        return (self.exports.get(key.namespace, key.name) is not None or bool(self.local_imports.get(key))
                or bool(self.own_slices.get(key)))

    def _enqueue_if_relevant(self, key: ServiceKey) -> None:
        if self._relevant(key):
            self.queue.add(key)

    def _export_event(self, obj: Obj) -> None:
        self.queue.add(ServiceKey(*key_of(obj)))

    def _export_updated(self, old: Obj, new: Obj) -> None:
        """Our own status writes come back as updates; only metadata changes (annotations, deletion) matter."""
        om, nm = old.get("metadata") or {}, new.get("metadata") or {}
        if any(om.get(k) != nm.get(k) for k in ("annotations", "labels", "deletionTimestamp", "generation")):
            self.queue.add(ServiceKey(*key_of(new)))

    def _service_event(self, obj: Obj) -> None:
        self._enqueue_if_relevant(ServiceKey(*key_of(obj)))

    def _aggregate_event(self, obj: Obj, deleted: bool = False) -> None:
        key = self.aggregates.observe(obj, deleted=deleted)
        if key is None or (not deleted and self.aggregates.echoes.is_echo(obj)):
            return
        cid = self.config.cluster_id
        if self._relevant(key) or cid in clusters_of(obj) or any(m.cluster == cid for m in members_of(obj)):
            self.queue.add(key)

    def _broker_slice_event(self, obj: Obj) -> None:
        if (obj.get("metadata") or {}).get("labels", {}).get(L.CLUSTER_ID) == self.config.cluster_id:
            key = labelled_identity(obj)
            if key is not None:
                self._enqueue_if_relevant(key)

    def _giip_changed(self, gkey: GiipKey) -> None:
        namespace, target, ref = gkey
        if target == "ClusterIPService":
            self._enqueue_if_relevant(ServiceKey(namespace, ref))
            return
        for se in self.exports.list():
            if key_of(se)[0] == namespace:
                self.queue.add(ServiceKey(*key_of(se)))

    def _own_labelled(self, obj: Obj) -> ServiceKey | None:
        return labelled_identity(obj) if source_cluster_of(obj) == self.config.cluster_id else None

    def _own_local_slice(self, obj: Obj) -> ServiceKey | None:
        """Slices this cluster made (imported copies carry the clusterID label, broker copies too)."""
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if L.CLUSTER_ID in labels or not is_lighthouse_slice(obj):
            return None
        return self._own_labelled(obj)

    # ---------------------------------------------------------------- syncer transforms: skip no-op writes

    def _push_unless_present(self, obj: Obj, requeues: int, op: Op) -> tuple[Obj | None, bool]:
        """Local→broker: skip a slice the broker already holds exactly (restart: no GET per slice)."""
        if op is not Op.DELETE:
            ns, name = key_of(obj)
            copy = self._broker_slice_cache.get(self.config.broker_namespace, name)
            if (copy is not None and (copy["metadata"].get("labels") or {}).get(L.CLUSTER_ID) == self.config.cluster_id
                    and (copy["metadata"].get("labels") or {}).get(L.ORIGINATING_NAMESPACE) == ns
                    and same_content(copy, obj, ignore_labels=(L.CLUSTER_ID, L.ORIGINATING_NAMESPACE))):
                return None, False
        return obj, False

    def _pull_unless_present(self, obj: Obj, requeues: int, op: Op) -> tuple[Obj | None, bool]:
        """Broker→local: skip a slice this cluster already holds exactly."""
        if op is not Op.DELETE:
            ns = (obj["metadata"].get("labels") or {}).get(L.ORIGINATING_NAMESPACE, "")
            have = self._local_slice_cache.get(ns, obj["metadata"].get("name", ""))
            if have is not None and same_content(have, obj):
                return None, False
        return obj, False

    def _import_unless_present(self, obj: Obj, requeues: int, op: Op) -> tuple[Obj | None, bool]:
        """Aggregate → `N/S`: the renaming transform, skipping copies that are already current."""
        out, requeue = imports.to_local_import(obj, requeues, op)
        if out is not None and op is not Op.DELETE:
            have = self._import_cache.get(*key_of(out))
            if have is not None and not (have["metadata"].get("labels")) and same_content(have, out, status=True):
                return None, False
        return out, requeue

    def _requeue_push(self, namespace: str, name: str) -> None:
        self.local_slices.requeue_resource(name, namespace)

    # ---------------------------------------------------------------- broker health, expiry

    def _broker_down(self, error: str) -> None:
        self._broker_error = error or "unreachable"
        log.warning("broker unreachable cluster=%s error=%r exports=%d", self.config.cluster_id, error,
                    len(self.exports.list()))
        for se in self.exports.list():
            self.queue.add(ServiceKey(*key_of(se)))

    def _broker_up(self) -> None:
        self._broker_error = None
        for key in self._local_keys():
            self.queue.add(key)

    def republish(self) -> None:
        """Push everything again (after peers expired this cluster's data)."""
        for key in self._local_keys():
            self.queue.add(key)
        for obj in self.local_slices.informer.list():
            if self._own_local_slice(obj) is not None:
                ns, name = key_of(obj)
                self.local_slices.requeue_resource(name, ns)

    def prune_cluster(self, cluster: str) -> None:
        """Remove a vanished cluster's data from the broker: aggregate entries and EndpointSlice copies."""
        removed_entries = removed_slices = 0
        for key in self.aggregates.service_keys():
            agg = self.aggregates.cached(key)
            if cluster in clusters_of(agg) or any(m.cluster == cluster for m in members_of(agg)):
                self.aggregates.leave(key, cluster)
                removed_entries += 1
        client = self.broker.resource(ENDPOINT_SLICES)
        for obj in self.broker_slices.informer.list():
            if (obj.get("metadata") or {}).get("labels", {}).get(L.CLUSTER_ID) == cluster:
                ns, name = key_of(obj)
                try:
                    client.delete(ns, name)
                    removed_slices += 1
                except NotFound:
                    pass
        log.info("cluster pruned cluster=%s by=%s aggregate_entries=%d endpointslices=%d", cluster,
                 self.config.cluster_id, removed_entries, removed_slices)

    # ---------------------------------------------------------------- introspection

    def status(self) -> dict[str, Any]:
        return {
            "cluster": self.config.cluster_id,
            "queue": len(self.queue),
            "reconciles": self.reconciler.stats.reconciles,
            "writes": dict(self.reconciler.stats.writes),
            "broker_reachable": self._broker_error is None,
            "aggregates": len(self.aggregates.service_keys()),
        }


def _k8s_slice_key(obj: Obj) -> ServiceKey | None:
    if is_lighthouse_slice(obj):
        return None
    name = ((obj.get("metadata") or {}).get("labels") or {}).get(L.K8S_SERVICE_NAME)
    return ServiceKey(key_of(obj)[0], str(name)) if name else None


__all__ = ["Agent"]
