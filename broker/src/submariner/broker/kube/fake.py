"""An in-memory API server behind the same seam as `Cluster`: what unit tests swap in.

Semantics follow the real server closely where syncers depend on them: one resourceVersion counter per
cluster, replayable watch history (410 once compacted), selector-filtered watches where an object leaving
the selection is DELETED, status subresource (PUT ignores status, PUT /status only changes status),
optional namespace existence checks. Fault injection: `fail_next`, `expire_watches`, `expire_next_watch`,
`disconnect_watches`, `blackout`, `set_unavailable`. Every write is recorded in `writes` so tests can
assert "no write churn".
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from submariner.broker.api.meta import APIResource
from submariner.broker.kube.client import (
    NAMESPACES,
    AlreadyExists,
    Conflict,
    Expired,
    Invalid,
    KubeError,
    NotFound,
    Obj,
    ObjectKey,
    ResourceClient,
    Unavailable,
    WatchEvent,
    WatchStream,
    deep_copy,
    field_selector_matches,
    key_of,
    label_selector_matches,
)


class Write(NamedTuple):
    """One recorded mutation: verb is create, update, update_status, patch or delete."""

    verb: str
    plural: str
    namespace: str
    name: str


@dataclass
class _Event:
    rv: int
    plural: str
    type: str
    obj: Obj
    old: Obj | None


class _Fault(NamedTuple):
    verb: str
    plural: str | None
    exc: KubeError


_END = object()


class _FakeWatch:
    """Queue-fed watch stream; `close()` ends it from any thread."""

    def __init__(self, cluster: FakeCluster, plural: str, namespace: str | None, label_selector: str,
                 field_selector: str, timeout_seconds: int | None) -> None:
        self._cluster = cluster
        self.plural = plural
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.deadline = time.monotonic() + timeout_seconds if timeout_seconds else None
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.frozen = False
        self.closed = False

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        ns, _ = key_of(obj)
        if self.namespace and ns != self.namespace:
            return False
        return label_selector_matches(
            self.label_selector, (obj.get("metadata") or {}).get("labels")
        ) and field_selector_matches(self.field_selector, obj)

    def offer(self, ev: _Event) -> None:
        """Deliver with the real server's selector semantics (entering = ADDED, leaving = DELETED)."""
        if self.closed or self.frozen:
            return
        now = ev.type != "DELETED" and self.matches(ev.obj)
        before = self.matches(ev.old)
        etype = ev.type
        if ev.type == "DELETED":
            if not self.matches(ev.obj):
                return
        elif now and not before and ev.old is not None:
            etype = "ADDED"
        elif before and not now:
            etype = "DELETED"
        elif not now:
            return
        self.queue.put(WatchEvent(etype, deep_copy(ev.obj)))

    def __iter__(self) -> _FakeWatch:
        return self

    def __next__(self) -> WatchEvent:
        if self.closed:
            raise StopIteration
        timeout = None
        if self.deadline is not None:
            timeout = max(0.0, self.deadline - time.monotonic())
        try:
            item = self.queue.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise StopIteration from None
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, KubeError):
            self.close()
            raise item
        assert isinstance(item, WatchEvent)
        return item

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put(_END)
            self._cluster._unregister(self)


class FakeResourceClient:
    """ResourceClient for one resource type of a FakeCluster."""

    def __init__(self, cluster: FakeCluster, res: APIResource) -> None:
        self._cluster = cluster
        self._res = res

    @property
    def resource(self) -> APIResource:
        return self._res

    def get(self, namespace: str, name: str) -> Obj:
        return self._cluster._get(self._res, namespace, name)

    def list(
        self, namespace: str | None = None, *, label_selector: str = "", field_selector: str = ""
    ) -> tuple[list[Obj], str]:
        return self._cluster._list(self._res, namespace, label_selector, field_selector)

    def watch(
        self,
        namespace: str | None = None,
        resource_version: str = "",
        *,
        label_selector: str = "",
        field_selector: str = "",
        timeout_seconds: int | None = None,
    ) -> WatchStream:
        return self._cluster._watch(
            self._res, namespace, resource_version, label_selector, field_selector, timeout_seconds
        )

    def create(self, obj: Obj) -> Obj:
        return self._cluster._create(self._res, obj)

    def update(self, obj: Obj) -> Obj:
        return self._cluster._update(self._res, obj, status=False)

    def update_status(self, obj: Obj) -> Obj:
        return self._cluster._update(self._res, obj, status=True)

    def patch(self, namespace: str, name: str, patch: Any, patch_type: str = "merge") -> Obj:
        if patch_type != "merge":
            raise KubeError(f"fake supports merge patches only, not {patch_type!r}", status=415)
        return self._cluster._patch(self._res, namespace, name, patch)

    def delete(self, namespace: str, name: str) -> None:
        self._cluster._delete(self._res, namespace, name)


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = _merge_patch(result.get(k), v)
    return result


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class FakeCluster:
    """In-memory API server implementing `ClientFactory`; thread-safe."""

    def __init__(
        self,
        name: str = "fake",
        *,
        enforce_namespaces: bool = False,
        no_status_subresource: frozenset[str] = frozenset({"configmaps", "secrets"}),
        history_limit: int = 10_000,
    ) -> None:
        self._name = name
        self.enforce_namespaces = enforce_namespaces
        self._no_status = no_status_subresource
        self._lock = threading.RLock()
        self._rv = 100  # never "0", which means "any version" to a watch
        self._objects: dict[str, dict[ObjectKey, Obj]] = {}
        self._history: deque[_Event] = deque(maxlen=history_limit)
        self._compacted_rv = self._rv
        self._watchers: list[_FakeWatch] = []
        self._faults: list[_Fault] = []
        self._expire_next: set[str | None] = set()
        self._unavailable = False
        self.writes: list[Write] = []

    @property
    def name(self) -> str:
        return self._name

    def resource(self, res: APIResource) -> ResourceClient:
        return FakeResourceClient(self, res)

    # ------------------------------------------------------------------ test controls

    def write_count(self, plural: str | None = None, verb: str | None = None) -> int:
        with self._lock:
            return sum(
                1 for w in self.writes
                if (plural is None or w.plural == plural) and (verb is None or w.verb == verb)
            )

    def fail_next(self, verb: str, exc: KubeError, *, plural: str | None = None, count: int = 1) -> None:
        """Make the next `count` calls of `verb` (get, list, watch, create, update, ...) raise `exc`."""
        with self._lock:
            self._faults.extend(_Fault(verb, plural, exc) for _ in range(count))

    def set_unavailable(self, down: bool) -> None:
        """Simulate the server going away: every call raises Unavailable and open watches end."""
        with self._lock:
            self._unavailable = down
            if down:
                for w in list(self._watchers):
                    w.queue.put(Unavailable(f"{self._name}: connection refused"))

    def expire_next_watch(self, plural: str | None = None) -> None:
        """The next watch call (of `plural`, or any) raises Expired whatever version it asks for."""
        with self._lock:
            self._expire_next.add(plural)

    def expire_watches(self, plural: str | None = None) -> None:
        """Open watches get an ERROR 410 and history is compacted (watching from older versions fails)."""
        with self._lock:
            self._compacted_rv = self._rv
            self._history.clear()
            for w in list(self._watchers):
                if plural is None or w.plural == plural:
                    w.frozen = False
                    w.queue.put(Expired("too old resource version", status=410, reason="Expired"))

    def disconnect_watches(self, plural: str | None = None) -> None:
        """End open watches cleanly (like a server-side timeout); clients re-watch from their last RV."""
        with self._lock:
            for w in list(self._watchers):
                if plural is None or w.plural == plural:
                    w.close()

    @contextlib.contextmanager
    def blackout(self, plural: str | None = None) -> Iterator[None]:
        """Events inside the block never reach open watches; at exit they expire (410), forcing a relist."""
        with self._lock:
            for w in self._watchers:
                if plural is None or w.plural == plural:
                    w.frozen = True
        try:
            yield
        finally:
            self.expire_watches(plural)

    def watch_count(self, plural: str | None = None) -> int:
        with self._lock:
            return sum(1 for w in self._watchers if plural is None or w.plural == plural)

    def objects(self, res: APIResource | str) -> list[Obj]:
        plural = res if isinstance(res, str) else res.plural
        with self._lock:
            return [deep_copy(o) for o in self._objects.get(plural, {}).values()]

    # ------------------------------------------------------------------ internals

    def _check(self, verb: str, plural: str) -> None:
        if self._unavailable:
            raise Unavailable(f"{self._name}: connection refused")
        for i, f in enumerate(self._faults):
            if f.verb == verb and (f.plural is None or f.plural == plural):
                del self._faults[i]
                raise f.exc

    def _table(self, plural: str) -> dict[ObjectKey, Obj]:
        return self._objects.setdefault(plural, {})

    def _key(self, res: APIResource, namespace: str | None, name: str) -> ObjectKey:
        return ((namespace or "") if res.namespaced else "", name)

    def _not_found(self, res: APIResource, name: str) -> NotFound:
        qualified = f"{res.plural}.{res.group}" if res.group else res.plural
        return NotFound(f'{qualified} "{name}" not found', status=404, reason="NotFound",
                        details={"name": name, "group": res.group, "kind": res.plural})

    def _emit(self, res: APIResource, etype: str, obj: Obj, old: Obj | None) -> None:
        ev = _Event(self._rv, res.plural, etype, obj, old)
        if len(self._history) == self._history.maxlen:
            self._compacted_rv = self._history[0].rv
        self._history.append(ev)
        for w in self._watchers:
            if w.plural == res.plural:
                w.offer(ev)

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _get(self, res: APIResource, namespace: str, name: str) -> Obj:
        with self._lock:
            self._check("get", res.plural)
            obj = self._table(res.plural).get(self._key(res, namespace, name))
            if obj is None:
                raise self._not_found(res, name)
            return deep_copy(obj)

    def _list(self, res: APIResource, namespace: str | None, label_selector: str,
              field_selector: str) -> tuple[list[Obj], str]:
        with self._lock:
            self._check("list", res.plural)
            items = [
                deep_copy(o) for (ns, _), o in sorted(self._table(res.plural).items())
                if (not namespace or not res.namespaced or ns == namespace)
                and label_selector_matches(label_selector, (o.get("metadata") or {}).get("labels"))
                and field_selector_matches(field_selector, o)
            ]
            return items, str(self._rv)

    def _watch(self, res: APIResource, namespace: str | None, resource_version: str, label_selector: str,
               field_selector: str, timeout_seconds: int | None) -> WatchStream:
        with self._lock:
            self._check("watch", res.plural)
            for p in (res.plural, None):
                if p in self._expire_next:
                    self._expire_next.discard(p)
                    raise Expired("too old resource version", status=410, reason="Expired")
            w = _FakeWatch(self, res.plural, namespace if res.namespaced else None, label_selector,
                           field_selector, timeout_seconds)
            if not resource_version or resource_version == "0":
                for obj in self._table(res.plural).values():
                    if w.matches(obj):
                        w.queue.put(WatchEvent("ADDED", deep_copy(obj)))
            else:
                since = int(resource_version)
                if since < self._compacted_rv:
                    raise Expired(f"too old resource version: {since} ({self._compacted_rv})",
                                  status=410, reason="Expired")
                for ev in self._history:
                    if ev.rv > since and ev.plural == res.plural:
                        w.offer(ev)
            self._watchers.append(w)
            return w

    def _unregister(self, w: _FakeWatch) -> None:
        with self._lock:
            if w in self._watchers:
                self._watchers.remove(w)

    def _check_namespace(self, res: APIResource, namespace: str) -> None:
        if not res.namespaced:
            return
        if not namespace:
            raise Invalid(f"{res.kind}: metadata.namespace is required", status=422, reason="Invalid")
        if self.enforce_namespaces and ("", namespace) not in self._table(NAMESPACES.plural):
            raise self._not_found(NAMESPACES, namespace)

    def _create(self, res: APIResource, obj: Obj) -> Obj:
        with self._lock:
            self._check("create", res.plural)
            new = deep_copy(obj)
            meta = new.setdefault("metadata", {})
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise Invalid(f"{res.kind}: metadata.name or generateName is required", status=422)
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            namespace = meta.get("namespace") or "" if res.namespaced else ""
            self._check_namespace(res, namespace)
            key = self._key(res, namespace, meta["name"])
            table = self._table(res.plural)
            if key in table:
                qualified = f"{res.plural}.{res.group}" if res.group else res.plural
                raise AlreadyExists(f'{qualified} "{meta["name"]}" already exists', status=409,
                                    reason="AlreadyExists")
            if not res.namespaced:
                meta.pop("namespace", None)
            for k in ("resourceVersion", "deletionTimestamp", "managedFields"):
                meta.pop(k, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            meta["generation"] = 1
            meta["resourceVersion"] = self._bump()
            new["apiVersion"] = res.api_version
            new["kind"] = res.kind
            if res.plural not in self._no_status:
                new.pop("status", None)
            table[key] = new
            self.writes.append(Write("create", res.plural, key[0], key[1]))
            self._emit(res, "ADDED", new, None)
            return deep_copy(new)

    def _replace(self, res: APIResource, verb: str, key: ObjectKey, old: Obj, new: Obj) -> Obj:
        meta = new["metadata"]
        for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
            else:
                meta.pop(k, None)
        if _spec_part(new) != _spec_part(old):
            meta["generation"] = int(old["metadata"].get("generation") or 0) + 1
        meta.pop("managedFields", None)
        new["apiVersion"] = res.api_version
        new["kind"] = res.kind
        if new == old:
            return deep_copy(old)  # a no-op write does not bump resourceVersion, like the real server
        meta["resourceVersion"] = self._bump()
        self._table(res.plural)[key] = new
        self.writes.append(Write(verb, res.plural, key[0], key[1]))
        self._emit(res, "MODIFIED", new, old)
        return deep_copy(new)

    def _update(self, res: APIResource, obj: Obj, *, status: bool) -> Obj:
        verb = "update_status" if status else "update"
        with self._lock:
            self._check(verb, res.plural)
            ns, name = key_of(obj)
            key = self._key(res, ns, name)
            old = self._table(res.plural).get(key)
            if old is None:
                raise self._not_found(res, name)
            rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            if rv and rv != old["metadata"]["resourceVersion"]:
                qualified = f"{res.plural}.{res.group}" if res.group else res.plural
                raise Conflict(f'Operation cannot be fulfilled on {qualified} "{name}": the object has been '
                               "modified; please apply your changes to the latest version and try again",
                               status=409, reason="Conflict")
            has_status = res.plural not in self._no_status
            if status:
                if not has_status:
                    raise self._not_found(res, name)
                new = deep_copy(old)
                if "status" in obj:
                    new["status"] = deep_copy(obj)["status"]
                else:
                    new.pop("status", None)
            else:
                new = deep_copy(obj)
                if has_status:
                    new.pop("status", None)
                    if "status" in old:
                        new["status"] = deep_copy(old["status"])
            new.setdefault("metadata", {})["resourceVersion"] = old["metadata"]["resourceVersion"]
            if not res.namespaced:
                new["metadata"].pop("namespace", None)
            return self._replace(res, verb, key, old, new)

    def _patch(self, res: APIResource, namespace: str, name: str, patch: Any) -> Obj:
        with self._lock:
            self._check("patch", res.plural)
            key = self._key(res, namespace, name)
            old = self._table(res.plural).get(key)
            if old is None:
                raise self._not_found(res, name)
            new = _merge_patch(deep_copy(old), patch)
            new["metadata"]["name"] = name
            if res.namespaced:
                new["metadata"]["namespace"] = key[0]
            rv = str((patch.get("metadata") or {}).get("resourceVersion") or "") if isinstance(patch, dict) \
                else ""
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise Conflict(f'the object "{name}" has been modified', status=409, reason="Conflict")
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return self._replace(res, "patch", key, old, new)

    def _delete(self, res: APIResource, namespace: str, name: str) -> None:
        with self._lock:
            self._check("delete", res.plural)
            key = self._key(res, namespace, name)
            table = self._table(res.plural)
            old = table.pop(key, None)
            if old is None:
                raise self._not_found(res, name)
            gone = deep_copy(old)
            gone["metadata"]["resourceVersion"] = self._bump()
            self.writes.append(Write("delete", res.plural, key[0], key[1]))
            self._emit(res, "DELETED", gone, old)
            if res.plural == NAMESPACES.plural:
                for plural, objs in self._objects.items():
                    for k in [k for k in objs if k[0] == name and plural != NAMESPACES.plural]:
                        o = objs.pop(k)
                        o["metadata"]["resourceVersion"] = self._bump()
                        self._emit(APIResource("", "", "", plural, "", True), "DELETED", o, o)
