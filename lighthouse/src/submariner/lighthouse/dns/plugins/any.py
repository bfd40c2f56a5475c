"""`any`: RFC 8482 minimal answer to QTYPE=ANY; every other query goes to the next plugin."""

from __future__ import annotations

import dns.message
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from submariner.lighthouse.dns.plugin import CachePolicy, CacheScope, Controller, Handler, Request, Result, Wrapper

NAME = "any"
ONCE = False
SYNC_SAFE = True  # the handler needs no task context (see plugin.py)

_HINFO = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.HINFO, '"ANY obsoleted" "See RFC 8482"')
#: The answer depends on the question only: cache it until the process ends.
SCOPE = CacheScope(NAME)


def setup(c: Controller) -> Wrapper:
    for d in c.directives:
        if d.args:
            raise d.arg_error(d.args[0])
        if d.block:
            raise d.arg_error("{")

    def wrap(next_handler: Handler) -> Handler:
        async def serve(req: Request) -> Result:
            if req.qtype != dns.rdatatype.ANY:
                return await next_handler(req)
            reply = dns.message.make_response(req.msg, recursion_available=False)
            reply.use_edns(False)
            rrset = dns.rrset.RRset(req.qname, dns.rdataclass.IN, dns.rdatatype.HINFO)
            rrset.add(_HINFO, 8482)
            reply.answer.append(rrset)
            return Result(0, reply, plugin=NAME, cache=CachePolicy(SCOPE))

        return serve

    return wrap
