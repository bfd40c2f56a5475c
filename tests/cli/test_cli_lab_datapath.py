"""subctl's datapath probes in the lab (one broker + c1 + c2 clusterset, vxlan cables, built once per module):
`diagnose firewall intra-cluster | inter-cluster | nat-discovery` pass on the healthy clusterset, intra-cluster
fails while c1's gateway node drops UDP 4800, and `benchmark latency` reports TCP_RR figures without netperf."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labharness import BIN, Lab, kind_config, lab_instance, needs_root

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

INTRA = " ✓ Checking that firewall configuration allows intra-cluster VXLAN traffic\n"


class Clusterset:
    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab, self.workdir = lab, workdir

    def ctx(self, cluster: str) -> str:
        return self.lab.instance.context(cluster)

    def subctl(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "subctl"), *args], env=self.lab.env, cwd=self.workdir, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def leftover_pods(self, cluster: str) -> list[str]:
        out = self.lab.kubectl(cluster, "get", "pods", "-n", "submariner-operator", "-l", "app=submariner-diagnose",
                               "-o", "name").stdout
        return out.split()


@pytest.fixture(scope="module")
def clusterset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clusterset]:
    base = tmp_path_factory.mktemp("datapath")
    with lab_instance(base) as lab:
        lab.create(kind_config("broker", workers=0, pod="10.7.0.0/16", service="10.77.0.0/16"))
        lab.create(kind_config("c1", pod="10.8.0.0/16", service="10.88.0.0/16"))
        lab.create(kind_config("c2", pod="10.9.0.0/16", service="10.99.0.0/16"))
        cs = Clusterset(lab, base)
        r = cs.subctl("--context", cs.ctx("broker"), "deploy-broker")
        assert r.returncode == 0, r.stderr
        for name in ("c1", "c2"):
            r = cs.subctl("--context", cs.ctx(name), "join", "broker-info.subm", "--clusterid", name,
                          "--cable-driver", "vxlan", *(("--wait", "--wait-timeout", "120") if name == "c2" else ()))
            assert r.returncode == 0, r.stderr
        yield cs


def _wait_gone(cs: Clusterset, cluster: str) -> list[str]:
    deadline = time.monotonic() + 20
    while (left := cs.leftover_pods(cluster)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_firewall_checks_pass_on_a_healthy_clusterset(clusterset: Clusterset) -> None:
    cs = clusterset
    started = time.monotonic()
    r = cs.subctl("diagnose", "firewall", "intra-cluster", "--context", cs.ctx("c1"), "--validation-timeout", "20",
                  "--verbose")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.startswith(" • Checking that firewall configuration allows intra-cluster VXLAN traffic  ...\n"
                               + INTRA), r.stderr
    assert " ✓ The firewall configuration allows intra-cluster VXLAN traffic\n" in r.stderr
    # the sniffer saw the client pod's SYN to c2's first subnet (its service CIDR) on c1's gateway vx-submariner
    assert re.search(r"vx-submariner IP 10\.8\.\d+\.\d+\.\d+ > 10\.99\.0\.0\.8080: Flags \[S\]", r.stderr), r.stderr

    r = cs.subctl("diagnose", "firewall", "inter-cluster", "--context", cs.ctx("c1"), "--remotecontext", cs.ctx("c2"),
                  "--validation-timeout", "20", "--verbose")
    assert r.returncode == 0, r.stdout + r.stderr
    step = f'Checking if tunnels can be setup on the gateway node of cluster "{cs.ctx("c1")}"'  # kubeconfig cluster
    assert r.stderr.startswith(f" • {step}  ...\n ✓ {step}\n"), r.stderr
    assert re.search(r"IP 198\.\d+\.\d+\.\d+\.9898 > 198\.\d+\.\d+\.\d+\.4500: UDP", r.stderr), r.stderr

    r = cs.subctl("diagnose", "firewall", "nat-discovery", "--context", cs.ctx("c2"), "--remotecontext", cs.ctx("c1"),
                  "--validation-timeout", "20", "--verbose")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f' ✓ Checking if nat-discovery port is opened on the gateway node of cluster "{cs.ctx("c2")}"\n' in r.stderr
    assert re.search(r"\.9898 > 198\.\d+\.\d+\.\d+\.4490: UDP", r.stderr), r.stderr
    print(f"\nthree firewall checks: {time.monotonic() - started:.1f} s")
    assert not _wait_gone(cs, "c1") and not _wait_gone(cs, "c2")


def test_intra_cluster_fails_when_the_gateway_node_drops_vxlan(clusterset: Clusterset) -> None:
    cs = clusterset
    netns = cs.lab.instance.node_netns("c1", "c1-worker")  # c1's only gateway node
    rule = ["PREROUTING", "-p", "udp", "--dport", "4800", "-j", "DROP"]  # raw: ahead of every other rule
    cs.lab.in_netns(netns, "iptables", "-t", "raw", "-I", *rule)
    try:
        r = cs.subctl("diagnose", "firewall", "intra-cluster", "--context", cs.ctx("c1"), "--validation-timeout", "6")
    finally:
        cs.lab.in_netns(netns, "iptables", "-t", "raw", "-D", *rule)
    assert r.returncode == 1, r.stdout + r.stderr
    assert " ✗ Checking that firewall configuration allows intra-cluster VXLAN traffic\n" in r.stderr
    assert (" ✗ The tcpdump output from the sniffer pod does not contain the expected remote endpoint IP 10.99.0.0. "
            "Please check that your firewall configuration allows UDP/4800 traffic.") in r.stderr
    assert not _wait_gone(cs, "c1")
    # the same check passes again once the rule is gone
    r = cs.subctl("diagnose", "firewall", "intra-cluster", "--context", cs.ctx("c1"), "--validation-timeout", "20")
    assert r.returncode == 0 and INTRA in r.stderr, r.stdout + r.stderr


def test_diagnose_all_runs_the_intra_cluster_firewall_check(clusterset: Clusterset) -> None:
    cs = clusterset
    r = cs.subctl("diagnose", "all", "--context", cs.ctx("c1"), "--validation-timeout", "20")
    print("\n" + r.stderr)
    assert INTRA in r.stderr, r.stdout + r.stderr
    assert " ✓ Checking that gateway metrics are accessible from non-gateway nodes\n" in r.stderr, r.stderr
    # Lighthouse DNS answered the SOA query authoritatively, asked from inside c1 (the lighthouse-agent pod)
    assert " ✓ Checking that Lighthouse DNS answers\n" in r.stderr, r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.endswith('Skipping inter-cluster firewall check as it requires two kubeconfigs. Please run "subctl '
                             'diagnose firewall inter-cluster" command manually.\n')


def test_benchmark_latency_without_netperf(clusterset: Clusterset) -> None:
    cs = clusterset
    r = cs.subctl("benchmark", "latency", "--context", cs.ctx("c1"), "--tocontext", cs.ctx("c2"), "--timeout", "60",
                  "--verbose")
    assert r.returncode == 0, r.stdout + r.stderr
    print("\n" + r.stdout)
    assert 'Performing latency tests from Gateway pod on cluster "c1" to Gateway pod on cluster "c2"\n' in r.stdout
    assert 'from Non-Gateway pod on cluster "c1" to Non-Gateway pod on cluster "c2"\n' in r.stdout
    values = re.findall(r"^(Minimum|Mean|Maximum|Stddev) Latency Microseconds:\t([\d.]+)$", r.stdout, re.M)
    rates = [float(v) for v in re.findall(r"^Transaction Rate Tran/s:\t([\d.]+)$", r.stdout, re.M)]
    assert len(values) == 8 and len(rates) == 2, r.stdout
    assert re.search(r"^\[netperf-0 on c1-worker\] netprobe rr-client --host 10\.9\.", r.stderr, re.M), r.stderr
    for i in range(2):
        lo, mean, hi, _ = (float(v) for _, v in values[4 * i:4 * i + 4])
        assert 0 < lo <= mean <= hi, values
        assert rates[i] == pytest.approx(1e6 / mean, rel=0.5)  # one transaction in flight at a time
