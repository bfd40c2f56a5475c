"""What the leader's controllers share: the pool, the rule state, informers and the work queue.

Why one context and one worker: IPAM and the rule state are plain data edited by one thread, so there are no
locks around allocations; informer handlers only enqueue keys. After each batch of reconciles the worker
applies the whole ruleset once and then runs the callbacks that report (in CR status) whether it worked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from submariner.broker.api.meta import APIResource
from submariner.broker.kube import ClientFactory, Informer, Obj, ResourceClient
from submariner.broker.kube.workqueue import WorkQueue
from submariner.dataplane.packetfilter.ipset import IPSets
from submariner.globalnet.config import Config
from submariner.globalnet.ipam import IPAMError, IPPool
from submariner.globalnet.rules import GlobalnetState

log = logging.getLogger(__name__)

Key = tuple[str, str, str]
"""(kind, namespace, name); kind is one of the controller kinds below."""

CGEIP = "cgeip"
GEIP = "geip"
GIIP = "giip"
SERVICE = "service"
"""An exported (or formerly exported) Service: which GlobalIngressIPs it should have."""
INTERNAL = "internal"
"""An internal `submariner-*` Service: deleted when its GlobalIngressIP is gone (stale clean-up)."""
GATEWAY = "gateway"
PROGRAM = "program"
"""Not an object: a retry of a failed rules apply."""

PODS = APIResource("", "v1", "Pod", "pods", "pod", True)
CORE_ENDPOINTS = APIResource("", "v1", "Endpoints", "endpoints", "endpoints", True)

AfterApply = Callable[[bool], None]
"""Runs after the batch's rules apply with its outcome (status writes that must follow the rules)."""


@dataclass
class Allocation:
    """IPs this leader holds for one object, and what the rules/objects made from them need to be undone."""

    ips: tuple[str, ...]
    detail: dict[str, Any] = field(default_factory=dict)


class NamespaceIndex:
    """Objects of one informer grouped by namespace (pods per namespace for egress sets and headless IPs)."""

    def __init__(self, informer: Informer) -> None:
        self._lock = threading.Lock()
        self._by_ns: dict[str, dict[str, Obj]] = {}
        informer.add_handlers(on_add=self._put, on_update=lambda old, new: self._put(new), on_delete=self._drop)

    def _put(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        with self._lock:
            self._by_ns.setdefault(str(meta.get("namespace") or ""), {})[str(meta.get("name"))] = obj

    def _drop(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        with self._lock:
            self._by_ns.get(str(meta.get("namespace") or ""), {}).pop(str(meta.get("name")), None)

    def in_namespace(self, namespace: str) -> list[Obj]:
        with self._lock:
            return list(self._by_ns.get(namespace, {}).values())


class Context:
    def __init__(self, config: Config, cluster: ClientFactory, pool: IPPool, ipsets: IPSets) -> None:
        self.config = config
        self.cluster = cluster
        self.pool = pool
        self.ipsets = ipsets
        self.state = GlobalnetState(local_cidrs=config.local_cidrs)
        self.version = 0
        self.owned: dict[Key, Allocation] = {}
        self.queue: WorkQueue[Key] = WorkQueue(backoff=(0.05, 10.0))
        self.after_apply: list[tuple[Key, AfterApply]] = []
        self.informers: dict[str, Informer] = {}
        self._clients: dict[str, ResourceClient] = {}
        self.pods = NamespaceIndex(self.informer(PODS, transform=slim_pod))

    def client(self, res: APIResource) -> ResourceClient:
        c = self._clients.get(res.crd_name)
        if c is None:
            c = self._clients[res.crd_name] = self.cluster.resource(res)
        return c

    def informer(self, res: APIResource, **kwargs: Any) -> Informer:
        """One shared informer per resource type (the first caller's options apply)."""
        inf = self.informers.get(res.crd_name)
        if inf is None:
            inf = self.informers[res.crd_name] = Informer(self.client(res), name=f"globalnet-{res.plural}",
                                                          **kwargs)
        return inf

    def get(self, res: APIResource, namespace: str, name: str) -> Obj | None:
        return self.informer(res).get(namespace, name)

    def objects(self, res: APIResource) -> Iterator[Obj]:
        yield from self.informer(res).list()

    def changed(self) -> None:
        """The rule state was edited: the worker applies the ruleset after this batch."""
        self.version += 1

    def enqueue(self, kind: str, namespace: str, name: str) -> None:
        self.queue.add((kind, namespace, name))

    def later(self, key: Key, fn: AfterApply) -> None:
        """Run `fn(rules_applied_ok)` after this batch's apply; if it raises, `key` is retried."""
        self.after_apply.append((key, fn))

    def release(self, key: Key) -> Allocation | None:
        """Give an object's IPs back to the pool (it was deleted, or is re-allocated)."""
        alloc = self.owned.pop(key, None)
        if alloc is not None and alloc.ips:
            self.pool.release(alloc.ips)
        return alloc


class Retry(Exception):
    """Reconcile again later with backoff (e.g. the pool is exhausted); already reported in status."""


def ensure_ips(ctx: Context, key: Key, num: int) -> tuple[str, ...]:
    """The object's IPs: what it holds if the count still matches, else a fresh allocation (IPAMError)."""
    alloc = ctx.owned.get(key)
    if alloc is not None and len(alloc.ips) == num:
        return alloc.ips
    ctx.release(key)
    ips = tuple(ctx.pool.allocate(num))
    ctx.owned[key] = Allocation(ips)
    return ips


def reserve(ctx: Context, key: Key, ips: list[str]) -> bool:
    """Restart: take back what the object's status records; False (and nothing taken) on a conflict."""
    if not ips or key in ctx.owned:
        return False
    try:
        ctx.pool.reserve(ips)
    except IPAMError as e:
        log.warning("globalnet cannot reserve recorded IPs object=%s ips=%s error=%s action=reallocate",
                    "/".join(key), ips, e)
        return False
    ctx.owned[key] = Allocation(tuple(ips))
    return True


def slim_pod(pod: Obj) -> Obj:
    """What Globalnet reads of a pod: labels, IP and phase (pods are the largest cache)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    return {"metadata": {k: meta[k] for k in ("name", "namespace", "labels", "resourceVersion", "deletionTimestamp")
                         if k in meta},
            "status": {k: status[k] for k in ("podIP", "phase") if k in status}}


def deleting(obj: Obj | None) -> bool:
    return obj is None or bool((obj.get("metadata") or {}).get("deletionTimestamp"))
