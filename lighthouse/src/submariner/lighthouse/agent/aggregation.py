"""The broker aggregate `B/<S>-<N>` (lighthouse-agent.md §3.3, §5.2, §9.1), shared by every exporter.

Each exporting cluster writes its constituent (type, ports, session affinity, VIP opt-in, export time) as an
annotation `constituent.lighthouse.submariner.io/<C>` and every derived field (type, ports, affinity,
status.clusters, the clusterset VIP) is recomputed from *all* constituents on each write, so any exporter
writing produces the same result and every exporter can compute every conflict (D6/D7). Writes are
compare-and-swap on resourceVersion, never blind overwrites, and the name is only used when it is free (D1).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from submariner.broker.api import labels as L
from submariner.broker.api.multicluster import API_VERSION, CLUSTER_SET_IP
from submariner.broker.kube import AlreadyExists, Conflict, NotFound, Obj, ResourceClient, content_of, deep_copy
from submariner.lighthouse.agent.cache import EchoFilter, WriteMemo
from submariner.lighthouse.agent.conflicts import Member, eligible, union_ports
from submariner.lighthouse.agent.exports import Constituent, port_dict
from submariner.lighthouse.agent.naming import (
    ServiceKey,
    aggregate_base_name,
    aggregate_identity,
    annotations_of,
    choose_name,
    disambiguated,
)

log = logging.getLogger(__name__)

CONSTITUENT_PREFIX = "constituent.lighthouse.submariner.io/"
ATTEMPTS = 10


class VipAllocator(Protocol):
    def allocate(self, key: ServiceKey) -> str: ...

    def release(self, key: ServiceKey) -> None: ...


def constituent_key(cluster: str) -> str:
    return CONSTITUENT_PREFIX + cluster


def encode_member(cluster: str, c: Constituent) -> str:
    return json.dumps(c.to_json(), sort_keys=True, separators=(",", ":"))


def members_of(aggregate: Mapping[str, Any] | None) -> list[Member]:
    """The constituents recorded in an aggregate (malformed entries are skipped)."""
    out: list[Member] = []
    for k, v in annotations_of(aggregate or {}).items():
        if not k.startswith(CONSTITUENT_PREFIX):
            continue
        try:
            d = json.loads(v)
            out.append(Member(
                cluster=k[len(CONSTITUENT_PREFIX):],
                type=str(d["type"]),
                ports=tuple((str(p[0]), str(p[1]), int(p[2]), str(p[3])) for p in d.get("ports") or ()),
                session_affinity=str(d.get("sessionAffinity") or ""),
                session_affinity_config=d.get("sessionAffinityConfig") or None,
                use_clusterset_ip=bool(d.get("useClustersetIP")),
                timestamp=int(d.get("timestamp") or 0),
            ))
        except (ValueError, KeyError, TypeError, IndexError):
            log.warning("aggregate constituent unreadable key=%s", k)
    return out


def clusters_of(aggregate: Mapping[str, Any] | None) -> list[str]:
    return [str(c.get("cluster")) for c in ((aggregate or {}).get("status") or {}).get("clusters") or ()]


def vip_of(aggregate: Mapping[str, Any] | None) -> str | None:
    ips = ((aggregate or {}).get("spec") or {}).get("ips") or ()
    return str(ips[0]) if ips else None


def build_aggregate(key: ServiceKey, name: str, namespace: str, raw_members: Mapping[str, str],
                    members: list[Member], vip: str | None, allocated_by: str | None) -> Obj:
    """The aggregate as it must be for these members; deterministic, so equal inputs mean no write."""
    el = eligible(members)
    winner = el[0]
    annotations = {L.SERVICE_NAME: key.name, L.SOURCE_NAMESPACE: key.namespace}
    for m in members:
        annotations[L.export_timestamp_key(m.cluster)] = str(m.timestamp)
        annotations[constituent_key(m.cluster)] = raw_members[m.cluster]
    spec: dict[str, Any] = {"type": winner.type, "ports": []}
    if winner.type == CLUSTER_SET_IP:
        spec["ports"] = [port_dict(p) for p in union_ports(el)]
        annotations[L.USE_CLUSTERSET_IP] = str(winner.use_clusterset_ip).lower()
        if vip:
            spec["ips"] = [vip]
            if allocated_by:
                annotations[L.CLUSTERSET_IP_ALLOCATED_BY] = allocated_by
    if winner.session_affinity:
        spec["sessionAffinity"] = winner.session_affinity
    if winner.session_affinity_config:
        spec["sessionAffinityConfig"] = dict(winner.session_affinity_config)
    return {
        "apiVersion": API_VERSION,
        "kind": "ServiceImport",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": spec,
        "status": {"clusters": [{"cluster": m.cluster} for m in el]},
    }


class Aggregates:
    """Reads (from the broker cache) and writes (compare-and-swap) the aggregates of one broker namespace."""

    def __init__(self, client: ResourceClient, namespace: str, cluster_id: str,
                 vips: VipAllocator | None = None) -> None:
        self._client = client
        self.namespace = namespace
        self.cluster_id = cluster_id
        self.vips = vips
        self._lock = threading.Lock()
        self._by_key: dict[ServiceKey, str] = {}
        self._by_name: dict[str, ServiceKey] = {}
        self._get_cached: Callable[[str], Obj | None] = lambda name: None
        self.echoes = EchoFilter()
        self._memo = WriteMemo()

    # ---------------------------------------------------------------- cache (fed by the broker informer)

    def attach(self, get_cached: Callable[[str], Obj | None]) -> None:
        self._get_cached = get_cached

    def observe(self, obj: Obj, deleted: bool = False) -> ServiceKey | None:
        """Index an aggregate event; returns its service key (None for non-aggregates)."""
        key = aggregate_identity(obj)
        name = str((obj.get("metadata") or {}).get("name") or "")
        if key is None:
            return None
        with self._lock:
            if deleted:
                if self._by_key.get(key) == name:
                    del self._by_key[key]
                self._by_name.pop(name, None)
            else:
                self._by_key[key] = name
                self._by_name[name] = key
        return key

    def service_keys(self) -> list[ServiceKey]:
        with self._lock:
            return list(self._by_key)

    def name_of(self, key: ServiceKey) -> str | None:
        with self._lock:
            return self._by_key.get(key)

    def cached(self, key: ServiceKey) -> Obj | None:
        name = self.name_of(key)
        if not name:
            return None
        return self._memo.read((self.namespace, name), self._get_cached(name))

    def _wrote(self, replaced: Obj | None, result: Obj) -> Obj:
        self.echoes.wrote(result)
        self._memo.wrote(str(((replaced or {}).get("metadata") or {}).get("resourceVersion") or ""), result)
        return result

    def _owner_of(self, name: str) -> ServiceKey | None:
        with self._lock:
            return self._by_name.get(name)

    # ---------------------------------------------------------------- writes

    def join(self, key: ServiceKey, constituent: Constituent) -> Obj:
        """Record this cluster's constituent; returns the aggregate as stored."""
        raw = encode_member(self.cluster_id, constituent)
        result = self._apply(key, lambda cur: self._with_member(key, cur, raw))
        assert result is not None
        return result

    def leave(self, key: ServiceKey, cluster: str | None = None) -> None:
        """Remove a cluster (default: this one); the last one out deletes the aggregate."""
        self._apply(key, lambda cur: self._without_member(key, cur, cluster or self.cluster_id), create=False)

    def _raw_members(self, current: Obj | None) -> dict[str, str]:
        return {k[len(CONSTITUENT_PREFIX):]: v for k, v in annotations_of(current or {}).items()
                if k.startswith(CONSTITUENT_PREFIX)}

    def _with_member(self, key: ServiceKey, current: Obj | None, raw: str) -> Obj | None:
        raws = self._raw_members(current)
        raws[self.cluster_id] = raw
        return self._rebuild(key, current, raws)

    def _without_member(self, key: ServiceKey, current: Obj | None, cluster: str) -> Obj | None:
        if current is None:
            return None
        raws = self._raw_members(current)
        if cluster not in raws and cluster not in clusters_of(current):
            return current  # nothing to do
        raws.pop(cluster, None)
        return self._rebuild(key, current, raws)

    def _rebuild(self, key: ServiceKey, current: Obj | None, raws: dict[str, str]) -> Obj | None:
        members = members_of({"metadata": {"annotations": {constituent_key(c): v for c, v in raws.items()}}})
        raws = {m.cluster: raws[m.cluster] for m in members}
        if not members:
            return None
        el = eligible(members)
        vip, by = vip_of(current), annotations_of(current or {}).get(L.CLUSTERSET_IP_ALLOCATED_BY)
        if el[0].type != CLUSTER_SET_IP:
            if vip is not None and self.vips is not None:
                self.vips.release(key)
            vip = by = None
        elif vip is None and el[0].use_clusterset_ip and self.vips is not None:
            vip, by = self.vips.allocate(key), self.cluster_id
        name = (current or {}).get("metadata", {}).get("name") or ""
        return build_aggregate(key, name, self.namespace, raws, members, vip, by)

    def _apply(self, key: ServiceKey, mutate: Callable[[Obj | None], Obj | None], create: bool = True) -> Obj | None:
        current = self.cached(key)
        taken: set[str] = set()
        for _ in range(ATTEMPTS):
            desired = mutate(deep_copy(current) if current is not None else None)
            if desired is None:
                if current is not None:
                    self._delete(key, current)
                return None
            if current is None:
                if not create:
                    return None
                name = choose_name(aggregate_base_name(key), key, self._owner_of)
                if name in taken:
                    name = disambiguated(aggregate_base_name(key), key)
                desired["metadata"]["name"] = name
                try:
                    created = self._client.create(_without_status(desired))
                except AlreadyExists:
                    existing = self._fetch(name)
                    if existing is not None and aggregate_identity(existing) != key:
                        taken.add(name)  # D1: the name belongs to another service, never overwrite it
                        log.info("aggregate name taken name=%s service=%s action=use-hashed-name", name, key)
                        existing = None
                    current = existing
                    continue
                self.observe(created)
                current = self._wrote(None, created)
                if desired.get("status"):
                    try:
                        current = self._wrote(current, self._write_status(current, desired))
                    except Conflict:
                        current = self._fetch(name)
                        continue
                log.info("aggregate created service=%s name=%s cluster=%s", key, name, self.cluster_id)
                return current
            try:
                result = current
                if content_of(desired) != content_of(current):
                    desired["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
                    result = self._wrote(current, self._client.update(_without_status(desired)))
                if (desired.get("status") or {}) != (result.get("status") or {}):
                    result = self._wrote(result, self._write_status(result, desired))
                if result is not current:
                    log.debug("aggregate updated service=%s name=%s", key, result["metadata"]["name"])
                return result
            except Conflict:
                current = self._fetch(current["metadata"]["name"])
                if current is not None and aggregate_identity(current) != key:
                    current = None
            except NotFound:
                current = None
        raise Conflict(f"aggregate for {key}: too many concurrent writers, giving up for now", status=409)

    def _write_status(self, stored: Obj, desired: Obj) -> Obj:
        obj = deep_copy(stored)
        obj["status"] = deep_copy(desired.get("status") or {})
        result: Obj = self._client.update_status(obj)
        return result

    def _fetch(self, name: str) -> Obj | None:
        try:
            return self._client.get(self.namespace, name)
        except NotFound:
            return None

    def _delete(self, key: ServiceKey, current: Obj) -> None:
        """Delete the empty aggregate. The seam has no delete preconditions, so a concurrent joiner's write can
        be lost; it heals because every exporter re-joins when it sees its aggregate deleted."""
        name = current["metadata"]["name"]
        with contextlib.suppress(NotFound):
            self._client.delete(self.namespace, name)
        log.info("aggregate deleted service=%s name=%s cluster=%s", key, name, self.cluster_id)
        if self.vips is not None and vip_of(current):
            self.vips.release(key)


def _without_status(obj: Obj) -> Obj:
    out = dict(obj)
    out.pop("status", None)
    return out
