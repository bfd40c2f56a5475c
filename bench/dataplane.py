#!/usr/bin/env python3
"""Dataplane benchmark (issue #6): tunnel throughput against a plain veth between the same two pods, the
outage of a gateway failover, and how fast a dead cluster is noticed — per cable driver, in the lab.

Per driver (`--drivers vxlan,wireguard`) a private lab instance (temporary SUBLAB_HOME and KUBECONFIG, so its
own name prefix and underlay /20) gets the clusterset a user builds with the commands a user types: `sublab
create cluster` broker, c1 (two gateway nodes) and c2; `subctl deploy-broker`; `subctl join … --cable-driver
<driver> --health-check-interval 1`; whereami in c2 (the seed's manifest), an idle nettool pod in each of c1
(client) and c2 (server). Then:

1. **Throughput**: `iperf3 -c` in the c1 pod's network namespace to `iperf3 -s` in the c2 pod's, TCP for
   `--iperf-seconds`: across the tunnel (checked: the active gateway's tunnel device counted ≥ 90 % of the
   bytes), then over a veth pair `subm-dp<hex>a/b` added directly between the same two namespaces with /32
   routes for just the two pod IPs (checked with `ip route get` and the veth's counters), removed right after;
   `--rounds` such pairs. Ratio = tunnel / veth (median of the rounds' ratios): what the cable costs on top of
   the kernel's cheapest path between the same two endpoints.
2. **Failover outage**: a probe in the c1 pod's namespace GETs whereami's c2 pod IP 10 times a second (each
   request times out after 0.1 s, at most `--probe-seconds`) while the active c1 gateway pod is deleted; the
   outage is the longest time between two successful requests. Goal ≤ 2 s.
3. **Dead-cluster detection**: c2's gateway node's eth0 goes down; the time until c1's active Gateway shows
   the connection to c2 as not connected (polled through the API every 50 ms). For each `--loss-counts` value
   (default 1 and 2; the c1 gateway DaemonSet's SUBMARINER_HEALTHCHECKMAXPACKETLOSSCOUNT, rolled out between
   measurements); eth0 comes back up and the connection must recover each time. Goal ≤ 3 s. The pinger
   declares a loss at the (count+1)-th unanswered echo, so detection lies in (count, count+1] s plus the
   status write; the link goes down just after the Gateway shows a fresh RTT (i.e. just after an answered echo),
   which puts the numbers near the upper end of that range. Also shown: when the c1 gateway logged the loss.

Everything stays inside the lab's namespaces and addresses; every wait and command is bounded; the lab (and the
veth) is deleted in `finally` — also on Ctrl-C and SIGTERM — and the script checks nothing is left. A driver
that fails to connect is reported with its reason, and the next driver still runs. Needs root.

    sudo .venv/bin/python bench/dataplane.py                       # vxlan and wireguard (~4 min)
    sudo .venv/bin/python bench/dataplane.py --drivers vxlan --json
    sudo .venv/bin/python bench/dataplane.py --drivers vxlan --iperf-seconds 1 --rounds 1 --loss-counts 2 --json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import orjson
from _common import BIN, Row, log, stop_pid, table

from submariner.broker.api.labels import UPDATE_TIMESTAMP
from submariner.broker.api.meta import APIResource
from submariner.broker.api.submariner import GATEWAYS
from submariner.broker.kube.client import Cluster, KubeError
from submariner.lab import state, topology
from submariner.lab.lifecycle import PODS, client
from submariner.lab.names import LOGS_ANNOTATION, NETNS_ANNOTATION, Instance
from submariner.lab.programs import httpprobe

REPO = Path(__file__).resolve().parent.parent
WHEREAMI_CS = (REPO / "scripts" / "seed" / "whereami-cs.yaml").read_text()
DAEMON_SETS = APIResource("apps", "v1", "DaemonSet", "daemonsets", "daemonset", True)
OPERATOR_NS = "submariner-operator"
GATEWAY_DS = "submariner-gateway"
LOSS_ENV = "SUBMARINER_HEALTHCHECKMAXPACKETLOSSCOUNT"
TUNNEL_DEVICE = {"vxlan": "vxlan-tunnel", "wireguard": "submariner"}  # the cable's device on a gateway node
IPERF_PORT = 5201
# A path carried the run if its device counted at least this share of the bytes iperf3 sent (the counters are
# read right after iperf3 exits, when the last segments of its send buffer may still be on their way).
PATH_SHARE = 0.9
OUTAGE_GOAL_S = 2.0
DETECTION_GOAL_S = 3.0


T = TypeVar("T")


def kind_config(name: str, workers: int, pod: str, service: str) -> str:
    nodes = "- role: control-plane\n" + "- role: worker\n" * workers
    return (f"kind: Cluster\nname: {name}\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n{nodes}"
            f"networking:\n  podSubnet: \"{pod}\"\n  serviceSubnet: \"{service}\"\n")


CLUSTERS = {  # the seed's address plan; c1 has two workers, both gateway nodes (one active, one passive)
    "broker": kind_config("broker", 0, "10.7.0.0/16", "10.77.0.0/16"),
    "c1": kind_config("c1", 2, "10.8.0.0/16", "10.88.0.0/16"),
    "c2": kind_config("c2", 1, "10.9.0.0/16", "10.99.0.0/16"),
}


# ------------------------------------------------------------------------------------------- the lab


class Lab:
    """A private lab instance driven through `sublab`, `subctl` and `kubectl`, plus API clients for polling."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "home"
        self.instance = Instance.for_home(self.home)
        self.kubeconfig = base / "kubeconfig"
        self.env = {**os.environ, "SUBLAB_HOME": str(self.home), "KUBECONFIG": str(self.kubeconfig)}
        self._clients: dict[str, Cluster] = {}

    def _run(self, argv: list[str], what: str, input: str | None = None, timeout: float = 120,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(argv, input=input, env=self.env, cwd=self.base, capture_output=True, text=True,
                                timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"{what} failed ({result.returncode}): {(result.stderr or result.stdout).strip()}")
        return result

    def sublab(self, *args: str, input: str | None = None, timeout: float = 120) -> None:
        self._run([str(BIN / "sublab"), *args], f"sublab {' '.join(args)}", input=input, timeout=timeout)

    def subctl(self, *args: str, timeout: float = 120) -> str:
        return self._run([str(BIN / "subctl"), *args], f"subctl {' '.join(args)}", timeout=timeout).stdout

    def kubectl(self, cluster: str, *args: str, input: str | None = None, timeout: float = 60) -> str:
        argv = [str(BIN / "kubectl"), "--context", self.instance.context(cluster),
                "--cache-dir", str(self.base / "kubectl-cache"), *args]
        return self._run(argv, f"kubectl {' '.join(args)}", input=input, timeout=timeout).stdout

    def netns_run(self, netns: str, *cmd: str, timeout: float = 30, check: bool = True
                  ) -> subprocess.CompletedProcess[str]:
        """A command inside one of this instance's namespaces (never anywhere else)."""
        assert netns.startswith(self.instance.prefix + "-"), netns
        return self._run(["ip", "netns", "exec", netns, *cmd], f"{' '.join(cmd)} in {netns}", timeout=timeout,
                         check=check)

    def api(self, cluster: str) -> Cluster:
        if cluster not in self._clients:
            self._clients[cluster] = client(self.instance, cluster)
        return self._clients[cluster]

    def leftovers(self) -> list[str]:
        prefix = self.instance.prefix + "-"
        found = [f"netns {n}" for n in topology.list_netns() if n.startswith(prefix)]
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
        found += [f"link {name}" for name in (line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
                  if name.startswith(self.instance.prefix) or name.startswith("subm-dp")]
        found += [f"cluster {n}" for n in state.cluster_names(self.instance)]
        return found

    def purge(self) -> None:
        for kube in self._clients.values():
            with contextlib.suppress(Exception):
                kube.close()
        self._clients.clear()
        for name in state.cluster_names(self.instance):
            with contextlib.suppress(Exception):
                self.sublab("delete", "cluster", "--name", name, timeout=90)
        topology.purge_instance(self.instance)


@contextlib.contextmanager
def private_lab(keep: bool) -> Iterator[Lab]:
    base = Path(tempfile.mkdtemp(prefix="sublab-bench-dp-"))
    lab = Lab(base)
    try:
        yield lab
    finally:
        if keep:  # `sublab delete` removes the pods' directories: keep their logs
            for path in lab.home.glob("clusters/*/nodes/*/pods/*/*.log"):
                with contextlib.suppress(OSError):
                    target = base / "logs" / path.relative_to(lab.home / "clusters")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
        lab.purge()
        if keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def wait_for(what: str, check: Callable[[], T], timeout: float, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; API hiccups count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (KubeError, RuntimeError, OSError) as err:
            last = err
        else:
            if value:
                return value
            last = value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


# ------------------------------------------------------------------------------------------- the clusterset


@dataclass
class Pod:
    name: str
    ip: str
    netns: str
    node: str


@dataclass
class Clusterset:
    lab: Lab
    client: Pod  # c1
    server: Pod  # c2, iperf3 -s
    whereami_ip: str  # a c2 whereami pod, the probe's target

    def active_gateway(self, cluster: str) -> dict[str, Any] | None:
        items, _ = self.lab.api(cluster).resource(GATEWAYS).list(OPERATOR_NS)
        return next((gw for gw in items if (gw.get("status") or {}).get("haStatus") == "active"), None)

    def connection(self, cluster: str, remote: str) -> dict[str, Any]:
        """The remote cluster's connection on the local active Gateway ({} if none)."""
        gw = self.active_gateway(cluster)
        for conn in ((gw or {}).get("status") or {}).get("connections") or ():
            if conn["endpoint"]["cluster_id"] == remote:
                return dict(conn)
        return {}

    def connection_status(self, cluster: str, remote: str) -> str:
        return str(self.connection(cluster, remote).get("status") or "")

    def active_gateway_node(self, cluster: str) -> str:
        gw = self.active_gateway(cluster)
        return str((((gw or {}).get("status") or {}).get("localEndpoint") or {}).get("hostname") or "")

    def connected(self, since: float = 0.0) -> bool:
        """Both active Gateways show the other cluster connected, in a status written after `since` (wall clock):
        a Gateway object keeps what the previous gateway process wrote until the new one writes."""
        for local, remote in (("c1", "c2"), ("c2", "c1")):
            gw = self.active_gateway(local)
            stamp = ((gw or {}).get("metadata", {}).get("annotations") or {}).get(UPDATE_TIMESTAMP, "0")
            if since and int(stamp) <= int(since):  # whole seconds: written in a later second than `since`
                return False
            if self.connection_status(local, remote) != "connected":
                return False
        return True


def _pod(lab: Lab, cluster: str, namespace: str, name: str) -> Pod:
    obj = lab.api(cluster).resource(PODS).get(namespace, name)
    return Pod(name, obj["status"]["podIP"], obj["metadata"]["annotations"][NETNS_ANNOTATION], obj["spec"]["nodeName"])


def build(lab: Lab, driver: str, loss_count: int, timeout: float) -> Clusterset:
    """The clusterset as a user builds it; raises (with the reason) when the clusters do not connect."""
    for name, config in CLUSTERS.items():
        started = time.monotonic()
        lab.sublab("create", "cluster", "--config", "-", input=config, timeout=timeout + 30)
        log(f"{driver}: created {name} in {time.monotonic() - started:.1f}s")
    for node in ("c1-worker", "c1-worker2"):
        lab.kubectl("c1", "label", "node", node, "submariner.io/gateway=true")
    ctx = lab.instance.context
    lab.subctl("--context", ctx("broker"), "deploy-broker")
    for name in ("c1", "c2"):
        lab.subctl("--context", ctx(name), "join", "broker-info.subm", "--clusterid", name, "--cable-driver", driver,
                   "--health-check-interval", "1", "--health-check-max-packet-loss-count", str(loss_count))
    for name in ("c1", "c2"):
        lab.kubectl(name, "create", "namespace", "sample")
    lab.kubectl("c2", "apply", "-f", "-", input=WHEREAMI_CS)
    lab.kubectl("c1", "-n", "sample", "run", "client", "--image=cr7258/nettool:v1")
    lab.kubectl("c2", "-n", "sample", "run", "server", "--image=cr7258/nettool:v1")
    lab.kubectl("c2", "-n", "sample", "rollout", "status", "deployment/whereami", f"--timeout={timeout:.0f}s",
                timeout=timeout + 10)
    lab.kubectl("c1", "-n", "sample", "wait", "--for=condition=Ready", "pod/client", f"--timeout={timeout:.0f}s",
                timeout=timeout + 10)
    lab.kubectl("c2", "-n", "sample", "wait", "--for=condition=Ready", "pod/server", f"--timeout={timeout:.0f}s",
                timeout=timeout + 10)
    whereami, _ = lab.api("c2").resource(PODS).list("sample", label_selector="app=whereami")
    cs = Clusterset(lab, _pod(lab, "c1", "sample", "client"), _pod(lab, "c2", "sample", "server"),
                    str(whereami[0]["status"]["podIP"]))
    started = time.monotonic()
    try:
        wait_for("c1 and c2 connected both ways", cs.connected, timeout=timeout)
    except RuntimeError:
        raise RuntimeError(f"{driver}: c1 and c2 did not connect within {timeout:.0f}s (c1 sees "
                           f"{cs.connection_status('c1', 'c2')!r}, c2 sees {cs.connection_status('c2', 'c1')!r})"
                           ) from None
    log(f"{driver}: connected {time.monotonic() - started:.1f}s after the pods were ready")
    return cs


# ------------------------------------------------------------------------------------------- throughput


def link_bytes(lab: Lab, netns: str, device: str) -> tuple[int, int]:
    """(tx, rx) bytes of a device in one of the lab's namespaces."""
    out = lab.netns_run(netns, "ip", "-s", "-j", "link", "show", "dev", device).stdout
    stats = orjson.loads(out)[0]["stats64"]
    return int(stats["tx"]["bytes"]), int(stats["rx"]["bytes"])


def iperf(lab: Lab, client: Pod, server: Pod, seconds: float) -> dict[str, float]:
    """One bounded TCP iperf3 run from the client pod's namespace to the server pod's (started and stopped here)."""
    server_proc = subprocess.Popen(["ip", "netns", "exec", server.netns, "iperf3", "-s", "-1", "-B", server.ip,
                                    "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def run_client() -> dict[str, Any]:
            result = lab.netns_run(client.netns, "iperf3", "-c", server.ip, "-p", str(IPERF_PORT), "-t",
                                   f"{seconds:g}", "-J", "--connect-timeout", "2000", timeout=seconds + 30,
                                   check=False)
            doc: dict[str, Any] = orjson.loads(result.stdout or b"{}")
            if result.returncode != 0 or "error" in doc:
                raise RuntimeError(f"iperf3: {doc.get('error') or result.stderr.strip()}")
            return doc

        doc = wait_for(f"iperf3 to {server.ip}", run_client, timeout=seconds + 40, interval=0.3)
    finally:
        stop_pid(server_proc, timeout=5)
    end = doc["end"]
    return {"mbps": end["sum_received"]["bits_per_second"] / 1e6, "bytes": float(end["sum_sent"]["bytes"]),
            "retransmits": float(end["sum_sent"].get("retransmits", 0))}


@contextlib.contextmanager
def direct_veth(lab: Lab, a: Pod, b: Pod) -> Iterator[str]:
    """A veth pair straight between two pod namespaces with routes for just the two pod /32s; removed after."""
    name = f"subm-dp{secrets.token_hex(2)}"
    a_end, b_end = f"{name}a", f"{name}b"
    lab.netns_run(a.netns, "ip", "link", "add", a_end, "type", "veth", "peer", "name", b_end, "netns", b.netns)
    try:
        lab.netns_run(a.netns, "ip", "link", "set", a_end, "up")
        lab.netns_run(b.netns, "ip", "link", "set", b_end, "up")
        lab.netns_run(a.netns, "ip", "route", "add", f"{b.ip}/32", "dev", a_end, "src", a.ip)
        lab.netns_run(b.netns, "ip", "route", "add", f"{a.ip}/32", "dev", b_end, "src", b.ip)
        for ns, dst, dev in ((a.netns, b.ip, a_end), (b.netns, a.ip, b_end)):
            route = lab.netns_run(ns, "ip", "route", "get", dst).stdout
            if f"dev {dev}" not in route:
                raise RuntimeError(f"the baseline veth does not carry {dst}: {route.strip()}")
        yield a_end
    finally:
        lab.netns_run(a.netns, "ip", "link", "del", a_end, check=False)  # deletes both ends and the routes


def throughput(cs: Clusterset, driver: str, seconds: float, rounds: int) -> dict[str, Any]:
    """`rounds` pairs of (tunnel, veth) runs back to back: on a shared machine the load drifts, so each ratio
    compares two runs a few seconds apart and the summary is the median."""
    lab = cs.lab
    route = lab.netns_run(cs.client.netns, "ip", "route", "get", cs.server.ip).stdout.strip()
    gw_node = cs.active_gateway_node("c1")
    gw_netns = lab.instance.node_netns("c1", gw_node)
    device = TUNNEL_DEVICE.get(driver, "")
    runs: list[dict[str, float]] = []
    for i in range(rounds):
        before = link_bytes(lab, gw_netns, device)[0] if device else 0
        tunnel = iperf(lab, cs.client, cs.server, seconds)
        tunnel_tx = link_bytes(lab, gw_netns, device)[0] - before if device else 0
        if device and tunnel_tx < PATH_SHARE * tunnel["bytes"]:
            raise RuntimeError(f"the tunnel device {device} on {gw_node} sent {tunnel_tx} bytes, iperf3 "
                               f"{tunnel['bytes']:.0f}: the traffic did not cross the tunnel")
        with direct_veth(lab, cs.client, cs.server) as veth:
            tx_before = link_bytes(lab, cs.client.netns, veth)[0]
            veth_run = iperf(lab, cs.client, cs.server, seconds)
            veth_tx = link_bytes(lab, cs.client.netns, veth)[0] - tx_before
        if veth_tx < PATH_SHARE * veth_run["bytes"]:
            raise RuntimeError(f"the baseline veth sent {veth_tx} bytes, iperf3 {veth_run['bytes']:.0f}")
        log(f"{driver} round {i + 1}/{rounds}: tunnel {tunnel['mbps']:.0f} Mbit/s ({gw_node}'s {device} sent "
            f"{tunnel_tx / 1e6:.0f} MB), veth {veth_run['mbps']:.0f} Mbit/s ({veth} sent {veth_tx / 1e6:.0f} MB)")
        runs.append({"tunnel_mbps": tunnel["mbps"], "veth_mbps": veth_run["mbps"],
                     "ratio": tunnel["mbps"] / veth_run["mbps"] if veth_run["mbps"] else 0.0,
                     "tunnel_retransmits": tunnel["retransmits"], "veth_retransmits": veth_run["retransmits"],
                     "tunnel_device_tx_bytes": tunnel_tx, "veth_tx_bytes": veth_tx})
    return {"tunnel_mbps": statistics.median(r["tunnel_mbps"] for r in runs),
            "veth_mbps": statistics.median(r["veth_mbps"] for r in runs),
            "ratio": statistics.median(r["ratio"] for r in runs),
            "seconds": seconds, "rounds": runs, "route": route, "gateway_node": gw_node, "tunnel_device": device}


# ------------------------------------------------------------------------------------------- failover


def failover(cs: Clusterset, probe_seconds: float, settle: float) -> dict[str, Any]:
    lab = cs.lab
    active = wait_for("an active c1 gateway", lambda: cs.active_gateway_node("c1"), timeout=30)
    probe = subprocess.Popen(["ip", "netns", "exec", cs.client.netns, sys.executable, httpprobe.__file__,
                              f"http://{cs.whereami_ip}/", "0.1", f"{probe_seconds:g}", f"{settle:g}"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(min(2.0, probe_seconds / 4))
        pods, _ = lab.api("c1").resource(PODS).list(OPERATOR_NS, label_selector=f"app={GATEWAY_DS}",
                                                    field_selector=f"spec.nodeName={active}")
        lab.api("c1").resource(PODS).delete(OPERATOR_NS, pods[0]["metadata"]["name"])
        deleted_at = time.monotonic()
        new_active = wait_for("another active c1 gateway",
                              lambda: (n := cs.active_gateway_node("c1")) != active and n, timeout=probe_seconds)
        takeover = time.monotonic() - deleted_at
        out, _ = probe.communicate(timeout=probe_seconds + 15)
    finally:
        stop_pid(probe, timeout=5)
    samples = httpprobe.samples(out)
    if not samples or not samples[-1][1]:
        raise RuntimeError(f"failover: traffic did not come back within {probe_seconds:g}s")
    worst = httpprobe.outage(samples)
    log(f"failover {active} -> {new_active}: outage {worst:.2f}s, takeover {takeover:.2f}s")
    return {"outage_s": worst, "goal_s": OUTAGE_GOAL_S, "met": worst <= OUTAGE_GOAL_S, "from": active,
            "to": new_active, "takeover_s": takeover, "requests": len(samples),
            "failed": sum(not ok for _, ok in samples)}


# ------------------------------------------------------------------------------------------- dead cluster


def set_loss_count(cs: Clusterset, count: int, timeout: float) -> None:
    """Roll c1's gateways out with another max packet loss count (the DaemonSet's env, as `subctl join` set it)."""
    daemon_sets = cs.lab.api("c1").resource(DAEMON_SETS)
    ds = daemon_sets.get(OPERATOR_NS, GATEWAY_DS)
    env = ds["spec"]["template"]["spec"]["containers"][0]["env"]
    current = next(e for e in env if e["name"] == LOSS_ENV)
    if current.get("value") == str(count):
        return
    current["value"] = str(count)
    daemon_sets.update(ds)

    def rolled() -> bool:
        pods, _ = cs.lab.api("c1").resource(PODS).list(OPERATOR_NS, label_selector=f"app={GATEWAY_DS}")
        fresh = [p for p in pods if not p["metadata"].get("deletionTimestamp") and ready(p) and any(
            e["name"] == LOSS_ENV and e.get("value") == str(count) for e in p["spec"]["containers"][0]["env"])]
        return len(fresh) == len(pods) == 2

    wait_for(f"c1's gateways rolled out with {LOSS_ENV}={count}", rolled, timeout=timeout)
    since = time.time()
    wait_for("c1 and c2 connected after the roll-out", lambda: cs.connected(since), timeout=timeout)


def ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def detection(cs: Clusterset, count: int, timeout: float) -> dict[str, Any]:
    lab = cs.lab
    set_loss_count(cs, count, timeout)
    node = wait_for("an active c2 gateway", lambda: cs.active_gateway_node("c2"), timeout=30)
    if node == "c2-control-plane":
        raise RuntimeError("c2's gateway is its control-plane node: cannot take it off the network")
    node_netns = lab.instance.node_netns("c2", node)
    # The health check must have had answers (RTT figures shown), or the clock would start with losses counted.
    wait_for("c1's health check answered by c2", lambda: (c := cs.connection("c1", "c2")).get("status") == "connected"
             and "latencyRTT" in c, timeout=timeout)
    log_file = gateway_log(cs, "c1")
    lab.netns_run(node_netns, "ip", "link", "set", "eth0", "down")  # c2's gateway node drops off the network
    started, down_wall = time.monotonic(), time.time()
    try:
        status = wait_for("c1 to see the connection to c2 down",
                          lambda: (s := cs.connection_status("c1", "c2")) not in ("connected", "") and s,
                          timeout=timeout, interval=0.05)
        detected = time.monotonic() - started
    finally:
        lab.netns_run(node_netns, "ip", "link", "set", "eth0", "up")
    up_wall = time.time()
    pinger = pinger_verdict(log_file, down_wall)
    log(f"dead cluster (loss count {count}): c1's Gateway showed {status!r} after {detected:.2f}s"
        + (f", its health check logged the loss after {pinger:.2f}s" if pinger is not None else ""))
    back = time.monotonic()
    wait_for("c1 and c2 reconnected", lambda: cs.connected(up_wall), timeout=timeout)
    return {"loss_count": count, "interval_s": 1.0, "detected_s": detected, "status": status,
            "pinger_detected_s": pinger, "goal_s": DETECTION_GOAL_S, "met": detected <= DETECTION_GOAL_S,
            "reconnected_s": time.monotonic() - back}


def gateway_log(cs: Clusterset, cluster: str) -> Path | None:
    """The active gateway pod's log file (the lab keeps every container's output under the pod's directory)."""
    node = cs.active_gateway_node(cluster)
    pods, _ = cs.lab.api(cluster).resource(PODS).list(OPERATOR_NS, label_selector=f"app={GATEWAY_DS}",
                                                      field_selector=f"spec.nodeName={node}")
    logs = ((pods[0]["metadata"].get("annotations") or {}).get(LOGS_ANNOTATION) if pods else None)
    return Path(logs) / f"{GATEWAY_DS}.log" if logs else None


def pinger_verdict(log_file: Path | None, since: float) -> float | None:
    """Seconds from `since` (wall clock) to the gateway's first health-check failure logged after it: when the
    pinger decided, before the Gateway object shows it (that object is written every few seconds)."""
    if log_file is None:
        return None
    with contextlib.suppress(OSError):
        for line in log_file.read_text(errors="replace").splitlines():
            if "health check: Failed" not in line:
                continue
            with contextlib.suppress(ValueError):
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time, as logged
                if stamp >= since - 0.5:
                    return stamp - since
    return None


# ------------------------------------------------------------------------------------------- one driver


@dataclass
class DriverResult:
    driver: str
    throughput: dict[str, Any] = field(default_factory=dict)
    failover: dict[str, Any] = field(default_factory=dict)
    detection: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    leftovers: list[str] = field(default_factory=list)


def run_driver(driver: str, args: argparse.Namespace) -> DriverResult:
    result = DriverResult(driver)
    lab_ref: list[Lab] = []
    try:
        with private_lab(args.keep) as lab:
            lab_ref.append(lab)
            log(f"{driver}: instance prefix={lab.instance.prefix} underlay={lab.instance.underlay}")
            cs = build(lab, driver, args.loss_counts[0], args.timeout)
            result.throughput = throughput(cs, driver, args.iperf_seconds, args.rounds)
            if args.probe_seconds > 0:
                result.failover = failover(cs, args.probe_seconds, args.settle)
                wait_for("c1 and c2 connected after the failover", cs.connected, timeout=args.timeout)
            for count in args.loss_counts:
                result.detection.append(detection(cs, count, args.timeout))
    except (RuntimeError, KubeError, subprocess.TimeoutExpired, OSError, KeyError, IndexError) as err:
        result.error = str(err).strip().splitlines()[0][:500] if str(err).strip() else type(err).__name__
        log(f"{driver}: {result.error}")
    finally:
        if lab_ref:
            result.leftovers = lab_ref[0].leftovers()
    return result


# ------------------------------------------------------------------------------------------- output


def _goal(value: float, goal: float) -> str:
    return f"goal ≤ {goal:g} s: {'met' if value <= goal else 'MISSED'}"


def report(results: list[DriverResult]) -> tuple[str, dict[str, Any]]:
    header = tuple(r.driver for r in results)
    rows: list[Row] = []

    def row(label: str, cell: Callable[[DriverResult], str], note: str = "") -> None:
        rows.append(Row(label, tuple(cell(r) for r in results), note))

    def num(get: Callable[[DriverResult], float | None], fmt: str) -> Callable[[DriverResult], str]:
        def cell(r: DriverResult) -> str:
            try:
                value = get(r)
            except (KeyError, IndexError):
                return "-"
            return "-" if value is None else format(value, fmt)
        return cell

    row("tunnel Mbit/s", num(lambda r: r.throughput["tunnel_mbps"], ".0f"), "iperf3 TCP, c1 pod → c2 pod; median")
    row("veth Mbit/s", num(lambda r: r.throughput["veth_mbps"], ".0f"), "same two pod namespaces, direct veth")
    row("tunnel / veth", num(lambda r: r.throughput["ratio"], ".2f"), "median of the per-round ratios")
    row("failover outage s", num(lambda r: r.failover["outage_s"], ".2f"),
        f"active c1 gateway pod deleted, 10 req/s; goal ≤ {OUTAGE_GOAL_S:g}")
    row("  new gateway active s", num(lambda r: r.failover["takeover_s"], ".2f"), "pod deleted → other one active")
    counts = sorted({d["loss_count"] for r in results for d in r.detection})
    def detected(count: int, key: str = "detected_s") -> Callable[[DriverResult], float | None]:
        return lambda r: next((d[key] for d in r.detection if d["loss_count"] == count), None)

    def pinger(count: int) -> Callable[[DriverResult], float | None]:
        return detected(count, "pinger_detected_s")

    for count in counts:
        row(f"detection s (loss {count})", num(detected(count), ".2f"),
            f"c2 gateway eth0 down → c1's Gateway not connected; every 1 s; goal ≤ {DETECTION_GOAL_S:g}")
        row(f"  health check s (loss {count})", num(pinger(count), ".2f"), "→ the c1 gateway logs the loss")
    text = table("Dataplane: tunnel vs veth, failover, dead-cluster detection", header, rows)
    lines = [text]
    for r in results:
        if r.error:
            lines.append(f"{r.driver}: FAILED: {r.error}")
        if r.failover:
            lines.append(f"{r.driver}: failover outage {r.failover['outage_s']:.2f} s "
                         f"({_goal(r.failover['outage_s'], OUTAGE_GOAL_S)})")
        for d in r.detection:
            lines.append(f"{r.driver}: detection with loss count {d['loss_count']} {d['detected_s']:.2f} s "
                         f"({_goal(d['detected_s'], DETECTION_GOAL_S)})")
        if r.leftovers:
            lines.append(f"{r.driver}: LEFT BEHIND: {', '.join(r.leftovers)}")
    summary = {
        "goals": {"outage_s": OUTAGE_GOAL_S, "detection_s": DETECTION_GOAL_S},
        "drivers": {r.driver: {"throughput": r.throughput, "failover": r.failover, "detection": r.detection,
                               "error": r.error or None, "leftovers": r.leftovers} for r in results},
    }
    return "\n".join(lines), summary


def _terminate(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every `finally` removes what this run created."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--drivers", default="vxlan,wireguard", help="cable drivers, comma-separated")
    p.add_argument("--iperf-seconds", type=float, default=5.0, help="each iperf3 run (s)")
    p.add_argument("--rounds", type=int, default=3, help="tunnel+veth iperf3 pairs per driver (median reported)")
    p.add_argument("--probe-seconds", type=float, default=60.0, help="cap on the failover probe; 0 skips failover")
    p.add_argument("--settle", type=float, default=3.0, help="probe keeps going this long after traffic is back (s)")
    p.add_argument("--loss-counts", default="1,2", help="health-check max packet loss counts to measure detection with")
    p.add_argument("--timeout", type=float, default=90.0, help="cap on every wait (s)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories (state, logs)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = p.parse_args(argv)
    args.loss_counts = [int(c) for c in args.loss_counts.split(",") if c.strip()]
    drivers = [d.strip() for d in args.drivers.split(",") if d.strip()]
    if os.geteuid() != 0:
        print("bench/dataplane.py needs root (network namespaces)", file=sys.stderr)
        return 2
    if not args.loss_counts or shutil.which("iperf3") is None:
        print("bench/dataplane.py needs iperf3 and at least one --loss-counts value", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    results: list[DriverResult] = []
    try:
        for driver in drivers:
            results.append(run_driver(driver, args))
    except KeyboardInterrupt:  # the lab of the interrupted driver is already deleted (private_lab's finally)
        log("interrupted")
        if results:
            print(report(results)[0])
        return 130
    text, summary = report(results)
    print(text)
    if args.json:
        print(orjson.dumps(summary).decode())
    return 1 if any(r.error or r.leftovers for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
