"""`forward` plugin against in-process upstream DNS servers on 127.0.0.1 (UDP and TCP on one ephemeral port)."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from submariner.lighthouse.dns import corefile
from submariner.lighthouse.dns.config import build_configs
from submariner.lighthouse.dns.plugin import Controller, Handler, Request, Result, SetupError
from submariner.lighthouse.dns.plugins import forward
from submariner.lighthouse.dns.process import ProcessState

pytestmark = pytest.mark.timeout(30)

Responder = Callable[[dns.message.Message, str], "dns.message.Message | Awaitable[dns.message.Message | None] | None"]


# -- the in-process upstream -------------------------------------------------------------------------------------


def answer_a(ip: str = "192.0.2.1", ttl: int = 123) -> Responder:
    def respond(q: dns.message.Message, proto: str) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        r.answer.append(dns.rrset.from_text(q.question[0].name, ttl, "IN", "A", ip))
        return r

    return respond


def rcode_reply(rcode: int) -> Responder:
    def respond(q: dns.message.Message, proto: str) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.set_rcode(dns.rcode.Rcode(rcode))
        return r

    return respond


class Upstream:
    """A tiny DNS server: UDP and TCP on the same 127.0.0.1 port, answers from `respond` (None = drop)."""

    def __init__(self, respond: Responder, port: int = 0) -> None:
        self.respond = respond
        self.port = port
        self.queries: list[tuple[str, dns.message.Message]] = []
        self.sent: list[bytes] = []
        self._tasks: set[asyncio.Future[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self, proto: str | None = None, qtype: str | None = None) -> int:
        return sum(1 for p, q in self.queries if (proto is None or p == proto)
                   and (qtype is None or dns.rdatatype.to_text(q.question[0].rdtype) == qtype))

    async def start(self) -> Upstream:
        loop = asyncio.get_running_loop()
        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                udp.bind(("127.0.0.1", self.port))
                tcp.bind(("127.0.0.1", udp.getsockname()[1]))
                break
            except OSError:
                udp.close()
                tcp.close()
                if self.port:
                    raise
        else:
            raise RuntimeError("no port pair")
        self.port = udp.getsockname()[1]
        up = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                task = asyncio.ensure_future(self._answer(data, addr))
                up._tasks.add(task)
                task.add_done_callback(up._tasks.discard)

            async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
                out = await up._handle(data, "udp")
                if out is not None:
                    self.transport.sendto(out, addr)  # type: ignore[attr-defined]

        async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up._conns.add(writer)
            try:
                while True:
                    head = await reader.readexactly(2)
                    data = await reader.readexactly(int.from_bytes(head, "big"))
                    out = await up._handle(data, "tcp")
                    if out is not None:
                        writer.write(len(out).to_bytes(2, "big") + out)
                        await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                up._conns.discard(writer)
                writer.close()

        self._udp, _ = await loop.create_datagram_endpoint(Udp, sock=udp)
        tcp.listen(16)
        tcp.setblocking(False)
        self._tcp = await asyncio.start_server(on_tcp, sock=tcp)
        return self

    async def _handle(self, data: bytes, proto: str) -> bytes | None:
        q = dns.message.from_wire(data)
        self.queries.append((proto, q))
        out = self.respond(q, proto)
        if asyncio.iscoroutine(out):
            out = await out
        if out is None:
            return None
        assert isinstance(out, dns.message.Message)
        wire = out.to_wire()
        self.sent.append(wire)
        return wire

    async def close(self) -> None:
        """Stop listening and drop open TCP connections (a restarted upstream, as far as clients can tell)."""
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._conns):
            writer.close()
        await asyncio.sleep(0.01)  # let the transports release their sockets


def free_port() -> int:
    """A UDP port nobody listens on (its queries get ICMP port unreachable: connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- harness -------------------------------------------------------------------------------------------------


class Next:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, req: Request) -> Result:
        self.seen.append(req.name_lower)
        return Result(dns.rcode.SERVFAIL, error="plugin/chain: no next plugin found")


def request(name: str, rdtype: str = "A", *, proto: str = "udp", rdclass: str = "IN") -> Request:
    q = dns.message.make_query(name, rdtype, rdclass)
    wire = q.to_wire()
    return Request(msg=dns.message.from_wire(wire), wire=wire, remote=("127.0.0.1", 40000),
                   local=("127.0.0.1", 53), proto=proto, server="dns://:53", zone=".",
                   max_size=65535 if proto == "tcp" else 512, start=time.perf_counter())


def controller(text: str, process: ProcessState | None = None) -> Controller:
    cfg = build_configs(corefile.parse(text), 53)[0]
    found = [d for d in cfg.directives if d.name == forward.NAME]
    return Controller(found, cfg.keys, "dns://:53", process or ProcessState(out=io.StringIO()))


class Chain:
    def __init__(self, text: str) -> None:
        self.process = ProcessState(out=io.StringIO())
        self.c = controller(text, self.process)
        self.next = Next()
        self.handler: Handler = forward.setup(self.c)(self.next)

    async def __call__(self, req: Request) -> Result:
        return await self.handler(req)

    async def close(self) -> None:
        await ProcessState.run_hooks(self.c.block.shutdown)

    def metric(self, name: str, key: tuple[str, ...] = ()) -> float:
        vec = self.process._metrics[name]  # test access to the registered vector
        if hasattr(vec, "count"):
            return float(vec.count(key))
        return float(vec.get(key))


def block(body: str) -> str:
    return f".:53 {{\n{body}\n}}\n"


# -- pass-through --------------------------------------------------------------------------------------------


async def test_reply_passed_through_unchanged() -> None:
    up = await Upstream(answer_a(ttl=123)).start()
    chain = Chain(block(f"forward . {up.addr}"))
    try:
        req = request("www.example.org.")
        res = await chain(req)
        assert res.msg is not None and res.plugin == "forward" and res.cache is None
        assert res.msg.id == req.msg.id and res.msg.flags & dns.flags.RA and not res.msg.flags & dns.flags.AA
        assert [rr.to_text() for rr in res.msg.answer] == ["www.example.org. 123 IN A 192.0.2.1"]
        assert up.count("udp") == 1
        assert up.queries[0][1].id != req.msg.id  # a fresh ID upstream
        assert res.msg.to_wire() == req.wire[:2] + up.sent[0][2:]  # the upstream's bytes, the client's ID
        res.msg.answer.clear()  # a plugin changing the reply gets its change rendered
        assert res.msg.to_wire() == dns.message.Message.to_wire(res.msg) != req.wire[:2] + up.sent[0][2:]
        assert chain.metric("coredns_proxy_request_duration_seconds", ("forward", up.addr, "NOERROR")) == 1
        res = await chain(request("www.example.org.", proto="tcp"))  # follows the client's transport
        assert res.msg is not None and up.count("tcp") == 1
        res = await chain(request("www.example.org."))
        assert chain.metric("coredns_proxy_conn_cache_hits_total", ("forward", up.addr, "udp")) == 1
        assert chain.metric("coredns_proxy_conn_cache_misses_total", ("forward", up.addr, "udp")) == 1
    finally:
        await chain.close()
        await up.close()


async def test_nxdomain_and_servfail_from_upstream_are_passed_through() -> None:
    up = await Upstream(rcode_reply(dns.rcode.NXDOMAIN)).start()
    chain = Chain(block(f"forward . {up.addr}"))
    try:
        res = await chain(request("nope.example.org."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN
        up.respond = rcode_reply(dns.rcode.SERVFAIL)
        res = await chain(request("nope.example.org."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.SERVFAIL and res.rcode == 0
    finally:
        await chain.close()
        await up.close()


async def test_truncated_udp_reply_retried_over_tcp_with_prefer_udp() -> None:
    def respond(q: dns.message.Message, proto: str) -> dns.message.Message:
        r = answer_a()(q, proto)
        assert isinstance(r, dns.message.Message)
        if proto == "udp":
            r.answer.clear()
            r.flags |= dns.flags.TC
        return r

    up = await Upstream(respond).start()
    plain = Chain(block(f"forward . {up.addr}"))
    prefer = Chain(block(f"forward . {up.addr} {{\n prefer_udp\n}}"))
    forced = Chain(block(f"forward . {up.addr} {{\n force_tcp\n prefer_udp\n}}"))
    try:
        res = await plain(request("big.example.org."))
        assert res.msg is not None and res.msg.flags & dns.flags.TC  # the client retries over TCP itself
        assert (up.count("udp"), up.count("tcp")) == (1, 0)
        res = await prefer(request("big.example.org.", proto="tcp"))
        assert res.msg is not None and not res.msg.flags & dns.flags.TC and len(res.msg.answer) == 1
        assert (up.count("udp"), up.count("tcp")) == (2, 1)
        res = await forced(request("big.example.org."))
        assert res.msg is not None and len(res.msg.answer) == 1
        assert (up.count("udp"), up.count("tcp")) == (2, 2)
    finally:
        for chain in (plain, prefer, forced):
            await chain.close()
        await up.close()


async def test_tcp_connection_reused_and_recovered_after_close() -> None:
    up = await Upstream(answer_a()).start()
    chain = Chain(block(f"forward . {up.addr} {{\n force_tcp\n}}"))
    try:
        for _ in range(3):
            res = await chain(request("www.example.org."))
            assert res.msg is not None and len(res.msg.answer) == 1
        assert chain.metric("coredns_proxy_conn_cache_hits_total", ("forward", up.addr, "tcp")) == 2
        await up.close()  # pooled connection now closed by the server side
        up2 = await Upstream(answer_a(ip="192.0.2.2"), port=up.port).start()
        try:
            res = await chain(request("www.example.org."))
            assert res.msg is not None and [r.to_text() for r in res.msg.answer] == [
                "www.example.org. 123 IN A 192.0.2.2"]
        finally:
            await up2.close()
    finally:
        await chain.close()


async def test_mismatched_reply_is_formerr() -> None:
    def respond(q: dns.message.Message, proto: str) -> dns.message.Message:
        return dns.message.make_response(dns.message.make_query("other.example.", "A", id=q.id))

    up = await Upstream(respond).start()
    chain = Chain(block(f"forward . {up.addr}"))
    try:
        res = await chain(request("www.example.org."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.FORMERR
        assert [q.name.to_text() for q in res.msg.question] == ["www.example.org."]
    finally:
        await chain.close()
        await up.close()


# -- limits, health, failover -------------------------------------------------------------------------------------


async def test_max_concurrent_overflow_is_refused() -> None:
    async def slow(q: dns.message.Message, proto: str) -> dns.message.Message | None:
        await asyncio.sleep(0.3)
        r = answer_a()(q, proto)
        assert isinstance(r, dns.message.Message)
        return r

    up = await Upstream(slow).start()
    chain = Chain(block(f"forward . {up.addr} {{\n max_concurrent 1\n}}"))
    try:
        first = asyncio.ensure_future(chain(request("a.example.org.")))
        await asyncio.sleep(0.05)
        second = await chain(request("b.example.org."))
        assert second.msg is None and second.rcode == dns.rcode.REFUSED
        assert second.error == "concurrent queries exceeded maximum 1"
        assert (await first).msg is not None
        assert chain.metric("coredns_forward_max_concurrent_rejects_total") == 1
        assert chain.metric("coredns_proxy_healthcheck_failures_total", ("forward", up.addr)) == 0
    finally:
        await chain.close()
        await up.close()


async def test_timeout_error_then_servfail() -> None:
    up = await Upstream(lambda q, p: None).start()
    chain = Chain(block(f"forward . {up.addr} {{\n read_timeout 150ms\n max_fails 0\n}}"))
    try:
        started = time.monotonic()
        res = await chain(request("www.example.org."))
        assert res.msg is None and res.rcode == dns.rcode.SERVFAIL
        assert res.error is not None and res.error.startswith("read udp 127.0.0.1:")
        assert res.error.endswith(f"->{up.addr}: i/o timeout")
        assert up.count() == 2  # max_connect_attempts defaults to 2 x upstreams
        assert time.monotonic() - started < 2
    finally:
        await chain.close()
        await up.close()


async def test_health_check_marks_down_and_up() -> None:
    dead_port = free_port()
    good = await Upstream(answer_a()).start()
    chain = Chain(block(f"forward . 127.0.0.1:{dead_port} {good.addr} {{\n policy sequential\n max_fails 1\n"
                        f" health_check 100ms\n}}"))
    f: forward.Forward = chain.handler.__self__  # type: ignore[attr-defined]
    dead = f.upstreams[0]
    revived: Upstream | None = None
    try:
        res = await chain(request("www.example.org."))  # refused by the dead one, answered by the next
        assert res.msg is not None and len(res.msg.answer) == 1
        deadline = time.monotonic() + 5
        while not dead.down(1):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert chain.metric("coredns_proxy_healthcheck_failures_total", ("forward", dead.addr)) >= 2
        before = good.count()
        res = await chain(request("www.example.org."))
        assert res.msg is not None and good.count() == before + 1
        revived = await Upstream(answer_a(ip="192.0.2.9"), port=dead_port).start()
        while dead.down(1):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert revived.count("udp", "NS") >= 1
        ns = next(q for _, q in revived.queries if q.question[0].rdtype == dns.rdatatype.NS)
        assert ns.question[0].name.to_text() == "." and ns.flags & dns.flags.RD
        res = await chain(request("www.example.org."))
        assert res.msg is not None and [r.to_text() for r in res.msg.answer] == [
            "www.example.org. 123 IN A 192.0.2.9"]
    finally:
        await chain.close()
        await good.close()
        if revived is not None:
            await revived.close()


async def test_all_down_tries_one_and_counts_broken_or_fails_fast() -> None:
    up = await Upstream(answer_a()).start()
    chain = Chain(block(f"forward . {up.addr}"))
    fast = Chain(block(f"forward . {up.addr} {{\n failfast_all_unhealthy_upstreams\n}}"))
    try:
        for c in (chain, fast):
            f: forward.Forward = c.handler.__self__  # type: ignore[attr-defined]
            f.upstreams[0].fails = 10
        res = await chain(request("www.example.org."))
        assert res.msg is not None and chain.metric("coredns_forward_healthcheck_broken_total") == 1
        res = await fast(request("www.example.org."))
        assert res.msg is None and res.rcode == dns.rcode.SERVFAIL and res.error == "no healthy proxies"
    finally:
        await chain.close()
        await fast.close()
        await up.close()


async def test_failover_tries_next_upstream_on_listed_rcodes() -> None:
    bad = await Upstream(rcode_reply(dns.rcode.SERVFAIL)).start()
    good = await Upstream(answer_a()).start()
    with_failover = Chain(block(f"forward . {bad.addr} {good.addr} {{\n policy sequential\n failover SERVFAIL\n}}"))
    without = Chain(block(f"forward . {bad.addr} {good.addr} {{\n policy sequential\n}}"))
    all_bad = Chain(block(f"forward . {bad.addr} {{\n failover SERVFAIL REFUSED\n}}"))
    try:
        res = await with_failover(request("www.example.org."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NOERROR and len(res.msg.answer) == 1
        res = await without(request("www.example.org."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.SERVFAIL
        res = await all_bad(request("www.example.org."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.SERVFAIL  # the last reply
    finally:
        for c in (with_failover, without, all_bad):
            await c.close()
        await bad.close()
        await good.close()


async def test_next_hands_over_to_the_following_forward_only() -> None:
    first = await Upstream(rcode_reply(dns.rcode.NXDOMAIN)).start()
    second = await Upstream(answer_a()).start()
    chain = Chain(block(f"forward . {first.addr} {{\n next NXDOMAIN\n}}\nforward . {second.addr}"))
    last = Chain(block(f"forward . {first.addr} {{\n next NXDOMAIN\n}}"))
    try:
        res = await chain(request("www.example.org."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NOERROR and second.count() == 1
        res = await last(request("www.example.org."))  # no following forward: the reply stands
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN and last.next.seen == []
    finally:
        await chain.close()
        await last.close()
        await first.close()
        await second.close()


async def test_from_and_except() -> None:
    up = await Upstream(answer_a()).start()
    chain = Chain(block(f"forward example.org {up.addr} {{\n except internal.example.org\n}}"))
    try:
        assert (await chain(request("www.example.org."))).msg is not None
        assert (await chain(request("a.internal.example.org."))).msg is None
        assert (await chain(request("www.example.com."))).msg is None
        assert chain.next.seen == ["a.internal.example.org.", "www.example.com."]
        assert up.count() == 1
    finally:
        await chain.close()
        await up.close()


async def test_chaos_class_enabled_and_forwarded() -> None:
    up = await Upstream(rcode_reply(dns.rcode.REFUSED)).start()
    chain = Chain(block(f"forward . {up.addr}"))
    try:
        assert "CH" in chain.c.block.classes
        res = await chain(request("version.bind.", "TXT", rdclass="CH"))
        assert res.msg is not None and up.queries[0][1].question[0].rdclass == dns.rdataclass.CH
    finally:
        await chain.close()
        await up.close()


# -- TO parsing ------------------------------------------------------------------------------------------------------


def test_resolv_conf_file_parsing(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# generated\nsearch default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\n"
                    "; comment\nnameserver fd00::a%eth0\noptions ndots:5\nnameserver 1.1.1.1 extra\n")
    assert forward.parse_to([str(conf)]) == [("10.96.0.10", 53), ("fd00::a", 53), ("1.1.1.1", 53)]
    assert forward.parse_to(["8.8.8.8", "dns://9.9.9.9:5353", "[::1]:53", "::1", str(conf)])[:4] == [
        ("8.8.8.8", 53), ("9.9.9.9", 5353), ("::1", 53), ("::1", 53)]
    empty = tmp_path / "empty.conf"
    empty.write_text("search x\n")
    with pytest.raises(SetupError, match=r"^plugin/forward: no nameservers found$"):
        forward.parse_to([str(empty)])
    with pytest.raises(SetupError) as err:
        forward.parse_to(["/nonexistent/resolv.conf"])
    assert str(err.value) == "plugin/forward: open /nonexistent/resolv.conf: no such file or directory"


def test_kind_default_forward_stanza(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 172.18.0.1\n")
    c = controller(block(f"forward . {conf} {{\n max_concurrent 1000\n}}"))
    (o,) = [forward.parse_stanza(c, d) for d in c.directives]
    assert (o.from_zone, o.to, o.max_concurrent, o.policy, o.max_fails) == (".", [("172.18.0.1", 53)], 1000,
                                                                            "random", 2)


def test_block_quirk_extra_tokens_become_properties() -> None:
    c = controller(block("forward . 127.0.0.1 {\n max_fails 3 force_tcp\n health_check 1s no_rec domain Ex.Org\n}"))
    o = forward.parse_stanza(c, c.directives[0])
    assert (o.max_fails, o.force_tcp, o.hc_interval, o.hc_recursion_desired, o.hc_domain) == (3, True, 1.0, False,
                                                                                             "ex.org.")


@pytest.mark.parametrize(("body", "message"), [
    ("forward", "plugin/forward: Corefile:2 - Error during parsing: Wrong argument count or unexpected line ending "
                "after 'forward'"),
    ("forward .", "plugin/forward: Corefile:2 - Error during parsing: Wrong argument count or unexpected line ending "
                  "after '.'"),
    ("forward . tls://1.1.1.1",
     "plugin/forward: 'tls' is not supported as a destination protocol by lighthouse-dns: tls://1.1.1.1"),
    ("forward . 127.0.0.1 {\n tls\n}", "plugin/forward: Corefile:3 - Error during parsing: property 'tls' is not "
                                        "supported by lighthouse-dns (no DNS-over-TLS upstreams, TO must be an "
                                        "address or a file)"),
    ("forward . 127.0.0.1 {\n policy fastest\n}",
     "plugin/forward: Corefile:3 - Error during parsing: unknown policy 'fastest'"),
    ("forward . 127.0.0.1 {\n bogus\n}", "plugin/forward: Corefile:3 - Error during parsing: unknown property 'bogus'"),
    ("forward . 127.0.0.1 {\n max_fails x\n}", 'plugin/forward: strconv.ParseUint: parsing "x": invalid syntax'),
    ("forward . 127.0.0.1 {\n max_fails\n}",
     "plugin/forward: Corefile:3 - Error during parsing: Wrong argument count or unexpected line ending after "
     "'max_fails'"),
    ("forward . 127.0.0.1 {\n force_tcp yes\n}",
     "plugin/forward: Corefile:3 - Error during parsing: Wrong argument count or unexpected line ending after "
     "'yes'"),
    ("forward . 127.0.0.1 {\n max_concurrent -1\n}", "plugin/forward: max_concurrent can't be negative: -1"),
    ("forward . 127.0.0.1 {\n health_check -1s\n}", "plugin/forward: health_check can't be negative: -1000000000"),
    ("forward . 127.0.0.1 {\n health_check 1s bogus\n}", "plugin/forward: health_check: unknown option bogus"),
    ("forward . 127.0.0.1 {\n expire -1s\n}", "plugin/forward: expire can't be negative: -1s"),
    ("forward . 127.0.0.1 {\n next NOPE\n}", "plugin/forward: NOPE is not a valid rcode"),
    ("forward . 127.0.0.1 {\n failover NOERROR\n}", "plugin/forward: NoError cannot be used in failover"),
    ("forward . 127.0.0.1 {\n except\n}",
     "plugin/forward: Corefile:3 - Error during parsing: Wrong argument count or unexpected line ending after "
     "'except'"),
    ("forward . " + " ".join(f"127.0.0.{i}" for i in range(1, 17)), "plugin/forward: more than 15 TOs configured: 16"),
])
def test_setup_errors(body: str, message: str) -> None:
    with pytest.raises(SetupError) as err:
        forward.setup(controller(block(body)))
    assert str(err.value) == message
