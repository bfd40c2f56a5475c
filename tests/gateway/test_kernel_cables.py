"""Real-kernel cables between two throw-away namespaces: vxlan (ping across `vxlan-tunnel`, idempotent
reconnect, the ICMP health check through it) and a userspace wireguard-go tunnel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Any

import pytest
from gwtest import endpoint, spec
from netns import Pair, netns_pair, sh

from submariner.dataplane.netlink import KernelNetlink
from submariner.gateway.cable import vxlan, wireguard
from submariner.gateway.cable.driver import DriverContext, NATEndpointInfo

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

MUTATING = ("ensure_vxlan", "ensure_address", "ensure_rule", "ensure_fdb", "replace_route", "delete_route",
            "delete_fdb", "delete_rule", "delete_link", "flush_table", "set_sysctl")


class Recording:
    """Wraps a Netlink and records calls that changed the kernel (ensure_* → True, every write verb)."""

    def __init__(self, inner: KernelNetlink) -> None:
        self.inner = inner
        self.changes: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in MUTATING:
            return attr

        def call(*args: Any) -> Any:
            result = attr(*args)
            if not name.startswith("ensure_") or result:
                self.changes.append((name, args))
            return result

        return call


def _driver(ns: str, private_ip: str, subnet: str, cni: str) -> tuple[vxlan.VxlanDriver, Recording, dict[str, Any]]:
    local = spec(ns.rsplit("-", 1)[1], private_ip, subnets=[subnet])
    nl = Recording(KernelNetlink(ns))
    ctx = DriverContext(local=local, cluster_cidrs=[subnet], cni_ip=cni, mtu=1500)  # type: ignore[arg-type]
    return vxlan.VxlanDriver(ctx, nl), nl, local  # type: ignore[arg-type]


def icmp_echo(pair: Pair, ns: str, dst: str, count: int = 2) -> bool:
    """Echo requests from inside `ns` with the health checker's own raw-socket prober (no ping binary here)."""
    code = ("import sys\nfrom submariner.dataplane.healthcheck import IcmpProber\n"
            f"p = IcmpProber({dst!r}); ok = 0\n"
            f"for seq in range({count}):\n"
            "    try:\n        p.send(seq + 1)\n    except OSError:\n        continue\n"
            "    ok += p.receive(2.0) == seq + 1\n"
            f"sys.exit(0 if ok == {count} else 1)\n")
    return pair.exec(ns, sys.executable, "-c", code, check=False, timeout=30).returncode == 0


def _snapshot(pair: Pair, ns: str) -> tuple[str, ...]:
    return (sh("ip", "-n", ns, "route", "show", "table", "100").stdout,
            sh("ip", "-n", ns, "rule", "show").stdout,
            sh("bridge", "-n", ns, "fdb", "show", "dev", "vxlan-tunnel").stdout,
            sh("ip", "-n", ns, "-d", "link", "show", "vxlan-tunnel").stdout.split("\n")[0:3].__str__(),
            pair.exec(ns, "cat", "/proc/sys/net/ipv4/conf/vxlan-tunnel/rp_filter").stdout)


def test_vxlan_cable_between_namespaces() -> None:
    with netns_pair(77) as pair:
        da, nla, la = _driver(pair.a, pair.a_ip, pair.a_subnet, pair.a_cni)
        db, nlb, lb = _driver(pair.b, pair.b_ip, pair.b_subnet, pair.b_cni)
        try:
            da.init()
            db.init()
            assert da.connect_to_endpoint(NATEndpointInfo(endpoint(lb), pair.b_ip, False)) == pair.b_ip
            db.connect_to_endpoint(NATEndpointInfo(endpoint(la), pair.a_ip, False))
            routes = sh("ip", "-n", pair.a, "route", "show", "table", "100").stdout
            assert f"{pair.b_subnet} via 241.168.77.2 dev vxlan-tunnel src {pair.a_cni} metric 100" in routes
            assert "lookup 100" in sh("ip", "-n", pair.a, "rule", "show").stdout
            assert pair.exec(pair.a, "cat", "/proc/sys/net/ipv4/conf/vxlan-tunnel/rp_filter").stdout.strip() == "2"
            assert "mtu 1450" in sh("ip", "-n", pair.a, "link", "show", "vxlan-tunnel").stdout

            before = pair.rx_packets(pair.b, "vxlan-tunnel")
            assert icmp_echo(pair, pair.a, pair.b_cni), "no echo reply through the vxlan cable"
            assert pair.rx_packets(pair.b, "vxlan-tunnel") >= before + 2, "the ping did not cross vxlan-tunnel"

            # re-running init/connect changes nothing in the kernel
            snap_a, snap_b = _snapshot(pair, pair.a), _snapshot(pair, pair.b)
            nla.changes.clear()
            nlb.changes.clear()
            da.init()
            da.connect_to_endpoint(NATEndpointInfo(endpoint(lb), pair.b_ip, False))
            db.init()
            db.connect_to_endpoint(NATEndpointInfo(endpoint(la), pair.a_ip, False))
            assert nla.changes == [] and nlb.changes == []
            assert (_snapshot(pair, pair.a), _snapshot(pair, pair.b)) == (snap_a, snap_b)

            # the health checker's pinger, run inside node a, sees the remote CNI IP through the cable
            code = ("import sys, time; from submariner.dataplane.healthcheck import Pinger\n"
                    f"p = Pinger({pair.b_cni!r}, interval=0.1, max_loss=5); p.start()\n"
                    "deadline = time.time() + 5\n"
                    "while p.status != 'connected' and time.time() < deadline: time.sleep(0.05)\n"
                    "p.stop(wait=True); print(p.status, p.stats.latency()['last'] if p.stats.latency() else '')\n")
            out = pair.exec(pair.a, sys.executable, "-c", code, timeout=20).stdout.split()
            assert out[0] == "connected" and out[1].endswith("s"), out

            da.disconnect_from_endpoint(endpoint(lb))
            assert sh("ip", "-n", pair.a, "route", "show", "table", "100").stdout.strip() == ""
            fdb = sh("bridge", "-n", pair.a, "fdb", "show", "dev", "vxlan-tunnel").stdout
            assert f"00:00:00:00:00:00 dst {pair.b_ip}" not in fdb  # (learned MAC entries may linger)
            assert not icmp_echo(pair, pair.a, pair.b_cni, count=1)
            da.cleanup()
            assert "vxlan-tunnel" not in sh("ip", "-n", pair.a, "link", "show").stdout
            assert "lookup 100" not in sh("ip", "-n", pair.a, "rule", "show").stdout
        finally:
            nla.inner.close()
            nlb.inner.close()


@pytest.mark.skipif(shutil.which("wireguard-go") is None or shutil.which("wg") is None,
                    reason="wireguard-go/wireguard-tools not installed")
def test_wireguard_go_tunnel_between_namespaces() -> None:
    """Both devices are named `submariner`: without the private mount namespaces their UAPI sockets would
    collide in the shared /var/run/wireguard."""
    with netns_pair(78) as pair:
        backends = [wireguard.WireguardGoBackend(netns=pair.a), wireguard.WireguardGoBackend(netns=pair.b)]
        nls = [KernelNetlink(pair.a), KernelNetlink(pair.b)]
        try:
            specs, drivers = [], []
            for ns, ip, subnet, backend, nl in ((pair.a, pair.a_ip, pair.a_subnet, backends[0], nls[0]),
                                                (pair.b, pair.b_ip, pair.b_subnet, backends[1], nls[1])):
                local = spec(ns.rsplit("-", 1)[1], ip, subnets=[subnet], backend="wireguard")
                ctx = DriverContext(local=local, cluster_cidrs=[subnet], psk="lab")  # type: ignore[arg-type]
                drivers.append(wireguard.WireguardDriver(ctx, backend, netlink=nl))
                pair.pids.extend(backend.pids())
                specs.append(local)
            for d in drivers:
                d.init()
            assert not os.path.exists("/var/run/wireguard/submariner.sock"), "UAPI socket leaked to the host"
            drivers[0].connect_to_endpoint(NATEndpointInfo(endpoint(specs[1]), pair.b_ip, False))
            drivers[1].connect_to_endpoint(NATEndpointInfo(endpoint(specs[0]), pair.a_ip, False))
            # the route agent's table-150 route, by hand: remote subnet via the `submariner` device
            sh("ip", "-n", pair.a, "route", "add", pair.b_subnet, "dev", "submariner", "src", pair.a_cni)
            sh("ip", "-n", pair.b, "route", "add", pair.a_subnet, "dev", "submariner", "src", pair.b_cni)
            assert icmp_echo(pair, pair.a, pair.b_cni, count=3), "no echo reply through the wireguard cable"
            dev = backends[0].show("submariner")
            assert dev is not None
            peer = dev.peers[specs[1]["backend_config"]["publicKey"]]
            assert peer.last_handshake > 0 and peer.rx > 0 and peer.tx > 0
            assert peer.endpoint == f"{pair.b_ip}:4500"
            # reconnecting with the same data does not touch the device
            calls: list[str] = []
            real = backends[0].set_peer
            backends[0].set_peer = lambda *a: calls.append("set_peer") or real(*a)  # type: ignore[method-assign, func-returns-value]
            drivers[0].connect_to_endpoint(NATEndpointInfo(endpoint(specs[1]), pair.b_ip, False))
            assert calls == []
            # status after the 10 s check interval (clock moved forward instead of waiting)
            drivers[0].clock = lambda: time.time() + 11
            [conn] = drivers[0].get_connections()
            assert conn["status"] == "connected" and conn["statusMessage"].startswith("Rx=")
        finally:
            for b in backends:
                b.close()
            for nl in nls:
                nl.close()
        assert all(not _alive(pid) for pid in pair.pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours would still answer: reap check
        return subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True
                              ).stdout.strip()[:1] not in ("Z", "")
    except OSError:
        return False
