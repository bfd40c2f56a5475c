"""`whoami`: answers every query with the client's address and port (CoreDNS's default-Corefile plugin).

The answer depends on the client, so it is never cached.
"""

from __future__ import annotations

import ipaddress
import struct

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from submariner.lighthouse.dns.plugin import Controller, Handler, Request, Result, Wrapper, reply_for

NAME = "whoami"
ONCE = False
SYNC_SAFE = True  # the handler needs no task context (see plugin.py)

_SRV_HEAD = struct.Struct("!HHH")


def setup(c: Controller) -> Wrapper:
    for d in c.directives:
        if d.args:
            raise d.arg_error(d.args[0])
        if d.block:
            raise d.arg_error("{")

    def wrap(next_handler: Handler) -> Handler:
        return serve

    return wrap


async def serve(req: Request) -> Result:
    reply = reply_for(req)
    qname = req.qname
    qclass = dns.rdataclass.RdataClass.make(req.qclass)
    host, port = req.remote
    ip = ipaddress.ip_address(host.split("%")[0])
    rdtype = dns.rdatatype.A if ip.version == 4 else dns.rdatatype.AAAA
    address = dns.rrset.RRset(qname, qclass, rdtype)
    address.add(dns.rdata.GenericRdata(qclass, rdtype, ip.packed), 0)
    proto = b"_" + req.proto.encode()
    try:
        srv_name = dns.name.Name((proto, *qname.labels))
    except dns.name.NameTooLong:
        return Result(2, error=f"plugin/whoami: _{req.proto}.{qname} is too long")
    srv = dns.rrset.RRset(srv_name, qclass, dns.rdatatype.SRV)
    srv.add(dns.rdata.GenericRdata(qclass, dns.rdatatype.SRV, _SRV_HEAD.pack(0, 0, port) + b"\x00"), 0)
    reply.additional = [address, srv]
    return Result(0, reply, plugin=NAME)
