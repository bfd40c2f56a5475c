"""Two clusters in real network namespaces, joined by the gateway's VXLAN cable driver, with the route agent
on every node: a pod on c1's worker talks to a pod on c2's worker and each side sees the other's pod IP; then
c1's gateway fails over to its worker and the route agents re-point everything.

    c1 worker pod 10.1.1.5 → c1-wk ─vx-submariner→ c1-gw ─table 100 / vxlan-tunnel→ c2-gw → c2-wk → pod 10.2.1.5

All four nodes sit on one bridge (192.168.60.0/24, no default routes); each gateway also MASQUERADEs pod
traffic the way a CNI would, which the route agent's nat ACCEPT rules must bypass. Namespaces are
`subm-ra-<random>-*`, deleted in teardown.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from netns_echo import ECHO_CLIENT, ECHO_SERVER, in_ns
from submariner.dataplane.netlink import KernelNetlink
from submariner.dataplane.packetfilter import IptablesRestore
from submariner.dataplane.packetfilter.ipset import KernelIPSets
from submariner.gateway.cable.driver import DriverContext, NATEndpointInfo
from submariner.gateway.cable.vxlan import VxlanDriver
from submariner.routeagent.config import Settings
from submariner.routeagent.reconciler import Reconciler

pytestmark = pytest.mark.root

CLUSTERS = {
    "c1": {"pods": "10.1.0.0/16", "services": "100.1.0.0/16",
           "nodes": {"gw": ("192.168.60.10", "10.1.0"), "wk": ("192.168.60.11", "10.1.1")}},
    "c2": {"pods": "10.2.0.0/16", "services": "100.2.0.0/16",
           "nodes": {"gw": ("192.168.60.20", "10.2.0"), "wk": ("192.168.60.21", "10.2.1")}},
}


MSS_SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5556))
s.listen()
print("ready", flush=True)
while True:
    conn, _ = s.accept()
    conn.sendall(str(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)).encode())
    conn.close()
"""

MSS_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], 5556), timeout=5) as s:
    print(s.recv(64).decode())
"""



class TwoClusters:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.prefix = f"subm-ra-{tag}"
        self.made: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []

    def ns(self, cluster: str, role: str) -> str:
        return f"{self.prefix}-{cluster}{role}"

    def add(self, name: str) -> str:
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.made.append(name)
        in_ns(name, "ip", "link", "set", "lo", "up")
        return name

    def build(self) -> None:
        br = self.add(f"{self.prefix}-br")
        in_ns(br, "ip", "link", "add", "br0", "type", "bridge")
        in_ns(br, "ip", "link", "set", "br0", "up")
        for cid, c in CLUSTERS.items():
            nodes: dict[str, tuple[str, str]] = c["nodes"]  # type: ignore[assignment]
            for role, (ip, pod24) in nodes.items():
                node = self.add(self.ns(cid, role))
                port = f"{cid}{role}"
                in_ns(br, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", node)
                in_ns(br, "ip", "link", "set", port, "master", "br0", "up")
                in_ns(node, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
                in_ns(node, "ip", "link", "set", "eth0", "up")
                in_ns(node, "ip", "link", "add", "cni0", "type", "bridge")
                in_ns(node, "ip", "addr", "add", f"{pod24}.1/32", "dev", "cni0")
                in_ns(node, "ip", "link", "set", "cni0", "up")
                in_ns(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
                for other, (other_ip, other24) in nodes.items():
                    if other != role:
                        in_ns(node, "ip", "route", "add", f"{other24}.0/24", "via", other_ip, "dev", "eth0")
                pod = self.add(self.ns(cid, role + "pod"))
                in_ns(node, "ip", "link", "add", "vethpod", "type", "veth", "peer", "name", "eth0", "netns", pod)
                in_ns(node, "ip", "link", "set", "vethpod", "up")
                in_ns(node, "sysctl", "-qw", "net.ipv4.conf.vethpod.proxy_arp=1")
                in_ns(node, "ip", "route", "add", f"{pod24}.5/32", "dev", "vethpod")
                in_ns(pod, "ip", "addr", "add", f"{pod24}.5/32", "dev", "eth0")
                in_ns(pod, "ip", "link", "set", "eth0", "up")
                in_ns(pod, "ip", "route", "add", "10.0.0.0/8", "dev", "eth0")
                if role == "gw":  # the CNI's outbound NAT of pod traffic
                    in_ns(node, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.0.0.0/8", "-j", "MASQUERADE")
        server = subprocess.Popen(["ip", "netns", "exec", self.ns("c2", "wkpod"), sys.executable, "-c", ECHO_SERVER],
                                  stdout=subprocess.PIPE, text=True)
        self.procs.append(server)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        mss = subprocess.Popen(["ip", "netns", "exec", self.ns("c2", "wkpod"), sys.executable, "-c", MSS_SERVER],
                               stdout=subprocess.PIPE, text=True)
        self.procs.append(mss)
        assert mss.stdout is not None and mss.stdout.readline().strip() == "ready"

    def mss_seen_by_c2_pod(self, from_ns: str) -> int:
        """The MSS the c2 pod's TCP stack uses towards us: what our SYN advertised after any rewriting."""
        out = subprocess.run(["ip", "netns", "exec", from_ns, sys.executable, "-c", MSS_CLIENT, "10.2.1.5"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return int(out.strip())

    def seen_by_c2_pod(self, from_ns: str, tries: int = 10) -> str | None:
        result = subprocess.run(["ip", "netns", "exec", from_ns, sys.executable, "-c", ECHO_CLIENT, "10.2.1.5",
                                 str(tries)], capture_output=True, text=True, timeout=30)
        return result.stdout.strip() if result.returncode == 0 else None

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(5)
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def clusters() -> Iterator[TwoClusters]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    lab = TwoClusters()
    try:
        lab.build()
        yield lab
    finally:
        lab.cleanup()


def local_endpoint(cid: str, role: str = "gw", created: str = "2024-01-01T00:00:00Z") -> dict[str, Any]:
    c = CLUSTERS[cid]
    ip = c["nodes"][role][0]  # type: ignore[index]
    name = f"submariner-cable-{cid}-{ip.replace('.', '-')}"
    return {"metadata": {"name": f"{cid}-{name}", "creationTimestamp": created},
            "spec": {"cluster_id": cid, "cable_name": name, "hostname": f"{cid}-{role}", "private_ip": ip,
                     "public_ip": "", "nat_enabled": False, "subnets": [c["services"], c["pods"]],
                     "backend": "vxlan", "backend_config": {"udp-port": "4500"}}}


def test_pod_to_pod_across_clusters_over_the_vxlan_cable(clusters: TwoClusters) -> None:
    endpoints = [local_endpoint("c1"), local_endpoint("c2")]
    opened: list[KernelNetlink] = []
    try:
        agents = []
        drivers: dict[str, VxlanDriver] = {}
        for cid, c in CLUSTERS.items():
            nodes = [{"metadata": {"name": f"{cid}-{role}"},
                      "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
                     for role, (ip, _) in c["nodes"].items()]  # type: ignore[attr-defined]
            for role in ("gw", "wk"):
                nl = KernelNetlink(clusters.ns(cid, role))
                opened.append(nl)
                settings = Settings(cluster_id=cid, node_name=f"{cid}-{role}", cluster_cidrs=(str(c["pods"]),),
                                    service_cidrs=(str(c["services"]),))
                agents.append((Reconciler(settings, nl, IptablesRestore(clusters.ns(cid, role)),
                                          KernelIPSets(clusters.ns(cid, role))), nodes))
            # the gateway engine's part: the vxlan cable to the other cluster
            gw_nl = KernelNetlink(clusters.ns(cid, "gw"))
            opened.append(gw_nl)
            local = local_endpoint(cid)
            pod24 = c["nodes"]["gw"][1]  # type: ignore[index]
            driver = VxlanDriver(DriverContext(local=local["spec"], cluster_cidrs=[str(c["pods"])],
                                               cni_ip=f"{pod24}.1", mtu=1500), gw_nl)
            driver.init()
            remote = next(e for e in endpoints if e["spec"]["cluster_id"] != cid)
            driver.connect_to_endpoint(NATEndpointInfo(remote, remote["spec"]["private_ip"], False))
            drivers[cid] = driver

        assert clusters.seen_by_c2_pod(clusters.ns("c1", "wkpod"), tries=2) is None  # no route agents yet
        for reconciler, nodes in agents:
            reconciler.reconcile(endpoints, nodes)
        assert clusters.seen_by_c2_pod(clusters.ns("c1", "wkpod")) == "10.1.1.5"  # worker → worker, IP kept
        assert clusters.seen_by_c2_pod(clusters.ns("c1", "gwpod")) == "10.1.0.5"  # gateway's pod
        assert clusters.seen_by_c2_pod(clusters.ns("c1", "wk")) == "10.1.1.1"  # host network → CNI IP
        for reconciler, nodes in agents:
            reconciler.reconcile(endpoints, nodes)
            assert reconciler.changes == 0

        # TCP MSS (§3.5): clamped to the path MTU by default (vx-submariner's 1450 → 1410, less TCP options),
        # forced by the node annotation once set
        assert clusters.mss_seen_by_c2_pod(clusters.ns("c1", "wkpod")) <= 1410
        c1_worker, c1_nodes = agents[1]
        annotated = [dict(n, metadata={**n["metadata"], "annotations": {"submariner.io/tcp-clamp-mss": "1200"}})
                     if n["metadata"]["name"] == "c1-wk" else n for n in c1_nodes]
        c1_worker.reconcile(endpoints, annotated)
        assert 1100 < clusters.mss_seen_by_c2_pod(clusters.ns("c1", "wkpod")) <= 1200

        # failover: c1's gateway moves to c1-wk; the old gateway pod went passive without cleaning up
        moved = local_endpoint("c1", "wk", created="2024-01-02T00:00:00Z")
        wk_nl = KernelNetlink(clusters.ns("c1", "wk"))
        opened.append(wk_nl)
        new_driver = VxlanDriver(DriverContext(local=moved["spec"], cluster_cidrs=["10.1.0.0/16"], cni_ip="10.1.1.1",
                                               mtu=1500), wk_nl)
        new_driver.init()
        new_driver.connect_to_endpoint(NATEndpointInfo(endpoints[1], endpoints[1]["spec"]["private_ip"], False))
        drivers["c2"].disconnect_from_endpoint(endpoints[0])
        drivers["c2"].connect_to_endpoint(NATEndpointInfo(moved, moved["spec"]["private_ip"], False))
        after = [endpoints[0], moved, endpoints[1]]  # the stale c1 Endpoint lingers; the newest wins
        for reconciler, nodes in agents:
            reconciler.reconcile(after, nodes)
        assert clusters.seen_by_c2_pod(clusters.ns("c1", "gwpod")) == "10.1.0.5"  # now via vx-submariner
        assert clusters.seen_by_c2_pod(clusters.ns("c1", "wkpod")) == "10.1.1.5"  # now the gateway's own pod
        old_gw = clusters.ns("c1", "gw")
        assert "vxlan-tunnel" not in in_ns(old_gw, "ip", "link")  # the route agent cleaned the cable driver's
        assert "lookup 100" not in in_ns(old_gw, "ip", "rule")  # leftovers when the node stopped being gateway
        assert "via 240.168.60.11 dev vx-submariner" in in_ns(old_gw, "ip", "route", "show", "10.2.0.0/16")
    finally:
        for nl in opened:
            nl.close()
