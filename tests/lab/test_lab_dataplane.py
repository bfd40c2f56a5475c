"""Issue #6's acceptance in the lab, through the commands a user types (sublab, subctl, kubectl):

- cross-cluster traffic over the vxlan and the wireguard (userspace wireguard-go) cable drivers: a c1 pod
  reaches a c2 pod IP and c2's ClusterIP, answered on a c2 node and seeing the c1 pod's own IP;
- HA: c1 has two gateway nodes; stopping the active gateway's process hands over to the passive one; a bounded
  probe (10 requests/s, at most 60 s, lab addresses only) measures the outage;
- dead cluster: c2's gateway node drops off the network; c1's Gateway shows the connection down and c1's DNS
  stops answering with c2's address; both times are measured.

The numbers are printed (`pytest -s` shows them); the assertions use loose bounds so a loaded CI machine does
not fail them, the goals (≤ 2 s outage, ≤ 3 s detection) are what `bench/dataplane.py` reports against.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from labharness import BIN, Lab, kind_config, lab_instance, needs_root
from seed_manifests import WHEREAMI_CS
from submariner.lab.programs import httpprobe

pytestmark = [pytest.mark.root, needs_root]

@dataclass
class Clusterset:
    lab: Lab
    workdir: Path

    def subctl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(BIN / "subctl"), *args], env=self.lab.env, cwd=self.workdir,
                                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"subctl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def json(self, cluster: str, *args: str) -> dict[str, object]:
        return dict(json.loads(self.lab.kubectl(cluster, *args, "-o", "json").stdout))

    def gateways(self, cluster: str) -> list[dict[str, object]]:
        doc = self.json(cluster, "get", "gateways.submariner.io", "-n", "submariner-operator")
        return list(doc["items"])  # type: ignore[arg-type]

    def connection_status(self, cluster: str, remote: str) -> str:
        """The remote cluster's connection status on the local active Gateway ("" if none)."""
        for gw in self.gateways(cluster):
            status = gw.get("status") or {}
            assert isinstance(status, dict)
            if status.get("haStatus") != "active":
                continue
            for conn in status.get("connections") or ():
                if conn["endpoint"]["cluster_id"] == remote:
                    return str(conn["status"])
        return ""

    def active_gateway_node(self, cluster: str) -> str:
        for gw in self.gateways(cluster):
            status = gw.get("status") or {}
            if isinstance(status, dict) and status.get("haStatus") == "active":
                return str((status.get("localEndpoint") or {}).get("hostname") or "")
        return ""

    def exec(self, cluster: str, *cmd: str, check: bool = True, timeout: float = 30
             ) -> subprocess.CompletedProcess[str]:
        return self.lab.kubectl(cluster, "exec", "client", "--", *cmd, check=check, timeout=timeout)

    def whereami(self, cluster: str, target: str) -> dict[str, object]:
        out = self.exec(cluster, "curl", "-s", "--max-time", "5", f"http://{target}/").stdout
        return dict(json.loads(out))


def _build(lab: Lab, workdir: Path, driver: str, c1_workers: int = 1, join_args: tuple[str, ...] = ()) -> Clusterset:
    cs = Clusterset(lab, workdir)
    lab.create(kind_config("broker", workers=0, pod="10.7.0.0/16", service="10.77.0.0/16"))
    lab.create(kind_config("c1", workers=c1_workers, pod="10.8.0.0/16", service="10.88.0.0/16"))
    lab.create(kind_config("c2", workers=1, pod="10.9.0.0/16", service="10.99.0.0/16"))
    if c1_workers > 1:  # every c1 worker is a gateway node: one active, the others passive
        for i in range(c1_workers):
            node = "c1-worker" if i == 0 else f"c1-worker{i + 1}"
            lab.kubectl("c1", "label", "node", node, "submariner.io/gateway=true")
    ctx = lab.instance.context
    cs.subctl("--context", ctx("broker"), "deploy-broker")
    for name in ("c1", "c2"):
        cs.subctl("--context", ctx(name), "join", "broker-info.subm", "--clusterid", name,
                  "--cable-driver", driver, *join_args)
    for name in ("c1", "c2"):
        lab.kubectl(name, "create", "namespace", "sample")
    lab.kubectl("c2", "apply", "-f", "-", input=WHEREAMI_CS)
    lab.kubectl("c2", "-n", "sample", "rollout", "status", "deployment/whereami", "--timeout=90s", timeout=100)
    lab.kubectl("c1", "run", "client", "--image=cr7258/nettool:v1")
    lab.kubectl("c1", "wait", "--for=condition=Ready", "pod/client", "--timeout=60s", timeout=70)
    for local, remote in (("c1", "c2"), ("c2", "c1")):
        lab.wait_for(f"{local} connected to {remote}",
                     lambda local=local, remote=remote: cs.connection_status(local, remote) == "connected",
                     timeout=90, interval=0.5)
    return cs


def _c2_targets(cs: Clusterset) -> tuple[str, str]:
    pods = cs.json("c2", "get", "pods", "-n", "sample", "-l", "app=whereami")["items"]
    pod_ip = str(pods[0]["status"]["podIP"])  # type: ignore[index]
    cluster_ip = cs.lab.kubectl("c2", "get", "svc", "-n", "sample", "whereami-cs", "-o",
                                "jsonpath={.spec.clusterIP}").stdout
    return pod_ip, cluster_ip


def _assert_crosses_the_tunnel(cs: Clusterset) -> None:
    client_ip = cs.lab.kubectl("c1", "get", "pod", "client", "-o", "jsonpath={.status.podIP}").stdout
    for target in _c2_targets(cs):
        answer = cs.whereami("c1", target)
        assert str(answer["node_name"]).startswith("c2-"), answer
        assert answer["source_ip"] == client_ip, answer  # the c1 pod's own address arrived in c2
    shown = cs.subctl("show", "connections", "--context", cs.lab.instance.context("c1")).stdout
    assert "connected" in shown and "c2" in shown, shown


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with lab_instance(tmp_path) as lab:
        yield lab
    assert not lab.leftovers(), f"left behind: {lab.leftovers()}"


@pytest.mark.parametrize("driver", ["vxlan", "wireguard"])
def test_cross_cluster_traffic(lab: Lab, tmp_path: Path, driver: str) -> None:
    cs = _build(lab, tmp_path, driver)
    _assert_crosses_the_tunnel(cs)
    shown = cs.subctl("show", "connections", "--context", lab.instance.context("c1")).stdout
    assert driver in shown
    if driver == "wireguard":  # the packets really go through the WireGuard device
        gw_pod = cs.json("c1", "get", "pods", "-n", "submariner-operator", "-l", "app=submariner-gateway")["items"]
        name = str(gw_pod[0]["metadata"]["name"])  # type: ignore[index]
        out = lab.kubectl("c1", "-n", "submariner-operator", "exec", name, "--", "ip", "-s", "link", "show",
                          "submariner").stdout
        assert "submariner" in out


def test_gateway_failover_outage(lab: Lab, tmp_path: Path) -> None:
    cs = _build(lab, tmp_path, "vxlan", c1_workers=2)
    active = lab.wait_for("an active c1 gateway", lambda: cs.active_gateway_node("c1"), timeout=30)
    pod_ip, _ = _c2_targets(cs)
    probe = subprocess.Popen(
        [str(BIN / "kubectl"), "--context", lab.instance.context("c1"), "exec", "client", "--", "python3",
         httpprobe.__file__, f"http://{pod_ip}/", "0.1", "60", "3"],
        env=lab.env, stdout=subprocess.PIPE, text=True)
    time.sleep(2)
    pods = cs.json("c1", "get", "pods", "-n", "submariner-operator", "-l", "app=submariner-gateway",
                   "--field-selector", f"spec.nodeName={active}")["items"]
    lab.kubectl("c1", "-n", "submariner-operator", "delete", "pod", str(pods[0]["metadata"]["name"]),  # type: ignore[index]
                "--wait=false")
    out, _ = probe.communicate(timeout=90)
    samples = httpprobe.samples(out)
    outage = httpprobe.outage(samples)
    new_active = cs.active_gateway_node("c1")
    print(f"\nfailover: active {active} -> {new_active}, outage {outage:.2f} s "
          f"({sum(not ok for _, ok in samples)} failed of {len(samples)} requests at 10/s)")
    assert new_active and new_active != active
    assert samples and samples[-1][1], "traffic did not come back"
    assert outage < 15.0  # goal ≤ 2 s (bench/dataplane.py reports it); loose here for a loaded machine
    _assert_crosses_the_tunnel(cs)


def test_dead_cluster_leaves_gateway_and_dns(lab: Lab, tmp_path: Path) -> None:
    cs = _build(lab, tmp_path, "vxlan", join_args=("--health-check-interval", "1",
                                                   "--health-check-max-packet-loss-count", "2"))
    cs.subctl("--context", lab.instance.context("c2"), "export", "service", "--namespace", "sample", "whereami-cs")
    _, cluster_ip = _c2_targets(cs)
    name = "whereami-cs.sample.svc.clusterset.local"
    lab.wait_for("c1 resolves c2's service",
                 lambda: cluster_ip in cs.exec("c1", "nslookup", name, check=False).stdout, timeout=30)
    node_netns = lab.instance.node_netns("c2", "c2-worker")
    start = time.monotonic()
    lab.in_netns(node_netns, "ip", "link", "set", "eth0", "down")  # c2's gateway node drops off the network
    try:
        lab.wait_for("c1 sees the connection to c2 down",
                     lambda: cs.connection_status("c1", "c2") not in ("connected", ""), timeout=60, interval=0.1)
        detected = time.monotonic() - start
        lab.wait_for("c1's DNS stops answering c2's address",
                     lambda: cluster_ip not in cs.exec("c1", "nslookup", name, check=False).stdout,
                     timeout=60, interval=0.2)
        dns_gone = time.monotonic() - start
        print(f"\ndead cluster: connection down after {detected:.2f} s, DNS without c2 after {dns_gone:.2f} s "
              "(health check every 1 s, 2 lost pings)")
        assert detected < 20.0 and dns_gone < 25.0  # goal ≤ 3 s; loose here for a loaded machine
    finally:
        lab.in_netns(node_netns, "ip", "link", "set", "eth0", "up")
    lab.wait_for("c1 reconnected to c2", lambda: cs.connection_status("c1", "c2") == "connected",
                 timeout=90, interval=0.5)
    lab.wait_for("c1 resolves c2's service again",
                 lambda: cluster_ip in cs.exec("c1", "nslookup", name, check=False).stdout, timeout=60)
