"""The cable engine (§2.4): local/equal endpoints ignored, per-cluster replacement, removal, HA status."""

from __future__ import annotations

from typing import Any

import pytest
from gwtest import RecordingDriver, endpoint, spec
from hypothesis import given, settings
from hypothesis import strategies as st

from submariner.gateway.cable.driver import NATEndpointInfo
from submariner.gateway.engine import CableEngine, specs_equal

LOCAL = spec("east", "192.168.1.10", subnets=["10.1.0.0/16"])


class ManualDiscovery:
    def __init__(self) -> None:
        self.added: list[str] = []
        self.removed: list[str] = []

    def add_endpoint(self, ep: dict[str, Any]) -> None:
        self.added.append(ep["spec"]["cable_name"])

    def remove_endpoint(self, name: str) -> None:
        self.removed.append(name)


def make(running: bool = True) -> tuple[CableEngine, RecordingDriver, ManualDiscovery]:
    driver = RecordingDriver()
    disc = ManualDiscovery()
    engine = CableEngine(LOCAL, driver, disc)  # type: ignore[arg-type]
    if running:
        engine.start()
    return engine, driver, disc


def ready(ep: dict[str, Any], ip: str | None = None, nat: bool = False) -> NATEndpointInfo:
    return NATEndpointInfo(ep, ip or ep["spec"]["private_ip"], nat)


def test_local_cluster_and_equal_endpoints_are_ignored() -> None:
    engine, _driver, disc = make()
    engine.install_cable(endpoint(spec("east", "192.168.1.11")))
    engine.install_cable(endpoint(dict(LOCAL)))
    assert disc.added == []


def test_connect_only_after_discovery_and_replacement_by_newer_endpoint() -> None:
    engine, driver, disc = make()
    old = endpoint(spec("west", "192.168.2.20"), created="2026-01-01T00:00:00Z")
    engine.install_cable(old)
    assert disc.added == [old["spec"]["cable_name"]]
    assert ("connect", old["spec"]["cable_name"]) not in driver.calls
    engine.on_ready(ready(old))
    assert driver.calls[-1] == ("connect", old["spec"]["cable_name"])
    # identical verdict again: no-op
    engine.install_cable(old)
    engine.on_ready(ready(old))
    assert driver.calls.count(("connect", old["spec"]["cable_name"])) == 1
    # a newer endpoint of the same cluster replaces the old cable
    new = endpoint(spec("west", "192.168.2.21"), created="2026-01-02T00:00:00Z")
    engine.install_cable(new)
    engine.on_ready(ready(new))
    assert driver.calls[-2:] == [("disconnect", old["spec"]["cable_name"]), ("connect", new["spec"]["cable_name"])]
    # an older one is ignored
    older = endpoint(spec("west", "192.168.2.22"), created="2025-12-01T00:00:00Z")
    engine.install_cable(older)
    engine.on_ready(ready(older))
    assert list(engine.installed()) == [new["spec"]["cable_name"]]
    # another cluster's cable is untouched
    south = endpoint(spec("south", "192.168.3.30"))
    engine.install_cable(south)
    engine.on_ready(ready(south))
    assert sorted(engine.installed()) == sorted([new["spec"]["cable_name"], south["spec"]["cable_name"]])


def test_changed_nat_verdict_reconnects() -> None:
    engine, driver, _ = make()
    ep = endpoint(spec("west", "192.168.2.20", public_ip="203.0.113.1"))
    engine.install_cable(ep)
    engine.on_ready(ready(ep, "203.0.113.1", True))
    engine.on_ready(ready(ep, "192.168.2.20", False))  # the late private answer (second ready event)
    assert engine.installed()[ep["spec"]["cable_name"]].use_ip == "192.168.2.20"
    assert [c for c, _ in driver.calls].count("connect") == 2


def test_removed_before_discovery_never_connects_and_remove_disconnects() -> None:
    engine, driver, disc = make()
    ep = endpoint(spec("west", "192.168.2.20"))
    engine.install_cable(ep)
    engine.remove_cable(ep)
    engine.on_ready(ready(ep))
    assert all(c != "connect" for c, _ in driver.calls)
    assert disc.removed == [ep["spec"]["cable_name"]]
    engine.install_cable(ep)
    engine.on_ready(ready(ep))
    engine.remove_cable(ep)
    assert driver.calls[-1] == ("disconnect", ep["spec"]["cable_name"])


def test_ha_status_and_connections_follow_running_state() -> None:
    engine, driver, _ = make(running=False)
    assert engine.ha_status() == "passive"
    assert engine.list_connections() == []
    ep = endpoint(spec("west", "192.168.2.20"))
    engine.install_cable(ep)
    engine.on_ready(ready(ep))  # not running: nothing happens
    assert driver.conns == {}
    engine.start()
    assert engine.ha_status() == "active"
    engine.install_cable(ep)
    engine.on_ready(ready(ep))
    assert [c["status"] for c in engine.list_connections()] == ["connected"]
    engine.stop()
    assert engine.ha_status() == "passive"
    assert engine.list_connections() == []


def test_driver_init_failure_is_start_failure() -> None:
    engine = CableEngine(LOCAL, RecordingDriver(fail_init=True))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        engine.start()
    assert engine.ha_status() == "passive"


def test_specs_equal_ignores_backend_config_behind_load_balancers() -> None:
    a = spec("west", "192.168.2.20", **{"using-loadbalancer": "true"})
    b = dict(a, backend_config={**a["backend_config"], "udp-port": "4501"})
    assert specs_equal(a, b)  # type: ignore[arg-type]
    b["backend_config"].pop("using-loadbalancer")
    assert not specs_equal(a, b)  # type: ignore[arg-type]
    assert not specs_equal(a, dict(a, hostname="other"))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- properties


EVENTS = st.lists(st.tuples(st.sampled_from(["install", "ready", "remove"]), st.sampled_from(["west", "south"]),
                            st.integers(20, 23), st.integers(1, 4)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_engine_invariants_under_any_event_order(events: list[tuple[str, str, int, int]]) -> None:
    """Whatever the order: at most one cable per remote cluster, the driver holds exactly the engine's
    cables, nothing removed stays installed, and an installed cable is never older than one a verdict
    arrived for later while it was installed."""
    engine, driver, _ = make()
    removed: set[str] = set()
    for op, cluster, last_octet, day in events:
        ep = endpoint(spec(cluster, f"192.168.2.{last_octet}"), created=f"2026-01-0{day}T00:00:00Z")
        name = ep["spec"]["cable_name"]
        if op == "install":
            removed.discard(name)
            engine.install_cable(ep)
        elif op == "ready":
            engine.on_ready(ready(ep))
        else:
            removed.add(name)
            engine.remove_cable(ep)
        installed = engine.installed()
        clusters = [i.spec["cluster_id"] for i in installed.values()]
        assert len(clusters) == len(set(clusters))
        assert set(driver.conns) == set(installed)
        assert not (set(installed) & removed)


def test_endpoint_updated_in_place_with_another_backend_rebuilds_the_cable() -> None:
    """A remote gateway re-joined with another driver keeps its Endpoint's name and creationTimestamp (and
    here its backend_config): the cable is rebuilt and the connection shows the new Endpoint."""
    engine, driver, _ = make()
    old = endpoint(spec("west", "192.168.2.20", backend="libreswan"))
    name = old["spec"]["cable_name"]
    engine.install_cable(old)
    engine.on_ready(ready(old))
    assert [c["endpoint"]["backend"] for c in engine.list_connections()] == ["libreswan"]
    new = endpoint(spec("west", "192.168.2.20", backend="vxlan"))
    engine.install_cable(new)
    engine.on_ready(ready(new))
    assert driver.calls[-2:] == [("disconnect", name), ("connect", name)]
    assert [c["endpoint"]["backend"] for c in engine.list_connections()] == ["vxlan"]
    assert engine.installed()[name].spec["backend"] == "vxlan"
    # and a changed subnet list too
    wider = endpoint(spec("west", "192.168.2.20", backend="vxlan", subnets=["10.99.0.0/16", "10.98.0.0/16"]))
    engine.install_cable(wider)
    engine.on_ready(ready(wider))
    assert driver.calls[-2:] == [("disconnect", name), ("connect", name)]
    assert driver.conns[name].spec["subnets"] == ["10.99.0.0/16", "10.98.0.0/16"]


def test_health_check_ip_change_keeps_the_cable_and_shows_the_new_endpoint() -> None:
    engine, driver, _ = make()
    changes: list[int] = []
    engine.on_change = lambda: changes.append(1)
    ep = endpoint(spec("west", "192.168.2.20", health_ip="10.99.0.1"))
    engine.install_cable(ep)
    engine.on_ready(ready(ep))
    calls, seen = len(driver.calls), len(changes)
    moved = endpoint(spec("west", "192.168.2.20", health_ip="242.0.255.254"))  # Globalnet's IP arrived
    engine.install_cable(moved)
    engine.on_ready(ready(moved))
    assert len(driver.calls) == calls  # no tunnel rebuild
    assert len(changes) == seen + 1  # but the Gateway CR is refreshed
    [conn] = engine.list_connections()
    assert conn["endpoint"]["healthCheckIP"] == "242.0.255.254"
    engine.install_cable(moved)
    engine.on_ready(ready(moved))
    assert (len(driver.calls), len(changes)) == (calls, seen + 1)  # identical again: nothing at all
