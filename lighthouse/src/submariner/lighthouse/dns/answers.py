"""Wire-level answers: the question key read straight from query bytes, rendering the messages plugins build,
fitting a reply to the client (OPT echo, truncation) and the answer cache that serves repeated questions
without dnspython.

Everything here works on bytes: the hot path of the server must not build message objects. A cached reply is
stored as it was sent for one query, minus its ID, with the question name spelled in lower case; a later query
with the same key differs only in its ID, in the letter case of the question name, and (never, since the flags
are part of the key) in its header bits. A query spelled in lower case (what resolvers and dnsperf send) finds
its entry under its own bytes, `query[2:]`, and the reply is `query[:2] + body`; other spellings are lowered
and patched in. Hits are counted per entry (and per rotated variant) and folded into the metrics later.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdata import GenericRdata

from submariner.lighthouse.dns.plugin import AnswerInfo, CacheScope, ScopeToken, Tally

_COUNTS_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # QD=1, AN=NS=AR=0
_COUNTS_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x01"  # QD=1, AR=1 (the OPT)
_OPT_TYPE = 41
_TSIG_TYPE = 250
_HEADER = struct.Struct("!HBBHHHH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_U16 = struct.Struct("!H")
TC = 0x02  # in the third header byte


class WireError(ValueError):
    """A reply or query that cannot be walked (bad name, pointer loop, short RR)."""


def cache_key(raw: bytes) -> tuple[bytes, int] | None:
    """The answer-cache key of a query, and where its question name ends; None when it takes the slow path.

    Key = header flags and counts + lower-cased question name + QTYPE/QCLASS + the OPT RR bytes (UDP size, DO,
    version; no options). Only queries with one question and no record other than an option-less OPT qualify.
    The name itself is not validated here: only validated queries are ever inserted, and lower-casing cannot
    make a differently structured name equal to a valid one (label lengths are below 0x40, letters above).
    """
    n = len(raw)
    counts = raw[4:12]
    if counts == _COUNTS_PLAIN:
        qend = n - 4
    elif counts == _COUNTS_EDNS:
        qend = n - 15
    else:
        return None
    # 0x40 keeps header bytes out of the A-Z range that lower() would change.
    if qend < 13 or (raw[2] | raw[3]) & 0x40:
        return None
    return raw[2:qend].lower() + raw[qend:], qend


def plain_name_end(wire: bytes, off: int = 12) -> int:
    """End offset of an uncompressed name at `off`; -1 when it is compressed, malformed or too long."""
    n = len(wire)
    start = off
    while off < n:
        length = wire[off]
        if length == 0:
            off += 1
            return off if off - start <= 255 else -1
        if length > 63:
            return -1
        off += length + 1
    return -1


def skip_name(wire: bytes, off: int) -> int:
    """Offset after the (possibly compressed) name at `off`."""
    n = len(wire)
    while True:
        if off >= n:
            raise WireError("name runs past the end of the message")
        length = wire[off]
        if length == 0:
            return off + 1
        if length >= 0xC0:
            if off + 2 > n:
                raise WireError("truncated compression pointer")
            return off + 2
        if length > 63:
            raise WireError("bad label type")
        off += length + 1


def question_end(wire: bytes) -> int:
    """Offset after the first question (name, type, class) of a message with QDCOUNT ≥ 1; -1 if unreadable."""
    try:
        end = skip_name(wire, 12) + 4
    except WireError:
        return -1
    return end if end <= len(wire) else -1


def parse_query(raw: bytes) -> dns.message.Message:
    """`dns.message.from_wire` for the common query shape, several times faster; anything else falls back.

    Handles one uncompressed question plus an optional root-owned OPT as the only other record (what stub
    resolvers and dnsperf send). Raises what dnspython raises for bad names and options.
    """
    n = len(raw)
    counts = raw[4:12]
    if counts != _COUNTS_PLAIN and counts != _COUNTS_EDNS:
        return dns.message.from_wire(raw, ignore_trailing=True)
    end = plain_name_end(raw, 12)
    if end < 0 or end + 4 > n:
        return dns.message.from_wire(raw, ignore_trailing=True)
    opt_at = end + 4
    if counts == _COUNTS_EDNS:
        if opt_at + 11 > n or raw[opt_at] != 0 or raw[opt_at + 1:opt_at + 3] != b"\x00\x29":
            return dns.message.from_wire(raw, ignore_trailing=True)
        payload, ttl, rdlen = struct.unpack_from("!HIH", raw, opt_at + 3)
        if opt_at + 11 + rdlen > n:
            return dns.message.from_wire(raw, ignore_trailing=True)
    labels = []
    off = 12
    while off < end - 1:
        length = raw[off]
        labels.append(raw[off + 1:off + 1 + length])
        off += length + 1
    labels.append(b"")
    name = dns.name.Name(labels)
    qid, flags = _U16X2.unpack_from(raw)
    rdtype, rdclass = _U16X2.unpack_from(raw, end)
    msg = dns.message.QueryMessage(id=qid)
    msg.flags = dns.flags.Flag(flags)
    cls = _CLASSES.get(rdclass)
    if cls is None:
        cls = dns.rdataclass.RdataClass.make(rdclass)
        if len(_CLASSES) < 256:
            _CLASSES[rdclass] = cls
    typ = _TYPES.get(rdtype)
    if typ is None:
        typ = dns.rdatatype.RdataType.make(rdtype)
        if len(_TYPES) < 1024:
            _TYPES[rdtype] = typ
    msg.question = [dns.rrset.RRset(name, cls, typ)]
    if counts == _COUNTS_EDNS:
        options: list[dns.edns.Option] = []
        pos = opt_at + 11
        stop = pos + rdlen
        while pos < stop:
            if pos + 4 > stop:
                raise dns.message.ShortHeader  # like dnspython: a truncated option
            code, olen = _U16X2.unpack_from(raw, pos)
            pos += 4
            if pos + olen > stop:
                raise dns.message.ShortHeader
            options.append(dns.edns.option_from_wire(code, raw, pos, olen))
            pos += olen
        if options:
            msg.use_edns((ttl >> 16) & 0xFF, ttl, payload, options=options)
            msg.request_payload = 0  # as from_wire leaves it
        else:
            opt = _OPTS.get((payload, ttl))
            if opt is None:  # building an OPT RRset costs more than the rest of the parse: share option-less ones
                scratch = dns.message.Message()
                scratch.use_edns((ttl >> 16) & 0xFF, ttl, payload)
                opt = scratch.opt
                if len(_OPTS) < 1024:
                    _OPTS[(payload, ttl)] = opt
            msg.opt = opt
    return msg


_OPTS: dict[tuple[int, int], dns.rrset.RRset | None] = {}
_CLASSES: dict[int, dns.rdataclass.RdataClass] = {}  # Enum.make costs more than the rest of a question
_TYPES: dict[int, dns.rdatatype.RdataType] = {}


_U16X2 = struct.Struct("!HH")


# -- rendering -------------------------------------------------------------------------------------------------

_A_T, _NS_T, _CNAME_T, _SOA_T, _PTR_T, _MX_T, _TXT_T, _AAAA_T, _SRV_T = 1, 2, 5, 6, 12, 15, 16, 28, 33
_RENDERED_TYPES = frozenset({_A_T, _NS_T, _CNAME_T, _SOA_T, _PTR_T, _MX_T, _TXT_T, _AAAA_T, _SRV_T})
_HEADER_FULL = struct.Struct("!HHHHHH")
_RR_HEAD = struct.Struct("!HHI")
_U16X3 = struct.Struct("!HHH")
_U32X5 = struct.Struct("!IIIII")
_QNAME_POINTER = b"\xc0\x0c"


def _put_name(out: bytearray, name: dns.name.Name, comp: dict[bytes, int] | None) -> bool:
    """Append `name` to `out`, compressed against `comp` (lower-case wire suffix -> offset) like dnspython:
    case-insensitively, and recording every suffix it writes. `comp` None: uncompressed, nothing recorded.
    False for a relative name (the caller falls back to dnspython)."""
    labels = name.labels
    if not labels or labels[-1]:
        return False
    wire = b"".join([bytes((len(label),)) + label for label in labels[:-1]])
    if comp is None:
        out += wire
        out.append(0)
        return True
    low = wire.lower()
    start = len(out)
    off = 0
    n = len(wire)
    while off < n:
        ptr = comp.get(low[off:])
        if ptr is not None:
            out += wire[:off]
            out += (0xC000 | ptr).to_bytes(2, "big")
            break
        if start + off <= 0x3FFF:
            comp[low[off:]] = start + off
        off += wire[off] + 1
    else:
        out += wire
        out.append(0)
    return True


def render(msg: dns.message.Message) -> bytes | None:
    """`msg.to_wire()` for the messages plugins build (one question; A, AAAA, SRV, SOA, PTR, CNAME, NS, MX and
    TXT records; no OPT, no TSIG), several times faster: dnspython makes a Name object per suffix of every name
    it compresses. Names are compressed as dnspython does (case-insensitively, SRV targets not at all); records
    stay in their RRset's order (dnspython shuffles them). None for anything else: render with dnspython."""
    try:
        return _render(msg)
    except (AttributeError, TypeError, ValueError, OSError):  # an rdata shaped unlike its type: dnspython's turn
        return None


def _render(msg: dns.message.Message) -> bytes | None:
    if msg.opt is not None or msg.tsig is not None or len(msg.question) != 1:
        return None
    question = msg.question[0]
    qname = question.name
    out = bytearray(12)
    comp: dict[bytes, int] = {}
    if not _put_name(out, qname, comp):
        return None
    out += _U16X2.pack(question.rdtype, question.rdclass)
    counts = [1, 0, 0, 0]
    for index, section in ((1, msg.answer), (2, msg.authority), (3, msg.additional)):
        for rrset in section:
            rdtype = rrset.rdtype
            if rdtype not in _RENDERED_TYPES or not len(rrset) or rrset.deleting is not None:
                return None
            owner = rrset.name
            head = _RR_HEAD.pack(rdtype, rrset.rdclass, rrset.ttl)
            for rd in rrset:
                if owner is qname:
                    out += _QNAME_POINTER
                elif not _put_name(out, owner, comp):
                    return None
                out += head
                at = len(out)
                out += b"\x00\x00"
                if rd.__class__ is GenericRdata:
                    out += rd.data
                elif rdtype == _A_T:
                    out += socket.inet_pton(socket.AF_INET, rd.address)
                elif rdtype == _AAAA_T:
                    out += socket.inet_pton(socket.AF_INET6, rd.address)
                elif rdtype == _SRV_T:
                    out += _U16X3.pack(rd.priority, rd.weight, rd.port)
                    if not _put_name(out, rd.target, None):
                        return None
                elif rdtype == _SOA_T:
                    if not _put_name(out, rd.mname, comp) or not _put_name(out, rd.rname, comp):
                        return None
                    out += _U32X5.pack(rd.serial, rd.refresh, rd.retry, rd.expire, rd.minimum)
                elif rdtype == _TXT_T:
                    for text in rd.strings:
                        out.append(len(text))
                        out += text
                elif rdtype == _MX_T:
                    out += _U16.pack(rd.preference)
                    if not _put_name(out, rd.exchange, comp):
                        return None
                elif not _put_name(out, rd.target, comp):  # PTR, CNAME, NS
                    return None
                size = len(out) - at - 2
                out[at] = size >> 8
                out[at + 1] = size & 0xFF
                counts[index] += 1
    if len(out) > 65535:
        return None
    _HEADER_FULL.pack_into(out, 0, msg.id, msg.flags, *counts)
    return bytes(out)


def opt_record(payload: int, ext_rcode: int, do: bool, options: bytes = b"") -> bytes:
    """An OPT pseudo-RR: root owner, version 0, DO as given, the other flags clear."""
    ttl = ((ext_rcode & 0xFF) << 24) | (0x8000 if do else 0)
    return b"\x00" + _RR_FIXED.pack(_OPT_TYPE, payload & 0xFFFF, ttl, len(options)) + options


def header_reply(query: bytes, rcode: int, question: bytes = b"") -> bytes:
    """miekg's reject reply (FORMERR, NOTIMP): the query header with QR set, Z clear, sections dropped."""
    flags2 = query[2] | 0x80
    flags3 = (query[3] & 0xB0) | (rcode & 0x0F)
    qd = 1 if question else 0
    return query[0:2] + bytes((flags2, flags3)) + _U16.pack(qd) + b"\x00\x00\x00\x00\x00\x00" + question


def empty_reply(msg_id: int, opcode: int, flags: int, rcode: int, question: bytes, opt: bytes | None) -> bytes:
    """A server-written reply (CoreDNS `SetRcode` + OPT echo): question copied, RD and CD copied, AA=RA=0.

    `flags` are the query's 16 header flag bits; `question` its first question in wire form (or b"").
    """
    bits = 0x8000 | ((opcode & 0xF) << 11)
    if opcode == 0:
        bits |= flags & 0x0110  # RD, CD
    bits |= rcode & 0x0F
    return _HEADER.pack(msg_id, bits >> 8, bits & 0xFF, 1 if question else 0, 0, 0, 1 if opt else 0) + question + (
        opt or b"")


def badvers_reply(msg_id: int, opcode: int, flags: int) -> bytes:
    """CoreDNS's BADVERS: no question, an OPT of version 0 carrying the extended rcode (16 = 1 << 4)."""
    bits = 0x8000 | ((opcode & 0xF) << 11)
    if opcode == 0:
        bits |= flags & 0x0110
    opt = b"\x00" + _RR_FIXED.pack(_OPT_TYPE, 0, 1 << 24, 0)
    return _HEADER.pack(msg_id, bits >> 8, bits & 0xFF, 0, 0, 0, 1) + opt


class Layout:
    """Record boundaries of a rendered message: where each RR ends, and its OPT RR if any."""

    __slots__ = ("end", "ends", "opt_ext_rcode", "opt_options", "opt_start", "qend", "sections", "tsig")

    def __init__(self, wire: bytes) -> None:
        if len(wire) < 12:
            raise WireError("message shorter than its header")
        _, _, _, qd, an, ns, ar = _HEADER.unpack_from(wire)
        off = 12
        for _ in range(qd):
            off = skip_name(wire, off) + 4
        self.qend = off
        self.ends: list[int] = []
        self.sections: list[int] = []
        self.opt_start = -1
        self.opt_ext_rcode = 0
        self.opt_options = b""
        self.tsig = False
        n = len(wire)
        for section, count in ((0, an), (1, ns), (2, ar)):
            for _ in range(count):
                start = off
                off = skip_name(wire, off)
                if off + 10 > n:
                    raise WireError("truncated resource record")
                rtype, _, ttl, rdlen = _RR_FIXED.unpack_from(wire, off)
                off += 10 + rdlen
                if off > n:
                    raise WireError("truncated rdata")
                if section == 2 and rtype == _OPT_TYPE and self.opt_start < 0:
                    self.opt_start = start
                    self.opt_ext_rcode = ttl >> 24
                    self.opt_options = wire[off - rdlen:off]
                    continue
                if section == 2 and rtype == _TSIG_TYPE:
                    self.tsig = True
                self.ends.append(off)
                self.sections.append(section)
        self.end = off


def fit(wire: bytes, limit: int, opt: bytes | None, layout: Layout | None = None) -> bytes:
    """Make a rendered reply fit the client, as CoreDNS's ScrubWriter (miekg `Truncate`) does.

    The reply's own OPT (if any) is replaced by `opt` (None = no OPT), kept last. If the result exceeds
    `limit` (below 512 counts as 512), records are kept in section order up to the first one that does not fit
    and TC is set. Names are already compressed (dnspython always compresses), and since compression pointers
    only point backwards, a prefix of the records is exactly what a re-render of fewer records would give.
    Messages with TSIG are returned untouched.
    """
    lay = layout if layout is not None else Layout(wire)
    if lay.tsig:
        return wire
    if lay.opt_start >= 0:
        if lay.end != len(wire) or (lay.ends and lay.ends[-1] > lay.opt_start):
            return wire  # OPT not last (cannot happen with dnspython): leave the plugin's message alone
        body = wire[:lay.opt_start]
    else:
        body = wire[:lay.end]
    extra = opt or b""
    records = len(lay.ends)
    an = lay.sections.count(0)
    ns = lay.sections.count(1)
    ar = records - an - ns
    size = max(limit, 512)
    if len(body) + len(extra) <= size:
        header = wire[:10] + _U16.pack(ar + (1 if opt else 0))
        return header + body[12:] + extra
    budget = size - len(extra)
    keep = 0
    last = lay.qend
    for end in lay.ends:
        if end > budget:
            break
        keep += 1
        last = end
    kept = lay.sections[:keep]
    counts = (kept.count(0), kept.count(1), kept.count(2) + (1 if opt else 0))
    flags2 = wire[2] | (TC if keep < records else 0)
    header = wire[0:2] + bytes((flags2, wire[3])) + wire[4:6] + struct.pack("!HHH", *counts)
    return header + body[12:last] + extra


def case_sensitive(reply: bytes, qend: int, lowered_name: bytes) -> bool:
    """True when the reply spells the question name out somewhere after the question (not as a pointer).

    Such a reply would carry the old spelling into a hit with different case, so it is served only to
    queries with identical case. Owners that dnspython compressed to offset 12 follow the question patch.
    """
    if len(lowered_name) <= 1:  # the root name has no letters
        return False
    return reply[qend:].lower().find(lowered_name) >= 0


class CacheEntry:
    """One cached answer: each reply as one bytes object, everything after the 2-byte ID, with the question name
    spelled as the key spells it (lower case, or the exact spelling of a case-sensitive answer). A hit from a
    query spelled that way is `query[:2] + body`; another spelling is patched in (`AnswerCache.lookup`).

    Hits are counted here, and nowhere else on the hot path: `hits` (all), `hits6` (from IPv6 clients). The
    cache folds `hits - folded` into the block's `HitCounter`s when it is scraped and when the entry leaves.
    """

    __slots__ = ("body", "exact", "expires", "folded", "folded6", "hits", "hits6", "info", "memo", "ring", "seen",
                 "tags", "token")

    def __init__(self, bodies: list[bytes], token: ScopeToken, expires: float, exact: bool, info: AnswerInfo,
                 tags: tuple[Sequence[Any] | None, ...] | None = None) -> None:
        self.body = bodies[0]
        self.ring: tuple[bytes, ...] | None = tuple(bodies) if len(bodies) > 1 else None
        self.token = token
        self.expires = expires
        self.exact = exact  # served only to queries spelling the name exactly as the key does
        self.info = info
        self.tags = tags  # hit tags per HitCounter of `info.counters` (same order), None without any
        self.hits = 0  # hit h is served reply h % len(ring): the miss sent reply 0
        self.hits6 = 0
        self.folded = 0
        self.folded6 = 0
        self.seen = 0  # `hits` when the eviction clock last passed (second chance)
        self.memo: dict[Any, Any] | None = None  # for HitObservers (log keeps its line template here)

    def bodies(self) -> tuple[bytes, ...]:
        return self.ring if self.ring is not None else (self.body,)

    def size(self, key: bytes) -> int:
        """What the entry costs, roughly, for the cache's byte bound."""
        return ENTRY_OVERHEAD + len(key) + sum(len(b) for b in self.bodies())


#: Bytes an entry costs besides its key and replies (the entry object, the dict slot, the hit counters).
ENTRY_OVERHEAD = 240


def _served(hits: int, j: int, k: int) -> int:
    """How many of hits 1..`hits` were served reply j of k (hit h is served reply h % k)."""
    return hits // k if j == 0 else (hits + k - j) // k


class AnswerCache:
    """Pre-rendered replies by query key, bounded by entries and bytes, with second-chance (CLOCK) eviction and
    lazy invalidation (a dead `ScopeToken`).

    The server's UDP reader inlines the raw-key half of `lookup`; everything else goes through `lookup`. The
    server also adds the time it spent on hits (`hit_time`, `hit_count`), measured per batch of datagrams.
    """

    def __init__(self, max_entries: int = 100_000, max_bytes: int = 64 << 20, proto: str = "udp") -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.proto = proto
        self.entries: dict[bytes, CacheEntry] = {}
        self.bytes = 0
        self.inserts = 0
        self.evictions = 0
        self.hit_time = 0.0
        self.hit_count = 0
        self._window = (0.0, 0)  # (hit_time, hit_count) at the last `fold_all`
        self._per_hit = 0.0
        self._tally = Tally()
        self.on_error: Callable[[str], None] | None = None  # where a failing HitCounter is reported

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, raw: bytes, v6: bool = False) -> tuple[bytes, CacheEntry] | None:
        """The reply for `raw` (ID and question case patched) and its entry, counted as a hit; None on a miss."""
        entries = self.entries
        key = raw[2:]
        entry = entries.get(key)
        qend = 0
        if entry is None:
            found = cache_key(raw)
            if found is None:
                return None
            key, qend = found
            entry = entries.get(key)
            if entry is None or entry.exact:
                return None
        if not entry.token.live or entry.expires < time.monotonic():
            self.drop(key)
            return None
        h = entry.hits + 1
        entry.hits = h
        if v6:
            entry.hits6 += 1
        ring = entry.ring
        body = entry.body if ring is None else ring[h % len(ring)]
        if qend:
            return raw[:2] + body[:10] + raw[12:qend] + body[qend - 2:], entry
        return raw[:2] + body, entry

    def insert(self, raw: bytes, wires: Iterable[bytes], scope: CacheScope, max_age: float, info: AnswerInfo,
               generation: int | None = None, tags: Mapping[Any, Sequence[Any]] | None = None) -> bool:
        """Store the replies sent for query `raw` (first = the one just sent); False when not cacheable.

        `generation` is the scope's generation when the answer was computed: if the scope changed since, the
        answer is already stale and is not stored.
        """
        found = cache_key(raw)
        if found is None or max_age <= 0:
            return False
        if generation is not None and generation != scope.generation:
            return False
        key, qend = found
        if plain_name_end(raw, 12) != qend:
            return False
        name = raw[12:qend]
        lowered = name.lower()
        wire_list = list(wires)
        exact = False
        for wire in wire_list:
            if len(wire) < qend + 4 or wire[12:qend].lower() != lowered or wire[qend:qend + 4] != raw[qend:qend + 4]:
                return False  # the reply's question is not the query's: cannot patch
            if wire[4:6] != b"\x00\x01":
                return False
            if not exact and case_sensitive(wire, qend + 4, lowered):
                exact = True
        spelled = lowered
        if exact and name != lowered:  # kept under the query's own spelling, served to that spelling only
            key = raw[2:]
            spelled = name
        bodies = [wire[2:12] + spelled + wire[qend:] for wire in wire_list]
        selected: tuple[Sequence[Any] | None, ...] | None = None
        if tags and info.counters:
            selected = tuple(tags.get(c) or None for c in info.counters)
            if not any(selected):
                selected = None
        entry = CacheEntry(bodies, scope.token, time.monotonic() + max_age, exact, info, selected)
        entries = self.entries
        if key in entries:
            self.drop(key)
        size = entry.size(key)
        while entries and (len(entries) >= self.max_entries or self.bytes + size > self.max_bytes):
            self._evict()
        entries[key] = entry
        self.bytes += size
        self.inserts += 1
        return True

    def drop(self, key: bytes) -> None:
        """Remove an entry, folding its hits first."""
        entry = self.entries.pop(key, None)
        if entry is not None:
            if entry.hits != entry.folded:
                self.fold(key, entry)
            self.bytes -= entry.size(key)

    def _evict(self) -> None:
        """Second chance: entries hit since the clock last passed go to the back, the first cold one goes."""
        entries = self.entries
        for _ in range(len(entries) + 1):
            key = next(iter(entries))
            entry = entries[key]
            if entry.hits != entry.seen and entry.token.live:
                entry.seen = entry.hits
                del entries[key]
                entries[key] = entry
                continue
            self.drop(key)
            self.evictions += 1
            return

    def clear(self) -> None:
        self.fold_all()
        self.entries.clear()
        self.bytes = 0

    # -- lazy metrics ---------------------------------------------------------------------------------------
    def fold(self, key: bytes, entry: CacheEntry) -> None:
        """Hand the entry's hits since its last fold to its block's HitCounters (see `plugin.Tally`)."""
        hits, folded = entry.hits, entry.folded
        entry.folded = hits
        v6 = entry.hits6 - entry.folded6
        entry.folded6 = entry.hits6
        counters = entry.info.counters
        if not counters or hits == folded:
            return
        t = self._tally
        ring = entry.ring
        if ring is None:
            t.counts = [hits - folded]
            t.sizes = (len(entry.body) + 2,)
        else:
            k = len(ring)
            t.counts = [_served(hits, j, k) - _served(folded, j, k) for j in range(k)]
            t.sizes = tuple(len(b) + 2 for b in ring)
        t.info = entry.info
        t.proto = self.proto
        t.total = hits - folded
        t.v6 = v6
        t.query_size = len(key) + 2
        t.seconds = t.total * self._average()
        tags = entry.tags
        for i, counter in enumerate(counters):
            t.tags = tags[i] if tags is not None else None
            try:
                counter.fold(t)
            except Exception as exc:  # a metric must not take the cache down
                if self.on_error is not None:
                    self.on_error(f"hit counter {type(counter).__name__} failed: {exc!r}")

    def _average(self) -> float:
        """Seconds per hit over the hits since the last `fold_all` (the last window's average when none)."""
        time0, count0 = self._window
        count = self.hit_count - count0
        if count > 0:
            return max(0.0, self.hit_time - time0) / count
        return self._per_hit

    def fold_all(self) -> None:
        """Fold every entry with new hits (a scrape), and drop entries whose scope was invalidated."""
        dead: list[bytes] = []
        fold = self.fold
        for key, entry in self.entries.items():
            if entry.hits != entry.folded:
                fold(key, entry)
            if not entry.token.live:
                dead.append(key)
        for key in dead:
            self.drop(key)
        if self.hit_count > self._window[1]:
            self._per_hit = self._average()
        self._window = (self.hit_time, self.hit_count)
