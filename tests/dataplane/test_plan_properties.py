"""Properties of the planner over random tables and rulesets (in memory, through FakePacketFilter):
after one apply the ruleset holds, a second apply is a no-op, and nothing outside the ruleset moves."""

from __future__ import annotations

import copy
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from submariner.dataplane.packetfilter import (
    FakePacketFilter,
    Hook,
    IptablesRestore,
    Ruleset,
    RuleSpec,
    canonical,
    jump_target,
)
from submariner.dataplane.packetfilter.plan import TableState

OURS = ("SUBMARINER-A", "SUBMARINER-B")
FOREIGN = ("KUBE-SERVICES", "KUBE-POSTROUTING")
BUILTINS = ("PREROUTING", "POSTROUTING")

rule_args = st.builds(
    lambda net, target: ("-d", f"10.{net}.0.0/16", "-j", target),
    st.integers(0, 5), st.sampled_from(["ACCEPT", "RETURN"]),
)


@st.composite
def tables(draw: st.DrawFn) -> TableState:
    """A nat table as other programs (and stale runs of ours) may have left it."""
    chains: dict[str, list[tuple[str, ...]]] = {}
    present = [c for c in (*OURS, *FOREIGN) if draw(st.booleans())]
    for chain in present:
        chains[chain] = draw(st.lists(rule_args, max_size=3))
    for builtin in BUILTINS:
        jumps = st.sampled_from(present) if present else st.nothing()
        rules: list[tuple[str, ...]] = draw(st.lists(
            st.one_of(rule_args, st.builds(lambda c: ("-j", c), jumps)), max_size=5))
        chains[builtin] = rules
    for foreign in (c for c in present if c in FOREIGN):
        for ours in (c for c in present if c in OURS):
            if draw(st.booleans()):  # another component hooked itself into one of our chains
                chains[ours].insert(draw(st.integers(0, len(chains[ours]))), ("-j", foreign))
    return TableState(chains)


@st.composite
def rulesets(draw: st.DrawFn) -> Ruleset:
    chains = {("nat", c): [RuleSpec(r) for r in draw(st.lists(rule_args, max_size=4))]
              for c in OURS if draw(st.booleans())} or {("nat", OURS[0]): []}
    owned = [c for (_, c) in chains]
    hooks: list[Hook] = []
    for builtin in BUILTINS:
        for chain in owned:
            if draw(st.booleans()):
                hooks.append(Hook("nat", builtin, chain, draw(st.sampled_from(["first", "append"]))))
    return Ruleset(chains, hooks)


def fake_with(table: TableState) -> FakePacketFilter:
    pf = FakePacketFilter()
    pf.tables["nat"] = copy.deepcopy(table)
    return pf


@given(tables(), rulesets())
@settings(max_examples=400)
def test_apply_converges_in_one_step_and_touches_only_its_own(table: TableState, rs: Ruleset) -> None:
    pf = fake_with(table)
    pf.apply(rs)
    after = pf.tables["nat"].chains
    owned = {c for (_, c) in rs.chains}
    # owned chains: foreign jumps (kept, in order) first, then exactly the desired rules
    for (_, chain), specs in rs.chains.items():
        rules = after[chain]
        kept = [r for r in table.chains.get(chain, []) if jump_target(r) in FOREIGN and jump_target(r) in table.chains
                and canonical(r) not in [canonical(s.args) for s in specs]]
        assert [canonical(r) for r in rules] == [canonical(r) for r in kept] + [canonical(s.args) for s in specs]
    # hooks: once each, "first" ones on top in order
    for builtin in BUILTINS:
        hooks = [h for h in rs.hooks if h.builtin == builtin]
        rules = after[builtin]
        firsts = [h for h in hooks if h.position == "first"]
        assert [canonical(r) for r in rules[: len(firsts)]] == [canonical(h.args) for h in firsts]
        for hook in hooks:
            assert sum(1 for r in rules if jump_target(r) == hook.target) == 1
        # everything else in the builtin chain is untouched, in order
        hooked = {h.target for h in hooks}
        assert [r for r in rules if jump_target(r) not in hooked] == [
            r for r in table.chains[builtin] if jump_target(r) not in hooked]
    # chains we do not own are unchanged
    for chain, rules in table.chains.items():
        if chain not in owned and chain not in BUILTINS:
            assert after[chain] == rules
    # and the second apply has nothing to do
    before = pf.transactions
    assert pf.apply(rs) is False
    assert pf.transactions == before


@given(tables(), rulesets())
@settings(max_examples=200)
def test_delete_leaves_no_trace_and_nothing_else_moves(table: TableState, rs: Ruleset) -> None:
    pf = fake_with(table)
    pf.apply(rs)
    pf.delete(rs)
    after = pf.tables["nat"].chains
    owned = {c for (_, c) in rs.chains}
    targets = owned | {h.target for h in rs.hooks}
    assert not owned & set(after)
    for chain, rules in after.items():
        assert not [r for r in rules if jump_target(r) in targets]
        if chain not in BUILTINS:
            assert rules == table.chains[chain]
    assert pf.apply(Ruleset({}, [])) is False


@pytest.mark.root
@given(tables(), rulesets())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_kernel_backend_ends_where_the_fake_does(netns: str, table: TableState, rs: Ruleset) -> None:
    """The same plan rendered for iptables-restore and applied to the fake gives the same table."""
    lines = ["*nat"] + [f":{c} - [0:0]" for c in table.chains if c not in BUILTINS]
    lines += [f"-A {c} {' '.join(r)}" for c, rules in table.chains.items() for r in rules] + ["COMMIT", ""]
    subprocess.run(["ip", "netns", "exec", netns, "iptables-restore"], input="\n".join(lines), text=True,
                   check=True, capture_output=True)  # without --noflush: the whole nat table replaced
    kernel = IptablesRestore(netns=netns)
    fake = fake_with(table)
    assert kernel.apply(rs) == fake.apply(rs)
    listed = kernel.listing("nat").chains
    for chain, rules in fake.tables["nat"].chains.items():
        if chain in ("INPUT", "OUTPUT"):
            continue
        assert [canonical(r) for r in listed.get(chain, [])] == [canonical(r) for r in rules], chain
    assert kernel.apply(rs) is False
