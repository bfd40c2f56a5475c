"""diagnose over real servers: failures while nothing runs, green once the objects say so."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from subctl_harness import Env, Result

from submariner.cli.diagnose import SKIP_FIREWALL, parse_version
from submariner.cli.resources import DAEMON_SETS, DEPLOYMENTS, GATEWAYS, SERVICE_EXPORTS, SERVICES

Run = Callable[..., Result]


def test_parse_version() -> None:
    assert parse_version("v1.30.0") == (1, 30) and parse_version("1.19.3+k3s1") == (1, 19)


def test_diagnose_flow(env3: Env, subctl: Run) -> None:
    kc = env3.kubeconfig
    r = subctl("diagnose", "deployment", "--context", "test-c1", cwd=env3.workdir, kubeconfig=kc)
    assert r.code == 0 and " ⚠ No Submariner feature is installed\n" in r.err
    assert subctl("--context", "test-broker", "deploy-broker").code == 0
    assert subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "c1").code == 0
    c1 = env3.kube("c1")

    r = subctl("diagnose", "k8s-version", "--context", "test-c1")
    assert r.code == 0, r.err
    assert r.err.startswith(" • Checking Submariner support for the Kubernetes version  ...\n"
                            " ✓ Checking Submariner support for the Kubernetes version\n ✓ Kubernetes version \"v1.")

    # Nothing is scheduled on a bare API server: the deployment check fails and says why.
    r = subctl("diagnose", "deployment", "--context", "test-c1")
    assert r.code == 1
    assert " ✓ Non-Globalnet deployment detected - checking that cluster CIDRs do not overlap\n" in r.err
    assert (' ✗ The desired number of replicas for DaemonSet "submariner-gateway" (0) does not match the actual '
            "number running (0)\n") in r.err
    assert " ✗ There are 0 active gateways (expected exactly 1)\n" in r.err

    # What the controllers and the gateway would report once everything runs.
    for res, name, status in (
        (DAEMON_SETS, "submariner-gateway", {"desiredNumberScheduled": 1, "numberReady": 1}),
        (DAEMON_SETS, "submariner-routeagent", {"desiredNumberScheduled": 2, "numberReady": 2}),
        (DEPLOYMENTS, "submariner-lighthouse-agent", {"readyReplicas": 1}),
        (DEPLOYMENTS, "submariner-lighthouse-coredns", {"readyReplicas": 2}),
    ):
        obj = c1.resource(res).get("submariner-operator", name)
        obj["status"] = status
        c1.resource(res).update_status(obj)
    c1.resource(GATEWAYS).create({
        "apiVersion": "submariner.io/v1", "kind": "Gateway",
        "metadata": {"name": "c1-worker", "namespace": "submariner-operator"},
        "status": {"haStatus": "active", "statusFailure": "", "version": "v0.19.0", "connections": [
            {"status": "error", "statusMessage": "Failed to successfully ping the remote endpoint IP",
             "endpoint": {"cluster_id": "c2", "cable_name": "x", "hostname": "c2-worker", "subnets": [],
                          "private_ip": "198.18.0.5", "public_ip": "", "nat_enabled": False, "backend": "libreswan",
                          "backend_config": {}}}],
                   "localEndpoint": {"cluster_id": "c1", "cable_name": "y", "hostname": "c1-worker", "subnets": [],
                                     "private_ip": "198.18.0.3", "public_ip": "", "nat_enabled": False,
                                     "backend": "libreswan", "backend_config": {}}}})
    r = subctl("diagnose", "deployment", "--context", "test-c1")
    assert r.code == 0, r.err
    r = subctl("diagnose", "connections", "--context", "test-c1")
    assert r.code == 1 and ' ✗ Connection to cluster "c2" is not established. Connection details:\n{' in r.err

    # Service discovery: the CoreDNS forward is in place; an export without its Service is reported.
    c1.resource(SERVICE_EXPORTS).create({"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
                                         "metadata": {"name": "ghost", "namespace": "default"}})
    r = subctl("diagnose", "service-discovery", "--context", "test-c1")
    assert r.code == 1, r.err
    assert ' ✗ Error retrieving Service "ghost" in namespace "default": not found\n' in r.err
    assert " ✓ Checking that the cluster DNS forwards clusterset.local to Lighthouse DNS\n" in r.err
    c1.resource(SERVICE_EXPORTS).delete("default", "ghost")
    svc = c1.resource(SERVICES).get("submariner-operator", "submariner-lighthouse-coredns")
    r = subctl("diagnose", "service-discovery", "--context", "test-c1")
    assert r.code == 0, r.err  # no pod runs on a bare API server to ask from: a warning, not a failure
    assert (f" ⚠ Could not query Lighthouse DNS at {svc['spec']['clusterIP']} (no running submariner-lighthouse-agent "
            "pod to query from); its pods are ready\n") in r.err

    r = subctl("diagnose", "all", "--context", "test-c1")
    assert r.code == 1  # the c2 connection is down
    assert r.out.endswith(SKIP_FIREWALL + "\n")


def test_diagnose_firewall_commands_without_a_datapath(env3: Env, subctl: Run) -> None:
    """What the firewall checks say before they could send anything (the lab test sends real packets)."""
    kc = env3.kubeconfig
    r = subctl("diagnose", "firewall", "inter-cluster", "--context", "test-c1", cwd=env3.workdir, kubeconfig=kc)
    assert r.code == 1 and "requires two kube contexts" in r.err and "--remotecontext" in r.err
    r = subctl("diagnose", "firewall", "intra-cluster", "--context", "test-c1")
    assert r.code == 0 and r.err == " ⚠ Submariner connectivity feature is not installed\n"
    r = subctl("diagnose", "firewall", "nat-discovery", "--context", "test-c1", "--remotecontext", "test-c2")
    assert r.code == 1
    assert ' ✗ Submariner connectivity feature is not installed on cluster "test-c1"\n' in r.err

    assert subctl("--context", "test-broker", "deploy-broker").code == 0
    assert subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "c1").code == 0
    r = subctl("diagnose", "firewall", "intra-cluster", "--context", "test-c1", "--validation-timeout", "5")
    assert r.code == 1
    assert r.err.startswith(" • Checking that firewall configuration allows intra-cluster VXLAN traffic  ...\n"
                            " ✗ Checking that firewall configuration allows intra-cluster VXLAN traffic\n"
                            ' ✗ Unable to obtain a remote endpoint: cluster "test-c1" knows no remote Endpoint'), r.err
    r = subctl("diagnose", "all", "--context", "test-c1", "--validation-timeout", "5")
    assert " ✗ Checking that firewall configuration allows intra-cluster VXLAN traffic\n" in r.err
    r = subctl("diagnose", "firewall", "inter-cluster", "--context", "test-c1", "--remotecontext", "test-c2")
    assert r.code == 1 and 'on cluster "test-c2"' in r.err  # c2 has not joined


def test_globalnet_check_reports_missing_allocations() -> None:
    import io

    from submariner.broker.api.submariner import CLUSTER_GLOBAL_EGRESS_IPS, GLOBAL_INGRESS_IPS
    from submariner.broker.kube.fake import FakeCluster
    from submariner.cli.diagnose import Checks
    from submariner.cli.reporter import Reporter
    from submariner.cli.resources import SUBMARINERS

    kube = FakeCluster()
    kube.resource(SUBMARINERS).create({"apiVersion": "submariner.io/v1alpha1", "kind": "Submariner", "metadata": {
        "name": "submariner", "namespace": "submariner-operator"}, "spec": {"clusterID": "g1",
                                                                            "globalCIDR": "242.1.0.0/24"}})
    kube.resource(SERVICES).create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web",
                                    "namespace": "app"}, "spec": {"type": "ClusterIP", "clusterIP": "10.88.0.9"}})
    kube.resource(SERVICE_EXPORTS).create({"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
                                           "metadata": {"name": "web", "namespace": "app"}})

    def check() -> tuple[bool, str]:
        out = io.StringIO()
        ok = Checks(kube, Reporter(out, terminal=False)).globalnet()
        return ok, out.getvalue()

    ok, out = check()
    assert not ok and out.startswith(" • Checking that Globalnet is correctly configured and functioning  ...\n"
                                     " ✗ Checking that Globalnet is correctly configured and functioning\n")
    assert ' ✗ Error obtaining ClusterGlobalEgressIP resource "cluster-egress.submariner.io": not found\n' in out
    assert ' ✗ No matching GlobalIngressIP resource found for exported service "app/web"\n' in out

    cgeip = kube.resource(CLUSTER_GLOBAL_EGRESS_IPS).create({
        "apiVersion": "submariner.io/v1", "kind": "ClusterGlobalEgressIP",
        "metadata": {"name": "cluster-egress.submariner.io"}, "spec": {"numberOfIPs": 8}})
    cgeip["status"] = {"conditions": [{"type": "Allocated", "status": "True"}], "allocatedIPs": ["242.1.0.1"]}
    kube.resource(CLUSTER_GLOBAL_EGRESS_IPS).update_status(cgeip)
    giip = kube.resource(GLOBAL_INGRESS_IPS).create({
        "apiVersion": "submariner.io/v1", "kind": "GlobalIngressIP", "metadata": {"name": "web", "namespace": "app"},
        "spec": {"target": "ClusterIPService", "serviceRef": {"name": "web"}}})
    giip["status"] = {"allocatedIP": "242.1.0.200", "conditions": [{"type": "Allocated", "status": "True"}]}
    kube.resource(GLOBAL_INGRESS_IPS).update_status(giip)
    ok, out = check()
    assert not ok and ' ✗ ClusterGlobalEgressIP "cluster-egress.submariner.io" has 1 allocated IPs, but 8 were ' \
        "requested\n" in out and "GlobalIngressIP" not in out

    cgeip = kube.resource(CLUSTER_GLOBAL_EGRESS_IPS).get("", "cluster-egress.submariner.io")
    cgeip["status"]["allocatedIPs"] = [f"242.1.0.{i}" for i in range(1, 9)]
    kube.resource(CLUSTER_GLOBAL_EGRESS_IPS).update_status(cgeip)
    assert check() == (True, " • Checking that Globalnet is correctly configured and functioning  ...\n"
                             " ✓ Checking that Globalnet is correctly configured and functioning\n")


def test_diagnose_in_cluster_outside_a_pod(subctl: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    r = subctl("diagnose", "k8s-version", "--in-cluster")
    assert r.code == 1
    assert r.err.startswith(" ✗ Error loading the in-cluster configuration: Service host/port is not set. "
                            "(--in-cluster works only inside a pod)\n")


def test_calico_ippools_for_remote_subnets() -> None:
    import io

    from submariner.broker.kube.fake import FakeCluster
    from submariner.cli.diagnose import CALICO_IPPOOLS, Checks
    from submariner.cli.reporter import Reporter

    kube = FakeCluster()
    gw = kube.resource(GATEWAYS).create({"apiVersion": "submariner.io/v1", "kind": "Gateway", "metadata": {
        "name": "c1-worker", "namespace": "submariner-operator"}})
    gw["status"] = {"haStatus": "active", "connections": [{"status": "connected", "endpoint": {
        "cluster_id": "c2", "cable_name": "submariner-cable-c2-198-18-0-5",
        "subnets": ["10.99.0.0/16", "10.9.0.0/16"]}}]}
    kube.resource(GATEWAYS).update_status(gw)
    for name, cidr, spec in (("default-ipv4-ippool", "10.8.0.0/16", {"natOutgoing": True}),
                             ("c2-services", "10.99.0.0/16", {"disabled": True, "natOutgoing": False}),
                             ("c2-pods", "10.9.0.0/16", {"disabled": False, "natOutgoing": True})):
        kube.resource(CALICO_IPPOOLS).create({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                                              "metadata": {"name": name}, "spec": {"cidr": cidr, **spec}})

    def check() -> tuple[bool, str]:
        out = io.StringIO()
        return Checks(kube, Reporter(out, terminal=False)).calico_ippools(), out.getvalue()

    ok, out = check()
    cable = '"submariner-cable-c2-198-18-0-5"'
    assert not ok and out.endswith(
        f' ✗ The IPPool "c2-pods" with CIDR "10.9.0.0/16" for remote endpoint {cable} has disabled set to false\n'
        f' ✗ The IPPool "c2-pods" with CIDR "10.9.0.0/16" for remote endpoint {cable} has natOutgoing set to true\n')
    pool = kube.resource(CALICO_IPPOOLS).get("", "c2-pods")
    pool["spec"].update(disabled=True, natOutgoing=False)
    kube.resource(CALICO_IPPOOLS).update(pool)
    assert check()[0]
    kube.resource(CALICO_IPPOOLS).delete("", "c2-services")
    ok, out = check()
    assert not ok and f' ✗ Could not find any IPPool with CIDR "10.99.0.0/16" for remote endpoint {cable}\n' in out


def test_service_discovery_needs_ready_exports_with_their_endpointslice() -> None:
    import io

    from submariner.broker.kube import ENDPOINT_SLICES
    from submariner.broker.kube.fake import FakeCluster
    from submariner.cli.diagnose import Checks
    from submariner.cli.reporter import Reporter
    from submariner.cli.resources import SERVICE_IMPORTS, SUBMARINERS

    kube = FakeCluster()
    kube.resource(SUBMARINERS).create({"apiVersion": "submariner.io/v1alpha1", "kind": "Submariner", "metadata": {
        "name": "submariner", "namespace": "submariner-operator"}, "spec": {"clusterID": "c2"}})
    kube.resource(SERVICES).create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web",
                                    "namespace": "app"}, "spec": {"type": "ClusterIP", "clusterIP": "10.99.0.9"}})
    export = kube.resource(SERVICE_EXPORTS).create({"apiVersion": "multicluster.x-k8s.io/v1alpha1",
                                                    "kind": "ServiceExport", "metadata": {"name": "web",
                                                                                          "namespace": "app"}})
    export["status"] = {"conditions": [{"type": "Valid", "status": "True"},
                                       {"type": "Ready", "status": "False", "message": "Awaiting sync"}]}
    kube.resource(SERVICE_EXPORTS).update_status(export)

    def check() -> tuple[bool, str]:
        out = io.StringIO()
        return Checks(kube, Reporter(out, terminal=False)).service_discovery(), out.getvalue()

    ok, out = check()
    assert not ok
    assert out.endswith(' ✗ ServiceExport "app/web" is not ready: Awaiting sync\n'
                        ' ✗ The EndpointSlice for the exported service "app/web" from cluster "c2" does not exist (is '
                        'the lighthouse agent running?)\n ✗ ServiceImport "app/web" does not exist\n'), out
    export = kube.resource(SERVICE_EXPORTS).get("app", "web")
    export["status"]["conditions"][1] = {"type": "Ready", "status": "True"}
    kube.resource(SERVICE_EXPORTS).update_status(export)
    kube.resource(ENDPOINT_SLICES).create({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {
        "name": "web-c2", "namespace": "app", "labels": {"multicluster.kubernetes.io/source-cluster": "c2",
                                                         "multicluster.kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "endpoints": []})
    kube.resource(SERVICE_IMPORTS).create({"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
                                           "metadata": {"name": "web", "namespace": "app"},
                                           "spec": {"type": "ClusterSetIP", "ports": []}})
    assert check() == (True, " • Checking that services have been exported properly  ...\n"
                             " ✓ Checking that services have been exported properly\n")
