"""The plugin contract, as in CoreDNS: a setup that reads its directive, a handler that answers or passes on.

Every plugin module in `plugins/` exports `NAME`, `ONCE` (True when the directive may appear only once per
server block) and `setup(c: Controller) -> Wrapper | None`. A `Wrapper` takes the next handler and returns
this plugin's handler; setup-only plugins (health, ready, reload, bind, …) return None. The chain order is
CoreDNS's fixed `plugin.cfg` order (see `chain.ORDER`), never the Corefile order.

A handler returns a `Result`: either a written reply (`msg`), or just an rcode among SERVFAIL, REFUSED,
FORMERR, NOTIMP for the server to write an empty reply with. `Result.cache` lets the server keep the
rendered wire answer and serve later identical questions without running the chain, until the owning
`CacheScope` is invalidated (the plugin's data changed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode


class SetupError(Exception):
    """A Corefile problem found at start-up; the message names the plugin, file and line."""


@dataclass(slots=True)
class Directive:
    """One occurrence of a directive in a server block, after `import` and `{$ENV}` expansion."""

    name: str
    args: list[str]
    # Nested block lines `{ property args... }`, each a list of tokens (first = property name).
    block: list[list[str]]
    file: str
    line: int
    block_line_numbers: list[int] = field(default_factory=list)

    def error(self, message: str, line: int | None = None) -> SetupError:
        return SetupError(f"plugin/{self.name}: {self.file}:{line or self.line} - Error during parsing: {message}")


@dataclass(frozen=True, slots=True)
class ServerKey:
    """`[scheme://]zone[:port]` of a server block key, normalised (zone lower-case FQDN)."""

    scheme: str  # "dns"
    zone: str  # "clusterset.local."
    port: int


class CacheScope:
    """Validity of wire-cached answers produced by one plugin instance: `invalidate()` on data change."""

    __slots__ = ("generation", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.generation = 0

    def invalidate(self) -> None:
        self.generation += 1


@dataclass(slots=True)
class CachePolicy:
    """How the server may reuse a reply: until `scope` changes, at most `max_age` seconds.

    `variants` (optional) are further complete replies to hand out in turn on later hits (round robin
    across clusters, record rotation), so rotating answers need no rebuilding.
    """

    scope: CacheScope
    max_age: float = 3600.0
    variants: list[dns.message.Message] | None = None


@dataclass(slots=True)
class Request:
    """One query as the chain sees it (the first question only, as CoreDNS)."""

    msg: dns.message.Message
    wire: bytes
    remote: tuple[str, int]
    local: tuple[str, int]
    proto: str  # "udp" | "tcp"
    server: str  # metrics label, e.g. "dns://:53"
    zone: str  # the server block zone that matched, lower-case FQDN
    max_size: int  # reply size limit the client accepts (512 / EDNS size / 65535)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def qname(self) -> dns.name.Name:
        return self.msg.question[0].name

    @property
    def qtype(self) -> int:
        return int(self.msg.question[0].rdtype)

    @property
    def qclass(self) -> int:
        return int(self.msg.question[0].rdclass)

    @property
    def name_lower(self) -> str:
        """The qname as lower-case text with the trailing dot."""
        return self.qname.to_text().lower()

    @property
    def do(self) -> bool:
        return bool(self.msg.ednsflags & 0x8000)


@dataclass(slots=True)
class Result:
    rcode: int
    msg: dns.message.Message | None = None
    plugin: str = ""
    cache: CachePolicy | None = None
    error: str | None = None  # logged by the `errors` plugin


Handler = Callable[[Request], Awaitable[Result]]
Wrapper = Callable[[Handler], Handler]


class Controller:
    """What a plugin's setup sees: its directives in this block, the block's keys, and process-wide hooks.

    `process` is shared by every block of the process (metrics registry, health/readiness registries,
    start-up/shutdown hooks, the kube client factory); plugins keep per-process singletons there.
    """

    def __init__(self, directives: list[Directive], keys: list[ServerKey], server_label: str,
                 process: Any) -> None:
        self.directives = directives
        self.keys = keys
        self.server_label = server_label
        self.process = process

    @property
    def zones(self) -> list[str]:
        return [k.zone for k in self.keys]

    @property
    def port(self) -> int:
        return self.keys[0].port

#: Rcodes a handler may return without writing; the server then writes an empty reply.
SERVER_WRITTEN = frozenset({dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.FORMERR, dns.rcode.NOTIMP})


def reply_for(req: Request, rcode: int = dns.rcode.NOERROR, *, authoritative: bool = True) -> dns.message.Message:
    """An empty reply to `req` (question echoed, ID/opcode/RD/CD copied), ready for records."""
    reply = dns.message.make_response(req.msg, recursion_available=False)
    reply.set_rcode(dns.rcode.Rcode(rcode))
    if authoritative:
        reply.flags |= dns.flags.AA
    return reply


async def no_next(req: Request) -> Result:
    """What the end of a chain does: CoreDNS answers SERVFAIL with error "no next plugin found"."""
    return Result(dns.rcode.SERVFAIL, error="plugin/chain: no next plugin found")

