"""`hosts`: A/AAAA/PTR from an /etc/hosts-style file and inline lines (CoreDNS semantics).

The file is re-read every `reload` interval when its mtime or size changed; a missing file keeps the last good
data. Unknown names are SERVFAIL (there is no SOA to make an NXDOMAIN authoritative) unless `fallthrough`
covers them; PTR is answered for any known address, even outside the plugin's zones. Answers depend only on the
data, so they are wire-cacheable until the next reload changes it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.PTR
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset

from submariner.lighthouse.dns.config import parse_key
from submariner.lighthouse.dns.plugin import (
    CachePolicy,
    Controller,
    Directive,
    Handler,
    Request,
    Result,
    RetirableScope,
    SetupError,
    Wrapper,
    parse_duration,
    reply_for,
)
from submariner.lighthouse.dns.process import GaugeVec

NAME = "hosts"
ONCE = True
SYNC_SAFE = True  # the handler needs no task context (see plugin.py)

DEFAULT_PATH = "/etc/hosts"
DEFAULT_TTL = 3600
DEFAULT_RELOAD = 5.0

_IN = dns.rdataclass.IN
_A, _AAAA, _PTR = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.PTR


@dataclass(slots=True)
class HostsMap:
    """Names to addresses (per family) and addresses to names; `*.x` entries match one extra label."""

    name4: dict[str, list[str]] = field(default_factory=dict)
    name6: dict[str, list[str]] = field(default_factory=dict)
    wild4: dict[str, list[str]] = field(default_factory=dict)
    wild6: dict[str, list[str]] = field(default_factory=dict)
    addr: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(v) for m in (self.name4, self.name6, self.wild4, self.wild6) for v in m.values())


def _normalize_name(text: str) -> str | None:
    try:
        return dns.name.from_text(text).to_text().lower()
    except dns.exception.DNSException:
        return None


def _in_zones(name: str, zones: Iterable[str]) -> bool:
    return any(z == "." or name == z or name.endswith("." + z) for z in zones)


def parse_hosts(text: str, origins: list[str], auto_reverse: bool) -> HostsMap:
    """hostsfile.parse: `IP name...` lines, `#` comments; names outside `origins` are dropped."""
    m = HostsMap()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0]
        fields = line.split()
        if len(fields) < 2:
            continue
        try:
            ip = ipaddress.ip_address(fields[0].split("%", 1)[0])
        except ValueError:
            continue
        v4 = ip if ip.version == 4 else ip.ipv4_mapped
        addr = str(v4) if v4 is not None else str(ip)
        for word in fields[1:]:
            name = _normalize_name(word)
            if name is None or not _in_zones(name, origins):
                continue
            wildcard = name.startswith("*.")
            if wildcard:
                table = m.wild4 if v4 is not None else m.wild6
                table.setdefault(name[2:], []).append(addr)
                continue
            table = m.name4 if v4 is not None else m.name6
            table.setdefault(name, []).append(addr)
            if auto_reverse:
                m.addr.setdefault(addr, []).append(name)
    return m


def _lookup(exact: dict[str, list[str]], wild: dict[str, list[str]], name: str) -> list[str]:
    found = exact.get(name)
    if found:
        return found
    if wild:
        dot = name.find(".")
        if 0 < dot < len(name) - 1:
            return wild.get(name[dot + 1:], [])
    return []


@dataclass(slots=True)
class Options:
    path: str = DEFAULT_PATH
    origins: list[str] = field(default_factory=list)
    inline: list[str] = field(default_factory=list)
    ttl: int = DEFAULT_TTL
    auto_reverse: bool = True
    reload: float = DEFAULT_RELOAD
    fallthrough: list[str] | None = None
    fallthrough_unsupported: bool = False


def _zones(d: Directive, names: Iterable[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        try:
            out.extend(k.zone for k in parse_key(name, 53))
        except SetupError as exc:
            raise d.error(str(exc)) from None
    return out


def parse(c: Controller) -> Options:
    d = c.directive()
    o = Options()
    args = list(d.args)
    if args:
        o.path = args.pop(0)
        try:
            st = os.stat(o.path)
        except FileNotFoundError:
            c.process.warning(f"File does not exist: {o.path}", NAME)
        except OSError as exc:
            raise d.error(f"unable to access hosts file '{o.path}': {exc}") from None
        else:
            if stat.S_ISDIR(st.st_mode):
                c.process.warning(f'Hosts file "{o.path}" is a directory', NAME)
    o.origins = _zones(d, args) if args else list(c.zones)
    lines = [(list(p), d.block_line(i)) for i, p in enumerate(d.block)]
    lines.reverse()
    while lines:
        tokens, line = lines.pop()
        key, rest = tokens[0], tokens[1:]
        if key == "fallthrough":
            o.fallthrough = _zones(d, rest) if rest else ["."]
        elif key == "fallthrough_unsupported":
            if rest:
                lines.append((rest, line))
            o.fallthrough_unsupported = True
        elif key == "no_reverse":
            if rest:  # Caddy reads the rest of the line as the next property
                lines.append((rest, line))
            o.auto_reverse = False
        elif key == "ttl":
            if not rest:
                raise d.error("ttl needs a time in second", line)
            try:
                ttl = int(rest[0], 10)
            except ValueError:
                raise d.error("ttl needs a number of second", line) from None
            if not 0 < ttl <= 65535:
                raise d.error("ttl provided is invalid", line)
            o.ttl = ttl
        elif key == "reload":
            if len(rest) != 1:
                raise d.error("reload needs a duration (zero seconds to disable)", line)
            try:
                reload = parse_duration(rest[0])
            except ValueError:
                raise d.error(f"invalid duration for reload '{rest[0]}'", line) from None
            if reload < 0:
                raise d.error(f"invalid negative duration for reload '{rest[0]}'", line)
            o.reload = reload
        elif o.fallthrough is None:
            o.inline.append(" ".join(tokens))
        else:
            raise d.error(f"unknown property '{key}'", line)
    return o


class Hosts:
    """One `hosts` stanza: the inline map, the file map (replaced on reload) and the handler."""

    def __init__(self, o: Options, process: Any) -> None:
        self.o = o
        self.process = process
        self.inline = parse_hosts("\n".join(o.inline), o.origins, o.auto_reverse)
        self.file = HostsMap()
        self.mtime: float | None = None
        self.size = -1
        self.scope = RetirableScope(NAME)
        self.next: Handler | None = None
        self._task: asyncio.Task[None] | None = None
        self.entries: GaugeVec = process.vec(GaugeVec("coredns_hosts_entries",
                                                      "The combined number of entries in hosts and Corefile.",
                                                      ("hostsfile",)))
        self.reloaded: GaugeVec = process.vec(GaugeVec("coredns_hosts_reload_timestamp_seconds",
                                                       "The timestamp of the last reload of hosts file.", ()))

    # -- data ----------------------------------------------------------------------------------------------
    def _read(self) -> tuple[HostsMap, float, int] | None:
        """The file parsed, when it changed since the last read; None when unchanged or unreadable."""
        try:
            with open(self.o.path, encoding="utf-8", errors="replace") as fh:
                st = os.fstat(fh.fileno())
                if self.mtime == st.st_mtime and self.size == st.st_size:
                    return None
                text = fh.read()
        except OSError:
            return None
        return parse_hosts(text, self.o.origins, self.o.auto_reverse), st.st_mtime, st.st_size

    def _apply(self, parsed: tuple[HostsMap, float, int] | None) -> None:
        if parsed is None:
            return
        self.file, self.mtime, self.size = parsed
        old, self.scope = self.scope, RetirableScope(NAME)
        old.retire()
        self.entries.set((self.o.path,), float(len(self.inline) + len(self.file)))
        self.reloaded.set((), self.mtime)

    async def reload_now(self) -> None:
        """Re-read the file (off the event loop) and swap the data in on the loop."""
        self._apply(await asyncio.get_running_loop().run_in_executor(None, self._read))

    async def start(self) -> None:
        self.entries.set((self.o.path,), float(len(self.inline)))
        await self.reload_now()
        if self.o.reload > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.o.reload)
            try:
                await self.reload_now()
            except Exception as exc:  # a reload failure must not stop later reloads
                self.process.error(f"reload of {self.o.path} failed: {exc!r}", NAME)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def v4(self, name: str) -> list[str]:
        return _lookup(self.file.name4, self.file.wild4, name) + _lookup(self.inline.name4, self.inline.wild4, name)

    def v6(self, name: str) -> list[str]:
        return _lookup(self.file.name6, self.file.wild6, name) + _lookup(self.inline.name6, self.inline.wild6, name)

    def names(self, addr: str) -> list[str]:
        return self.file.addr.get(addr, []) + self.inline.addr.get(addr, [])

    # -- the handler -----------------------------------------------------------------------------------------
    async def serve(self, req: Request) -> Result:
        nxt = self.next
        assert nxt is not None
        name = req.name_lower
        qtype = req.qtype
        scope = self.scope
        if qtype != _PTR and not _in_zones(name, self.o.origins):
            return await nxt(req)
        rrset: dns.rrset.RRset | None = None
        owner = req.qname.canonicalize()  # CoreDNS answers with the lower-cased name
        if qtype == _PTR:
            addr = _address_from_reverse(name)
            found = self.names(addr) if addr else []
            if not found:
                return await nxt(req)
            rrset = dns.rrset.RRset(owner, _IN, _PTR)
            for target in found:
                rrset.add(_ptr(dns.name.from_text(target)), self.o.ttl)
        elif qtype in (_A, _AAAA):
            ips = self.v4(name) if qtype == _A else self.v6(name)
            if ips:
                rrset = dns.rrset.RRset(owner, _IN, _A if qtype == _A else _AAAA)
                for ip in ips:
                    rrset.add(_address(qtype, ip), self.o.ttl)
        elif self.o.fallthrough_unsupported:
            return await nxt(req)
        if rrset is None and not self.v4(name) and not self.v6(name):
            if self.o.fallthrough is not None and _in_zones(name, self.o.fallthrough):
                return await nxt(req)
            return Result(dns.rcode.SERVFAIL, plugin=NAME)
        reply = reply_for(req)
        if rrset is not None:
            reply.answer.append(rrset)
        return Result(0, reply, plugin=NAME, cache=CachePolicy(scope))


def _address(qtype: int, ip: str) -> dns.rdata.Rdata:
    if qtype == _A:
        return dns.rdtypes.IN.A.A(_IN, _A, ip)  # type: ignore[no-untyped-call]
    return dns.rdtypes.IN.AAAA.AAAA(_IN, _AAAA, ip)  # type: ignore[no-untyped-call]


def _ptr(target: dns.name.Name) -> dns.rdata.Rdata:
    return dns.rdtypes.ANY.PTR.PTR(_IN, _PTR, target)  # type: ignore[no-untyped-call]


def _address_from_reverse(name: str) -> str:
    """The address a full reverse name stands for (dnsutil.ExtractAddressFromReverse), "" otherwise."""
    if name.endswith(".in-addr.arpa."):
        parts = name[: -len(".in-addr.arpa.")].split(".")
        if len(parts) == 4:
            try:
                return str(ipaddress.IPv4Address(".".join(reversed(parts))))
            except ValueError:
                return ""
    elif name.endswith(".ip6.arpa."):
        nibbles = name[: -len(".ip6.arpa.")].split(".")
        if len(nibbles) == 32 and all(len(n) == 1 for n in nibbles):
            try:
                return str(ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16)))
            except ValueError:
                return ""
    return ""


def setup(c: Controller) -> Wrapper:
    o = parse(c)
    h = Hosts(o, c.process)
    c.on_startup(h.start)
    c.on_shutdown(h.stop)

    def wrap(next_handler: Handler) -> Handler:
        h.next = next_handler
        return h.serve

    return wrap

