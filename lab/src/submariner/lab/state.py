"""What the lab remembers about its clusters, as one JSON file per cluster under `Instance.home`.

The state is written before anything is created, so `sublab delete` knows what to remove even when the
`create` that wrote it crashed half way. Every read-modify-write of the instance (address allocation, the
shared underlay) holds one file lock, so clusters can be created and deleted concurrently.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import CONTROL_PLANE, ClusterConfig
from .names import Instance

STATE_FILE = "cluster.json"
STATUS_FILE = "status.json"
API_PORT = 6443

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class NodeState:
    name: str
    role: str
    netns: str
    address: str  # underlay IPv4 address (the node's InternalIP)
    veth: str  # the underlay-side end of the node's eth0
    pod_cidr: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def is_control_plane(self) -> bool:
        return self.role == CONTROL_PLANE


@dataclass
class ClusterState:
    name: str
    pod_subnet: str
    service_subnet: str
    nodes: list[NodeState]
    api_port: int = API_PORT
    daemon_pid: int | None = None
    daemon_start: int | None = None  # start time (clock ticks after boot): tells our PID from a reused one
    user_kubeconfig: str | None = None  # where the `lab-<name>` context was merged (removed from there)
    created: float = field(default_factory=time.time)

    @property
    def control_plane(self) -> NodeState:
        return next(n for n in self.nodes if n.is_control_plane)

    @property
    def api_url(self) -> str:
        return f"https://{self.control_plane.address}:{self.api_port}"

    @property
    def dns_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_subnet).network_address + 10)

    @property
    def kubernetes_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_subnet).network_address + 1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ClusterState:
        nodes = [NodeState(**n) for n in doc.get("nodes") or []]
        return cls(**{**doc, "nodes": nodes})


@dataclass(frozen=True)
class ClusterPaths:
    """Files of one cluster inside its state directory."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def status(self) -> Path:
        return self.root / STATUS_FILE

    @property
    def apiserver_data(self) -> Path:
        return self.root / "apiserver"

    @property
    def kubeconfig(self) -> Path:
        """Written by the cluster's API server: the admin context `lab-<name>`."""
        return self.root / "kubeconfig"

    @property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def apiserver_log(self) -> Path:
        return self.root / "apiserver.log"

    def node_dir(self, node: str) -> Path:
        """Where a node's kubelet keeps its files (pod logs, pod state)."""
        return self.root / "nodes" / node


def paths(instance: Instance, cluster: str) -> ClusterPaths:
    return ClusterPaths(instance.cluster_dir(cluster))


# ------------------------------------------------------------------------------------------ files


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Atomic (temporary file + rename): a reader or a crash never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except json.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def load(instance: Instance, cluster: str) -> ClusterState | None:
    doc = read_json(paths(instance, cluster).state)
    if doc is None:
        return None
    try:
        return ClusterState.from_json(doc)
    except (TypeError, KeyError):
        return None


def save(instance: Instance, state: ClusterState) -> None:
    write_json(paths(instance, state.name).state, state.to_json())


def cluster_names(instance: Instance) -> list[str]:
    """Clusters with a state directory (also half-built or half-deleted ones)."""
    try:
        return sorted(p.name for p in instance.clusters_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def read_status(instance: Instance, cluster: str) -> dict[str, Any]:
    """What the cluster's daemon last reported: {"phase": starting|running|failed|stopping, "message": …}."""
    return read_json(paths(instance, cluster).status) or {}


def write_status(instance: Instance, cluster: str, phase: str, message: str = "") -> None:
    """Only into an existing cluster directory: a daemon outliving its cluster must not re-create it."""
    target = paths(instance, cluster)
    if target.root.is_dir():
        with contextlib.suppress(FileNotFoundError):
            write_json(target.status, {"phase": phase, "message": message, "time": time.time()})


@contextlib.contextmanager
def locked(instance: Instance) -> Iterator[None]:
    """The instance lock (flock: released by the kernel if the holder dies, so never stale)."""
    instance.home.mkdir(parents=True, exist_ok=True)
    fd = os.open(instance.home / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------ planning


def used_addresses(instance: Instance) -> set[ipaddress.IPv4Address]:
    used = {instance.root_address}
    for name in cluster_names(instance):
        st = load(instance, name)
        if st is not None:
            used.update(ipaddress.IPv4Address(n.address) for n in st.nodes)
    return used


def plan(instance: Instance, config: ClusterConfig) -> ClusterState:
    """The state of a new cluster: underlay addresses (lowest free in the instance's /20) and pod CIDRs.

    Call with the instance lock held, and save before releasing it, so two creates never pick the same
    addresses.
    """
    used = used_addresses(instance)
    free = (a for a in instance.underlay.hosts() if a not in used)
    nodes = []
    for spec, pod_cidr in zip(config.nodes, config.pod_cidrs(), strict=True):
        address = next(free, None)
        if address is None:
            raise RuntimeError(f"the lab underlay {instance.underlay} has no free address left; delete a cluster")
        nodes.append(NodeState(
            name=spec.name, role=spec.role, netns=instance.node_netns(config.name, spec.name),
            address=str(address), veth=instance.veth("u", f"{config.name}/{spec.name}"),
            pod_cidr=str(pod_cidr), labels=dict(spec.labels),
        ))
    return ClusterState(name=config.name, pod_subnet=str(config.pod_subnet),
                        service_subnet=str(config.service_subnet), nodes=nodes)


# ------------------------------------------------------------------------------------------ processes


def process_start(pid: int) -> int | None:
    """A process's start time in clock ticks after boot (None if it does not exist)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[19])  # field 22 of stat; fields[0] is field 3


def process_alive(pid: int | None, start: int | None) -> bool:
    """Whether `pid` is still the process we started (same start time), not a zombie."""
    if not pid:
        return False
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return False
    return start is None or int(fields[19]) == start


def session_members(sid: int) -> list[int]:
    """PIDs whose session is `sid` (the daemon is a session leader; everything it starts stays in it)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[3]) == sid:  # field 6: session id
            out.append(int(entry))
    return out


def ticks_to_seconds(ticks: int) -> float:
    return ticks / _CLK_TCK


def signal_pids(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of `pids` is alive (or a zombie only); returns those still alive."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive:
        alive = [p for p in alive if process_alive(p, None)]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return alive
