"""Watch fan-out: a bounded history of committed events and the live watchers of each resource.

An event is encoded once (`{"type":..,"object":..}`) and the same bytes go to every watcher that matches.
A watcher only appends to a list and wakes its writer task, so a write costs little per watcher; under
load the writer sends many events in one chunk.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    # Rewrites a stored object's bytes for this watch (another served version of a CRD); None = as stored.
    recode: Callable[[dict[str, Any]], bytes] | None = None
    pending: list[bytes] = field(default_factory=list)
    pending_bytes: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False
    closed: bool = False

    def push(self, chunk: bytes) -> None:
        if self.closed:
            return
        self.pending.append(chunk)
        self.pending_bytes += len(chunk)
        if self.pending_bytes > WatchHub.max_pending_bytes:
            self.overflowed = True
        self.wakeup.set()

    def drain(self) -> bytes:
        chunk = b"".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        self.wakeup.clear()
        return chunk


class WatchHub:
    """Routes store events to watchers and replays history for `resourceVersion=N` watches."""

    max_pending_bytes = 64 * 1024 * 1024

    def __init__(self, start_rv: int, history_size: int = 100_000) -> None:
        self._history: deque[Event] = deque(maxlen=history_size)
        # Events at or below this resourceVersion can no longer be replayed.
        self.compacted_rv = start_rv
        self._watchers: dict[str, list[Watcher]] = {}

    def on_event(self, event: Event) -> None:
        history = self._history
        if len(history) == history.maxlen:
            self.compacted_rv = history[0].rv
        history.append(event)
        watchers = self._watchers.get(event.key)
        if not watchers:
            return
        plain: bytes | None = None
        for w in watchers:
            if w.namespace is not None and w.namespace != event.namespace:
                continue
            if w.matcher is None and w.recode is None:
                if plain is None:
                    plain = encode_event(event.type, event.data)
                w.push(plain)
            else:
                chunk = self._filtered(w, event)
                if chunk is not None:
                    w.push(chunk)

    @staticmethod
    def _filtered(w: Watcher, event: Event) -> bytes | None:
        """Selector semantics: an object entering the selection is ADDED, one leaving it is DELETED."""
        event_type = event.type
        if w.matcher is not None:
            now = event.type != "DELETED" and w.matcher(event.obj)
            before = event.old is not None and w.matcher(event.old)
            if event.type == "DELETED":
                if not before:
                    return None
            elif now and not before:
                event_type = "ADDED"
            elif before and not now:
                event_type = "DELETED"
            elif not now:
                return None
        data = w.recode(event.obj) if w.recode is not None else event.data
        return encode_event(event_type, data)

    def subscribe(self, watcher: Watcher, since_rv: int | None) -> None:
        """Register a watcher; with `since_rv`, first queue every retained event after it (or 410)."""
        if since_rv is not None:
            if since_rv < self.compacted_rv:
                raise ApiError(410, f"too old resource version: {since_rv} ({self.compacted_rv})",
                               reason="Expired")
            for event in self._history:
                if event.rv <= since_rv or event.key != watcher.key:
                    continue
                if watcher.namespace is not None and watcher.namespace != event.namespace:
                    continue
                chunk = self._filtered(watcher, event) if (watcher.matcher or watcher.recode) else \
                    encode_event(event.type, event.data)
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

    def watcher_count(self) -> int:
        return sum(len(v) for v in self._watchers.values())

    def close_all(self) -> None:
        """End every watch (server shutdown)."""
        for key in list(self._watchers):
            self.close_key(key)
