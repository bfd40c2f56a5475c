"""bench/globalnet.py runs end to end on a small size, cleans up its namespaces, and its numbers add up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]
REPO = Path(__file__).resolve().parents[2]


def _bench_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("subm-gn-bench-")]


def test_bench_globalnet_quick() -> None:
    before = _bench_namespaces()
    result = subprocess.run([sys.executable, str(REPO / "bench" / "globalnet.py"), "--sizes", "200",
                             "--max-seconds", "1", "--json"], capture_output=True, text=True, timeout=120, check=True)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    run = summary["sizes"]["200"]
    assert run["batch"]["rules_in_kernel"] == 2 * 201 + 11
    assert run["batch"]["noop_changed"] is False and run["batch"]["transactions"] == 2
    assert run["per_rule"]["rules"] == 400 and run["per_rule"]["run"] > 0
    assert run["ratio"] > 1.0
    assert "per-rule / batch" in result.stdout
    assert _bench_namespaces() == before
