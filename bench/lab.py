#!/usr/bin/env python3
"""Lab benchmark: time to create the seed's three clusters (broker, c1, c2) and to delete them, and the
memory of the lab's processes.

The clusters are made exactly as the walkthrough makes them, from its kind configs (apiServerAddress
included), with the `sublab` command a user runs, in a private lab instance (a temporary SUBLAB_HOME, so its
own name prefix and underlay /20, and a temporary KUBECONFIG). Needs root (network namespaces).

Per cluster: the `sublab create cluster` wall time (it returns once the API server answers, the nodes are
registered and the cluster DNS pods are Running) and the time until the DNS pods are also Ready (their
readiness probe passes: the DNS answers). Then the memory (RSS and PSS) of every lab process: the cluster
daemons (controllers, kubelets, kube-proxies), the API servers and the pods' programs. Then
`sublab delete clusters broker c1 c2`, and a check that nothing with the instance's prefix is left.

Baseline measured in the same run: starting one bare `submariner-broker serve` on loopback until it serves
(the API server every cluster runs); `create / baseline` shows what the lab adds on top of it.

    sudo .venv/bin/python bench/lab.py            # one round
    sudo .venv/bin/python bench/lab.py --rounds 3 # best and median of three rounds
    sudo .venv/bin/python bench/lab.py --json     # + a machine-readable summary as the last line
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from _common import BIN, Row, ServingProcess, log, table

from submariner.lab import state, topology
from submariner.lab.lifecycle import PODS, client
from submariner.lab.names import Instance

GOAL_SECONDS = 20.0

# The walkthrough's section 3.1 configs, verbatim (apiServerAddress: the article's $SERVER_IP).
SEED_CONFIGS = {
    "broker": """\
kind: Cluster
name: broker
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane
networking:
  apiServerAddress: 192.168.1.20
  podSubnet: "10.7.0.0/16"
  serviceSubnet: "10.77.0.0/16"
""",
    "c1": """\
kind: Cluster
name: c1
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane
- role: worker
networking:
  apiServerAddress: 192.168.1.20
  podSubnet: "10.8.0.0/16"
  serviceSubnet: "10.88.0.0/16"
""",
    "c2": """\
kind: Cluster
name: c2
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane
- role: worker
networking:
  apiServerAddress: 192.168.1.20
  podSubnet: "10.9.0.0/16"
  serviceSubnet: "10.99.0.0/16"
""",
}


@dataclass
class Round:
    create_s: dict[str, float] = field(default_factory=dict)  # `sublab create cluster` wall time
    ready_s: dict[str, float] = field(default_factory=dict)  # create start → DNS pods Ready
    all_ready_s: float = 0.0  # first create start → every cluster's DNS Ready
    delete_s: float = 0.0
    memory: dict[str, dict[str, int]] = field(default_factory=dict)  # role → {count, rss_kib, pss_kib}
    leftovers: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- processes


def _proc_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB from /proc/PID/smaps_rollup (PSS shares libraries fairly between processes)."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _role(cmd: str) -> str:
    if "submariner.lab.daemon" in cmd:
        return "cluster daemons"
    if "submariner-broker" in cmd and " serve " in cmd:
        return "API servers"
    if "lighthouse-dns" in cmd:
        return "DNS pods"
    return "other pods"


def lab_processes(instance: Instance) -> dict[int, str]:
    """Every process of the instance: the daemons' sessions and whatever lives in the lab's namespaces."""
    pids: set[int] = set()
    for name in state.cluster_names(instance):
        cluster = state.load(instance, name)
        if cluster is not None and cluster.daemon_pid:
            pids.update(state.session_members(cluster.daemon_pid))
    namespaces = [n for n in topology.list_netns() if instance.owns_any_netns(n)]
    pids.update(topology.pids_in_netns(namespaces))
    return {pid: _cmdline(pid) for pid in sorted(pids)}


def measure_memory(instance: Instance) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for pid, cmd in lab_processes(instance).items():
        if cmd.startswith("ip netns exec") or not cmd:
            continue
        rss, pss = _proc_memory(pid)
        entry = out.setdefault(_role(cmd), {"count": 0, "rss_kib": 0, "pss_kib": 0})
        entry["count"] += 1
        entry["rss_kib"] += rss
        entry["pss_kib"] += pss
    return out


# ------------------------------------------------------------------------------------------- the lab


class Lab:
    def __init__(self, base: Path) -> None:
        self.home = base / "home"
        self.instance = Instance.for_home(self.home)
        self.env = {**os.environ, "SUBLAB_HOME": str(self.home), "KUBECONFIG": str(base / "kubeconfig")}

    def sublab(self, *args: str, input: str | None = None, timeout: float) -> float:
        started = time.monotonic()
        result = subprocess.run([str(BIN / "sublab"), *args], input=input, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        elapsed = time.monotonic() - started
        if result.returncode != 0:
            raise RuntimeError(f"sublab {' '.join(args)} failed: {result.stderr.strip()}")
        return elapsed

    def dns_ready(self, name: str) -> bool:
        kube = client(self.instance, name)
        try:
            pods, _ = kube.resource(PODS).list("kube-system", label_selector="k8s-app=kube-dns")
        finally:
            kube.close()

        def ready(pod: dict[str, Any]) -> bool:
            conditions = (pod.get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

        return bool(pods) and all(ready(p) for p in pods)

    def leftovers(self) -> list[str]:
        prefix = self.instance.prefix + "-"
        found = [f"netns {n}" for n in topology.list_netns() if n.startswith(prefix)]
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
        found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines()
                  if line.split(":")[1].strip().startswith(self.instance.prefix)]
        with contextlib.suppress(FileNotFoundError):
            found += [f"/etc/netns/{n}" for n in os.listdir("/etc/netns") if n.startswith(prefix)]
        found += [f"cluster {n}" for n in state.cluster_names(self.instance)]
        return found

    def purge(self) -> None:
        for name in state.cluster_names(self.instance):
            with contextlib.suppress(Exception):
                self.sublab("delete", "cluster", "--name", name, timeout=60)
        topology.purge_instance(self.instance)


@contextlib.contextmanager
def private_lab(keep: bool) -> Iterator[Lab]:
    base = Path(tempfile.mkdtemp(prefix="sublab-bench-"))
    lab = Lab(base)
    try:
        yield lab
    finally:
        lab.purge()
        if keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def one_round(args: argparse.Namespace) -> Round:
    result = Round()
    with private_lab(args.keep) as lab:
        log(f"instance prefix={lab.instance.prefix} underlay={lab.instance.underlay}")
        first = time.monotonic()
        starts: dict[str, float] = {}
        stop = threading.Event()
        watcher = threading.Thread(target=_watch_ready, args=(lab, starts, result.ready_s, stop), daemon=True)
        watcher.start()
        try:
            for name, config in SEED_CONFIGS.items():
                starts[name] = time.monotonic()
                result.create_s[name] = lab.sublab("create", "cluster", "--config", "-", "--wait",
                                                   f"{args.timeout}s", input=config, timeout=args.timeout + 30)
                log(f"created {name} in {result.create_s[name]:.2f}s")
            deadline = time.monotonic() + args.timeout
            while len(result.ready_s) < len(SEED_CONFIGS) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            watcher.join(10)
        pending = sorted(set(SEED_CONFIGS) - set(result.ready_s))
        if pending:
            log(f"DNS not Ready within {args.timeout:.0f}s in: {', '.join(pending)}")
        else:
            result.all_ready_s = max(starts[n] + result.ready_s[n] for n in SEED_CONFIGS) - first
        time.sleep(args.settle)
        result.memory = measure_memory(lab.instance)
        result.delete_s = lab.sublab("delete", "clusters", *SEED_CONFIGS, timeout=120)
        log(f"deleted in {result.delete_s:.2f}s")
        result.leftovers = lab.leftovers()
    return result


def _watch_ready(lab: Lab, starts: dict[str, float], ready: dict[str, float], stop: threading.Event) -> None:
    """Poll every started cluster's DNS pods (while the next clusters are being created) until Ready."""
    while not stop.is_set():
        for name, started in list(starts.items()):
            if name in ready or not state.paths(lab.instance, name).kubeconfig.exists():
                continue
            with contextlib.suppress(Exception):
                if lab.dns_ready(name):
                    ready[name] = time.monotonic() - started
        stop.wait(0.05)


def baseline(rounds: int) -> float:
    """Seconds for a bare `submariner-broker serve` on loopback to print that it serves."""
    times = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="sublab-bench-base-") as tmp:
            server = ServingProcess([str(BIN / "submariner-broker"), "serve", "--data-dir", f"{tmp}/data",
                                     "--listen", "127.0.0.1:0"], Path(tmp) / "server.log")
            started = time.monotonic()
            server.start(timeout=30)
            times.append(time.monotonic() - started)
            server.stop()
    return min(times)


# ------------------------------------------------------------------------------------------- output


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{min(values):.2f} / {statistics.median(values):.2f}"


def report(rounds: list[Round], base_s: float) -> tuple[str, dict[str, Any]]:
    header = ("seconds" if len(rounds) == 1 else "best / median s",)
    rows = []
    for name in SEED_CONFIGS:
        rows.append(Row(f"create {name}", (_fmt([r.create_s[name] for r in rounds]),),
                        "sublab create: API server, nodes, DNS pods Running"))
        rows.append(Row(f"  DNS Ready {name}", (_fmt([r.ready_s[name] for r in rounds if name in r.ready_s]),),
                        "from the start of its create"))
    create_total = [sum(r.create_s.values()) for r in rounds]
    all_ready = [r.all_ready_s for r in rounds if r.all_ready_s]
    rows.append(Row("create all three", (_fmt(create_total),), "sum of the three create commands"))
    rows.append(Row("all three ready", (_fmt(all_ready),),
                    f"first create → every DNS Ready; goal < {GOAL_SECONDS:.0f}"))
    rows.append(Row("delete all three", (_fmt([r.delete_s for r in rounds]),), "sublab delete clusters broker c1 c2"))
    rows.append(Row("baseline: one API server", (f"{base_s:.2f}",), "bare submariner-broker serve until serving"))
    rows.append(Row("create / baseline", (f"{statistics.median(create_total) / 3 / base_s:.2f}",),
                    "median create per cluster ÷ baseline"))
    text = table("Lab: the seed's three clusters (broker, c1, c2)", header, rows)

    last = rounds[-1]
    mem_rows = []
    total_rss = total_pss = count = 0
    for role in ("cluster daemons", "API servers", "DNS pods", "other pods"):
        m = last.memory.get(role)
        if not m:
            continue
        mem_rows.append(Row(role, (str(m["count"]), f"{m['rss_kib'] / 1024:.0f}", f"{m['pss_kib'] / 1024:.0f}")))
        total_rss += m["rss_kib"]
        total_pss += m["pss_kib"]
        count += m["count"]
    mem_rows.append(Row("total", (str(count), f"{total_rss / 1024:.0f}", f"{total_pss / 1024:.0f}"),
                        "PSS counts shared pages once"))
    text += "\n\n" + table("Memory of the lab's processes (three clusters, last round)",
                           ("processes", "RSS MiB", "PSS MiB"), mem_rows)
    if last.leftovers:
        text += "\n\nLEFT BEHIND: " + ", ".join(last.leftovers)
    summary = {
        "rounds": len(rounds),
        "create_s": {n: [r.create_s[n] for r in rounds] for n in SEED_CONFIGS},
        "dns_ready_s": {n: [r.ready_s.get(n) for r in rounds] for n in SEED_CONFIGS},
        "create_all_s": create_total,
        "all_ready_s": all_ready,
        "delete_s": [r.delete_s for r in rounds],
        "baseline_apiserver_s": base_s,
        "memory": last.memory,
        "total_rss_mib": round(total_rss / 1024, 1),
        "total_pss_mib": round(total_pss / 1024, 1),
        "leftovers": last.leftovers,
        "goal_met": bool(all_ready) and max(all_ready) < GOAL_SECONDS,
    }
    return text, summary


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=1, help="create+delete rounds (default 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="cap per create and on DNS readiness (s)")
    p.add_argument("--settle", type=float, default=1.0, help="pause before reading memory (s)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (state, logs)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/lab.py needs root (network namespaces)", file=sys.stderr)
        return 2
    rounds = []
    for i in range(args.rounds):
        log(f"round {i + 1}/{args.rounds}")
        rounds.append(one_round(args))
    base_s = baseline(3)
    text, summary = report(rounds, base_s)
    print(text)
    if args.json:
        print(orjson.dumps(summary).decode())
    return 1 if any(r.leftovers for r in rounds) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
