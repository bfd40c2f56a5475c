"""Cluster liveness through the broker (D2): a heartbeat Lease per cluster, and expiry of vanished clusters.

Upstream keeps a vanished cluster's EndpointSlices and `status.clusters` entries forever. Each agent renews
`B/lighthouse-heartbeat-<C>` every interval (leaseDurationSeconds = its TTL); a peer that sees a lease not
renewed for its TTL — by the lease's own renewTime *and* by the peer's clock since it last saw the lease
change, so clock skew alone never expires anyone — removes that cluster's data from the broker and deletes
the lease. When the cluster comes back it finds its lease gone and republishes everything.
The renewal doubles as the broker reachability probe that drives the exports' Synced condition.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from submariner.broker.kube import Informer, KubeError, NotFound, Obj, ResourceClient, deep_copy, key_of

log = logging.getLogger(__name__)

LEASE_PREFIX = "lighthouse-heartbeat-"
HEARTBEAT_LABEL = "lighthouse.submariner.io/heartbeat"
"""Value: the cluster ID the lease belongs to."""
FAILURES_BEFORE_DOWN = 2


def lease_name(cluster_id: str) -> str:
    return LEASE_PREFIX + cluster_id


def micro_time(dt: datetime | None = None) -> str:
    return (dt or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s: str) -> float | None:
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Heartbeat:
    """Renews this cluster's lease and expires the others'; callbacks run on the heartbeat thread."""

    def __init__(
        self,
        leases: ResourceClient,
        namespace: str,
        cluster_id: str,
        ttl: float,
        interval: float,
        *,
        on_down: Callable[[str], None],
        on_up: Callable[[], None],
        on_republish: Callable[[], None],
        prune: Callable[[str], None],
    ) -> None:
        self._client = leases
        self._namespace = namespace
        self.cluster_id = cluster_id
        self.ttl = ttl
        self.interval = interval
        self._on_down, self._on_up, self._on_republish, self._prune = on_down, on_up, on_republish, prune
        self._seen: dict[str, tuple[str, float]] = {}  # cluster -> (resourceVersion, monotonic when it changed)
        self._lock = threading.Lock()
        self._informer = Informer(leases, namespace=namespace, label_selector=HEARTBEAT_LABEL,
                                  name="heartbeat-leases", on_add=self._observe,
                                  on_update=lambda o, n: self._observe(n), on_delete=self._forget)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0
        self.healthy = True
        self.last_ok = 0.0
        self.renewals = 0
        self.pruned: list[str] = []

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._informer.start()
        self._thread = threading.Thread(target=self._run, name="lighthouse-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._informer.stop()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self.tick()
            self._stopped.wait(self.interval)

    def tick(self) -> None:
        self.renew()
        if self.healthy and self._informer.has_synced():
            self.expire()

    # ---------------------------------------------------------------- own lease

    def renew(self) -> bool:
        name = lease_name(self.cluster_id)
        now = micro_time()
        republish = False
        try:
            try:
                lease: Obj | None = self._client.get(self._namespace, name)
            except NotFound:
                lease = None
            spec = {"holderIdentity": self.cluster_id, "leaseDurationSeconds": max(1, math.ceil(self.ttl)),
                    "renewTime": now}
            if lease is None:
                spec["acquireTime"] = now
                self._client.create({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": self._namespace,
                                 "labels": {HEARTBEAT_LABEL: self.cluster_id}},
                    "spec": spec,
                })
                republish = self.renewals > 0  # a peer expired us while we were away
            else:
                updated = deep_copy(lease)
                updated["spec"] = {**(lease.get("spec") or {}), **spec}
                self._client.update(updated)
        except KubeError as e:
            self.failures += 1
            log.warning("heartbeat renew failed cluster=%s failures=%d status=%d error=%r",
                        self.cluster_id, self.failures, e.status, e.message)
            if self.failures >= FAILURES_BEFORE_DOWN and self.healthy:
                self.healthy = False
                self._call(self._on_down, e.message)
            return False
        mono = time.monotonic()
        if self.last_ok and mono - self.last_ok > self.ttl:
            republish = True  # away longer than our TTL: peers may have expired our data
        self.last_ok = mono
        self.failures = 0
        self.renewals += 1
        if not self.healthy:
            self.healthy = True
            log.info("heartbeat broker reachable again cluster=%s", self.cluster_id)
            self._call(self._on_up)
        if republish:
            log.info("heartbeat lease was expired by a peer cluster=%s action=republish", self.cluster_id)
            self._call(self._on_republish)
        return True

    # ---------------------------------------------------------------- peers

    def _observe(self, lease: Obj) -> None:
        cluster = ((lease.get("metadata") or {}).get("labels") or {}).get(HEARTBEAT_LABEL)
        if not cluster:
            return
        rv = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        with self._lock:
            prev = self._seen.get(cluster)
            if prev is None or prev[0] != rv:
                self._seen[cluster] = (rv, time.monotonic())

    def _forget(self, lease: Obj) -> None:
        cluster = ((lease.get("metadata") or {}).get("labels") or {}).get(HEARTBEAT_LABEL)
        if cluster:
            with self._lock:
                self._seen.pop(cluster, None)

    def expired(self) -> list[tuple[str, Obj]]:
        """Peers whose lease is older than its TTL both by renewTime and by our own observation."""
        out = []
        wall, mono = time.time(), time.monotonic()
        for lease in self._informer.list():
            cluster = ((lease.get("metadata") or {}).get("labels") or {}).get(HEARTBEAT_LABEL)
            if not cluster or cluster == self.cluster_id:
                continue
            spec = lease.get("spec") or {}
            ttl = float(spec.get("leaseDurationSeconds") or 0)
            renewed = parse_time(str(spec.get("renewTime") or ""))
            with self._lock:
                seen = self._seen.get(cluster)
            if ttl <= 0 or renewed is None or seen is None:
                continue
            if wall - renewed > ttl and mono - seen[1] > ttl:
                out.append((cluster, lease))
        return out

    def expire(self) -> None:
        for cluster, lease in self.expired():
            log.info("heartbeat cluster expired cluster=%s by=%s action=prune", cluster, self.cluster_id)
            try:
                self._prune(cluster)
                ns, name = key_of(lease)
                with contextlib.suppress(NotFound):
                    self._client.delete(ns, name)
            except KubeError as e:
                log.warning("heartbeat prune failed cluster=%s status=%d error=%r action=retry",
                            cluster, e.status, e.message)
                continue
            self.pruned.append(cluster)

    def _call(self, fn: Callable[..., None], *args: str) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("heartbeat callback failed callback=%s", getattr(fn, "__qualname__", fn))
