"""Malformed input never breaks the server: >100,000 random and mutated packets through the same
`handle_datagram` the UDP protocol calls (no sockets), hypothesis-generated packets, a TCP pass, and a
socket-level smoke test; afterwards the server must still answer."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import itertools
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import dns.message
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dnstest
from submariner.lighthouse.dns import chain, config, corefile
from submariner.lighthouse.dns.process import ProcessState
from submariner.lighthouse.dns.server import DnsServer

REPO = Path(__file__).resolve().parents[2]
COREFILE = """\
example.org {
    errors
    log
    prometheus 127.0.0.1:0
    any
    loadbalance
    whoami
}
sub.example.org {
    erratic {
        drop 3
        large
    }
}
. {
    any
    loop
    whoami
}
"""
NAMES = ["example.org.", "www.example.org.", "x.sub.example.org.", "elsewhere.net.", "."]


def fuzz_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dns_fuzz", REPO / "scripts" / "dns_fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["dns_fuzz"] = module
    spec.loader.exec_module(module)
    return module


class Unbound:
    """A `DnsServer` configured but not bound: replies are captured instead of sent."""

    def __init__(self) -> None:
        self.process = ProcessState(out=io.StringIO())
        self.process.fatal_handler = lambda text: None
        blocks = corefile.parse(COREFILE, "Corefile", known_directives=chain.KNOWN)
        self.server = DnsServer("", 0, self.process)
        self.server.configure(config.build_configs(blocks, 0))
        self.replies = 0
        self.server.set_udp_sender(self._capture)
        self.last: bytes = b""

    def _capture(self, data: bytes | bytearray, addr: Any) -> None:
        self.replies += 1
        self.last = bytes(data)

    async def settle(self) -> None:
        while self.server._tasks:
            await asyncio.sleep(0)
        self.process.out = io.StringIO()  # keep the log sink small

    async def still_answers(self) -> None:
        for name, rdtype in (("example.org.", "ANY"), ("www.example.org.", "A")):
            q = dns.message.make_query(name, rdtype)
            before = self.replies
            self.server.handle_datagram(q.to_wire(), ("127.0.0.1", 40000))
            await self.settle()
            assert self.replies == before + 1
            assert dns.message.from_wire(self.last).id == q.id


@pytest.fixture
async def unbound() -> AsyncIterator[Unbound]:
    u = Unbound()
    yield u
    await u.settle()


async def feed(u: Unbound, packets: Any, count: int, addr: tuple[str, int] = ("127.0.0.1", 40000),
               batch: int = 500) -> None:
    handle: Callable[[bytes, Any], None] = u.server.handle_datagram
    for chunk_start in range(0, count, batch):
        for packet in itertools.islice(packets, min(batch, count - chunk_start)):
            handle(packet, addr)
        await u.settle()


async def test_hundred_thousand_mutated_packets_in_process(unbound: Unbound) -> None:
    errors: list[Any] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
    fuzz = fuzz_module()
    start = time.monotonic()
    total = 120_000
    await feed(unbound, fuzz.packets(1, NAMES), total // 2)
    await feed(unbound, fuzz.packets(2, NAMES), total // 2, addr=("::1", 40001))
    elapsed = time.monotonic() - start
    print(f"\nfuzz: {total} packets in {elapsed:.1f} s, {unbound.replies} replies, "
          f"{unbound.process.metrics.panics.get(())} plugin panics")
    assert elapsed < 60
    assert unbound.server.internal_errors == 0
    assert not errors
    assert unbound.replies > total // 4
    await unbound.still_answers()


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.binary(max_size=600), min_size=1, max_size=40))
def test_hypothesis_random_bytes(packets: list[bytes]) -> None:
    async def run() -> None:
        u = Unbound()
        for packet in packets:
            u.server.handle_datagram(packet, ("127.0.0.1", 40000))
            u.server.handle_datagram(b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + packet,
                                     ("127.0.0.1", 40000))
        await u.settle()
        assert u.server.internal_errors == 0
        await u.still_answers()

    asyncio.run(run())


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_hypothesis_mutated_queries(data: st.DataObject) -> None:
    fuzz = fuzz_module()
    seed = data.draw(st.integers(0, 2**32))
    import random

    rng = random.Random(seed)
    base = fuzz.valid_query(rng, NAMES)
    edits = data.draw(st.lists(st.tuples(st.integers(0, 700), st.integers(0, 255)), max_size=6))
    packet = bytearray(base)
    for pos, value in edits:
        if packet:
            packet[pos % len(packet)] = value

    async def run() -> None:
        u = Unbound()
        u.server.handle_datagram(bytes(packet), ("127.0.0.1", 40000))
        u.server.handle_stream(bytes(packet), ("127.0.0.1", 40000), lambda wire: None)
        await u.settle()
        assert u.server.internal_errors == 0

    asyncio.run(run())


async def test_tcp_path_with_mutated_packets(unbound: Unbound) -> None:
    fuzz = fuzz_module()
    sent: list[bytes] = []
    stream = fuzz.packets(3, NAMES)
    for i, packet in enumerate(itertools.islice(stream, 10_000)):
        unbound.server.handle_stream(packet, ("127.0.0.1", 40000), sent.append)
        if i % 500 == 0:
            await unbound.settle()
    await unbound.settle()
    assert unbound.server.internal_errors == 0 and sent
    await unbound.still_answers()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[dnstest.Harness]:
    h = dnstest.Harness(tmp_path)
    yield h
    await h.stop()


async def test_socket_level_smoke(harness: dnstest.Harness) -> None:
    await harness.start(COREFILE)
    fuzz = fuzz_module()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       remote_addr=("127.0.0.1", harness.port))
    try:
        for i, packet in enumerate(itertools.islice(fuzz.packets(4, NAMES), 5000)):
            transport.sendto(packet)
            if i % 200 == 0:
                await asyncio.sleep(0.005)
    finally:
        transport.close()
    await asyncio.sleep(0.2)
    r = await harness.udp(dns.message.make_query("example.org.", "ANY"))
    assert r.answer and harness.server.internal_errors == 0
    r = await harness.tcp(dns.message.make_query("www.example.org.", "A"))
    assert r.additional


def test_fast_query_parser_agrees_with_dnspython() -> None:
    from submariner.lighthouse.dns.answers import parse_query

    fuzz = fuzz_module()
    compared = 0
    for packet in itertools.islice(fuzz.packets(5, NAMES), 30_000):
        if len(packet) < 12 or packet[2] & 0x80 or (packet[2] >> 3) & 0xF not in (0, 4):
            continue  # the server answers these before parsing (drop, NOTIMP)
        try:
            expected = dns.message.from_wire(packet, ignore_trailing=True)
        except Exception:
            expected = None
        try:
            got = parse_query(packet)
        except Exception:
            got = None
        assert (got is None) == (expected is None), packet
        if got is not None and expected is not None:
            compared += 1
            assert got == expected, packet
            assert (got.edns, got.payload, got.ednsflags, got.options, got.flags, got.request_payload) == (
                expected.edns, expected.payload, expected.ednsflags, expected.options, expected.flags,
                expected.request_payload), packet
    assert compared > 5_000
