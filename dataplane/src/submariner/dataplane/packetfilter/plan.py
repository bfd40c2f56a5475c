"""From (what the kernel holds, what a component wants) to the edits that make them agree.

Shared by the kernel backend (edits rendered as one `iptables-restore --noflush` input) and the fake (edits
applied to a dict), so both have the same semantics. An empty plan means "nothing to do": the kernel backend
then runs no restore at all.

Ownership rules: a ruleset owns its chains' exact contents, except rules in them that jump into a user chain
the ruleset does not own — those are other components' hooks (Globalnet puts `-j SUBMARINER-GN-EGRESS` at the
top of the shared nat `SUBMARINER-POSTROUTING`) and are kept, in their order, ahead of ours. Chains not in
the ruleset are never flushed; in hooked chains only rules jumping to the hook targets are touched.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from submariner.dataplane.packetfilter.model import BUILTIN_CHAINS, Hook, Ruleset, canonical, jump_target


@dataclass
class TableState:
    """One table as listed: chains in listing order, each with its rules' raw arguments."""

    chains: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)

    def is_user_chain(self, table: str, chain: str) -> bool:
        return chain in self.chains and chain not in BUILTIN_CHAINS.get(table, ())


@dataclass(frozen=True)
class Op:
    """One edit: kind is "declare" (create or flush), "append", "insert" (pos 1-based), "delete" (first rule
    with these args) or "delete-chain"."""

    kind: str
    chain: str
    args: tuple[str, ...] = ()
    pos: int = 0


# Characters that make shlex.split and str.split disagree: quotes and backslashes (shlex interprets them), and
# whitespace str.split splits on but shlex does not (non-ASCII lines are left to shlex as a whole).
_NEEDS_SHLEX = re.compile(r"""["'\\\x0b\x0c\x1c-\x1f]""")


def _split(line: str) -> list[str]:
    """shlex.split's words, by str.split when that gives the same words (nearly every listed rule: only
    comments are quoted) — shlex costs ~0.1 ms a line, i.e. 2 s for a 20,000-rule table."""
    if line.isascii() and _NEEDS_SHLEX.search(line) is None:
        return line.split()
    return shlex.split(line)


def parse_save(text: str) -> dict[str, TableState]:
    """`iptables-save` output → tables (comment lines and counters ignored)."""
    tables: dict[str, TableState] = {}
    current: TableState | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], TableState())
        elif line == "COMMIT":
            current = None
        elif current is None:
            continue
        elif line.startswith(":"):
            current.chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            words = _split(line)
            current.chains.setdefault(words[1], []).append(tuple(words[2:]))
    return tables


def _canon(rules: Iterable[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [canonical(r) for r in rules]


def plan_table(table: str, state: TableState, ruleset: Ruleset) -> list[Op]:
    """The edits that make `table` match the ruleset's part of it (empty when it already does)."""
    ops: list[Op] = []
    owned = [chain for (t, chain) in ruleset.chains if t == table]
    for chain in owned:
        desired = [tuple(rule.args) for rule in ruleset.chains[(table, chain)]]
        desired_canon = _canon(desired)
        desired_set = set(desired_canon)
        current = state.chains.get(chain)
        foreign: list[tuple[str, ...]] = []
        ours: list[tuple[str, ...]] = []
        for rule in current or ():
            target = jump_target(rule)
            if (target is not None and target not in owned and state.is_user_chain(table, target)
                    and canonical(rule) not in desired_set):
                foreign.append(rule)
            else:
                ours.append(rule)
        if current is not None and _canon(ours) == desired_canon and _canon(current[: len(foreign)]) == _canon(foreign):
            continue
        ops.append(Op("declare", chain))
        ops.extend(Op("append", chain, rule) for rule in foreign)
        ops.extend(Op("append", chain, rule) for rule in desired)

    by_chain: dict[str, list[Hook]] = {}
    for hook in ruleset.hooks:
        if hook.table == table:
            by_chain.setdefault(hook.builtin, []).append(hook)
    for chain, hooks in by_chain.items():
        current = state.chains.get(chain)
        if current is None and chain not in BUILTIN_CHAINS.get(table, ()):
            ops.append(Op("declare", chain))  # a shared chain another component will fill
        rules = current or []
        targets = {hook.target for hook in hooks}
        copies = [rule for rule in rules if jump_target(rule) in targets]
        first = [hook for hook in hooks if hook.position == "first"]
        others = [hook for hook in hooks if hook.position != "first"]
        ok = len(copies) == len(hooks) and len(rules) >= len(first)
        ok = ok and all(canonical(rules[i]) == canonical(hook.args) for i, hook in enumerate(first))
        listed = [canonical(rule) for rule in copies]
        ok = ok and all(listed.count(canonical(hook.args)) == 1 for hook in others)
        if ok:
            continue
        ops.extend(Op("delete", chain, rule) for rule in copies)
        ops.extend(Op("insert", chain, hook.args, pos=i + 1) for i, hook in enumerate(first))
        ops.extend(Op("append", chain, hook.args) for hook in others)
    return ops


def plan_delete(table: str, state: TableState, ruleset: Ruleset) -> list[Op]:
    """Unhook, flush and delete the ruleset's chains in `table` (absent ones skipped)."""
    ops: list[Op] = []
    owned = {chain for (t, chain) in ruleset.chains if t == table}
    targets = {hook.target for hook in ruleset.hooks if hook.table == table} | owned
    for chain, rules in state.chains.items():
        if chain in owned:
            continue
        ops.extend(Op("delete", chain, rule) for rule in rules if jump_target(rule) in targets)
    present = [chain for (t, chain) in ruleset.chains if t == table and chain in state.chains]
    ops.extend(Op("declare", chain) for chain in present)
    ops.extend(Op("delete-chain", chain) for chain in present)
    return ops


_SAFE = re.compile(r"^[A-Za-z0-9_./:,!@%+=-]+$")


def _quote(args: Iterable[str]) -> str:
    """Arguments as iptables-restore reads them: bare when safe, else in double quotes (comments)."""
    out = []
    for arg in args:
        if _SAFE.match(arg):
            out.append(arg)
        else:
            out.append('"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return " ".join(out)


def render(plans: dict[str, list[Op]]) -> str:
    """`iptables-restore --noflush` input for per-table plans (declarations first, as the format wants)."""
    lines: list[str] = []
    for table, ops in plans.items():
        if not ops:
            continue
        lines.append(f"*{table}")
        declared: set[str] = set()
        for op in ops:
            if op.kind == "declare" and op.chain not in declared:
                declared.add(op.chain)
                lines.append(f":{op.chain} - [0:0]")
        for op in ops:
            args = _quote(op.args)
            if op.kind == "append":
                lines.append(f"-A {op.chain} {args}")
            elif op.kind == "insert":
                lines.append(f"-I {op.chain} {op.pos} {args}")
            elif op.kind == "delete":
                lines.append(f"-D {op.chain} {args}")
            elif op.kind == "delete-chain":
                lines.append(f"-X {op.chain}")
        lines.append("COMMIT")
    return "\n".join(lines) + "\n" if lines else ""


def apply_ops(state: TableState, ops: Iterable[Op]) -> None:
    """Apply edits to an in-memory table, with iptables-restore's semantics (declare flushes)."""
    ops = list(ops)
    for op in ops:
        if op.kind == "declare":
            state.chains[op.chain] = []
    for op in ops:
        if op.kind == "append":
            state.chains.setdefault(op.chain, []).append(op.args)
        elif op.kind == "insert":
            state.chains.setdefault(op.chain, []).insert(op.pos - 1, op.args)
        elif op.kind == "delete":
            rules = state.chains.get(op.chain, [])
            want = canonical(op.args)
            for i, rule in enumerate(rules):
                if canonical(rule) == want:
                    del rules[i]
                    break
            else:
                raise ValueError(f"no rule {' '.join(op.args)!r} in chain {op.chain}")
        elif op.kind == "delete-chain":
            state.chains.pop(op.chain, None)
