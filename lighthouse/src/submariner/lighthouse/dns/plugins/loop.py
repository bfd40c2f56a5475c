"""`loop`: detects forwarding loops at start-up by querying itself for `HINFO <rand>.<rand>.<zone>`.

Seeing its own probe name more than twice means queries come back to us: fatal, exit 1, with CoreDNS's
message. The probe runs for up to 30 s (one try per second until one gets an answer), then the plugin goes
quiet; a listener on port 0 is never probed. Probe answers are never cached.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from typing import Any

import dns.message
import dns.rdatatype

from submariner.lighthouse.dns.plugin import Controller, Handler, Request, Result, Wrapper

NAME = "loop"
ONCE = True
SYNC_SAFE = True  # the handler needs no task context (see plugin.py)
PROBE_WINDOW = 30.0


class Loop:
    def __init__(self, process: Any, zone: str, host: str, port: int) -> None:
        self.process = process
        self.zone = zone
        suffix = "" if zone == "." else zone
        self.qname = f"{random.getrandbits(63)}.{random.getrandbits(63)}.{suffix}"
        self.seen = 0
        self.disabled = False
        self.host = host
        self.port = port
        self.address = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        self.task: asyncio.Task[None] | None = None

    def wrap(self, next_handler: Handler) -> Handler:
        async def serve(req: Request) -> Result:
            if req.qtype != dns.rdatatype.HINFO or self.disabled:
                return await next_handler(req)
            name = req.name_lower
            if self.zone != "." and not (name == self.zone or name.endswith("." + self.zone)):
                return await next_handler(req)
            if name == self.qname:
                self.seen += 1
            if self.seen > 2:
                remote = f"{req.remote[0]}:{req.remote[1]}"
                self.process.fatal(f'Loop ({remote} -> {self.address}) detected for zone "{self.zone}", see '
                                   f'https://coredns.io/plugins/loop#troubleshooting. Query: "HINFO {self.qname}"',
                                   NAME)
            result = await next_handler(req)
            if name == self.qname:
                result.cache = None
            return result

        return serve

    def start(self) -> None:
        if self.port == 0:
            self.disabled = True  # CoreDNS probes ":0", fails for 30 s and never detects anything
            return
        self.task = asyncio.get_running_loop().create_task(self._probe())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _probe(self) -> None:
        deadline = time.monotonic() + PROBE_WINDOW
        target = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        while time.monotonic() < deadline:
            if await self._exchange(target):
                asyncio.get_running_loop().call_later(2.0, self._disable)
                break
            self.seen = 0
            await asyncio.sleep(1.0)
        self._disable()

    def _disable(self) -> None:
        self.disabled = True

    async def _exchange(self, target: str) -> bool:
        query = dns.message.make_query(self.qname, dns.rdatatype.HINFO).to_wire()
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in target else socket.AF_INET
        answered: asyncio.Future[bool] = loop.create_future()

        class _Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if not answered.done():
                    answered.set_result(True)

            def error_received(self, exc: Exception) -> None:
                if not answered.done():
                    answered.set_result(False)

        try:
            transport, _ = await loop.create_datagram_endpoint(_Client, remote_addr=(target, self.port),
                                                               family=family)
        except OSError:
            return False
        try:
            transport.sendto(query)
            return await asyncio.wait_for(answered, 2.0)
        except (TimeoutError, OSError):
            return False
        finally:
            transport.close()


def setup(c: Controller) -> Wrapper:
    d = c.directive()
    if d.args:
        raise d.arg_error(d.args[0])
    if d.block:
        raise d.arg_error("{")
    loop = Loop(c.process, c.zones[0] if c.keys else ".", c.listen_host, c.port if c.keys else 53)
    c.on_startup(loop.start)
    c.on_shutdown(loop.stop)
    return loop.wrap
