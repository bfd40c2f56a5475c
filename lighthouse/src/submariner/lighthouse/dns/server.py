"""DNS listeners: one `DnsServer` per (bind host, port), UDP and TCP, in front of the blocks' plugin chains.

A query first meets the answer cache (`answers`): on a hit the reply is patched bytes, sent synchronously from
`datagram_received`, with no dnspython and no task. A miss goes through CoreDNS's server checks (spec §2.3),
then the chain of the selected block in a task; the reply is rendered, fitted to the client (OPT echo,
truncation) and, when every plugin allowed it, stored for the next identical question.

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
from collections.abc import Callable, Iterable
from typing import Any

import dns.exception
import dns.message

from submariner.lighthouse.dns import answers
from submariner.lighthouse.dns.answers import AnswerCache, CacheEntry
from submariner.lighthouse.dns.chain import Block, build_block
from submariner.lighthouse.dns.plugin import SERVER_WRITTEN, AnswerInfo, Hit, Request, Result
from submariner.lighthouse.dns.process import ProcessState, ReportKeys

_COUNTS_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_COUNTS_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x01"
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
        self.udp_cache = AnswerCache(cache_size)
        self.tcp_cache = AnswerCache(cache_size)


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
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._conns: set[_TcpConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sendto: Callable[[bytes | bytearray, Any], None] = _discard
        self._family = socket.AF_INET
        self.internal_errors = 0  # failures of the server's own code (not plugins): a bug if ever non-zero

    # -- configuration -----------------------------------------------------------------------------------
    def prepare(self, configs: Iterable[Any]) -> Runtime:
        """Build every block's chain (runs plugin setups; raises SetupError) without touching the live one."""
        blocks = [build_block(cfg, self.process, server_label=self.server_label, listen_host=self.host)
                  for cfg in configs]
        return Runtime(blocks, self.port, self.cache_size)

    def apply(self, runtime: Runtime) -> None:
        self.runtime = runtime

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
        udp, tcp = _bind_pair(self.host, self.port)
        self._family = udp.family
        self.bound_port = int(udp.getsockname()[1])
        self.local = (self.host or ("::" if udp.family == socket.AF_INET6 else "0.0.0.0"), self.bound_port)
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp)
        self._udp = transport
        self._sendto = transport.sendto
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
        self._sendto = _discard
        if self._tcp is not None:
            await self._tcp.wait_closed()
        self._tcp = None
        self._udp = None

    # -- the hot path --------------------------------------------------------------------------------------
    def handle_datagram(self, data: bytes, addr: Any) -> None:
        """One UDP query: answer from the cache synchronously, else hand it to the slow path."""
        rt = self.runtime
        if rt is None:
            return
        n = len(data)
        counts = data[4:12]
        if counts == _COUNTS_PLAIN:
            qend = n - 4
        elif counts == _COUNTS_EDNS:
            qend = n - 15
        else:
            qend = 0
        if qend > 12 and not (data[2] | data[3]) & 0x40:
            key = data[2:qend].lower() + data[qend:]
            entry = rt.udp_cache.entries.get(key)
            if entry is not None:
                if entry.gen == entry.scope.generation and entry.expires > _monotonic():
                    if entry.exact is None or entry.exact == data[12:qend]:
                        observers = entry.observers
                        start = _perf() if observers else 0.0
                        mid, tail = entry.parts if entry.ring is None else entry.next_parts()
                        out = b"".join((data[:2], mid, data[12:qend], tail))
                        entry.used = True
                        try:
                            self._sendto(out, addr)
                        except Exception:  # a closed transport (shutdown): nothing to answer on
                            return
                        if observers:
                            self._observe(entry, data, out, addr, "udp", start)
                        return
                else:
                    rt.udp_cache.entries.pop(key, None)
        self._slow(data, addr, "udp", None)

    def handle_stream(self, data: bytes, addr: Any, send: Sender) -> None:
        """One TCP query (already unframed); `send` frames and writes the reply."""
        rt = self.runtime
        if rt is None:
            return
        start = _perf()
        found = rt.tcp_cache.lookup(data)
        if found is not None:
            out, entry = found
            send(out)
            if entry.observers:
                self._observe(entry, data, out, addr, "tcp", start)
            return
        self._slow(data, addr, "tcp", send)

    def _observe(self, entry: CacheEntry, query: bytes, reply: bytes | bytearray, addr: Any, proto: str,
                 start: float) -> None:
        hit = Hit(entry.info, query, reply, client_address(addr), proto, start)
        for observer in entry.observers:
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
        if msg.edns > 0:
            send(answers.badvers_reply(msg.id, opcode, msg.flags))
            return
        if proto == "tcp":
            max_size = 65535
        elif msg.edns >= 0:
            max_size = max(512, msg.payload)
        else:
            max_size = 512
        name_lower = first.name.to_text().lower()
        config = rt.index.select(name_lower, int(first.rdtype))
        block = rt.by_config.get(id(config)) if config is not None else None
        if block is None:
            self._dropped(msg, data, _REFUSED, echo, send, proto, remote, start)
            return
        if len(self._tasks) >= self.max_inflight:
            return  # overloaded: drop, the client retries
        req = Request(msg=msg, wire=data, remote=remote, local=self.local, proto=proto,
                      server=self.server_label, zone=block.zone_for(name_lower), max_size=max_size, start=start)
        cache = rt.udp_cache if proto == "udp" else rt.tcp_cache
        task = asyncio.get_running_loop().create_task(self._run(block, req, send, echo, cache))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, block: Block, req: Request, send: Sender, echo: Echo, cache: AnswerCache) -> None:
        try:
            result = await block.handler(req)
        except Exception as exc:
            self._panic(exc)
            self._dropped(req.msg, req.wire, _SERVFAIL, echo, send, req.proto, req.remote, req.start)
            return
        try:
            self._complete(block, req, result, send, echo, cache)
        except Exception as exc:
            self._panic(exc)

    def _complete(self, block: Block, req: Request, result: Result, send: Sender, echo: Echo,
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
        rcode = int(msg.rcode())
        info = AnswerInfo(name=req.name_lower, qtype=req.qtype, qclass=req.qclass, rcode=rcode,
                          plugin=result.plugin, zone=req.zone, server=req.server, do=req.do,
                          bufsize=req.max_size, opcode=req.opcode, local=req.local[0])
        cache.insert(req.wire, wires, policy.scope, policy.max_age, info, block.observers, policy.generation)

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


def _echo_of(msg: dns.message.Message) -> Echo:
    if msg.edns < 0:
        return None
    from submariner.lighthouse.dns.plugin import SUPPORTED_EDNS_OPTIONS

    options = b""
    for option in msg.options:
        code = int(option.otype)
        if code in SUPPORTED_EDNS_OPTIONS:
            data = option.to_wire() or b""
            options += _OPTION_HEAD.pack(code, len(data)) + data
    return msg.payload, bool(msg.ednsflags & 0x8000), options


def _render(msg: dns.message.Message, req: Request, echo: Echo) -> bytes:
    """Wire form of a plugin's reply as sent to this client: compressed, OPT echoed, truncated to fit."""
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
