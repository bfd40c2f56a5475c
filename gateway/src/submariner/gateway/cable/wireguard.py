"""The WireGuard cable driver (dataplane.md §2.6): device `submariner`, one peer per remote cluster.

This kernel has no WireGuard module, so the device is userspace `wireguard-go` driven by `wg`. wireguard-go
keeps its UAPI socket in /var/run/wireguard, a directory *every* network namespace shares: two gateways on
one machine (lab nodes are namespaces of one host) would both claim `submariner.sock`. Our choice: each
gateway runs wireguard-go and wg inside a private mount namespace (a long-lived `unshare --mount` holder
with a tmpfs on /var/run/wireguard; commands join it with `nsenter --mount`), so the device keeps
upstream's name `submariner` everywhere. `WgBackend` is the seam; tests use a fake one.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from submariner.broker.api.submariner import (
    INTERFACE_NAME_CONFIG,
    PUBLIC_KEY_CONFIG,
    UDP_PORT_CONFIG,
    Connection,
    EndpointSpec,
)
from submariner.gateway.cable.driver import (
    CableDriver,
    DriverContext,
    DriverError,
    NATEndpointInfo,
    connection,
    register,
)
from submariner.gateway.processes import spawn

log = logging.getLogger(__name__)

NAME = "wireguard"
DEVICE = "submariner"
KEEPALIVE = 10
CHECK_INTERVAL = 10.0
HANDSHAKE_TIMEOUT = 130.0
DEFAULT_PSK = "default psk"


# ------------------------------------------------------------------------------------------ keys


def generate_private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    raw = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return base64.b64encode(raw).decode()


def public_key_of(private_key: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_key))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def psk_of(secret: str) -> str:
    """Peer pre-shared key: SHA-256 of CE_IPSEC_PSK (upstream's derivation), base64."""
    return base64.b64encode(hashlib.sha256((secret or DEFAULT_PSK).encode()).digest()).decode()


# ------------------------------------------------------------------------------------------ the device seam


@dataclass(frozen=True)
class Peer:
    public_key: str
    preshared_key: str = ""
    endpoint: str = ""
    allowed_ips: tuple[str, ...] = ()
    keepalive: int = 0
    last_handshake: float = 0.0
    """Unix seconds; 0 = never."""
    rx: int = 0
    tx: int = 0


@dataclass
class Device:
    public_key: str
    listen_port: int
    peers: dict[str, Peer] = field(default_factory=dict)


class WgBackend(Protocol):
    def create_device(self, name: str) -> None:
        """(Re)create the device, dropping any earlier one of that name."""

    def delete_device(self, name: str) -> None: ...

    def configure(self, name: str, private_key: str, listen_port: int) -> None: ...

    def set_peer(self, name: str, peer: Peer) -> None:
        """Add or update a peer; allowed IPs are replaced."""

    def remove_peer(self, name: str, public_key: str) -> None: ...

    def show(self, name: str) -> Device | None: ...

    def close(self) -> None: ...


def parse_dump(text: str) -> Device | None:
    """`wg show <dev> dump`: first line the device, then one tab-separated line per peer."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    head = lines[0].split("\t")
    dev = Device(public_key=head[1], listen_port=int(head[2]) if head[2].isdigit() else 0)
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) < 8:
            continue
        allowed = tuple(sorted(a for a in f[3].split(",") if a and a != "(none)"))
        dev.peers[f[0]] = Peer(
            public_key=f[0], preshared_key="" if f[1] == "(none)" else f[1],
            endpoint="" if f[2] == "(none)" else f[2], allowed_ips=allowed,
            keepalive=int(f[7]) if f[7].isdigit() else 0, last_handshake=float(f[4] or 0),
            rx=int(f[5] or 0), tx=int(f[6] or 0))
    return dev


class WireguardGoBackend:
    """wireguard-go + wg inside a private mount namespace (see the module docstring)."""

    def __init__(self, *, wireguard_go: str = "wireguard-go", wg: str = "wg", startup_timeout: float = 10.0,
                 netns: str | None = None) -> None:
        """`netns` runs every command in that named network namespace (tests); None = our own."""
        self.prefix = ["ip", "netns", "exec", netns] if netns else []
        self.wireguard_go = wireguard_go
        self.wg = wg
        self.startup_timeout = startup_timeout
        self._holder: subprocess.Popen[str] | None = None
        self._daemons: dict[str, subprocess.Popen[bytes]] = {}

    def _mount_ns(self) -> list[str]:
        if self._holder is None or self._holder.poll() is not None:
            holder: subprocess.Popen[str] = spawn(
                [*self.prefix, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                 "mkdir -p /var/run/wireguard && mount -t tmpfs -o mode=0700 tmpfs /var/run/wireguard "
                 "&& echo ready && exec sleep infinity"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = holder.stdout.readline() if holder.stdout else ""
            if line.strip() != "ready":
                err = holder.stderr.read() if holder.stderr else ""
                holder.kill()
                holder.wait()
                raise DriverError(f"cannot create a private mount namespace for wireguard-go: {err.strip()}")
            self._holder = holder
        return [*self.prefix, "nsenter", f"--mount=/proc/{self._holder.pid}/ns/mnt"]

    def _socket(self, name: str) -> Path:
        assert self._holder is not None
        # /var/run is usually a symlink to /run: resolve it here, since /proc/<pid>/root would follow an
        # absolute symlink back into *our* mount namespace
        run_dir = os.path.realpath("/var/run/wireguard").lstrip("/")
        return Path(f"/proc/{self._holder.pid}/root/{run_dir}/{name}.sock")

    def _wg(self, *args: str, stdin: str | None = None) -> str:
        cmd = [*self._mount_ns(), self.wg, *args]
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=15, check=False)
        if result.returncode != 0:
            raise DriverError(f"{' '.join(['wg', *args])} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def create_device(self, name: str) -> None:
        self.delete_device(name)
        env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": "error"}
        proc: subprocess.Popen[bytes] = spawn([*self._mount_ns(), self.wireguard_go, "-f", name], env=env,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._daemons[name] = proc
        deadline = time.monotonic() + self.startup_timeout
        while not self._socket(name).exists():
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise DriverError(f"wireguard-go {name} exited ({proc.returncode}): {err.strip()}")
            if time.monotonic() > deadline:
                raise DriverError(f"wireguard-go {name} did not open its UAPI socket in {self.startup_timeout:g}s")
            time.sleep(0.02)

    def delete_device(self, name: str) -> None:
        proc = self._daemons.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run([*self.prefix, "ip", "link", "del", name], capture_output=True, timeout=15, check=False)

    def configure(self, name: str, private_key: str, listen_port: int) -> None:
        self._wg("set", name, "private-key", "/dev/stdin", "listen-port", str(listen_port), stdin=private_key)

    def set_peer(self, name: str, peer: Peer) -> None:
        args = ["set", name, "peer", peer.public_key]
        if peer.preshared_key:
            args += ["preshared-key", "/dev/stdin"]
        if peer.endpoint:
            args += ["endpoint", peer.endpoint]
        args += ["allowed-ips", ",".join(peer.allowed_ips), "persistent-keepalive", str(peer.keepalive or "off")]
        self._wg(*args, stdin=peer.preshared_key or None)

    def remove_peer(self, name: str, public_key: str) -> None:
        self._wg("set", name, "peer", public_key, "remove")

    def show(self, name: str) -> Device | None:
        try:
            return parse_dump(self._wg("show", name, "dump"))
        except DriverError:
            return None

    def pids(self) -> list[int]:
        """Processes this backend started (the holder and one wireguard-go per device)."""
        procs: list[subprocess.Popen[Any]] = [*self._daemons.values()]
        if self._holder is not None:
            procs.append(self._holder)
        return [p.pid for p in procs if p.poll() is None]

    def close(self) -> None:
        for name in list(self._daemons):
            self.delete_device(name)
        if self._holder is not None:
            self._holder.kill()
            self._holder.wait()
            self._holder = None


# ------------------------------------------------------------------------------------------ the driver


@dataclass
class _PeerStatus:
    spec: EndpointSpec
    use_ip: str
    status: str = "connecting"
    message: str = ""
    last_check: float = 0.0
    connected_at: float = 0.0
    rx: int = 0
    tx: int = 0


class WireguardDriver:
    def __init__(self, ctx: DriverContext, backend: WgBackend, *, netlink: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.backend = backend
        self.nl = netlink
        self.clock = clock
        self.psk = psk_of(ctx.psk)
        self.port = int((ctx.local.get("backend_config") or {}).get(UDP_PORT_CONFIG, 4500))
        self.private_key = generate_private_key()
        self.public_key = public_key_of(self.private_key)
        self._by_cluster: dict[str, str] = {}  # remote cluster id -> peer public key
        self._status: dict[str, _PeerStatus] = {}  # peer public key -> status
        # construction: recreate the device with a fresh key, publish it in the local Endpoint
        backend.create_device(DEVICE)
        backend.configure(DEVICE, self.private_key, self.port)
        cfg = ctx.local.setdefault("backend_config", {})
        cfg[PUBLIC_KEY_CONFIG] = self.public_key
        cfg[INTERFACE_NAME_CONFIG] = DEVICE

    def name(self) -> str:
        return NAME

    def init(self) -> None:
        dev = self.backend.show(DEVICE)
        if dev is None or dev.public_key != self.public_key:
            raise DriverError(f"wireguard device {DEVICE} does not carry our key")
        if self.nl is not None:
            self.nl.ensure_link_up(DEVICE)
        else:
            subprocess.run(["ip", "link", "set", DEVICE, "up"], check=True, capture_output=True, timeout=15)

    def _desired(self, info: NATEndpointInfo, key: str) -> Peer:
        spec = info.spec
        port = (spec.get("backend_config") or {}).get(UDP_PORT_CONFIG, "4500")
        return Peer(public_key=key, preshared_key=self.psk, endpoint=f"{info.use_ip}:{port}",
                    allowed_ips=tuple(sorted(spec.get("subnets") or [])), keepalive=KEEPALIVE)

    def connect_to_endpoint(self, info: NATEndpointInfo) -> str:
        spec = info.spec
        if spec["cluster_id"] == self.ctx.local["cluster_id"]:
            return info.use_ip
        key = (spec.get("backend_config") or {}).get(PUBLIC_KEY_CONFIG, "")
        if not key:
            raise DriverError(f"endpoint {spec['cable_name']} has no WireGuard publicKey in backend_config")
        old = self._by_cluster.get(spec["cluster_id"])
        if old and old != key:
            self.backend.remove_peer(DEVICE, old)
            self._status.pop(old, None)
        want = self._desired(info, key)
        dev = self.backend.show(DEVICE)
        have = dev.peers.get(key) if dev else None
        if have is None or (have.preshared_key, have.endpoint, have.allowed_ips, have.keepalive) != (
                want.preshared_key, want.endpoint, want.allowed_ips, want.keepalive):
            self.backend.set_peer(DEVICE, want)
            dev = self.backend.show(DEVICE)
            if dev is None or key not in dev.peers:
                raise DriverError(f"peer for {spec['cable_name']} missing from {DEVICE} after configuring it")
        self._by_cluster[spec["cluster_id"]] = key
        if key not in self._status or self._status[key].use_ip != info.use_ip:
            now = self.clock()
            self._status[key] = _PeerStatus(spec, info.use_ip, last_check=now, connected_at=now)
        log.info("wireguard peer configured cable=%s endpoint=%s", spec["cable_name"], want.endpoint)
        return info.use_ip

    def disconnect_from_endpoint(self, endpoint: dict[str, Any]) -> None:
        spec: EndpointSpec = endpoint["spec"]
        key = (spec.get("backend_config") or {}).get(PUBLIC_KEY_CONFIG, "")
        if key and self._by_cluster.get(spec["cluster_id"]) == key:
            del self._by_cluster[spec["cluster_id"]]
        if key:
            self._status.pop(key, None)
            dev = self.backend.show(DEVICE)
            if dev is not None and key in dev.peers:
                self.backend.remove_peer(DEVICE, key)

    def get_active_connections(self) -> list[Connection]:
        return []

    def get_connections(self) -> list[Connection]:
        dev = self.backend.show(DEVICE)
        if dev is None:
            raise DriverError(f"cannot read wireguard device {DEVICE}")
        for key in set(dev.peers) - set(self._status):
            log.info("removing unknown wireguard peer %s", key)
            self.backend.remove_peer(DEVICE, key)
        out = []
        now = self.clock()
        for key, st in self._status.items():
            peer = dev.peers.get(key)
            if peer is None:
                st.status, st.message = "error", "peer is missing from the device"
            else:
                self.update_status(st, peer, now)
            out.append(connection(st.spec, st.status, st.message, using_ip=st.use_ip))
        return out

    @staticmethod
    def update_status(st: _PeerStatus, peer: Peer, now: float) -> None:
        """The §2.6 rules, checked at most every 10 s."""
        if now - st.last_check < CHECK_INTERVAL:
            return
        moved = peer.rx != st.rx or peer.tx != st.tx
        since_check = now - st.last_check
        st.rx, st.tx = peer.rx, peer.tx
        if not peer.last_handshake:
            if now - st.connected_at > HANDSHAKE_TIMEOUT:
                st.status = "error"
                st.message = f"no initial handshake for {now - st.connected_at:.1f} seconds"
            elif moved:
                st.status, st.message = "connecting", ""
            st.last_check = now
            return
        if moved:
            st.status, st.message = "connected", f"Rx={peer.rx} Bytes, Tx={peer.tx} Bytes"
            st.last_check = now
        elif now - peer.last_handshake > HANDSHAKE_TIMEOUT:
            st.status = "error"
            st.message = f"no handshake for {now - peer.last_handshake:.1f} seconds"
            st.last_check = now
        elif since_check < 2 * CHECK_INTERVAL:
            return
        else:
            st.status, st.message = "error", "no bytes sent or received"
            st.last_check = now

    def cleanup(self) -> None:
        self.backend.delete_device(DEVICE)
        self._by_cluster.clear()
        self._status.clear()

    def close(self) -> None:
        """Process exit: stop wireguard-go and the mount-namespace holder."""
        self.backend.close()


def _factory(ctx: DriverContext) -> CableDriver:
    backend = ctx.extra.get("wg_backend") or WireguardGoBackend()
    return WireguardDriver(ctx, backend, netlink=ctx.extra.get("netlink"),
                           clock=ctx.extra.get("wall_clock", time.time))


register(NAME, _factory)

__all__ = ["DEVICE", "Device", "Peer", "WgBackend", "WireguardDriver", "WireguardGoBackend", "parse_dump",
           "psk_of"]
