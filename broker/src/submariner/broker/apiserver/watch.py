"""Watch fan-out: a bounded history of committed events and the live watchers of each resource.

An event is encoded once (`{"type":..,"object":..}`) and the same bytes go to every watcher that matches.
A watcher only appends to its buffer; the hub wakes all buffered watchers together a moment later
(`flush_delay`), so a burst of writes costs one socket write per watcher instead of one per event.
History keeps only encoded bytes (objects are decoded again only to replay a filtered watch).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import ApiError
from .store import Event

Matcher = Callable[[dict[str, Any]], bool]

_TYPES = {t: b'{"type":"' + t.encode() + b'","object":' for t in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK")}


def encode_event(event_type: str, data: bytes) -> bytes:
    return _TYPES[event_type] + data + b"}\n"


@dataclass(eq=False, slots=True)
class Watcher:
    """One open watch: filters plus a buffer its HTTP writer drains."""

    key: str
    namespace: str | None
    matcher: Matcher | None
    # The apiVersion this watch serves (CRDs may serve several versions of one stored object); None = as stored.
    api_version: str | None = None
    # Renders an object for this watch (server-side tables for `kubectl get -w`); None = the object itself.
    render: Callable[[dict[str, Any]], bytes] | None = None
    pending: list[bytes] = field(default_factory=list)
    pending_bytes: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    scheduled: bool = False
    overflowed: bool = False
    closed: bool = False

    def push(self, chunk: bytes) -> None:
        """Buffer a chunk and wake the writer at once (for synthetic events before the watch starts)."""
        self.buffer(chunk)
        self.wakeup.set()

    def buffer(self, chunk: bytes) -> None:
        if self.closed:
            return
        self.pending.append(chunk)
        self.pending_bytes += len(chunk)
        if self.pending_bytes > WatchHub.max_pending_bytes:
            self.overflowed = True

    def drain(self) -> bytes:
        chunk = b"".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        self.wakeup.clear()
        return chunk

    @property
    def plain(self) -> bool:
        return self.matcher is None and self.render is None


@dataclass(slots=True)
class _Past:
    """A retained event: bytes only; the previous state's bytes for selector transitions."""

    type: str
    key: str
    namespace: str
    rv: int
    data: bytes
    old_data: bytes | None


class WatchHub:
    """Routes store events to watchers and replays history for `resourceVersion=N` watches."""

    max_pending_bytes = 64 * 1024 * 1024

    def __init__(self, start_rv: int, history_size: int = 100_000, flush_delay: float = 0.002) -> None:
        self._history: deque[_Past] = deque(maxlen=history_size)
        # Events at or below this resourceVersion can no longer be replayed.
        self.compacted_rv = start_rv
        self._watchers: dict[str, list[Watcher]] = {}
        # The bytes of each object's latest event, so the next event can reference them as `old_data`.
        self._latest: dict[tuple[str, str, str], bytes] = {}
        self.flush_delay = flush_delay
        self._dirty: list[Watcher] = []
        self._flush_handle: asyncio.TimerHandle | None = None

    def on_event(self, event: Event) -> None:
        history = self._history
        if len(history) == history.maxlen:
            self.compacted_rv = history[0].rv
        ident = (event.key, event.namespace, event.name)
        old_data = self._latest.pop(ident, None) if event.type == "DELETED" else self._latest.get(ident)
        if event.type != "DELETED":
            self._latest[ident] = event.data
        history.append(_Past(event.type, event.key, event.namespace, event.rv, event.data, old_data))
        watchers = self._watchers.get(event.key)
        if not watchers:
            return
        plain: bytes | None = None
        versioned: dict[str, bytes] = {}
        for w in watchers:
            if w.closed or (w.namespace is not None and w.namespace != event.namespace):
                continue
            if w.plain:
                if w.api_version is None or w.api_version == event.obj.get("apiVersion"):
                    if plain is None:
                        plain = encode_event(event.type, event.data)
                    chunk: bytes | None = plain
                else:
                    chunk = versioned.get(w.api_version)
                    if chunk is None:
                        chunk = versioned[w.api_version] = encode_event(
                            event.type, _as_version(event.obj, w.api_version))
            else:
                chunk = self._filtered(w, event.type, event.obj, event.old, event.data)
            if chunk is not None:
                self._buffer(w, chunk)

    def _buffer(self, w: Watcher, chunk: bytes) -> None:
        w.buffer(chunk)
        if not w.scheduled:
            w.scheduled = True
            self._dirty.append(w)
            if self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_later(self.flush_delay, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        for w in dirty:
            w.scheduled = False
            w.wakeup.set()

    @staticmethod
    def _filtered(w: Watcher, event_type: str, obj: dict[str, Any], old: dict[str, Any] | None,
                  data: bytes) -> bytes | None:
        """Selector semantics: an object entering the selection is ADDED, one leaving it is DELETED."""
        if w.matcher is not None:
            now = event_type != "DELETED" and w.matcher(obj)
            before = old is not None and w.matcher(old)
            if event_type == "DELETED":
                if not before:
                    return None
            elif now and not before:
                event_type = "ADDED"
            elif before and not now:
                event_type = "DELETED"
            elif not now:
                return None
        if w.render is not None:
            return encode_event(event_type, w.render(obj))
        if w.api_version is not None and w.api_version != obj.get("apiVersion"):
            return encode_event(event_type, _as_version(obj, w.api_version))
        return encode_event(event_type, data)

    def subscribe(self, watcher: Watcher, since_rv: int | None) -> None:
        """Register a watcher; with `since_rv`, first queue every retained event after it (or 410)."""
        if since_rv is not None:
            if since_rv < self.compacted_rv:
                raise ApiError(410, f"too old resource version: {since_rv} ({self.compacted_rv})",
                               reason="Expired")
            for past in self._history:
                if past.rv <= since_rv or past.key != watcher.key:
                    continue
                if watcher.namespace is not None and watcher.namespace != past.namespace:
                    continue
                if watcher.plain and watcher.api_version is None:
                    chunk: bytes | None = encode_event(past.type, past.data)
                else:
                    obj = orjson.loads(past.data)
                    old = orjson.loads(past.old_data) if past.old_data is not None else None
                    chunk = self._filtered(watcher, past.type, obj, old, past.data)
                if chunk is not None:
                    watcher.push(chunk)
        self._watchers.setdefault(watcher.key, []).append(watcher)

    def unsubscribe(self, watcher: Watcher) -> None:
        watcher.closed = True
        watchers = self._watchers.get(watcher.key)
        if watchers and watcher in watchers:
            watchers.remove(watcher)

    def close_key(self, key: str) -> None:
        """End every watch of a resource (its CRD was deleted)."""
        for w in self._watchers.pop(key, []):
            w.closed = True
            w.wakeup.set()

    def close_all(self) -> None:
        """End every watch (server shutdown)."""
        for key in list(self._watchers):
            self.close_key(key)

    def watcher_count(self) -> int:
        return sum(len(v) for v in self._watchers.values())


def _as_version(obj: dict[str, Any], api_version: str) -> bytes:
    return orjson.dumps({**obj, "apiVersion": api_version})
