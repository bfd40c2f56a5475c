"""Shared helpers for the Globalnet tests: a FakeCluster-backed engine with fake packet filter and ipsets."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from submariner.broker.api.multicluster import SERVICE_EXPORTS
from submariner.broker.kube import SERVICES
from submariner.broker.kube.fake import FakeCluster
from submariner.dataplane.packetfilter import FakePacketFilter, Ruleset
from submariner.dataplane.packetfilter.ipset import FakeIPSets
from submariner.globalnet.config import Config
from submariner.globalnet.context import PODS
from submariner.globalnet.engine import Engine

CONFIG = Config(cluster_id="g1", node_name="g1-worker", global_cidrs=("242.1.0.0/16",),
                cluster_cidrs=("10.1.0.0/16",), service_cidrs=("100.1.0.0/16",))


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Harness:
    """An engine on a FakeCluster; `settle()` waits until the worker has nothing left to do."""

    def __init__(self, cluster: FakeCluster | None = None, pf: FakePacketFilter | None = None,
                 ipsets: FakeIPSets | None = None, config: Config = CONFIG, cni_ip: str | None = None,
                 remote_subnets: tuple[str, ...] = ("242.0.0.0/16",)) -> None:
        self.cluster = cluster or FakeCluster("g1")
        self.pf = pf or FakePacketFilter()
        self.ipsets = ipsets or FakeIPSets()
        self.lock = threading.Lock()
        self.fail_applies = 0
        self.engine = Engine(config, self.cluster, self.ipsets, self.apply, remote_subnets=remote_subnets,
                             cni_ip=cni_ip)

    def apply(self, ruleset: Ruleset) -> bool:
        with self.lock:
            if self.fail_applies:
                self.fail_applies -= 1
                raise RuntimeError("iptables-restore: injected failure")
            return self.pf.apply(ruleset)

    def start(self, settle: bool = True) -> Harness:
        self.engine.start()
        wait_until(self.engine.started.is_set, what="engine start")
        if settle:
            self.settle()
        return self

    def settle(self, quiet: float = 0.15, timeout: float = 15.0) -> None:
        """Idle for `quiet` seconds in a row (informer events may still arrive right after a write)."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        while time.monotonic() < deadline:
            if self.engine.idle():
                since = since or time.monotonic()
                if time.monotonic() - since >= quiet:
                    return
            else:
                since = None
            time.sleep(0.01)
        raise AssertionError("engine did not settle")

    def assert_quiet(self) -> None:
        """Re-reconciling everything changes nothing: no API write, no rules transaction, no ipset call."""
        writes, transactions, calls = len(self.cluster.writes), self.pf.transactions, len(self.ipsets.calls)
        eng = self.engine
        eng.ingress.enqueue_all()
        for kind, res in (("cgeip", "clusterglobalegressips"), ("geip", "globalegressips"), ("gateway", "gateways")):
            for obj in self.cluster.objects(res):
                eng.ctx.enqueue(kind, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        self.settle()
        assert len(self.cluster.writes) == writes, self.cluster.writes[writes:]
        assert self.pf.transactions == transactions
        assert len(self.ipsets.calls) == calls, self.ipsets.calls[calls:]

    def stop(self) -> None:
        self.engine.stop()

    def chain(self, name: str) -> list[tuple[str, ...]]:
        rules = self.pf.chain_rules("nat", name)
        return rules or []

    def get(self, res: Any, ns: str, name: str) -> dict[str, Any] | None:
        for obj in self.cluster.objects(res):
            meta = obj["metadata"]
            if meta.get("namespace", "") == ns and meta["name"] == name:
                return obj
        return None


def service(ns: str, name: str, *, headless: bool = False, selector: dict[str, str] | None = None,
            ports: list[dict[str, Any]] | None = None, stype: str = "ClusterIP") -> dict[str, Any]:
    spec: dict[str, Any] = {"type": stype, "ports": ports or [{"name": "http", "protocol": "TCP", "port": 80,
                                                                "targetPort": 8080}]}
    if selector is not None:
        spec["selector"] = selector
    spec["clusterIP"] = "None" if headless else "100.1.0.10"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def export(ns: str, name: str) -> dict[str, Any]:
    return {"apiVersion": SERVICE_EXPORTS.api_version, "kind": "ServiceExport",
            "metadata": {"name": name, "namespace": ns}}


def pod(ns: str, name: str, ip: str | None, labels: dict[str, str], phase: str = "Running") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if ip:
        status["podIP"] = ip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": status}


def create_pod(cluster: FakeCluster, p: dict[str, Any]) -> None:
    """Pods carry status in the fake (core objects keep status on create only via update_status)."""
    created = cluster.resource(PODS).create(p)
    created["status"] = p["status"]
    cluster.resource(PODS).update_status(created)


__all__ = ["CONFIG", "SERVICES", "Harness", "create_pod", "export", "pod", "service", "wait_until"]


def nat_rules(netns: str) -> list[str]:
    """The `-A ...` lines of `iptables-save -t nat` in a namespace."""
    out = subprocess.run(["ip", "netns", "exec", netns, "iptables-save", "-t", "nat"], check=True,
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.startswith("-A ")]
