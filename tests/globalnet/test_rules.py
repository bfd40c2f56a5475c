"""Globalnet rule rendering: the chains, hooks and rule shapes of dataplane.md §4.4 and the walkthrough §4.5."""

from __future__ import annotations

from submariner.dataplane.packetfilter import FakePacketFilter, RuleSpec, canonical
from submariner.globalnet import rules as R
from submariner.globalnet.names import egress_ipset_name, internal_service_name
from submariner.globalnet.rules import GlobalnetState, HealthIngress


def _spec_example() -> GlobalnetState:
    """The spec's example: cluster CIDR 10.1.0.0/16, service CIDR 100.1.0.0/16, GlobalCIDR 242.1.0.0/16."""
    return GlobalnetState(
        local_cidrs=("10.1.0.0/16", "100.1.0.0/16"),
        cluster_egress=tuple(f"242.1.0.{i}" for i in range(1, 9)),
        pod_egress={egress_ipset_name("default", "db"): ("242.1.255.253",)},
        namespace_egress={egress_ipset_name("default", "east-region"): ("242.1.0.9", "242.1.0.10")},
        headless_pods={"default/pod-web-0": ("10.1.2.5", "242.1.255.252")},
        health=HealthIngress("242.1.255.254", "10.1.0.1"),
        remote_subnets=("242.0.0.0/16", "242.1.0.0/16"),
    )


def _rules(rs: R.Ruleset, chain: str) -> list[tuple[str, ...]]:
    return [canonical(r.args) for r in rs.chains[("nat", chain)]]


def _c(*args: str) -> tuple[str, ...]:
    return canonical(args)


def test_names_match_the_spec_examples() -> None:
    assert egress_ipset_name("default", "east-region") == "SM-GN-FC6DNPXDDOPBBJFX4TUFPAAFZ"
    assert len(egress_ipset_name("a-very-long-namespace-name", "and-a-long-name")) == 31
    assert internal_service_name("nginx") == "submariner-lpq6zr4tl4o5qvrv2t7o3l3gawkagast"


def test_the_spec_example_renders_every_chain() -> None:
    rs = R.ruleset(_spec_example(), global_cidrs=("242.1.0.0/16",))
    assert {chain for _, chain in rs.chains} == set(R.ALL_CHAINS)
    ns_set = egress_ipset_name("default", "east-region")
    pod_set = egress_ipset_name("default", "db")
    assert _rules(rs, R.INGRESS) == [
        _c("-p", "icmp", "-d", "242.1.255.254", "-j", "DNAT", "--to-destination", "10.1.0.1"),
        _c("-d", "242.1.255.252", "-j", "DNAT", "--to-destination", "10.1.2.5"),
    ]
    # the remote that overlaps our own GlobalCIDR is ignored
    assert _rules(rs, R.MARK_CHAIN) == [_c("-d", "242.0.0.0/16", "-j", "MARK", "--set-xmark", "0xc0000/0xc0000")]
    assert _rules(rs, R.EGRESS_PODS) == [
        _c("-m", "mark", "--mark", "0xc0000/0xc0000", "-m", "set", "--match-set", pod_set, "src",
           "-j", "SNAT", "--to-source", "242.1.255.253")]
    assert _rules(rs, R.EGRESS_HDLS_PODS) == [
        _c("-s", "10.1.2.5/32", "-m", "mark", "--mark", "0xc0000/0xc0000",
           "-j", "SNAT", "--to-source", "242.1.255.252")]
    assert _rules(rs, R.EGRESS_HDLS_EPS) == []
    assert _rules(rs, R.EGRESS_NS) == [
        _c("-m", "mark", "--mark", "0xc0000/0xc0000", "-m", "set", "--match-set", ns_set, "src",
           "-j", "SNAT", "--to-source", "242.1.0.9-242.1.0.10")]
    assert _rules(rs, R.EGRESS_CLUSTER) == [
        _c("-s", cidr, "-m", "mark", "--mark", "0xc0000/0xc0000", "-j", "SNAT", "--to-source", "242.1.0.1-242.1.0.8")
        for cidr in ("10.1.0.0/16", "100.1.0.0/16")]
    assert [r.args for r in rs.chains[("nat", R.EGRESS)]] == [
        ("-j", "SUBMARINER-GN-MARK"), ("-j", "SM-GN-EGRESS-PODS"), ("-j", "SM-GN-EGRESS-HDLS-PODS"),
        ("-j", "SM-GN-EGRESS-HDLS-EPS"), ("-j", "SM-GN-EGRESS-NS"), ("-j", "SM-GN-EGRESS-CLUSTER")]
    assert [(h.table, h.builtin, h.target, h.position) for h in rs.hooks] == [
        ("nat", "PREROUTING", "SUBMARINER-GN-INGRESS", "first"),
        ("nat", "POSTROUTING", "SUBMARINER-POSTROUTING", "first"),
        ("nat", "SUBMARINER-POSTROUTING", "SUBMARINER-GN-EGRESS", "first"),
    ]


def test_walkthrough_shapes_as_iptables_save_lists_them() -> None:
    """WALKTHROUGH §4.5: the seed's `iptables-save` lines, compared by meaning with what we render."""
    state = GlobalnetState(local_cidrs=("10.7.0.0/16",), cluster_egress=tuple(f"120.1.0.{i}" for i in range(1, 9)),
                           headless_pods={"sample/pod-whereami-0": ("10.7.1.7", "120.2.0.254")})
    rs = R.ruleset(state)
    seed = {
        R.EGRESS_CLUSTER: "-s 10.7.0.0/16 -m mark --mark 0xc0000/0xc0000 -j SNAT --to-source 120.1.0.1-120.1.0.8",
        R.EGRESS_HDLS_PODS: "-s 10.7.1.7/32 -m mark --mark 0xc0000/0xc0000 -j SNAT --to-source 120.2.0.254",
        R.INGRESS: "-d 120.2.0.254/32 -j DNAT --to-destination 10.7.1.7",
    }
    for chain, line in seed.items():
        assert _rules(rs, chain) == [canonical(line.split())], chain


def test_no_cluster_egress_ips_means_no_cluster_rules_and_order_is_stable() -> None:
    a = GlobalnetState(local_cidrs=("10.1.0.0/16",),
                       headless_pods={"x/pod-b": ("10.1.0.9", "242.1.0.3"), "x/pod-a": ("10.1.0.8", "242.1.0.20")})
    b = GlobalnetState(local_cidrs=("10.1.0.0/16",),
                       headless_pods={"x/pod-a": ("10.1.0.8", "242.1.0.20"), "x/pod-b": ("10.1.0.9", "242.1.0.3")})
    assert R.ruleset(a).chains[("nat", R.EGRESS_CLUSTER)] == []
    assert R.ruleset(a) == R.ruleset(b)
    assert [r.args[1] for r in R.ruleset(a).chains[("nat", R.INGRESS)]] == ["242.1.0.3", "242.1.0.20"]


def test_applying_to_the_fake_keeps_foreign_rules_of_the_shared_chain_and_is_idempotent() -> None:
    pf = FakePacketFilter()
    # the route agent's rules in the shared chain, and kube-proxy's chain
    pf.seed("nat", "SUBMARINER-POSTROUTING", [("-s", "10.1.0.0/16", "-d", "10.2.0.0/16", "-j", "ACCEPT")])
    pf.seed("nat", "KUBE-SERVICES", [("-j", "KUBE-NODEPORTS")])
    rs = R.ruleset(_spec_example())
    assert pf.apply(rs)
    assert not pf.apply(R.ruleset(_spec_example()))
    post = pf.chain_rules("nat", "SUBMARINER-POSTROUTING")
    assert post is not None and post[0] == ("-j", "SUBMARINER-GN-EGRESS")
    assert ("-s", "10.1.0.0/16", "-d", "10.2.0.0/16", "-j", "ACCEPT") in post
    assert pf.chain_rules("nat", "KUBE-SERVICES") == [("-j", "KUBE-NODEPORTS")]
    assert pf.chain_rules("nat", "PREROUTING") == [("-j", "SUBMARINER-GN-INGRESS")]
    # leaving the gateway role flushes INGRESS/EGRESS/MARK, and uninstall removes every chain and our jump
    assert pf.apply(R.flushed_ruleset())
    assert pf.chain_rules("nat", R.INGRESS) == [] and pf.chain_rules("nat", R.EGRESS) == []
    pf.delete(R.uninstall_ruleset())
    for chain in R.ALL_CHAINS:
        assert pf.chain_rules("nat", chain) is None
    assert pf.chain_rules("nat", "SUBMARINER-POSTROUTING") == [
        canonical(("-s", "10.1.0.0/16", "-d", "10.2.0.0/16", "-j", "ACCEPT"))]


def test_rule_spec_values_are_tuples() -> None:
    assert R.mark_rule("242.0.0.0/16") == RuleSpec(("-d", "242.0.0.0/16", "-j", "MARK", "--set-mark", R.MARK))
