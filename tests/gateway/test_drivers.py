"""Cable drivers through fakes: vxlan on FakeNetlink, wireguard on a fake `wg` backend, libreswan whack args."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from gwtest import endpoint, spec

from submariner.dataplane.netlink import FakeNetlink, Fdb, Route, Rule
from submariner.gateway.cable import libreswan, vxlan, wireguard
from submariner.gateway.cable.driver import (
    DriverContext,
    DriverError,
    NATEndpointInfo,
    new_driver,
    remove_other_drivers_leftovers,
    supported,
)

LOCAL_IP = "192.168.1.10"


def local_spec(backend: str = "vxlan", **cfg: str) -> dict[str, Any]:
    return spec("east", LOCAL_IP, subnets=["10.96.0.0/16", "10.1.0.0/16"], backend=backend, **cfg)


# ------------------------------------------------------------------------------------------------ registry


def test_registry_lists_drivers_and_rejects_unknown() -> None:
    assert {"libreswan", "vxlan", "wireguard"} <= set(supported())
    with pytest.raises(DriverError, match=r"unsupported cable driver 'strongswan': supported drivers are .*libreswan"):
        new_driver("strongswan", DriverContext(local=local_spec(), cluster_cidrs=[]))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ vxlan


def vxlan_driver() -> tuple[vxlan.VxlanDriver, FakeNetlink]:
    nl = FakeNetlink()
    nl.add_link("eth0", mtu=1500, addresses=[f"{LOCAL_IP}/24"])
    nl.add_link("cni0", addresses=["10.1.0.1/32"])
    ctx = DriverContext(local=local_spec(), cluster_cidrs=["10.1.0.0/16"], cni_ip="10.1.0.1",  # type: ignore[arg-type]
                        mtu=1500, extra={"netlink": nl})
    driver = new_driver("vxlan", ctx)
    assert isinstance(driver, vxlan.VxlanDriver)
    driver.sleep = lambda s: None
    return driver, nl


def test_vxlan_init_builds_device_rule_sysctls_once() -> None:
    driver, nl = vxlan_driver()
    driver.init()
    vx = nl.vxlan("vxlan-tunnel")
    assert vx is not None and (vx.vni, vx.port, vx.local, vx.mtu) == (1000, 4500, LOCAL_IP, 1450)
    assert ("vxlan-tunnel", "241.168.1.10/8") in nl.addresses("vxlan-tunnel")
    assert Rule(100, 100) in nl.rules()
    assert nl.get_sysctl("net.ipv4.conf.vxlan-tunnel.rp_filter") == "2"
    assert nl.get_sysctl("net.ipv4.conf.vxlan-tunnel.forwarding") == "1"
    nl.calls.clear()
    driver.init()
    assert nl.calls == []


def test_vxlan_rp_filter_write_retried_until_it_sticks() -> None:
    driver, nl = vxlan_driver()
    writes: list[str] = []
    real_set = nl.set_sysctl

    def flaky(key: str, value: str) -> None:  # the first write is ignored (issue #2422)
        writes.append(key)
        if key.endswith("rp_filter") and writes.count(key) == 1:
            return
        real_set(key, value)

    nl.set_sysctl = flaky  # type: ignore[method-assign]
    driver.init()
    assert writes.count("net.ipv4.conf.vxlan-tunnel.rp_filter") == 2
    assert nl.get_sysctl("net.ipv4.conf.vxlan-tunnel.rp_filter") == "2"


def test_vxlan_connect_disconnect_cleanup() -> None:
    driver, nl = vxlan_driver()
    driver.init()
    remote = endpoint(spec("west", "192.168.2.20", subnets=["10.97.0.0/16", "10.2.0.0/16"]))
    used = driver.connect_to_endpoint(NATEndpointInfo(remote, "192.168.2.20", False))
    assert used == "192.168.2.20"
    assert nl.fdb("vxlan-tunnel") == [Fdb("vxlan-tunnel", "192.168.2.20")]
    assert set(nl.routes(100)) == {
        Route("10.97.0.0/16", 100, "241.168.2.20", "vxlan-tunnel", "10.1.0.1", 100),
        Route("10.2.0.0/16", 100, "241.168.2.20", "vxlan-tunnel", "10.1.0.1", 100)}
    assert [c["status"] for c in driver.get_connections()] == ["connected"]
    nl.calls.clear()
    driver.connect_to_endpoint(NATEndpointInfo(remote, "192.168.2.20", False))
    driver.init()
    assert nl.calls == [], "re-running connect/init must not touch the kernel"
    driver.disconnect_from_endpoint(remote)
    assert nl.fdb("vxlan-tunnel") == [] and nl.routes(100) == []
    driver.connect_to_endpoint(NATEndpointInfo(remote, "192.168.2.20", False))
    driver.cleanup()
    assert "vxlan-tunnel" not in nl.link_names() and Rule(100, 100) not in nl.rules() and nl.routes(100) == []


def test_other_drivers_leftovers_go_before_init_and_the_own_ones_stay() -> None:
    """The node's gateway switched from vxlan to wireguard: vxlan-tunnel (bound to UDP 4500) must go before
    wireguard's Init binds the same port; a vxlan gateway keeps its device."""
    driver, nl = vxlan_driver()
    driver.init()
    driver.connect_to_endpoint(NATEndpointInfo(endpoint(spec("west", "192.168.2.20")), "192.168.2.20", False))
    assert remove_other_drivers_leftovers("vxlan", nl) == []
    assert "vxlan-tunnel" in nl.link_names()
    assert remove_other_drivers_leftovers("wireguard", nl) == ["vxlan"]
    assert "vxlan-tunnel" not in nl.link_names() and Rule(100, 100) not in nl.rules() and nl.routes(100) == []
    nl.calls.clear()
    assert remove_other_drivers_leftovers("wireguard", nl) == []  # nothing left: no kernel writes
    assert nl.calls == []


def test_vxlan_device_with_other_vni_is_recreated() -> None:
    driver, nl = vxlan_driver()
    from submariner.dataplane.netlink import Vxlan

    nl.ensure_vxlan(Vxlan("vxlan-tunnel", 7, 4500, LOCAL_IP))
    driver.init()
    vx = nl.vxlan("vxlan-tunnel")
    assert vx is not None and vx.vni == 1000


def test_vtep_ip() -> None:
    assert vxlan.vtep_ip("172.18.0.5") == "241.18.0.5"


# ------------------------------------------------------------------------------------------------ wireguard


class FakeWg:
    def __init__(self) -> None:
        self.devices: dict[str, wireguard.Device] = {}
        self.keys: dict[str, str] = {}
        self.calls: list[tuple[str, ...]] = []

    def create_device(self, name: str) -> None:
        self.calls.append(("create", name))
        self.devices[name] = wireguard.Device("", 0)

    def delete_device(self, name: str) -> None:
        self.calls.append(("delete", name))
        self.devices.pop(name, None)

    def configure(self, name: str, private_key: str, listen_port: int) -> None:
        self.calls.append(("configure", name, str(listen_port)))
        self.devices[name].public_key = wireguard.public_key_of(private_key)
        self.devices[name].listen_port = listen_port

    def set_peer(self, name: str, peer: wireguard.Peer) -> None:
        self.calls.append(("set_peer", name, peer.public_key))
        self.devices[name].peers[peer.public_key] = peer

    def remove_peer(self, name: str, public_key: str) -> None:
        self.calls.append(("remove_peer", name, public_key))
        self.devices[name].peers.pop(public_key, None)

    def show(self, name: str) -> wireguard.Device | None:
        return self.devices.get(name)

    def close(self) -> None:
        self.calls.append(("close",))


class WallClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def wg_driver() -> tuple[wireguard.WireguardDriver, FakeWg, FakeNetlink, WallClock, dict[str, Any]]:
    nl = FakeNetlink()
    nl.add_link("submariner")
    nl.links["submariner"].up = False
    fake, clock = FakeWg(), WallClock()
    local = local_spec("wireguard", **{"udp-port": "4600"})
    ctx = DriverContext(local=local, cluster_cidrs=["10.1.0.0/16"], psk="s3cret",  # type: ignore[arg-type]
                        extra={"wg_backend": fake, "netlink": nl, "wall_clock": clock})
    driver = new_driver("wireguard", ctx)
    assert isinstance(driver, wireguard.WireguardDriver)
    return driver, fake, nl, clock, local


def test_wireguard_construction_publishes_key_and_init_verifies() -> None:
    driver, fake, nl, _, local = wg_driver()
    assert fake.calls[:2] == [("create", "submariner"), ("configure", "submariner", "4600")]
    assert local["backend_config"]["publicKey"] == driver.public_key == fake.devices["submariner"].public_key
    assert local["backend_config"]["interface-name"] == "submariner"
    driver.init()
    assert nl.links["submariner"].up
    fake.devices["submariner"].public_key = "someone else"
    with pytest.raises(DriverError):
        driver.init()


def remote_wg(ip: str, key: str, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return endpoint(spec("west", ip, subnets=["10.2.0.0/16", "10.97.0.0/16"], backend="wireguard",
                         publicKey=key, **{"udp-port": "4700"}), created=created)


def test_wireguard_peer_per_cluster_idempotent_and_replaced() -> None:
    driver, fake, _, _, _ = wg_driver()
    driver.init()
    k1 = wireguard.public_key_of(wireguard.generate_private_key())
    ep = remote_wg("192.168.2.20", k1)
    driver.connect_to_endpoint(NATEndpointInfo(ep, "203.0.113.7", True))
    peer = fake.devices["submariner"].peers[k1]
    assert (peer.endpoint, peer.allowed_ips, peer.keepalive) == (
        "203.0.113.7:4700", ("10.2.0.0/16", "10.97.0.0/16"), 10)
    assert peer.preshared_key == wireguard.psk_of("s3cret")
    n = len(fake.calls)
    driver.connect_to_endpoint(NATEndpointInfo(ep, "203.0.113.7", True))
    assert len(fake.calls) == n, "an unchanged peer is not rewritten"
    k2 = wireguard.public_key_of(wireguard.generate_private_key())
    driver.connect_to_endpoint(NATEndpointInfo(remote_wg("192.168.2.21", k2), "192.168.2.21", False))
    assert set(fake.devices["submariner"].peers) == {k2}
    with pytest.raises(DriverError, match="publicKey"):
        bad = remote_wg("192.168.2.22", "")
        bad["spec"]["cluster_id"] = "south"
        driver.connect_to_endpoint(NATEndpointInfo(bad, "192.168.2.22", False))
    assert driver.get_active_connections() == []


def test_wireguard_unknown_peers_removed_and_status_rules() -> None:
    driver, fake, _, clock, _ = wg_driver()
    key = wireguard.public_key_of(wireguard.generate_private_key())
    ep = remote_wg("192.168.2.20", key)
    driver.connect_to_endpoint(NATEndpointInfo(ep, "192.168.2.20", False))
    stranger = wireguard.Peer("c3RyYW5nZXI=")
    fake.devices["submariner"].peers[stranger.public_key] = stranger
    [conn] = driver.get_connections()
    assert stranger.public_key not in fake.devices["submariner"].peers
    assert conn["status"] == "connecting"

    def peer(**kw: Any) -> None:
        fake.devices["submariner"].peers[key] = replace(fake.devices["submariner"].peers[key], **kw)

    def status() -> tuple[str, str]:
        [c] = driver.get_connections()
        return c["status"], c["statusMessage"]

    clock.now += 5
    peer(rx=100, tx=100)
    assert status() == ("connecting", "")  # < 10 s since the last check: unchanged
    clock.now += 6
    assert status() == ("connecting", "")  # never handshaked, bytes moving
    clock.now += 11
    peer(last_handshake=clock.now - 1, rx=500, tx=400)
    assert status() == ("connected", "Rx=500 Bytes, Tx=400 Bytes")
    clock.now += 11
    assert status() == ("connected", "Rx=500 Bytes, Tx=400 Bytes")  # quiet, but within 2K
    clock.now += 11
    assert status() == ("error", "no bytes sent or received")
    clock.now += 200
    assert status()[1].startswith("no handshake for")


def test_wireguard_no_initial_handshake_error() -> None:
    driver, _fake, _, clock, _ = wg_driver()
    key = wireguard.public_key_of(wireguard.generate_private_key())
    driver.connect_to_endpoint(NATEndpointInfo(remote_wg("192.168.2.20", key), "192.168.2.20", False))
    clock.now += 131
    [c] = driver.get_connections()
    assert c["status"] == "error" and c["statusMessage"] == "no initial handshake for 131.0 seconds"


def test_parse_wg_dump() -> None:
    text = ("cHJpdg==\tcHVi\t4500\toff\n"
            "cGVlcg==\tcHNr\t203.0.113.7:4700\t10.2.0.0/16,10.97.0.0/16\t1700000000\t1234\t5678\t10\n"
            "b3RoZXI=\t(none)\t(none)\t(none)\t0\t0\t0\toff\n")
    dev = wireguard.parse_dump(text)
    assert dev is not None and dev.public_key == "cHVi" and dev.listen_port == 4500
    p = dev.peers["cGVlcg=="]
    assert (p.endpoint, p.allowed_ips, p.rx, p.tx, p.keepalive, p.last_handshake) == (
        "203.0.113.7:4700", ("10.2.0.0/16", "10.97.0.0/16"), 1234, 5678, 10, 1_700_000_000)
    assert dev.peers["b3RoZXI="] == wireguard.Peer("b3RoZXI=")


def test_psk_derivation() -> None:
    import base64
    import hashlib

    assert wireguard.psk_of("") == base64.b64encode(hashlib.sha256(b"default psk").digest()).decode()


# ------------------------------------------------------------------------------------------------ libreswan


class FakeRunner:
    def __init__(self, traffic: str = "") -> None:
        self.calls: list[list[str]] = []
        self.traffic = traffic
        self.fail: dict[str, int] = {}

    def __call__(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        self.calls.append(cmd)
        key = " ".join(cmd[2:3])
        if self.fail.get(key, 0) > 0:
            self.fail[key] -= 1
            return subprocess.CompletedProcess(cmd, 1, "", "whack: connect() failed")
        out = self.traffic if "--trafficstatus" in cmd else ""
        if cmd[:4] == ["ip", "xfrm", "policy", "list"]:
            out = ("src 10.1.0.0/16 dst 10.2.0.0/16 \n\tdir out priority 1 ptype main \n"
                   "src 0.0.0.0/0 dst 0.0.0.0/0 \n\tsocket in priority 0 ptype main \n"
                   "src 10.2.0.0/16 dst 10.1.0.0/16 \n\tdir fwd priority 2 ptype main \n")
        return subprocess.CompletedProcess(cmd, 0, out, "")


def swan(tmp_path: Path, runner: FakeRunner, **local_cfg: str) -> tuple[libreswan.LibreswanDriver, list[Any]]:
    started: list[Any] = []
    ctl = tmp_path / "pluto.ctl"

    def start(cmd: list[str]) -> object:
        started.append(cmd)
        ctl.write_text("")
        return object()

    local = spec("east", LOCAL_IP, subnets=["10.96.0.0/16", "10.1.0.0/16"], backend="libreswan", **local_cfg)
    ctx = DriverContext(local=local, cluster_cidrs=["10.1.0.0/16"], psk="s3cret")  # type: ignore[arg-type]
    ctx.extra.update(runner=runner, start_pluto=start, config_dir=tmp_path / "ipsec.d", ctl_path=ctl,
                     sleep=lambda s: None)
    driver = new_driver("libreswan", ctx)
    assert isinstance(driver, libreswan.LibreswanDriver)
    return driver, started


def test_libreswan_bidirectional_args_and_lazy_pluto(tmp_path: Path) -> None:
    runner = FakeRunner()
    driver, started = swan(tmp_path, runner)
    driver.init()
    assert (tmp_path / "ipsec.d" / "submariner.secrets").read_text() == '%any %any : PSK "s3cret"\n'
    assert oct((tmp_path / "ipsec.d" / "submariner.secrets").stat().st_mode & 0o777) == "0o600"
    assert started == []
    remote = endpoint(spec("west", "192.168.2.20", subnets=["10.2.0.0/16", "192.168.2.20/32"],
                           backend="libreswan", **{"udp-port": "4501"}))
    driver.connect_to_endpoint(NATEndpointInfo(remote, "203.0.113.7", True))
    assert started and started[0][:2] == ["pluto", "--config"]
    name = f"{remote['spec']['cable_name']}-0-0"
    whacks = [c[2:] for c in runner.calls]
    assert whacks[0] == ["--listen"]
    assert whacks[1] == ["--psk", "--encrypt", "--forceencaps", "--name", name,
                         "--id", LOCAL_IP, "--host", LOCAL_IP, "--client", "10.96.0.0/16", "--ikeport", "4500",
                         "--to", "--id", "192.168.2.20", "--host", "203.0.113.7", "--client", "10.2.0.0/16",
                         "--ikeport", "4501", "--dpdaction=hold", "--dpddelay", "30"]
    assert whacks[2] == ["--route", "--name", name]
    assert whacks[3] == ["--initiate", "--asynchronous", "--name", name]
    # 2 local subnets x 1 remote subnet (the remote's own /32 excluded) = 2 connections, 3 calls each
    assert len(whacks) == 1 + 6
    n = len(runner.calls)
    driver.connect_to_endpoint(NATEndpointInfo(remote, "203.0.113.7", True))
    assert len(runner.calls) == n
    driver.disconnect_from_endpoint(remote)
    assert [c[2:] for c in runner.calls[n:]] == [["--delete", "--name", f"{remote['spec']['cable_name']}-{i}-0"]
                                                  for i in range(2)]


def test_libreswan_server_and_client_modes() -> None:
    local = spec("east", LOCAL_IP, subnets=["10.1.0.0/16"], **{"preferred-server": "true"})
    remote = endpoint(spec("west", "192.168.2.20", subnets=["10.2.0.0/16"]))
    info = NATEndpointInfo(remote, "192.168.2.20", False)
    [server] = libreswan.connection_args(local, info)  # type: ignore[arg-type]
    assert server[server.index("--to"):] == ["--to", "--id", "@192.168.2.20-0-0", "--host", "%any",
                                             "--client", "10.2.0.0/16", "--dpdaction=hold", "--dpddelay", "30"]
    assert server[server.index("--id") + 1] == f"@{LOCAL_IP}-0-0"
    remote["spec"]["backend_config"]["preferred-server"] = "true"
    local["backend_config"].pop("preferred-server")
    calls = libreswan.connection_args(local, info)  # type: ignore[arg-type]
    client = calls[0]
    assert "--ikeport" in client[client.index("--to"):] and "--ikeport" not in client[:client.index("--to")]
    assert [c[0] for c in calls[1:]] == ["--route", "--initiate"]
    # both prefer: the lexically greater cable name serves
    local["backend_config"]["preferred-server"] = "true"
    assert libreswan.mode(local, remote["spec"]) == ("server" if local["cable_name"] > remote["spec"]["cable_name"]  # type: ignore[arg-type]
                                                     else "client")


def test_libreswan_trafficstatus_and_whack_retries(tmp_path: Path) -> None:
    remote = endpoint(spec("west", "192.168.2.20", subnets=["10.2.0.0/16"], backend="libreswan"))
    cable = remote["spec"]["cable_name"]
    traffic = (f'006 #3: "{cable}-0-0"[1] 192.168.2.20, type=ESP, add_time=1700000000, inBytes=100, '
               f"outBytes=200, maxBytes=2^63B, id='192.168.2.20'\n"
               f'006 #4: "{cable}-0-0", type=ESP, add_time=1700000000, inBytes=1, outBytes=2, id=\'x\'\n')
    assert libreswan.parse_trafficstatus(traffic) == {f"{cable}-0-0": (101, 202)}
    runner = FakeRunner(traffic)
    driver, _ = swan(tmp_path, runner)
    driver.init()
    runner.fail["--listen"] = 2  # fails twice, third try works
    driver.connect_to_endpoint(NATEndpointInfo(remote, "192.168.2.20", False))
    assert [c[2] for c in runner.calls[:3]] == ["--listen"] * 3
    conns = driver.get_connections()
    assert [c["status"] for c in conns] == ["connected"]
    assert "Rx=101 Bytes, Tx=202 Bytes" in conns[0]["statusMessage"]
    runner.traffic = ""
    assert [c["status"] for c in driver.get_connections()] == ["connecting"]
    runner.fail["--trafficstatus"] = 3
    with pytest.raises(DriverError, match="--trafficstatus"):
        driver.get_connections()


def test_libreswan_cleanup_keeps_all_zero_policies(tmp_path: Path) -> None:
    runner = FakeRunner()
    driver, _ = swan(tmp_path, runner)
    driver.cleanup()
    deletes = [c for c in runner.calls if c[:4] == ["ip", "xfrm", "policy", "delete"]]
    assert deletes == [["ip", "xfrm", "policy", "delete", "src", "10.1.0.0/16", "dst", "10.2.0.0/16", "dir", "out"],
                       ["ip", "xfrm", "policy", "delete", "src", "10.2.0.0/16", "dst", "10.1.0.0/16", "dir", "fwd"]]


def test_libreswan_missing_pluto_says_what_to_do(tmp_path: Path) -> None:
    driver, _ = swan(tmp_path, FakeRunner())
    driver.init()

    def no_pluto(cmd: list[str]) -> object:
        raise FileNotFoundError(2, "No such file or directory", "pluto")

    driver.start_pluto = no_pluto
    remote = endpoint(spec("west", "192.168.2.20", subnets=["10.2.0.0/16"], backend="libreswan"))
    with pytest.raises(DriverError, match="SUBMARINER_CABLEDRIVER=vxlan or wireguard"):
        driver.connect_to_endpoint(NATEndpointInfo(remote, "192.168.2.20", False))


def test_vxlan_reconnect_follows_subnet_and_ip_changes() -> None:
    driver, nl = vxlan_driver()
    driver.init()
    remote = endpoint(spec("west", "192.168.2.20", public_ip="203.0.113.7", subnets=["10.97.0.0/16", "10.2.0.0/16"]))
    driver.connect_to_endpoint(NATEndpointInfo(remote, "203.0.113.7", True))
    remote["spec"]["subnets"] = ["10.2.0.0/16"]
    driver.connect_to_endpoint(NATEndpointInfo(remote, "192.168.2.20", False))
    assert [r.dst for r in nl.routes(100)] == ["10.2.0.0/16"]
    assert nl.fdb("vxlan-tunnel") == [Fdb("vxlan-tunnel", "192.168.2.20")]


def test_pluto_exit_is_fatal(tmp_path: Path) -> None:
    runner = FakeRunner()
    fatal: list[str] = []
    ctl = tmp_path / "pluto.ctl"

    def start(cmd: list[str]) -> subprocess.Popen[bytes]:
        ctl.write_text("")
        return subprocess.Popen(["sh", "-c", "exit 3"])

    local = spec("east", LOCAL_IP, subnets=["10.1.0.0/16"], backend="libreswan")
    ctx = DriverContext(local=local, cluster_cidrs=["10.1.0.0/16"], psk="p",  # type: ignore[arg-type]
                        extra={"on_fatal": fatal.append})
    driver = libreswan.LibreswanDriver(ctx, runner=runner, start_pluto=start, config_dir=tmp_path / "ipsec.d",
                                       ctl_path=ctl, sleep=lambda s: None)
    driver.init()
    remote = endpoint(spec("west", "192.168.2.20", subnets=["10.2.0.0/16"], backend="libreswan"))
    driver.connect_to_endpoint(NATEndpointInfo(remote, "192.168.2.20", False))
    import time

    deadline = time.monotonic() + 5
    while not fatal and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fatal == ["pluto exited with status 3"]
