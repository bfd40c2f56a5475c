"""`bench/lab.py` runs end to end and leaves nothing behind (speed is not asserted).

Benchmarks rot when nobody runs them; this keeps the lab benchmark working and its JSON stable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]


def test_lab_bench_json() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "lab.py"), "--json", "--settle", "0"],
                            capture_output=True, text=True, timeout=240, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert summary["leftovers"] == []
    assert set(summary["create_s"]) == {"broker", "c1", "c2"}
    assert all(isinstance(v, float) and v > 0 for times in summary["create_s"].values() for v in times)
    assert summary["delete_s"][0] > 0 and summary["baseline_apiserver_s"] > 0
    assert summary["memory"]["API servers"]["count"] == 3
    assert summary["memory"]["cluster daemons"]["count"] == 3
    assert summary["total_rss_mib"] > 0
