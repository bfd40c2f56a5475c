"""The resource syncer (Admiral's `syncer.ResourceSyncer`, lighthouse-agent.md §10.2-§10.3).

One informer on the source feeds a per-key ordered queue of create/update/delete operations that a single
worker hands to a federator. Why per-key op lists rather than a plain key queue: a delete must reach the
target even after the source object is gone, and delete→create must not be collapsed into "exists".
Echo prevention: objects written to the broker carry `submariner-io/clusterID`; exporters skip objects
that carry it, importers skip those without it or carrying their own ID.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from submariner.broker.api.labels import CLUSTER_ID, ORIGINATING_NAMESPACE
from submariner.broker.kube.apply import content_of
from submariner.broker.kube.client import (
    KubeError,
    NotFound,
    Obj,
    ObjectKey,
    ResourceClient,
    deep_copy,
    key_of,
    label_selector_matches,
    missing_namespace,
)
from submariner.broker.kube.informer import Informer
from submariner.broker.kube.workqueue import WorkQueue
from submariner.broker.sync.federate import Federator, NoopFederator

log = logging.getLogger(__name__)


class Direction(enum.Enum):
    """Which objects a syncer moves, judged by the clusterID label (§10.3)."""

    LOCAL_TO_REMOTE = "local-to-remote"
    """Only objects without a clusterID label (made here)."""
    REMOTE_TO_LOCAL = "remote-to-local"
    """Only objects with a clusterID label other than the local one (made elsewhere)."""
    NONE = "none"
    """No filter."""


class Op(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


Transform = Callable[[Obj, int, Op], tuple[Obj | None, bool]]
"""(object copy, times requeued, op) -> (object to federate or None to skip, requeue?)."""
OnSuccessfulSync = Callable[[Obj, Op], bool]
"""Called after a successful distribute/delete; True = requeue."""
ResourcesEquivalent = Callable[[Obj, Obj], bool]
ShouldProcess = Callable[[Obj, Op], bool]
Lister = Callable[[], list[Obj]]


def default_resources_equivalent(old: Obj, new: Obj) -> bool:
    """Labels, annotations and content (spec/data/...; not status) equal: the update is not synced."""
    return content_of(old) == content_of(new)


def process_every_update(old: Obj, new: Obj) -> bool:
    """Equivalence that never matches: use when status changes must be synced too."""
    return False


@dataclass
class SyncerConfig:
    """What to watch, which way it flows, and where it goes."""

    name: str
    source: ResourceClient
    source_namespace: str = ""
    """"" = all namespaces (then `submariner-io/originatingNamespace` is stamped on federated objects)."""
    label_selector: str = ""
    field_selector: str = ""
    local_cluster_id: str = ""
    direction: Direction = Direction.NONE
    federator: Federator = field(default_factory=NoopFederator)
    transform: Transform | None = None
    on_successful_sync: OnSuccessfulSync | None = None
    resources_equivalent: ResourcesEquivalent = default_resources_equivalent
    """Updates judged equivalent are dropped; the default ignores status (see `process_every_update`)."""
    should_process: ShouldProcess | None = None
    wait_for_cache_sync: bool = True
    namespace_informer: Informer | None = None
    """Namespaces of the target: a distribute failing on a missing namespace waits for it to appear
    (and objects are re-synced when it is recreated). Without one, such failures retry with backoff."""
    retry_backoff: tuple[float, float] = (0.05, 30.0)


class _PendingOp(NamedTuple):
    op: Op
    obj: Obj | None  # recorded final state for deletes; create/update read the latest cached object


class _Outcome(enum.Enum):
    DONE = 1
    RETRY = 2
    PARKED = 3


class ResourceSyncer:
    """Syncs one resource type from a source cluster through a federator; see module docstring."""

    def __init__(self, config: SyncerConfig) -> None:
        self.config = config
        self._informer = Informer(
            config.source,
            namespace=config.source_namespace or None,
            label_selector=config.label_selector,
            field_selector=config.field_selector,
            name=config.name,
            on_add=self._on_add,
            on_update=self._on_update,
            on_delete=self._on_delete,
        )
        self._lock = threading.Lock()
        self._ops: dict[ObjectKey, deque[_PendingOp]] = {}
        self._inflight: set[ObjectKey] = set()
        self._parked: dict[str, set[ObjectKey]] = {}
        # Keys only; the ordered ops per key live in `_ops` (a key's ops are never run by two workers at once).
        self._queue: WorkQueue[ObjectKey] = WorkQueue(config.retry_backoff)
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self.stats: dict[str, int] = {"distributed": 0, "deleted": 0, "skipped": 0, "failed": 0}

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float | None = None) -> None:
        """Start watching and syncing; with `wait_for_cache_sync`, return once the source is listed
        (TimeoutError after `timeout` seconds)."""
        if self.config.namespace_informer is not None:
            self.config.namespace_informer.add_handlers(
                on_add=self._namespace_added, on_delete=self._namespace_deleted
            )
        self._informer.start()
        self._spawn(self._work, "worker")
        if self.config.wait_for_cache_sync and not self._informer.wait_for_sync(timeout):
            raise TimeoutError(f"syncer {self.config.name}: source not listed within {timeout}s")
        log.info("syncer started syncer=%s direction=%s source_namespace=%s",
                 self.config.name, self.config.direction.value, self.config.source_namespace or "*")

    def stop(self) -> None:
        self._stopped.set()
        self._informer.stop()
        self._queue.shutdown()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(5)

    @property
    def informer(self) -> Informer:
        """The source cache (read-only use: lookups, `relists`)."""
        return self._informer

    def has_synced(self) -> bool:
        return self._informer.has_synced()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        return self._informer.wait_for_sync(timeout)

    def idle(self) -> bool:
        """Nothing queued, in flight or waiting to retry (parked keys do not count)."""
        with self._lock:
            parked: set[ObjectKey] = set().union(*self._parked.values())
            pending = any(k not in parked for k in self._ops)
        return self._informer.has_synced() and not pending and self._queue.idle()

    def wait_idle(self, timeout: float = 10.0, settle: float = 0.05) -> bool:
        """Wait until idle for `settle` seconds in a row (tests: "steady state")."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        while time.monotonic() < deadline:
            if self.idle():
                since = since or time.monotonic()
                if time.monotonic() - since >= settle:
                    return True
            else:
                since = None
            time.sleep(0.01)
        return False

    # ------------------------------------------------------------------ public API

    def get_resource(self, name: str, namespace: str = "") -> Obj | None:
        """The cached source object (a copy), or None."""
        obj = self._informer.get(namespace, name)
        return deep_copy(obj) if obj is not None else None

    def list_resources(self, label_selector: str = "") -> list[Obj]:
        """Copies of cached source objects; blocks until the cache has synced (or the syncer stops)."""
        while not self._informer.wait_for_sync(1.0):
            if self._stopped.is_set():
                return []
        return [
            deep_copy(o) for o in self._informer.list()
            if not label_selector
            or label_selector_matches(label_selector, (o.get("metadata") or {}).get("labels"))
        ]

    def requeue_resource(self, name: str, namespace: str = "") -> None:
        """Sync this object again (e.g. something its transform depends on changed)."""
        key = (namespace if self.config.source.resource.namespaced else "", name)
        if self._informer.get(*key) is not None:
            self._record(key, Op.UPDATE, None)

    def reconcile(self, lister: Lister) -> None:
        """Delete orphans, in the background: objects `lister` returns (the target side) whose source is
        no longer in this syncer's cache get a delete op."""
        self._spawn(lambda: self._reconcile(lister), "reconcile")

    # ------------------------------------------------------------------ events

    def _on_add(self, obj: Obj) -> None:
        if self._should_process(obj, Op.CREATE):
            self._record(key_of(obj), Op.CREATE, None)

    def _on_update(self, old: Obj, new: Obj) -> None:
        if self.config.resources_equivalent(old, new):
            return
        if self._should_process(new, Op.UPDATE):
            self._record(key_of(new), Op.UPDATE, None)

    def _on_delete(self, obj: Obj) -> None:
        if self._should_process(obj, Op.DELETE):
            self._record(key_of(obj), Op.DELETE, deep_copy(obj))

    def _should_process(self, obj: Obj, op: Op) -> bool:
        check = self.config.should_process
        return check is None or check(obj, op)

    def _record(self, key: ObjectKey, op: Op, obj: Obj | None) -> None:
        with self._lock:
            self._record_locked(key, op, obj)
        self._queue.add(key)

    def _record_locked(self, key: ObjectKey, op: Op, obj: Obj | None) -> None:
        ops = self._ops.setdefault(key, deque())
        last = ops[-1] if ops else None
        head_in_flight = key in self._inflight and len(ops) == 1
        if op is not Op.DELETE and last is not None and last.op is not Op.DELETE and not head_in_flight:
            return  # a pending create/update already reads the latest cached object
        ops.append(_PendingOp(op, obj))

    # ------------------------------------------------------------------ worker

    def _spawn(self, target: Callable[[], None], role: str) -> None:
        t = threading.Thread(target=target, name=f"syncer-{self.config.name}-{role}", daemon=True)
        self._threads.append(t)
        t.start()

    def _work(self) -> None:
        while True:
            key = self._queue.get()
            if key is None:
                return
            try:
                outcome = self._process(key)
            except Exception:
                log.exception("syncer unexpected error syncer=%s key=%s", self.config.name, "/".join(key))
                outcome = _Outcome.RETRY
            if outcome is _Outcome.RETRY:
                self._queue.retry(key)
            else:
                self._queue.forget(key)
            self._queue.done(key)

    def _process(self, key: ObjectKey) -> _Outcome:
        with self._lock:
            ops = self._ops.get(key)
            if not ops:
                self._ops.pop(key, None)
                return _Outcome.DONE
            head = ops[0]
            self._inflight.add(key)
        outcome = _Outcome.RETRY  # if _sync raises, the op stays at the head and is retried
        try:
            obj = head.obj if head.op is Op.DELETE else self._informer.get(*key)
            # an object gone from the cache is not created/updated: its delete op follows
            outcome = self._sync(key, head.op, deep_copy(obj)) if obj is not None else _Outcome.DONE
        finally:
            with self._lock:
                self._inflight.discard(key)
                more = False
                if outcome is _Outcome.DONE:
                    ops.popleft()
                    more = bool(ops)
                    if not more and self._ops.get(key) is ops:
                        del self._ops[key]
        if more:
            self._queue.add(key)
        return outcome

    def _direction_allows(self, obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        direction = self.config.direction
        if direction is Direction.NONE:
            return True
        if CLUSTER_ID not in labels:
            return direction is Direction.LOCAL_TO_REMOTE
        return direction is Direction.REMOTE_TO_LOCAL and labels[CLUSTER_ID] != self.config.local_cluster_id

    def _sync(self, key: ObjectKey, op: Op, obj: Obj) -> _Outcome:
        name, where = self.config.name, "/".join(key)
        if not self._direction_allows(obj):
            self.stats["skipped"] += 1
            return _Outcome.DONE
        cluster_id = ((obj.get("metadata") or {}).get("labels") or {}).get(CLUSTER_ID)
        requeue = False
        result = obj
        if self.config.transform is not None:
            transformed, requeue = self.config.transform(obj, self._queue.requeues(key), op)
            if transformed is None:
                log.debug("syncer transform skipped syncer=%s op=%s key=%s requeue=%s", name, op, where,
                          requeue)
                return _Outcome.RETRY if requeue else _Outcome.DONE
            result = transformed
        labels = result.setdefault("metadata", {}).setdefault("labels", {})
        if cluster_id is not None:
            labels[CLUSTER_ID] = cluster_id
        if not self.config.source_namespace and key[0]:
            labels[ORIGINATING_NAMESPACE] = key[0]
        try:
            if op is Op.DELETE:
                self.config.federator.delete(result)
                self.stats["deleted"] += 1
            else:
                self.config.federator.distribute(result)
                self.stats["distributed"] += 1
        except NotFound as e:
            if op is not Op.DELETE:
                namespace = missing_namespace(e)
                if namespace is not None:
                    return self._park(key, namespace, op)
                return self._failed(op, where, e)
        except KubeError as e:
            return self._failed(op, where, e)
        log.debug("syncer synced syncer=%s op=%s key=%s", name, op, where)
        if self.config.on_successful_sync is not None and self.config.on_successful_sync(result, op):
            requeue = True
        return _Outcome.RETRY if requeue else _Outcome.DONE

    def _failed(self, op: Op, where: str, e: KubeError) -> _Outcome:
        self.stats["failed"] += 1
        log.warning("syncer failed syncer=%s op=%s key=%s status=%d error=%r action=retry",
                    self.config.name, op, where, e.status, e.message)
        return _Outcome.RETRY

    # ------------------------------------------------------------------ missing namespaces

    def _park(self, key: ObjectKey, namespace: str, op: Op) -> _Outcome:
        informer = self.config.namespace_informer
        if informer is None:
            log.info("syncer target namespace missing syncer=%s op=%s key=%s namespace=%s action=retry",
                     self.config.name, op, "/".join(key), namespace)
            return _Outcome.RETRY
        with self._lock:
            self._parked.setdefault(namespace, set()).add(key)
        log.info("syncer target namespace missing syncer=%s op=%s key=%s namespace=%s action=wait",
                 self.config.name, op, "/".join(key), namespace)
        if informer.get("", namespace) is not None:  # it appeared while we were failing
            self._unpark(namespace)
        return _Outcome.PARKED

    def _unpark(self, namespace: str) -> None:
        with self._lock:
            keys = self._parked.pop(namespace, set())
        for key in keys:
            self._queue.add(key)

    def _namespace_added(self, ns: Obj) -> None:
        self._unpark(key_of(ns)[1])

    def _namespace_deleted(self, ns: Obj) -> None:
        """Objects landing in a deleted namespace are re-synced when it is recreated."""
        namespace = key_of(ns)[1]
        target_ns = getattr(self.config.federator, "target_namespace_for", None)
        with self._lock:
            for obj in self._informer.list():
                lands_in = target_ns(obj) if target_ns is not None else key_of(obj)[0]
                if lands_in == namespace:
                    key = key_of(obj)
                    self._parked.setdefault(namespace, set()).add(key)
                    self._record_locked(key, Op.UPDATE, None)

    # ------------------------------------------------------------------ reconcile

    def _reconcile(self, lister: Lister) -> None:
        while not self._informer.wait_for_sync(1.0):
            if self._stopped.is_set():
                return
        try:
            candidates = lister()
        except Exception:
            log.exception("syncer reconcile list failed syncer=%s", self.config.name)
            return
        orphans = 0
        source_ns = self.config.source_namespace
        namespaced = self.config.source.resource.namespaced
        for target_obj in candidates:
            obj = deep_copy(target_obj)
            meta = obj.setdefault("metadata", {})
            labels = meta.setdefault("labels", {})
            cluster_id = labels.get(CLUSTER_ID)
            direction = self.config.direction
            if direction is Direction.REMOTE_TO_LOCAL:
                if cluster_id is None or cluster_id == self.config.local_cluster_id:
                    continue
                if source_ns:
                    meta["namespace"] = source_ns
            elif direction is Direction.LOCAL_TO_REMOTE:
                if cluster_id != self.config.local_cluster_id:
                    continue
                del labels[CLUSTER_ID]
                if source_ns:
                    meta["namespace"] = source_ns
                elif labels.get(ORIGINATING_NAMESPACE):
                    meta["namespace"] = labels[ORIGINATING_NAMESPACE]
            if not namespaced:
                meta.pop("namespace", None)
            key = key_of(obj)
            with self._lock:
                # Under the lock: an add event recorded after this check queues its create after our delete.
                if self._informer.get(*key) is not None:
                    continue
                self._record_locked(key, Op.DELETE, obj)
            self._queue.add(key)
            orphans += 1
        log.info("syncer reconciled syncer=%s candidates=%d orphans=%d", self.config.name,
                 len(candidates), orphans)
