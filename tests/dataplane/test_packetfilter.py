"""PacketFilter semantics, run against both backends: the in-memory fake and iptables-restore in a netns.

What matters: exact chain contents, hooks at their position exactly once, foreign chains (kube-proxy's
KUBE-*) untouched, Globalnet's jump into the shared chain kept, one transaction per apply, none when nothing
changed, and delete() leaving nothing of ours behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import pytest
from dpharness import in_ns

from submariner.dataplane.packetfilter import (
    FakePacketFilter,
    Hook,
    IptablesRestore,
    PacketFilterError,
    Ruleset,
    RuleSpec,
    canonical,
    subprocess_runner,
)


class Backend(Protocol):
    pf: FakePacketFilter | IptablesRestore
    restores: int

    def seed(self, table: str, chain: str, rules: Sequence[Sequence[str]], hook: str | None = None) -> None: ...
    def rules(self, table: str, chain: str) -> list[tuple[str, ...]] | None: ...
    def chains(self, table: str) -> list[str]: ...
    def raw_append(self, table: str, chain: str, args: Sequence[str]) -> None: ...
    def raw_insert(self, table: str, chain: str, args: Sequence[str]) -> None: ...


class FakeBackend:
    def __init__(self) -> None:
        self.pf = FakePacketFilter()

    @property
    def restores(self) -> int:
        return self.pf.transactions

    def seed(self, table: str, chain: str, rules: Sequence[Sequence[str]], hook: str | None = None) -> None:
        self.pf.seed(table, chain, rules)
        if hook:
            self.pf.table(table).chains[hook].insert(0, ("-j", chain))

    def rules(self, table: str, chain: str) -> list[tuple[str, ...]] | None:
        return self.pf.chain_rules(table, chain)

    def chains(self, table: str) -> list[str]:
        return list(self.pf.table(table).chains)

    def raw_append(self, table: str, chain: str, args: Sequence[str]) -> None:
        self.pf.table(table).chains[chain].append(tuple(args))

    def raw_insert(self, table: str, chain: str, args: Sequence[str]) -> None:
        self.pf.table(table).chains[chain].insert(0, tuple(args))


class KernelBackend:
    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.restores = 0
        run = subprocess_runner(ns)

        def counting(argv: Sequence[str], stdin: str | None) -> str:
            if argv[0] == "iptables-restore":
                self.restores += 1
            return run(argv, stdin)

        self.pf = IptablesRestore(netns=ns, runner=counting)

    def seed(self, table: str, chain: str, rules: Sequence[Sequence[str]], hook: str | None = None) -> None:
        in_ns(self.ns, "iptables", "-t", table, "-N", chain)
        for rule in rules:
            in_ns(self.ns, "iptables", "-t", table, "-A", chain, *rule)
        if hook:
            in_ns(self.ns, "iptables", "-t", table, "-I", hook, "1", "-j", chain)

    def rules(self, table: str, chain: str) -> list[tuple[str, ...]] | None:
        return self.pf.chain_rules(table, chain)

    def chains(self, table: str) -> list[str]:
        return list(self.pf.listing(table).chains)

    def raw_append(self, table: str, chain: str, args: Sequence[str]) -> None:
        in_ns(self.ns, "iptables", "-t", table, "-A", chain, *args)

    def raw_insert(self, table: str, chain: str, args: Sequence[str]) -> None:
        in_ns(self.ns, "iptables", "-t", table, "-I", chain, "1", *args)


@pytest.fixture(params=["fake", pytest.param("kernel", marks=pytest.mark.root)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "fake":
        yield FakeBackend()
    else:
        make: Callable[[], str] = request.getfixturevalue("make_netns")
        yield KernelBackend(make())


KUBE_RULE = ("-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "MASQUERADE")


def route_agent_rules(remote: str = "10.9.0.0/16", cni_ip: str = "10.8.0.1") -> Ruleset:
    """Shaped like the route agent's §3.3 set (spellings iptables rewrites on purpose)."""
    return Ruleset(
        chains={
            ("filter", "SUBMARINER-INPUT"): [RuleSpec(("-p", "udp", "--dport", "4800", "-j", "ACCEPT"))],
            ("filter", "SUBMARINER-FORWARD"): [RuleSpec(("-o", "vx-submariner", "-j", "ACCEPT"))],
            ("nat", "SUBMARINER-POSTROUTING"): [
                RuleSpec(("-s", "240.0.0.0/8", "-o", "vx-submariner", "-j", "SNAT", "--to-source", cni_ip)),
                RuleSpec(("-s", "10.8.0.0/16", "-d", remote, "-j", "ACCEPT")),
                RuleSpec(("-s", remote, "-d", "10.8.0.0/16", "-j", "ACCEPT")),
            ],
            ("mangle", "SUBMARINER-MARKS"): [
                RuleSpec(("-p", "all", "-d", "10.9.0.1", "-j", "MARK", "--set-mark", "0xC0000/0xC0000"))],
        },
        hooks=[Hook("filter", "INPUT", "SUBMARINER-INPUT", "append", ("-p", "udp", "-m", "udp")),
               Hook("filter", "FORWARD", "SUBMARINER-FORWARD"),
               Hook("nat", "POSTROUTING", "SUBMARINER-POSTROUTING"),
               Hook("mangle", "POSTROUTING", "SUBMARINER-MARKS")],
    )


def assert_matches(b: Backend, rs: Ruleset) -> None:
    for (table, chain), specs in rs.chains.items():
        assert b.rules(table, chain) == [canonical(s.args) for s in specs], (table, chain)
    first: dict[tuple[str, str], int] = {}
    for hook in rs.hooks:
        rules = b.rules(hook.table, hook.builtin) or []
        assert rules.count(canonical(hook.args)) == 1, hook
        assert sum(1 for r in rules if r[-1] == hook.target) == 1, hook
        if hook.position == "first":
            i = first.get((hook.table, hook.builtin), 0)
            assert rules[i] == canonical(hook.args), (hook, rules)
            first[(hook.table, hook.builtin)] = i + 1


def test_apply_twice_is_one_transaction(backend: Backend) -> None:
    rs = route_agent_rules()
    assert backend.pf.apply(rs) is True
    assert_matches(backend, rs)
    assert backend.pf.apply(rs) is False
    assert backend.restores == 1


def test_foreign_chains_and_hooks_are_untouched(backend: Backend) -> None:
    backend.seed("nat", "KUBE-POSTROUTING", [KUBE_RULE], hook="POSTROUTING")
    backend.seed("filter", "KUBE-FORWARD", [("-j", "ACCEPT")], hook="FORWARD")
    rs = route_agent_rules()
    backend.pf.apply(rs)
    assert backend.rules("nat", "KUBE-POSTROUTING") == [canonical(KUBE_RULE)]
    assert canonical(("-j", "KUBE-POSTROUTING")) in (backend.rules("nat", "POSTROUTING") or [])
    assert canonical(("-j", "KUBE-FORWARD")) in (backend.rules("filter", "FORWARD") or [])
    backend.pf.delete(rs)
    assert backend.rules("nat", "KUBE-POSTROUTING") == [canonical(KUBE_RULE)]
    assert backend.rules("nat", "POSTROUTING") == [canonical(("-j", "KUBE-POSTROUTING"))]
    assert backend.rules("filter", "FORWARD") == [canonical(("-j", "KUBE-FORWARD"))]
    for (table, chain) in rs.chains:
        assert backend.rules(table, chain) is None


def test_hook_displaced_by_another_program_goes_back_to_rule_one(backend: Backend) -> None:
    rs = route_agent_rules()
    backend.pf.apply(rs)
    backend.seed("nat", "KUBE-POSTROUTING", [KUBE_RULE], hook="POSTROUTING")  # inserted at 1: ours is now 2
    backend.raw_append("nat", "POSTROUTING", ("-j", "SUBMARINER-POSTROUTING"))  # and a duplicate at the end
    assert backend.pf.apply(rs) is True
    assert_matches(backend, rs)
    assert backend.rules("nat", "POSTROUTING") == [canonical(("-j", "SUBMARINER-POSTROUTING")),
                                                   canonical(("-j", "KUBE-POSTROUTING"))]
    assert backend.pf.apply(rs) is False


def test_stale_hook_with_other_match_is_replaced(backend: Backend) -> None:
    rs = route_agent_rules()
    backend.pf.apply(rs)
    backend.raw_append("filter", "INPUT", ("-p", "tcp", "-j", "SUBMARINER-INPUT"))
    assert backend.pf.apply(rs) is True
    assert backend.rules("filter", "INPUT") == [canonical(("-p", "udp", "-j", "SUBMARINER-INPUT"))]


def test_chain_contents_are_made_exact(backend: Backend) -> None:
    backend.pf.apply(route_agent_rules("10.9.0.0/16"))
    backend.raw_append("nat", "SUBMARINER-POSTROUTING", ("-s", "1.2.3.4", "-j", "ACCEPT"))  # someone's stray rule
    changed = route_agent_rules("10.10.0.0/16")
    assert backend.pf.apply(changed) is True
    assert_matches(backend, changed)
    assert backend.pf.apply(changed) is False


def test_reordered_rules_are_rewritten(backend: Backend) -> None:
    rs = route_agent_rules()
    backend.pf.apply(rs)
    flipped = Ruleset(dict(rs.chains), list(rs.hooks))
    flipped.chains[("nat", "SUBMARINER-POSTROUTING")] = list(reversed(rs.chains[("nat", "SUBMARINER-POSTROUTING")]))
    assert backend.pf.apply(flipped) is True
    assert_matches(backend, flipped)


def test_another_components_jump_into_a_shared_chain_is_kept_on_top(backend: Backend) -> None:
    """Globalnet hooks SUBMARINER-GN-EGRESS at rule 1 of the nat SUBMARINER-POSTROUTING the route agent owns."""
    ours = route_agent_rules()
    globalnet = Ruleset({("nat", "SUBMARINER-GN-EGRESS"): [RuleSpec(("-d", "242.0.0.0/16", "-j", "ACCEPT"))]},
                        [Hook("nat", "POSTROUTING", "SUBMARINER-POSTROUTING"),
                         Hook("nat", "SUBMARINER-POSTROUTING", "SUBMARINER-GN-EGRESS")])
    backend.pf.apply(ours)
    assert backend.pf.apply(globalnet) is True
    assert backend.pf.apply(ours) is False  # the route agent sees nothing to fix
    changed = route_agent_rules("10.10.0.0/16")
    assert backend.pf.apply(changed) is True
    shared = backend.rules("nat", "SUBMARINER-POSTROUTING")
    assert shared == [canonical(("-j", "SUBMARINER-GN-EGRESS"))] + [
        canonical(s.args) for s in changed.chains[("nat", "SUBMARINER-POSTROUTING")]]
    assert backend.pf.apply(globalnet) is False
    assert backend.pf.apply(changed) is False


def test_globalnet_first_when_the_shared_chain_does_not_exist_yet(backend: Backend) -> None:
    globalnet = Ruleset({("nat", "SUBMARINER-GN-EGRESS"): []},
                        [Hook("nat", "SUBMARINER-POSTROUTING", "SUBMARINER-GN-EGRESS")])
    assert backend.pf.apply(globalnet) is True
    assert backend.rules("nat", "SUBMARINER-POSTROUTING") == [canonical(("-j", "SUBMARINER-GN-EGRESS"))]
    assert backend.pf.apply(route_agent_rules()) is True
    assert (backend.rules("nat", "SUBMARINER-POSTROUTING") or [])[0] == canonical(("-j", "SUBMARINER-GN-EGRESS"))


def test_delete_twice(backend: Backend) -> None:
    rs = route_agent_rules()
    backend.pf.apply(rs)
    backend.pf.delete(rs)
    before = backend.restores
    backend.pf.delete(rs)
    assert backend.restores == before
    for table in ("filter", "nat", "mangle"):
        assert not [c for c in backend.chains(table) if c.startswith("SUBMARINER")]
        for chain in ("INPUT", "FORWARD", "POSTROUTING"):
            assert not [r for r in backend.rules(table, chain) or [] if "SUBMARINER" in r[-1]]


def test_empty_chain_and_absent_chain(backend: Backend) -> None:
    assert backend.rules("filter", "SUBMARINER-NOPE") is None
    rs = Ruleset({("filter", "SUBMARINER-EMPTY"): []})
    assert backend.pf.apply(rs) is True
    assert backend.rules("filter", "SUBMARINER-EMPTY") == []
    assert backend.pf.apply(rs) is False


@pytest.mark.root
def test_kernel_failure_names_the_input(netns: str) -> None:
    pf = IptablesRestore(netns=netns)
    bad = Ruleset({("nat", "SUBMARINER-BAD"): [RuleSpec(("-m", "set", "--match-set", "NO-SUCH-SET", "src",
                                                          "-j", "ACCEPT"))]})
    with pytest.raises(PacketFilterError, match="NO-SUCH-SET"):
        pf.apply(bad)
    assert pf.chain_rules("nat", "SUBMARINER-BAD") is None  # the transaction did not half-apply


@pytest.mark.root
def test_a_table_changed_between_read_and_write_is_planned_again(netns: str) -> None:
    """Another program removes our misplaced hook after we listed the table: our `-D` fails, we re-plan."""
    run = subprocess_runner(netns)
    restores: list[str] = []

    def racing(argv: Sequence[str], stdin: str | None) -> str:
        if argv[0] == "iptables-restore":
            restores.append(stdin or "")
            if len(restores) == 1:
                in_ns(netns, "iptables", "-t", "nat", "-D", "POSTROUTING", "-j", "SUBMARINER-POSTROUTING")
        return run(argv, stdin)

    rs = route_agent_rules()
    IptablesRestore(netns=netns).apply(rs)
    in_ns(netns, "iptables", "-t", "nat", "-N", "KUBE-POSTROUTING")
    in_ns(netns, "iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-j", "KUBE-POSTROUTING")
    pf = IptablesRestore(netns=netns, runner=racing)
    assert pf.apply(rs) is True
    assert len(restores) == 2 and "-D POSTROUTING" in restores[0] and "-D POSTROUTING" not in restores[1]
    assert pf.chain_rules("nat", "POSTROUTING") == [canonical(("-j", "SUBMARINER-POSTROUTING")),
                                                   canonical(("-j", "KUBE-POSTROUTING"))]
