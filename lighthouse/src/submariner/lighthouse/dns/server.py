"""DNS listeners: one `DnsServer` per (bind host, port), UDP and TCP, in front of the blocks' plugin chains.

A query first meets the answer cache (`answers`): on a hit the reply is the query's ID and stored bytes, sent
synchronously from the socket's reader callback, with no dnspython, no task and no per-hit metric work (each
cache entry counts its hits; metrics fold them in at scrape time, see `plugin.HitCounter`). The reader drains
up to `READ_BATCH` datagrams per wake-up with non-blocking `recvfrom` and answers with `sendto` on the socket.
A miss goes through CoreDNS's server checks (spec §2.3), then the chain of the selected block: driven
synchronously when every plugin of the block allows it (`SYNC_SAFE`) and continued in a task only if a plugin
really waits; the reply is rendered, fitted to the client (OPT echo, truncation) and, when every plugin allowed
it, stored for the next identical question.

Nothing a client sends may raise out of the loop: unreadable headers are dropped, unparsable messages get
FORMERR, a failing plugin SERVFAIL (counted in `coredns_panics_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import time
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import Any

import dns.exception
import dns.message

from submariner.lighthouse.dns import answers
from submariner.lighthouse.dns.answers import AnswerCache, CacheEntry
from submariner.lighthouse.dns.chain import Block, build_block
from submariner.lighthouse.dns.plugin import (
    SERVER_WRITTEN,
    SUPPORTED_EDNS_OPTIONS,
    AnswerInfo,
    Hit,
    Request,
    Result,
    WireReply,
    name_text,
)
from submariner.lighthouse.dns.process import ProcessState, ReportKeys

_COUNTS = struct.Struct("!HHHH")
_OPTION_HEAD = struct.Struct("!HH")
_QTAIL = struct.Struct("!HH")
_FORMERR, _SERVFAIL, _NOTIMP, _REFUSED = 1, 2, 4, 5
_IN = 1
_monotonic = time.monotonic
_perf = time.perf_counter

Sender = Callable[[bytes], None]
Echo = tuple[int, bool, bytes] | None  # the query's OPT: (UDP size, DO, supported options in wire form)

#: TCP timeouts (CoreDNS defaults, `timeouts` plugin not implemented): first read, idle between queries.
READ_TIMEOUT = 3.0
IDLE_TIMEOUT = 10.0
MAX_TCP_BACKLOG = 1 << 20  # bytes queued for a client that does not read: close it
#: Datagrams the UDP reader handles per wake-up before it lets the loop run other callbacks.
READ_BATCH = 64
MAX_DATAGRAM = 65535
#: UDP replies kept while the socket's send buffer is full (then dropped: the client retries).
MAX_UDP_BACKLOG = 4096


def client_address(addr: Any) -> tuple[str, int]:
    """(host, port) of a peer, with IPv4-mapped IPv6 (dual-stack socket) shown as IPv4, as Go does."""
    host = str(addr[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(addr[1])


class Runtime:
    """One configuration of a listener: blocks, zone index and the answer caches that belong to them."""

    def __init__(self, blocks: list[Block], port: int, cache_size: int) -> None:
        from submariner.lighthouse.dns.config import ZoneIndex

        self.blocks = blocks
        self.by_config: dict[int, Block] = {id(b.config): b for b in blocks}
        chained = {id(b.config) for b in blocks if b.chained}
        self.index = ZoneIndex([b.config for b in blocks], port, has_chain=lambda cfg: id(cfg) in chained)
        self.any_class = any(b.any_class for b in blocks)
        self.udp_cache = AnswerCache(cache_size, proto="udp")
        self.tcp_cache = AnswerCache(cache_size, proto="tcp")
        self.eager = any(b.eager for b in blocks)  # some block has a HitObserver (log): the general reader
        self.infos: dict[tuple[Any, ...], AnswerInfo] = {}

    def info(self, block: Block, req: Request, rcode: int, plugin: str) -> AnswerInfo:
        """The shared AnswerInfo of an answer to `req` (interned: a handful per block)."""
        key = (id(block), req.zone, req.server, req.qtype, req.qclass, rcode, plugin, req.do, req.max_size,
               req.opcode, req.local[0])
        info = self.infos.get(key)
        if info is None:
            if len(self.infos) >= 4096:
                self.infos.clear()
            info = self.infos[key] = AnswerInfo(qtype=req.qtype, qclass=req.qclass, rcode=rcode, plugin=plugin,
                                                zone=req.zone, server=req.server, do=req.do, bufsize=req.max_size,
                                                opcode=req.opcode, local=req.local[0], counters=block.counters,
                                                eager=block.eager)
        return info

    def fold(self) -> None:
        self.udp_cache.fold_all()
        self.tcp_cache.fold_all()


class DnsServer:
    """UDP+TCP listener for one (host, port) and the server blocks grouped on it."""

    def __init__(self, host: str, port: int, process: ProcessState, *, cache_size: int = 100_000,
                 max_inflight: int = 10_000) -> None:
        self.host = host
        self.port = port  # as configured (0 = ephemeral)
        self.bound_port = port
        self.process = process
        self.cache_size = cache_size
        self.max_inflight = max_inflight
        shown = f"[{host}]" if ":" in host else host
        self.server_label = f"dns://{shown}:{port}"
        self.runtime: Runtime | None = None
        self.local: tuple[str, int] = (host, port)
        self._udp: asyncio.DatagramTransport | None = None  # only when the loop cannot watch a socket
        self._sock: socket.socket | None = None  # the UDP socket the reader drains
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._conns: set[_TcpConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sendto: Callable[[bytes | bytearray, Any], None] = _discard
        self._recvfrom: Callable[[int], tuple[bytes, Any]] | None = None
        self._sock_sendto: Callable[[bytes | bytearray, Any], int] = _discard_count
        self._backlog: deque[tuple[bytes, Any]] = deque()
        self._writing = False
        self._family = socket.AF_INET
        self._reader: Callable[[], None] = self._read_general
        self.internal_errors = 0  # failures of the server's own code (not plugins): a bug if ever non-zero
        self.udp_dropped = 0  # replies dropped because the socket's send buffer stayed full
        hit_sources = getattr(process, "hit_sources", None)
        if hit_sources is not None:
            hit_sources.add(self)  # the metrics collector folds our caches' hits before every scrape

    # -- configuration -----------------------------------------------------------------------------------
    def prepare(self, configs: Iterable[Any]) -> Runtime:
        """Build every block's chain (runs plugin setups; raises SetupError) without touching the live one."""
        blocks = [build_block(cfg, self.process, server_label=self.server_label, listen_host=self.host)
                  for cfg in configs]
        return Runtime(blocks, self.port, self.cache_size)

    def apply(self, runtime: Runtime) -> None:
        old = self.runtime
        for cache in (runtime.udp_cache, runtime.tcp_cache):
            cache.on_error = self.process.error
        self.runtime = runtime
        self._choose_reader()
        if old is not None and old is not runtime:
            old.udp_cache.clear()  # folds their hits into the metrics first
            old.tcp_cache.clear()

    def fold(self) -> None:
        """Fold the hits of every cached answer into the metrics (the collector calls this before a scrape)."""
        if self.runtime is not None:
            self.runtime.fold()

    def _choose_reader(self) -> None:
        rt = self.runtime
        fast = rt is not None and not rt.eager and self._family == socket.AF_INET and self._sock is not None
        self._reader = self._read_fast if fast else self._read_general

    def configure(self, configs: Iterable[Any]) -> Runtime:
        runtime = self.prepare(configs)
        self.apply(runtime)
        return runtime

    @property
    def blocks(self) -> list[Block]:
        return self.runtime.blocks if self.runtime else []

    def set_udp_sender(self, sendto: Callable[[bytes | bytearray, Any], None]) -> None:
        """Where UDP replies go (the transport's `sendto`; tests and the fuzzer capture them)."""
        self._sendto = sendto

    # -- sockets -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind UDP and TCP on the same port (for port 0: the same ephemeral port for both)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        udp, tcp = _bind_pair(self.host, self.port)
        self._family = udp.family
        self.bound_port = int(udp.getsockname()[1])
        self.local = (self.host or ("::" if udp.family == socket.AF_INET6 else "0.0.0.0"), self.bound_port)
        try:
            loop.add_reader(udp.fileno(), self._readable)
        except NotImplementedError:  # a loop without readiness callbacks (Windows' proactor): a protocol
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp)
            self._udp = transport
            self._sendto = transport.sendto
        else:
            self._sock = udp
            self._recvfrom = udp.recvfrom
            self._sock_sendto = udp.sendto
            self._sendto = self._send_udp
        self._choose_reader()
        self._tcp = await loop.create_server(lambda: _TcpConnection(self), sock=tcp, backlog=1024)

    async def close(self, grace: float = 0.0) -> None:
        if self._tcp is not None:
            self._tcp.close()
        if grace > 0 and self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for conn in list(self._conns):
            conn.close()
        if self._udp is not None:
            self._udp.close()
        if self._sock is not None:
            sock, self._sock = self._sock, None
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
                if self._writing:
                    self._loop.remove_writer(sock.fileno())
            self._writing = False
            self._backlog.clear()
            sock.close()
        self._sendto = _discard
        self._sock_sendto = _discard_count
        self._recvfrom = None
        self._choose_reader()
        if self._tcp is not None:
            await self._tcp.wait_closed()
        self._tcp = None
        self._udp = None
        self.fold()

    # -- the hot path --------------------------------------------------------------------------------------
    def _readable(self) -> None:
        try:
            self._reader()
        except Exception as exc:  # a bug here must not unregister the reader or stop the loop
            self.internal_errors += 1
            self.process.error(f'Recovered from panic in server: "{self.server_label}" {exc!r}')

    def _read_fast(self) -> None:
        """Drain the IPv4 socket: hits answered inline (raw-key lookup, count, send), the rest by `handle_datagram`.

        Used when no block has a HitObserver. The time spent on hits is measured once per batch.
        """
        rt = self.runtime
        recv = self._recvfrom
        if rt is None or recv is None:
            return
        cache = rt.udp_cache
        get = cache.entries.get
        send = self._sock_sendto
        now = _monotonic()
        t0 = _perf()
        other = 0.0
        hits = 0
        for _ in range(READ_BATCH):
            try:
                data, addr = recv(MAX_DATAGRAM)
            except OSError:  # drained (EAGAIN), or an error queued on the socket
                break
            entry = get(data[2:])
            if entry is not None and entry.token.live and entry.expires > now:
                h = entry.hits + 1
                entry.hits = h
                ring = entry.ring
                out = data[:2] + (entry.body if ring is None else ring[h % len(ring)])
                try:
                    send(out, addr)
                except OSError as exc:
                    self._send_failed(out, addr, exc)
                hits += 1
                continue
            t = _perf()
            self.handle_datagram(data, addr)
            other += _perf() - t
        if hits:
            cache.hit_time += _perf() - t0 - other
            cache.hit_count += hits

    def _read_general(self) -> None:
        """`_read_fast` for IPv6 (dual-stack) sockets and for blocks with HitObservers (log)."""
        rt = self.runtime
        recv = self._recvfrom
        if rt is None or recv is None:
            return
        cache = rt.udp_cache
        get = cache.entries.get
        send = self._sock_sendto
        eager = rt.eager
        v6 = self._family == socket.AF_INET6
        now = _monotonic()
        t0 = _perf()
        other = 0.0
        hits = 0
        for _ in range(READ_BATCH):
            try:
                data, addr = recv(MAX_DATAGRAM)
            except OSError:
                break
            start = _perf() if eager else 0.0
            entry = get(data[2:])
            if entry is not None and entry.token.live and entry.expires > now:
                h = entry.hits + 1
                entry.hits = h
                if v6 and addr[0][:7] != "::ffff:":
                    entry.hits6 += 1
                ring = entry.ring
                out = data[:2] + (entry.body if ring is None else ring[h % len(ring)])
                try:
                    send(out, addr)
                except OSError as exc:
                    self._send_failed(out, addr, exc)
                hits += 1
                if eager and entry.info.eager:
                    t = _perf()
                    self._observe(entry, data, out, addr, "udp", start)
                    other += _perf() - t
                continue
            t = _perf()
            self.handle_datagram(data, addr)
            other += _perf() - t
        if hits:
            cache.hit_time += _perf() - t0 - other
            cache.hit_count += hits

    def handle_datagram(self, data: bytes, addr: Any) -> None:
        """One UDP query: answer from the cache synchronously, else hand it to the slow path."""
        rt = self.runtime
        if rt is None:
            return
        start = _perf()
        cache = rt.udp_cache
        found = cache.lookup(data, _is_v6(addr))
        if found is None:
            self._slow(data, addr, "udp", None)
            return
        out, entry = found
        try:
            self._sendto(out, addr)
        except Exception:  # a closed transport (shutdown): nothing to answer on
            return
        cache.hit_time += _perf() - start
        cache.hit_count += 1
        if entry.info.eager:
            self._observe(entry, data, out, addr, "udp", start)

    def _send_udp(self, data: bytes | bytearray, addr: Any) -> None:
        """A reply on the UDP socket (the slow path's sender)."""
        try:
            self._sock_sendto(data, addr)
        except OSError as exc:
            self._send_failed(bytes(data), addr, exc)

    def _send_failed(self, data: bytes, addr: Any, exc: OSError) -> None:
        """A full send buffer queues the reply until the socket is writable; other errors drop it (the client
        is unreachable, the address is unusable)."""
        if not isinstance(exc, (BlockingIOError, InterruptedError)) or self._sock is None or self._loop is None:
            return
        if len(self._backlog) >= MAX_UDP_BACKLOG:
            self.udp_dropped += 1
            return
        self._backlog.append((data, addr))
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._sock.fileno(), self._flush)

    def _flush(self) -> None:
        backlog = self._backlog
        send = self._sock_sendto
        while backlog:
            data, addr = backlog[0]
            try:
                send(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            backlog.popleft()
        self._writing = False
        if self._sock is not None and self._loop is not None:
            self._loop.remove_writer(self._sock.fileno())

    def handle_stream(self, data: bytes, addr: Any, send: Sender) -> None:
        """One TCP query (already unframed); `send` frames and writes the reply."""
        rt = self.runtime
        if rt is None:
            return
        start = _perf()
        cache = rt.tcp_cache
        found = cache.lookup(data, _is_v6(addr))
        if found is not None:
            out, entry = found
            send(out)
            cache.hit_time += _perf() - start
            cache.hit_count += 1
            if entry.info.eager:
                self._observe(entry, data, out, addr, "tcp", start)
            return
        self._slow(data, addr, "tcp", send)

    def _observe(self, entry: CacheEntry, query: bytes, reply: bytes | bytearray, addr: Any, proto: str,
                 start: float) -> None:
        hit = Hit(entry.info, query, reply, client_address(addr), proto, start, entry)
        for observer in entry.info.eager:
            try:
                observer.on_hit(hit)
            except Exception as exc:  # an observer must not take the server down
                self.process.error(f"observer {type(observer).__name__} failed: {exc!r}")

    # -- the slow path: CoreDNS's checks, then the chain -----------------------------------------------------
    def _slow(self, data: bytes, addr: Any, proto: str, send: Sender | None) -> None:
        try:
            self._process(data, addr, proto, send)
        except Exception as exc:  # a bug here must cost one query, never the listener
            self.internal_errors += 1
            self.process.metrics.panics.inc(())
            self.process.error(f'Recovered from panic in server: "{self.server_label}" {exc!r}')

    def _sender(self, addr: Any) -> Sender:
        def send(wire: bytes) -> None:
            self._sendto(wire, addr)

        return send

    def _process(self, data: bytes, addr: Any, proto: str, send: Sender | None) -> None:
        start = _perf()
        n = len(data)
        if n < 12:
            return  # unreadable header: no reply (any reply could be used for amplification)
        b2 = data[2]
        if b2 & 0x80:
            return  # a response: ignored
        if send is None:
            send = self._sender(addr)
        opcode = (b2 >> 3) & 0x0F
        if opcode not in (0, 4):  # QUERY, NOTIFY
            send(answers.header_reply(data, _NOTIMP))
            return
        qd, an, ns, ar = _COUNTS.unpack_from(data, 4)
        if qd != 1 or an > 1 or ns > 1 or ar > 2:
            send(answers.header_reply(data, _FORMERR))
            return
        try:
            msg = answers.parse_query(data)
        except Exception:
            end = answers.plain_name_end(data, 12)
            question = data[12:end + 4] if end > 0 and end + 4 <= n else b""
            send(answers.header_reply(data, _FORMERR, question))
            return
        rt = self.runtime
        assert rt is not None
        remote = client_address(addr)
        echo = _echo_of(msg)
        if not msg.question:
            self._dropped(msg, data, _SERVFAIL, echo, send, proto, remote, start)
            return
        first = msg.question[0]
        if first.rdclass != _IN and not rt.any_class:
            self._dropped(msg, data, _REFUSED, echo, send, proto, remote, start)
            return
        opt = msg.opt
        version = (opt.ttl >> 16) & 0xFF if opt is not None else -1
        if version > 0:
            send(answers.badvers_reply(msg.id, opcode, msg.flags))
            return
        if proto == "tcp":
            max_size = 65535
        elif echo is not None:
            max_size = max(512, echo[0])
        else:
            max_size = 512
        name_lower = name_text(first.name)
        config = rt.index.select(name_lower, int(first.rdtype))
        block = rt.by_config.get(id(config)) if config is not None else None
        if block is None:
            self._dropped(msg, data, _REFUSED, echo, send, proto, remote, start)
            return
        if len(self._tasks) >= self.max_inflight:
            return  # overloaded: drop, the client retries
        req = Request(msg=msg, wire=data, remote=remote, local=self.local, proto=proto,
                      server=self.server_label, zone=block.zone_for(name_lower), max_size=max_size, start=start,
                      lowered=name_lower)
        cache = rt.udp_cache if proto == "udp" else rt.tcp_cache
        coro = self._run(block, rt, req, send, echo, cache)
        if block.sync:
            # The synchronous lane: run the chain right here; most answers never wait for anything.
            try:
                pending = coro.send(None)
            except StopIteration:
                return
            task = asyncio.get_running_loop().create_task(_continue(coro, pending))
        else:
            task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, block: Block, rt: Runtime, req: Request, send: Sender, echo: Echo,
                   cache: AnswerCache) -> None:
        try:
            result = await block.handler(req)
        except Exception as exc:
            self._panic(exc)
            self._dropped(req.msg, req.wire, _SERVFAIL, echo, send, req.proto, req.remote, req.start)
            return
        try:
            self._complete(block, rt, req, result, send, echo, cache)
        except Exception as exc:
            self._panic(exc)

    def _complete(self, block: Block, rt: Runtime, req: Request, result: Result, send: Sender, echo: Echo,
                  cache: AnswerCache) -> None:
        msg = result.msg
        wire: bytes | None
        if msg is None:
            wire = self._empty(req.msg, result.rcode, echo) if result.rcode in SERVER_WRITTEN else None
        else:
            try:
                wire = _render(msg, req, echo)
            except Exception as exc:  # a plugin built a message that cannot be sent
                self._panic(exc)
                result = Result(_SERVFAIL, plugin="", error=f"plugin/{result.plugin or '?'}: {exc}")
                wire = self._empty(req.msg, _SERVFAIL, echo)
        if wire is not None:
            send(wire)
        if req.hooks:
            for hook in req.hooks:
                try:
                    hook(req, result, wire or b"")
                except Exception as exc:
                    self.process.error(f"reply hook failed: {exc!r}")
        policy = result.cache
        if policy is None or msg is None or wire is None or result.error is not None:
            return
        wires = [wire]
        if policy.variants:
            for variant in policy.variants:
                try:
                    wires.append(_render(variant, req, echo))
                except Exception:
                    return
        info = rt.info(block, req, int(msg.rcode()), result.plugin)
        cache.insert(req.wire, wires, policy.scope, policy.max_age, info, policy.generation, policy.hit_tags)

    def _empty(self, query: dns.message.Message, rcode: int, echo: Echo) -> bytes:
        question = b""
        if query.question:
            q = query.question[0]
            question = (q.name.to_wire() or b"") + _QTAIL.pack(int(q.rdtype), int(q.rdclass))
        opt = answers.opt_record(echo[0], 0, echo[1], echo[2]) if echo is not None else None
        return answers.empty_reply(query.id, int(query.opcode()), int(query.flags), rcode, question, opt)

    def _dropped(self, msg: dns.message.Message, data: bytes, rcode: int, echo: Echo, send: Sender, proto: str,
                 remote: tuple[str, int], start: float) -> None:
        """CoreDNS `errorAndMetricsFunc`: an empty reply, counted under zone "dropped"."""
        wire = self._empty(msg, rcode, echo)
        send(wire)
        qtype = int(msg.question[0].rdtype) if msg.question else 0
        family = 2 if ":" in remote[0] else 1
        keys = ReportKeys(self.server_label, "dropped", proto, family, qtype, echo is not None and echo[1], rcode, "")
        self.process.metrics.report(keys, len(data), len(wire), _perf() - start)

    def _panic(self, exc: BaseException) -> None:
        self.process.metrics.panics.inc(())
        self.process.error(f'Recovered from panic in server: "{self.server_label}" {exc!r}')


def _discard(data: bytes | bytearray, addr: Any) -> None:
    return None


def _discard_count(data: bytes | bytearray, addr: Any) -> int:
    return 0


def _is_v6(addr: Any) -> bool:
    """Whether a peer address is an IPv6 client (the `family` metric label): IPv4-mapped counts as IPv4."""
    host = addr[0]
    return isinstance(host, str) and ":" in host and not host.startswith("::ffff:")


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], pending: Any) -> Generator[Any, Any, None]:
    """Continue a coroutine that was started synchronously and suspended on `pending` (what it yielded).

    This is `yield from coro` for a coroutine already past its first step: yield what it yielded to the task
    driving us, and pass back whatever the task sends or throws.
    """
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                pending = coro.send(sent)
            except StopIteration:
                return


async def _continue(coro: Coroutine[Any, Any, None], pending: Any) -> None:
    await _resume(coro, pending)


def _echo_of(msg: dns.message.Message) -> Echo:
    opt = msg.opt  # read once: dnspython's edns/payload/ednsflags/options properties each walk the OPT RRset
    if opt is None:
        return None
    rdata = opt[0]
    options = b""
    for option in rdata.options:
        code = int(option.otype)
        if code in SUPPORTED_EDNS_OPTIONS:
            data = option.to_wire() or b""
            options += _OPTION_HEAD.pack(code, len(data)) + data
    return int(rdata.payload), bool(opt.ttl & 0x8000), options


def _render(msg: dns.message.Message, req: Request, echo: Echo) -> bytes:
    """Wire form of a plugin's reply as sent to this client: compressed, OPT echoed, truncated to fit."""
    wire = msg.intact_wire() if isinstance(msg, WireReply) else answers.render(msg)
    if wire is None:
        try:
            wire = msg.to_wire(max_size=65535)
        except dns.exception.TooBig:
            wire = msg.to_wire(max_size=65535, prefer_truncation=True)
    lay = answers.Layout(wire)
    if echo is None:
        fitted = answers.fit(wire, req.max_size, None, lay)
    else:
        if lay.opt_start >= 0:
            opt = answers.opt_record(echo[0], lay.opt_ext_rcode, echo[1], lay.opt_options)
        else:
            opt = answers.opt_record(echo[0], 0, echo[1], echo[2])
        fitted = answers.fit(wire, req.max_size, opt, lay)
    if fitted[:2] != req.wire[:2]:
        fitted = req.wire[:2] + fitted[2:]
    return fitted


# -- sockets -----------------------------------------------------------------------------------------------------

class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        # The loop calls `protocol.datagram_received(data, addr)`: point it straight at the server.
        self.datagram_received = server.handle_datagram  # type: ignore[method-assign]

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors for earlier replies: nothing to do


class _TcpConnection(asyncio.Protocol):
    """Length-prefixed messages, any number per connection; read and idle timeouts as CoreDNS."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: Any = ("", 0)
        self.last = 0.0
        self.answered = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not a subclass
        self.peer = transport.get_extra_info("peername") or ("", 0)
        loop = asyncio.get_running_loop()
        self.last = loop.time()
        self.timer = loop.call_later(READ_TIMEOUT, self._check)
        self.server._conns.add(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        self.last = asyncio.get_running_loop().time()
        while len(buf) >= 2:
            size = (buf[0] << 8) | buf[1]
            if len(buf) < size + 2:
                break
            message = bytes(buf[2:size + 2])
            del buf[:size + 2]
            if size < 12:
                self.close()  # not even a header: the stream is garbage
                return
            self.answered = True
            self.server.handle_stream(message, self.peer, self._send)

    def _send(self, wire: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(len(wire).to_bytes(2, "big") + wire)
        self.last = asyncio.get_running_loop().time()
        if transport.get_write_buffer_size() > MAX_TCP_BACKLOG:
            self.close()

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        limit = READ_TIMEOUT if (self.buf or not self.answered) else IDLE_TIMEOUT
        left = self.last + limit - loop.time()
        if left <= 0:
            self.close()
        else:
            self.timer = loop.call_later(left, self._check)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None
        self.server._conns.discard(self)


def _families(host: str) -> list[tuple[int, str]]:
    v6, v4 = int(socket.AF_INET6), int(socket.AF_INET)
    if not host or host == "::":
        return ([(v6, "::")] if socket.has_ipv6 else []) + [(v4, "0.0.0.0")]
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
        return [(v6 if ip.version == 6 else v4, host)]
    except ValueError:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        return [(int(info[0]), str(info[4][0])) for info in infos]


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on one port; "" binds all addresses (dual-stack when IPv6 is available)."""
    last_error: OSError | None = None
    for family, address in _families(host):
        for _ in range(50 if port == 0 else 1):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                if family == socket.AF_INET6 and address == "::":
                    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if port != 0:
                    # As CoreDNS: lets a block bound to one address share a port with an all-addresses block.
                    for sock in (udp, tcp):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    with contextlib.suppress(OSError):
                        udp.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
                udp.bind((address, port))
                real = udp.getsockname()[1]
                tcp.bind((address, real))
                udp.setblocking(False)
                tcp.setblocking(False)
                return udp, tcp
            except OSError as exc:
                udp.close()
                tcp.close()
                last_error = exc
    raise last_error or OSError(f"cannot bind {host}:{port}")
