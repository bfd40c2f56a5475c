"""The route agent in real network namespaces: worker pod → vx-submariner → gateway → cable → remote cluster,
with the pod's source IP preserved, and re-runs that change nothing.

Topology (all `subm-ra-<random>-*` namespaces, deleted in teardown):

    wkpod 10.8.1.5 ─veth─ worker node 192.168.50.11 ─┐              ┌─ gateway node 192.168.50.10 ─ cable0 ═╗
                          (cni0 10.8.1.1/32)          └── br (bridge) ┘   (cni0 10.8.0.1/32)                    ║
                                                                                             remote 10.9.0.1 ═══╝

`cable0` is a veth standing in for the gateway's cable device (the local Endpoint names it in
`backend_config.interface-name`, as WireGuard's `submariner`); a MASQUERADE rule on the gateway plays the CNI's
outbound NAT, which the route agent's nat ACCEPT rules must bypass. The remote side is a UDP echo server that
answers with the source address it saw.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from netns_echo import ECHO_CLIENT, ECHO_SERVER, in_ns
from submariner.dataplane.netlink import KernelNetlink
from submariner.dataplane.packetfilter import IptablesRestore, subprocess_runner
from submariner.dataplane.packetfilter.ipset import KernelIPSets
from submariner.routeagent.config import Settings
from submariner.routeagent.reconciler import Reconciler

pytestmark = pytest.mark.root

GW_IP, WK_IP = "192.168.50.10", "192.168.50.11"
REMOTE_IP = "10.9.0.1"
WK_POD, GW_POD = "10.8.1.5", "10.8.0.5"




def sh(ns: str, *cmd: str) -> None:
    in_ns(ns, *cmd)


class Lab:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.ns = {role: f"subm-ra-{tag}-{role}" for role in ("br", "gw", "wk", "gwpod", "wkpod", "remote")}
        self.procs: list[subprocess.Popen[str]] = []

    def build(self) -> None:
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "add", name], check=True)
            sh(name, "ip", "link", "set", "lo", "up")
        br, gw = self.ns["br"], self.ns["gw"]
        sh(br, "ip", "link", "add", "br0", "type", "bridge")
        sh(br, "ip", "link", "set", "br0", "up")
        for role, ip, cni in (("gw", GW_IP, "10.8.0.1"), ("wk", WK_IP, "10.8.1.1")):
            node = self.ns[role]
            sh(br, "ip", "link", "add", role, "type", "veth", "peer", "name", "eth0", "netns", node)
            sh(br, "ip", "link", "set", role, "master", "br0", "up")
            sh(node, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            sh(node, "ip", "link", "set", "eth0", "up")
            sh(node, "ip", "link", "add", "cni0", "type", "bridge")
            sh(node, "ip", "addr", "add", f"{cni}/32", "dev", "cni0")
            sh(node, "ip", "link", "set", "cni0", "up")
            sh(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            other_cidr, other_ip = ("10.8.1.0/24", WK_IP) if role == "gw" else ("10.8.0.0/24", GW_IP)
            sh(node, "ip", "route", "add", other_cidr, "via", other_ip, "dev", "eth0")
            pod_ns, pod_ip = (self.ns["gwpod"], GW_POD) if role == "gw" else (self.ns["wkpod"], WK_POD)
            sh(node, "ip", "link", "add", "vethpod", "type", "veth", "peer", "name", "eth0", "netns", pod_ns)
            sh(node, "ip", "link", "set", "vethpod", "up")
            sh(node, "sysctl", "-qw", "net.ipv4.conf.vethpod.proxy_arp=1")
            sh(node, "ip", "route", "add", f"{pod_ip}/32", "dev", "vethpod")
            sh(pod_ns, "ip", "addr", "add", f"{pod_ip}/32", "dev", "eth0")
            sh(pod_ns, "ip", "link", "set", "eth0", "up")
            sh(pod_ns, "ip", "route", "add", "10.0.0.0/8", "dev", "eth0")  # no default route anywhere
        remote = self.ns["remote"]
        sh(gw, "ip", "link", "add", "cable0", "type", "veth", "peer", "name", "eth0", "netns", remote)
        sh(gw, "ip", "addr", "add", "169.254.100.1/30", "dev", "cable0")
        sh(gw, "ip", "link", "set", "cable0", "up")
        sh(remote, "ip", "addr", "add", "169.254.100.2/30", "dev", "eth0")
        sh(remote, "ip", "addr", "add", f"{REMOTE_IP}/32", "dev", "lo")
        sh(remote, "ip", "link", "set", "eth0", "up")
        sh(remote, "ip", "route", "add", "10.8.0.0/16", "via", "169.254.100.1")
        # the CNI's outbound NAT, which must not apply to cross-cluster traffic
        sh(gw, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "cable0", "-j", "MASQUERADE")
        server = subprocess.Popen(["ip", "netns", "exec", remote, sys.executable, "-c", ECHO_SERVER],
                                  stdout=subprocess.PIPE, text=True)
        self.procs.append(server)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"

    def seen_by_remote(self, from_ns: str, tries: int = 10) -> str | None:
        """The source address the remote saw (None: no answer within tries x 0.5 s)."""
        result = subprocess.run(["ip", "netns", "exec", from_ns, sys.executable, "-c", ECHO_CLIENT, REMOTE_IP,
                                 str(tries)],
                                capture_output=True, text=True, timeout=30)
        return result.stdout.strip() if result.returncode == 0 else None

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(5)
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def lab() -> Iterator[Lab]:
    import os
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    lab = Lab()
    try:
        lab.build()
        yield lab
    finally:
        lab.cleanup()


def endpoint(cluster: str, host: str, ip: str, subnets: list[str], **config: str) -> dict[str, Any]:
    name = f"submariner-cable-{cluster}-{ip.replace('.', '-')}"
    return {"metadata": {"name": f"{cluster}-{name}", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"cluster_id": cluster, "cable_name": name, "hostname": host, "private_ip": ip, "public_ip": "",
                     "nat_enabled": False, "subnets": subnets, "backend": "wireguard", "backend_config": config}}


NODES = [{"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
         for name, ip in (("gw-node", GW_IP), ("wk-node", WK_IP))]
LOCAL = endpoint("c1", "gw-node", GW_IP, ["100.8.0.0/16", "10.8.0.0/16"], **{"interface-name": "cable0"})
REMOTE = endpoint("c2", "c2-gateway", "172.18.0.5", ["100.9.0.0/16", "10.9.0.0/16"])


class Agent:
    def __init__(self, ns: str, node_name: str) -> None:
        self.restores: list[str] = []
        run = subprocess_runner(ns)

        def counting(argv: Sequence[str], stdin: str | None) -> str:
            if argv[0] in ("iptables-restore",) or (argv[0] == "ipset" and argv[1] not in ("list", "save")):
                self.restores.append(" ".join(argv))
            return run(argv, stdin)

        self.nl = KernelNetlink(ns)
        settings = Settings(cluster_id="c1", node_name=node_name, cluster_cidrs=("10.8.0.0/16",),
                            service_cidrs=("100.8.0.0/16",))
        self.r = Reconciler(settings, self.nl, IptablesRestore(ns, runner=counting), KernelIPSets(runner=counting))


def test_worker_pod_reaches_remote_cluster_through_the_gateway_with_its_own_ip(lab: Lab) -> None:
    gw, wk = Agent(lab.ns["gw"], "gw-node"), Agent(lab.ns["wk"], "wk-node")
    try:
        assert lab.seen_by_remote(lab.ns["wkpod"], tries=2) is None  # nothing routes 10.9/16 before the agents run
        for agent in (gw, wk):
            agent.r.reconcile([LOCAL, REMOTE], NODES)
            assert agent.r.changes > 0
        assert lab.seen_by_remote(lab.ns["wkpod"]) == WK_POD  # via vx-submariner, source preserved
        assert lab.seen_by_remote(lab.ns["gwpod"]) == GW_POD  # the gateway's own pods: table 150
        assert lab.seen_by_remote(lab.ns["wk"]) == "10.8.1.1"  # host network: 240.x SNATed to the CNI IP

        text = in_ns(lab.ns["wk"], "ip", "route", "show", "10.9.0.0/16")
        assert "via 240.168.50.10 dev vx-submariner proto static" in text
        assert "dst 192.168.50.10" in in_ns(lab.ns["wk"], "ip", "-d", "link", "show", "vx-submariner").replace(
            "remote", "dst")
        assert "00:00:00:00:00:00 dst 192.168.50.11 self permanent" in in_ns(
            lab.ns["gw"], "bridge", "fdb", "show", "dev", "vx-submariner")
        assert "10.9.0.0/16 dev cable0 proto static scope link src 10.8.0.1" in in_ns(
            lab.ns["gw"], "ip", "route", "show", "table", "150")
        # re-running changes nothing: no netlink write, no iptables-restore, no ipset write
        for agent in (gw, wk):
            agent.restores.clear()
            agent.r.reconcile([LOCAL, REMOTE], NODES)
            assert agent.r.changes == 0 and agent.restores == []

        # the remote cluster goes: its routes and rules go, and the traffic stops
        for agent in (gw, wk):
            agent.r.reconcile([LOCAL], NODES)
        assert in_ns(lab.ns["wk"], "ip", "route", "show", "10.9.0.0/16").strip() == ""
        assert in_ns(lab.ns["gw"], "ip", "route", "show", "table", "150").strip() == ""
        assert "10.9.0.0/16" not in in_ns(lab.ns["gw"], "iptables-save", "-t", "nat")
        assert lab.seen_by_remote(lab.ns["wkpod"], tries=2) is None

        # uninstall leaves only what was there before (the CNI's MASQUERADE)
        for agent in (gw, wk):
            agent.r.uninstall()
        for role in ("gw", "wk"):
            dump = in_ns(lab.ns[role], "iptables-save")
            assert "SUBMARINER" not in dump, dump
            assert "vx-submariner" not in in_ns(lab.ns[role], "ip", "link")
            assert in_ns(lab.ns[role], "ipset", "list", "-n").strip() == ""
            assert "lookup 150" not in in_ns(lab.ns[role], "ip", "rule")
        assert "-A POSTROUTING -o cable0 -j MASQUERADE" in in_ns(lab.ns["gw"], "iptables-save", "-t", "nat")
    finally:
        gw.nl.close()
        wk.nl.close()


def test_gateway_failover_repoints_the_worker(lab: Lab) -> None:
    """The local Endpoint moves to the worker node: the old gateway becomes a worker pointing at it."""
    gw, wk = Agent(lab.ns["gw"], "gw-node"), Agent(lab.ns["wk"], "wk-node")
    try:
        for agent in (gw, wk):
            agent.r.reconcile([LOCAL, REMOTE], NODES)
        moved = endpoint("c1", "wk-node", WK_IP, ["100.8.0.0/16", "10.8.0.0/16"])
        moved["metadata"]["creationTimestamp"] = "2024-01-02T00:00:00Z"
        started = time.monotonic()
        for agent in (gw, wk):
            agent.r.reconcile([LOCAL, moved, REMOTE], NODES)
        assert time.monotonic() - started < 5
        assert "via 240.168.50.11 dev vx-submariner" in in_ns(lab.ns["gw"], "ip", "route", "show", "10.9.0.0/16")
        assert in_ns(lab.ns["wk"], "ip", "route", "show", "10.9.0.0/16").strip() == ""
        assert "10.9.0.0/16 dev eth0 proto static scope link src 10.8.1.1" in in_ns(
            lab.ns["wk"], "ip", "route", "show", "table", "150")
        assert "lookup 150" not in in_ns(lab.ns["gw"], "ip", "rule")
        for agent in (gw, wk):
            agent.restores.clear()
            agent.r.reconcile([LOCAL, moved, REMOTE], NODES)
            assert agent.r.changes == 0 and agent.restores == []
    finally:
        gw.nl.close()
        wk.nl.close()
