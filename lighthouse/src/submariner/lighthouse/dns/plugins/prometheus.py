"""`prometheus`: CoreDNS's per-query metrics and the `/metrics` endpoint (default `localhost:9153`).

Misses are recorded from the reply hook (what was actually written), hits from the fast-path observer, so
counts stay exact whether or not an answer came from the wire cache. Several blocks may share one address.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from submariner.lighthouse.dns.plugin import (
    Controller,
    Handler,
    Hit,
    Request,
    Result,
    Wrapper,
    split_host_port,
)
from submariner.lighthouse.dns.process import ReportKeys

NAME = "prometheus"
ONCE = True
DEFAULT_ADDR = "localhost:9153"


class MetricsEndpoint:
    """`GET /metrics` for the process registry (one per address, whatever the number of blocks)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def __call__(self) -> tuple[int, str, str]:
        return 200, generate_latest(self.registry).decode(), CONTENT_TYPE_LATEST

    def merge(self, other: object) -> None:
        """Every block serves the same registry: nothing to merge."""


class Metrics:
    def __init__(self, process: Any, zones: list[str]) -> None:
        self.process = process
        self.metrics = process.metrics
        self.zones = sorted(zones, key=len, reverse=True)

    def zone_of(self, name_lower: str) -> str:
        for zone in self.zones:
            if zone == "." or name_lower == zone or name_lower.endswith("." + zone):
                return zone
        return "."

    def wrap(self, next_handler: Handler) -> Handler:
        async def serve(req: Request) -> Result:
            req.after_reply(self.record)
            return await next_handler(req)

        return serve

    def record(self, req: Request, result: Result, wire: bytes) -> None:
        written = result.msg is not None and bool(wire)
        rcode = (wire[3] & 0x0F if len(wire) >= 4 else 0) if written else result.rcode
        if written and result.msg is not None and result.msg.edns >= 0:
            rcode = int(result.msg.rcode())
        keys = ReportKeys(req.server, self.zone_of(req.name_lower), req.proto, req.family, req.qtype, req.do,
                          rcode, result.plugin if written else "")
        self.metrics.report(keys, len(req.wire), len(wire) if written else 0, time.perf_counter() - req.start)

    def on_hit(self, hit: Hit) -> None:
        info = hit.info
        memo_key = (self, hit.proto, hit.family)
        fast = info.memo.get(memo_key)
        if fast is None:
            keys = ReportKeys(info.server, self.zone_of(info.name), hit.proto, hit.family, info.qtype, info.do,
                              info.rcode, info.plugin)
            fast = info.memo[memo_key] = _HitRecorder(self.metrics, keys, len(hit.query), len(hit.reply))
        fast.record(len(hit.query), len(hit.reply), time.perf_counter() - hit.start)


class _HitRecorder:
    """Direct references to the counters and histogram rows one cached answer updates on every hit."""

    __slots__ = ("do", "do_values", "dur_bounds", "dur_row", "req_row", "req_size", "requests", "resp_row",
                 "resp_size", "resp_values", "responses", "size_bounds", "values")

    def __init__(self, metrics: Any, keys: ReportKeys, req_size: int, resp_size: int) -> None:
        self.requests = keys.requests
        self.responses = keys.responses
        self.do = keys.do
        self.values = metrics.requests.values
        self.resp_values = metrics.responses.values
        self.do_values = metrics.do_requests.values
        self.dur_bounds = metrics.duration.bounds
        self.dur_row = _row(metrics.duration, keys.duration)
        self.size_bounds = metrics.request_size.bounds
        self.req_row = _row(metrics.request_size, keys.size)
        self.resp_row = _row(metrics.response_size, keys.size)
        self.req_size = (req_size, bisect_left(self.size_bounds, req_size))
        self.resp_size = (resp_size, bisect_left(self.size_bounds, resp_size))

    def record(self, req_size: int, resp_size: int, duration: float) -> None:
        values = self.values
        values[self.requests] = values.get(self.requests, 0.0) + 1
        responses = self.resp_values
        responses[self.responses] = responses.get(self.responses, 0.0) + 1
        if self.do is not None:
            do_values = self.do_values
            do_values[self.do] = do_values.get(self.do, 0.0) + 1
        row = self.dur_row
        row[bisect_left(self.dur_bounds, duration)] += 1
        row[-1] += duration
        size, index = self.req_size
        row = self.req_row
        row[index if req_size == size else bisect_left(self.size_bounds, req_size)] += 1
        row[-1] += req_size
        size, index = self.resp_size
        row = self.resp_row
        row[index if resp_size == size else bisect_left(self.size_bounds, resp_size)] += 1
        row[-1] += resp_size


def _row(vec: Any, key: tuple[str, ...]) -> list[float]:
    row: list[float] | None = vec.values.get(key)
    if row is None:
        row = vec.values[key] = [0.0] * (len(vec.bounds) + 2)
    return row


def setup(c: Controller) -> Wrapper:
    d = c.directive()
    addr = DEFAULT_ADDR
    if len(d.args) > 1:
        raise d.arg_error()
    if d.args:
        addr = d.args[0]
        try:
            split_host_port(addr)
        except ValueError as exc:
            raise d.error(str(exc)) from None
    for i, prop in enumerate(d.block):
        if prop[0] == "runtime_metrics" and len(prop) == 1:
            continue  # Go runtime metrics: the process_* and python_* collectors are always on
        raise d.error(f"unknown property '{prop[0]}'", d.block_line(i))
    c.add_http(addr, "/metrics", MetricsEndpoint(c.process.registry), NAME)
    metrics = Metrics(c.process, c.zones)
    c.add_observer(metrics)
    return metrics.wrap
