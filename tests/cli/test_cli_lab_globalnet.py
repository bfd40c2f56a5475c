"""subctl on a Globalnet clusterset in the lab (broker + g1 + g2 with the same pod and service CIDRs): benchmark
throughput reaches the server through its GlobalIngressIP, latency is skipped as upstream does, and diagnose
all checks Globalnet's allocations and metrics."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from labharness import BIN, kind_config, lab_instance, needs_root

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]


def test_benchmark_and_diagnose_with_globalnet(tmp_path: Path) -> None:
    with lab_instance(tmp_path) as lab:
        for name, workers in (("broker", 0), ("g1", 1), ("g2", 1)):
            lab.create(kind_config(name, workers=workers, pod="10.7.0.0/16", service="10.77.0.0/16"))
        ctx = lab.instance.context

        def subctl(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(BIN / "subctl"), *args], env=lab.env, cwd=tmp_path, capture_output=True,
                                  text=True, timeout=timeout, stdin=subprocess.DEVNULL)

        r = subctl("--context", ctx("broker"), "deploy-broker", "--globalnet=true", "--globalnet-cidr-range",
                   "120.0.0.0/8")
        assert r.returncode == 0, r.stderr
        r = subctl("--context", ctx("g1"), "join", "broker-info.subm", "--clusterid", "g1", "--globalnet-cidr",
                   "120.1.0.0/24")
        assert r.returncode == 0, r.stderr
        r = subctl("--context", ctx("g2"), "join", "broker-info.subm", "--clusterid", "g2", "--globalnet-cidr",
                   "120.2.0.0/24", "--wait", "--wait-timeout", "120")
        assert r.returncode == 0, r.stderr

        r = subctl("benchmark", "throughput", "--context", ctx("g1"), "--tocontext", ctx("g2"), "--timeout", "60",
                   "--verbose")
        assert r.returncode == 0, r.stdout + r.stderr
        assert 'Performing throughput tests from Gateway pod on cluster "g1" to Gateway pod on cluster "g2"\n' in \
            r.stdout
        # the client targets the server's global IP (pod IPs overlap: both clusters use 10.7.0.0/16)
        targets = re.findall(r"iperf3 .* -c (\S+)$", r.stderr, re.M)
        assert len(targets) == 2 and all(t.startswith("120.2.0.") for t in targets), r.stderr
        assert len(re.findall(r"\[SUM\].*receiver", r.stdout)) == 2, r.stdout

        r = subctl("benchmark", "latency", "--context", ctx("g1"), "--tocontext", ctx("g2"))
        assert r.returncode == 0 and r.stdout == \
            "Latency test is not supported with Globalnet enabled, skipping the test...\n", r.stdout + r.stderr

        r = subctl("diagnose", "all", "--context", ctx("g1"), "--validation-timeout", "20")
        assert " ✓ Checking that Globalnet is correctly configured and functioning\n" in r.stderr, r.stderr
        assert " ✓ Checking that globalnet metrics are accessible from non-gateway nodes\n" in r.stderr, r.stderr
        assert " ✓ Globalnet deployment detected - checking that globalnet CIDRs do not overlap\n" in r.stderr
        assert r.returncode == 0, r.stdout + r.stderr
