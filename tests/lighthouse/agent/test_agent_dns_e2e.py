"""End to end with the DNS server: agents on c1 and c2 (threads), `lighthouse-dns` (a process) reading c1's
API server. Export in c2 → `dig` against c1's lighthouse-dns answers c2's service IP; export in c1 too →
c1's own IP first (local preference); unexport everywhere → NXDOMAIN. Loopback only, bounded waits."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest
from agenttest import RealClusterset, endpoint, eventually, k8s_slice, service, service_export

from submariner.broker.api.multicluster import SERVICE_EXPORTS
from submariner.broker.kube import ENDPOINT_SLICES, SERVICES

BIN = Path(sys.executable).parent
NS = "sample"
NAME = "nginx.sample.svc.clusterset.local"
SERVING = re.compile(r"serving dns://\S+:(\d+)")


class LighthouseDns:
    def __init__(self, kubeconfig: Path, context: str, cluster_id: str, tmp: Path) -> None:
        corefile = tmp / f"Corefile-{cluster_id}"
        corefile.write_text("clusterset.local:0 {\n    bind 127.0.0.1\n    lighthouse\n}\n")
        self.proc = subprocess.Popen(
            [str(BIN / "lighthouse-dns"), "-conf", str(corefile), "-kubeconfig", str(kubeconfig),
             "-cluster-id", cluster_id],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
        self.port = 0
        assert self.proc.stdout is not None
        deadline, seen = time.monotonic() + 30, []
        while time.monotonic() < deadline and not self.port:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = SERVING.search(line)
            if m:
                self.port = int(m.group(1))
        assert self.port, f"lighthouse-dns did not start: {''.join(seen)[-2000:]}"

    def query(self, name: str = NAME) -> tuple[int, list[str]]:
        reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=self.port, timeout=2)
        return reply.rcode(), sorted(rd.address for rrset in reply.answer for rd in rrset if rrset.rdtype == 1)

    def dig(self, name: str = NAME) -> list[str]:
        out = subprocess.run(["dig", "+short", "+time=2", "+tries=1", "-p", str(self.port), "@127.0.0.1", name],
                             capture_output=True, text=True, timeout=15)
        return out.stdout.split()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def cs(api_server_factory: Callable[..., Any]) -> Iterator[RealClusterset]:
    s = RealClusterset(api_server_factory, ("c1", "c2"))
    yield s
    s.close()


def test_export_answers_from_the_other_clusters_dns(cs: RealClusterset, tmp_path: Path) -> None:
    cs.start_agent("c1")
    cs.start_agent("c2")
    c1 = cs.servers["c1"]
    lh = LighthouseDns(c1.kubeconfig, c1.context, "c1", tmp_path)
    try:
        eventually(lambda: lh.query()[0] == dns.rcode.NXDOMAIN, 20, "lighthouse-dns synced (NXDOMAIN)")
        svc = cs.clusters["c2"].resource(SERVICES).create(service(NS, "nginx", None))
        ip2 = svc["spec"]["clusterIP"]
        cs.clusters["c2"].resource(ENDPOINT_SLICES).create(k8s_slice(NS, "nginx", "n2", [endpoint("10.244.2.7")]))
        started = time.monotonic()
        cs.clusters["c2"].resource(SERVICE_EXPORTS).create(service_export(NS, "nginx"))
        eventually(lambda: lh.query() == (dns.rcode.NOERROR, [ip2]), 20, "c1's lighthouse-dns answers c2's IP")
        print(f"export→DNS answer {1000 * (time.monotonic() - started):.0f} ms")
        assert lh.dig() == [ip2]
        assert lh.dig(f"c2.{NAME}") == [ip2]

        # exported in c1 too: the local cluster's IP is preferred
        svc1 = cs.clusters["c1"].resource(SERVICES).create(service(NS, "nginx", None))
        cs.clusters["c1"].resource(ENDPOINT_SLICES).create(k8s_slice(NS, "nginx", "n1", [endpoint("10.244.1.7")]))
        cs.clusters["c1"].resource(SERVICE_EXPORTS).create(service_export(NS, "nginx"))
        ip1 = svc1["spec"]["clusterIP"]
        eventually(lambda: lh.query() == (dns.rcode.NOERROR, [ip1]), 20, "local preference")
        assert lh.dig(f"c2.{NAME}") == [ip2]

        # unexport everywhere → NXDOMAIN
        for c in ("c1", "c2"):
            cs.clusters[c].resource(SERVICE_EXPORTS).delete(NS, "nginx")
        eventually(lambda: lh.query()[0] == dns.rcode.NXDOMAIN, 20, "NXDOMAIN after unexport")
        status = subprocess.run(["dig", "+time=2", "+tries=1", "-p", str(lh.port), "@127.0.0.1", NAME],
                                capture_output=True, text=True, timeout=15).stdout
        assert "status: NXDOMAIN" in status
    finally:
        lh.stop()
