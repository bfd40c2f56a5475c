"""Helpers for the DNS server tests: an in-process `lighthouse-dns` (the real App wiring) on port 0, raw and
dnspython clients, and a stand-in plugin whose behaviour each test supplies.

The stand-in registers as directive `lighthouse` (its slot in the chain order) for the duration of a test:
`Harness.start(corefile, plugin=factory)` with `factory(controller) -> Wrapper`.
"""

from __future__ import annotations

import asyncio
import io
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.message

from submariner.lighthouse.dns.cli import App
from submariner.lighthouse.dns.plugin import Controller, Wrapper
from submariner.lighthouse.dns.process import ProcessState
from submariner.lighthouse.dns.server import DnsServer

# -- the stand-in plugin (this module is its module) ---------------------------------------------------------
NAME = "lighthouse"
ONCE = False
SYNC_SAFE = True  # stand-ins need no task context (a test sets False to check the task path)
PLUGIN_KEY = "test.plugin"


def setup(c: Controller) -> Wrapper | None:
    factory: Callable[[Controller], Wrapper | None] = c.process.singletons[PLUGIN_KEY]
    return factory(c)


# -- harness ------------------------------------------------------------------------------------------------
class Harness:
    """One in-process server process: App + ProcessState, stdout captured."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.out = io.StringIO()
        self.process = ProcessState(out=self.out)
        self.corefile = tmp / "Corefile"
        self.app: App | None = None

    async def start(self, text: str, plugin: Callable[[Controller], Wrapper | None] | None = None) -> Harness:
        if plugin is not None:
            self.process.singletons[PLUGIN_KEY] = plugin
        self.corefile.write_text(text)
        self.app = App(str(self.corefile), 0, self.process)
        self.process.fatal_handler = self._fatal
        self.fatal: list[str] = []
        await self.app.start()
        return self

    def _fatal(self, text: str) -> None:
        self.fatal.append(text)

    async def reload(self, text: str) -> bool:
        assert self.app is not None
        self.corefile.write_text(text)
        return await self.app.reload()

    async def stop(self) -> None:
        if self.app is not None:
            for server in list(self.app.servers.values()):
                await server.close()
            self.app.servers.clear()
            await self.process.run_hooks(h for b in self.process.blocks for h in b.shutdown)
            await self.process.http.close()

    @property
    def server(self) -> DnsServer:
        assert self.app is not None
        return next(iter(self.app.servers.values()))

    @property
    def port(self) -> int:
        return self.server.bound_port

    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()

    async def udp(self, q: dns.message.Message, timeout: float = 2.0) -> dns.message.Message:
        return await dns.asyncquery.udp(q, "127.0.0.1", port=self.port, timeout=timeout, ignore_unexpected=True)

    async def tcp(self, q: dns.message.Message, timeout: float = 2.0) -> dns.message.Message:
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=self.port, timeout=timeout)

    async def raw_udp(self, data: bytes, timeout: float = 1.0) -> bytes | None:
        return await raw_udp(data, self.port, timeout)

    def http_url(self, addr: str, path: str) -> str:
        host, port = self.process.http.bound(addr)
        return f"http://127.0.0.1:{port}{path}" if host in ("0.0.0.0", "::", "") else f"http://{host}:{port}{path}"

    async def http(self, addr: str, path: str, method: str = "GET") -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.request(method, self.http_url(addr, path)) as resp:
            return resp.status, await resp.text()


async def raw_udp(data: bytes, port: int, timeout: float = 1.0, host: str = "127.0.0.1") -> bytes | None:
    """Send raw bytes, return the first datagram back (None on timeout)."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, reply: bytes, addr: Any) -> None:
            if not got.done():
                got.set_result(reply)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(host, port))
    try:
        transport.sendto(data)
        return await asyncio.wait_for(got, timeout)
    except TimeoutError:
        return None
    finally:
        transport.close()


def raw_tcp_many(port: int, messages: list[bytes], timeout: float = 3.0) -> list[bytes]:
    """Several queries on one TCP connection (blocking; run in a thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        for m in messages:
            s.sendall(len(m).to_bytes(2, "big") + m)
        replies = []
        buf = b""
        while len(replies) < len(messages):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                size = int.from_bytes(buf[:2], "big")
                replies.append(buf[2:2 + size])
                buf = buf[2 + size:]
        return replies


def this_module() -> str:
    """Module path of this file as importable (for chain.REGISTRY)."""
    return __name__ if __name__ != "__main__" else Path(sys.argv[0]).stem
