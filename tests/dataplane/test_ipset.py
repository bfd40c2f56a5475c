"""IPSets: exact contents, compared as networks, no write when unchanged — fake and kernel alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from dpharness import in_ns

from submariner.dataplane.packetfilter import subprocess_runner
from submariner.dataplane.packetfilter.ipset import FakeIPSets, KernelIPSets


@pytest.fixture(params=["fake", pytest.param("kernel", marks=pytest.mark.root)])
def sets(request: pytest.FixtureRequest) -> tuple[FakeIPSets | KernelIPSets, list[str]]:
    """The backend, and a log of the mutating commands it ran."""
    log: list[str] = []
    if request.param == "fake":
        fake = FakeIPSets()
        return fake, log
    make: Callable[[], str] = request.getfixturevalue("make_netns")
    ns = make()
    run = subprocess_runner(ns)

    def logging_runner(argv: Sequence[str], stdin: str | None) -> str:
        if argv[1] not in ("list", "save"):
            log.append(" ".join(argv))
        return run(argv, stdin)

    kernel = KernelIPSets(runner=logging_runner)
    kernel.ns = ns  # type: ignore[attr-defined]
    return kernel, log


def writes(backend: FakeIPSets | KernelIPSets, log: list[str]) -> int:
    return len(backend.calls) if isinstance(backend, FakeIPSets) else len(log)


def test_members_are_exact_and_unchanged_sets_are_not_written(sets: tuple[FakeIPSets | KernelIPSets, list[str]]
                                                               ) -> None:
    backend, log = sets
    backend.ensure("SUBMARINER-REMOTECIDRS")
    assert backend.set_members("SUBMARINER-REMOTECIDRS", ["10.9.0.0/16", "10.99.0.1", "100.9.0.0/16"]) is True
    n = writes(backend, log)
    assert backend.set_members("SUBMARINER-REMOTECIDRS", ["100.9.0.0/16", "10.99.0.1/32", "10.9.0.0/16"]) is False
    assert writes(backend, log) == n
    assert backend.set_members("SUBMARINER-REMOTECIDRS", ["10.9.0.0/16"]) is True
    if isinstance(backend, KernelIPSets):
        assert backend.members("SUBMARINER-REMOTECIDRS") == {"10.9.0.0/16"}
        listed = in_ns(backend.ns, "ipset", "list", "SUBMARINER-REMOTECIDRS")  # type: ignore[attr-defined]
        assert "10.99.0.1" not in listed and "10.9.0.0/16" in listed
    else:
        assert backend.sets["SUBMARINER-REMOTECIDRS"] == {"10.9.0.0/16"}


def test_names_ensure_destroy(sets: tuple[FakeIPSets | KernelIPSets, list[str]]) -> None:
    backend, log = sets
    backend.ensure("SUBMARINER-LOCALCIDRS")
    backend.ensure("SUBMARINER-LOCALCIDRS")
    backend.set_members("SM-GN-ABC", ["10.1.2.3"])  # created on demand
    assert backend.names("SUBMARINER-") == ["SUBMARINER-LOCALCIDRS"]
    assert sorted(backend.names()) == ["SM-GN-ABC", "SUBMARINER-LOCALCIDRS"]
    backend.destroy("SUBMARINER-LOCALCIDRS")
    n = writes(backend, log)
    backend.destroy("SUBMARINER-LOCALCIDRS")
    assert writes(backend, log) == n
    assert backend.names("SUBMARINER-") == []
