"""`prometheus`: CoreDNS's per-query metrics and the `/metrics` endpoint (default `localhost:9153`).

Misses are recorded from the reply hook (what was actually written). Hits cost nothing here: the answer cache
counts them per entry and reply variant, and this plugin, a `HitCounter`, folds those counts into the same
counters and histograms at scrape time (and when an entry leaves the cache), so counts stay exact whether or
not an answer came from the wire cache. Request and response sizes of a hit are those of the entry's query
key and reply, so the size histograms are exact too. `coredns_dns_request_duration_seconds`: the server
measures the time it spends on hits once per batch of datagrams (a hit takes microseconds; a batch up to
`server.READ_BATCH` datagrams) and spreads it evenly over the hits, so the histogram's sum is the measured
time, and every hit is counted in the first bucket (le 0.00025 s), which is where each of them falls.
Several blocks may share one address.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from submariner.lighthouse.dns.plugin import (
    AnswerInfo,
    Controller,
    Handler,
    Request,
    Result,
    Tally,
    Wrapper,
    split_host_port,
)
from submariner.lighthouse.dns.process import ReportKeys

NAME = "prometheus"
ONCE = True
SYNC_SAFE = True  # the handler needs no task context (see plugin.py)
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
        self._keys: dict[tuple[Any, ...], ReportKeys] = {}  # label values -> their tuples, built once

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
        labels = (req.server, self.zone_of(req.name_lower), req.proto, req.family, req.qtype, req.do, rcode,
                  result.plugin if written else "")
        keys = self._keys.get(labels)
        if keys is None:
            if len(self._keys) >= 4096:
                self._keys.clear()
            keys = self._keys[labels] = ReportKeys(*labels)
        self.metrics.report(keys, len(req.wire), len(wire) if written else 0, time.perf_counter() - req.start)

    def fold(self, tally: Tally) -> None:
        """Hits of one cached answer since its last fold (see the module docstring)."""
        info = tally.info
        if info is None or not tally.total:
            return
        memo_key = (self, tally.proto)
        fast = info.memo.get(memo_key)
        if fast is None:
            fast = info.memo[memo_key] = _HitRecorder(self.metrics, info, tally.proto)
        fast.record(tally)


class _HitRecorder:
    """Direct references to the counters and histogram rows the hits of answers with one AnswerInfo update."""

    __slots__ = ("do", "do_values", "dur_row", "req_row", "requests", "requests6", "resp_row", "resp_values",
                 "responses", "size_bounds", "values")

    def __init__(self, metrics: Any, info: AnswerInfo, proto: str) -> None:
        v4 = ReportKeys(info.server, info.zone, proto, 1, info.qtype, info.do, info.rcode, info.plugin)
        v6 = ReportKeys(info.server, info.zone, proto, 2, info.qtype, info.do, info.rcode, info.plugin)
        self.requests = v4.requests
        self.requests6 = v6.requests
        self.responses = v4.responses
        self.do = v4.do
        self.values = metrics.requests.values
        self.resp_values = metrics.responses.values
        self.do_values = metrics.do_requests.values
        self.dur_row = _row(metrics.duration, v4.duration)
        self.size_bounds = metrics.request_size.bounds
        self.req_row = _row(metrics.request_size, v4.size)
        self.resp_row = _row(metrics.response_size, v4.size)

    def record(self, t: Tally) -> None:
        n = t.total
        v4 = n - t.v6
        values = self.values
        if v4:
            values[self.requests] = values.get(self.requests, 0.0) + v4
        if t.v6:
            values[self.requests6] = values.get(self.requests6, 0.0) + t.v6
        responses = self.resp_values
        responses[self.responses] = responses.get(self.responses, 0.0) + n
        if self.do is not None:
            do_values = self.do_values
            do_values[self.do] = do_values.get(self.do, 0.0) + n
        row = self.dur_row
        row[0] += n  # every hit is well below the first bound (0.25 ms): see the module docstring
        row[-1] += t.seconds
        bounds = self.size_bounds
        row = self.req_row
        row[bisect_left(bounds, t.query_size)] += n
        row[-1] += n * t.query_size
        row = self.resp_row
        for count, size in zip(t.counts, t.sizes, strict=False):
            if count:
                row[bisect_left(bounds, size)] += count
                row[-1] += count * size


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
