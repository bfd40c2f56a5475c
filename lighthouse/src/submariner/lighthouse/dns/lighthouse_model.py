"""The data behind `clusterset.local` answers (lighthouse-dns.md §3, §6): services, clusters, records, connectivity.

`Model` is plain data plus the selection rules; it knows nothing of DNS messages, so it is tested with dicts.
`Watcher` feeds it from a cluster (ServiceImports, Lighthouse EndpointSlices, Gateways) and hands every event
to the DNS server's event-loop thread through a `Dispatcher`: the model then never changes while an answer is
being computed, and the cache invalidation that follows a change cannot race an answer built before it.

Every change is reported to the subscribed listeners as `(service key or None for "everything", existence
changed)`, so the DNS layer can drop exactly the cached answers that depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Generic, NamedTuple, TypeVar

from submariner.broker.api import labels as L
from submariner.broker.api.multicluster import SERVICE_IMPORTS
from submariner.broker.api.operator import SUBMARINERS
from submariner.broker.api.submariner import GATEWAYS
from submariner.broker.kube import ENDPOINT_SLICES, ClientFactory, Informer, KubeError, Obj
from submariner.lighthouse.dns.k8s import metadata_and_labels, metadata_labels_annotations

log = logging.getLogger(__name__)

__all__ = [
    "Balancer",
    "Connectivity",
    "Dispatcher",
    "Model",
    "Port",
    "Record",
    "ServiceKey",
    "Watcher",
    "synthesized_label",
]

ServiceKey = tuple[str, str]
"""(namespace, service name)."""

Listener = Callable[["ServiceKey | None", bool], None]
"""Called after a change: (service key, or None when every answer may change; whether existence changed)."""

Schedule = Callable[[float, Callable[[], None]], None]

#: Legacy (pre-0.15) per-cluster ServiceImport annotations; such imports are migration leftovers and ignored.
LEGACY_ORIGIN_NAME = "origin-name"
LEGACY_ORIGIN_NAMESPACE = "origin-namespace"

_ADD, _UPDATE, _DELETE = "add", "update", "delete"
_OPS = {"add": _ADD, "added": _ADD, "update": _UPDATE, "modified": _UPDATE, "delete": _DELETE,
        "deleted": _DELETE}


def _op(op: str) -> str:
    try:
        return _OPS[op.lower()]
    except KeyError:
        raise ValueError(f"unknown operation {op!r}: use add, update or delete") from None


# -- the balancer (coredns/loadbalancer) -------------------------------------------------------------------

T = TypeVar("T", bound=Hashable)


class _Weighted(Generic[T]):
    __slots__ = ("current", "effective", "item", "weight")

    def __init__(self, item: T, weight: int) -> None:
        self.item = item
        self.weight = weight
        self.current = 0
        self.effective = weight


class Balancer(Generic[T]):
    """Smooth weighted round robin (nginx style), exactly as §3.3; equal weights give insertion-order rotation."""

    __slots__ = ("_index", "_items")

    def __init__(self) -> None:
        self._items: list[_Weighted[T]] = []
        self._index: dict[T, _Weighted[T]] = {}

    def add(self, item: T | None, weight: int) -> None:
        if item is None:
            raise ValueError("item cannot be nil")
        if weight < 0:
            raise ValueError(f"weight {weight} is negative")
        if item in self._index:
            raise ValueError(f"item {item!r} already exists")
        w = _Weighted(item, weight)
        self._items.append(w)
        self._index[item] = w

    def next(self) -> T | None:
        items = self._items
        if not items:
            return None
        if len(items) == 1:
            return items[0].item
        total = 0
        best: _Weighted[T] | None = None
        for w in items:
            w.current += w.effective
            if w.effective < w.weight:
                w.effective += 1
            total += w.effective
            if best is None or w.current > best.current:
                best = w
        assert best is not None
        best.current -= total
        return best.item

    def skip(self, item: T) -> None:
        """Avoid `item` for about one round (it recovers one step per `next`)."""
        w = self._index.get(item)
        if w is not None:
            w.effective = max(0, w.effective - w.weight)

    def remove_all(self) -> None:
        self._items.clear()
        self._index.clear()

    def items(self) -> list[T]:
        return [w.item for w in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def clone(self) -> Balancer[T]:
        """An independent copy with the same state (to preview the rotation without advancing it)."""
        other: Balancer[T] = Balancer()
        for w in self._items:
            c = _Weighted(w.item, w.weight)
            c.current = w.current
            c.effective = w.effective
            other._items.append(c)
            other._index[w.item] = c
        return other


# -- records ---------------------------------------------------------------------------------------------


class Port(NamedTuple):
    """One service port; equality is the merged-ports key `name:protocol:port:appProtocol` (D5)."""

    name: str
    protocol: str
    port: int
    app_protocol: str


class Record(NamedTuple):
    """One address of a service in one cluster (or the clusterset IP, with `cluster` empty)."""

    ip: str
    packed: bytes  # 4 bytes (IPv4) or 16 (IPv6)
    ports: tuple[Port, ...]
    hostname: str  # as published ("" when the endpoint has none, D4)
    cluster: str  # cluster ID as published
    label: str  # the DNS label naming this record in SRV targets: hostname, else derived from the address

    @property
    def family(self) -> int:
        return 4 if len(self.packed) == 4 else 6


def synthesized_label(ip: str) -> str:
    """The later-upstream label for an endpoint without hostname: `100.96.1.5` → `100-96-1-5`, `:` → `-` (D4)."""
    return ip.replace(".", "-").replace(":", "-")


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _address(text: Any, address_filter: bool) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The parsed address, or None when it is not an IP or (with the filter) not one a client can use (§8.7)."""
    if not isinstance(text, str):
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address_filter and (ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip.is_multicast
                           or ip == _BROADCAST):
        return None
    return ip


_PORTS: dict[tuple[Port, ...], tuple[Port, ...]] = {}


def _shared_ports(ports: tuple[Port, ...]) -> tuple[Port, ...]:
    """One tuple per distinct port list (thousands of services have the same few): saves a tuple and its Ports
    per record."""
    if not ports:
        return ()
    shared = _PORTS.get(ports)
    if shared is None:
        if len(_PORTS) >= 4096:
            _PORTS.clear()
        shared = _PORTS[ports] = ports
    return shared


def _ports(raw: Any) -> tuple[Port, ...]:
    out: list[Port] = []
    if isinstance(raw, list):
        for p in raw:
            if not isinstance(p, dict) or not isinstance(p.get("port"), int):
                continue
            out.append(Port(str(p.get("name") or ""), str(p.get("protocol") or "TCP"), int(p["port"]),
                            str(p.get("appProtocol") or "")))
    return _shared_ports(tuple(out))


def _hostname(ep: Mapping[str, Any]) -> str:
    host = ep.get("hostname")
    if isinstance(host, str) and host:
        return host
    ref = ep.get("targetRef")
    if isinstance(ref, dict) and str(ref.get("kind") or "").lower() == "pod" and ref.get("name"):
        return str(ref["name"])
    return ""


def _ready(ep: Mapping[str, Any]) -> bool | None:
    cond = ep.get("conditions")
    if isinstance(cond, dict):
        value = cond.get("ready")
        if isinstance(value, bool):
            return value
    return None


def _endpoint_records(endpoints: Any, ports: tuple[Port, ...], publish_not_ready: bool, cluster: str,
                      address_filter: bool) -> tuple[Record, ...]:
    """Headless records of one slice (§3.7): ready (or published-not-ready) endpoints, one record per address."""
    out: list[Record] = []
    if not isinstance(endpoints, list):
        return ()
    for ep in endpoints:
        if not isinstance(ep, dict):
            continue
        if _ready(ep) is False and not publish_not_ready:
            continue
        host = _hostname(ep)
        for text in ep.get("addresses") or ():
            ip = _address(text, address_filter)
            if ip is None:
                continue
            shown = str(ip)
            label = host if 0 < len(host.encode()) <= 63 else synthesized_label(shown)
            out.append(Record(shown, ip.packed, ports, host, cluster, label))
    return tuple(out)


class _Slice(NamedTuple):
    """What the model keeps of one Lighthouse EndpointSlice (compared on update to skip no-op events)."""

    name: str
    cluster: str
    headless: bool
    records: tuple[Record, ...]  # ClusterIP: at most one; headless: the slice's own records
    healthy: bool  # ClusterIP: first endpoint ready (nil = ready)
    globalnet: bool  # headless: annotation "true" or absent (local records come from the K8s slices)
    publish_not_ready: bool
    source_name: str


class _Cluster:
    """One cluster's data for one address family of one service."""

    __slots__ = ("_by_host", "healthy", "merged", "own", "records")

    def __init__(self, records: tuple[Record, ...], healthy: bool) -> None:
        self.records = records
        self.healthy = healthy
        self.own = records[:1]
        self.merged = self.own
        self._by_host: dict[str, list[Record]] | None = None

    @property
    def by_host(self) -> dict[str, list[Record]]:
        """Records by lower-case label (headless hostname lookups only: built on first use)."""
        by_host = self._by_host
        if by_host is None:
            by_host = {}
            for r in self.records:
                by_host.setdefault(r.label.lower(), []).append(r)
            self._by_host = by_host
        return by_host


class _Family:
    __slots__ = ("_balancer", "clusters", "merged_ports", "order", "vip")

    def __init__(self) -> None:
        self.clusters: dict[str, _Cluster] = {}
        self.order: tuple[str, ...] = ()
        self._balancer: Balancer[str] | None = None
        self.merged_ports: tuple[Port, ...] = ()
        self.vip: tuple[Record, ...] = ()

    @property
    def balancer(self) -> Balancer[str]:
        """The round robin over `order`, built on first use (most services are answered local-first and never
        need one); a new set of clusters starts a new one (D9)."""
        balancer = self._balancer
        if balancer is None:
            balancer = self._balancer = Balancer()
            for c in self.order:
                balancer.add(c, 1)
        return balancer


#: The IPv6 family of the (many) services without IPv6 data: shared, never modified (see `_Service.family`).
_NO_FAMILY = _Family()
_NO_LOCAL: Mapping[str, Obj] = MappingProxyType({})


class _Spec(NamedTuple):
    headless: bool
    ips: tuple[str, ...]
    ports: tuple[Port, ...]


_NO_SPEC = _Spec(False, (), ())


class _Service:
    __slots__ = ("entry", "exported", "families", "key", "known", "local", "slices", "spec")

    def __init__(self, key: ServiceKey) -> None:
        self.key = key
        self.spec = _NO_SPEC
        self.exported = False
        self.entry = False  # upstream's serviceMap membership: answers exist only while True
        self.slices: dict[str, _Slice] = {}
        self.local: Mapping[str, Obj] = _NO_LOCAL  # local Kubernetes EndpointSlices by name (headless + Globalnet)
        self.families: tuple[_Family, _Family] = (_Family(), _NO_FAMILY)
        self.known: tuple[str, ...] = ()  # lower-case IDs of clusters with an entry

    def family(self, index: int) -> _Family:
        """The family to modify (the shared empty IPv6 family is replaced by the service's own first)."""
        fam = self.families[index]
        if fam is _NO_FAMILY:
            fam = _Family()
            self.families = (self.families[0], fam) if index else (fam, self.families[1])
        return fam


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("labels") or {}


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("annotations") or {}


_EMPTY: tuple[Record, ...] = ()


# -- what the informers keep ------------------------------------------------------------------------------
#
# The informers cache every ServiceImport, Lighthouse EndpointSlice and Gateway; as decoded JSON they would be
# most of the process's memory (uids, timestamps, managedFields, last-applied annotations, status lists, one
# copy of every repeated label value per object). These transforms keep what the model and the relist diff
# read, with repeated strings shared and identical port lists shared. The model never mutates them.
#
# Every string they keep is a copy: an initial list decodes the whole resource at once, and a few strings per
# object surviving in the middle of it (names, resourceVersions, label values) would pin most of the memory
# allocator's arenas that the list filled, long after the rest of it was freed.

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_READY: dict[bool, dict[str, bool]] = {True: {"ready": True}, False: {"ready": False}}
_PORT_LISTS: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
_STRINGS: dict[str, str] = {}
_PORT_KEYS = ("name", "protocol", "port", "appProtocol")


def _copy(value: Any) -> Any:
    """A string as a new object (see above); anything else as it is."""
    if value.__class__ is str:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    return value


def _i(value: Any) -> Any:
    """A short string shared by every object that has it (label values, namespaces, cluster IDs repeat across
    thousands of objects), as a copy (see above)."""
    if value.__class__ is not str or len(value) > 64:
        return _copy(value)
    shared = _STRINGS.get(value)
    if shared is None:
        if len(_STRINGS) >= 200_000:
            _STRINGS.clear()
        shared = _copy(value)
        _STRINGS[shared] = shared
    return shared


def _int(value: Any) -> Any:
    """An int as a new object too (ints above 256 are allocated by the decoder)."""
    return int(str(value)) if value.__class__ is int and not -5 <= value <= 256 else value


def _slim_meta(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        return {}
    out: dict[str, Any] = {"name": _copy(meta.get("name")), "namespace": _i(meta.get("namespace")),
                           "resourceVersion": _copy(meta.get("resourceVersion"))}
    labels = meta.get("labels")
    if isinstance(labels, dict) and labels:
        out["labels"] = {_i(k): _i(v) for k, v in labels.items()}
    annotations = meta.get("annotations")
    if isinstance(annotations, dict) and annotations:
        kept = {_i(k): _i(v) for k, v in annotations.items() if k != LAST_APPLIED}
        if kept:
            out["annotations"] = kept
    return out


def _slim_ports(ports: Any) -> Any:
    if not isinstance(ports, list):
        return ports
    slim = []
    for p in ports:
        if isinstance(p, dict):
            q = {k: _int(p[k]) if k == "port" else _i(p[k]) for k in _PORT_KEYS if k in p}
            slim.append(q)
        else:
            slim.append(p)
    try:
        key = tuple(tuple(sorted(q.items())) if isinstance(q, dict) else q for q in slim)
        shared = _PORT_LISTS.get(key)
    except TypeError:  # something unhashable in there: keep the object's own list
        return slim
    if shared is None:
        if len(_PORT_LISTS) >= 4096:
            _PORT_LISTS.clear()
        shared = _PORT_LISTS[key] = slim
    return shared


def _slim_endpoint(ep: Any) -> Any:
    if not isinstance(ep, dict):
        return ep
    addresses = ep.get("addresses")
    out: dict[str, Any] = {"addresses": [_copy(a) for a in addresses] if isinstance(addresses, list) else addresses}
    cond = ep.get("conditions")
    if isinstance(cond, dict):
        ready = cond.get("ready")
        out["conditions"] = _READY[ready] if isinstance(ready, bool) else {"ready": ready} if "ready" in cond else {}
    if "hostname" in ep:
        out["hostname"] = _i(ep["hostname"])
    ref = ep.get("targetRef")
    if isinstance(ref, dict):
        out["targetRef"] = {"kind": _i(ref.get("kind")), "name": _copy(ref.get("name"))}
    return out


def slim_service_import(obj: Obj) -> Obj:
    """What `Model.apply_service_import` reads of a ServiceImport (informer transform)."""
    spec = obj.get("spec")
    out: Obj = {"metadata": _slim_meta(obj.get("metadata"))}
    if isinstance(spec, dict):
        ips = spec.get("ips")
        out["spec"] = {"type": _i(spec.get("type")), "ips": [_copy(ip) for ip in ips] if isinstance(ips, list) else ips,
                       "ports": _slim_ports(spec.get("ports"))}
    return out


def slim_endpoint_slice(obj: Obj) -> Obj:
    """What `Model.apply_endpoint_slice` reads of a Lighthouse EndpointSlice (informer transform)."""
    endpoints = obj.get("endpoints")
    return {"metadata": _slim_meta(obj.get("metadata")), "addressType": _i(obj.get("addressType")),
            "endpoints": [_slim_endpoint(ep) for ep in endpoints] if isinstance(endpoints, list) else endpoints,
            "ports": _slim_ports(obj.get("ports"))}


def _slim_connection(conn: Any) -> Any:
    if not isinstance(conn, dict):
        return conn
    endpoint = conn.get("endpoint")
    if isinstance(endpoint, dict):
        endpoint = {"cluster_id": _i(endpoint.get("cluster_id"))}
    return {"status": _i(conn.get("status")), "endpoint": endpoint}


def slim_gateway(obj: Obj) -> Obj:
    """What `Connectivity.apply` reads of a Gateway (informer transform)."""
    status = obj.get("status")
    out: Obj = {"metadata": _slim_meta(obj.get("metadata"))}
    if isinstance(status, dict):
        local = status.get("localEndpoint")
        conns = status.get("connections")
        out["status"] = {
            "haStatus": _i(status.get("haStatus")),
            "localEndpoint": {"cluster_id": _i(local.get("cluster_id"))} if isinstance(local, dict) else local,
            "connections": [_slim_connection(c) for c in conns] if isinstance(conns, list) else conns,
        }
    return out


# -- connectivity (coredns/gateway) ----------------------------------------------------------------------


class _GatewayState(NamedTuple):
    local: str
    connected: frozenset[str]


class Connectivity:
    """Which clusters are reachable, from the Gateways' status (§3.6), recomputed on every event (D6)."""

    def __init__(self, local_cluster_id: str = "", *, grace: float = 0.0, tracking: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.local_cluster_id = local_cluster_id
        self.tracking = tracking
        self.grace = grace
        self.clock = clock
        self.processed = False
        self._gateways: dict[tuple[str, str], _GatewayState] = {}
        self._connected: frozenset[str] = frozenset()
        self._grace_until: dict[str, float] = {}

    def is_connected(self, cluster: str) -> bool:
        """`cluster` is lower-case; true for everyone when tracking is off (service-discovery-only installs)."""
        if not self.tracking:
            return True
        if cluster in self._connected:
            return True
        until = self._grace_until.get(cluster)
        return until is not None and until > self.clock()

    @property
    def connected(self) -> frozenset[str]:
        return self._connected

    def apply(self, op: str, obj: Mapping[str, Any]) -> tuple[bool, float | None]:
        """Apply one Gateway event; returns (answers may change, seconds until a grace period ends)."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        old_local = self.local_cluster_id
        if _op(op) == _DELETE:
            self._gateways.pop(key, None)
        else:
            status = obj.get("status") or {}
            local = str((status.get("localEndpoint") or {}).get("cluster_id") or "")
            states: dict[str, bool] = {}
            if status.get("haStatus") == "active":
                for conn in status.get("connections") or ():
                    if not isinstance(conn, dict):
                        continue
                    cid = str((conn.get("endpoint") or {}).get("cluster_id") or "").lower()
                    if cid:
                        states[cid] = conn.get("status") == "connected"  # the last entry per cluster wins
            self._gateways[key] = _GatewayState(local, frozenset(c for c, ok in states.items() if ok))
            if local:
                self.local_cluster_id = local
            self.processed = True
        connected: set[str] = set()
        for state in self._gateways.values():
            if state.local:
                connected.add(state.local.lower())
            connected |= state.connected
        fresh = frozenset(connected)
        expiry: float | None = None
        if fresh != self._connected:
            now = self.clock()
            for gone in self._connected - fresh:
                if self.grace > 0:
                    self._grace_until[gone] = now + self.grace
                    expiry = self.grace
            for back in fresh:
                self._grace_until.pop(back, None)
        changed = fresh != self._connected or old_local != self.local_cluster_id
        self._connected = fresh
        return changed, expiry

    def expire(self) -> bool:
        """Forget grace periods that ended; True when one did (answers change)."""
        now = self.clock()
        ended = [c for c, until in self._grace_until.items() if until <= now]
        for c in ended:
            del self._grace_until[c]
        return bool(ended)


# -- the model ---------------------------------------------------------------------------------------------


class Model:
    """Services, their per-cluster records and the cluster connectivity, with the selection rules of §3."""

    def __init__(self, *, local_cluster_id: str = "", address_filter: bool = True, connectivity_grace: float = 0.0,
                 track_connectivity: bool = True, clock: Callable[[], float] = time.monotonic,
                 schedule: Schedule | None = None) -> None:
        self.address_filter = address_filter
        self.connectivity = Connectivity(local_cluster_id, grace=connectivity_grace, tracking=track_connectivity,
                                         clock=clock)
        self.schedule = schedule
        self.synced = False
        self._services: dict[ServiceKey, _Service] = {}
        self._vips: dict[str, set[ServiceKey]] = {}
        self._listeners: list[Listener] = []

    # -- observation ---------------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, key: ServiceKey | None, existence: bool) -> None:
        for listener in list(self._listeners):
            try:
                listener(key, existence)
            except Exception:
                log.exception("lighthouse model listener failed")

    @property
    def local_cluster_id(self) -> str:
        return self.connectivity.local_cluster_id

    def is_connected(self, cluster: str) -> bool:
        return self.connectivity.is_connected(cluster.lower())

    def mark_synced(self) -> None:
        """The initial lists have been applied: negative answers are now trustworthy (D12)."""
        if not self.synced:
            self.synced = True
            self._notify(None, True)

    def set_connectivity_tracking(self, enabled: bool) -> None:
        if self.connectivity.tracking != enabled:
            self.connectivity.tracking = enabled
            self._notify(None, False)

    def exists(self, namespace: str, service: str) -> bool:
        svc = self._services.get((namespace, service))
        return svc is not None and svc.entry

    def services(self) -> list[ServiceKey]:
        return sorted(k for k, s in self._services.items() if s.entry)

    def services_for_ip(self, ip: str) -> list[ServiceKey]:
        """Services whose clusterset IP is `ip` (for PTR, §8.3)."""
        return sorted(k for k in self._vips.get(ip, ()) if self.exists(*k))

    # -- ServiceImports ------------------------------------------------------------------------------------
    def apply_service_import(self, op: str, obj: Mapping[str, Any]) -> None:
        """Aggregated ServiceImport `N/S` (§6.1): creates the entry and replaces its spec on every update (D2)."""
        kind = _op(op)
        labels, annotations = _labels(obj), _annotations(obj)
        if L.SERVICE_NAME in labels or L.SERVICE_NAME in annotations:
            return  # per-cluster local copy, or the aggregate in the broker namespace
        if LEGACY_ORIGIN_NAME in annotations or LEGACY_ORIGIN_NAMESPACE in annotations:
            return  # pre-0.15 per-cluster import (legacy migration is not supported)
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if kind == _DELETE:
            svc = self._services.get(key)
            if svc is None or not svc.exported:
                return
            svc.exported = False
            self._index_vips(key, svc.spec.ips, ())
            if not svc.known:
                svc.entry = False
                self._drop_if_unused(svc)
            self._notify(key, True)
            return
        spec_obj = obj.get("spec") or {}
        ips = spec_obj.get("ips") or []
        spec = _Spec(spec_obj.get("type") == "Headless", tuple(str(i) for i in ips if isinstance(i, str)),
                     _ports(spec_obj.get("ports")))
        svc = self._services.get(key)
        if svc is None:
            svc = self._services[key] = _Service(key)
        if svc.entry and svc.exported and svc.spec == spec:
            return
        self._index_vips(key, svc.spec.ips if svc.exported else (), spec.ips)
        svc.spec = spec
        svc.exported = True
        svc.entry = True
        self._set_vips(svc)
        self._notify(key, True)

    def _index_vips(self, key: ServiceKey, old: Iterable[str], new: Iterable[str]) -> None:
        for ip in old:
            owners = self._vips.get(ip)
            if owners is not None:
                owners.discard(key)
                if not owners:
                    del self._vips[ip]
        for ip in new:
            parsed = _address(ip, self.address_filter)
            if parsed is not None:
                self._vips.setdefault(str(parsed), set()).add(key)

    def _set_vips(self, svc: _Service) -> None:
        for index, version in ((0, 4), (1, 6)):
            vip: tuple[Record, ...] = ()
            for text in svc.spec.ips:
                ip = _address(text, self.address_filter)
                if ip is not None and ip.version == version:
                    vip = (Record(str(ip), ip.packed, svc.spec.ports, "", "", ""),)
                    break
            if vip or svc.families[index].vip:
                svc.family(index).vip = vip

    def _drop_if_unused(self, svc: _Service) -> None:
        if not svc.entry and not svc.slices:
            self._services.pop(svc.key, None)

    # -- EndpointSlices ------------------------------------------------------------------------------------
    def needs_local_slices(self, obj: Mapping[str, Any]) -> bool:
        """Whether this slice's records come from the local Kubernetes EndpointSlices (local headless Globalnet)."""
        labels = _labels(obj)
        local = self.local_cluster_id
        return (bool(local) and labels.get(L.IS_HEADLESS) == "true"
                and labels.get(L.SOURCE_CLUSTER, "").lower() == local.lower()
                and _annotations(obj).get(L.GLOBALNET_ENABLED, "true") == "true")

    def apply_endpoint_slice(self, op: str, obj: Mapping[str, Any], local_slices: Sequence[Obj] | None = None) -> bool:
        """Apply a Lighthouse EndpointSlice event (§6.2); True when it must be retried later (local slices missing).

        `local_slices` are the local Kubernetes EndpointSlices of the service (label kubernetes.io/service-name),
        needed only when `needs_local_slices(obj)`.
        """
        kind = _op(op)
        labels = _labels(obj)
        meta = obj.get("metadata") or {}
        if labels.get(L.ENDPOINTSLICE_MANAGED_BY) != L.LIGHTHOUSE_MANAGED_BY:
            return False
        service, namespace, cluster = (labels.get(L.SERVICE_NAME), labels.get(L.SOURCE_NAMESPACE),
                                       labels.get(L.SOURCE_CLUSTER))
        if not service or not namespace or not cluster:
            return False
        if meta.get("namespace") != namespace:
            return False  # a copy in the broker namespace of a co-located broker
        headless_label = labels.get(L.IS_HEADLESS)
        if headless_label not in ("true", "false"):
            return False  # pre-0.15 legacy slice: only meaningful with legacy imports (not supported)
        key = (namespace, service)
        name = str(meta.get("name") or "")
        svc = self._services.get(key)
        if kind == _DELETE:
            if svc is None or name not in svc.slices:
                return False
            gone = svc.slices.pop(name)
            requeue = self._rebuild(svc, gone.cluster.lower())
            self._after_slices(svc)
            return requeue
        parsed = self._parse_slice(obj, name, cluster, headless_label == "true")
        if parsed is None:
            log.info("lighthouse ignoring EndpointSlice without endpoints slice=%s/%s", namespace, name)
            return False
        if svc is None:
            svc = self._services[key] = _Service(key)
        previous = svc.slices.get(name)
        if local_slices is not None:
            svc.local = {str((o.get("metadata") or {}).get("name") or ""): o for o in local_slices}
        elif previous == parsed:
            return False
        svc.slices[name] = parsed
        requeue = False
        if previous is not None and previous.cluster.lower() != cluster.lower():
            requeue = self._rebuild(svc, previous.cluster.lower())
        requeue = self._rebuild(svc, cluster.lower()) or requeue
        self._after_slices(svc)
        return requeue

    def _parse_slice(self, obj: Mapping[str, Any], name: str, cluster: str, headless: bool) -> _Slice | None:
        endpoints = obj.get("endpoints") or []
        ports = _ports(obj.get("ports"))
        annotations = _annotations(obj)
        publish = annotations.get(L.PUBLISH_NOT_READY_ADDRESSES) == "true"
        if headless:
            records = _endpoint_records(endpoints, ports, publish, cluster, self.address_filter)
            return _Slice(name, cluster, True, records, True, annotations.get(L.GLOBALNET_ENABLED, "true") == "true",
                          publish, _labels(obj).get(L.SOURCE_NAME, ""))
        if not isinstance(endpoints, list) or not endpoints or not isinstance(endpoints[0], dict):
            return None
        first = endpoints[0]
        addresses = first.get("addresses") or []
        ip = _address(addresses[0], self.address_filter) if addresses else None
        record = () if ip is None else (Record(str(ip), ip.packed, ports, "", cluster, synthesized_label(str(ip))),)
        return _Slice(name, cluster, False, record, _ready(first) is not False, False, publish, "")

    def _rebuild(self, svc: _Service, cluster: str) -> bool:
        """Recompute one cluster's records from every stored slice of it; True when local data was missing."""
        slices = [s for s in svc.slices.values() if s.cluster.lower() == cluster]
        requeue = False
        per_family: tuple[dict[str, Record], dict[str, Record]] = ({}, {})
        healthy = True
        cluster_ip = False
        for s in slices:
            if not s.headless and s.records:
                rec = s.records[0]
                per_family[0 if rec.family == 4 else 1][rec.ip] = rec
                healthy = s.healthy
                cluster_ip = True
        for s in sorted((s for s in slices if s.headless), key=lambda s: s.name):
            records = s.records
            if s.globalnet and cluster == self.local_cluster_id.lower():
                found, records = self._local_records(svc, s)
                requeue = requeue or not found
            for rec in records:
                per_family[0 if rec.family == 4 else 1].setdefault(rec.ip, rec)
        has_headless = any(s.headless for s in slices)
        for index in (0, 1):
            recs = tuple(per_family[index].values())
            if cluster_ip and not has_headless:
                recs = recs[-1:]  # one ClusterIP record per family: the latest slice's
            if recs or (has_headless and not cluster_ip):
                svc.family(index).clusters[cluster] = _Cluster(recs, healthy)
            elif svc.families[index] is not _NO_FAMILY:
                svc.families[index].clusters.pop(cluster, None)
        if (cluster_ip and any(cluster in f.clusters for f in svc.families)) or has_headless:
            if cluster not in svc.known:
                svc.known = (*svc.known, cluster)
        elif cluster in svc.known:
            svc.known = tuple(c for c in svc.known if c != cluster)
        return requeue

    def _local_records(self, svc: _Service, s: _Slice) -> tuple[bool, tuple[Record, ...]]:
        """Pod IPs of the local Kubernetes slice behind a Globalnet headless slice (global IPs are not routable)."""
        if s.source_name:
            source = svc.local.get(s.source_name)
            objs = [source] if source is not None else []
        else:
            objs = list(svc.local.values())
        if not objs:
            return False, ()
        out: list[Record] = []
        for o in objs:
            out.extend(_endpoint_records(o.get("endpoints"), _ports(o.get("ports")), s.publish_not_ready,
                                         s.cluster, self.address_filter))
        return True, tuple(out)

    def _after_slices(self, svc: _Service) -> None:
        """Recompute merged ports and balancers; drop the entry when no cluster is left and it is not exported."""
        for fam in svc.families:
            if fam is _NO_FAMILY:
                continue
            order = tuple(sorted(fam.clusters))
            if order != fam.order:  # D9: a new balancer only when the set of clusters changes
                fam.order = order
                fam._balancer = None
            merged: list[Port] | None = None
            for c in order:  # D5: plain intersection in sorted cluster order
                info = fam.clusters[c]
                own = info.own[0].ports if info.own else ()
                merged = list(own) if merged is None else [p for p in merged if p in own]
            fam.merged_ports = _shared_ports(tuple(merged or ()))
            for info in fam.clusters.values():
                if info.own and info.own[0].ports != fam.merged_ports:
                    info.merged = (info.own[0]._replace(ports=fam.merged_ports),)
                else:
                    info.merged = info.own
        existence = False
        if svc.entry and not svc.known and not svc.exported:
            svc.entry = False
            existence = True
        self._drop_if_unused(svc)
        if svc.entry or existence:
            self._notify(svc.key, existence)

    # -- Gateways ------------------------------------------------------------------------------------------
    def apply_gateway(self, op: str, obj: Mapping[str, Any]) -> None:
        changed, expiry = self.connectivity.apply(op, obj)
        if expiry is not None and self.schedule is not None:
            self.schedule(expiry + 0.001, self._grace_ended)
        if changed:
            self._notify(None, False)

    def _grace_ended(self) -> None:
        if self.connectivity.expire():
            self._notify(None, False)

    # -- lookups -------------------------------------------------------------------------------------------
    def preferred_family(self, namespace: str, service: str) -> int:
        """The family SRV answers use: IPv4, or IPv6 for a service without any IPv4 data."""
        svc = self._services.get((namespace, service))
        if svc is None:
            return 4
        v4, v6 = svc.families
        if v4.vip or any(c.records for c in v4.clusters.values()):
            return 4
        return 6 if v6.vip or any(c.records for c in v6.clusters.values()) else 4

    def resolve(self, namespace: str, service: str, cluster: str = "", hostname: str = "", family: int = 4, *,
                clusterset_mode: bool = False) -> tuple[Sequence[Record], bool, bool]:
        """(records, is_headless, found) for `[hostname.][cluster.]service.namespace` (§3).

        Names are compared case-insensitively. A no-cluster ClusterSetIP lookup that reaches the round robin
        advances it (§3.3).
        """
        svc = self._services.get((namespace, service))
        if svc is None or not svc.entry:
            return _EMPTY, False, False
        fam = svc.families[0 if family == 4 else 1]
        headless = svc.spec.headless
        if cluster:
            c = cluster.lower()
            if c not in svc.known:
                return _EMPTY, headless, False
            info = fam.clusters.get(c)
            if not headless:
                return (info.own if info is not None else _EMPTY), False, True
            if hostname:
                h = hostname.lower()
                recs = info.by_host.get(h) if info is not None else None
                if recs:
                    return recs, True, True
                other = svc.families[1 if family == 4 else 0].clusters.get(c)
                return _EMPTY, True, other is not None and h in other.by_host
            return (info.records if info is not None else _EMPTY), True, True
        if headless:
            out: list[Record] = []
            conn = self.connectivity
            for c in fam.order:
                if conn.is_connected(c):
                    out.extend(fam.clusters[c].records)
            return out, True, True
        if fam.vip:
            return fam.vip, False, True
        if clusterset_mode:
            return _EMPTY, False, bool(svc.spec.ips)
        local = self.local_cluster_id.lower()
        if local:
            info = fam.clusters.get(local)
            if info is not None and info.healthy and info.merged:
                return info.merged, False, True
        pick = self._select(fam, fam.balancer)
        return (fam.clusters[pick].merged if pick is not None else _EMPTY), False, True

    def _select(self, fam: _Family, balancer: Balancer[str]) -> str | None:
        conn = self.connectivity
        for _ in range(len(balancer)):
            c = balancer.next()
            if c is None:
                return None
            info = fam.clusters.get(c)
            if info is not None and info.healthy and info.merged and conn.is_connected(c):
                return c
            balancer.skip(c)
        return None

    def rotation(self, namespace: str, service: str, family: int = 4) -> list[Record]:
        """The picks the next no-cluster lookups would get, each cluster once, in order, without advancing.

        Empty unless such a lookup is currently answered by the round robin (no clusterset IP, no healthy
        local entry). The DNS layer hands these out as cached variants, so rotation costs nothing on hits.
        """
        svc = self._services.get((namespace, service))
        if svc is None or not svc.entry or svc.spec.headless:
            return []
        fam = svc.families[0 if family == 4 else 1]
        if fam.vip:
            return []
        local = self.local_cluster_id.lower()
        info = fam.clusters.get(local) if local else None
        if info is not None and info.healthy and info.merged:
            return []
        conn = self.connectivity
        eligible = sum(1 for c, i in fam.clusters.items() if i.healthy and i.merged and conn.is_connected(c))
        balancer = fam.balancer.clone()
        seen: dict[str, None] = {}
        for _ in range(len(balancer) * (eligible + 1)):
            if len(seen) >= eligible:
                break
            pick = self._select(fam, balancer)
            if pick is None:
                break
            seen.setdefault(pick, None)
        return [fam.clusters[c].merged[0] for c in seen]


# -- feeding the model from a cluster ------------------------------------------------------------------------


class Dispatcher:
    """Runs model updates on the DNS event loop's thread (directly, under a lock, when there is no loop yet)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self.closed = False
        self._lock = threading.RLock()

    def __call__(self, fn: Callable[[], None]) -> None:
        if self.closed:
            return
        loop = self.loop
        if loop is None:
            with self._lock:
                _guarded(fn)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _guarded(fn)
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: the server is gone
            loop.call_soon_threadsafe(_guarded, fn)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run `fn` through the dispatcher after `delay` seconds."""
        if self.closed:
            return
        loop = self.loop
        if loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.call_later(delay, _guarded, fn)
                return
        timer = threading.Timer(delay, self, (fn,))
        timer.daemon = True
        timer.start()


def _guarded(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        log.exception("lighthouse model update failed")


class Watcher:
    """Informers on ServiceImports, Lighthouse EndpointSlices and Gateways feeding one `Model` (§6.1).

    Start-up runs in a thread: the Submariner check (connectivity tracking off when no `Submariner` object
    exists or Gateways cannot be listed), then the informers; once all have delivered their initial list the
    model is marked synced, through the dispatcher, so after every event of those lists.
    """

    def __init__(self, model: Model, cluster: ClientFactory, dispatch: Dispatcher, *,
                 retry: tuple[float, float] = (0.5, 30.0), on_synced: Callable[[], None] | None = None) -> None:
        self.model = model
        self.on_synced = on_synced  # run through the dispatcher after the model is marked synced
        self.cluster = cluster
        self.dispatch = dispatch
        self.retry = retry
        self._informers: list[Informer] = []
        self._eps: Informer | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._timers: dict[tuple[str, str], threading.Timer] = {}
        self._delays: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lighthouse-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            timers = list(self._timers.values())
            self._timers.clear()
        for t in timers:
            t.cancel()
        for inf in list(self._informers):
            inf.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _check_submariner(self) -> bool:
        try:
            items, _ = self.cluster.resource(SUBMARINERS).list()
            if not items:
                log.info("lighthouse no Submariner object: connectivity tracking disabled")
                return False
            self.cluster.resource(GATEWAYS).list()
        except KubeError as e:
            log.info("lighthouse connectivity tracking disabled error=%r", e.message)
            return False
        except Exception as e:  # any failure of the check means "no Submariner here", as upstream
            log.info("lighthouse connectivity tracking disabled error=%r", e)
            return False
        return True

    def _run(self) -> None:
        tracking = self._check_submariner()
        model = self.model
        self.dispatch(lambda: model.set_connectivity_tracking(tracking))
        if self._stopped.is_set():
            return
        # The model copies what it needs out of every add and update: the caches keep what deletes and the
        # relist diff read (EndpointSlices that must be retried are fetched again, see `_retry`).
        si = Informer(self.cluster.resource(SERVICE_IMPORTS), name="lighthouse-serviceimports",
                      transform=slim_service_import, keep=metadata_labels_annotations,
                      on_add=lambda o: self.dispatch(lambda: model.apply_service_import(_ADD, o)),
                      on_update=lambda _, o: self.dispatch(lambda: model.apply_service_import(_UPDATE, o)),
                      on_delete=lambda o: self.dispatch(lambda: model.apply_service_import(_DELETE, o)))
        eps = Informer(self.cluster.resource(ENDPOINT_SLICES), name="lighthouse-endpointslices",
                       label_selector=f"{L.ENDPOINTSLICE_MANAGED_BY}={L.LIGHTHOUSE_MANAGED_BY}",
                       transform=slim_endpoint_slice, keep=metadata_and_labels,
                       on_add=lambda o: self._slice(_ADD, o),
                       on_update=lambda _, o: self._slice(_UPDATE, o),
                       on_delete=lambda o: self._slice(_DELETE, o))
        self._eps = eps
        informers = [si, eps]
        if tracking:
            informers.append(Informer(self.cluster.resource(GATEWAYS), name="lighthouse-gateways",
                                      transform=slim_gateway,
                                      on_add=lambda o: self.dispatch(lambda: model.apply_gateway(_ADD, o)),
                                      on_update=lambda _, o: self.dispatch(lambda: model.apply_gateway(_UPDATE, o)),
                                      on_delete=lambda o: self.dispatch(lambda: model.apply_gateway(_DELETE, o))))
        self._informers = informers
        for inf in informers:
            if self._stopped.is_set():
                return
            inf.start()
        for inf in informers:
            if not inf.wait_for_sync():
                return
        self.dispatch(model.mark_synced)
        if self.on_synced is not None:
            self.dispatch(self.on_synced)

    def _slice(self, op: str, obj: Obj) -> None:
        """One EndpointSlice event (informer thread): fetch local K8s slices here, never on the DNS loop."""
        local: list[Obj] | None = None
        if op != _DELETE and self.model.needs_local_slices(obj):
            local = self._list_local(obj)
        model = self.model
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))

        def apply() -> None:
            if model.apply_endpoint_slice(op, obj, local):
                self._requeue(key)
            else:
                with self._lock:
                    self._delays.pop(key, None)

        self.dispatch(apply)

    def _list_local(self, obj: Obj) -> list[Obj] | None:
        labels = _labels(obj)
        try:
            items, _ = self.cluster.resource(ENDPOINT_SLICES).list(
                labels.get(L.SOURCE_NAMESPACE, ""),
                label_selector=f"{L.K8S_SERVICE_NAME}={labels.get(L.SERVICE_NAME, '')}")
        except KubeError as e:
            log.warning("lighthouse cannot list local EndpointSlices error=%r", e.message)
            return None
        return items

    def _requeue(self, key: tuple[str, str]) -> None:
        """Retry a slice whose local data was missing, with exponential backoff."""
        if self._stopped.is_set():
            return
        with self._lock:
            delay = self._delays.get(key, self.retry[0] / 2) * 2
            delay = min(delay, self.retry[1])
            self._delays[key] = delay
            old = self._timers.pop(key, None)
            timer = threading.Timer(delay, self._retry, (key,))
            timer.daemon = True
            self._timers[key] = timer
        if old is not None:
            old.cancel()
        timer.start()

    def _retry(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._timers.pop(key, None)
        eps = self._eps
        if self._stopped.is_set() or eps is None or eps.get(*key) is None:
            return  # stopped, or the slice is gone
        try:  # the informer keeps only metadata and labels: fetch the slice again (a rare path)
            obj = slim_endpoint_slice(self.cluster.resource(ENDPOINT_SLICES).get(*key))
        except KubeError as e:
            if e.status == 404:
                return
            log.warning("lighthouse cannot get EndpointSlice slice=%s/%s error=%r", key[0], key[1], e.message)
            self._requeue(key)
            return
        self._slice(_UPDATE, obj)

    def ready(self) -> bool:
        return self.model.synced
