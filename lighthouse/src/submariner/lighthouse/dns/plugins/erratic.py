"""`erratic`: a test helper that drops, delays or truncates replies by query number (CoreDNS semantics).

Its answers depend on a counter, so none is cached. Ready only while its counter is 3 or 4, to exercise
`/ready` flipping.
"""

from __future__ import annotations

import asyncio

import dns.flags
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from submariner.lighthouse.dns.plugin import (
    Controller,
    Directive,
    Handler,
    Request,
    Result,
    Wrapper,
    parse_duration,
    reply_for,
)

NAME = "erratic"
ONCE = False
SYNC_SAFE = True  # the handler needs no task context (see plugin.py)

_A = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.A, "192.0.2.53")
_AAAA = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.AAAA, "2001:db8::53")
_SERVFAIL = 2


class Erratic:
    def __init__(self) -> None:
        self.q = 0
        self.drop = 2
        self.delay = 0
        self.truncate = 0
        self.duration = 0.1
        self.large = False

    def ready(self) -> bool:
        return 3 <= self.q < 5

    async def serve(self, req: Request) -> Result:
        nr = self.q
        self.q += 1
        drop = self.drop > 0 and nr % self.drop == 0
        delay = self.delay > 0 and nr % self.delay == 0
        trunc = self.truncate > 0 and nr & self.truncate == 0  # sic: CoreDNS tests bits, not the remainder
        qtype = req.qtype
        if qtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
            if drop:
                return Result(0, plugin=NAME)
            if delay:
                await asyncio.sleep(self.duration)
            return Result(_SERVFAIL)
        reply = reply_for(req)
        if trunc:
            reply.flags |= dns.flags.TC
        if qtype == dns.rdatatype.A:
            copies = 30 if self.large else 1
            for _ in range(copies):  # separate RRsets: identical records are not merged, as in miekg/dns
                rrset = dns.rrset.RRset(req.qname, dns.rdataclass.IN, dns.rdatatype.A)
                rrset.add(_A, 0)
                reply.answer.append(rrset)
        else:
            rrset = dns.rrset.RRset(req.qname, dns.rdataclass.IN, dns.rdatatype.AAAA)
            rrset.add(_AAAA, 0)
            reply.answer.append(rrset)
        if drop:
            return Result(0, plugin=NAME)
        if delay:
            await asyncio.sleep(self.duration)
        return Result(0, reply, plugin=NAME)


def _amount(d: Directive, prop: list[str], line: int, default: int) -> int:
    if len(prop) == 1:
        return default
    try:
        value = int(prop[1])
    except ValueError:
        raise d.error(f'strconv.ParseInt: parsing "{prop[1]}": invalid syntax', line) from None
    if value < 0:
        raise d.error(f'illegal amount value given "{prop[1]}"', line)
    return value


def parse(directives: list[Directive]) -> Erratic:
    e = Erratic()
    seen_drop = False
    for d in directives:
        if d.args:
            raise d.arg_error(d.args[0])
        for i, prop in enumerate(d.block):
            line = d.block_line(i)
            key = prop[0]
            if key == "drop":
                if len(prop) > 2:
                    raise d.arg_error(prop[-1], line)
                e.drop = _amount(d, prop, line, 2)
                seen_drop = True
            elif key == "delay":
                if len(prop) > 3:
                    raise d.arg_error(prop[-1], line)
                e.delay = _amount(d, prop, line, 2)
                e.duration = 0.1
                if len(prop) > 2:
                    try:
                        e.duration = parse_duration(prop[2])
                    except ValueError as exc:
                        raise d.error(str(exc), line) from None
            elif key == "truncate":
                if len(prop) > 2:
                    raise d.arg_error(prop[-1], line)
                e.truncate = _amount(d, prop, line, 2)
            elif key == "large":
                e.large = True
            else:
                raise d.error(f"unknown property '{key}'", line)
    if (e.delay > 0 or e.truncate > 0) and not seen_drop:
        e.drop = 0
    return e


def setup(c: Controller) -> Wrapper:
    e = parse(c.directives)
    c.register_ready(NAME, e.ready)

    def wrap(next_handler: Handler) -> Handler:
        return e.serve

    return wrap
