"""What every server block of one `lighthouse-dns` process shares: metrics, HTTP endpoints, logs, hooks.

The DNS metrics are CoreDNS's (names, labels, buckets) but stored in plain dicts and exported by a custom
collector: a query costs a few dict updates instead of prometheus_client's locked child objects. Metrics live
as long as the process, so they survive reloads (also failed ones), as in CoreDNS.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import platform
import sys
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TextIO, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from submariner.lighthouse.dns.plugin import BlockHooks, Hook, HttpHandler, HttpRoute, split_host_port

VERSION = "0.1.0"

#: `plugin.TimeBuckets`: 0.25 ms doubling, 16 buckets (to ~8 s).
TIME_BUCKETS: tuple[float, ...] = tuple(0.00025 * 2**i for i in range(16))
#: `plugin.SizeBuckets` for request and response sizes.
SIZE_BUCKETS: tuple[float, ...] = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3, 64e3)

#: Query types that get their own `type` label; every other type is counted as "other".
MONITORED_TYPES = frozenset({
    "A", "AAAA", "CNAME", "DNSKEY", "DS", "MX", "NSEC3", "NSEC", "NS", "PTR", "RRSIG", "SOA", "SRV", "TXT",
    "HTTPS", "SVCB", "IXFR", "AXFR", "ANY",
})

#: miekg/dns RcodeToString (16 is BADSIG there, not BADVERS).
RCODE_TEXT = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
    7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADSIG", 17: "BADKEY", 18: "BADTIME",
    19: "BADMODE", 20: "BADNAME", 21: "BADALG", 22: "BADTRUNC", 23: "BADCOOKIE",
}


def rcode_text(rcode: int) -> str:
    return RCODE_TEXT.get(rcode) or str(rcode)


_TYPE_TEXT: dict[int, str] = {}


def type_text(rdtype: int) -> str:
    """Mnemonic of a query type ("A", "TYPE65534"), memoised: it is on every log line."""
    text = _TYPE_TEXT.get(rdtype)
    if text is None:
        import dns.rdatatype

        text = dns.rdatatype.to_text(rdtype)  # type: ignore[arg-type]
        _TYPE_TEXT[rdtype] = text
    return text


def type_label(rdtype: int) -> str:
    text = type_text(rdtype)
    return text if text in MONITORED_TYPES else "other"


def class_text(rdclass: int) -> str:
    import dns.rdataclass

    return dns.rdataclass.to_text(rdclass)  # type: ignore[arg-type]


class CounterVec:
    """A labelled counter: `inc(key)` with a tuple of label values."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def get(self, key: tuple[str, ...]) -> float:
        return self.values.get(key, 0.0)

    def family(self) -> Metric:
        fam = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, value in self.values.items():
            fam.add_metric(list(key), value)
        return fam


class GaugeVec(CounterVec):
    def set(self, key: tuple[str, ...], value: float) -> None:
        self.values[key] = value

    def family(self) -> Metric:
        fam = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, value in self.values.items():
            fam.add_metric(list(key), value)
        return fam


class HistogramVec:
    """A labelled histogram with fixed buckets; per key: bucket counts (non-cumulative) and the sum."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = list(buckets)
        self.values: dict[tuple[str, ...], list[float]] = {}  # [count per bucket..., +Inf, sum]

    def observe(self, key: tuple[str, ...], value: float) -> None:
        row = self.values.get(key)
        if row is None:
            row = self.values[key] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def count(self, key: tuple[str, ...]) -> float:
        row = self.values.get(key)
        return sum(row[:-1]) if row else 0.0

    def family(self) -> Metric:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, row in self.values.items():
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(self.bounds, row, strict=False):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
            cumulative += row[len(self.bounds)]
            buckets.append(("+Inf", cumulative))
            fam.add_metric(list(key), buckets, sum_value=row[-1])
        return fam


Vec = CounterVec | HistogramVec


class FastCollector:
    """Exports a set of dict-backed vectors through a prometheus_client registry.

    `before` runs first on every collect: the DNS servers fold the hits their answer caches counted since
    the last scrape into the vectors (see `plugin.HitCounter`), so the exported values are exact.
    """

    def __init__(self) -> None:
        self.vectors: list[Vec] = []
        self.before: list[Callable[[], None]] = []

    def add(self, vec: Vec) -> None:
        self.vectors.append(vec)

    def describe(self) -> Iterator[Metric]:
        for vec in self.vectors:
            kind = "histogram" if isinstance(vec, HistogramVec) else "gauge" if isinstance(vec, GaugeVec) \
                else "counter"
            yield Metric(vec.name.removesuffix("_total") if kind == "counter" else vec.name, vec.documentation, kind)

    def collect(self) -> Iterator[Metric]:
        for hook in self.before:
            hook()
        for vec in self.vectors:
            yield vec.family()


class ReportKeys:
    """Precomputed label tuples for one (server, zone, proto, family, type, rcode, plugin) combination."""

    __slots__ = ("do", "duration", "requests", "responses", "size")

    def __init__(self, server: str, zone: str, proto: str, family: int, qtype: int, do: bool, rcode: int,
                 plugin: str) -> None:
        view = ""
        self.requests = (server, zone, view, proto, str(family), type_label(qtype))
        self.duration = (server, zone, view)
        self.size = (server, zone, view, proto)
        self.responses = (server, zone, view, rcode_text(rcode), plugin)
        self.do = self.duration if do else None


class ServerMetrics:
    """CoreDNS's server metrics (plugin/metrics/vars), recorded by `prometheus` and for dropped queries."""

    def __init__(self, registry: CollectorRegistry) -> None:
        c = self.collector = FastCollector()
        sz = ("server", "zone", "view")
        self.requests = CounterVec("coredns_dns_requests_total",
                                   "Counter of DNS requests made per zone, protocol and family.",
                                   (*sz, "proto", "family", "type"))
        self.do_requests = CounterVec("coredns_dns_do_requests_total",
                                      "Counter of DNS requests with DO bit set per zone.", sz)
        self.duration = HistogramVec("coredns_dns_request_duration_seconds",
                                     "Histogram of the time (in seconds) each request took per zone.", sz,
                                     TIME_BUCKETS)
        self.request_size = HistogramVec("coredns_dns_request_size_bytes",
                                         "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
                                         (*sz, "proto"), SIZE_BUCKETS)
        self.response_size = HistogramVec("coredns_dns_response_size_bytes", "Size of the returned response in bytes.",
                                          (*sz, "proto"), SIZE_BUCKETS)
        self.responses = CounterVec("coredns_dns_responses_total", "Counter of response status codes.",
                                    (*sz, "rcode", "plugin"))
        self.panics = CounterVec("coredns_panics_total", "A metrics that counts the number of panics.", ())
        self.build_info = GaugeVec("coredns_build_info",
                                   "A metric with a constant '1' value labeled by version, revision, and goversion "
                                   "from which CoreDNS was built.", ("version", "revision", "goversion"))
        self.plugin_enabled = GaugeVec("coredns_plugin_enabled",
                                       "A metric that indicates whether a plugin is enabled on per server and zone "
                                       "basis.", ("server", "zone", "view", "name"))
        self.reload_failed = CounterVec("coredns_reload_failed_total",
                                        "Counter of the number of failed reload attempts.", ())
        for vec in (self.requests, self.do_requests, self.duration, self.request_size, self.response_size,
                    self.responses, self.panics, self.build_info, self.plugin_enabled, self.reload_failed):
            c.add(vec)
        self.panics.values[()] = 0.0
        self.reload_failed.values[()] = 0.0
        self.build_info.set((VERSION, "", f"python{platform.python_version()}"), 1.0)
        registry.register(c)

    def report(self, keys: ReportKeys, req_size: int, resp_size: int, duration: float) -> None:
        """vars.Report: one query's counters and histograms."""
        if keys.do is not None:
            self.do_requests.inc(keys.do)
        self.requests.inc(keys.requests)
        self.duration.observe(keys.duration, duration)
        self.response_size.observe(keys.size, resp_size)
        self.request_size.observe(keys.size, req_size)
        self.responses.inc(keys.responses)


class _Site:
    """One HTTP listener (aiohttp low-level server) and its current path table."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.routes: dict[str, HttpHandler] = {}
        self.server: asyncio.base_events.Server | None = None
        self.web: web.Server | None = None
        self.bound: tuple[str, int] = ("", 0)

    async def start(self) -> None:
        host, port = split_host_port(self.addr)
        self.web = web.Server(self._handle, access_log=None)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self.web, host or None, port, reuse_address=True)
        sock = self.server.sockets[0].getsockname()
        self.bound = (str(sock[0]), int(sock[1]))

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="404 page not found\n")
        status, body, ctype = handler()
        return web.Response(status=status, body=body.encode(), headers={"Content-Type": ctype})

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self.web is not None:
            await self.web.shutdown(1.0)
        self.server = None


class HttpEndpoints:
    """HTTP listeners by configured address; a reload swaps path tables and keeps addresses that stay."""

    def __init__(self) -> None:
        self.sites: dict[str, _Site] = {}

    async def apply(self, routes: Iterable[HttpRoute]) -> list[str]:
        """Serve exactly `routes` (merging handlers that expose `merge`); returns addresses newly bound."""
        wanted: dict[str, dict[str, HttpHandler]] = {}
        for route in routes:
            table = wanted.setdefault(route.addr, {})
            current = table.get(route.path)
            if current is None:
                table[route.path] = route.handler
            elif hasattr(current, "merge"):
                current.merge(route.handler)
        for addr in list(self.sites):
            if addr not in wanted:
                await self.sites.pop(addr).close()
        started = []
        for addr, table in wanted.items():
            site = self.sites.get(addr)
            if site is None:
                site = _Site(addr)
                await site.start()
                self.sites[addr] = site
                started.append(addr)
            site.routes = table
        return started

    def bound(self, addr: str) -> tuple[str, int]:
        """The real (host, port) of a configured address (useful with port 0)."""
        return self.sites[addr].bound

    async def close(self) -> None:
        for site in list(self.sites.values()):
            await site.close()
        self.sites.clear()


T = TypeVar("T")


class ProcessState:
    """Process-wide state shared by every server block (and kept across reloads)."""

    def __init__(self, *, out: TextIO | None = None, kubeconfig: str | None = None, cluster_id: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)  # type: ignore[operator]
        self.metrics = ServerMetrics(self.registry)
        self.http = HttpEndpoints()
        self.out: TextIO = out if out is not None else sys.stdout
        # Kubernetes: plugins put a `submariner.broker.kube` ClientFactory here (one per process).
        self.kube: Any = None
        self.kubeconfig = kubeconfig
        self.cluster_id = cluster_id
        self.singletons: dict[str, Any] = {}
        self._metrics: dict[str, Any] = {}
        self.shutting_down = False
        # Set by the CLI: the Corefile path, the last parsed server blocks (hashed by `reload`), a loader that
        # re-reads and parses the file, and a reload trigger.
        self.corefile_path: str | None = None
        self.corefile_blocks: list[Any] = []
        self.load_corefile: Callable[[], list[Any]] | None = None
        self.request_reload: Callable[[], None] | None = None
        self.blocks: list[BlockHooks] = []  # hooks of the running configuration
        # DNS servers whose answer caches count hits (anything with `fold()`); folded before every scrape.
        self.hit_sources: weakref.WeakSet[Any] = weakref.WeakSet()
        self.metrics.collector.before.append(self.fold_hits)
        self.fatal_handler: Callable[[str], None] = self._exit_fatal
        # Set by the CLI (never in tests, which share one interpreter): see `settled`.
        self.freeze_gc = False
        self._frozen = False

    def settled(self) -> None:
        """The initial data is loaded (a plugin's informers synced): with `freeze_gc`, move everything alive now
        out of the cyclic garbage collector's reach, once. Tens of thousands of model objects otherwise make
        every full collection a pause of hundreds of milliseconds, and they live as long as the process."""
        if self.freeze_gc and not self._frozen:
            self._frozen = True
            gc.collect()
            gc.freeze()

    def fold_hits(self) -> None:
        """Bring the metrics up to date with every cache hit so far (runs on the event loop's thread)."""
        for source in list(self.hit_sources):
            try:
                source.fold()
            except Exception as exc:
                self.error(f"folding cache hits failed: {exc!r}")

    # -- logs: CoreDNS's format, "[LEVEL] plugin/NAME: text" on stdout -------------------------------------
    def log(self, level: str, text: str, plugin: str | None = None) -> None:
        line = f"[{level}] plugin/{plugin}: {text}\n" if plugin else f"[{level}] {text}\n"
        try:
            self.out.write(line)
            self.out.flush()
        except (OSError, ValueError):
            pass

    def info(self, text: str, plugin: str | None = None) -> None:
        self.log("INFO", text, plugin)

    def warning(self, text: str, plugin: str | None = None) -> None:
        self.log("WARNING", text, plugin)

    def error(self, text: str, plugin: str | None = None) -> None:
        self.log("ERROR", text, plugin)

    def fatal(self, text: str, plugin: str | None = None) -> None:
        """Log at FATAL and end the process with status 1 (tests replace `fatal_handler`)."""
        self.log("FATAL", text, plugin)
        self.fatal_handler(text)

    @staticmethod
    def _exit_fatal(text: str) -> None:
        sys.stdout.flush()
        os._exit(1)

    # -- shared objects ------------------------------------------------------------------------------------
    def metric(self, name: str, factory: Callable[[], T]) -> T:
        """Get or create a process-wide metric (or any object) by name: plugin setups run again on reload."""
        if name not in self._metrics:
            self._metrics[name] = factory()
        return self._metrics[name]  # type: ignore[no-any-return]

    def vec(self, vec: Vec) -> Vec:
        """Register a dict-backed vector once per process; returns the registered one."""
        existing = self._metrics.get(vec.name)
        if existing is not None:
            return existing  # type: ignore[no-any-return]
        self._metrics[vec.name] = vec
        self.metrics.collector.add(vec)
        return vec

    # -- readiness: the union of what the running blocks registered -----------------------------------------
    def readiness(self) -> tuple[bool, str]:
        """(all ready, sorted comma-separated names of the plugins that are not)."""
        names = sorted({name for block in self.blocks for name, ready in block.ready if not ready()})
        return not names, ",".join(names)

    @staticmethod
    async def run_hooks(hooks: Iterable[Hook], on_error: Callable[[BaseException], None] | None = None) -> None:
        for hook in hooks:
            try:
                result = hook()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(exc)
