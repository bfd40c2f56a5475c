"""A keyed work queue (client-go workqueue semantics): level-triggered reconcilers enqueue keys, workers take them.

A key is queued at most once, never handed to two workers at the same time, and re-queued if it was added
again while being processed; failures back off per key. `get` hands out one key (the Lighthouse agent's
per-service reconcile); `get_batch` every ready key at once (Globalnet applies one atomic ruleset per batch,
so a burst of N events becomes one iptables-restore instead of N). The ResourceSyncer, the lab's controllers
and the lab's kubelet use it too (the syncer keeps its ordered per-key operations beside it, keyed the same).
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
    """Keys to reconcile; `backoff` is (first, cap) seconds of the per-key exponential retry delay."""

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
        """The key succeeded: its next failure starts the backoff from the beginning again."""
        with self._cond:
            self._failures.pop(key, None)

    def requeues(self, key: K) -> int:
        """Failed attempts since the last `forget` (client-go's NumRequeues; transforms and logs use it)."""
        with self._cond:
            return self._failures.get(key, 0)

    def get_batch(self, limit: int = 10_000, timeout: float | None = None) -> list[K] | None:
        """Every ready key (up to `limit`), waiting for at least one; [] on timeout, None after shutdown."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._shutdown:
                    return None
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    self._add(heapq.heappop(self._delayed)[2])
                if self._ready:
                    batch: list[K] = []
                    while self._ready and len(batch) < limit:
                        key = self._ready.popleft()
                        self._processing.add(key)
                        self._dirty.discard(key)
                        batch.append(key)
                    return batch
                waits = [w for w in (self._delayed[0][0] - now if self._delayed else None,
                                     deadline - now if deadline is not None else None) if w is not None]
                if deadline is not None and deadline - now <= 0:
                    return []
                self._cond.wait(min(waits) if waits else None)

    def get(self) -> K | None:
        """The next ready key, waiting for one; None after shutdown."""
        batch = self.get_batch(limit=1)
        return batch[0] if batch else None

    def done(self, key: K) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._ready.append(key)
                self._cond.notify()

    def idle(self) -> bool:
        """Nothing ready, processing or waiting for a delayed re-add."""
        with self._cond:
            return not (self._ready or self._processing or self._delayed)

    def busy(self) -> bool:
        """Work ready or processing now; delayed re-checks (e.g. a future minReadySeconds) do not count."""
        with self._cond:
            return bool(self._ready or self._processing)

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
