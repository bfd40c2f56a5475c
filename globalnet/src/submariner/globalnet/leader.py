"""Leader election on a coordination.k8s.io Lease (client-go `leaderelection` semantics, §4.2).

Why: during a gateway failover two Globalnet pods can both think they are on the active gateway for a
moment; only the Lease holder may allocate IPs and program rules. Expiry is judged by *our* clock since we
last saw the record change (not by the holder's renewTime), so clock skew between nodes cannot steal a
lease. A leader that cannot renew within the renew deadline steps down; on stop it releases the lease
(holder cleared, duration 1 s) so a successor need not wait out the full duration.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from submariner.broker.kube import AlreadyExists, Conflict, KubeError, NotFound, ResourceClient, deep_copy

log = logging.getLogger(__name__)


def micro_time(dt: datetime | None = None) -> str:
    return (dt or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        leases: ResourceClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
        lease_duration: float = 20.0,
        renew_deadline: float = 15.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease duration > renew deadline > retry period > 0")
        self._client = leases
        self.namespace, self.name, self.identity = namespace, name, identity
        self._started_cb, self._stopped_cb = on_started_leading, on_stopped_leading
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self._clock = clock
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.leading = False
        self.terms = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="globalnet-leader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop campaigning; a leader steps down (callback) and releases the lease."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            while not self._stop.is_set() and not self._try():
                self._stop.wait(self.retry_period)
            if self._stop.is_set():
                break
            self.leading = True
            self.terms += 1
            log.info("globalnet became leader lease=%s/%s identity=%s", self.namespace, self.name, self.identity)
            self._call(self._started_cb)
            renewed = self._clock()
            while not self._stop.wait(self.retry_period):
                if self._try():
                    renewed = self._clock()
                elif self._clock() - renewed > self.renew_deadline:
                    log.warning("globalnet lost leadership lease=%s/%s identity=%s", self.namespace, self.name,
                                self.identity)
                    break
            self.leading = False
            self._call(self._stopped_cb)
            if self._stop.is_set():
                self._release()
        self.leading = False

    @staticmethod
    def _call(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("globalnet leader callback failed")

    # ------------------------------------------------------------------ the lease

    def _spec(self, transitions: int, acquire: str) -> dict[str, Any]:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": max(1, round(self.lease_duration)),
                "acquireTime": acquire, "renewTime": micro_time(), "leaseTransitions": transitions}

    def _try(self) -> bool:
        """Acquire or renew once; False when someone else holds a live lease or the API failed."""
        try:
            lease = self._client.get(self.namespace, self.name)
        except NotFound:
            now = micro_time()
            try:
                self._client.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                     "metadata": {"name": self.name, "namespace": self.namespace},
                                     "spec": self._spec(0, now)})
            except (AlreadyExists, Conflict):
                return False
            except KubeError as e:
                log.warning("globalnet lease create failed error=%r", e.message)
                return False
            self._observe(self._spec(0, now))
            return True
        except KubeError as e:
            log.warning("globalnet lease read failed error=%r", e.message)
            return False
        spec = dict(lease.get("spec") or {})
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity and self._observed_at + self.lease_duration > self._clock():
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        acquire = str(spec.get("acquireTime") or micro_time())
        if holder != self.identity:
            transitions += 1
            acquire = micro_time()
        updated = deep_copy(lease)
        updated["spec"] = {**spec, **self._spec(transitions, acquire)}
        try:
            self._client.update(updated)
        except (Conflict, NotFound):
            return False
        except KubeError as e:
            log.warning("globalnet lease renew failed error=%r", e.message)
            return False
        self._observe(updated["spec"])
        return True

    def _observe(self, spec: dict[str, Any]) -> None:
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock()

    def _release(self) -> None:
        try:
            lease = self._client.get(self.namespace, self.name)
        except KubeError:
            return
        spec = dict(lease.get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            return
        now = micro_time()
        lease["spec"] = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": now,
                         "renewTime": now}
        try:
            self._client.update(lease)
            log.info("globalnet released lease=%s/%s", self.namespace, self.name)
        except KubeError as e:
            log.warning("globalnet lease release failed error=%r", e.message)
