"""Lease election with a fake clock (§2.11): takeover after expiry, renewals, release, step-down."""

from __future__ import annotations

import threading
import time

import pytest
from gwtest import Clock

from submariner.broker.kube import LEASES
from submariner.broker.kube.fake import FakeCluster
from submariner.gateway.election import LeaderElector

NS = "submariner-operator"


def elector(cluster: FakeCluster, who: str, clock: Clock, events: list[str]) -> LeaderElector:
    return LeaderElector(cluster.resource(LEASES), NS, "submariner-gateway-lock", f"{who}-submariner-gateway",
                         lease_duration=15, renew_deadline=10, retry_period=2, clock=clock,
                         wall_clock=lambda: 1_700_000_000 + clock.now,
                         on_started_leading=lambda: events.append(f"{who}+"),
                         on_stopped_leading=lambda: events.append(f"{who}-"))


def holder(cluster: FakeCluster) -> str:
    return str(cluster.resource(LEASES).get(NS, "submariner-gateway-lock")["spec"]["holderIdentity"])


def test_first_candidate_wins_other_waits_for_expiry() -> None:
    cluster, clock, events = FakeCluster(), Clock(), []
    a, b = elector(cluster, "a", clock, events), elector(cluster, "b", clock, events)
    a.step()
    b.step()
    assert events == ["a+"] and holder(cluster) == "a-submariner-gateway"
    lease = cluster.resource(LEASES).get(NS, "submariner-gateway-lock")["spec"]
    assert lease["leaseDurationSeconds"] == 15 and lease["renewTime"].endswith("Z")
    # a renews every retry period; b never takes over
    for _ in range(20):
        clock.advance(2)
        a.step()
        b.step()
    assert events == ["a+"]
    # a crashes (stops renewing): b takes over once 15 s passed on *its* clock since it saw the last renewal
    clock.advance(14)
    b.step()
    assert events == ["a+"]
    clock.advance(2)
    b.step()
    assert events == ["a+", "b+"] and holder(cluster) == "b-submariner-gateway"
    assert cluster.resource(LEASES).get(NS, "submariner-gateway-lock")["spec"]["leaseTransitions"] == 1
    # a comes back (it was paused, not dead): its renewal fails and it is past the renew deadline
    a.step()
    assert events == ["a+", "b+", "a-"] and not a.leading and holder(cluster) == "b-submariner-gateway"


def test_release_lets_the_other_take_over_at_once() -> None:
    cluster, clock, events = FakeCluster(), Clock(), []
    a, b = elector(cluster, "a", clock, events), elector(cluster, "b", clock, events)
    a.step()
    b.step()
    a.stop(release=True)
    assert events == ["a+", "a-"] and holder(cluster) == ""
    b.step()
    assert events == ["a+", "a-", "b+"]
    # a lease released by someone else is not ours to release
    assert not a.release()


def test_api_outage_steps_down_after_renew_deadline() -> None:
    cluster, clock, events = FakeCluster(), Clock(), []
    a = elector(cluster, "a", clock, events)
    a.step()
    cluster.set_unavailable(True)
    clock.advance(9)
    a.step()
    assert a.leading
    clock.advance(2)
    a.step()
    assert events == ["a+", "a-"]
    cluster.set_unavailable(False)
    a.step()
    assert events == ["a+", "a-", "a+"]


class RacingClient:
    """Lets another candidate write between our read and our write (a real race, made deterministic)."""

    def __init__(self, inner: object, before_update: object) -> None:
        self.inner = inner
        self.before_update = before_update
        self.resource = inner.resource  # type: ignore[attr-defined]

    def get(self, ns: str, name: str) -> dict:  # type: ignore[type-arg]
        return self.inner.get(ns, name)  # type: ignore[attr-defined, no-any-return]

    def update(self, obj: dict) -> dict:  # type: ignore[type-arg]
        self.before_update()  # type: ignore[operator]
        return self.inner.update(obj)  # type: ignore[attr-defined, no-any-return]

    def create(self, obj: dict) -> dict:  # type: ignore[type-arg]
        return self.inner.create(obj)  # type: ignore[attr-defined, no-any-return]


def test_conflicting_writers_never_both_win() -> None:
    cluster, clock = FakeCluster(), Clock()
    events: list[str] = []
    first = elector(cluster, "first", clock, events)
    first.step()
    a, b = elector(cluster, "a", clock, events), elector(cluster, "b", clock, events)
    a.step()
    b.step()  # both observe first's lease
    clock.advance(16)  # expired for both; b writes between a's read and a's write
    a.client = RacingClient(cluster.resource(LEASES), b.step)  # type: ignore[assignment]
    a.step()
    assert events == ["first+", "b+"]
    assert holder(cluster) == "b-submariner-gateway" and not a.leading


def test_poke_cuts_the_retry_wait() -> None:
    cluster, events = FakeCluster(), []
    real = Clock()
    real.now = time.monotonic()
    a = LeaderElector(cluster.resource(LEASES), NS, "lock", "a", lease_duration=30, renew_deadline=20, retry_period=10,
                      on_started_leading=lambda: events.append("a+"))
    b = LeaderElector(cluster.resource(LEASES), NS, "lock", "b", lease_duration=30, renew_deadline=20, retry_period=10,
                      on_started_leading=lambda: events.append("b+"))
    a.step()
    b.start()
    try:
        time.sleep(0.1)
        a.stop(release=True)
        started = time.monotonic()
        b.poke()
        while "b+" not in events and time.monotonic() - started < 3:
            time.sleep(0.01)
        assert "b+" in events and time.monotonic() - started < 1.0
    finally:
        b.stop(release=False)
    assert threading.active_count() >= 1


def test_candidate_times_its_next_attempt_to_the_lease_expiry() -> None:
    cluster, clock, events = FakeCluster(), Clock(), []
    a, b = elector(cluster, "a", clock, events), elector(cluster, "b", clock, events)
    a.step()
    assert a.next_wait() == 2  # the leader renews every retry period
    b.step()
    assert b.next_wait() == 2  # 15 s left: a full retry period
    clock.advance(14.5)
    assert b.next_wait() == pytest.approx(0.51)
    # a watch event of a's renewal restarts the countdown from now
    a.step()
    b.observe(cluster.resource(LEASES).get(NS, "submariner-gateway-lock"))
    assert b.next_wait() == 2
    # a released lease: poked, and the next attempt wins
    a.stop(release=True)
    b.observe(cluster.resource(LEASES).get(NS, "submariner-gateway-lock"))
    assert b._poke.is_set()
    b.step()
    assert events[-1] == "b+"
