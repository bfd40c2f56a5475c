"""IPAM: admiral's pool semantics (dataplane.md §4.3), and properties over random operation sequences."""

from __future__ import annotations

import ipaddress
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from submariner.globalnet.ipam import IPAMError, IPPool, snat_target


def test_single_allocation_is_the_highest_free_address() -> None:
    pool = IPPool("242.1.0.0/16")
    assert pool.size == 65534
    assert pool.allocate(1) == ["242.1.255.254"]
    assert pool.allocate(1) == ["242.1.255.253"]
    pool.release(["242.1.255.254"])
    assert pool.allocate(1) == ["242.1.255.254"]


def test_block_allocation_is_the_lowest_contiguous_run() -> None:
    pool = IPPool("120.1.0.0/24")
    assert pool.allocate(8) == [f"120.1.0.{i}" for i in range(1, 9)]
    pool.reserve(["120.1.0.12"])
    # 9, 10, 11 is too short for 4; the first run of 4 starts after the reserved .12
    assert pool.allocate(4) == [f"120.1.0.{i}" for i in range(13, 17)]
    assert pool.allocate(2) == ["120.1.0.9", "120.1.0.10"]


def test_zero_negative_and_shortage() -> None:
    pool = IPPool("10.0.0.0/29")  # 6 hosts
    assert pool.allocate(0) == []
    with pytest.raises(IPAMError, match="negative"):
        pool.allocate(-1)
    with pytest.raises(IPAMError, match="insufficient"):
        pool.allocate(7)
    pool.reserve(["10.0.0.3"])
    with pytest.raises(IPAMError, match="contiguous"):
        pool.allocate(4)  # 5 free, but split 2 + 3
    assert pool.free_count == 5
    assert len(pool.allocate(1) + pool.allocate(1) + pool.allocate(1) + pool.allocate(1) + pool.allocate(1)) == 5
    with pytest.raises(IPAMError, match="insufficient"):
        pool.allocate(1)


def test_too_small_or_invalid_cidrs_are_refused() -> None:
    with pytest.raises(IPAMError, match="invalid prefix"):
        IPPool("10.0.0.0/31")
    with pytest.raises(IPAMError, match="invalid prefix"):
        IPPool("10.0.0.0/32")
    with pytest.raises(IPAMError, match="invalid CIDR"):
        IPPool("not-a-cidr")
    assert IPPool("10.0.0.0/30").size == 2


def test_reserve_is_all_or_nothing() -> None:
    pool = IPPool("242.1.0.0/24")
    pool.reserve(["242.1.0.5"])
    with pytest.raises(IPAMError, match="already allocated"):
        pool.reserve(["242.1.0.6", "242.1.0.5"])
    assert not pool.is_allocated("242.1.0.6")
    with pytest.raises(IPAMError, match="out of range"):
        pool.reserve(["242.1.0.7", "242.2.0.1"])
    assert not pool.is_allocated("242.1.0.7")
    with pytest.raises(IPAMError, match="already allocated"):
        pool.reserve(["242.1.0.8", "242.1.0.8"])
    assert not pool.is_allocated("242.1.0.8")
    with pytest.raises(IPAMError, match="out of range"):
        pool.reserve(["242.1.0.255"])  # broadcast is not a host address


def test_release_outside_the_pool_is_an_error_and_releases_nothing() -> None:
    pool = IPPool("242.1.0.0/24")
    ip = pool.allocate(1)[0]
    with pytest.raises(IPAMError, match="out of range"):
        pool.release([ip, "1.2.3.4"])
    assert pool.is_allocated(ip)
    pool.release([ip, ip])  # idempotent
    assert pool.free_count == pool.size


def test_snat_target() -> None:
    assert snat_target(["120.1.0.1"]) == "120.1.0.1"
    assert snat_target([f"120.1.0.{i}" for i in range(1, 9)]) == "120.1.0.1-120.1.0.8"


def test_a_slash_16_pool_is_fast() -> None:
    pool = IPPool("242.0.0.0/16")
    started = time.perf_counter()
    singles = [pool.allocate(1)[0] for _ in range(20_000)]
    blocks = [pool.allocate(8) for _ in range(2_000)]
    pool.release(singles[::2])
    more = [pool.allocate(1)[0] for _ in range(5_000)]
    elapsed = time.perf_counter() - started
    assert len(set(singles) | {ip for b in blocks for ip in b}) == 20_000 + 16_000
    assert set(more) <= set(singles[::2])
    assert elapsed < 2.0, f"{elapsed:.2f}s"


# ---------------------------------------------------------------------------- properties

_CIDR = "10.20.30.0/26"  # 62 hosts: small enough that shortages happen often
_HOSTS = [str(ip) for ip in ipaddress.IPv4Network(_CIDR).hosts()]

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("allocate"), st.integers(min_value=-1, max_value=10)),
        st.tuples(st.just("reserve"), st.lists(st.sampled_from([*_HOSTS, "10.20.31.1"]), max_size=4)),
        st.tuples(st.just("release"), st.integers(min_value=0, max_value=1000)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_random_sequences_never_double_allocate_and_survive_restarts(ops: list[tuple[str, object]]) -> None:
    """A model of "objects" (each holds the IPs written in its status) against the pool: every IP is held by
    at most one object; the pool's taken set is exactly the union; a restart (new pool re-reserving every
    object's status) gives the same free set."""
    pool = IPPool(_CIDR)
    owners: list[list[str]] = []
    for op, arg in ops:
        if op == "allocate":
            assert isinstance(arg, int)
            try:
                got = pool.allocate(arg)
            except IPAMError:
                assert arg < 0 or arg > pool.free_count or arg > 1
                continue
            assert len(got) == max(arg, 0)
            if arg > 1:
                ints = [int(ipaddress.IPv4Address(ip)) for ip in got]
                assert ints == list(range(ints[0], ints[0] + arg))
            if got:
                owners.append(got)
        elif op == "reserve":
            assert isinstance(arg, list)
            before = pool.allocated()
            try:
                pool.reserve(arg)
            except IPAMError:
                assert pool.allocated() == before
                continue
            if arg:
                owners.append(list(arg))
        elif op == "release":
            assert isinstance(arg, int)
            if owners:
                pool.release(owners.pop(arg % len(owners)))
        else:
            fresh = IPPool(_CIDR)
            for ips in owners:
                fresh.reserve(ips)
            assert fresh.allocated() == pool.allocated()
            pool = fresh
        held = [ip for ips in owners for ip in ips]
        assert len(held) == len(set(held)), "an IP is held by two objects"
        assert sorted(held, key=lambda ip: int(ipaddress.IPv4Address(ip))) == pool.allocated()
        assert pool.free_count == pool.size - len(held)
