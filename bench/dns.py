#!/usr/bin/env python3
"""DNS benchmark: `lighthouse-dns` against unbound serving the same `clusterset.local` names, both under dnsperf.

A real `submariner-broker serve` is loaded with `--services` exported services (ServiceImports and Lighthouse
EndpointSlices as the agent writes them, 3 clusters, ClusterIP and headless, some dual-stack) plus a Gateway
that makes all clusters connected. Then `lighthouse-dns` (the operator's Corefile: lighthouse, errors, health,
ready, prometheus) starts against it, and unbound starts with the SAME answers as static `local-data` in a
`local-zone: static` (so unknown names are NXDOMAIN there too). Unbound is the baseline measured in the same
run: compare the ratio across machines, not the raw QPS.

Both servers get the same CPU budget (the server on one CPU, dnsperf on another, via `taskset`) and the same
query file (A, AAAA, SRV, cluster-prefixed, headless and ~10% NXDOMAIN names). Each gets one pass through the
file (lighthouse-dns computes every distinct answer once, then serves it from its answer cache until the data
changes), then its maximum QPS is measured, then latency at half of its OWN maximum. Every answer type is
spot-checked on both servers against the answers the data implies, before and after the load. See
bench/README.md ("dns.py") for what every number means; two rows are not described there yet: "server CPU us
per query" (at max QPS, 1e6 / QPS per server CPU: a cached answer's whole cost, kernel included) and
"in-process us per answer" (a child process pinned like the server runs the same lighthouse-dns App against
the same API server and calls `DnsServer.handle_datagram` directly, no sockets: µs per cached answer, best of
5 passes over the query file, and per computed answer, every distinct question once).

    .venv/bin/python bench/dns.py            # 10,000 services, 10 s per measurement (under 2 minutes)
    .venv/bin/python bench/dns.py --quick    # 400 services, 2 s per measurement (~15 s; used by the test)
    .venv/bin/python bench/dns.py --json     # + a machine-readable summary as the last line
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from _common import (
    BIN,
    Row,
    ServingProcess,
    client_ssl_context,
    cpu_seconds,
    install_uvloop,
    log,
    machine_busy_seconds,
    memory_kib,
    percentile,
    stop_pid,
    table,
)

# This file is bench/dns.py and Python put bench/ first on sys.path, so `import dns` would find this script
# instead of dnspython: move bench/ to the end (`_common` is imported already). dnspython is imported lazily.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

ZONE = "clusterset.local"
CLUSTERS = ("c1", "c2", "c3")
LOCAL = "c1"
OP_NS = "submariner-operator"
TTL = 5  # lighthouse's default TTL; unbound's local-data gets the same
SOA = f"{ZONE}. {TTL} IN SOA ns.dns.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 {TTL}"
NOERROR, NXDOMAIN = 0, 3
EDNS_PAYLOAD = 4096  # what dnsperf -e advertises: a 3-cluster headless SRV answer (~600 bytes) is not truncated
MAX_SERVICES = 60_000  # the address plan below has room for this many

# Lighthouse labels and annotations (lighthouse-agent.md §2).
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
LH_AGENT = "lighthouse-agent.submariner.io"
SERVICE_NAME = "multicluster.kubernetes.io/service-name"
SOURCE_NS = "lighthouse.submariner.io/sourceNamespace"
SOURCE_CLUSTER = "multicluster.kubernetes.io/source-cluster"
IS_HEADLESS = "lighthouse.submariner.io/is-headless"
SOURCE_NAME = "lighthouse.submariner.io/source-name"
PUBLISH_NOT_READY = "lighthouse.submariner.io/publish-not-ready-addresses"
GLOBALNET = "lighthouse.submariner.io/globalnet-enabled"

SI_PATH = "/apis/multicluster.x-k8s.io/v1alpha1/namespaces/{ns}/serviceimports"
EPS_PATH = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
NEEDED_CRDS = ("serviceimports.multicluster.x-k8s.io", "gateways.submariner.io", "submariners.submariner.io")

# Which clusters export a ClusterIP or headless service, and how often (40% one, 35% two, 25% all three).
EXPORT_SETS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("c1",), 20), (("c2",), 10), (("c3",), 10),
    (("c1", "c2"), 10), (("c1", "c3"), 10), (("c2", "c3"), 15),
    (("c1", "c2", "c3"), 25),
)
# The query mix: category -> share of the query file (percent).
MIX: tuple[tuple[str, int], ...] = (
    ("A", 30), ("SRV", 5), ("SRV _port._proto", 10), ("AAAA", 5), ("AAAA dual-stack", 5),
    ("cluster A", 10), ("cluster SRV", 2),
    ("headless A", 10), ("headless SRV", 3), ("headless host A", 7), ("headless cluster A", 3),
    ("NXDOMAIN", 10),
)


# Program -> Debian package, for a clear message when one is missing (taskset is optional: without it, no pinning).
PACKAGES = {"unbound": "unbound", "dnsperf": "dnsperf"}


def missing_packages() -> list[str]:
    return sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None})


# =========================================================================================== data set


@dataclass(frozen=True, slots=True)
class Port:
    name: str
    protocol: str
    port: int

    def obj(self) -> dict[str, Any]:
        return {"name": self.name, "protocol": self.protocol, "port": self.port}


@dataclass(slots=True)
class Service:
    """One exported service as the clusters see it: what the agent writes and what DNS must answer."""

    name: str
    namespace: str
    headless: bool
    clusters: tuple[str, ...]  # exporting clusters, sorted
    ports: tuple[Port, ...]
    v4: dict[str, str] = field(default_factory=dict)  # ClusterIP: cluster -> service IP
    v6: dict[str, str] = field(default_factory=dict)  # dual-stack ClusterIP: cluster -> IPv6 service IP
    endpoints: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # headless: cluster -> (host, ip)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{ZONE}."


def make_services(count: int, seed: int) -> list[Service]:
    """`count` services: every 5th headless (20%), ~10% of ClusterIP ones dual-stack, export sets by EXPORT_SETS.

    Addresses are derived from the index, so every (service, cluster, endpoint) address is unique.
    """
    rng = random.Random(seed)
    namespaces = [f"ns-{i:02d}" for i in range(max(1, count // 500))]
    sets, weights = zip(*EXPORT_SETS, strict=True)
    out: list[Service] = []
    for i in range(count):
        headless = i % 5 == 4
        clusters = rng.choices(sets, weights)[0]
        hi, lo = i >> 8, i & 255
        if headless:
            svc = Service(f"db-{i:05d}", namespaces[i % len(namespaces)], True, clusters,
                          (Port("web", "TCP", 8080),))
            for c in clusters:
                k = CLUSTERS.index(c)
                svc.endpoints[c] = [(f"web-{j}", f"10.{200 + 3 * k + j}.{hi}.{lo}") for j in range(3)]
        else:
            ports = [Port("http", "TCP", 80)]
            if rng.random() < 0.5:
                ports.append(Port("https", "TCP", 443))
            if rng.random() < 0.1:
                ports.append(Port("grpc", "TCP", 9090))
            svc = Service(f"svc-{i:05d}", namespaces[i % len(namespaces)], False, clusters, tuple(ports))
            dual = rng.random() < 0.1
            for c in clusters:
                k = CLUSTERS.index(c)
                svc.v4[c] = f"10.{96 + k}.{hi}.{lo}"
                if dual:
                    svc.v6[c] = str(ipaddress.IPv6Address(f"fd00:10:{96 + k}::{i:x}"))
        out.append(svc)
    return out


def service_import(svc: Service) -> dict[str, Any]:
    """The aggregated ServiceImport on the importing cluster (lighthouse-agent.md §3 item 4)."""
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
        "metadata": {"name": svc.name, "namespace": svc.namespace},
        "spec": {"type": "Headless" if svc.headless else "ClusterSetIP",
                 "ports": [] if svc.headless else [p.obj() for p in svc.ports]},
    }


def endpoint_slices(svc: Service) -> list[dict[str, Any]]:
    """The Lighthouse EndpointSlices of every exporting cluster (§7.2 ClusterIP, §7.3 headless)."""
    out = []
    for c in svc.clusters:
        labels = {MANAGED_BY: LH_AGENT, SERVICE_NAME: svc.name, SOURCE_NS: svc.namespace, SOURCE_CLUSTER: c,
                  IS_HEADLESS: "true" if svc.headless else "false"}
        annotations = {PUBLISH_NOT_READY: "false", GLOBALNET: "false"}
        if svc.headless:
            source = f"{svc.name}-{c}-src"
            endpoints = [{"addresses": [ip], "hostname": host, "conditions": {"ready": True},
                          "targetRef": {"kind": "Pod", "name": f"{svc.name}-{host}", "namespace": svc.namespace}}
                         for host, ip in svc.endpoints[c]]
            slices = [(f"{svc.name}-{c}", "IPv4", endpoints, {**labels, SOURCE_NAME: source})]
        else:
            slices = [(f"{svc.name}-{c}-ipv4", "IPv4", [{"addresses": [svc.v4[c]], "conditions": {"ready": True}}],
                       labels)]
            if c in svc.v6:
                slices.append((f"{svc.name}-{c}-ipv6", "IPv6",
                               [{"addresses": [svc.v6[c]], "conditions": {"ready": True}}], labels))
        for name, family, endpoints, lbls in slices:
            out.append({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": svc.namespace, "labels": lbls, "annotations": annotations},
                "addressType": family, "endpoints": endpoints, "ports": [p.obj() for p in svc.ports],
            })
    return out


def connectivity_objects() -> list[tuple[str, dict[str, Any]]]:
    """A Submariner object (turns connectivity tracking on) and c1's active Gateway with c2, c3 connected."""
    submariner = {"apiVersion": "submariner.io/v1alpha1", "kind": "Submariner",
                  "metadata": {"name": "submariner", "namespace": OP_NS}, "spec": {}}
    gateway = {
        "apiVersion": "submariner.io/v1", "kind": "Gateway", "metadata": {"name": "gw-c1", "namespace": OP_NS},
        "status": {"haStatus": "active", "version": "v0.19", "statusFailure": "",
                   "localEndpoint": {"cluster_id": LOCAL, "cable_name": f"submariner-cable-{LOCAL}"},
                   "connections": [{"status": "connected", "statusMessage": "", "endpoint": {"cluster_id": c}}
                                   for c in CLUSTERS if c != LOCAL]},
    }
    return [(f"/apis/submariner.io/v1alpha1/namespaces/{OP_NS}/submariners", submariner),
            (f"/apis/submariner.io/v1/namespaces/{OP_NS}/gateways", gateway)]


# =========================================================================================== answers


@dataclass(slots=True)
class Zone:
    """Every name the data defines, with the answer lighthouse-dns must give (lighthouse-dns.md §3, §4).

    `data` is also what unbound serves. For a ClusterIP name answered by round robin (no healthy local
    entry, several clusters) lighthouse may give any one of `alternatives`; unbound serves the first.
    """

    data: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    alternatives: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    owners: set[str] = field(default_factory=set)

    def add(self, owner: str, rdtype: str, rdata: str) -> None:
        self.owners.add(owner)
        values = self.data.setdefault((owner, rdtype), [])
        if rdata not in values:
            values.append(rdata)

    def expected(self, name: str, rdtype: str) -> tuple[int, list[frozenset[str]]]:
        """(rcode, acceptable answer sets) for a query."""
        owner = name.lower().rstrip(".") + "."
        if owner not in self.owners:
            return NXDOMAIN, [frozenset()]
        alts = self.alternatives.get((owner, rdtype))
        if alts:
            return NOERROR, [frozenset([a]) for a in alts]
        return NOERROR, [frozenset(self.data.get((owner, rdtype), ()))]


def build_zone(services: list[Service]) -> Zone:
    zone = Zone()
    for svc in services:
        base = svc.fqdn
        if svc.headless:
            for c in svc.clusters:
                cbase = f"{c}.{base}"
                for host, ip in svc.endpoints[c]:
                    for owner in (base, cbase, f"{host}.{cbase}"):
                        zone.add(owner, "A", ip)
                    for p in svc.ports:
                        srv = f"0 50 {p.port} {host}.{cbase}"
                        for owner in (base, cbase, f"_{p.name}._{p.protocol.lower()}.{base}",
                                      f"_{p.name}._{p.protocol.lower()}.{cbase}"):
                            zone.add(owner, "SRV", srv)
            continue
        for rdtype, ips in (("A", svc.v4), ("AAAA", svc.v6)):
            if not ips:
                continue
            if LOCAL in ips:  # local first (§3.2 step 2)
                zone.add(base, rdtype, ips[LOCAL])
            else:  # round robin over the connected clusters (§3.2 step 3)
                zone.add(base, rdtype, ips[svc.clusters[0]])
                if len(ips) > 1:
                    zone.alternatives[(base, rdtype)] = [ips[c] for c in svc.clusters]
            for c in svc.clusters:
                zone.add(f"{c}.{base}", rdtype, ips[c])
        for target in (base, *(f"{c}.{base}" for c in svc.clusters)):
            for p in svc.ports:
                srv = f"0 50 {p.port} {target}"
                zone.add(target, "SRV", srv)
                zone.add(f"_{p.name}._{p.protocol.lower()}.{target}", "SRV", srv)
    return zone


def unbound_config(zone: Zone, port: int, work: Path) -> str:
    """unbound serving `zone` as static local data on loopback: no recursion, no upstream, one thread."""
    lines = [
        "server:",
        f"    interface: 127.0.0.1@{port}",
        f"    port: {port}",
        "    do-ip6: no",
        "    do-daemonize: no",
        '    chroot: ""',
        '    username: ""',
        f'    directory: "{work}"',
        f'    pidfile: "{work / "unbound.pid"}"',
        "    use-syslog: no",
        '    logfile: ""',
        "    verbosity: 1",
        "    num-threads: 1",
        "    so-rcvbuf: 4m",  # as lighthouse-dns sets on its UDP socket, so a burst is queued, not dropped
        "    so-sndbuf: 4m",
        "    do-not-query-localhost: yes",
        '    module-config: "iterator"',
        "    access-control: 127.0.0.0/8 allow",
        '    local-zone: "." refuse',  # nothing outside the zone is ever resolved (no traffic leaves the box)
        f'    local-zone: "{ZONE}." static',
        f'    local-data: "{SOA}"',
    ]
    for (owner, rdtype), values in zone.data.items():
        lines.extend(f'    local-data: "{owner} {TTL} IN {rdtype} {v}"' for v in values)
    lines += ["remote-control:", "    control-enable: no", ""]
    return "\n".join(lines)


# =========================================================================================== query mix


def make_queries(services: list[Service], count: int, seed: int) -> list[tuple[str, str, str]]:
    """(name, qtype, category) lines: services picked uniformly, the category by MIX."""
    rng = random.Random(seed + 1)
    cip = [s for s in services if not s.headless]
    dual = [s for s in cip if s.v6] or cip
    headless = [s for s in services if s.headless] or cip
    namespaces = sorted({s.namespace for s in services})
    cats, weights = zip(*MIX, strict=True)
    out: list[tuple[str, str, str]] = []
    for cat in rng.choices(cats, weights, k=count):
        if cat == "NXDOMAIN":
            roll = rng.random()
            if roll < 0.7:  # a service nobody exports
                name, qtype = f"nosuch-{rng.randrange(5000)}.{rng.choice(namespaces)}.svc.{ZONE}", "A"
            elif roll < 0.85:  # a cluster that does not export this service
                s = rng.choice(cip)
                name, qtype = f"c9.{s.fqdn}", rng.choice(("A", "SRV"))
            else:  # an unknown pod hostname of a headless service
                s = rng.choice(headless)
                name, qtype = f"web-7.{rng.choice(s.clusters)}.{s.fqdn}", "A"
        elif cat.startswith("headless"):
            s = rng.choice(headless)
            c = rng.choice(s.clusters)
            if cat == "headless A":
                name, qtype = s.fqdn, "A"
            elif cat == "headless SRV":
                name, qtype = s.fqdn, "SRV"
            elif cat == "headless host A":
                name, qtype = f"{rng.choice(s.endpoints[c])[0]}.{c}.{s.fqdn}", "A"
            else:
                name, qtype = f"{c}.{s.fqdn}", "A"
        else:
            s = rng.choice(dual if cat == "AAAA dual-stack" else cip)
            c = rng.choice(s.clusters)
            p = rng.choice(s.ports)
            name, qtype = {
                "A": (s.fqdn, "A"),
                "SRV": (s.fqdn, "SRV"),
                "SRV _port._proto": (f"_{p.name}._{p.protocol.lower()}.{s.fqdn}", "SRV"),
                "AAAA": (s.fqdn, "AAAA"),
                "AAAA dual-stack": (s.fqdn, "AAAA"),
                "cluster A": (f"{c}.{s.fqdn}", "A"),
                "cluster SRV": (f"{c}.{s.fqdn}", "SRV"),
            }[cat]
        out.append((name.rstrip("."), qtype, cat))
    return out


# =========================================================================================== loading


@dataclass(slots=True)
class Api:
    url: str
    ca: Path
    token: str

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=client_ssl_context(self.ca), timeout=30) as resp:
                return resp.status, orjson.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")


async def _post_all(api: Api, items: list[tuple[str, bytes]], concurrency: int) -> list[str]:
    """POST every (path, body) with `concurrency` requests in flight; 409 (exists) counts as done."""
    import aiohttp

    errors: list[str] = []
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(api.ca), limit=concurrency)
    headers = {"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"}
    it = iter(items)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        async def worker() -> None:
            for path, body in it:
                for attempt in range(6):
                    async with session.post(api.url + path, data=body) as resp:
                        text = await resp.read()
                        if resp.status in (200, 201, 202, 409):
                            break
                        if resp.status in (429, 500, 503) and attempt < 5:
                            await asyncio.sleep(0.05 * 2 ** attempt)
                            continue
                        errors.append(f"POST {path}: {resp.status} {text[:200]!r}")
                        break

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


def load_data(api: Api, services: list[Service], concurrency: int) -> dict[str, Any]:
    """Namespaces and CRDs, then the connectivity objects, ServiceImports and EndpointSlices (timed)."""
    import yaml

    crds = [d for d in yaml.safe_load_all(subprocess.run([str(BIN / "submariner-broker"), "crds"], check=True,
                                                          capture_output=True, text=True).stdout)
            if d and d.get("metadata", {}).get("name") in NEEDED_CRDS]
    namespaces = sorted({s.namespace for s in services} | {OP_NS})
    setup = [("/api/v1/namespaces", orjson.dumps({"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": ns}})) for ns in namespaces]
    setup += [(CRD_PATH, orjson.dumps(crd)) for crd in crds]
    errors = asyncio.run(_post_all(api, setup, 8))
    deadline = time.monotonic() + 30
    for path in ("/apis/multicluster.x-k8s.io/v1alpha1/serviceimports", "/apis/submariner.io/v1/gateways",
                 "/apis/submariner.io/v1alpha1/submariners"):
        while api.request("GET", path)[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRD for {path} not served after 30 s")
            time.sleep(0.1)
    items = [(path, orjson.dumps(obj)) for path, obj in connectivity_objects()]
    for svc in services:
        items.append((SI_PATH.format(ns=svc.namespace), orjson.dumps(service_import(svc))))
        items.extend((EPS_PATH.format(ns=svc.namespace), orjson.dumps(s)) for s in endpoint_slices(svc))
    start = time.monotonic()
    errors += asyncio.run(_post_all(api, items, concurrency))
    seconds = time.monotonic() - start
    if errors:
        raise RuntimeError(f"{len(errors)} objects could not be created, e.g. {errors[:3]}")
    return {"objects": len(items), "load_seconds": round(seconds, 2),
            "load_objects_per_s": round(len(items) / seconds, 1) if seconds else 0.0}


# =========================================================================================== servers


def free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP right now (unbound cannot report a kernel-chosen port)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port")


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    """`taskset -c CPU argv` (taskset execs, so the PID we get is the program's own)."""
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


def dns_query(port: int, name: str, rdtype: str, timeout: float = 2.0) -> Any:
    """One query as dnsperf sends it (EDNS0), retried over TCP when truncated, as a stub resolver would."""
    import dns.message
    import dns.query

    q = dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
    return dns.query.udp_with_fallback(q, "127.0.0.1", port=port, timeout=timeout)[0]


class DnsProcess:
    """A DNS server child (stdout and stderr into a log file, so a chatty server can never block on a pipe)."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "w") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.port = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.log_text())
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not print {pattern!r}: {self.log_text()[-2000:]}")

    def wait_answering(self, name: str, timeout: float) -> None:
        """Until a query for `name` gets NOERROR with an answer (lighthouse: the data is loaded)."""
        import dns.exception

        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.log_text()[-2000:]}")
            try:
                r = dns_query(self.port, name, "A", timeout=0.5)
                if r.rcode() == NOERROR and r.answer:
                    return
                last = f"rcode {r.rcode()}"
            except (dns.exception.DNSException, OSError) as e:
                last = repr(e)
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} does not answer {name} ({last}): {self.log_text()[-2000:]}")

    def stop(self) -> None:
        stop_pid(self.proc)


def http_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def start_lighthouse(work: Path, kubeconfig: Path, cpu: int | None, probe: str) -> tuple[DnsProcess, float]:
    """lighthouse-dns with the operator's Corefile (§5.2), everything on loopback; seconds until ready."""
    corefile = work / "Corefile"
    corefile.write_text(f"{ZONE} {{\n    bind 127.0.0.1\n    lighthouse\n    errors\n    health 127.0.0.1:0\n"
                        f"    ready 127.0.0.1:0\n    prometheus 127.0.0.1:0\n}}\n")
    start = time.monotonic()
    lh = DnsProcess("lighthouse-dns", pinned(cpu, [str(BIN / "lighthouse-dns"), "-conf", str(corefile),
                                                   "-dns.port", "0", "-kubeconfig", str(kubeconfig),
                                                   "-cluster-id", LOCAL]), work / "lighthouse-dns.log")
    try:
        lh.port = int(lh.wait_for(r"serving dns://\S*:(\d+)\s*$", 60).group(1))
        http_port = int(lh.wait_for(r"serving http://127\.0\.0\.1:(\d+) \S*/ready", 30).group(1))
        deadline = time.monotonic() + 300
        while not http_ready(http_port):
            if time.monotonic() > deadline or lh.proc.poll() is not None:
                raise RuntimeError(f"lighthouse-dns not ready: {lh.log_text()[-2000:]}")
            time.sleep(0.05)
        lh.wait_answering(probe, 60)
    except BaseException:
        lh.stop()
        raise
    return lh, time.monotonic() - start


def start_unbound(work: Path, zone: Zone, cpu: int | None, probe: str) -> tuple[DnsProcess, float]:
    conf = work / "unbound.conf"
    port = free_udp_tcp_port()
    conf.write_text(unbound_config(zone, port, work))
    check = subprocess.run(["unbound-checkconf", str(conf)], capture_output=True, text=True) \
        if shutil.which("unbound-checkconf") else None
    if check is not None and check.returncode != 0:
        raise RuntimeError(f"unbound-checkconf: {check.stdout}{check.stderr}")
    start = time.monotonic()
    ub = DnsProcess("unbound", pinned(cpu, ["unbound", "-d", "-c", str(conf)]), work / "unbound.log")
    ub.port = port
    try:
        ub.wait_answering(probe, 120)
    except BaseException:
        ub.stop()
        raise
    return ub, time.monotonic() - start


# =========================================================================================== correctness


def answer_set(msg: Any) -> frozenset[str]:
    return frozenset(rd.to_text().lower() for rrset in msg.answer for rd in rrset)


def spot_check(servers: list[DnsProcess], zone: Zone, queries: list[tuple[str, str, str]],
               per_category: int) -> dict[str, Any]:
    """Ask every server the first `per_category` distinct queries of each category; compare with `zone`."""
    import dns.exception
    import dns.rdatatype

    picked: dict[str, list[tuple[str, str]]] = {}
    for name, qtype, cat in queries:
        chosen = picked.setdefault(cat, [])
        if len(chosen) < per_category and (name, qtype) not in chosen:
            chosen.append((name, qtype))
    checks = [(name, qtype, cat) for cat, items in picked.items() for name, qtype in items]
    result: dict[str, Any] = {"checked": len(checks), "categories": len(picked)}
    for server in servers:
        bad: list[str] = []
        for name, qtype, cat in checks:
            rcode, acceptable = zone.expected(name, qtype)
            try:
                r = dns_query(server.port, name, qtype)
            except (dns.exception.DNSException, OSError) as e:
                bad.append(f"{cat}: {name} {qtype}: {e!r}")
                continue
            got = answer_set(r)
            if r.rcode() != rcode or got not in acceptable or (r.answer and r.answer[0].rdtype
                                                               != dns.rdatatype.from_text(qtype)):
                bad.append(f"{cat}: {name} {qtype}: got rcode {r.rcode()} {sorted(got)}, "
                           f"want rcode {rcode} one of {[sorted(a) for a in acceptable]}")
        result[f"{server.name}_mismatches"] = len(bad)
        result[f"{server.name}_samples"] = bad[:5]
    return result


# =========================================================================================== dnsperf

_DNSPERF = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "qps": re.compile(r"Queries per second:\s+([\d.]+)"),
    "avg_latency_s": re.compile(r"Average Latency \(s\):\s+([\d.]+)"),
    "run_time_s": re.compile(r"Run time \(s\):\s+([\d.]+)"),
}
_RCODES = re.compile(r"Response codes:\s+(.*)")
_PER_QUERY = re.compile(r"^> (\S+) \S+ \S+ ([\d.]+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Load:
    clients: int
    outstanding: int
    timeout: float


def dnsperf(server: DnsProcess, qfile: Path, seconds: float, load: Load, cpu: int | None, out: Path,
            rate: float = 0.0, verbose: bool = False, passes: int = 0) -> dict[str, Any]:
    """One dnsperf run against `server`: QPS, loss, response codes, server and client CPU share.

    Runs for `seconds`, or until `passes` runs through the query file if that comes first.
    """
    argv = ["dnsperf", "-e", "-s", "127.0.0.1", "-p", str(server.port), "-d", str(qfile), "-l", f"{seconds:g}",
            "-c", str(load.clients), "-q", str(load.outstanding), "-t", f"{load.timeout:g}"]
    if passes > 0:
        argv += ["-n", str(passes)]
    if rate > 0:
        argv += ["-Q", str(int(rate))]
    if verbose:
        argv.append("-v")
    cpu0, kids0 = cpu_seconds(server.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, wall0 = machine_busy_seconds(), time.monotonic()
    with open(out, "w") as fh:
        proc = subprocess.run(pinned(cpu, argv), stdout=fh, stderr=subprocess.STDOUT, timeout=seconds + 60)
    wall = time.monotonic() - wall0
    busy = machine_busy_seconds() - busy0
    server_cpu = cpu_seconds(server.pid) - cpu0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (kids.ru_utime - kids0.ru_utime) + (kids.ru_stime - kids0.ru_stime)
    text = out.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({proc.returncode}): {text[-2000:]}")
    res: dict[str, Any] = {}
    for key, rx in _DNSPERF.items():
        m = rx.search(text)
        res[key] = float(m.group(1)) if m else 0.0
    m = _RCODES.search(text)
    res["rcodes"] = dict(re.findall(r"(\w+) (\d+) \(", m.group(1))) if m else {}
    res["rcodes"] = {k: int(v) for k, v in res["rcodes"].items()}
    run_time = res["run_time_s"] or wall
    res["server_cpu_util"] = round(server_cpu / run_time, 2)
    res["client_cpu_util"] = round(client_cpu / run_time, 2)
    # Queries per second of server CPU: comparable even when dnsperf, not the server, was the limit.
    res["qps_per_server_cpu"] = round(res["qps"] / (server_cpu / run_time), 1) if server_cpu > 0 else 0.0
    res["client_bound"] = res["client_cpu_util"] >= 0.9 and res["server_cpu_util"] < 0.9
    res["other_load_cores"] = round(max(0.0, busy - server_cpu - client_cpu) / wall, 2)
    if verbose:
        lat = sorted(float(v) for _, v in _PER_QUERY.findall(text))
        res["answered"] = len(lat)
        res["p50_ms"] = round(percentile(lat, 50) * 1000, 3)
        res["p99_ms"] = round(percentile(lat, 99) * 1000, 3)
        res["max_ms"] = round((lat[-1] if lat else 0.0) * 1000, 3)
    return res


def measure(server: DnsProcess, qfile: Path, opts: Options, client_cpu: int | None, work: Path) -> dict[str, Any]:
    """First pass, then max QPS (closed loop, many in flight), then latency at half of that QPS.

    The first pass through the query file asks every distinct question once: lighthouse-dns computes each
    answer (dnspython, the model) and keeps the rendered reply until that service's data changes, so this
    pass is its "answers computed" rate and the later runs are its steady state on stable data. For unbound
    (static local data) both are the same work. The pass is capped at `--first-pass-cap` seconds.
    """
    load = Load(opts.clients, opts.outstanding, 1.0)
    tag = server.name
    log(f"{tag}: first pass through the query file (at most {opts.first_pass_cap:g} s)")
    first = dnsperf(server, qfile, opts.first_pass_cap, load, client_cpu, work / f"{tag}-first.txt", passes=1)
    log(f"{tag}: first pass {first['qps']:,.0f} QPS; max QPS, {opts.duration:g} s, {opts.clients} clients, "
        f"{opts.outstanding} outstanding")
    peak = dnsperf(server, qfile, opts.duration, load, client_cpu, work / f"{tag}-max.txt")
    rate = peak["qps"] / 2
    log(f"{tag}: {peak['qps']:,.0f} QPS (server CPU {peak['server_cpu_util']:.0%}, dnsperf CPU "
        f"{peak['client_cpu_util']:.0%}); latency at {rate:,.0f} QPS")
    half = dnsperf(server, qfile, opts.duration, load, client_cpu, work / f"{tag}-half.txt", rate=rate,
                   verbose=True)
    rss, hwm = memory_kib(server.pid)
    return {"first_pass": first, "max": peak, "half": half, "half_rate": round(rate, 1),
            "rss_mib": round(rss / 1024, 1), "peak_rss_mib": round(hwm / 1024, 1)}


# =========================================================================================== in-process


def micro_child(kubeconfig: str, qfile: str, local: str) -> dict[str, Any]:
    """In this process (a child pinned like the server): the real `lighthouse-dns` App and plugins against the same
    API server, and `DnsServer.handle_datagram` called directly (no sockets): µs per computed answer (every
    distinct question once, the first pass's work) and per cached answer (the whole file, best of 5 passes)."""
    import gc
    import io

    import dns.message

    from submariner.lighthouse.dns.cli import App
    from submariner.lighthouse.dns.process import ProcessState

    async def run() -> dict[str, Any]:
        process = ProcessState(out=io.StringIO(), kubeconfig=kubeconfig, cluster_id=local)
        work = Path(tempfile.mkdtemp(prefix="bench-dns-micro-"))
        try:
            corefile = work / "Corefile"
            corefile.write_text(f"{ZONE} {{\n    bind 127.0.0.1\n    lighthouse\n    errors\n"
                                f"    prometheus 127.0.0.1:0\n}}\n")
            app = App(str(corefile), 0, process)
            await app.start()
            deadline = time.monotonic() + 120
            while not process.readiness()[0]:
                if time.monotonic() > deadline:
                    raise RuntimeError("in-process lighthouse-dns not ready")
                await asyncio.sleep(0.05)
            server = next(iter(app.servers.values()))
            server.set_udp_sender(lambda data, addr: None)
            wires = []
            for i, line in enumerate(Path(qfile).read_text().splitlines()):
                name, qtype = line.split()
                q = dns.message.make_query(name, qtype, use_edns=0, payload=EDNS_PAYLOAD)
                q.id = i & 0xFFFF
                wires.append(q.to_wire())
            firsts = list({w[2:]: w for w in reversed(wires)}.values())
            addr = ("127.0.0.1", 40000)
            handle = server.handle_datagram
            gc.collect()
            start = time.perf_counter()
            for w in firsts:
                handle(w, addr)
                if server._tasks:
                    await asyncio.sleep(0)
            while server._tasks:
                await asyncio.sleep(0)
            miss = (time.perf_counter() - start) / len(firsts)
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                for w in wires:
                    handle(w, addr)
                best = min(best, (time.perf_counter() - start) / len(wires))
            await app.shutdown()
            return {"miss_us": round(miss * 1e6, 2), "hit_us": round(best * 1e6, 2), "answers": len(firsts),
                    "queries": len(wires)}
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return asyncio.run(run())


def micro(kubeconfig: Path, qfile: Path, cpu: int | None) -> dict[str, Any]:
    """`micro_child` in a child process pinned to the server's CPU; {} when it fails (reported, not fatal)."""
    argv = pinned(cpu, [sys.executable, str(Path(__file__).resolve()), "--micro-child", str(kubeconfig), str(qfile),
                        LOCAL])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        log("in-process micro benchmark timed out")
        return {}
    if proc.returncode != 0 or not proc.stdout.strip():
        log(f"in-process micro benchmark failed: {proc.stderr[-1000:]}")
        return {}
    result: dict[str, Any] = orjson.loads(proc.stdout.strip().splitlines()[-1])
    return result


# =========================================================================================== run


@dataclass(frozen=True, slots=True)
class Options:
    services: int
    queries: int
    duration: float
    first_pass_cap: float
    clients: int
    outstanding: int
    concurrency: int
    check_per_category: int
    seed: int
    quick: bool
    keep: bool
    json: bool


def choose_cpus() -> tuple[int | None, int | None]:
    """(server CPU, dnsperf CPU): the last and the first allowed CPU; no pinning with one CPU or no taskset."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2 or shutil.which("taskset") is None:
        return None, None
    return allowed[-1], allowed[0]


def run(opts: Options) -> dict[str, Any]:
    cpus = choose_cpus()
    server_cpu = cpus[0]
    work = Path(tempfile.mkdtemp(prefix="bench-dns-"))
    started: list[Any] = []
    try:
        services = make_services(opts.services, opts.seed)
        zone = build_zone(services)
        queries = make_queries(services, opts.queries, opts.seed)
        qfile = work / "queries.txt"
        qfile.write_text("".join(f"{n} {t}\n" for n, t, _ in queries))
        api_server = ServingProcess([str(BIN / "submariner-broker"), "serve", "--data-dir", str(work / "api"),
                                     "--listen", "127.0.0.1:0", "--write-kubeconfig", str(work / "kubeconfig"),
                                     "--context", "bench"], work / "api-server.log")
        url = api_server.start()
        started.append(api_server)
        log(f"API server pid {api_server.pid} at {url}")
        api = Api(url, work / "api" / "ca.crt", (work / "api" / "admin-token").read_text().strip())
        log(f"loading {opts.services:,} services ({len(CLUSTERS)} clusters) into the API server")
        loaded = load_data(api, services, opts.concurrency)
        log(f"{loaded['objects']:,} objects in {loaded['load_seconds']:.1f} s "
            f"({loaded['load_objects_per_s']:,.0f}/s)")
        probe = services[-1].fqdn
        lh, lh_ready = start_lighthouse(work, work / "kubeconfig", server_cpu, probe)
        started.append(lh)
        lh_rss_loaded, _ = memory_kib(lh.pid)
        log(f"lighthouse-dns pid {lh.pid} on port {lh.port}: ready in {lh_ready:.1f} s, "
            f"RSS {lh_rss_loaded / 1024:.0f} MiB")
        log(f"unbound: {sum(len(v) for v in zone.data.values()):,} local-data records")
        ub, ub_ready = start_unbound(work, zone, server_cpu, probe)
        started.append(ub)
        log(f"unbound pid {ub.pid} on port {ub.port}: answering in {ub_ready:.1f} s")
        check = spot_check([lh, ub], zone, queries, opts.check_per_category)
        log(f"spot check: {check['checked']} queries; mismatches lighthouse-dns "
            f"{check['lighthouse-dns_mismatches']}, unbound {check['unbound_mismatches']}")
        results = {}
        for server in (ub, lh):
            results[server.name] = measure(server, qfile, opts, cpus[1], work)
        same = results["lighthouse-dns"]["half_rate"]
        log(f"unbound: latency at lighthouse-dns's half-load rate, {same:,.0f} QPS")
        results["unbound"]["same_rate"] = dnsperf(ub, qfile, opts.duration, Load(opts.clients, opts.outstanding, 1.0),
                                                  cpus[1], work / "unbound-same.txt", rate=same, verbose=True)
        lh_rss_end, lh_hwm = memory_kib(lh.pid)
        after = spot_check([lh, ub], zone, queries, max(2, opts.check_per_category // 5))
        for proc in (lh, ub):  # the in-process measurement gets the CPU to itself
            proc.stop()
        log("in-process: lighthouse-dns handle_datagram, computed and cached answers")
        in_process = micro(work / "kubeconfig", qfile, server_cpu)
    finally:
        for proc in reversed(started):
            proc.stop()
        if opts.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    u, lhr = results["unbound"], results["lighthouse-dns"]
    ratio = lhr["max"]["qps"] / u["max"]["qps"] if u["max"]["qps"] else 0.0
    per_cpu = (lhr["max"]["qps_per_server_cpu"] / u["max"]["qps_per_server_cpu"]
               if u["max"]["qps_per_server_cpu"] else 0.0)
    mix = Counter(cat for _, _, cat in queries)
    correct = all(c[f"{n}_mismatches"] == 0 for c in (check, after) for n in ("lighthouse-dns", "unbound"))
    summary: dict[str, Any] = {
        "services": opts.services, "clusters": len(CLUSTERS),
        "headless": sum(s.headless for s in services),
        "dual_stack": sum(bool(s.v6) for s in services),
        **loaded,
        "queries_in_file": len(queries), "distinct_queries": len({(n.lower(), t) for n, t, _ in queries}),
        "mix": {cat: mix[cat] for cat, _ in MIX},
        "unbound_records": sum(len(v) for v in zone.data.values()),
        "duration_s": opts.duration, "clients": opts.clients, "outstanding": opts.outstanding,
        "server_cpu": cpus[0], "dnsperf_cpu": cpus[1],
        "lighthouse_ready_s": round(lh_ready, 2), "unbound_ready_s": round(ub_ready, 2),
        "lighthouse_rss_mib": round(lh_rss_loaded / 1024, 1),
        "lighthouse_rss_end_mib": round(lh_rss_end / 1024, 1),
        "lighthouse_peak_rss_mib": round(lh_hwm / 1024, 1),
        "in_process": in_process,
        "unbound": u, "lighthouse": lhr,
        "ratio": round(ratio, 3),
        "ratio_first_pass": round(lhr["first_pass"]["qps"] / u["first_pass"]["qps"], 3)
        if u["first_pass"]["qps"] else 0.0,
        "first_pass_cap": opts.first_pass_cap,
        "ratio_per_cpu": round(per_cpu, 3),
        "correctness": {"before": check, "after": after},
        "correct": correct,
    }
    summary["goals"] = {
        "ratio_ge_0_9": ratio >= 0.9,
        "p99_lt_1ms": lhr["half"]["p99_ms"] < 1.0,
        "rss_lt_150mib": summary["lighthouse_rss_mib"] < 150,
    }
    return summary


def report(s: dict[str, Any]) -> str:
    u, lh = s["unbound"], s["lighthouse"]

    def pair(fmt: str, *path: str) -> tuple[str, str]:
        def get(d: dict[str, Any]) -> Any:
            for p in path:
                d = d[p]
            return d
        return fmt.format(get(lh)), fmt.format(get(u))

    def ok(goal: str) -> str:
        return "met" if s["goals"][goal] else "NOT met"

    rows = [
        Row("first pass QPS", pair("{:,.0f}", "first_pass", "qps"),
            f"every distinct question once (lighthouse computes each answer); "
            f"ratio {s['ratio_first_pass']:.3f}"),
        Row("  first pass queries", pair("{:,.0f}", "first_pass", "completed"),
            f"of {s['queries_in_file']:,}" + ("" if all(r["first_pass"]["sent"] >= s["queries_in_file"]
                                                       for r in (lh, u))
                                             else f"; the {s['first_pass_cap']:g} s cap ended a pass early")),
        Row("max QPS", pair("{:,.0f}", "max", "qps"),
            f"ratio lighthouse/unbound {s['ratio']:.3f} (goal >= 0.9: {ok('ratio_ge_0_9')})"),
        Row("  lost at max", pair("{:,.0f}", "max", "lost")),
        Row("  server CPU / dnsperf CPU", tuple(f"{r['max']['server_cpu_util']:.0%} / {r['max']['client_cpu_util']:.0%}"
                                               for r in (lh, u)),
            "server near 100% = the server is the bottleneck" + (
                "; unbound was dnsperf-bound: its max is a lower bound" if u["max"]["client_bound"] else "")),
        Row("  server CPU us per query", tuple(f"{1e6 / r['max']['qps_per_server_cpu']:.2f}"
                                               if r["max"]["qps_per_server_cpu"] else "-" for r in (lh, u)),
            "at max QPS: cached answers, kernel time (recv, send) included"),
        Row("  QPS per server CPU", pair("{:,.0f}", "max", "qps_per_server_cpu"),
            f"ratio {s['ratio_per_cpu']:.3f}: the comparison that holds when a server was not saturated"),
        Row("  other load, cores", pair("{:.2f}", "max", "other_load_cores"), "busy CPU not from this benchmark"),
        Row("half-load rate QPS", pair("{:,.0f}", "half_rate"), "half of each server's own max"),
        Row("  achieved QPS", pair("{:,.0f}", "half", "qps")),
        Row("  latency p50 ms", pair("{:.3f}", "half", "p50_ms")),
        Row("  latency p99 ms", pair("{:.3f}", "half", "p99_ms"), f"goal < 1 ms: {ok('p99_lt_1ms')}"),
        Row("  latency max ms", pair("{:.3f}", "half", "max_ms")),
        Row("  lost at half", pair("{:,.0f}", "half", "lost")),
        Row(f"at {lh['half_rate']:,.0f} QPS p50 / p99 ms", tuple(f"{r['p50_ms']:.3f} / {r['p99_ms']:.3f}"
                                                         for r in (lh["half"], u["same_rate"])),
            "both at lighthouse-dns's half-load rate"),
        Row("in-process us per answer", (f"{s['in_process']['hit_us']:.2f} / {s['in_process']['miss_us']:.1f}"
                                         if s["in_process"] else "failed", "-"),
            "DnsServer.handle_datagram without sockets: cached / computed (every distinct question once)"),
        Row("RSS MiB (peak)", (f"{s['lighthouse_rss_end_mib']:.0f} ({s['lighthouse_peak_rss_mib']:.0f})",
                               f"{u['rss_mib']:.0f} ({u['peak_rss_mib']:.0f})"),
            f"lighthouse after load: {s['lighthouse_rss_mib']:.0f} MiB (goal < 150: {ok('rss_lt_150mib')})"),
        Row("ready after start s", (f"{s['lighthouse_ready_s']:.1f}", f"{s['unbound_ready_s']:.1f}"),
            "lighthouse: initial list of every object + model"),
        Row("spot-check mismatches", (str(s["correctness"]["before"]["lighthouse-dns_mismatches"]
                                          + s["correctness"]["after"]["lighthouse-dns_mismatches"]),
                                      str(s["correctness"]["before"]["unbound_mismatches"]
                                          + s["correctness"]["after"]["unbound_mismatches"])),
            f"{s['correctness']['before']['checked']} + {s['correctness']['after']['checked']} queries, "
            f"{s['correctness']['before']['categories']} kinds, before and after the load"),
    ]
    pin = (f"server on CPU {s['server_cpu']}, dnsperf on CPU {s['dnsperf_cpu']}" if s["server_cpu"] is not None
           else "not pinned (one CPU or no taskset)")
    head = (f"{s['services']:,} services ({s['headless']:,} headless, {s['dual_stack']:,} dual-stack), "
            f"{s['clusters']} clusters: {s['objects']:,} objects loaded in {s['load_seconds']:.1f} s "
            f"({s['load_objects_per_s']:,.0f}/s); unbound: {s['unbound_records']:,} local-data records\n"
            f"queries: {s['queries_in_file']:,} lines, {s['distinct_queries']:,} distinct; "
            f"{s['duration_s']:g} s per measurement; {pin}; dnsperf -e -c {s['clients']} -q {s['outstanding']}")
    text = table("DNS: lighthouse-dns vs unbound (same names, same queries, same CPU)",
                 ("lighthouse-dns", "unbound"), rows)
    samples = [x for c in (s["correctness"]["before"], s["correctness"]["after"])
               for x in c["lighthouse-dns_samples"] + c["unbound_samples"]]
    if samples:
        text += "\nmismatches:\n  " + "\n  ".join(samples[:10])
    return head + "\n\n" + text


def parse_args(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--services", type=int, default=None, help="exported services (default 10,000; --quick 400)")
    p.add_argument("--queries", type=int, default=None, help="lines in the query file (default 100,000)")
    p.add_argument("--duration", type=float, default=None, help="seconds per dnsperf measurement (default 10)")
    p.add_argument("--first-pass-cap", type=float, default=None,
                   help="cap in seconds on the first pass through the query file (default 60)")
    p.add_argument("--clients", type=int, default=4, help="dnsperf -c (default 4)")
    p.add_argument("--outstanding", type=int, default=500, help="dnsperf -q, queries in flight (default 500)")
    p.add_argument("--concurrency", type=int, default=64, help="API requests in flight while loading (default 64)")
    p.add_argument("--check", type=int, default=None, help="spot-checked queries per category (default 25)")
    p.add_argument("--seed", type=int, default=1, help="data and query mix seed (default 1)")
    p.add_argument("--quick", action="store_true", help="small and short: a ~30 s smoke run")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs, dnsperf output)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    a = p.parse_args(argv)
    q = a.quick
    opts = Options(
        services=a.services if a.services is not None else (400 if q else 10_000),
        queries=a.queries if a.queries is not None else (10_000 if q else 100_000),
        duration=a.duration if a.duration is not None else (2.0 if q else 10.0),
        first_pass_cap=a.first_pass_cap if a.first_pass_cap is not None else (10.0 if q else 60.0),
        clients=a.clients, outstanding=a.outstanding, concurrency=a.concurrency,
        check_per_category=a.check if a.check is not None else (10 if q else 25),
        seed=a.seed, quick=q, keep=a.keep, json=a.json,
    )
    if not 5 <= opts.services <= MAX_SERVICES:
        p.error(f"--services must be between 5 and {MAX_SERVICES:,}")
    if opts.queries < 100 or min(opts.duration, opts.first_pass_cap, opts.clients, opts.outstanding) <= 0:
        p.error("--queries must be >= 100; --duration, --first-pass-cap, --clients and --outstanding positive")
    return opts


def main(argv: list[str]) -> int:
    if argv[:1] == ["--micro-child"]:
        install_uvloop()
        print(orjson.dumps(micro_child(*argv[1:4])).decode(), flush=True)
        return 0
    opts = parse_args(argv)
    missing = missing_packages()
    if missing:
        print(f"bench/dns.py needs the Debian package(s) {', '.join(missing)}: "
              f"apt-get install -y {' '.join(missing)} (or run scripts/setup)", file=sys.stderr)
        return 2
    install_uvloop()
    summary = run(opts)
    print(report(summary), flush=True)
    if opts.json:
        print(orjson.dumps(summary).decode(), flush=True)
    return 0 if summary["correct"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
