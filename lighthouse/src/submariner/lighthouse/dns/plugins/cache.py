"""`cache`: CoreDNS's response cache (spec §5.2) in front of the rest of the chain.

Replies are classified like CoreDNS's `response.Typify`; positive ones go to the success cache, NXDOMAIN/NODATA
(with an SOA) and SERVFAIL/NOTIMP messages to the denial cache, each for min(max(lowest TTL, MINTTL), MAXTTL)
seconds, and that TTL is written into every record of the reply that passes, also on a miss. A hit answers
from the stored records with the remaining TTL (AA set, AD only when the client asked for DNSSEC data), may
trigger a background prefetch of a popular entry, and with `serve_stale` an expired entry is served with TTL 0.

The stored item keeps parsed RRsets; a hit clones them with the current TTL (about a microsecond per RRset),
so the cost of a hit is dominated by rendering the reply. Replies carry decreasing TTLs, so they are never
handed to the server's wire cache (`Result.cache` stays None).
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from submariner.lighthouse.dns.config import parse_key
from submariner.lighthouse.dns.plugin import (
    Controller,
    Directive,
    Handler,
    Request,
    Result,
    SetupError,
    Wrapper,
    parse_duration,
)
from submariner.lighthouse.dns.process import CounterVec, GaugeVec

NAME = "cache"
ONCE = True
SYNC_SAFE = True  # the handler needs no task context (see plugin.py)

MAX_TTL = 3600  # dnsutil.MaximumDefaulTTL
MAX_NTTL = MAX_TTL // 2
MIN_TTL = 5  # dnsutil.MinimalDefaultTTL
DEFAULT_CAP = 10_000
SHARDS = 256
SUCCESS, DENIAL = "success", "denial"

_SOA, _NS, _RRSIG, _OPT = dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.RRSIG, dns.rdatatype.OPT
_ANY, _AXFR, _IXFR = dns.rdatatype.ANY, dns.rdatatype.AXFR, dns.rdatatype.IXFR
_AD, _CD, _RD, _RA, _TC, _QR = (dns.flags.AD, dns.flags.CD, dns.flags.RD, dns.flags.RA, dns.flags.TC,
                                dns.flags.QR)


class Kind(Enum):
    """response.Type."""

    NO_ERROR = "NOERROR"
    NAME_ERROR = "NXDOMAIN"
    SERVER_ERROR = "SERVERERROR"
    NO_DATA = "NODATA"
    DELEGATION = "DELEGATION"
    META = "META"
    UPDATE = "UPDATE"
    OTHER_ERROR = "OTHERERROR"


def _rrsig_expired(msg: dns.message.Message, now: float) -> bool:
    for section in (msg.answer, msg.authority, msg.additional):
        for rrset in section:
            if rrset.rdtype == _RRSIG:
                for rd in rrset:
                    if not rd.inception <= now <= rd.expiration:
                        return True
    return False


def typify(msg: dns.message.Message, now: float | None = None) -> Kind:
    """CoreDNS response.Typify for the message `msg` (the reply to its own question)."""
    opcode = msg.opcode()
    if opcode == dns.opcode.UPDATE:
        return Kind.UPDATE
    if opcode == dns.opcode.NOTIFY:
        return Kind.META
    if msg.question and msg.question[0].rdtype in (_AXFR, _IXFR):
        return Kind.META
    if msg.ednsflags & dns.flags.DO and _rrsig_expired(msg, time.time() if now is None else now):
        return Kind.OTHER_ERROR
    rcode = msg.rcode()
    if msg.answer and rcode == dns.rcode.NOERROR:
        return Kind.NO_ERROR
    soa = False
    ns = 0
    for rrset in msg.authority:
        if rrset.rdtype == _SOA:
            soa = True
        elif rrset.rdtype == _NS:
            ns += 1
    if soa and rcode == dns.rcode.NOERROR:
        return Kind.NO_DATA
    if soa and rcode == dns.rcode.NXDOMAIN:
        return Kind.NAME_ERROR
    if rcode in (dns.rcode.SERVFAIL, dns.rcode.NOTIMP):
        return Kind.SERVER_ERROR
    if ns > 0 and rcode == dns.rcode.NOERROR:
        return Kind.DELEGATION
    if rcode == dns.rcode.NOERROR:
        return Kind.NO_ERROR
    return Kind.OTHER_ERROR


def minimal_ttl(msg: dns.message.Message, kind: Kind) -> int:
    """dnsutil.MinimalTTL: the lowest TTL in the message (OPT excluded), 5 s for errors or empty messages."""
    if kind not in (Kind.NO_ERROR, Kind.NAME_ERROR, Kind.NO_DATA):
        return MIN_TTL
    if not msg.answer and not msg.authority and not msg.additional:
        return MIN_TTL
    low = MAX_TTL
    for section in (msg.answer, msg.authority, msg.additional):
        for rrset in section:
            if rrset.rdtype != _OPT and rrset.ttl < low:
                low = rrset.ttl
    return low


def _soa_less_nodata(msg: dns.message.Message) -> bool:
    """A NOERROR reply with nothing of the asked type and no SOA (coredns#8232): not cached at all."""
    if msg.rcode() != dns.rcode.NOERROR or not msg.question:
        return False
    qtype = msg.question[0].rdtype
    if qtype == _ANY or any(r.rdtype == _SOA for r in msg.authority):
        return False
    return not any(r.rdtype == qtype for r in msg.answer)


def _clone(rrset: dns.rrset.RRset, ttl: int) -> dns.rrset.RRset:
    out = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype, rrset.covers)
    out.items = rrset.items.copy()
    out.ttl = ttl
    return out


Key = tuple[str, int, int, bool, bool]  # qname, qtype, qclass, DO, CD

_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength


def _skip_name(wire: bytes, off: int) -> int:
    while True:
        length = wire[off]
        if length == 0:
            return off + 1
        if length >= 0xC0:
            return off + 2
        off += length + 1


class Template:
    """An item rendered once (ID, flags and TTLs zero): a hit patches those bytes instead of re-rendering."""

    __slots__ = ("qend", "ttl_offsets", "wire")

    def __init__(self, wire: bytes) -> None:
        self.wire = wire
        off = _skip_name(wire, 12) + 4
        self.qend = off
        offsets: list[int] = []
        an, ns, ar = struct.unpack_from("!HHH", wire, 6)
        for _ in range(an + ns + ar):
            off = _skip_name(wire, off)
            offsets.append(off + 4)
            off += 10 + _FIXED.unpack_from(wire, off)[3]
        self.ttl_offsets = tuple(offsets)

    def render(self, query: bytes, flags: int, ttl: int) -> bytes | None:
        """The reply for `query` (its ID and question spelling), or None when the question does not fit."""
        qend = self.qend
        if len(query) < qend or query[qend - 4:qend] != self.wire[qend - 4:qend]:
            return None
        out = bytearray(self.wire)
        out[0:2] = query[0:2]
        _U16.pack_into(out, 2, flags)
        out[12:qend] = query[12:qend]
        packed = _U32.pack(ttl)
        for off in self.ttl_offsets:
            out[off:off + 4] = packed
        return bytes(out)


class HitMessage(dns.message.Message):
    """A cache hit: a complete message for any plugin that looks at it, plus its wire form made by patching
    the item's template, used by `to_wire` as long as nothing changed the message after it was built."""

    def to_wire(self, origin: dns.name.Name | None = None, max_size: int = 0, multi: bool = False,
                tsig_ctx: Any | None = None, prepend_length: bool = False, prefer_truncation: bool = False,
                **kw: Any) -> bytes:
        wire: bytes | None = getattr(self, "_wire", None)
        if (wire is not None and origin is None and not multi and tsig_ctx is None and not kw
                and (not max_size or len(wire) <= max_size) and self._untouched()):
            return len(wire).to_bytes(2, "big") + wire if prepend_length else wire
        return super().to_wire(origin, max_size, multi, tsig_ctx, prepend_length, prefer_truncation, **kw)

    def _untouched(self) -> bool:
        snap: tuple[Any, ...] = self._snap  # type: ignore[attr-defined]
        flags, msg_id, question, sections, ttl = snap
        if self.flags != flags or self.id != msg_id or self.opt is not None or self.tsig is not None \
                or self.ednsflags or len(self.question) != 1 or self.question[0] is not question:
            return False
        for current, (kept, sizes) in zip((self.answer, self.authority, self.additional), sections, strict=True):
            if len(current) != len(kept):
                return False
            for rrset, old, size in zip(current, kept, sizes, strict=True):
                if rrset is not old or rrset.ttl != ttl or len(rrset) != size:
                    return False
        return True


class Item:
    """A stored reply: sections without OPT, the header bits a hit restores, its TTL and popularity."""

    __slots__ = ("ad", "additional", "answer", "authority", "hits", "last", "orig_ttl", "qname", "question", "ra",
                 "rcode", "stored", "template")

    def __init__(self, msg: dns.message.Message, now: float, duration: int) -> None:
        self.rcode = int(msg.rcode())
        self.ad = bool(msg.flags & _AD)
        self.ra = bool(msg.flags & _RA)
        self.answer = [_clone(r, duration) for r in msg.answer]
        self.authority = [_clone(r, duration) for r in msg.authority]
        self.additional = [_clone(r, duration) for r in msg.additional if r.rdtype != _OPT]
        q = msg.question[0]
        self.qname = q.name.canonicalize()
        self.question = (self.qname.to_text(), int(q.rdtype), int(q.rdclass))
        self.orig_ttl = duration
        self.stored = now
        self.last = -math.inf  # freq.Freq
        self.hits = 0
        self.template: Template | bool | None = None  # None: not rendered yet; False: cannot be

    def ttl(self, now: float) -> int:
        return self.orig_ttl - int(now - self.stored)

    def matches(self, name: str, qtype: int, qclass: int) -> bool:
        return self.question == (name, qtype, qclass)

    def update_freq(self, window: float, now: float) -> int:
        if self.last < now - window:
            self.hits = 1
        else:
            self.hits += 1
        self.last = now
        return self.hits

    def _template(self) -> Template | None:
        if self.template is None:
            if self.rcode > 15:
                self.template = False
            else:
                m = dns.message.Message(id=0)
                m.flags = 0
                m.question = [dns.rrset.RRset(self.qname, dns.rdataclass.RdataClass.make(self.question[2]),
                                              dns.rdatatype.RdataType.make(self.question[1]))]
                m.answer = [_clone(r, 0) for r in self.answer]
                m.authority = [_clone(r, 0) for r in self.authority]
                m.additional = [_clone(r, 0) for r in self.additional]
                try:
                    self.template = Template(m.to_wire(max_size=65535))
                except dns.exception.DNSException:
                    self.template = False
        return self.template if isinstance(self.template, Template) else None

    def to_msg(self, req: Request, ttl: int, do: bool, ad: bool) -> dns.message.Message:
        """miekg SetReply + item.toMsg: AA, RA and rcode from the item, AD only when the client wants DNSSEC."""
        q = req.msg
        opcode = q.flags & 0x7800
        flags = _QR | dns.flags.AA | opcode | (self.rcode & 0x0F)
        if opcode == 0:  # QUERY: RD and CD are copied
            flags |= q.flags & (_RD | _CD)
        if self.ra:
            flags |= _RA
        if self.ad and (do or ad):
            flags |= _AD
        ttl = max(ttl, 0)
        reply = HitMessage(id=q.id)
        reply.flags = flags
        if self.rcode > 15:
            reply.set_rcode(dns.rcode.Rcode.make(self.rcode))
        reply.question = q.question
        reply.answer = [_clone(r, ttl) for r in self.answer]
        reply.authority = [_clone(r, ttl) for r in self.authority]
        reply.additional = [_clone(r, ttl) for r in self.additional]
        template = self._template()
        if template is not None:
            wire = template.render(req.wire, flags, ttl)
            if wire is not None:
                reply._wire = wire  # type: ignore[attr-defined]
                reply._snap = (flags, q.id, q.question[0],  # type: ignore[attr-defined]
                               tuple((tuple(sec), tuple(len(r) for r in sec))
                                     for sec in (reply.answer, reply.authority, reply.additional)), ttl)
        return reply


class Store:
    """plugin/pkg/cache: 256 shards of max(capacity/256, 4) items; a full shard drops its oldest entry."""

    def __init__(self, capacity: int) -> None:
        self.shard_size = max(capacity // SHARDS, 4)
        self.shards: list[dict[Key, Item]] = [{} for _ in range(SHARDS)]
        self.size = 0

    def get(self, key: Key) -> Item | None:
        return self.shards[hash(key) & (SHARDS - 1)].get(key)

    def add(self, key: Key, item: Item) -> bool:
        """Store `item`; True when another entry was evicted to make room."""
        shard = self.shards[hash(key) & (SHARDS - 1)]
        evicted = False
        if key not in shard:
            if len(shard) >= self.shard_size:
                del shard[next(iter(shard))]
                evicted = True
            else:
                self.size += 1
        shard[key] = item
        return evicted

    def remove(self, key: Key) -> None:
        if self.shards[hash(key) & (SHARDS - 1)].pop(key, None) is not None:
            self.size -= 1

    def __len__(self) -> int:
        return self.size


# -- configuration ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Options:
    zones: list[str]
    pcap: int = DEFAULT_CAP
    pttl: int = MAX_TTL
    minpttl: int = MIN_TTL
    ncap: int = DEFAULT_CAP
    nttl: int = MAX_NTTL
    minnttl: int = MIN_TTL
    failttl: float = MIN_TTL
    prefetch: int = 0
    duration: float = 60.0
    percentage: int = 10
    stale_up_to: float = 0.0
    verify_stale: bool = False
    pexcept: list[str] = field(default_factory=list)
    nexcept: list[str] = field(default_factory=list)
    keepttl: bool = False


def _plain(message: str) -> SetupError:
    return SetupError(f"plugin/{NAME}: {message}")


def _atoi(text: str) -> int:
    body = text[1:] if text[:1] in "+-" else text
    if not body.isdigit():
        raise _plain(f'strconv.Atoi: parsing "{text}": invalid syntax')
    return int(text)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise _plain(str(exc)) from None


def _zones(names: Iterable[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        try:
            out.extend(k.zone for k in parse_key(name, 53))
        except SetupError:
            continue
    return out


def _cap_ttl(args: list[str]) -> tuple[int, int | None, int | None]:
    """`CAPACITY [TTL [MINTTL]]` of `success` / `denial`."""
    cap = _atoi(args[0])
    ttl = minttl = None
    if len(args) > 1:
        ttl = _atoi(args[1])
        if ttl <= 0:
            raise _plain(f"cache TTL can not be zero or negative: {ttl}")
        if len(args) > 2:
            minttl = _atoi(args[2])
            if minttl < 0:
                raise _plain(f"cache min TTL can not be negative: {minttl}")
    return cap, ttl, minttl


def parse(c: Controller) -> Options:
    d: Directive = c.directive()
    args = list(d.args)
    o = Options(zones=[])
    if args:
        try:
            ttl = _atoi(args[0])
        except SetupError:
            ttl = None
        if ttl is not None:
            if ttl <= 0:
                raise _plain(f"cache TTL can not be zero or negative: {ttl}")
            o.pttl = o.nttl = ttl
            args = args[1:]
    o.zones = _zones(args) if args else list(c.zones)
    for i, prop in enumerate(d.block):
        line = d.block_line(i)
        key, rest = prop[0], prop[1:]
        if key in (SUCCESS, DENIAL):
            if not rest:
                raise d.arg_error(key, line)
            cap, ttl, minttl = _cap_ttl(rest)
            if key == SUCCESS:
                o.pcap = cap
                o.pttl = ttl if ttl is not None else o.pttl
                o.minpttl = minttl if minttl is not None else o.minpttl
            else:
                o.ncap = cap
                o.nttl = ttl if ttl is not None else o.nttl
                o.minnttl = minttl if minttl is not None else o.minnttl
        elif key == "prefetch":
            if not rest or len(rest) > 3:
                raise d.arg_error(prop[-1], line)
            amount = _atoi(rest[0])
            if amount < 0:
                raise _plain(f"prefetch amount should be positive: {amount}")
            o.prefetch = amount
            if len(rest) > 1:
                o.duration = _duration(rest[1])
            if len(rest) > 2:
                pct = rest[2]
                if not pct.endswith("%"):
                    raise _plain(f"last character of percentage should be `%`, but is: '{pct[-1:]}'")
                num = _atoi(pct[:-1])
                if not 10 <= num <= 90:
                    raise _plain(f"percentage should fall in range [10, 90]: {num}")
                o.percentage = num
        elif key == "serve_stale":
            if len(rest) > 2:
                raise d.arg_error(prop[-1], line)
            o.stale_up_to = 3600.0
            if rest:
                dur = _duration(rest[0])
                if dur < 0:
                    raise _plain("invalid negative duration for serve_stale")
                o.stale_up_to = dur
            o.verify_stale = False
            if len(rest) > 1:
                mode = rest[1].lower()
                if mode not in ("immediate", "verify"):
                    raise _plain(f"invalid value for serve_stale refresh mode: {mode}")
                o.verify_stale = mode == "verify"
        elif key == "servfail":
            if len(rest) != 1:
                raise d.arg_error(prop[-1], line)
            dur = _duration(rest[0])
            if dur < 0:
                raise _plain("invalid negative ttl for servfail")
            if dur > 300:
                raise _plain("caching SERVFAIL responses over 5 minutes is not permitted")
            o.failttl = dur
        elif key == "disable":
            if not rest:
                raise d.arg_error(key, line)
            zones = _zones(rest[1:]) if len(rest) > 1 else ["."]
            if rest[0] == DENIAL:
                o.nexcept = zones
            elif rest[0] == SUCCESS:
                o.pexcept = zones
            else:
                raise _plain(f'cache type for disable must be "{SUCCESS}" or "{DENIAL}"')
        elif key == "keepttl":
            if rest:
                raise d.arg_error(prop[-1], line)
            o.keepttl = True
        elif key == "serve_stale_policy":
            raise d.error("property 'serve_stale_policy' is not supported by lighthouse-dns (CoreDNS 1.14.7+)", line)
        else:
            raise d.arg_error(key, line)  # CoreDNS answers unknown properties with c.ArgErr()
    return o


# -- the handler -------------------------------------------------------------------------------------------------


class Metrics:
    def __init__(self, process: Any) -> None:
        vec = process.vec
        labels = ("server", "zones", "view")
        typed = ("server", "type", "zones", "view")
        self.entries: GaugeVec = vec(GaugeVec("coredns_cache_entries", "The number of elements in the cache.",
                                              typed))
        self.requests: CounterVec = vec(CounterVec("coredns_cache_requests_total",
                                                   "The count of cache requests.", labels))
        self.hits: CounterVec = vec(CounterVec("coredns_cache_hits_total", "The count of cache hits.", typed))
        self.misses: CounterVec = vec(CounterVec("coredns_cache_misses_total",
                                                 "The count of cache misses. Deprecated, derive misses from cache "
                                                 "hits/requests counters.", labels))
        self.prefetch: CounterVec = vec(CounterVec("coredns_cache_prefetch_total",
                                                   "The number of times the cache has prefetched a cached item.",
                                                   labels))
        self.drops: CounterVec = vec(CounterVec("coredns_cache_drops_total",
                                                "The number responses that are not cached, because the reply is "
                                                "malformed.", labels))
        self.stale: CounterVec = vec(CounterVec("coredns_cache_served_stale_total",
                                                "The number of requests served from stale cache entries.", labels))
        self.evictions: CounterVec = vec(CounterVec("coredns_cache_evictions_total",
                                                    "The count of cache evictions.", typed))


def _match(zones: Iterable[str], name: str) -> str | None:
    best: str | None = None
    for zone in zones:
        if (zone == "." or name == zone or name.endswith("." + zone)) and (best is None or len(zone) > len(best)):
            best = zone
    return best


class Cache:
    """One `cache` stanza: the two stores, options, metrics and background refreshes."""

    def __init__(self, o: Options, metrics: Metrics, now: Callable[[], float] = time.monotonic) -> None:
        self.o = o
        self.m = metrics
        self.now = now
        self.pcache = Store(o.pcap)
        self.ncache = Store(o.ncap)
        self.zones_label = ",".join(o.zones)
        self.next: Handler | None = None
        self.refreshing: set[Key] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def serve(self, req: Request) -> Result:
        nxt = self.next
        assert nxt is not None
        name = req.name_lower
        if _match(self.o.zones, name) is None:
            return await nxt(req)
        now = self.now()
        flags = req.msg.flags
        do = req.do
        ad = bool(flags & _AD)
        key: Key = (name, req.qtype, req.qclass, do, bool(flags & _CD))
        item = self._get(now, key, req, name)
        if item is None:
            return await self._miss(req, key, do, ad)
        ttl = item.ttl(now)
        if ttl < 0:
            if self.o.verify_stale:
                res = await nxt(self._sub(req, req.proto))
                if res.msg is not None and res.msg.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    return self._written(req, res, key, do, False)
            now += ttl  # a reply built from the stale item carries TTL 0
            if not self.o.verify_stale:
                self._spawn_prefetch(req, key, item, now)
            self.m.stale.inc((req.server, self.zones_label, ""))
        elif self._should_prefetch(item, now):
            self._spawn_prefetch(req, key, item, now)
        if self.o.keepttl:
            now = item.stored
        return Result(0, item.to_msg(req, item.ttl(now), do, ad), plugin=NAME)

    def _get(self, now: float, key: Key, req: Request, name: str) -> Item | None:
        """getIgnoreTTL: an item that is fresh, or stale but within serve_stale; counts requests/hits/misses."""
        labels = (req.server, self.zones_label, "")
        self.m.requests.inc(labels)
        stale = self.o.stale_up_to
        for store, kind in ((self.ncache, DENIAL), (self.pcache, SUCCESS)):
            item = store.get(key)
            if item is not None and item.matches(name, key[1], key[2]):
                ttl = item.ttl(now)
                if ttl > 0 or (stale > 0 and -ttl < int(stale)):
                    self.m.hits.inc((req.server, kind, self.zones_label, ""))
                    return item
        self.m.misses.inc(labels)
        return None

    def _should_prefetch(self, item: Item, now: float) -> bool:
        if self.o.prefetch <= 0:
            return False
        item.update_freq(self.o.duration, now)
        threshold = math.ceil(self.o.percentage / 100 * item.orig_ttl)
        return item.hits >= self.o.prefetch and item.ttl(now) <= threshold

    async def _miss(self, req: Request, key: Key, do: bool, ad: bool) -> Result:
        nxt = self.next
        assert nxt is not None
        res = await nxt(req)
        if res.msg is None:
            return res  # nothing written (server-written rcode, dropped query): nothing to cache
        return self._written(req, res, key, do, ad)

    def _written(self, req: Request, res: Result, key: Key, do: bool, ad: bool) -> Result:
        """CoreDNS's ResponseWriter.WriteMsg: store what qualifies, cap every TTL of the reply that is sent."""
        msg = res.msg
        assert msg is not None
        duration = self._store(req, msg, key, prefetch=False)
        out = dns.message.Message(id=msg.id)
        out.flags = msg.flags if (do or ad) else msg.flags & ~_AD
        out.set_rcode(msg.rcode())
        out.question = msg.question
        out.answer = [_clone(r, duration) for r in msg.answer]
        out.authority = [_clone(r, duration) for r in msg.authority]
        out.additional = [_clone(r, duration) for r in msg.additional if r.rdtype != _OPT]
        return Result(res.rcode, out, plugin=res.plugin, error=res.error)

    def _store(self, req: Request, msg: dns.message.Message, key: Key, *, prefetch: bool) -> int:
        """Classify `msg`, store it when it qualifies; returns the TTL (seconds) it gets."""
        kind = typify(msg)
        low = minimal_ttl(msg, kind)
        o = self.o
        if kind in (Kind.NAME_ERROR, Kind.NO_DATA):
            duration = min(max(low, o.minnttl), o.nttl)
        elif kind == Kind.SERVER_ERROR:
            duration = int(o.failttl)
        else:
            duration = min(max(low, o.minpttl), o.pttl)
        cacheable = (not msg.flags & _TC and kind not in (Kind.OTHER_ERROR, Kind.META, Kind.UPDATE)
                     and not (kind in (Kind.NO_ERROR, Kind.DELEGATION) and _soa_less_nodata(msg)))
        if cacheable and duration > 0:
            if self._matches(req, msg):
                self._set(req, msg, key, kind, duration, prefetch)
                self.m.entries.set((req.server, SUCCESS, self.zones_label, ""), float(len(self.pcache)))
                self.m.entries.set((req.server, DENIAL, self.zones_label, ""), float(len(self.ncache)))
            else:
                self.m.drops.inc((req.server, self.zones_label, ""))
        return duration

    @staticmethod
    def _matches(req: Request, msg: dns.message.Message) -> bool:
        if len(msg.question) != 1 or not msg.flags & _QR:
            return False
        q = msg.question[0]
        return q.name.to_text().lower() == req.name_lower and int(q.rdtype) == req.qtype

    def _set(self, req: Request, msg: dns.message.Message, key: Key, kind: Kind, duration: int,
             prefetch: bool) -> None:
        name = req.name_lower
        if kind in (Kind.NO_ERROR, Kind.DELEGATION):
            if _match(self.o.pexcept, name) is not None:
                return
            if self.pcache.add(key, Item(msg, self.now(), duration)):
                self.m.evictions.inc((req.server, SUCCESS, self.zones_label, ""))
            if prefetch:
                self.ncache.remove(key)
        elif kind in (Kind.NAME_ERROR, Kind.NO_DATA, Kind.SERVER_ERROR):
            if _match(self.o.nexcept, name) is not None:
                return
            if self.ncache.add(key, Item(msg, self.now(), duration)):
                self.m.evictions.inc((req.server, DENIAL, self.zones_label, ""))

    # -- background refresh ---------------------------------------------------------------------------------------
    @staticmethod
    def _sub(req: Request, proto: str) -> Request:
        """The query again, for a refresh nobody waits on (CoreDNS uses a TCP-like writer: no truncation)."""
        return Request(msg=req.msg, wire=req.wire, remote=req.remote, local=req.local, proto=proto,
                       server=req.server, zone=req.zone, max_size=65535 if proto == "tcp" else req.max_size,
                       meta=dict(req.meta), start=req.start)

    def _spawn_prefetch(self, req: Request, key: Key, item: Item, now: float) -> None:
        if key in self.refreshing:
            return  # at most one background fetch per entry
        self.refreshing.add(key)
        task = asyncio.get_running_loop().create_task(self._prefetch(req, key, item, now))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _prefetch(self, req: Request, key: Key, item: Item, now: float) -> None:
        self.m.prefetch.inc((req.server, self.zones_label, ""))
        nxt = self.next
        assert nxt is not None
        try:
            res = await nxt(self._sub(req, "tcp"))
            if res.msg is not None:
                self._store(req, res.msg, key, prefetch=True)
            fresh = self.ncache.get(key) or self.pcache.get(key)
            if fresh is not None and fresh is not item:
                fresh.last, fresh.hits = now, item.hits  # Freq.Reset: the new item inherits the popularity
        except Exception:  # a failed refresh leaves the old entry in place
            pass
        finally:
            self.refreshing.discard(key)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()


def setup(c: Controller) -> Wrapper:
    o = parse(c)
    cache = Cache(o, Metrics(c.process))
    c.on_shutdown(cache.close)

    def wrap(next_handler: Handler) -> Handler:
        cache.next = next_handler
        return cache.serve

    return wrap
