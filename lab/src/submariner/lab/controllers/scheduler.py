"""The scheduler: binds pods without `spec.nodeName` to a Ready node, fewest pods first.

Filters are the ones the lab's workloads rely on — nodeSelector, required node affinity, NoSchedule and
NoExecute taints against tolerations, cordoned and NotReady nodes. A pod that fits nowhere stays Pending
with `PodScheduled=False, reason=Unschedulable` and a kube-style message; node changes retry it.

Binding is an update carrying the cached resourceVersion, so a pod is never bound twice from a stale cache
(this server has no `pods/binding` subresource). Bindings not yet visible in the cache are "assumed", so a
burst of pods spreads evenly instead of piling onto the node that looked emptiest.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from typing import Any

from submariner.broker.kube import Conflict, NotFound, Obj, ObjectKey, deep_copy

from .base import NODES, PODS, Controller
from .podutil import (
    condition,
    format_taint,
    is_active,
    matches_node_selector,
    meta,
    name_of,
    node_is_ready,
    now_rfc3339,
    same_json,
    spec,
    status,
    untolerated_taint,
)

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"


def wants_scheduling(pod: Obj) -> bool:
    sp = spec(pod)
    return (
        not sp.get("nodeName")
        and is_active(pod)
        and (sp.get("schedulerName") or SCHEDULER_NAME) == SCHEDULER_NAME
    )


def _scheduling_view(node: Obj) -> tuple[Any, ...]:
    """What about a node decides whether pods fit (heartbeats do not)."""
    return (meta(node).get("labels") or {}, spec(node).get("taints") or [], bool(spec(node).get("unschedulable")),
            node_is_ready(node))


def filter_nodes(pod: Obj, nodes: list[Obj]) -> tuple[list[Obj], Counter[str]]:
    """Nodes the pod fits on, and for the others why not (counted by reason, as the scheduler reports)."""
    fits: list[Obj] = []
    reasons: Counter[str] = Counter()
    pod_spec = spec(pod)
    for node in nodes:
        if not node_is_ready(node):
            reasons["node(s) were not ready"] += 1
        elif not matches_node_selector(pod_spec, node):
            reasons["node(s) didn't match Pod's node affinity/selector"] += 1
        elif (taint := untolerated_taint(pod_spec, node)) is not None:
            if taint.get("key") == "node.kubernetes.io/unschedulable":
                reasons["node(s) were unschedulable"] += 1
            else:
                reasons[f"node(s) had untolerated taint {format_taint(taint)}"] += 1
        else:
            fits.append(node)
    return fits, reasons


def unschedulable_message(total: int, reasons: Counter[str]) -> str:
    if not total:
        return "no nodes available to schedule pods"
    detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    return f"0/{total} nodes are available: {detail}."


class Scheduler(Controller):
    name = "scheduler"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._assumed: dict[ObjectKey, str] = {}
        self._assumed_lock = threading.Lock()

    def register(self) -> None:
        self.caches[PODS].add_handlers(
            on_add=self._pod, on_update=lambda _old, new: self._pod(new), on_delete=self._pod_deleted,
        )
        self.caches[NODES].add_handlers(on_add=self._nodes_changed, on_update=self._node_update,
                                        on_delete=self._nodes_changed)

    def _pod(self, pod: Obj) -> None:
        key = (meta(pod).get("namespace") or "", name_of(pod))
        if wants_scheduling(pod):
            self.queue.add(key)
        elif spec(pod).get("nodeName"):
            with self._assumed_lock:
                self._assumed.pop(key, None)

    def _pod_deleted(self, pod: Obj) -> None:
        with self._assumed_lock:
            self._assumed.pop((meta(pod).get("namespace") or "", name_of(pod)), None)

    def _nodes_changed(self, _node: Obj) -> None:
        for pod in self.caches[PODS].list():
            if wants_scheduling(pod):
                self._pod(pod)

    def _node_update(self, old: Obj, new: Obj) -> None:
        if not same_json(_scheduling_view(old), _scheduling_view(new)):
            self._nodes_changed(new)

    def _pod_counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        with self._assumed_lock:
            assumed = dict(self._assumed)
        for pod in self.caches[PODS].list():
            if not is_active(pod):
                continue
            node = spec(pod).get("nodeName") or assumed.get((meta(pod).get("namespace") or "", name_of(pod)))
            if node:
                counts[str(node)] += 1
        return counts

    def reconcile(self, key: ObjectKey) -> float | None:
        ns, name = key
        pod = self.caches[PODS].get(ns, name)
        if pod is None or not wants_scheduling(pod):
            return None
        with self._assumed_lock:
            if key in self._assumed:
                return None  # bound already; the cache has not caught up
        nodes = sorted(self.caches[NODES].list(), key=name_of)
        fits, reasons = filter_nodes(pod, nodes)
        if not fits:
            self._mark_unschedulable(pod, unschedulable_message(len(nodes), reasons))
            return None
        counts = self._pod_counts()
        node = min(fits, key=lambda n: (counts[name_of(n)], name_of(n)))
        self._bind(pod, name_of(node))
        return None

    def _bind(self, pod: Obj, node: str) -> None:
        ns, name = meta(pod).get("namespace") or "", name_of(pod)
        client = self.client(PODS)
        target = deep_copy(pod)
        for _ in range(3):
            target.setdefault("spec", {})["nodeName"] = node
            try:
                bound = client.update(target)
                break
            except Conflict:
                target = client.get(ns, name)
                if not wants_scheduling(target):
                    return  # someone else bound or finished it
        else:
            raise Conflict(f"pod {ns}/{name} kept changing while binding it to {node}", status=409)
        with self._assumed_lock:
            self._assumed[(ns, name)] = node
        log.info("scheduled pod cluster=%s pod=%s/%s node=%s", self.cluster_name, ns, name, node)
        self._set_scheduled(bound, "True", "", "")

    def _mark_unschedulable(self, pod: Obj, message: str) -> None:
        current = condition(pod, "PodScheduled") or {}
        if (current.get("status"), current.get("reason"), current.get("message")) == ("False", "Unschedulable",
                                                                                    message):
            return
        log.info("pod unschedulable cluster=%s pod=%s/%s reason=%r", self.cluster_name,
                 meta(pod).get("namespace"), name_of(pod), message)
        self._set_scheduled(pod, "False", "Unschedulable", message)

    def _set_scheduled(self, pod: Obj, cond_status: str, reason: str, message: str) -> None:
        """Record PodScheduled in the pod's status (what `kubectl describe` and `get` show)."""
        st = deep_copy(status(pod))
        st.setdefault("phase", "Pending")
        conds = [c for c in st.get("conditions") or () if isinstance(c, dict) and c.get("type") != "PodScheduled"]
        prev = condition(pod, "PodScheduled") or {}
        new: dict[str, Any] = {"type": "PodScheduled", "status": cond_status, "lastProbeTime": None,
                               "lastTransitionTime": prev.get("lastTransitionTime")
                               if prev.get("status") == cond_status else now_rfc3339()}
        if reason:
            new["reason"] = reason
            new["message"] = message
        st["conditions"] = [new, *conds]
        if same_json(st, pod.get("status")):
            return
        # Written against the version we read: on a conflict the kubelet (or a delete) got there first,
        # and its status must not be overwritten with ours.
        with contextlib.suppress(Conflict, NotFound):
            self.client(PODS).update_status({**pod, "status": st})
