"""The route agent as the lab runs it: a hostNetwork DaemonSet pod per node (in-cluster credentials, RBAC),
programming each node namespace from the Endpoints in its cluster, and cleaning its RouteAgent up on exit."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labharness import Lab, kind_config, lab_instance, needs_root

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    needs_root,
    pytest.mark.skipif(importlib.util.find_spec("submariner.lab.kubelet") is None, reason="no lab kubelet"),
]

BIN = Path(sys.executable).parent
NS = "submariner-operator"

RBAC = f"""\
apiVersion: v1
kind: ServiceAccount
metadata: {{name: submariner-routeagent, namespace: {NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: submariner-routeagent}}
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
- apiGroups: [submariner.io]
  resources: [endpoints]
  verbs: [get, list, watch]
- apiGroups: [submariner.io]
  resources: [routeagents, routeagents/status]
  verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: submariner-routeagent}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: submariner-routeagent}}
subjects: [{{kind: ServiceAccount, name: submariner-routeagent, namespace: {NS}}}]
"""

DAEMONSET = f"""\
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: submariner-routeagent, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: submariner-routeagent}}}}
  template:
    metadata: {{labels: {{app: submariner-routeagent}}}}
    spec:
      hostNetwork: true
      serviceAccountName: submariner-routeagent
      terminationGracePeriodSeconds: 1
      tolerations: [{{operator: Exists}}]
      containers:
      - name: submariner-routeagent
        image: quay.io/submariner/submariner-route-agent:0.18.0
        securityContext: {{privileged: true}}
        env:
        - {{name: SUBMARINER_NAMESPACE, value: {NS}}}
        - {{name: SUBMARINER_CLUSTERID, value: ra}}
        - {{name: SUBMARINER_CLUSTERCIDR, value: 10.8.0.0/16}}
        - {{name: SUBMARINER_SERVICECIDR, value: 100.8.0.0/16}}
        - {{name: SUBMARINER_GLOBALCIDR, value: ""}}
        - {{name: SUBMARINER_NETWORKPLUGIN, value: generic}}
        - {{name: NODE_NAME, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
"""


def endpoint(cluster: str, host: str, ip: str, subnets: list[str]) -> str:
    name = f"submariner-cable-{cluster}-{ip.replace('.', '-')}"
    return json.dumps({"apiVersion": "submariner.io/v1", "kind": "Endpoint",
                       "metadata": {"name": f"{cluster}-{name}", "namespace": NS},
                       "spec": {"cluster_id": cluster, "cable_name": name, "hostname": host, "private_ip": ip,
                                "public_ip": "", "nat_enabled": False, "subnets": subnets, "backend": "libreswan",
                                "backend_config": {}}})


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with lab_instance(tmp_path) as lab:
        yield lab
    assert not lab.leftovers(), f"left behind: {lab.leftovers()}"


def test_route_agent_daemonset_programs_the_nodes(lab: Lab) -> None:
    cluster = lab.create(kind_config("ra", pod="10.8.0.0/16", service="100.8.0.0/16"))
    cp, worker = cluster.nodes
    crds = subprocess.run([str(BIN / "submariner-broker"), "crds"], capture_output=True, text=True, check=True)
    lab.kubectl("ra", "apply", "-f", "-", input=crds.stdout)
    lab.kubectl("ra", "create", "namespace", NS)
    lab.kubectl("ra", "apply", "-f", "-", input=RBAC)
    lab.kubectl("ra", "create", "-f", "-", input=endpoint("ra", cp.name, cp.address, ["100.8.0.0/16", "10.8.0.0/16"]))
    lab.kubectl("ra", "create", "-f", "-", input=endpoint("c2", "c2-gw", "172.31.0.5", ["10.9.0.0/16"]))
    lab.kubectl("ra", "apply", "-f", "-", input=DAEMONSET)

    octets = cp.address.split(".")[1:]
    vtep = "240." + ".".join(octets)

    def worker_routed() -> bool:
        out = lab.in_netns(worker.netns, "ip", "route", "show", "10.9.0.0/16").stdout
        return f"via {vtep} dev vx-submariner proto static" in out

    def gateway_routed() -> bool:
        out = lab.in_netns(cp.netns, "ip", "route", "show", "table", "150", check=False).stdout  # absent at first
        return "10.9.0.0/16 dev eth0 proto static scope link src 10.8.0.1" in out

    lab.wait_for("the worker's route to c2 through vx-submariner", worker_routed, timeout=60)
    lab.wait_for("the gateway's table 150", gateway_routed, timeout=30)
    assert "SUBMARINER-POSTROUTING" in lab.in_netns(worker.netns, "iptables-save", "-t", "nat").stdout
    assert "KUBE-SERVICES" in lab.in_netns(worker.netns, "iptables-save", "-t", "nat").stdout  # kube-proxy's kept

    def route_agents() -> list[str]:
        out = lab.kubectl("ra", "get", "routeagents.submariner.io", "-n", NS, "-o", "json").stdout
        return sorted(item["metadata"]["name"] for item in json.loads(out)["items"])

    lab.wait_for("a RouteAgent per node", lambda: route_agents() == sorted([cp.name, worker.name]), timeout=30)
    lab.kubectl("ra", "delete", "daemonset", "-n", NS, "submariner-routeagent")
    lab.wait_for("the RouteAgents deleted on clean exit", lambda: route_agents() == [], timeout=30)
