#!/usr/bin/env python3
"""API server benchmark: writes/s and watch-delivery latency with many concurrent watchers.

A real `submariner-broker serve` process (TLS, admin token, SQLite WAL store) on a loopback port, driven
by a load-generator process (creates, merge PATCHes and PUTs over keep-alive HTTPS) while watcher
processes hold `--watchers` watch streams open on the same resource. Every write carries its send time
(CLOCK_MONOTONIC, shared by all processes on the machine), so delivery latency is measured end to end:
send -> commit -> fan-out -> received by each watcher.

Two baselines are measured in the same run, on the same machine, so ratios (not absolute numbers) can be
compared across machines: the raw store commit rate (in-process `Store.put`, no HTTP) and the HTTPS
round-trip ceiling of the same client against a do-nothing aiohttp handler on the same TLS set-up.

The writes run twice, each against a fresh server: unpaced (as fast as `--concurrency` requests in flight
allow: the throughput) and paced at `--rate` writes/s (the latency at a known load; at saturation the
latency is mostly queueing). See bench/README.md for what every number means.

    .venv/bin/python bench/apiserver.py            # 20,000 writes, 100 watchers
    .venv/bin/python bench/apiserver.py --quick    # 2,000 writes, 20 watchers (a few seconds)
    .venv/bin/python bench/apiserver.py --json     # + a machine-readable summary as the last line
"""

from __future__ import annotations

import argparse
import array
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from _common import (
    BIN,
    Child,
    Row,
    ServingProcess,
    client_ssl_context,
    cpu_seconds,
    emit,
    emit_result,
    install_uvloop,
    log,
    machine_busy_seconds,
    memory_kib,
    ns_to_ms,
    percentile,
    table,
)

SCRIPT = Path(__file__).resolve()
NAMESPACE = "bench"
CRD_GROUP = "bench.submariner.io"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{CRD_GROUP}"},
    "spec": {
        "group": CRD_GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        }],
    },
}


@dataclass(frozen=True, slots=True)
class Kind:
    """What is written: where it lives on the API and which field carries the benchmark payload."""

    path: str
    api_version: str
    kind: str
    field: str  # "data" for ConfigMaps, "spec" for the custom resource


KINDS = {
    "configmaps": Kind(f"/api/v1/namespaces/{NAMESPACE}/configmaps", "v1", "ConfigMap", "data"),
    "widgets": Kind(f"/apis/{CRD_GROUP}/v1/namespaces/{NAMESPACE}/widgets", f"{CRD_GROUP}/v1", "Widget", "spec"),
}


# =========================================================================================== load generator


def _body(kind: Kind, name: str, seq: int, t_ns: int, value: str) -> bytes:
    return orjson.dumps({
        "apiVersion": kind.api_version, "kind": kind.kind,
        "metadata": {"name": name, "labels": {"app": "bench"}},
        kind.field: {"t": str(t_ns), "s": str(seq), "v": value},
    })


async def _load(cfg: dict[str, Any]) -> dict[str, Any]:
    """Issue writes `seq_start..seq_end` with `concurrency` requests in flight: creates first, then updates.

    The first `creates` writes create objects; the rest alternate merge PATCH and PUT over them, round
    robin. Creates finish before updates start, so an update never races its object's create. With a
    `rate`, write k is not sent before start + k/rate (open loop, up to `concurrency` in flight), so the
    latency is measured at a known offered load instead of at saturation, where it is mostly queueing.
    """
    import aiohttp

    kind = Kind(**cfg["kind"])
    url = cfg["url"] + kind.path
    seq_start, seq_end = int(cfg["seq_start"]), int(cfg["seq_end"])
    total = seq_end - seq_start
    creates = max(1, min(total, int(cfg["creates"])))
    names = [f"{cfg['prefix']}-{i}" for i in range(creates)]
    value = "x" * int(cfg["value_bytes"])
    deadline = 0.0
    auth = {"Authorization": f"Bearer {cfg['token']}"}
    h_json = {**auth, "Content-Type": "application/json"}
    h_merge = {**auth, "Content-Type": "application/merge-patch+json"}
    acked = bytearray(total)
    ack_ns = array.array("q")
    errors: list[str] = []
    error_count = 0
    issued = 0
    rate = float(cfg.get("rate") or 0)
    interval_ns = int(1e9 / rate) if rate > 0 else 0
    start_ns = 0

    concurrency = int(cfg["concurrency"])
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(Path(cfg["ca"])), limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)) \
            as session:

        async def warm_up() -> None:
            async with session.get(url, headers=auth) as resp:
                await resp.read()

        async def worker(it: Iterator[int]) -> None:
            nonlocal issued, error_count
            for seq in it:
                if time.monotonic() > deadline:
                    return
                i = seq - seq_start
                if interval_ns:
                    delay = start_ns + i * interval_ns - time.monotonic_ns()
                    if delay > 0:
                        await asyncio.sleep(delay / 1e9)
                issued += 1
                t_ns = time.monotonic_ns()
                if i < creates:
                    method, target, headers = "POST", url, h_json
                    body = _body(kind, names[i], seq, t_ns, value)
                else:
                    name = names[(i - creates) % creates]
                    target = f"{url}/{name}"
                    if i % 2:
                        method, headers = "PUT", h_json
                        body = _body(kind, name, seq, t_ns, value)
                    else:
                        method, headers = "PATCH", h_merge
                        body = orjson.dumps({kind.field: {"t": str(t_ns), "s": str(seq)}})
                try:
                    async with session.request(method, target, data=body, headers=headers) as resp:
                        payload = await resp.read()
                        done = time.monotonic_ns()
                        if resp.status in (200, 201):
                            acked[i] = 1
                            ack_ns.append(done - t_ns)
                            continue
                        error = f"{method} {resp.status}: {payload[:200]!r}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    error = f"{method} {type(exc).__name__}: {exc}"
                error_count += 1
                if len(errors) < 5:
                    errors.append(error)

        # Open every keep-alive connection (TLS handshakes) before the clock starts, then wait for "go" so
        # that all load generators start together.
        await asyncio.gather(*(warm_up() for _ in range(concurrency)))
        emit("READY")
        await _stdin_line()
        deadline = time.monotonic() + float(cfg["max_seconds"])
        start_ns = time.monotonic_ns()
        cpu0 = time.process_time()
        for first, last in ((0, creates), (creates, total)):
            it = iter(range(seq_start + first, seq_start + last))  # shared: each worker takes the next write
            await asyncio.gather(*(worker(it) for _ in range(concurrency)))
        end_ns = time.monotonic_ns()
        cpu = time.process_time() - cpu0
    unacked = [seq_start + i for i in range(total) if not acked[i]]
    return {"issued": issued, "ok": total - len(unacked), "errors": error_count, "error_samples": errors,
            "unacked": unacked, "start_ns": start_ns, "end_ns": end_ns, "cpu_s": cpu,
            "ack_ns": ack_ns.tolist()}


async def _stdin_line(timeout: float | None = None) -> bytes:
    """The next line the orchestrator writes to this child's stdin (b"" on EOF or timeout)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        return await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        return b""


def role_loader(cfg: dict[str, Any]) -> None:
    install_uvloop()
    emit_result(cfg, asyncio.run(_load(cfg)))


# =========================================================================================== watchers


@dataclass(slots=True)
class Stream:
    """What one watch stream received; `seen[seq]` is 1 once the write with that sequence number arrived."""

    seen: bytearray
    events: int = 0
    reads: int = 0
    distinct: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    last_rv: int = 0
    error: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Expectation:
    """The writes every watcher must see, known only once the load generators report what they acked."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count: int | None = None
        self.mask = 0

    def set(self, unacked: list[int]) -> None:
        mask = bytearray(b"\x01" * self.total)
        for seq in unacked:
            mask[seq] = 0
        self.count = self.total - len(unacked)
        self.mask = int.from_bytes(mask, "big")

    def missing(self, stream: Stream) -> int:
        """Expected writes this stream has not received (each byte of `seen` is 0 or 1: one bit per write)."""
        assert self.count is not None
        return self.count - (int.from_bytes(stream.seen, "big") & self.mask).bit_count()


async def _watch(cfg: dict[str, Any]) -> dict[str, Any]:
    """Open `watchers` watch streams, report READY, then record every event until all expected ones arrived."""
    import aiohttp

    total = int(cfg["total"])
    payload_field = cfg["field"]
    n = int(cfg["watchers"])
    latencies = array.array("q")
    expect = Expectation(total)
    streams = [Stream(bytearray(total)) for _ in range(n)]
    loads = orjson.loads
    scan = cfg.get("decode") == "scan"
    now_ns = time.monotonic_ns

    def check(stream: Stream) -> None:
        if expect.count is not None and stream.distinct >= expect.count and expect.missing(stream) == 0:
            stream.done.set()

    async def consume(resp: aiohttp.ClientResponse, stream: Stream) -> None:
        tail = b""
        seen = stream.seen
        lat_append = latencies.append
        async for chunk in resp.content.iter_any():
            received = now_ns()  # one timestamp per chunk: when these bytes reached the watcher
            stream.reads += 1
            lines = (tail + chunk).split(b"\n") if tail else chunk.split(b"\n")
            tail = lines.pop()
            if scan:
                for line in lines:
                    i = line.find(b'"t":"') + 5
                    lat_append(received - int(line[i:line.index(b'"', i)]))
                    i = line.find(b'"s":"') + 5
                    seq = int(line[i:line.index(b'"', i)])
                    stream.events += 1
                    if seen[seq]:
                        stream.duplicates += 1
                    else:
                        seen[seq] = 1
                        stream.distinct += 1
                    i = line.find(b'"resourceVersion":"') + 19
                    rv = int(line[i:line.index(b'"', i)])
                    if rv <= stream.last_rv:
                        stream.out_of_order += 1
                    stream.last_rv = rv
                check(stream)
                continue
            for line in lines:
                event = loads(line)
                obj = event["object"]
                if event["type"] not in ("ADDED", "MODIFIED"):
                    stream.unexpected += 1
                    continue
                payload = obj[payload_field]
                lat_append(received - int(payload["t"]))
                seq = int(payload["s"])
                stream.events += 1
                if seen[seq]:
                    stream.duplicates += 1
                else:
                    seen[seq] = 1
                    stream.distinct += 1
                rv = int(obj["metadata"]["resourceVersion"])
                if rv <= stream.last_rv:
                    stream.out_of_order += 1
                stream.last_rv = rv
            check(stream)

    connector = aiohttp.TCPConnector(ssl=client_ssl_context(Path(cfg["ca"])), limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
    headers = {"Authorization": f"Bearer {cfg['token']}"}
    url = cfg["url"] + cfg["watch_path"]
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        responses = await asyncio.gather(*(session.get(url) for _ in range(n)))
        for resp in responses:
            if resp.status != 200:
                raise SystemExit(f"watch failed: {resp.status} {await resp.text()}")
        # Headers arrived: the server has registered every watcher (and replays from the listed RV anyway).
        tasks = [asyncio.create_task(consume(r, s)) for r, s in zip(responses, streams, strict=True)]
        emit("READY")
        cpu0 = time.process_time()

        line = await _stdin_line(float(cfg["max_seconds"]))
        grace = 0.0
        if line:
            message = orjson.loads(line)
            expect.set(message["unacked"])
            grace = float(message["grace_s"])
            for s in streams:
                check(s)
            waiters = [asyncio.create_task(s.done.wait()) for s in streams]
            await asyncio.wait(waiters, timeout=grace)
            for w in waiters:
                w.cancel()
        cpu = time.process_time() - cpu0
        for task, stream in zip(tasks, streams, strict=True):
            if task.done() and task.exception() is not None:
                stream.error = repr(task.exception())
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for resp in responses:
            resp.close()
    if expect.count is None:
        expect.set([])
    missing = [expect.missing(s) for s in streams]
    with open(cfg["latency_file"], "wb") as f:
        latencies.tofile(f)
    return {
        "watchers": n, "expected_per_watcher": expect.count, "events": sum(s.events for s in streams),
        "reads": sum(s.reads for s in streams),
        "missing": sum(missing), "incomplete_watchers": sum(1 for m in missing if m),
        "duplicates": sum(s.duplicates for s in streams), "out_of_order": sum(s.out_of_order for s in streams),
        "unexpected": sum(s.unexpected for s in streams),
        "stream_errors": [s.error for s in streams if s.error][:5], "cpu_s": cpu, "grace_s": grace,
    }


def role_watcher(cfg: dict[str, Any]) -> None:
    install_uvloop()
    emit_result(cfg, asyncio.run(_watch(cfg)))


# =========================================================================================== echo baseline


def role_echo(cfg: dict[str, Any]) -> None:
    """A do-nothing aiohttp server on the API server's TLS set-up: the HTTPS ceiling for the same client."""
    from aiohttp import web

    from submariner.broker.apiserver import pki

    install_uvloop()
    data_dir = Path(cfg["dir"])
    ssl_ctx = pki.server_ssl_context(data_dir, ["127.0.0.1"])
    reply = b'{"kind":"Status","apiVersion":"v1","status":"Success"}'

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=reply, status=201 if request.method == "POST" else 200,
                            content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_ctx, backlog=1024)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else 0
        print(f"echo: serving https://127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


# =========================================================================================== orchestration


@dataclass(slots=True)
class Options:
    writes: int
    watchers: int
    concurrency: int
    creates: int
    loaders: int
    watcher_procs: int
    value_bytes: int
    resource: str
    decode: str
    rate: float
    max_seconds: float
    baseline_writes: int
    keep: bool
    json: bool
    server_cmd: list[str]


def store_baseline(path: Path, opts: Options) -> dict[str, Any]:
    """In-process `Store.put` rate for the same create/update mix: the storage ceiling, no HTTP, no watchers."""
    from submariner.broker.apiserver.store import Store

    kind = KINDS[opts.resource]
    store = Store(path)
    n = opts.baseline_writes
    creates = max(1, min(n, opts.creates * n // max(1, opts.writes)))
    value = "x" * opts.value_bytes
    start = time.perf_counter()
    cpu0 = time.process_time()
    for seq in range(n):
        name = f"obj-{seq if seq < creates else (seq - creates) % creates}"
        obj = {"apiVersion": kind.api_version, "kind": kind.kind,
               "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bench"}},
               kind.field: {"t": str(time.monotonic_ns()), "s": str(seq), "v": value}}
        store.put(opts.resource, obj)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    store.close()
    return {"writes": n, "seconds": elapsed, "writes_per_s": n / elapsed, "cpu_s": cpu}


def loader_configs(opts: Options, url: str, ca: Path, token: str, prefix: str, writes: int,
                   max_seconds: float, rate: float = 0.0) -> list[dict[str, Any]]:
    """Split the writes into contiguous sequence ranges, one per load-generator process."""
    configs = []
    per = -(-writes // opts.loaders)
    ranges = [(lo, min(writes, lo + per)) for lo in range(0, writes, per)]
    creates = max(1, opts.creates // len(ranges))
    for i, (lo, hi) in enumerate(ranges):
        configs.append({"url": url, "ca": str(ca), "token": token, "kind": _kind_dict(opts.resource),
                        "seq_start": lo, "seq_end": hi, "creates": creates, "prefix": f"{prefix}{i}",
                        "concurrency": max(1, opts.concurrency // opts.loaders),
                        "value_bytes": opts.value_bytes, "max_seconds": max_seconds,
                        "rate": rate / len(ranges)})
    return configs


def _kind_dict(resource: str) -> dict[str, str]:
    k = KINDS[resource]
    return {"path": k.path, "api_version": k.api_version, "kind": k.kind, "field": k.field}


def start_loaders(configs: list[dict[str, Any]], work: Path, tag: str) -> list[Child]:
    """Load generators, connected and waiting for "go" (so start-up and TLS handshakes are not measured)."""
    children = [Child(SCRIPT, "loader", c, work / f"{tag}-loader-{i}.json") for i, c in enumerate(configs)]
    try:
        for c in children:
            c.wait_ready(60)
    except BaseException:
        for c in children:
            c.kill()
        raise
    return children


def finish_loaders(children: list[Child], timeout: float) -> list[dict[str, Any]]:
    try:
        for c in children:
            c.send({"go": True})
        return [c.result(timeout) for c in children]
    finally:
        for c in children:
            c.kill()


def summarize_load(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = sum(r["ok"] for r in results)
    seconds = (max(r["end_ns"] for r in results) - min(r["start_ns"] for r in results)) / 1e9
    acks = sorted(v for r in results for v in r["ack_ns"])
    return {"ok": ok, "issued": sum(r["issued"] for r in results), "errors": sum(r["errors"] for r in results),
            "error_samples": [e for r in results for e in r["error_samples"]][:5],
            "unacked": [s for r in results for s in r["unacked"]], "seconds": seconds,
            "writes_per_s": ok / seconds if seconds > 0 else 0.0,
            "ack_p50_ms": ns_to_ms(percentile(acks, 50)), "ack_p99_ms": ns_to_ms(percentile(acks, 99)),
            "cpu_s": sum(r["cpu_s"] for r in results)}


def http_baseline(work: Path, opts: Options) -> dict[str, Any]:
    """The same load generator against the do-nothing server: what HTTPS alone costs on this machine."""
    echo_dir = work / "echo"
    echo_dir.mkdir()
    echo = ServingProcess([sys.executable, str(SCRIPT), "--role", "echo", "--config",
                           orjson.dumps({"dir": str(echo_dir)}).decode()], work / "echo.log")
    url = echo.start()
    try:
        configs = loader_configs(opts, url, echo_dir / "ca.crt", "unused", "echo", opts.baseline_writes,
                                 opts.max_seconds)
        children = start_loaders(configs, work, "echo")
        load = summarize_load(finish_loaders(children, opts.max_seconds + 60))
        load["server_cpu_s"] = cpu_seconds(echo.pid)
    finally:
        echo.stop()
    load.pop("unacked")
    return load


def api_request(url: str, ca: Path, token: str, method: str, path: str, body: Any = None) -> Any:
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=client_ssl_context(ca), timeout=30) as resp:
        return orjson.loads(resp.read())


def measure(work: Path, opts: Options, tag: str, rate: float) -> dict[str, Any]:
    """One fresh server: open the watches, run the writes (unpaced, or paced at `rate`), collect everything."""
    kind = KINDS[opts.resource]
    data_dir = work / tag
    server = ServingProcess([*opts.server_cmd, "serve", "--data-dir", str(data_dir),
                             "--listen", "127.0.0.1:0", "--write-kubeconfig", str(work / f"{tag}.kubeconfig"),
                             "--context", "bench"], work / f"{tag}-server.log")
    url = server.start()
    log(f"{tag}: server pid {server.pid} at {url}")
    watchers: list[Child] = []
    try:
        ca, token = data_dir / "ca.crt", (data_dir / "admin-token").read_text().strip()
        api_request(url, ca, token, "POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        if opts.resource == "widgets":
            api_request(url, ca, token, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
        rv = api_request(url, ca, token, "GET", kind.path)["metadata"]["resourceVersion"]
        watch_path = f"{kind.path}?watch=true&resourceVersion={rv}&timeoutSeconds={int(opts.max_seconds * 2 + 120)}"
        per = [opts.watchers // opts.watcher_procs + (1 if i < opts.watchers % opts.watcher_procs else 0)
               for i in range(opts.watcher_procs)]
        for i, count in enumerate(per):
            watchers.append(Child(SCRIPT, "watcher", {
                "url": url, "ca": str(ca), "token": token, "watch_path": watch_path, "watchers": count,
                "total": opts.writes, "field": kind.field, "decode": opts.decode,
                "max_seconds": opts.max_seconds * 2 + 60, "latency_file": str(work / f"{tag}-latency-{i}.bin"),
            }, work / f"{tag}-watcher-{i}.json"))
        for w in watchers:
            w.wait_ready(60)
        pace = f"paced at {rate:,.0f}/s" if rate else "unpaced"
        log(f"{tag}: {opts.watchers} watch streams open; {opts.writes} writes, {pace}, "
            f"up to {opts.concurrency} in flight")
        configs = loader_configs(opts, url, ca, token, "obj", opts.writes, opts.max_seconds, rate)
        loaders = start_loaders(configs, work, tag)
        cpu0 = cpu_seconds(server.pid)
        busy0, wall0 = machine_busy_seconds(), time.monotonic()
        load = summarize_load(finish_loaders(loaders, opts.max_seconds + 60))
        cpu_load = cpu_seconds(server.pid) - cpu0
        grace = max(10.0, min(60.0, load["seconds"]))
        for w in watchers:
            w.send({"unacked": load["unacked"], "grace_s": grace})
        watch_results = [w.result(grace + 60) for w in watchers]
        busy, wall = machine_busy_seconds() - busy0, time.monotonic() - wall0
        cpu_window = cpu_seconds(server.pid) - cpu0
        rss, hwm = memory_kib(server.pid)
    finally:
        for w in watchers:
            w.kill()
        server.stop()

    latencies = array.array("q")
    for i in range(len(watchers)):
        latencies.frombytes((work / f"{tag}-latency-{i}.bin").read_bytes())
    lat = sorted(latencies)
    missing = sum(r["missing"] for r in watch_results)
    seconds = load["seconds"]
    watcher_cpu = sum(r["cpu_s"] for r in watch_results)
    return {
        "rate": rate, "writes": load["ok"], "write_errors": load["errors"],
        "seconds": round(seconds, 3), "writes_per_s": round(load["writes_per_s"], 1),
        "ack_p50_ms": load["ack_p50_ms"], "ack_p99_ms": load["ack_p99_ms"],
        "events_expected": watch_results[0]["expected_per_watcher"] * opts.watchers,
        "events_delivered": sum(r["events"] for r in watch_results), "events_missing": missing,
        "incomplete_watchers": sum(r["incomplete_watchers"] for r in watch_results),
        "duplicates": sum(r["duplicates"] for r in watch_results),
        "out_of_order": sum(r["out_of_order"] for r in watch_results),
        "all_delivered": missing == 0 and load["errors"] == 0,
        "delivery_p50_ms": ns_to_ms(percentile(lat, 50)), "delivery_p99_ms": ns_to_ms(percentile(lat, 99)),
        "delivery_max_ms": ns_to_ms(lat[-1] if lat else 0),
        "server_rss_mib": round(rss / 1024, 1), "server_peak_rss_mib": round(hwm / 1024, 1),
        "server_cpu_s": round(cpu_load, 2),
        "server_cpu_util": round(cpu_load / seconds, 2) if seconds else 0.0,
        "loader_cpu_s": round(load["cpu_s"], 2),
        "watcher_cpu_s": round(watcher_cpu, 2),
        "events_per_read": round(sum(r["events"] for r in watch_results)
                                 / max(1, sum(r["reads"] for r in watch_results)), 2),
        # Cores busy with anything but this benchmark (other users' jobs), averaged over the writes.
        "other_load_cores": round(max(0.0, busy - cpu_window - load["cpu_s"] - watcher_cpu) / wall, 2),
        "error_samples": load["error_samples"] + [e for r in watch_results for e in r["stream_errors"]],
    }


def run(opts: Options) -> dict[str, Any]:
    """Baselines first (nothing else running), then the server unpaced, then paced at `--rate`."""
    work = Path(tempfile.mkdtemp(prefix="bench-apiserver-"))
    try:
        log(f"baseline: {opts.baseline_writes} in-process Store.put commits")
        store_base = store_baseline(work / "baseline.db", opts)
        log(f"baseline: {opts.baseline_writes} HTTPS requests to a do-nothing aiohttp handler")
        http_base = http_baseline(work, opts)
        saturated = measure(work, opts, "unpaced", 0.0)
        paced = measure(work, opts, "paced", opts.rate) if opts.rate > 0 else None
    finally:
        if opts.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    wps = saturated["writes_per_s"]
    return {
        "resource": opts.resource, "writes_requested": opts.writes, "watchers": opts.watchers,
        "concurrency": opts.concurrency, "decode": opts.decode, "cpus": os.cpu_count() or 0,
        **saturated,
        "all_delivered": saturated["all_delivered"] and (paced is None or paced["all_delivered"]),
        "paced": paced,
        "baseline_store_writes_per_s": round(store_base["writes_per_s"], 1),
        "baseline_http_req_per_s": round(http_base["writes_per_s"], 1),
        "baseline_http_ack_p50_ms": http_base["ack_p50_ms"],
        "ratio_to_store": round(wps / store_base["writes_per_s"], 3),
        "ratio_to_http": round(wps / http_base["writes_per_s"], 3),
    }


def report(s: dict[str, Any]) -> str:
    runs = [s] + ([s["paced"]] if s["paced"] else [])
    header = ("unpaced",) + ((f"paced {s['paced']['rate']:,.0f}/s",) if s["paced"] else ())

    def row(label: str, fmt: str, *keys: str, note: str = "") -> Row:
        return Row(label, tuple(fmt.format(*(r[k] for k in keys)) for r in runs), note)

    rows = [
        row("writes acked", "{:,}", "writes", note=f"of {s['writes_requested']:,} requested ({s['resource']})"),
        row("write errors", "{}", "write_errors"),
        row("seconds", "{:.2f}", "seconds"),
        row("writes/s", "{:,.0f}", "writes_per_s", note="goal >= 2,000"),
        row("write ack p50 / p99 ms", "{:.1f} / {:.1f}", "ack_p50_ms", "ack_p99_ms",
            note=f"send -> response, up to {s['concurrency']} in flight"),
        Row("watchers", (str(s["watchers"]),) * len(runs)),
        row("events delivered", "{:,}", "events_delivered", note="(watcher, write) pairs"),
        row("events missing", "{:,}", "events_missing",
            note="acknowledged writes some watcher never received"),
        row("duplicates / out of order", "{} / {}", "duplicates", "out_of_order"),
        row("delivery p50 ms", "{:.1f}", "delivery_p50_ms", note="send -> commit -> fan-out -> watcher"),
        row("delivery p99 ms", "{:.1f}", "delivery_p99_ms", note="goal < 50"),
        row("delivery max ms", "{:.1f}", "delivery_max_ms"),
        row("server RSS MiB (peak)", "{:.0f} ({:.0f})", "server_rss_mib", "server_peak_rss_mib"),
        row("server CPU s", "{:.2f}", "server_cpu_s", note="during the writes"),
        row("server CPU / wall", "{:.0%}", "server_cpu_util", note="of one core; the server is one thread"),
        row("loader / watcher CPU s", "{:.2f} / {:.2f}", "loader_cpu_s", "watcher_cpu_s",
            note=f"clients share the machine's {s['cpus']} CPUs"),
        row("events per watcher read", "{:.1f}", "events_per_read", note="how much fan-out batching happened"),
        row("other load, cores", "{:.2f}", "other_load_cores",
            note="busy CPUs not explained by this benchmark: other jobs on the machine"),
    ]
    text = table("API server: writes with concurrent watchers", header, rows)
    text += "\n\n" + table("Baselines (same machine, same run)", ("writes/s", "ratio"), [
        Row("in-process Store.put", (f"{s['baseline_store_writes_per_s']:,.0f}", f"{s['ratio_to_store']:.3f}"),
            "SQLite WAL commits, no HTTP; ratio = unpaced writes/s / this"),
        Row("HTTPS do-nothing handler", (f"{s['baseline_http_req_per_s']:,.0f}", f"{s['ratio_to_http']:.3f}"),
            "same client, TLS and aiohttp; ratio = unpaced writes/s / this"),
    ])
    errors = s["error_samples"] + (s["paced"]["error_samples"] if s["paced"] else [])
    if errors:
        text += "\nerrors (first few):\n  " + "\n  ".join(errors[:10])
    return text


def parse_args(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--writes", type=int, default=None, help="writes to issue (default 20,000; --quick 2,000)")
    p.add_argument("--watchers", type=int, default=None, help="watch streams (default 100; --quick 20)")
    p.add_argument("--concurrency", type=int, default=32,
                   help="requests in flight, over all load generators (default 32)")
    p.add_argument("--creates", type=int, default=None,
                   help="objects created before the updates start (default writes/10)")
    p.add_argument("--loaders", type=int, default=1, help="load-generator processes (default 1)")
    p.add_argument("--watcher-procs", type=int, default=1, help="processes holding the watches (default 1)")
    p.add_argument("--value-bytes", type=int, default=128, help="payload bytes per object (default 128)")
    p.add_argument("--resource", choices=sorted(KINDS), default="configmaps",
                   help="configmaps, or widgets (a custom resource; its CRD is created first)")
    p.add_argument("--decode", choices=("orjson", "scan"), default="orjson",
                   help="orjson: watchers decode every event, as informers do; scan: find the two fields in the "
                        "bytes, to see how much of the latency is the watchers' own CPU")
    p.add_argument("--rate", type=float, default=2_000.0,
                   help="offered writes/s of the second, paced run (default 2,000, the goal; 0 skips it)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="cap on the load phase (default 60)")
    p.add_argument("--quick", action="store_true", help="2,000 writes, 20 watchers: a smoke run of a few seconds")
    p.add_argument("--server-cmd", default=str(BIN / "submariner-broker"),
                   help="command that runs `submariner-broker` (split on spaces), to A/B an experimental build")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (server log, store)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    a = p.parse_args(argv)
    writes = a.writes if a.writes is not None else (2_000 if a.quick else 20_000)
    watchers = a.watchers if a.watchers is not None else (20 if a.quick else 100)
    if writes < 1 or watchers < 1 or a.concurrency < 1 or a.loaders < 1 or a.watcher_procs < 1:
        p.error("--writes, --watchers, --concurrency, --loaders and --watcher-procs must be positive")
    return Options(writes=writes, watchers=watchers, concurrency=a.concurrency,
                   creates=a.creates if a.creates is not None else max(1, writes // 10),
                   loaders=a.loaders, watcher_procs=min(a.watcher_procs, watchers), value_bytes=a.value_bytes,
                   resource=a.resource, decode=a.decode, rate=a.rate, max_seconds=a.max_seconds,
                   baseline_writes=min(writes, 2_000 if a.quick else 10_000), keep=a.keep, json=a.json,
                   server_cmd=a.server_cmd.split())


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "--role" and argv[2] == "--config":
        roles = {"loader": role_loader, "watcher": role_watcher, "echo": role_echo}
        roles[argv[1]](orjson.loads(argv[3]))
        return 0
    opts = parse_args(argv)
    summary = run(opts)
    print(report(summary), flush=True)
    if opts.json:
        print(orjson.dumps(summary).decode(), flush=True)
    return 0 if summary["all_delivered"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
