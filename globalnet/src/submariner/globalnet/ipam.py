"""The Globalnet IP pool (admiral `pkg/ipam`, dataplane.md §4.3).

Why a bytearray: a /16 GlobalCIDR holds 65,534 host addresses; one byte per address (0 free, 1 taken)
lets `rfind`/`find` (C loops) give "highest free" and "lowest contiguous run of n" without Python-level
scans or per-address strings, and the whole pool costs 64 KiB.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

_FREE = 0
_TAKEN = 1


class IPAMError(Exception):
    """An allocation, reservation or release the pool refuses; the message names the IP or count."""


class IPPool:
    """Host addresses of one IPv4 CIDR (no network/broadcast address), handed out and taken back."""

    def __init__(self, cidr: str) -> None:
        try:
            network = ipaddress.IPv4Network(cidr, strict=False)
        except ValueError as e:
            raise IPAMError(f"invalid CIDR {cidr!r}: {e}") from e
        size = network.num_addresses - 2  # admiral never counts the network and broadcast addresses
        if size < 2:
            raise IPAMError(f"invalid prefix for CIDR {cidr!r}: fewer than 2 host addresses")
        self.cidr = str(network)
        self._first = int(network.network_address) + 1
        self._size = size
        self._taken = bytearray(size)
        self._free = size

    # ------------------------------------------------------------------ queries

    @property
    def size(self) -> int:
        return self._size

    @property
    def free_count(self) -> int:
        return self._free

    def is_allocated(self, ip: str) -> bool:
        return self._taken[self._index(ip)] == _TAKEN

    def allocated(self) -> list[str]:
        """Every taken address, lowest first (tests and restart checks)."""
        out: list[str] = []
        i = self._taken.find(_TAKEN)
        while i >= 0:
            out.append(self._ip(i))
            i = self._taken.find(_TAKEN, i + 1)
        return out

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, str):
            return False
        try:
            self._index(ip)
        except IPAMError:
            return False
        return True

    # ------------------------------------------------------------------ changes

    def allocate(self, num: int) -> list[str]:
        """One IP → the highest free one; n > 1 → the lowest contiguous run of n (SNAT ranges need one)."""
        if num < 0:
            raise IPAMError("the number to allocate cannot be negative")
        if num == 0:
            return []
        if num == 1:
            i = self._taken.rfind(_FREE)
            if i < 0:
                raise IPAMError("insufficient IPs available for allocation")
            self._taken[i] = _TAKEN
            self._free -= 1
            return [self._ip(i)]
        if self._free < num:
            raise IPAMError(f"insufficient IPs available ({self._free}) to allocate {num}")
        start = self._taken.find(bytes(num))
        if start < 0:
            raise IPAMError(f"unable to allocate a contiguous block of {num} IPs - available pool size is "
                            f"{self._free}")
        self._taken[start:start + num] = b"\x01" * num
        self._free -= num
        return [self._ip(i) for i in range(start, start + num)]

    def reserve(self, ips: Iterable[str]) -> None:
        """Take exactly these IPs, all or nothing (restart: what object statuses already record)."""
        wanted = list(ips)
        indexes: list[int] = []
        seen: set[int] = set()
        for ip in wanted:
            i = self._index(ip)
            if self._taken[i] == _TAKEN or i in seen:
                raise IPAMError(f"the requested IP {ip!r} is already allocated")
            seen.add(i)
            indexes.append(i)
        for i in indexes:
            self._taken[i] = _TAKEN
        self._free -= len(indexes)

    def release(self, ips: Iterable[str]) -> None:
        """Give IPs back; releasing a free IP is a no-op, one outside the pool an error (nothing released)."""
        indexes = [self._index(ip) for ip in ips]
        for i in indexes:
            if self._taken[i] == _TAKEN:
                self._taken[i] = _FREE
                self._free += 1

    # ------------------------------------------------------------------ helpers

    def _index(self, ip: str) -> int:
        try:
            value = int(ipaddress.IPv4Address(ip))
        except ValueError as e:
            raise IPAMError(f"the requested IP {ip!r} is not a valid IPv4 address") from e
        i = value - self._first
        if not 0 <= i < self._size:
            raise IPAMError(f"the requested IP {ip!r} is out of range of {self.cidr}")
        return i

    def _ip(self, i: int) -> str:
        return str(ipaddress.IPv4Address(self._first + i))


def snat_target(ips: list[str]) -> str:
    """`--to-source` value: one IP, or `<first>-<last>` of a contiguous block."""
    if not ips:
        raise ValueError("no IPs to SNAT to")
    return ips[0] if len(ips) == 1 else f"{ips[0]}-{ips[-1]}"
