"""Which namespaces belong to which cluster, by name alone (what delete relies on after a crash)."""

from __future__ import annotations

from pathlib import Path

from submariner.lab.names import Instance


def test_owns_netns_keeps_prefix_named_clusters_apart() -> None:
    inst = Instance.for_home(Path("/tmp/sublab-names-test"))
    p = inst.prefix
    # The seed has `broker` and `broker-globalnet`: one's prefix starts the other's names.
    assert inst.owns_netns("broker", f"{p}-broker-broker-control-plane")
    assert inst.owns_netns("broker", inst.pod_netns("broker", "0123abcd-ffff"))
    assert not inst.owns_netns("broker", f"{p}-broker-globalnet-broker-globalnet-control-plane")
    assert not inst.owns_netns("broker", inst.pod_netns("broker-globalnet", "0123abcd-ffff"))
    assert inst.owns_netns("broker-globalnet", f"{p}-broker-globalnet-broker-globalnet-worker2")
    # Odd but legal names do not collide either.
    assert not inst.owns_netns("a", f"{p}-a-a-a-control-plane")  # cluster "a-a"'s control plane
    assert not inst.owns_netns("a-pod", inst.pod_netns("a", "deadbeef"))
    assert not inst.owns_netns("c1", f"{p}-underlay")
    assert inst.owns_any_netns(f"{p}-underlay")
    assert not inst.owns_any_netns("sl-x-underlay")  # the default instance's names are not a test's


def test_instances_get_distinct_prefixes_and_one_slash20() -> None:
    a, b = Instance.for_home(Path("/tmp/a")), Instance.for_home(Path("/tmp/b"))
    assert a.prefix != b.prefix and a.prefix.startswith("sl") and len(a.prefix) == 6
    assert a.underlay.prefixlen == 20 and a.root_address == a.underlay.network_address + 1
    assert len(a.root_veth) <= 15 and len(a.bridge) <= 15 and len(a.veth("u", "c1/c1-worker")) <= 15
