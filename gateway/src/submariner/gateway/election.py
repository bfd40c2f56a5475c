"""Lease leader election (dataplane.md §2.11): one active gateway per cluster, the others passive.

client-go's algorithm on a `coordination.k8s.io/v1` Lease: a candidate takes the Lease when it is free or
when the holder has not renewed it for `lease_duration` *as observed on our own clock* (no trust in the
holder's clock); the leader renews every `retry_period` and steps down if it could not renew for
`renew_deadline`. Writes carry the resourceVersion, so two candidates never both win.

Deviation from upstream (which keeps the Lease on cancel): `release()` empties the holder on a clean stop,
and a candidate can be `poke()`d (e.g. from a watch on the Lease) to retry at once, so a SIGTERM'd leader
is replaced in well under a second instead of after the lease duration. A crashed leader is replaced
about one `lease_duration` after its last renewal: `observe()` (fed by a Lease watch) dates that renewal,
and `next_wait()` aims the next attempt at the expiry instead of the next retry tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from submariner.broker.kube import LEASES, AlreadyExists, Conflict, KubeError, NotFound, Obj, ResourceClient

log = logging.getLogger(__name__)


def micro_time(ts: float) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: ResourceClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[], None] = lambda: None,
        on_stopped_leading: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        assert client.resource == LEASES or client.resource.plural == "leases"
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.clock = clock
        self.wall_clock = wall_clock
        self._observed: tuple[str, str, int] | None = None  # (holder, renewTime, duration) last seen
        self._observed_at = 0.0
        self._last_renew = 0.0
        self.leading = False
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------- one attempt

    def try_acquire_or_renew(self) -> bool:
        """One round: True if we hold the Lease afterwards."""
        now_wall = self.wall_clock()
        now = self.clock()
        try:
            lease = self.client.get(self.namespace, self.name)
        except NotFound:
            obj: Obj = {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": _seconds(self.lease_duration),
                         "acquireTime": micro_time(now_wall), "renewTime": micro_time(now_wall),
                         "leaseTransitions": 0},
            }
            try:
                self.client.create(obj)
            except (AlreadyExists, Conflict):
                return False
            self._observe(obj, now)
            self._last_renew = now
            return True
        spec = dict(lease.get("spec") or {})
        self._observe(lease, now)
        holder = str(spec.get("holderIdentity") or "")
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and self._observed_at + duration > now:
            return False  # held by someone else and not expired on our clock
        if holder != self.identity:
            spec["acquireTime"] = micro_time(now_wall)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=_seconds(self.lease_duration),
                     renewTime=micro_time(now_wall))
        lease["spec"] = spec
        try:
            updated = self.client.update(lease)
        except (Conflict, NotFound):
            return False
        self._observe(updated, now)
        self._last_renew = now
        return True

    def _observe(self, lease: Obj, now: float) -> None:
        spec = lease.get("spec") or {}
        record = (str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""),
                  int(spec.get("leaseDurationSeconds") or 0))
        if record != self._observed:
            self._observed = record
            self._observed_at = now

    def observe(self, lease: Obj) -> None:
        """A watch saw the Lease: note the renewal now, so expiry is timed from when it really happened."""
        self._observe(lease, self.clock())
        if not (lease.get("spec") or {}).get("holderIdentity"):
            self.poke()  # released: try at once

    def next_wait(self) -> float:
        """Until the next attempt: the retry period, or less when the holder's lease runs out sooner."""
        if self.leading or self._observed is None:
            return self.retry_period
        holder, _, duration = self._observed
        if not holder or holder == self.identity:
            return self.retry_period
        remaining = self._observed_at + (duration or self.lease_duration) - self.clock()
        return min(self.retry_period, max(remaining + 0.01, 0.01))

    def release(self) -> bool:
        """Give the Lease up if we hold it (holder emptied, duration 1 s), so a candidate takes it at once."""
        try:
            lease = self.client.get(self.namespace, self.name)
        except KubeError:
            return False
        spec = dict(lease.get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            return False
        spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=micro_time(self.wall_clock()))
        lease["spec"] = spec
        try:
            self.client.update(lease)
        except KubeError as e:
            log.warning("releasing lease %s/%s failed: %s", self.namespace, self.name, e)
            return False
        log.info("released lease %s/%s", self.namespace, self.name)
        return True

    # ------------------------------------------------------------------------------------- the loop

    def poke(self) -> None:
        """Retry now (the Lease changed: it may have been released)."""
        self._poke.set()

    def _wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, cut short by poke(); True when stopping."""
        if self._poke.wait(seconds):
            self._poke.clear()
        return self._stop.is_set()

    def step(self) -> None:
        """One iteration of the candidate/leader loop (tests drive it with a fake clock)."""
        try:
            ok = self.try_acquire_or_renew()
        except KubeError as e:
            log.warning("lease %s/%s: %s", self.namespace, self.name, e)
            ok = False
        if ok and not self.leading:
            self.leading = True
            log.info("became leader identity=%s", self.identity)
            self.on_started_leading()
        elif not ok and self.leading and self.clock() - self._last_renew > self.renew_deadline:
            self.leading = False
            log.warning("lost leadership identity=%s (not renewed for %.1fs)", self.identity,
                        self.clock() - self._last_renew)
            self.on_stopped_leading()

    def run(self) -> None:
        while not self._stop.is_set():
            self.step()
            if self._wait(self.next_wait()):
                break

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        """Stop campaigning; a leader frees the Lease if `release` (first, as client-go's ReleaseOnCancel, so
        the successor starts while we tear down), then steps down (callback)."""
        self._stop.set()
        self._poke.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        if self.leading:
            self.leading = False
            if release:
                self.release()
            self.on_stopped_leading()


def _seconds(value: float) -> int:
    return max(1, round(value))
