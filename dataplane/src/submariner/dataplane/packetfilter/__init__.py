"""The one packet-filter seam: components describe the chains they own (`Ruleset`) and `apply` it.

`IptablesRestore` drives the nf_tables `iptables-restore`/`iptables-save` found on PATH (python-iptables
would write to the legacy backend, invisible to iptables-nft); `FakePacketFilter` is the same semantics in
memory. Both compare by meaning (`canonical`) and plan edits with `plan.py`, so a second apply of the same
ruleset changes nothing and, in the kernel backend, runs no iptables-restore.
"""

from __future__ import annotations

from submariner.dataplane.packetfilter.backend import (
    FakePacketFilter,
    IptablesRestore,
    PacketFilter,
    PacketFilterError,
    Runner,
    subprocess_runner,
)
from submariner.dataplane.packetfilter.model import Hook, RuleParseError, Ruleset, RuleSpec, canonical, jump_target

__all__ = [
    "FakePacketFilter",
    "Hook",
    "IptablesRestore",
    "PacketFilter",
    "PacketFilterError",
    "RuleParseError",
    "RuleSpec",
    "Ruleset",
    "Runner",
    "canonical",
    "jump_target",
    "subprocess_runner",
]
