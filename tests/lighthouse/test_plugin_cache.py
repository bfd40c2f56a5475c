"""`cache` plugin: CoreDNS's TTL, classification, hit, prefetch and serve_stale rules, with a fake clock."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from submariner.lighthouse.dns import corefile
from submariner.lighthouse.dns.config import build_configs
from submariner.lighthouse.dns.plugin import Controller, Request, Result, SetupError
from submariner.lighthouse.dns.plugins import cache
from submariner.lighthouse.dns.process import ProcessState

Build = Callable[[dns.message.Message], "dns.message.Message | None"]


def positive(ttl: int = 300, extra_ttl: int | None = None, ip: str = "192.0.2.1") -> Build:
    def build(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        name = q.question[0].name
        r.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", ip))
        r.authority.append(dns.rrset.from_text("example.org.", ttl, "IN", "NS", "ns.example.org."))
        r.additional.append(dns.rrset.from_text("ns.example.org.", extra_ttl or ttl, "IN", "A", "192.0.2.53"))
        return r

    return build


def negative(rcode: int = dns.rcode.NXDOMAIN, soa_ttl: int | None = 60) -> Build:
    def build(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.set_rcode(dns.rcode.Rcode(rcode))
        if soa_ttl is not None:
            r.authority.append(dns.rrset.from_text("example.org.", soa_ttl, "IN", "SOA",
                                                   f"ns.example.org. hostmaster.example.org. 1 7200 1800 86400 "
                                                   f"{soa_ttl}"))
        return r

    return build


class Inner:
    """The next plugin: counts calls and answers with `build` (None: a server-written SERVFAIL)."""

    def __init__(self, build: Build | None) -> None:
        self.build = build
        self.calls = 0
        self.protos: list[str] = []

    async def __call__(self, req: Request) -> Result:
        self.calls += 1
        self.protos.append(req.proto)
        msg = self.build(req.msg) if self.build is not None else None
        if msg is None:
            return Result(dns.rcode.SERVFAIL, error="upstream down")
        return Result(0, msg, plugin="inner")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def request(name: str = "www.example.org.", rdtype: str = "A", *, do: bool = False, ad: bool = False,
            cd: bool = False) -> Request:
    q = dns.message.make_query(name, rdtype, want_dnssec=do)
    if ad:
        q.flags |= dns.flags.AD
    if cd:
        q.flags |= dns.flags.CD
    wire = q.to_wire()
    return Request(msg=dns.message.from_wire(wire), wire=wire, remote=("127.0.0.1", 40000),
                   local=("127.0.0.1", 53), proto="udp", server="dns://:53", zone=".", max_size=512,
                   start=time.perf_counter())


def controller(text: str) -> Controller:
    cfg = build_configs(corefile.parse(text), 53)[0]
    found = [d for d in cfg.directives if d.name == cache.NAME]
    return Controller(found, cfg.keys, "dns://:53", ProcessState(out=io.StringIO()))


class Harness:
    def __init__(self, directive: str, build: Build | None) -> None:
        self.c = controller(f".:53 {{\n{directive}\n}}\n")
        self.inner = Inner(build)
        self.handler = cache.setup(self.c)(self.inner)
        self.cache: cache.Cache = self.handler.__self__  # type: ignore[attr-defined]
        self.clock = Clock()
        self.cache.now = self.clock

    async def ask(self, req: Request | None = None) -> dns.message.Message:
        res = await self.handler(req or request())
        assert res.msg is not None and res.cache is None
        return res.msg

    def metric(self, name: str, key: tuple[str, ...]) -> float:
        vec = self.c.process._metrics[name]
        return float(vec.get(key))


def ttls(msg: dns.message.Message) -> list[int]:
    return [r.ttl for section in (msg.answer, msg.authority, msg.additional) for r in section]


# -- TTLs ---------------------------------------------------------------------------------------------------------


async def test_ttl_capped_and_written_into_every_record_also_on_the_miss() -> None:
    h = Harness("cache 10", positive(ttl=7200, extra_ttl=3600))
    msg = await h.ask()
    assert ttls(msg) == [10, 10, 10]
    h = Harness("cache", positive(ttl=1))
    msg = await h.ask()
    assert ttls(msg) == [5, 5, 5]  # raised to the minimum TTL
    h = Harness("cache", positive(ttl=120, extra_ttl=30))
    msg = await h.ask()
    assert ttls(msg) == [30, 30, 30]  # the lowest TTL of the message, everywhere


async def test_hit_counts_down_sets_aa_and_keeps_ra() -> None:
    h = Harness("cache 10", positive(ttl=300))
    first = await h.ask()
    assert not first.flags & dns.flags.AA
    h.clock.t += 3.5
    req = request("WWW.Example.ORG.")
    res = await h.handler(req)
    assert res.plugin == "cache" and res.msg is not None and h.inner.calls == 1
    assert res.msg.id == req.msg.id and res.msg.flags & dns.flags.AA and res.msg.flags & dns.flags.RA
    assert res.msg.question[0].name.to_text() == "WWW.Example.ORG."
    assert ttls(res.msg) == [7, 7, 7]
    assert [r.to_text() for r in res.msg.answer] == ["www.example.org. 7 IN A 192.0.2.1"]
    labels = ("dns://:53", ".", "")
    assert h.metric("coredns_cache_requests_total", labels) == 2
    assert h.metric("coredns_cache_hits_total", ("dns://:53", "success", ".", "")) == 1
    assert h.metric("coredns_cache_misses_total", labels) == 1
    assert h.metric("coredns_cache_entries", ("dns://:53", "success", ".", "")) == 1
    h.clock.t += 7
    await h.ask()
    assert h.inner.calls == 2  # expired


async def test_keepttl_serves_the_original_ttl() -> None:
    h = Harness("cache 10 {\n keepttl\n}", positive(ttl=300))
    await h.ask()
    h.clock.t += 6
    assert ttls(await h.ask()) == [10, 10, 10] and h.inner.calls == 1


# -- what is cached -------------------------------------------------------------------------------------------------


async def test_denial_cached_with_soa_ttl() -> None:
    h = Harness("cache", negative(dns.rcode.NXDOMAIN, soa_ttl=60))
    msg = await h.ask()
    assert msg.rcode() == dns.rcode.NXDOMAIN and ttls(msg) == [60]
    h.clock.t += 10
    msg = await h.ask()
    assert h.inner.calls == 1 and msg.rcode() == dns.rcode.NXDOMAIN and ttls(msg) == [50]
    assert h.metric("coredns_cache_hits_total", ("dns://:53", "denial", ".", "")) == 1
    h = Harness("cache", negative(dns.rcode.NOERROR, soa_ttl=7200))  # NODATA, capped at 1800
    msg = await h.ask()
    assert ttls(msg) == [1800]
    await h.ask()
    assert h.inner.calls == 1


async def test_denial_without_soa_is_not_cached() -> None:
    for rcode in (dns.rcode.NXDOMAIN, dns.rcode.NOERROR):
        h = Harness("cache", negative(rcode, soa_ttl=None))
        await h.ask()
        await h.ask()
        assert h.inner.calls == 2, dns.rcode.to_text(rcode)


async def test_cname_only_answer_without_soa_is_not_cached() -> None:
    def build(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "CNAME", "gone.example.net."))
        return r

    h = Harness("cache", build)
    await h.ask()
    await h.ask()
    assert h.inner.calls == 2


async def test_truncated_not_cached_but_ttl_still_capped() -> None:
    def build(q: dns.message.Message) -> dns.message.Message:
        r = positive(ttl=7200)(q)
        assert r is not None
        r.flags |= dns.flags.TC
        return r

    h = Harness("cache 20", build)
    msg = await h.ask()
    assert msg.flags & dns.flags.TC and ttls(msg) == [20, 20, 20]
    await h.ask()
    assert h.inner.calls == 2


async def test_servfail_messages_cached_briefly_server_written_never() -> None:
    h = Harness("cache", negative(dns.rcode.SERVFAIL, soa_ttl=None))
    await h.ask()
    h.clock.t += 4
    await h.ask()
    assert h.inner.calls == 1
    h.clock.t += 1.5
    await h.ask()
    assert h.inner.calls == 2
    h = Harness("cache {\n servfail 0\n}", negative(dns.rcode.SERVFAIL, soa_ttl=None))
    await h.ask()
    await h.ask()
    assert h.inner.calls == 2
    h = Harness("cache", None)
    res = await h.handler(request())
    assert res.msg is None and res.rcode == dns.rcode.SERVFAIL and res.error == "upstream down"
    await h.handler(request())
    assert h.inner.calls == 2


async def test_key_includes_do_and_cd_and_ad_rules() -> None:
    def build(q: dns.message.Message) -> dns.message.Message:
        r = positive()(q)
        assert r is not None
        r.flags |= dns.flags.AD
        return r

    h = Harness("cache", build)
    plain = await h.ask()
    assert not plain.flags & dns.flags.AD  # the client did not ask for DNSSEC data
    with_do = await h.ask(request(do=True))
    assert with_do.flags & dns.flags.AD and h.inner.calls == 2
    await h.ask(request(cd=True))
    assert h.inner.calls == 3
    hit = await h.ask(request(ad=True))
    assert hit.flags & dns.flags.AD and h.inner.calls == 3  # AD kept when the query had AD (RFC 6840)
    hit = await h.ask(request())
    assert not hit.flags & dns.flags.AD


async def test_zones_and_disable() -> None:
    h = Harness("cache 30 example.com", positive(ttl=300))
    msg = await h.ask()
    assert ttls(msg) == [300, 300, 300]  # outside the cache's zones: untouched and not cached
    await h.ask()
    assert h.inner.calls == 2
    h = Harness("cache {\n disable success\n}", positive(ttl=300))
    await h.ask()
    await h.ask()
    assert h.inner.calls == 2
    h = Harness("cache {\n disable denial example.org\n}", negative())
    await h.ask()
    await h.ask()
    assert h.inner.calls == 2


# -- prefetch and serve_stale -------------------------------------------------------------------------------------


async def test_prefetch_refreshes_a_popular_entry_in_the_background() -> None:
    h = Harness("cache {\n prefetch 2 1m 50%\n}", positive(ttl=10))
    await h.ask()
    h.clock.t += 2
    await h.ask()  # 1 hit, TTL 8 > 5
    await asyncio.sleep(0)
    assert h.inner.calls == 1
    h.clock.t += 4
    msg = await h.ask()  # 2 hits, TTL 4 <= 5: served from cache, refreshed behind
    assert ttls(msg) == [4, 4, 4]
    while h.cache.tasks:
        await asyncio.sleep(0)
    assert h.inner.calls == 2 and h.inner.protos[-1] == "tcp"
    assert h.metric("coredns_cache_prefetch_total", ("dns://:53", ".", "")) == 1
    assert ttls(await h.ask()) == [10, 10, 10]  # the refreshed entry


async def test_serve_stale_immediate_and_verify() -> None:
    h = Harness("cache 5 {\n serve_stale\n}", positive(ttl=300))
    await h.ask()
    h.inner.build = positive(ttl=300, ip="192.0.2.2")
    h.clock.t += 8
    msg = await h.ask()
    assert ttls(msg) == [0, 0, 0] and [r.to_text() for r in msg.answer] == ["www.example.org. 0 IN A 192.0.2.1"]
    assert h.metric("coredns_cache_served_stale_total", ("dns://:53", ".", "")) == 1
    while h.cache.tasks:
        await asyncio.sleep(0)
    msg = await h.ask()
    assert [r.to_text() for r in msg.answer] == ["www.example.org. 5 IN A 192.0.2.2"]
    h.clock.t += 3600 + 10
    await h.ask()
    assert h.metric("coredns_cache_served_stale_total", ("dns://:53", ".", "")) == 1  # beyond serve_stale: miss

    v = Harness("cache 5 {\n serve_stale 1h verify\n}", positive(ttl=300))
    await v.ask()
    v.inner.build = None  # upstream down
    v.clock.t += 8
    msg = await v.ask()
    assert ttls(msg) == [0, 0, 0] and v.inner.calls == 2  # verified first, then stale
    v.inner.build = positive(ttl=300, ip="192.0.2.3")
    msg = await v.ask()
    assert [r.to_text() for r in msg.answer] == ["www.example.org. 5 IN A 192.0.2.3"]
    assert not v.cache.tasks


async def test_store_shards_evict() -> None:
    store = cache.Store(1024)
    assert store.shard_size == 4
    keys: list[cache.Key] = []
    i = 0
    while len(keys) < 5:
        key: cache.Key = (f"n{i}.", 1, 1, False, False)
        if hash(key) & 255 == 0:
            keys.append(key)
        i += 1
    msg = positive()(dns.message.make_query("x.", "A"))
    assert msg is not None
    evicted = [store.add(k, cache.Item(msg, 0.0, 5)) for k in keys]
    assert evicted == [False, False, False, False, True] and len(store) == 4
    assert store.get(keys[0]) is None and store.get(keys[4]) is not None


# -- setup ----------------------------------------------------------------------------------------------------------


def test_options_parse() -> None:
    c = controller(".:53 {\n cache 30 example.org {\n success 5000 600 10\n denial 2500 60\n prefetch 10 2m 20%\n"
                   " serve_stale 30m verify\n servfail 10s\n keepttl\n }\n}\n")
    o = cache.parse(c)
    assert o.zones == ["example.org."]
    assert (o.pcap, o.pttl, o.minpttl, o.ncap, o.nttl, o.minnttl) == (5000, 600, 10, 2500, 60, 5)
    assert (o.prefetch, o.duration, o.percentage) == (10, 120.0, 20)
    assert (o.stale_up_to, o.verify_stale, o.failttl, o.keepttl) == (1800.0, True, 10.0, True)
    assert cache.Store(o.pcap).shard_size == 19
    o = cache.parse(controller("example.net:53 {\n cache\n}\n"))
    assert (o.zones, o.pttl, o.nttl) == (["example.net."], 3600, 1800)


@pytest.mark.parametrize(("body", "message"), [
    ("cache 0", "plugin/cache: cache TTL can not be zero or negative: 0"),
    ("cache {\n success\n}", "plugin/cache: Corefile:3 - Error during parsing: Wrong argument count or unexpected "
                             "line ending after 'success'"),
    ("cache {\n success x\n}", 'plugin/cache: strconv.Atoi: parsing "x": invalid syntax'),
    ("cache {\n denial 10 0\n}", "plugin/cache: cache TTL can not be zero or negative: 0"),
    ("cache {\n success 10 60 -1\n}", "plugin/cache: cache min TTL can not be negative: -1"),
    ("cache {\n prefetch 1 1m 5%\n}", "plugin/cache: percentage should fall in range [10, 90]: 5"),
    ("cache {\n prefetch 1 1m 50\n}", "plugin/cache: last character of percentage should be `%`, but is: '0'"),
    ("cache {\n prefetch -1\n}", "plugin/cache: prefetch amount should be positive: -1"),
    ("cache {\n serve_stale 1h later\n}", "plugin/cache: invalid value for serve_stale refresh mode: later"),
    ("cache {\n serve_stale -1h\n}", "plugin/cache: invalid negative duration for serve_stale"),
    ("cache {\n servfail 10m\n}", "plugin/cache: caching SERVFAIL responses over 5 minutes is not permitted"),
    ("cache {\n disable everything\n}", 'plugin/cache: cache type for disable must be "success" or "denial"'),
    ("cache {\n keepttl now\n}", "plugin/cache: Corefile:3 - Error during parsing: Wrong argument count or "
                                 "unexpected line ending after 'now'"),
    ("cache {\n bogus 1\n}", "plugin/cache: Corefile:3 - Error during parsing: Wrong argument count or unexpected "
                             "line ending after 'bogus'"),
    ("cache {\n serve_stale_policy prefer_positive\n}",
     "plugin/cache: Corefile:3 - Error during parsing: property 'serve_stale_policy' is not supported by "
     "lighthouse-dns (CoreDNS 1.14.7+)"),
])
def test_setup_errors(body: str, message: str) -> None:
    with pytest.raises(SetupError) as err:
        cache.setup(controller(f".:53 {{\n{body}\n}}\n"))
    assert str(err.value) == message


def test_typify() -> None:
    q = dns.message.make_query("www.example.org.", "A")
    assert cache.typify(positive()(q)) is cache.Kind.NO_ERROR  # type: ignore[arg-type]
    assert cache.typify(negative()(q)) is cache.Kind.NAME_ERROR  # type: ignore[arg-type]
    assert cache.typify(negative(dns.rcode.NOERROR)(q)) is cache.Kind.NO_DATA  # type: ignore[arg-type]
    assert cache.typify(negative(dns.rcode.REFUSED)(q)) is cache.Kind.OTHER_ERROR  # type: ignore[arg-type]
    assert cache.typify(negative(dns.rcode.NXDOMAIN, None)(q)) is cache.Kind.OTHER_ERROR  # type: ignore[arg-type]
    axfr = dns.message.make_response(dns.message.make_query("example.org.", "AXFR"))
    assert cache.typify(axfr) is cache.Kind.META


async def test_hit_wire_is_patched_from_a_template_and_equals_a_full_render() -> None:
    def build(q: dns.message.Message) -> dns.message.Message:
        r = positive(ttl=300)(q)
        assert r is not None
        r.flags |= dns.flags.AD
        r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "TXT", '"hello"'))
        return r

    h = Harness("cache 10", build)
    await h.ask(request(ad=True))
    for req in (request("WwW.ExAmple.ORG.", ad=True), request("www.example.org.")):
        h.clock.t += 2
        res = await h.handler(req)
        msg = res.msg
        assert isinstance(msg, cache.HitMessage)
        fast = msg.to_wire(max_size=65535)
        assert fast == dns.message.Message.to_wire(msg, max_size=65535)
        assert dns.message.from_wire(fast).question[0].name.to_text() == req.msg.question[0].name.to_text()
    assert isinstance(msg, cache.HitMessage)
    msg.answer.append(dns.rrset.from_text("extra.example.org.", 1, "IN", "A", "192.0.2.99"))  # changed afterwards
    assert msg.to_wire() == dns.message.Message.to_wire(msg) != fast
