"""Egress: ClusterGlobalEgressIP and GlobalEgressIP (dataplane.md §4.5).

Cluster egress SNATs every local CIDR to one block; a GlobalEgressIP SNATs the pods of a namespace (or
those its podSelector picks) to its own block, matched through an ipset the pod events keep filled.
Statuses are written after the batch's rules are applied, so `allocatedIPs` never names an IP whose SNAT
is not in place.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from submariner.broker.api.submariner import CLUSTER_GLOBAL_EGRESS_IPS, GLOBAL_EGRESS_IPS, MAX_GLOBAL_IPS
from submariner.broker.kube import AlreadyExists, Obj
from submariner.globalnet.context import CGEIP, GEIP, Context, Key, Retry, deleting, ensure_ips, reserve
from submariner.globalnet.ipam import IPAMError
from submariner.globalnet.names import CLUSTER_EGRESS_NAME, egress_ipset_name
from submariner.globalnet.selectors import selector_matches
from submariner.globalnet.status import ALLOCATED, UPDATED, Reason, allocated_ips, condition, write_status

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_EGRESS_IPS = 8


def _count(spec: dict[str, Any], field: str) -> int | None:
    """The requested count (default 1), None when it is not an integer in 0..20."""
    value = spec.get(field, 1)
    if not isinstance(value, int) or isinstance(value, bool) or value > MAX_GLOBAL_IPS:
        return None
    return value


def _enqueue_handlers(ctx: Context, kind: str, informer_res: Any) -> None:
    def add(obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        ctx.enqueue(kind, str(meta.get("namespace") or ""), str(meta.get("name")))

    ctx.informer(informer_res).add_handlers(on_add=add, on_update=lambda old, new: add(new), on_delete=add)


# ------------------------------------------------------------------------------------------ cluster


class ClusterEgress:
    """`cluster-egress.submariner.io`: the SNAT block for everything leaving the cluster."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.client = ctx.client(CLUSTER_GLOBAL_EGRESS_IPS)
        _enqueue_handlers(ctx, CGEIP, CLUSTER_GLOBAL_EGRESS_IPS)

    def reserve(self) -> None:
        obj = self.ctx.get(CLUSTER_GLOBAL_EGRESS_IPS, "", CLUSTER_EGRESS_NAME)
        if obj is not None:
            reserve(self.ctx, (CGEIP, "", CLUSTER_EGRESS_NAME), allocated_ips(obj))

    def ensure_instance(self) -> None:
        """Globalnet creates the well-known instance with 8 IPs; an existing one (any count) is kept."""
        if self.ctx.get(CLUSTER_GLOBAL_EGRESS_IPS, "", CLUSTER_EGRESS_NAME) is not None:
            return
        with contextlib.suppress(AlreadyExists):
            self.client.create({"apiVersion": CLUSTER_GLOBAL_EGRESS_IPS.api_version,
                                "kind": CLUSTER_GLOBAL_EGRESS_IPS.kind,
                                "metadata": {"name": CLUSTER_EGRESS_NAME},
                                "spec": {"numGlobalIPs": DEFAULT_CLUSTER_EGRESS_IPS}})

    def _set_rules(self, ips: tuple[str, ...]) -> None:
        if self.ctx.state.cluster_egress != ips:
            self.ctx.state.cluster_egress = ips
            self.ctx.changed()

    def reconcile(self, namespace: str, name: str) -> None:
        key: Key = (CGEIP, "", name)
        obj = self.ctx.get(CLUSTER_GLOBAL_EGRESS_IPS, "", name)
        if name != CLUSTER_EGRESS_NAME:
            if not deleting(obj):
                assert obj is not None
                write_status(self.client, obj, condition(
                    ALLOCATED, False, Reason.INVALID_INSTANCE,
                    f"Only the ClusterGlobalEgressIP instance with the well-known name {CLUSTER_EGRESS_NAME!r} "
                    "is supported"))
            return
        if deleting(obj):
            self.ctx.release(key)
            self._set_rules(())
            return
        assert obj is not None
        num = _count(obj.get("spec") or {}, "numGlobalIPs")
        if num is None or num < 0:
            self.ctx.release(key)
            self._set_rules(())
            write_status(self.client, obj, condition(ALLOCATED, False, Reason.INVALID_INPUT,
                                                     f"NumGlobalIPs must be between 0 and {MAX_GLOBAL_IPS}"),
                         allocatedIPs=None)
            return
        if num == 0:
            self.ctx.release(key)
            self._set_rules(())
            write_status(self.client, obj, condition(ALLOCATED, False, Reason.ZERO_INPUT,
                                                     "The specified NumGlobalIPs is zero"), allocatedIPs=None)
            return
        try:
            ips = ensure_ips(self.ctx, key, num)
        except IPAMError as e:
            self._set_rules(())
            write_status(self.client, obj, condition(ALLOCATED, False, Reason.IP_POOL_ALLOCATION_FAILED,
                                                     f"Error allocating {num} global IP(s) from the pool: {e}"),
                         allocatedIPs=None)
            raise Retry(str(e)) from e
        self._set_rules(ips)
        self.ctx.later(key, lambda ok: self._report(name, ips, ok))

    def _report(self, name: str, ips: tuple[str, ...], ok: bool) -> None:
        obj = self.ctx.get(CLUSTER_GLOBAL_EGRESS_IPS, "", name)
        if deleting(obj) or self.ctx.owned.get((CGEIP, "", name)) is None:
            return
        assert obj is not None
        if ok:
            write_status(self.client, obj, condition(ALLOCATED, True, Reason.SUCCESS,
                                                     f"Allocated {len(ips)} global IP(s)"), allocatedIPs=list(ips))
        else:
            write_status(self.client, obj, condition(ALLOCATED, False, Reason.PROGRAM_IPTABLE_RULES_FAILED,
                                                     "Error programming the cluster egress rules"))
            raise Retry("rules not programmed")


# ------------------------------------------------------------------------------------------ GlobalEgressIP


def _pod_ip(pod: Obj) -> str | None:
    ip = (pod.get("status") or {}).get("podIP")
    return str(ip) if ip else None


class NamespaceEgress:
    """GlobalEgressIPs: per object an IP block, an ipset of its pods and one SNAT rule."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.client = ctx.client(GLOBAL_EGRESS_IPS)
        self.selectors: dict[Key, str] = {}
        """The podSelector each object was first programmed with (changes are refused)."""
        _enqueue_handlers(ctx, GEIP, GLOBAL_EGRESS_IPS)

    def reserve(self) -> None:
        for obj in self.ctx.objects(GLOBAL_EGRESS_IPS):
            meta = obj.get("metadata") or {}
            reserve(self.ctx, (GEIP, str(meta.get("namespace")), str(meta.get("name"))), allocated_ips(obj))

    def pods_changed(self, namespace: str) -> None:
        for obj in self.ctx.objects(GLOBAL_EGRESS_IPS):
            meta = obj.get("metadata") or {}
            if meta.get("namespace") == namespace:
                self.ctx.enqueue(GEIP, namespace, str(meta.get("name")))

    def _unset(self, ipset: str) -> bool:
        state = self.ctx.state
        removed = state.pod_egress.pop(ipset, None) is not None
        removed = state.namespace_egress.pop(ipset, None) is not None or removed
        if removed:
            self.ctx.changed()
        return removed

    def _remove(self, key: Key, ipset: str) -> None:
        """No IPs for the object any more: rule, IPs and (after the rule is gone) the ipset go."""
        self.ctx.release(key)
        self._unset(ipset)

        def destroy(ok: bool) -> None:
            if not ok:
                raise Retry("rules not programmed; the ipset is still referenced")
            if key not in self.ctx.owned and ipset in self.ctx.ipsets.names(ipset):
                self.ctx.ipsets.destroy(ipset)

        self.ctx.later(key, destroy)

    def reconcile(self, namespace: str, name: str) -> None:
        key: Key = (GEIP, namespace, name)
        ipset = egress_ipset_name(namespace, name)
        obj = self.ctx.get(GLOBAL_EGRESS_IPS, namespace, name)
        if deleting(obj):
            self.selectors.pop(key, None)
            self._remove(key, ipset)
            return
        assert obj is not None
        spec = obj.get("spec") or {}
        selector = spec.get("podSelector")
        selector_json = json.dumps(selector, sort_keys=True)
        first = self.selectors.setdefault(key, selector_json)
        if first != selector_json:
            obj = write_status(self.client, obj, condition(UPDATED, False, Reason.POD_SELECTOR_UPDATE_NOT_SUPPORTED,
                                                     "PodSelector field cannot be updated after creation"))
            selector = json.loads(first)
        num = _count(spec, "numberOfIPs")
        if num is None or num < 0:
            self._remove(key, ipset)
            write_status(self.client, obj, condition(ALLOCATED, False, Reason.INVALID_INPUT,
                                                     f"NumberOfIPs must be between 0 and 20 ({MAX_GLOBAL_IPS})"),
                         allocatedIPs=None)
            return
        if num == 0:
            self._remove(key, ipset)
            write_status(self.client, obj, condition(ALLOCATED, False, Reason.ZERO_INPUT,
                                                     "The specified NumberOfIPs is zero"), allocatedIPs=None)
            return
        try:
            ips = ensure_ips(self.ctx, key, num)
        except IPAMError as e:
            self._unset(ipset)
            write_status(self.client, obj, condition(ALLOCATED, False, Reason.IP_POOL_ALLOCATION_FAILED,
                                                     f"Error allocating {num} global IP(s) from the pool: {e}"),
                         allocatedIPs=None)
            raise Retry(str(e)) from e
        members = [ip for pod in self.ctx.pods.in_namespace(namespace)
                   if (ip := _pod_ip(pod)) and selector_matches(selector, (pod.get("metadata") or {}).get("labels"))]
        self.ctx.ipsets.ensure(ipset)
        self.ctx.ipsets.set_members(ipset, members)
        state = self.ctx.state
        chain, other = (state.pod_egress, state.namespace_egress) if selector is not None else (
            state.namespace_egress, state.pod_egress)
        if chain.get(ipset) != ips or ipset in other:
            other.pop(ipset, None)
            chain[ipset] = ips
            self.ctx.changed()
        self.ctx.later(key, lambda ok: self._report(key, ips, ok))

    def _report(self, key: Key, ips: tuple[str, ...], ok: bool) -> None:
        _, namespace, name = key
        obj = self.ctx.get(GLOBAL_EGRESS_IPS, namespace, name)
        alloc = self.ctx.owned.get(key)
        if deleting(obj) or alloc is None or alloc.ips != ips:
            return
        assert obj is not None
        if ok:
            write_status(self.client, obj, condition(ALLOCATED, True, Reason.SUCCESS,
                                                     f"Allocated {len(ips)} global IP(s)"), allocatedIPs=list(ips))
        else:
            write_status(self.client, obj, condition(ALLOCATED, False, Reason.PROGRAM_IPTABLE_RULES_FAILED,
                                                     "Error programming the egress rules"))
            raise Retry("rules not programmed")
