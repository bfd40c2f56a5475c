"""`answers.render`: the server's fast renderer gives the messages dnspython would (same records, compressed the
same way, same size), and declines what it does not handle."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdatatype
import dns.rrset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from submariner.lighthouse.dns import answers

ZONE = "clusterset.local."


def sections(msg: dns.message.Message) -> list[list[tuple[str, int, frozenset[str]]]]:
    return [[(rrset.name.to_text().lower(), rrset.ttl, frozenset(rd.to_text().lower() for rd in rrset))
             for rrset in section] for section in msg.sections]


def reply(qname: str, qtype: str) -> dns.message.Message:
    q = dns.message.make_query(qname, qtype)
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AA
    return r


def same_as_dnspython(msg: dns.message.Message) -> bytes:
    fast = answers.render(msg)
    assert fast is not None
    slow = msg.to_wire()
    assert len(fast) == len(slow)  # same compression
    a, b = dns.message.from_wire(fast), dns.message.from_wire(slow)
    assert (a.id, a.flags, sections(a)) == (b.id, b.flags, sections(b))
    return fast


def test_lighthouse_shapes() -> None:
    name = f"nginx.default.svc.{ZONE}"
    r = reply(name, "A")
    r.answer.append(dns.rrset.from_text(name, 5, "IN", "A", "10.1.0.10", "10.2.0.10"))
    wire = same_as_dnspython(r)
    assert wire.count(b"\xc0\x0c") == 2  # owners point at the question
    r = reply(name.upper(), "AAAA")
    r.answer.append(dns.rrset.from_text(name.upper(), 5, "IN", "AAAA", "fd00::1"))
    same_as_dnspython(r)
    r = reply(f"_http._tcp.{name}", "SRV")
    r.answer.append(dns.rrset.from_text(f"_http._tcp.{name}", 5, "IN", "SRV", f"0 50 80 {name}",
                                        f"0 50 443 c1.{name}"))
    r.additional.append(dns.rrset.from_text(name, 5, "IN", "A", "10.1.0.10"))
    same_as_dnspython(r)
    r = reply(f"missing.default.svc.{ZONE}", "A")
    r.set_rcode(3)
    soa = f"ns.dns.{ZONE} hostmaster.{ZONE} 1 7200 1800 86400 5"
    r.authority.append(dns.rrset.from_text(ZONE, 5, "IN", "SOA", soa))
    same_as_dnspython(r)
    r = reply("www.example.org.", "A")  # whoami's generic rdata
    r.additional.append(dns.rrset.RRset(dns.name.from_text("www.example.org."), 1, 1))
    r.additional[0].add(dns.rdata.GenericRdata(1, 1, bytes([127, 0, 0, 1])), 0)
    same_as_dnspython(r)
    r = reply("10.0.1.10.in-addr.arpa.", "PTR")
    r.answer.append(dns.rrset.from_text("10.0.1.10.in-addr.arpa.", 5, "IN", "PTR", name))
    same_as_dnspython(r)
    r = reply(f"dns-version.{ZONE}", "TXT")
    r.answer.append(dns.rrset.from_text(f"dns-version.{ZONE}", 5, "IN", "TXT", '"1.0.0"', '"a" "b"'))
    same_as_dnspython(r)
    r = reply("www.example.org.", "MX")
    r.answer.append(dns.rrset.from_text("www.example.org.", 60, "IN", "CNAME", "Web.Example.ORG."))
    r.answer.append(dns.rrset.from_text("web.example.org.", 60, "IN", "MX", "10 mail.example.org."))
    r.authority.append(dns.rrset.from_text("example.org.", 60, "IN", "NS", "ns1.example.org."))
    same_as_dnspython(r)


def test_declines_what_it_does_not_render() -> None:
    r = reply("example.org.", "HINFO")
    r.answer.append(dns.rrset.from_text("example.org.", 5, "IN", "HINFO", '"cpu" "os"'))
    assert answers.render(r) is None
    r = reply("example.org.", "A")
    r.use_edns(0, 0, 1232, options=[dns.edns.GenericOption(65001, b"x")])
    assert answers.render(r) is None
    r = reply("example.org.", "A")
    r.answer.append(dns.rrset.RRset(dns.name.from_text("example.org."), 1, 1))  # empty rrset (updates)
    assert answers.render(r) is None
    r = reply("example.org.", "A")
    r.question = []
    assert answers.render(r) is None


LABEL = st.text(alphabet="abcXYZ-09", min_size=1, max_size=8)
NAME = st.lists(LABEL, min_size=1, max_size=5).map(lambda ls: ".".join(ls) + "." + ZONE)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(qname=NAME, owners=st.lists(NAME, max_size=4), targets=st.lists(NAME, max_size=4),
       ips=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4), soa=st.booleans())
def test_random_messages_match_dnspython(qname: str, owners: list[str], targets: list[str], ips: list[int],
                                         soa: bool) -> None:
    r = reply(qname, "SRV")
    addresses = [".".join(str(ip >> s & 255) for s in (24, 16, 8, 0)) for ip in ips]
    r.answer.append(dns.rrset.from_text(qname, 5, "IN", "A", *addresses))
    for i, owner in enumerate(owners):
        r.answer.append(dns.rrset.from_text(owner, 5, "IN", "SRV", *(f"0 50 {80 + i} {t}" for t in targets or [qname])))
        target = targets[i % len(targets)] if targets else qname
        r.additional.append(dns.rrset.from_text(owner, 5, "IN", "CNAME", target))
    if soa:
        r.authority.append(dns.rrset.from_text(ZONE, 5, "IN", "SOA", f"ns.dns.{ZONE} hostmaster.{ZONE} 1 2 3 4 5"))
    same_as_dnspython(r)


def test_long_answers_fall_back_above_65535() -> None:
    r = reply("big.example.org.", "A")
    r.answer.append(dns.rrset.from_text("big.example.org.", 5, "IN", "A",
                                        *[f"10.{i >> 8 & 255}.{i & 255}.1" for i in range(5000)]))
    assert answers.render(r) is None


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=12), min_size=0, max_size=6))
def test_name_text_is_dnspythons_lower_case_text(labels: list[bytes]) -> None:
    from submariner.lighthouse.dns.plugin import name_text

    name = dns.name.Name([*labels, b""])
    assert name_text(name) == name.to_text().lower()
