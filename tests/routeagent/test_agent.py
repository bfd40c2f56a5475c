"""The route agent as a program: informers wake the loop, stop() / SIGTERM end it cleanly, uninstall cleans up.

One test drives `RouteAgent` over the in-memory FakeCluster and fake kernel; the other runs the real
`submariner-routeagent` process against a real API server (`submariner-broker serve`) on a throw-away
network namespace.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from submariner.broker.api.submariner import ENDPOINTS
from submariner.broker.kube.fake import FakeCluster
from submariner.dataplane.netlink import FakeNetlink
from submariner.dataplane.packetfilter import FakePacketFilter
from submariner.dataplane.packetfilter.ipset import FakeIPSets
from submariner.routeagent.agent import NODES, RouteAgent
from submariner.routeagent.config import Settings
from submariner.routeagent.reconciler import Reconciler

BIN = Path(sys.executable).parent
NS = "submariner-operator"


def endpoint(cluster: str, host: str, ip: str, subnets: list[str]) -> dict[str, Any]:
    name = f"submariner-cable-{cluster}-{ip.replace('.', '-')}"
    return {"apiVersion": "submariner.io/v1", "kind": "Endpoint",
            "metadata": {"name": f"{cluster}-{name}", "namespace": NS},
            "spec": {"cluster_id": cluster, "cable_name": name, "hostname": host, "private_ip": ip, "public_ip": "",
                     "nat_enabled": False, "subnets": subnets, "backend": "libreswan", "backend_config": {}}}


def node(name: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_agent_reacts_to_endpoint_events_and_stops() -> None:
    kube = FakeCluster()
    nl = FakeNetlink()
    nl.add_link("eth0", 1500, ["192.168.1.11/24"])
    settings = Settings(cluster_id="c1", node_name="w1", cluster_cidrs=("10.8.0.0/16",), resync=60)
    agent = RouteAgent(settings, kube, Reconciler(settings, nl, FakePacketFilter(), FakeIPSets()))
    kube.resource(NODES).create(node("w1", "192.168.1.11"))
    kube.resource(NODES).create(node("gw", "192.168.1.10"))
    kube.resource(ENDPOINTS).create(endpoint("c1", "gw", "192.168.1.10", ["10.8.0.0/16"]))
    thread = threading.Thread(target=agent.run)
    thread.start()
    try:
        kube.resource(ENDPOINTS).create(endpoint("c2", "c2-gw", "172.18.0.5", ["10.9.0.0/16"]))
        wait_for("the route to c2", lambda: any(r.dst == "10.9.0.0/16" for r in nl.routes()))
        kube.resource(ENDPOINTS).delete(NS, "c2-submariner-cable-c2-172-18-0-5")
        wait_for("the route to c2 to go", lambda: not any(r.dst == "10.9.0.0/16" for r in nl.routes()))
    finally:
        agent.stop()
        thread.join(5)
    assert not thread.is_alive()


@pytest.mark.root
def test_routeagent_process_against_a_real_api_server(api_server_factory: Callable[..., Any], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    server = api_server_factory("c1")
    crds = subprocess.run([str(BIN / "submariner-broker"), "crds"], capture_output=True, text=True, check=True)
    server.kubectl("apply", "-f", "-", input=crds.stdout)
    server.kubectl("create", "namespace", NS)
    for obj in (node("wk-node", "192.168.50.11"), node("gw-node", "192.168.50.10"),
                endpoint("c1", "gw-node", "192.168.50.10", ["10.8.0.0/16"]),
                endpoint("c2", "c2-gw", "172.18.0.5", ["10.9.0.0/16"])):
        server.kubectl("create", "-f", "-", input=json.dumps(obj))

    ns = f"subm-ra-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc: subprocess.Popen[str] | None = None

    def in_ns(*cmd: str) -> str:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=True).stdout

    try:
        in_ns("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
        in_ns("ip", "addr", "add", "192.168.50.11/24", "dev", "eth0")
        in_ns("ip", "link", "set", "eth0", "up")
        env = {**os.environ, "SUBMARINER_CLUSTERID": "c1", "NODE_NAME": "wk-node",
               "SUBMARINER_CLUSTERCIDR": "10.8.0.0/16", "SUBMARINER_SERVICECIDR": "100.8.0.0/16"}
        cmd = [str(BIN / "submariner-routeagent"), "--kubeconfig", str(server.kubeconfig), "--context",
               server.context, "--netns", ns]
        log = open(tmp_path / "agent.log", "w")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        log.close()
        wait_for("the route to c2", lambda: "via 240.168.50.10 dev vx-submariner" in in_ns(
            "ip", "route", "show", "10.9.0.0/16"))
        server.kubectl("delete", "endpoints.submariner.io", "-n", NS, "c2-submariner-cable-c2-172-18-0-5")
        wait_for("the route to c2 to go", lambda: in_ns("ip", "route", "show", "10.9.0.0/16").strip() == "")
        wait_for("the RouteAgent object", lambda: server.kubectl(
            "get", "routeagents.submariner.io", "-n", NS, "wk-node", check=False).returncode == 0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, (tmp_path / "agent.log").read_text()
        gone = server.kubectl("get", "routeagents.submariner.io", "-n", NS, "wk-node", check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr  # deleted on a clean stop
        assert "SUBMARINER-POSTROUTING" in in_ns("iptables-save", "-t", "nat")  # a restart keeps state

        uninstall = subprocess.run(cmd, env={**env, "SUBMARINER_UNINSTALL": "true"}, capture_output=True,
                                   text=True, timeout=60)
        assert uninstall.returncode == 0, uninstall.stderr
        assert "SUBMARINER" not in in_ns("iptables-save")
        assert "vx-submariner" not in in_ns("ip", "link")
        assert in_ns("ipset", "list", "-n").strip() == ""
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)
