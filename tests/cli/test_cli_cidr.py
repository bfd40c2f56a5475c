"""Globalnet / clusterset-IP allocation (subctl.md §7.4): examples and properties."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from submariner.cli import cidr
from submariner.cli.cidr import Allocation, CIDRError, allocate, decide, parse_cluster_info, render_cluster_info

N = ipaddress.IPv4Network


def test_defaults_walk_up_by_slash16() -> None:
    supernet = N("242.0.0.0/8")
    taken: list[N] = []
    for i in range(3):
        block = allocate(supernet, 65536, taken)
        assert block == N(f"242.{i}.0.0/16")
        taken.append(block)
    assert cidr.prefix_for_size(4096) == 20
    assert allocate(N("243.0.0.0/8"), 4096, []) == N("243.0.0.0/20")


def test_jumps_past_a_smaller_block_to_the_next_boundary() -> None:
    # An explicit /24 at the base: the next /16 is 242.1.0.0/16 (candidate contains the allocation's base).
    assert allocate(N("242.0.0.0/8"), 65536, [N("242.0.0.0/24")]) == N("242.1.0.0/16")
    # A bigger block containing the candidate's base.
    assert allocate(N("242.0.0.0/8"), 256, [N("242.0.0.0/15")]) == N("242.2.0.0/24")


def test_exhaustion_and_size_validation() -> None:
    supernet = N("10.0.0.0/30")
    with pytest.raises(CIDRError, match=r'no more allocations available in "10\.0\.0\.0/30"'):
        allocate(supernet, 2, [N("10.0.0.0/31"), N("10.0.0.2/31")])
    assert cidr.validate_cluster_size(1000, N("242.0.0.0/8")) == 1024
    with pytest.raises(CIDRError, match="more than half"):
        cidr.validate_cluster_size(2**24, N("242.0.0.0/8"))
    with pytest.raises(CIDRError, match="greater than 0"):
        cidr.validate_cluster_size(0, N("242.0.0.0/8"))
    with pytest.raises(CIDRError, match="loopback"):
        cidr.validate_range("127.0.0.0/8")
    with pytest.raises(CIDRError, match="invalid"):
        cidr.validate_range("242.0.0.1/8")


def test_decide_reuses_validates_explicit_and_rejects_both() -> None:
    allocs = [Allocation("g1", ("120.1.0.0/24",))]
    kw = {"supernet": N("120.0.0.0/8"), "default_size": 65536, "allocations": allocs}
    assert decide(cluster_id="g1", **kw) == cidr.Decision("120.1.0.0/24", True)  # type: ignore[arg-type]
    assert decide(cluster_id="g2", explicit_cidr="120.2.0.0/24", **kw).cidr == "120.2.0.0/24"  # type: ignore[arg-type]
    with pytest.raises(CIDRError, match=r'invalid CIDR "120\.1\.0\.128/25" overlaps with cluster "g1"'):
        decide(cluster_id="g2", explicit_cidr="120.1.0.128/25", **kw)  # type: ignore[arg-type]
    with pytest.raises(CIDRError, match="Only one of cluster size and global CIDR can be specified"):
        decide(cluster_id="g2", explicit_cidr="120.2.0.0/24", size=256, **kw)  # type: ignore[arg-type]
    # default allocation skips g1's /24 inside 120.0.0.0/16? No: 120.0.0.0/16 does not contain 120.1.0.0.
    assert decide(cluster_id="g2", **kw).cidr == "120.0.0.0/16"  # type: ignore[arg-type]
    assert decide(cluster_id="g3", size=256, allocations=[*allocs, Allocation("g2", ("120.0.0.0/16",))],
                  supernet=N("120.0.0.0/8"), default_size=65536).cidr == "120.1.1.0/24"


def test_cluster_info_round_trip_is_tab_indented() -> None:
    allocs = [Allocation("c1", ("242.0.0.0/16",)), Allocation("c2", ("242.1.0.0/16",))]
    text = render_cluster_info(allocs)
    assert '\t{\n\t\t"cluster_id": "c1",' in text
    assert parse_cluster_info(text) == allocs
    assert cidr.with_allocation(allocs, "c1", "242.9.0.0/16")[0] == Allocation("c1", ("242.9.0.0/16",))
    assert cidr.with_allocation(allocs, "c3", "242.2.0.0/16")[-1].cluster_id == "c3"
    assert cidr.unjson_string(cidr.json_string("242.0.0.0/8"), "x") == "242.0.0.0/8"
    with pytest.raises(CIDRError):
        parse_cluster_info("{not json")


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.integers(min_value=16, max_value=26),
    sizes=st.lists(st.integers(min_value=1, max_value=1 << 12), min_size=1, max_size=25),
)
def test_allocations_never_overlap_stay_inside_and_are_aligned(prefix: int, sizes: list[int]) -> None:
    supernet = N(f"10.0.0.0/{prefix}")
    taken: list[N] = []
    for size in sizes:
        try:
            block = allocate(supernet, size, taken)
        except CIDRError:
            # Only when no aligned free block of that size is left.
            want = cidr.prefix_for_size(size)
            if want >= supernet.prefixlen:
                free = [b for b in supernet.subnets(new_prefix=want) if not any(b.overlaps(t) for t in taken)]
                assert not free
            continue
        assert block.subnet_of(supernet)
        assert block.num_addresses >= size
        assert block.num_addresses == cidr.round_up_power_of_two(size)
        assert not any(block.overlaps(t) for t in taken)
        taken.append(block)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([16, 64, 256, 1024, 4096]), min_size=1, max_size=12))
def test_first_fit_is_the_lowest_free_aligned_block(sizes: list[int]) -> None:
    supernet = N("242.0.0.0/16")
    taken: list[N] = []
    for size in sizes:
        block = allocate(supernet, size, taken)
        lower = [b for b in supernet.subnets(new_prefix=block.prefixlen) if b < block
                 and not any(b.overlaps(t) for t in taken)]
        assert not lower, f"{block} allocated although {lower[0]} was free"
        taken.append(block)


def test_cas_write_retries_on_conflict_and_re_decides() -> None:
    """A racing cluster takes the block between read and write: warn, re-read, take the next one."""
    import io

    from submariner.broker.kube import Conflict
    from submariner.broker.kube.fake import FakeCluster
    from submariner.cli import manifests as m
    from submariner.cli.join import CIDRPlan, _assign
    from submariner.cli.reporter import Reporter
    from submariner.cli.resources import CONFIGMAPS

    broker = FakeCluster()
    cms = broker.resource(CONFIGMAPS)
    cms.create(m.globalnet_configmap(m.BrokerSettings(globalnet=True)))
    plan = CIDRPlan(m.GLOBALNET_CONFIGMAP, "242.0.0.0/16", False, cidr.DEFAULT_GLOBALNET_RANGE,
                    cidr.DEFAULT_GLOBALNET_CLUSTER_SIZE)

    # The racer records 242.0.0.0/16 for "other" just before our write, which then conflicts.
    racer = cms.get("submariner-k8s-broker", m.GLOBALNET_CONFIGMAP)
    racer["data"]["clusterinfo"] = render_cluster_info([Allocation("other", ("242.0.0.0/16",))])
    cms.update(racer)
    broker.fail_next("update", Conflict("the object has been modified", status=409), plural="configmaps")
    out = io.StringIO()
    got = _assign(broker, "submariner-k8s-broker", plan, "c1", ("globalnetCidrRange", "globalnetClusterSize"),
                  Reporter(out, terminal=False), "Globalnet", "global")
    assert got == "242.1.0.0/16"
    assert out.getvalue() == (
        " • Assigning Globalnet IPs  ...\n ✓ Assigning Globalnet IPs\n ✓ Allocated global CIDR 242.0.0.0/16\n"
        " • Updating the Globalnet information on the Broker  ...\n"
        " ⚠ Updating the Globalnet information on the Broker\n"
        " ⚠ Conflict occurred updating the Globalnet ConfigMap - retrying\n"
        " ✓ Allocated global CIDR 242.1.0.0/16\n")
    info = parse_cluster_info(cms.get("submariner-k8s-broker", m.GLOBALNET_CONFIGMAP)["data"]["clusterinfo"])
    assert info == [Allocation("other", ("242.0.0.0/16",)), Allocation("c1", ("242.1.0.0/16",))]
