"""`loadbalance [round_robin | weighted FILE] { reload DUR; prefer CIDR... }`: reorders A/AAAA/MX records.

Only NOERROR replies, never AXFR/IXFR, input message never mutated. Per section, records are regrouped as
CNAME, other types, A/AAAA, MX, with the address and MX groups rotated. When the inner answer is cacheable,
round robin hands the server the rotations as `CachePolicy.variants`, so cache hits keep rotating without
running the chain. `weighted` picks a random weighted address first per query and is never cached; `prefer`
moves addresses in the listed subnets to the front.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import ipaddress
import os
import random
from collections.abc import Callable
from typing import Any

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from submariner.lighthouse.dns.plugin import (
    CachePolicy,
    Controller,
    Directive,
    Handler,
    Request,
    Result,
    Wrapper,
    parse_duration,
)

NAME = "loadbalance"
ONCE = False
SYNC_SAFE = True  # the handler needs no task context (see plugin.py)
MAX_VARIANTS = 16

_A, _AAAA, _MX, _CNAME = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.MX, dns.rdatatype.CNAME
_XFR = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Record = tuple[dns.name.Name, int, int, int, Any]  # owner, class, type, ttl, rdata


def _records(section: list[dns.rrset.RRset]) -> list[Record]:
    return [(rrset.name, rrset.rdclass, rrset.rdtype, rrset.ttl, rd) for rrset in section for rd in rrset]


def _rrsets(records: list[Record]) -> list[dns.rrset.RRset]:
    """One RRset per record, so any order (and duplicates) survive rendering."""
    out = []
    for name, rdclass, rdtype, ttl, rd in records:
        rrset = dns.rrset.RRset(name, dns.rdataclass.RdataClass.make(rdclass), dns.rdatatype.RdataType.make(rdtype))
        rrset.add(rd, ttl)
        out.append(rrset)
    return out


def _rotate(items: list[Record], k: int) -> list[Record]:
    if len(items) < 2:
        return items
    k %= len(items)
    return items[k:] + items[:k]


def _ip(record: Record) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if record[2] in (_A, _AAAA):
        return ipaddress.ip_address(record[4].address)
    return None


class Balancer:
    def __init__(self, prefer: list[Network], weights: WeightFile | None = None) -> None:
        self.prefer = prefer
        self.weights = weights

    def _section(self, section: list[dns.rrset.RRset], k: int) -> list[dns.rrset.RRset]:
        records = _records(section)
        cname = [r for r in records if r[2] == _CNAME]
        address = [r for r in records if r[2] in (_A, _AAAA)]
        mx = [r for r in records if r[2] == _MX]
        rest = [r for r in records if r[2] not in (_CNAME, _A, _AAAA, _MX)]
        if not address and not mx:
            return section
        if self.weights is not None:
            address = self.weights.top_first(address)
        else:
            address = _rotate(address, k)
        mx = _rotate(mx, k)
        if self.prefer:
            preferred = [r for net in self.prefer for r in address if (ip := _ip(r)) is not None and ip in net]
            address = _dedup(preferred) + [r for r in address if r not in preferred]
        return _rrsets(cname + rest + address + mx)

    def reorder(self, msg: dns.message.Message, k: int) -> dns.message.Message:
        out = copy.copy(msg)
        out.sections = [list(s) for s in msg.sections]
        out.index = {}
        for i in (1, 2, 3):
            out.sections[i] = self._section(msg.sections[i], k)
        return out

    def span(self, msg: dns.message.Message) -> int:
        """How many distinct rotations the message has (longest address or MX group)."""
        longest = 1
        for section in msg.sections[1:]:
            records = _records(section)
            longest = max(longest, sum(1 for r in records if r[2] in (_A, _AAAA)),
                          sum(1 for r in records if r[2] == _MX))
        return longest

    def wrap(self, next_handler: Handler) -> Handler:
        async def serve(req: Request) -> Result:
            result = await next_handler(req)
            msg = result.msg
            if msg is None or msg.rcode() != 0 or req.qtype in _XFR or not msg.question:
                return result
            policy = result.cache
            if self.weights is None and not self.prefer and self.span(msg) < 2:
                return result  # nothing to reorder: keep the inner reply (and its fast paths) untouched
            if self.weights is not None or policy is None:
                result.msg = self.reorder(msg, random.randrange(1 << 16))
                result.cache = None if self.weights is not None else policy
                return result
            bases = [msg, *(policy.variants or [])]
            count = min(max(self.span(msg), len(bases)), MAX_VARIANTS * max(1, len(bases)))
            start = random.randrange(1 << 16)
            rotated = [self.reorder(bases[j % len(bases)], start + j) for j in range(count)]
            result.msg = rotated[0]
            tags = None
            if policy.hit_tags:  # reply j is built from base j % len(bases): so are its tags
                tags = {c: [t[(j % len(bases)) % len(t)] for j in range(count)]
                        for c, t in policy.hit_tags.items() if t}
            result.cache = CachePolicy(policy.scope, policy.max_age, rotated[1:] or None, policy.generation, tags)
            return result

        return serve


def _dedup(records: list[Record]) -> list[Record]:
    seen: list[Record] = []
    for r in records:
        if r not in seen:
            seen.append(r)
    return seen


class WeightFile:
    """`weighted FILE`: per-name address weights, re-read every `reload` when its content changed."""

    def __init__(self, path: str, reload: float, process: Any) -> None:
        self.path = path
        self.reload = reload
        self.process = process
        self.digest = b""
        self.domains: dict[str, list[tuple[Any, int]]] = {}
        self.task: asyncio.Task[None] | None = None
        self.rand: Callable[[int], int] = random.randrange

    def update(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise FileNotFoundError(f"weight file open error: {exc}") from None
        digest = hashlib.md5(data).digest()  # change detection only, as CoreDNS
        if digest == self.digest:
            return
        self.domains = self.parse(data.decode(errors="replace"))
        self.digest = digest
        self.process.info(f"Successfully reloaded weight file {self.path}", NAME)

    def parse(self, text: str) -> dict[str, list[tuple[Any, int]]]:
        domains: dict[str, list[tuple[Any, int]]] = {}
        name = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) == 1:
                try:
                    ipaddress.ip_address(fields[0])
                except ValueError:
                    name = fields[0] if fields[0].endswith(".") else fields[0] + "."
                    domains.setdefault(name.lower(), [])
                    continue
                raise ValueError(f'Wrong domain name:"{fields[0]}" in weight file {self.path}. '
                                 "(Maybe a missing weight value?)")
            if len(fields) == 2:
                try:
                    ip = ipaddress.ip_address(fields[0])
                except ValueError:
                    raise ValueError(f'Wrong IP address:"{fields[0]}" in weight file {self.path}') from None
                if not fields[1].isdigit() or not 0 < int(fields[1]) < 256:
                    raise ValueError(f'Wrong weight value:"{fields[1]}" in weight file {self.path}')
                if not name:
                    raise ValueError(f"Missing domain name in weight file {self.path}")
                domains[name.lower()].append((ip, int(fields[1])))
                continue
            raise ValueError(f'Could not parse weight line:"{line}" in weight file {self.path}')
        return domains

    def top_first(self, address: list[Record]) -> list[Record]:
        if len(address) < 2:
            return address
        weighted = []
        for i, r in enumerate(address):
            weight = 1
            ip = _ip(r)
            for candidate, value in self.domains.get(r[0].to_text().lower(), []):
                if candidate == ip:
                    weight = value
                    break
            weighted.append((weight, i))
        weighted.sort(key=lambda wi: -wi[0])
        pick = self.rand(sum(w for w, _ in weighted))
        total = 0
        top = 0
        for weight, i in weighted:
            total += weight
            if pick < total:
                top = i
                break
        out = list(address)
        out[0], out[top] = out[top], out[0]
        return out

    def start(self) -> None:
        try:
            self.update()
        except FileNotFoundError as exc:
            if self.reload == 0:
                raise
            self.process.warning(f"Failed to open weight file:{exc}. Will try again in {self.reload}s", NAME)
        if self.reload > 0:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.reload)
            try:
                self.update()
            except (OSError, ValueError) as exc:
                self.process.error(str(exc), NAME)


def _parse(d: Directive, process: Any, root: str) -> tuple[list[Network], WeightFile | None]:
    weights: WeightFile | None = None
    args = d.args
    block = list(enumerate(d.block))
    if args and args[0] not in ("round_robin", "weighted"):
        raise d.error(f"unknown policy: {args[0]}")
    if args and args[0] == "round_robin" and len(args) > 1:
        raise d.error(f"unknown property for {args[0]}")
    if args and args[0] == "weighted":
        if len(args) < 2:
            raise d.error("missing weight file argument")
        if len(args) > 2:
            raise d.error("unexpected argument(s)")
        path = args[1] if os.path.isabs(args[1]) or not root else os.path.join(root, args[1])
        reload = 30.0
        rest = []
        for i, prop in block:
            line = d.block_line(i)
            if prop[0] == "reload":
                if len(prop) < 2:
                    raise d.error("reload duration value is missing", line)
                if len(prop) > 2:
                    raise d.error("unexpected argument", line)
                try:
                    reload = parse_duration(prop[1])
                except ValueError:
                    raise d.error(f"invalid reload duration '{prop[1]}'", line) from None
            else:
                rest.append((i, prop))
        block = rest
        weights = WeightFile(path, reload, process)
    prefer: list[Network] = []
    for i, prop in block:
        line = d.block_line(i)
        if prop[0] != "prefer":
            raise d.error(f"unknown property '{prop[0]}'", line)
        for cidr in prop[1:]:
            try:
                prefer.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError as exc:
                raise d.error(f'invalid CIDR "{cidr}": {exc}', line) from None
    return prefer, weights


def setup(c: Controller) -> Wrapper:
    prefer: list[Network] = []
    weights: WeightFile | None = None
    root = str(getattr(c.process, "singletons", {}).get("root", ""))
    for d in c.directives:
        prefer, weights = _parse(d, c.process, root)
    if weights is not None:
        c.on_startup(weights.start)
        c.on_shutdown(weights.stop)
    return Balancer(prefer, weights).wrap
