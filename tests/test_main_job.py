"""The README's main command (`scripts/main` = set-up + `scripts/walkthrough.sh`) passes and cleans up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root for network namespaces")
def test_walkthrough_runs_and_cleans_up() -> None:
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    result = subprocess.run([str(REPO / "scripts" / "walkthrough.sh")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "walkthrough: every step passed" in result.stdout
    assert " ✗ " not in result.stdout
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    assert after <= before, f"left behind: {after - before}"
