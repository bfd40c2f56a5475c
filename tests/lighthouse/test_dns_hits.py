"""Cache hits through real sockets: metrics stay exact although hits only count per cache entry (folded at scrape
time, on eviction, invalidation and reload), the batched UDP reader, IPv6 clients, and the synchronous lane."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from test_dns_plugins import samples

import dnstest
from submariner.lighthouse.dns import chain
from submariner.lighthouse.dns.plugin import (
    CachePolicy,
    CacheScope,
    Controller,
    Handler,
    Request,
    Result,
    Tally,
    Wrapper,
    reply_for,
)


@pytest.fixture
async def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dnstest.Harness]:
    monkeypatch.setitem(chain.REGISTRY, "lighthouse", dnstest.this_module())
    h = dnstest.Harness(tmp_path)
    yield h
    await h.stop()


class Rotating:
    """A stand-in data plugin: 3 rotating variants per name (tagged 0, 1, 2 for its own HitCounter), an
    optional wait, and a per-reply count of the hits folded into it."""

    def __init__(self, scope: CacheScope, wait: float = 0.0) -> None:
        self.scope = scope
        self.wait = wait
        self.calls = 0
        self.folded: dict[int, int] = {0: 0, 1: 0, 2: 0}
        self.seconds = 0.0

    def fold(self, tally: Tally) -> None:
        assert tally.tags is not None
        for j, count in enumerate(tally.counts):
            self.folded[tally.tags[j % len(tally.tags)]] += count
        self.seconds += tally.seconds

    def reply(self, req: Request, i: int) -> dns.message.Message:
        reply = reply_for(req)
        reply.answer.append(dns.rrset.from_text(req.qname, 30, "IN", "A", f"10.0.0.{i + 1}"))
        return reply

    def factory(self, c: Controller) -> Wrapper:
        c.add_observer(self)

        def wrap(next_handler: Handler) -> Handler:
            async def serve(req: Request) -> Result:
                self.calls += 1
                if self.wait:
                    await asyncio.sleep(self.wait)
                policy = CachePolicy(self.scope, variants=[self.reply(req, 1), self.reply(req, 2)],
                                     hit_tags={self: [0, 1, 2]})
                return Result(0, self.reply(req, 0), plugin="lighthouse", cache=policy)

            return serve

        return wrap


def metric(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_stay_exact_across_eviction_invalidation_reload_and_scrapes(harness: dnstest.Harness) -> None:
    scope = CacheScope("t")
    plugin = Rotating(scope)
    corefile = "example.org {\n    prometheus 127.0.0.1:0\n    lighthouse\n}\n"
    await harness.start(corefile, plugin=plugin.factory)
    assert harness.server.runtime is not None
    harness.server.runtime.udp_cache.max_entries = 3  # 8 names: entries are evicted (and folded) all the time
    sizes: dict[int, int] = {}
    addresses: dict[str, int] = {}
    sent = 0

    async def ask(name: str) -> None:
        nonlocal sent
        q = dns.message.make_query(name, "A")
        r = await harness.udp(q)
        wire = r.to_wire()
        sizes[len(wire)] = sizes.get(len(wire), 0) + 1
        addresses[r.answer[0][0].address] = addresses.get(r.answer[0][0].address, 0) + 1
        sent += 1

    for _ in range(4):
        for i in range(8):
            await ask(f"n{i}.example.org.")
    assert (await harness.http("127.0.0.1:0", "/metrics"))[0] == 200  # a scrape in the middle folds too
    scope.invalidate()  # every entry is stale: the next query of each name is a miss again
    for i in range(8):
        for _ in range(3):
            await ask(f"n{i}.example.org.")
    assert await harness.reload(corefile + "\n")  # a new runtime: the old caches are folded
    for _ in range(5):
        await ask("n0.example.org.")
    _, body = await harness.http("127.0.0.1:0", "/metrics")
    _, again = await harness.http("127.0.0.1:0", "/metrics")  # scraping does not count anything twice
    for text in (body, again):
        found = samples(text)
        z = {"server": "dns://:0", "zone": "example.org.", "view": ""}
        assert metric(found, "coredns_dns_requests_total", **z, proto="udp", family="1", type="A") == sent
        assert metric(found, "coredns_dns_responses_total", **z, rcode="NOERROR", plugin="lighthouse") == sent
        assert metric(found, "coredns_dns_request_duration_seconds_count", **z) == sent
        assert metric(found, "coredns_dns_request_size_bytes_count", **z, proto="udp") == sent
        assert metric(found, "coredns_dns_response_size_bytes_count", **z, proto="udp") == sent
        assert metric(found, "coredns_dns_response_size_bytes_sum", **z, proto="udp") == sum(
            size * n for size, n in sizes.items())
        assert metric(found, "coredns_dns_request_duration_seconds_sum", **z) > 0
    misses = plugin.calls
    assert sum(plugin.folded.values()) == sent - misses  # every hit, folded exactly once
    assert {f"10.0.0.{j + 1}": plugin.folded[j] for j in range(3)} == {
        ip: n - (misses if ip == "10.0.0.1" else 0) for ip, n in addresses.items()}  # per served variant
    assert plugin.seconds > 0


async def test_batched_reader_answers_bursts(harness: dnstest.Harness) -> None:
    """`bind 127.0.0.1`: the IPv4 fast reader drains many datagrams per wake-up."""
    scope = CacheScope("t")
    plugin = Rotating(scope)
    await harness.start("example.org {\n    bind 127.0.0.1\n    prometheus 127.0.0.1:0\n    lighthouse\n}\n",
                        plugin=plugin.factory)
    server = harness.server
    assert server._reader == server._read_fast
    await harness.udp(dns.message.make_query("www.example.org.", "A"))
    loop = asyncio.get_running_loop()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    client.setblocking(False)
    try:
        client.connect(("127.0.0.1", harness.port))
        q = dns.message.make_query("www.example.org.", "A")
        count = 500
        for i in range(count):
            q.id = i
            client.send(q.to_wire())
        ids: set[int] = set()
        while len(ids) < count:
            data = await asyncio.wait_for(loop.sock_recv(client, 4096), 2)
            ids.add(dns.message.from_wire(data).id)
    finally:
        client.close()
    assert ids == set(range(count)) and plugin.calls == 1
    found = samples((await harness.http("127.0.0.1:0", "/metrics"))[1])
    z = {"server": "dns://127.0.0.1:0", "zone": "example.org.", "view": ""}
    assert metric(found, "coredns_dns_requests_total", **z, proto="udp", family="1", type="A") == count + 1
    assert sum(plugin.folded.values()) == count


async def test_ipv6_clients_are_family_2_on_hits(harness: dnstest.Harness) -> None:
    scope = CacheScope("t")
    plugin = Rotating(scope)
    await harness.start("example.org {\n    prometheus 127.0.0.1:0\n    lighthouse\n}\n", plugin=plugin.factory)
    for host in ("::1", "127.0.0.1", "::1", "::1"):
        r = await dnstest.raw_udp(dns.message.make_query("www.example.org.", "A").to_wire(), harness.port, host=host)
        assert r is not None
    q = dns.message.make_query("www.example.org.", "A")
    assert (await dns.asyncquery.tcp(q, "::1", port=harness.port, timeout=2)).answer
    found = samples((await harness.http("127.0.0.1:0", "/metrics"))[1])
    z = {"server": "dns://:0", "zone": "example.org.", "view": ""}
    assert metric(found, "coredns_dns_requests_total", **z, proto="udp", family="2", type="A") == 3
    assert metric(found, "coredns_dns_requests_total", **z, proto="udp", family="1", type="A") == 1
    assert metric(found, "coredns_dns_requests_total", **z, proto="tcp", family="2", type="A") == 1


@pytest.mark.parametrize("sync", [True, False])
async def test_chains_that_wait_continue_in_a_task(harness: dnstest.Harness, monkeypatch: pytest.MonkeyPatch,
                                                   sync: bool) -> None:
    monkeypatch.setattr(dnstest, "SYNC_SAFE", sync)
    scope = CacheScope("t")
    plugin = Rotating(scope, wait=0.02)
    await harness.start("example.org {\n    errors\n    prometheus 127.0.0.1:0\n    lighthouse\n}\n",
                        plugin=plugin.factory)
    assert harness.server.blocks[0].sync is sync
    replies = await asyncio.gather(*(harness.udp(dns.message.make_query(f"n{i}.example.org.", "A"))
                                     for i in range(20)))
    assert all(r.answer for r in replies) and plugin.calls == 20
    assert not harness.server._tasks


async def test_sync_lane_needs_no_task(harness: dnstest.Harness) -> None:
    scope = CacheScope("t")
    plugin = Rotating(scope)
    await harness.start("example.org {\n    lighthouse\n}\n", plugin=plugin.factory)
    assert harness.server.blocks[0].sync
    created: list[Any] = []
    loop = asyncio.get_running_loop()
    real = loop.create_task

    def spy(coro: Any, **kw: Any) -> Any:
        created.append(coro)
        return real(coro, **kw)

    loop.create_task = spy  # type: ignore[method-assign]
    try:
        for i in range(5):
            r = await harness.udp(dns.message.make_query(f"n{i}.example.org.", "A"))
            assert r.answer[0].rdtype == dns.rdatatype.A and r.answer[0].rdclass == dns.rdataclass.IN
    finally:
        loop.create_task = real  # type: ignore[method-assign]
    assert plugin.calls == 5 and not [c for c in created if "_run" in repr(c) or "_continue" in repr(c)]
