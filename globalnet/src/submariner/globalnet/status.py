"""Status of the Globalnet CRs: `Allocated`/`Updated` conditions and allocated IPs, written only on change.

Why care: a status write is an event for every watcher (the Lighthouse agent among them), so an unchanged
object must cost nothing; and `lastTransitionTime` only moves when a condition's status flips, as
`meta.SetStatusCondition` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from submariner.broker.api import GlobalnetCondition, GlobalnetReason
from submariner.broker.kube import Conflict, NotFound, Obj, ResourceClient, deep_copy

ALLOCATED = GlobalnetCondition.ALLOCATED
UPDATED = GlobalnetCondition.UPDATED
Reason = GlobalnetReason


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(ctype: str, status: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": ctype, "status": "True" if status else "False", "reason": reason, "message": message}


def merge_conditions(existing: Sequence[Mapping[str, Any]], new: Mapping[str, Any],
                     generation: int | None = None) -> list[dict[str, Any]]:
    """`existing` with `new` replacing every condition of its type (older duplicates trimmed)."""
    previous = [c for c in existing if c.get("type") == new["type"]]
    merged: dict[str, Any] | None = dict(new)
    assert merged is not None
    if generation is not None:
        merged["observedGeneration"] = generation
    last = previous[-1] if previous else None
    if last is not None and last.get("status") == new["status"] and last.get("lastTransitionTime"):
        merged["lastTransitionTime"] = last["lastTransitionTime"]
    else:
        merged["lastTransitionTime"] = _now()
    out: list[dict[str, Any]] = []
    for c in existing:  # in place (the first of its type), so rewriting one condition never reorders
        if c.get("type") != new["type"]:
            out.append(dict(c))
        elif merged is not None:
            out.append(merged)
            merged = None
    if merged is not None:
        out.append(merged)
    return out


def desired_status(obj: Mapping[str, Any], cond: Mapping[str, Any] | None, **fields: Any) -> dict[str, Any]:
    """The object's status with `cond` merged and `fields` set (None removes a field)."""
    status: dict[str, Any] = deep_copy(dict(obj.get("status") or {}))
    gen = (obj.get("metadata") or {}).get("generation")
    if cond is not None:
        status["conditions"] = merge_conditions(status.get("conditions") or [], cond,
                                                int(gen) if gen is not None else None)
    for k, v in fields.items():
        if v is None or v == []:
            status.pop(k, None)
        else:
            status[k] = v
    return status


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return {k: v for k, v in a.items() if v not in (None, [], {})} == {
        k: v for k, v in b.items() if v not in (None, [], {})}


def write_status(client: ResourceClient, obj: Obj, cond: Mapping[str, Any] | None, **fields: Any) -> Obj:
    """Write the status if it differs; returns the object as stored (the input when nothing was written), so
    a second write in the same reconcile carries the fresh resourceVersion. Conflicts propagate (retry)."""
    for attempt in range(3):
        status = desired_status(obj, cond, **fields)
        if _same(status, obj.get("status") or {}):
            return obj
        out = deep_copy(obj)
        out["status"] = status
        try:
            return client.update_status(out)
        except NotFound:
            return obj  # deleted meanwhile: nothing to report on
        except Conflict:
            if attempt == 2:
                raise
            # informer caches lag behind our own writes: merge into the stored object instead
            meta = obj.get("metadata") or {}
            try:
                obj = client.get(str(meta.get("namespace") or ""), str(meta.get("name")))
            except NotFound:
                return obj
    raise AssertionError("unreachable")


def allocated_ips(obj: Mapping[str, Any]) -> list[str]:
    return [str(ip) for ip in (obj.get("status") or {}).get("allocatedIPs") or () if ip]


def allocated_ip(obj: Mapping[str, Any]) -> str | None:
    ip = (obj.get("status") or {}).get("allocatedIP")
    return str(ip) if ip else None
