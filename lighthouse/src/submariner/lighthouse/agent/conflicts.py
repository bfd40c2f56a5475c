"""Conflict detection per KEP-1645 (lighthouse-agent.md §6.3), from every constituent at once.

Every exporter writes its constituent into the broker aggregate, so each one sees all of them and computes
the same answer: precedence = oldest export timestamp, ties by cluster name, for *every* property including
the service type (D7); the Conflict condition goes on every exporting cluster (D6), each with a message
written from its own point of view. `only_differing=True` restores upstream's "only the differing cluster".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from submariner.broker.api.conditions import ExportReason as R

Port = tuple[str, str, int, str]


@dataclass(frozen=True)
class Member:
    """A constituent as read back from the aggregate."""

    cluster: str
    type: str
    ports: tuple[Port, ...]
    session_affinity: str
    session_affinity_config: Mapping[str, Any] | None
    use_clusterset_ip: bool
    timestamp: int

    @property
    def precedence(self) -> tuple[int, str]:
        return (self.timestamp, self.cluster)


def ordered(members: Sequence[Member]) -> list[Member]:
    return sorted(members, key=lambda m: m.precedence)


def eligible(members: Sequence[Member]) -> list[Member]:
    """Members exported under the winning type (the oldest member's type), oldest first."""
    ms = ordered(members)
    return [m for m in ms if m.type == ms[0].type] if ms else []


def union_ports(members: Sequence[Member]) -> list[Port]:
    """Aggregate ports: union by port name, the oldest cluster's definition winning (§5 step 4)."""
    seen: dict[str, Port] = {}
    for m in members:
        for p in m.ports:
            seen.setdefault(p[0], p)
    return list(seen.values())


def _render_port(p: Port) -> str:
    return f'[name: {p[0]}, protocol: {p[1]}, port: {p[2]}, appProtocol: "{p[3]}"]'


def _render_affinity_config(cfg: Mapping[str, Any] | None) -> str:
    timeout = ((cfg or {}).get("clientIP") or {}).get("timeoutSeconds")
    return f"ClientIP TimeoutSeconds: {timeout}" if timeout is not None else "none"


def _clusters(ms: Sequence[Member]) -> str:
    return "[" + ", ".join(m.cluster for m in ms) + "]"


def conflicts_for(cluster: str, members: Sequence[Member], *, has_vip: bool,
                  only_differing: bool = False) -> list[tuple[str, str]]:
    """(reason, message) pairs for `cluster`'s ServiceExport; empty = no conflict."""
    ms = ordered(members)
    me = next((m for m in ms if m.cluster == cluster), None)
    if me is None or len(ms) < 2:
        return []
    oldest = ms[0]
    out: list[tuple[str, str]] = []

    if any(m.type != oldest.type for m in ms):
        if me.type != oldest.type:
            out.append((R.CONFLICTING_TYPE,
                        f'The local service type ("{me.type}") does not match the type ("{oldest.type}") of the '
                        "existing exported service"))
        elif not only_differing:
            others = [m for m in ms if m.type != oldest.type]
            out.append((R.CONFLICTING_TYPE,
                        f"The service type conflicts between the constituent clusters {_clusters(ms)}. Clusters "
                        f'{_clusters(others)} are not exported; using type "{oldest.type}" from the oldest '
                        f'exported service in cluster "{oldest.cluster}".'))
        if me.type != oldest.type:
            return out  # not exported: the other properties do not apply to it

    el = [m for m in ms if m.type == oldest.type]
    if len(el) < 2:
        return out

    port_sets = [frozenset(m.ports) for m in el]
    if any(s != port_sets[0] for s in port_sets) and (not only_differing or frozenset(me.ports) != port_sets[0]):
        if has_vip:
            exposed, how = union_ports(el), "union"
        else:
            common = frozenset.intersection(*port_sets)
            exposed, how = sorted(common), "intersection"
        out.append((R.CONFLICTING_PORTS,
                    f"The service ports conflict between the constituent clusters {_clusters(el)}. The service will "
                    f"expose the {how} of all the ports: {', '.join(_render_port(p) for p in exposed)}"))

    first = el[0]
    for reason, attr, label, render in (
        (R.CONFLICTING_SESSION_AFFINITY, "session_affinity", "SessionAffinity", lambda v: str(v or "None")),
        (R.CONFLICTING_SESSION_AFFINITY_CONFIG, "session_affinity_config", "SessionAffinityConfig",
         _render_affinity_config),
    ):
        values = [_norm(getattr(m, attr)) for m in el]
        if all(v == values[0] for v in values):
            continue
        mine = _norm(getattr(me, attr))
        if mine != values[0]:
            out.append((reason, f'The local service {label} "{render(mine)}" conflicts with other constituent '
                                f'clusters. Using {label} "{render(values[0])}" from the oldest exported service '
                                f'in cluster "{first.cluster}".'))
        elif not only_differing:
            out.append((reason, f"The service {label} conflicts between the constituent clusters {_clusters(el)}. "
                                f'Using {label} "{render(values[0])}" from the oldest exported service in cluster '
                                f'"{first.cluster}".'))

    if any(m.use_clusterset_ip != first.use_clusterset_ip for m in el):
        mine_s, first_s = str(me.use_clusterset_ip).lower(), str(first.use_clusterset_ip).lower()
        if me.use_clusterset_ip != first.use_clusterset_ip:
            out.append((R.CONFLICTING_CLUSTERSET_IP_ENABLEMENT,
                        f'The local service clusterset IP enablement setting "{mine_s}" conflicts with the '
                        f'enablement setting "{first_s}" determined by the first exporting cluster '
                        f'"{first.cluster}".'))
        elif not only_differing:
            out.append((R.CONFLICTING_CLUSTERSET_IP_ENABLEMENT,
                        "The service clusterset IP enablement setting conflicts between the constituent clusters "
                        f'{_clusters(el)}. Using "{first_s}" determined by the first exporting cluster '
                        f'"{first.cluster}".'))
    return out


def _norm(v: Any) -> Any:
    """"", "None", {} and None all mean "no affinity" (API defaults differ between servers)."""
    return None if not v or v == "None" else v
