"""The listener: CoreDNS's server-generated rcodes (spec §2.3), OPT echo, compression and truncation (§3), TCP
framing, and the wire answer cache (case patching, invalidation, expiry, variants)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

import dnstest
from submariner.lighthouse.dns import answers, chain, server
from submariner.lighthouse.dns.plugin import (
    CachePolicy,
    CacheScope,
    Controller,
    Handler,
    Request,
    Result,
    Wrapper,
    reply_for,
)


@pytest.fixture
async def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dnstest.Harness]:
    monkeypatch.setitem(chain.REGISTRY, "lighthouse", dnstest.this_module())
    h = dnstest.Harness(tmp_path)
    yield h
    await h.stop()


def answering(build: Callable[[Request], dns.message.Message], scope: CacheScope | None = None,
              max_age: float = 3600.0) -> tuple[Callable[[Controller], Wrapper], list[str]]:
    """A stand-in data plugin answering every query with `build(req)`; records the names it saw."""
    calls: list[str] = []

    def factory(c: Controller) -> Wrapper:
        def wrap(next_handler: Handler) -> Handler:
            async def serve(req: Request) -> Result:
                calls.append(req.qname.to_text())
                policy = CachePolicy(scope, max_age) if scope is not None else None
                return Result(0, build(req), plugin="lighthouse", cache=policy)

            return serve

        return wrap

    return factory, calls


def a_records(count: int, ttl: int = 30) -> Callable[[Request], dns.message.Message]:
    def build(req: Request) -> dns.message.Message:
        reply = reply_for(req)
        rrset = dns.rrset.RRset(req.qname, dns.rdataclass.IN, dns.rdatatype.A)
        for i in range(count):
            rrset.add(dns.rdata.from_text("IN", "A", f"10.0.{i // 250}.{i % 250 + 1}"), ttl)
        reply.answer.append(rrset)
        return reply

    return build


def header(data: bytes) -> tuple[int, int, int, int, int, int, int]:
    return struct.unpack("!HBBHHHH", data[:12])  # type: ignore[return-value]


def query(name: str = "example.org.", rdtype: str = "A", **kw: Any) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()


WHOAMI = "example.org {\n    whoami\n}\n"


# -- §2.3: server-generated replies ----------------------------------------------------------------------------

async def test_response_bit_is_dropped(harness: dnstest.Harness) -> None:
    await harness.start(WHOAMI)
    q = bytearray(query())
    q[2] |= 0x80
    assert await harness.raw_udp(bytes(q), timeout=0.3) is None


async def test_short_header_is_dropped(harness: dnstest.Harness) -> None:
    await harness.start(WHOAMI)
    assert await harness.raw_udp(b"\x12\x34\x01", timeout=0.3) is None


@pytest.mark.parametrize("opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.UPDATE, 7, 15])
async def test_unsupported_opcode_is_notimp(harness: dnstest.Harness, opcode: int) -> None:
    await harness.start(WHOAMI)
    q = bytearray(query())
    q[2] = (q[2] & 0x87) | (opcode << 3)
    reply = await harness.raw_udp(bytes(q))
    assert reply is not None and len(reply) == 12
    _, f2, f3, qd, an, ns, ar = header(reply)
    assert reply[:2] == q[:2] and f2 & 0x80 and (f2 >> 3) & 0xF == opcode
    assert f3 & 0x0F == dns.rcode.NOTIMP and (qd, an, ns, ar) == (0, 0, 0, 0)


async def test_notify_opcode_reaches_the_chain(harness: dnstest.Harness) -> None:
    await harness.start(WHOAMI)
    q = dns.message.make_query("example.org.", "SOA")
    q.set_opcode(dns.opcode.NOTIFY)
    r = await harness.udp(q)
    assert r.rcode() == dns.rcode.NOERROR and r.opcode() == dns.opcode.NOTIFY and r.additional


@pytest.mark.parametrize("counts", [(0, 0, 0, 0), (2, 0, 0, 0), (1, 2, 0, 0), (1, 0, 2, 0), (1, 0, 0, 3)])
async def test_bad_section_counts_are_formerr(harness: dnstest.Harness, counts: tuple[int, ...]) -> None:
    await harness.start(WHOAMI)
    q = bytearray(query())
    q[4:12] = struct.pack("!HHHH", *counts)
    reply = await harness.raw_udp(bytes(q))
    assert reply is not None and reply[:2] == q[:2]
    assert reply[3] & 0x0F == dns.rcode.FORMERR and header(reply)[3:] == (0, 0, 0, 0)


async def test_unparsable_message_is_formerr_with_question(harness: dnstest.Harness) -> None:
    await harness.start(WHOAMI)
    q = bytearray(query())
    q[11] = 1  # claims an additional record that is not there
    reply = await harness.raw_udp(bytes(q))
    assert reply is not None and reply[3] & 0x0F == dns.rcode.FORMERR
    assert header(reply)[3] == 1 and reply[12:] == bytes(q[12:])  # the question that could be read


async def test_truncated_question_is_formerr(harness: dnstest.Harness) -> None:
    await harness.start(WHOAMI)
    reply = await harness.raw_udp(query()[:20])
    assert reply is not None and reply[3] & 0x0F == dns.rcode.FORMERR and header(reply)[3] == 0


async def test_non_in_class_is_refused(harness: dnstest.Harness) -> None:
    await harness.start(WHOAMI)
    q = dns.message.make_query("example.org.", "TXT", rdclass="CH")
    q.flags |= dns.flags.CD
    r = await harness.udp(q)
    assert r.rcode() == dns.rcode.REFUSED
    assert r.flags & dns.flags.RD and r.flags & dns.flags.CD and not r.flags & (dns.flags.AA | dns.flags.RA)
    assert r.question[0].name == q.question[0].name and not r.answer


async def test_non_in_class_accepted_when_a_plugin_asks(harness: dnstest.Harness) -> None:
    factory, calls = answering(lambda req: reply_for(req))

    def opting_in(c: Controller) -> Wrapper:
        c.block.classes.add("CH")  # as chaos/forward do
        return factory(c)

    await harness.start("example.org {\n    lighthouse\n}\n", plugin=opting_in)
    r = await harness.udp(dns.message.make_query("example.org.", "TXT", rdclass="CH"))
    assert r.rcode() == dns.rcode.NOERROR and calls == ["example.org."]


async def test_edns_version_other_than_zero_is_badvers(harness: dnstest.Harness) -> None:
    await harness.start(WHOAMI)
    q = dns.message.make_query("example.org.", "A", use_edns=1)
    raw = await harness.raw_udp(q.to_wire())
    assert raw is not None
    r = dns.message.from_wire(raw)
    assert r.id == q.id and r.rcode() == dns.rcode.BADVERS and r.edns == 0 and not r.question


async def test_name_outside_every_zone_is_refused(harness: dnstest.Harness) -> None:
    await harness.start(WHOAMI)
    r = await harness.udp(dns.message.make_query("example.com.", "A"))
    assert r.rcode() == dns.rcode.REFUSED and r.question[0].name.to_text() == "example.com."
    requests = harness.process.metrics.requests.values
    assert requests[("dns://:0", "dropped", "", "udp", "1", "A")] == 1


async def test_longest_zone_wins_and_dot_catches_the_rest(harness: dnstest.Harness) -> None:
    await harness.start("example.org {\n    whoami\n}\nsub.example.org {\n    any\n}\n. {\n    whoami\n}\n")
    assert (await harness.udp(dns.message.make_query("a.sub.example.org.", "A"))).rcode() == dns.rcode.SERVFAIL
    assert (await harness.udp(dns.message.make_query("a.example.org.", "A"))).additional
    assert (await harness.udp(dns.message.make_query("other.net.", "A"))).additional


async def test_nothing_after_the_last_plugin_is_servfail(harness: dnstest.Harness) -> None:
    await harness.start("example.org {\n    errors\n    log\n}\n")
    r = await harness.udp(dns.message.make_query("example.org.", "A"))
    assert r.rcode() == dns.rcode.SERVFAIL and not r.flags & dns.flags.AA
    assert any("[ERROR] plugin/errors: 2 example.org. A: plugin/log: no next plugin found" in line
               for line in harness.lines())


async def test_block_with_only_setup_plugins_is_refused(harness: dnstest.Harness) -> None:
    await harness.start("example.org {\n    health 127.0.0.1:0\n}\n")
    assert (await harness.udp(dns.message.make_query("example.org.", "A"))).rcode() == dns.rcode.REFUSED


async def test_plugin_exception_is_servfail_and_counted(harness: dnstest.Harness) -> None:
    def factory(c: Controller) -> Wrapper:
        def wrap(next_handler: Handler) -> Handler:
            async def serve(req: Request) -> Result:
                raise RuntimeError("boom")

            return serve

        return wrap

    await harness.start("example.org {\n    lighthouse\n}\n", plugin=factory)
    r = await harness.udp(dns.message.make_query("example.org.", "A", use_edns=0, payload=1400))
    assert r.rcode() == dns.rcode.SERVFAIL and r.edns == 0 and r.payload == 1400
    assert harness.process.metrics.panics.get(()) == 1
    assert any("Recovered from panic in server" in line for line in harness.lines())
    assert (await harness.udp(dns.message.make_query("example.org.", "A"))).rcode() == dns.rcode.SERVFAIL


async def test_dropping_plugin_sends_nothing(harness: dnstest.Harness) -> None:
    await harness.start("example.org {\n    erratic\n}\n")
    assert await harness.raw_udp(query(), timeout=0.3) is None  # query 0: dropped
    reply = await harness.raw_udp(query())
    assert reply is not None and dns.message.from_wire(reply).answer


# -- §3: OPT echo, compression, truncation ---------------------------------------------------------------------

async def test_opt_echo_copies_size_and_do_and_supported_options(harness: dnstest.Harness) -> None:
    await harness.start(WHOAMI)
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    ecs = dns.edns.ECSOption("192.0.2.0", 24)
    q = dns.message.make_query("example.org.", "A", use_edns=0, payload=1232, want_dnssec=True,
                               options=[cookie, ecs])
    raw = await harness.raw_udp(q.to_wire())
    assert raw is not None
    r = dns.message.from_wire(raw)
    assert r.edns == 0 and r.payload == 1232 and r.ednsflags & dns.flags.DO
    assert [o.otype for o in r.options] == [dns.edns.OptionType.COOKIE] and r.options[0].to_wire() == b"\x01" * 8
    lay = answers.Layout(raw)
    assert lay.opt_start == lay.ends[-1] and lay.end == len(raw)  # the OPT is the last record


async def test_no_opt_without_edns_in_the_query(harness: dnstest.Harness) -> None:
    def factory(c: Controller) -> Wrapper:
        def wrap(next_handler: Handler) -> Handler:
            async def serve(req: Request) -> Result:
                reply = dns.message.make_response(req.msg)
                reply.use_edns(0, 0, 4096)  # a plugin adding its own OPT
                return Result(0, reply, plugin="lighthouse")

            return serve

        return wrap

    await harness.start("example.org {\n    lighthouse\n}\n", plugin=factory)
    assert (await harness.udp(dns.message.make_query("example.org.", "A"))).edns == -1
    r = await harness.udp(dns.message.make_query("example.org.", "A", use_edns=0, payload=1400))
    assert r.edns == 0 and r.payload == 1400  # the plugin's OPT advertises the client's size


async def test_server_written_reply_echoes_opt_and_copies_flags(harness: dnstest.Harness) -> None:
    await harness.start(WHOAMI)
    q = dns.message.make_query("nowhere.test.", "A", use_edns=0, payload=2000, want_dnssec=True)
    q.flags |= dns.flags.CD
    r = await harness.udp(q)
    assert r.rcode() == dns.rcode.REFUSED and r.edns == 0 and r.payload == 2000 and r.ednsflags & dns.flags.DO
    assert r.flags & dns.flags.CD and r.flags & dns.flags.RD and r.id == q.id


async def test_big_reply_is_truncated_over_udp_and_complete_over_tcp(harness: dnstest.Harness) -> None:
    factory, _ = answering(a_records(100))
    await harness.start("example.org {\n    lighthouse\n}\n", plugin=factory)
    raw = await harness.raw_udp(query())
    assert raw is not None and len(raw) <= 512
    r = dns.message.from_wire(raw)
    assert r.flags & dns.flags.TC and len(r.answer[0]) == 30  # 12 + 17 + 30 * 16 = 509
    raw = await harness.raw_udp(query(use_edns=0, payload=512))
    r = dns.message.from_wire(raw or b"")
    assert r.flags & dns.flags.TC and len(r.answer[0]) == 29 and r.edns == 0  # room kept for the OPT
    r = await harness.udp(dns.message.make_query("example.org.", "A", use_edns=0, payload=4096))
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 100
    r = await harness.tcp(dns.message.make_query("example.org.", "A"))
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 100


async def test_reply_that_fits_compressed_is_not_truncated(harness: dnstest.Harness) -> None:
    factory, _ = answering(a_records(25))
    await harness.start(". {\n    lighthouse\n}\n", plugin=factory)
    name = "a-rather-long-label-to-make-compression-matter.example.org."
    raw = await harness.raw_udp(query(name))
    assert raw is not None
    r = dns.message.from_wire(raw)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 25
    assert len(raw) < 512 < 12 + 25 * (len(name) + 1 + 14)


async def test_rendered_owners_point_to_the_question(harness: dnstest.Harness) -> None:
    """The cache's case patch relies on it: dnspython compresses every owner to offset 12."""
    factory, _ = answering(a_records(3))
    await harness.start("example.org {\n    lighthouse\n}\n", plugin=factory)
    raw = await harness.raw_udp(query("ExAmPlE.org."))
    assert raw is not None
    lay = answers.Layout(raw)
    starts = [lay.qend, *lay.ends[:-1]]
    assert all(raw[s:s + 2] == b"\xc0\x0c" for s in starts)


# -- TCP -----------------------------------------------------------------------------------------------------

async def test_many_queries_on_one_tcp_connection(harness: dnstest.Harness) -> None:
    await harness.start(WHOAMI)
    queries = [dns.message.make_query("example.org.", "A") for _ in range(5)]
    replies = await asyncio.to_thread(dnstest.raw_tcp_many, harness.port, [q.to_wire() for q in queries])
    assert sorted(dns.message.from_wire(r).id for r in replies) == sorted(q.id for q in queries)
    assert all(dns.message.from_wire(r).additional[1].name.labels[0] == b"_tcp" for r in replies)


async def test_idle_tcp_connection_is_closed(harness: dnstest.Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "READ_TIMEOUT", 0.2)
    monkeypatch.setattr(server, "IDLE_TIMEOUT", 0.3)
    await harness.start(WHOAMI)
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    wire = query()
    writer.write(len(wire).to_bytes(2, "big") + wire)
    size = int.from_bytes(await reader.readexactly(2), "big")
    await reader.readexactly(size)
    assert await asyncio.wait_for(reader.read(), 2.0) == b""  # closed by the server after the idle timeout
    writer.close()


# -- the answer cache --------------------------------------------------------------------------------------------

async def test_cache_hit_keeps_the_query_case(harness: dnstest.Harness) -> None:
    scope = CacheScope("test")
    factory, calls = answering(a_records(2), scope)
    await harness.start("example.org {\n    lighthouse\n}\n", plugin=factory)
    first = await harness.udp(dns.message.make_query("example.org.", "A"))
    q = dns.message.make_query("ExAmPlE.org.", "A")
    raw = await harness.raw_udp(q.to_wire())
    assert calls == ["example.org."] and raw is not None
    hit = dns.message.from_wire(raw)
    assert hit.id == q.id and hit.answer[0].to_rdataset() == first.answer[0].to_rdataset()
    assert b"\x07ExAmPlE\x03org\x00" in raw and b"example" not in raw
    assert str(hit.question[0].name) == "ExAmPlE.org." and str(hit.answer[0].name) == "ExAmPlE.org."


async def test_case_sensitive_reply_is_only_reused_for_the_same_case(harness: dnstest.Harness) -> None:
    def build(req: Request) -> dns.message.Message:
        reply = reply_for(req)
        srv = dns.rrset.RRset(req.qname, dns.rdataclass.IN, dns.rdatatype.SRV)
        srv.add(dns.rdata.from_text("IN", "SRV", f"0 0 53 {req.qname}"), 5)  # SRV targets are never compressed
        reply.answer.append(srv)
        return reply

    factory, calls = answering(build, CacheScope("test"))
    await harness.start("example.org {\n    lighthouse\n}\n", plugin=factory)
    await harness.udp(dns.message.make_query("Example.org.", "SRV"))
    await harness.udp(dns.message.make_query("Example.org.", "SRV"))
    r = await harness.udp(dns.message.make_query("EXAMPLE.org.", "SRV"))
    assert calls == ["Example.org.", "EXAMPLE.org."]
    assert r.answer[0][0].target.to_text() == "EXAMPLE.org."


async def test_cache_scope_invalidation(harness: dnstest.Harness) -> None:
    scope = CacheScope("test")
    address = ["10.1.1.1"]

    def build(req: Request) -> dns.message.Message:
        reply = reply_for(req)
        reply.answer.append(dns.rrset.from_text(req.qname, 5, "IN", "A", address[0]))
        return reply

    factory, calls = answering(build, scope)
    await harness.start("example.org {\n    lighthouse\n}\n", plugin=factory)
    for _ in range(3):
        assert (await harness.udp(dns.message.make_query("example.org.", "A"))).answer[0][0].address == "10.1.1.1"
    assert len(calls) == 1
    address[0] = "10.2.2.2"
    scope.invalidate()
    assert (await harness.udp(dns.message.make_query("example.org.", "A"))).answer[0][0].address == "10.2.2.2"
    assert (await harness.udp(dns.message.make_query("example.org.", "A"))).answer[0][0].address == "10.2.2.2"
    assert len(calls) == 2


async def test_cache_entry_expires_after_max_age(harness: dnstest.Harness) -> None:
    factory, calls = answering(a_records(1), CacheScope("test"), max_age=0.2)
    await harness.start("example.org {\n    lighthouse\n}\n", plugin=factory)
    await harness.udp(dns.message.make_query("example.org.", "A"))
    await harness.udp(dns.message.make_query("example.org.", "A"))
    await asyncio.sleep(0.3)
    await harness.udp(dns.message.make_query("example.org.", "A"))
    assert len(calls) == 2


async def test_uncacheable_results_run_the_chain_every_time(harness: dnstest.Harness) -> None:
    factory, calls = answering(a_records(1))
    await harness.start("example.org {\n    lighthouse\n}\n", plugin=factory)
    for _ in range(3):
        await harness.udp(dns.message.make_query("example.org.", "A"))
    assert len(calls) == 3


async def test_cache_key_separates_type_do_size_and_transport(harness: dnstest.Harness) -> None:
    factory, calls = answering(a_records(1), CacheScope("test"))
    await harness.start("example.org {\n    lighthouse\n}\n", plugin=factory)
    variants = [
        dns.message.make_query("example.org.", "A"),
        dns.message.make_query("example.org.", "AAAA"),
        dns.message.make_query("example.org.", "A", use_edns=0, payload=1232),
        dns.message.make_query("example.org.", "A", use_edns=0, payload=1232, want_dnssec=True),
        dns.message.make_query("example.org.", "A", use_edns=0, payload=4096),
    ]
    for q in variants * 2:
        r = await harness.udp(q)
        assert r.edns == q.edns and (r.edns < 0 or r.payload == q.payload)
        assert bool(r.ednsflags & dns.flags.DO) == bool(q.ednsflags & dns.flags.DO)
    assert len(calls) == len(variants)
    await harness.tcp(variants[0])
    await harness.tcp(variants[0])
    assert len(calls) == len(variants) + 1


async def test_variants_rotate_on_hits(harness: dnstest.Harness) -> None:
    factory, calls = answering(a_records(3), CacheScope("test"))
    await harness.start("example.org {\n    loadbalance\n    lighthouse\n}\n", plugin=factory)
    orders = []
    for _ in range(6):
        r = await harness.udp(dns.message.make_query("example.org.", "A"))
        orders.append(tuple(rd.address for rrset in r.answer for rd in rrset))
    assert len(calls) == 1
    assert len(set(orders)) == 3 and orders[:3] == orders[3:]
    assert all(sorted(o) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"] for o in orders)


async def test_cache_hits_do_not_parse_messages(harness: dnstest.Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    factory, calls = answering(a_records(1), CacheScope("test"))
    await harness.start("example.org {\n    lighthouse\n}\n", plugin=factory)
    await harness.udp(dns.message.make_query("example.org.", "A"))

    def forbidden(*args: Any, **kw: Any) -> Any:
        raise AssertionError("dnspython used on the hit path")

    monkeypatch.setattr(server.dns.message, "from_wire", forbidden)
    monkeypatch.setattr(server.answers, "parse_query", forbidden)
    reply = await harness.raw_udp(query("EXAMPLE.ORG."))
    assert reply is not None and reply[3] & 0x0F == 0 and len(calls) == 1


def test_answer_cache_is_bounded_and_keeps_hot_entries() -> None:
    from submariner.lighthouse.dns.plugin import AnswerInfo

    cache = answers.AnswerCache(max_entries=50)
    scope = CacheScope("t")
    info = AnswerInfo(qtype=1, qclass=1, rcode=0, plugin="", zone=".", server="", do=False, bufsize=512)

    def wire_for(i: int) -> tuple[bytes, bytes]:
        q = dns.message.make_query(f"n{i}.example.", "A")
        r = dns.message.make_response(q)
        return q.to_wire(), r.to_wire()

    hot_q, hot_r = wire_for(0)
    assert cache.insert(hot_q, [hot_r], scope, 60, info)
    for i in range(1, 500):
        q, r = wire_for(i)
        cache.insert(q, [r], scope, 60, info)
        assert cache.lookup(hot_q) is not None  # touched on every round: survives
    assert len(cache) == 50 and cache.evictions == 450


def test_fit_truncates_at_record_boundaries_and_sets_tc() -> None:
    q = dns.message.make_query("example.org.", "A")
    r = dns.message.make_response(q)
    r.use_edns(False)
    r.answer.append(dns.rrset.from_text("example.org.", 5, "IN", "A", *[f"10.0.0.{i}" for i in range(1, 61)]))
    r.additional.append(dns.rrset.from_text("extra.example.org.", 5, "IN", "TXT", '"x"'))
    wire = r.to_wire()
    fitted = answers.fit(wire, 512, answers.opt_record(512, 0, True))
    out = dns.message.from_wire(fitted)
    assert out.flags & dns.flags.TC and not out.additional and out.edns == 0 and out.ednsflags & dns.flags.DO
    assert len(fitted) <= 512 and len(out.answer[0]) == (512 - 11 - 29) // 16
    assert answers.fit(wire, 65535, None) == wire
