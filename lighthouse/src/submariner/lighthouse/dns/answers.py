"""Wire-level answers: the question key read straight from query bytes, fitting a reply to the client (OPT
echo, truncation) and the answer cache that serves repeated questions without dnspython.

Everything here works on bytes: the hot path of the server must not build message objects. A cached reply is
stored exactly as it was sent for one query; a later query with the same key differs only in its ID, in the
letter case of the question name, and (never, since the flags are part of the key) in its header bits, so a
hit is "copy, patch ID, patch question case, send".
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from submariner.lighthouse.dns.plugin import AnswerInfo, CacheScope, FastPathObserver

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
    msg.question = [dns.rrset.RRset(name, dns.rdataclass.RdataClass.make(rdclass),
                                    dns.rdatatype.RdataType.make(rdtype))]
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


_U16X2 = struct.Struct("!HH")


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
    """One cached answer: each reply split around the question name (header tail, everything after the name),
    so a hit is one join of the query's ID, those bytes and the query's own spelling of the name."""

    __slots__ = ("exact", "expires", "gen", "idx", "info", "observers", "parts", "ring", "scope", "used")

    def __init__(self, wires: list[bytes], qend: int, scope: CacheScope, expires: float, exact: bytes | None,
                 info: AnswerInfo, observers: tuple[FastPathObserver, ...], generation: int | None = None) -> None:
        split = [(wire[2:12], wire[qend:]) for wire in wires]
        self.parts = split[0]
        self.ring: list[tuple[bytes, bytes]] | None = split if len(split) > 1 else None
        self.idx = 1 % len(split)
        self.scope = scope
        self.gen = scope.generation if generation is None else generation
        self.expires = expires
        self.exact = exact
        self.info = info
        self.observers = observers
        self.used = False

    def next_parts(self) -> tuple[bytes, bytes]:
        """The next reply in turn (variants rotate: the first was already sent by the miss)."""
        ring = self.ring
        if ring is None:
            return self.parts
        i = self.idx
        self.idx = (i + 1) % len(ring)
        return ring[i]


class AnswerCache:
    """Pre-rendered replies by `cache_key`, bounded, with second-chance (CLOCK) eviction and lazy invalidation."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self.entries: dict[bytes, CacheEntry] = {}
        self.inserts = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, raw: bytes) -> tuple[bytes, CacheEntry] | None:
        """The reply for `raw` (ID and question case patched) and its entry; None on a miss.

        The server inlines this logic on its UDP hot path; this is the readable reference and the TCP path.
        """
        found = cache_key(raw)
        if found is None:
            return None
        key, qend = found
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.gen != entry.scope.generation or entry.expires < time.monotonic():
            del self.entries[key]
            return None
        if entry.exact is not None and raw[12:qend] != entry.exact:
            return None
        mid, tail = entry.next_parts()
        entry.used = True
        return b"".join((raw[:2], mid, raw[12:qend], tail)), entry

    def insert(self, raw: bytes, wires: Iterable[bytes], scope: CacheScope, max_age: float, info: AnswerInfo,
               observers: tuple[FastPathObserver, ...], generation: int | None = None) -> bool:
        """Store the replies sent for query `raw` (first = the one just sent); False when not cacheable."""
        found = cache_key(raw)
        if found is None or max_age <= 0:
            return False
        key, qend = found
        if plain_name_end(raw, 12) != qend:
            return False
        lowered = raw[12:qend].lower()
        wire_list = list(wires)
        exact: bytes | None = None
        for wire in wire_list:
            if len(wire) < qend + 4 or wire[12:qend].lower() != lowered or wire[qend:qend + 4] != raw[qend:qend + 4]:
                return False  # the reply's question is not the query's: cannot patch
            if wire[4:6] != b"\x00\x01":
                return False
            if exact is None and case_sensitive(wire, qend + 4, lowered):
                exact = raw[12:qend]
        entries = self.entries
        if key not in entries and len(entries) >= self.max_entries:
            self._evict()
        entries[key] = CacheEntry(wire_list, qend, scope, time.monotonic() + max_age, exact, info, observers,
                                  generation)
        self.inserts += 1
        return True

    def _evict(self) -> None:
        """Second chance: entries hit since they were last looked at go to the back, the first cold one goes."""
        entries = self.entries
        for _ in range(len(entries) + 1):
            key = next(iter(entries))
            entry = entries.pop(key)
            if entry.used and entry.gen == entry.scope.generation:
                entry.used = False
                entries[key] = entry
                continue
            self.evictions += 1
            return

    def clear(self) -> None:
        self.entries.clear()
