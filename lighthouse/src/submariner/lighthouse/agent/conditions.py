"""ServiceExport status conditions (lighthouse-agent.md §6.1-§6.2), computed whole and written only on change.

Each reconcile states what every condition should say; `merge` applies that to the current list keeping
`lastTransitionTime` when the text did not change, so a reconcile that changes nothing writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from submariner.broker.api.conditions import ExportCondition as T
from submariner.broker.api.conditions import ExportReason as R

READY_MESSAGE = "Service was successfully exported to the broker"
SYNCED_MESSAGE = "ServiceImport was successfully synced to the broker"
AWAITING_MESSAGE = "ServiceImport created - awaiting aggregation on the broker"
AWAITING_SYNC_REASON = "AwaitingSync"
AWAITING_SYNC_MESSAGE = "Awaiting sync of the ServiceImport to the broker"
BROKER_UNAVAILABLE_REASON = "BrokerUnavailable"
CONFLICT_MESSAGE = "Unable to export due to an irresolvable conflict"
ORDER = (T.VALID, T.READY, T.SYNCED, T.CONFLICT)


@dataclass(frozen=True)
class Cond:
    """What one condition should say; `only_if_absent` = set it only when no condition of the type exists."""

    status: str
    reason: str = ""
    message: str = ""
    only_if_absent: bool = False


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def valid() -> Cond:
    return Cond("True")


def invalid(reason: str, message: str) -> Cond:
    return Cond("False", reason, message)


def ready() -> Cond:
    return Cond("True", "", READY_MESSAGE)


def awaiting_export() -> Cond:
    return Cond("False", R.AWAITING_EXPORT, AWAITING_MESSAGE, only_if_absent=True)


def export_failed(err: str) -> Cond:
    return Cond("False", R.EXPORT_FAILED, f"Unable to export: {err}")


def conflict_failed() -> Cond:
    return Cond("False", R.EXPORT_FAILED, CONFLICT_MESSAGE)


def no_service_import() -> Cond:
    return Cond("False", R.NO_SERVICE_IMPORT, "ServiceImport was deleted")


def synced() -> Cond:
    return Cond("True", "", SYNCED_MESSAGE)


def awaiting_sync() -> Cond:
    return Cond("False", AWAITING_SYNC_REASON, AWAITING_SYNC_MESSAGE, only_if_absent=True)


def sync_failed(err: str) -> Cond:
    return Cond("False", R.EXPORT_FAILED, f"Unable to export: {err}")


def broker_unavailable(err: str) -> Cond:
    return Cond("False", BROKER_UNAVAILABLE_REASON, f"The broker is unreachable: {err}")


def conflict(found: Sequence[tuple[str, str]]) -> Cond:
    """Conflict from (reason, message) pairs: reasons comma-joined, messages newline-joined (§6.2)."""
    if not found:
        return Cond("False")
    return Cond("True", ",".join(r for r, _ in found), "\n".join(m for _, m in found))


def merge(current: Sequence[Mapping[str, Any]], desired: Mapping[str, Cond], now: str = "") -> list[dict[str, Any]]:
    """The new conditions list: `desired` applied over `current`; untouched types are kept as they are."""
    now = now or now_rfc3339()
    out: list[dict[str, Any]] = [dict(c) for c in current]
    by_type = {c.get("type"): i for i, c in enumerate(out)}
    for ctype, want in desired.items():
        i = by_type.get(ctype)
        if i is None:
            if ctype == T.CONFLICT and want.status == "False":
                continue  # "no conflict" is only written to clear a previous one
            out.append({"type": ctype, "status": want.status, "lastTransitionTime": now,
                        "reason": want.reason, "message": want.message})
            by_type[ctype] = len(out) - 1
            continue
        if want.only_if_absent:
            continue
        have = out[i]
        if (have.get("status"), have.get("reason") or "", have.get("message") or "") == (
                want.status, want.reason, want.message):
            continue
        out[i] = {"type": ctype, "status": want.status, "lastTransitionTime": now,
                  "reason": want.reason, "message": want.message}
    rank = {t: n for n, t in enumerate(ORDER)}
    out.sort(key=lambda c: rank.get(str(c.get("type")), len(ORDER)))
    return out


def find(conditions: Sequence[Mapping[str, Any]], ctype: str) -> Mapping[str, Any] | None:
    for c in conditions:
        if c.get("type") == ctype:
            return c
    return None
