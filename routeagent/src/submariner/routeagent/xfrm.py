"""XFRM policy clean-up (dataplane.md §2.5, §3.1 "xfrm cleanup" handler).

The libreswan driver's IPsec policies stay in the kernel when its gateway pod goes passive or dies; when this
node stops being the gateway the route agent deletes every XFRM policy except all-zero ones (src and dst
`0.0.0.0/0` / `::/0`, e.g. socket or bypass policies other software installs), as the reference does.
Through `ip xfrm policy` because pyroute2's IPRoute does not speak the XFRM netlink family.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from submariner.dataplane.packetfilter import PacketFilterError, Runner, subprocess_runner

log = logging.getLogger(__name__)

ZERO = {"0.0.0.0/0", "::/0"}


@dataclass(frozen=True)
class Policy:
    selector: tuple[str, ...]   # ("src", "10.8.0.0/16", "dst", "10.9.0.0/16", ["proto", "tcp", "dport", "80"])
    direction: str              # out | in | fwd

    @property
    def all_zero(self) -> bool:
        words = dict(zip(self.selector[::2], self.selector[1::2], strict=False))
        return words.get("src") in ZERO and words.get("dst") in ZERO


def parse_policies(text: str) -> list[Policy]:
    """`ip xfrm policy list` → policies (socket policies, which have no `dir`, are skipped)."""
    out: list[Policy] = []
    selector: tuple[str, ...] | None = None
    for line in text.splitlines():
        if line.startswith("src "):
            selector = tuple(line.split())
        elif selector is not None and line.startswith("\t") and not line.startswith("\t\t"):
            words = line.split()
            if words and words[0] == "dir" and len(words) > 1:
                out.append(Policy(selector, words[1]))
                selector = None
    return out


class Xfrm(Protocol):
    def policies(self) -> list[Policy]: ...
    def delete(self, policy: Policy) -> None: ...


class KernelXfrm:
    def __init__(self, netns: str | None = None, runner: Runner | None = None) -> None:
        self.run = runner or subprocess_runner(netns)

    def policies(self) -> list[Policy]:
        return parse_policies(self.run(["ip", "xfrm", "policy", "list"], None))

    def delete(self, policy: Policy) -> None:
        self.run(["ip", "xfrm", "policy", "delete", *policy.selector, "dir", policy.direction], None)


class FakeXfrm:
    def __init__(self, policies: list[Policy] | None = None) -> None:
        self.held = list(policies or [])
        self.deleted: list[Policy] = []

    def policies(self) -> list[Policy]:
        return list(self.held)

    def delete(self, policy: Policy) -> None:
        self.held.remove(policy)
        self.deleted.append(policy)


def cleanup(xfrm: Xfrm) -> int:
    """Delete every policy that is not all-zero; returns how many went (failures logged, not raised)."""
    count = 0
    for policy in xfrm.policies():
        if policy.all_zero:
            continue
        try:
            xfrm.delete(policy)
            count += 1
        except PacketFilterError as e:
            log.warning("could not delete XFRM policy %s dir %s: %s", " ".join(policy.selector), policy.direction, e)
    return count
