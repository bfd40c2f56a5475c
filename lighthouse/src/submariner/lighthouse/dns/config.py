"""From parsed server blocks to listeners: key normalisation, duplicate checks and per-query block selection.

Ports of CoreDNS's `plugin.SplitHostPort` + `cidr.Split/Reverse` (keys), `dnsserver.register`
(`InspectServerBlocks`, `groupConfigsByListenAddr`, `validateZonesAndListeningAddresses`) and the zone walk
at the top of `Server.ServeDNS`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

import dns.exception
import dns.name

from submariner.lighthouse.dns.corefile import ServerBlock
from submariner.lighthouse.dns.plugin import Directive, ServerKey, SetupError

__all__ = [
    "ONCE_ONLY",
    "SETUP_ONLY",
    "BlockConfig",
    "ZoneIndex",
    "build_configs",
    "check_once_only",
    "group_listeners",
    "parse_key",
]

#: Plugins CoreDNS allows only once per server block (their setup fails with `plugin.ErrOnce`).
ONCE_ONLY = frozenset(
    {"errors", "cache", "hosts", "kubernetes", "prometheus", "ready", "loop", "dnssec", "tsig", "nsid", "view",
     "grpc", "shed", "pprof"}
)

#: Directives that configure the server but add no handler: a block with only these has no plugin chain,
#: and CoreDNS answers REFUSED for its zones.
SETUP_ONLY = frozenset({"reload", "health", "ready", "bind", "root", "debug", "multisocket", "timeouts", "import"})

_TYPE_DS = 43
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_GO_INT = re.compile(r"[+-]?[0-9]+")


@dataclass(slots=True, eq=False)
class BlockConfig:
    """One server block with its keys normalised: every zone of it shares one plugin chain."""

    keys: list[ServerKey]
    directives: list[Directive]
    file: str
    line: int


# -- keys --------------------------------------------------------------------------------------------------


def parse_key(raw: str, default_port: int) -> list[ServerKey]:
    """`[scheme://]zone[:port]` → keys; a CIDR zone becomes its reverse zones on octet/nibble boundaries."""
    rest = raw
    m = _SCHEME.match(raw)
    if m:
        scheme = m.group(1)
        if scheme != "dns":
            raise SetupError(f"transport {scheme}:// is not supported (only dns://): {raw}")
        rest = raw[m.end() :]
    host, port = rest, default_port
    colon = rest.rfind(":")
    if colon == len(rest) - 1:
        raise SetupError(f"expecting data after last colon: {json.dumps(rest, ensure_ascii=False)}")
    if colon != -1 and _GO_INT.fullmatch(rest[colon + 1 :]):
        port = int(rest[colon + 1 :])
        host = rest[:colon]
        if not 0 <= port <= 65535:
            raise SetupError(f"invalid port {port} in {raw}")
    if len(host.encode("utf-8", "surrogatepass")) > 255:
        raise SetupError(f"specified zone is too long: {len(host.encode('utf-8', 'surrogatepass'))} > 255")
    if not _is_domain_name(host):
        raise SetupError(f"zone is not a valid domain name: {host}")
    network = _parse_cidr(host)
    if network is None:
        zones = [_canonical_zone(host)]
    else:
        if host[0] == ":" or (host[0] == "0" and ":" in host):
            raise SetupError(f"invalid CIDR {host}")
        zones = _reverse_zones(network)
    return [ServerKey("dns", zone, port) for zone in zones]


def _fqdn(s: str) -> str:
    # miekg/dns Fqdn: a trailing dot counts only when not escaped by an odd number of backslashes.
    if s.endswith("."):
        body = s[:-1]
        trailing = len(body) - len(body.rstrip("\\"))
        if trailing % 2 == 0:
            return s
    return s + "."


def _is_domain_name(s: str) -> bool:
    """miekg/dns IsDomainName: very liberal (any byte goes), only label and name lengths and dots count."""
    if not s:
        return False
    b = _fqdn(s).encode("utf-8", "surrogatepass")
    off = begin = 0
    was_dot = False
    i, n = 0, len(b)
    while i < n:
        c = b[i]
        if c == 0x5C:  # backslash
            if off + 1 > 256:
                return False
            if i + 4 <= n and b[i + 1 : i + 4].isdigit():
                i += 3
                begin += 3
            else:
                i += 1
                begin += 1
            was_dot = False
        elif c == 0x2E:  # dot
            if (i == 0 and n > 1) or was_dot:
                return False
            was_dot = True
            label_len = i - begin
            if label_len >= 64:
                return False
            off += 1 + label_len
            if off > 256:
                return False
            begin = i + 1
        else:
            was_dot = False
        i += 1
    return True


def _canonical_zone(host: str) -> str:
    """The zone in dnspython's presentation form, lower-cased, so it compares equal to `qname.to_text().lower()`."""
    text = _fqdn(host)
    if text == ".":
        return "."
    b = text.encode("utf-8", "surrogatepass")
    labels: list[bytes] = []
    cur = bytearray()
    i, n = 0, len(b)
    try:
        while i < n:
            c = b[i]
            if c == 0x5C:
                if i + 4 <= n and b[i + 1 : i + 4].isdigit():
                    value = int(b[i + 1 : i + 4])
                    if value > 255:
                        raise SetupError(f"zone is not a valid domain name: {host}")
                    cur.append(value)
                    i += 4
                else:
                    cur.append(b[i + 1])
                    i += 2
                continue
            if c == 0x2E:
                labels.append(bytes(cur))
                cur = bytearray()
            else:
                cur.append(c)
            i += 1
        return dns.name.Name([*labels, b""]).to_text().lower()
    except (dns.exception.DNSException, IndexError):
        raise SetupError(f"zone is not a valid domain name: {host}") from None


def _parse_cidr(s: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """Go's net.ParseCIDR: `address/decimal-length`, no IPv6 zone, host bits allowed (and masked)."""
    addr, sep, mask = s.partition("/")
    if not sep or not mask.isascii() or not mask.isdigit() or "%" in addr:
        return None
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    ones = int(mask)
    if ones > ip.max_prefixlen:
        return None
    return ipaddress.ip_network((ip, ones), strict=False)


def _reverse_zones(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    """CoreDNS `cidr.Split` + `cidr.Reverse`: widen the prefix to the next label boundary and name each part."""
    step = 8 if network.version == 4 else 4
    ones = network.prefixlen
    new_prefix = -(-ones // step) * step  # round up to a label boundary
    drop = (network.max_prefixlen - new_prefix) // step
    zones: list[str] = []
    for part in network.subnets(new_prefix=new_prefix):
        labels = part.network_address.reverse_pointer.split(".")
        zones.append(".".join(labels[drop:]) + ".")
    return zones


def build_configs(blocks: list[ServerBlock], default_port: int) -> list[BlockConfig]:
    """Normalise every block's keys; an invalid key fails start-up naming the block's file and line."""
    configs: list[BlockConfig] = []
    for block in blocks:
        keys: list[ServerKey] = []
        for raw in block.keys:
            try:
                keys.extend(parse_key(raw, default_port))
            except SetupError as e:
                raise SetupError(f"{block.file}:{block.line} - Error during parsing: {e}") from None
        configs.append(BlockConfig(keys, block.directives, block.file, block.line))
    return configs


def check_once_only(config: BlockConfig, once: Collection[str]) -> None:
    """Fail like CoreDNS when a once-only plugin appears twice in one block (reported at the second one)."""
    seen: set[str] = set()
    for d in config.directives:
        if d.name in once:
            if d.name in seen:
                raise d.error("this plugin can only be used once per Server Block")
            seen.add(d.name)


# -- listeners ---------------------------------------------------------------------------------------------


def _norm_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _zone_addr(scheme: str, zone: str, port: int, address: str) -> str:
    text = f"{scheme}://{zone}:{port}"
    return f"{text} on {address}" if address else text


def group_listeners(
    configs: list[BlockConfig], bind_of: Callable[[BlockConfig], list[str]] | None = None
) -> dict[tuple[str, int], list[BlockConfig]]:
    """Group blocks by (bind host, port), "" meaning all addresses; each group is one server.

    Rejects what CoreDNS rejects: the same zone+port (+bind) twice, and an unbound and a bound block for the
    same zone+port. Blocks with `view` may share zone+port, but only ahead of the unfiltered one (CoreDNS
    registers unfiltered blocks and merely checks filtered ones against them).
    """
    registered: dict[tuple[str, str, int, str], tuple[str, str, int, str]] = {}
    unbound: dict[tuple[str, str, int, str], tuple[str, str, int, str]] = {}
    groups: dict[tuple[str, int], list[BlockConfig]] = {}
    for cfg in configs:
        hosts = [_norm_host(h) for h in (bind_of(cfg) if bind_of else [""])] or [""]
        filtered = any(d.name == "view" for d in cfg.directives)
        for key in cfg.keys:
            for host in hosts:
                akey = (key.scheme, key.zone, key.port, host)
                if akey in registered:
                    raise SetupError(f"cannot serve {_zone_addr(*akey)} - it is already defined")
                ukey = (key.scheme, key.zone, key.port, "")
                overlap = None
                if ukey in unbound:
                    if host == "":
                        overlap = unbound[ukey]
                    elif ukey in registered:
                        overlap = ukey
                if overlap is not None:
                    raise SetupError(
                        f"cannot serve {_zone_addr(*akey)} - zone overlap listener capacity with {_zone_addr(*overlap)}"
                    )
                if not filtered:
                    registered[akey] = akey
                    unbound[ukey] = akey
                group = groups.setdefault((host, key.port), [])
                if not group or group[-1] is not cfg:
                    group.append(cfg)
    return groups


class ZoneIndex:
    """The zones one listener serves, for CoreDNS's per-query block choice (longest zone, DS, `.`).

    `port` limits the index to keys on that port (a block may list keys on several ports). `has_chain` tells
    whether a block has any query plugin; by default: a directive outside `SETUP_ONLY`. A matching block
    without one means REFUSED, as in CoreDNS.
    """

    __slots__ = ("_root", "_zones")

    def __init__(self, configs: Iterable[BlockConfig], port: int | None = None, *,
                 has_chain: Callable[[BlockConfig], bool] | None = None) -> None:
        chain = has_chain or _has_query_plugin
        zones: dict[str, list[tuple[BlockConfig, bool]]] = {}
        for cfg in configs:
            ok = chain(cfg)
            for key in cfg.keys:
                if port is not None and key.port != port:
                    continue
                entries = zones.setdefault(key.zone, [])
                if not any(c is cfg for c, _ in entries):
                    entries.append((cfg, ok))
        self._zones = zones
        self._root = zones.get(".", [])

    def select(self, qname_lower: str, qtype: int,
               accept: Callable[[BlockConfig], bool] | None = None) -> BlockConfig | None:
        """The block that answers `qname_lower` (lower-case FQDN text), or None for REFUSED.

        Tries the full name, then strips one label at a time (never reaching the root): the first hit, the
        longest zone, wins. For DS the walk goes on and the last (shortest) hit is used, since DS lives in
        the parent. Otherwise the `.` block. `accept` filters blocks (views): the first accepted one wins.
        """
        zones = self._zones
        ds = qtype == _TYPE_DS
        ds_choice: BlockConfig | None = None
        q = qname_lower
        last = len(q) - 1
        escaped = "\\" in q
        off = 0
        while True:
            entries = zones.get(q[off:] if off else q)
            if entries is not None:
                for cfg, ok in entries:
                    if not ok:
                        return None  # zone defined but without plugins
                    if accept is None or accept(cfg):
                        if not ds:
                            return cfg
                        ds_choice = cfg
            dot = q.find(".", off, last)
            while escaped and dot != -1 and _is_escaped(q, dot):
                dot = q.find(".", dot + 1, last)
            if dot == -1:
                break
            off = dot + 1
        if ds_choice is not None:
            return ds_choice
        for cfg, ok in self._root:
            if ok and (accept is None or accept(cfg)):
                return cfg
        return None


def _is_escaped(q: str, dot: int) -> bool:
    j = dot - 1
    while j >= 0 and q[j] == "\\":
        j -= 1
    return (dot - j) % 2 == 0  # an odd number of backslashes escapes the dot


def _has_query_plugin(cfg: BlockConfig) -> bool:
    return any(d.name not in SETUP_ONLY for d in cfg.directives)
