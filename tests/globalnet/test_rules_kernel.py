"""Globalnet rules in a real kernel: a throw-away netns, the dataplane's iptables-restore backend."""

from __future__ import annotations

import os
import shlex

import pytest
from gntest import nat_rules

from submariner.dataplane.packetfilter import IptablesRestore, canonical
from submariner.dataplane.packetfilter.ipset import KernelIPSets
from submariner.globalnet import rules as R
from submariner.globalnet.names import egress_ipset_name
from submariner.globalnet.rules import GlobalnetState, HealthIngress

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]


def _listed(lines: list[str], chain: str) -> list[tuple[str, ...]]:
    return [canonical(shlex.split(line)[2:]) for line in lines if line.split()[1] == chain]


def test_walkthrough_rules_in_a_kernel_and_reapply_is_a_noop(netns: str) -> None:
    ns_set = egress_ipset_name("sample", "ns-egress")
    state = GlobalnetState(
        local_cidrs=("10.7.0.0/16", "10.77.0.0/16"),
        cluster_egress=tuple(f"120.1.0.{i}" for i in range(1, 9)),
        namespace_egress={ns_set: ("120.1.0.9", "120.1.0.10")},
        headless_pods={"sample/pod-whereami-0": ("10.7.1.7", "120.1.0.254"),
                       "sample/pod-whereami-1": ("10.7.1.8", "120.1.0.253")},
        health=HealthIngress("120.1.0.252", "10.7.0.1"),
        remote_subnets=("120.2.0.0/24",),
    )
    sets = KernelIPSets(netns=netns)
    sets.ensure(ns_set)
    sets.set_members(ns_set, ["10.7.1.20"])
    pf = IptablesRestore(netns=netns)
    assert pf.apply(R.ruleset(state, global_cidrs=("120.1.0.0/24",)))
    lines = nat_rules(netns)
    # the seed's iptables-save lines (WALKTHROUGH §4.5) appear verbatim
    assert ("-A SM-GN-EGRESS-CLUSTER -s 10.7.0.0/16 -m mark --mark 0xc0000/0xc0000 -j SNAT "
            "--to-source 120.1.0.1-120.1.0.8") in lines
    assert "-A SM-GN-EGRESS-HDLS-PODS -s 10.7.1.7/32 -m mark --mark 0xc0000/0xc0000 -j SNAT --to-source 120.1.0.254" \
        in lines
    assert "-A SUBMARINER-GN-INGRESS -d 120.1.0.254/32 -j DNAT --to-destination 10.7.1.7" in lines
    assert "-A SUBMARINER-GN-MARK -d 120.2.0.0/24 -j MARK --set-xmark 0xc0000/0xc0000" in lines
    assert _listed(lines, "PREROUTING") == [("-j", "SUBMARINER-GN-INGRESS")]
    assert _listed(lines, "POSTROUTING") == [("-j", "SUBMARINER-POSTROUTING")]
    assert _listed(lines, "SUBMARINER-POSTROUTING") == [("-j", "SUBMARINER-GN-EGRESS")]
    assert _listed(lines, "SUBMARINER-GN-EGRESS") == [("-j", c) for c in R.EGRESS_ORDER]
    assert len(_listed(lines, "SM-GN-EGRESS-NS")) == 1 and ns_set in " ".join(lines)
    assert _listed(lines, R.INGRESS)[0] == canonical(
        ("-p", "icmp", "-d", "120.1.0.252", "-j", "DNAT", "--to-destination", "10.7.0.1"))

    before = pf.transactions
    assert not pf.apply(R.ruleset(state, global_cidrs=("120.1.0.0/24",)))
    assert pf.transactions == before
    assert nat_rules(netns) == lines

    # a release: one pod goes, the rest stays, still one transaction
    del state.headless_pods["sample/pod-whereami-1"]
    assert pf.apply(R.ruleset(state, global_cidrs=("120.1.0.0/24",)))
    after = nat_rules(netns)
    assert not any("120.1.0.253" in line for line in after)
    assert pf.transactions == before + 1

    pf.delete(R.uninstall_ruleset())
    left = nat_rules(netns)
    assert not any("SUBMARINER-GN" in line or "SM-GN" in line for line in left)
    sets.destroy(ns_set)
    assert sets.names("SM-GN-") == []
