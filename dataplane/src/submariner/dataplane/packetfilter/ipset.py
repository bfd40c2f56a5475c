"""The ipset seam: named `hash:net` sets whose exact contents a component owns.

`KernelIPSets` drives the `ipset` command (one `ipset restore -exist` per change, so a set is rewritten in
one call); `FakeIPSets` keeps sets in memory and records mutating calls. Members are compared as networks
(`10.0.0.1` == `10.0.0.1/32`), so an unchanged set costs one `ipset save` and no write.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Protocol

from submariner.dataplane.packetfilter.backend import PacketFilterError, Runner, subprocess_runner


def _member(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return text


class IPSets(Protocol):
    def ensure(self, name: str, type: str = "hash:net") -> None: ...
    def set_members(self, name: str, members: Iterable[str]) -> bool: ...
    def destroy(self, name: str) -> None: ...
    def names(self, prefix: str = "") -> list[str]: ...


class KernelIPSets:
    """ipset(8) in this process's network namespace, or a named one."""

    def __init__(self, netns: str | None = None, runner: Runner | None = None) -> None:
        self.run = runner or subprocess_runner(netns)
        self.transactions = 0

    def names(self, prefix: str = "") -> list[str]:
        return [n for n in self.run(["ipset", "list", "-n"], None).split() if n.startswith(prefix)]

    def ensure(self, name: str, type: str = "hash:net") -> None:
        if name not in self.names(name):
            self.run(["ipset", "create", name, type, "family", "inet", "-exist"], None)
            self.transactions += 1

    def members(self, name: str) -> set[str] | None:
        try:
            text = self.run(["ipset", "save", name], None)
        except PacketFilterError:
            return None
        found: set[str] = set()
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "add" and words[1] == name:
                found.add(_member(words[2]))
        return found

    def set_members(self, name: str, members: Iterable[str]) -> bool:
        want = {_member(m) for m in members}
        have = self.members(name)
        if have is None:
            self.ensure(name)
            have = set()
        if have == want:
            return False
        lines = [f"add {name} {m}" for m in sorted(want - have)] + [f"del {name} {m}" for m in sorted(have - want)]
        self.run(["ipset", "restore", "-exist"], "\n".join(lines) + "\n")
        self.transactions += 1
        return True

    def destroy(self, name: str) -> None:
        if name in self.names(name):
            self.run(["ipset", "destroy", name], None)
            self.transactions += 1


class FakeIPSets:
    """Sets in memory; `calls` records mutating calls only."""

    def __init__(self) -> None:
        self.sets: dict[str, set[str]] = {}
        self.types: dict[str, str] = {}
        self.calls: list[tuple[str, ...]] = []

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.sets if n.startswith(prefix))

    def ensure(self, name: str, type: str = "hash:net") -> None:
        if name not in self.sets:
            self.sets[name] = set()
            self.types[name] = type
            self.calls.append(("ensure", name, type))

    def set_members(self, name: str, members: Iterable[str]) -> bool:
        want = {_member(m) for m in members}
        self.ensure(name)
        if self.sets[name] == want:
            return False
        self.sets[name] = want
        self.calls.append(("set_members", name, *sorted(want)))
        return True

    def destroy(self, name: str) -> None:
        if self.sets.pop(name, None) is not None:
            self.types.pop(name, None)
            self.calls.append(("destroy", name))
