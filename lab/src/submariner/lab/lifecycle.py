"""Creating and deleting a lab cluster: state, network, the cluster daemon, kubeconfig contexts.

Create writes the state first and undoes everything on failure; delete works from names as much as from
the state, so it also finishes what a crash left half built or half deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from submariner.broker.api.meta import APIResource
from submariner.broker.apiserver.pki import remove_kubeconfig_context, write_kubeconfig
from submariner.broker.kube import Cluster, KubeError

from . import state, topology
from .config import ClusterConfig
from .names import Instance
from .state import ClusterState

log = logging.getLogger(__name__)

PODS = APIResource("", "v1", "Pod", "pods", "pod", True)
NODES = APIResource("", "v1", "Node", "nodes", "node", False)

DAEMON_START_TIMEOUT = 60.0
_PRIVATE_ENV = ("KUBECONFIG", "SUBLAB_CLUSTER_NAME")

Say = Callable[[str], None]


class LabError(RuntimeError):
    """A user-facing failure: one line naming the cluster, what went wrong and what to do."""


def _quiet(_: str) -> None:
    pass


def user_kubeconfig(explicit: Path | None = None) -> Path:
    """Where `lab-<name>` contexts go, as kind decides it: --kubeconfig, $KUBECONFIG's first path, ~/.kube/config."""
    if explicit is not None:
        return explicit
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    if first:
        return Path(first).expanduser()
    return Path.home() / ".kube" / "config"


# ----------------------------------------------------------------------------------- create


def create_cluster(
    instance: Instance,
    config: ClusterConfig,
    *,
    wait: float = 60.0,
    kubeconfig: Path | None = None,
    say: Say = _quiet,
) -> ClusterState:
    """Build the cluster and return its state once its API server answers and its nodes exist.

    With `wait` > 0 and pods able to run (kubelet present), also wait up to `wait` seconds for the cluster
    DNS pods to be Running. Anything that fails is undone (the cluster is deleted again).
    """
    name = config.name
    with state.locked(instance):
        if instance.cluster_dir(name).exists():
            raise LabError(f'cluster "{name}" already exists; delete it first with: '
                           f"sublab delete cluster --name {name}")
        leftovers = topology.cluster_netns(instance, name)
        if leftovers:
            raise LabError(f'namespaces of an earlier cluster "{name}" remain ({", ".join(leftovers[:3])}); '
                           f"remove them with: sublab delete cluster --name {name}")
        cluster = state.plan(instance, config)
        state.save(instance, cluster)
    started = time.monotonic()
    try:
        with state.locked(instance):
            topology.ensure_cluster(instance, cluster)
        log.info("network ready cluster=%s seconds=%.2f", name, time.monotonic() - started)
        say(f"Preparing nodes {'📦 ' * len(cluster.nodes)}".rstrip())
        start_daemon(instance, cluster)
        wait_running(instance, cluster, max(wait, DAEMON_START_TIMEOUT))
        log.info("control plane running cluster=%s seconds=%.2f", name, time.monotonic() - started)
        say("Starting control-plane 🕹️")
        path = user_kubeconfig(kubeconfig)
        export_kubeconfig(instance, cluster, path)
        cluster.user_kubeconfig = str(path)
        state.save(instance, cluster)
        if wait > 0:
            if wait_dns(instance, cluster, wait):
                log.info("cluster DNS running cluster=%s seconds=%.2f", name, time.monotonic() - started)
                say(f"Waiting ≤ {format_duration(wait)} for cluster DNS = Running ⏳")
            else:
                say(f"Cluster DNS not Running after {format_duration(wait)}; "
                    f"see: kubectl --context {instance.context(name)} -n kube-system get pods")
    except BaseException:
        with contextlib.suppress(Exception):
            delete_cluster(instance, name, kubeconfig=kubeconfig)
        raise
    return cluster


def start_daemon(instance: Instance, cluster: ClusterState) -> None:
    """The cluster daemon, detached in its own session (it outlives this command)."""
    paths = state.paths(instance, cluster.name)
    # The caller's Kubernetes settings must not leak into the cluster (pods inherit from the daemon).
    env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV and not k.startswith("KUBERNETES_")}
    with open(paths.daemon_log, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "submariner.lab.daemon", "--home", str(instance.home), "--cluster", cluster.name],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True, close_fds=True,
            cwd="/", env=env,
        )
    cluster.daemon_pid = proc.pid
    cluster.daemon_start = state.process_start(proc.pid)
    state.save(instance, cluster)
    _reap()
    _started.append(proc)


# Daemons started by this process: the CLI exits and leaves them to init, but a long-lived caller (tests,
# the benchmark) must reap the ones that ended, or they stay zombies.
_started: list[subprocess.Popen[bytes]] = []


def _reap() -> None:
    _started[:] = [p for p in _started if p.poll() is None]


def wait_running(instance: Instance, cluster: ClusterState, timeout: float) -> None:
    """Until the daemon reports its API server up and the nodes registered; fail fast if it died."""
    deadline = time.monotonic() + timeout
    paths = state.paths(instance, cluster.name)
    while True:
        status = state.read_status(instance, cluster.name)
        phase = status.get("phase")
        if phase == "running":
            return
        if phase == "failed":
            raise LabError(f'cluster "{cluster.name}" failed to start: {status.get("message")} '
                           f"(log: {paths.daemon_log})")
        if not state.process_alive(cluster.daemon_pid, cluster.daemon_start):
            raise LabError(f'the daemon of cluster "{cluster.name}" exited: {_tail(paths.daemon_log)}')
        if time.monotonic() > deadline:
            raise LabError(f'cluster "{cluster.name}" did not start within {timeout:.0f}s (log: {paths.daemon_log})')
        time.sleep(0.03)


def export_kubeconfig(instance: Instance, cluster: ClusterState, path: Path) -> None:
    """Merge `lab-<name>` into the user's kubeconfig (current context, like kind) and the lab's own one."""
    data = state.paths(instance, cluster.name).apiserver_data
    ca_pem = (data / "ca.crt").read_bytes()
    token = (data / "admin-token").read_text().strip()
    context = instance.context(cluster.name)
    write_kubeconfig(path, server=cluster.api_url, ca_pem=ca_pem, token=token, context=context)
    write_kubeconfig(instance.kubeconfig, server=cluster.api_url, ca_pem=ca_pem, token=token, context=context,
                     set_current=False)


def client(instance: Instance, cluster: str) -> Cluster:
    """An admin client of a lab cluster (its own kubeconfig, not the user's)."""
    return Cluster.from_kubeconfig(state.paths(instance, cluster).kubeconfig, instance.context(cluster))


def wait_dns(instance: Instance, cluster: ClusterState, timeout: float) -> bool:
    """Whether every cluster DNS pod (kube-system, k8s-app=kube-dns) is Running within `timeout`."""
    deadline = time.monotonic() + timeout
    kube = client(instance, cluster.name)
    try:
        while time.monotonic() < deadline:
            try:
                pods, _ = kube.resource(PODS).list("kube-system", label_selector="k8s-app=kube-dns")
            except KubeError:
                pods = []
            if pods and all((p.get("status") or {}).get("phase") == "Running" for p in pods):
                return True
            time.sleep(0.1)
        return False
    finally:
        kube.close()


# ----------------------------------------------------------------------------------- delete


def delete_cluster(instance: Instance, name: str, *, kubeconfig: Path | None = None) -> bool:
    """Remove everything of the cluster: processes, namespaces, files, kubeconfig contexts.

    Works on a running, a half-built and a crashed cluster; returns whether there was anything to delete.
    """
    cluster = state.load(instance, name)
    found = cluster is not None or instance.cluster_dir(name).exists()
    if cluster is not None:
        stop_daemon(cluster)
    with state.locked(instance):
        names = topology.cluster_netns(instance, name)
        found = found or bool(names)
        topology.delete_cluster(instance, name)
        context = instance.context(name)
        paths_to_clean = {user_kubeconfig(kubeconfig), instance.kubeconfig}
        if cluster is not None and cluster.user_kubeconfig:
            paths_to_clean.add(Path(cluster.user_kubeconfig))
        for path in paths_to_clean:
            with contextlib.suppress(OSError, ValueError, TimeoutError):
                remove_kubeconfig_context(path, context)
        shutil.rmtree(instance.cluster_dir(name), ignore_errors=True)
        if not state.cluster_names(instance) and not topology.instance_in_use(instance):
            topology.delete_underlay(instance)
            with contextlib.suppress(FileNotFoundError):
                if _kubeconfig_empty(instance.kubeconfig):
                    instance.kubeconfig.unlink()
    return found


def stop_daemon(cluster: ClusterState, grace: float = 0.0) -> None:
    """Stop the daemon and everything left in its session.

    `grace` 0 (what delete uses) is kind's `docker rm -f`: SIGKILL at once; the cluster is being removed,
    so nothing needs an orderly shutdown (DNS pods alone would take their 5 s lameduck), and delete removes
    what the processes leave by name. With `grace`, SIGTERM first so the daemon stops what it started.
    Only our processes: the daemon is recognised by PID *and* start time, its session members by the
    session id it created; if the PID now belongs to someone else, its session is left alone.
    """
    pid, start = cluster.daemon_pid, cluster.daemon_start
    if not pid:
        return
    ours = state.process_alive(pid, start)
    reused = not ours and state.process_alive(pid, None)
    if ours:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if state.wait_gone([pid], max(grace, 5.0)):
            log.warning("daemon did not stop in time, killing pid=%d", pid)
    _reap()
    if reused:
        return
    members = [p for p in state.session_members(pid) if p != os.getpid()]
    if members:
        state.signal_pids(members, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        left = state.wait_gone(members, min(grace, 3.0))
        if left:
            state.signal_pids(left, signal.SIGKILL)
            state.wait_gone(left, 5.0)
    _reap()


def _kubeconfig_empty(path: Path) -> bool:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(doc, dict) and not doc.get("contexts")


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


# ----------------------------------------------------------------------------------- durations


def parse_duration(text: str) -> float:
    """Go-style durations as kind takes them: 0, 30s, 1m, 1m30s, 500ms, 2h."""
    text = text.strip()
    if text in ("0", ""):
        return 0.0
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, number = 0.0, ""
    i = 0
    matched = False
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else ch
        if unit not in units or not number:
            raise ValueError(f"invalid duration {text!r}; use e.g. 30s, 1m or 2m30s")
        total += float(number) * units[unit]
        number, matched = "", True
        i += len(unit)
    if number or not matched:
        raise ValueError(f"invalid duration {text!r}; use e.g. 30s, 1m or 2m30s")
    return total


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
