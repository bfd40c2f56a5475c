"""Globalnet SNAT/DNAT with real packets: two "clusters" with the SAME pod CIDR (10.7.0.0/16) talk through
their GlobalCIDRs, with the rules `rules.ruleset` renders applied by the dataplane's iptables-restore backend.

Topology (all throw-away netns `subm-gn-*`): pod A 10.7.1.5 — gw1 ═ 192.0.2.0/30 ═ gw2 — pod B 10.7.1.7.
gw1 has GlobalCIDR 120.1.0.0/24, gw2 120.2.0.0/24; the /30 link stands in for the tunnel. A and B are each
a headless pod with a global IP (120.1.0.254, 120.2.0.254); gw1's cluster egress block is 120.1.0.1-8.
A TCP server in each pod answers with the peer address it sees. For a ClusterIP export kube-proxy's
externalIP DNAT is emulated with one hand-written rule (the lab's kube-proxy does this for real).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from submariner.dataplane.packetfilter import IptablesRestore
from submariner.globalnet import rules as R
from submariner.globalnet.rules import GlobalnetState

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(8); print("ready", flush=True)
while True:
    c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
"""

CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 8080), timeout=5); print(c.recv(64).decode()); c.close()
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def ns_sh(ns: str, *args: str) -> None:
    sh("ip", "netns", "exec", ns, *args)


@pytest.fixture
def topology() -> Iterator[dict[str, str]]:
    tag = secrets.token_hex(2)
    names = {role: f"subm-gn-{role}-{tag}" for role in ("a", "gw1", "gw2", "b")}
    created: list[str] = []
    try:
        for ns in names.values():
            sh("ip", "netns", "add", ns)
            created.append(ns)
            ns_sh(ns, "ip", "link", "set", "lo", "up")
        a, gw1, gw2, b = names["a"], names["gw1"], names["gw2"], names["b"]
        # veths are created inside gw1/gw2 and one end moved, so nothing ever appears in the root namespace
        ns_sh(gw1, "ip", "link", "add", "to-a", "type", "veth", "peer", "name", "eth0", "netns", a)
        ns_sh(gw2, "ip", "link", "add", "to-b", "type", "veth", "peer", "name", "eth0", "netns", b)
        ns_sh(gw1, "ip", "link", "add", "tun", "type", "veth", "peer", "name", "tun", "netns", gw2)
        for ns, pod_ip in ((a, "10.7.1.5"), (b, "10.7.1.7")):
            ns_sh(ns, "ip", "addr", "add", f"{pod_ip}/32", "dev", "eth0")
            ns_sh(ns, "ip", "link", "set", "eth0", "up")
            ns_sh(ns, "ip", "route", "add", "10.7.0.1", "dev", "eth0", "scope", "link")
        sides = ((gw1, "to-a", "10.7.1.5", "192.0.2.1"), (gw2, "to-b", "10.7.1.7", "192.0.2.2"))
        for gw, veth, pod_ip, tun_ip in sides:
            ns_sh(gw, "ip", "addr", "add", "10.7.0.1/32", "dev", veth)
            ns_sh(gw, "ip", "link", "set", veth, "up")
            ns_sh(gw, "ip", "route", "add", f"{pod_ip}/32", "dev", veth)
            ns_sh(gw, "ip", "addr", "add", f"{tun_ip}/30", "dev", "tun")
            ns_sh(gw, "ip", "link", "set", "tun", "up")
            ns_sh(gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")  # inside the gateway's own namespace
        ns_sh(a, "ip", "route", "add", "120.2.0.0/24", "via", "10.7.0.1", "dev", "eth0")
        ns_sh(b, "ip", "route", "add", "120.1.0.0/24", "via", "10.7.0.1", "dev", "eth0")
        ns_sh(gw1, "ip", "route", "add", "120.2.0.0/24", "via", "192.0.2.2")
        ns_sh(gw2, "ip", "route", "add", "120.1.0.0/24", "via", "192.0.2.1")
        yield names
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def _server(ns: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _peer_seen(ns: str, target: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, target], capture_output=True,
                         text=True, timeout=20, check=True)
    return out.stdout.strip()


def test_overlapping_clusters_talk_through_global_ips(topology: dict[str, str]) -> None:
    gw1 = GlobalnetState(local_cidrs=("10.7.0.0/16",), cluster_egress=tuple(f"120.1.0.{i}" for i in range(1, 9)),
                         headless_pods={"sample/pod-a": ("10.7.1.5", "120.1.0.254")}, remote_subnets=("120.2.0.0/24",))
    gw2 = GlobalnetState(local_cidrs=("10.7.0.0/16",), cluster_egress=tuple(f"120.2.0.{i}" for i in range(1, 9)),
                         headless_pods={"sample/pod-b": ("10.7.1.7", "120.2.0.254")}, remote_subnets=("120.1.0.0/24",))
    assert IptablesRestore(netns=topology["gw1"]).apply(R.ruleset(gw1, ("120.1.0.0/24",)))
    assert IptablesRestore(netns=topology["gw2"]).apply(R.ruleset(gw2, ("120.2.0.0/24",)))
    servers = [_server(topology["a"]), _server(topology["b"])]
    try:
        # A → B's global IP: gw2 DNATs to B; A is a headless pod, so gw1 SNATs it to its own global IP
        assert _peer_seen(topology["a"], "120.2.0.254") == "120.1.0.254"
        # B → A's global IP: the same in the other direction
        assert _peer_seen(topology["b"], "120.1.0.254") == "120.2.0.254"
        # without A's headless entry gw1 falls back to the cluster egress block
        del gw1.headless_pods["sample/pod-a"]
        assert IptablesRestore(netns=topology["gw1"]).apply(R.ruleset(gw1, ("120.1.0.0/24",)))
        time.sleep(0.1)
        seen = _peer_seen(topology["a"], "120.2.0.254")
        assert seen.startswith("120.1.0.") and 1 <= int(seen.rsplit(".", 1)[1]) <= 8, seen
        # an exported ClusterIP Service: Globalnet adds no rule, kube-proxy DNATs the internal Service's
        # externalIP. Emulated here (a KUBE-SERVICES-like chain appended to PREROUTING), as the lab's does.
        gw2_ns = topology["gw2"]
        ns_sh(gw2_ns, "iptables", "-t", "nat", "-N", "KUBE-EMU")
        ns_sh(gw2_ns, "iptables", "-t", "nat", "-A", "KUBE-EMU", "-d", "120.2.0.253/32", "-p", "tcp", "--dport",
              "8080", "-j", "DNAT", "--to-destination", "10.7.1.7:8080")
        ns_sh(gw2_ns, "iptables", "-t", "nat", "-A", "PREROUTING", "-j", "KUBE-EMU")
        seen = _peer_seen(topology["a"], "120.2.0.253")
        assert seen.startswith("120.1.0.") and 1 <= int(seen.rsplit(".", 1)[1]) <= 8, seen
        # Globalnet's re-apply leaves kube-proxy's hook and chain alone and keeps its own hook first
        assert not IptablesRestore(netns=gw2_ns).apply(R.ruleset(gw2, ("120.2.0.0/24",)))
        assert _peer_seen(topology["a"], "120.2.0.253") == seen
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()


