"""Shared fixtures: real API server processes (see apiservers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apiservers import RunningServer


@pytest.fixture
def api_server_factory(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def make(name: str = "server", extra_args: list[str] | None = None) -> RunningServer:
        server = RunningServer(name, tmp_path, extra_args)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


@pytest.fixture
def api_server(api_server_factory: Callable[..., RunningServer]) -> RunningServer:
    return api_server_factory("server")
