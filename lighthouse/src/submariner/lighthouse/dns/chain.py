"""The plugin order (CoreDNS `plugin.cfg`) and building one server block's handler chain from it.

The Corefile never decides the order: the first name in `ORDER` is the outermost wrapper (sees the query first
and the reply last). Every directive CoreDNS knows is in `ORDER`; one without a module in `plugins/` is a
start-up error, never silently ignored.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from submariner.lighthouse.dns.plugin import (
    BlockHooks,
    Controller,
    Directive,
    FastPathObserver,
    Handler,
    HitCounter,
    HitObserver,
    ServerKey,
    SetupError,
    Wrapper,
    no_next,
    no_next_after,
)

#: CoreDNS plugin.cfg order of the 1.11.3-1.12.x releases clusters run (1.12.2 shown in the spec; 1.11.3 is the
#: same list without `quic` and `multisocket`), so `cache` wraps `rewrite`. Submariner's build adds `lighthouse`
#: after `k8s_external`, before `kubernetes`, `file` and `forward`.
ORDER: list[str] = [
    "root", "metadata", "geoip", "cancel", "tls", "quic", "timeouts", "multisocket", "reload", "nsid", "bufsize",
    "bind", "debug", "trace", "ready", "health", "pprof", "prometheus", "errors", "log", "dnstap", "local",
    "dns64", "acl", "any", "chaos", "loadbalance", "tsig", "cache", "rewrite", "header", "dnssec", "autopath",
    "minimal", "template", "transfer", "hosts", "route53", "azure", "clouddns", "k8s_external", "lighthouse",
    "kubernetes", "file", "auto", "secondary", "etcd", "loop", "forward", "grpc", "erratic", "whoami", "on",
    "sign", "view",
]

#: Every directive the Corefile parser accepts (`corefile.parse(..., known_directives=KNOWN)`).
KNOWN: frozenset[str] = frozenset(ORDER)

#: Directive name → module implementing it. Loaded lazily: a block pays only for the plugins it uses.
REGISTRY: dict[str, str] = {name: f"submariner.lighthouse.dns.plugins.{name}" for name in ORDER}

#: Plugins that make a listener accept non-IN query classes (CoreDNS `classChaos`).
ANY_CLASS_PLUGINS = frozenset({"chaos", "forward", "proxy"})

_ONCE_MESSAGE = "this plugin can only be used once per Server Block"


def load(name: str, where: Directive | None = None) -> ModuleType:
    """The plugin module for directive `name`; a SetupError naming the line when we do not implement it."""
    location = f"{where.file}:{where.line} - " if where is not None else ""
    module_name = REGISTRY.get(name)
    if module_name is None:
        raise SetupError(f"{location}Error during parsing: Unknown directive '{name}'")
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise SetupError(f"{location}plugin {name} is not implemented by lighthouse-dns") from None


def implemented(name: str) -> bool:
    """Whether `plugins/<name>.py` exists (without importing it)."""
    import importlib.util

    module_name = REGISTRY.get(name)
    return module_name is not None and importlib.util.find_spec(module_name) is not None


@dataclass(slots=True)
class Block:
    """One server block ready to serve: its chain, zones and what its plugins registered."""

    config: Any  # config.BlockConfig
    keys: list[ServerKey]
    handler: Handler
    hooks: BlockHooks
    names: list[str]  # plugins present, in ORDER
    server_label: str
    # Plugins with a query handler (`coredns_plugin_enabled`); none (only health, ready, …): REFUSED.
    handlers: list[str] = field(default_factory=list)
    # Every handler may be started outside a task (each plugin module says `SYNC_SAFE = True`): the server
    # then runs the chain synchronously and only continues it in a task if a plugin really waits.
    sync: bool = False
    counters: tuple[HitCounter, ...] = ()
    eager: tuple[HitObserver, ...] = ()

    @property
    def chained(self) -> bool:
        return bool(self.handlers)

    @property
    def zones(self) -> list[str]:
        return [k.zone for k in self.keys]

    @property
    def observers(self) -> tuple[FastPathObserver, ...]:
        return tuple(self.hooks.observers)

    @property
    def any_class(self) -> bool:
        return bool(ANY_CLASS_PLUGINS.intersection(self.names)) or bool(self.hooks.classes)

    def zone_for(self, name_lower: str) -> str:
        """The longest of this block's zones containing `name_lower`, else "." (metrics and Request.zone)."""
        best = ""
        for zone in self.zones:
            if len(zone) > len(best) and (zone == "." or name_lower == zone or name_lower.endswith("." + zone)):
                best = zone
        return best or "."


def group_directives(directives: Sequence[Directive]) -> dict[str, list[Directive]]:
    grouped: dict[str, list[Directive]] = {}
    for d in directives:
        grouped.setdefault(d.name, []).append(d)
    return grouped


def default_server_label(keys: Sequence[ServerKey], host: str = "") -> str:
    """CoreDNS's `server` metric label: `dns://:53`, `dns://127.0.0.1:53`, `dns://[::1]:53`."""
    port = keys[0].port if keys else 53
    scheme = keys[0].scheme if keys else "dns"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def build_block(config: Any, process: Any, *, server_label: str | None = None, listen_host: str = "") -> Block:
    """Run every present plugin's setup in ORDER and wrap the handlers from innermost to outermost."""
    keys: list[ServerKey] = list(config.keys)
    label = server_label or default_server_label(keys, listen_host)
    grouped = group_directives(config.directives)
    for name, found in grouped.items():
        if name not in KNOWN:
            raise SetupError(f"{found[0].file}:{found[0].line} - Error during parsing: Unknown directive '{name}'")
    hooks = BlockHooks()
    wrappers: list[Wrapper] = []
    names: list[str] = []
    handlers: list[str] = []
    sync = True
    for name in ORDER:
        present = grouped.get(name)
        if not present:
            continue
        found = present
        module = load(name, found[0])
        if getattr(module, "ONCE", False) and len(found) > 1:
            raise found[1].error(_ONCE_MESSAGE)
        controller = Controller(found, keys, label, process, block=hooks, listen_host=listen_host)
        try:
            wrapper = module.setup(controller)
        except SetupError:
            raise
        except Exception as exc:
            raise found[0].error(f"{type(exc).__name__}: {exc}") from exc
        names.append(name)
        if wrapper is not None:
            wrappers.append(wrapper)
            handlers.append(name)
            sync = sync and bool(getattr(module, "SYNC_SAFE", False))
    handler: Handler = no_next_after(handlers[-1]) if handlers else no_next
    for wrapper in reversed(wrappers):
        handler = wrapper(handler)
    return Block(config=config, keys=keys, handler=handler, hooks=hooks, names=names, server_label=label,
                 handlers=handlers, sync=sync, counters=tuple(hooks.counters), eager=tuple(hooks.eager))


def build_chain(config: Any, process: Any) -> Handler:
    """The handler of one server block (see `build_block` for the hooks and metadata as well)."""
    return build_block(config, process).handler
