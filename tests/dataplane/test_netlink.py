"""The netlink seam in a real kernel (throw-away netns) and the fake's agreement with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dpharness import in_ns

from submariner.dataplane.netlink import (
    FakeNetlink,
    Fdb,
    KernelNetlink,
    Netlink,
    NetlinkSeamError,
    Route,
    Rule,
    Vxlan,
    reconcile_routes,
)

NODE_IP = "192.168.1.100"


def _node(ns: str) -> None:
    """A node-like namespace: eth0 (a veth; no dummy module here) with the node IP, no default route."""
    in_ns(ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
    in_ns(ns, "ip", "link", "set", "eth0", "up")
    in_ns(ns, "ip", "link", "set", "eth0-peer", "up")
    in_ns(ns, "ip", "addr", "add", f"{NODE_IP}/24", "dev", "eth0")


@pytest.fixture
def kernel(netns: str) -> Iterator[KernelNetlink]:
    _node(netns)
    nl = KernelNetlink(netns)
    try:
        yield nl
    finally:
        nl.close()


@pytest.fixture(params=["fake", pytest.param("kernel", marks=pytest.mark.root)])
def nl(request: pytest.FixtureRequest) -> Iterator[Netlink]:
    if request.param == "fake":
        fake = FakeNetlink()
        fake.add_link("eth0", 1500, [f"{NODE_IP}/24"])
        yield fake
    else:
        yield request.getfixturevalue("kernel")


def test_missing_namespace_is_an_error_not_a_new_namespace() -> None:
    with pytest.raises(NetlinkSeamError, match="subm-dp-does-not-exist"):
        KernelNetlink("subm-dp-does-not-exist")
    assert not Path("/run/netns/subm-dp-does-not-exist").exists()


def test_vxlan_create_and_recreate_on_difference(nl: Netlink) -> None:
    spec = Vxlan("vx-submariner", vni=100, port=4800, remote="192.168.1.7", mtu=1450)
    assert nl.ensure_vxlan(spec) is True
    first = nl.link_index("vx-submariner")
    assert nl.ensure_vxlan(spec) is False
    assert nl.link_index("vx-submariner") == first
    assert nl.link_mtu("vx-submariner") == 1450
    # an MTU change is applied in place
    assert nl.ensure_vxlan(Vxlan("vx-submariner", 100, 4800, remote="192.168.1.7", mtu=1400)) is True
    assert nl.link_index("vx-submariner") == first and nl.link_mtu("vx-submariner") == 1400
    # a different remote (another gateway) means a new device
    for changed in (Vxlan("vx-submariner", 100, 4800, remote="192.168.1.8", mtu=1400),
                    Vxlan("vx-submariner", 100, 4800, mtu=1400),
                    Vxlan("vx-submariner", 101, 4800, mtu=1400),
                    Vxlan("vx-submariner", 101, 4801, mtu=1400),
                    Vxlan("vx-submariner", 101, 4801, local=NODE_IP, mtu=1400)):
        before = nl.link_index("vx-submariner")
        assert nl.ensure_vxlan(changed) is True
        assert nl.link_index("vx-submariner") != before, changed
        assert nl.ensure_vxlan(changed) is False
    if isinstance(nl, KernelNetlink):
        assert nl.vxlan("vx-submariner") == Vxlan("vx-submariner", 101, 4801, local=NODE_IP, mtu=1400)
        assert ",UP," in in_ns(nl.netns or "", "ip", "link", "show", "vx-submariner")
    assert nl.delete_link("vx-submariner") is True
    assert nl.delete_link("vx-submariner") is False
    assert nl.link_index("vx-submariner") is None


def test_addresses_and_route_source(nl: Netlink) -> None:
    assert nl.route_source("192.168.1.7") == ("eth0", NODE_IP)
    assert nl.route_source("8.8.8.8") is None  # no default route in node namespaces
    nl.ensure_vxlan(Vxlan("vx-submariner", 100, 4800))
    assert nl.ensure_address("vx-submariner", "240.168.1.100/8") is True
    assert nl.ensure_address("vx-submariner", "240.168.1.100/8") is False
    assert ("vx-submariner", "240.168.1.100/8") in nl.addresses()
    assert nl.addresses("eth0") == [("eth0", f"{NODE_IP}/24")]
    assert nl.route_source("240.1.2.3") == ("vx-submariner", "240.168.1.100")


def test_fdb(nl: Netlink) -> None:
    nl.ensure_vxlan(Vxlan("vx-submariner", 100, 4800))
    for ip in ("192.168.1.7", "192.168.1.8"):
        assert nl.ensure_fdb(Fdb("vx-submariner", ip)) is True
        assert nl.ensure_fdb(Fdb("vx-submariner", ip)) is False
    assert sorted(f.dst for f in nl.fdb("vx-submariner")) == ["192.168.1.7", "192.168.1.8"]
    if isinstance(nl, KernelNetlink):
        listed = in_ns(nl.netns or "", "bridge", "fdb", "show", "dev", "vx-submariner")
        assert "00:00:00:00:00:00 dst 192.168.1.7 self permanent" in listed
    assert nl.delete_fdb(Fdb("vx-submariner", "192.168.1.7")) is True
    assert nl.delete_fdb(Fdb("vx-submariner", "192.168.1.7")) is False
    assert [f.dst for f in nl.fdb("vx-submariner")] == ["192.168.1.8"]


def test_rules(nl: Netlink) -> None:
    for rule in (Rule(150, 150), Rule(100, 100)):
        assert nl.ensure_rule(rule) is True
        assert nl.ensure_rule(rule) is False
    assert {Rule(150, 150), Rule(100, 100), Rule(254, 32766)} <= set(nl.rules())
    if isinstance(nl, KernelNetlink):
        assert "150:\tfrom all lookup 150" in in_ns(nl.netns or "", "ip", "rule")
    assert nl.delete_rule(Rule(150, 150)) is True
    assert nl.delete_rule(Rule(150, 150)) is False
    assert Rule(150, 150) not in nl.rules()


def _owned(route: Route) -> bool:
    return route.proto_static


def test_reconcile_routes_in_tables_main_100_150(nl: Netlink) -> None:
    nl.ensure_vxlan(Vxlan("vx-submariner", 100, 4800))
    nl.ensure_address("vx-submariner", "240.168.1.100/8")
    main = [Route("10.9.0.0/16", gateway="240.168.1.7", oif="vx-submariner", proto_static=True),
            Route("100.9.0.0/16", gateway="240.168.1.7", oif="vx-submariner", proto_static=True)]
    t150 = [Route("10.9.0.0/16", table=150, oif="eth0", src=NODE_IP, scope_link=True, proto_static=True),
            Route("10.10.0.0/16", table=150, gateway="192.168.1.1", oif="eth0", src=NODE_IP, proto_static=True)]
    t100 = [Route("10.9.0.0/16", table=100, gateway="240.168.1.7", oif="vx-submariner", src=NODE_IP, metric=100)]
    # someone else's route in main must survive our reconcile
    nl.replace_route(Route("172.16.0.0/12", gateway="192.168.1.1", oif="eth0"))
    for table, desired in ((254, main), (150, t150), (100, t100)):
        assert reconcile_routes(nl, desired, table, _owned if table == 254 else lambda r: True) == len(desired)
        assert reconcile_routes(nl, desired, table, _owned if table == 254 else lambda r: True) == 0
        got = set(nl.routes(table))
        assert {r.normalised() for r in desired} <= got
    if isinstance(nl, KernelNetlink):
        text = in_ns(nl.netns or "", "ip", "route", "show", "table", "150")
        assert f"10.9.0.0/16 dev eth0 proto static scope link src {NODE_IP}" in text
        text = in_ns(nl.netns or "", "ip", "route", "show", "table", "100")
        assert f"10.9.0.0/16 via 240.168.1.7 dev vx-submariner src {NODE_IP} metric 100" in text
    # a remote goes away: only its routes go; the kernel's connected routes stay
    assert reconcile_routes(nl, main[:1], 254, _owned) == 1
    left = {r.dst for r in nl.routes(254)}
    assert "100.9.0.0/16" not in left and {"10.9.0.0/16", "172.16.0.0/12", "192.168.1.0/24", "240.0.0.0/8"} <= left
    # even an over-broad ownership test never removes connected routes
    assert reconcile_routes(nl, [], 254, lambda r: True) == 2
    assert {"192.168.1.0/24", "240.0.0.0/8"} <= {r.dst for r in nl.routes(254)}
    # a gateway change is a replace, not a duplicate
    moved = [Route("10.9.0.0/16", table=100, gateway="240.168.1.8", oif="vx-submariner", src=NODE_IP, metric=100)]
    assert reconcile_routes(nl, moved, 100, lambda r: True) >= 1
    assert nl.routes(100) == [moved[0]]
    assert nl.flush_table(150) == 2
    assert nl.routes(150) == []
    assert nl.flush_table(150) == 0


def test_route_in_wrong_table_is_refused(nl: Netlink) -> None:
    with pytest.raises(ValueError, match="table 150"):
        reconcile_routes(nl, [Route("10.9.0.0/16", oif="eth0")], 150, lambda r: True)


@pytest.mark.root
def test_sysctl_only_in_the_namespace(kernel: KernelNetlink) -> None:
    kernel.ensure_vxlan(Vxlan("vx-submariner", 100, 4800))
    key = "net.ipv4.conf.vx-submariner.rp_filter"
    kernel.set_sysctl(key, "2")
    assert kernel.get_sysctl(key) == "2"
    kernel.set_sysctl("net.ipv4.conf.all.forwarding", "1")
    assert kernel.get_sysctl("net.ipv4.conf.all.forwarding") == "1"
    assert in_ns(kernel.netns or "", "cat", "/proc/sys/net/ipv4/conf/vx-submariner/rp_filter").strip() == "2"
    assert not Path("/proc/sys/net/ipv4/conf/vx-submariner").exists()  # the root namespace has no such device
    assert kernel.get_sysctl("net.ipv4.conf.nope.rp_filter") is None


def test_fake_records_only_changes() -> None:
    fake = FakeNetlink()
    fake.add_link("eth0", 1500, [f"{NODE_IP}/24"])
    spec = Vxlan("vx-submariner", 100, 4800, mtu=1450)
    fake.ensure_vxlan(spec)
    fake.ensure_fdb(Fdb("vx-submariner", "192.168.1.7"))
    fake.set_sysctl("net.ipv4.conf.vx-submariner.rp_filter", "2")
    fake.replace_route(Route("10.9.0.0/16", gateway="240.168.1.7", oif="vx-submariner", proto_static=True))
    assert len(fake.calls) == 4
    fake.calls.clear()
    fake.ensure_vxlan(spec)
    fake.ensure_fdb(Fdb("vx-submariner", "192.168.1.7"))
    fake.set_sysctl("net.ipv4.conf.vx-submariner.rp_filter", "2")
    fake.replace_route(Route("10.9.0.0/16", gateway="240.168.1.7", oif="vx-submariner", proto_static=True))
    assert fake.calls == []
    with pytest.raises(NetlinkSeamError):
        fake.replace_route(Route("10.9.0.0/16", oif="nope"))
