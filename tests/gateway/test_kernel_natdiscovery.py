"""NAT discovery between two gateway namespaces through a router namespace that does SNAT and DNAT.

gw-a (192.168.81.1) —— router (192.168.81.254 | 192.168.82.254) —— gw-b (192.168.82.1, "public" 203.0.113.2)
The router masquerades everything leaving towards gw-b and DNATs 203.0.113.2:4490 to gw-b. Each
NATDiscovery runs on threads that entered its gateway's namespace, with real sockets.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator

import pytest
from gwtest import endpoint, spec
from netns import InNetns, sh

from submariner.gateway.cable.driver import NATEndpointInfo
from submariner.gateway.natdiscovery import NATDiscovery

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

PUBLIC_B = "203.0.113.2"


@contextlib.contextmanager
def nat_topology() -> Iterator[dict[str, str]]:
    tag = secrets.token_hex(3)
    ns = {"a": f"subm-gw-{tag}-ga", "r": f"subm-gw-{tag}-rt", "b": f"subm-gw-{tag}-gb"}
    try:
        for name in ns.values():
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", ns["r"], "link", "add", "to-a", "type", "veth", "peer", "name", "eth0", "netns", ns["a"])
        sh("ip", "-n", ns["r"], "link", "add", "to-b", "type", "veth", "peer", "name", "eth0", "netns", ns["b"])
        for link, addr in (("to-a", "192.168.81.254/24"), ("to-b", "192.168.82.254/24")):
            sh("ip", "-n", ns["r"], "addr", "add", addr, "dev", link)
            sh("ip", "-n", ns["r"], "link", "set", link, "up")
        for key, addr in (("a", "192.168.81.1/24"), ("b", "192.168.82.1/24")):
            sh("ip", "-n", ns[key], "addr", "add", addr, "dev", "eth0")
            sh("ip", "-n", ns[key], "link", "set", "eth0", "up")
        # gw-a only knows the public side of gw-b; gw-b answers through the router
        sh("ip", "-n", ns["a"], "route", "add", "203.0.113.0/24", "via", "192.168.81.254")
        sh("ip", "-n", ns["b"], "route", "add", "192.168.81.0/24", "via", "192.168.82.254")
        sh("ip", "netns", "exec", ns["r"], "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
        rules = ("*nat\n"
                 f"-A PREROUTING -d {PUBLIC_B}/32 -p udp -m udp --dport 4490 -j DNAT --to-destination 192.168.82.1\n"
                 "-A POSTROUTING -o to-b -j MASQUERADE\nCOMMIT\n")
        subprocess.run(["ip", "netns", "exec", ns["r"], "iptables-restore"], input=rules, text=True, check=True,
                       capture_output=True, timeout=30)
        yield ns
    finally:
        for name in ns.values():
            sh("ip", "netns", "del", name, check=False)


def test_discovery_through_snat_and_dnat_picks_public_ip_with_nat() -> None:
    with nat_topology() as ns:
        a_spec = spec("east", "192.168.81.1")
        b_spec = spec("west", "192.168.82.1", public_ip=PUBLIC_B)
        got: list[NATEndpointInfo] = []
        ready = threading.Event()

        def on_ready(info: NATEndpointInfo) -> None:
            got.append(info)
            ready.set()

        in_a, in_b = InNetns(ns["a"]), InNetns(ns["b"])
        a = NATDiscovery(a_spec, on_ready, port=4490)  # type: ignore[arg-type]
        b = NATDiscovery(b_spec, lambda i: None, port=4490)  # type: ignore[arg-type]
        try:
            in_b(b.start)
            in_a(a.start)  # its receive/tick threads are created inside gw-a's namespace
            in_a(lambda: a.add_endpoint(endpoint(b_spec)))
            assert ready.wait(10), "no NAT discovery verdict"
            # the private IP is unreachable from gw-a; the public answer says NAT is in the way
            assert (got[0].use_ip, got[0].use_nat) == (PUBLIC_B, True)
            assert a.state_of(b_spec["cable_name"]) == "selected-public"
        finally:
            a.stop()
            b.stop()
            in_a.close()
            in_b.close()


def test_discovery_on_a_flat_network_picks_private_ip_without_nat() -> None:
    with nat_topology() as ns:
        # give gw-a a direct (routed, un-NATed) path to gw-b's private network
        sh("ip", "-n", ns["a"], "route", "add", "192.168.82.0/24", "via", "192.168.81.254")
        sh("ip", "netns", "exec", ns["r"], "iptables", "-t", "nat", "-I", "POSTROUTING", "-s", "192.168.81.0/24",
           "-d", "192.168.82.0/24", "-j", "ACCEPT")
        a_spec = spec("east", "192.168.81.1")
        b_spec = spec("west", "192.168.82.1", public_ip=PUBLIC_B)
        got: list[NATEndpointInfo] = []
        done = threading.Event()

        def on_ready(info: NATEndpointInfo) -> None:
            got.append(info)
            if info.use_ip == "192.168.82.1":
                done.set()

        in_a, in_b = InNetns(ns["a"]), InNetns(ns["b"])
        a = NATDiscovery(a_spec, on_ready, port=4490)  # type: ignore[arg-type]
        b = NATDiscovery(b_spec, lambda i: None, port=4490)  # type: ignore[arg-type]
        try:
            in_b(b.start)
            in_a(a.start)
            in_a(lambda: a.add_endpoint(endpoint(b_spec)))
            assert done.wait(10), f"no private verdict: {got}"
            # the private answer wins (first, or within 1 s of a public one), with no NAT detected
            assert (got[-1].use_ip, got[-1].use_nat) == ("192.168.82.1", False)
        finally:
            a.stop()
            b.stop()
            in_a.close()
            in_b.close()
