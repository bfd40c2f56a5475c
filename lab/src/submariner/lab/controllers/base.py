"""The machinery every controller shares: shared informers, a work queue, expectations, and the worker loop.

A controller is "level-triggered": informer events only name a key; the worker reads the informer caches,
computes the desired state, diffs and writes. Running a reconcile twice writes nothing the second time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from submariner.broker.api.meta import APIResource
from submariner.broker.kube import (
    ENDPOINT_SLICES,
    SERVICES,
    AlreadyExists,
    ClientFactory,
    Conflict,
    Informer,
    KubeError,
    NotFound,
    Obj,
    ObjectKey,
    ResourceClient,
)
from submariner.broker.kube.workqueue import WorkQueue

from .podutil import meta, same_json

log = logging.getLogger(__name__)

PODS = APIResource("", "v1", "Pod", "pods", "pod", True)
NODES = APIResource("", "v1", "Node", "nodes", "node", False)
ENDPOINTS = APIResource("", "v1", "Endpoints", "endpoints", "endpoints", True)
DEPLOYMENTS = APIResource("apps", "v1", "Deployment", "deployments", "deployment", True)
STATEFULSETS = APIResource("apps", "v1", "StatefulSet", "statefulsets", "statefulset", True)
DAEMONSETS = APIResource("apps", "v1", "DaemonSet", "daemonsets", "daemonset", True)

WATCHED: tuple[APIResource, ...] = (
    PODS, NODES, SERVICES, ENDPOINTS, ENDPOINT_SLICES, DEPLOYMENTS, STATEFULSETS, DAEMONSETS,
)


class Caches:
    """One informer per resource type, shared by all controllers: one list+watch per type per cluster."""

    def __init__(self, kube: ClientFactory, *, cluster_name: str,
                 resources: Iterable[APIResource] = WATCHED) -> None:
        self._informers: dict[APIResource, Informer] = {
            res: Informer(kube.resource(res), name=f"{cluster_name}/{res.plural}") for res in resources
        }
        self._stopped = threading.Event()

    def __getitem__(self, res: APIResource) -> Informer:
        return self._informers[res]

    def start(self) -> None:
        for inf in self._informers.values():
            inf.start()

    def stop(self) -> None:
        self._stopped.set()
        for inf in self._informers.values():
            inf.stop()

    def synced(self) -> bool:
        return all(inf.has_synced() for inf in self._informers.values())

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once every informer has delivered its first list; False on timeout or stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for inf in self._informers.values():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._stopped.is_set() or not inf.wait_for_sync(left):
                return False
        return True

    def in_namespace(self, res: APIResource, namespace: str) -> list[Obj]:
        return [o for o in self[res].list() if (meta(o).get("namespace") or "") == namespace]


@dataclass
class _Expected:
    deadline: float
    created: set[str] = field(default_factory=set)
    deleted: dict[str, str] = field(default_factory=dict)  # name -> uid


class Expectations:
    """Writes a controller made that its informer cache does not show yet (client-go's expectations).

    Without them a reconcile triggered between a create and its watch event would count too few pods and
    create more. A key with unmet expectations is skipped until the cache catches up or `ttl` passes.
    """

    def __init__(self, ttl: float = 15.0) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._by_key: dict[ObjectKey, _Expected] = {}

    def _entry(self, key: ObjectKey) -> _Expected:
        entry = self._by_key.get(key)
        if entry is None:
            entry = self._by_key[key] = _Expected(time.monotonic() + self._ttl)
        else:
            entry.deadline = time.monotonic() + self._ttl
        return entry

    def created(self, key: ObjectKey, name: str) -> None:
        with self._lock:
            self._entry(key).created.add(name)

    def deleted(self, key: ObjectKey, name: str, uid: str) -> None:
        with self._lock:
            self._entry(key).deleted[name] = uid

    def forget(self, key: ObjectKey) -> None:
        with self._lock:
            self._by_key.pop(key, None)

    def pending(self, key: ObjectKey, lookup: Callable[[str], Obj | None]) -> float | None:
        """None when the cache reflects every write for `key`; else seconds until they are given up on."""
        with self._lock:
            entry = self._by_key.get(key)
            if entry is None:
                return None
            entry.created = {n for n in entry.created if lookup(n) is None}
            entry.deleted = {
                n: uid for n, uid in entry.deleted.items()
                if (obj := lookup(n)) is not None and (meta(obj).get("uid") or "") == uid
            }
            left = entry.deadline - time.monotonic()
            if (entry.created or entry.deleted) and left > 0:
                return left
            if entry.created or entry.deleted:
                log.warning("expectations timed out key=%s created=%s deleted=%s",
                            "/".join(key), sorted(entry.created), sorted(entry.deleted))
            del self._by_key[key]
            return None


class Controller:
    """A named reconcile loop: handlers enqueue keys, workers call `reconcile(key)` once caches are synced.

    `reconcile` returns None when done or a delay after which the key must be looked at again (a time-based
    condition such as minReadySeconds). API errors requeue the key with exponential back-off.
    """

    name = "controller"

    def __init__(self, kube: ClientFactory, caches: Caches, *, cluster_name: str, workers: int = 1) -> None:
        self.kube = kube
        self.caches = caches
        self.cluster_name = cluster_name
        self.queue: WorkQueue[ObjectKey] = WorkQueue(backoff=(0.05, 30.0))
        self.expectations = Expectations()
        self._workers = max(1, workers)
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()

    # -- to implement ----------------------------------------------------------------------------------------

    def register(self) -> None:
        """Add informer handlers that map events to keys (called before the informers start)."""
        raise NotImplementedError

    def reconcile(self, key: ObjectKey) -> float | None:
        raise NotImplementedError

    # -- life cycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self._workers):
            t = threading.Thread(target=self._run, name=f"{self.cluster_name}-{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        self.queue.shutdown()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)

    def busy(self) -> bool:
        return self.queue.busy()

    def client(self, res: APIResource) -> ResourceClient:
        return self.kube.resource(res)

    def enqueue(self, obj: Obj) -> None:
        m = meta(obj)
        self.queue.add((m.get("namespace") or "", m.get("name") or ""))

    def owner_gone(self, res: APIResource, owner: Obj) -> bool:
        """A live read of `owner`. The cache can still show an owner the server has already deleted (its
        dependents' deletions may arrive first, on another watch); a dependent created then would name a
        dead uid and never be garbage-collected."""
        m = meta(owner)
        try:
            live = self.client(res).get(m.get("namespace") or "", m.get("name") or "")
        except NotFound:
            return True
        return meta(live).get("uid") != m.get("uid") or bool(meta(live).get("deletionTimestamp"))

    def create_dependents(self, key: ObjectKey, res: APIResource, owner: Obj, client: ResourceClient,
                          bodies: list[Obj]) -> list[Obj]:
        """Create objects owned by `owner`, recording expectations; none survive if the owner vanished.

        The owner is checked before and after: deleted before, nothing is created; deleted during, what was
        created is deleted again (the server's collector only covers dependents that existed at deletion).
        """
        if not bodies or self.owner_gone(res, owner):
            return []
        created: list[Obj] = []
        for body in bodies:
            obj = client.create(body)
            created.append(obj)
            self.expectations.created(key, meta(obj).get("name") or "")
        if self.owner_gone(res, owner):
            for obj in created:
                delete_quietly(client, meta(obj).get("namespace") or "", meta(obj).get("name") or "")
            return []
        return created

    def _run(self) -> None:
        while not self._stopped.is_set():
            if self.caches.wait_synced(1.0):
                break
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                delay = self.reconcile(key)
            except (Conflict, AlreadyExists, NotFound) as e:
                # A stale cache: the newer state is on its way; look again shortly.
                log.debug("reconcile raced controller=%s key=%s error=%r", self.name, "/".join(key), e.message)
                self.queue.retry(key)
            except KubeError as e:
                log.warning("reconcile failed controller=%s key=%s status=%d error=%r",
                            self.name, "/".join(key), e.status, e.message)
                self.queue.retry(key)
            except Exception:
                log.exception("reconcile crashed controller=%s key=%s", self.name, "/".join(key))
                self.queue.retry(key)
            else:
                self.queue.forget(key)
                if delay is not None:
                    self.queue.add_after(key, delay)
            finally:
                self.queue.done(key)


def write_status(client: ResourceClient, cached: Obj, new_status: Obj) -> bool:
    """Write `new_status` unless the cached object already has it; one re-read on a conflict.

    Returns whether a write happened. A second conflict propagates so the key is requeued.
    """
    if same_json(cached.get("status"), new_status):
        return False
    obj = {**cached, "status": new_status}
    try:
        client.update_status(obj)
    except Conflict:
        m = meta(cached)
        fresh = client.get(m.get("namespace") or "", m.get("name") or "")
        if same_json(fresh.get("status"), new_status):
            return False
        client.update_status({**fresh, "status": new_status})
    return True


def delete_quietly(client: ResourceClient, namespace: str, name: str) -> None:
    """Delete; already gone is success."""
    with contextlib.suppress(NotFound):
        client.delete(namespace, name)


def merge_conditions(old: Iterable[Obj] | None, new: Iterable[Obj], now: str) -> list[Obj]:
    """New conditions keeping the old timestamps when nothing about them changed (no write churn).

    lastTransitionTime moves only when status flips; lastUpdateTime (when used) when reason or message change.
    """
    previous = {c.get("type"): c for c in old or () if isinstance(c, dict)}
    out: list[Obj] = []
    for c in new:
        c = dict(c)
        prev = previous.get(c.get("type"))
        same_status = prev is not None and prev.get("status") == c.get("status")
        same_text = same_status and prev is not None and (prev.get("reason"), prev.get("message")) == (
            c.get("reason"), c.get("message"))
        if "lastTransitionTime" in c:
            c["lastTransitionTime"] = (prev or {}).get("lastTransitionTime") if same_status else now
            c["lastTransitionTime"] = c["lastTransitionTime"] or now
        if "lastUpdateTime" in c:
            c["lastUpdateTime"] = ((prev or {}).get("lastUpdateTime") if same_text else now) or now
        out.append(c)
    return out
