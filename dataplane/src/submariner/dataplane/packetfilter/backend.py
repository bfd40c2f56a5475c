"""PacketFilter backends: the nf_tables iptables-restore one and the in-memory fake."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from submariner.dataplane.packetfilter.model import BUILTIN_CHAINS, Ruleset, canonical
from submariner.dataplane.packetfilter.plan import (
    Op,
    TableState,
    apply_ops,
    parse_save,
    plan_delete,
    plan_table,
    render,
)

# argv, stdin text (or None) → stdout; raises PacketFilterError on a non-zero exit.
Runner = Callable[[Sequence[str], "str | None"], str]


class PacketFilterError(RuntimeError):
    """A packet-filter command failed; the message carries the command, its stderr and the input."""


def subprocess_runner(netns: str | None = None) -> Runner:
    """Run commands in this process's network namespace, or in a named one via `ip netns exec`."""
    prefix = ["ip", "netns", "exec", netns] if netns else []

    def run(argv: Sequence[str], stdin: str | None) -> str:
        cmd = [*prefix, *argv]
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            detail = f"\n--- input ---\n{stdin}" if stdin else ""
            raise PacketFilterError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}{detail}")
        return result.stdout

    return run


class PacketFilter(Protocol):
    def apply(self, ruleset: Ruleset) -> bool:
        """Make each owned chain exactly its rules and each hook present once at its position, atomically;
        False (nothing run) when everything already matches by meaning."""

    def chain_rules(self, table: str, chain: str) -> list[tuple[str, ...]] | None:
        """The chain's rules in canonical form, None if the chain is absent."""

    def delete(self, ruleset: Ruleset) -> None:
        """Unhook and delete the ruleset's chains (uninstall)."""


class IptablesRestore:
    """Reads with `iptables-save -t T`, writes with one `iptables-restore --noflush` per apply/delete.

    iptables-nft-restore commits each table section (`*nat` … `COMMIT`) atomically: a reader never sees a
    chain half rewritten, and a failing rule leaves that table as it was."""

    def __init__(self, netns: str | None = None, runner: Runner | None = None) -> None:
        self.netns = netns
        self.run = runner or subprocess_runner(netns)
        self.transactions = 0  # restores run, for tests and logs
        self.attempts = 3

    def _read(self, table: str) -> TableState:
        text = self.run(["iptables-save", "-t", table], None)
        state = parse_save(text).get(table) or TableState()
        for chain in BUILTIN_CHAINS.get(table, ()):
            state.chains.setdefault(chain, [])
        return state

    def _commit(self, plans: dict[str, list[Op]]) -> bool:
        text = render(plans)
        if not text:
            return False
        self.run(["iptables-restore", "--noflush"], text)
        self.transactions += 1
        return True

    def _plan_and_commit(self, ruleset: Ruleset, planner: Callable[[str, TableState, Ruleset], list[Op]]) -> bool:
        """Read, plan, write; again (up to `attempts`) when the write fails, because another program (kube-proxy,
        Globalnet) may have changed a table between our read and our write and a `-D` then misses."""
        for attempt in range(1, self.attempts + 1):
            plans = {table: planner(table, self._read(table), ruleset) for table in ruleset.tables()}
            try:
                return self._commit(plans)
            except PacketFilterError:
                if attempt == self.attempts:
                    raise
                time.sleep(0.05 * attempt)
        return False  # not reached

    def apply(self, ruleset: Ruleset) -> bool:
        return self._plan_and_commit(ruleset, plan_table)

    def delete(self, ruleset: Ruleset) -> None:
        self._plan_and_commit(ruleset, plan_delete)

    def chain_rules(self, table: str, chain: str) -> list[tuple[str, ...]] | None:
        rules = self._read(table).chains.get(chain)
        return None if rules is None else [canonical(rule) for rule in rules]

    def listing(self, table: str) -> TableState:
        """The table as listed (raw arguments), e.g. to check foreign chains survived."""
        return self._read(table)


class FakePacketFilter:
    """In-memory tables with the kernel backend's semantics; `.transactions` counts would-be restores."""

    def __init__(self) -> None:
        self.tables: dict[str, TableState] = {}
        self.transactions = 0

    def table(self, name: str) -> TableState:
        state = self.tables.get(name)
        if state is None:
            state = self.tables[name] = TableState({chain: [] for chain in BUILTIN_CHAINS.get(name, ())})
        return state

    def seed(self, table: str, chain: str, rules: Sequence[Sequence[str]] = ()) -> None:
        """Put a chain there as another program would (e.g. kube-proxy's KUBE-SERVICES)."""
        self.table(table).chains[chain] = [tuple(rule) for rule in rules]

    def _commit(self, plans: dict[str, list[Op]]) -> bool:
        if not any(plans.values()):
            return False
        for name, ops in plans.items():
            apply_ops(self.table(name), ops)
        self.transactions += 1
        return True

    def apply(self, ruleset: Ruleset) -> bool:
        return self._commit({t: plan_table(t, self.table(t), ruleset) for t in ruleset.tables()})

    def delete(self, ruleset: Ruleset) -> None:
        self._commit({t: plan_delete(t, self.table(t), ruleset) for t in ruleset.tables()})

    def chain_rules(self, table: str, chain: str) -> list[tuple[str, ...]] | None:
        rules = self.table(table).chains.get(chain)
        return None if rules is None else [canonical(rule) for rule in rules]
