"""Throw-away network namespaces (`subm-dp-<random>`) for kernel tests, deleted even when a test fails.

Imported by tests/dataplane/conftest.py and tests/routeagent/conftest.py (fixtures) and by tests (`in_ns`)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator

import pytest


def in_ns(ns: str, *cmd: str, check: bool = True) -> str:
    result = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} in {ns} failed: {result.stderr}")
    return result.stdout


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """A factory of namespaces; all of them are deleted when the test ends."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    made: list[str] = []

    def make() -> str:
        name = f"subm-dp-{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        in_ns(name, "ip", "link", "set", "lo", "up")
        return name

    try:
        yield make
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def netns(make_netns: Callable[[], str]) -> str:
    return make_netns()
