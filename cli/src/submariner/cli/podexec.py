"""Running a command in a pod through the API server's pods/exec (verify and benchmark use it)."""

from __future__ import annotations

import time
from typing import Any

from submariner.broker.kube import Cluster


def exec_in_pod(cluster: Cluster, namespace: str, pod: str, command: list[str], timeout: float) -> tuple[int, str]:
    """Exit code and combined output; a command still running after `timeout` seconds counts as failed.

    Each call gets its own ApiClient: `kubernetes.stream.stream` swaps the client's `request` for a WebSocket
    one while it runs, so concurrent execs (a sniffer beside a sender) on a shared client would leave it swapped
    and break every later REST call."""
    from kubernetes.client import ApiClient, CoreV1Api

    with ApiClient(cluster.configuration) as client:
        return _exec(CoreV1Api(client), namespace, pod, command, timeout)


def _exec(api: Any, namespace: str, pod: str, command: list[str], timeout: float) -> tuple[int, str]:
    from kubernetes.stream import stream

    resp = stream(api.connect_get_namespaced_pod_exec, pod, namespace, command=command, stderr=True, stdin=False,
                  stdout=True, tty=False, _preload_content=False)
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while resp.is_open() and time.monotonic() < deadline:
        resp.update(timeout=1)
        if resp.peek_stdout():
            out.append(resp.read_stdout())
        if resp.peek_stderr():
            out.append(resp.read_stderr())
    resp.close()
    code = resp.returncode
    return (code if code is not None else 1), "".join(out)
