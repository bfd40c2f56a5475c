"""`health`: `GET /health` → 200 `OK` (default `:8080`), also during lameduck.

On SIGTERM the process sleeps `lameduck` before closing its listeners while DNS keeps answering, so clients
and load balancers drain. A self-probe every second feeds `coredns_health_request_duration_seconds`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from submariner.lighthouse.dns.plugin import Controller, Wrapper, parse_duration, split_host_port
from submariner.lighthouse.dns.process import CounterVec, HistogramVec

NAME = "health"
ONCE = False
DEFAULT_ADDR = ":8080"
PATH = "/health"
_TEXT = "text/plain; charset=utf-8"


def ok() -> tuple[int, str, str]:
    return 200, "OK", _TEXT


class Health:
    def __init__(self, process: Any, addr: str, lameduck: float) -> None:
        self.process = process
        self.addr = addr
        self.lameduck = lameduck
        self.task: asyncio.Task[None] | None = None
        self.duration = process.vec(HistogramVec(
            "coredns_health_request_duration_seconds", "Histogram of the time (in seconds) each request took.", (),
            tuple(0.00025 * 10**i for i in range(5))))
        self.failures = process.vec(CounterVec(
            "coredns_health_request_failures_total", "The number of times the health check failed.", ()))
        self.failures.values.setdefault((), 0.0)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._probe_forever())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def lameduck_sleep(self) -> None:
        if self.lameduck > 0:
            from submariner.lighthouse.dns.plugin import format_duration

            self.process.info(f"Going into lameduck mode for {format_duration(self.lameduck)}", NAME)
            await asyncio.sleep(self.lameduck)

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.probe()

    async def probe(self) -> bool:
        try:
            host, port = self.process.http.bound(self.addr)
        except KeyError:
            return False
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        start = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
            writer.write(f"GET {PATH} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            status = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            healthy = b" 200 " in status
        except (TimeoutError, OSError):
            healthy = False
        self.duration.observe((), time.perf_counter() - start)
        if not healthy:
            self.failures.inc(())
        return healthy


def parse(c: Controller) -> tuple[str, float]:
    addr, lameduck = DEFAULT_ADDR, 0.0
    for d in c.directives:  # several `health` lines: the last address wins
        if len(d.args) > 1:
            raise d.arg_error()
        if d.args:
            addr = d.args[0]
            try:
                split_host_port(addr)
            except ValueError as exc:
                raise d.error(str(exc)) from None
        for i, prop in enumerate(d.block):
            line = d.block_line(i)
            if prop[0] != "lameduck":
                raise d.arg_error(prop[-1], line)
            if len(prop) != 2:
                raise d.arg_error(prop[-1], line)
            try:
                lameduck = parse_duration(prop[1])
            except ValueError as exc:
                raise d.error(f"unable to parse lameduck duration value: '{prop[1]}' : {exc}", line) from None
    return addr, lameduck


def setup(c: Controller) -> Wrapper | None:
    addr, lameduck = parse(c)
    health = Health(c.process, addr, lameduck)
    c.add_http(addr, PATH, ok, NAME)
    c.on_startup(health.start)
    c.on_shutdown(health.stop)
    c.on_final_shutdown(health.lameduck_sleep)
    return None
