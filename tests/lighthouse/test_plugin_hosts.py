"""`hosts` plugin: inline and file entries, reload, PTR, SERVFAIL vs fallthrough, setup errors."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

from submariner.lighthouse.dns import corefile
from submariner.lighthouse.dns.config import build_configs
from submariner.lighthouse.dns.plugin import Controller, Request, Result, SetupError
from submariner.lighthouse.dns.plugins import hosts
from submariner.lighthouse.dns.process import ProcessState


class Next:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, req: Request) -> Result:
        self.seen.append(req.name_lower)
        return Result(dns.rcode.SERVFAIL, error="plugin/chain: no next plugin found")


def request(name: str, rdtype: str = "A") -> Request:
    q = dns.message.make_query(name, rdtype)
    wire = q.to_wire()
    return Request(msg=dns.message.from_wire(wire), wire=wire, remote=("127.0.0.1", 40000),
                   local=("127.0.0.1", 53), proto="udp", server="dns://:53", zone=".", max_size=512,
                   start=time.perf_counter())


class Harness:
    def __init__(self, text: str) -> None:
        cfg = build_configs(corefile.parse(text), 53)[0]
        found = [d for d in cfg.directives if d.name == hosts.NAME]
        self.process = ProcessState(out=io.StringIO())
        self.c = Controller(found, cfg.keys, "dns://:53", self.process)
        self.next = Next()
        self.handler = hosts.setup(self.c)(self.next)
        self.hosts: hosts.Hosts = self.handler.__self__  # type: ignore[attr-defined]

    async def __aenter__(self) -> Harness:
        await ProcessState.run_hooks(self.c.block.startup)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await ProcessState.run_hooks(self.c.block.shutdown)

    async def ask(self, name: str, rdtype: str = "A") -> Result:
        return await self.handler(request(name, rdtype))


def lines(res: Result) -> list[str]:
    assert res.msg is not None
    return [rr.to_text() for rr in res.msg.answer]


INLINE = """.:53 {
    hosts /nonexistent/hosts {
        10.0.0.1 Example.ORG www.example.org
        10.0.0.2 www.example.org
        fd00::1 example.org
        ::ffff:192.0.2.7 mapped.example.org
        192.0.2.9 *.wild.example.org
        fallthrough other.example
    }
}
"""


async def test_inline_a_aaaa_ptr() -> None:
    async with Harness(INLINE) as h:
        res = await h.ask("WWW.example.org.")
        assert lines(res) == ["www.example.org. 3600 IN A 10.0.0.1\nwww.example.org. 3600 IN A 10.0.0.2"]
        assert res.msg is not None and res.msg.flags & dns.flags.AA and res.plugin == "hosts"
        assert res.cache is not None
        assert lines(await h.ask("example.org.", "AAAA")) == ["example.org. 3600 IN AAAA fd00::1"]
        assert lines(await h.ask("mapped.example.org.")) == ["mapped.example.org. 3600 IN A 192.0.2.7"]
        assert lines(await h.ask("1.0.0.10.in-addr.arpa.", "PTR")) == [
            "1.0.0.10.in-addr.arpa. 3600 IN PTR example.org.\n1.0.0.10.in-addr.arpa. 3600 IN PTR www.example.org."]
        v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."
        assert lines(await h.ask(v6, "PTR")) == [f"{v6} 3600 IN PTR example.org."]
        out = h.process.out
        assert isinstance(out, io.StringIO) and "File does not exist: /nonexistent/hosts" in out.getvalue()


async def test_nodata_servfail_fallthrough_and_wildcard() -> None:
    async with Harness(INLINE) as h:
        res = await h.ask("www.example.org.", "MX")  # known name, other type: NODATA without SOA
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NOERROR and not res.msg.answer
        assert not res.msg.authority
        res = await h.ask("www.example.org.", "AAAA")
        assert res.msg is not None and not res.msg.answer
        res = await h.ask("unknown.example.org.")
        assert res.msg is None and res.rcode == dns.rcode.SERVFAIL and h.next.seen == []
        await h.ask("unknown.other.example.")
        assert h.next.seen == ["unknown.other.example."]
        assert lines(await h.ask("a.wild.example.org.")) == ["a.wild.example.org. 3600 IN A 192.0.2.9"]
        res = await h.ask("a.b.wild.example.org.")  # exactly one label
        assert res.msg is None and res.rcode == dns.rcode.SERVFAIL


async def test_zones_ptr_outside_zones_and_no_reverse() -> None:
    text = ".:53 {\n hosts /nonexistent example.org {\n 10.1.1.1 a.example.org b.example.net\n }\n}\n"
    async with Harness(text) as h:
        assert lines(await h.ask("a.example.org.")) == ["a.example.org. 3600 IN A 10.1.1.1"]
        await h.ask("b.example.net.")  # outside the zones: dropped at load, passed on at query time
        assert h.next.seen == ["b.example.net."]
        assert lines(await h.ask("1.1.1.10.in-addr.arpa.", "PTR")) == [
            "1.1.1.10.in-addr.arpa. 3600 IN PTR a.example.org."]
        await h.ask("2.1.1.10.in-addr.arpa.", "PTR")  # unknown address: next plugin
        assert h.next.seen[-1] == "2.1.1.10.in-addr.arpa."
    async with Harness(".:53 {\n hosts /nonexistent {\n 10.1.1.1 a.example.org\n no_reverse\n }\n}\n") as h:
        await h.ask("1.1.1.10.in-addr.arpa.", "PTR")
        assert h.next.seen == ["1.1.1.10.in-addr.arpa."]


async def test_ttl_and_fallthrough_unsupported() -> None:
    text = ".:53 {\n hosts /nonexistent {\n 10.0.0.1 a.example.org\n ttl 60\n fallthrough_unsupported\n }\n}\n"
    async with Harness(text) as h:
        assert lines(await h.ask("a.example.org.")) == ["a.example.org. 60 IN A 10.0.0.1"]
        await h.ask("a.example.org.", "TXT")
        assert h.next.seen == ["a.example.org."]


async def test_file_reload_invalidates_cached_answers(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("10.0.0.1 web.example.org # comment\n# 10.9.9.9 ignored.example.org\n")
    async with Harness(f".:53 {{\n hosts {path} {{\n reload 50ms\n 10.0.0.3 inline.example.org\n }}\n}}\n") as h:
        res = await h.ask("web.example.org.")
        assert lines(res) == ["web.example.org. 3600 IN A 10.0.0.1"]
        assert res.cache is not None
        scope = res.cache.scope
        gen = scope.generation
        res = await h.ask("ignored.example.org.")
        assert res.msg is None and res.rcode == dns.rcode.SERVFAIL
        entries = h.process._metrics["coredns_hosts_entries"]
        assert entries.get((str(path),)) == 2
        path.write_text("10.0.0.2 web.example.org\n10.0.0.4 new.example.org\n")
        os.utime(path, (time.time() + 5, time.time() + 5))
        deadline = time.monotonic() + 5
        while lines(await h.ask("web.example.org.")) != ["web.example.org. 3600 IN A 10.0.0.2"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert scope.generation != gen and scope.generation != scope.generation
        assert entries.get((str(path),)) == 3
        path.unlink()  # a vanished file keeps the last data
        await asyncio.sleep(0.15)
        assert lines(await h.ask("new.example.org.")) == ["new.example.org. 3600 IN A 10.0.0.4"]
        assert lines(await h.ask("inline.example.org.")) == ["inline.example.org. 3600 IN A 10.0.0.3"]


def test_parse_hosts_ignores_bad_lines() -> None:
    m = hosts.parse_hosts("bogus line\n10.0.0.1\n300.1.1.1 x.org\nfe80::1%eth0 ll.example\n", ["."], True)
    assert m.name6 == {"ll.example.": ["fe80::1"]} and not m.name4


@pytest.mark.parametrize(("body", "message"), [
    ("hosts {\n ttl\n}", "plugin/hosts: Corefile:3 - Error during parsing: ttl needs a time in second"),
    ("hosts {\n ttl x\n}", "plugin/hosts: Corefile:3 - Error during parsing: ttl needs a number of second"),
    ("hosts {\n ttl 0\n}", "plugin/hosts: Corefile:3 - Error during parsing: ttl provided is invalid"),
    ("hosts {\n reload\n}",
     "plugin/hosts: Corefile:3 - Error during parsing: reload needs a duration (zero seconds to disable)"),
    ("hosts {\n reload x\n}", "plugin/hosts: Corefile:3 - Error during parsing: invalid duration for reload 'x'"),
    ("hosts {\n reload -1s\n}",
     "plugin/hosts: Corefile:3 - Error during parsing: invalid negative duration for reload '-1s'"),
    ("hosts {\n fallthrough\n 10.0.0.1 late.example\n}",
     "plugin/hosts: Corefile:4 - Error during parsing: unknown property '10.0.0.1'"),
])
def test_setup_errors(body: str, message: str) -> None:
    cfg = build_configs(corefile.parse(f".:53 {{\n{body}\n}}\n"), 53)[0]
    c = Controller([d for d in cfg.directives if d.name == "hosts"], cfg.keys, "dns://:53",
                   ProcessState(out=io.StringIO()))
    with pytest.raises(SetupError) as err:
        hosts.setup(c)
    assert str(err.value) == message
