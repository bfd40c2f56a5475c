"""`submariner-globalnet` as a process: a real API server (tests/conftest.py), a throw-away netns for the
rules, the upstream environment, SIGTERM. Checks the kernel's nat table, object statuses and the lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gntest import nat_rules

from submariner.broker.api import multicluster, submariner
from submariner.broker.api.crds import crd
from submariner.broker.kube import CRDS, LEASES, NAMESPACES, SERVICES, Cluster, KubeError
from submariner.globalnet.context import PODS
from submariner.globalnet.names import LEASE_NAME, internal_service_name

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]
BIN = Path(sys.executable).parent
NS = "submariner-operator"


def eventually(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except (KubeError, KeyError, IndexError, TypeError) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")


def test_globalnet_process_programs_a_netns_and_cleans_up_on_sigterm(api_server: Any, netns: str,
                                                                      tmp_path: Path) -> None:
    root_probing = Path("/proc/sys/net/ipv4/tcp_mtu_probing").read_text().strip()
    cluster = Cluster.from_kubeconfig(api_server.kubeconfig, api_server.context)
    for res in (*submariner.RESOURCES, *multicluster.RESOURCES):
        cluster.resource(CRDS).create(crd(res))
    for ns in (NS, "sample"):
        cluster.resource(NAMESPACES).create({"metadata": {"name": ns}})
    eventually(lambda: cluster.resource(submariner.ENDPOINTS).list(NS) is not None, what="CRDs served")
    cluster.resource(submariner.CLUSTERS).create({
        "metadata": {"name": "g2", "namespace": NS},
        "spec": {"cluster_id": "g2", "cluster_cidr": ["10.7.0.0/16"], "service_cidr": ["10.77.0.0/16"],
                 "global_cidr": ["120.2.0.0/24"], "color_codes": ["blue"]}})
    for name, cid, host, subnets in (("g2-gw", "g2", "g2-worker", ["120.2.0.0/24"]),
                                     ("g1-gw", "g1", "g1-worker", ["120.1.0.0/24"])):
        cluster.resource(submariner.ENDPOINTS).create({"metadata": {"name": name, "namespace": NS}, "spec": {
            "cluster_id": cid, "cable_name": f"submariner-cable-{cid}-192-0-2-1", "hostname": host,
            "subnets": subnets, "private_ip": "192.0.2.1", "public_ip": "", "nat_enabled": False,
            "backend": "vxlan"}})
    cluster.resource(submariner.GATEWAYS).create({"metadata": {"name": "g2-worker", "namespace": NS}})
    # an exported ClusterIP Service and an exported headless Service with one running pod
    services = cluster.resource(SERVICES)
    services.create({"metadata": {"name": "whereami-cs", "namespace": "sample"},
                     "spec": {"selector": {"app": "w"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    services.create({"metadata": {"name": "whereami-ss", "namespace": "sample"},
                     "spec": {"clusterIP": "None", "selector": {"app": "w"},
                              "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    pod = cluster.resource(PODS).create({"metadata": {"name": "whereami-0", "namespace": "sample",
                                                      "labels": {"app": "w"}},
                                         "spec": {"containers": [{"name": "w", "image": "whereami"}]}})
    pod["status"] = {"phase": "Running", "podIP": "10.7.1.7"}
    cluster.resource(PODS).update_status(pod)
    for name in ("whereami-cs", "whereami-ss"):
        cluster.resource(multicluster.SERVICE_EXPORTS).create({"metadata": {"name": name, "namespace": "sample"}})

    env = {**os.environ, "SUBMARINER_CLUSTERID": "g2", "SUBMARINER_NAMESPACE": NS, "NODE_NAME": "g2-worker",
           "SUBMARINER_GLOBALCIDR": "242.9.0.0/16"}  # the Cluster CR's 120.2.0.0/24 wins
    log_path = tmp_path / "globalnet.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(BIN / "submariner-globalnet"), "--kubeconfig", str(api_server.kubeconfig), "--context",
             api_server.context, "--netns", netns, "--cni-ip", "10.7.0.1", "--lease-timings", "3,2,0.2",
             "--cluster-cr-attempts", "1", "--metrics-port", "0"],
            env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        running = proc.stdout.readline()
        assert "submariner-globalnet running" in running, log_path.read_text()[-2000:]
        metrics_url = f"http://127.0.0.1:{running.rsplit('metrics_port=', 1)[1].strip()}/metrics"
        giips = cluster.resource(submariner.GLOBAL_INGRESS_IPS)
        pod_ip = eventually(lambda: giips.get("sample", "pod-whereami-0")["status"]["allocatedIP"],
                            what="headless pod global IP")
        cs_ip = eventually(lambda: giips.get("sample", "whereami-cs")["status"]["allocatedIP"],
                           what="ClusterIP global IP")
        assert len({pod_ip, cs_ip}) == 2 and {pod_ip, cs_ip} <= {"120.2.0.254", "120.2.0.253", "120.2.0.252"}
        internal = services.get("sample", internal_service_name("whereami-cs"))
        assert internal["spec"]["externalIPs"] == [cs_ip]
        assert internal["metadata"]["finalizers"] == ["submariner.io/globalnet-internal-service"]
        # deleted behind Globalnet's back (the finalizer holds it): it is let go and recreated
        services.delete("sample", internal_service_name("whereami-cs"))
        eventually(lambda: services.get("sample", internal_service_name("whereami-cs"))["metadata"]["uid"]
                   != internal["metadata"]["uid"], what="internal Service recreated")
        again = services.get("sample", internal_service_name("whereami-cs"))
        assert again["spec"]["externalIPs"] == [cs_ip] and not again["metadata"].get("deletionTimestamp")
        lines = eventually(lambda: (x := nat_rules(netns)) and any(f"-d {pod_ip}/32" in line for line in x) and x,
                           what="ingress rules in the netns")
        assert ("-A SM-GN-EGRESS-CLUSTER -s 10.7.0.0/16 -m mark --mark 0xc0000/0xc0000 -j SNAT "
                "--to-source 120.2.0.1-120.2.0.8") in lines
        assert (f"-A SM-GN-EGRESS-HDLS-PODS -s 10.7.1.7/32 -m mark --mark 0xc0000/0xc0000 -j SNAT "
                f"--to-source {pod_ip}") in lines
        assert f"-A SUBMARINER-GN-INGRESS -d {pod_ip}/32 -j DNAT --to-destination 10.7.1.7" in lines
        assert "-A SUBMARINER-GN-MARK -d 120.1.0.0/24 -j MARK --set-xmark 0xc0000/0xc0000" in lines
        # MTU probing on the gateway, in its own namespace only
        probing = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/sys/net/ipv4/tcp_mtu_probing"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        assert probing == "2"
        assert Path("/proc/sys/net/ipv4/tcp_mtu_probing").read_text().strip() == root_probing
        lease = cluster.resource(LEASES).get(NS, LEASE_NAME)
        assert lease["spec"]["holderIdentity"] == "g2-worker-submariner-gateway"
        # 8 cluster egress + 2 ingress + 1 health IP of the /24's 254
        text = eventually(lambda: (t := urllib.request.urlopen(metrics_url, timeout=5).read().decode())
                          and 'submariner_global_IP_allocated{cidr="120.2.0.0/24"} 11.0' in t and t,
                          what="pool metrics")
        assert 'submariner_global_IP_availability{cidr="120.2.0.0/24"} 243.0' in text
        assert "submariner_globalnet_leader 1.0" in text
        gw_ip = eventually(lambda: cluster.resource(submariner.GATEWAYS).get(NS, "g2-worker")["metadata"][
            "annotations"]["submariner.io/globalIp"], what="gateway health IP")
        assert {gw_ip, pod_ip, cs_ip} == {"120.2.0.254", "120.2.0.253", "120.2.0.252"}  # Allocate(1): highest free
        icmp = eventually(lambda: [line for line in nat_rules(netns) if f"-d {gw_ip}/32" in line], what="ICMP DNAT")
        assert icmp == [f"-A SUBMARINER-GN-INGRESS -d {gw_ip}/32 -p icmp -j DNAT --to-destination 10.7.0.1"]
        cgeip = cluster.resource(submariner.CLUSTER_GLOBAL_EGRESS_IPS).get("", "cluster-egress.submariner.io")
        assert cgeip["status"]["allocatedIPs"] == [f"120.2.0.{i}" for i in range(1, 9)]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log_path.read_text()[-2000:]
    left = nat_rules(netns)
    assert not any(line.startswith(("-A SUBMARINER-GN-INGRESS", "-A SUBMARINER-GN-EGRESS", "-A SM-GN-"))
                   for line in left), left
    assert cluster.resource(LEASES).get(NS, LEASE_NAME)["spec"].get("holderIdentity", "") == ""
