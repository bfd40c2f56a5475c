"""A keyed work queue for per-service reconciles (client-go workqueue semantics).

Why not a `ResourceSyncer`: the syncer moves one object to one target; a service's state (export, Service,
its EndpointSlices, the broker aggregate) is many objects feeding several writes, so the agent reconciles a
*key* level-triggered: any event enqueues the key, a worker recomputes everything for it. A key is never
processed by two workers at once and is queued at most once; failures back off per key.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, backoff: tuple[float, float] = (0.1, 5.0)) -> None:
        self._cond = threading.Condition()
        self._ready: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._delayed: list[tuple[float, int, K]] = []
        self._failures: dict[K, int] = {}
        self._seq = 0
        self._shutdown = False
        self._backoff = backoff

    def add(self, key: K) -> None:
        with self._cond:
            self._add(key)

    def _add(self, key: K) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._ready.append(key)
            self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            self._seq += 1
            heapq.heappush(self._delayed, (time.monotonic() + delay, self._seq, key))
            self._cond.notify()

    def retry(self, key: K) -> float:
        """Re-add after this key's next exponential backoff delay; returns the delay."""
        with self._cond:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        low, high = self._backoff
        delay: float = min(low * 2.0 ** min(n, 30), high) * (0.9 + 0.2 * random.random())
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def get(self) -> K | None:
        with self._cond:
            while True:
                if self._shutdown:
                    return None
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    self._add(heapq.heappop(self._delayed)[2])
                if self._ready:
                    key = self._ready.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                self._cond.wait(self._delayed[0][0] - now if self._delayed else None)

    def done(self, key: K) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._ready.append(key)
                self._cond.notify()

    def idle(self) -> bool:
        with self._cond:
            return not (self._ready or self._processing or self._delayed)

    def __len__(self) -> int:
        with self._cond:
            return len(self._dirty) + len(self._processing)

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()


def run_workers(queue: WorkQueue[K], handle: Callable[[K], None], count: int, name: str) -> list[threading.Thread]:
    """Start `count` daemon threads feeding keys to `handle` (which must call retry/forget itself)."""

    def loop() -> None:
        while True:
            key = queue.get()
            if key is None:
                return
            try:
                handle(key)
            finally:
                queue.done(key)

    threads = [threading.Thread(target=loop, name=f"{name}-{i}", daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    return threads
