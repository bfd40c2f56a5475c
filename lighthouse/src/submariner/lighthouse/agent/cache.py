"""Secondary indexes over informer caches: which objects belong to which exported service.

Informers cache by (namespace, name); reconciles ask "every K8s EndpointSlice of N/S", "my Lighthouse slices
of N/S". Indexes are kept current by informer handlers, so lookups are O(matches), not O(cache).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from submariner.broker.kube import Informer, Obj, ObjectKey, key_of

K = TypeVar("K", bound=Hashable)


class EchoFilter:
    """Remembers the resourceVersions of the agent's own writes, so their watch events (echoes) do not
    trigger another reconcile of the same service: a reconcile already knows what it wrote."""

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._rvs: dict[ObjectKey, set[str]] = {}
        self._limit = limit

    @staticmethod
    def _key(obj: Obj) -> ObjectKey:
        return key_of(obj)

    def wrote(self, obj: Obj) -> None:
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if not rv:
            return
        with self._lock:
            if len(self._rvs) >= self._limit:
                self._rvs.clear()
            self._rvs.setdefault(self._key(obj), set()).add(rv)

    def is_echo(self, obj: Obj) -> bool:
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        key = self._key(obj)
        with self._lock:
            rvs = self._rvs.get(key)
            if not rvs or rv not in rvs:
                return False
            rvs.discard(rv)
            if not rvs:
                del self._rvs[key]
            return True


class WriteMemo:
    """The agent's last write per object, to read through a cache that has not caught up with it yet
    (otherwise the next write uses a stale resourceVersion: a 409 and an extra GET)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._memo: dict[ObjectKey, tuple[str, Obj]] = {}
        self._limit = limit

    def wrote(self, replaced_rv: str, result: Obj) -> None:
        with self._lock:
            if len(self._memo) >= self._limit:
                self._memo.clear()
            self._memo[key_of(result)] = (replaced_rv, result)

    def read(self, key: ObjectKey, cached: Obj | None) -> Obj | None:
        """`cached`, or our newer write if the cache still shows the version that write replaced."""
        with self._lock:
            entry = self._memo.get(key)
            if entry is None:
                return cached
            replaced_rv, result = entry
            cached_rv = str(((cached or {}).get("metadata") or {}).get("resourceVersion") or "")
            if cached_rv == replaced_rv:
                return result
            del self._memo[key]  # the cache moved on: trust it again
            return cached


class Index(Generic[K]):
    """index key → object keys, from `key_fn(obj)` (None = not indexed)."""

    def __init__(self, informer: Informer, key_fn: Callable[[Obj], K | None],
                 on_change: Callable[[K], None] | None = None, echo: EchoFilter | None = None) -> None:
        self._informer = informer
        self._echo = echo
        self._key_fn = key_fn
        self._on_change = on_change
        self._lock = threading.Lock()
        self._index: dict[K, set[ObjectKey]] = {}
        self._of: dict[ObjectKey, K] = {}
        informer.add_handlers(on_add=self._add, on_update=self._update, on_delete=self._delete)

    def _set(self, obj: Obj) -> tuple[K | None, K | None]:
        okey = key_of(obj)
        new = self._key_fn(obj)
        with self._lock:
            old = self._of.pop(okey, None)
            if old is not None:
                keys = self._index.get(old)
                if keys is not None:
                    keys.discard(okey)
                    if not keys:
                        del self._index[old]
            if new is not None:
                self._of[okey] = new
                self._index.setdefault(new, set()).add(okey)
        return old, new

    def _notify(self, *keys: K | None) -> None:
        if self._on_change is None:
            return
        for k in dict.fromkeys(keys):
            if k is not None:
                self._on_change(k)

    def _add(self, obj: Obj) -> None:
        _, new = self._set(obj)
        if self._echo is None or not self._echo.is_echo(obj):
            self._notify(new)

    def _update(self, old_obj: Obj, obj: Obj) -> None:
        old, new = self._set(obj)
        if self._echo is None or not self._echo.is_echo(obj) or old != new:
            self._notify(old, new)

    def _delete(self, obj: Obj) -> None:
        okey = key_of(obj)
        with self._lock:
            old = self._of.pop(okey, None)
            if old is not None:
                keys = self._index.get(old)
                if keys is not None:
                    keys.discard(okey)
                    if not keys:
                        del self._index[old]
        self._notify(old)

    def get(self, key: K) -> list[Obj]:
        """The cached objects under `key` (shared: read-only)."""
        with self._lock:
            okeys = list(self._index.get(key, ()))
        out = []
        for ns, name in okeys:
            obj = self._informer.get(ns, name)
            if obj is not None:
                out.append(obj)
        return out

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._index)


def same_content(a: Obj, b: Obj, *, ignore_labels: tuple[str, ...] = (), status: bool = False) -> bool:
    """Equal as a write would see them (labels, annotations, spec-like fields; optionally status)."""
    from submariner.broker.kube import content_of

    def norm(o: Obj) -> Obj:
        meta = dict(o.get("metadata") or {})
        labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in ignore_labels}
        return {**o, "metadata": {**meta, "labels": labels}}

    if content_of(norm(a)) != content_of(norm(b)):
        return False
    return not status or (a.get("status") or {}) == (b.get("status") or {})


class TargetCache:
    """Lets a syncer transform skip writes its target already holds (restarts and relists re-sync every
    object; without this each one costs a GET on the target). Waits once, bounded, for the target cache."""

    def __init__(self, informer: Informer, wait: float = 10.0) -> None:
        self._informer = informer
        self._wait = wait
        self._waited = False

    def get(self, namespace: str, name: str) -> Obj | None:
        if not self._waited:
            self._informer.wait_for_sync(self._wait)
            self._waited = True
        if not self._informer.has_synced():
            return None
        return self._informer.get(namespace, name)
