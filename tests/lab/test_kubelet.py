"""The lab kubelet and kube-proxy on one hand-built node: real namespaces, processes, packets and NAT rules.

Each test has its own lab instance (prefix from tmp_path), its own API server on loopback (the agent
talks to it from the root namespace; only pod programs run inside namespaces), and a clean-up that
stops what it started and deletes the namespaces it named, also when the test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from apiservers import RunningServer
from submariner.broker.kube import ENDPOINT_SLICES, SERVICES, Cluster, NotFound, Obj
from submariner.lab import kubelet
from submariner.lab.kubelet import PODS, NodeAgent, netns_exists
from submariner.lab.kubeproxy import KubeProxy
from submariner.lab.names import NETNS_ANNOTATION, Instance

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

CLUSTER = "kt"
POD_CIDR = "10.244.1.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
DOWNWARD_ENV = [
    {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
]


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (NotFound, KeyError, IndexError, TypeError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@dataclass
class Node:
    instance: Instance
    name: str
    netns: str
    ip: str
    kube: Cluster
    server: RunningServer
    agent: NodeAgent
    proxy: KubeProxy
    state_dir: Path

    def pods(self) -> Any:
        return self.kube.resource(PODS)

    def run_pod(self, name: str, image: str = "cr7258/whereami:v1", namespace: str = "default",
                **spec: Any) -> Obj:
        container: dict[str, Any] = {"name": spec.pop("container_name", name.split("-")[0]), "image": image,
                                     "env": spec.pop("env", DOWNWARD_ENV)}
        if "whereami" in image:
            container["ports"] = [{"containerPort": 80}]  # as the seed's manifests declare it
        container.update(spec.pop("container", {}))
        body = {"metadata": {"name": name, "namespace": namespace, "labels": spec.pop("labels", {"app": name})},
                "spec": {"nodeName": self.name, "containers": [container], **spec}}
        created: Obj = self.pods().create(body)
        return created

    def get(self, name: str, namespace: str = "default") -> Obj:
        pod: Obj = self.pods().get(namespace, name)
        return pod

    def wait_ready(self, name: str, namespace: str = "default", timeout: float = 20.0) -> Obj:
        def ready() -> Obj | None:
            pod = self.get(name, namespace)
            conds = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or ()}
            return pod if conds.get("Ready") == "True" else None

        pod: Obj = wait_for(f"pod {name} ready", ready, timeout)
        return pod

    def exec(self, pod: Obj, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        ns = pod["metadata"]["annotations"][NETNS_ANNOTATION]
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout)

    def curl(self, pod: Obj, url: str) -> dict[str, Any]:
        result = self.exec(pod, "curl", "-sS", "--max-time", "3", url)
        assert result.returncode == 0, f"curl {url} from {pod['metadata']['name']}: {result.stderr}"
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc

    def service(self, name: str, pods: list[Obj], port: int = 80, namespace: str = "default",
                **spec: Any) -> Obj:
        """A Service and (the controllers being another component) its EndpointSlice, written by hand."""
        svc: Obj = self.kube.resource(SERVICES).create({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": port, "targetPort": 80, "protocol": "TCP"}], **spec},
        })
        self.kube.resource(ENDPOINT_SLICES).create({
            "metadata": {"name": f"{name}-abcde", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": [p["status"]["podIP"]], "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "name": p["metadata"]["name"], "namespace": namespace}}
                          for p in pods],
        })
        return svc


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _lab_namespaces(instance: Instance) -> list[str]:
    prefix = instance.cluster_prefix(CLUSTER)
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix)) if os.path.isdir("/run/netns") else []


@pytest.fixture
def node(tmp_path: Path, api_server: RunningServer) -> Iterator[Node]:
    instance = Instance.for_home(tmp_path / "home")
    name = f"{CLUSTER}-worker"
    netns = instance.node_netns(CLUSTER, name)
    ip = str(instance.underlay.network_address + 10)
    kube = Cluster.from_kubeconfig(api_server.kubeconfig, api_server.context)
    agent: NodeAgent | None = None
    proxy: KubeProxy | None = None
    made: Node | None = None
    try:
        _sh("ip", "netns", "add", netns)
        _sh("ip", "-n", netns, "link", "set", "lo", "up")
        _sh("ip", "-n", netns, "addr", "add", f"{ip}/32", "dev", "lo")  # the node's address (no underlay here)
        _sh("ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        kube.resource(SERVICES).create({
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
        })
        agent = NodeAgent(instance, CLUSTER, name, netns, POD_CIDR, kube, tmp_path / "node",
                          api_server=("127.0.0.1", api_server.port))
        proxy = KubeProxy(instance, CLUSTER, netns, kube, cluster_cidr=CLUSTER_CIDR)
        made = Node(instance, name, netns, ip, kube, api_server, agent, proxy, tmp_path / "node")
        agent.start()
        proxy.start()
        yield made
    finally:
        if proxy is not None:
            proxy.stop()
        agents = [agent, made.agent if made is not None else None]  # a test may have replaced the agent
        for a in dict.fromkeys(a for a in agents if a is not None):
            a.stop(remove_pods=True)
        for ns in _lab_namespaces(instance):
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)
            shutil.rmtree(instance.netns_etc(ns), ignore_errors=True)
        kube.close()


# ------------------------------------------------------------------------------------------- tests


def test_pod_gets_namespace_address_dns_and_answers(node: Node) -> None:
    node.run_pod("web")
    pod = node.wait_ready("web")
    status = pod["status"]
    ip = status["podIP"]
    netns = pod["metadata"]["annotations"][NETNS_ANNOTATION]
    assert netns == node.instance.pod_netns(CLUSTER, pod["metadata"]["uid"]) and netns_exists(netns)
    assert ip.startswith("10.244.1.") and ip not in ("10.244.1.0", "10.244.1.1")
    assert status["phase"] == "Running" and status["hostIP"] == node.ip
    assert status["podIPs"] == [{"ip": ip}] and status["startTime"]
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert conds["PodScheduled"] == conds["Initialized"] == conds["ContainersReady"] == "True"
    cs = status["containerStatuses"][0]
    assert cs["ready"] and cs["restartCount"] == 0 and "running" in cs["state"]

    addr = subprocess.run(["ip", "-n", netns, "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True,
                          text=True, check=True).stdout
    assert f"{ip}/32" in addr
    routes = subprocess.run(["ip", "-n", netns, "route"], capture_output=True, text=True, check=True).stdout
    assert "default via 169.254.1.1 dev eth0" in routes and "169.254.1.1 dev eth0" in routes
    node_routes = subprocess.run(["ip", "-n", node.netns, "route"], capture_output=True, text=True).stdout
    veth = node.instance.veth("p", pod["metadata"]["uid"])
    assert f"{ip} dev {veth}" in node_routes and "default" not in node_routes

    answer = node.curl(pod, f"http://{ip}/")
    assert answer["pod_name"] == "web" and answer["namespace"] == "default"
    assert answer["node_name"] == node.name and answer["pod_ip"] == ip

    etc = node.instance.netns_etc(netns)
    assert (etc / "resolv.conf").read_text() == (
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\n"
        "options ndots:5\n")
    assert f"{ip}\tweb" in (etc / "hosts").read_text()
    # ip netns exec bind-mounts it: what a program in the pod reads as /etc/resolv.conf
    assert "nameserver 10.96.0.10" in node.exec(pod, "cat", "/etc/resolv.conf").stdout
    log = node.agent.log_path(pod["metadata"]["uid"], "web").read_text()
    assert "whereami: serving" in log


def test_pod_to_pod_clusterip_load_balancing_and_external_ip(node: Node) -> None:
    for i in range(3):
        node.run_pod(f"whereami-{i}", labels={"app": "whereami"})
    node.run_pod("client", image="cr7258/nettool:v1", env=[])
    backends = [node.wait_ready(f"whereami-{i}") for i in range(3)]
    client = node.wait_ready("client")
    client_ip = client["status"]["podIP"]

    direct = node.curl(client, f"http://{backends[0]['status']['podIP']}/")  # pod to pod on one node
    assert direct["pod_name"] == "whereami-0" and direct["source_ip"] == client_ip

    svc = node.service("whereami-cs", backends, externalIPs=["192.0.2.50"])
    cluster_ip = svc["spec"]["clusterIP"]

    def reaches_service() -> bool:
        return node.exec(client, "curl", "-s", "--max-time", "1", f"http://{cluster_ip}/").returncode == 0

    wait_for("ClusterIP rules", reaches_service, timeout=10)
    seen = [node.curl(client, f"http://{cluster_ip}/") for _ in range(30)]
    assert {s["pod_name"] for s in seen} == {"whereami-0", "whereami-1", "whereami-2"}
    assert {s["source_ip"] for s in seen} == {client_ip}  # inside the cluster CIDR: no SNAT
    ext = node.curl(client, "http://192.0.2.50/")  # externalIPs (what Globalnet's global IPs rely on)
    assert ext["pod_name"].startswith("whereami-")
    # hairpin: a backend reaching itself through the service is masqueraded (else it would drop the reply)
    own = [node.curl(backends[0], f"http://{cluster_ip}/") for _ in range(20)]
    assert any(o["pod_name"] == "whereami-0" and o["source_ip"] == node.ip for o in own)

    rules = subprocess.run(["ip", "netns", "exec", node.netns, "iptables-save", "-t", "nat"], capture_output=True,
                           text=True, check=True).stdout
    assert "--probability 0.33333333349" in rules and "-j KUBE-MARK-MASQ" in rules
    assert "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" in rules


def test_kube_proxy_does_not_reapply_identical_rules_and_drops_stale_chains(node: Node) -> None:
    node.run_pod("web")
    pod = node.wait_ready("web")
    node.service("web", [pod])
    wait_for("rules for web", lambda: "default/web:http cluster IP" in node.proxy.render().text)
    wait_for("applied", lambda: node.proxy._applied is not None and "default/web:http" in node.proxy._applied.text)
    applied = node.proxy.applied
    save = ["ip", "netns", "exec", node.netns, "iptables-save", "-t", "nat"]
    before = subprocess.run(save, capture_output=True, text=True, check=True).stdout
    assert node.proxy.sync() is False and node.proxy.sync() is False
    assert node.proxy.applied == applied
    after = subprocess.run(save, capture_output=True, text=True, check=True).stdout
    strip = [line for line in before.splitlines() if not line.startswith("#")]
    assert strip == [line for line in after.splitlines() if not line.startswith("#")]

    svc_chain = next(c for c in node.proxy.render().nat_chains if c.startswith("KUBE-SVC-"))
    node.kube.resource(SERVICES).delete("default", "web")
    wait_for("service chain removed", lambda: svc_chain not in subprocess.run(
        save, capture_output=True, text=True).stdout)
    assert "KUBE-SEP-" not in subprocess.run(save, capture_output=True, text=True).stdout


def test_readiness_probe_restart_and_backoff(node: Node) -> None:
    probe = {"readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 1}}
    node.run_pod("slow", env=[*DOWNWARD_ENV, {"name": "PORT", "value": "9090"}], container=probe)
    pod = wait_for("slow running", lambda: (p := node.get("slow"))["status"]["phase"] == "Running" and p)
    time.sleep(1.5)
    pod = node.get("slow")
    assert pod["status"]["containerStatuses"][0]["ready"] is False  # listens on 9090, probed on 8080
    conds = {c["type"]: c for c in pod["status"]["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "ContainersNotReady"

    node.run_pod("fast")
    node.wait_ready("fast")
    rt = node.agent.runtime("default", "fast")
    assert rt is not None and rt.containers[0].proc is not None
    os.kill(rt.containers[0].proc.pid, signal.SIGKILL)

    def not_ready_restarted() -> bool:
        cs = node.get("fast")["status"]["containerStatuses"][0]
        return cs["restartCount"] >= 1 or not cs["ready"]

    wait_for("fast not ready after its process died", not_ready_restarted, timeout=5)
    pod = node.wait_ready("fast")
    cs = pod["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 1 and cs["lastState"]["terminated"]["exitCode"] == 137


def test_unknown_image_is_image_pull_back_off(node: Node) -> None:
    node.run_pod("nope", image="example.com/acme/widget:1.2")

    def backoff() -> dict[str, Any] | None:
        st = node.get("nope").get("status") or {}
        waiting = ((st.get("containerStatuses") or [{}])[0].get("state") or {}).get("waiting") or {}
        return waiting if waiting.get("reason") == "ImagePullBackOff" else None

    waiting = wait_for("ImagePullBackOff", backoff)
    assert "image example.com/acme/widget:1.2 is not a lab image (known:" in waiting["message"]
    assert node.get("nope")["status"]["phase"] == "Pending"

    node.run_pod("operator", image="quay.io/submariner/submariner-operator:0.14.0")
    node.run_pod("gated", initContainers=[{"name": "wait", "image": "cr7258/nettool:v1"}])  # never completes

    def states() -> tuple[dict[str, Any], dict[str, Any]] | None:
        op = (node.get("operator").get("status") or {}).get("containerStatuses") or [{}]
        gated = node.get("gated").get("status") or {}
        return (op[0].get("state") or {}, gated) if op[0] and gated.get("initContainerStatuses") else None

    op_state, gated = wait_for("operator and gated statuses", states)
    assert op_state["waiting"]["reason"] == "CreateContainerError" and "not supported" in op_state["waiting"]["message"]
    assert gated["phase"] == "Pending" and "running" in gated["initContainerStatuses"][0]["state"]
    assert {c["type"]: c["status"] for c in gated["conditions"]}["Initialized"] == "False"
    assert "waiting" in gated["containerStatuses"][0]["state"]


def test_delete_removes_everything(node: Node) -> None:
    node.run_pod("gone")
    pod = node.wait_ready("gone")
    uid = pod["metadata"]["uid"]
    netns = pod["metadata"]["annotations"][NETNS_ANNOTATION]
    veth = node.instance.veth("p", uid)
    rt = node.agent.runtime("default", "gone")
    assert rt is not None and rt.containers[0].proc is not None
    pid = rt.containers[0].proc.pid
    node.pods().delete("default", "gone")

    def cleaned() -> bool:
        return not netns_exists(netns) and not node.instance.netns_etc(netns).exists()

    wait_for("pod namespace removed", cleaned)
    links = subprocess.run(["ip", "-n", node.netns, "-o", "link"], capture_output=True, text=True).stdout
    assert veth not in links
    assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not (node.state_dir / "pods" / uid).exists()
    assert node.agent.ipam.owners() == {}
    assert f"{pod['status']['podIP']}" not in subprocess.run(["ip", "-n", node.netns, "route"],
                                                            capture_output=True, text=True).stdout


def test_restart_keeps_addresses_and_removes_pods_deleted_while_down(node: Node) -> None:
    node.run_pod("stays")
    node.run_pod("leaves")
    stays = node.wait_ready("stays")
    leaves = node.wait_ready("leaves")
    node.agent.stop()  # processes stop; namespaces and addresses stay
    assert netns_exists(leaves["metadata"]["annotations"][NETNS_ANNOTATION])
    node.pods().delete("default", "leaves")

    node.agent = NodeAgent(node.instance, CLUSTER, node.name, node.netns, POD_CIDR, node.kube, node.state_dir,
                           api_server=("127.0.0.1", node.server.port))
    node.agent.start()
    assert not netns_exists(leaves["metadata"]["annotations"][NETNS_ANNOTATION])
    assert not node.instance.netns_etc(leaves["metadata"]["annotations"][NETNS_ANNOTATION]).exists()

    def answers() -> dict[str, Any] | None:
        pod = node.get("stays")
        result = node.exec(pod, "curl", "-s", "--max-time", "1", f"http://{pod['status']['podIP']}/")
        return json.loads(result.stdout) if result.returncode == 0 else None

    assert wait_for("stays answers again", answers)["pod_ip"] == stays["status"]["podIP"]
    assert list(node.agent.ipam.owners()) == [stays["status"]["podIP"]]


def test_configmap_volume_args_rewrite_and_reload(node: Node) -> None:
    corefile = ".:53 {{\n    hosts {{\n        {ip} app.example.test\n    }}\n    ready :8181\n}}\n"
    cms = node.kube.resource(kubelet.CONFIGMAPS)
    cms.create({"metadata": {"name": "coredns", "namespace": "kube-system"},
                "data": {"Corefile": corefile.format(ip="192.0.2.1")}})
    node.run_pod(
        "coredns", image="registry.k8s.io/coredns/coredns:v1.10.1", namespace="kube-system", env=[],
        dnsPolicy="Default",
        volumes=[{"name": "config-volume", "configMap": {"name": "coredns",
                                                          "items": [{"key": "Corefile", "path": "Corefile"}]}}],
        container={"args": ["-conf", "/etc/coredns/Corefile"],
                   "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
                   "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1}},
    )
    pod = node.wait_ready("coredns", "kube-system")
    ip = pod["status"]["podIP"]
    uid = pod["metadata"]["uid"]
    rt = node.agent.runtime("kube-system", "coredns")
    assert rt is not None and rt.containers[0].proc is not None
    cmdline = Path(f"/proc/{rt.containers[0].proc.pid}/cmdline").read_bytes().split(b"\0")
    materialised = node.state_dir / "pods" / uid / "volumes" / "config-volume" / "Corefile"
    assert str(materialised).encode() in cmdline and b"/etc/coredns/Corefile" not in cmdline

    def dig() -> str:
        return node.exec(pod, "dig", "+short", "+time=1", "+tries=1", f"@{ip}", "app.example.test").stdout.strip()

    assert wait_for("first answer", lambda: dig() == "192.0.2.1")
    cms.update({**cms.get("kube-system", "coredns"), "data": {"Corefile": corefile.format(ip="192.0.2.2")}})
    assert wait_for("reloaded answer", lambda: dig() == "192.0.2.2", timeout=15)
    assert materialised.read_text() == corefile.format(ip="192.0.2.2")
    status = node.get("coredns", "kube-system")["status"]["containerStatuses"][0]
    assert status["restartCount"] == 0, node.agent.log_path(uid, "coredns").read_text()


def test_in_cluster_environment_and_service_account(node: Node) -> None:
    node.run_pod("agent", image="cr7258/nettool:v1", env=[
        {"name": "GREETING", "value": "hi $(POD_NAME)"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "LATER", "value": "$(POD_NAME) at $(NODE)"},
    ])
    node.wait_ready("agent")
    rt = node.agent.runtime("default", "agent")
    assert rt is not None and rt.containers[0].proc is not None
    raw = Path(f"/proc/{rt.containers[0].proc.pid}/environ").read_bytes().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1" and env["KUBERNETES_SERVICE_PORT"] == str(node.server.port)
    assert env["GREETING"] == "hi $(POD_NAME)" and env["LATER"] == "agent at $(NODE)"
    sa_dir = Path(env["SUBMARINER_SERVICEACCOUNT_DIR"])
    assert (sa_dir / "namespace").read_text() == "default" and (sa_dir / "token").read_text()
    # Cluster.in_cluster() reads that directory: a pod's client reaches the API with the pod's token
    check = subprocess.run(
        [sys.executable, "-c", "from submariner.broker.kube import Cluster, NAMESPACES\n"
         "print(len(Cluster.in_cluster().resource(NAMESPACES).list()[0]))"],
        env={**os.environ, **{k: env[k] for k in env if k.startswith(("KUBERNETES_", "SUBMARINER_"))}},
        capture_output=True, text=True, timeout=30,
    )
    # authenticated as the pod's service account (then RBAC decides: the default account may not list)
    assert 'User "system:serviceaccount:default:default" cannot list' in check.stderr, check.stderr


def test_host_network_pod_runs_in_the_node_namespace(node: Node) -> None:
    node.run_pod("hostnet", hostNetwork=True, env=[*DOWNWARD_ENV, {"name": "PORT", "value": "8080"}],
                 container={"ports": [{"containerPort": 8080}]})
    pod = node.wait_ready("hostnet")
    assert pod["status"]["podIP"] == node.ip and pod["metadata"]["annotations"][NETNS_ANNOTATION] == node.netns
    result = subprocess.run(["ip", "netns", "exec", node.netns, "curl", "-sS", "--max-time", "3",
                             f"http://{node.ip}:8080/"], capture_output=True, text=True)
    assert json.loads(result.stdout)["pod_ip"] == node.ip
    assert not any(n.endswith(pod["metadata"]["uid"][:8]) for n in _lab_namespaces(node.instance))
