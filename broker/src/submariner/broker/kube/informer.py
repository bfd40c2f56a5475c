"""List + watch of one resource type into a local cache, with add/update/delete callbacks.

Why not just watch: a watch only reports changes after a resourceVersion, and servers forget old versions
(410 Expired). The informer lists, watches from the list's version, re-watches from the last version it
saw after a disconnect, and relists after 410 — diffing the fresh list against its cache so handlers see
every change exactly once (vanished objects become deletes, changed ones updates).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from submariner.broker.kube.client import (
    Expired,
    KubeError,
    Obj,
    ObjectKey,
    ResourceClient,
    Unavailable,
    WatchStream,
    key_of,
    resource_version_of,
)

log = logging.getLogger(__name__)

AddHandler = Callable[[Obj], None]
UpdateHandler = Callable[[Obj, Obj], None]
DeleteHandler = Callable[[Obj], None]
Transform = Callable[[Obj], Obj]
_Objs = list[Obj]


@dataclass(frozen=True)
class _Handlers:
    on_add: AddHandler | None
    on_update: UpdateHandler | None
    on_delete: DeleteHandler | None


class Informer:
    """Cache of one resource type kept current by a background list/watch thread.

    Handlers run on that thread, in event order, and must be quick (enqueue work elsewhere). Cached
    objects are shared: treat them as read-only.

    `transform` (optional) slims every object before it is cached and handed to the handlers (CoreDNS's
    informers do the same with a TransformFunc): return the object, or a smaller one with what the consumer
    reads. Keep `metadata.name`, `metadata.namespace` and `metadata.resourceVersion`: the relist diff needs
    them. It runs on the informer thread, may modify the object it is given (which is not shared yet) and
    must not raise; an object it fails on is cached as received (minus managedFields).

    `keep` (optional) goes further for consumers that copy what they need out of every add and update
    (a model): the handlers get the transformed object, the cache only `keep(transformed)`. `get`, `list`,
    `add_handlers`' replay, the old object of an update and the object of a delete found by a relist are
    then kept objects: keep what those need (at least name, namespace and resourceVersion). Same rules as
    `transform`; when it fails the transformed object is cached.
    """

    def __init__(
        self,
        client: ResourceClient,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        name: str = "",
        on_add: AddHandler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: DeleteHandler | None = None,
        watch_timeout: int = 300,
        backoff: tuple[float, float] = (0.2, 30.0),
        transform: Transform | None = None,
        keep: Transform | None = None,
    ) -> None:
        self._client = client
        self._transform = transform
        self._keep = keep
        self._namespace = namespace or None
        self._label_selector = label_selector
        self._field_selector = field_selector
        self.name = name or client.resource.plural
        self._watch_timeout = watch_timeout
        self._backoff = backoff
        self._handlers: list[_Handlers] = []
        if on_add or on_update or on_delete:
            self._handlers.append(_Handlers(on_add, on_update, on_delete))
        self._cache: dict[ObjectKey, Obj] = {}
        self._lock = threading.Lock()  # guards _cache and _stream
        self._dispatch = threading.RLock()  # orders cache changes + handler calls vs add_handlers
        self._synced = threading.Event()
        self._stopped = threading.Event()
        self._stream: WatchStream | None = None
        self._thread: threading.Thread | None = None
        self._rv = ""
        self.relists = 0

    # ------------------------------------------------------------------ public

    def add_handlers(
        self,
        *,
        on_add: AddHandler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: DeleteHandler | None = None,
    ) -> None:
        """Register more handlers; objects already cached are replayed to `on_add` first."""
        with self._dispatch:
            if on_add is not None:
                for obj in self.list():
                    self._call(on_add, obj)
            self._handlers.append(_Handlers(on_add, on_update, on_delete))

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def has_synced(self) -> bool:
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        """True once the first list has been delivered to the handlers; False on timeout or stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._synced.is_set():
            if self._stopped.is_set():
                return False
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                return False
            self._synced.wait(left)
        return True

    def get(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self._cache.get((namespace or "", name))

    def list(self) -> list[Obj]:
        with self._lock:
            return list(self._cache.values())

    @property
    def resource_version(self) -> str:
        return self._rv

    # ------------------------------------------------------------------ loop

    def _run(self) -> None:
        delay = self._backoff[0]
        need_list = True
        while not self._stopped.is_set():
            started = time.monotonic()
            got_events = False
            try:
                if need_list:
                    items, self._rv = self._client.list(
                        self._namespace, label_selector=self._label_selector,
                        field_selector=self._field_selector,
                    )
                    self._replace(items)
                    need_list = False
                timeout = int(self._watch_timeout * (1 + random.random()))
                stream = self._client.watch(
                    self._namespace, self._rv, label_selector=self._label_selector,
                    field_selector=self._field_selector, timeout_seconds=timeout,
                )
                with self._lock:
                    self._stream = stream
                if self._stopped.is_set():
                    stream.close()
                for event in stream:
                    got_events = True
                    self._apply(event.type, event.object)
                    if self._stopped.is_set():
                        break
            except Expired:
                log.info("informer watch expired informer=%s rv=%s action=relist", self.name, self._rv)
                need_list = True
                delay = self._backoff[0]
                continue
            except Unavailable as e:
                log.warning("informer server unavailable informer=%s error=%r retry_s=%.1f",
                            self.name, e.message, delay)
            except KubeError as e:
                log.warning("informer error informer=%s status=%d error=%r retry_s=%.1f",
                            self.name, e.status, e.message, delay)
                need_list = True
            except Exception:
                log.exception("informer unexpected error informer=%s retry_s=%.1f", self.name, delay)
                need_list = True
            else:
                if got_events or time.monotonic() - started > 1.0:
                    delay = self._backoff[0]
                    continue
            finally:
                with self._lock:
                    self._stream = None
            if self._stopped.wait(delay * (0.5 + random.random() / 2)):
                break
            delay = min(delay * 2, self._backoff[1])

    def _replace(self, items: _Objs) -> None:
        """Apply a full list: synthesise the events the informer missed since its last watch."""
        full: dict[ObjectKey, Obj] = {}
        for obj in items:
            obj = self._slim(obj)
            full[key_of(obj)] = obj
        fresh = full if self._keep is None else {key: self._kept(obj) for key, obj in full.items()}
        # The listed objects go all at once (and the caller's list must not keep them alive while it watches):
        # a large list then leaves whole free arenas behind, not holes between what the transforms kept.
        items.clear()
        with self._dispatch:
            with self._lock:
                old = self._cache
                self._cache = fresh
            if self._synced.is_set():
                self.relists += 1
            for key, obj in old.items():
                if key not in fresh:
                    self._notify("delete", obj, None)
            for key, obj in full.items():
                prev = old.get(key)
                if prev is None:
                    self._notify("add", obj, None)
                elif resource_version_of(prev) != resource_version_of(obj):
                    self._notify("update", prev, obj)
            self._synced.set()
        log.debug("informer listed informer=%s items=%d rv=%s", self.name, len(fresh), self._rv)

    def _apply(self, etype: str, obj: Obj) -> None:
        rv = resource_version_of(obj)
        if etype == "BOOKMARK":
            if rv:
                self._rv = rv
            return
        obj = self._slim(obj)
        key = key_of(obj)
        with self._dispatch:
            with self._lock:
                prev = self._cache.get(key)
                if etype == "DELETED":
                    self._cache.pop(key, None)
                else:
                    self._cache[key] = obj if self._keep is None else self._kept(obj)
            if rv:
                self._rv = rv
            if etype == "DELETED":
                if prev is not None:
                    self._notify("delete", obj, None)
            elif prev is None:
                self._notify("add", obj, None)
            elif resource_version_of(prev) != rv:
                self._notify("update", prev, obj)

    def _slim(self, obj: Obj) -> Obj:
        _strip(obj)
        if self._transform is None:
            return obj
        try:
            return self._transform(obj)
        except Exception:
            log.exception("informer transform failed informer=%s", self.name)
            return obj

    def _kept(self, obj: Obj) -> Obj:
        assert self._keep is not None
        try:
            return self._keep(obj)
        except Exception:
            log.exception("informer keep failed informer=%s", self.name)
            return obj

    def _notify(self, kind: str, a: Obj, b: Obj | None) -> None:
        for h in self._handlers:
            if kind == "add" and h.on_add is not None:
                self._call(h.on_add, a)
            elif kind == "update" and h.on_update is not None and b is not None:
                self._call(h.on_update, a, b)
            elif kind == "delete" and h.on_delete is not None:
                self._call(h.on_delete, a)

    def _call(self, fn: Callable[..., None], *args: Obj) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("informer handler failed informer=%s handler=%s", self.name,
                          getattr(fn, "__qualname__", fn))


def _strip(obj: Obj) -> None:
    """managedFields are large and never needed by syncers."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
