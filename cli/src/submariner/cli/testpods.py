"""Short-lived pods subctl starts for datapath checks (diagnose firewall), placed by node role and networking.

Upstream runs the check's command as the pod's command and reads the log; here the pod idles (the `nettest`
image; the lab maps it to its idle `nettool` program) and the commands run through pods/exec, so one pod
serves several commands and its output comes back with the exit code. Pods are deleted afterwards, also on
failure.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from submariner.broker.kube import Cluster, KubeError, Obj
from submariner.cli import DEFAULT_REPOSITORY, IMAGE_TAG
from submariner.cli import manifests as m
from submariner.cli.errors import CliError
from submariner.cli.podexec import exec_in_pod
from submariner.cli.resources import PODS

NETTEST = "submariner-nettest"


def nettest_image(submariner: Obj | None) -> str:
    """The nettest image of the deployment: its override, else its repository and version, else ours."""
    spec = (submariner or {}).get("spec") or {}
    override = (spec.get("imageOverrides") or {}).get(NETTEST)
    if override:
        return str(override)
    repository = str(spec.get("repository") or DEFAULT_REPOSITORY).rstrip("/")
    version = str(spec.get("version") or IMAGE_TAG)
    return f"{repository}/nettest:{version.removeprefix('v')}"


def _non_gateway_affinity() -> Obj:
    expr: Obj = {"key": m.GATEWAY_LABEL, "operator": "DoesNotExist"}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [expr]}]}}}


def pod_manifest(name: str, namespace: str, image: str, *, host_network: bool, node: str = "") -> Obj:
    """An idle, privileged pod (raw sockets need it) on `node`, or on any node without the gateway label."""
    spec: Obj = {
        "containers": [{"name": "nettest", "image": image, "imagePullPolicy": "IfNotPresent",
                        "securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}}],
        "restartPolicy": "Never", "hostNetwork": host_network, "terminationGracePeriodSeconds": 0,
        "tolerations": [{"operator": "Exists"}],
    }
    if node:
        spec["nodeName"] = node
    else:
        spec["affinity"] = _non_gateway_affinity()
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": "submariner-diagnose"}},
            "spec": spec}


@dataclass
class PodSet:
    """The pods of one check on one or more clusters; `cleanup` deletes them all."""

    timeout: float
    created: list[tuple[Cluster, str, str]] = field(default_factory=list)

    def start(self, cluster: Cluster, prefix: str, namespace: str, image: str, *, host_network: bool,
              node: str = "") -> Obj:
        """Create the pod and wait until it runs (an error names the pod, the node role and the timeout)."""
        name = f"{prefix}-{secrets.token_hex(3)}"
        cluster.resource(PODS).create(pod_manifest(name, namespace, image, host_network=host_network, node=node))
        self.created.append((cluster, namespace, name))
        deadline = time.monotonic() + self.timeout
        status: Obj = {}
        while time.monotonic() < deadline:
            pod = cluster.resource(PODS).get(namespace, name)
            status = pod.get("status") or {}
            if status.get("phase") == "Running" and status.get("podIP"):
                return pod
            if status.get("phase") in ("Failed", "Succeeded"):
                break
            time.sleep(0.5)
        where = f'node "{node}"' if node else "a non-gateway node"
        waiting = [str(((cs.get("state") or {}).get("waiting") or {}).get("message") or "")
                   for cs in status.get("containerStatuses") or []]
        detail = "; ".join(w for w in waiting if w)
        raise CliError(f"pod {namespace}/{name} ({image}) did not start on {where} within {self.timeout:.0f}s"
                       f" (phase {status.get('phase') or 'Pending'}{': ' + detail if detail else ''})")

    def cleanup(self) -> None:
        for cluster, namespace, name in self.created:
            with contextlib.suppress(KubeError):
                cluster.resource(PODS).delete(namespace, name)
        self.created.clear()


def run(cluster: Cluster, pod: Obj, command: list[str], timeout: float) -> tuple[int, str]:
    meta = pod["metadata"]
    return exec_in_pod(cluster, meta["namespace"], meta["name"], command, timeout)


@contextlib.contextmanager
def in_background(cluster: Cluster, pod: Obj, command: list[str], timeout: float) -> Iterator[list[tuple[int, str]]]:
    """Run `command` in the pod while the body runs; after the body the list holds its (exit code, output)."""
    result: list[tuple[int, str]] = []

    def target() -> None:
        try:
            result.append(run(cluster, pod, command, timeout))
        except Exception as e:
            result.append((1, f"exec failed: {e}"))

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    try:
        yield result
    finally:
        worker.join(timeout + 5)
