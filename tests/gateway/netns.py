"""Throw-away network namespaces for the gateway's kernel tests (names start with `subm-gw-`)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=timeout)


@dataclass
class Pair:
    """Two node namespaces joined by a veth (`a_ip`/`b_ip` on 192.168.x.0/24), each with a port-less bridge `cni0`
    holding its "cluster subnet" address; no default routes."""

    a: str
    b: str
    a_ip: str
    b_ip: str
    a_subnet: str = "10.1.0.0/24"
    b_subnet: str = "10.2.0.0/24"
    a_cni: str = "10.1.0.1"
    b_cni: str = "10.2.0.1"
    pids: list[int] = field(default_factory=list)

    def exec(self, ns: str, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout)

    def rx_packets(self, ns: str, ifname: str) -> int:
        doc = json.loads(sh("ip", "-n", ns, "-j", "-s", "link", "show", ifname).stdout)
        return int(doc[0]["stats64"]["rx"]["packets"])


@contextlib.contextmanager
def netns_pair(third_octet: int) -> Iterator[Pair]:
    tag = secrets.token_hex(3)
    pair = Pair(f"subm-gw-{tag}-a", f"subm-gw-{tag}-b", f"192.168.{third_octet}.1", f"192.168.{third_octet}.2")
    try:
        for ns in (pair.a, pair.b):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", pair.a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", pair.b)
        for ns, ip, cni in ((pair.a, pair.a_ip, pair.a_cni), (pair.b, pair.b_ip, pair.b_cni)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "veth0")
            sh("ip", "-n", ns, "link", "set", "veth0", "up")
            sh("ip", "-n", ns, "link", "add", "cni0", "type", "bridge")  # no dummy module on this kernel
            sh("ip", "-n", ns, "addr", "add", f"{cni}/24", "dev", "cni0")
            sh("ip", "-n", ns, "link", "set", "cni0", "up")
        yield pair
    finally:
        for pid in pair.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for ns in (pair.a, pair.b):
            sh("ip", "netns", "del", ns, check=False)


class InNetns:
    """Runs calls on one thread that setns()'d into a named network namespace."""

    def __init__(self, netns: str) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(1, initializer=self._enter, initargs=(netns,))

    @staticmethod
    def _enter(netns: str) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
        try:
            if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET, this thread only
                raise OSError(ctypes.get_errno(), "setns failed")
        finally:
            os.close(fd)

    def __call__(self, fn: Callable[[], T]) -> T:
        return self.pool.submit(fn).result(30)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
