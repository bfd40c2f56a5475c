"""Deployment → Pods, without ReplicaSet objects.

Pods carry `pod-template-hash` (the hash of the template they were made from) and a controller reference
to the Deployment, so the hash plays the ReplicaSet's role: pods with the current hash are the "new
ReplicaSet", all others the old ones. Rolling updates follow the Deployment controller's arithmetic
(maxSurge bounds the total, maxUnavailable bounds how far availability may drop).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from submariner.broker.kube import Obj, ObjectKey

from .base import DEPLOYMENTS, PODS, Controller, delete_quietly, merge_conditions, write_status
from .podutil import (
    POD_TEMPLATE_HASH,
    available_in,
    controller_of,
    delete_rank,
    generation_of,
    int_or_percent,
    is_active,
    is_ready,
    is_terminal,
    meta,
    name_of,
    now_rfc3339,
    owned_pods,
    owner_reference,
    pod_from_template,
    spec,
    status,
    template_hash,
)

log = logging.getLogger(__name__)


def replicas_of(obj: Obj) -> int:
    """spec.replicas, defaulted to 1 as the API server would (ours stores objects as written)."""
    value = spec(obj).get("replicas")
    return 1 if value is None else max(0, int(value))


def _budget(d: Obj, replicas: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) for a RollingUpdate Deployment; never both zero."""
    strategy = spec(d).get("strategy") or {}
    if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
        return 0, 0
    ru = strategy.get("rollingUpdate") or {}
    surge = int_or_percent(ru.get("maxSurge"), replicas, round_up=True, default="25%")
    unavailable = int_or_percent(ru.get("maxUnavailable"), replicas, round_up=False, default="25%")
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


class DeploymentController(Controller):
    name = "deployment"

    def register(self) -> None:
        self.caches[DEPLOYMENTS].add_handlers(
            on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new), on_delete=self._deleted,
        )
        self.caches[PODS].add_handlers(
            on_add=self._pod, on_update=self._pod_update, on_delete=self._pod,
        )

    def _deleted(self, d: Obj) -> None:
        self.expectations.forget((meta(d).get("namespace") or "", name_of(d)))

    def _pod(self, pod: Obj) -> None:
        owner = controller_of(pod, "Deployment")
        if owner:
            self.queue.add((meta(pod).get("namespace") or "", owner))

    def _pod_update(self, old: Obj, new: Obj) -> None:
        self._pod(new)
        if controller_of(old, "Deployment") != controller_of(new, "Deployment"):
            self._pod(old)

    def reconcile(self, key: ObjectKey) -> float | None:
        ns, name = key
        d = self.caches[DEPLOYMENTS].get(ns, name)
        if d is None or meta(d).get("deletionTimestamp"):
            self.expectations.forget(key)
            return None  # the API server's garbage collector removes the pods
        pods_cache = self.caches[PODS]
        wait = self.expectations.pending(key, lambda n: pods_cache.get(ns, n))
        if wait is not None:
            return wait

        replicas = replicas_of(d)
        template: dict[str, Any] = spec(d).get("template") or {}
        collisions = int(status(d).get("collisionCount") or 0)
        current = template_hash(template, collisions)
        min_ready = int(spec(d).get("minReadySeconds") or 0)
        now = time.time()

        pods = owned_pods(pods_cache.list(), d)
        terminal = [p for p in pods if is_terminal(p)]
        active = [p for p in pods if is_active(p)]
        new = [p for p in active if (meta(p).get("labels") or {}).get(POD_TEMPLATE_HASH) == current]
        old = [p for p in active if p not in new]

        def available(p: Obj) -> bool:
            return available_in(p, min_ready, now) == 0

        creates = 0
        deletes: list[Obj] = list(terminal)
        strategy = (spec(d).get("strategy") or {}).get("type") or "RollingUpdate"
        surge, max_unavailable = _budget(d, replicas)
        if len(new) > replicas:
            deletes += sorted(new, key=delete_rank)[: len(new) - replicas]
        if strategy == "Recreate":
            if old:
                deletes += old
            else:
                creates = max(0, replicas - len(new))
        elif not old:
            creates = max(0, replicas - len(new))
        else:
            new_count = min(len(new), replicas)
            creates = max(0, min(replicas, replicas + surge - len(old)) - new_count)
            new_count += creates
            new_unavailable = max(0, new_count - sum(1 for p in new if available(p)))
            min_available = replicas - max_unavailable
            max_scaled_down = len(old) + new_count - min_available - new_unavailable
            if max_scaled_down > 0:
                unhealthy = sorted((p for p in old if not available(p)), key=delete_rank)[:max_scaled_down]
                deletes += unhealthy
                healthy = sorted((p for p in old if available(p)), key=delete_rank)
                total_available = sum(1 for p in active if available(p))
                more = min(len(healthy), total_available - min_available, max_scaled_down - len(unhealthy))
                deletes += healthy[: max(0, more)]

        pods_client = self.client(PODS)
        if creates:
            owner = owner_reference(d, "Deployment")
            bodies = [pod_from_template(template, ns, owner, generate_name=f"{name}-{current}-",
                                        labels={POD_TEMPLATE_HASH: current}) for _ in range(creates)]
            if not self.create_dependents(key, DEPLOYMENTS, d, pods_client, bodies):
                return None
            log.info("deployment scaled up cluster=%s deployment=%s/%s hash=%s created=%d",
                     self.cluster_name, ns, name, current, creates)
        for p in deletes:
            self.expectations.deleted(key, name_of(p), str(meta(p).get("uid") or ""))
            delete_quietly(pods_client, ns, name_of(p))
        if deletes:
            log.info("deployment removed pods cluster=%s deployment=%s/%s pods=%s",
                     self.cluster_name, ns, name, ",".join(sorted(name_of(p) for p in deletes)))
        if creates or deletes:
            return None  # the pod events bring us back with a cache that shows the result

        self._write_status(d, replicas, active, new, available, max_unavailable, f"{name}-{current}")
        # Ready but not yet available for minReadySeconds: look again when the first one becomes available.
        waits = [w for p in active if (w := available_in(p, min_ready, now))]
        return min(waits) + 0.05 if waits else None

    def _write_status(self, d: Obj, replicas: int, active: list[Obj], new: list[Obj],
                      available: Callable[[Obj], bool], max_unavailable: int, rs_name: str) -> None:
        n_available = sum(1 for p in active if available(p))
        st: dict[str, Any] = {
            "observedGeneration": generation_of(d),
            "replicas": len(active),
            "updatedReplicas": len(new),
            "readyReplicas": sum(1 for p in active if is_ready(p)),
            "availableReplicas": n_available,
            "unavailableReplicas": max(0, replicas - n_available),
        }
        if status(d).get("collisionCount"):
            st["collisionCount"] = status(d)["collisionCount"]
        complete = len(new) == replicas and len(active) == replicas and n_available == replicas
        if n_available >= replicas - max_unavailable:
            avail = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            avail = ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        if complete:
            progress = ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')
        else:
            progress = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        wanted = [
            {"type": t, "status": s, "reason": r, "message": m, "lastUpdateTime": "", "lastTransitionTime": ""}
            for t, (s, r, m) in (("Available", avail), ("Progressing", progress))
        ]
        st["conditions"] = merge_conditions(status(d).get("conditions"), wanted, now_rfc3339())
        write_status(self.client(DEPLOYMENTS), d, st)
