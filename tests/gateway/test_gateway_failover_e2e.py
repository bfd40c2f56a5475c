"""Two real `submariner-gateway` processes in two node namespaces against a real API server: one active,
one passive; SIGTERM hands over in < 2 s (Lease released), SIGKILL within the lease duration.

Topology (all throw-away, `subm-gw-*`): an "api" namespace with a bridge holding 192.168.79.254 and the
API server (`submariner-broker serve`, also used as the broker), two node namespaces with a veth into that
bridge and a `cni0` holding their CNI IP. The test talks to the API from a thread that entered the api
namespace (setns is per thread), so the root namespace is never touched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gwtest import endpoint, spec
from netns import InNetns, sh

from submariner.broker.api.submariner import ENDPOINTS, GATEWAYS
from submariner.broker.kube import LEASES, NAMESPACES, Cluster, KubeError, NotFound

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

BIN = Path(sys.executable).parent
NS = "submariner-operator"
BROKER_NS = "submariner-k8s-broker"
API_IP = "192.168.79.254"


@contextlib.contextmanager
def topology(cni: tuple[str, str] = ("10.1.1.1/24", "10.1.2.1/24")) -> Iterator[dict[str, str]]:
    tag = secrets.token_hex(3)
    names = {"api": f"subm-gw-{tag}-api", "a": f"subm-gw-{tag}-na", "b": f"subm-gw-{tag}-nb"}
    try:
        for ns in names.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        api = names["api"]
        sh("ip", "-n", api, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", api, "addr", "add", f"{API_IP}/24", "dev", "br0")
        sh("ip", "-n", api, "link", "set", "br0", "up")
        for i, key in enumerate(("a", "b"), start=1):
            ns = names[key]
            sh("ip", "-n", api, "link", "add", f"p{key}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", api, "link", "set", f"p{key}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"192.168.79.{i}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "add", "cni0", "type", "bridge")
            sh("ip", "-n", ns, "addr", "add", cni[i - 1], "dev", "cni0")
            sh("ip", "-n", ns, "link", "set", "cni0", "up")
        yield names
    finally:
        for ns in names.values():
            sh("ip", "netns", "del", ns, check=False)


def start_server(netns: str, base: Path, pids: list[int]) -> Path:
    kubeconfig = base / "kubeconfig"
    log = open(base / "server.log", "w")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, str(BIN / "submariner-broker"), "serve", "--data-dir", str(base / "data"),
         "--listen", f"{API_IP}:6443", "--advertise-address", API_IP, "--tls-san", API_IP,
         "--write-kubeconfig", str(kubeconfig), "--context", "gw-test"],
        stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    pids.append(proc.pid)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready and "serving" in proc.stdout.readline():
            return kubeconfig
        if proc.poll() is not None:
            break
    raise RuntimeError(f"API server did not start: {(base / 'server.log').read_text()[-2000:]}")


def start_gateway(netns: str, node: str, kubeconfig: Path, base: Path, pids: list[int], *, cluster: str = "east",
                  namespace: str = NS, cluster_cidr: str = "10.1.0.0/16", service_cidr: str = "10.96.0.0/16",
                  driver: str = "vxlan") -> subprocess.Popen[bytes]:
    env = {**os.environ, "SUBMARINER_CLUSTERID": cluster, "SUBMARINER_NAMESPACE": namespace, "NODE_NAME": node,
           "SUBMARINER_CLUSTERCIDR": cluster_cidr, "SUBMARINER_SERVICECIDR": service_cidr,
           "SUBMARINER_CABLEDRIVER": driver, "LEADERSHIP_LEASEDURATION": "4", "LEADERSHIP_RENEWDEADLINE": "3",
           "LEADERSHIP_RETRYPERIOD": "1", "SUBMARINER_GATEWAYSTATUSINTERVAL": "1"}
    log = open(base / f"{node}.log", "a")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, str(BIN / "submariner-gateway"), "--kubeconfig", str(kubeconfig),
         "--broker-kubeconfig", str(kubeconfig), "--broker-namespace", BROKER_NS],
        env=env, stdout=log, stderr=log)
    log.close()
    pids.append(proc.pid)
    return proc


def start_api(netns: str, inside: InNetns, base: Path, pids: list[int], namespaces: tuple[str, ...]
              ) -> tuple[Path, Cluster]:
    """An API server in `netns` with the Submariner CRDs applied (by kubectl) and these namespaces created."""
    kubeconfig = start_server(netns, base, pids)
    crds = subprocess.run([str(BIN / "submariner-broker"), "crds"], capture_output=True, text=True, check=True).stdout
    subprocess.run(["ip", "netns", "exec", netns, str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig),
                    "apply", "-f", "-"], input=crds, capture_output=True, text=True, check=True, timeout=60)
    api = inside(lambda: Cluster.from_kubeconfig(kubeconfig))
    for name in namespaces:
        inside(lambda n=name: api.resource(NAMESPACES).create({"metadata": {"name": n}}))  # type: ignore[misc]
    return kubeconfig, api


def kill_all(pids: list[int]) -> None:
    """SIGKILL and reap every process the test started (newest first)."""
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.05) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except KubeError:
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_failover_sigterm_and_sigkill(tmp_path: Path) -> None:
    pids: list[int] = []
    with topology() as ns:
        inside = InNetns(ns["api"])
        try:
            kubeconfig, api = start_api(ns["api"], inside, tmp_path, pids, (NS, BROKER_NS))
            # a remote cluster's gateway, already on the broker (discovery off: the legacy choice is immediate)
            west = endpoint(spec("west", "192.168.80.1", subnets=["10.2.0.0/16"],
                                 **{"natt-discovery-port": "0"}), namespace=BROKER_NS)
            west["metadata"] = {"name": west["metadata"]["name"], "namespace": BROKER_NS,
                                "labels": {"submariner-io/clusterID": "west"}}
            inside(lambda: api.resource(ENDPOINTS).create(west))

            def gateway(name: str) -> dict[str, Any] | None:
                try:
                    return inside(lambda: api.resource(GATEWAYS).get(NS, name))
                except NotFound:
                    return None

            def serving(name: str) -> bool:
                gw = gateway(name)
                status = (gw or {}).get("status") or {}
                return status.get("haStatus") == "active" and any(
                    c["endpoint"]["cluster_id"] == "west" and c["status"] == "connected"
                    for c in status.get("connections") or [])

            gw_a = start_gateway(ns["a"], "node-a", kubeconfig, tmp_path, pids)
            wait_for("node-a active with a cable to west", lambda: serving("node-a"), 20)
            gw_b = start_gateway(ns["b"], "node-b", kubeconfig, tmp_path, pids)
            wait_for("node-b passive", lambda: ((gateway("node-b") or {}).get("status") or {}).get("haStatus")
                     == "passive", 20)
            assert "lookup 100" in sh("ip", "-n", ns["a"], "rule", "show").stdout
            assert "10.2.0.0/16 via 241.168.80.1 dev vxlan-tunnel" in sh(
                "ip", "-n", ns["a"], "route", "show", "table", "100").stdout
            assert "vxlan-tunnel" not in sh("ip", "-n", ns["b"], "link", "show").stdout  # passive: no kernel state

            # SIGTERM: the Lease is released, node-b serves within 2 s
            gw_a.send_signal(signal.SIGTERM)
            took = wait_for("node-b active after SIGTERM", lambda: serving("node-b"), 10)
            assert took < 2.0, f"SIGTERM failover took {took:.2f}s"
            print(f"failover after SIGTERM: {took:.3f}s")
            assert gw_a.wait(10) == 0
            assert gateway("node-a") is None, "a stopped gateway deletes its Gateway object"
            wait_for("broker holds node-b's Endpoint, not node-a's", lambda: sorted(
                e["spec"]["hostname"] for e in inside(lambda: api.resource(ENDPOINTS).list(BROKER_NS)[0])
                if e["spec"]["cluster_id"] == "east") == ["node-b"], 10)

            # SIGKILL: the restarted node-a takes over within the lease duration (4 s) + a retry period (1 s)
            gw_a = start_gateway(ns["a"], "node-a", kubeconfig, tmp_path, pids)
            wait_for("node-a passive again", lambda: ((gateway("node-a") or {}).get("status") or {}).get(
                "haStatus") == "passive", 20)
            os.kill(gw_b.pid, signal.SIGKILL)
            gw_b.wait(10)
            took = wait_for("node-a active after SIGKILL", lambda: serving("node-a"), 15)
            assert took < 4 + 1 + 1.5, f"SIGKILL failover took {took:.2f}s"
            print(f"failover after SIGKILL (lease 4 s, retry 1 s): {took:.3f}s")
            lease = inside(lambda: api.resource(LEASES).get(NS, "submariner-gateway-lock"))
            assert lease["spec"]["holderIdentity"] == "node-a-submariner-gateway"
            gw_a.send_signal(signal.SIGTERM)
            assert gw_a.wait(10) == 0
        finally:
            inside.close()
            kill_all(pids)


def test_two_clusters_discover_each_other_and_health_check_through_vxlan(tmp_path: Path) -> None:
    """east (node a) and west (node b) as two clusters sharing one API server (each its own Submariner
    namespace, one broker namespace): Endpoints cross the broker, NAT discovery runs over real UDP, the vxlan
    cable carries the ICMP health check, and both Gateway CRs end up `connected` with RTT figures."""
    pids: list[int] = []
    with topology(("10.1.1.1/24", "10.2.1.1/24")) as ns:
        inside = InNetns(ns["api"])
        try:
            kubeconfig, api = start_api(ns["api"], inside, tmp_path, pids, ("east-ns", "west-ns", BROKER_NS))
            start_gateway(ns["a"], "east-gw", kubeconfig, tmp_path, pids, cluster="east", namespace="east-ns",
                          cluster_cidr="10.1.0.0/16")
            start_gateway(ns["b"], "west-gw", kubeconfig, tmp_path, pids, cluster="west", namespace="west-ns",
                          cluster_cidr="10.2.0.0/16", service_cidr="10.97.0.0/16")

            def healthy(namespace: str, name: str, remote: str) -> bool:
                gw = inside(lambda: api.resource(GATEWAYS).get(namespace, name))
                return any(c["endpoint"]["cluster_id"] == remote and c["status"] == "connected"
                           and c.get("latencyRTT", {}).get("last") and c.get("usingIP")
                           for c in gw["status"]["connections"])

            took = wait_for("both gateways connected with RTT", lambda: healthy("east-ns", "east-gw", "west")
                            and healthy("west-ns", "west-gw", "east"), 30)
            assert took < 10, f"connected and health-checked only after {took:.1f}s"  # ~1.5-2.5 s measured
            print(f"two clusters connected and health-checked in {took:.2f}s")
            gw = inside(lambda: api.resource(GATEWAYS).get("east-ns", "east-gw"))
            [conn] = gw["status"]["connections"]
            assert conn["usingIP"] == "192.168.79.2" and conn["usingNAT"] is False  # private IP, no NAT found
            assert conn["endpoint"]["healthCheckIP"] == "10.2.1.1"
            # what Lighthouse DNS concludes from these objects
            from submariner.lighthouse.dns.lighthouse_model import Connectivity

            reach = Connectivity("east")
            reach.apply("add", gw)
            assert reach.is_connected("west")
            # the cable is in node a's kernel: table 100 and the FDB entry to node b
            assert "10.2.0.0/16 via 241.168.79.2 dev vxlan-tunnel" in sh(
                "ip", "-n", ns["a"], "route", "show", "table", "100").stdout
        finally:
            inside.close()
            kill_all(pids)


@pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="wireguard-go not installed")
def test_two_clusters_over_wireguard_go(tmp_path: Path) -> None:
    """The wireguard driver in real gateway processes: keys published in the Endpoints, peers configured from
    them, pod-subnet traffic through the `submariner` devices (the route agent's table-150 route added by hand),
    and wireguard-go/holder processes gone with the gateway, even after SIGKILL."""
    pids: list[int] = []
    with topology(("10.1.1.1/24", "10.2.1.1/24")) as ns:
        inside = InNetns(ns["api"])
        try:
            kubeconfig, api = start_api(ns["api"], inside, tmp_path, pids, ("east-ns", "west-ns", BROKER_NS))
            east = start_gateway(ns["a"], "east-gw", kubeconfig, tmp_path, pids, cluster="east", namespace="east-ns",
                                 cluster_cidr="10.1.0.0/16", driver="wireguard")
            west = start_gateway(ns["b"], "west-gw", kubeconfig, tmp_path, pids, cluster="west", namespace="west-ns",
                                 cluster_cidr="10.2.0.0/16", service_cidr="10.97.0.0/16", driver="wireguard")

            def keys() -> list[str]:
                eps = inside(lambda: api.resource(ENDPOINTS).list(BROKER_NS)[0])
                return [e["spec"]["backend_config"].get("publicKey", "") for e in eps]

            wait_for("both public keys on the broker", lambda: len(keys()) == 2 and all(keys()), 20)

            def peered(namespace: str, name: str, remote: str) -> bool:
                gw = inside(lambda: api.resource(GATEWAYS).get(namespace, name))
                return any(c["endpoint"]["cluster_id"] == remote for c in gw["status"]["connections"])

            wait_for("cables in both Gateway CRs", lambda: peered("east-ns", "east-gw", "west")
                     and peered("west-ns", "west-gw", "east"), 20)
            sh("ip", "-n", ns["a"], "route", "add", "10.2.0.0/16", "dev", "submariner", "src", "10.1.1.1")
            sh("ip", "-n", ns["b"], "route", "add", "10.1.0.0/16", "dev", "submariner", "src", "10.2.1.1")
            assert icmp_echo(ns["a"], "10.2.1.1", count=3), "no echo through the wireguard cable"
            assert not os.path.exists("/var/run/wireguard/submariner.sock")
            # SIGTERM: clean stop; SIGKILL: the children still go (PR_SET_PDEATHSIG)
            east.send_signal(signal.SIGTERM)
            assert east.wait(15) == 0
            os.kill(west.pid, signal.SIGKILL)
            west.wait(10)
            for key in ("a", "b"):
                wait_for(f"no processes left in {ns[key]}", lambda k=key: sh("ip", "netns", "pids", ns[k])  # type: ignore[misc]
                         .stdout.strip() == "", 10)
        finally:
            inside.close()
            kill_all(pids)
            for key in ("a", "b"):  # anything a failed run left behind in our namespaces
                for pid in sh("ip", "netns", "pids", ns[key], check=False).stdout.split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)


def icmp_echo(netns: str, dst: str, count: int = 2) -> bool:
    code = ("import sys\nfrom submariner.dataplane.healthcheck import IcmpProber\n"
            f"p = IcmpProber({dst!r}); ok = 0\n"
            f"for seq in range({count}):\n"
            "    try:\n        p.send(seq + 1)\n    except OSError:\n        continue\n"
            "    ok += p.receive(2.0) == seq + 1\n"
            f"sys.exit(0 if ok == {count} else 1)\n")
    return sh("ip", "netns", "exec", netns, sys.executable, "-c", code, check=False).returncode == 0
