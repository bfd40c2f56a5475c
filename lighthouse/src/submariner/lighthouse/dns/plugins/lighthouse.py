"""`lighthouse`: answers `clusterset.local` from ServiceImports, Lighthouse EndpointSlices and Gateways.

Behaviour is lighthouse-dns.md: pipeline §1, name parsing §2, selection §3 (in `lighthouse_model`), answers §4,
directive §5.1, metric §6.3, the beyond-upstream options of §8 and the defect fixes D1-D12.

Nearly every reply is cacheable: each carries the `CacheScope` of what it depends on (one per service, one for
"which services exist", one for clusterset-IP PTRs, one for data-independent answers), and the model reports
changes per service, so an EndpointSlice event drops only that service's cached answers. Round-robin answers
hand the server the other clusters' replies as `variants`, so rotation costs nothing on hits; the query metric
follows the same rotation: each reply carries its metric labels as `CachePolicy.hit_tags`, and `QueryObserver`
(a `HitCounter`) adds the hits the cache counted per reply when they are folded (at scrape time).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV
from prometheus_client.core import Metric

from submariner.lighthouse.dns.answers import plain_name_end
from submariner.lighthouse.dns.config import parse_key
from submariner.lighthouse.dns.k8s import cluster_for
from submariner.lighthouse.dns.lighthouse_model import Dispatcher, Model, Record, ServiceKey, Watcher
from submariner.lighthouse.dns.plugin import (
    CachePolicy,
    CacheScope,
    Controller,
    Directive,
    Handler,
    Request,
    Result,
    SetupError,
    Tally,
    WireReply,
    Wrapper,
    parse_duration,
    reply_for,
)
from submariner.lighthouse.dns.process import CounterVec

NAME = "lighthouse"
ONCE = True
SYNC_SAFE = True  # the handler needs no task context (see plugin.py)

DEFAULT_TTL = 5
MAX_TTL = 3600
SRV_PRIORITY = 0
SRV_WEIGHT = 50
DNS_VERSION = b"1.0.0"  # MCS DNS specification schema version (§8.2)

_A, _AAAA, _SRV, _TXT, _PTR, _SOA = (int(dns.rdatatype.A), int(dns.rdatatype.AAAA), int(dns.rdatatype.SRV),
                                     int(dns.rdatatype.TXT), int(dns.rdatatype.PTR), int(dns.rdatatype.SOA))
_NOERROR, _SERVFAIL, _NXDOMAIN, _NOTIMP, _NOTZONE = 0, 2, 3, 4, 10
_SVC = b"svc"
_DNS_VERSION_LABEL = b"dns-version"
_SWITCHES = ("aaaa", "dns_version", "soa", "srv_glue", "address_filter", "strict_mcs", "clusterset_mode")

METRIC_NAME = "submariner_service_discovery_query"
METRIC_LABELS = ("source_cluster", "destination_cluster", "destination_service_name",
                 "destination_service_namespace", "destination_service_ip")

MetricKey = tuple[str, str, str, str, str]


# -- configuration ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Options:
    """The directive's settings (§5.1 and the beyond-upstream switches of §8, with their defaults)."""

    zones: list[str]
    fallthrough: list[str] | None = None  # None: off; ["."]: everything
    ttl: int = DEFAULT_TTL
    aaaa: bool = True
    dns_version: bool = True
    ptr: list[str] = field(default_factory=list)
    soa: bool = True
    srv_glue: bool = False
    address_filter: bool = True
    strict_mcs: bool = False
    clusterset_mode: bool = False
    connectivity_grace: float = 0.0


def _zones(d: Directive, args: Sequence[str], line: int) -> list[str]:
    """Lower-case FQDNs, port stripped; a CIDR becomes its reverse zones (CoreDNS's NormalizeExact)."""
    out: list[str] = []
    for arg in args:
        try:
            keys = parse_key(arg, 53)
        except SetupError as e:
            raise d.error(str(e), line) from None
        for key in keys:
            if key.zone not in out:
                out.append(key.zone)
    return out


def parse_options(c: Controller) -> Options:
    """Read the `lighthouse` directive; errors are exactly upstream's where §5.1 names them."""
    d = c.directive()
    zones = _zones(d, d.args, d.line) if d.args else list(dict.fromkeys(c.zones))
    opts = Options(zones=zones)
    for i, prop in enumerate(d.block):
        line = d.block_line(i)
        name, args = prop[0], prop[1:]
        if name == "fallthrough":
            opts.fallthrough = _zones(d, args, line) if args else ["."]
        elif name == "ttl":
            if not args:
                raise d.arg_error(name, line)
            if len(args) > 1:
                raise d.arg_error(args[-1], line)
            try:
                ttl = int(args[0], 10)
            except ValueError:
                raise d.error(f'strconv.Atoi: parsing "{args[0]}": invalid syntax', line) from None
            if not 0 <= ttl <= MAX_TTL:
                raise d.error(f"ttl must be in range [0, {MAX_TTL}]: {ttl}", line)
            opts.ttl = ttl
        elif name in _SWITCHES:
            if len(args) != 1:
                raise d.arg_error(args[-1] if args else name, line)
            if args[0] not in ("on", "off"):
                raise d.error(f"{name} must be 'on' or 'off', not '{args[0]}'", line)
            setattr(opts, name, args[0] == "on")
        elif name == "ptr":
            if not args:
                raise d.arg_error(name, line)
            opts.ptr = _zones(d, args, line)
        elif name == "connectivity_grace":
            if len(args) != 1:
                raise d.arg_error(args[-1] if args else name, line)
            try:
                grace = parse_duration(args[0])
            except ValueError as e:
                raise d.error(str(e), line) from None
            if grace < 0:
                raise d.error(f"connectivity_grace must not be negative: {args[0]}", line)
            opts.connectivity_grace = grace
        else:
            raise d.error(f"unknown property '{name}'", line)
    return opts


# -- metrics ----------------------------------------------------------------------------------------------


class QueryCounter(CounterVec):
    """`submariner_service_discovery_query`: only ever grows (D11), exposed under its upstream name.

    prometheus_client renames counters to `*_total`, which would break dashboards; an untyped family keeps the
    exact series name while the value stays monotonic.
    """

    def family(self) -> Metric:
        fam = Metric(self.name, self.documentation, "unknown")
        for key, value in self.values.items():
            fam.add_sample(self.name, dict(zip(self.labelnames, key, strict=True)), value)
        return fam


class QueryObserver:
    """Counts the query metric for answers served from the wire cache, per rotated reply (a `HitCounter`).

    The labels of every reply travel with the answer (`CachePolicy.hit_tags[observer]`, one tuple of metric
    keys per reply, aligned with `[msg, *variants]`); the cache counts hits per reply and folds them here.
    Keys are interned: the metric holds each label tuple once, however many cached answers mention it.
    """

    def __init__(self, vec: CounterVec) -> None:
        self.vec = vec
        self._keys: dict[Any, Any] = {}

    LIMIT = 1_000_000  # interned objects kept for sharing (beyond that, start over: sharing is only memory)

    def intern(self, keys: Sequence[MetricKey]) -> tuple[MetricKey, ...]:
        known = self._keys
        if len(known) >= self.LIMIT:
            known.clear()
        out = tuple(known.setdefault(k, k) for k in keys)
        return known.setdefault(out, out)  # type: ignore[no-any-return]

    def rotation(self, rotation: Sequence[tuple[MetricKey, ...]]) -> tuple[tuple[MetricKey, ...], ...]:
        """One shared tuple per distinct rotation (the A and SRV answers of a service, every spelling, …)."""
        out = tuple(rotation)
        return self._keys.setdefault(out, out)  # type: ignore[no-any-return]

    def fold(self, tally: Tally) -> None:
        tags = tally.tags
        if not tags:
            return
        values = self.vec.values
        n = len(tags)
        for j, count in enumerate(tally.counts):
            if count:
                for key in tags[j % n]:
                    values[key] = values.get(key, 0.0) + count


# -- cache scopes -----------------------------------------------------------------------------------------


class Scopes:
    """Which cached answers a model change invalidates."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.static = CacheScope(f"{NAME}-static")  # answers that do not depend on data
        self.absent = CacheScope(f"{NAME}-absent")  # NXDOMAIN for services that do not exist
        self.ptr = CacheScope(f"{NAME}-ptr")
        self._services: dict[ServiceKey, CacheScope] = {}

    def service(self, key: ServiceKey) -> CacheScope:
        scope = self._services.get(key)
        if scope is None:
            scope = self._services[key] = CacheScope(f"{NAME}-{key[0]}/{key[1]}")
        return scope

    def changed(self, key: ServiceKey | None, existence: bool) -> None:
        if key is None:
            for scope in self._services.values():
                scope.invalidate()
            self.absent.invalidate()
            self.ptr.invalidate()
            return
        known = self._services.get(key)
        if known is not None:
            known.invalidate()
            if not self.model.exists(*key):
                del self._services[key]
        if existence:
            self.absent.invalidate()
            self.ptr.invalidate()


# -- the handler ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Zone:
    text: str  # lower-case FQDN
    labels: tuple[bytes, ...]  # lower-case, without the root label
    name: dns.name.Name
    ptr: bool


def _zone(text: str, ptr: bool) -> _Zone:
    name = dns.name.from_text(text)
    return _Zone(text, tuple(label.lower() for label in name.labels[:-1]), name, ptr)


def _inside(labels: tuple[bytes, ...], zone: tuple[bytes, ...]) -> bool:
    n = len(zone)
    return n == 0 or (len(labels) >= n and labels[len(labels) - n:] == zone)


class _Query:
    """One parsed `[H.|P.T.][C.]S.N.svc.Z` question (labels lower-case)."""

    __slots__ = ("cluster", "host", "namespace", "port", "proto", "service")

    def __init__(self, namespace: bytes, service: bytes, cluster: bytes = b"", host: bytes = b"",
                 port: bytes = b"", proto: bytes = b"") -> None:
        self.namespace = namespace
        self.service = service
        self.cluster = cluster
        self.host = host
        self.port = port
        self.proto = proto


def _strip(label: bytes) -> bytes:
    return label[1:] if label[:1] == b"_" else label


def parse_name(rel: tuple[bytes, ...], qtype: int) -> _Query | None:
    """§2: labels left of the zone, read right to left; None = NXDOMAIN (parse error or not `svc`)."""
    n = len(rel)
    if n < 2 or rel[-1] != _SVC:
        return None  # apex, `svc.Z`, `pod` form, bad type label
    namespace = rel[-2]
    service = rel[-3] if n >= 3 else b""
    extra = rel[:-3] if n >= 3 else ()
    k = len(extra)
    if k == 0:
        return _Query(namespace, service)
    if k == 1:
        return _Query(namespace, service, cluster=extra[0])
    if qtype == _SRV:
        if k == 2:
            return _Query(namespace, service, port=_strip(extra[0]), proto=_strip(extra[1]))
        if k == 3:
            return _Query(namespace, service, cluster=extra[2], port=_strip(extra[0]), proto=_strip(extra[1]))
        return None
    if k == 2:
        return _Query(namespace, service, cluster=extra[1], host=extra[0])
    return None


def _text(label: bytes) -> str:
    return label.decode("latin-1")


# dnspython's rdata constructors are untyped: one typed wrapper each.
def _address_rdata(rdclass: dns.rdataclass.RdataClass, record: Record) -> dns.rdata.Rdata:
    if len(record.packed) == 4:
        return A(rdclass, dns.rdatatype.A, record.ip)  # type: ignore[no-untyped-call]
    return AAAA(rdclass, dns.rdatatype.AAAA, record.ip)  # type: ignore[no-untyped-call]


def _srv_rdata(rdclass: dns.rdataclass.RdataClass, port: int, target: dns.name.Name) -> dns.rdata.Rdata:
    return SRV(rdclass, dns.rdatatype.SRV, SRV_PRIORITY, SRV_WEIGHT, port, target)  # type: ignore[no-untyped-call]


def _ptr_rdata(rdclass: dns.rdataclass.RdataClass, target: dns.name.Name) -> dns.rdata.Rdata:
    return PTR(rdclass, dns.rdatatype.PTR, target)  # type: ignore[no-untyped-call]


def _soa_rdata(rdclass: dns.rdataclass.RdataClass, origin: dns.name.Name, serial: int, minimum: int) -> dns.rdata.Rdata:
    mname = dns.name.Name((b"ns", b"dns", *origin.labels))
    rname = dns.name.Name((b"hostmaster", *origin.labels))
    return SOA(rdclass, dns.rdatatype.SOA, mname, rname, serial, 7200, 1800, 86400, minimum)  # type: ignore[no-untyped-call]


_RR = struct.Struct("!HHIH")  # type, class, TTL, rdata length
_SRV_FIXED = struct.Struct("!HHH")
_SOA_FIXED = struct.Struct("!IIIII")
_HEADER = struct.Struct("!HHHHHH")
_QNAME = b"\xc0\x0c"  # a pointer to the question name


class _Question:
    """The query's question as the replies built by hand copy it, and where each of its labels starts.

    Replies are built directly in wire form (`WireReply`) for the common answers: the question is copied from
    the query (its spelling included), owners point at it, the SOA points at the zone's suffix of it, SRV
    targets are written out (never compressed, as dnspython does). None when the query's question cannot be
    copied that way (then dnspython builds the reply).
    """

    __slots__ = ("end", "flags", "id", "question", "rdclass", "starts")

    def __init__(self, wire: bytes, end: int, starts: list[int], flags: int, rdclass: int) -> None:
        self.question = wire[12:end + 4]
        self.end = end  # where the name ends in the query (and in every reply)
        self.starts = starts
        self.id = (wire[0] << 8) | wire[1]
        # reply_for's header: QR, the opcode, RD and CD of a QUERY, AA
        self.flags = 0x8400 | (flags & 0x7800) | (flags & 0x0110 if not flags & 0x7800 else 0)
        self.rdclass = rdclass

    @classmethod
    def of(cls, req: Request, qname: dns.name.Name) -> _Question | None:
        wire = req.wire
        end = plain_name_end(wire, 12)
        if end < 0 or end + 4 > len(wire) or len(req.msg.question) != 1:
            return None
        starts = []
        off = 12
        while wire[off]:
            starts.append(off)
            off += wire[off] + 1
        if len(starts) != len(qname.labels) - 1:
            return None
        return cls(wire, end, starts, int(req.msg.flags), int(req.msg.question[0].rdclass))

    def suffix(self, count: int) -> int:
        """Offset of the name's last `count` labels (the zone) in the reply; -1 for the root."""
        return self.starts[len(self.starts) - count] if 0 < count <= len(self.starts) else -1

    def reply(self, rcode: int, answer: Sequence[bytes] = (), authority: Sequence[bytes] = ()) -> WireReply:
        header = _HEADER.pack(self.id, self.flags | rcode, 1, len(answer), len(authority), 0)
        return WireReply(b"".join([header, self.question, *answer, *authority]))


def _labels_wire(labels: Sequence[bytes]) -> bytes | None:
    """Labels in wire form (no root); None when one cannot be a label."""
    out = []
    for label in labels:
        if not 0 < len(label) <= 63:
            return None
        out.append(bytes((len(label),)) + label)
    return b"".join(out)


class Lighthouse:
    """One `lighthouse` directive: its options, model, watcher and the query handler."""

    def __init__(self, opts: Options, model: Model, *, next_handler: Handler | None = None,
                 metric: CounterVec | None = None) -> None:
        self.opts = opts
        self.model = model
        self.next = next_handler
        self.metric = metric if metric is not None else QueryCounter(METRIC_NAME, "", METRIC_LABELS)
        self.observer = QueryObserver(self.metric)
        self.scopes = Scopes(model)
        model.subscribe(self.scopes.changed)
        zones = [_zone(z, False) for z in opts.zones if z not in opts.ptr] + [_zone(z, True) for z in opts.ptr]
        self.zones = sorted(zones, key=lambda z: len(z.labels), reverse=True)  # longest zone wins
        self.forward_zone = next((z for z in zones if not z.ptr), zones[0] if zones else _zone(".", False))
        self.fallthrough = None if opts.fallthrough is None else [_zone(z, False).labels for z in opts.fallthrough]
        self.serial = int(time.time()) & 0xFFFFFFFF
        self._soa: dict[tuple[str, dns.rdataclass.RdataClass], dns.rdata.Rdata] = {}
        self.watcher: Watcher | None = None  # set by setup: what feeds `model` from the cluster

    # -- entry ---------------------------------------------------------------------------------------------
    async def serve(self, req: Request) -> Result:
        result = self.answer(req)
        if result is None:
            if self.next is None:
                return Result(_SERVFAIL, error="plugin/lighthouse: no next plugin found")
            return await self.next(req)
        return result

    def ready(self) -> bool:
        return self.model.synced

    def answer(self, req: Request) -> Result | None:
        """The reply for `req`, or None to pass it to the next plugin (fallthrough)."""
        if not req.msg.question:
            return Result(_SERVFAIL, plugin=NAME)
        q = req.msg.question[0]
        qname = q.name if q.name.is_absolute() else q.name.derelativize(dns.name.root)
        labels = tuple(label.lower() for label in qname.labels[:-1])
        qtype = int(q.rdtype)
        qw = _Question.of(req, qname) if q.name is qname else None
        zone = self._zone_of(labels)
        if zone is None:
            return self._failure(req, labels, _NOTZONE, self.scopes.static, None, qw)
        try:
            if zone.ptr:
                return self._ptr(req, labels, zone, qtype)
            if qtype == _TXT and self.opts.dns_version and len(labels) == len(zone.labels) + 1 \
                    and labels[0] == _DNS_VERSION_LABEL:
                reply = reply_for(req)
                rrset = dns.rrset.RRset(q.name, q.rdclass, dns.rdatatype.TXT)
                rrset.add(TXT(q.rdclass, dns.rdatatype.TXT, [DNS_VERSION]), self.opts.ttl)
                reply.answer.append(rrset)
                return Result(_NOERROR, reply, plugin=NAME, cache=CachePolicy(self.scopes.static))
            if qtype not in (_A, _AAAA, _SRV):
                return self._failure(req, labels, _NOTIMP, self.scopes.static, None, qw)
            query = parse_name(labels[:len(labels) - len(zone.labels)], qtype)
            if query is None:
                return self._failure(req, labels, _NXDOMAIN, self.scopes.static, zone, qw)
            return self._lookup(req, labels, qname, zone, qtype, query, qw)
        except (dns.exception.DNSException, ValueError) as exc:
            return Result(_SERVFAIL, plugin=NAME, error=f"plugin/{NAME}: {exc}")

    def _zone_of(self, labels: tuple[bytes, ...]) -> _Zone | None:
        for zone in self.zones:
            if _inside(labels, zone.labels):
                return zone
        return None

    # -- failure path and negatives ------------------------------------------------------------------------
    def _failure(self, req: Request, labels: tuple[bytes, ...], rcode: int, scope: CacheScope,
                 zone: _Zone | None, qw: _Question | None = None) -> Result | None:
        """nextOrFailure: fall through inside a fallthrough zone, else an empty authoritative reply."""
        if self.fallthrough is not None and any(_inside(labels, z) for z in self.fallthrough):
            return None
        return Result(rcode, self._negative(req, rcode, zone, qw), plugin=NAME, cache=CachePolicy(scope))

    def _nodata(self, req: Request, zone: _Zone, scope: CacheScope, qw: _Question | None = None) -> Result:
        return Result(_NOERROR, self._negative(req, _NOERROR, zone, qw), plugin=NAME, cache=CachePolicy(scope))

    def _negative(self, req: Request, rcode: int, zone: _Zone | None, qw: _Question | None) -> dns.message.Message:
        """An empty reply, with the zone's SOA when `zone` is given (§8.4)."""
        if qw is not None:
            if zone is None or not self.opts.soa:
                return qw.reply(rcode)
            at = qw.suffix(len(zone.labels))
            if at >= 0:
                ttl = self.opts.ttl
                ptr = (0xC000 | at).to_bytes(2, "big")
                rdata = b"".join((b"\x02ns\x03dns", ptr, b"\x0ahostmaster", ptr,
                                  _SOA_FIXED.pack(self.serial, 7200, 1800, 86400, ttl)))
                return qw.reply(rcode, authority=(ptr + _RR.pack(_SOA, qw.rdclass, ttl, len(rdata)) + rdata,))
        reply = reply_for(req, rcode)
        if zone is not None:
            self._add_soa(reply, req, zone)
        return reply

    def _add_soa(self, reply: dns.message.Message, req: Request, zone: _Zone) -> None:
        """§8.4: the zone's SOA with minimum = TTL, so negatives can be cached (upstream adds none)."""
        if not self.opts.soa:
            return
        rdclass = req.msg.question[0].rdclass
        rdata = self._soa.get((zone.text, rdclass))
        if rdata is None:
            rdata = self._soa[(zone.text, rdclass)] = _soa_rdata(rdclass, zone.name, self.serial, self.opts.ttl)
        rrset = dns.rrset.RRset(zone.name, rdclass, dns.rdatatype.SOA)
        rrset.add(rdata, self.opts.ttl)
        reply.authority.append(rrset)

    # -- clusterset names ----------------------------------------------------------------------------------
    def _lookup(self, req: Request, labels: tuple[bytes, ...], qname: dns.name.Name, zone: _Zone, qtype: int,
                query: _Query, qw: _Question | None = None) -> Result | None:
        model = self.model
        opts = self.opts
        ns, svc = _text(query.namespace), _text(query.service)
        cluster, host = _text(query.cluster), _text(query.host)
        if qtype == _SRV:
            family = model.preferred_family(ns, svc)
        else:
            family = 6 if qtype == _AAAA else 4
        records, headless, found = model.resolve(ns, svc, cluster, host, family,
                                                 clusterset_mode=opts.clusterset_mode)
        if found and opts.strict_mcs and cluster and not headless:
            found = False  # MCS: no <cluster>.<svc> names for ClusterSetIP services
        synced = model.synced
        if not found:
            if not synced:
                return Result(_SERVFAIL, plugin=NAME)  # D12: not loaded yet, let the client retry
            key = (ns, svc)
            scope = self.scopes.service(key) if model.exists(ns, svc) else self.scopes.absent
            return self._failure(req, labels, _NXDOMAIN, scope, zone, qw)
        scope = self.scopes.service((ns, svc))
        if qtype == _AAAA and not opts.aaaa:
            records = ()
        if not records:
            return Result(_SERVFAIL, plugin=NAME) if not synced else self._nodata(req, zone, scope, qw)
        counted = qtype in (_A, _SRV)  # §6.3: per record found, before the SRV port filter
        local = model.local_cluster_id
        keys = self._metric_keys(local, ns, svc, records) if counted else ()
        values = self.metric.values
        for k in keys:
            values[k] = values.get(k, 0.0) + 1
        build = self._reply if qw is None or self.opts.srv_glue else self._wire
        reply = build(req, qname, zone, qtype, query, records, headless, qw)
        if reply is None:
            result = self._nodata(req, zone, scope, qw)
            if keys and result.cache is not None:
                result.cache.hit_tags = {self.observer: self.observer.rotation((keys,))}
            return result
        variants: list[dns.message.Message] | None = None
        rotation: list[tuple[MetricKey, ...]] = [keys]
        if not headless and not query.cluster and len(records) == 1 and records[0].cluster:
            variants = []
            first = records[0].cluster
            for rec in model.rotation(ns, svc, family):
                if rec.cluster == first:
                    continue
                variant = build(req, qname, zone, qtype, query, (rec,), headless, qw)
                if variant is not None:
                    variants.append(variant)
                    rotation.append(self._metric_keys(local, ns, svc, (rec,)) if counted else ())
        tags = {self.observer: self.observer.rotation(rotation)} if counted and keys else None
        return Result(_NOERROR, reply, plugin=NAME, cache=CachePolicy(scope, variants=variants or None,
                                                                       hit_tags=tags))

    def _metric_keys(self, local: str, ns: str, svc: str, records: Sequence[Record]) -> tuple[MetricKey, ...]:
        return self.observer.intern([(local, r.cluster, svc, ns, r.ip) for r in records])

    def _wire(self, req: Request, qname: dns.name.Name, zone: _Zone, qtype: int, query: _Query,
              records: Sequence[Record], headless: bool, qw: _Question | None) -> dns.message.Message | None:
        """`_reply` built directly in wire form (without SRV glue): the same records, in the same order."""
        assert qw is not None
        ttl = self.opts.ttl
        rdclass = qw.rdclass
        rrs: dict[bytes, None] = {}  # an RRset is a set (D10), in insertion order
        if qtype != _SRV:
            want = 4 if qtype == _A else 16
            head = _QNAME + _RR.pack(_A if want == 4 else _AAAA, rdclass, ttl, want)
            for r in records:
                if len(r.packed) == want:  # D7: A only for IPv4, AAAA only for IPv6
                    rrs[head + r.packed] = None
            return qw.reply(_NOERROR, list(rrs)) if rrs else None
        # SRV targets end with the zone as the question spells it (dnspython: the qname's own labels)
        at = qw.suffix(len(zone.labels))
        origin = req.wire[at:qw.end] if at >= 0 else b"\x00"
        middle = _labels_wire((query.service, query.namespace, _SVC))
        if middle is None:
            return None
        base = middle + origin
        cluster = _labels_wire((query.cluster,)) if query.cluster else b""
        for r in records:
            ports = r.ports
            if query.port or query.proto:
                ports = tuple(p for p in ports
                              if p.name.lower() == _text(query.port) and p.protocol.lower() == _text(query.proto))
            if not ports:
                continue  # D1: this record contributes nothing, the others still count
            if headless:
                prefix = _labels_wire((r.label.encode(), r.cluster.encode()))
            else:
                prefix = cluster
            if prefix is None or len(prefix) + len(base) > 255:
                continue  # a target longer than a name may be: nothing to answer for this record
            target = prefix + base
            head = _QNAME + _RR.pack(_SRV, rdclass, ttl, 6 + len(target))
            for p in ports:
                rrs[head + _SRV_FIXED.pack(SRV_PRIORITY, SRV_WEIGHT, p.port) + target] = None
        return qw.reply(_NOERROR, list(rrs)) if rrs else None

    def _reply(self, req: Request, qname: dns.name.Name, zone: _Zone, qtype: int, query: _Query,
               records: Sequence[Record], headless: bool, qw: _Question | None = None) -> dns.message.Message | None:
        """The NOERROR reply with the records' RRs (§4), or None when none qualifies (NODATA)."""
        rdclass = req.msg.question[0].rdclass
        ttl = self.opts.ttl
        reply = reply_for(req)
        if qtype != _SRV:
            want = 4 if qtype == _A else 16
            rrset = dns.rrset.RRset(qname, rdclass, dns.rdatatype.A if want == 4 else dns.rdatatype.AAAA)
            for r in records:
                if len(r.packed) == want:  # D7: A only for IPv4, AAAA only for IPv6
                    rrset.add(_address_rdata(rdclass, r), ttl)
            if not rrset:
                return None
            reply.answer.append(rrset)
            return reply
        origin = qname.labels[len(qname.labels) - 1 - len(zone.labels):]
        base = (query.service, query.namespace, _SVC, *origin)
        srv = dns.rrset.RRset(qname, rdclass, dns.rdatatype.SRV)
        glue: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], dns.rrset.RRset] = {}
        for r in records:
            ports = r.ports
            if query.port or query.proto:
                ports = tuple(p for p in ports
                              if p.name.lower() == _text(query.port) and p.protocol.lower() == _text(query.proto))
            if not ports:
                continue  # D1: this record contributes nothing, the others still count
            try:
                if headless:
                    target = dns.name.Name((r.label.encode(), r.cluster.encode(), *base))
                elif query.cluster:
                    target = dns.name.Name((query.cluster, *base))
                else:
                    target = dns.name.Name(base)
            except dns.exception.DNSException:
                continue  # a target longer than a name may be: nothing to answer for this record
            for p in ports:
                srv.add(_srv_rdata(rdclass, p.port, target), ttl)  # an RRset is a set: D10
            if self.opts.srv_glue:
                rdtype = dns.rdatatype.A if len(r.packed) == 4 else dns.rdatatype.AAAA
                rrs = glue.get((target, rdtype))
                if rrs is None:
                    rrs = glue[(target, rdtype)] = dns.rrset.RRset(target, rdclass, rdtype)
                    reply.additional.append(rrs)
                rrs.add(_address_rdata(rdclass, r), ttl)
        if not srv:
            return None
        reply.answer.append(srv)
        return reply

    # -- PTR for clusterset IPs (§8.3) ------------------------------------------------------------------------
    def _ptr(self, req: Request, labels: tuple[bytes, ...], zone: _Zone, qtype: int) -> Result | None:
        if qtype != _PTR:
            return self._failure(req, labels, _NOTIMP, self.scopes.static, None)
        try:
            ip = str(ipaddress.ip_address(dns.reversename.to_address(dns.name.Name((*labels, b"")))))
        except (dns.exception.DNSException, ValueError):
            return self._failure(req, labels, _NXDOMAIN, self.scopes.static, zone)
        owners = self.model.services_for_ip(ip)
        if not owners:
            if not self.model.synced:
                return Result(_SERVFAIL, plugin=NAME)
            return self._failure(req, labels, _NXDOMAIN, self.scopes.ptr, zone)
        q = req.msg.question[0]
        reply = reply_for(req)
        rrset = dns.rrset.RRset(q.name, q.rdclass, dns.rdatatype.PTR)
        suffix = self.forward_zone.name.labels
        for ns, svc in owners:
            target = dns.name.Name((svc.encode(), ns.encode(), _SVC, *suffix))
            rrset.add(_ptr_rdata(q.rdclass, target), self.opts.ttl)
        reply.answer.append(rrset)
        return Result(_NOERROR, reply, plugin=NAME, cache=CachePolicy(self.scopes.ptr))


# -- setup ------------------------------------------------------------------------------------------------


def setup(c: Controller) -> Wrapper:
    """Parse the directive, connect to the cluster (a failure is a setup error) and register the hooks."""
    d = c.directive()
    opts = parse_options(c)
    process = c.process
    try:
        cluster = cluster_for(process)
    except Exception as e:
        raise d.error(f"failed to create the Kubernetes client: {e}") from None
    dispatch = Dispatcher()
    local_id = str(getattr(process, "cluster_id", "") or os.environ.get("SUBMARINER_CLUSTERID", ""))
    model = Model(local_cluster_id=local_id, address_filter=opts.address_filter,
                  connectivity_grace=opts.connectivity_grace, schedule=dispatch.later)
    settled = getattr(process, "settled", None)
    watcher = Watcher(model, cluster, dispatch, on_synced=settled if callable(settled) else None)
    metric = process.vec(QueryCounter(METRIC_NAME, "Counter of DNS queries per source/destination cluster and "
                                      "destination service.", METRIC_LABELS))
    plugin = Lighthouse(opts, model, metric=metric)
    plugin.watcher = watcher
    c.register_ready(NAME, plugin.ready)
    c.add_observer(plugin.observer)

    async def start() -> None:
        dispatch.loop = asyncio.get_running_loop()
        dispatch.closed = False
        watcher.start()

    async def stop() -> None:
        dispatch.closed = True
        await asyncio.get_running_loop().run_in_executor(None, watcher.stop)

    c.on_startup(start)
    c.on_shutdown(stop)

    def wrap(next_handler: Handler) -> Handler:
        plugin.next = next_handler
        return plugin.serve

    return wrap
