"""One cluster's supervisor: the API server, the seed objects, the controllers and the node agents.

`sublab create` starts it detached, as the leader of its own session, so everything it starts (the API
server, pod programs) can be found and stopped together. It runs until SIGTERM, then stops what it started
in reverse order. The API server runs inside the control-plane node's namespace on the node's underlay
address, so it is reachable from every node and from the root namespace (through the underlay route).

    python -m submariner.lab.daemon --home HOME --cluster NAME
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml

from submariner.broker.api.meta import APIResource
from submariner.broker.kube import (
    CONFIGMAPS,
    ENDPOINT_SLICES,
    SERVICES,
    AlreadyExists,
    ClientFactory,
    Cluster,
    KubeError,
    NotFound,
    Obj,
    Unavailable,
)

from . import state
from .config import CONTROL_PLANE
from .controllers import Controllers
from .kubelet import NodeAgent
from .kubeproxy import KubeProxy
from .names import LOGS_ANNOTATION, NETNS_ANNOTATION, Instance
from .state import ClusterState, NodeState

log = logging.getLogger("submariner.lab.daemon")

NODES = APIResource("", "v1", "Node", "nodes", "node", False)
DEPLOYMENTS = APIResource("apps", "v1", "Deployment", "deployments", "deployment", True)
SERVICE_ACCOUNTS = APIResource("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", True)
CLUSTER_ROLES = APIResource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", False)
CLUSTER_ROLE_BINDINGS = APIResource("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
                                    "clusterrolebinding", False)

KUBERNETES_VERSION = "v1.26.3"  # what kind v0.18 (the seed's) runs; shown by `kubectl get nodes`
COREDNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.11.3"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
CONTROL_PLANE_TAINT = {"key": CONTROL_PLANE_LABEL, "effect": "NoSchedule"}

# kind's default Corefile, byte for byte (Submariner's operator prepends its clusterset.local block to it).
KIND_COREFILE = """\
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
"""

API_START_TIMEOUT = 30.0
STOP_GRACE = 10.0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ----------------------------------------------------------------------------------- seed objects


def node_object(cluster: ClusterState, node: NodeState) -> Obj:
    """A Node as kubeadm + the kubelet would register it in kind (labels, podCIDR, taint)."""
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        **node.labels,
    }
    spec: Obj = {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr], "providerID": f"sublab://{node.name}"}
    if node.role == CONTROL_PLANE:
        labels[CONTROL_PLANE_LABEL] = ""
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
        # kind keeps the control plane tainted when it has workers, so workloads land on the workers.
        if any(n.role != CONTROL_PLANE for n in cluster.nodes):
            spec["taints"] = [dict(CONTROL_PLANE_TAINT)]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels,
                     "annotations": {"lab.submariner.io/netns": node.netns}},
        "spec": spec,
    }


def node_status(node: NodeState) -> Obj:
    now = _now()

    def condition(kind: str, status: str, reason: str, message: str) -> Obj:
        return {"type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": now}

    return {
        "addresses": [{"type": "InternalIP", "address": node.address}, {"type": "Hostname", "address": node.name}],
        "capacity": {"cpu": str(os.cpu_count() or 1), "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"},
        "allocatable": {"cpu": str(os.cpu_count() or 1), "memory": "8Gi", "pods": "110",
                        "ephemeral-storage": "100Gi"},
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "nodeInfo": {
            "architecture": "amd64", "operatingSystem": "linux", "osImage": "sublab network namespace",
            "kernelVersion": platform.release(), "kubeletVersion": KUBERNETES_VERSION,
            "kubeProxyVersion": KUBERNETES_VERSION, "containerRuntimeVersion": "sublab://0.1.0",
            "machineID": "", "systemUUID": "", "bootID": "",
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
    }


def coredns_objects(cluster: ClusterState) -> list[tuple[APIResource, Obj]]:
    """The cluster DNS as kubeadm installs it in kind: its service account and RBAC (the `kubernetes` plugin
    lists and watches Services, EndpointSlices, Pods and Namespaces), ConfigMap, Deployment, Service kube-dns."""
    labels = {"k8s-app": "kube-dns"}
    account: Obj = {"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "coredns", "namespace": "kube-system"}}
    role: Obj = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "system:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
             "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    }
    binding: Obj = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:coredns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
        "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
    }
    configmap: Obj = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "data": {"Corefile": KIND_COREFILE},
    }
    deployment: Obj = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": dict(labels)},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": dict(labels)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": "coredns",
                    "dnsPolicy": "Default",
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": CONTROL_PLANE_LABEL, "effect": "NoSchedule"},
                    ],
                    "containers": [{
                        "name": "coredns",
                        "image": COREDNS_IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["-conf", "/etc/coredns/Corefile"],
                        "ports": [
                            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                        ],
                        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"}},
                        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"},
                                          "initialDelaySeconds": 60, "failureThreshold": 5},
                    }],
                    "volumes": [{"name": "config-volume", "configMap": {
                        "name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}}],
                },
            },
        },
    }
    service: Obj = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": "kube-dns", "namespace": "kube-system",
            "labels": {**labels, "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
            "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster.dns_ip,
            "clusterIPs": [cluster.dns_ip],
            "selector": dict(labels),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
            ],
        },
    }
    return [(SERVICE_ACCOUNTS, account), (CLUSTER_ROLES, role), (CLUSTER_ROLE_BINDINGS, binding),
            (CONFIGMAPS, configmap), (DEPLOYMENTS, deployment), (SERVICES, service)]


def kubernetes_service_objects(cluster: ClusterState) -> list[tuple[APIResource, Obj]]:
    """`default/kubernetes` (first service address, port 443) and its slice pointing at the API server."""
    service: Obj = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": cluster.kubernetes_ip, "clusterIPs": [cluster.kubernetes_ip],
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": cluster.api_port}]},
    }
    endpoint_slice: Obj = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {
            "kubernetes.io/service-name": "kubernetes",
            "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [cluster.control_plane.address], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": cluster.api_port, "protocol": "TCP"}],
    }
    return [(SERVICES, service), (ENDPOINT_SLICES, endpoint_slice)]


JOIN_DEFAULTS_CONFIGMAP = "submariner-join-defaults"


def cluster_config_objects(cluster: ClusterState) -> list[tuple[APIResource, Obj]]:
    """The records kubeadm leaves in every kind cluster: `kube-system/kubeadm-config` (ClusterConfiguration) and
    `kube-system/kube-proxy` (KubeProxyConfiguration). Tools read the cluster's CIDRs from them (subctl join's
    network discovery does), so the lab writes them as kind would.

    Plus `kube-system/submariner-join-defaults`: what `subctl join` uses for flags the user leaves out. The lab
    makes `vxlan` the cable driver there (upstream's default, libreswan, needs ESP, which this kernel lacks);
    join says so when it applies it."""
    cluster_configuration = yaml.safe_dump({
        "apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "ClusterConfiguration",
        "clusterName": cluster.name, "kubernetesVersion": KUBERNETES_VERSION,
        "controlPlaneEndpoint": f"{cluster.control_plane.name}:{cluster.api_port}",
        "apiServer": {"certSANs": ["localhost", cluster.control_plane.address],
                      "extraArgs": {"runtime-config": ""}},
        "controllerManager": {"extraArgs": {"enable-hostpath-provisioner": "true"}},
        "networking": {"dnsDomain": "cluster.local", "podSubnet": cluster.pod_subnet,
                       "serviceSubnet": cluster.service_subnet},
    }, sort_keys=False)
    proxy_configuration = yaml.safe_dump({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clusterCIDR": cluster.pod_subnet, "mode": "iptables",
        "iptables": {"masqueradeAll": False, "minSyncPeriod": "1s", "syncPeriod": "0s"},
        "conntrack": {"maxPerCore": 0},
    }, sort_keys=False)
    join_defaults: Obj = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": JOIN_DEFAULTS_CONFIGMAP, "namespace": "kube-system"},
        "data": {"cable-driver": "vxlan",
                 "reason": "the lab's kernel has no ESP (IPsec) support, so libreswan cannot carry traffic here"},
    }
    return [
        (CONFIGMAPS, join_defaults),
        (CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
                      "data": {"ClusterConfiguration": cluster_configuration}}),
        (CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "kube-proxy", "namespace": "kube-system",
                                   "labels": {"app": "kube-proxy"}},
                      "data": {"config.conf": proxy_configuration}}),
    ]


def _create_if_absent(kube: ClientFactory, res: APIResource, obj: Obj) -> None:
    """Seed objects are created once: later edits (the operator rewriting the Corefile) are the user's."""
    meta = obj["metadata"]
    client = kube.resource(res)
    try:
        client.get(meta.get("namespace", ""), meta["name"])
        return
    except NotFound:
        pass
    with contextlib.suppress(AlreadyExists):
        client.create(obj)
        log.info("seeded kind=%s name=%s/%s", res.kind, meta.get("namespace", ""), meta["name"])


def seed_nodes(kube: ClientFactory, cluster: ClusterState) -> None:
    """Register every node (labels merged into existing ones) and mark it Ready."""
    client = kube.resource(NODES)
    for node in cluster.nodes:
        desired = node_object(cluster, node)
        try:
            current = client.get("", node.name)
        except NotFound:
            current = client.create(desired)
        else:
            merged = dict(current)
            merged["metadata"] = {**current["metadata"], "labels": {
                **(current["metadata"].get("labels") or {}), **desired["metadata"]["labels"]}}
            merged["spec"] = {**(current.get("spec") or {}),
                              **{k: v for k, v in desired["spec"].items() if k != "taints"}}
            if merged != current:
                current = client.update(merged)
        current["status"] = node_status(node)
        client.update_status(current)


def seed(kube: ClientFactory, cluster: ClusterState) -> None:
    seed_nodes(kube, cluster)
    for res, obj in [*kubernetes_service_objects(cluster), *coredns_objects(cluster),
                     *cluster_config_objects(cluster)]:
        _create_if_absent(kube, res, obj)


def retry(fn: Callable[[], None], what: str, timeout: float, stop: threading.Event | None = None) -> None:
    """Call until it stops failing with a connection error (the server may still be warming up)."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            fn()
            return
        except Unavailable as exc:
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                raise
            log.info("retrying what=%s error=%s", what, exc.message)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


# ----------------------------------------------------------------------------------- the API server


def broker_command() -> list[str]:
    exe = Path(sys.executable).parent / "submariner-broker"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("submariner-broker")
    if found:
        return [found]
    return [sys.executable, "-c", "from submariner.broker.cli import main; main()"]


class ApiServer:
    """`submariner-broker serve` inside the control-plane namespace, listening on the node's address."""

    def __init__(self, instance: Instance, cluster: ClusterState) -> None:
        self.instance = instance
        self.cluster = cluster
        self.paths = state.paths(instance, cluster.name)
        self.proc: subprocess.Popen[bytes] | None = None
        self._drain: threading.Thread | None = None

    def argv(self) -> list[str]:
        cp = self.cluster.control_plane
        return [
            "ip", "netns", "exec", cp.netns, *broker_command(), "serve",
            "--data-dir", str(self.paths.apiserver_data),
            "--listen", f"{cp.address}:{self.cluster.api_port}",
            "--advertise-address", cp.address,
            "--tls-san", cp.address,
            "--tls-san", self.cluster.kubernetes_ip,
            "--write-kubeconfig", str(self.paths.kubeconfig),
            "--context", self.instance.context(self.cluster.name),
            "--service-cluster-ip-range", self.cluster.service_subnet,
            "--pod-exec-netns", f"{NETNS_ANNOTATION}={self.instance.cluster_prefix(self.cluster.name)}",
            "--pod-logs", f"{LOGS_ANNOTATION}={self.instance.cluster_dir(self.cluster.name)}",
        ]

    def start(self, timeout: float = API_START_TIMEOUT) -> None:
        """Start and wait for its "serving" line (it prints it once it listens)."""
        log_file = open(self.paths.apiserver_log, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=log_file)
        finally:
            log_file.close()
        assert self.proc.stdout is not None
        out = self.proc.stdout
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([out], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = out.readline()
            if not line or b"serving" in line:
                break
        if b"serving" not in line:
            self.stop()
            tail = _tail(self.paths.apiserver_log)
            raise RuntimeError(f"API server of {self.cluster.name} did not start: {tail}")
        log.info("apiserver serving pid=%d url=%s", self.proc.pid, self.cluster.api_url)
        self._drain = threading.Thread(target=_drain, args=(out, self.paths.apiserver_log), daemon=True,
                                       name="apiserver-stdout")
        self._drain.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            with contextlib.suppress(OSError):
                proc.stdout.close()
        self.proc = None


def _drain(stream: IO[bytes], path: Path) -> None:
    """Keep the server's stdout flowing into its log (a full pipe would block it)."""
    with contextlib.suppress(OSError, ValueError), open(path, "ab") as f:
        for line in stream:
            f.write(line)
            f.flush()


def _tail(path: Path, n: int = 600) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return " | ".join(text[-n:].splitlines()[-5:]) or "(empty log)"


# ----------------------------------------------------------------------------------- components


class Component:
    """A started controller set, node agent or kube-proxy: something with a blocking `stop()`."""

    def __init__(self, name: str, stop: Callable[[], Any]) -> None:
        self.name = name
        self._stop = stop

    def stop(self) -> None:
        try:
            self._stop()
        except Exception:
            log.exception("stopping %s failed", self.name)


class Daemon:
    def __init__(self, instance: Instance, cluster: str) -> None:
        self.instance = instance
        loaded = state.load(instance, cluster)
        if loaded is None:
            raise SystemExit(f"sublab daemon: no state for cluster {cluster!r} in {instance.home}")
        self.cluster = loaded
        self.paths = state.paths(instance, cluster)
        self.context = instance.context(cluster)
        self.api = ApiServer(instance, loaded)
        self.components: list[Component] = []
        self.stopping = asyncio.Event()
        self._clients: list[Cluster] = []

    def kube(self) -> Cluster:
        """A fresh client per component: each keeps its own connection pool and watches."""
        client = Cluster.from_kubeconfig(self.paths.kubeconfig, self.context)
        self._clients.append(client)
        return client

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        state.write_status(self.instance, self.cluster.name, "starting")
        try:
            await asyncio.to_thread(self.api.start)
            await asyncio.to_thread(retry, lambda: seed(self.kube(), self.cluster), "seed", 30.0)
            await self.start_components()
        except Exception as exc:
            log.exception("start-up failed")
            state.write_status(self.instance, self.cluster.name, "failed", str(exc).splitlines()[0][:500])
            await self.shutdown()
            return 1
        state.write_status(self.instance, self.cluster.name, "running")
        log.info("running cluster=%s api=%s", self.cluster.name, self.cluster.api_url)
        await self.supervise()
        state.write_status(self.instance, self.cluster.name, "stopping")
        await self.shutdown()
        state.write_status(self.instance, self.cluster.name, "stopped")
        return 0

    async def supervise(self) -> None:
        """Wait for SIGTERM; restart the API server if it dies (its store survives a crash).

        A daemon whose cluster was deleted without it (state or control-plane namespace gone: a delete that
        never learned its PID) stops by itself instead of restarting an API server into nothing.
        """
        failures: list[float] = []
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.5)
            if self.stopping.is_set():
                continue
            if not self.paths.state.exists() or not Path("/run/netns", self.cluster.control_plane.netns).exists():
                log.warning("cluster deleted under the daemon, stopping cluster=%s", self.cluster.name)
                self.stopping.set()
                continue
            if self.api.alive():
                continue
            now = time.monotonic()
            failures = [t for t in failures if now - t < 60] + [now]
            log.error("apiserver exited, restarting attempt=%d log=%s", len(failures), _tail(self.paths.apiserver_log))
            await asyncio.sleep(min(0.5 * len(failures), 5.0))
            try:
                await asyncio.to_thread(self.api.start)
            except Exception:
                log.exception("apiserver restart failed")

    async def start_components(self) -> None:
        """Controllers first, then a kube-proxy and a kubelet per node, all nodes together (each waits for its
        informers' first list; nodes do not depend on each other)."""
        await self._start("controllers", lambda: Controllers(self.kube(), cluster_name=self.cluster.name))
        cp = self.cluster.control_plane
        starts = []
        for node in self.cluster.nodes:
            node_dir = self.paths.node_dir(node.name)
            node_dir.mkdir(parents=True, exist_ok=True)
            starts.append(self._start(f"kube-proxy/{node.name}", functools.partial(
                KubeProxy, self.instance, self.cluster.name, node.netns, self.kube(),
                cluster_cidr=self.cluster.pod_subnet)))
            starts.append(self._start(f"kubelet/{node.name}", functools.partial(
                NodeAgent, self.instance, self.cluster.name, node.name, node.netns, node.pod_cidr, self.kube(),
                node_dir, api_server=(cp.address, self.cluster.api_port), node_ip=node.address,
                cluster_dns=self.cluster.dns_ip)))
        results = await asyncio.gather(*starts, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]

    async def _start(self, name: str, make: Callable[[], Any]) -> None:
        def start() -> Any:
            obj = make()
            obj.start()
            return obj

        obj = await asyncio.to_thread(start)
        self.components.append(Component(name, obj.stop))
        log.info("started component=%s", name)

    async def shutdown(self) -> None:
        """Node agents and kube-proxies together (each may wait out its pods' grace), then the controllers."""
        agents = [c for c in self.components if c.name != "controllers"]
        await asyncio.gather(*(asyncio.to_thread(c.stop) for c in agents))
        for component in self.components:
            if component.name == "controllers":
                await asyncio.to_thread(component.stop)
        log.info("stopped components=%s", ",".join(c.name for c in self.components))
        self.components.clear()
        await asyncio.to_thread(self.api.stop)
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m submariner.lab.daemon")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--cluster", required=True)
    args = parser.parse_args(argv)
    instance = Instance.for_home(args.home)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    log.info("starting cluster=%s home=%s pid=%d", args.cluster, instance.home, os.getpid())
    try:
        return asyncio.run(Daemon(instance, args.cluster).run())
    except KubeError as exc:
        log.error("kubernetes API error: %s", exc.message)
        return 1


if __name__ == "__main__":
    sys.exit(main())
