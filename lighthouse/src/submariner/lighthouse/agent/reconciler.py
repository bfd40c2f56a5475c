"""The per-service reconcile: one exported service's whole state, recomputed from caches on every event.

For key N/S it reads the ServiceExport, the Service, its Kubernetes EndpointSlices (and GlobalIngressIPs),
what this cluster already published, and the broker aggregate; then it makes the per-cluster ServiceImport,
the aggregate entry, the Lighthouse EndpointSlices and the ServiceExport conditions what they must be —
writing only what differs, so a restart in steady state writes nothing. Unexport, Service deletion and a
lost type conflict all take the same withdraw path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from submariner.broker.api import labels as L
from submariner.broker.api.conditions import ExportCondition as T
from submariner.broker.api.conditions import ExportReason as R
from submariner.broker.kube import (
    AlreadyExists,
    Conflict,
    Informer,
    KubeError,
    NotFound,
    Obj,
    ResourceClient,
    content_of,
    create_or_update,
    deep_copy,
)
from submariner.lighthouse.agent import conditions as C
from submariner.lighthouse.agent.aggregation import Aggregates, clusters_of, members_of, vip_of
from submariner.lighthouse.agent.cache import EchoFilter, Index, WriteMemo
from submariner.lighthouse.agent.clustersetip import PoolExhausted
from submariner.lighthouse.agent.config import AgentConfig
from submariner.lighthouse.agent.conflicts import conflicts_for, eligible
from submariner.lighthouse.agent.endpointslices import desired_slices
from submariner.lighthouse.agent.exports import Constituent, Invalid, evaluate, per_cluster_import
from submariner.lighthouse.agent.globalnet import GlobalIps
from submariner.lighthouse.agent.naming import (
    ServiceKey,
    choose_name,
    labelled_identity,
    local_import_base_name,
)

log = logging.getLogger(__name__)

DONE: float | None = None
BACKOFF = -1.0
"""Outcome of a reconcile: DONE, BACKOFF (retry with the key's exponential backoff) or a delay in seconds."""
_SYNC_LABELS = (L.CLUSTER_ID, L.ORIGINATING_NAMESPACE)


@dataclass
class Sources:
    """Caches a reconcile reads (all shared, read-only) and the hooks into the rest of the agent."""

    exports: Informer
    services: Informer
    k8s_slices: Index[ServiceKey]
    local_imports: Index[ServiceKey]
    local_imports_informer: Informer
    own_slices: Index[ServiceKey]
    broker_slices: Informer
    aggregates: Aggregates
    global_ips: GlobalIps | None
    broker_synced: Callable[[], bool]
    broker_problem: Callable[[], str | None]
    """None while the broker is reachable, else the last error."""
    requeue_push: Callable[[str, str], None]


@dataclass
class Writers:
    exports: ResourceClient
    imports: ResourceClient
    slices: ResourceClient
    import_echoes: EchoFilter = field(default_factory=EchoFilter)
    slice_echoes: EchoFilter = field(default_factory=EchoFilter)
    status_memo: WriteMemo = field(default_factory=WriteMemo)


@dataclass
class Stats:
    reconciles: int = 0
    writes: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrote(self, what: str) -> None:
        with self.lock:
            self.writes[what] = self.writes.get(what, 0) + 1


class ServiceReconciler:
    def __init__(self, config: AgentConfig, sources: Sources, writers: Writers) -> None:
        self.config = config
        self.s = sources
        self.w = writers
        self.stats = Stats()

    # ---------------------------------------------------------------- entry

    def reconcile(self, key: ServiceKey) -> float | None:
        self.stats.reconciles += 1
        se = self.s.exports.get(key.namespace, key.name)
        if se is None or (se.get("metadata") or {}).get("deletionTimestamp"):
            _, error = self._withdraw(key)
            if error:
                log.warning("unexport incomplete service=%s error=%r action=retry", key, error)
                return BACKOFF
            return DONE
        service = self.s.services.get(key.namespace, key.name)
        giip = None
        if self.config.globalnet and self.s.global_ips is not None:
            giip = self.s.global_ips.for_service(key.namespace, key.name)
        result = evaluate(se, service, self.config, giip)
        if isinstance(result, Invalid):
            return self._invalid(key, result)
        return self._export(key, result)

    # ---------------------------------------------------------------- withdraw / invalid

    def _withdraw(self, key: ServiceKey) -> tuple[bool, str | None]:
        """Remove everything this cluster published for the service; (had a per-cluster import, error)."""
        had = False
        for si in self.s.local_imports.get(key):
            had = True
            self._delete(self.w.imports, si, "serviceimport")
        for eps in self.s.own_slices.get(key):
            self._delete(self.w.slices, eps, "endpointslice")
        agg = self.s.aggregates.cached(key)
        cid = self.config.cluster_id
        if agg is None or (cid not in clusters_of(agg) and all(m.cluster != cid for m in members_of(agg))):
            return had, None
        problem = self.s.broker_problem()
        if problem:
            return had, problem
        try:
            self.s.aggregates.leave(key)
        except KubeError as e:
            return had, e.message
        return had, None

    def _invalid(self, key: ServiceKey, inv: Invalid) -> float | None:
        had, error = self._withdraw(key)
        desired = {T.VALID: C.Cond(inv.status, inv.reason, inv.message), T.CONFLICT: C.conflict([])}
        se = self.w.status_memo.read(key, self.s.exports.get(key.namespace, key.name))
        current = ((se or {}).get("status") or {}).get("conditions") or []
        if had or C.find(current, T.READY) is not None:
            desired[T.READY] = C.no_service_import()
        if had or C.find(current, T.SYNCED) is not None:
            desired[T.SYNCED] = C.Cond("False", R.NO_SERVICE_IMPORT, "ServiceImport was deleted")
        self._write_status(key, desired)
        log.info("export invalid service=%s reason=%s", key, inv.reason)
        if inv.status == "Unknown" or error:
            return BACKOFF
        return DONE

    # ---------------------------------------------------------------- export

    def _export(self, key: ServiceKey, c: Constituent) -> float | None:
        cid = self.config.cluster_id
        desired: dict[str, C.Cond] = {T.VALID: C.valid(), T.READY: C.awaiting_export(), T.SYNCED: C.awaiting_sync()}
        outcome: float | None = DONE
        try:
            self._upsert_import(key, c)
        except KubeError as e:
            log.warning("per-cluster import write failed service=%s error=%r action=retry", key, e.message)
            outcome = BACKOFF

        agg: Obj | None = None
        joined = False
        problem = self.s.broker_problem()
        if problem:
            desired[T.SYNCED] = C.broker_unavailable(problem)
            agg = self.s.aggregates.cached(key)
            if agg is None or cid not in clusters_of(agg):
                desired[T.READY] = C.export_failed(f"the broker is unreachable: {problem}")
            outcome = BACKOFF
        elif not self.s.broker_synced():
            agg = self.s.aggregates.cached(key)
            outcome = 0.5
        else:
            try:
                agg = self.s.aggregates.join(key, c)
                joined = True
                desired[T.SYNCED] = C.synced()
            except (KubeError, PoolExhausted) as e:
                msg = e.message if isinstance(e, KubeError) else str(e)
                log.warning("export to broker failed service=%s error=%r action=retry", key, msg)
                desired[T.READY] = C.export_failed(msg)
                desired[T.SYNCED] = C.sync_failed(msg)
                agg = self.s.aggregates.cached(key)
                outcome = BACKOFF

        members = members_of(agg)
        excluded = False
        if members and any(m.cluster == cid for m in members):
            winner = eligible(members)[0]
            excluded = c.type != winner.type
            if joined:
                found = conflicts_for(cid, members, has_vip=bool(vip_of(agg)),
                                      only_differing=not self.config.conflicts_on_all_exporters)
                desired[T.CONFLICT] = C.conflict(found)

        if excluded:
            for eps in self.s.own_slices.get(key):
                self._delete(self.w.slices, eps, "endpointslice")
            if joined:
                desired[T.READY] = C.conflict_failed()
        else:
            try:
                stored = self._sync_slices(key, c)
            except KubeError as e:
                log.warning("endpointslice write failed service=%s error=%r action=retry", key, e.message)
                desired[T.READY] = C.export_failed(e.message)
                stored = []
                outcome = BACKOFF
            if joined and outcome is DONE:
                missing = [o for o in stored if not self._in_broker(o)]
                if missing:
                    for o in missing:
                        self.s.requeue_push(o["metadata"]["namespace"], o["metadata"]["name"])
                    outcome = BACKOFF  # the broker EndpointSlice event requeues us sooner
                else:
                    desired[T.READY] = C.ready()
        try:
            self._write_status(key, desired)
        except KubeError as e:
            log.warning("export status write failed service=%s error=%r action=retry", key, e.message)
            return BACKOFF
        return outcome

    def _import_name(self, key: ServiceKey) -> str:
        existing = self.s.local_imports.get(key)
        if existing:
            return str(sorted(o["metadata"]["name"] for o in existing)[0])

        def owner(name: str) -> ServiceKey | None:
            obj = self.s.local_imports_informer.get(self.config.namespace, name)
            return labelled_identity(obj) if obj is not None else None

        return choose_name(local_import_base_name(key, self.config.cluster_id), key, owner)

    def _upsert_import(self, key: ServiceKey, c: Constituent) -> None:
        name = self._import_name(key)
        desired = per_cluster_import(name, key, c, self.config)
        cached = self.s.local_imports_informer.get(self.config.namespace, name)
        self._upsert(self.w.imports, cached, desired, "serviceimport", self.w.import_echoes)
        for extra in self.s.local_imports.get(key):
            if extra["metadata"]["name"] != name:
                self._delete(self.w.imports, extra, "serviceimport")

    def _sync_slices(self, key: ServiceKey, c: Constituent) -> list[Obj]:
        gips = self.s.global_ips
        global_ip_of = (lambda ep: gips.for_endpoint(key.namespace, ep)) if gips is not None else None
        want = desired_slices(key, self.config.cluster_id, c, self.s.k8s_slices.get(key),
                              globalnet=self.config.globalnet, global_ip_of=global_ip_of)
        existing = {o["metadata"]["name"]: o for o in self.s.own_slices.get(key)}
        stored = [self._upsert(self.w.slices, existing.pop(d["metadata"]["name"], None), d, "endpointslice",
                               self.w.slice_echoes) for d in want]
        for stale in existing.values():
            self._delete(self.w.slices, stale, "endpointslice")
        return stored

    def _in_broker(self, local: Mapping[str, Any]) -> bool:
        """The broker holds our current copy of this slice (pushed by the EndpointSlice broker syncer)."""
        copy = self.s.broker_slices.get(self.config.broker_namespace, local["metadata"]["name"])
        if copy is None:
            return False
        labels = dict((copy.get("metadata") or {}).get("labels") or {})
        if labels.get(L.CLUSTER_ID) != self.config.cluster_id:
            return False
        for k in _SYNC_LABELS:
            labels.pop(k, None)
        stripped = {**copy, "metadata": {**copy["metadata"], "labels": labels}}
        return content_of(stripped) == content_of(local)

    # ---------------------------------------------------------------- writes

    def _upsert(self, client: ResourceClient, cached: Obj | None, desired: Obj, what: str,
                echoes: EchoFilter) -> Obj:
        if cached is not None and content_of(cached) == content_of(desired) and (
                "status" not in desired or (cached.get("status") or {}) == (desired.get("status") or {})):
            return cached
        if cached is None:  # most likely new: skip create_or_update's read
            try:
                created = client.create({k: v for k, v in desired.items() if k != "status"})
                echoes.wrote(created)
                self.stats.wrote(what)
                if desired.get("status") and (created.get("status") or {}) != desired["status"]:
                    created = client.update_status({**created, "status": desired["status"]})
                    echoes.wrote(created)
                return created
            except AlreadyExists:
                pass
        op, result = create_or_update(client, desired)
        echoes.wrote(result)
        if op != "unchanged":
            self.stats.wrote(what)
            log.debug("wrote kind=%s op=%s name=%s/%s", what, op, result["metadata"].get("namespace"),
                      result["metadata"]["name"])
        return result

    def _delete(self, client: ResourceClient, obj: Obj, what: str) -> None:
        meta = obj.get("metadata") or {}
        try:
            client.delete(str(meta.get("namespace") or ""), str(meta.get("name")))
        except NotFound:
            return
        self.stats.wrote(what)
        log.debug("deleted kind=%s name=%s/%s", what, meta.get("namespace"), meta.get("name"))

    def _write_status(self, key: ServiceKey, desired: Mapping[str, C.Cond]) -> None:
        se = self.w.status_memo.read(key, self.s.exports.get(key.namespace, key.name))
        for _ in range(5):
            if se is None:
                return
            current = (se.get("status") or {}).get("conditions") or []
            new = C.merge(current, desired)
            if new == current:
                return
            obj = deep_copy(se)
            obj["status"] = {**(obj.get("status") or {}), "conditions": new}
            try:
                result = self.w.exports.update_status(obj)
                self.w.status_memo.wrote(str(se["metadata"].get("resourceVersion") or ""), result)
                self.stats.wrote("serviceexport-status")
                return
            except Conflict:
                try:
                    se = self.w.exports.get(key.namespace, key.name)
                except NotFound:
                    return
            except NotFound:
                return
        raise Conflict(f"ServiceExport {key}: status kept changing under us", status=409)
