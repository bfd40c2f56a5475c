"""XFRM clean-up: every policy but the all-zero ones goes, in a real kernel and through the reconciler."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from submariner.dataplane.netlink import FakeNetlink
from submariner.dataplane.packetfilter import FakePacketFilter
from submariner.dataplane.packetfilter.ipset import FakeIPSets
from submariner.routeagent.config import Settings
from submariner.routeagent.reconciler import Reconciler
from submariner.routeagent.xfrm import FakeXfrm, KernelXfrm, Policy, cleanup, parse_policies

LISTING = """src fd00::/64 dst fd01::/64
\tdir out priority 0 ptype main
\ttmpl src fd00::1 dst fd01::1
\t\tproto esp reqid 0 mode tunnel
src 0.0.0.0/0 dst 0.0.0.0/0
\tdir out priority 5 ptype main
src 10.1.0.0/16 dst 10.2.0.0/16 proto tcp dport 80
\tdir in priority 0 ptype main
\ttmpl src 0.0.0.0 dst 0.0.0.0
\t\tproto esp reqid 0 mode transport
src 0.0.0.0/0 dst 0.0.0.0/0
\tsocket in priority 0 ptype main
"""


def test_parse_policies() -> None:
    assert parse_policies(LISTING) == [
        Policy(("src", "fd00::/64", "dst", "fd01::/64"), "out"),
        Policy(("src", "0.0.0.0/0", "dst", "0.0.0.0/0"), "out"),
        Policy(("src", "10.1.0.0/16", "dst", "10.2.0.0/16", "proto", "tcp", "dport", "80"), "in"),
    ]
    assert [p.all_zero for p in parse_policies(LISTING)] == [False, True, False]


@pytest.mark.root
def test_cleanup_in_a_namespace() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    ns = f"subm-ra-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def sh(*cmd: str) -> str:
            return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                                  check=True).stdout

        sh("ip", "xfrm", "policy", "add", "src", "10.8.0.0/16", "dst", "10.9.0.0/16", "dir", "out", "tmpl", "src",
           "1.1.1.1", "dst", "2.2.2.2", "proto", "esp", "mode", "tunnel")
        sh("ip", "xfrm", "policy", "add", "src", "10.9.0.0/16", "dst", "10.8.0.0/16", "dir", "fwd", "tmpl", "src",
           "2.2.2.2", "dst", "1.1.1.1", "proto", "esp", "mode", "tunnel")
        sh("ip", "xfrm", "policy", "add", "src", "10.1.0.0/16", "dst", "10.2.0.0/16", "proto", "tcp", "dport", "80",
           "dir", "in", "tmpl", "proto", "esp", "mode", "transport")
        sh("ip", "xfrm", "policy", "add", "src", "0.0.0.0/0", "dst", "0.0.0.0/0", "dir", "out", "priority", "5")
        assert cleanup(KernelXfrm(ns)) == 3
        left = parse_policies(sh("ip", "xfrm", "policy", "list"))
        assert left == [Policy(("src", "0.0.0.0/0", "dst", "0.0.0.0/0"), "out")]
        assert cleanup(KernelXfrm(ns)) == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_reconciler_cleans_xfrm_only_when_the_node_stops_being_gateway() -> None:
    nl = FakeNetlink()
    nl.add_link("eth0", 1500, ["192.168.1.11/24"])
    policy = Policy(("src", "10.8.0.0/16", "dst", "10.9.0.0/16"), "out")
    xfrm = FakeXfrm([policy])
    r = Reconciler(Settings(cluster_id="c1", node_name="n1", cluster_cidrs=("10.8.0.0/16",)), nl,
                   FakePacketFilter(), FakeIPSets(), xfrm=xfrm)

    def local(host: str, created: str) -> dict[str, object]:
        return {"metadata": {"name": f"c1-{host}", "creationTimestamp": created},
                "spec": {"cluster_id": "c1", "hostname": host, "private_ip": "192.168.1.10" if host != "n1" else
                         "192.168.1.11", "subnets": ["10.8.0.0/16"], "backend": "libreswan"}}

    r.reconcile([local("n0", "2024-01-01T00:00:00Z")], [])
    assert xfrm.deleted == []  # never the gateway: nothing of ours to clean
    r.reconcile([local("n1", "2024-01-02T00:00:00Z")], [])
    assert xfrm.deleted == []  # while gateway the driver owns them
    r.reconcile([local("n2", "2024-01-03T00:00:00Z")], [])
    assert xfrm.deleted == [policy]
