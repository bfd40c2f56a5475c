"""subctl test fixtures: the CLI run in-process, and three real API servers (broker, c1, c2) shaped like the
walkthrough's kind clusters (nodes with kind's labels, kube-system/coredns with kind's Corefile)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from subctl_harness import Env, Result, seed_kind_like

_LAB_TESTS = str(Path(__file__).resolve().parent.parent / "lab")  # labharness, for the root lab test
if _LAB_TESTS not in sys.path:
    sys.path.insert(0, _LAB_TESTS)


@pytest.fixture
def subctl(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run `subctl ARGS` in-process (non-interactive, plain reporter); returns exit code, stdout, stderr."""
    from submariner.cli.main import main

    def run(*args: str, cwd: Path | None = None, kubeconfig: str | None = None) -> Result:
        capsys.readouterr()
        if cwd is not None:
            monkeypatch.chdir(cwd)
        if kubeconfig is not None:
            monkeypatch.setenv("KUBECONFIG", kubeconfig)
        monkeypatch.setenv("TERM", "dumb")
        code = 0
        try:
            main(list(args))
        except SystemExit as e:
            code = int(e.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def env3(api_server_factory: Callable[..., Any], tmp_path: Path) -> Iterator[Env]:
    servers = {
        "broker": api_server_factory("broker"),
        "c1": api_server_factory("c1", ["--service-cluster-ip-range", "10.88.0.0/16"]),
        "c2": api_server_factory("c2", ["--service-cluster-ip-range", "10.99.0.0/16"]),
    }
    env = Env(servers, os.pathsep.join(str(s.kubeconfig) for s in servers.values()), tmp_path / "work")
    env.workdir.mkdir()
    seed_kind_like(env.kube("c1"), "c1", "10.8.0.0/16")
    seed_kind_like(env.kube("c2"), "c2", "10.9.0.0/16", kubeadm=False)
    yield env


