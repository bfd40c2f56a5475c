"""Lighthouse agent sync at scale: export → ServiceImport and export → DNS answer latency, agent CPU/RSS,
restart reconcile time, for 1,000 and 10,000 exported services across two clusters (+ a broker).

Everything runs on loopback: three `submariner-broker serve` processes (broker, c1, c2), one `lighthouse-agent`
process per cluster and `lighthouse-dns` reading c1. Services live in c2 (with a ready Kubernetes
EndpointSlice each) and are exported at a paced rate; c1 imports them. Latencies are measured from the moment
the ServiceExport create is sent: "ServiceImport present" = the aggregate's copy `bench/svc-N` appears in c1's
watch; "DNS answer" = c1's lighthouse-dns answers `svc-N.bench.svc.clusterset.local` with c2's service IP
(polled every 5 ms for a sample of the exports). The baseline, measured in the same run on the same servers,
is one write→watch hop (a ConfigMap created on c1, seen by an informer on c1): an export crosses three such
hops (c2 → broker → c1) plus the agents' work. Every process is started here and stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import re
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
from _common import (  # noqa: E402 - bench/ is on sys.path because this script lives there
    BIN,
    Row,
    ServingProcess,
    cpu_seconds,
    log,
    memory_kib,
    percentile,
    stop_pid,
    table,
)

# bench/ comes first on sys.path; keep it from shadowing installed packages (dnspython's `dns`).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import orjson  # noqa: E402

BROKER_NS = "submariner-k8s-broker"
OP_NS = "submariner-operator"
NS = "bench"
_RUNNING = re.compile(r"lighthouse-agent running")
_RECONCILED = re.compile(r"lighthouse-agent reconciled .*seconds=([\d.]+) reconciles=(\d+) writes=(\d+)")
_DNS_SERVING = re.compile(r"serving dns://\S+:(\d+)")


# ------------------------------------------------------------------------------------------ processes


class LineProcess:
    """A child whose stdout lines we wait on (agents, lighthouse-dns); stderr goes to a log file."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "a") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                         text=True)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, remaining))
            if not ready:
                raise RuntimeError(f"pid {self.proc.pid}: no {pattern.pattern!r} within {timeout:.0f}s; "
                                   f"log: {self.log_path.read_text()[-1500:]}")
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"pid {self.proc.pid} exited: {self.log_path.read_text()[-1500:]}")
            m = pattern.search(line)
            if m:
                return m

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_pid(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_server(name: str, base: Path) -> tuple[ServingProcess, Path]:
    kubeconfig = base / f"{name}.kubeconfig"
    server = ServingProcess([str(BIN / "submariner-broker"), "serve", "--data-dir", str(base / f"{name}-data"),
                             "--listen", "127.0.0.1:0", "--write-kubeconfig", str(kubeconfig), "--context", name],
                            base / f"{name}-server.log")
    server.start()
    return server, kubeconfig


def start_agent(cluster: str, base: Path, kubeconfigs: dict[str, Path], workers: int) -> LineProcess:
    agent = LineProcess([str(BIN / "lighthouse-agent"), "--kubeconfig", str(kubeconfigs[cluster]),
                         "--context", cluster, "--cluster-id", cluster,
                         "--broker-kubeconfig", str(kubeconfigs["broker"]), "--broker-context", "broker",
                         "--broker-namespace", BROKER_NS, "--workers", str(workers)],
                        base / f"agent-{cluster}.log")
    agent.wait_for(_RUNNING, 60)
    return agent


# ------------------------------------------------------------------------------------------ DNS prober


class DnsProber:
    """Polls lighthouse-dns for names until each answers with an A record; one UDP socket, one thread."""

    def __init__(self, port: int, interval: float = 0.005) -> None:
        import dns.message

        self._dns_message = dns.message
        self.port = port
        self.interval = interval
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, float]] = {}  # qname -> (sent_ns, next poll)
        self._ids: dict[int, str] = {}
        self.answered: dict[str, int] = {}  # qname -> latency ns
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dns-prober", daemon=True)
        self._thread.start()

    def watch(self, qname: str, sent_ns: int) -> None:
        with self._lock:
            self._pending[qname] = (sent_ns, 0.0)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                due = [(q, s) for q, (s, nxt) in self._pending.items() if nxt <= now]
                for q, s in due:
                    self._pending[q] = (s, now + self.interval)
            for qname, _ in due:
                msg = self._dns_message.make_query(qname, "A")
                self._ids[msg.id] = qname
                with contextlib.suppress(BlockingIOError):
                    self.sock.sendto(msg.to_wire(), ("127.0.0.1", self.port))
            ready, _, _ = select.select([self.sock], [], [], self.interval / 2)
            while ready:
                try:
                    data = self.sock.recv(4096)
                except BlockingIOError:
                    break
                got = time.monotonic_ns()
                try:
                    reply = self._dns_message.from_wire(data)
                except Exception:
                    continue
                qname = self._ids.pop(reply.id) if reply.id in self._ids else ""
                if not qname or not any(rrset.rdtype == 1 for rrset in reply.answer):
                    continue
                with self._lock:
                    entry = self._pending.pop(qname, None)
                if entry is not None:
                    self.answered[qname] = got - entry[0]
            if len(self._ids) > 100_000:
                self._ids.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


# ------------------------------------------------------------------------------------------ one run


def _first_seen(seen: dict[str, int], obj: dict[str, Any]) -> None:
    seen.setdefault(obj["metadata"]["name"], time.monotonic_ns())


def _ms(values_ns: list[int]) -> dict[str, float]:
    s = sorted(values_ns)
    return {"p50": round(percentile(s, 50) / 1e6, 1), "p99": round(percentile(s, 99) / 1e6, 1),
            "max": round((s[-1] if s else 0) / 1e6, 1), "n": len(s)}


class HopProbe:
    """Write→watch hops on c1 at a low rate *while* exports run: separates server/machine stalls from the
    agents' own latency (if hops stall too, the servers or the machine did)."""

    def __init__(self, cluster: Any, rate: float = 5.0) -> None:
        from submariner.broker.kube import CONFIGMAPS, Informer

        self.seen: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self._client = cluster.resource(CONFIGMAPS)
        self._informer = Informer(self._client, namespace="hop", name="hop-probe",
                                  on_add=lambda o: _first_seen(self.seen, o))
        self._informer.start()
        self._informer.wait_for_sync(30)
        self._stop = threading.Event()
        self._rate = rate
        self._thread = threading.Thread(target=self._run, name="hop-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(1 / self._rate):
            name = f"probe-{i}"
            self.sent[name] = time.monotonic_ns()
            with contextlib.suppress(Exception):
                self._client.create({"metadata": {"name": name, "namespace": "hop"}})
            i += 1

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(5)
        time.sleep(0.5)
        self._informer.stop()
        return _ms([self.seen[n] - self.sent[n] for n in list(self.sent) if n in self.seen])


def hop_baseline(cluster: Any, count: int, rate: float) -> dict[str, float]:
    """One write→watch hop on the same server: ConfigMaps created at `rate`, seen by an informer."""
    from submariner.broker.kube import CONFIGMAPS, Informer

    seen: dict[str, int] = {}
    inf = Informer(cluster.resource(CONFIGMAPS), namespace="hop", name="hop-baseline",
                   on_add=lambda o: _first_seen(seen, o))
    inf.start()
    inf.wait_for_sync(30)
    sent: dict[str, int] = {}
    client = cluster.resource(CONFIGMAPS)
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        name = f"hop-{i}"
        sent[name] = time.monotonic_ns()
        client.create({"metadata": {"name": name, "namespace": "hop"}, "data": {"i": str(i)}})
    deadline = time.monotonic() + 30
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    inf.stop()
    return _ms([seen[n] - sent[n] for n in sent if n in seen])


def run(n: int, args: argparse.Namespace) -> dict[str, Any]:
    from submariner.broker.api import multicluster, submariner
    from submariner.broker.api.crds import crd
    from submariner.broker.kube import CRDS, ENDPOINT_SLICES, NAMESPACES, SERVICES, Cluster, Informer

    base = Path(tempfile.mkdtemp(prefix=f"bench-sync-{n}-"))
    servers: dict[str, ServingProcess] = {}
    procs: list[LineProcess] = []
    result: dict[str, Any] = {"services": n, "clusters": 2, "rate": args.rate}
    try:
        kubeconfigs: dict[str, Path] = {}
        for name in ("broker", "c1", "c2"):
            servers[name], kubeconfigs[name] = start_server(name, base)
        clusters = {name: Cluster.from_kubeconfig(kc, name) for name, kc in kubeconfigs.items()}
        for name, c in clusters.items():
            for res in (multicluster.SERVICE_EXPORTS, multicluster.SERVICE_IMPORTS, submariner.GLOBAL_INGRESS_IPS):
                c.resource(CRDS).create(crd(res))
            for ns in ([BROKER_NS] if name == "broker" else [OP_NS, NS, "hop"]):
                c.resource(NAMESPACES).create({"metadata": {"name": ns}})

        # services + ready EndpointSlices in c2 (not measured)
        log(f"n={n}: creating {n} services and endpoint slices in c2")
        t0 = time.monotonic()
        svc_client, eps_client = clusters["c2"].resource(SERVICES), clusters["c2"].resource(ENDPOINT_SLICES)
        ips: dict[str, str] = {}

        def make(i: int) -> None:
            name = f"svc-{i:05d}"
            created = svc_client.create({"metadata": {"name": name, "namespace": NS},
                                         "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                                                  "selector": {"app": name}}})
            ips[name] = created["spec"]["clusterIP"]
            eps_client.create({"metadata": {"name": f"{name}-abcde", "namespace": NS,
                                            "labels": {"kubernetes.io/service-name": name}},
                               "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                               "endpoints": [{"addresses": [f"10.{128 + i // 65536}.{i // 256 % 256}.{i % 256}"],
                                              "conditions": {"ready": True}}]})

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(make, range(n)))
        result["populate_s"] = round(time.monotonic() - t0, 1)

        result["hop_baseline_ms"] = hop_baseline(clusters["c1"], min(500, n), args.rate)

        agents = {c: start_agent(c, base, kubeconfigs, args.workers) for c in ("c1", "c2")}
        procs.extend(agents.values())
        for a in agents.values():
            a.wait_for(_RECONCILED, 120)
        corefile = base / "Corefile"
        corefile.write_text("clusterset.local:0 {\n    bind 127.0.0.1\n    lighthouse\n}\n")
        dns = LineProcess([str(BIN / "lighthouse-dns"), "-conf", str(corefile), "-kubeconfig",
                           str(kubeconfigs["c1"]), "-cluster-id", "c1"], base / "dns.log")
        procs.append(dns)
        dns_port = int(dns.wait_for(_DNS_SERVING, 60).group(1))
        prober = DnsProber(dns_port)

        present: dict[str, int] = {}
        imports = Informer(clusters["c1"].resource(multicluster.SERVICE_IMPORTS), namespace=NS, name="bench-si",
                           on_add=lambda o: _first_seen(present, o))
        imports.start()
        imports.wait_for_sync(30)

        # The measuring process holds 10k objects too: a full collection here would stall the informer callback
        # and the prober and show up as sync latency that is not the agents'.
        gc.collect()
        gc.freeze()
        gc.disable()
        cpu0 = {cid: cpu_seconds(a.pid) for cid, a in agents.items()}
        hops = HopProbe(clusters["c1"])
        se_client = clusters["c2"].resource(multicluster.SERVICE_EXPORTS)
        sent: dict[str, int] = {}
        sample = set(random.Random(1).sample(range(n), max(1, n // args.dns_sample)))
        log(f"n={n}: exporting at {args.rate:.0f}/s")
        start = time.monotonic()

        def export(i: int) -> None:
            name = f"svc-{i:05d}"
            delay = start + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent[name] = now = time.monotonic_ns()
            if i in sample:
                prober.watch(f"{name}.{NS}.svc.clusterset.local.", now)
            se_client.create({"metadata": {"name": name, "namespace": NS}})

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(export, range(n)))
        result["export_seconds"] = round(time.monotonic() - start, 1)
        result["achieved_rate"] = round(n / max(1e-9, time.monotonic() - start), 1)
        deadline = time.monotonic() + args.max_seconds
        while (len(present) < n or prober.pending()) and time.monotonic() < deadline:
            time.sleep(0.05)
        result["sync_seconds"] = round(time.monotonic() - start, 1)
        result["hop_during_exports_ms"] = hops.stop()
        gc.enable()
        result["export_to_serviceimport_ms"] = _ms([present[k] - sent[k] for k in sent if k in present])
        slow = sorted(sent[k] for k in sent if k in present and present[k] - sent[k] > 500_000_000)
        result["slow_exports"] = {"count": len(slow), "first_s": round((slow[0] - sent["svc-00000"]) / 1e9, 1)
                                  if slow else None,
                                  "last_s": round((slow[-1] - sent["svc-00000"]) / 1e9, 1) if slow else None}
        result["export_to_dns_ms"] = _ms(list(prober.answered.values()))
        result["missing_serviceimports"] = n - sum(1 for k in sent if k in present)
        result["missing_dns_answers"] = prober.pending()
        prober.close()
        imports.stop()
        for cid, a in agents.items():
            rss, hwm = memory_kib(a.pid)
            result[f"agent_{cid}_cpu_s"] = round(cpu_seconds(a.pid) - cpu0[cid], 1)
            result[f"agent_{cid}_rss_mib"] = round(rss / 1024, 1)
            result[f"agent_{cid}_peak_rss_mib"] = round(hwm / 1024, 1)
        # let both agents settle (statuses, broker copies) before the restart measurement
        time.sleep(2.0)

        log(f"n={n}: restarting the c2 agent ({n} exports)")
        agents["c2"].stop()
        procs.remove(agents["c2"])
        t0 = time.monotonic()
        agents["c2"] = start_agent("c2", base, kubeconfigs, args.workers)
        procs.append(agents["c2"])
        m = agents["c2"].wait_for(_RECONCILED, args.max_seconds)
        result["restart_reconcile_s"] = round(time.monotonic() - t0, 1)
        result["restart_agent_reported_s"] = float(m.group(1))
        result["restart_writes"] = int(m.group(3))
        result["restart_cpu_s"] = round(cpu_seconds(agents["c2"].pid), 1)
        result["ratio_serviceimport_p50_to_hop"] = round(
            result["export_to_serviceimport_ms"]["p50"] / max(0.1, result["hop_baseline_ms"]["p50"]), 1)
        return result
    finally:
        for p in procs:
            p.stop()
        for s in servers.values():
            s.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"kept {base}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--services", default=None, help="comma-separated sizes (default 1000,10000; --quick 100)")
    p.add_argument("--rate", type=float, default=None, help="exports per second (default 40; --quick 50)")
    p.add_argument("--dns-sample", type=int, default=10, help="probe DNS for every Nth export (default 10)")
    p.add_argument("--workers", type=int, default=4, help="agent --workers (default 4)")
    p.add_argument("--max-seconds", type=float, default=None, help="cap on each wait (default 300; --quick 60)")
    p.add_argument("--quick", action="store_true", help="100 services: a smoke run of a few seconds")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories (logs, stores)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = p.parse_args()
    sizes = [int(s) for s in (args.services or ("100" if args.quick else "1000,10000")).split(",")]
    args.rate = args.rate or (50.0 if args.quick else 40.0)
    args.max_seconds = args.max_seconds or (60.0 if args.quick else 300.0)
    if args.quick:
        args.dns_sample = min(args.dns_sample, 2)
    runs = []
    for n in sizes:
        started = time.monotonic()
        runs.append(run(n, args))
        log(f"n={n}: done in {time.monotonic() - started:.0f}s")

    def fmt(d: dict[str, float]) -> str:
        return f"{d['p50']:.0f} / {d['p99']:.0f} / {d['max']:.0f}"

    rows = [
        Row("export rate achieved /s", tuple(f"{r['achieved_rate']:.0f}" for r in runs), "paced ServiceExport creates"),
        Row("export→ServiceImport ms", tuple(fmt(r["export_to_serviceimport_ms"]) for r in runs),
            "p50 / p99 / max, on the importing cluster"),
        Row("export→DNS answer ms", tuple(fmt(r["export_to_dns_ms"]) for r in runs),
            "p50 / p99 / max, c1's lighthouse-dns"),
        Row("write→watch hop ms", tuple(fmt(r["hop_baseline_ms"]) for r in runs), "baseline, same servers"),
        Row("hop during exports ms", tuple(fmt(r["hop_during_exports_ms"]) for r in runs),
            "same probe at 5/s while exporting: server/machine stalls show here"),
        Row("ServiceImport p50 / hop p50", tuple(f"{r['ratio_serviceimport_p50_to_hop']:.1f}" for r in runs),
            "an export crosses 3 hops"),
        Row("missing SI / DNS", tuple(f"{r['missing_serviceimports']} / {r['missing_dns_answers']}" for r in runs),
            "must be 0 / 0"),
        Row("exporter agent CPU s", tuple(f"{r['agent_c2_cpu_s']:.1f}" for r in runs), "during the exports"),
        Row("importer agent CPU s", tuple(f"{r['agent_c1_cpu_s']:.1f}" for r in runs), "during the exports"),
        Row("exporter RSS / peak MiB", tuple(f"{r['agent_c2_rss_mib']:.0f} / {r['agent_c2_peak_rss_mib']:.0f}"
                                             for r in runs)),
        Row("importer RSS / peak MiB", tuple(f"{r['agent_c1_rss_mib']:.0f} / {r['agent_c1_peak_rss_mib']:.0f}"
                                             for r in runs)),
        Row("restart → reconciled s", tuple(f"{r['restart_reconcile_s']:.1f}" for r in runs),
            "exporter agent, spawn to settled"),
        Row("restart writes", tuple(str(r["restart_writes"]) for r in runs), "must be 0"),
    ]
    print(table("Lighthouse agent sync (loopback, 2 clusters + broker)", tuple(f"{r['services']} svc" for r in runs),
                rows))
    if args.json:
        print(orjson.dumps({"runs": runs, "cpus": os.cpu_count()}).decode())
    failed = any(r["missing_serviceimports"] or r["missing_dns_answers"] for r in runs)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
