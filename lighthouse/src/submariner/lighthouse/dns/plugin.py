"""The plugin contract, as in CoreDNS: a setup that reads its directive, a handler that answers or passes on.

Every plugin module in `plugins/` exports `NAME`, `ONCE` (True when the directive may appear only once per
server block), optionally `SYNC_SAFE` (True when its handler may be started outside an asyncio task: it uses
nothing that needs the current task, such as `asyncio.timeout`; when every handler of a block says so, the
server runs the chain synchronously and continues it in a task only if something really waits) and
`setup(c: Controller) -> Wrapper | None`. A `Wrapper` takes the next handler and returns
this plugin's handler; setup-only plugins (health, ready, reload, bind, …) return None. The chain order is
CoreDNS's fixed `plugin.cfg` order (see `chain.ORDER`), never the Corefile order.

A handler returns a `Result`: either a written reply (`msg`), or just an rcode among SERVFAIL, REFUSED,
FORMERR, NOTIMP for the server to write an empty reply with. `Result.cache` lets the server keep the
rendered wire answer and serve later identical questions without running the chain, until the owning
`CacheScope` is invalidated (the plugin's data changed). A plugin whose answer depends on anything but the
question (client address, time, a query counter) must leave `cache` unset, and a wrapping plugin that changes
an inner answer it cannot reproduce must clear it. Hits never run the chain: plugins that must see every query
register a `FastPathObserver` with `Controller.add_observer`, of one of two kinds:

- a `HitCounter` (prometheus, lighthouse's query metric) is never called on the hot path. Each cache entry
  counts its hits (one integer increment per hit); the counter's `fold` adds an entry's hits since the last
  fold to its metrics, at scrape time (the metrics collector folds every live entry first) and when the entry
  leaves the cache (eviction, invalidation, reload), so counts stay exact. Per-reply data a counter needs
  (lighthouse's metric labels per rotated variant) travels in `CachePolicy.hit_tags`.
- a `HitObserver` (log) has `on_hit` called for every hit, synchronously, with the client's address and ID.
  Blocks with one pay for it on their hits; blocks without keep the counting-only hot path.

A `Result` with no `msg` and an rcode outside `SERVER_WRITTEN` means "already handled": nothing is sent
(CoreDNS's "return 0 without writing", used by `erratic` to drop queries).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset


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

    def arg_error(self, after: str | None = None, line: int | None = None) -> SetupError:
        """Caddy's ArgErr: wrong argument count, naming the last token read (default: the last argument)."""
        token = after if after is not None else (self.args[-1] if self.args else self.name)
        return self.error(f"Wrong argument count or unexpected line ending after '{token}'", line)

    def block_line(self, index: int) -> int:
        """The file line of nested block line `index` (the directive's line when unknown)."""
        if 0 <= index < len(self.block_line_numbers):
            return self.block_line_numbers[index]
        return self.line


@dataclass(frozen=True, slots=True)
class ServerKey:
    """`[scheme://]zone[:port]` of a server block key, normalised (zone lower-case FQDN)."""

    scheme: str  # "dns"
    zone: str  # "clusterset.local."
    port: int


class ScopeToken:
    """One generation of a `CacheScope`: cache entries hold it, and it dies when the scope is invalidated.

    The hot path checks `entry.token.live`, two attribute loads, instead of comparing generations.
    """

    __slots__ = ("live",)

    def __init__(self) -> None:
        self.live = True


class CacheScope:
    """Validity of wire-cached answers produced by one plugin instance: `invalidate()` on data change."""

    __slots__ = ("generation", "name", "token")

    def __init__(self, name: str) -> None:
        self.name = name
        self.generation = 0
        self.token = ScopeToken()

    def invalidate(self) -> None:
        self.generation += 1
        self.token.live = False
        self.token = ScopeToken()


class RetirableScope(CacheScope):
    """A CacheScope that can be retired for good (a data source replaced wholesale): a retired scope reports a
    new generation on every read, so nothing cached under it is ever served again.

    The server stores `scope.generation` with an answer and serves it while it still matches; an answer
    built from data that changed before the server stored it would otherwise look valid forever.
    """

    __slots__ = ("_gen", "_retired")

    def __init__(self, name: str) -> None:
        self._gen = 0
        self._retired = False
        super().__init__(name)

    @property
    def generation(self) -> int:
        if self._retired:
            self._gen += 1
        return self._gen

    @generation.setter
    def generation(self, value: int) -> None:
        self._gen = value

    def retire(self) -> None:
        self._retired = True


@dataclass(slots=True)
class CachePolicy:
    """How the server may reuse a reply: until `scope` changes, at most `max_age` seconds.

    `variants` (optional) are further complete replies to hand out in turn on later hits (round robin
    across clusters, record rotation), so rotating answers need no rebuilding.

    `hit_tags` (optional) maps a `HitCounter` to per-reply data for it, aligned with `[msg, *variants]`
    (index j of the reply served is j modulo the list's length): what that counter needs to account for a hit
    of that reply (lighthouse: the metric labels of the records in it). A plugin that rebuilds the variant
    list must rebuild these lists the same way (loadbalance, rewrite).
    """

    scope: CacheScope
    max_age: float = 3600.0
    variants: list[dns.message.Message] | None = None
    # The scope's generation when the answer was computed: a change that lands between computing and
    # storing the answer (informers run on other threads) must make it stale, not fresh.
    generation: int = -1
    hit_tags: Mapping[Any, Sequence[Any]] | None = None

    def __post_init__(self) -> None:
        if self.generation < 0:
            self.generation = self.scope.generation


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
    # Called by the server with the final wire reply (b"" when nothing was sent); see `after_reply`.
    hooks: list[ReplyHook] | None = None
    start: float = 0.0  # time.perf_counter() when the query arrived
    # `name_lower`, when whoever built the request already knew it (the server does); "" = computed on use
    lowered: str = ""

    def after_reply(self, hook: ReplyHook) -> None:
        """Run `hook(req, result, wire)` once the server has rendered (compressed, truncated) and sent the reply.

        This is CoreDNS's response-writer wrapping for plugins that only observe (log, prometheus).
        """
        if self.hooks is None:
            self.hooks = [hook]
        else:
            self.hooks.append(hook)

    @property
    def family(self) -> int:
        """1 for an IPv4 client, 2 for IPv6 (the `family` metric label)."""
        return 2 if ":" in self.remote[0] else 1

    @property
    def opcode(self) -> int:
        return int(self.msg.opcode())

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
        if not self.lowered:
            self.lowered = name_text(self.qname)
        return self.lowered

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
ReplyHook = Callable[[Request, Result, bytes], None]
Hook = Callable[[], Any]  # start-up / shutdown callable; may return an awaitable
HttpHandler = Callable[[], "tuple[int, str, str]"]  # -> (status, body, content type)


class AnswerInfo:
    """Static facts about cached answers, shared by every entry with the same facts (what observers need
    besides the bytes and the question name, which is in the entry's key).

    The server interns these per (server, zone, plugin, qtype, rcode, …): a cache of 50,000 answers holds a
    handful of them. `counters` and `eager` are the block's `HitCounter`s and `HitObserver`s.
    """

    __slots__ = ("bufsize", "counters", "do", "eager", "local", "memo", "name", "opcode", "plugin", "qclass",
                 "qtype", "rcode", "server", "zone")

    def __init__(self, *, qtype: int, qclass: int, rcode: int, plugin: str, zone: str, server: str,
                 do: bool, bufsize: int, opcode: int = 0, local: str = "", name: str = "",
                 counters: tuple[HitCounter, ...] = (), eager: tuple[HitObserver, ...] = ()) -> None:
        self.name = name  # lower-case FQDN text when the info belongs to one name only ("" when shared)
        self.qtype = qtype
        self.qclass = qclass
        self.rcode = rcode
        self.plugin = plugin
        self.zone = zone
        self.server = server
        self.do = do
        self.bufsize = bufsize
        self.opcode = opcode
        self.local = local  # the listener's address the query arrived on
        self.counters = counters
        self.eager = eager
        self.memo: dict[Any, Any] = {}  # observers keep values precomputed per info here


class Hit:
    """One query answered from the wire cache, as seen by a `HitObserver`."""

    __slots__ = ("entry", "info", "proto", "query", "remote", "reply", "start")

    def __init__(self, info: AnswerInfo, query: bytes, reply: bytes | bytearray, remote: tuple[str, int],
                 proto: str, start: float, entry: Any = None) -> None:
        self.info = info
        self.query = query
        self.reply = reply
        self.remote = remote
        self.proto = proto
        self.start = start
        self.entry = entry  # the answers.CacheEntry (observers may keep per-answer values in `entry.memo`)

    @property
    def id(self) -> int:
        return (self.query[0] << 8) | self.query[1]

    @property
    def family(self) -> int:
        return 2 if ":" in self.remote[0] else 1


class Tally:
    """An entry's hits since it was last folded, as handed to every `HitCounter.fold` (reused: do not keep it).

    `counts[j]` is the number of hits that were served reply j (`[msg, *variants]` of the miss; the miss
    itself is not included: the reply hooks saw it), `v6` how many of all those hits came from IPv6 clients,
    `sizes[j]` the wire size of reply j, `query_size` the size of the query (fixed by the cache key),
    `seconds` the time the server spent on these hits (it measures the time spent on hits once per batch of
    datagrams; each fold gets its hits' share of what was measured since the previous scrape), `tags` this
    counter's `CachePolicy.hit_tags` list (None without).
    """

    __slots__ = ("counts", "info", "proto", "query_size", "seconds", "sizes", "tags", "total", "v6")

    def __init__(self) -> None:
        self.info: AnswerInfo | None = None
        self.proto = "udp"
        self.counts: list[int] = []
        self.total = 0
        self.v6 = 0
        self.sizes: tuple[int, ...] = ()
        self.query_size = 0
        self.seconds = 0.0
        self.tags: Sequence[Any] | None = None


class HitCounter(Protocol):
    """Accounts for cache hits lazily: `fold` gets an entry's hits since its last fold (see `Tally`).

    Called at scrape time and when an entry leaves the cache, never on the hot path; runs on the event loop.
    """

    def fold(self, tally: Tally) -> None: ...


class HitObserver(Protocol):
    """Sees every cache hit, synchronously, on the hot path (a log line per query): keep `on_hit` cheap."""

    def on_hit(self, hit: Hit) -> None: ...


FastPathObserver = HitCounter | HitObserver


@dataclass(slots=True)
class HttpRoute:
    """An HTTP endpoint a plugin serves (health, ready, metrics); bound when its configuration starts."""

    addr: str  # "host:port" as written in the Corefile, e.g. ":8080", "localhost:9153"
    path: str
    handler: HttpHandler
    plugin: str


@dataclass(slots=True)
class BlockHooks:
    """What the plugins of one server block registered at setup; the server wires it in when the block starts."""

    observers: list[FastPathObserver] = field(default_factory=list)
    counters: list[HitCounter] = field(default_factory=list)
    eager: list[HitObserver] = field(default_factory=list)
    ready: list[tuple[str, Callable[[], bool]]] = field(default_factory=list)
    startup: list[Hook] = field(default_factory=list)
    shutdown: list[Hook] = field(default_factory=list)
    final_shutdown: list[Hook] = field(default_factory=list)
    http: list[HttpRoute] = field(default_factory=list)
    classes: set[str] = field(default_factory=set)  # extra query classes accepted ("CH" for chaos/forward)


class Controller:
    """What a plugin's setup sees: its directives in this block, the block's keys, and process-wide hooks.

    `process` is shared by every block of the process (metrics registry, health/readiness registries,
    start-up/shutdown hooks, the kube client factory); plugins keep per-process singletons there.
    """

    def __init__(self, directives: list[Directive], keys: list[ServerKey], server_label: str,
                 process: Any, *, block: BlockHooks | None = None, listen_host: str = "") -> None:
        self.directives = directives
        self.keys = keys
        self.server_label = server_label
        self.process = process
        self.block = block if block is not None else BlockHooks()
        self.listen_host = listen_host  # bind address of the listener ("" = all addresses)

    def add_observer(self, observer: FastPathObserver) -> None:
        """Account for the cached answers this block serves: `fold` (a `HitCounter`, lazily) and/or `on_hit`
        (a `HitObserver`, on every hit)."""
        self.block.observers.append(observer)
        if callable(getattr(observer, "fold", None)):
            self.block.counters.append(observer)  # type: ignore[arg-type]
        if callable(getattr(observer, "on_hit", None)):
            self.block.eager.append(observer)  # type: ignore[arg-type]

    def register_ready(self, name: str, ready: Callable[[], bool]) -> None:
        """A readiness provider, reported by `ready` when that plugin is enabled in this block."""
        self.block.ready.append((name, ready))

    def on_startup(self, hook: Hook) -> None:
        """Run when this configuration starts serving (also after a reload); never start work in setup."""
        self.block.startup.append(hook)

    def on_shutdown(self, hook: Hook) -> None:
        """Run when this configuration stops (reload or exit)."""
        self.block.shutdown.append(hook)

    def on_final_shutdown(self, hook: Hook) -> None:
        """Run once when the process shuts down gracefully (SIGTERM), before the listeners close."""
        self.block.final_shutdown.append(hook)

    def add_http(self, addr: str, path: str, handler: HttpHandler, plugin: str) -> None:
        self.block.http.append(HttpRoute(addr, path, handler, plugin))

    @property
    def zones(self) -> list[str]:
        return [k.zone for k in self.keys]

    @property
    def port(self) -> int:
        return self.keys[0].port

    def directive(self) -> Directive:
        """The first occurrence (for plugins that may appear once)."""
        return self.directives[0]

_PLAIN_NAME = re.compile(rb"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


def name_text(name: dns.name.Name) -> str:
    """`name.to_text().lower()`, without dnspython's escaping machinery for the names that need none."""
    labels = name.labels
    if len(labels) > 1 and not labels[-1]:
        joined = b".".join(labels[:-1])
        if _PLAIN_NAME.fullmatch(joined) and joined.count(b".") == len(labels) - 2:
            return joined.decode("ascii").lower() + "."
    return name.to_text().lower()


#: Rcodes a handler may return without writing; the server then writes an empty reply.
SERVER_WRITTEN = frozenset({dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.FORMERR, dns.rcode.NOTIMP})


def reply_for(req: Request, rcode: int = dns.rcode.NOERROR, *, authoritative: bool = True) -> dns.message.Message:
    """An empty reply to `req` (question echoed, ID/opcode/RD/CD copied), ready for records."""
    # CoreDNS's SetReply, built directly (dnspython's make_response also builds an OPT we would drop: the server
    # echoes the client's, spec §3).
    query = req.msg
    qflags = int(query.flags)
    flags = 0x8000 | (qflags & 0x7800)  # QR, opcode
    if qflags & 0x7800 == 0:  # QUERY: RD and CD copied
        flags |= qflags & 0x0110
    if authoritative:
        flags |= 0x0400
    reply = dns.message.QueryMessage(id=query.id)
    reply.flags = dns.flags.Flag(flags | (rcode & 0x0F))
    reply.question = list(query.question)
    if rcode > 0x0F:
        reply.set_rcode(dns.rcode.Rcode(rcode))
    return reply


class WireReply(dns.message.QueryMessage):
    """A reply its plugin built directly in wire form (question copied from the query, records encoded by hand).

    It is a complete `dns.message.Message`: the first time anything reads its sections (a wrapping plugin, a
    test, `to_text`), they are parsed from the wire, and from then on the message is rendered by dnspython
    from those sections, so changes made to them count. Until then `intact_wire()` gives the bytes as built,
    with the current `id` and `flags` patched in (a plugin may set the rcode or a flag without reading the
    records), and the server sends those without rendering anything.
    """

    def __init__(self, wire: bytes) -> None:
        super().__init__(id=(wire[0] << 8) | wire[1])
        self.flags = dns.flags.Flag((wire[2] << 8) | wire[3])
        self._prerendered = wire
        self._parsed = False  # dnspython's __init__ assigned empty sections: not read yet

    @property  # type: ignore[override]
    def sections(self) -> list[list[dns.rrset.RRset]]:
        if not self._parsed:
            self._parsed = True
            parsed = dns.message.from_wire(self._prerendered)
            self._sections = parsed.sections
            self.index = parsed.index
        return self._sections

    @sections.setter
    def sections(self, value: list[list[dns.rrset.RRset]]) -> None:
        self._sections = value
        self._parsed = True

    def intact_wire(self) -> bytes | None:
        """The wire as built (current ID and flags), or None once the sections were read or an OPT/TSIG added."""
        if self._parsed or self.opt is not None or self.tsig is not None:
            return None
        wire = self._prerendered
        flags = int(self.flags)
        return bytes((self.id >> 8, self.id & 0xFF, flags >> 8 & 0xFF, flags & 0xFF)) + wire[4:]

    def to_wire(self, *args: Any, **kw: Any) -> bytes:
        wire = self.intact_wire() if not args and not kw else None
        return wire if wire is not None else super().to_wire(*args, **kw)


async def no_next(req: Request) -> Result:
    """What the end of a chain does: CoreDNS answers SERVFAIL with error "no next plugin found"."""
    return Result(dns.rcode.SERVFAIL, error="plugin/chain: no next plugin found")


def no_next_after(name: str) -> Handler:
    """`no_next` as seen from plugin `name` (CoreDNS's NextOrFailure names the plugin that had no next)."""
    error = f"plugin/{name}: no next plugin found"

    async def end_of_chain(req: Request) -> Result:
        return Result(dns.rcode.SERVFAIL, error=error)

    return end_of_chain



#: EDNS0 option codes echoed from the query (CoreDNS SupportedOption): NSID, EXPIRE, COOKIE, TCP-KEEPALIVE,
#: PADDING. Plugins that add their own option (rewrite's EDNS0_LOCAL) call `register_edns_option`.
SUPPORTED_EDNS_OPTIONS: set[int] = {3, 9, 10, 11, 12}


def register_edns_option(code: int) -> None:
    SUPPORTED_EDNS_OPTIONS.add(code)


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration ("300ms", "1m30s", "2h"), in seconds; ValueError names the bad text."""
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            if m is None and re.match(r"[0-9.]+$", s[pos:]):
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Go's Duration.String(): "5m0s", "30s", "100ms", "1h0m0s", "0s"."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    neg = ns < 0
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("\u00b5s", 1_000), ("ns", 1)):
            if ns >= size:
                text = _trim(ns / size) + unit
                break
    else:
        h, rem = divmod(ns, 3_600_000_000_000)
        m, rem = divmod(rem, 60_000_000_000)
        text = _trim(rem / 1e9) + "s"
        if h or m:
            text = f"{m}m" + text
        if h:
            text = f"{h}h" + text
    return "-" + text if neg else text


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def split_host_port(addr: str) -> tuple[str, int]:
    """Go's net.SplitHostPort for listen addresses (":8080", "localhost:9153", "[::1]:8181")."""
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            raise ValueError(f"address {addr}: missing ']' in address")
        host, rest = addr[1:end], addr[end + 1:]
        if not rest.startswith(":"):
            raise ValueError(f"address {addr}: missing port in address")
        port_text = rest[1:]
    else:
        if ":" not in addr:
            raise ValueError(f"address {addr}: missing port in address")
        host, port_text = addr.rsplit(":", 1)
        if ":" in host:
            raise ValueError(f"address {addr}: too many colons in address")
    if port_text.isdigit() and int(port_text) <= 65535:
        return host, int(port_text)
    import socket

    try:
        return host, socket.getservbyname(port_text, "tcp")
    except OSError:
        raise ValueError(f"address {addr}: unknown port") from None
