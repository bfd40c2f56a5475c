"""A keyed work queue that hands out *batches* (client-go workqueue semantics otherwise).

Why batches: every reconcile edits one in-memory rule state, and the whole nat ruleset is applied in one
atomic iptables-restore. Draining everything ready before applying turns a burst of N events (a restart,
a StatefulSet scaling up) into one transaction instead of N. A key is queued at most once and is never in
two batches at the same time; failures back off per key.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, backoff: tuple[float, float] = (0.05, 10.0)) -> None:
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

    def done(self, key: K) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._ready.append(key)
                self._cond.notify()

    def idle(self) -> bool:
        with self._cond:
            return not (self._ready or self._processing or self._delayed)

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
