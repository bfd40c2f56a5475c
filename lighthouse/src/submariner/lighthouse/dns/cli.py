"""`lighthouse-dns -conf COREFILE [-dns.port N] [-kubeconfig PATH] [-cluster-id ID]`: the DNS server process.

Flags are CoreDNS's single-dash long flags (`--` forms work too). Signals as CoreDNS: SIGUSR1 reloads the
Corefile keeping the DNS sockets of unchanged listeners; SIGTERM/SIGINT make `/ready` answer `Shutting down`,
sleep the `health` lameduck while DNS still answers, then close; SIGQUIT exits at once. Each listener is
announced on stdout as `lighthouse-dns: serving dns://HOST:PORT` (with the real port when 0 was asked for).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from submariner.lighthouse.dns import chain, config, corefile
from submariner.lighthouse.dns.chain import Block
from submariner.lighthouse.dns.plugin import BlockHooks, SetupError
from submariner.lighthouse.dns.process import ProcessState
from submariner.lighthouse.dns.server import DnsServer

DEFAULT_PORT = 53
SHUTDOWN_GRACE = 5.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lighthouse-dns", allow_abbrev=False,
                                description="CoreDNS-compatible DNS server for Submariner Lighthouse")
    p.add_argument("-conf", "--conf", dest="conf", default=None, help="Corefile to load (default: ./Corefile)")
    p.add_argument("-dns.port", "--dns.port", dest="port", type=int, default=DEFAULT_PORT,
                   help="default port for keys without one")
    p.add_argument("-kubeconfig", "--kubeconfig", dest="kubeconfig", default=None)
    p.add_argument("-cluster-id", "--cluster-id", dest="cluster_id",
                   default=os.environ.get("SUBMARINER_CLUSTERID", ""))
    p.add_argument("-plugins", "--plugins", dest="plugins", action="store_true", help="list plugins and exit")
    p.add_argument("-version", "--version", dest="version", action="store_true")
    return p.parse_args(argv)


def bind_hosts(cfg: Any) -> list[str]:
    """The `bind` addresses of a block ([] = all addresses); `except` lines are not supported."""
    hosts: list[str] = []
    for d in cfg.directives:
        if d.name == "bind":
            hosts.extend(d.args)
    return hosts


class App:
    """The running process: listeners by (host, port), the configuration generation, signal handling."""

    def __init__(self, corefile_path: str | None, port: int, process: ProcessState) -> None:
        self.corefile_path = corefile_path
        self.port = port
        self.process = process
        self.servers: dict[tuple[str, int], DnsServer] = {}
        self.stopped = asyncio.Event()
        self.exit_code = 0
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._announced_http: set[str] = set()

    # -- configuration -----------------------------------------------------------------------------------
    def read_blocks(self) -> list[corefile.ServerBlock]:
        if self.corefile_path is None:
            text = corefile.DEFAULT_COREFILE.replace("{port}", str(self.port))
            return corefile.parse(text, "Corefile", known_directives=chain.KNOWN)
        with open(self.corefile_path, encoding="utf-8") as fh:
            text = fh.read()
        return corefile.parse(text, self.corefile_path, known_directives=chain.KNOWN)

    async def apply(self, blocks: list[corefile.ServerBlock]) -> list[DnsServer]:
        """Build everything for `blocks`, then switch over; on any error the running config stays."""
        configs = config.build_configs(blocks, self.port)
        for cfg in configs:
            config.check_once_only(cfg, config.ONCE_ONLY)
        groups = config.group_listeners(configs, bind_hosts)
        prepared = []
        for key, cfgs in groups.items():
            server = self.servers.get(key) or DnsServer(key[0], key[1], self.process)
            prepared.append((key, server, server.prepare(cfgs)))
        started: list[DnsServer] = []
        try:
            for key, server, _ in prepared:
                if key not in self.servers:
                    await server.start()
                    started.append(server)
            new_blocks = [b for _, _, rt in prepared for b in rt.blocks]
            await self.process.http.apply(route for b in new_blocks for route in b.hooks.http)
        except Exception:
            for server in started:
                await server.close()
            raise
        old_hooks = list(self.process.blocks)
        await self.process.run_hooks((h for b in old_hooks for h in b.shutdown), self._hook_error)
        for key, server, runtime in prepared:
            server.apply(runtime)
            self.servers[key] = server
        for key in [k for k in self.servers if k not in groups]:
            await self.servers.pop(key).close()
        self.process.corefile_blocks = blocks
        self.process.blocks = [b.hooks for b in new_blocks]
        self._set_plugin_enabled(new_blocks)
        await self.process.run_hooks(h for b in new_blocks for h in b.hooks.startup)
        return started

    def _set_plugin_enabled(self, blocks: list[Block]) -> None:
        gauge = self.process.metrics.plugin_enabled
        gauge.values.clear()
        for b in blocks:
            for zone in b.zones:
                for name in b.handlers:
                    gauge.set((b.server_label, zone, "", name), 1.0)

    def _hook_error(self, exc: BaseException) -> None:
        self.process.error(f"shutdown hook failed: {exc}")

    def announce(self, servers: Sequence[DnsServer]) -> None:
        for server in servers:
            host = f"[{server.host}]" if ":" in server.host else server.host
            print(f"lighthouse-dns: serving dns://{host}:{server.bound_port}", flush=True)
        for addr, site in self.process.http.sites.items():
            if addr not in self._announced_http:
                self._announced_http.add(addr)
                paths = ",".join(sorted(site.routes))
                print(f"lighthouse-dns: serving http://{site.bound[0]}:{site.bound[1]} {paths}", flush=True)

    async def reload(self) -> bool:
        """SIGUSR1 and the `reload` plugin: re-read the Corefile and restart gracefully."""
        async with self._lock:
            if self.process.shutting_down:
                return False
            self.process.info("Reloading")
            try:
                started = await self.apply(self.read_blocks())
            except Exception as exc:
                self.process.metrics.reload_failed.inc(())
                self.process.error(f"Corefile changed but reload failed: {exc}")
                return False
            self.announce(started)
            self.process.info("Reloading complete")
            return True

    def request_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.process.corefile_path = self.corefile_path
        self.process.load_corefile = self.read_blocks
        self.process.request_reload = self.request_reload
        async with self._lock:
            started = await self.apply(self.read_blocks())
            self.announce(started)

    async def shutdown(self, signame: str = "SIGTERM") -> None:
        """Graceful stop: not ready, lameduck (DNS still answering), close listeners, final hooks."""
        if self.process.shutting_down:
            return
        self.process.shutting_down = True
        self.process.info(f"{signame}: Shutting down servers then terminating")
        hooks: list[BlockHooks] = list(self.process.blocks)
        await self.process.run_hooks((h for b in hooks for h in b.final_shutdown), self._hook_error)
        await self.process.run_hooks((h for b in hooks for h in b.shutdown), self._hook_error)
        for server in self.servers.values():
            await server.close(grace=SHUTDOWN_GRACE)
        self.servers.clear()
        await self.process.http.close()
        self.stopped.set()

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.request_reload)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._graceful, sig.name)
        loop.add_signal_handler(signal.SIGQUIT, self._quit)

    def _graceful(self, name: str) -> None:
        task = asyncio.get_running_loop().create_task(self.shutdown(name))
        self._tasks.add(task)

    def _quit(self) -> None:
        self.process.info("SIGQUIT: Quitting process")
        sys.stdout.flush()
        os._exit(0)

    async def run(self) -> int:
        self.install_signals()
        try:
            await self.start()
        except Exception as exc:  # a configuration CoreDNS would refuse, a port in use, a failing start-up hook
            message = str(exc) if isinstance(exc, (SetupError, OSError, ValueError)) else f"{type(exc).__name__}: {exc}"
            print(f"lighthouse-dns: {message}", file=sys.stderr, flush=True)
            await self.process.http.close()
            for server in self.servers.values():
                await server.close()
            return 1
        await self.stopped.wait()
        return self.exit_code


def _event_loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.version:
        from submariner.lighthouse.dns.process import VERSION

        print(f"lighthouse-dns {VERSION}")
        return 0
    if args.plugins:
        for name in chain.ORDER:
            if chain.implemented(name):
                print(f"  dns.{name}")
        return 0
    path = args.conf
    if path is None and os.path.exists("Corefile"):
        path = "Corefile"
    process = ProcessState(kubeconfig=args.kubeconfig, cluster_id=args.cluster_id)
    process.freeze_gc = True
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        app = App(path, args.port, process)
        return runner.run(app.run())


if __name__ == "__main__":
    sys.exit(main())
