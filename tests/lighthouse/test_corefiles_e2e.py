"""The kind default Corefile and the seed's rewritten one, unchanged, as a cluster DNS in front of lighthouse-dns.

Everything runs inside a network namespace this test creates (root needed), so the Corefiles can keep their
real ports (:53, :8080, :8181, :9153): an API server, the lighthouse server (the operator's block, bound to the
"ClusterIP" 10.88.0.10 of the seed's forward block), and the cluster DNS with the seed's Corefile. Queries go
through the cluster DNS: `cluster.local` is answered by the `kubernetes` plugin, `clusterset.local` is
forwarded to lighthouse.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from submariner.lab.daemon import KIND_COREFILE  # kind's default Corefile, as the lab seeds it

BIN = Path(sys.executable).parent
NS = f"subm-t-dns{os.getpid()}"
LIGHTHOUSE_IP = "10.88.0.10"

SEED_COREFILE = f"""\
#lighthouse-start AUTO-GENERATED SECTION. DO NOT EDIT
clusterset.local:53 {{
    forward . {LIGHTHOUSE_IP}
}}
#lighthouse-end
{KIND_COREFILE}"""

LIGHTHOUSE_COREFILE = f"""\
clusterset.local:53 {{
bind {LIGHTHOUSE_IP}
lighthouse
errors
health :8081
ready :8182
prometheus :9154
}}
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")


def netns(*cmd: str, **kw: object) -> list[str]:
    return ["ip", "netns", "exec", NS, *cmd]


@pytest.fixture
def namespace() -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", NS, "addr", "add", f"{LIGHTHOUSE_IP}/32", "dev", "lo"], check=True)
        yield NS
    finally:
        subprocess.run(["ip", "netns", "delete", NS], check=False)


def _wait_line(proc: subprocess.Popen[str], needle: str, timeout: float = 20) -> None:
    import select

    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if needle in line:
            return
        if not line:
            break
        seen.append(line)
    raise AssertionError(f"process did not print {needle!r}: {''.join(seen)[-3000:]}")


def _dig(*args: str) -> list[str]:
    out = subprocess.run(netns("dig", "+short", "+time=2", "+tries=1", "@127.0.0.1", *args),
                         capture_output=True, text=True, timeout=15)
    return sorted(out.stdout.split())


def _dig_status(*args: str) -> str:
    out = subprocess.run(netns("dig", "+time=2", "+tries=1", "@127.0.0.1", *args), capture_output=True, text=True,
                         timeout=15).stdout
    return out.split("status: ", 1)[1].split(",", 1)[0] if "status: " in out else out


def _objects() -> list[dict[str, object]]:
    slice_labels = {
        "multicluster.kubernetes.io/service-name": "whereami-cs",
        "lighthouse.submariner.io/sourceNamespace": "sample",
        "multicluster.kubernetes.io/source-cluster": "c2",
        "endpointslice.kubernetes.io/managed-by": "lighthouse-agent.submariner.io",
        "lighthouse.submariner.io/is-headless": "false",
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sample"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "whereami-cs", "namespace": "sample"},
         "spec": {"selector": {"app": "whereami"}, "ports": [{"port": 80, "protocol": "TCP"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "whereami-cs-abcde", "namespace": "sample",
                      "labels": {"kubernetes.io/service-name": "whereami-cs"}},
         "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP", "name": ""}],
         "endpoints": [{"addresses": ["10.8.1.5"], "conditions": {"ready": True}}]},
        {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
         "metadata": {"name": "whereami-cs", "namespace": "sample"},
         "spec": {"type": "ClusterSetIP", "ports": [{"port": 80, "protocol": "TCP"}]},
         "status": {"clusters": [{"cluster": "c2"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "whereami-cs-c2", "namespace": "sample", "labels": slice_labels},
         "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP", "name": "http"}],
         "endpoints": [{"addresses": ["10.99.7.7"], "conditions": {"ready": True}}]},
    ]


def test_kind_and_seed_corefiles_unchanged(namespace: str, tmp_path: Path) -> None:
    procs: list[subprocess.Popen[str]] = []
    kubeconfig = tmp_path / "kubeconfig"

    def start(*cmd: str, needle: str) -> None:
        proc = subprocess.Popen(netns(*cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        _wait_line(proc, needle)

    try:
        start(str(BIN / "submariner-broker"), "serve", "--data-dir", str(tmp_path / "api"), "--listen",
              "127.0.0.1:6443", "--write-kubeconfig", str(kubeconfig), "--context", "c1", needle="serving")
        kubectl = netns(str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "kc"))
        crds = subprocess.run([str(BIN / "submariner-broker"), "crds"], capture_output=True, text=True, check=True)
        subprocess.run([*kubectl, "apply", "-f", "-"], input=crds.stdout, check=True, capture_output=True, text=True)
        for obj in _objects():
            subprocess.run([*kubectl, "create", "-f", "-"], input=json.dumps(obj), check=True, capture_output=True,
                           text=True)
        (tmp_path / "lh.Corefile").write_text(LIGHTHOUSE_COREFILE)
        (tmp_path / "Corefile").write_text(SEED_COREFILE)
        start(str(BIN / "lighthouse-dns"), "-conf", str(tmp_path / "lh.Corefile"), "-kubeconfig", str(kubeconfig),
              "-cluster-id", "c1", needle="serving")
        start(str(BIN / "lighthouse-dns"), "-conf", str(tmp_path / "Corefile"), "-kubeconfig", str(kubeconfig),
              needle="serving")

        deadline = time.monotonic() + 20
        cluster_ip = ""
        while time.monotonic() < deadline and not cluster_ip:
            svc = subprocess.run([*kubectl, "get", "svc", "-n", "sample", "whereami-cs", "-o",
                                  "jsonpath={.spec.clusterIP}"], capture_output=True, text=True).stdout
            cluster_ip = svc.strip()
        answer: list[str] = []
        while time.monotonic() < deadline and answer != [cluster_ip]:
            answer = _dig("whereami-cs.sample.svc.cluster.local")
            time.sleep(0.2)
        assert answer == [cluster_ip], "cluster.local through the kind Corefile"
        assert _dig("whereami-cs.sample.svc.clusterset.local") == ["10.99.7.7"], "clusterset.local via forward"
        assert _dig("c2.whereami-cs.sample.svc.clusterset.local") == ["10.99.7.7"]
        assert _dig_status("nope.sample.svc.clusterset.local") == "NXDOMAIN"
        assert _dig_status("nope.sample.svc.cluster.local") == "NXDOMAIN"
        ptr = _dig("-x", cluster_ip)
        assert ptr == ["whereami-cs.sample.svc.cluster.local."]
        health = subprocess.run(netns("python3", "-c", "import urllib.request as u;"
                                      "print(u.urlopen('http://127.0.0.1:8080/health').read().decode());"
                                      "print(u.urlopen('http://127.0.0.1:8181/ready').read().decode())"),
                                capture_output=True, text=True, timeout=10).stdout.split()
        assert health == ["OK", "OK"]
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
