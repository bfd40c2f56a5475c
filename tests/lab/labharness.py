"""A private lab instance for a test: its own SUBLAB_HOME (so its own name prefix and underlay /20) and
KUBECONFIG, the `sublab` command run as a user runs it, and a clean-up that removes everything the
instance owns even when the test failed half way."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from submariner.lab import lifecycle, state, topology
from submariner.lab.names import UNDERLAY, Instance

BIN = Path(sys.executable).parent

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def kind_config(name: str, workers: int = 1, pod: str = "10.8.0.0/16", service: str = "10.88.0.0/16",
                extra_nodes: str = "") -> str:
    """A kind config shaped like the seed's (apiServerAddress included: accepted and ignored)."""
    nodes = "- role: control-plane\n" + "- role: worker\n" * workers + extra_nodes
    return (f"kind: Cluster\nname: {name}\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n{nodes}"
            f"networking:\n  apiServerAddress: 192.168.1.20\n  podSubnet: \"{pod}\"\n"
            f"  serviceSubnet: \"{service}\"\n")


class Lab:
    def __init__(self, base: Path) -> None:
        self.home = base / "home"
        self.kubeconfig = base / "kubeconfig"
        self.instance = Instance.for_home(self.home)
        self.env = {**os.environ, "SUBLAB_HOME": str(self.home), "KUBECONFIG": str(self.kubeconfig)}
        self.kubectl_cache = base / "kubectl-cache"

    # -- commands, as a user runs them ---------------------------------------------------------------
    def sublab(self, *args: str, input: str | None = None, check: bool = True,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(BIN / "sublab"), *args], input=input, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"sublab {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def create(self, config: str, *args: str) -> state.ClusterState:
        self.sublab("create", "cluster", "--config", "-", *args, input=config)
        name = yaml.safe_load(config)["name"]
        cluster = state.load(self.instance, name)
        assert cluster is not None
        return cluster

    def kubectl(self, cluster: str, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(BIN / "kubectl"), "--context", self.instance.context(cluster), "--cache-dir",
               str(self.kubectl_cache), *args]
        result = subprocess.run(cmd, input=input, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def in_netns(self, netns: str, *cmd: str, check: bool = True, timeout: float = 30,
                 ) -> subprocess.CompletedProcess[str]:
        assert netns.startswith(self.instance.prefix + "-"), netns
        result = subprocess.run(["ip", "netns", "exec", netns, *cmd], capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} in {netns} failed ({result.returncode}): {result.stderr}")
        return result

    def api_get(self, cluster: state.ClusterState, path: str) -> tuple[int, bytes]:
        """An HTTPS GET from the root namespace, verified against the cluster's CA, with its admin token."""
        data = state.paths(self.instance, cluster.name).apiserver_data
        ctx = ssl.create_default_context(cafile=str(data / "ca.crt"))
        token = (data / "admin-token").read_text().strip()
        req = urllib.request.Request(cluster.api_url + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return int(resp.status), bytes(resp.read())

    def wait_for(self, what: str, check: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")

    # -- what the instance owns ----------------------------------------------------------------------
    def netns(self) -> list[str]:
        return [n for n in topology.list_netns() if n.startswith(self.instance.prefix + "-")]

    def root_links(self) -> list[str]:
        out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
        names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
        return [n for n in names if n.startswith(self.instance.prefix)]

    def etc_netns(self) -> list[str]:
        try:
            return [n for n in os.listdir("/etc/netns") if n.startswith(self.instance.prefix + "-")]
        except FileNotFoundError:
            return []

    def processes(self, pids: list[int]) -> list[int]:
        return [p for p in pids if state.process_alive(p, None)]

    def leftovers(self) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {
            "netns": self.netns(), "links": self.root_links(), "etc": self.etc_netns(),
            "clusters": state.cluster_names(self.instance),
            "routes": [r for r in root_routes() if _inside(_route_net(r), self.instance.underlay)],
        }
        return {k: v for k, v in found.items() if v}

    def cleanup(self) -> None:
        """Delete every cluster, then anything else with the instance's prefix (names are enough)."""
        for name in state.cluster_names(self.instance):
            with contextlib.suppress(Exception):
                lifecycle.delete_cluster(self.instance, name, kubeconfig=self.kubeconfig)
        topology.purge_instance(self.instance)


def root_routes(family: str = "-4") -> list[str]:
    """The root namespace's main routing table, one normalised line per route."""
    out = subprocess.run(["ip", family, "route", "show", "table", "main"], capture_output=True, text=True,
                         check=True).stdout
    return sorted(" ".join(line.split()) for line in out.splitlines() if line.strip())


def _route_net(line: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    dst = line.split()[0]
    if dst == "default":
        return ipaddress.ip_network("0.0.0.0/0")
    try:
        return ipaddress.ip_network(dst, strict=False)
    except ValueError:
        return ipaddress.ip_network("0.0.0.0/32")


def _inside(net: ipaddress.IPv4Network | ipaddress.IPv6Network, outer: ipaddress.IPv4Network) -> bool:
    return isinstance(net, ipaddress.IPv4Network) and net.subnet_of(outer)


def foreign_lab_route(line: str, instance: Instance) -> bool:
    """A route of another lab instance (tests running in parallel): in the underlay range, not ours."""
    net = _route_net(line)
    return _inside(net, UNDERLAY) and not _inside(net, instance.underlay)


@contextlib.contextmanager
def lab_instance(base: Path) -> Iterator[Lab]:
    lab = Lab(base)
    try:
        yield lab
    finally:
        lab.cleanup()
