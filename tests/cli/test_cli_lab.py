"""The walkthrough's subctl lines in the lab (§3.2-3.4 and a verify), as a user runs them: real processes,
`lab-` contexts, no --clustercidr and no prompt. vxlan cables: Libreswan is not installed on this host."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from labharness import BIN, kind_config, lab_instance, needs_root


@pytest.mark.root
@pytest.mark.slow
@needs_root
def test_walkthrough_subctl_lines_in_the_lab(tmp_path: Path) -> None:
    with lab_instance(tmp_path) as lab:
        lab.create(kind_config("broker", workers=0, pod="10.7.0.0/16", service="10.77.0.0/16"))
        lab.create(kind_config("c1", pod="10.8.0.0/16", service="10.88.0.0/16"))
        lab.create(kind_config("c2", pod="10.9.0.0/16", service="10.99.0.0/16"))

        def subctl(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(BIN / "subctl"), *args], env=lab.env, cwd=tmp_path, capture_output=True,
                                  text=True, timeout=timeout)

        r = subctl("--context", "lab-broker", "deploy-broker")
        assert r.returncode == 0, r.stderr
        r = subctl("--context", "lab-c1", "join", "broker-info.subm", "--clusterid", "c1", "--cable-driver", "vxlan")
        assert r.returncode == 0, r.stderr
        assert 'Labeling node "c1-worker" as a gateway' in r.stderr
        assert "        Cluster CIDRs:   [10.8.0.0/16]\n" in r.stdout  # discovered: no --clustercidr needed
        r = subctl("--context", "lab-c2", "join", "broker-info.subm", "--clusterid", "c2", "--cable-driver", "vxlan",
                   "--wait", "--wait-timeout", "120")
        assert r.returncode == 0, r.stderr
        assert r.stderr.endswith(" ✓ Submariner is up and running\n")

        r = subctl("show", "connections", "--context", "lab-c2")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split()[:3] == ["GATEWAY", "CLUSTER", "REMOTE"]
        assert lines[1].split()[:2] == ["c1-worker", "c1"] and " connected " in lines[1]

        r = subctl("verify", "--context", "lab-c1", "--tocontext", "lab-c2", "--only", "connectivity,service-discovery",
                   "--connection-timeout", "20", "--operation-timeout", "120")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "SUCCESS! -- 3 Passed | 0 Failed" in r.stdout

        r = subctl("uninstall", "--context", "lab-c1", "--yes")
        assert r.returncode == 0, r.stderr
        assert "submariner-operator" not in lab.kubectl("c1", "get", "namespaces").stdout
