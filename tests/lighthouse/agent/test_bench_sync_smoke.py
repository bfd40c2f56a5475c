"""`bench/sync.py --quick` runs end to end and reports every key (speed is not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[3]
RUN_KEYS = {
    "services", "clusters", "rate", "populate_s", "hop_baseline_ms", "export_seconds", "achieved_rate",
    "sync_seconds", "export_to_serviceimport_ms", "export_to_dns_ms", "missing_serviceimports",
    "missing_dns_answers", "agent_c1_cpu_s", "agent_c1_rss_mib", "agent_c1_peak_rss_mib", "agent_c2_cpu_s",
    "agent_c2_rss_mib", "agent_c2_peak_rss_mib", "restart_reconcile_s", "restart_agent_reported_s",
    "restart_writes", "restart_cpu_s", "ratio_serviceimport_p50_to_hop", "hop_during_exports_ms", "slow_exports",
}
LATENCY_KEYS = {"p50", "p99", "max", "n"}


def test_sync_bench_quick_json() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "sync.py"), "--quick", "--json"],
                            capture_output=True, text=True, timeout=240, cwd=REPO)
    lines = result.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {result.stderr[-3000:]}"
    summary = orjson.loads(lines[-1])
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = summary["runs"]
    assert run.keys() >= RUN_KEYS, RUN_KEYS - run.keys()
    for key in ("export_to_serviceimport_ms", "export_to_dns_ms", "hop_baseline_ms", "hop_during_exports_ms"):
        assert run[key].keys() == LATENCY_KEYS
    assert run["services"] == 100 and run["export_to_serviceimport_ms"]["n"] == 100
    assert run["missing_serviceimports"] == 0 and run["missing_dns_answers"] == 0
    assert run["restart_writes"] == 0
    assert "export→DNS answer ms" in result.stdout
