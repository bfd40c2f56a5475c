"""`kubernetes`: cluster DNS per the Kubernetes DNS specification, from informer caches (CoreDNS semantics).

Records: `svc.ns.svc.zone` A/AAAA (ClusterIPs, or the ready endpoint addresses of a headless service),
`host.svc.ns.svc.zone` for endpoints, `_port._proto.svc.ns.svc.zone` and `svc.ns.svc.zone` SRV, PTR for
ClusterIPs and endpoint addresses, `a-b-c-d.ns.pod.zone` (pods insecure/verified), ExternalName CNAME,
`dns-version.zone` TXT, SOA/NS at the apex. Negative answers carry CoreDNS's synthetic SOA
(`ns.dns.<zone> hostmaster.<zone>`, serial = unix time of the last Service/Endpoint change).

Informer callbacks run on their own threads; the model is guarded by one lock that a query holds only while
it reads. Wire-cached answers are tied to a `RetirableScope` that is retired (never valid again) on every change, so an
answer computed from data that changed while it was being served is never reused.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset

from submariner.broker.api.meta import APIResource
from submariner.broker.kube import ENDPOINT_SLICES, NAMESPACES, SERVICES, Informer
from submariner.broker.kube.client import Obj, parse_label_selector
from submariner.lighthouse.dns.config import parse_key
from submariner.lighthouse.dns.k8s import metadata_only
from submariner.lighthouse.dns.plugin import (
    CachePolicy,
    CacheScope,
    Controller,
    Directive,
    Handler,
    Request,
    Result,
    RetirableScope,
    SetupError,
    Wrapper,
    parse_duration,
    reply_for,
)
from submariner.lighthouse.dns.process import HistogramVec

NAME = "kubernetes"
ONCE = True
SYNC_SAFE = True  # the handler needs no task context (see plugin.py)

PODS = APIResource("", "v1", "Pod", "pods", "pod", True)

DNS_SCHEMA_VERSION = "1.1.0"
DEFAULT_TTL = 5
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"

_IN = dns.rdataclass.IN
_A, _AAAA, _SRV, _PTR = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.SRV, dns.rdatatype.PTR
_CNAME, _TXT, _SOA, _NS, _MX = (dns.rdatatype.CNAME, dns.rdatatype.TXT, dns.rdatatype.SOA, dns.rdatatype.NS,
                                dns.rdatatype.MX)
_AXFR, _IXFR = dns.rdatatype.AXFR, dns.rdatatype.IXFR
_NXDOMAIN, _SERVFAIL, _REFUSED = dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL, dns.rcode.REFUSED

# Lookup errors, as CoreDNS's errNoItems / errNsNotExposed / errInvalidRequest: all are "name errors".
_NO_ITEMS = "no items found"
_NS_NOT_EXPOSED = "namespace not exposed"
_INVALID = "invalid query name"


# -- configuration ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Options:
    """The parsed `kubernetes` stanza."""

    zones: list[str]
    primary_zone: str
    endpoint: str = ""
    tls: tuple[str, str, str] | None = None
    kubeconfig: str | None = None
    context: str | None = None
    namespaces: set[str] = field(default_factory=set)
    labels: str = ""
    namespace_labels: str = ""
    pods: str = "disabled"
    endpoint_pod_names: bool = False
    ttl: int = DEFAULT_TTL
    endpoints: bool = True
    fallthrough: list[str] | None = None
    ignore_empty_service: bool = False
    startup_timeout: float = 5.0


def _plain(message: str) -> SetupError:
    """A setup error returned without a location (CoreDNS's fmt.Errorf wrapped by plugin.Error)."""
    return SetupError(f"plugin/{NAME}: {message}")


def _normalize_zones(d: Directive, names: Iterable[str]) -> list[str]:
    zones: list[str] = []
    for name in names:
        try:
            zones.extend(k.zone for k in parse_key(name, 53))
        except SetupError as exc:
            raise d.error(str(exc)) from None
    return zones


def _is_reverse(name: str) -> bool:
    return name.endswith("in-addr.arpa.") or name.endswith("ip6.arpa.")


def _selector(value: str, what: str) -> str:
    try:
        parse_label_selector(value)
    except ValueError as exc:
        raise _plain(f"unable to parse {what} selector value: '{value}': {exc}") from None
    return value


def parse(c: Controller) -> Options:
    """`kubernetes [ZONES...] { ... }` with CoreDNS's messages; unknown properties are errors."""
    d = c.directive()
    zones = _normalize_zones(d, d.args) if d.args else list(c.zones)
    primary = next((z for z in zones if not _is_reverse(z)), None)
    if primary is None:
        raise _plain("non-reverse zone name must be used")
    o = Options(zones=zones, primary_zone=primary)
    for i, prop in enumerate(d.block):
        line = d.block_line(i)
        key, args = prop[0], prop[1:]
        if key == "endpoint_pod_names":
            if args:
                raise d.arg_error(args[-1], line)
            o.endpoint_pod_names = True
        elif key == "pods":
            if len(args) != 1:
                raise d.arg_error(prop[-1], line)
            if args[0] not in ("disabled", "insecure", "verified"):
                raise _plain(f"wrong value for pods: {args[0]},  must be one of: disabled, verified, insecure")
            o.pods = args[0]
        elif key == "namespaces":
            if not args:
                raise d.arg_error(key, line)
            o.namespaces.update(args)
        elif key == "endpoint":
            if not args:
                raise d.arg_error(key, line)
            o.endpoint = args[0]
        elif key == "tls":
            if len(args) != 3:
                raise d.arg_error(prop[-1], line)
            o.tls = (args[0], args[1], args[2])
        elif key == "labels":
            if not args:
                raise d.arg_error(key, line)
            o.labels = _selector(" ".join(args), "label")
        elif key == "namespace_labels":
            if not args:
                raise d.arg_error(key, line)
            o.namespace_labels = _selector(" ".join(args), "namespace_label")
        elif key == "fallthrough":
            o.fallthrough = _normalize_zones(d, args) if args else ["."]
        elif key == "ttl":
            if not args:
                raise d.arg_error(key, line)
            try:
                ttl = int(args[0], 10)
            except ValueError:
                raise _plain(f'strconv.Atoi: parsing "{args[0]}": invalid syntax') from None
            if not 0 <= ttl <= 3600:
                raise d.error(f"ttl must be in range [0, 3600]: {ttl}", line)
            o.ttl = ttl
        elif key == "noendpoints":
            if args:
                raise d.arg_error(args[-1], line)
            o.endpoints = False
        elif key == "ignore":
            if args:
                if args[0] != "empty_service":
                    raise _plain(f"unable to parse ignore value: '{args[0]}'")
                o.ignore_empty_service = True
        elif key == "kubeconfig":
            if len(args) not in (1, 2):
                raise d.arg_error(prop[-1], line)
            o.kubeconfig = args[0]
            o.context = args[1] if len(args) == 2 else None
        elif key in ("apiserver_qps", "apiserver_burst", "apiserver_max_inflight"):
            # Client-side rate limits of client-go; our informers make one list and one watch per resource.
            if len(args) != 1:
                raise d.arg_error(prop[-1], line)
            try:
                int(args[0], 10)
            except ValueError:
                raise _plain(f'strconv.Atoi: parsing "{args[0]}": invalid syntax') from None
        elif key == "startup_timeout":
            if len(args) != 1:
                raise d.arg_error(prop[-1], line)
            try:
                o.startup_timeout = parse_duration(args[0])
            except ValueError as exc:
                raise _plain(str(exc)) from None
        elif key in ("multicluster", "zonal"):
            raise d.error(f"property '{key}' is not supported by lighthouse-dns (use the lighthouse plugin)", line)
        else:
            raise d.error(f"unknown property '{key}'", line)
    if o.namespaces and o.namespace_labels:
        raise d.error("namespaces and namespace_labels cannot both be set")
    return o


# -- the model: what the informers delivered, indexed for queries ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Port:
    name: str
    protocol: str
    port: int  # -1: the "no ports" sentinel (A records only, no SRV)


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    namespace: str
    type: str
    cluster_ips: tuple[str, ...]
    external_name: str
    ports: tuple[Port, ...]

    @property
    def headless(self) -> bool:
        return bool(self.cluster_ips) and self.cluster_ips[0] == "None"


@dataclass(frozen=True, slots=True)
class Address:
    ip: str
    hostname: str
    target: str  # the Pod name of targetRef (endpoint_pod_names)


@dataclass(frozen=True, slots=True)
class Slice:
    namespace: str
    service: str
    addresses: tuple[Address, ...]  # ready endpoints only
    ports: tuple[Port, ...]


_NO_PORTS = (Port("", "", -1),)


def _ports(items: Any) -> tuple[Port, ...]:
    ports = tuple(Port(str(p.get("name") or ""), str(p.get("protocol") or "TCP"), int(p.get("port") or 0))
                  for p in items or () if isinstance(p, dict))
    return ports or _NO_PORTS


def to_service(obj: Obj) -> Service:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ips = spec.get("clusterIPs") or [spec.get("clusterIP") or ""]
    return Service(str(meta.get("name") or ""), str(meta.get("namespace") or ""), str(spec.get("type") or "ClusterIP"),
                   tuple(str(ip) for ip in ips), str(spec.get("externalName") or ""), _ports(spec.get("ports")))


def to_slice(obj: Obj) -> Slice | None:
    """An EndpointSlice as CoreDNS's EndpointSliceToEndpoints sees it; None for FQDN slices or unlabelled ones."""
    meta = obj.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not service or obj.get("addressType") == "FQDN":
        return None
    addresses: list[Address] = []
    for ep in obj.get("endpoints") or ():
        ready = (ep.get("conditions") or {}).get("ready")
        if ready is not None and not ready:
            continue
        ref = ep.get("targetRef") or {}
        target = str(ref.get("name") or "")
        for ip in ep.get("addresses") or ():
            addresses.append(Address(str(ip), str(ep.get("hostname") or ""), target if len(target) < 64 else ""))
    return Slice(str(meta.get("namespace") or ""), str(service), tuple(addresses), _ports(obj.get("ports")))


def _pod_ips(obj: Obj) -> tuple[str, ...]:
    status = obj.get("status") or {}
    ips = [str(p.get("ip")) for p in status.get("podIPs") or () if isinstance(p, dict) and p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return tuple(ips)


Key = tuple[str, str]


class Model:
    """Services, endpoint slices, pods and namespaces, with the indexes queries need. Guard with `lock`."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.lock = threading.Lock()
        self.on_change = on_change
        self.services: dict[Key, Service] = {}
        self.by_cluster_ip: dict[str, dict[Key, Service]] = {}
        self.slices: dict[Key, Slice] = {}
        self.slices_by_service: dict[Key, dict[Key, Slice]] = {}
        self.by_endpoint_ip: dict[str, dict[Key, Slice]] = {}
        self.pods: dict[Key, tuple[str, ...]] = {}
        self.pods_by_ip: dict[str, dict[Key, str]] = {}  # ip -> pod key -> namespace
        self.namespaces: set[str] = set()
        self.modified = 0  # unix time of the last Service/EndpointSlice change (the SOA serial)

    def _changed(self, serial: bool = True) -> None:
        if serial:
            self.modified = int(time.time())
        self.on_change()

    # services
    def set_service(self, obj: Obj) -> None:
        svc = to_service(obj)
        key = (svc.namespace, svc.name)
        with self.lock:
            self._drop_service(key)
            self.services[key] = svc
            for ip in svc.cluster_ips:
                if ip and ip != "None":
                    self.by_cluster_ip.setdefault(ip, {})[key] = svc
            self._changed()

    def delete_service(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        with self.lock:
            self._drop_service((str(meta.get("namespace") or ""), str(meta.get("name") or "")))
            self._changed()

    def _drop_service(self, key: Key) -> None:
        old = self.services.pop(key, None)
        if old is None:
            return
        for ip in old.cluster_ips:
            index = self.by_cluster_ip.get(ip)
            if index is not None:
                index.pop(key, None)
                if not index:
                    del self.by_cluster_ip[ip]

    # endpoint slices
    def set_slice(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        new = to_slice(obj)
        with self.lock:
            self._drop_slice(key)
            if new is not None:
                self.slices[key] = new
                self.slices_by_service.setdefault((new.namespace, new.service), {})[key] = new
                for addr in new.addresses:
                    self.by_endpoint_ip.setdefault(addr.ip, {})[key] = new
            self._changed()

    def delete_slice(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        with self.lock:
            self._drop_slice((str(meta.get("namespace") or ""), str(meta.get("name") or "")))
            self._changed()

    def _drop_slice(self, key: Key) -> None:
        old = self.slices.pop(key, None)
        if old is None:
            return
        group = self.slices_by_service.get((old.namespace, old.service))
        if group is not None:
            group.pop(key, None)
            if not group:
                del self.slices_by_service[(old.namespace, old.service)]
        for addr in old.addresses:
            index = self.by_endpoint_ip.get(addr.ip)
            if index is not None:
                index.pop(key, None)
                if not index:
                    del self.by_endpoint_ip[addr.ip]

    # pods
    def set_pod(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        with self.lock:
            self._drop_pod(key)
            ips = _pod_ips(obj)
            if ips and not meta.get("deletionTimestamp"):
                self.pods[key] = ips
                for ip in ips:
                    self.pods_by_ip.setdefault(ip, {})[key] = key[0]
            self._changed(serial=False)

    def delete_pod(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        with self.lock:
            self._drop_pod((str(meta.get("namespace") or ""), str(meta.get("name") or "")))
            self._changed(serial=False)

    def _drop_pod(self, key: Key) -> None:
        ips = self.pods.pop(key, None)
        if not ips:
            return
        for ip in ips:
            index = self.pods_by_ip.get(ip)
            if index is not None:
                index.pop(key, None)
                if not index:
                    del self.pods_by_ip[ip]

    # namespaces
    def set_namespace(self, obj: Obj) -> None:
        with self.lock:
            self.namespaces.add(str((obj.get("metadata") or {}).get("name") or ""))
            self._changed(serial=False)

    def delete_namespace(self, obj: Obj) -> None:
        with self.lock:
            self.namespaces.discard(str((obj.get("metadata") or {}).get("name") or ""))
            self._changed(serial=False)


# -- answering -----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Record:
    """CoreDNS's msg.Service: a host (IP, or a name for CNAME), port, TTL and the key path as a domain name."""

    host: str
    ttl: int
    domain: str = ""  # msg.Domain(key): the owner name SRV targets and NS use
    port: int = 0
    text: str = ""

    def host_type(self) -> tuple[int, str]:
        """(A | AAAA | CNAME | TXT, normalised IP text)."""
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            return (_TXT if self.text else _CNAME), ""
        if ip.version == 4:
            return _A, str(ip)
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return _A, str(mapped)
        return _AAAA, str(ip)


@dataclass(slots=True)
class _Parsed:
    port: str = ""
    protocol: str = ""
    endpoint: str = ""
    service: str = ""
    namespace: str = ""
    pod_or_svc: str = ""


def _strip_underscore(s: str) -> str:
    return s[1:] if s.startswith("_") else s


def parse_request(name: str, zone: str) -> tuple[_Parsed, str | None]:
    """Split `[_port._proto. | endpoint.]service.namespace.(svc|pod).zone` (CoreDNS parseRequest)."""
    r = _Parsed()
    base = name[: len(name) - len(zone)].rstrip(".") if zone != "." else name.rstrip(".")
    if base in ("", "svc", "pod"):
        return r, None
    segs = base.split(".")
    last = len(segs) - 1
    r.pod_or_svc = segs[last]
    if r.pod_or_svc not in ("pod", "svc"):
        return r, _INVALID
    last -= 1
    if last < 0:
        return r, None
    r.namespace = segs[last]
    last -= 1
    if last < 0:
        return r, None
    r.service = segs[last]
    last -= 1
    if last < 0:
        return r, None
    if last == 0:
        r.endpoint = segs[0]
    elif last == 1:
        r.protocol = _strip_underscore(segs[1])
        r.port = _strip_underscore(segs[0])
    else:
        return r, _INVALID
    return r, None


def _match_port(q_port: str, port: str, q_proto: str, proto: str) -> bool:
    if not q_port:
        return True
    if not q_proto:
        return q_port.lower() == port.lower()
    return q_port.lower() == port.lower() and q_proto.lower() == proto.lower()


def endpoint_hostname(addr: Address, pod_names: bool) -> str:
    if addr.hostname:
        return addr.hostname
    if pod_names and addr.target:
        return addr.target
    if "." in addr.ip:
        return addr.ip.replace(".", "-")
    if ":" in addr.ip:
        text = addr.ip.replace(":", "-")
        return text + "0" if text.endswith("-") else text
    return ""


_NAME_TYPES: dict[int, Any] = {_CNAME: dns.rdtypes.ANY.CNAME.CNAME, _PTR: dns.rdtypes.ANY.PTR.PTR,
                                _NS: dns.rdtypes.ANY.NS.NS}


# dnspython's rdata constructors are untyped: these typed factories skip text parsing on the answer path.
def _rdata(rtype: int, ip: str) -> dns.rdata.Rdata:
    if rtype == _A:
        return dns.rdtypes.IN.A.A(_IN, _A, ip)  # type: ignore[no-untyped-call]
    return dns.rdtypes.IN.AAAA.AAAA(_IN, _AAAA, ip)  # type: ignore[no-untyped-call]


def _name_rdata(rtype: int, target: dns.name.Name) -> dns.rdata.Rdata:
    """CNAME, PTR or NS pointing at `target`."""
    rd: dns.rdata.Rdata = _NAME_TYPES[rtype](_IN, rtype, target)
    return rd


def _srv_rdata(weight: int, port: int, target: dns.name.Name) -> dns.rdata.Rdata:
    return dns.rdtypes.IN.SRV.SRV(_IN, _SRV, 0, weight, port, target)  # type: ignore[no-untyped-call]


class _Answer:
    """Sections under construction; RRsets keyed so repeated owners/types merge as in one dns.Msg."""

    __slots__ = ("answer", "extra", "truncated", "upstream")

    def __init__(self) -> None:
        self.answer: list[dns.rrset.RRset] = []
        self.extra: list[dns.rrset.RRset] = []
        self.truncated = False
        self.upstream = False  # carries data from the next plugin: not wire-cacheable

    @staticmethod
    def add(section: list[dns.rrset.RRset], name: dns.name.Name, rtype: int, ttl: int, rd: dns.rdata.Rdata) -> None:
        for rrset in section:
            if rrset.rdtype == rtype and rrset.name == name and rrset.ttl == ttl:
                rrset.add(rd)
                return
        rrset = dns.rrset.RRset(name, _IN, dns.rdatatype.RdataType.make(rtype))
        rrset.update_ttl(ttl)
        rrset.add(rd)
        section.append(rrset)


class Kubernetes:
    """One `kubernetes` stanza: options, the model fed by informers, and the query handler."""

    def __init__(self, opts: Options, process: Any, listen_host: str = "") -> None:
        self.o = opts
        self.process = process
        self.listen_host = listen_host
        self.scope = RetirableScope(NAME)
        self.model = Model(self._changed)
        self.informers: list[Informer] = []
        self.synced = False
        self.local_ips: list[str] = []
        self.next: Handler | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.latency: HistogramVec = process.vec(HistogramVec(
            "coredns_kubernetes_dns_programming_duration_seconds",
            "Histogram of the time (in seconds) it took to program a dns instance.", ("service_kind",),
            tuple(0.001 * 2**i for i in range(20))))

    # -- data feed -------------------------------------------------------------------------------------------
    def _changed(self) -> None:
        """Called with the model lock held after every change: retire the scope the cached answers rely on."""
        old = self.scope
        self.scope = RetirableScope(NAME)
        old.retire()

    def build_informers(self, cluster: Any) -> list[Informer]:
        """The model copies what it needs out of every add and update and deletes by key: the informers' caches
        keep name, namespace and resourceVersion only (`keep`), not whole Pods and EndpointSlices."""
        m = self.model
        keep = metadata_only
        infs = [Informer(cluster.resource(SERVICES), label_selector=self.o.labels, name="kubernetes-services",
                         on_add=m.set_service, on_update=lambda _o, n: m.set_service(n),
                         on_delete=m.delete_service, keep=keep)]
        if self.o.endpoints:
            selector = SERVICE_NAME_LABEL + ("," + self.o.labels if self.o.labels else "")
            infs.append(Informer(cluster.resource(ENDPOINT_SLICES), label_selector=selector,
                                 name="kubernetes-endpointslices", on_add=self._slice_changed,
                                 on_update=lambda _o, n: self._slice_changed(n), on_delete=m.delete_slice,
                                 keep=keep))
        if self.o.pods == "verified":
            infs.append(Informer(cluster.resource(PODS), name="kubernetes-pods", on_add=m.set_pod,
                                 on_update=lambda _o, n: m.set_pod(n), on_delete=m.delete_pod, keep=keep))
        infs.append(Informer(cluster.resource(NAMESPACES), label_selector=self.o.namespace_labels,
                             name="kubernetes-namespaces", on_add=m.set_namespace,
                             on_update=lambda _o, n: m.set_namespace(n), on_delete=m.delete_namespace, keep=keep))
        self.informers = infs
        return infs

    def _slice_changed(self, obj: Obj) -> None:
        """An EndpointSlice event (informer thread): update the model, then DNS programming latency."""
        self.model.set_slice(obj)
        loop = self.loop
        if not self.synced or loop is None:
            return  # the initial list says nothing about how fast changes reach DNS
        meta = obj.get("metadata") or {}
        stamp = (meta.get("annotations") or {}).get(TRIGGER_TIME_ANNOTATION)
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not stamp or not service:
            return
        with self.model.lock:
            svc = self.model.services.get((str(meta.get("namespace") or ""), str(service)))
        if svc is None or not svc.headless:
            return  # CoreDNS measures headless services with a selector only
        try:
            changed = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
        except ValueError:
            return
        latency = time.time() - changed
        loop.call_soon_threadsafe(self.latency.observe, ("headless_with_selector",), latency)

    def has_synced(self) -> bool:
        if not self.synced and self.informers and all(inf.has_synced() for inf in self.informers):
            self.synced = True
        return self.synced

    async def start(self) -> None:
        """CoreDNS's OnStartup: run the informers and wait up to startup_timeout for them to sync."""
        self.loop = asyncio.get_running_loop()
        self.local_ips = _bound_ips(self.listen_host)
        for inf in self.informers:
            inf.start()
        deadline = time.monotonic() + self.o.startup_timeout
        while not self.has_synced():
            if time.monotonic() >= deadline:
                self.process.warning("starting server with unsynced Kubernetes API", NAME)
                return
            await asyncio.sleep(0.05)
        settled = getattr(self.process, "settled", None)
        if callable(settled):
            settled()

    async def stop(self) -> None:
        infs, self.informers = self.informers, []
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, inf.stop, 2.0) for inf in infs))

    # -- lookups (CoreDNS kubernetes.go / backend_lookup.go), model lock held ---------------------------------------
    def _ns_exposed(self, namespace: str) -> bool:
        if self.o.namespaces and namespace not in self.o.namespaces:
            return False
        return not self.o.namespace_labels or namespace in self.model.namespaces

    def _records(self, name: str, zone: str, zone_text: str) -> tuple[list[Record], str | None]:
        r, err = parse_request(name, zone)
        if err is not None:
            return [], err
        if not r.pod_or_svc:
            return [], None
        if _is_reverse(name):
            return [], _NO_ITEMS
        if not self._ns_exposed(r.namespace):
            return [], _NS_NOT_EXPOSED
        if r.pod_or_svc == "pod":
            return self._find_pods(r, zone_text)
        return self._find_services(r, zone_text)

    def _find_pods(self, r: _Parsed, zone_text: str) -> tuple[list[Record], str | None]:
        if self.o.pods == "disabled":
            return [], _NO_ITEMS
        podname = r.service
        if not podname:
            return [], None
        if podname.count("-") == 3 and "--" not in podname:
            ip = podname.replace("-", ".")
        else:
            ip = podname.replace("-", ":")
        domain = f"{podname}.{r.namespace}.pod.{zone_text}"
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return [], _NO_ITEMS
        if self.o.pods == "insecure":
            return [Record(ip, self.o.ttl, domain)], None
        pods = self.model.pods_by_ip.get(ip)
        if pods and r.namespace in pods.values():
            return [Record(ip, self.o.ttl, domain)], None
        return [], _NO_ITEMS

    def _find_services(self, r: _Parsed, zone_text: str) -> tuple[list[Record], str | None]:
        if not r.service:
            return [], None
        m = self.model
        key = (r.namespace.lower(), r.service.lower())
        svc = m.services.get(key)
        if svc is None:
            return [], _NO_ITEMS
        ttl = self.o.ttl
        base = f"{svc.name}.{svc.namespace}.svc.{zone_text}"
        slices = list(m.slices_by_service.get(key, {}).values())
        if (self.o.ignore_empty_service and svc.type != "ExternalName" and not svc.headless
                and not any(s.addresses for s in slices)):
            return [], _NO_ITEMS
        out: list[Record] = []
        err: str | None = _NO_ITEMS
        if svc.type == "ExternalName":
            if r.endpoint:
                return [], _NO_ITEMS
            rec = Record(svc.external_name, ttl, base)
            if rec.host_type()[0] == _CNAME:
                return [rec], None
            return [], _NO_ITEMS
        if svc.headless or r.endpoint:
            for sl in slices:
                for addr in sl.addresses:
                    host = endpoint_hostname(addr, self.o.endpoint_pod_names)
                    if r.endpoint and r.endpoint.lower() != host.lower():
                        continue
                    for p in sl.ports:
                        if not _match_port(r.port, p.name, r.protocol, p.protocol):
                            continue
                        out.append(Record(addr.ip, ttl, f"{host}.{base}", p.port))
                        err = None
            return out, err
        for p in svc.ports:
            if not _match_port(r.port, p.name, r.protocol, p.protocol):
                continue
            err = None
            for ip in svc.cluster_ips:
                if ip:
                    out.append(Record(ip, ttl, base, p.port))
        return out, err

    def _services(self, name: str, qtype: int, zone: str, zone_text: str) -> tuple[list[Record], str | None]:
        """CoreDNS Kubernetes.Services: the TXT, NS and ns.dns special cases, then Records."""
        if qtype == _TXT:
            base = name[: len(name) - len(zone)].rstrip(".") if zone != "." else name.rstrip(".")
            if base == "dns-version":
                return [Record("", 28800, text=DNS_SCHEMA_VERSION)], None
            found, _ = self._records(name, zone, zone_text)
            return [], (None if found else _NO_ITEMS)
        if zone != "." and name == "ns.dns." + zone:
            want = _A if qtype == _A else _AAAA if qtype == _AAAA else 0
            return [Record(ip, self.o.ttl) for _, ip in self._ns_addrs(zone_text)
                    if (":" in ip) == (want == _AAAA) and want], None
        found, err = self._records(name, zone, zone_text)
        if qtype == _SRV:
            found = [s for s in found if s.host_type()[0] != _CNAME]
        return found, err

    def _apex_services(self, name: str, qtype: int, zone: str, zone_text: str) -> tuple[list[Record], str | None]:
        if name != zone:
            return self._services(name, qtype, zone, zone_text)
        found, err = self._services("apex.dns." + zone, qtype, zone, zone_text)
        if err is None:
            return found, err
        return self._services(name, qtype, zone, zone_text)

    def _ns_addrs(self, zone_text: str) -> list[tuple[str, str]]:
        """(owner, ip) of this server: its Service when a bound address is an endpoint, else the bound IPs."""
        m = self.model
        out: list[tuple[str, str]] = []
        for ip in self.local_ips:
            for sl in m.by_endpoint_ip.get(ip, {}).values():
                svc = m.services.get((sl.namespace, sl.service))
                if svc is None:
                    continue
                name = f"{svc.name}.{svc.namespace}.svc.{zone_text}"
                if svc.headless:
                    for addr in sl.addresses:
                        out.append((f"{endpoint_hostname(addr, self.o.endpoint_pod_names)}.{name}", addr.ip))
                else:
                    out.extend((name, cip) for cip in svc.cluster_ips if cip)
        if not out:
            out = [(f"ns.dns.{zone_text}", ip) for ip in self.local_ips]
        return out

    def _reverse(self, name: str) -> tuple[list[Record], str | None]:
        ip = _address_from_reverse(name)
        if not ip:
            return [], _NO_ITEMS
        m = self.model
        primary = self.o.primary_zone
        for svc in m.by_cluster_ip.get(ip, {}).values():
            if self.o.namespaces and not self._ns_exposed(svc.namespace):
                continue
            return [Record(f"{svc.name}.{svc.namespace}.svc.{primary}", self.o.ttl)], None
        out: list[Record] = []
        for sl in m.by_endpoint_ip.get(ip, {}).values():
            if self.o.namespaces and not self._ns_exposed(sl.namespace):
                continue
            for addr in sl.addresses:
                if addr.ip == ip:
                    host = endpoint_hostname(addr, self.o.endpoint_pod_names)
                    out.append(Record(f"{host}.{sl.service}.{sl.namespace}.svc.{primary}", self.o.ttl))
        return out, (None if out else _NO_ITEMS)

    def soa(self, zone_text: str) -> dns.rrset.RRset:
        ttl = min(self.o.ttl, 300)
        origin = dns.name.from_text(zone_text)
        rd = dns.rdtypes.ANY.SOA.SOA(  # type: ignore[no-untyped-call]
            _IN, _SOA, dns.name.from_text("ns.dns", origin), dns.name.from_text("hostmaster", origin),
            self.model.modified & 0xFFFFFFFF, 7200, 1800, 86400, self.o.ttl)
        rrset = dns.rrset.RRset(origin, _IN, _SOA)
        rrset.add(rd, ttl)
        return rrset

    # -- the handler -----------------------------------------------------------------------------------------
    async def serve(self, req: Request) -> Result:
        name = req.name_lower
        zone = _match_zone(self.o.zones, name)
        nxt = self.next
        assert nxt is not None
        if zone is None:
            return await nxt(req)
        qtype = req.qtype
        if qtype in (_AXFR, _IXFR):
            return Result(_REFUSED, plugin=NAME)
        qname = req.qname
        qtext = qname.to_text()
        zone_text = qtext[len(qtext) - len(zone):] if zone != "." else "."
        ans = _Answer()
        err: str | None
        with self.model.lock:
            scope = self.scope
            synced = self.has_synced()
            err, pending = self._lookup(name, qname, qtext, qtype, zone, zone_text, ans)
        for target, srv_extra in pending:
            await self._chase(req, target, qtype, srv_extra, ans)
        if err is not None:
            if self.o.fallthrough is not None and _match_zone(self.o.fallthrough, name) is not None:
                return await nxt(req)
            rcode = _NXDOMAIN if synced else _SERVFAIL
            return self._reply(req, rcode, ans, zone_text, scope if synced else None)
        return self._reply(req, 0, ans, zone_text, scope if synced and not ans.upstream else None)

    def _reply(self, req: Request, rcode: int, ans: _Answer, zone_text: str, scope: CacheScope | None) -> Result:
        reply = reply_for(req, rcode)
        if ans.truncated:
            reply.flags |= dns.flags.TC
        if rcode == 0 and ans.answer:
            reply.answer = ans.answer
            reply.additional = ans.extra
        else:
            reply.authority = [self.soa(zone_text)]
        return Result(0, reply, plugin=NAME, cache=CachePolicy(scope) if scope is not None else None)

    def _lookup(self, name: str, qname: dns.name.Name, qtext: str, qtype: int, zone: str, zone_text: str,
                ans: _Answer) -> tuple[str | None, list[tuple[str, bool]]]:
        """Fill `ans` for one question; returns (name error, CNAME targets to resolve through the next plugin)."""
        ttl = self.o.ttl
        pending: list[tuple[str, bool]] = []
        if qtype in (_A, _AAAA):
            found, err = self._apex_services(name, qtype, zone, zone_text)
            if err is not None:
                return err, pending
            self._addresses(qname, qtype, zone, zone_text, found, ans, pending, [])
            return None, pending
        if qtype == _TXT:
            found, err = self._services(name, qtype, zone, zone_text)
            for rec in found:
                ans.add(ans.answer, qname, _TXT, rec.ttl, dns.rdtypes.ANY.TXT.TXT(_IN, _TXT, [rec.text.encode()]))
            return err, pending
        if qtype == _CNAME:
            found, err = self._services(name, qtype, zone, zone_text)
            if err is not None:
                return err, pending
            if found and found[0].host_type()[0] in (_CNAME, _TXT):
                target = dns.name.from_text(found[0].host)
                ans.add(ans.answer, qname, _CNAME, found[0].ttl, _name_rdata(_CNAME, target))
            return None, pending
        if qtype == _PTR:
            if _address_from_reverse(name):
                found, err = self._reverse(name)
            else:
                found, err = self._records(name, zone, zone_text)
                found = []
            if err is not None:
                return err, pending
            for rec in found:
                target = dns.name.from_text(rec.host)
                ans.add(ans.answer, qname, _PTR, rec.ttl, _name_rdata(_PTR, target))
            return None, pending
        if qtype == _SRV:
            found, err = self._services(name, qtype, zone, zone_text)
            if err is not None:
                return err, pending
            self._srv(qname, found, ans)
            return None, pending
        if qtype == _SOA and qtext == zone_text:
            ans.answer.append(self.soa(zone_text))
            return None, pending
        if qtype == _SOA:
            return None, pending
        if qtype == _NS and name == zone:
            seen: set[str] = set()
            for owner, ip in self._ns_addrs(zone_text):
                target = dns.name.from_text(owner)
                kind = _AAAA if ":" in ip else _A
                ans.add(ans.extra, target, kind, ttl, _rdata(kind, ip))
                if owner not in seen:
                    seen.add(owner)
                    ans.add(ans.answer, qname, _NS, ttl, _name_rdata(_NS, target))
            return None, pending
        # Other types: an A lookup tells NODATA from NXDOMAIN.
        _, err = self._apex_services(name, _A, zone, zone_text)
        return err, pending

    def _addresses(self, qname: dns.name.Name, qtype: int, zone: str, zone_text: str, found: list[Record],
                   ans: _Answer, pending: list[tuple[str, bool]], chain: list[str]) -> None:
        """plugin.A / plugin.AAAA: address records, and CNAMEs followed inside the zone or queued for later."""
        seen: set[str] = set()
        qtext_lower = qname.to_text().lower()
        for rec in found:
            kind, ip = rec.host_type()
            if kind == _CNAME:
                target_text = rec.host if rec.host.endswith(".") else rec.host + "."
                target_lower = target_text.lower()
                if _in_zone(target_lower, qtext_lower) or len(chain) > 7 or target_lower in chain:
                    continue
                target = dns.name.from_text(target_text)
                cname = _name_rdata(_CNAME, target)
                if _in_zone(target_lower, zone):
                    sub = _Answer()
                    more, err = self._apex_services(target_lower, qtype, zone, zone_text)
                    if err is None:
                        self._addresses(target, qtype, zone, zone_text, more, sub, pending, [*chain, target_lower])
                        if sub.answer:
                            ans.add(ans.answer, qname, _CNAME, rec.ttl, cname)
                            ans.answer.extend(sub.answer)
                    continue
                ans.add(ans.answer, qname, _CNAME, rec.ttl, cname)
                pending.append((target_text, False))
            elif kind == qtype and ip not in seen:
                seen.add(ip)
                ans.add(ans.answer, qname, kind, rec.ttl, _rdata(kind, ip))

    def _srv(self, qname: dns.name.Name, found: list[Record], ans: _Answer) -> None:
        """plugin.SRV: priority 0, weight 100/n, targets = record domains, their addresses as extra.

        ExternalName services never get here: `_services` drops CNAME hosts for SRV, as CoreDNS does.
        """
        total = 100 * len(found)
        weight = max(1, math.floor(100.0 / total * 100)) if total else 100
        dup: set[tuple[str, str, int]] = set()
        for rec in found:
            kind, ip = rec.host_type()
            if rec.port == -1 or kind not in (_A, _AAAA):
                continue
            target = dns.name.from_text(rec.domain)
            key = rec.domain.lower()
            if (key, "", rec.port) not in dup:
                dup.add((key, "", rec.port))
                ans.add(ans.answer, qname, _SRV, rec.ttl, _srv_rdata(weight, rec.port, target))
            if (key, ip, 0) not in dup:
                dup.add((key, ip, 0))
                ans.add(ans.extra, target, kind, rec.ttl, _rdata(kind, ip))

    async def _chase(self, req: Request, target: str, qtype: int, srv_extra: bool, ans: _Answer) -> None:
        """CoreDNS's Upstream.Lookup for names outside the zone: asked of the rest of this block's chain."""
        nxt = self.next
        assert nxt is not None
        types = (_A, _AAAA) if srv_extra else (qtype,)
        for rtype in types:
            query = dns.message.make_query(target, dns.rdatatype.RdataType.make(rtype))
            query.id = req.msg.id
            query.flags = dns.flags.RD
            sub = Request(msg=query, wire=query.to_wire(), remote=req.remote, local=req.local, proto=req.proto,
                          server=req.server, zone=req.zone, max_size=65535, meta=req.meta, start=req.start)
            try:
                result = await nxt(sub)
            except Exception:  # an upstream failure leaves the CNAME unresolved, as CoreDNS's `continue`
                continue
            ans.upstream = True
            if result.msg is None:
                continue
            if result.msg.flags & dns.flags.TC:
                ans.truncated = True
            for rrset in result.msg.answer:
                if srv_extra and rtype == _AAAA and rrset.rdtype == _CNAME:
                    continue
                (ans.extra if srv_extra else ans.answer).append(rrset)


def _match_zone(zones: Iterable[str], name: str) -> str | None:
    """The longest zone that `name` (lower-case FQDN text) is in."""
    best: str | None = None
    for zone in zones:
        if _in_zone(name, zone) and (best is None or len(zone) > len(best)):
            best = zone
    return best


def _in_zone(name: str, zone: str) -> bool:
    return zone == "." or name == zone or name.endswith("." + zone)


def _address_from_reverse(name: str) -> str:
    """dnsutil.ExtractAddressFromReverse: the IP a reverse name stands for, "" when it is not a full one."""
    if name.endswith(".in-addr.arpa."):
        parts = name[: -len(".in-addr.arpa.")].split(".")
        if len(parts) != 4:
            return ""
        try:
            return str(ipaddress.IPv4Address(".".join(reversed(parts))))
        except ValueError:
            return ""
    if name.endswith(".ip6.arpa."):
        nibbles = name[: -len(".ip6.arpa.")].split(".")
        if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
            return ""
        text = "".join(reversed(nibbles))
        try:
            return str(ipaddress.IPv6Address(int(text, 16)))
        except ValueError:
            return ""
    return ""


def _bound_ips(host: str) -> list[str]:
    """CoreDNS boundIPs: the listen address, or every non-loopback interface address when bound to all."""
    hosts: list[str] = []
    if host:
        hosts = [host]
    else:
        hosts = _interface_addresses()
    out: list[str] = []
    for h in hosts:
        try:
            ip = ipaddress.ip_address(h.split("%")[0])
        except ValueError:
            continue
        if not ip.is_loopback:
            out.append(str(ip))
    return out


def _interface_addresses() -> list[str]:
    """IPv4 addresses by SIOCGIFADDR and IPv6 from /proc/net/if_inet6 (Linux); [] elsewhere."""
    found: list[str] = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _, ifname in socket.if_nameindex():
                try:
                    raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", ifname.encode()[:15]))
                except OSError:
                    continue
                found.append(socket.inet_ntoa(raw[20:24]))
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6") as fh:
            for row in fh:
                hexaddr = row.split()[0]
                found.append(str(ipaddress.IPv6Address(int(hexaddr, 16))))
    except (OSError, ValueError, IndexError):
        pass
    return found


def _client(c: Controller, o: Options) -> Any:
    """The process's Kubernetes connection (tests put a fake in `process.kube`)."""
    from submariner.lighthouse.dns.k8s import cluster_for

    process = c.process
    if process.kube is None and o.endpoint and not o.kubeconfig:
        from kubernetes.client import Configuration

        from submariner.broker.kube import Cluster

        cfg = Configuration(host=o.endpoint.rstrip("/"))
        if o.tls is not None:
            cfg.cert_file, cfg.key_file, cfg.ssl_ca_cert = o.tls
        process.kube = Cluster(cfg, name=o.endpoint)
    try:
        return cluster_for(process, o.kubeconfig, o.context)
    except Exception as exc:
        raise _plain(str(exc)) from exc


def setup(c: Controller) -> Wrapper:
    o = parse(c)
    k = Kubernetes(o, c.process, c.listen_host)
    k.build_informers(_client(c, o))
    c.register_ready(NAME, k.has_synced)
    c.on_startup(k.start)
    c.on_shutdown(k.stop)

    def wrap(next_handler: Handler) -> Handler:
        k.next = next_handler
        return k.serve

    return wrap
