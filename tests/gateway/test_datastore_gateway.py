"""Datastore sync through the broker, and a whole Gateway process on fakes (roles, failover, uninstall)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gwtest import RecordingDriver, endpoint, spec

from submariner.broker.api.submariner import CLUSTERS, ENDPOINTS, GATEWAYS
from submariner.broker.kube import LEASES, KubeError
from submariner.broker.kube.fake import FakeCluster
from submariner.dataplane.netlink import FakeNetlink
from submariner.gateway.cable.driver import register
from submariner.gateway.config import GatewayConfig
from submariner.gateway.datastore import DatastoreSyncer, cluster_object
from submariner.gateway.gateway import NODES, PODS, Gateway

NS = "submariner-operator"
BROKER_NS = "submariner-k8s-broker"


def wait(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except KubeError:
            value = None
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def names(cluster: FakeCluster, res: Any, ns: str) -> list[str]:
    return sorted(o["metadata"]["name"] for o in cluster.objects(res) if o["metadata"].get("namespace") == ns)


def test_datastore_publishes_ours_imports_theirs_and_drops_stale_local_endpoints() -> None:
    local, broker = FakeCluster("east"), FakeCluster("broker")
    ours = spec("east", "192.168.1.10")
    stale = endpoint(spec("east", "192.168.1.99"), namespace=NS)  # an earlier gateway's Endpoint
    local.resource(ENDPOINTS).create(stale)
    west = endpoint(spec("west", "192.168.2.20"), namespace=BROKER_NS)
    west["metadata"]["labels"] = {"submariner-io/clusterID": "west"}
    broker.resource(ENDPOINTS).create(west)
    west_cluster = cluster_object("west", BROKER_NS, cluster_cidrs=["10.2.0.0/16"], service_cidrs=[], global_cidrs=[])
    west_cluster["metadata"]["labels"] = {"submariner-io/clusterID": "west"}
    broker.resource(CLUSTERS).create(west_cluster)
    ds = DatastoreSyncer(local, broker, namespace=NS, broker_namespace=BROKER_NS, cluster_id="east",
                         cluster=cluster_object("east", NS, cluster_cidrs=["10.1.0.0/16"],
                                                service_cidrs=["10.96.0.0/16"], global_cidrs=[]),
                         endpoint=ours)  # type: ignore[arg-type]
    ds.start(10)
    try:
        mine = "east-submariner-cable-east-192-168-1-10"
        both = sorted([mine, west["metadata"]["name"]])
        wait("our endpoint on the broker", lambda: names(broker, ENDPOINTS, BROKER_NS) == both)
        wait("their endpoint locally", lambda: names(local, ENDPOINTS, NS) == both)
        wait("clusters", lambda: names(broker, CLUSTERS, BROKER_NS) == ["east", "west"]
             and names(local, CLUSTERS, NS) == ["east", "west"])
        exported = broker.resource(CLUSTERS).get(BROKER_NS, "east")
        assert exported["spec"]["global_cidr"] == []
        assert exported["metadata"]["labels"]["submariner-io/clusterID"] == "east"
        # publishing again writes nothing
        before = len(local.writes)
        ds.publish()
        assert len(local.writes) == before
        ds.withdraw()
        wait("withdrawn from the broker", lambda: names(broker, ENDPOINTS, BROKER_NS) == [west["metadata"]["name"]])
    finally:
        ds.stop()


class Recorder(RecordingDriver):
    instances: list[RecordingDriver] = []


def _recording_factory(ctx: Any) -> RecordingDriver:
    d = Recorder()
    Recorder.instances.append(d)
    return d


register("recording", _recording_factory)


def gateway(local: FakeCluster, broker: FakeCluster, node: str, ip: str, **env: str) -> Gateway:
    nl = FakeNetlink()
    nl.add_link("eth0", addresses=[f"{ip}/24"])
    nl.add_link("cni0", addresses=["10.1.0.1/32"])
    created = local.resource(NODES).create({"metadata": {"name": node}})
    local.resource(NODES).update_status({**created, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
    local.resource(PODS).create({"metadata": {"name": f"gw-{node}", "namespace": NS}, "spec": {}})
    cfg = GatewayConfig.from_env({"SUBMARINER_CLUSTERID": "east", "NODE_NAME": node, "POD_NAME": f"gw-{node}",
                                  "SUBMARINER_CLUSTERCIDR": "10.1.0.0/16", "SUBMARINER_SERVICECIDR": "10.96.0.0/16",
                                  "SUBMARINER_CABLEDRIVER": "recording", "SUBMARINER_NATTDISCOVERYPORT": "0",
                                  "SUBMARINER_HEALTHCHECKENABLED": "false", "SUBMARINER_GATEWAYSTATUSINTERVAL": "0.2",
                                  "LEADERSHIP_LEASEDURATION": "3", "LEADERSHIP_RENEWDEADLINE": "2",
                                  "LEADERSHIP_RETRYPERIOD": "0.5", **env})
    cfg.broker_namespace = BROKER_NS
    return Gateway(cfg, local, broker, nl)


def test_two_gateways_active_passive_failover_on_stop() -> None:
    local = FakeCluster("east", no_status_subresource=frozenset({"gateways", "configmaps", "secrets"}))
    broker = FakeCluster("broker")
    west = endpoint(spec("west", "192.168.2.20", **{"natt-discovery-port": "0"}), namespace=BROKER_NS)
    west["metadata"]["labels"] = {"submariner-io/clusterID": "west"}
    broker.resource(ENDPOINTS).create(west)
    a = gateway(local, broker, "node-a", "192.168.1.10")
    b = gateway(local, broker, "node-b", "192.168.1.11")
    a.start()
    wait("a active", lambda: a.active)
    b.start()
    try:
        pods = local.resource(PODS)

        def role(pod: str) -> str:
            return str(pods.get(NS, pod)["metadata"]["labels"]["gateway.submariner.io/status"])

        wait("pod labels", lambda: role("gw-node-a") == "active" and role("gw-node-b") == "passive")
        # a's cable to west is built once NAT discovery (disabled: legacy choice) says so
        wait("cable on a", lambda: a.engine is not None and list(a.engine.installed()))
        gws = local.resource(GATEWAYS)
        wait("gateway CRs", lambda: gws.get(NS, "node-a")["status"]["haStatus"] == "active"
             and gws.get(NS, "node-b")["status"]["haStatus"] == "passive"
             and gws.get(NS, "node-a")["status"]["connections"][0]["endpoint"]["cluster_id"] == "west")
        a_ep = "east-submariner-cable-east-192-168-1-10"
        wait("a's endpoint on the broker", lambda: a_ep in names(broker, ENDPOINTS, BROKER_NS))
        # SIGTERM on a: the Lease is released and b takes over well within the lease duration
        started = time.monotonic()
        a.stop()
        wait("b active", lambda: b.engine is not None and b.engine.running and list(b.engine.installed()), timeout=5)
        took = time.monotonic() - started
        assert took < 1.5, f"takeover took {took:.2f}s"
        assert local.resource(LEASES).get(NS, "submariner-gateway-lock")["spec"]["holderIdentity"] == \
            "node-b-submariner-gateway"
        # b's endpoint replaces a's, locally and on the broker; a's Gateway object is gone
        wait("broker has b's endpoint only", lambda: names(broker, ENDPOINTS, BROKER_NS) == sorted(
            ["east-submariner-cable-east-192-168-1-11", west["metadata"]["name"]]))
        assert names(local, GATEWAYS, NS) == ["node-b"]
    finally:
        a.stop()
        b.stop()


def test_driver_init_failure_is_fatal_and_reported() -> None:
    local, broker = FakeCluster("east", no_status_subresource=frozenset({"gateways"})), FakeCluster("broker")
    fatal: list[str] = []

    def failing(ctx: Any) -> RecordingDriver:
        return RecordingDriver(fail_init=True)

    register("failing", failing)
    gw = gateway(local, broker, "node-a", "192.168.1.10", SUBMARINER_CABLEDRIVER="failing")
    gw.on_fatal = fatal.append
    gw.start()
    try:
        wait("fatal", lambda: fatal)
        assert "no kernel support" in fatal[0]
        wait("statusFailure", lambda: "no kernel support" in
             local.resource(GATEWAYS).get(NS, "node-a")["status"]["statusFailure"])
        assert local.resource(GATEWAYS).get(NS, "node-a")["status"]["haStatus"] == "passive"
    finally:
        gw.stop()


def test_leader_republishes_public_ip_and_globalnet_health_ip() -> None:
    local = FakeCluster("east", no_status_subresource=frozenset({"gateways", "configmaps", "secrets"}))
    broker = FakeCluster("broker")
    gw = gateway(local, broker, "node-a", "192.168.1.10", SUBMARINER_GLOBALCIDR="242.1.0.0/16")
    gw.start()
    try:
        wait("active", lambda: gw.active)
        name = "east-submariner-cable-east-192-168-1-10"
        eps = local.resource(ENDPOINTS)
        assert eps.get(NS, name)["spec"]["subnets"] == ["242.1.0.0/16"]
        assert not gw.check_public_ip()  # nothing configured: no lookups at all
        nodes = local.resource(NODES)
        annotation = {"gateway.submariner.io/public-ip": "ipv4:203.0.113.4"}
        nodes.patch("", "node-a", {"metadata": {"annotations": annotation}})
        assert gw.check_public_ip()
        wait("public IP republished", lambda: eps.get(NS, name)["spec"]["public_ip"] == "203.0.113.4")
        wait("… and on the broker", lambda: broker.resource(ENDPOINTS).get(BROKER_NS, name)["spec"]["public_ip"]
             == "203.0.113.4")
        assert not gw.check_public_ip()
        # Globalnet annotates our Gateway with its global IP: it becomes the Endpoint's healthCheckIP
        local.resource(GATEWAYS).patch(NS, "node-a", {"metadata": {"annotations": {
            "submariner.io/globalIp": "242.1.255.254"}}})
        gw.status.sync()
        wait("health IP republished", lambda: eps.get(NS, name)["spec"].get("healthCheckIP") == "242.1.255.254")
        local.resource(GATEWAYS).patch(NS, "node-a", {"metadata": {"annotations": {
            "submariner.io/globalIp": "10.9.9.9"}}})  # outside the GlobalCIDR: ignored
        gw.status.sync()
        assert eps.get(NS, name)["spec"]["healthCheckIP"] == "242.1.255.254"
    finally:
        gw.stop()


def test_uninstall_removes_gateway_kernel_state_and_our_objects() -> None:
    local = FakeCluster("east", no_status_subresource=frozenset({"gateways", "configmaps", "secrets"}))
    broker = FakeCluster("broker")
    gw = gateway(local, broker, "node-a", "192.168.1.10")
    gw.start()
    try:
        wait("published", lambda: names(local, ENDPOINTS, NS) and names(local, GATEWAYS, NS))
    finally:
        gw.stop()
    wait("exported", lambda: names(broker, ENDPOINTS, BROKER_NS) and names(broker, CLUSTERS, BROKER_NS))
    gw.uninstall()
    assert names(local, GATEWAYS, NS) == [] and names(local, ENDPOINTS, NS) == [] and names(local, CLUSTERS, NS) == []
    assert names(broker, ENDPOINTS, BROKER_NS) == [] and names(broker, CLUSTERS, BROKER_NS) == []
    assert isinstance(gw.driver, RecordingDriver) and ("cleanup", "") in gw.driver.calls


def test_api_outage_makes_the_leader_passive_and_it_comes_back() -> None:
    local = FakeCluster("east", no_status_subresource=frozenset({"gateways", "configmaps", "secrets"}))
    broker = FakeCluster("broker")
    gw = gateway(local, broker, "node-a", "192.168.1.10", LEADERSHIP_LEASEDURATION="1.5",
                 LEADERSHIP_RENEWDEADLINE="1", LEADERSHIP_RETRYPERIOD="0.2")
    gw.start()
    try:
        wait("fully active", lambda: gw.active)
        first_driver = gw.driver
        local.set_unavailable(True)
        wait("passive during the outage", lambda: gw.engine is None, timeout=5)
        local.set_unavailable(False)
        wait("active again", lambda: gw.active, timeout=5)
        assert gw.driver is not first_driver  # StartEngine again: a fresh driver (new keys for wireguard)
        wait("Gateway CR active", lambda: local.resource(GATEWAYS).get(NS, "node-a")["status"]["haStatus"]
             == "active")
    finally:
        local.set_unavailable(False)
        gw.stop()


def test_remote_endpoint_changing_only_its_backend_refreshes_the_cable_and_the_gateway_cr() -> None:
    """A remote cluster re-joined with another cable driver: its gateway updates the same Endpoint object
    (same name, same creationTimestamp, same backend_config); our Gateway CR must show the new backend."""
    local = FakeCluster("east", no_status_subresource=frozenset({"gateways", "configmaps", "secrets"}))
    broker = FakeCluster("broker")
    west = endpoint(spec("west", "192.168.2.20", backend="libreswan", **{"natt-discovery-port": "0"}),
                    namespace=BROKER_NS)
    west["metadata"]["labels"] = {"submariner-io/clusterID": "west"}
    west = broker.resource(ENDPOINTS).create(west)
    gw = gateway(local, broker, "node-a", "192.168.1.10")
    gw.start()
    gws = local.resource(GATEWAYS)

    def remote_backend() -> str:
        conns = gws.get(NS, "node-a")["status"]["connections"]
        return str(conns[0]["endpoint"]["backend"]) if conns else ""

    try:
        wait("cable to west (libreswan)", lambda: remote_backend() == "libreswan")
        west["spec"] = {**west["spec"], "backend": "vxlan"}
        broker.resource(ENDPOINTS).update(west)
        wait("local copy updated", lambda: local.resource(ENDPOINTS).get(NS, west["metadata"]["name"])["spec"]
             ["backend"] == "vxlan")
        wait("Gateway CR shows west's new backend", lambda: remote_backend() == "vxlan", timeout=5)
        assert gw.engine is not None
        [installed] = gw.engine.installed().values()
        assert installed.spec["backend"] == "vxlan"
    finally:
        gw.stop()


def test_the_active_gateways_health_verdicts_wake_its_gateway_cr_sync() -> None:
    local = FakeCluster("east", no_status_subresource=frozenset({"gateways", "configmaps", "secrets"}))
    gw = gateway(local, FakeCluster("broker"), "node-a", "192.168.1.10", SUBMARINER_HEALTHCHECKENABLED="true")
    gw.start()
    try:
        wait("active", lambda: gw.active)
        assert gw.health is not None and gw.status.health is gw.health
        assert gw.health.on_change == gw.status.sync_soon
    finally:
        gw.stop()
