"""The DNS benchmark runs end to end and both servers answer correctly (speed is not asserted).

Benchmarks rot when nobody runs them; this keeps `bench/dns.py --quick` working, its JSON stable and the
unbound baseline honest (unbound must give exactly the answers the data implies, like lighthouse-dns).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]

MISSING = [pkg for pkg in ("unbound", "dnsperf") if shutil.which(pkg) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"Debian package(s) {', '.join(MISSING)} not installed "
                                                      "(apt-get install -y unbound dnsperf, or scripts/setup)")

TOP_KEYS = {
    "services", "clusters", "headless", "dual_stack", "objects", "load_seconds", "load_objects_per_s",
    "queries_in_file", "distinct_queries", "mix", "unbound_records", "duration_s", "lighthouse_ready_s",
    "unbound_ready_s", "lighthouse_rss_mib", "lighthouse_rss_end_mib", "lighthouse_peak_rss_mib",
    "unbound", "lighthouse", "ratio", "ratio_per_cpu", "ratio_first_pass", "correctness", "correct", "goals",
    "in_process",
}
RUN_KEYS = {"sent", "completed", "lost", "qps", "rcodes", "server_cpu_util", "client_cpu_util", "qps_per_server_cpu"}
SERVER_KEYS = {"first_pass", "max", "half", "half_rate", "rss_mib", "peak_rss_mib"}


def test_dns_bench_quick_json() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "dns.py"), "--quick", "--json"],
                            capture_output=True, text=True, timeout=240, cwd=REPO)
    lines = result.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {result.stderr[-3000:]}"
    summary = orjson.loads(lines[-1])
    assert summary.keys() >= TOP_KEYS, TOP_KEYS - summary.keys()
    assert summary["clusters"] == 3 and summary["headless"] > 0 and summary["dual_stack"] > 0
    assert summary["objects"] > summary["services"]
    assert all(count > 0 for count in summary["mix"].values()), summary["mix"]
    for name in ("unbound", "lighthouse"):
        server = summary[name]
        assert server.keys() >= SERVER_KEYS, SERVER_KEYS - server.keys()
        for run in ("first_pass", "max", "half"):
            assert server[run].keys() >= RUN_KEYS, RUN_KEYS - server[run].keys()
            assert server[run]["completed"] > 0 and server[run]["qps"] > 0
            assert server[run]["rcodes"].keys() <= {"NOERROR", "NXDOMAIN"}, server[run]["rcodes"]
            assert server[run]["rcodes"].get("NXDOMAIN", 0) > 0
        assert server["first_pass"]["completed"] == summary["queries_in_file"]  # one whole pass, within the cap
        assert server["half"]["p99_ms"] >= server["half"]["p50_ms"] > 0
    assert "p99_ms" in summary["unbound"]["same_rate"]
    assert summary["lighthouse_rss_mib"] > 0 and summary["ratio"] > 0
    assert summary["in_process"]["hit_us"] > 0 and summary["in_process"]["miss_us"] > 0  # handle_datagram timing
    for phase in ("before", "after"):
        check = summary["correctness"][phase]
        assert check["checked"] > 0 and check["categories"] == len(summary["mix"])
        assert check["lighthouse-dns_mismatches"] == 0, check["lighthouse-dns_samples"]
        assert check["unbound_mismatches"] == 0, check["unbound_samples"]
    assert summary["correct"] is True
    assert "max QPS" in result.stdout and "latency p99 ms" in result.stdout  # the table comes before the JSON
    assert result.returncode == 0, result.stderr[-3000:]
