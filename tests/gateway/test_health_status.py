"""Pinger logic and statistics, Go durations, the Gateway CR syncer and its health merge (§2.10)."""

from __future__ import annotations

import time
from typing import Any

from gwtest import spec

from submariner.broker.api.submariner import GATEWAYS
from submariner.broker.kube.fake import FakeCluster
from submariner.gateway.cable.driver import connection
from submariner.gateway.gatewaystatus import GatewayStatusSyncer, merge_health
from submariner.gateway.healthcheck import CONNECTED, ERROR, UNKNOWN, HealthChecker, Pinger, Statistics, go_duration

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

    p = Pinger("10.2.0.1", interval=0.01, max_loss=3, prober_factory=factory)
    import submariner.gateway.healthcheck as hc

    old = hc.RESTART_AFTER
    hc.RESTART_AFTER = 0.05
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
        hc.RESTART_AFTER = old


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
    import submariner.gateway.healthcheck as hc

    old = hc.RESTART_AFTER
    hc.RESTART_AFTER = 30.0  # a restart would make this test time out
    p = Pinger("10.2.0.1", interval=0.01, max_loss=5, prober_factory=lambda ip: UnroutableFirst())
    try:
        p.start()
        deadline = time.monotonic() + 3
        while p.status != CONNECTED and time.monotonic() < deadline:
            time.sleep(0.005)
        assert p.status == CONNECTED
    finally:
        p.stop(wait=True)
        hc.RESTART_AFTER = old
