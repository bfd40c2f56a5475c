"""Pinger logic and statistics, Go durations, the Gateway CR syncer and its health merge (§2.10)."""

from __future__ import annotations

import time
from typing import Any

from gwtest import spec

from submariner.broker.api.submariner import GATEWAYS
from submariner.broker.kube.fake import FakeCluster
from submariner.dataplane.healthcheck import CONNECTED, ERROR, UNKNOWN, HealthChecker, Pinger, Statistics, go_duration
from submariner.gateway.cable.driver import connection
from submariner.gateway.gatewaystatus import GatewayStatusSyncer, merge_health

NS = "submariner-operator"


def test_go_duration_strings() -> None:
    assert go_duration(0.001234567) == "1.234567ms"
    assert go_duration(0.0015) == "1.5ms"
    assert go_duration(0.000000850) == "850ns"
    assert go_duration(0.0000125) == "12.5µs"
    assert go_duration(2.5) == "2.5s"
    assert go_duration(90) == "1m30s"
    assert go_duration(3600) == "1h0m0s"
    assert go_duration(0) == "0s"


def test_statistics_window_keeps_last_two() -> None:
    st = Statistics()
    for v in (0.001, 0.003):
        st.update(v)
    lat = st.latency()
    assert lat == {"last": "3ms", "min": "1ms", "average": "2ms", "max": "3ms", "stdDev": "1ms"}
    st = Statistics()
    for i in range(1000):
        st.update(0.010 if i < 998 else 0.002)
    st.update(0.004)
    assert st.samples == [0.002, 0.002, 0.004]


def test_pinger_loss_threshold_and_recovery() -> None:
    p = Pinger("10.2.0.1", max_loss=2)
    assert p.status == UNKNOWN
    assert p.on_send() and p.on_send()
    assert not p.on_send()  # 3 sent, 0 received > 2
    assert p.status == ERROR and p.message == 'Failed to successfully ping the remote endpoint IP "10.2.0.1"'
    p.on_reply(0.002)
    assert (p.status, p.sent, p.received) == (CONNECTED, 0, 0)


class ScriptedProber:
    """Replies to every echo whose sequence is in `answer` (all if None)."""

    def __init__(self, answer: set[int] | None = None) -> None:
        self.answer = answer
        self.pending: list[int] = []
        self.closed = False

    def send(self, seq: int) -> None:
        if self.answer is None or seq in self.answer:
            self.pending.append(seq)

    def receive(self, timeout: float) -> int | None:
        if self.pending:
            return self.pending.pop(0)
        time.sleep(min(timeout, 0.005))
        return None

    def close(self) -> None:
        self.closed = True


def test_pinger_loop_with_scripted_prober() -> None:
    probers: list[ScriptedProber] = []

    def factory(ip: str) -> ScriptedProber:
        probers.append(ScriptedProber(answer=set() if len(probers) == 0 else None))
        return probers[-1]

    p = Pinger("10.2.0.1", interval=0.01, max_loss=3, prober_factory=factory, restart_after=0.05)
    try:
        p.start()
        deadline = time.monotonic() + 5
        seen = set()
        while time.monotonic() < deadline and not (ERROR in seen and p.status == CONNECTED):
            seen.add(p.status)
            time.sleep(0.005)
        assert ERROR in seen and p.status == CONNECTED
        assert probers[0].closed and len(probers) >= 2
        assert p.stats.latency() is not None
    finally:
        p.stop(wait=True)


class FakePinger:
    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.status = UNKNOWN
        self.message = ""
        self.stats = Statistics()
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


def test_health_checker_restarts_on_ip_change_and_merge_rules() -> None:
    made: list[FakePinger] = []
    hc = HealthChecker("east", pinger_factory=lambda ip: made.append(FakePinger(ip)) or made[-1])  # type: ignore[arg-type, return-value, func-returns-value]
    west = spec("west", "192.168.2.20", health_ip="10.2.0.1")
    hc.endpoint_updated(spec("east", "192.168.1.10", health_ip="10.1.0.1"))  # local: ignored
    hc.endpoint_updated(west)
    hc.endpoint_updated(west)
    assert [p.ip for p in made] == ["10.2.0.1"]
    hc.endpoint_updated(dict(west, healthCheckIP="10.2.0.9"))
    assert made[0].stopped and [p.ip for p in made] == ["10.2.0.1", "10.2.0.9"]
    west = dict(west, healthCheckIP="10.2.0.9")
    pinger = made[-1]

    def merged(driver_status: str) -> dict[str, Any]:
        [c] = merge_health([connection(west, driver_status, "drv")], hc)  # type: ignore[arg-type]
        return dict(c)

    assert merged("connected")["status"] == "connected"  # unknown pinger keeps the driver's word
    pinger.status, pinger.message = ERROR, 'Failed to successfully ping the remote endpoint IP "10.2.0.9"'
    c = merged("connected")
    assert (c["status"], c["statusMessage"]) == ("error", pinger.message)
    pinger.status = CONNECTED
    pinger.stats.update(0.0015)
    c = merged("error")
    assert c["status"] == "connected" and c["latencyRTT"]["last"] == "1.5ms"
    hc.endpoint_removed(west)  # type: ignore[arg-type]
    assert pinger.stopped


class Wall:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_gateway_syncer_writes_status_preserves_annotations_and_deletes_stale() -> None:
    cluster = FakeCluster(no_status_subresource=frozenset({"gateways"}))
    wall = Wall()
    local = spec("east", "192.168.1.10")
    remote = spec("west", "192.168.2.20")
    ha = ["passive"]
    syncer = GatewayStatusSyncer(cluster, NS, "East-GW", local_endpoint=lambda: local, ha_status=lambda: ha[0],  # type: ignore[arg-type, return-value]
                                 connections=lambda: [connection(remote, "connected", "", using_ip="192.168.2.20")],  # type: ignore[arg-type]
                                 wall_clock=wall)
    gw = syncer.sync()
    assert gw["metadata"]["name"] == "east-gw"
    assert gw["status"]["haStatus"] == "passive" and gw["status"]["localEndpoint"]["cluster_id"] == "east"
    assert gw["metadata"]["annotations"]["update-timestamp"] == "1700000000"
    # what lighthouse-dns reads: active + connections[].endpoint.cluster_id + status
    from submariner.lighthouse.dns.lighthouse_model import Connectivity

    conn = Connectivity("east")
    conn.apply("add", gw)
    assert not conn.is_connected("west")
    client = cluster.resource(GATEWAYS)
    client.patch(NS, "east-gw", {"metadata": {"annotations": {"submariner.io/globalIp": "242.1.255.254"}}})
    client.create({"metadata": {"name": "old-gw", "namespace": NS, "annotations": {"update-timestamp": "1699999980"}},
                   "status": {}})
    client.create({"metadata": {"name": "fresh-gw", "namespace": NS,
                                "annotations": {"update-timestamp": "1699999995"}}, "status": {}})
    client.create({"metadata": {"name": "junk-gw", "namespace": NS, "annotations": {"update-timestamp": "x"}},
                   "status": {}})
    ha[0] = "active"
    wall.now += 5
    gw = syncer.sync()
    assert gw["metadata"]["annotations"] == {"update-timestamp": "1700000005",
                                             "submariner.io/globalIp": "242.1.255.254"}
    assert gw["status"]["connections"][0]["status"] == "connected"
    conn.apply("update", gw)
    assert conn.is_connected("west")
    names = sorted(o["metadata"]["name"] for o in cluster.objects(GATEWAYS))
    assert names == ["east-gw", "fresh-gw"]
    syncer.delete_own()
    assert [o["metadata"]["name"] for o in cluster.objects(GATEWAYS)] == ["fresh-gw"]


def test_gateway_syncer_with_status_subresource_and_driver_failure() -> None:
    cluster = FakeCluster()  # gateways get a status subresource here: status goes through /status

    def broken() -> list[Any]:
        raise RuntimeError("whack: connect() failed")

    syncer = GatewayStatusSyncer(cluster, NS, "gw1", local_endpoint=lambda: spec("east", "192.168.1.10"),  # type: ignore[arg-type, return-value]
                                 ha_status=lambda: "active", connections=broken)
    gw = syncer.sync()
    assert gw["status"]["statusFailure"] == "Error retrieving driver connections: whack: connect() failed"
    assert gw["status"]["connections"] == []
    assert cluster.resource(GATEWAYS).get(NS, "gw1")["status"]["haStatus"] == "active"


def test_gateway_syncer_redoes_a_write_that_lost_a_race_with_globalnet() -> None:
    cluster = FakeCluster(no_status_subresource=frozenset({"gateways"}))
    syncer = GatewayStatusSyncer(cluster, NS, "gw1", local_endpoint=lambda: spec("east", "192.168.1.10"),  # type: ignore[arg-type, return-value]
                                 ha_status=lambda: "active", connections=lambda: [])
    syncer.sync()
    client = cluster.resource(GATEWAYS)
    real_get = syncer.client.get

    def get_then_race(ns: str, name: str) -> dict[str, Any]:
        obj = real_get(ns, name)
        if not getattr(get_then_race, "done", False):
            get_then_race.done = True  # type: ignore[attr-defined]
            client.patch(NS, "gw1", {"metadata": {"annotations": {"submariner.io/globalIp": "242.1.255.254"}}})
        return obj

    syncer.client.get = get_then_race  # type: ignore[method-assign]
    gw = syncer.sync()
    assert gw["metadata"]["annotations"]["submariner.io/globalIp"] == "242.1.255.254"


class UnroutableFirst(ScriptedProber):
    """sendto fails (no route yet) for the first echoes, as while the cable is being built."""

    def send(self, seq: int) -> None:
        if seq <= 2:
            raise OSError(101, "Network is unreachable")
        super().send(seq)


def test_pinger_keeps_going_when_the_route_is_not_there_yet() -> None:
    p = Pinger("10.2.0.1", interval=0.01, max_loss=5, prober_factory=lambda ip: UnroutableFirst(),
               restart_after=30.0)  # a restart would make this test time out
    try:
        p.start()
        deadline = time.monotonic() + 3
        while p.status != CONNECTED and time.monotonic() < deadline:
            time.sleep(0.005)
        assert p.status == CONNECTED
    finally:
        p.stop(wait=True)


class ClockedProber:
    """A prober on a fake clock: `receive` lets the clock run to its timeout unless a reply is due; echoes
    sent before `up_at` are lost, later ones answered after `rtt`. Stops the pinger after `until`."""

    def __init__(self, clock: Any, pinger: list[Pinger], *, up_at: float, rtt: float = 0.002,
                 until: float = 200.0, down_at: float = float("inf")) -> None:
        self.clock, self.pinger, self.up_at, self.rtt, self.until, self.down_at = clock, pinger, up_at, rtt, until, \
            down_at
        self.sent: list[tuple[float, int]] = []
        self.due: list[tuple[float, int]] = []

    def send(self, seq: int) -> None:
        now = self.clock()
        self.sent.append((now, seq))
        if self.up_at <= now < self.down_at:
            self.due.append((now + self.rtt, seq))
        if now >= self.until:
            self.pinger[0].stop()

    def receive(self, timeout: float) -> int | None:
        if self.due and self.due[0][0] <= self.clock() + timeout:
            at, seq = self.due.pop(0)
            self.clock.now = max(self.clock.now, at)
            return seq
        self.clock.advance(timeout)
        return None

    def close(self) -> None:
        pass


def run_clocked(start: float, **kw: Any) -> tuple[Pinger, ClockedProber, list[tuple[float, str]]]:
    from gwtest import Clock

    clock = Clock(start)
    holder: list[Pinger] = []
    prober = ClockedProber(clock, holder, **kw)
    changes: list[tuple[float, str]] = []
    p = Pinger("10.9.1.1", interval=60, max_loss=5, prober_factory=lambda ip: prober, clock=clock, restart_after=0,
               on_change=lambda: changes.append((clock.now - start, p.status)))
    holder.append(p)
    p._run()  # in this thread; the prober stops it
    return p, prober, changes


def test_unconfirmed_path_repeats_the_echo_within_the_interval_and_counts_intervals_only() -> None:
    """The route agent pings every 60 s: an echo lost while the cable was being built is repeated after 1, 2,
    4, 8 … s, so the first verdict comes seconds after the path works, not a minute later; once connected,
    one echo per interval."""
    p, prober, changes = run_clocked(1000.0, up_at=1005.0, until=1000.0 + 120)
    offsets = [round(t - 1000.0, 3) for t, _ in prober.sent]
    assert offsets == [0, 1, 2, 4, 8, 60, 120]
    assert [(round(t, 3), st) for t, st in changes] == [(8.002, "connected")]
    assert p.status == "connected" and p.stats.latency() is not None


def test_dead_path_still_errors_after_max_loss_intervals_with_repeats_bounded() -> None:
    p, prober, changes = run_clocked(1000.0, up_at=float("inf"), until=1000.0 + 300)
    assert changes == [(300.0, "error")]  # 6th counted send: 6 sent - 0 received > 5
    per_interval = [sum(1 for t, _ in prober.sent if k * 60 <= t - 1000.0 < (k + 1) * 60) for k in range(5)]
    assert per_interval == [7] * 5  # 1 counted + repeats at 1, 2, 4, 8, 16, 32 s
    assert p.status == "error"


def test_verdict_changes_are_pushed_once_per_change() -> None:
    p, _, changes = run_clocked(1000.0, up_at=1000.0, down_at=1000.0 + 100, until=1000.0 + 600)
    assert [s for _, s in changes] == ["connected", "error"]
    assert changes[1][0] == 420.0  # last reply to the echo at 60 s; sends at 120..420 unanswered: 6th > 5
    assert p.status == "error"


def test_a_verdict_change_writes_the_gateway_cr_at_once() -> None:
    """Dead-cluster detection must not wait for the next periodic sync (60 s here): the pinger's verdict
    change wakes the syncer."""
    cluster = FakeCluster(no_status_subresource=frozenset({"gateways"}))
    prober = ScriptedProber()  # answers every echo until told otherwise
    west = spec("west", "192.168.2.20", health_ip="10.2.0.1")
    syncer = GatewayStatusSyncer(cluster, NS, "gw1", local_endpoint=lambda: spec("east", "192.168.1.10"),  # type: ignore[arg-type, return-value]
                                 ha_status=lambda: "active",
                                 connections=lambda: [connection(west, "connected", "", using_ip="192.168.2.20")],  # type: ignore[arg-type]
                                 interval=60.0)
    hc = HealthChecker("east", interval=0.05, max_loss=2, prober_factory=lambda ip: prober,
                       on_change=syncer.sync_soon)
    syncer.health = hc
    client = cluster.resource(GATEWAYS)

    def shown() -> tuple[str, bool]:
        try:
            [conn] = client.get(NS, "gw1")["status"]["connections"]
        except Exception:
            return ("", False)
        return (str(conn["status"]), "latencyRTT" in conn)

    syncer.start()
    try:
        hc.endpoint_updated(west)  # type: ignore[arg-type]
        deadline = time.monotonic() + 3
        while shown() != ("connected", True) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert shown() == ("connected", True)
        prober.answer = set()  # the remote gateway drops off the network
        lost_at = time.monotonic()
        while shown()[0] != "error" and time.monotonic() < lost_at + 3:
            time.sleep(0.01)
        took = time.monotonic() - lost_at
        assert shown()[0] == "error"
        assert took < 1.0, f"Gateway CR showed the error after {took:.2f} s"  # 2 lost echoes at 50 ms + a write
    finally:
        hc.stop()
        syncer.stop()
