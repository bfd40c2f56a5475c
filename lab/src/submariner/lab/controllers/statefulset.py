"""StatefulSet → Pods `<sts>-0 … <sts>-N-1` with stable names, hostnames and subdomain.

Why ordinals matter here: the seed's headless Service resolves `whereami-0.whereami-ss…`, which needs
`spec.hostname`/`spec.subdomain` on the pod and the EndpointSlice's `hostname`. OrderedReady (the default)
creates one pod at a time and only after its predecessors are Ready, and removes from the highest ordinal;
Parallel does both at once. Template changes roll from the highest ordinal down (RollingUpdate with
partition), or wait for the user (OnDelete).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from submariner.broker.kube import Obj, ObjectKey

from .base import PODS, STATEFULSETS, Controller, delete_quietly, write_status
from .deployment import replicas_of
from .podutil import (
    CONTROLLER_REVISION_HASH,
    POD_INDEX,
    STS_POD_NAME,
    available_in,
    controller_of,
    generation_of,
    is_ready,
    is_terminal,
    meta,
    name_of,
    owned_pods,
    owner_reference,
    pod_from_template,
    spec,
    status,
    template_hash,
)

log = logging.getLogger(__name__)


def ordinal_of(sts_name: str, pod_name: str) -> int | None:
    m = re.fullmatch(re.escape(sts_name) + r"-(\d+)", pod_name)
    return int(m.group(1)) if m else None


class StatefulSetController(Controller):
    name = "statefulset"

    def register(self) -> None:
        self.caches[STATEFULSETS].add_handlers(
            on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new), on_delete=self._deleted,
        )
        self.caches[PODS].add_handlers(on_add=self._pod, on_update=lambda _o, n: self._pod(n), on_delete=self._pod)

    def _deleted(self, sts: Obj) -> None:
        self.expectations.forget((meta(sts).get("namespace") or "", name_of(sts)))

    def _pod(self, pod: Obj) -> None:
        owner = controller_of(pod, "StatefulSet")
        if owner:
            self.queue.add((meta(pod).get("namespace") or "", owner))

    def reconcile(self, key: ObjectKey) -> float | None:
        ns, name = key
        sts = self.caches[STATEFULSETS].get(ns, name)
        if sts is None or meta(sts).get("deletionTimestamp"):
            self.expectations.forget(key)
            return None
        pods_cache = self.caches[PODS]
        wait = self.expectations.pending(key, lambda n: pods_cache.get(ns, n))
        if wait is not None:
            return wait

        sp = spec(sts)
        replicas = replicas_of(sts)
        template: dict[str, Any] = sp.get("template") or {}
        revision = f"{name}-{template_hash(template, int(status(sts).get('collisionCount') or 0))}"
        ordered = (sp.get("podManagementPolicy") or "OrderedReady") != "Parallel"
        strategy = sp.get("updateStrategy") or {}
        min_ready = int(sp.get("minReadySeconds") or 0)

        pods = owned_pods(pods_cache.list(), sts)
        by_ordinal: dict[int, Obj] = {}
        strays: list[Obj] = []
        for p in pods:
            i = ordinal_of(name, name_of(p))
            if i is None or i in by_ordinal:
                strays.append(p)
            else:
                by_ordinal[i] = p

        client = self.client(PODS)
        deleted: list[str] = []

        def delete(p: Obj) -> None:
            self.expectations.deleted(key, name_of(p), str(meta(p).get("uid") or ""))
            delete_quietly(client, ns, name_of(p))
            deleted.append(name_of(p))

        for p in strays:
            delete(p)
        # A failed pod is replaced under the same name (stable identity).
        for i, p in list(by_ordinal.items()):
            if is_terminal(p):
                delete(p)
                del by_ordinal[i]

        created: list[str] = []
        blocked = False
        for i in range(replicas):
            pod = by_ordinal.get(i)
            if pod is None:
                if not self._create(sts, key, i, revision):
                    return None  # the StatefulSet is gone
                created.append(f"{name}-{i}")
                if ordered:
                    blocked = True
                    break
            elif ordered and not is_ready(pod):
                blocked = True
                break

        extras = sorted((i for i in by_ordinal if i >= replicas), reverse=True)
        if not blocked and not created and extras:
            for i in extras[:1] if ordered else extras:
                delete(by_ordinal[i])
        elif not blocked and not created and not deleted:
            target = self._next_to_update(by_ordinal, replicas, revision, strategy)
            if target is not None:
                delete(target)

        if created or deleted:
            log.info("statefulset changed pods cluster=%s statefulset=%s/%s created=%s deleted=%s",
                     self.cluster_name, ns, name, ",".join(created), ",".join(deleted))
            return None

        self._write_status(sts, list(by_ordinal.values()), revision, min_ready)
        now = time.time()
        waits = [w for p in by_ordinal.values() if (w := available_in(p, min_ready, now))]
        return min(waits) + 0.05 if waits else None

    def _next_to_update(self, by_ordinal: dict[int, Obj], replicas: int, revision: str,
                        strategy: dict[str, Any]) -> Obj | None:
        """The highest-ordinal outdated pod at or above the partition, once every pod is Ready."""
        if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
            return None
        members = [by_ordinal[i] for i in range(replicas) if i in by_ordinal]
        if len(members) < replicas or not all(is_ready(p) for p in members):
            return None
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        for i in range(replicas - 1, partition - 1, -1):
            labels = meta(by_ordinal[i]).get("labels") or {}
            if labels.get(CONTROLLER_REVISION_HASH) != revision:
                return by_ordinal[i]
        return None

    def _create(self, sts: Obj, key: ObjectKey, ordinal: int, revision: str) -> bool:
        ns, name = key
        pod_name = f"{name}-{ordinal}"
        template: dict[str, Any] = spec(sts).get("template") or {}
        pod = pod_from_template(
            template, ns, owner_reference(sts, "StatefulSet"), name=pod_name,
            labels={CONTROLLER_REVISION_HASH: revision, STS_POD_NAME: pod_name, POD_INDEX: str(ordinal)},
        )
        pod["spec"]["hostname"] = pod_name
        if spec(sts).get("serviceName"):
            pod["spec"]["subdomain"] = spec(sts)["serviceName"]
        return bool(self.create_dependents(key, STATEFULSETS, sts, self.client(PODS), [pod]))

    def _write_status(self, sts: Obj, pods: list[Obj], revision: str, min_ready: int) -> None:
        now = time.time()
        revisions = [(meta(p).get("labels") or {}).get(CONTROLLER_REVISION_HASH) for p in pods]
        updated = sum(1 for r in revisions if r == revision)
        current_rev = str(status(sts).get("currentRevision") or revision)
        if updated == len(pods) and len(pods) == replicas_of(sts):
            current_rev = revision  # the rollout is complete
        st: dict[str, Any] = {
            "observedGeneration": generation_of(sts),
            "replicas": len(pods),
            "readyReplicas": sum(1 for p in pods if is_ready(p)),
            "availableReplicas": sum(1 for p in pods if available_in(p, min_ready, now) == 0),
            "currentReplicas": sum(1 for r in revisions if r == current_rev),
            "updatedReplicas": updated,
            "currentRevision": current_rev,
            "updateRevision": revision,
            "collisionCount": int(status(sts).get("collisionCount") or 0),
        }
        write_status(self.client(STATEFULSETS), sts, st)
