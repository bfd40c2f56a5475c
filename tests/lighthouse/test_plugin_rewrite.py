"""`rewrite` plugin: request rules, response mapping, question restore, cache pass-through, setup errors."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from submariner.lighthouse.dns import corefile
from submariner.lighthouse.dns.config import build_configs
from submariner.lighthouse.dns.plugin import (
    SUPPORTED_EDNS_OPTIONS,
    CachePolicy,
    CacheScope,
    Controller,
    Request,
    Result,
    SetupError,
)
from submariner.lighthouse.dns.plugins import rewrite
from submariner.lighthouse.dns.process import ProcessState

SCOPE = CacheScope("inner")


def a_record(q: dns.message.Message) -> dns.message.Message:
    r = dns.message.make_response(q)
    r.use_edns(False)  # as plugin.reply_for: the server echoes the client's OPT
    r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "192.0.2.1"))
    return r


class Inner:
    """Answers with `build` for the question it receives; remembers the requests it saw."""

    def __init__(self, build: Callable[[dns.message.Message], dns.message.Message | None] = a_record,
                 cache: bool = True) -> None:
        self.build = build
        self.cache = cache
        self.seen: list[Request] = []

    async def __call__(self, req: Request) -> Result:
        self.seen.append(req)
        assert dns.message.from_wire(req.wire).question == req.msg.question  # wire kept in step with msg
        msg = self.build(req.msg)
        if msg is None:
            return Result(dns.rcode.SERVFAIL, error="upstream down")
        return Result(0, msg, plugin="inner", cache=CachePolicy(SCOPE) if self.cache else None)


def request(name: str, rdtype: str = "A", *, rdclass: str = "IN", edns: bool = False) -> Request:
    q = dns.message.make_query(name, rdtype, rdclass, use_edns=0 if edns else None)
    wire = q.to_wire()
    return Request(msg=dns.message.from_wire(wire), wire=wire, remote=("192.0.2.77", 40000),
                   local=("127.0.0.1", 53), proto="udp", server="dns://:53", zone=".", max_size=512,
                   start=time.perf_counter())


def harness(rules: str, inner: Inner | None = None) -> tuple[Callable[[Request], object], Inner]:
    cfg = build_configs(corefile.parse(f".:53 {{\n{rules}\n}}\n"), 53)[0]
    c = Controller([d for d in cfg.directives if d.name == rewrite.NAME], cfg.keys, "dns://:53",
                   ProcessState(out=io.StringIO()))
    inner = inner or Inner()
    return rewrite.setup(c)(inner), inner


async def ask(handler: Callable[[Request], object], req: Request) -> Result:
    res = await handler(req)  # type: ignore[misc]
    assert isinstance(res, Result)
    return res


def answer(res: Result, section: str = "answer") -> list[str]:
    assert res.msg is not None
    return [rr.to_text() for rr in getattr(res.msg, section)]


# -- name rules ----------------------------------------------------------------------------------------------------


async def test_exact_name_rewrites_question_and_maps_answer_back() -> None:
    handler, inner = harness("rewrite name a.example.org b.example.net")
    req = request("A.Example.org.")
    res = await ask(handler, req)
    assert inner.seen[0].name_lower == "b.example.net."
    assert res.msg is not None and res.msg.question == req.msg.question  # original, original case
    assert answer(res) == ["a.example.org. 300 IN A 192.0.2.1"]
    assert res.plugin == "inner" and res.cache is not None and res.cache.scope is SCOPE
    assert req.msg.question[0].name.to_text() == "A.Example.org."  # the server's message is untouched


async def test_regex_with_answer_name() -> None:
    rules = ("rewrite stop {\n name regex (.*)-(us-west-1)\\.example\\.org {1}.service.{2}.consul\n"
             " answer name (.*)\\.service\\.(us-west-1)\\.consul {1}-{2}.example.org\n}")
    handler, inner = harness(rules)
    res = await ask(handler, request("ftp-us-west-1.example.org."))
    assert inner.seen[0].name_lower == "ftp.service.us-west-1.consul."
    assert answer(res) == ["ftp-us-west-1.example.org. 300 IN A 192.0.2.1"]


async def test_suffix_answer_auto_and_value() -> None:
    def srv(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "SRV", "0 0 80 web.service.consul."))
        r.additional.append(dns.rrset.from_text("web.service.consul.", 60, "IN", "A", "192.0.2.2"))
        return r

    handler, inner = harness("rewrite name suffix .example.org .service.consul answer auto", Inner(srv))
    res = await ask(handler, request("_http._tcp.web.example.org.", "SRV"))
    assert inner.seen[0].name_lower == "_http._tcp.web.service.consul."
    assert answer(res) == ["_http._tcp.web.example.org. 60 IN SRV 0 0 80 web.example.org."]
    assert answer(res, "additional") == ["web.example.org. 60 IN A 192.0.2.2"]
    handler, _ = harness("rewrite name regex (.*)\\.example\\.org {1}.service.consul "
                         "answer auto answer value (.*)\\.service\\.consul {1}.internal", Inner(srv))
    res = await ask(handler, request("_http._tcp.web.example.org.", "SRV"))
    assert answer(res) == ["_http._tcp.web.example.org. 60 IN SRV 0 0 80 web.internal."]


async def test_prefix_and_substring_without_answer_rules_keep_owner_but_restore_question() -> None:
    handler, inner = harness("rewrite name prefix www. web.")
    req = request("www.example.org.")
    res = await ask(handler, req)
    assert inner.seen[0].name_lower == "web.example.org."
    assert res.msg is not None and res.msg.question == req.msg.question
    assert answer(res) == ["web.example.org. 300 IN A 192.0.2.1"]
    handler, inner = harness("rewrite name substring us-west-1.example.org us-west-1.consul")
    await ask(handler, request("ftp.service.us-west-1.example.org."))
    assert inner.seen[0].name_lower == "ftp.service.us-west-1.consul."


async def test_invalid_name_after_rewrite_is_servfail() -> None:
    handler, inner = harness("rewrite name regex (.*)\\.example\\.org " + "x" * 70 + ".{1}.org")
    res = await ask(handler, request("a.example.org."))
    assert res.msg is None and res.rcode == dns.rcode.SERVFAIL and not inner.seen
    assert res.error is not None and res.error.startswith("invalid name after rewrite: " + "x" * 70)


async def test_no_match_passes_through_untouched() -> None:
    handler, inner = harness("rewrite name a.example.org b.example.org")
    req = request("c.example.org.")
    res = await ask(handler, req)
    assert inner.seen == [req] and res.plugin == "inner"


# -- other request rules --------------------------------------------------------------------------------------------


async def test_type_and_class_rules() -> None:
    def hinfo(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "HINFO", '"ANY obsoleted" "See RFC 8482"'))
        return r

    handler, inner = harness("rewrite type ANY HINFO", Inner(hinfo))
    req = request("example.org.", "ANY")
    res = await ask(handler, req)
    assert inner.seen[0].qtype == dns.rdatatype.HINFO
    assert res.msg is not None and res.msg.question[0].rdtype == dns.rdatatype.ANY and len(res.msg.answer) == 1
    handler, inner = harness("rewrite class CH IN")
    await ask(handler, request("example.org.", rdclass="CH"))
    assert inner.seen[0].qclass == dns.rdataclass.IN


async def test_stop_and_continue() -> None:
    handler, inner = harness("rewrite continue name a.example.org b.example.org\n"
                             "rewrite name b.example.org c.example.org\n"
                             "rewrite name c.example.org d.example.org")
    res = await ask(handler, request("a.example.org."))
    assert inner.seen[0].name_lower == "c.example.org."  # the third rule is not reached after a stop
    assert answer(res) == ["a.example.org. 300 IN A 192.0.2.1"]  # both exact rules map back, in reverse


async def test_ttl_rule_clamps_response_ttls() -> None:
    handler, _ = harness("rewrite ttl example.org 15")
    assert answer(await ask(handler, request("example.org."))) == ["example.org. 15 IN A 192.0.2.1"]
    handler, _ = harness("rewrite continue ttl regex (.*)\\.example\\.org 400-")
    assert answer(await ask(handler, request("www.example.org."))) == ["www.example.org. 400 IN A 192.0.2.1"]
    handler, _ = harness("rewrite ttl suffix example.org -100")
    assert answer(await ask(handler, request("www.example.org."))) == ["www.example.org. 100 IN A 192.0.2.1"]


async def test_rcode_rule() -> None:
    def nx(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.set_rcode(dns.rcode.NXDOMAIN)
        r.authority.append(dns.rrset.from_text("example.org.", 60, "IN", "SOA",
                                               "ns.example.org. h.example.org. 1 2 3 4 5"))
        return r

    handler, _ = harness("rewrite rcode exact nope.example.org NXDOMAIN NOERROR", Inner(nx))
    res = await ask(handler, request("nope.example.org."))
    assert res.msg is not None and res.msg.rcode() == dns.rcode.NOERROR
    handler, _ = harness("rewrite rcode other.example.org 3 0", Inner(nx))
    res = await ask(handler, request("nope.example.org."))
    assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN


async def test_edns0_local_set_append_replace_unset_and_echo() -> None:
    code = 0xFFEE
    handler, inner = harness("rewrite edns0 local set 0xffee 0x61626364")
    assert code in SUPPORTED_EDNS_OPTIONS
    res = await ask(handler, request("example.org.", edns=True))
    sent = inner.seen[0].msg
    assert [(int(o.otype), o.to_wire()) for o in sent.options] == [(code, b"abcd")]
    assert res.msg is not None and [int(o.otype) for o in res.msg.options] == [code]  # echoed back
    assert res.cache is not None  # deterministic for the question
    handler, inner = harness("rewrite edns0 local set 0xffee abcd", Inner(dns.message.make_response))
    res = await ask(handler, request("example.org.", edns=True))
    assert res.msg is not None and res.msg.edns == 0 and res.msg.options == ()  # the reply's own OPT stands

    handler, inner = harness("rewrite edns0 local append 0xffee xyz")
    q = dns.message.make_query("example.org.", "A", use_edns=0,
                               options=[dns.edns.GenericOption(dns.edns.OptionType.make(code), b"old")])
    wire = q.to_wire()
    req = Request(msg=dns.message.from_wire(wire), wire=wire, remote=("192.0.2.77", 1), local=("127.0.0.1", 53),
                  proto="udp", server="dns://:53", zone=".", max_size=512)
    await ask(handler, req)
    assert inner.seen == [req]  # append with the option present: no rule applied, the query passes as is
    handler, inner = harness("rewrite edns0 local unset 0xffee")
    await ask(handler, req)
    assert inner.seen[0].msg.options == ()
    handler, inner = harness("rewrite edns0 local replace 0xffee new")
    plain = request("example.org.")
    await ask(handler, plain)
    assert inner.seen == [plain]  # replace adds nothing


async def test_client_dependent_edns0_rules_are_not_wire_cacheable() -> None:
    handler, inner = harness("rewrite edns0 local set 0xffed {client_ip}")
    res = await ask(handler, request("example.org.", edns=True))
    assert inner.seen[0].msg.options[0].to_wire() == bytes([192, 0, 2, 77]) and res.cache is None
    handler, inner = harness("rewrite edns0 subnet set 24 56")
    res = await ask(handler, request("example.org.", edns=True))
    (ecs,) = inner.seen[0].msg.options
    assert isinstance(ecs, dns.edns.ECSOption) and ecs.to_text() == "ECS 192.0.2.0/24 scope/0" and res.cache is None


async def test_nothing_written_downstream_rewrite_writes_the_error() -> None:
    handler, _ = harness("rewrite name a.example.org b.example.org", Inner(lambda q: None))
    req = request("a.example.org.")
    res = await ask(handler, req)
    assert res.msg is not None and res.msg.rcode() == dns.rcode.SERVFAIL and res.error == "upstream down"
    assert res.msg.question == req.msg.question and not res.msg.flags & dns.flags.AA


async def test_variants_are_mapped_back_and_hooks_reach_the_server() -> None:
    class Rotating(Inner):
        async def __call__(self, req: Request) -> Result:
            req.after_reply(lambda r, res, wire: None)
            first = a_record(req.msg)
            second = a_record(req.msg)
            second.answer[0] = dns.rrset.from_text(req.msg.question[0].name, 300, "IN", "A", "192.0.2.9")
            return Result(0, first, plugin="inner", cache=CachePolicy(SCOPE, 30, [second]))

    handler, _ = harness("rewrite name a.example.org b.example.org", Rotating())
    req = request("a.example.org.")
    res = await ask(handler, req)
    assert res.cache is not None and res.cache.variants is not None and res.cache.max_age == 30
    (variant,) = res.cache.variants
    assert [r.to_text() for r in variant.answer] == ["a.example.org. 300 IN A 192.0.2.9"]
    assert variant.question == req.msg.question
    assert req.hooks is not None and len(req.hooks) == 1


# -- setup ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "message"), [
    ("rewrite name a", "plugin/rewrite: too few arguments for a name rule"),
    ("rewrite foo a b", 'plugin/rewrite: invalid rule type "foo"'),
    ("rewrite stop", "plugin/rewrite: stop rule must begin with a rule type"),
    ("rewrite answer name a b", "plugin/rewrite: response rewrites must begin with a name rule"),
    ("rewrite type A", "plugin/rewrite: type rules must have exactly two arguments"),
    ("rewrite type A BOGUS", 'plugin/rewrite: invalid type "BOGUS"'),
    ("rewrite class IN XX", 'plugin/rewrite: invalid class "XX"'),
    ("rewrite name fuzzy a b", "plugin/rewrite: name rule supports only exact, prefix, suffix, substring, and regex "
                               "name matching, received: fuzzy"),
    ("rewrite name regex ( b", "plugin/rewrite: invalid regex matching pattern: ("),
    ("rewrite name regex (a) {1}{2}", "plugin/rewrite: the rewrite regex pattern ({1}{2}) uses more subexpressions "
                                      "than its corresponding matching regex pattern ((a))"),
    ("rewrite name regex (a) b answer bogus x y", 'plugin/rewrite: invalid type "bogus" for answer rule for regex '
                                                  "rule"),
    ("rewrite name regex (a) b answer auto answer name x y",
     "plugin/rewrite: auto name answer rule cannot be combined with explicit name anwer rules"),
    ("rewrite name regex (a) b extra", "plugin/rewrite: invalid arguments for regex rule"),
    ("rewrite ttl example.org x", "plugin/rewrite: invalid TTL 'x' for a ttl rule"),
    ("rewrite ttl example.org 10-5", "plugin/rewrite: invalid TTL '10-5' for a ttl rule"),
    ("rewrite rcode a.org BOGUS NOERROR", "plugin/rewrite: invalid RCODE 'BOGUS' or 'NOERROR' for a rcode rule"),
    ("rewrite edns0 local set 0xffee", "plugin/rewrite: EDNS0 local rules require exactly three args"),
    ("rewrite edns0 local add 1 x", 'plugin/rewrite: invalid action: "add"'),
    ("rewrite edns0 local set 1 {bogus}", 'plugin/rewrite: unsupported variable name "{bogus}"'),
    ("rewrite edns0 nsid set x", "plugin/rewrite: EDNS0 NSID rules do not accept args"),
    ("rewrite edns0 subnet set 33 56", "plugin/rewrite: invalid IPv4 bit mask length 33"),
    ("rewrite cname exact a b", "plugin/rewrite: the cname rule is not supported by lighthouse-dns"),
])
def test_setup_errors(rule: str, message: str) -> None:
    with pytest.raises(SetupError) as err:
        harness(rule)
    assert str(err.value) == message
