"""deploy-broker → join c1, c2 → export → show, against three real API servers (no lab, no root)."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Callable
from typing import Any

import yaml
from subctl_harness import KIND_COREFILE, Env, Result

from submariner.broker import brokerinfo
from submariner.cli.resources import (
    BROKERS,
    CLUSTERS,
    CONFIGMAPS,
    DAEMON_SETS,
    DEPLOYMENTS,
    GATEWAYS,
    NODES,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICE_EXPORTS,
    SERVICES,
    SUBMARINERS,
)

Run = Callable[..., Result]

DEPLOY_BROKER_GOLDEN = """\
 • Setting up broker RBAC  ...
 ✓ Setting up broker RBAC
 • Installing the Submariner CRDs (no operator: subctl deploys the components directly)  ...
 ✓ Installing the Submariner CRDs (no operator: subctl deploys the components directly)
 ✓ Created 12 CRDs
 • Deploying the broker  ...
 ✓ Deploying the broker
 • Saving broker info to file "broker-info.subm"  ...
 ✓ Saving broker info to file "broker-info.subm"
"""

JOIN_C1_GOLDEN = """\
 ✓ broker-info.subm indicates broker is at {url}
 • Discovering network details  ...
 ✓ Discovering network details
 • Retrieving the gateway nodes  ...
 ✓ Retrieving the gateway nodes
 • Retrieving all worker nodes  ...
 ✓ Retrieving all worker nodes
 • Gathering relevant information from Broker  ...
 ✓ Gathering relevant information from Broker
 • Retrieving Globalnet information from the Broker  ...
 ✓ Retrieving Globalnet information from the Broker
 • Validating Globalnet configuration  ...
 ✓ Validating Globalnet configuration
 • Retrieving ClustersetIP information from the Broker  ...
 ✓ Retrieving ClustersetIP information from the Broker
 • Validating ClustersetIP configuration  ...
 ✓ Validating ClustersetIP configuration
 • Labeling node "c1-worker" as a gateway  ...
 ✓ Labeling node "c1-worker" as a gateway
 • Assigning ClustersetIP IPs  ...
 ✓ Assigning ClustersetIP IPs
 ✓ Allocated clustersetip CIDR 243.0.0.0/20
 • Updating the ClustersetIP information on the Broker  ...
 ✓ Updating the ClustersetIP information on the Broker
 • Creating SA for cluster  ...
 ✓ Creating SA for cluster
 • Connecting to Broker  ...
 ✓ Connecting to Broker
 • Deploying submariner  ...
 ✓ Deploying submariner
 ✓ Created 12 CRDs
 ✓ Created namespace submariner-operator
 ✓ Deployed the components directly (no operator)
 • Configuring CoreDNS to forward clusterset.local to Lighthouse DNS  ...
 ✓ Configuring CoreDNS to forward clusterset.local to Lighthouse DNS
 ✓ Updated ConfigMap kube-system/coredns: clusterset.local is forwarded to {dns_ip}
 ✓ Submariner is deployed; tunnels come up in the background (see `subctl show connections`, or join with --wait)
"""

JOIN_C1_STDOUT = """\
    Discovered network details
        Network plugin:  generic
        Service CIDRs:   [10.88.0.0/16]
        Cluster CIDRs:   [10.8.0.0/16]
"""


def endpoint(cluster: str, host: str, ip: str, subnets: list[str], backend: str = "libreswan") -> dict[str, Any]:
    return {"cluster_id": cluster, "cable_name": f"submariner-cable-{cluster}-{ip.replace('.', '-')}",
            "hostname": host, "subnets": subnets, "private_ip": ip, "public_ip": "", "nat_enabled": False,
            "backend": backend, "backend_config": {"udp-port": "4500"}}


def gateway(local: dict[str, Any], remote: dict[str, Any] | None, status: str = "connected") -> dict[str, Any]:
    """A Gateway object as the gateway engine publishes it (dataplane.md §1)."""
    conns = [] if remote is None else [{
        "status": status, "statusMessage": "", "endpoint": remote, "usingIP": remote["private_ip"],
        "usingNAT": False, "latencyRTT": {"last": "400µs", "min": "300µs", "average": "412.37µs", "max": "1ms",
                                           "stdDev": "50µs"}}]
    return {"apiVersion": "submariner.io/v1", "kind": "Gateway",
            "metadata": {"name": local["hostname"], "namespace": "submariner-operator"},
            "status": {"version": "v0.19.0", "haStatus": "active", "localEndpoint": local, "statusFailure": "",
                       "connections": conns}}


def deploy_and_join(env: Env, subctl: Run) -> tuple[Result, Result, Result]:
    kc = env.kubeconfig
    deployed = subctl("--context", "test-broker", "deploy-broker", cwd=env.workdir, kubeconfig=kc)
    joined1 = subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "c1", cwd=env.workdir)
    joined2 = subctl("join", "--context", "test-c2", "broker-info.subm", "--clusterid", "c2",
                     "--clustercidr", "10.9.0.0/16", cwd=env.workdir)
    return deployed, joined1, joined2


def test_deploy_broker_join_export_show(env3: Env, subctl: Run) -> None:
    deployed, joined1, joined2 = deploy_and_join(env3, subctl)
    assert deployed.code == 0, deployed.err
    assert deployed.err == DEPLOY_BROKER_GOLDEN and deployed.out == ""

    # broker-info.subm: 0600, Go encoding, the admin token Secret of the broker namespace, a 48-byte PSK.
    path = env3.workdir / "broker-info.subm"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("eyJicm9rZXJVUkwiOi")
    info = brokerinfo.read_file(path)
    assert info.broker_url == env3.url("broker") and info.broker_namespace == "submariner-k8s-broker"
    assert info.client_token["metadata"]["name"].startswith("submariner-k8s-broker-admin-token-")
    assert info.components == ["connectivity", "service-discovery"] and len(info.psk or b"") == 48
    broker = env3.kube("broker")
    assert broker.resource(BROKERS).get("submariner-k8s-broker", "submariner-broker")["spec"]["components"] == [
        "connectivity", "service-discovery"]

    c1, c2 = env3.kube("c1"), env3.kube("c2")
    assert joined1.code == 0, joined1.err
    dns_ip = c1.resource(SERVICES).get("submariner-operator", "submariner-lighthouse-coredns")["spec"]["clusterIP"]
    assert joined1.err == JOIN_C1_GOLDEN.format(url=env3.url("broker"), dns_ip=dns_ip)
    assert joined1.out == JOIN_C1_STDOUT
    assert joined2.code == 0, joined2.err
    assert 'Labeling node "c2-worker" as a gateway' in joined2.err
    assert "Allocated clustersetip CIDR 243.0.16.0/20" in joined2.err

    # What join created: broker access, local secrets, CR, workloads, the node label, the CoreDNS forward.
    assert broker.resource(SERVICE_ACCOUNTS).get("submariner-k8s-broker", "cluster-c1")
    secret = c1.resource(SECRETS).get("submariner-operator", "submariner-broker-secret")
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert token != info.token  # the cluster's own token, not the admin one
    cr = c1.resource(SUBMARINERS).get("submariner-operator", "submariner")
    assert cr["spec"]["clusterID"] == "c1" and cr["spec"]["brokerK8sApiServer"] == env3.url("broker")[8:]
    assert cr["status"]["clusterCIDR"] == "10.8.0.0/16"
    assert {d["metadata"]["name"] for d in c1.resource(DAEMON_SETS).list("submariner-operator")[0]} == {
        "submariner-gateway", "submariner-routeagent"}
    assert {d["metadata"]["name"] for d in c1.resource(DEPLOYMENTS).list("submariner-operator")[0]} == {
        "submariner-lighthouse-agent", "submariner-lighthouse-coredns"}
    assert c1.resource(NODES).get("", "c1-worker")["metadata"]["labels"]["submariner.io/gateway"] == "true"
    assert "submariner.io/gateway" not in c1.resource(NODES).get("", "c1-control-plane")["metadata"]["labels"]
    corefile = c1.resource(CONFIGMAPS).get("kube-system", "coredns")["data"]["Corefile"]
    assert corefile == f"clusterset.local:53 {{\n    forward . {dns_ip}\n}}\n" + KIND_COREFILE

    # The cluster token works with exactly the rights of the cluster role (RBAC enforced by the server).
    from submariner.broker.kube import Cluster, Forbidden

    own = Cluster.from_token(env3.url("broker"), token, ca_data=info.ca_crt)
    own.resource(CLUSTERS).list("submariner-k8s-broker")
    from submariner.broker.kube import LEASES

    own.resource(LEASES).create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                 "metadata": {"name": "probe", "namespace": "submariner-k8s-broker"}, "spec": {}})
    try:
        own.resource(SECRETS).create({"apiVersion": "v1", "kind": "Secret",
                                      "metadata": {"name": "x", "namespace": "submariner-k8s-broker"}})
        raise AssertionError("the cluster token may create Secrets")
    except Forbidden:
        pass

    # Re-joining is idempotent (same ID allowed for the same cluster, CoreDNS forward not duplicated).
    again = subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "c1", cwd=env3.workdir)
    assert again.code == 0, again.err
    assert "Allocated" not in again.err and "Labeling" not in again.err
    assert c1.resource(CONFIGMAPS).get("kube-system", "coredns")["data"]["Corefile"] == corefile

    # Export in c2.
    c2.resource(SERVICES).create({"apiVersion": "v1", "kind": "Service",
                                  "metadata": {"name": "whereami-cs", "namespace": "default"},
                                  "spec": {"ports": [{"port": 80}], "selector": {"app": "whereami"}}})
    r = subctl("--context", "test-c2", "export", "service", "--namespace", "default", "whereami-cs")
    assert (r.code, r.err) == (0, " ✓ Service exported successfully\n")
    assert c2.resource(SERVICE_EXPORTS).get("default", "whereami-cs")
    r = subctl("export", "service", "--context", "test-c2", "-n", "default", "whereami-cs")
    assert (r.code, r.err) == (0, " ✓ Service already exported\n")
    r = subctl("export", "service", "--context", "test-c2", "-n", "default", "nope")
    assert r.code == 1
    assert r.err.startswith(' ✗ Unable to find the Service "nope" in namespace "default": ')
    assert r.err.endswith("\n\nsubctl version: v0.19.0\n\n")
    r = subctl("export", "service", "--context", "test-c2")
    assert r.code == 1 and r.err.startswith(
        " ✗ Insufficient arguments: name of the Service to be exported must be specified\n")
    r = subctl("unexport", "service", "--context", "test-c2", "-n", "default", "whereami-cs")
    assert (r.code, r.err) == (0, " ✓ Service successfully unexported\n")
    r = subctl("unexport", "service", "--context", "test-c2", "-n", "default", "whereami-cs")
    assert r.code == 1 and r.err.startswith(" ✗ Service default/whereami-cs was not previously exported: ")
    r = subctl("export", "service", "--context", "test-c2", "-n", "default", "--use-clusterset-ip=true",
               "whereami-cs")
    assert r.code == 0
    export = c2.resource(SERVICE_EXPORTS).get("default", "whereami-cs")
    assert export["metadata"]["annotations"] == {"lighthouse.submariner.io/use-clusterset-ip": "true"}

    # Before any gateway reported: "No gateways detected" (exit 1).
    r = subctl("show", "connections", "--context", "test-c1")
    assert r.code == 1 and " ✗ No gateways detected\n" in r.err

    # The gateway engines publish Gateway objects; show renders them.
    ep1 = endpoint("c1", "c1-worker", "198.18.0.3", ["10.88.0.0/16", "10.8.0.0/16"])
    ep2 = endpoint("c2", "c2-worker", "198.18.0.5", ["10.99.0.0/16", "10.9.0.0/16"])
    c1.resource(GATEWAYS).create(gateway(ep1, ep2))
    c2.resource(GATEWAYS).create(gateway(ep2, ep1))
    r = subctl("show", "connections", "--context", "test-c1")
    assert r.code == 0, r.err
    assert r.err == " • Showing Connections  ...\n ✓ Showing Connections\n"
    assert r.out == (
        "GATEWAY     CLUSTER   REMOTE IP    NAT   CABLE DRIVER   SUBNETS                     "
        "STATUS      RTT avg.    \n"
        "c2-worker   c2        198.18.0.5   no    libreswan      10.99.0.0/16, 10.9.0.0/16   "
        "connected   412.37µs    \n")
    r = subctl("show", "endpoints", "--context", "test-c2")
    assert r.out == (
        "CLUSTER   ENDPOINT IP   PUBLIC IP   CABLE DRIVER   TYPE     \n"
        "c2        198.18.0.5                libreswan      local    \n"
        "c1        198.18.0.3                libreswan      remote   \n")
    r = subctl("show", "gateways", "--context", "test-c2")
    assert r.out == ("NODE        HA STATUS   SUMMARY                               \n"
                     "c2-worker   active      All connections (1) are established   \n")
    r = subctl("show", "networks", "--context", "test-c1")
    assert r.out == ("    Discovered network details via Submariner:\n        Network plugin:  generic\n"
                     "        Service CIDRs:   [10.88.0.0/16]\n        Cluster CIDRs:   [10.8.0.0/16]\n"
                     "        ClustersetIP CIDR:     243.0.0.0/20\n")
    r = subctl("show", "versions", "--context", "test-c1")
    assert r.err == " • Showing versions  ...\n ✓ Showing versions\n"
    assert r.out == (
        "COMPONENT                       REPOSITORY           CONFIGURED   RUNNING       ARCH   \n"
        "submariner-gateway              quay.io/submariner   0.19.0       v0.19.0              \n"
        "submariner-routeagent           quay.io/submariner   0.19.0       Unavailable          \n"
        "submariner-lighthouse-agent     quay.io/submariner   0.19.0       Unavailable          \n"
        "submariner-lighthouse-coredns   quay.io/submariner   0.19.0       Unavailable          \n")
    r = subctl("show", "brokers", "--context", "test-broker")
    assert r.out == (
        "NAMESPACE               NAME                COMPONENTS                        GLOBALNET   GLOBALNET CIDR   "
        "DEFAULT GLOBALNET SIZE   DEFAULT DOMAINS   \n"
        "submariner-k8s-broker   submariner-broker   connectivity, service-discovery   no                           "
        "                                           \n")

    # All contexts: a header per kubeconfig cluster, then an empty line; -o json/yaml parse.
    r = subctl("show", "connections", kubeconfig=env3.kubeconfig)
    assert r.code == 0, r.err  # the broker cluster has no Submariner CR: a warning, not a failure
    assert r.out.startswith('Cluster "test-broker"\n\nCluster "test-c1"\nGATEWAY ')
    assert " ⚠ Submariner connectivity feature is not installed\n" in r.err
    r = subctl("show", "connections", "-o", "json")
    docs = json.loads(r.out)
    assert [d["cluster"] for d in docs] == ["test-broker", "test-c1", "test-c2"]
    assert docs[1]["connections"][0] == {
        "gateway": "c2-worker", "cluster": "c2", "remoteIP": "198.18.0.5", "nat": False, "cableDriver": "libreswan",
        "subnets": ["10.99.0.0/16", "10.9.0.0/16"], "status": "connected", "rttAvg": "412.37µs"}
    r = subctl("show", "all", "--contexts", "test-c2", "-o", "yaml")
    doc = yaml.safe_load(r.out)[0]
    assert set(doc) >= {"cluster", "brokers", "connections", "endpoints", "gateways", "networks", "versions"}
    r = subctl("show", "all", "--context", "test-c2")
    assert r.code == 0, r.err
    parts = [subctl("show", view, "--context", "test-c2").out for view in
             ("brokers", "connections", "endpoints", "gateways", "networks", "versions")]
    assert r.out == parts[0] + "".join(p + "\n" for p in parts[1:])  # brokers, then each view + an empty line
    assert r.err.startswith(" • Detecting broker(s)  ...\n ✓ Detecting broker(s)\n ✓ No brokers found\n"
                            " • Showing Connections  ...\n")
    r = subctl("show", "gateways", "--contexts", "nope")
    assert r.code == 1 and r.err.startswith(" ✗ No Kubernetes context found named nope\n")

    # join --wait returns once the active gateway reports every other cluster connected.
    r = subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "c1", "--wait",
               "--wait-timeout", "20", cwd=env3.workdir)
    assert r.code == 0, r.err
    assert r.err.endswith(" ✓ Waiting for the gateway to connect to the other clusters\n"
                          " ✓ Submariner is up and running\n")
    c2.resource(GATEWAYS).delete("submariner-operator", "c2-worker")
    r = subctl("--context", "test-c2", "join", "broker-info.subm", "--clusterid", "c2", "--clustercidr",
               "10.9.0.0/16", "--wait", "--wait-timeout", "1", cwd=env3.workdir)
    assert r.code == 1 and "Error waiting for the gateway connections: gave up after 1s" in r.err


def test_globalnet_walkthrough_section_4(env3: Env, subctl: Run) -> None:
    """§4.2/§4.3: a Globalnet broker with 120.0.0.0/8, g1 and g2 with explicit /24s, a third by default size."""
    kc = env3.kubeconfig
    r = subctl("--context", "test-broker", "deploy-broker", "--globalnet=true", "--globalnet-cidr-range",
               "120.0.0.0/8", cwd=env3.workdir, kubeconfig=kc)
    assert r.code == 0, r.err
    broker, c1, c2 = env3.kube("broker"), env3.kube("c1"), env3.kube("c2")
    spec = broker.resource(BROKERS).get("submariner-k8s-broker", "submariner-broker")["spec"]
    assert spec["globalnetEnabled"] is True and spec["globalnetCIDRRange"] == "120.0.0.0/8"
    r = subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "g1", "--globalnet-cidr",
               "120.1.0.0/24", cwd=env3.workdir)
    assert r.code == 0, r.err
    assert (" • Assigning Globalnet IPs  ...\n ✓ Assigning Globalnet IPs\n"
            " ✓ Allocated global CIDR 120.1.0.0/24\n"
            " • Updating the Globalnet information on the Broker  ...\n"
            " ✓ Updating the Globalnet information on the Broker\n") in r.err
    r = subctl("--context", "test-c2", "join", "broker-info.subm", "--clusterid", "g2", "--globalnet-cidr",
               "120.1.0.128/25", "--clustercidr", "10.9.0.0/16", cwd=env3.workdir)
    assert r.code == 1 and 'invalid CIDR "120.1.0.128/25" overlaps with cluster "g1"' in r.err
    r = subctl("--context", "test-c2", "join", "broker-info.subm", "--clusterid", "g2", "--globalnet-cidr",
               "120.2.0.0/24", "--clustercidr", "10.9.0.0/16", cwd=env3.workdir)
    assert r.code == 0, r.err
    info = broker.resource(CONFIGMAPS).get("submariner-k8s-broker", "submariner-globalnet-info")["data"]
    assert json.loads(info["clusterinfo"]) == [{"cluster_id": "g1", "global_cidr": ["120.1.0.0/24"]},
                                               {"cluster_id": "g2", "global_cidr": ["120.2.0.0/24"]}]
    assert c1.resource(SUBMARINERS).get("submariner-operator", "submariner")["spec"]["globalCIDR"] == "120.1.0.0/24"
    ds = c2.resource(DAEMON_SETS).get("submariner-operator", "submariner-globalnet")
    env = {e["name"]: e.get("value") for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SUBMARINER_GLOBALCIDR"] == "120.2.0.0/24"
    # Re-joining reuses the recorded block; the decision is reported.
    r = subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "g1", cwd=env3.workdir)
    assert r.code == 0 and " ✓ Using pre-configured global CIDR 120.1.0.0/24\n" in r.err
    r = subctl("show", "networks", "--context", "test-c2")
    assert "        Global CIDR:     120.2.0.0/24\n" in r.out
    r = subctl("show", "brokers", "--context", "test-broker", "-o", "json")
    assert json.loads(r.out)[0]["brokers"][0]["globalnetCIDR"] == "120.0.0.0/8"


def test_discovery_only_broker(env3: Env, subctl: Run) -> None:
    r = subctl("--context", "test-broker", "deploy-broker", "--components", "service-discovery", cwd=env3.workdir,
               kubeconfig=env3.kubeconfig)
    assert r.code == 0, r.err
    info = brokerinfo.read_file(env3.workdir / "broker-info.subm")
    assert info.components == ["service-discovery"] and info.service_discovery and not info.connectivity_enabled
    r = subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "c1", cwd=env3.workdir)
    assert r.code == 0, r.err
    assert " • Deploying service discovery only  ...\n" in r.err
    assert r.err.endswith(" ✓ Service discovery is up and running\n")
    assert "Labeling" not in r.err and "Retrieving the gateway nodes" not in r.err
    c1 = env3.kube("c1")
    assert c1.resource(DAEMON_SETS).list("submariner-operator")[0] == []
    assert "submariner.io/gateway" not in c1.resource(NODES).get("", "c1-worker")["metadata"]["labels"]
    r = subctl("show", "connections", "--context", "test-c1")
    assert (r.code, r.err) == (0, " ⚠ Submariner connectivity feature is not installed\n")


def test_cli_conventions(subctl: Run) -> None:
    assert subctl("version").out == "subctl version: v0.19.0\n"
    assert subctl("--version").out == "subctl version v0.19.0\n"
    r = subctl("version", "extra")
    assert r.code == 1 and r.err.startswith("Error: this command doesn't support any arguments\nUsage: ")
    r = subctl("join", "--nattport", "x")
    assert r.code == 1 and r.err.startswith("Error: Invalid value for '--nattport'")
    r = subctl("help", "show", "connections")
    assert r.code == 0 and "Show cluster connectivity information" in r.out
    r = subctl("verify", "--context", "a")
    assert r.code == 1 and r.err.startswith(
        "This command requires two kube contexts corresponding to the two clusters to verify.\n")
    r = subctl("verify", "--context", "a", "--tocontext", "b", "--only", "nope")
    assert r.code == 1 and ' ✗ Unknown verification "nope"\n' in r.err


def test_static_broker_bundle_applies_with_kubectl_and_deploy_broker_reuses_it(env3: Env, subctl: Run) -> None:
    from pathlib import Path

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    env3.servers["broker"].kubectl("apply", "-f", str(deploy / "crds.yaml"))
    env3.servers["broker"].kubectl("apply", "-f", str(deploy / "broker.yaml"))
    r = subctl("--context", "test-broker", "deploy-broker", cwd=env3.workdir, kubeconfig=env3.kubeconfig)
    assert r.code == 0, r.err
    assert "Created 12 CRDs" not in r.err  # all there already
    info = brokerinfo.read_file(env3.workdir / "broker-info.subm")
    assert info.client_token["metadata"]["name"] == "submariner-k8s-broker-admin-token"
    r = subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "c1", cwd=env3.workdir)
    assert r.code == 0, r.err
