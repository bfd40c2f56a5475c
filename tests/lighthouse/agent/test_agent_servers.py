"""The Lighthouse agent against real API servers: a broker and two or three cluster servers
(`submariner-broker serve` processes), agents in threads or as `lighthouse-agent` processes.
One test per item of issue #4's Acceptance; every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agenttest import (
    HTTP,
    OP_NS,
    B,
    RealClusterset,
    addresses,
    conditions,
    endpoint,
    eventually,
    headless_service,
    k8s_slice,
    lh_slices,
    service,
    service_export,
)

from submariner.broker.api import labels as L
from submariner.broker.api.multicluster import SERVICE_EXPORTS, SERVICE_IMPORTS
from submariner.broker.kube import ENDPOINT_SLICES, LEASES, SERVICES, NotFound
from submariner.lighthouse.agent import conditions as C

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")

NS = "sample"
BIN = Path(sys.executable).parent


@pytest.fixture
def cs(api_server_factory: Callable[..., Any]) -> Iterator[RealClusterset]:
    s = RealClusterset(api_server_factory, ("c1", "c2"))
    yield s
    s.close()


def res(cs: RealClusterset, cluster: str, what: Any) -> Any:
    return cs.clusters[cluster].resource(what)


def export(cs: RealClusterset, cluster: str, svc: dict[str, Any], slices: list[dict[str, Any]] | None = None) -> str:
    """Create Service (+ EndpointSlices) + ServiceExport; returns the allocated cluster IP."""
    created = res(cs, cluster, SERVICES).create(svc)
    for s in slices or ():
        res(cs, cluster, ENDPOINT_SLICES).create(s)
    ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
    res(cs, cluster, SERVICE_EXPORTS).create(service_export(ns, name))
    return str(created["spec"].get("clusterIP"))


def se_conditions(cs: RealClusterset, cluster: str, name: str) -> dict[str, dict[str, Any]]:
    return conditions(res(cs, cluster, SERVICE_EXPORTS).get(NS, name))


def is_ready(cs: RealClusterset, cluster: str, name: str) -> bool:
    return se_conditions(cs, cluster, name).get("Ready", {}).get("status") == "True"


def imported(cs: RealClusterset, cluster: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = res(cs, cluster, SERVICE_IMPORTS).get(NS, name)
        return obj
    except NotFound:
        return None


def slices(cs: RealClusterset, cluster: str, name: str, source: str | None = None) -> list[dict[str, Any]]:
    items, _ = res(cs, cluster, ENDPOINT_SLICES).list(NS)
    return lh_slices(items, NS, name, source)


def clusters_of(si: dict[str, Any] | None) -> list[str]:
    return sorted(c["cluster"] for c in ((si or {}).get("status") or {}).get("clusters") or ())


def snapshot(cs: RealClusterset) -> dict[tuple[str, str, str, str], str]:
    """resourceVersion of every agent-relevant object on every server (leases excluded: the heartbeat)."""
    out = {}
    for name, cluster in cs.clusters.items():
        for r in (SERVICE_EXPORTS, SERVICE_IMPORTS, ENDPOINT_SLICES):
            items, _ = cluster.resource(r).list(None)
            for o in items:
                out[(name, r.plural, o["metadata"]["namespace"], o["metadata"]["name"])] = \
                    o["metadata"]["resourceVersion"]
    return out


# -- acceptance: export flow ----------------------------------------------------------------------------------


def test_export_in_c2_then_c1_then_headless(cs: RealClusterset) -> None:
    cs.start_agent("c1")
    cs.start_agent("c2")
    ip2 = export(cs, "c2", service(NS, "nginx", None, labels={"app.kubernetes.io/name": "nginx"}),
                 [k8s_slice(NS, "nginx", "nginx-c2x", [endpoint("10.244.2.5")])])
    eventually(lambda: is_ready(cs, "c2", "nginx"), 20, "c2 export Ready")
    for c in ("c1", "c2"):
        si = eventually(lambda c=c: imported(cs, c, "nginx"), 20, f"ServiceImport on {c}")
        assert si["spec"]["type"] == "ClusterSetIP" and si["spec"]["ports"] == [HTTP]
        eventually(lambda c=c: clusters_of(imported(cs, c, "nginx")) == ["c2"], 20)
        eventually(lambda c=c: addresses(slices(cs, c, "nginx")) == [ip2], 20, f"c2 slice on {c}")
        lab = slices(cs, c, "nginx")[0]["metadata"]["labels"]
        assert lab["app.kubernetes.io/name"] == "nginx"
    out = cs.servers["c1"].kubectl("get", "serviceimport", "-n", NS).stdout
    assert "nginx" in out and "ClusterSetIP" in out
    conds = se_conditions(cs, "c2", "nginx")
    assert conds["Synced"]["status"] == "True" and conds["Synced"]["message"] == C.SYNCED_MESSAGE
    assert conds["Valid"]["status"] == "True"

    # the same service exported from c1 too → both clusters' slices in both clusters (local preference is
    # the DNS server's choice: each slice names its source cluster)
    ip1 = export(cs, "c1", service(NS, "nginx", None), [k8s_slice(NS, "nginx", "nginx-c1x", [endpoint("10.244.1.5")])])
    eventually(lambda: is_ready(cs, "c1", "nginx"), 20)
    for c in ("c1", "c2"):
        eventually(lambda c=c: addresses(slices(cs, c, "nginx")) == sorted([ip1, ip2]), 20, f"both slices on {c}")
        eventually(lambda c=c: clusters_of(imported(cs, c, "nginx")) == ["c1", "c2"], 20)
    assert [s["metadata"]["labels"][L.SOURCE_CLUSTER] for s in slices(cs, "c1", "nginx", "c1")] == ["c1"]

    # headless StatefulSet-like slices → per-pod hostnames in the other cluster
    pods = [endpoint(f"10.244.2.{10 + i}", hostname=f"web-{i}", pod=f"web-{i}", ns=NS) for i in range(3)]
    export(cs, "c2", headless_service(NS, "web"), [k8s_slice(NS, "web", "web-abcde", pods)])
    eventually(lambda: is_ready(cs, "c2", "web"), 20)
    (hs,) = eventually(lambda: slices(cs, "c1", "web"), 20, "headless slice on c1")
    assert [e["hostname"] for e in hs["endpoints"]] == ["web-0", "web-1", "web-2"]
    assert addresses([hs]) == ["10.244.2.10", "10.244.2.11", "10.244.2.12"]
    assert hs["metadata"]["labels"][L.IS_HEADLESS] == "true"
    spec = imported(cs, "c1", "web")["spec"]
    assert spec["type"] == "Headless" and spec["ports"] == [] and "ips" not in spec


def test_conflicts_reported_on_all_exporters(cs: RealClusterset) -> None:
    cs.start_agent("c1")
    cs.start_agent("c2")
    export(cs, "c1", service(NS, "api", None))
    eventually(lambda: is_ready(cs, "c1", "api"), 20)
    time.sleep(1.1)  # second-resolution creationTimestamps: c1 is the oldest export
    export(cs, "c2", service(NS, "api", None, ports=[{"name": "http", "protocol": "TCP", "port": 8080}]))
    for c in ("c1", "c2"):
        eventually(lambda c=c: se_conditions(cs, c, "api").get("Conflict", {}).get("reason") == "ConflictingPorts",
                   20, f"Conflict on {c}")
        msg = se_conditions(cs, c, "api")["Conflict"]["message"]
        assert "constituent clusters [c1, c2]" in msg
    agg_ports = imported(cs, "c2", "api")["spec"]["ports"]
    assert agg_ports == [HTTP], "same port name: the oldest (c1) definition wins"


def test_unexport_and_service_delete_cleanup(cs: RealClusterset) -> None:
    cs.start_agent("c1")
    cs.start_agent("c2")
    export(cs, "c1", service(NS, "nginx", None), [k8s_slice(NS, "nginx", "a", [endpoint("10.244.1.1")])])
    export(cs, "c2", service(NS, "nginx", None), [k8s_slice(NS, "nginx", "b", [endpoint("10.244.2.1")])])
    for c in ("c1", "c2"):
        eventually(lambda c=c: len(slices(cs, c, "nginx")) == 2, 20)
    res(cs, "c2", SERVICE_EXPORTS).delete(NS, "nginx")
    for c in ("c1", "c2"):
        eventually(lambda c=c: [s["metadata"]["labels"][L.SOURCE_CLUSTER] for s in slices(cs, c, "nginx")] == ["c1"],
                   20, f"c2 slice gone from {c}")
        eventually(lambda c=c: clusters_of(imported(cs, c, "nginx")) == ["c1"], 20)
    items, _ = res(cs, "c2", SERVICE_IMPORTS).list(OP_NS)
    assert items == [], "per-cluster ServiceImport deleted"
    res(cs, "c1", SERVICES).delete(NS, "nginx")
    eventually(lambda: se_conditions(cs, "c1", "nginx")["Valid"]["reason"] == "ServiceUnavailable", 20)
    for c in ("c1", "c2"):
        eventually(lambda c=c: imported(cs, c, "nginx") is None and slices(cs, c, "nginx") == [], 20)
    broker_items, _ = cs.broker_client().resource(SERVICE_IMPORTS).list(B)
    assert broker_items == []
    assert se_conditions(cs, "c1", "nginx")["Ready"]["reason"] == "NoServiceImport"


def test_restart_with_changes_while_down(cs: RealClusterset) -> None:
    cs.start_agent("c1")
    cs.start_agent("c2")
    export(cs, "c2", service(NS, "keep", None), [k8s_slice(NS, "keep", "k", [endpoint("10.244.2.1")])])
    export(cs, "c2", service(NS, "gone", None), [k8s_slice(NS, "gone", "g", [endpoint("10.244.2.2")])])
    export(cs, "c2", headless_service(NS, "hl"), [k8s_slice(NS, "hl", "h1", [endpoint("10.244.2.3", hostname="a")]),
                                                  k8s_slice(NS, "hl", "h2", [endpoint("10.244.2.4", hostname="b")])])
    for n in ("keep", "gone", "hl"):
        eventually(lambda n=n: is_ready(cs, "c2", n), 20)
    eventually(lambda: len(slices(cs, "c1", "hl")) == 2, 20)
    assert all(a.wait_idle(20) for a in cs.agents.values())

    # plain restart: nothing is rewritten anywhere
    before = snapshot(cs)
    cs.stop_agent("c2")
    cs.start_agent("c2")
    assert cs.agents["c2"].wait_idle(30)
    time.sleep(1.0)
    assert cs.agents["c2"].wait_idle(30)
    after = snapshot(cs)
    changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
    changed.update({k: (v, None) for k, v in before.items() if k not in after})
    assert changed == {}, f"steady-state restart wrote: {changed}"
    assert cs.agents["c2"].status()["writes"] == {}

    # changes while the agent is down
    cs.stop_agent("c2")
    res(cs, "c2", SERVICE_EXPORTS).delete(NS, "gone")
    res(cs, "c2", ENDPOINT_SLICES).delete(NS, "h2")
    ipn = export(cs, "c2", service(NS, "new", None), [k8s_slice(NS, "new", "n", [endpoint("10.244.2.9")])])
    time.sleep(0.5)
    assert imported(cs, "c1", "gone") is not None and imported(cs, "c1", "new") is None
    cs.start_agent("c2")
    eventually(lambda: imported(cs, "c1", "gone") is None and slices(cs, "c1", "gone") == [], 20, "unexported")
    eventually(lambda: addresses(slices(cs, "c1", "hl")) == ["10.244.2.3"], 20, "stale headless slice removed")
    eventually(lambda: addresses(slices(cs, "c1", "new")) == [ipn], 20, "new export")
    assert len(slices(cs, "c1", "keep")) == 1


def test_broker_down_10s_then_back(cs: RealClusterset) -> None:
    cs.start_agent("c1", heartbeat_interval=1.0)
    cs.start_agent("c2", heartbeat_interval=1.0)
    ip = export(cs, "c2", service(NS, "nginx", None), [k8s_slice(NS, "nginx", "s", [endpoint("10.244.2.1")])])
    eventually(lambda: addresses(slices(cs, "c1", "nginx")) == [ip], 20)
    broker = cs.servers["broker"]
    broker.stop()
    down_at = time.monotonic()
    eventually(lambda: se_conditions(cs, "c2", "nginx")["Synced"]["status"] == "False", 9, "Synced=False")
    assert se_conditions(cs, "c2", "nginx")["Synced"]["reason"] == C.BROKER_UNAVAILABLE_REASON
    ip_new = export(cs, "c2", service(NS, "during", None), [k8s_slice(NS, "during", "d", [endpoint("10.244.2.2")])])
    eventually(lambda: se_conditions(cs, "c2", "during").get("Ready", {}).get("reason") == "ExportFailed", 9)
    time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
    broker.start()
    back_at = time.monotonic()
    eventually(lambda: se_conditions(cs, "c2", "nginx")["Synced"]["status"] == "True", 45, "Synced again")
    eventually(lambda: is_ready(cs, "c2", "during"), 45, "export made during the outage is Ready")
    eventually(lambda: addresses(slices(cs, "c1", "during")) == [ip_new], 45, "c1 got the new export")
    assert addresses(slices(cs, "c1", "nginx")) == [ip]
    print(f"converged {time.monotonic() - back_at:.1f}s after the broker returned")


def test_vanished_cluster_expired(api_server_factory: Callable[..., Any]) -> None:
    cs = RealClusterset(api_server_factory, ("c1", "c2", "c3"))
    try:
        cs.start_agent("c1", heartbeat_interval=0.5)
        cs.start_agent("c2", heartbeat_interval=0.5)
        cs.start_agent("c3", heartbeat_ttl=3.0, heartbeat_interval=0.5)
        ip3 = export(cs, "c3", service(NS, "nginx", None), [k8s_slice(NS, "nginx", "s3", [endpoint("10.244.3.1")])])
        ip2 = export(cs, "c2", service(NS, "nginx", None), [k8s_slice(NS, "nginx", "s2", [endpoint("10.244.2.1")])])
        eventually(lambda: addresses(slices(cs, "c1", "nginx")) == sorted([ip2, ip3]), 20)
        cs.agents.pop("c3").stop()  # gone without clean-up (as if the cluster vanished)
        gone_at = time.monotonic()
        eventually(lambda: addresses(slices(cs, "c1", "nginx")) == [ip2], 20, "c3 expired")
        elapsed = time.monotonic() - gone_at
        assert elapsed >= 2.5, f"expired after {elapsed:.1f}s, before its 3s TTL"
        eventually(lambda: clusters_of(imported(cs, "c1", "nginx")) == ["c2"], 10)
        with pytest.raises(NotFound):
            cs.broker_client().resource(LEASES).get(B, "lighthouse-heartbeat-c3")
        cs.start_agent("c3", heartbeat_ttl=3.0, heartbeat_interval=0.5)
        eventually(lambda: addresses(slices(cs, "c1", "nginx")) == sorted([ip2, ip3]), 20, "c3 back")
    finally:
        cs.close()


# -- the command ------------------------------------------------------------------------------------------------


def _spawn(args: list[str], log: Path) -> subprocess.Popen[str]:
    out = open(log, "w")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([str(BIN / "lighthouse-agent"), *args], stdout=subprocess.PIPE, stderr=out, text=True)
    out.close()
    return proc


def _wait_running(proc: subprocess.Popen[str], log: Path, timeout: float = 30) -> None:
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    assert "running" in line, f"agent did not start: {line!r} {log.read_text()[-2000:]}"


def _terminate(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_cli_processes(cs: RealClusterset, tmp_path: Path) -> None:
    bad = subprocess.run([str(BIN / "lighthouse-agent"), "--kubeconfig", str(cs.servers["c1"].kubeconfig),
                          "--cluster-id", "Bad_ID", "--broker-info", str(cs.write_broker_info(tmp_path / "bi.subm"))],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "is not a valid DNS-1123 label" in bad.stderr and "Bad_ID" in bad.stderr
    b = cs.servers["broker"]
    procs = [
        _spawn(["--kubeconfig", str(cs.servers["c1"].kubeconfig), "--context", cs.servers["c1"].context,
                "--cluster-id", "c1", "--broker-info", str(tmp_path / "bi.subm"), "-v"], tmp_path / "c1.log"),
        _spawn(["--kubeconfig", str(cs.servers["c2"].kubeconfig), "--cluster-id", "c2",
                "--broker-kubeconfig", str(b.kubeconfig), "--broker-context", b.context, "--broker-namespace", B,
                "--heartbeat-ttl", "1m"], tmp_path / "c2.log"),
    ]
    try:
        for p, n in zip(procs, ("c1", "c2"), strict=True):
            _wait_running(p, tmp_path / f"{n}.log")
        ip = export(cs, "c2", service(NS, "nginx", None), [k8s_slice(NS, "nginx", "s", [endpoint("10.244.2.1")])])
        eventually(lambda: addresses(slices(cs, "c1", "nginx")) == [ip], 30, "export through agent processes")
        eventually(lambda: is_ready(cs, "c2", "nginx"), 20)
    finally:
        for p in procs:
            _terminate(p)
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]
    logs = (tmp_path / "c1.log").read_text()
    assert "lighthouse agent started cluster=c1" in logs
    assert b.admin_token not in logs + (tmp_path / "c2.log").read_text(), "no tokens in logs"
    lease = cs.broker_client().resource(LEASES).get(B, "lighthouse-heartbeat-c2")
    assert lease["spec"]["leaseDurationSeconds"] == 60
    assert json.dumps(lease).count("c2") >= 2
