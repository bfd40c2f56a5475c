"""`forward`: proxy queries to upstream resolvers over UDP/TCP (CoreDNS semantics, spec §5.1).

Each upstream keeps one connected UDP socket shared by all in-flight queries (replies are matched by a fresh
random ID, as CoreDNS's persistent connections do) and a small pool of idle TCP connections that expire after
`expire`. An upstream that fails a query gets health-checked (`. IN NS`, any reply counts) every
`health_check` interval until it answers; after more than `max_fails` failed checks it is "down" and skipped.
Replies are passed through as parsed (with the client's ID); they are never wire-cached by the server.

Several `forward` lines in one block chain in file order; `next RCODE...` hands a reply's query to the
following `forward` only. Loading `forward` makes the listener accept non-IN classes (CH), as in CoreDNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype

from submariner.lighthouse.dns.config import parse_key
from submariner.lighthouse.dns.plugin import (
    Controller,
    Directive,
    Handler,
    Request,
    Result,
    SetupError,
    Wrapper,
    format_duration,
    parse_duration,
    reply_for,
)
from submariner.lighthouse.dns.process import RCODE_TEXT, TIME_BUCKETS, CounterVec, HistogramVec, rcode_text

NAME = "forward"
ONCE = False

MAX_UPSTREAMS = 15
DEFAULT_READ_TIMEOUT = 2.0
QUERY_DEADLINE = 5.0
DEFAULT_HC_INTERVAL = 0.5
HC_TIMEOUT = 1.0
DEFAULT_EXPIRE = 10.0
DEFAULT_MAX_FAILS = 2

_ID = struct.Struct("!H")
_TC = 0x02  # in header byte 2
_SERVFAIL, _REFUSED, _FORMERR = dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.FORMERR
#: miekg/dns StringToRcode.
STRING_TO_RCODE: dict[str, int] = {**{v: k for k, v in RCODE_TEXT.items()}, "BADVERS": 16}


class UpstreamError(Exception):
    """A transport failure talking to one upstream; the text mimics Go's net errors (logged by `errors`)."""


class CachedClosed(UpstreamError):
    """A pooled TCP connection the upstream had already closed: retry on a fresh one."""


# -- metrics (process-wide, survive reloads) -------------------------------------------------------------------


class Metrics:
    def __init__(self, process: Any) -> None:
        vec = process.vec
        self.duration: HistogramVec = vec(HistogramVec(
            "coredns_proxy_request_duration_seconds", "Histogram of the time each request took.",
            ("proxy_name", "to", "rcode"), TIME_BUCKETS))
        self.hc_failures: CounterVec = vec(CounterVec(
            "coredns_proxy_healthcheck_failures_total", "Counter of the number of failed healthchecks.",
            ("proxy_name", "to")))
        self.conn_hits: CounterVec = vec(CounterVec(
            "coredns_proxy_conn_cache_hits_total", "Counter of connection cache hits per upstream and protocol.",
            ("proxy_name", "to", "proto")))
        self.conn_misses: CounterVec = vec(CounterVec(
            "coredns_proxy_conn_cache_misses_total", "Counter of connection cache misses per upstream and protocol.",
            ("proxy_name", "to", "proto")))
        self.hc_broken: CounterVec = vec(CounterVec(
            "coredns_forward_healthcheck_broken_total",
            "Counter of the number of complete failures of the healthchecks.", ()))
        self.rejects: CounterVec = vec(CounterVec(
            "coredns_forward_max_concurrent_rejects_total",
            "Counter of the number of queries rejected because the concurrent queries were at maximum.", ()))
        self.hc_broken.values.setdefault((), 0.0)
        self.rejects.values.setdefault((), 0.0)


# -- transports ---------------------------------------------------------------------------------------------------


class _UdpDemux(asyncio.DatagramProtocol):
    """One connected UDP socket; replies go to the waiter registered under their message ID."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.local = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("sockname")
        if sock:
            self.local = _join(str(sock[0]), int(sock[1]))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 12:
            return
        fut = self.pending.get(_ID.unpack_from(data)[0])
        if fut is not None and not fut.done():
            fut.set_result(data)  # replies with IDs nobody waits for are dropped, as out-of-order ones in CoreDNS

    def error_received(self, exc: Exception) -> None:
        for fut in list(self.pending.values()):
            if not fut.done():
                fut.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for fut in list(self.pending.values()):
            if not fut.done():
                fut.set_exception(ConnectionResetError("use of closed network connection"))


def _join(host: str, port: int) -> str:
    """Go's net.JoinHostPort."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _new_id(used: dict[int, Any]) -> int:
    while True:
        qid = secrets.randbits(16)
        if qid not in used:
            return qid


class Upstream:
    """One TO address: transports, health state and the health-check probe."""

    def __init__(self, host: str, port: int, owner: Forward) -> None:
        self.host = host
        self.port = port
        self.addr = _join(host, port)
        self.owner = owner
        self.fails = 0
        self._udp: _UdpDemux | None = None
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._probe: asyncio.Task[None] | None = None

    # health
    def down(self, max_fails: int) -> bool:
        return max_fails != 0 and self.fails > max_fails

    def healthcheck(self) -> None:
        """Start probing (at most one probe loop); it ends at the first successful check."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        o = self.owner.o
        while True:
            if await self.check():
                return
            await asyncio.sleep(o.hc_interval)

    async def check(self) -> bool:
        """One health check: `<domain> IN NS`; any reply at all (even SERVFAIL) means the upstream is up."""
        o = self.owner.o
        query = dns.message.make_query(o.hc_domain, dns.rdatatype.NS)
        query.flags = dns.flags.RD if o.hc_recursion_desired else 0
        wire = query.to_wire()
        proto = "tcp" if o.force_tcp else "udp"
        try:
            if proto == "udp":
                reply = await _udp_once(self.host, self.port, wire, HC_TIMEOUT, o.source_address)
            else:
                reply = await _tcp_once(self.host, self.port, wire, HC_TIMEOUT, o.source_address)
            ok = len(reply) >= 12 and bool(reply[2] & 0x80 or (reply[2] >> 3) & 0x0F == dns.opcode.QUERY)
        except (TimeoutError, OSError, UpstreamError):
            ok = False
        if ok:
            self.fails = 0
            return True
        self.owner.metrics.hc_failures.inc((NAME, self.addr))
        self.fails += 1
        return False

    # queries
    async def exchange(self, wire: bytes, proto: str, timeout: float) -> bytes:
        if proto == "udp":
            return await self._exchange_udp(wire, timeout)
        while True:
            try:
                return await self._exchange_tcp(wire, timeout)
            except CachedClosed:
                continue

    async def _udp_socket(self) -> _UdpDemux:
        demux = self._udp
        labels = (NAME, self.addr, "udp")
        if demux is not None and demux.transport is not None:
            self.owner.metrics.conn_hits.inc(labels)
            return demux
        self.owner.metrics.conn_misses.inc(labels)
        loop = asyncio.get_running_loop()
        local = (self.owner.o.source_address, 0) if self.owner.o.source_address else None
        _, proto = await loop.create_datagram_endpoint(_UdpDemux, remote_addr=(self.host, self.port),
                                                       local_addr=local)
        self._udp = proto
        return proto

    async def _exchange_udp(self, wire: bytes, timeout: float) -> bytes:
        demux = await self._udp_socket()
        qid = _new_id(demux.pending)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        demux.pending[qid] = fut
        try:
            assert demux.transport is not None
            demux.transport.sendto(_ID.pack(qid) + wire[2:])
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise UpstreamError(f"read udp {demux.local}->{self.addr}: i/o timeout") from None
        except ConnectionRefusedError:
            raise UpstreamError(f"read udp {demux.local}->{self.addr}: read: connection refused") from None
        except OSError as exc:
            raise UpstreamError(f"read udp {demux.local}->{self.addr}: {exc.strerror or exc}") from None
        finally:
            demux.pending.pop(qid, None)

    async def _exchange_tcp(self, wire: bytes, timeout: float) -> bytes:
        labels = (NAME, self.addr, "tcp")
        now = time.monotonic()
        conn = None
        while self._idle:
            reader, writer, since = self._idle.pop()
            if now - since < self.owner.o.expire and not writer.is_closing():
                conn = (reader, writer)
                break
            writer.close()
        cached = conn is not None
        if conn is None:
            self.owner.metrics.conn_misses.inc(labels)
            try:
                local = (self.owner.o.source_address, 0) if self.owner.o.source_address else None
                conn = await asyncio.wait_for(asyncio.open_connection(self.host, self.port, local_addr=local),
                                              timeout)
            except TimeoutError:
                raise UpstreamError(f"dial tcp {self.addr}: i/o timeout") from None
            except ConnectionRefusedError:
                raise UpstreamError(f"dial tcp {self.addr}: connect: connection refused") from None
            except OSError as exc:
                raise UpstreamError(f"dial tcp {self.addr}: {exc.strerror or exc}") from None
        else:
            self.owner.metrics.conn_hits.inc(labels)
        reader, writer = conn
        sock = writer.get_extra_info("sockname")
        local_text = _join(str(sock[0]), int(sock[1])) if sock else "?"
        qid = secrets.randbits(16)
        try:
            writer.write(len(wire).to_bytes(2, "big") + _ID.pack(qid) + wire[2:])
            await writer.drain()
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                head = await asyncio.wait_for(reader.readexactly(2), max(left, 0.0))
                data = await asyncio.wait_for(reader.readexactly(int.from_bytes(head, "big")),
                                              max(deadline - time.monotonic(), 0.0))
                if len(data) >= 12 and _ID.unpack_from(data)[0] == qid:
                    break
        except TimeoutError:
            writer.close()
            raise UpstreamError(f"read tcp {local_text}->{self.addr}: i/o timeout") from None
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
            writer.close()
            if cached:
                raise CachedClosed("EOF") from None
            raise UpstreamError("EOF" if isinstance(exc, asyncio.IncompleteReadError)
                                else f"read tcp {local_text}->{self.addr}: {exc}") from None
        if self.owner.o.max_idle_conns and len(self._idle) >= self.owner.o.max_idle_conns:
            writer.close()
        else:
            self._idle.append((reader, writer, time.monotonic()))
        return data

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


async def _udp_once(host: str, port: int, wire: bytes, timeout: float, source: str) -> bytes:
    """A one-off exchange on a fresh UDP socket (health checks)."""
    loop = asyncio.get_running_loop()
    local = (source, 0) if source else None
    transport, demux = await loop.create_datagram_endpoint(_UdpDemux, remote_addr=(host, port), local_addr=local)
    try:
        qid = _ID.unpack_from(wire)[0]
        fut: asyncio.Future[bytes] = loop.create_future()
        demux.pending[qid] = fut
        transport.sendto(wire)
        return await asyncio.wait_for(fut, timeout)
    finally:
        transport.close()


async def _tcp_once(host: str, port: int, wire: bytes, timeout: float, source: str) -> bytes:
    local = (source, 0) if source else None
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=local), timeout)
    try:
        writer.write(len(wire).to_bytes(2, "big") + wire)
        await writer.drain()
        head = await asyncio.wait_for(reader.readexactly(2), timeout)
        return await asyncio.wait_for(reader.readexactly(int.from_bytes(head, "big")), timeout)
    except asyncio.IncompleteReadError:
        raise UpstreamError("EOF") from None
    finally:
        writer.close()


# -- configuration ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Options:
    """One parsed `forward FROM TO... { ... }` stanza."""

    from_zone: str
    to: list[tuple[str, int]]
    ignored: list[str] = field(default_factory=list)
    force_tcp: bool = False
    prefer_udp: bool = False
    expire: float = DEFAULT_EXPIRE
    max_fails: int = DEFAULT_MAX_FAILS
    max_connect_attempts: int | None = None  # None: 2 x upstreams
    max_idle_conns: int = 0
    read_timeout: float = DEFAULT_READ_TIMEOUT
    hc_interval: float = DEFAULT_HC_INTERVAL
    hc_domain: str = "."
    hc_recursion_desired: bool = True
    policy: str = "random"
    max_concurrent: int = 0
    next_rcodes: set[int] = field(default_factory=set)
    next_on_nodata: bool = False
    failfast: bool = False
    failover_rcodes: set[int] = field(default_factory=set)
    source_address: str = ""


def _plain(message: str) -> SetupError:
    return SetupError(f"plugin/{NAME}: {message}")


def _normalize(d: Directive, name: str) -> list[str]:
    try:
        return [k.zone for k in parse_key(name, 53)]
    except SetupError:
        raise _plain(f"unable to normalize '{name}'") from None


def _go_uint(text: str, bits: int = 32) -> int:
    if not text.isdigit():
        raise _plain(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    value = int(text)
    if value >= 1 << bits:
        raise _plain(f'strconv.ParseUint: parsing "{text}": value out of range')
    return value


def _go_atoi(text: str) -> int:
    body = text[1:] if text[:1] in "+-" else text
    if not body.isdigit():
        raise _plain(f'strconv.Atoi: parsing "{text}": invalid syntax')
    return int(text)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise _plain(str(exc)) from None


def _rcodes(args: list[str], failover: bool = False) -> set[int]:
    out: set[int] = set()
    for arg in args:
        code = STRING_TO_RCODE.get(arg.upper())
        if code is None:
            raise _plain(f"{arg} is not a valid rcode")
        if failover and code == 0:
            raise _plain("NoError cannot be used in failover")
        out.add(code)
    return out


def read_resolv_conf(path: str) -> list[tuple[str, int]]:
    """`nameserver` lines of a resolv.conf-style file (miekg ClientConfigFromFile), port 53."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise _plain(f"open {path}: no such file or directory") from None
    except IsADirectoryError:
        raise _plain(f"read {path}: is a directory") from None
    except OSError as exc:
        raise _plain(f"open {path}: {(exc.strerror or str(exc)).lower()}") from None
    servers: list[tuple[str, int]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[0] == "nameserver":
            servers.append((fields[1].split("%")[0], 53))
    return servers


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    return True


def parse_to(targets: list[str]) -> list[tuple[str, int]]:
    """CoreDNS parse.HostPortOrFile: `IP`, `IP:port`, `[v6]:port`, `dns://…`, or a resolv.conf-style file."""
    servers: list[tuple[str, int]] = []
    for raw in targets:
        host = raw
        scheme = "dns"
        if "://" in raw:
            scheme, host = raw.split("://", 1)
            scheme = scheme.lower()
        if scheme in ("tls", "https", "grpc", "quic", "https3"):
            raise _plain(f"'{scheme}' is not supported as a destination protocol by lighthouse-dns: {raw}")
        if scheme != "dns":
            raise _plain(f"'{scheme}' is not supported as a destination protocol in forward: {raw}")
        if not host:
            raise _plain(f'invalid address: "{raw}"')
        split = _split_host_port(host)
        if split is None:
            if _is_ip(host):
                servers.append((host.split("%")[0], 53))
            else:
                servers.extend(read_resolv_conf(host))
            continue
        addr, port = split
        if not _is_ip(addr):
            servers.extend(read_resolv_conf(host))
            continue
        if not port.isdigit() or int(port) > 65535:
            raise _plain(f'invalid port "{port}" in "{raw}"')
        servers.append((addr.split("%")[0], int(port)))
    if not servers:
        raise _plain("no nameservers found")
    return servers


def _split_host_port(text: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort, None where it fails."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1:].startswith(":"):
            return None
        return text[1:end], text[end + 2:]
    if text.count(":") != 1:
        return None
    host, port = text.split(":")
    return host, port


class _Props:
    """The nested block as Caddy's dispenser sees it: a property that reads fewer arguments than its line holds
    leaves the rest to be read as the next property (`max_fails 3 force_tcp` also sets force_tcp)."""

    def __init__(self, d: Directive) -> None:
        self.lines: list[tuple[list[str], int]] = [(list(p), d.block_line(i)) for i, p in enumerate(d.block)]
        self.lines.reverse()

    def __iter__(self) -> _Props:
        return self

    def __next__(self) -> tuple[list[str], int]:
        if not self.lines:
            raise StopIteration
        return self.lines.pop()

    def push_back(self, tokens: list[str], line: int) -> None:
        if tokens:
            self.lines.append((tokens, line))


def parse_stanza(c: Controller, d: Directive) -> Options:
    if not d.args:
        raise d.arg_error(d.name)
    from_raw = d.args[0]
    zones = _normalize(d, from_raw)
    if len(zones) > 1:
        c.process.warning(f"Unsupported CIDR notation: '{from_raw}' expands to multiple zones. "
                          f"Using only '{zones[0]}'.", NAME)
    if len(d.args) < 2:
        raise d.arg_error(from_raw)
    o = Options(from_zone=zones[0], to=parse_to(d.args[1:]))
    props = _Props(d)
    for tokens, line in props:
        key, args = tokens[0], tokens[1:]

        def one(name: str = key, args: list[str] = args, line: int = line) -> str:
            """NextArg: exactly one value is read; anything after it is the next property."""
            if not args:
                raise d.arg_error(name, line)
            props.push_back(args[1:], line)
            return args[0]

        def none(name: str = key, args: list[str] = args, line: int = line) -> None:
            if args:
                raise d.arg_error(args[0], line)

        if key == "except":
            if not args:
                raise d.arg_error(key, line)
            for name in args:
                o.ignored.extend(_normalize(d, name))
        elif key == "max_fails":
            o.max_fails = _go_uint(one())
        elif key == "max_connect_attempts":
            o.max_connect_attempts = _go_uint(one())
        elif key == "max_idle_conns":
            o.max_idle_conns = _go_uint(one())
        elif key == "health_check":
            if not args:
                raise d.arg_error(key, line)
            dur = _duration(args[0])
            if dur < 0:
                raise _plain(f"health_check can't be negative: {round(dur * 1e9)}")
            o.hc_interval = dur
            o.hc_domain = "."
            rest = args[1:]
            while rest:
                opt = rest.pop(0)
                if opt == "no_rec":
                    o.hc_recursion_desired = False
                elif opt == "domain":
                    if not rest:
                        raise d.arg_error(opt, line)
                    domain = rest.pop(0)
                    try:
                        o.hc_domain = dns.name.from_text(domain).to_text().lower()
                    except dns.exception.DNSException:
                        raise _plain(f"health_check: invalid domain name {domain}") from None
                else:
                    raise _plain(f"health_check: unknown option {opt}")
        elif key == "force_tcp":
            none()
            o.force_tcp = True
        elif key == "prefer_udp":
            none()
            o.prefer_udp = True
        elif key in ("tls", "tls_servername", "resolver"):
            raise d.error(f"property '{key}' is not supported by lighthouse-dns (no DNS-over-TLS upstreams, "
                          "TO must be an address or a file)", line)
        elif key == "expire":
            dur = _duration(one())
            if dur < 0:
                raise _plain(f"expire can't be negative: {format_duration(dur)}")
            o.expire = dur
        elif key == "read_timeout":
            dur = _duration(one())
            if dur <= 0:
                raise _plain(f"read_timeout must be positive: {format_duration(dur)}")
            o.read_timeout = dur
        elif key == "policy":
            value = one()
            if value not in ("random", "round_robin", "sequential"):
                raise d.error(f"unknown policy '{value}'", line)
            o.policy = value
        elif key == "max_concurrent":
            value = one()
            n = _go_atoi(value)
            if n < 0:
                raise _plain(f"max_concurrent can't be negative: {n}")
            o.max_concurrent = n
        elif key == "next":
            if not args:
                raise d.arg_error(key, line)
            o.next_rcodes = _rcodes(args)
        elif key == "next_on_nodata":
            none()
            o.next_on_nodata = True
        elif key == "failfast_all_unhealthy_upstreams":
            none()
            o.failfast = True
        elif key == "failover":
            if not args:
                raise d.arg_error(key, line)
            o.failover_rcodes = _rcodes(args, failover=True)
        elif key == "source_address":
            value = one()
            if not _is_ip(value):
                raise _plain(f"source_address: invalid IP address {value}")
            o.source_address = value
        else:
            raise d.error(f"unknown property '{key}'", line)
    if len(o.to) > MAX_UPSTREAMS:
        raise _plain(f"more than {MAX_UPSTREAMS} TOs configured: {len(o.to)}")
    return o


# -- the handler ---------------------------------------------------------------------------------------------------


def _in(name: str, zone: str) -> bool:
    return zone == "." or name == zone or name.endswith("." + zone)


class Forward:
    """One `forward` stanza."""

    def __init__(self, o: Options, metrics: Metrics) -> None:
        self.o = o
        self.metrics = metrics
        self.upstreams = [Upstream(host, port, self) for host, port in o.to]
        self.concurrent = 0
        self._rr = 0
        self.next: Handler | None = None
        self.next_is_forward = False
        self.max_attempts = (2 * len(self.upstreams) if o.max_connect_attempts is None
                             else o.max_connect_attempts)
        self._rand: Callable[[list[Upstream]], list[Upstream]] = _shuffled

    def match(self, name: str) -> bool:
        o = self.o
        if not _in(name, o.from_zone):
            return False
        if name == o.from_zone:
            return True
        return not any(_in(name, ignored) for ignored in o.ignored)

    def ordered(self) -> list[Upstream]:
        ups = self.upstreams
        if self.o.policy == "sequential" or len(ups) == 1:
            return ups
        if self.o.policy == "round_robin":
            start = self._rr % len(ups)
            self._rr += 1
            return ups[start:] + ups[:start]
        return self._rand(ups)

    async def serve(self, req: Request) -> Result:
        nxt = self.next
        assert nxt is not None
        if not self.match(req.name_lower):
            return await nxt(req)
        o = self.o
        if o.max_concurrent > 0 and self.concurrent >= o.max_concurrent:
            self.metrics.rejects.inc(())
            return Result(_REFUSED, plugin=NAME, error=f"concurrent queries exceeded maximum {o.max_concurrent}")
        self.concurrent += 1
        try:
            return await self._forward(req, nxt)
        finally:
            self.concurrent -= 1

    async def _forward(self, req: Request, nxt: Handler) -> Result:
        o = self.o
        wire = req.wire or req.msg.to_wire()
        deadline = time.monotonic() + QUERY_DEADLINE
        ups = self.ordered()
        n = len(ups)
        i = fails = attempts = tried = 0
        last_error: str | None = None
        failover_reply: dns.message.Message | None = None
        while time.monotonic() < deadline and (self.max_attempts == 0 or attempts < self.max_attempts):
            if i >= n:
                i = fails = 0
            up = ups[i]
            i += 1
            if up.down(o.max_fails):
                fails += 1
                if fails < n:
                    continue
                self.metrics.hc_broken.inc(())
                if o.failfast:
                    break
                up = random.choice(self.upstreams)
            attempts += 1
            tried += 1
            if o.force_tcp:
                proto = "tcp"
            elif o.prefer_udp:
                proto = "udp"
            else:
                proto = req.proto
            start = time.perf_counter()
            try:
                while True:
                    raw = await up.exchange(wire, proto, min(o.read_timeout, max(deadline - time.monotonic(), 0.01)))
                    if raw[2] & _TC and proto == "udp" and o.prefer_udp and not o.force_tcp:
                        proto = "tcp"  # truncated: retry the same upstream over TCP
                        continue
                    break
                reply = _parse_reply(raw, req)
            except UpstreamError as exc:
                last_error = str(exc)
                if o.max_fails != 0:
                    up.healthcheck()
                if fails < n:
                    continue
                break
            self.metrics.duration.observe((NAME, up.addr, rcode_text(reply.rcode())), time.perf_counter() - start)
            if not _matches(reply, req):
                return Result(0, reply_for(req, _FORMERR, authoritative=False), plugin=NAME)
            rcode = int(reply.rcode())
            if rcode in o.failover_rcodes and tried < n:
                failover_reply = reply
                continue
            if self.next_is_forward and (rcode in o.next_rcodes
                                         or (o.next_on_nodata and rcode == 0 and not reply.answer)):
                return await nxt(req)
            return Result(0, reply, plugin=NAME)
        if failover_reply is not None:
            return Result(0, failover_reply, plugin=NAME)
        return Result(_SERVFAIL, plugin=NAME, error=last_error or "no healthy proxies")

    async def close(self) -> None:
        for up in self.upstreams:
            await up.close()


def _shuffled(ups: list[Upstream]) -> list[Upstream]:
    if len(ups) == 2:
        return [ups[1], ups[0]] if random.getrandbits(1) else ups
    out = list(ups)
    random.shuffle(out)
    return out


class UpstreamReply(dns.message.QueryMessage):
    """The upstream's reply as a message, which renders as the upstream's own bytes (with the client's ID) as
    long as no plugin changed it: "passed through unchanged", and no re-rendering on the way out."""

    def to_wire(self, origin: dns.name.Name | None = None, max_size: int = 0, multi: bool = False,
                tsig_ctx: Any | None = None, prepend_length: bool = False, prefer_truncation: bool = False,
                **kw: Any) -> bytes:
        raw: bytes | None = getattr(self, "_raw", None)
        unchanged = raw is not None and _snapshot(self) == getattr(self, "_snap", None)
        if (unchanged and raw is not None and origin is None and not multi and tsig_ctx is None and not kw
                and (not max_size or len(raw) <= max_size)):
            wire = _ID.pack(self.id) + raw[2:]
            return len(wire).to_bytes(2, "big") + wire if prepend_length else wire
        return super().to_wire(origin, max_size, multi, tsig_ctx, prepend_length, prefer_truncation, **kw)


def _snapshot(msg: dns.message.Message) -> tuple[Any, ...]:
    """What must be unchanged for the upstream's bytes to still be this message's wire form."""
    return (msg.flags, msg.ednsflags, msg.payload, id(msg.opt), id(msg.tsig), tuple(id(q) for q in msg.question),
            tuple(tuple((id(r), r.ttl, len(r)) for r in section)
                  for section in (msg.answer, msg.authority, msg.additional)))


def _parse_reply(raw: bytes, req: Request) -> dns.message.Message:
    """The upstream reply as a message with the client's ID; a cut-short truncated reply keeps its header."""
    try:
        msg = dns.message.from_wire(raw, ignore_trailing=True, raise_on_truncation=False)
    except dns.exception.DNSException as exc:
        if len(raw) >= 12 and raw[2] & _TC:
            msg = dns.message.make_response(req.msg)
            msg.use_edns(False)
            msg.flags = (raw[2] << 8) | raw[3]
            msg.set_rcode(dns.rcode.Rcode(raw[3] & 0x0F))
            msg.id = req.msg.id
            return msg
        raise UpstreamError(f"dns: {exc}") from None
    msg.id = req.msg.id
    if type(msg) is dns.message.QueryMessage and not msg.had_tsig:
        msg.__class__ = UpstreamReply
        msg._raw = raw  # type: ignore[attr-defined]
        msg._snap = _snapshot(msg)  # type: ignore[attr-defined]
    return msg


def _matches(reply: dns.message.Message, req: Request) -> bool:
    """request.Match: a response with the question's name and type."""
    if len(reply.question) != 1 or not reply.flags & dns.flags.QR:
        return False
    q = reply.question[0]
    return q.name.to_text().lower() == req.name_lower and int(q.rdtype) == req.qtype


def setup(c: Controller) -> Wrapper:
    metrics = Metrics(c.process)
    forwards = [Forward(parse_stanza(c, d), metrics) for d in c.directives]
    c.block.classes.add("CH")

    async def close() -> None:
        for f in forwards:
            await f.close()

    c.on_shutdown(close)

    def wrap(next_handler: Handler) -> Handler:
        handler = next_handler
        for i, f in reversed(list(enumerate(forwards))):
            f.next = handler
            f.next_is_forward = i < len(forwards) - 1
            handler = f.serve
        return handler

    return wrap


__all__ = ["NAME", "ONCE", "Forward", "Options", "parse_stanza", "parse_to", "read_resolv_conf", "setup"]
