"""Start-up and shutdown of one API server: store, seed objects, TLS, kubeconfig, HTTP listener."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from . import admission, pki, rbac
from .allocators import ClusterIPAllocator, NodePortAllocator
from .core import Api
from .errors import ApiError
from .http import HttpApi
from .podexec import NetnsExecBackend
from .podlogs import FileLogBackend
from .resources import Registry
from .store import Store
from .watch import WatchHub

log = logging.getLogger("submariner.broker.apiserver")

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 6443
    kubeconfig: Path | None = None
    context: str = "submariner-broker"
    service_cidr: str = "10.96.0.0/12"
    node_port_range: tuple[int, int] = (30000, 32767)
    tls_sans: list[str] = field(default_factory=list)
    advertise_address: str | None = None
    synchronous: str = "NORMAL"
    history_size: int = 100_000
    pod_exec_netns: tuple[str, str] | None = None  # (pod annotation, namespace-name prefix): enables pods/exec
    pod_logs: tuple[str, Path] | None = None  # (pod annotation, root directory): enables pods/log


def _admin_token(data_dir: Path) -> str:
    path = data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip()
    token = pki.generate_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def _seed(api: Api) -> None:
    """First start: the namespaces and default RBAC roles every Kubernetes cluster has."""
    ns_type = api.registry.get("", "v1", "namespaces")
    assert ns_type is not None
    for name in DEFAULT_NAMESPACES:
        api.create(ns_type, "", {"metadata": {"name": name}})
    roles = api.registry.get("rbac.authorization.k8s.io", "v1", "clusterroles")
    bindings = api.registry.get("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
    assert roles is not None and bindings is not None
    for role in rbac.DEFAULT_CLUSTER_ROLES.values():
        api.create(roles, "", role)
    for binding in rbac.DEFAULT_CLUSTER_ROLE_BINDINGS.values():
        api.create(bindings, "", binding)


class Server:
    """A running server; `start()` then `stop()` (or `serve_forever()` for the command line)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.port = config.port

    async def start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(cfg.data_dir, 0o700)
        ca = pki.load_or_create_ca(cfg.data_dir)
        self.store = Store(cfg.data_dir / "store.db", synchronous=cfg.synchronous)
        hub = WatchHub(self.store.rv, cfg.history_size)
        ctx = admission.Context(ClusterIPAllocator(cfg.service_cidr), NodePortAllocator(*cfg.node_port_range),
                                ca_pem=ca.cert_pem)
        self.api = Api(self.store, hub, Registry(), ctx)
        if self.store.rv == 0:
            _seed(self.api)
        removed = self.api.collect_orphans()
        if removed:
            log.info("garbage-collected dependents of vanished owners count=%d", removed)
        token = _admin_token(cfg.data_dir)
        self.admin_token = token
        advertise = cfg.advertise_address or (cfg.host if cfg.host not in ("0.0.0.0", "::", "") else "127.0.0.1")
        hosts = [h for h in [cfg.host, advertise, *cfg.tls_sans] if h and h not in ("0.0.0.0", "::")]
        ssl_ctx = pki.server_ssl_context(cfg.data_dir, hosts)
        self.http = HttpApi(self.api, admin_tokens={token}, server_address=f"{advertise}:{cfg.port}")
        if cfg.pod_exec_netns is not None:
            self.http.exec_backend = NetnsExecBackend(*cfg.pod_exec_netns)
        if cfg.pod_logs is not None:
            self.http.log_backend = FileLogBackend(*cfg.pod_logs)
        self.runner = web.AppRunner(self.http.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, cfg.host, cfg.port, ssl_context=ssl_ctx, reuse_address=True,
                           backlog=1024)
        await site.start()
        server = site._server
        if server is not None and cfg.port == 0:
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]
        self.http.server_address = f"{advertise}:{self.port}"
        self.url = f"https://{advertise}:{self.port}"
        if cfg.kubeconfig is not None:
            pki.write_kubeconfig(cfg.kubeconfig, server=self.url, ca_pem=ca.cert_pem, token=token,
                                 context=cfg.context)
        log.info("serving url=%s data_dir=%s rv=%d", self.url, cfg.data_dir, self.store.rv)

    async def stop(self) -> None:
        self.api.hub.close_all()
        if self.runner is not None:
            await self.runner.cleanup()
        self.store.close()

    async def serve_forever(self) -> None:
        await self.start()
        print(f"submariner-broker: serving {self.url}", flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await self.stop()


def run_server(config: ServerConfig) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(Server(config).serve_forever())
    except ApiError as exc:
        raise SystemExit(f"submariner-broker: {exc.message}") from exc
