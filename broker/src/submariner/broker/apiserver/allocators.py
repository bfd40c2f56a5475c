"""Service ClusterIP and NodePort allocation, as kube-apiserver does it: random free address, never reused
while held, rebuilt from the stored Services at start-up."""

from __future__ import annotations

import contextlib
import ipaddress
import random

from .errors import ApiError


class ClusterIPAllocator:
    def __init__(self, cidr: str) -> None:
        try:
            self.network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as exc:
            raise ValueError(f"invalid --service-cluster-ip-range {cidr!r}: {exc}") from exc
        if self.network.num_addresses < 8:
            raise ValueError(f"--service-cluster-ip-range {cidr} is too small (need at least a /29)")
        self._base = int(self.network.network_address)
        # The network address and the broadcast address are never handed out.
        self._first = 1
        self._last = self.network.num_addresses - 2
        self._held: set[int] = set()
        self._random = random.Random()

    def contains(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip) in self.network
        except ValueError:
            return False

    def reserve(self, ip: str) -> None:
        """Hold a specific address (an explicit clusterIP, or one found in the store)."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError as exc:
            raise ApiError(422, f"spec.clusterIPs: Invalid value: {ip!r}: must be a valid IP address") from exc
        if addr not in self.network:
            raise ApiError(
                422,
                f"spec.clusterIPs: Invalid value: {ip!r}: failed to allocate IP {ip}: the provided IP "
                f"({ip}) is not in the valid range. The range of valid IPs is {self.network}",
            )
        offset = int(addr) - self._base
        if offset in self._held:
            raise ApiError(
                422,
                f"spec.clusterIPs: Invalid value: {ip!r}: failed to allocate IP {ip}: "
                "provided IP is already allocated",
            )
        self._held.add(offset)

    def allocate(self) -> str:
        size = self._last - self._first + 1
        if len(self._held) >= size:
            raise ApiError(500, f"failed to allocate a serviceIP: range is full ({self.network})")
        while True:
            offset = self._random.randint(self._first, self._last)
            if offset not in self._held:
                self._held.add(offset)
                return str(ipaddress.ip_address(self._base + offset))

    def release(self, ip: str) -> None:
        with contextlib.suppress(ValueError):
            self._held.discard(int(ipaddress.ip_address(ip)) - self._base)

    @property
    def used(self) -> int:
        return len(self._held)


class NodePortAllocator:
    def __init__(self, low: int = 30000, high: int = 32767) -> None:
        self.low, self.high = low, high
        self._held: set[int] = set()
        self._random = random.Random()

    def reserve(self, port: int) -> None:
        if not self.low <= port <= self.high:
            raise ApiError(
                422,
                f"spec.ports[].nodePort: Invalid value: {port}: provided port is not in the valid range. "
                f"The range of valid ports is {self.low}-{self.high}",
            )
        if port in self._held:
            raise ApiError(422, f"spec.ports[].nodePort: Invalid value: {port}: provided port is already allocated")
        self._held.add(port)

    def allocate(self) -> int:
        if len(self._held) > self.high - self.low:
            raise ApiError(500, "failed to allocate a nodePort: range is full")
        while True:
            port = self._random.randint(self.low, self.high)
            if port not in self._held:
                self._held.add(port)
                return port

    def release(self, port: int) -> None:
        self._held.discard(port)
