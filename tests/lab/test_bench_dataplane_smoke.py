"""`bench/dataplane.py` runs end to end for one driver with short durations and leaves nothing behind (speed is
not asserted: the goals are what the benchmark itself reports against).

Benchmarks rot when nobody runs them; this keeps the dataplane benchmark working and its JSON stable.
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


def test_dataplane_bench_json() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "dataplane.py"), "--json", "--drivers", "vxlan", "--iperf-seconds", "1",
         "--rounds", "1", "--probe-seconds", "20", "--settle", "1", "--loss-counts", "2", "--timeout", "60"],
        capture_output=True, text=True, timeout=240, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert summary["goals"] == {"outage_s": 2.0, "detection_s": 3.0}
    vxlan = summary["drivers"]["vxlan"]
    assert vxlan["error"] is None and vxlan["leftovers"] == []

    tp = vxlan["throughput"]
    assert tp["tunnel_mbps"] > 0 and tp["veth_mbps"] > 0
    assert tp["ratio"] == pytest.approx(tp["tunnel_mbps"] / tp["veth_mbps"])
    (run,) = tp["rounds"]
    assert run["tunnel_device_tx_bytes"] > 0 and run["veth_tx_bytes"] > 0  # both paths really carried the data
    assert tp["tunnel_device"] == "vxlan-tunnel" and "dev eth0" in tp["route"]

    fo = vxlan["failover"]
    assert fo["from"] != fo["to"] and fo["requests"] > 0
    assert 0 <= fo["outage_s"] < 20 and fo["met"] == (fo["outage_s"] <= 2.0)

    (det,) = vxlan["detection"]
    assert det["loss_count"] == 2 and det["status"] == "error"
    # Three unanswered echoes one second apart: never sooner than two seconds after the link went down.
    assert 1.5 < det["detected_s"] < 60 and det["met"] == (det["detected_s"] <= 3.0)
