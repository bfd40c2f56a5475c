"""The API server benchmark runs end to end and every watcher gets every write (speed is not asserted).

Benchmarks rot when nobody runs them; this keeps `bench/apiserver.py --quick` working and its JSON stable.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]

PHASE_KEYS = {
    "writes", "write_errors", "seconds", "writes_per_s", "ack_p50_ms", "ack_p99_ms", "events_expected",
    "events_delivered", "events_missing", "incomplete_watchers", "duplicates", "out_of_order", "all_delivered",
    "delivery_p50_ms", "delivery_p99_ms", "delivery_max_ms", "server_rss_mib", "server_peak_rss_mib",
    "server_cpu_s", "server_cpu_util", "loader_cpu_s", "watcher_cpu_s", "events_per_read", "other_load_cores",
}
TOP_KEYS = PHASE_KEYS | {
    "resource", "writes_requested", "watchers", "concurrency", "cpus", "paced", "baseline_store_writes_per_s",
    "baseline_http_req_per_s", "ratio_to_store", "ratio_to_http",
}


def _check_phase(phase: dict[str, object], writes: int, watchers: int) -> None:
    assert phase.keys() >= PHASE_KEYS, PHASE_KEYS - phase.keys()
    assert phase["writes"] == writes and phase["write_errors"] == 0, phase.get("error_samples")
    assert phase["events_expected"] == writes * watchers
    assert phase["events_delivered"] == writes * watchers
    assert phase["events_missing"] == 0 and phase["incomplete_watchers"] == 0
    assert phase["duplicates"] == 0 and phase["out_of_order"] == 0
    assert phase["all_delivered"] is True
    for key in ("delivery_p50_ms", "delivery_p99_ms", "delivery_max_ms", "server_rss_mib", "server_cpu_s"):
        assert isinstance(phase[key], int | float) and phase[key] > 0, key


def test_apiserver_bench_quick_json() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "apiserver.py"), "--quick", "--json"],
                            capture_output=True, text=True, timeout=240, cwd=REPO)
    lines = result.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {result.stderr[-3000:]}"
    summary = orjson.loads(lines[-1])
    assert summary.keys() >= TOP_KEYS, TOP_KEYS - summary.keys()
    writes, watchers = summary["writes_requested"], summary["watchers"]
    assert (writes, watchers) == (2_000, 20)
    _check_phase(summary, writes, watchers)
    _check_phase(summary["paced"], writes, watchers)
    assert summary["baseline_store_writes_per_s"] > 0 and summary["baseline_http_req_per_s"] > 0
    assert "delivery p99 ms" in result.stdout  # the human-readable table comes before the JSON
    assert result.returncode == 0, result.stderr[-3000:]
