"""The lab's network: namespaces, veths, a bridge, addresses and routes (netlink through pyroute2).

Layout of one instance:

    root ns ── <prefix>-root (Instance.root_address/20) ─┐
                                                          │  <prefix>-underlay ns: bridge <prefix>br0
    node ns <prefix>-<cluster>-<node>: eth0 (underlay IP) ┘  (one veth per node, one to the root ns)

Nothing here adds a default route anywhere, and the root namespace only gets the connected route of its
underlay address. Every function is idempotent (reconcile: look, then create what is missing), and
deletion works from names alone so it also cleans up after a crash that lost the state.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, NetNS, netns  # type: ignore[import-untyped]

from .names import INSTANCE_SUBNET_PREFIX, Instance
from .state import ClusterState, NodeState, signal_pids, wait_gone

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
MAIN_TABLE = 254
_ADDR_GEN_MODE_NONE = 1  # IN6_ADDR_GEN_MODE_NONE: no IPv6 link-local address, so no fe80::/64 route
_NO_IPV6_LL = {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", _ADDR_GEN_MODE_NONE)]})]}


class TopologyError(RuntimeError):
    """The kernel refused a lab network change; the message names the object."""


# ----------------------------------------------------------------------------------- small helpers


def list_netns() -> list[str]:
    return sorted(netns.listnetns())


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


@contextlib.contextmanager
def open_netns(name: str) -> Iterator[Any]:
    """A netlink socket inside an existing namespace (never creates one: flags=0)."""
    ns = NetNS(name, flags=0)
    try:
        yield ns
    finally:
        ns.close()


def _ensure_netns(name: str) -> None:
    if not netns_exists(name):
        try:
            netns.create(name)
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise TopologyError(f"cannot create network namespace {name}: {exc}") from exc


def _index(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _up(ipr: Any, index: int) -> None:
    ipr.link("set", index=index, state="up")


def _ensure_address(ipr: Any, index: int, address: str, prefixlen: int) -> None:
    have = {(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=index, family=2)}
    if (address, prefixlen) not in have:
        try:
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        except Exception as exc:  # pyroute2 raises NetlinkError (EEXIST on a race)
            if getattr(exc, "code", None) != errno.EEXIST:
                raise


def netns_sysctl(name: str, *assignments: str) -> None:
    """Set sysctls inside a lab namespace (never the root one: `ip netns exec` enters `name` first)."""
    if not assignments:
        return
    if not netns_exists(name):
        raise TopologyError(f"network namespace {name} does not exist")
    result = subprocess.run(["ip", "netns", "exec", name, "sysctl", "-q", "-w", *assignments],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TopologyError(f"sysctl {' '.join(assignments)} in {name}: {result.stderr.strip()}")


# ----------------------------------------------------------------------------------- the underlay


def ensure_underlay(instance: Instance) -> None:
    """The underlay namespace with its bridge, and the root namespace's veth onto it."""
    ns_name = instance.underlay_netns
    with IPRoute() as root:
        _check_underlay_free(root, instance, _index(root, instance.root_veth))
    _ensure_netns(ns_name)
    peer = instance.veth("u", "root")
    with open_netns(ns_name) as ns:
        lo = _index(ns, "lo")
        if lo is not None:
            _up(ns, lo)
        br = _index(ns, instance.bridge)
        if br is None:
            ns.link("add", ifname=instance.bridge, kind="bridge")
            br = _index(ns, instance.bridge)
            assert br is not None
        with contextlib.suppress(Exception):  # older kernels: keep the link-local address
            ns.link("set", index=br, IFLA_AF_SPEC=_NO_IPV6_LL)
        _up(ns, br)
        peer_index = _index(ns, peer)
    with IPRoute() as root:
        root_index = _index(root, instance.root_veth)
        if root_index is not None and peer_index is None:
            # Half of a pair left by a crash: start over.
            root.link("del", index=root_index)
            root_index = None
        if root_index is None:
            root.link("add", ifname=instance.root_veth, kind="veth",
                      peer={"ifname": peer, "net_ns_fd": ns_name})
            root_index = _index(root, instance.root_veth)
            assert root_index is not None
        with contextlib.suppress(Exception):
            root.link("set", index=root_index, IFLA_AF_SPEC=_NO_IPV6_LL)
        _ensure_address(root, root_index, str(instance.root_address), INSTANCE_SUBNET_PREFIX)
        _up(root, root_index)
    with open_netns(ns_name) as ns:
        peer_index = _index(ns, peer)
        assert peer_index is not None
        ns.link("set", index=peer_index, master=br)
        _up(ns, peer_index)


def _check_underlay_free(root: Any, instance: Instance, own_index: int | None) -> None:
    """Refuse to take an underlay /20 that another interface of the root namespace already uses.

    Two instances whose homes hash to the same /20 (or a user's network in 198.18.0.0/15) would otherwise
    share a connected route, and lab traffic could leave through the wrong interface.
    """
    for addr in root.get_addr(family=2):
        if addr["index"] == own_index:
            continue
        ip = addr.get("address")
        if ip and ipaddress.ip_address(ip) in instance.underlay:
            name = next((link.get("ifname") for link in root.get_links(addr["index"])), addr["index"])
            raise TopologyError(
                f"the lab underlay {instance.underlay} is already used by interface {name} ({ip}); "
                f"use another SUBLAB_HOME or delete that lab first"
            )


def delete_underlay(instance: Instance) -> None:
    """The root veth (its peer goes with it) and the underlay namespace."""
    with IPRoute() as root:
        index = _index(root, instance.root_veth)
        if index is not None:
            root.link("del", index=index)
    remove_netns([instance.underlay_netns])


# ----------------------------------------------------------------------------------- nodes


def ensure_node(instance: Instance, node: NodeState) -> None:
    """A node namespace: lo up, eth0 on the underlay bridge with the node's address, forwarding on."""
    _ensure_netns(node.netns)
    with open_netns(instance.underlay_netns) as under:
        br = _index(under, instance.bridge)
        if br is None:
            raise TopologyError(f"bridge {instance.bridge} missing in {instance.underlay_netns}")
        host = _index(under, node.veth)
        with open_netns(node.netns) as ns:
            eth0 = _index(ns, "eth0")
            if eth0 is not None and host is None:
                ns.link("del", index=eth0)  # half a pair from a crash
                eth0 = None
            if host is not None and eth0 is None:
                under.link("del", index=host)
                host = None
        if host is None:
            under.link("add", ifname=node.veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": node.netns})
            host = _index(under, node.veth)
            assert host is not None
        with contextlib.suppress(Exception):
            under.link("set", index=host, IFLA_AF_SPEC=_NO_IPV6_LL)
        under.link("set", index=host, master=br)
        _up(under, host)
    with open_netns(node.netns) as ns:
        lo = _index(ns, "lo")
        if lo is not None:
            _up(ns, lo)
        eth0 = _index(ns, "eth0")
        assert eth0 is not None
        _ensure_address(ns, eth0, node.address, INSTANCE_SUBNET_PREFIX)
        _up(ns, eth0)
        _ensure_cni_interface(ns, node)
    netns_sysctl(node.netns, "net.ipv4.ip_forward=1")


CNI_INTERFACE = "cni0"


def cni_address(pod_cidr: str) -> str:
    """The node's own address inside its pod CIDR: the first host (pods start at the second)."""
    return str(next(ipaddress.ip_network(pod_cidr, strict=False).hosts()))


def _ensure_cni_interface(ns: Any, node: NodeState) -> None:
    """A port-less bridge `cni0` holding the node's CNI IP: the first host of its pod CIDR, /32.

    kind's CNI gives the node the pod range's gateway address the same way. Submariner's gateway and route agent
    look for "the interface with an IP inside the cluster CIDR" (health-check IP, SNAT of host traffic into the
    tunnel) and degrade without one. A bridge because this kernel has no dummy module.
    """
    index = _index(ns, CNI_INTERFACE)
    if index is None:
        ns.link("add", ifname=CNI_INTERFACE, kind="bridge")
        index = _index(ns, CNI_INTERFACE)
        assert index is not None
    _ensure_address(ns, index, cni_address(node.pod_cidr), 32)
    _up(ns, index)


def ensure_node_routes(cluster: ClusterState) -> None:
    """In every node: a route to each other node's pod CIDR via that node's underlay address."""
    for node in cluster.nodes:
        wanted = {other.pod_cidr: other.address for other in cluster.nodes if other.name != node.name}
        with open_netns(node.netns) as ns:
            eth0 = _index(ns, "eth0")
            assert eth0 is not None
            for cidr, via in wanted.items():
                ns.route("replace", dst=cidr, gateway=via, oif=eth0, table=MAIN_TABLE)


def ensure_cluster(instance: Instance, cluster: ClusterState) -> None:
    """Everything a cluster needs on the network (idempotent)."""
    ensure_underlay(instance)
    for node in cluster.nodes:
        ensure_node(instance, node)
    ensure_node_routes(cluster)


# ----------------------------------------------------------------------------------- deletion


def netns_inode(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(NETNS_DIR / name)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in_netns(names: Iterable[str]) -> list[int]:
    """Processes whose network namespace is one of `names` (they hold it alive after its name is gone)."""
    inodes = {ino for name in names if (ino := netns_inode(name)) is not None}
    for own in ("/proc/self/ns/net", "/proc/1/ns/net"):  # never ours or init's, whatever a name points at
        with contextlib.suppress(OSError):
            st = os.stat(own)
            inodes.discard((st.st_dev, st.st_ino))
    if not inodes:
        return []
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inodes:
            found.append(int(entry))
    return found


def stop_netns_processes(names: list[str], grace: float = 0.0) -> None:
    """Stop every process living in these lab namespaces (all started by the lab): SIGKILL, or SIGTERM
    first with a `grace` period."""
    pids = pids_in_netns(names)
    if not pids:
        return
    log.info("stopping processes in lab namespaces pids=%s", pids)
    left = pids
    if grace > 0:
        signal_pids(pids, signal.SIGTERM)
        left = wait_gone(pids, grace)
    if left:
        signal_pids(left, signal.SIGKILL)
        wait_gone(left, 5.0)


def remove_netns(names: Iterable[str]) -> None:
    """Remove namespaces: veths inside go first (their peers elsewhere vanish at once, not lazily)."""
    for name in names:
        if not netns_exists(name):
            continue
        with contextlib.suppress(OSError), open_netns(name) as ns:
            for link in ns.get_links():
                if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") in ("veth", "vxlan", "bridge"):
                    with contextlib.suppress(Exception):
                        ns.link("del", index=link["index"])
        try:
            netns.remove(name)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EINVAL):
                raise TopologyError(f"cannot remove network namespace {name}: {exc}") from exc
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


def cluster_netns(instance: Instance, cluster: str) -> list[str]:
    """The cluster's namespaces found by name (nodes and pods), also those a crash left without state."""
    return [name for name in list_netns() if instance.owns_netns(cluster, name)]


def cluster_etc_dirs(instance: Instance, cluster: str) -> list[Path]:
    """`/etc/netns/<ns>` directories (resolv.conf for `ip netns exec`) of the cluster's namespaces."""
    base = Path("/etc/netns")
    try:
        return [base / n for n in sorted(os.listdir(base)) if instance.owns_netns(cluster, n)]
    except FileNotFoundError:
        return []


def delete_cluster(instance: Instance, cluster: str) -> None:
    """Remove every namespace of the cluster (killing what runs in them) and their /etc/netns files."""
    names = cluster_netns(instance, cluster)
    stop_netns_processes(names)
    # Pods before nodes: a pod's veth peer lives in its node.
    names.sort(key=lambda n: (not n.startswith(f"{instance.cluster_prefix(cluster)}pod-"), n))
    remove_netns(names)
    for path in cluster_etc_dirs(instance, cluster):
        shutil.rmtree(path, ignore_errors=True)


def instance_in_use(instance: Instance) -> bool:
    """Whether any namespace of the instance other than the underlay remains."""
    return any(n.startswith(f"{instance.prefix}-") and n != instance.underlay_netns for n in list_netns())


def purge_instance(instance: Instance) -> None:
    """Everything named with the instance's prefix: namespaces, the root veth, /etc/netns entries.

    For tests and `sublab delete clusters --all`: no state is needed, names are enough.
    """
    names = [n for n in list_netns() if instance.owns_any_netns(n)]
    stop_netns_processes(names)
    names.sort(key=lambda n: ("-pod-" not in n, n == instance.underlay_netns, n))
    remove_netns(names)
    with IPRoute() as root:
        index = _index(root, instance.root_veth)
        if index is not None:
            root.link("del", index=index)
    base = Path("/etc/netns")
    with contextlib.suppress(FileNotFoundError):
        for n in os.listdir(base):
            if instance.owns_any_netns(n):
                shutil.rmtree(base / n, ignore_errors=True)


def wait_netns_gone(names: Iterable[str], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending and time.monotonic() < deadline:
        pending = [n for n in pending if netns_exists(n)]
        if pending:
            time.sleep(0.02)
