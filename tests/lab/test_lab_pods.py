"""Pods on a lab cluster built by `sublab create` (root): pod-to-pod across nodes over the per-node pod CIDR
routes, `sublab exec` and `kubectl exec` running a command inside a pod's namespace with the pod's resolv.conf,
and pods reaching the underlay (another cluster's API server) through the CNI's masquerade as in kind."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from labharness import Lab, kind_config, lab_instance, needs_root

pytestmark = [
    pytest.mark.root,
    needs_root,
    pytest.mark.skipif(importlib.util.find_spec("submariner.lab.kubelet") is None, reason="no kubelet yet"),
]

POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: whereami}}}}
spec:
  nodeName: {node}
  tolerations: [{{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}}]
  containers:
  - name: whereami
    image: cr7258/whereami:v1
    ports: [{{containerPort: 80}}]
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with lab_instance(tmp_path) as lab:
        yield lab
    assert not lab.leftovers(), f"left behind: {lab.leftovers()}"


def test_pod_to_pod_across_nodes_and_exec(lab: Lab) -> None:
    cluster = lab.create(kind_config("pods", pod="10.9.0.0/16", service="10.99.0.0/16"))
    cp, worker = cluster.nodes
    for name, node in (("a", cp.name), ("b", worker.name)):
        lab.kubectl("pods", "apply", "-f", "-", input=POD.format(name=name, node=node))

    def running() -> dict[str, str] | None:
        pods = json.loads(lab.kubectl("pods", "get", "pods", "-o", "json").stdout)["items"]
        ips = {p["metadata"]["name"]: p["status"].get("podIP", "") for p in pods
               if p["status"].get("phase") == "Running"}
        return ips if len(ips) == 2 and all(ips.values()) else None

    ips = lab.wait_for("both pods Running", running, timeout=60)
    assert ips["a"].startswith("10.9.0.") and ips["b"].startswith("10.9.1.")  # each node's /24 slice

    # a (on the control plane) → b (on the worker) and back: routed by the nodes over the underlay.
    for src, dst in (("a", "b"), ("b", "a")):
        out = lab.sublab("exec", "--context", "lab-pods", src, "--", "curl", "-sS", "--max-time", "10",
                         f"http://{ips[dst]}/").stdout
        answer = json.loads(out)
        assert answer["source_ip"] == ips[src], answer  # no NAT between pods

    # The pod's own resolv.conf applies (cluster DNS, the usual search path).
    resolv = lab.sublab("exec", "--context", "lab-pods", "-n", "default", "a", "--", "cat", "/etc/resolv.conf").stdout
    assert f"nameserver {cluster.dns_ip}" in resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv

    missing = lab.sublab("exec", "--context", "lab-pods", "nope", "--", "true", check=False)
    assert missing.returncode == 1 and "nope" in missing.stderr

    # kubectl exec works like sublab exec (the API server's pods/exec, WebSocket).
    assert lab.kubectl("pods", "exec", "b", "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout.count(ips["b"]) == 1

    # A pod reaches another cluster's node (the underlay): no node routes back to pod CIDRs, so this needs
    # kindnet's masquerade; the other side sees the node's address, not the pod's.
    other = lab.create(kind_config("other", workers=0, pod="10.10.0.0/16", service="10.100.0.0/16"))
    out = lab.kubectl("pods", "exec", "a", "--", "curl", "-sk", "--max-time", "5", "-o", "/dev/null", "-w",
                      "%{http_code}", f"https://{other.control_plane.address}:6443/healthz", check=False)
    assert out.stdout == "200", (out.stdout, out.stderr)

    lab.sublab("delete", "clusters", "pods", "other")
