"""Every name the lab gives to something outside its state directory, in one place.

A lab *instance* (one state directory) owns everything whose name starts with its prefix, so tests can run
their own instance beside a user's, and `sublab delete` can find what a crashed run left behind by name.
Interface names must fit Linux's 15 characters, so they use a short hash.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = Path("/var/lib/sublab")
UNDERLAY = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544 benchmarking range: never routed anywhere else
INSTANCE_SUBNET_PREFIX = 20  # each instance gets a /20 of the underlay (4094 addresses)
NETNS_ANNOTATION = "lab.submariner.io/netns"  # on a Pod: the network namespace the kubelet made for it
LOGS_ANNOTATION = "lab.submariner.io/logs"  # on a Pod: the directory with its <container>.log files

# What may follow `<cluster prefix>` in a namespace of that cluster: a kind node name's role part, or a pod.
_NODE_ROLE = re.compile(r"^(control-plane|worker)\d*$")
_POD_SUFFIX = re.compile(r"^pod-[0-9a-f]{8}$")


def _short(text: str, n: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


@dataclass(frozen=True)
class Instance:
    """Names and addresses of one lab instance (one state directory)."""

    home: Path
    prefix: str  # "sl" for the default instance, "sl<hash>" for others (tests)

    @classmethod
    def from_env(cls) -> Instance:
        home = Path(os.environ.get("SUBLAB_HOME") or DEFAULT_HOME)
        return cls.for_home(home)

    @classmethod
    def for_home(cls, home: Path) -> Instance:
        resolved = home.resolve()
        prefix = "sl" if resolved == DEFAULT_HOME else f"sl{_short(str(resolved), 4)}"
        return cls(resolved, prefix)

    # -- the underlay: a bridge in its own namespace, one veth per node, one to the root namespace --------
    @property
    def index(self) -> int:
        """Which /20 of 198.18.0.0/15 this instance uses (0 for the default instance)."""
        if self.prefix == "sl":
            return 0
        return 1 + int(_short(self.prefix, 6), 16) % 31

    @property
    def underlay(self) -> ipaddress.IPv4Network:
        subnets = list(UNDERLAY.subnets(new_prefix=INSTANCE_SUBNET_PREFIX))
        return subnets[self.index]  # type: ignore[return-value]

    @property
    def root_address(self) -> ipaddress.IPv4Address:
        """The root namespace's address on the underlay (its only lab route is the underlay's /20)."""
        return self.underlay.network_address + 1

    @property
    def underlay_netns(self) -> str:
        return f"{self.prefix}-underlay"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br0"[:15]

    @property
    def root_veth(self) -> str:
        return f"{self.prefix}-root"[:15]

    # -- clusters, nodes, pods ---------------------------------------------------------------------------
    def cluster_prefix(self, cluster: str) -> str:
        """Every namespace of a cluster starts with this (what `delete` looks for after a crash)."""
        return f"{self.prefix}-{cluster}-"

    def node_netns(self, cluster: str, node: str) -> str:
        return f"{self.cluster_prefix(cluster)}{node}"

    def pod_netns(self, cluster: str, pod_uid: str) -> str:
        return f"{self.cluster_prefix(cluster)}pod-{pod_uid[:8]}"

    def owns_netns(self, cluster: str, netns: str) -> bool:
        """Whether `netns` is one of `cluster`'s namespaces (a node or a pod), judged by name alone.

        A prefix test is not enough: cluster `broker`'s prefix `sl-broker-` is also the start of cluster
        `broker-globalnet`'s namespaces, and deleting one must never touch the other.
        """
        prefix = self.cluster_prefix(cluster)
        if not netns.startswith(prefix):
            return False
        rest = netns[len(prefix):]
        if _POD_SUFFIX.match(rest):
            return True
        return rest.startswith(f"{cluster}-") and bool(_NODE_ROLE.match(rest[len(cluster) + 1:]))

    def owns_any_netns(self, netns: str) -> bool:
        """Whether `netns` belongs to this instance at all (its underlay or any cluster's node or pod)."""
        return netns.startswith(f"{self.prefix}-")

    def veth(self, kind: str, owner: str) -> str:
        """A host-side veth name: `<prefix-ish><kind><hash>` within 15 characters (kind: u=underlay, p=pod)."""
        return f"{self.prefix[:4]}{kind}{_short(owner, 8)}"[:15]

    def context(self, cluster: str) -> str:
        return f"lab-{cluster}"

    def cluster_dir(self, cluster: str) -> Path:
        return self.home / "clusters" / cluster

    @property
    def clusters_dir(self) -> Path:
        return self.home / "clusters"

    @property
    def kubeconfig(self) -> Path:
        """The lab's own kubeconfig with every cluster's `lab-<name>` context (`sublab kubeconfig`)."""
        return self.home / "kubeconfig"

    def netns_etc(self, netns: str) -> Path:
        """`ip netns exec` bind-mounts files from here over /etc (resolv.conf, hosts)."""
        return Path("/etc/netns") / netns
