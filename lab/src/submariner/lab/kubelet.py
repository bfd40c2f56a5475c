"""The lab's kubelet: turns the Pods bound to one node into network namespaces running built-in programs.

Why a kubelet of our own: a lab node is a network namespace, not a machine with a container runtime. Each
pod gets its own namespace wired to the node like Calico does (a veth, no bridge: a /32 on the pod's eth0,
a link route to 169.254.1.1 as the default gateway, a /32 route and proxy ARP on the node side), an IP
from the node's pod CIDR, a resolv.conf pointing at the cluster DNS, and its containers' images mapped to
programs (`images.py`) started with `ip netns exec` so `/etc/netns/<ns>/resolv.conf` applies. The pod
status written back (phase, IPs, readiness, restarts) is what the EndpointSlice controller and `kubectl`
read, so it follows the kubelet's conventions.

Threads: informers feed a work queue keyed by (namespace, name); workers set pods up, start containers and
write status; a monitor polls processes and readiness probes and requeues a pod when something changes.
Every netlink/sysctl call for a namespace runs on a short-lived thread that entered that namespace
(`run_in_netns`), so nothing is ever configured in the root namespace by mistake.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2 import netns as pyroute2_netns  # type: ignore[import-untyped]

from submariner.broker.api.meta import APIResource
from submariner.broker.kube import (
    CONFIGMAPS,
    SECRETS,
    SERVICES,
    AlreadyExists,
    ClientFactory,
    Conflict,
    Informer,
    KubeError,
    NotFound,
    Obj,
)
from submariner.broker.kube.workqueue import WorkQueue
from submariner.lab import images
from submariner.lab.names import LOGS_ANNOTATION, NETNS_ANNOTATION, Instance

log = logging.getLogger(__name__)

T = TypeVar("T")
Key = tuple[str, str]

PODS = APIResource("", "v1", "Pod", "pods", "pod", True)
NODES = APIResource("", "v1", "Node", "nodes", "node", False)
ENDPOINTS = APIResource("", "v1", "Endpoints", "endpoints", "endpoints", True)

CLUSTER_DOMAIN = "cluster.local"
POD_GATEWAY = "169.254.1.1"  # Calico's fake next hop: the node answers for it on every pod veth
SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
SA_DIR_ENV = "SUBMARINER_SERVICEACCOUNT_DIR"
NETNS_RUN_DIR = Path("/run/netns")
IP_BIN = shutil.which("ip") or "/usr/sbin/ip"

RESYNC_SECONDS = 15.0
MONITOR_INTERVAL = 0.25
READY_PROBE_INTERVAL = 2.0  # probing a ready container; an unready one is probed on every monitor tick
PROBE_TIMEOUT = 0.5
BACKOFF_START, BACKOFF_MAX, BACKOFF_RESET_AFTER = 1.0, 30.0, 10.0
DEFAULT_GRACE, MAX_GRACE = 30.0, 10.0  # termination grace: the spec's, capped so deletes stay quick
IMAGE_PULL_BACKOFF_AFTER = 1.0  # ErrImagePull becomes ImagePullBackOff, as the kubelet's retry shows it

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------- namespaces


def netns_exists(name: str) -> bool:
    return (NETNS_RUN_DIR / name).exists()


def run_in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run `fn` on a fresh thread that entered `netns` (never the caller's namespace: setns failing raises).

    Network namespaces are per thread, so sockets, netlink and /proc/sys/net opened by `fn` belong to
    `netns`; the thread ends afterwards, so no other code ever runs in the wrong namespace.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(NETNS_RUN_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=target, name=f"netns:{netns}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def set_sysctl(netns: str, key: str, value: str) -> None:
    """`sysctl -w key=value` inside `netns` (a lab namespace; never the root one)."""
    path = Path("/proc/sys") / key.replace(".", "/")

    def write() -> None:
        path.write_text(value)

    run_in_netns(netns, write)


def create_netns(name: str) -> None:
    """`ip netns add`: pyroute2's create forks the Python process, unsafe with our threads running."""
    result = subprocess.run([IP_BIN, "netns", "add", name], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OSError(f"ip netns add {name}: {result.stderr.strip()}")


def remove_netns(name: str) -> None:
    if netns_exists(name):
        with contextlib.suppress(FileNotFoundError):
            pyroute2_netns.remove(name)


def delete_link(netns: str, ifname: str) -> None:
    """Delete `ifname` in `netns` if both exist (a veth takes its peer with it)."""
    if not netns_exists(netns):
        return

    def delete() -> None:
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=ifname):
                ipr.link("del", index=index)

    run_in_netns(netns, delete)


def namespace_addresses(netns: str) -> list[str]:
    """Global-scope IPv4 addresses in `netns` (how a node without an explicit address finds its own)."""

    def read() -> list[str]:
        with IPRoute() as ipr:
            return [str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(family=socket.AF_INET)
                    if a["scope"] == 0]

    return run_in_netns(netns, read)


# ------------------------------------------------------------------------------------------- IPAM


class PodIPAM:
    """Pod IPs of one node: one file per held address (content: the pod uid), like CNI's host-local.

    Files survive an agent restart, so a restarted agent never hands out an address a pod still holds;
    allocation continues after the last one handed out, so a just-freed address is not reused at once.
    """

    def __init__(self, cidr: str, directory: Path) -> None:
        self.network = ipaddress.ip_network(cidr)
        self.dir = directory
        self._lock = threading.Lock()

    def _owners(self) -> dict[str, str]:
        owners: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError):
            for p in self.dir.iterdir():
                if p.name.startswith(".") or p.name == "last_reserved_ip":
                    continue
                with contextlib.suppress(OSError):
                    owners[p.name] = p.read_text().strip()
        return owners

    def owners(self) -> dict[str, str]:
        """address → pod uid"""
        with self._lock:
            return self._owners()

    def allocate(self, uid: str) -> str:
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            for ip, owner in self._owners().items():
                if owner == uid:
                    return ip
            candidates = [h for h in self.network.hosts() if int(h) - int(self.network.network_address) > 1]
            last_file = self.dir / "last_reserved_ip"
            start = 0
            with contextlib.suppress(OSError, ValueError):
                last = ipaddress.ip_address(last_file.read_text().strip())
                start = next((i + 1 for i, h in enumerate(candidates) if h == last), 0)
            for i in range(len(candidates)):
                ip = str(candidates[(start + i) % len(candidates)])
                try:
                    fd = os.open(self.dir / ip, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "w") as f:
                    f.write(uid)
                _atomic_write(last_file, ip.encode())
                return ip
            raise RuntimeError(f"pod CIDR {self.network} is exhausted")

    def release(self, uid: str) -> None:
        with self._lock:
            for ip, owner in self._owners().items():
                if owner == uid:
                    with contextlib.suppress(FileNotFoundError):
                        (self.dir / ip).unlink()


# ------------------------------------------------------------------------------------------ files


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Write `data` unless the file already holds it; returns whether it changed (temp file + rename)."""
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def _sync_dir(directory: Path, files: Mapping[str, bytes]) -> bool:
    """Make `directory` hold exactly `files` (relative paths); returns whether anything changed."""
    changed = False
    directory.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        changed |= _atomic_write(directory / rel, data)
    wanted = {directory / rel for rel in files}
    for p in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if p.is_file() and p not in wanted:
            p.unlink()
            changed = True
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    return changed


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _proc_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks after boot: tells a process we started from a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 and fields[0] != "Z" else None


def _b64(data: Any) -> bytes:
    return base64.b64decode(str(data)) if data else b""


# --------------------------------------------------------------------------- pod spec helpers

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in command/args/env values (`$$` escapes; unknown refs stay)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_REF.sub(sub, text)


def rewrite_paths(text: str, mounts: list[tuple[str, str]]) -> str:
    """Replace container mount paths in `text` by where the lab materialised them (one pass, longest first).

    Programs are not in a container, so `-conf /etc/coredns/Corefile` must name the host file instead.
    """
    if not mounts:
        return text
    ordered = sorted(mounts, key=lambda m: len(m[0]), reverse=True)
    table = {m.rstrip("/") or "/": host for m, host in ordered}
    pattern = re.compile(
        r"(?<![\w./-])(" + "|".join(re.escape(m) for m in table) + r")(?=/|$|[^\w.-])"
    )
    return pattern.sub(lambda m: table[m.group(1)], text)


def _port_number(port: Any, container: Mapping[str, Any]) -> int | None:
    if isinstance(port, int):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for p in container.get("ports") or ():
            if p.get("name") == port:
                return int(p["containerPort"])
    return None


@dataclass(frozen=True)
class Probe:
    """A readiness check: TCP connect, or an HTTP GET answered 200-399."""

    port: int
    path: str | None = None  # None: tcpSocket
    period: float = 10.0
    failure_threshold: int = 3
    success_threshold: int = 1


def readiness_probe(container: Mapping[str, Any], declared_ports: bool) -> Probe | None:
    """The container's readinessProbe (tcpSocket/httpGet), else its first TCP containerPort if asked."""
    spec = container.get("readinessProbe") or {}
    period = float(spec.get("periodSeconds") or 10)
    failures = int(spec.get("failureThreshold") or 3)
    successes = int(spec.get("successThreshold") or 1)
    if spec.get("httpGet"):
        port = _port_number(spec["httpGet"].get("port"), container)
        if port:
            return Probe(port, str(spec["httpGet"].get("path") or "/"), period, failures, successes)
    if spec.get("tcpSocket"):
        port = _port_number(spec["tcpSocket"].get("port"), container)
        if port:
            return Probe(port, None, period, failures, successes)
    if declared_ports and not spec:
        for p in container.get("ports") or ():
            if (p.get("protocol") or "TCP") == "TCP" and p.get("containerPort"):
                return Probe(int(p["containerPort"]), None, 2.0, 1, 1)
    return None


def probe_once(netns: str, host: str, probe: Probe, timeout: float = PROBE_TIMEOUT) -> bool:
    """Run `probe` against host:port from inside `netns`."""

    def check() -> bool:
        try:
            with socket.create_connection((host, probe.port), timeout=timeout) as s:
                if probe.path is None:
                    return True
                s.sendall(f"GET {probe.path} HTTP/1.0\r\nHost: {host}:{probe.port}\r\n"
                          "User-Agent: kube-probe/sublab\r\n\r\n".encode())
                line = s.makefile("rb").readline(256).decode("latin-1").split()
                return len(line) >= 2 and line[1].isdigit() and 200 <= int(line[1]) < 400
        except OSError:
            return False

    try:
        return run_in_netns(netns, check)
    except OSError:
        return False


# ------------------------------------------------------------------------------- pod runtime


class ConfigError(Exception):
    """A container cannot be configured yet (missing ConfigMap/Secret/key): it waits and is retried."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Container:
    """One container of a running pod: its process and what the status reports about it."""

    name: str
    spec: dict[str, Any]
    init: bool
    resolution: images.Resolution
    probe: Probe | None = None
    proc: subprocess.Popen[bytes] | None = None
    pid_start: int | None = None
    started_at: str = ""
    started_mono: float = 0.0
    restart_count: int = 0
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    waiting_since: float = field(default_factory=time.monotonic)
    terminated: dict[str, Any] | None = None  # the current state when it will not run again
    last_terminated: dict[str, Any] | None = None
    next_start: float = 0.0  # monotonic: not (re)started before this
    crashes: int = 0  # consecutive short runs (restart back-off)
    ready: bool = False
    probe_successes: int = 0
    probe_failures: int = 0
    next_probe: float = 0.0
    done: bool = False  # exited and will not be restarted (init container succeeded, or policy)

    @property
    def running(self) -> bool:
        return self.proc is not None

    @property
    def succeeded(self) -> bool:
        return self.done and self.terminated is not None and self.terminated.get("exitCode") == 0

    def status(self) -> dict[str, Any]:
        state: dict[str, Any]
        if self.proc is not None:
            state = {"running": {"startedAt": self.started_at}}
        elif self.done and self.terminated:
            state = {"terminated": self.terminated}
        else:
            waiting: dict[str, Any] = {"reason": self.waiting_reason}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state = {"waiting": waiting}
        doc: dict[str, Any] = {
            "name": self.name,
            "image": self.resolution.image,
            "imageID": f"sublab://{self.resolution.program.name}" if self.resolution.program else "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.proc is not None,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if self.proc is not None:
            doc["containerID"] = f"sublab://{self.proc.pid}"
        return doc


@dataclass
class PodRuntime:
    """What the agent runs for one pod (one uid): its namespace, address, containers and last status."""

    key: Key
    uid: str
    pod: Obj
    dir: Path
    exec_netns: str  # where programs run: the pod's own namespace, or the node's for hostNetwork
    own_netns: str | None  # the namespace this agent created (None for hostNetwork pods)
    veth: str | None
    ip: str
    host_ip: str
    containers: list[Container]
    init_containers: list[Container]
    start_time: str = field(default_factory=_now)
    lock: threading.RLock = field(default_factory=threading.RLock)
    stopping: bool = False
    last_status: dict[str, Any] | None = None
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)
    volumes_ready: bool = False
    volume_error: str = ""
    references: set[tuple[str, str, str]] = field(default_factory=set)  # (kind, namespace, name)
    volume_paths: dict[str, str] = field(default_factory=dict)  # volume name → where its files are
    sa_dir: Path | None = None

    @property
    def name(self) -> str:
        return self.key[1]

    @property
    def namespace(self) -> str:
        return self.key[0]

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.pod.get("spec") or {}
        return spec

    @property
    def restart_policy(self) -> str:
        return str(self.spec.get("restartPolicy") or "Always")

    def all_containers(self) -> list[Container]:
        return [*self.init_containers, *self.containers]

    def initialized(self) -> bool:
        return all(c.succeeded for c in self.init_containers)

    def record(self) -> dict[str, Any]:
        """What `pod.json` keeps, so a later agent (or `sublab delete`) can clean up after a crash."""
        return {
            "uid": self.uid, "namespace": self.namespace, "name": self.name, "netns": self.own_netns,
            "veth": self.veth, "ip": self.ip if self.own_netns else None,
            "processes": {c.name: [c.proc.pid, c.pid_start] for c in self.all_containers() if c.proc},
        }


def _transition(rt: PodRuntime, ctype: str, value: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    status = "True" if value else "False"
    prev = rt.transitions.get(ctype)
    when = prev[1] if prev and prev[0] == status else _now()
    rt.transitions[ctype] = (status, when)
    cond: dict[str, Any] = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": when}
    if not value and reason:
        cond["reason"] = reason
        if message:
            cond["message"] = message
    return cond


def pod_status(rt: PodRuntime) -> dict[str, Any]:
    """The PodStatus the kubelet would report for `rt` (phase, conditions, IPs, container states)."""
    initialized = rt.initialized()
    main = rt.containers
    if any(c.done and not c.succeeded for c in rt.init_containers):
        phase = "Failed"
    elif not initialized:
        phase = "Pending"
    elif any(c.running for c in main):
        phase = "Running"
    elif main and all(c.done for c in main):
        phase = "Succeeded" if all(c.succeeded for c in main) else "Failed"
    elif any(c.restart_count or c.last_terminated or c.done for c in main):
        phase = "Running"  # crash-looping or between restarts, as the kubelet reports it
    else:
        phase = "Pending"
    unready = [c.name for c in main if not c.ready]
    not_init = [c.name for c in rt.init_containers if not c.succeeded]
    ready = initialized and not unready
    conditions = [
        _transition(rt, "PodReadyToStartContainers", True),
        _transition(rt, "Initialized", initialized, "ContainersNotInitialized",
                    f"containers with incomplete status: [{' '.join(not_init)}]"),
        _transition(rt, "Ready", ready, "ContainersNotReady",
                    f"containers with unready status: [{' '.join(unready)}]"),
        _transition(rt, "ContainersReady", ready, "ContainersNotReady",
                    f"containers with unready status: [{' '.join(unready)}]"),
        _transition(rt, "PodScheduled", True),
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": rt.host_ip,
        "hostIPs": [{"ip": rt.host_ip}] if rt.host_ip else [],
        "podIP": rt.ip,
        "podIPs": [{"ip": rt.ip}] if rt.ip else [],
        "startTime": rt.start_time,
        "qosClass": "BestEffort",
        "containerStatuses": [c.status() for c in main],
    }
    if rt.init_containers:
        status["initContainerStatuses"] = [c.status() for c in rt.init_containers]
    return status


# ------------------------------------------------------------------------------------ the agent


class NodeAgent:
    """The kubelet of one lab node: runs the pods the scheduler bound to `node_name`.

    `kube` is the cluster's API (the agent runs in the root namespace, where the API server is reachable);
    `state_dir` holds pod directories (logs, volumes, `pod.json`) and IP allocations. `api_server` is the
    (host, port) pods use for in-cluster access when the Service `default/kubernetes` has no endpoints;
    `node_ip` defaults to the Node's InternalIP, then to the node namespace's address; `cluster_dns` is the
    nameserver when the Service `kube-system/kube-dns` does not exist (yet).
    """

    def __init__(
        self,
        instance: Instance,
        cluster: str,
        node_name: str,
        node_netns: str,
        pod_cidr: str,
        kube: ClientFactory,
        state_dir: Path,
        *,
        api_server: tuple[str, int] | None = None,
        node_ip: str | None = None,
        cluster_dns: str | None = None,
        workers: int = 4,
    ) -> None:
        self.instance = instance
        self.cluster = cluster
        self.node_name = node_name
        self.node_netns = node_netns
        self.pod_cidr = pod_cidr
        self.kube = kube
        self.state_dir = Path(state_dir)
        self.api_server = api_server
        self.node_ip = node_ip or ""
        self.cluster_dns = cluster_dns
        self.ipam = PodIPAM(pod_cidr, self.state_dir / "ipam")
        self._workers_n = workers
        self._pods: dict[Key, PodRuntime] = {}
        self._lock = threading.RLock()
        self._queue: WorkQueue[Key] = WorkQueue(backoff=(0.5, BACKOFF_MAX))
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sa_secrets: dict[tuple[str, str], str] = {}  # (namespace, sa) → secret name
        self._api_cache: tuple[float, tuple[str, int] | None] = (0.0, None)
        self._started = False
        self.pods_informer = Informer(
            kube.resource(PODS), field_selector=f"spec.nodeName={node_name}", name=f"pods@{node_name}",
            on_add=self._pod_event, on_update=lambda _old, new: self._pod_event(new), on_delete=self._pod_event,
        )
        self.configmaps = Informer(
            kube.resource(CONFIGMAPS), name=f"configmaps@{node_name}",
            on_add=lambda o: self._source_event("configmap", o),
            on_update=lambda _old, new: self._source_event("configmap", new),
            on_delete=lambda o: self._source_event("configmap", o),
        )
        self.secrets = Informer(
            kube.resource(SECRETS), name=f"secrets@{node_name}",
            on_add=lambda o: self._source_event("secret", o),
            on_update=lambda _old, new: self._source_event("secret", new),
            on_delete=lambda o: self._source_event("secret", o),
        )
        self.dns_services = Informer(
            kube.resource(SERVICES), namespace="kube-system", name=f"kube-system-services@{node_name}",
            on_add=self._dns_event, on_update=lambda _old, new: self._dns_event(new), on_delete=self._dns_event,
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    def start(self, timeout: float = 30.0) -> None:
        """Sync caches, clean up after a previous run (pods deleted meanwhile), then run pods."""
        if self._started:
            return
        self._started = True
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        if not netns_exists(self.node_netns):
            raise RuntimeError(f"node namespace {self.node_netns} does not exist")
        set_sysctl(self.node_netns, "net.ipv4.ip_forward", "1")
        informers = (self.pods_informer, self.configmaps, self.secrets, self.dns_services)
        for inf in informers:
            inf.start()
        deadline = time.monotonic() + timeout
        for inf in informers:
            if not inf.wait_for_sync(max(0.1, deadline - time.monotonic())):
                self.stop()
                raise RuntimeError(f"node agent {self.node_name}: informer {inf.name} did not sync in {timeout}s")
        if not self.node_ip:
            self.node_ip = self._discover_node_ip()
        self._reconcile_leftovers()
        for i in range(self._workers_n):
            self._spawn(self._worker, f"kubelet-{self.node_name}-worker{i}")
        self._spawn(self._monitor, f"kubelet-{self.node_name}-monitor")
        self._spawn(self._resync, f"kubelet-{self.node_name}-resync")
        for pod in self.pods_informer.list():
            self._queue.add(_key(pod))
        log.info("node agent started node=%s netns=%s pod_cidr=%s node_ip=%s",
                 self.node_name, self.node_netns, self.pod_cidr, self.node_ip)

    def stop(self, *, remove_pods: bool = False) -> None:
        """Stop informers, threads and every process the agent started.

        Pod namespaces and IP allocations stay (the pods still exist in the API; a restarted agent re-creates
        them with the same address) unless `remove_pods`, which removes everything the pods had.
        """
        self._stopped.set()
        self._queue.shutdown()
        for inf in (self.pods_informer, self.configmaps, self.secrets, self.dns_services):
            inf.stop()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(15)
        self._threads.clear()
        with self._lock:
            runtimes = list(self._pods.values())
            self._pods.clear()
        threads = [threading.Thread(target=self._stop_runtime, args=(rt, remove_pods), daemon=True)
                   for rt in runtimes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log.info("node agent stopped node=%s pods=%d removed=%s", self.node_name, len(runtimes), remove_pods)

    def _stop_runtime(self, rt: PodRuntime, remove: bool) -> None:
        try:
            self._kill_containers(rt)
            if remove:
                self._cleanup_pod_files(rt.record(), release_ip=True)
            else:
                self._write_record(rt)
        except Exception:
            log.exception("stopping pod failed pod=%s/%s", *rt.key)

    def _spawn(self, fn: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=fn, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # ------------------------------------------------------------------ queries (tests, CLI)

    def runtime(self, namespace: str, name: str) -> PodRuntime | None:
        with self._lock:
            return self._pods.get((namespace, name))

    def log_path(self, uid: str, container: str) -> Path:
        return self.pods_dir / uid / f"{container}.log"

    # ------------------------------------------------------------------ event handlers (informer threads)

    def _pod_event(self, pod: Obj) -> None:
        self._queue.add(_key(pod))

    def _source_event(self, kind: str, obj: Obj) -> None:
        ref = (kind, *_key(obj))
        with self._lock:
            keys = [k for k, rt in self._pods.items() if ref in rt.references]
        for k in keys:
            self._queue.add(k)

    def _dns_event(self, svc: Obj) -> None:
        if _key(svc) == ("kube-system", "kube-dns"):
            with self._lock:
                keys = list(self._pods)
            for k in keys:
                self._queue.add(k)

    # ------------------------------------------------------------------ threads

    def _worker(self) -> None:
        while True:
            key = self._queue.get()
            if key is None:
                return
            try:
                self._sync(key)
                self._queue.forget(key)
            except Exception as e:
                delay = self._queue.retry(key)
                log.warning("pod sync failed pod=%s/%s attempt=%d retry_s=%.1f error=%s", *key,
                            self._queue.requeues(key), delay, e, exc_info=not isinstance(e, KubeError))
            finally:
                self._queue.done(key)

    def _resync(self) -> None:
        while not self._stopped.wait(RESYNC_SECONDS):
            keys = {_key(p) for p in self.pods_informer.list()}
            with self._lock:
                keys |= set(self._pods)
            for k in keys:
                self._queue.add(k)

    def _monitor(self) -> None:
        while not self._stopped.wait(MONITOR_INTERVAL):
            with self._lock:
                runtimes = list(self._pods.values())
            for rt in runtimes:
                try:
                    if self._observe(rt):
                        self._queue.add(rt.key)
                except Exception:
                    log.exception("monitor failed pod=%s/%s", *rt.key)

    # ------------------------------------------------------------------ sync

    def _sync(self, key: Key) -> None:
        pod = self.pods_informer.get(*key)
        with self._lock:
            rt = self._pods.get(key)
        meta = (pod or {}).get("metadata") or {}
        gone = pod is None or (rt is not None and meta.get("uid") != rt.uid)
        terminating = bool(meta.get("deletionTimestamp"))
        if rt is not None and (gone or terminating):
            self._teardown(rt)
            rt = None
        if pod is None:
            return
        if terminating:
            with contextlib.suppress(NotFound):
                self.kube.resource(PODS).delete(*key)  # finalize: the lab's processes are gone
            return
        if (pod.get("spec") or {}).get("nodeName") != self.node_name:
            return
        if rt is None:
            rt = self._setup(pod)
        else:
            rt.pod = pod
        self._refresh(rt)
        self._start_due(rt)
        self._write_status(rt)
        delay = self._next_wakeup(rt)
        if delay is not None:
            self._queue.add_after(key, delay)

    def _next_wakeup(self, rt: PodRuntime) -> float | None:
        """When a container is due to (re)start, so the queue comes back without a monitor tick."""
        now = time.monotonic()
        due = [c.next_start - now for c in rt.all_containers()
               if not c.running and not c.done and c.resolution.ok and c.next_start > now]
        return max(0.05, min(due)) if due else None

    # ------------------------------------------------------------------ setup / teardown

    def _setup(self, pod: Obj) -> PodRuntime:
        meta = pod["metadata"]
        spec = pod.get("spec") or {}
        uid = str(meta["uid"])
        key = _key(pod)
        host_network = bool(spec.get("hostNetwork"))
        pod_dir = self.pods_dir / uid
        pod_dir.mkdir(parents=True, exist_ok=True)
        own_netns = None if host_network else self.instance.pod_netns(self.cluster, uid)
        veth = None if host_network else self.instance.veth("p", uid)
        rt = PodRuntime(
            key=key, uid=uid, pod=pod, dir=pod_dir, exec_netns=own_netns or self.node_netns, own_netns=own_netns,
            veth=veth, ip=self.node_ip, host_ip=self.node_ip,
            containers=[self._container(c, False, host_network) for c in spec.get("containers") or ()],
            init_containers=[self._container(c, True, host_network) for c in spec.get("initContainers") or ()],
        )
        self._write_record(rt)  # before anything exists: a crash from here on is cleaned up by the record
        try:
            if own_netns is not None and veth is not None:
                rt.ip = self.ipam.allocate(uid)
                self._write_record(rt)
                self._create_pod_network(own_netns, veth, rt.ip)
            self._annotate(rt)
        except BaseException:
            self._cleanup_pod_files(rt.record(), release_ip=True)
            raise
        with self._lock:
            self._pods[key] = rt
        log.info("pod set up pod=%s/%s uid=%s netns=%s ip=%s", *key, uid, rt.exec_netns, rt.ip)
        return rt

    def _container(self, spec: dict[str, Any], init: bool, host_network: bool) -> Container:
        resolution = images.resolve(str(spec.get("image") or ""))
        declared = resolution.program is not None and resolution.program.name == "whereami"
        c = Container(name=str(spec.get("name") or ""), spec=spec, init=init, resolution=resolution,
                      probe=None if init else readiness_probe(spec, declared))
        if not resolution.ok:
            c.waiting_reason, c.waiting_message = resolution.reason, resolution.message
        return c

    def _create_pod_network(self, netns: str, veth: str, ip: str) -> None:
        """The pod's namespace and its Calico-style link to the node (see the module docstring)."""
        if netns_exists(netns):
            remove_netns(netns)  # a leftover of ours (same uid): start clean
        delete_link(self.node_netns, veth)
        create_netns(netns)

        def node_side() -> tuple[str, int]:
            with IPRoute() as ipr:
                peer = {"ifname": "eth0", "net_ns_fd": str(NETNS_RUN_DIR / netns)}
                ipr.link("add", ifname=veth, kind="veth", peer=peer)
                index = ipr.link_lookup(ifname=veth)[0]
                ipr.link("set", index=index, state="up")
                mac = str(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))
            Path(f"/proc/sys/net/ipv4/conf/{veth}/proxy_arp").write_text("1")
            return mac, index

        host_mac, host_index = run_in_netns(self.node_netns, node_side)

        def pod_side() -> str:
            with IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                eth0 = ipr.link_lookup(ifname="eth0")[0]
                ipr.addr("add", index=eth0, address=ip, prefixlen=32)
                ipr.link("set", index=eth0, state="up")
                ipr.route("add", dst=f"{POD_GATEWAY}/32", oif=eth0, scope=253)
                ipr.route("add", dst="0.0.0.0/0", gateway=POD_GATEWAY, oif=eth0)
                # a static entry: node namespaces have no default route, so proxy ARP alone cannot answer
                ipr.neigh("add", dst=POD_GATEWAY, lladdr=host_mac, ifindex=eth0, state=0x80)
                return str(ipr.get_links(eth0)[0].get_attr("IFLA_ADDRESS"))

        pod_mac = run_in_netns(netns, pod_side)

        def node_route() -> None:
            with IPRoute() as ipr:
                ipr.route("replace", dst=f"{ip}/32", oif=host_index, scope=253)
                ipr.neigh("replace", dst=ip, lladdr=pod_mac, ifindex=host_index, state=0x80)

        run_in_netns(self.node_netns, node_route)

    def _annotate(self, rt: PodRuntime) -> None:
        annotations = (rt.pod.get("metadata") or {}).get("annotations") or {}
        wanted = {NETNS_ANNOTATION: rt.exec_netns, LOGS_ANNOTATION: str(rt.dir)}
        if all(annotations.get(k) == v for k, v in wanted.items()):
            return
        self.kube.resource(PODS).patch(rt.namespace, rt.name, {"metadata": {"annotations": wanted}})

    def _teardown(self, rt: PodRuntime) -> None:
        with self._lock:
            if self._pods.get(rt.key) is rt:
                del self._pods[rt.key]
        self._kill_containers(rt)
        self._cleanup_pod_files(rt.record(), release_ip=True)
        log.info("pod torn down pod=%s/%s uid=%s", *rt.key, rt.uid)

    def _kill_containers(self, rt: PodRuntime) -> None:
        """SIGTERM every container's process group, wait for the grace period, then SIGKILL."""
        with rt.lock:
            rt.stopping = True
            procs = [c.proc for c in rt.all_containers() if c.proc is not None]
            for c in rt.all_containers():
                c.proc = None
                c.ready = False
        grace = rt.spec.get("terminationGracePeriodSeconds")
        grace_s = min(MAX_GRACE, float(DEFAULT_GRACE if grace is None else grace))
        for p in procs:
            _signal_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.0, deadline - time.monotonic()))
        for p in procs:
            _signal_group(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)

    def _cleanup_pod_files(self, record: Mapping[str, Any], *, release_ip: bool) -> None:
        """Remove a pod's veth, namespace, /etc/netns files and (optionally) its address and directory."""
        uid = str(record.get("uid") or "")
        netns = record.get("netns")
        if netns and uid and netns == self.instance.pod_netns(self.cluster, uid):  # only what we named
            if record.get("veth"):
                delete_link(self.node_netns, str(record["veth"]))
            remove_netns(str(netns))
            shutil.rmtree(self.instance.netns_etc(str(netns)), ignore_errors=True)
        if release_ip and uid:
            self.ipam.release(uid)
            shutil.rmtree(self.pods_dir / uid, ignore_errors=True)

    def _write_record(self, rt: PodRuntime) -> None:
        _atomic_write(rt.dir / "pod.json", json.dumps(rt.record(), indent=2).encode())

    def _reconcile_leftovers(self) -> None:
        """After a restart or crash: stop processes a previous run left, and remove pods deleted meanwhile."""
        live = {str((p.get("metadata") or {}).get("uid") or "") for p in self.pods_informer.list()}
        with contextlib.suppress(FileNotFoundError):
            for d in self.pods_dir.iterdir():
                if not d.is_dir():
                    continue
                record: dict[str, Any] = {"uid": d.name}
                with contextlib.suppress(OSError, ValueError):
                    record = json.loads((d / "pod.json").read_text())
                _kill_recorded(record)
                if record.get("uid") in live:
                    self._cleanup_pod_files(record, release_ip=False)  # re-created with the same address
                else:
                    log.info("removing pod deleted while the agent was down uid=%s netns=%s",
                             record.get("uid"), record.get("netns"))
                    self._cleanup_pod_files(record, release_ip=True)
        for ip, uid in self.ipam.owners().items():
            if uid not in live:
                with contextlib.suppress(FileNotFoundError):
                    (self.ipam.dir / ip).unlink()

    def _discover_node_ip(self) -> str:
        with contextlib.suppress(KubeError):
            node = self.kube.resource(NODES).get("", self.node_name)
            for addr in (node.get("status") or {}).get("addresses") or ():
                if addr.get("type") == "InternalIP" and addr.get("address"):
                    return str(addr["address"])
        addresses = namespace_addresses(self.node_netns)
        return addresses[0] if addresses else ""

    # ------------------------------------------------------------------ refresh (files)

    def _refresh(self, rt: PodRuntime) -> None:
        """resolv.conf/hosts and volume files follow the API (ConfigMap edits reach running programs)."""
        if rt.own_netns is not None:
            etc = self.instance.netns_etc(rt.own_netns)
            _atomic_write(etc / "resolv.conf", self._resolv_conf(rt).encode())
            _atomic_write(etc / "hosts", self._hosts_file(rt).encode())
        try:
            changed = self._materialise(rt)
            rt.volume_error = ""
        except ConfigError as e:
            rt.volume_error = e.message
            with rt.lock:
                for c in rt.all_containers():
                    if not c.running and not c.done and c.resolution.ok:
                        c.waiting_reason, c.waiting_message = "ContainerCreating", e.message
                        c.next_start = time.monotonic() + 2.0  # retried (and sooner on the object's event)
            return
        if changed and rt.volumes_ready:
            with rt.lock:
                for c in rt.containers:
                    prog = c.resolution.program
                    if c.proc is not None and prog is not None and prog.reload_on_config_change:
                        log.info("config changed, reloading pod=%s/%s container=%s", *rt.key, c.name)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(c.proc.pid, signal.SIGUSR1)
        rt.volumes_ready = True

    def _resolv_conf(self, rt: PodRuntime) -> str:
        spec = rt.spec
        policy = spec.get("dnsPolicy") or "ClusterFirst"
        cfg = spec.get("dnsConfig") or {}
        nameservers: list[str] = []
        searches: list[str] = []
        options: list[str] = []
        if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
            dns = self._cluster_dns()
            nameservers = [dns] if dns else []
            searches = [f"{rt.namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
            options = ["ndots:5"]
        elif policy == "Default":
            node_conf = self.instance.netns_etc(self.node_netns) / "resolv.conf"
            text = ""
            for candidate in (node_conf, Path("/etc/resolv.conf")):
                with contextlib.suppress(OSError):
                    text = candidate.read_text()
                    break
            for line in text.splitlines():
                parts = line.split()
                if len(parts) > 1 and parts[0] == "nameserver":
                    nameservers.append(parts[1])
                elif len(parts) > 1 and parts[0] in ("search", "domain"):
                    searches = parts[1:]
                elif len(parts) > 1 and parts[0] == "options":
                    options.extend(parts[1:])
        nameservers += [str(n) for n in cfg.get("nameservers") or () if str(n) not in nameservers]
        searches += [str(s) for s in cfg.get("searches") or () if str(s) not in searches]
        for opt in cfg.get("options") or ():
            name = str(opt.get("name") or "")
            value = opt.get("value")
            options = [o for o in options if o.split(":", 1)[0] != name]
            options.append(f"{name}:{value}" if value is not None else name)
        lines = [f"search {' '.join(searches)}"] if searches else []
        lines += [f"nameserver {n}" for n in nameservers[:3]]
        if options:
            lines.append(f"options {' '.join(options)}")
        return "\n".join(lines) + "\n"

    def _cluster_dns(self) -> str | None:
        svc = self.dns_services.get("kube-system", "kube-dns")
        ip = ((svc or {}).get("spec") or {}).get("clusterIP")
        if ip and ip != "None":
            return str(ip)
        return self.cluster_dns

    def _hosts_file(self, rt: PodRuntime) -> str:
        spec = rt.spec
        lines = [
            "# Kubernetes-managed hosts file (sublab).",
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            "fe00::0\tip6-localnet",
            "fe00::0\tip6-mcastprefix",
            "fe00::1\tip6-allnodes",
            "fe00::2\tip6-allrouters",
        ]
        hostname = str(spec.get("hostname") or rt.name)
        if spec.get("subdomain"):
            fqdn = f"{hostname}.{spec['subdomain']}.{rt.namespace}.svc.{CLUSTER_DOMAIN}"
            lines.append(f"{rt.ip}\t{fqdn}\t{hostname}")
        else:
            lines.append(f"{rt.ip}\t{hostname}")
        for alias in spec.get("hostAliases") or ():
            if alias.get("ip") and alias.get("hostnames"):
                lines.append(f"{alias['ip']}\t{' '.join(alias['hostnames'])}")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ sources (ConfigMaps, Secrets)

    def _source(self, kind: str, namespace: str, name: str) -> Obj | None:
        """A ConfigMap/Secret from the informer cache, or from the API when the cache has not seen it yet."""
        informer = self.configmaps if kind == "configmap" else self.secrets
        obj = informer.get(namespace, name)
        if obj is not None:
            return obj
        try:
            return self.kube.resource(CONFIGMAPS if kind == "configmap" else SECRETS).get(namespace, name)
        except NotFound:
            return None

    def _source_data(self, rt: PodRuntime, kind: str, name: str) -> dict[str, bytes] | None:
        rt.references.add((kind, rt.namespace, name))
        obj = self._source(kind, rt.namespace, name)
        if obj is None:
            return None
        if kind == "configmap":
            data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: _b64(v) for k, v in (obj.get("binaryData") or {}).items()})
            return data
        return {k: _b64(v) for k, v in (obj.get("data") or {}).items()}

    def _items(self, rt: PodRuntime, kind: str, name: str, items: Iterable[Mapping[str, Any]] | None,
               optional: bool, volume: str) -> dict[str, bytes]:
        data = self._source_data(rt, kind, name)
        if data is None:
            if optional:
                return {}
            raise ConfigError("ContainerCreating",
                              f'MountVolume.SetUp failed for volume "{volume}": {kind} "{name}" not found')
        if not items:
            return data
        out: dict[str, bytes] = {}
        for item in items:
            k = str(item.get("key") or "")
            if k in data:
                out[str(item.get("path") or k)] = data[k]
            elif not optional:
                raise ConfigError("ContainerCreating", f'MountVolume.SetUp failed for volume "{volume}": '
                                  f'configuration key "{k}" not found in {kind} "{name}"')
        return out

    def _service_account(self, rt: PodRuntime) -> dict[str, bytes]:
        """token, ca.crt and namespace of the pod's service account (a token Secret is created if missing)."""
        sa = str(rt.spec.get("serviceAccountName") or rt.spec.get("serviceAccount") or "default")
        secret = self._sa_secret(rt.namespace, sa)
        data = {k: _b64(v) for k, v in ((secret or {}).get("data") or {}).items()}
        if not data.get("token"):
            raise ConfigError("ContainerCreating", f'no token yet for service account "{rt.namespace}/{sa}"')
        return {"token": data["token"], "ca.crt": data.get("ca.crt", b""), "namespace": rt.namespace.encode()}

    def _sa_secret(self, namespace: str, sa: str) -> Obj | None:
        name = self._sa_secrets.get((namespace, sa))
        if name:
            obj = self._source("secret", namespace, name)
            if obj and (obj.get("data") or {}).get("token"):
                return obj
        for obj in self.secrets.list():
            meta = obj.get("metadata") or {}
            if (meta.get("namespace") == namespace and obj.get("type") == SA_TOKEN_TYPE
                    and (meta.get("annotations") or {}).get(SA_NAME_ANNOTATION) == sa
                    and (obj.get("data") or {}).get("token")):
                self._sa_secrets[(namespace, sa)] = str(meta["name"])
                return obj
        name = f"{sa}-token-sublab"[:253]
        body = {"apiVersion": "v1", "kind": "Secret", "type": SA_TOKEN_TYPE,
                "metadata": {"name": name, "namespace": namespace, "annotations": {SA_NAME_ANNOTATION: sa},
                             "labels": {"app.kubernetes.io/managed-by": "sublab"}}}
        secrets = self.kube.resource(SECRETS)
        try:
            created = secrets.create(body)
        except AlreadyExists:
            created = secrets.get(namespace, name)
        self._sa_secrets[(namespace, sa)] = name
        return created

    def _field(self, rt: PodRuntime, path: str) -> str:
        meta = rt.pod.get("metadata") or {}
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2)) or "")
        if path in ("metadata.labels", "metadata.annotations"):
            pairs = meta.get(path.split(".")[1]) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(pairs.items()))
        sa = str(rt.spec.get("serviceAccountName") or "default")
        values: dict[str, str] = {
            "metadata.name": rt.name, "metadata.namespace": rt.namespace, "metadata.uid": rt.uid,
            "spec.nodeName": self.node_name, "spec.serviceAccountName": sa,
            "status.podIP": rt.ip, "status.podIPs": rt.ip, "status.hostIP": rt.host_ip, "status.hostIPs": rt.host_ip,
        }
        if path not in values:
            raise ConfigError("CreateContainerConfigError", f"unsupported fieldRef fieldPath {path!r}")
        return values[path]

    def _resource_field(self, container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
        resource = str(ref.get("resource") or "")
        kind, _, what = resource.partition(".")
        value = ((container.get("resources") or {}).get(kind) or {}).get(what)
        if value is not None:
            return str(value)
        if what == "cpu":
            return str(os.cpu_count() or 1)
        if what == "memory":
            return str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        return "0"

    def _materialise(self, rt: PodRuntime) -> bool:
        """Write every volume's files under the pod directory; returns whether any file changed."""
        changed = False
        rt.references.clear()
        paths: dict[str, str] = {}
        vol_root = rt.dir / "volumes"
        automount = rt.spec.get("automountServiceAccountToken")
        if automount is not False:
            sa_dir = vol_root / "kube-api-access-sublab"
            changed |= _sync_dir(sa_dir, self._service_account(rt))
            rt.sa_dir = sa_dir
        for vol in rt.spec.get("volumes") or ():
            name = str(vol.get("name") or "")
            target = vol_root / name
            if "hostPath" in vol:
                paths[name] = str((vol.get("hostPath") or {}).get("path") or "/")  # the real host path
                continue
            files: dict[str, bytes] | None = None
            if "configMap" in vol:
                src = vol["configMap"] or {}
                files = self._items(rt, "configmap", str(src.get("name") or ""), src.get("items"),
                                    bool(src.get("optional")), name)
            elif "secret" in vol:
                src = vol["secret"] or {}
                files = self._items(rt, "secret", str(src.get("secretName") or ""), src.get("items"),
                                    bool(src.get("optional")), name)
            elif "downwardAPI" in vol:
                files = self._downward_files(rt, (vol["downwardAPI"] or {}).get("items") or ())
            elif "projected" in vol:
                files = {}
                for source in (vol["projected"] or {}).get("sources") or ():
                    files.update(self._projected(rt, source, name))
            else:  # emptyDir and anything else: a directory that starts empty and survives restarts
                target.mkdir(parents=True, exist_ok=True)
            if files is not None:
                changed |= _sync_dir(target, files)
            paths[name] = str(target)
        rt.volume_paths = paths
        return changed

    def _downward_files(self, rt: PodRuntime, items: Iterable[Mapping[str, Any]]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for item in items:
            if item.get("fieldRef"):
                out[str(item["path"])] = self._field(rt, str(item["fieldRef"].get("fieldPath") or "")).encode()
        return out

    def _projected(self, rt: PodRuntime, source: Mapping[str, Any], volume: str) -> dict[str, bytes]:
        if "serviceAccountToken" in source:
            sa = self._service_account(rt)
            return {str((source["serviceAccountToken"] or {}).get("path") or "token"): sa["token"]}
        if "configMap" in source:
            src = source["configMap"] or {}
            name = str(src.get("name") or "")
            if name == "kube-root-ca.crt" and self._source("configmap", rt.namespace, name) is None:
                return {"ca.crt": self._service_account(rt)["ca.crt"]}  # the lab's API server has no such map
            return self._items(rt, "configmap", name, src.get("items"), bool(src.get("optional")), volume)
        if "secret" in source:
            src = source["secret"] or {}
            return self._items(rt, "secret", str(src.get("name") or ""), src.get("items"),
                               bool(src.get("optional")), volume)
        if "downwardAPI" in source:
            return self._downward_files(rt, (source["downwardAPI"] or {}).get("items") or ())
        return {}

    def _container_mounts(self, rt: PodRuntime, c: Container) -> list[tuple[str, str]]:
        """(container path, host path) for the container's volumeMounts, plus the service-account dir."""
        out: list[tuple[str, str]] = []
        for vm in c.spec.get("volumeMounts") or ():
            host = rt.volume_paths.get(str(vm.get("name") or ""))
            if host is None or not vm.get("mountPath"):
                continue
            if vm.get("subPath"):
                host = str(Path(host) / str(vm["subPath"]))
            out.append((str(vm["mountPath"]), host))
        if rt.sa_dir is not None and not any(p == SA_MOUNT_PATH for p, _ in out):
            out.append((SA_MOUNT_PATH, str(rt.sa_dir)))
        return out

    def _api_endpoint(self) -> tuple[str, int] | None:
        """The API server for in-cluster clients: `default/kubernetes` endpoints, else the daemon's address."""
        cached_at, value = self._api_cache
        if time.monotonic() - cached_at < 30:
            return value
        value = self.api_server
        with contextlib.suppress(KubeError):
            ep = self.kube.resource(ENDPOINTS).get("default", "kubernetes")
            for subset in ep.get("subsets") or ():
                addresses = [a.get("ip") for a in subset.get("addresses") or () if a.get("ip")]
                ports = subset.get("ports") or ()
                port = next((p.get("port") for p in ports if p.get("name") == "https"), None)
                port = port or (ports[0].get("port") if ports else None)
                if addresses and port:
                    value = (str(addresses[0]), int(port))
                    break
        self._api_cache = (time.monotonic(), value)
        return value

    def _environment(self, rt: PodRuntime, c: Container, mounts: list[tuple[str, str]]) -> dict[str, str]:
        env: dict[str, str] = {
            "PATH": f"{images.BIN_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": str(rt.spec.get("hostname") or rt.name),
            "HOME": "/root",
            "PYTHONUNBUFFERED": "1",
        }
        api = self._api_endpoint()
        if api is not None:
            env.update({"KUBERNETES_SERVICE_HOST": api[0], "KUBERNETES_SERVICE_PORT": str(api[1]),
                        "KUBERNETES_SERVICE_PORT_HTTPS": str(api[1])})
        if rt.sa_dir is not None:
            env[SA_DIR_ENV] = str(rt.sa_dir)
        if c.resolution.program is not None:
            env.update(c.resolution.program.env)
        lab_env = dict(env)  # host paths already: never rewritten (a mount at /tmp must not move them)
        for src in c.spec.get("envFrom") or ():
            prefix = str(src.get("prefix") or "")
            for kind, ref_key in (("configmap", "configMapRef"), ("secret", "secretRef")):
                ref = src.get(ref_key)
                if not ref:
                    continue
                data = self._source_data(rt, kind, str(ref.get("name") or ""))
                if data is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError("CreateContainerConfigError", f'{kind} "{ref.get("name")}" not found')
                for k, v in data.items():
                    if "=" not in k:
                        env[prefix + k] = v.decode(errors="replace")
        for e in c.spec.get("env") or ():
            name = str(e.get("name") or "")
            if "value" in e or not e.get("valueFrom"):
                env[name] = expand_vars(str(e.get("value") or ""), env)
                continue
            vf = e["valueFrom"]
            if vf.get("fieldRef"):
                env[name] = self._field(rt, str(vf["fieldRef"].get("fieldPath") or ""))
            elif vf.get("resourceFieldRef"):
                env[name] = self._resource_field(c.spec, vf["resourceFieldRef"])
            else:
                for kind, ref_key in (("configmap", "configMapKeyRef"), ("secret", "secretKeyRef")):
                    ref = vf.get(ref_key)
                    if not ref:
                        continue
                    data = self._source_data(rt, kind, str(ref.get("name") or ""))
                    value = None if data is None else data.get(str(ref.get("key") or ""))
                    if value is None:
                        if ref.get("optional"):
                            break
                        what = (f'{kind} "{ref.get("name")}" not found' if data is None else
                                f'couldn\'t find key {ref.get("key")} in {kind} {rt.namespace}/{ref.get("name")}')
                        raise ConfigError("CreateContainerConfigError", what)
                    env[name] = value.decode(errors="replace")
        return {k: v if lab_env.get(k) == v else rewrite_paths(v, mounts) for k, v in env.items()}

    # ------------------------------------------------------------------ processes

    def _start_due(self, rt: PodRuntime) -> None:
        """Start what may run now: init containers one by one, then every app container."""
        if rt.volume_error:
            return
        now = time.monotonic()
        with rt.lock:
            if rt.stopping:
                return
            for c in rt.init_containers:
                if c.succeeded:
                    continue
                if not c.running and not c.done and c.resolution.ok and now >= c.next_start:
                    self._start(rt, c)
                return  # the next init container (or the app containers) waits for this one
            for c in rt.containers:
                if not c.running and not c.done and c.resolution.ok and now >= c.next_start:
                    self._start(rt, c)

    def _start(self, rt: PodRuntime, c: Container) -> None:
        program = c.resolution.program
        assert program is not None
        mounts = self._container_mounts(rt, c)
        try:
            env = self._environment(rt, c, mounts)
        except ConfigError as e:
            c.waiting_reason, c.waiting_message = e.reason, e.message
            c.next_start = time.monotonic() + 2.0
            return
        args: list[str] = []
        if program.takes_args:
            args = [rewrite_paths(expand_vars(str(a), env), mounts) for a in c.spec.get("args") or ()]
        argv = [IP_BIN, "netns", "exec", rt.exec_netns, *program.argv, *args]
        log_path = rt.dir / f"{c.name}.log"
        try:
            with open(log_path, "ab") as out:
                out.write(f"--- {_now()} sublab: starting {' '.join(program.argv[1:])} {' '.join(args)}\n".encode())
                out.flush()
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, cwd=rt.dir, start_new_session=True, close_fds=True)
        except OSError as e:
            c.waiting_reason, c.waiting_message = "RunContainerError", f"starting {program.name}: {e}"
            c.next_start = time.monotonic() + BACKOFF_START
            return
        c.proc = proc
        c.pid_start = _proc_start_time(proc.pid)
        c.started_at = _now()
        c.started_mono = time.monotonic()
        c.waiting_reason, c.waiting_message = "", ""
        c.terminated = None
        c.ready = False
        c.probe_successes = c.probe_failures = 0
        c.next_probe = 0.0
        self._write_record(rt)
        log.info("container started pod=%s/%s container=%s pid=%d program=%s", *rt.key, c.name, proc.pid,
                 program.name)

    def _observe(self, rt: PodRuntime) -> bool:
        """Monitor tick for one pod: reap exits, schedule restarts, probe readiness. True if status changed."""
        changed = False
        now = time.monotonic()
        probes: list[Container] = []
        with rt.lock:
            if rt.stopping:
                return False
            for c in rt.all_containers():
                if c.proc is None:
                    if (c.waiting_reason == images.ERR_IMAGE_PULL
                            and now - c.waiting_since > IMAGE_PULL_BACKOFF_AFTER):
                        c.waiting_reason = images.IMAGE_PULL_BACKOFF
                        changed = True
                    if not c.done and c.resolution.ok and c.next_start and now >= c.next_start:
                        changed = True  # due to (re)start: the worker starts it
                    continue
                code = c.proc.poll()
                if code is None:
                    if c.probe is None or c.init:
                        if not c.ready and not c.init:
                            c.ready = changed = True
                    elif now >= c.next_probe:
                        probes.append(c)
                    continue
                self._exited(rt, c, code, now)
                changed = True
        for c in probes:
            ok = self._probe(rt, c)
            with rt.lock:
                if c.proc is None or rt.stopping:
                    continue
                assert c.probe is not None
                if ok:
                    c.probe_successes += 1
                    c.probe_failures = 0
                    if not c.ready and c.probe_successes >= c.probe.success_threshold:
                        c.ready = changed = True
                else:
                    c.probe_failures += 1
                    c.probe_successes = 0
                    if c.ready and c.probe_failures >= c.probe.failure_threshold:
                        c.ready = False
                        changed = True
                c.next_probe = now + (min(c.probe.period, READY_PROBE_INTERVAL) if c.ready else 0)
        return changed

    def _probe(self, rt: PodRuntime, c: Container) -> bool:
        assert c.probe is not None
        host = rt.ip or "127.0.0.1"
        return probe_once(rt.exec_netns, host, c.probe)

    def _exited(self, rt: PodRuntime, c: Container, code: int, now: float) -> None:
        assert c.proc is not None
        pid = c.proc.pid
        _signal_group(pid, signal.SIGKILL)  # like a container: its other processes go with the main one
        signame = ""
        if code < 0:
            with contextlib.suppress(ValueError):
                signame = signal.Signals(-code).name
        terminated = {
            "exitCode": code if code >= 0 else 128 - code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": _now(),
            "containerID": f"sublab://{pid}",
        }
        if signame:
            terminated["signal"] = -code
        c.proc = None
        c.ready = False
        policy = rt.restart_policy
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        if c.init:
            restart = code != 0 and policy != "Never"
        log.info("container exited pod=%s/%s container=%s code=%s restart=%s", *rt.key, c.name, code, restart)
        if not restart:
            c.terminated = terminated
            c.done = True
            return
        c.last_terminated = terminated
        c.crashes = 0 if now - c.started_mono > BACKOFF_RESET_AFTER else c.crashes + 1
        delay = 0.0 if c.crashes == 0 else min(BACKOFF_MAX, BACKOFF_START * 2 ** (c.crashes - 1))
        c.next_start = now + delay
        c.restart_count += 1
        c.waiting_reason = "CrashLoopBackOff"
        c.waiting_message = f"back-off {delay:.0f}s restarting failed container={c.name} pod={rt.name}_{rt.namespace}"

    # ------------------------------------------------------------------ status

    def _write_status(self, rt: PodRuntime) -> None:
        with rt.lock:
            status = pod_status(rt)
        if status == rt.last_status:
            return
        pods = self.kube.resource(PODS)
        pod = rt.pod
        for _ in range(5):
            if (pod.get("metadata") or {}).get("uid") != rt.uid:
                return
            body = {**pod, "status": status}
            try:
                updated = pods.update_status(body)
            except Conflict:
                try:
                    pod = pods.get(*rt.key)
                except NotFound:
                    return
                continue
            except NotFound:
                return
            rt.last_status = status
            rt.pod = updated
            return
        raise KubeError(f"pod {rt.namespace}/{rt.name}: status update kept conflicting")


# ---------------------------------------------------------------------------------- helpers


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _signal_group(pgid: int, sig: int) -> None:
    """Signal a container's process group (its leader is the program; every pod program has its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_recorded(record: Mapping[str, Any], timeout: float = 5.0) -> None:
    """Stop processes a previous agent started, by the PID and start time it recorded (never a reused PID)."""
    victims: list[int] = []
    for entry in (record.get("processes") or {}).values():
        try:
            pid, start = int(entry[0]), entry[1]
        except (TypeError, ValueError, IndexError):
            continue
        if start is not None and _proc_start_time(pid) == int(start):
            victims.append(pid)
            _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while victims and time.monotonic() < deadline:
        victims = [p for p in victims if _proc_start_time(p) is not None]
        if victims:
            time.sleep(0.05)
    for pid in victims:
        _signal_group(pid, signal.SIGKILL)


def cleanup_node(instance: Instance, cluster: str, node_netns: str, state_dir: Path) -> None:
    """Remove everything a node's agent recorded (processes, pod namespaces, veths, /etc/netns files).

    For `sublab delete` after a crash: works from `state_dir` alone, without an API server.
    """
    pods_dir = Path(state_dir) / "pods"
    with contextlib.suppress(FileNotFoundError):
        for d in pods_dir.iterdir():
            record: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                record = json.loads((d / "pod.json").read_text())
            _kill_recorded(record)
            netns = record.get("netns")
            if netns and netns == instance.pod_netns(cluster, str(record.get("uid") or "")):
                if record.get("veth"):
                    with contextlib.suppress(OSError):
                        delete_link(node_netns, str(record["veth"]))
                remove_netns(str(netns))
                shutil.rmtree(instance.netns_etc(str(netns)), ignore_errors=True)
            shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(Path(state_dir) / "ipam", ignore_errors=True)


__all__ = [
    "NODES",
    "PODS",
    "Container",
    "NodeAgent",
    "PodIPAM",
    "PodRuntime",
    "Probe",
    "cleanup_node",
    "create_netns",
    "delete_link",
    "expand_vars",
    "netns_exists",
    "pod_status",
    "probe_once",
    "readiness_probe",
    "remove_netns",
    "rewrite_paths",
    "run_in_netns",
    "set_sysctl",
]

