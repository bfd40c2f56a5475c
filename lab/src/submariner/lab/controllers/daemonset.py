"""DaemonSet → one Pod per eligible node, bound directly (`spec.nodeName`), bypassing the scheduler.

Eligibility is the template's nodeSelector / required node affinity plus taints it does not tolerate
(cordoning is ignored, as for real DaemonSets). Node label changes move pods: labelling a node
`submariner.io/gateway=true` starts the gateway there, unlabelling removes it. Template changes roll node by
node within `maxUnavailable` (RollingUpdate) or wait for the user (OnDelete).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from submariner.broker.kube import Obj, ObjectKey

from .base import DAEMONSETS, NODES, PODS, Controller, delete_quietly, write_status
from .podutil import (
    CONTROLLER_REVISION_HASH,
    DS_TEMPLATE_GENERATION,
    available_in,
    controller_of,
    delete_rank,
    generation_of,
    int_or_percent,
    is_active,
    is_ready,
    is_terminal,
    matches_node_selector,
    meta,
    name_of,
    owned_pods,
    owner_reference,
    pod_from_template,
    same_json,
    spec,
    status,
    template_hash,
    untolerated_taint,
)

log = logging.getLogger(__name__)


def eligible(template_spec: dict[str, Any], node: Obj) -> bool:
    """Should this DaemonSet run a pod on `node`?"""
    return matches_node_selector(template_spec, node) and untolerated_taint(
        template_spec, node, ignore_unschedulable=True) is None


def _placement_view(node: Obj) -> tuple[Any, Any]:
    """What about a node decides DaemonSet placement (status heartbeats do not)."""
    return meta(node).get("labels") or {}, spec(node).get("taints") or []


class DaemonSetController(Controller):
    name = "daemonset"

    def register(self) -> None:
        self.caches[DAEMONSETS].add_handlers(
            on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new), on_delete=self._deleted,
        )
        self.caches[PODS].add_handlers(on_add=self._pod, on_update=lambda _o, n: self._pod(n), on_delete=self._pod)
        self.caches[NODES].add_handlers(on_add=self._node, on_update=self._node_update, on_delete=self._node)

    def _deleted(self, ds: Obj) -> None:
        self.expectations.forget((meta(ds).get("namespace") or "", name_of(ds)))

    def _pod(self, pod: Obj) -> None:
        owner = controller_of(pod, "DaemonSet")
        if owner:
            self.queue.add((meta(pod).get("namespace") or "", owner))

    def _node(self, _node: Obj) -> None:
        for ds in self.caches[DAEMONSETS].list():
            self.enqueue(ds)

    def _node_update(self, old: Obj, new: Obj) -> None:
        if not same_json(_placement_view(old), _placement_view(new)):
            self._node(new)

    def reconcile(self, key: ObjectKey) -> float | None:
        ns, name = key
        ds = self.caches[DAEMONSETS].get(ns, name)
        if ds is None or meta(ds).get("deletionTimestamp"):
            self.expectations.forget(key)
            return None
        pods_cache = self.caches[PODS]
        wait = self.expectations.pending(key, lambda n: pods_cache.get(ns, n))
        if wait is not None:
            return wait

        template: dict[str, Any] = spec(ds).get("template") or {}
        template_spec: dict[str, Any] = spec(template)
        current = template_hash(template, int(status(ds).get("collisionCount") or 0))
        min_ready = int(spec(ds).get("minReadySeconds") or 0)
        now = time.time()

        nodes = {name_of(n): n for n in self.caches[NODES].list()}
        wanted = sorted(n for n, node in nodes.items() if eligible(template_spec, node))
        pods = owned_pods(pods_cache.list(), ds)
        by_node: dict[str, list[Obj]] = {}
        deletes: list[Obj] = []
        for p in pods:
            node_name = str(spec(p).get("nodeName") or "")
            if is_terminal(p) or not node_name:
                deletes.append(p)
            elif is_active(p):
                by_node.setdefault(node_name, []).append(p)

        creates: list[str] = []
        for node_name in wanted:
            here = by_node.get(node_name, [])
            if not here:
                creates.append(node_name)
            elif len(here) > 1:
                # Keep the most useful pod (updated, ready, oldest); the rest are duplicates.
                keep = max(here, key=lambda p: (self._is_current(p, current), delete_rank(p)))
                deletes += [p for p in here if p is not keep]
        for node_name, here in by_node.items():
            if node_name not in wanted:
                deletes += here
        deletes += self._rolling_deletes(ds, wanted, by_node, current, min_ready, now, deletes)

        client = self.client(PODS)
        owner = owner_reference(ds, "DaemonSet")
        bodies: list[Obj] = []
        for node_name in creates:
            pod = pod_from_template(template, ns, owner, generate_name=f"{name}-", labels={
                CONTROLLER_REVISION_HASH: current, DS_TEMPLATE_GENERATION: str(generation_of(ds)),
            })
            pod["spec"]["nodeName"] = node_name
            bodies.append(pod)
        if bodies and not self.create_dependents(key, DAEMONSETS, ds, client, bodies):
            return None
        for p in deletes:
            self.expectations.deleted(key, name_of(p), str(meta(p).get("uid") or ""))
            delete_quietly(client, ns, name_of(p))
        if creates or deletes:
            log.info("daemonset changed pods cluster=%s daemonset=%s/%s created_on=%s deleted=%s",
                     self.cluster_name, ns, name, ",".join(creates), ",".join(sorted(name_of(p) for p in deletes)))
            return None

        self._write_status(ds, wanted, by_node, current, min_ready, now)
        waits = [w for ps in by_node.values() for p in ps if (w := available_in(p, min_ready, now))]
        return min(waits) + 0.05 if waits else None

    @staticmethod
    def _is_current(pod: Obj, current: str) -> bool:
        return (meta(pod).get("labels") or {}).get(CONTROLLER_REVISION_HASH) == current

    def _rolling_deletes(self, ds: Obj, wanted: list[str], by_node: dict[str, list[Obj]], current: str,
                         min_ready: int, now: float, already: list[Obj]) -> list[Obj]:
        """Outdated pods to delete now: unavailable ones freely, available ones within maxUnavailable."""
        strategy = spec(ds).get("updateStrategy") or {}
        if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
            return []
        max_unavailable = int_or_percent((strategy.get("rollingUpdate") or {}).get("maxUnavailable"),
                                         len(wanted), round_up=True, default="1") or 1
        doomed = {name_of(p) for p in already}
        unavailable = 0
        outdated_available: list[Obj] = []
        out: list[Obj] = []
        for node_name in wanted:
            here = [p for p in by_node.get(node_name, []) if name_of(p) not in doomed]
            if len(here) != 1:
                unavailable += 1
                continue
            pod = here[0]
            ok = available_in(pod, min_ready, now) == 0
            if not ok:
                unavailable += 1
            if not self._is_current(pod, current):
                if ok:
                    outdated_available.append(pod)
                else:
                    out.append(pod)
        budget = max(0, max_unavailable - unavailable)
        return out + outdated_available[:budget]

    def _write_status(self, ds: Obj, wanted: list[str], by_node: dict[str, list[Obj]], current: str,
                      min_ready: int, now: float) -> None:
        scheduled = [by_node[n][0] for n in wanted if by_node.get(n)]
        n_available = sum(1 for p in scheduled if available_in(p, min_ready, now) == 0)
        st: dict[str, Any] = {
            "observedGeneration": generation_of(ds),
            "desiredNumberScheduled": len(wanted),
            "currentNumberScheduled": len(scheduled),
            "numberMisscheduled": sum(1 for n in by_node if n not in wanted),
            "numberReady": sum(1 for p in scheduled if is_ready(p)),
            "updatedNumberScheduled": sum(1 for p in scheduled if self._is_current(p, current)),
            "numberAvailable": n_available,
            "numberUnavailable": max(0, len(wanted) - n_available),
        }
        write_status(self.client(DAEMONSETS), ds, st)
