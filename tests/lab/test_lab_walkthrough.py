"""The issue's acceptance, through the commands a user types: the seed's c2 config with `sublab`, the seed's
whereami manifests applied unchanged with kubectl, and from a `kubectl run` nettool pod `curl whereami-cs.sample`
and `nslookup whereami-ss.sample.svc.cluster.local` (root)."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from labharness import Lab, lab_instance, needs_root
from seed_manifests import WHEREAMI_CS, WHEREAMI_SS

pytestmark = [
    pytest.mark.root,
    needs_root,
    pytest.mark.skipif(any(importlib.util.find_spec(f"submariner.lab.{m}") is None for m in ("kubelet", "kubeproxy")),
                       reason="no kubelet / kube-proxy yet"),
]

# WALKTHROUGH.md §3.1, verbatim (the article's $SERVER_IP filled in).
SEED_C2 = """\
kind: Cluster
name: c2
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane
- role: worker
networking:
  apiServerAddress: 192.168.1.20
  podSubnet: "10.9.0.0/16"
  serviceSubnet: "10.99.0.0/16"
"""



@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with lab_instance(tmp_path) as lab:
        yield lab
    assert not lab.leftovers(), f"left behind: {lab.leftovers()}"


def test_seed_walkthrough_in_one_cluster(lab: Lab) -> None:
    lab.sublab("create", "cluster", "--config", "-", input=SEED_C2)
    lab.kubectl("c2", "create", "namespace", "sample")
    lab.kubectl("c2", "apply", "-f", "-", input=WHEREAMI_CS)
    lab.kubectl("c2", "apply", "-f", "-", input=WHEREAMI_SS)
    lab.kubectl("c2", "run", "client", "--image=cr7258/nettool:v1")

    def ready_pods() -> list[str] | None:
        pods = json.loads(lab.kubectl("c2", "get", "pods", "-A", "-o", "json").stdout)["items"]
        ready = [p["metadata"]["name"] for p in pods
                 if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
        return ready if len(ready) == len(pods) == 2 + 3 + 3 + 1 else None

    names = lab.wait_for("every pod Ready", ready_pods, timeout=90)
    assert {"whereami-0", "whereami-1", "whereami-2", "client"} <= set(names)

    wide = lab.kubectl("c2", "-n", "sample", "get", "pods", "-o", "wide").stdout
    assert re.search(r"whereami-0\s+1/1\s+Running\s+\d+\s+\S+\s+10\.9\.\d+\.\d+\s+c2-worker", wide), wide
    svc = lab.kubectl("c2", "-n", "sample", "get", "svc").stdout
    assert re.search(r"whereami-cs\s+ClusterIP\s+10\.99\.\d+\.\d+", svc) and "whereami-ss" in svc, svc

    def curl_cs() -> dict[str, str] | None:
        out = lab.sublab("exec", "--context", "lab-c2", "client", "--", "curl", "-sS", "--max-time", "5",
                         "whereami-cs.sample", check=False)
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout.startswith("{") else None

    answer = lab.wait_for("curl whereami-cs.sample", curl_cs, timeout=30)
    assert answer["pod_name"].startswith("whereami-") and answer["node_name"] == "c2-worker"

    def nslookup_ss() -> set[str] | None:
        out = lab.sublab("exec", "--context", "lab-c2", "client", "--", "nslookup",
                         "whereami-ss.sample.svc.cluster.local", check=False).stdout
        ips = set(re.findall(r"Address: (10\.9\.\d+\.\d+)", out))
        return ips if len(ips) == 3 else None

    pods = json.loads(lab.kubectl("c2", "-n", "sample", "get", "pods", "-l", "app=whereami-ss", "-o",
                                  "json").stdout)["items"]
    assert lab.wait_for("nslookup whereami-ss", nslookup_ss, timeout=30) == {p["status"]["podIP"] for p in pods}

    lab.sublab("delete", "clusters", "c2")
