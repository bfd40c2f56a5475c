"""The lab's controllers against a real API server: workloads become pods, pods get nodes, Services endpoints.

No root and no network namespaces: a `FakeKubelet` plays the kubelet by writing pod status through the
`/status` subresource (Running, a pod IP, Ready), automatically or when a test says so. Manifests are the
seed walkthrough's (section 3.5), unchanged.
"""

from __future__ import annotations

import itertools
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from apiservers import RunningServer
from seed_manifests import WHEREAMI_CS as WHEREAMI_DEPLOYMENT_AND_SERVICE
from seed_manifests import WHEREAMI_SS as WHEREAMI_HEADLESS_AND_STATEFULSET
from submariner.broker.kube import (
    ENDPOINT_SLICES,
    NAMESPACES,
    SERVICES,
    Cluster,
    Conflict,
    Informer,
    NotFound,
    deep_copy,
)
from submariner.lab.controllers import Controllers
from submariner.lab.controllers.base import DAEMONSETS, DEPLOYMENTS, ENDPOINTS, NODES, PODS, STATEFULSETS

# --------------------------------------------------------------------------------------------- manifests


GATEWAY_DAEMONSET = """\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: submariner-gateway
  namespace: sample
spec:
  selector:
    matchLabels:
      app: submariner-gateway
  template:
    metadata:
      labels:
        app: submariner-gateway
    spec:
      hostNetwork: true
      nodeSelector:
        submariner.io/gateway: "true"
      tolerations:
      - operator: Exists
      containers:
      - name: submariner-gateway
        image: quay.io/submariner/submariner-gateway:0.14.0
"""

# --------------------------------------------------------------------------------------------- helpers


def eventually(pred: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not met in {timeout}s (last: {last!r})")


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or ())


class FakeKubelet:
    """Plays every node's kubelet: a bound pod becomes Running with an IP, and Ready if `auto`."""

    def __init__(self, kube: Cluster, *, auto: bool = True) -> None:
        self.pods = kube.resource(PODS)
        self.auto = auto
        self._ips = (f"10.244.{n // 250}.{n % 250 + 2}" for n in itertools.count())
        self._work: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self.informer = Informer(self.pods, name="fake-kubelet", on_add=self._seen,
                                 on_update=lambda _o, n: self._seen(n))
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.informer.start()
        self._thread.start()

    def stop(self) -> None:
        self._work.put(None)
        self.informer.stop()
        self._thread.join(5)

    def _seen(self, pod: dict[str, Any]) -> None:
        if (pod.get("spec") or {}).get("nodeName") and (pod.get("status") or {}).get("phase") == "Pending":
            self._work.put((pod["metadata"]["namespace"], pod["metadata"]["name"]))

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            self._start_pod(*item)

    def _start_pod(self, ns: str, name: str) -> None:
        def change(pod: dict[str, Any]) -> bool:
            st = pod.setdefault("status", {})
            if st.get("phase") != "Pending" or not pod["spec"].get("nodeName"):
                return False
            ip = next(self._ips)
            st.update(phase="Running", podIP=ip, podIPs=[{"ip": ip}], hostIP="198.18.0.10")
            st["conditions"] = [{"type": "PodScheduled", "status": "True"}]
            if self.auto:
                st["conditions"].append({"type": "Ready", "status": "True"})
            return True

        self._update(ns, name, change)

    def set_ready(self, ns: str, name: str, ready: bool = True) -> None:
        def change(pod: dict[str, Any]) -> bool:
            conds = [c for c in (pod.get("status") or {}).get("conditions") or () if c.get("type") != "Ready"]
            conds.append({"type": "Ready", "status": "True" if ready else "False"})
            pod.setdefault("status", {})["conditions"] = conds
            return True

        self._update(ns, name, change)

    def fail(self, ns: str, name: str) -> None:
        def change(pod: dict[str, Any]) -> bool:
            pod["status"] = {"phase": "Failed", "reason": "Evicted"}
            return True

        self._update(ns, name, change)

    def _update(self, ns: str, name: str, change: Callable[[dict[str, Any]], bool]) -> None:
        for _ in range(10):
            try:
                pod = deep_copy(self.pods.get(ns, name))
                if not change(pod):
                    return
                self.pods.update_status(pod)
                return
            except Conflict:
                continue
            except NotFound:
                return


def connect(server: RunningServer) -> Cluster:
    """A client with room for every watch (8 informers + the fake kubelet's) and the workers' requests;
    the default pool of 10 works but keeps discarding connections."""
    from kubernetes import config
    from kubernetes.client import Configuration

    cfg = Configuration()
    config.load_kube_config(config_file=str(server.kubeconfig), context=server.context, client_configuration=cfg,
                            persist_config=False)
    cfg.connection_pool_maxsize = 32
    return Cluster(cfg, name=server.context)


class Lab:
    """One API server + nodes + the controllers + a fake kubelet."""

    def __init__(self, server: RunningServer, *, auto_ready: bool) -> None:
        self.server = server
        self.kube = connect(server)
        self.kube.resource(NAMESPACES).create({"metadata": {"name": "sample"}})
        self.add_node("c1-control-plane", control_plane=True)
        self.add_node("c1-worker")
        self.add_node("c1-worker2")
        self.ctl = Controllers(self.kube, cluster_name="c1")
        self.kubelet = FakeKubelet(self.kube, auto=auto_ready)

    def start(self) -> None:
        self.ctl.start()
        assert self.ctl.wait_synced(10)
        self.kubelet.start()

    def stop(self) -> None:
        self.kubelet.stop()
        self.ctl.stop()
        self.kube.close()

    def add_node(self, name: str, *, control_plane: bool = False, ready: bool = True,
                 labels: dict[str, str] | None = None) -> None:
        node: dict[str, Any] = {
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
        }
        if control_plane:
            node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = ""
            node["spec"]["taints"] = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
        self.kube.resource(NODES).create(node)

    def apply(self, manifest: str) -> None:
        self.server.kubectl("apply", "-f", "-", input=manifest)

    def pods(self, prefix: str = "", ns: str = "sample") -> list[dict[str, Any]]:
        items, _ = self.kube.resource(PODS).list(ns)
        return sorted((p for p in items if p["metadata"]["name"].startswith(prefix)),
                      key=lambda p: p["metadata"]["name"])

    def get(self, res: Any, name: str, ns: str = "sample") -> dict[str, Any]:
        return self.kube.resource(res).get(ns, name)

    def slices(self, service: str, ns: str = "sample") -> list[dict[str, Any]]:
        items, _ = self.kube.resource(ENDPOINT_SLICES).list(ns, label_selector=f"kubernetes.io/service-name={service}")
        return items

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the controllers have nothing to do and the kubelet has caught up."""
        assert self.ctl.wait_idle(timeout, quiet=0.3)

    def global_rv(self) -> int:
        """The server's global resourceVersion: it moves on every write to any object."""
        _, rv = self.kube.resource(NAMESPACES).list()
        return int(rv)


@pytest.fixture
def lab(api_server: RunningServer) -> Iterator[Lab]:
    lab = Lab(api_server, auto_ready=True)
    lab.start()
    yield lab
    lab.stop()


@pytest.fixture
def manual_lab(api_server: RunningServer) -> Iterator[Lab]:
    """Pods become Running but never Ready on their own: the test decides readiness."""
    lab = Lab(api_server, auto_ready=False)
    lab.start()
    yield lab
    lab.stop()


def rollout_status(lab: Lab, what: str) -> None:
    """`kubectl rollout status` judges our status fields. kubectl >= 1.32 watches with sendInitialEvents
    (WatchList), which our API server does not implement yet, so the classic list+watch is forced."""
    env = {"KUBE_FEATURE_WatchListClient": "false"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        out = lab.server.kubectl("rollout", "status", "-n", "sample", what, "--timeout=10s").stdout
    assert "successfully rolled out" in out or "roll out complete" in out, out


def hashes(pods: list[dict[str, Any]]) -> set[str]:
    return {p["metadata"]["labels"]["pod-template-hash"] for p in pods}


# --------------------------------------------------------------------------------------------- Deployments


def test_seed_deployment_scales_and_reports_status(lab: Lab) -> None:
    lab.apply(WHEREAMI_DEPLOYMENT_AND_SERVICE)
    eventually(lambda: (lab.get(DEPLOYMENTS, "whereami").get("status") or {}).get("readyReplicas") == 3,
               what="3 ready replicas")
    pods = lab.pods("whereami-")
    assert len(pods) == 3
    deploy = lab.get(DEPLOYMENTS, "whereami")
    (h,) = hashes(pods)
    for p in pods:
        assert re.fullmatch(rf"whereami-{h}-[bcdfghjklmnpqrstvwxz2456789]{{5}}", p["metadata"]["name"])
        assert p["metadata"]["labels"]["app"] == "whereami"
        (ref,) = p["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "Deployment", "whereami", deploy["metadata"]["uid"], True)
        assert p["spec"]["nodeName"] in ("c1-worker", "c1-worker2")  # scheduled, never on the tainted node
        assert p["spec"]["containers"][0]["env"][1]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    lab.settle()
    st = lab.get(DEPLOYMENTS, "whereami")["status"]
    assert {k: st[k] for k in ("replicas", "readyReplicas", "availableReplicas", "updatedReplicas")} == {
        "replicas": 3, "readyReplicas": 3, "availableReplicas": 3, "updatedReplicas": 3}
    assert st["observedGeneration"] == deploy["metadata"]["generation"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Available"]["status"] == "True"
    assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == ("True", "NewReplicaSetAvailable")
    out = lab.server.kubectl("get", "deploy", "-n", "sample").stdout
    assert re.search(r"whereami\s+3/3\s+3\s+3", out), out
    rollout_status(lab, "deploy/whereami")

    lab.server.kubectl("patch", "-n", "sample", "deploy", "whereami", "-p", '{"spec":{"replicas":5}}')
    eventually(lambda: (lab.get(DEPLOYMENTS, "whereami").get("status") or {}).get("readyReplicas") == 5)
    assert len(lab.pods("whereami-")) == 5
    lab.server.kubectl("patch", "-n", "sample", "deploy", "whereami", "-p", '{"spec":{"replicas":1}}')
    eventually(lambda: len(lab.pods("whereami-")) == 1, what="scaled down to 1")
    eventually(lambda: lab.get(DEPLOYMENTS, "whereami")["status"].get("replicas") == 1)
    lab.settle()
    assert len(lab.pods("whereami-")) == 1
    assert re.search(r"whereami\s+1/1", lab.server.kubectl("get", "deploy", "-n", "sample").stdout)


def test_deployment_rolling_update_respects_surge_and_unavailability(manual_lab: Lab) -> None:
    lab = manual_lab
    lab.apply(WHEREAMI_DEPLOYMENT_AND_SERVICE)

    def ready_all() -> None:
        lab.settle()
        for p in lab.pods("whereami-"):
            if not is_ready(p) and p.get("status", {}).get("phase") == "Running":
                lab.kubelet.set_ready("sample", p["metadata"]["name"])

    eventually(lambda: len([p for p in lab.pods("whereami-") if p["status"].get("phase") == "Running"]) == 3)
    ready_all()
    eventually(lambda: (lab.get(DEPLOYMENTS, "whereami").get("status") or {}).get("availableReplicas") == 3)
    (old_hash,) = hashes(lab.pods("whereami-"))

    # Watch every pod event from here on: the total must never exceed replicas + maxSurge (25% of 3 → 1)
    # and the number of ready pods never drop below replicas - maxUnavailable (25% of 3 → 0).
    worst = {"max_total": 0, "min_ready": 99}
    lock = threading.Lock()

    def observe(*_: Any) -> None:
        with lock:
            pods = [p for p in watcher.list() if p["metadata"]["name"].startswith("whereami-")]
            worst["max_total"] = max(worst["max_total"], len(pods))
            worst["min_ready"] = min(worst["min_ready"], sum(1 for p in pods if is_ready(p)))

    watcher = Informer(lab.kube.resource(PODS), namespace="sample")
    watcher.start()
    assert watcher.wait_for_sync(5)
    watcher.add_handlers(on_add=observe, on_update=observe, on_delete=observe)

    lab.server.kubectl("set", "env", "-n", "sample", "deploy/whereami", "VERSION=2")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready_all()
        pods = lab.pods("whereami-")
        st = lab.get(DEPLOYMENTS, "whereami").get("status") or {}
        if len(pods) == 3 and old_hash not in hashes(pods) and st.get("availableReplicas") == 3 \
                and st.get("updatedReplicas") == 3 and st.get("replicas") == 3:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"rollout did not finish: {[p['metadata']['name'] for p in lab.pods('whereami-')]}")
    watcher.stop()
    (new_hash,) = hashes(lab.pods("whereami-"))
    assert new_hash != old_hash
    assert all(p["spec"]["containers"][0]["env"][-1] == {"name": "VERSION", "value": "2"}
               for p in lab.pods("whereami-"))
    assert worst["max_total"] == 4
    assert worst["min_ready"] >= 3
    rollout_status(lab, "deploy/whereami")


def test_deleting_a_deployment_deletes_its_pods(lab: Lab) -> None:
    lab.apply(WHEREAMI_DEPLOYMENT_AND_SERVICE)
    eventually(lambda: len(lab.pods("whereami-")) == 3)
    lab.server.kubectl("delete", "-n", "sample", "deploy", "whereami")
    eventually(lambda: not lab.pods("whereami-"), what="pods garbage-collected")
    lab.settle()
    assert not lab.pods("whereami-")


def test_failed_pod_is_replaced(lab: Lab) -> None:
    lab.apply(WHEREAMI_DEPLOYMENT_AND_SERVICE)
    eventually(lambda: (lab.get(DEPLOYMENTS, "whereami").get("status") or {}).get("readyReplicas") == 3)
    victim = lab.pods("whereami-")[0]["metadata"]["name"]
    lab.kubelet.fail("sample", victim)
    eventually(lambda: victim not in {p["metadata"]["name"] for p in lab.pods("whereami-")})
    eventually(lambda: (lab.get(DEPLOYMENTS, "whereami").get("status") or {}).get("readyReplicas") == 3)


# --------------------------------------------------------------------------------------------- StatefulSets


def test_seed_statefulset_ordered_creation_identity_and_scale_down(manual_lab: Lab) -> None:
    lab = manual_lab
    lab.apply(WHEREAMI_HEADLESS_AND_STATEFULSET)
    for i in range(3):
        name = f"whereami-{i}"
        eventually(lambda name=name: any(p["metadata"]["name"] == name and p["status"].get("phase") == "Running"
                                         for p in lab.pods("whereami-")), what=f"{name} running")
        lab.settle()
        # OrderedReady: the next ordinal waits for this one to be Ready.
        assert [p["metadata"]["name"] for p in lab.pods("whereami-")] == [f"whereami-{j}" for j in range(i + 1)]
        lab.kubelet.set_ready("sample", name)

    eventually(lambda: (lab.get(STATEFULSETS, "whereami").get("status") or {}).get("readyReplicas") == 3)
    sts = lab.get(STATEFULSETS, "whereami")
    for i, p in enumerate(lab.pods("whereami-")):
        assert p["spec"]["hostname"] == f"whereami-{i}"
        assert p["spec"]["subdomain"] == "whereami-ss"
        assert p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == f"whereami-{i}"
        assert p["metadata"]["labels"]["app"] == "whereami-ss"
        assert p["metadata"]["ownerReferences"][0]["uid"] == sts["metadata"]["uid"]
    lab.settle()
    st = lab.get(STATEFULSETS, "whereami")["status"]
    assert (st["replicas"], st["readyReplicas"], st["currentReplicas"], st["updatedReplicas"]) == (3, 3, 3, 3)
    assert st["currentRevision"] == st["updateRevision"]
    assert re.search(r"whereami\s+3/3", lab.server.kubectl("get", "sts", "-n", "sample").stdout)

    # The headless Service's slice names each pod by its hostname, for whereami-0.whereami-ss.sample.svc...
    (eps,) = lab.slices("whereami-ss")
    assert eps["ports"] == [{"name": "whereami", "port": 80, "protocol": "TCP"}]
    assert eps["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    assert sorted((e["hostname"], e["targetRef"]["name"], e["conditions"]["ready"]) for e in eps["endpoints"]) == [
        (f"whereami-{i}", f"whereami-{i}", True) for i in range(3)]

    # Scale down removes the highest ordinal first, one at a time.
    gone: list[str] = []
    watcher = Informer(lab.kube.resource(PODS), namespace="sample",
                       on_delete=lambda p: gone.append(p["metadata"]["name"]))
    watcher.start()
    assert watcher.wait_for_sync(5)
    lab.server.kubectl("patch", "-n", "sample", "sts", "whereami", "-p", '{"spec":{"replicas":1}}')
    eventually(lambda: [p["metadata"]["name"] for p in lab.pods("whereami-")] == ["whereami-0"])
    eventually(lambda: len(gone) == 2)
    watcher.stop()
    assert gone == ["whereami-2", "whereami-1"]
    eventually(lambda: lab.get(STATEFULSETS, "whereami")["status"]["replicas"] == 1)


def test_statefulset_parallel_and_rolling_update(lab: Lab) -> None:
    manifest = WHEREAMI_HEADLESS_AND_STATEFULSET.replace(
        'serviceName: "whereami-ss"', 'serviceName: "whereami-ss"\n  podManagementPolicy: Parallel')
    docs = list(yaml.safe_load_all(manifest))
    assert docs[1]["spec"]["podManagementPolicy"] == "Parallel"
    lab.kubelet.auto = False
    lab.apply(manifest)
    # Parallel: all three exist before any is Ready.
    eventually(lambda: len(lab.pods("whereami-")) == 3, what="three pods at once")
    assert not any(is_ready(p) for p in lab.pods("whereami-"))
    lab.kubelet.auto = True
    for p in lab.pods("whereami-"):
        eventually(lambda p=p: lab.get(PODS, p["metadata"]["name"])["status"].get("phase") == "Running")
        lab.kubelet.set_ready("sample", p["metadata"]["name"])
    eventually(lambda: (lab.get(STATEFULSETS, "whereami").get("status") or {}).get("readyReplicas") == 3)
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in lab.pods("whereami-")}
    revision = lab.get(STATEFULSETS, "whereami")["status"]["updateRevision"]

    lab.server.kubectl("set", "env", "-n", "sample", "sts/whereami", "VERSION=2")

    def rolled() -> bool:
        sts = lab.get(STATEFULSETS, "whereami")
        st = sts.get("status") or {}
        return (st.get("observedGeneration") == sts["metadata"]["generation"] and st.get("updatedReplicas") == 3
                and st.get("readyReplicas") == 3 and st.get("currentRevision") == st.get("updateRevision"))

    eventually(rolled, timeout=30, what="rolling update done")
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in lab.pods("whereami-")}
    assert sorted(after) == sorted(before)  # same identities, new pods
    assert all(after[n] != before[n] for n in after)
    assert lab.get(STATEFULSETS, "whereami")["status"]["updateRevision"] != revision


# --------------------------------------------------------------------------------------------- DaemonSets


def test_daemonset_follows_node_labels(lab: Lab) -> None:
    lab.apply(GATEWAY_DAEMONSET)
    lab.settle()
    assert not lab.pods("submariner-gateway-")
    st = lab.get(DAEMONSETS, "submariner-gateway")["status"]
    assert st["desiredNumberScheduled"] == 0

    lab.server.kubectl("label", "node", "c1-worker", "submariner.io/gateway=true")
    (pod,) = eventually(lambda: lab.pods("submariner-gateway-"), what="gateway pod")
    assert pod["spec"]["nodeName"] == "c1-worker"
    assert pod["spec"]["hostNetwork"] is True
    assert re.fullmatch(r"submariner-gateway-[a-z0-9]{5}", pod["metadata"]["name"])
    eventually(lambda: lab.get(DAEMONSETS, "submariner-gateway")["status"].get("numberReady") == 1)
    st = lab.get(DAEMONSETS, "submariner-gateway")["status"]
    assert (st["desiredNumberScheduled"], st["currentNumberScheduled"], st["numberAvailable"]) == (1, 1, 1)

    # The control-plane node is tainted, but the gateway tolerates everything.
    lab.server.kubectl("label", "node", "c1-control-plane", "submariner.io/gateway=true")
    eventually(lambda: sorted(p["spec"]["nodeName"] for p in lab.pods("submariner-gateway-")) == [
        "c1-control-plane", "c1-worker"])

    lab.server.kubectl("label", "node", "c1-worker", "submariner.io/gateway-")
    eventually(lambda: [p["spec"]["nodeName"] for p in lab.pods("submariner-gateway-")] == ["c1-control-plane"],
               what="pod removed from the unlabelled node")
    eventually(lambda: lab.get(DAEMONSETS, "submariner-gateway")["status"].get("desiredNumberScheduled") == 1)


def test_daemonset_without_toleration_skips_tainted_control_plane(lab: Lab) -> None:
    manifest = GATEWAY_DAEMONSET.replace("name: submariner-gateway\n  namespace", "name: route-agent\n  namespace")
    manifest = manifest.replace("      nodeSelector:\n        submariner.io/gateway: \"true\"\n", "")
    manifest = manifest.replace("      tolerations:\n      - operator: Exists\n", "")
    doc = yaml.safe_load(manifest)
    assert "tolerations" not in doc["spec"]["template"]["spec"] and doc["metadata"]["name"] == "route-agent"
    lab.apply(manifest)
    eventually(lambda: sorted(p["spec"]["nodeName"] for p in lab.pods("route-agent-")) == [
        "c1-worker", "c1-worker2"])
    lab.add_node("c1-worker3")
    eventually(lambda: len(lab.pods("route-agent-")) == 3, what="pod on the new node")
    eventually(lambda: lab.get(DAEMONSETS, "route-agent")["status"].get("numberReady") == 3)


# --------------------------------------------------------------------------------------------- scheduler


def bare_pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "sample", "labels": {"run": name}},
            "spec": {"containers": [{"name": name, "image": "cr7258/nettool:v1"}], **spec}}


def test_scheduler_spreads_and_honours_selectors_and_taints(lab: Lab) -> None:
    lab.apply(WHEREAMI_DEPLOYMENT_AND_SERVICE.replace("replicas: 3", "replicas: 6"))
    eventually(lambda: len([p for p in lab.pods("whereami-") if p["spec"].get("nodeName")]) == 6)
    nodes = sorted(p["spec"]["nodeName"] for p in lab.pods("whereami-"))
    assert nodes == ["c1-worker"] * 3 + ["c1-worker2"] * 3

    # `kubectl run` makes a bare pod; it lands on the emptier node.
    pods = lab.kube.resource(PODS)
    lab.server.kubectl("run", "client", "-n", "sample", "--image=cr7258/nettool:v1")
    eventually(lambda: lab.get(PODS, "client")["spec"].get("nodeName") in ("c1-worker", "c1-worker2"))

    # Nothing matches: Pending with PodScheduled=False/Unschedulable, and a reason per node.
    pods.create(bare_pod("ssd", nodeSelector={"disktype": "ssd"}))

    def unschedulable() -> dict[str, Any] | None:
        pod = lab.get(PODS, "ssd")
        for c in pod["status"].get("conditions") or ():
            if c["type"] == "PodScheduled" and c["status"] == "False":
                return c
        return None

    cond = eventually(unschedulable, what="PodScheduled=False")
    assert cond["reason"] == "Unschedulable"
    assert cond["message"].startswith("0/3 nodes are available: ")
    assert "3 node(s) didn't match Pod's node affinity/selector" in cond["message"]
    assert lab.get(PODS, "ssd")["status"]["phase"] == "Pending"
    assert not lab.get(PODS, "ssd")["spec"].get("nodeName")

    # Labelling a node makes it fit.
    lab.server.kubectl("label", "node", "c1-worker2", "disktype=ssd")
    eventually(lambda: lab.get(PODS, "ssd")["spec"].get("nodeName") == "c1-worker2")
    eventually(lambda: [c["status"] for c in lab.get(PODS, "ssd")["status"]["conditions"]
                        if c["type"] == "PodScheduled"] == ["True"], what="PodScheduled=True")

    # The control-plane taint: only a tolerating pod may go there.
    pods.create(bare_pod("cp", nodeSelector={"node-role.kubernetes.io/control-plane": ""}))
    cond = eventually(lambda: next((c for c in lab.get(PODS, "cp")["status"].get("conditions") or ()
                                    if c["type"] == "PodScheduled" and c["status"] == "False"), None))
    assert "1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }" in cond["message"]
    pods.create(bare_pod("cp-ok", nodeSelector={"node-role.kubernetes.io/control-plane": ""}, tolerations=[
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]))
    eventually(lambda: lab.get(PODS, "cp-ok")["spec"].get("nodeName") == "c1-control-plane")

    # NotReady nodes get nothing; a node that becomes Ready is considered.
    lab.add_node("c1-worker3", ready=False)
    pods.create(bare_pod("w3", nodeSelector={"kubernetes.io/hostname": "c1-worker3"}))
    cond = eventually(lambda: next((c for c in lab.get(PODS, "w3")["status"].get("conditions") or ()
                                    if c["type"] == "PodScheduled" and c["status"] == "False"), None))
    assert "1 node(s) were not ready" in cond["message"]
    node = lab.get(NODES, "c1-worker3", ns="")
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    lab.kube.resource(NODES).update_status(node)
    eventually(lambda: lab.get(PODS, "w3")["spec"].get("nodeName") == "c1-worker3")


# --------------------------------------------------------------------------------------------- EndpointSlices


def test_endpointslices_follow_pod_readiness(lab: Lab) -> None:
    lab.apply(WHEREAMI_DEPLOYMENT_AND_SERVICE)
    eventually(lambda: len([e for s in lab.slices("whereami-cs") for e in s.get("endpoints") or ()
                            if e["conditions"]["ready"]]) == 3, what="3 ready endpoints")
    (eps,) = lab.slices("whereami-cs")
    service = lab.get(SERVICES, "whereami-cs")
    assert re.fullmatch(r"whereami-cs-[a-z0-9]{5}", eps["metadata"]["name"])
    assert eps["addressType"] == "IPv4"
    assert eps["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    assert eps["metadata"]["ownerReferences"][0]["uid"] == service["metadata"]["uid"]
    assert eps["ports"] == [{"name": "", "port": 80, "protocol": "TCP"}]
    pods = {p["metadata"]["name"]: p for p in lab.pods("whereami-")}
    for e in eps["endpoints"]:
        pod = pods[e["targetRef"]["name"]]
        assert e["addresses"] == [pod["status"]["podIP"]]
        assert e["nodeName"] == pod["spec"]["nodeName"]
        assert e["targetRef"] == {"kind": "Pod", "namespace": "sample", "name": pod["metadata"]["name"],
                                  "uid": pod["metadata"]["uid"]}
        assert "hostname" not in e  # Deployment pods have no subdomain
    ep = lab.get(ENDPOINTS, "whereami-cs")
    assert sorted(a["ip"] for a in ep["subsets"][0]["addresses"]) == sorted(
        p["status"]["podIP"] for p in pods.values())
    assert ep["subsets"][0]["ports"] == [{"port": 80, "protocol": "TCP"}]

    # Readiness flips flow through to the slice and to Endpoints' notReadyAddresses.
    victim = sorted(pods)[0]
    lab.kubelet.set_ready("sample", victim, False)

    def ready_of(name: str) -> bool | None:
        for s in lab.slices("whereami-cs"):
            for e in s.get("endpoints") or ():
                if e["targetRef"]["name"] == name:
                    return bool(e["conditions"]["ready"])
        return None

    eventually(lambda: ready_of(victim) is False, what="endpoint not ready")
    ep = lab.get(ENDPOINTS, "whereami-cs")
    assert [a["targetRef"]["name"] for a in ep["subsets"][0]["notReadyAddresses"]] == [victim]
    assert len(ep["subsets"][0]["addresses"]) == 2
    lab.kubelet.set_ready("sample", victim, True)
    eventually(lambda: ready_of(victim) is True, what="endpoint ready again")

    # Scale to zero: one empty placeholder slice remains, Endpoints has no subsets.
    lab.server.kubectl("patch", "-n", "sample", "deploy", "whereami", "-p", '{"spec":{"replicas":0}}')
    eventually(lambda: [s.get("endpoints") for s in lab.slices("whereami-cs")] == [None]
               or [s.get("endpoints") for s in lab.slices("whereami-cs")] == [[]], what="placeholder slice")
    eventually(lambda: not lab.get(ENDPOINTS, "whereami-cs").get("subsets"))
    out = lab.server.kubectl("get", "endpointslices", "-n", "sample").stdout
    assert "whereami-cs-" in out


def test_endpointslice_named_target_port_and_selector_changes(lab: Lab) -> None:
    lab.apply(WHEREAMI_HEADLESS_AND_STATEFULSET.replace("replicas: 3", "replicas: 2"))
    eventually(lambda: (lab.get(STATEFULSETS, "whereami").get("status") or {}).get("readyReplicas") == 2)
    services = lab.kube.resource(SERVICES)
    services.create({
        "metadata": {"name": "by-name", "namespace": "sample"},
        "spec": {"selector": {"app": "whereami-ss"},
                 "ports": [{"name": "web", "port": 8080, "targetPort": "whereami", "protocol": "TCP"},
                           {"name": "missing", "port": 9090, "targetPort": "nope", "protocol": "TCP"}]},
    })
    (eps,) = eventually(lambda: [s for s in lab.slices("by-name") if len(s.get("endpoints") or ()) == 2])
    assert eps["ports"] == [{"name": "web", "port": 80, "protocol": "TCP"}]  # resolved by container port name
    assert all("hostname" not in e for e in eps["endpoints"])  # subdomain is whereami-ss, not by-name

    # A pod relabelled out of the selector leaves the slice.
    pods = lab.kube.resource(PODS)
    pods.patch("sample", "whereami-1", {"metadata": {"labels": {"app": "other"}}})
    eventually(lambda: [e["targetRef"]["name"] for s in lab.slices("by-name") for e in s.get("endpoints") or ()]
               == ["whereami-0"], what="relabelled pod removed")

    # Dropping the selector hands endpoints to the user: our slice and Endpoints go away.
    svc = services.get("sample", "by-name")
    del svc["spec"]["selector"]
    services.update(svc)
    eventually(lambda: not lab.slices("by-name"), what="managed slices removed")
    eventually(lambda: _missing(lambda: lab.get(ENDPOINTS, "by-name")), what="Endpoints removed")

    # Deleting the Service removes its slices (ownerReferences).
    lab.server.kubectl("delete", "-n", "sample", "svc", "whereami-ss")
    eventually(lambda: not lab.slices("whereami-ss"))


def _missing(get: Callable[[], Any]) -> bool:
    try:
        get()
    except NotFound:
        return True
    return False


# --------------------------------------------------------------------------------------------- steady state


def test_no_write_churn_in_steady_state(lab: Lab) -> None:
    lab.apply(WHEREAMI_DEPLOYMENT_AND_SERVICE)
    lab.apply(WHEREAMI_HEADLESS_AND_STATEFULSET.replace("name: whereami\n  namespace", "name: web\n  namespace"))
    lab.server.kubectl("label", "node", "c1-worker", "submariner.io/gateway=true")
    lab.apply(GATEWAY_DAEMONSET)
    eventually(lambda: (lab.get(DEPLOYMENTS, "whereami").get("status") or {}).get("availableReplicas") == 3)
    eventually(lambda: (lab.get(STATEFULSETS, "web").get("status") or {}).get("readyReplicas") == 3)
    eventually(lambda: (lab.get(DAEMONSETS, "submariner-gateway").get("status") or {}).get("numberReady") == 1)
    eventually(lambda: len([e for s in lab.slices("whereami-ss") for e in s.get("endpoints") or ()]) == 3)
    lab.settle()
    time.sleep(0.5)
    lab.settle()

    before = lab.global_rv()
    # Force every controller to reconcile everything again: nothing may be written.
    for c in lab.ctl.all:
        for res in (DEPLOYMENTS, STATEFULSETS, DAEMONSETS, SERVICES, PODS):
            for obj in lab.ctl.caches[res].list():
                c.enqueue(obj)
    lab.settle()
    time.sleep(1.0)
    lab.settle()
    assert lab.global_rv() == before, "controllers wrote in a steady state"
