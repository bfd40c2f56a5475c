"""The Libreswan (IPsec) cable driver (dataplane.md §2.5): pluto controlled with `ipsec whack`.

This kernel has no ESP support (`ip xfrm state add … proto esp` fails), so the driver cannot build a real
tunnel here: everything external goes through a `Runner` (commands) and a `PlutoStarter` seam, and the
tests check the generated config and the exact whack argument lists against a fake runner, and parse
recorded `--trafficstatus` output. On a kernel with ESP the same code drives a real pluto.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from submariner.broker.api.submariner import (
    PREFERRED_SERVER_CONFIG,
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

NAME = "libreswan"
WHACK_TIMEOUT = 5.0
WHACK_TRIES = 3
PLUTO_WAIT = 60.0

Runner = Callable[[list[str], float], "subprocess.CompletedProcess[str]"]
PlutoStarter = Callable[[list[str]], Any]


def run_command(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


_TRAFFIC = re.compile(r'#\d+: "([^"]+)"(?:\[\d+\][^,]*)?,.*?inBytes=(\d+), outBytes=(\d+)')


def parse_trafficstatus(text: str) -> dict[str, tuple[int, int]]:
    """`whack --trafficstatus` → {connection name: (inBytes, outBytes)} summed over its states."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        m = _TRAFFIC.search(line)
        if not m:
            continue
        rx, tx = out.get(m.group(1), (0, 0))
        out[m.group(1)] = (rx + int(m.group(2)), tx + int(m.group(3)))
    return out


def mode(local: EndpointSpec, remote: EndpointSpec) -> str:
    """bidirectional | server | client, from both sides' preferred-server flags."""
    lp = (local.get("backend_config") or {}).get(PREFERRED_SERVER_CONFIG) == "true"
    rp = (remote.get("backend_config") or {}).get(PREFERRED_SERVER_CONFIG) == "true"
    if lp and rp:
        return "server" if local["cable_name"] > remote["cable_name"] else "client"
    if lp:
        return "server"
    if rp:
        return "client"
    return "bidirectional"


def _subnets(spec: EndpointSpec) -> list[str]:
    return [s for s in spec.get("subnets") or [] if not s.startswith(f"{spec['private_ip']}/")]


def connection_args(local: EndpointSpec, info: NATEndpointInfo, *, force_encaps: bool = False
                    ) -> list[list[str]]:
    """The whack invocations (arguments after `ipsec whack`) that build one cable, in order."""
    remote = info.spec
    how = mode(local, remote)
    local_port = (local.get("backend_config") or {}).get(UDP_PORT_CONFIG, "4500")
    remote_port = (remote.get("backend_config") or {}).get(UDP_PORT_CONFIG, "4500")
    calls: list[list[str]] = []
    for lsi, left in enumerate(_subnets(local)):
        for rsi, right in enumerate(_subnets(remote)):
            name = f"{remote['cable_name']}-{lsi}-{rsi}"
            args = ["--psk", "--encrypt"]
            if info.use_nat or force_encaps:
                args.append("--forceencaps")
            args += ["--name", name]
            if how == "bidirectional":
                args += ["--id", local["private_ip"], "--host", local["private_ip"], "--client", left,
                         "--ikeport", local_port, "--to",
                         "--id", remote["private_ip"], "--host", info.use_ip, "--client", right,
                         "--ikeport", remote_port]
            elif how == "server":
                args += ["--id", f"@{local['private_ip']}-{lsi}-{rsi}", "--host", local["private_ip"],
                         "--client", left, "--ikeport", local_port, "--to",
                         "--id", f"@{remote['private_ip']}-{rsi}-{lsi}", "--host", "%any", "--client", right]
            else:
                args += ["--id", f"@{local['private_ip']}-{lsi}-{rsi}", "--host", local["private_ip"],
                         "--client", left, "--to",
                         "--id", f"@{remote['private_ip']}-{rsi}-{lsi}", "--host", info.use_ip,
                         "--client", right, "--ikeport", remote_port]
            args += ["--dpdaction=hold", "--dpddelay", "30"]
            calls.append(args)
            if how != "server":
                calls.append(["--route", "--name", name])
                calls.append(["--initiate", "--asynchronous", "--name", name])
    return calls


def connection_names(local: EndpointSpec, remote: EndpointSpec) -> list[str]:
    return [f"{remote['cable_name']}-{lsi}-{rsi}" for lsi in range(len(_subnets(local)))
            for rsi in range(len(_subnets(remote)))]


class LibreswanDriver:
    def __init__(self, ctx: DriverContext, *, runner: Runner = run_command, start_pluto: PlutoStarter | None = None,
                 config_dir: Path = Path("/etc/ipsec.d"), ctl_path: Path = Path("/run/pluto/pluto.ctl"),
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.runner = runner
        self.start_pluto = start_pluto or spawn
        self.config_dir = config_dir
        self.ctl_path = ctl_path
        self.sleep = sleep
        self.clock = clock
        self._pluto: Any = None
        self._stopping = False
        self.conf_path = config_dir / "ipsec.conf"
        self._connections: dict[str, tuple[EndpointSpec, str, bool]] = {}  # cable -> (spec, use ip, nat)

    def name(self) -> str:
        return NAME

    def init(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        secrets = self.config_dir / "submariner.secrets"
        secrets.write_text(f'%any %any : PSK "{self.ctx.psk}"\n')
        secrets.chmod(0o600)
        conf = self.config_dir.parent / "ipsec.conf" if self.config_dir.name == "ipsec.d" else \
            self.config_dir / "ipsec.conf"
        debug = "all" if self.ctx.extra.get("ipsec_debug") else "none"
        conf.write_text(f"config setup\n    plutodebug={debug}\n")
        self.conf_path = conf

    def _ensure_pluto(self) -> None:
        if self._pluto is not None:
            return
        try:
            self._pluto = self.start_pluto(["pluto", "--config", str(self.conf_path), "--nofork",
                                            "--secretsfile", str(self.config_dir / "submariner.secrets")])
        except OSError as e:
            raise DriverError(f"cannot start pluto ({e}): the libreswan driver needs Libreswan installed and a kernel "
                              "with ESP support; otherwise use SUBMARINER_CABLEDRIVER=vxlan or wireguard") from None
        if hasattr(self._pluto, "wait"):
            threading.Thread(target=self._watch_pluto, args=(self._pluto,), name="pluto-watch", daemon=True).start()
        deadline = self.clock() + PLUTO_WAIT
        while not self.ctl_path.exists():
            if self.clock() > deadline:
                raise DriverError(f"pluto did not create {self.ctl_path} within {PLUTO_WAIT:g}s")
            self.sleep(0.1)
        self.whack(["--listen"])

    def _watch_pluto(self, proc: Any) -> None:
        """pluto exiting is fatal for the gateway (upstream exits too; the pod restart starts afresh)."""
        code = proc.wait()
        on_fatal = self.ctx.extra.get("on_fatal")
        if not self._stopping and callable(on_fatal):
            on_fatal(f"pluto exited with status {code}")

    def whack(self, args: list[str]) -> str:
        """`ipsec whack ARGS` with a 5 s timeout, three tries one second apart."""
        last = ""
        for attempt in range(WHACK_TRIES):
            try:
                result = self.runner(["ipsec", "whack", *args], WHACK_TIMEOUT)
            except subprocess.TimeoutExpired:
                last = "timed out"
            else:
                if result.returncode == 0:
                    return result.stdout
                last = (result.stderr or result.stdout).strip()
            if attempt < WHACK_TRIES - 1:
                self.sleep(1.0)
        raise DriverError(f"ipsec whack {' '.join(args)} failed: {last}")

    def connect_to_endpoint(self, info: NATEndpointInfo) -> str:
        spec = info.spec
        if spec["cluster_id"] == self.ctx.local["cluster_id"]:
            return info.use_ip
        known = self._connections.get(info.cable_name)
        if known is not None and known[1:] == (info.use_ip, info.use_nat) and known[0] == spec:
            return info.use_ip  # already built: a repeat must not re-run whack
        self._ensure_pluto()
        for args in connection_args(self.ctx.local, info, force_encaps=self.ctx.force_encaps):
            self.whack(args)
        self._connections[info.cable_name] = (spec, info.use_ip, info.use_nat)
        return info.use_ip

    def disconnect_from_endpoint(self, endpoint: dict[str, Any]) -> None:
        spec: EndpointSpec = endpoint["spec"]
        self._connections.pop(spec["cable_name"], None)
        for name in connection_names(self.ctx.local, spec):
            try:
                self.whack(["--delete", "--name", name])
            except DriverError as e:
                log.warning("deleting IPsec connection %s: %s", name, e)

    def get_active_connections(self) -> list[Connection]:
        return self.get_connections()

    def get_connections(self) -> list[Connection]:
        if not self._connections:
            return []
        traffic = parse_trafficstatus(self.whack(["--trafficstatus"]))
        out = []
        for _cable, (spec, ip, nat) in self._connections.items():
            names = connection_names(self.ctx.local, spec)
            seen = [traffic[n] for n in names if n in traffic]
            if seen:
                rx, tx = sum(s[0] for s in seen), sum(s[1] for s in seen)
                out.append(connection(spec, "connected", f"{len(seen)} of {len(names)} IPsec connections up, "
                                      f"Rx={rx} Bytes, Tx={tx} Bytes", using_ip=ip, using_nat=nat))
            else:
                out.append(connection(spec, "connecting", f"0 of {len(names)} IPsec connections up",
                                      using_ip=ip, using_nat=nat))
        return out

    def cleanup(self) -> None:
        """Delete every XFRM policy but the all-zero ones (the kernel's defaults)."""
        listing = self.runner(["ip", "xfrm", "policy", "list"], 15).stdout
        for m in re.finditer(r"^src (\S+) dst (\S+).*?\n\s+dir (\w+)", listing, re.M):
            src, dst, direction = m.groups()
            if src == "0.0.0.0/0" and dst == "0.0.0.0/0":
                continue
            self.runner(["ip", "xfrm", "policy", "delete", "src", src, "dst", dst, "dir", direction], 15)
        self.close()

    def close(self) -> None:
        """Stop pluto (leadership lost, or the process exits)."""
        self._stopping = True
        if self._pluto is not None and hasattr(self._pluto, "terminate"):
            self._pluto.terminate()
        self._pluto = None


def _factory(ctx: DriverContext) -> CableDriver:
    kwargs: dict[str, Any] = {}
    for key in ("runner", "start_pluto", "config_dir", "ctl_path", "sleep"):
        if key in ctx.extra:
            kwargs[key] = ctx.extra[key]
    return LibreswanDriver(ctx, **kwargs)


register(NAME, _factory)
