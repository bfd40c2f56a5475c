"""Rules as data, and their canonical form.

Why a canonical form: iptables rewrites what it is given (`--set-mark 0xC0000/0xC0000` is listed as
`--set-xmark 0xc0000/0xc0000`, `-s 10.0.0.1` as `-s 10.0.0.1/32`, `-p tcp --dport 1` as
`-p tcp -m tcp --dport 1`, `-p all` disappears), so desired rules and `iptables-save` listings can only be
compared by meaning. `canonical` parses both into one normal form: base options in a fixed order, match
modules sorted (matches are ANDed, their order carries no meaning) with their options sorted, then the
target with its options in normal form. The canonical tuple is itself valid iptables arguments and
`canonical(canonical(x)) == canonical(x)`.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
}


@dataclass(frozen=True)
class RuleSpec:
    """One rule's arguments without `-A CHAIN`, e.g. ("-s", "10.8.0.0/16", "-d", "10.9.0.0/16", "-j", "ACCEPT")."""

    args: tuple[str, ...]


@dataclass(frozen=True)
class Hook:
    """A jump from a chain we do not own (a built-in chain, or another component's chain) into one of ours.

    position "first" means the hook must be rule 1 of `builtin` (several "first" hooks of one ruleset into
    the same chain occupy rules 1..k in list order); "append" means present exactly once, anywhere.
    """

    table: str
    builtin: str
    target: str
    position: str = "first"
    match: tuple[str, ...] = ()

    @property
    def args(self) -> tuple[str, ...]:
        return (*self.match, "-j", self.target)


@dataclass
class Ruleset:
    """Desired state of the chains one component owns: exact contents per chain, plus hooks into others'."""

    chains: dict[tuple[str, str], list[RuleSpec]]
    hooks: list[Hook] = field(default_factory=list)

    def tables(self) -> list[str]:
        seen: dict[str, None] = {}
        for table, _ in self.chains:
            seen.setdefault(table, None)
        for hook in self.hooks:
            seen.setdefault(hook.table, None)
        return list(seen)


class RuleParseError(ValueError):
    """Rule arguments that do not parse (e.g. an option without its value)."""


_ALIASES = {
    "--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d", "--protocol": "-p",
    "--in-interface": "-i", "--out-interface": "-o", "--jump": "-j", "--goto": "-g", "--match": "-m",
    "--fragment": "-f", "--destination-port": "--dport", "--source-port": "--sport",
    "--destination-ports": "--dports", "--source-ports": "--sports",
}
_BASE_ORDER = ("-s", "-d", "-i", "-o", "-p", "-f")
_PROTO_NUMBERS = {"1": "icmp", "6": "tcp", "17": "udp", "132": "sctp"}
# Options that imply `-m <proto>` after `-p <proto>` when no module was named.
_IMPLICIT_PROTO_MODULES = ("tcp", "udp", "icmp", "sctp", "udplite")
_FLAG_LIST_OPTIONS = ("--ctstate", "--state")
# iptables lists ICMP types and well-known ports by number
_ICMP_TYPES = {
    "echo-reply": "0", "destination-unreachable": "3", "network-unreachable": "3/0", "host-unreachable": "3/1",
    "protocol-unreachable": "3/2", "port-unreachable": "3/3", "fragmentation-needed": "3/4",
    "source-quench": "4", "redirect": "5", "echo-request": "8", "router-advertisement": "9",
    "router-solicitation": "10", "time-exceeded": "11", "ttl-zero-during-transit": "11/0",
    "ttl-zero-during-reassembly": "11/1", "parameter-problem": "12", "timestamp-request": "13",
    "timestamp-reply": "14", "address-mask-request": "17", "address-mask-reply": "18",
}
_SERVICES = {"ssh": "22", "domain": "53", "http": "80", "https": "443", "bgp": "179", "ipsec-nat-t": "4500"}
_U32 = 0xFFFFFFFF


def _is_option(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not token[1:].replace(".", "").isdigit()


def _int(text: str) -> int:
    return int(text, 0)


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return text  # a hostname or something iptables understands and we need not


def _mark(text: str, *, default_mask: int = _U32) -> tuple[int, int]:
    value, _, mask = text.partition("/")
    return _int(value), (_int(mask) if mask else default_mask)


def _hex_pair(value: int, mask: int) -> str:
    return f"0x{value:x}" if mask == _U32 else f"0x{value:x}/0x{mask:x}"


def _normal_value(option: str, values: list[str]) -> list[str]:
    if option == "--tcp-flags" and len(values) == 2:
        return [",".join(sorted(v.upper() for v in values[0].split(","))),
                ",".join(sorted(v.upper() for v in values[1].split(",")))]
    if option in _FLAG_LIST_OPTIONS and len(values) == 1:
        return [",".join(sorted(v.upper() for v in values[0].split(",")))]
    if option == "--mark" and len(values) == 1:
        return [_hex_pair(*_mark(values[0]))]
    if option == "--icmp-type" and len(values) == 1:
        return [_ICMP_TYPES.get(values[0].lower(), values[0])]
    if option in ("--dport", "--sport") and len(values) == 1:
        return [":".join(_SERVICES.get(p, p) for p in values[0].split(":"))]
    return [v.lower() if v.lower().startswith("0x") else v for v in values]


@dataclass
class _Item:
    option: str
    values: list[str]
    negated: bool = False

    def tokens(self) -> list[str]:
        return (["!"] if self.negated else []) + [self.option, *self.values]


def _tokenize(args: Sequence[str]) -> list[_Item]:
    items: list[_Item] = []
    i, n = 0, len(args)
    negate = False
    while i < n:
        token = args[i]
        if token == "!":
            negate = True
            i += 1
            continue
        if not _is_option(token):
            raise RuleParseError(f"unexpected value {token!r} in rule {' '.join(args)!r}")
        option = _ALIASES.get(token, token)
        i += 1
        values: list[str] = []
        while i < n and args[i] != "!" and not _is_option(args[i]):
            values.append(args[i])
            i += 1
        # Old-style post-option negation: `-s ! 10.0.0.0/8`.
        if i < n and args[i] == "!" and not values and i + 1 < n and not _is_option(args[i + 1]):
            negate = True
            values.append(args[i + 1])
            i += 2
        items.append(_Item(option, values, negate))
        negate = False
    return items


def _target_options(target: str, items: list[_Item]) -> list[str]:
    """The target's options in normal form (MARK collapsed to --set-xmark, defaults made explicit)."""
    out: list[_Item] = []
    for item in items:
        option, values = item.option, item.values
        if target in ("MARK", "CONNMARK") and option in ("--set-mark", "--set-xmark", "--and-mark", "--or-mark",
                                                         "--xor-mark") and len(values) == 1:
            if option == "--set-mark":
                value, mask = _mark(values[0])
                mask = (mask | value) & _U32
            elif option == "--set-xmark":
                value, mask = _mark(values[0])
            elif option == "--and-mark":
                value, mask = 0, (~_int(values[0])) & _U32
            elif option == "--or-mark":
                value = _int(values[0])
                mask = value
            else:
                value, mask = _int(values[0]), 0
            out.append(_Item("--set-xmark", [f"0x{value:x}/0x{mask:x}"]))
        elif option in ("--to-source", "--to-destination", "--to") and values:
            out.append(_Item(option, values, item.negated))
        else:
            out.append(_Item(option, _normal_value(option, values), item.negated))
    if target == "REJECT" and not any(i.option == "--reject-with" for i in out):
        out.append(_Item("--reject-with", ["icmp-port-unreachable"]))
    tokens: list[str] = []
    for item in sorted(out, key=lambda i: (i.option, i.values)):
        tokens += item.tokens()
    return tokens


# Distinct argument tuples remembered by `canonical`: a planning pass sees every rule twice (as listed by
# iptables-save and as desired), so this must exceed twice the largest ruleset or the LRU evicts each entry
# just before its next use. 10,000 global IPs = 20,000 rules = ~40,000 entries (~11 MiB measured).
CANONICAL_CACHE_SIZE = 1 << 17


def canonical(args: Sequence[str]) -> tuple[str, ...]:
    """Rule arguments by meaning; equal tuples mean the kernel holds the same rule.

    Memoised: every apply re-lists and re-renders every rule, and parsing 20,000 of them again each time cost
    about a second; the result is an immutable tuple, so sharing it is safe. Parse errors are not cached."""
    return _canonical_cached(args if isinstance(args, tuple) else tuple(args))


@functools.lru_cache(maxsize=CANONICAL_CACHE_SIZE)
def _canonical_cached(args: tuple[str, ...]) -> tuple[str, ...]:
    items = _tokenize(args)
    base: dict[str, _Item] = {}
    modules: list[tuple[str, list[_Item]]] = []
    target: _Item | None = None
    target_items: list[_Item] = []
    current: list[_Item] | None = None  # options of the module being read
    implicit: dict[str, list[_Item]] = {}
    protocol: str | None = None
    for item in items:
        if target is not None:
            target_items.append(item)
            continue
        if item.option in _BASE_ORDER:
            if item.option != "-f" and len(item.values) != 1:
                raise RuleParseError(f"{item.option} needs one value in {' '.join(args)!r}")
            value = item.values[0] if item.values else ""
            if item.option in ("-s", "-d"):
                value = _address(value)
            elif item.option == "-p":
                value = _PROTO_NUMBERS.get(value, value.lower())
                if value == "all" and not item.negated:
                    continue
                protocol = value
            base[item.option] = _Item(item.option, [value] if item.values else [], item.negated)
            continue
        if item.option == "-m":
            if not item.values:
                raise RuleParseError(f"-m without a module in {' '.join(args)!r}")
            name = item.values[0]
            existing = next((m for m in modules if m[0] == name), None)
            if name in _IMPLICIT_PROTO_MODULES and existing is not None:
                current = existing[1]  # nf_tables lists `-m tcp --dport 1 -m tcp --syn` as one tcp match
            else:
                current = []
                modules.append((name, current))
            continue
        if item.option in ("-j", "-g"):
            if not item.values:
                raise RuleParseError(f"{item.option} without a target in {' '.join(args)!r}")
            target = item
            continue
        if current is None:
            # An option before any `-m`: implied by the protocol (iptables loads `-m tcp` for `-p tcp`).
            if protocol in _IMPLICIT_PROTO_MODULES:
                implicit.setdefault(protocol, []).append(item)
                continue
            raise RuleParseError(f"option {item.option} outside any match in {' '.join(args)!r}")
        current.append(item)
    for name, opts in implicit.items():
        existing = next((m for m in modules if m[0] == name), None)
        if existing is not None:
            existing[1].extend(opts)
        else:
            modules.append((name, opts))

    tokens: list[str] = []
    for option in _BASE_ORDER:
        if option in base:
            tokens += base[option].tokens()
    rendered_modules: list[list[str]] = []
    for name, opts in modules:
        if not opts and name == protocol:
            continue  # `-p udp -m udp` with no udp option means the same as `-p udp`
        body: list[list[str]] = []
        for opt in opts:
            if opt.option == "--syn":  # listed as the flags it stands for
                opt = _Item("--tcp-flags", ["FIN,SYN,RST,ACK", "SYN"], opt.negated)
            body.append(_Item(opt.option, _normal_value(opt.option, opt.values), opt.negated).tokens())
        body.sort(key=lambda t: [x for x in t if x != "!"] + (["!"] if "!" in t else []))
        rendered_modules.append(["-m", name, *[t for b in body for t in b]])
    for module in sorted(rendered_modules):
        tokens += module
    if target is not None:
        name = target.values[0]
        tokens += [target.option, name, *_target_options(name, target_items)]
    return tuple(tokens)


def jump_target(args: Sequence[str]) -> str | None:
    """The `-j`/`-g` target of a rule, or None."""
    for i, token in enumerate(args[:-1]):
        if token in ("-j", "-g", "--jump", "--goto"):
            return args[i + 1]
    return None
