"""`rewrite`: rewrite the query before the rest of the chain sees it, and map the reply back (CoreDNS semantics).

Request rules (`name`, `type`, `class`, `edns0`) change a copy of the query; response rules (`answer auto`,
`answer name`, `answer value`, `ttl`, `rcode`) apply to the reply in reverse order. The client always gets its
own question back. The inner plugins' `Result.cache` is passed through (with the reply mapped back) because the
rewrite of a given question is deterministic; rules that depend on the client (`edns0 subnet`, `{client_ip}`
and the like) make the reply uncacheable.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from submariner.lighthouse.dns.plugin import (
    SERVER_WRITTEN,
    SUPPORTED_EDNS_OPTIONS,
    CachePolicy,
    Controller,
    Handler,
    Request,
    Result,
    SetupError,
    Wrapper,
    register_edns_option,
    reply_for,
)
from submariner.lighthouse.dns.process import RCODE_TEXT

NAME = "rewrite"
ONCE = False
SYNC_SAFE = True  # the handler needs no task context (see plugin.py)

STOP, CONTINUE = "stop", "continue"
MATCH_TYPES = ("exact", "prefix", "suffix", "substring", "regex")
MAX_REGEX = 10_000
_NSID, _SUBNET = 3, 8
_U16 = struct.Struct("!H")
_STRING_TO_RCODE: dict[str, int] = {**{v: k for k, v in RCODE_TEXT.items()}, "BADVERS": 16}
_CLASSES = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
_VARIABLES = ("{qname}", "{qtype}", "{client_ip}", "{client_port}", "{protocol}", "{server_ip}", "{server_port}")
_CLIENT_VARIABLES = frozenset({"{client_ip}", "{client_port}", "{protocol}", "{server_ip}", "{server_port}"})
#: Record types whose value `answer value` rewrites, and the dnspython attribute holding it.
_VALUE_FIELDS = {dns.rdatatype.SRV: "target", dns.rdatatype.MX: "exchange", dns.rdatatype.CNAME: "target",
                 dns.rdatatype.NS: "target", dns.rdatatype.DNAME: "target", dns.rdatatype.NAPTR: "replacement",
                 dns.rdatatype.SOA: "mname", dns.rdatatype.PTR: "target"}


class RuleError(Exception):
    """A rule CoreDNS would reject; the text is CoreDNS's message."""


def normalize(name: str) -> str:
    """plugin.Name(name).Normalize(): lower case, fully qualified."""
    name = name.lower()
    return name if name.endswith(".") else name + "."


def _compile(pattern: str, to: str) -> re.Pattern[str]:
    """isValidRegexPattern: the pattern compiles and `to` uses no more `{N}` groups than it has."""
    if len(pattern) > MAX_REGEX:
        raise RuleError(f"regex pattern too long: {len(pattern)} > {MAX_REGEX}")
    try:
        compiled = re.compile(pattern)
    except re.error:
        raise RuleError(f"invalid regex matching pattern: {pattern}") from None
    used = sum(1 for i in range(101) if "{" + str(i) + "}" in to)
    if used > compiled.groups:
        raise RuleError(f"the rewrite regex pattern ({to}) uses more subexpressions than its corresponding "
                        f"matching regex pattern ({pattern})")
    return compiled


def _substitute(match: re.Match[str], replacement: str) -> str:
    out = replacement
    groups = [match.group(0), *(g or "" for g in match.groups())]
    for i, value in enumerate(groups):
        out = out.replace("{" + str(i) + "}", value)
    return out


# -- string rewriters for response rules --------------------------------------------------------------------------


StringRewriter = Callable[[str], str]


def regex_rewriter(pattern: re.Pattern[str], replacement: str) -> StringRewriter:
    def rewrite(src: str) -> str:
        m = pattern.search(src)
        return _substitute(m, replacement) if m else src

    return rewrite


def remap_rewriter(orig: str, replacement: str) -> StringRewriter:
    """`answer auto`: the rewritten name (and names below it) back to the original."""

    def rewrite(src: str) -> str:
        if src == orig:
            return replacement
        if src.endswith("." + orig):
            return src[: len(src) - len(orig)] + replacement
        return src

    return rewrite


def suffix_rewriter(suffix: str, replacement: str) -> StringRewriter:
    def rewrite(src: str) -> str:
        return src[: len(src) - len(suffix)] + replacement if src.endswith(suffix) else src

    return rewrite


@dataclass(slots=True)
class Reply:
    """A reply being mapped back: the rcode, and per record its owner, TTL and data."""

    rcode: int


@dataclass(frozen=True, slots=True)
class ResponseRule:
    """One response rewrite: owner names, record values, TTL bounds or the rcode."""

    kind: str  # "name" | "value" | "ttl" | "rcode"
    rewriter: StringRewriter | None = None
    ttl: tuple[int, int] = (0, 0)
    rcodes: tuple[int, int] = (0, 0)

    def apply(self, reply: Reply, owner: str, ttl: int, rd: dns.rdata.Rdata) -> tuple[str, int, dns.rdata.Rdata]:
        if self.kind == "name":
            assert self.rewriter is not None
            return self.rewriter(owner), ttl, rd
        if self.kind == "value":
            attr = _VALUE_FIELDS.get(rd.rdtype)
            if attr is not None:
                assert self.rewriter is not None
                value = getattr(rd, attr).to_text()
                new = self.rewriter(value)
                if new != value:
                    rd = rd.replace(**{attr: dns.name.from_text(new)})
            return owner, ttl, rd
        if self.kind == "ttl":
            low, high = self.ttl
            if ttl < low:
                ttl = low
            elif ttl > high:
                ttl = high
            return owner, ttl, rd
        if reply.rcode == self.rcodes[0]:
            reply.rcode = self.rcodes[1]
        return owner, ttl, rd


# -- request-side state and rules ---------------------------------------------------------------------------------


@dataclass(slots=True)
class State:
    """The query as rules see and change it."""

    name: str  # lower-case FQDN text of the current question name
    qtype: int
    qclass: int
    req: Request
    options: list[dns.edns.Option] | None  # None: no OPT
    edns_changed: bool = False
    client_dependent: bool = False


def name_matcher(kind: str, frm: str, to: str) -> Callable[[str], str | None]:
    """The rewritten name when `name` matches, else None."""
    if kind == "exact":
        return lambda name: to if name == frm else None
    if kind == "prefix":
        return lambda name: to + name[len(frm):] if name.startswith(frm) else None
    if kind == "suffix":
        return lambda name: name[: len(name) - len(frm)] + to if name.endswith(frm) else None
    if kind == "substring":
        return lambda name: name.replace(frm, to) if frm in name else None
    pattern = _compile(frm, to)

    def regex(name: str) -> str | None:
        m = pattern.search(name)
        return _substitute(m, to) if m else None

    return regex


@dataclass(slots=True)
class Rule:
    """A parsed rule: `apply` returns the response rules it adds, or None when it does not match."""

    mode: str
    apply: Callable[[State], list[ResponseRule] | None]


def _name_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 2:
        raise RuleError("too few arguments for a name rule")
    if len(args) == 2:
        kind, frm, to = "exact", normalize(args[0]), normalize(args[1])
    else:
        kind = args[0].lower()
        if kind == "regex":
            frm, to = args[1], args[2]
        else:
            frm, to = normalize(args[1]), normalize(args[2])
    auto = False
    answers: list[ResponseRule] = []
    if len(args) > 3:
        auto, answers = _answer_rules(kind, args[3:])
    if kind == "exact":
        _compile(to, frm)
        auto = True
    elif kind == "regex":
        _compile(frm, to)
        to = normalize(args[2])
    elif kind == "suffix":
        if auto:
            back = suffix_rewriter(to, frm)
            answers = [ResponseRule("name", back), ResponseRule("value", back), *answers]
        auto = False
    elif kind not in MATCH_TYPES:
        raise RuleError(f"name rule supports only exact, prefix, suffix, substring, and regex name matching, "
                        f"received: {kind}")
    matcher = name_matcher(kind, frm, to)

    def apply(state: State) -> list[ResponseRule] | None:
        new = matcher(state.name)
        if new is None:
            return None
        original, state.name = state.name, new
        if not auto:
            return answers
        back = remap_rewriter(new, original)
        return [ResponseRule("name", back), ResponseRule("value", back), *answers]

    return Rule(mode, apply)


def _answer_rules(kind: str, args: list[str]) -> tuple[bool, list[ResponseRule]]:
    """parseAnswerRules: `answer auto | answer name FROM TO | answer value FROM TO`, `answer` optional after the
    first."""
    auto = False
    rules: list[ResponseRule] = []
    names = 0
    i = 0
    last = ""
    if len(args) < 2:
        raise RuleError(f"invalid arguments for {kind} rule")
    while i < len(args):
        if last == "" and args[i] != "answer":
            raise RuleError(f"exceeded the number of arguments for a non-answer rule argument for {kind} rule")
        if args[i] == "answer":
            i += 1
        if i >= len(args):
            raise RuleError(f"type missing for answer rule for {kind} rule")
        last = args[i]
        i += 1
        if last == "auto":
            auto = True
            continue
        if last not in ("name", "value"):
            raise RuleError(f'invalid type "{last}" for answer rule for {kind} rule')
        if len(args) - i < 2:
            raise RuleError(f"{last} answer rule for {kind} rule: 2 arguments required")
        frm, to = args[i], args[i + 1]
        try:
            pattern = _compile(frm, to)
        except RuleError as exc:
            raise RuleError(f"{last} answer rule for {kind} rule: {exc}") from None
        rules.append(ResponseRule(last, regex_rewriter(pattern, normalize(to))))
        i += 2
        names += last == "name"
    if auto and names:
        raise RuleError("auto name answer rule cannot be combined with explicit name anwer rules")
    return auto, rules


def _matching(kind: str, args: list[str], what: str) -> tuple[Callable[[str], bool], list[str]]:
    """`[exact|prefix|suffix|substring|regex] STRING ...` of ttl and rcode rules: (matcher, remaining args)."""
    kind = kind.lower()
    frm = args[0]
    if kind == "exact":
        n = normalize(frm)
        return (lambda name: name == n), args[1:]
    if kind == "prefix":
        n = normalize(frm)
        return (lambda name: name.startswith(n)), args[1:]
    if kind == "suffix":
        n = normalize(frm)
        return (lambda name: name.endswith(n)), args[1:]
    if kind == "substring":
        n = normalize(frm)
        return (lambda name: n in name), args[1:]
    if kind == "regex":
        try:
            pattern = re.compile(frm)
        except re.error:
            raise RuleError(f"invalid regex pattern in a {what} rule: {frm}") from None
        return (lambda name: pattern.search(name) is not None), args[1:]
    raise RuleError(f"{what} rule supports only exact, prefix, suffix, substring, and regex name matching")


def _valid_ttl(text: str) -> tuple[int, int] | None:
    parts = text.split("-")
    try:
        if len(parts) == 1:
            v = int(parts[0]) if parts[0].isdigit() else -1
            return (v, v) if 0 <= v < 1 << 32 else None
        if len(parts) == 2:
            if parts[0] == "" and parts[1] == "":
                return None
            low = 0 if parts[0] == "" else int(parts[0]) if parts[0].isdigit() else -1
            high = 2147483647 if parts[1] == "" else int(parts[1]) if parts[1].isdigit() else -1
            if low < 0 or high < 0 or low >= 1 << 32 or high >= 1 << 32 or low > high:
                return None
            return low, high
    except ValueError:
        return None
    return None


def _ttl_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 2:
        raise RuleError("too few arguments for a ttl rule")
    if len(args) > 3:
        raise RuleError("many few arguments for a ttl rule")
    value = args[-1]
    bounds = _valid_ttl(value)
    if bounds is None:
        raise RuleError(f"invalid TTL '{value}' for a ttl rule")
    matches, _ = _matching(args[0] if len(args) == 3 else "exact", args[1:] if len(args) == 3 else args, "ttl")
    response = [ResponseRule("ttl", ttl=bounds)]
    return Rule(mode, lambda state: response if matches(state.name) else None)


def _rcode(text: str) -> int | None:
    if text.isdigit() and int(text) <= 23:
        return int(text)
    return _STRING_TO_RCODE.get(text.upper())


def _rcode_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 3:
        raise RuleError(f"too few ({len(args)}) arguments for a rcode rule")
    if len(args) > 4:
        raise RuleError("many few arguments for a rcode rule")
    old, new = args[-2], args[-1]
    codes = _rcode(old), _rcode(new)
    if codes[0] is None or codes[1] is None:
        raise RuleError(f"invalid RCODE '{old}' or '{new}' for a rcode rule")
    matches, _ = _matching(args[0] if len(args) == 4 else "exact", args[1:] if len(args) == 4 else args, "rcode")
    response = [ResponseRule("rcode", rcodes=(codes[0], codes[1]))]
    return Rule(mode, lambda state: response if matches(state.name) else None)


def _type_rule(mode: str, args: list[str]) -> Rule:
    try:
        frm = dns.rdatatype.from_text(args[0].upper())
    except dns.exception.DNSException:
        raise RuleError(f'invalid type "{args[0].upper()}"') from None
    try:
        to = dns.rdatatype.from_text(args[1].upper())
    except dns.exception.DNSException:
        raise RuleError(f'invalid type "{args[1].upper()}"') from None

    def apply(state: State) -> list[ResponseRule] | None:
        if state.qtype != frm:
            return None
        state.qtype = int(to)
        return []

    return Rule(mode, apply)


def _class_rule(mode: str, args: list[str]) -> Rule:
    frm, to = _CLASSES.get(args[0].upper()), _CLASSES.get(args[1].upper())
    if frm is None:
        raise RuleError(f'invalid class "{args[0].upper()}"')
    if to is None:
        raise RuleError(f'invalid class "{args[1].upper()}"')

    def apply(state: State) -> list[ResponseRule] | None:
        if state.qclass != frm:
            return None
        state.qclass = to
        return []

    return Rule(mode, apply)


# -- edns0 -------------------------------------------------------------------------------------------------------


def _parse_code(text: str) -> int:
    try:
        code = int(text, 0)
    except ValueError:
        raise RuleError(f'strconv.ParseUint: parsing "{text}": invalid syntax') from None
    if not 0 <= code <= 0xFFFF:
        raise RuleError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return code


def _option(code: int, data: bytes) -> dns.edns.Option:
    return dns.edns.GenericOption(dns.edns.OptionType.make(code), data)


def _edns_options(state: State, create: bool) -> list[dns.edns.Option] | None:
    """setupEdns0Opt: the query's options, creating an OPT (payload 4096) when it had none."""
    if state.options is None and create:
        state.options = []
        state.edns_changed = True
    return state.options


def _set_option(state: State, action: str, match: Callable[[dns.edns.Option], bool],
                make: Callable[[], dns.edns.Option]) -> bool:
    options = _edns_options(state, create=action != "unset")
    if options is None:
        return False
    for i, opt in enumerate(options):
        if match(opt):
            if action in ("replace", "set"):
                options[i] = make()
                state.edns_changed = True
                return True
            if action == "unset":
                del options[i]
                state.edns_changed = True
                return True
            return False
    if action in ("append", "set"):
        options.append(make())
        state.edns_changed = True
        return True
    return False


def _variable_data(variable: str, state: State) -> bytes | None:
    req = state.req
    if variable == "{qname}":
        current = state.name if state.name != req.name_lower else req.qname.to_text()
        return current.encode()
    if variable == "{qtype}":
        return _U16.pack(state.qtype)
    if variable in ("{client_ip}", "{server_ip}"):
        host = (req.remote if variable == "{client_ip}" else req.local)[0]
        try:
            return ipaddress.ip_address(host.split("%")[0]).packed
        except ValueError:
            return None
    if variable in ("{client_port}", "{server_port}"):
        return _U16.pack((req.remote if variable == "{client_port}" else req.local)[1])
    if variable == "{protocol}":
        return req.proto.encode()
    return None  # metadata labels: no metadata plugin, so nothing to substitute


def _edns0_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 2:
        raise RuleError("too few arguments for an EDNS0 rule")
    kind, action = args[0].lower(), args[1].lower()
    if action not in ("append", "replace", "set", "unset"):
        raise RuleError(f'invalid action: "{action}"')
    if kind == "local":
        if action == "unset":
            if len(args) != 3:
                raise RuleError("local unset action requires exactly two arguments")
            code = _parse_code(args[2])
            return Rule(mode, lambda s: [] if _set_option(
                s, action, lambda o: int(o.otype) == code, lambda: _option(code, b"")) else None)
        if len(args) == 5 and args[4].lower() == "revert":
            raise RuleError("the edns0 'revert' option is not supported by lighthouse-dns")
        if len(args) != 4:
            raise RuleError("EDNS0 local rules require exactly three args")
        code = _parse_code(args[2])
        register_edns_option(code)
        data_text = args[3]
        if data_text.startswith("{") and data_text.endswith("}"):
            if data_text not in _VARIABLES and not re.fullmatch(r"\{[a-z0-9_-]+/[a-z0-9_-]+\}", data_text):
                raise RuleError(f'unsupported variable name "{data_text}"')

            def apply_variable(state: State) -> list[ResponseRule] | None:
                data = _variable_data(data_text, state)
                if data is None:
                    return None
                if data_text in _CLIENT_VARIABLES:
                    state.client_dependent = True
                done = _set_option(state, action, lambda o: int(o.otype) == code,
                                   lambda: _option(code, data))
                return [] if done else None

            return Rule(mode, apply_variable)
        if data_text.startswith("0x"):
            try:
                data = bytes.fromhex(data_text[2:])
            except ValueError:
                raise RuleError(f"encoding/hex: invalid byte in {data_text[2:]!r}") from None
        else:
            data = data_text.encode()
        return Rule(mode, lambda s: [] if _set_option(
            s, action, lambda o: int(o.otype) == code, lambda: _option(code, data)) else None)
    if kind == "nsid":
        if len(args) != 2:
            raise RuleError("EDNS0 NSID rules do not accept args")
        return Rule(mode, lambda s: [] if _set_option(
            s, action, lambda o: int(o.otype) == _NSID, lambda: _option(_NSID, b"")) else None)
    if kind == "subnet":
        if action == "unset":
            if len(args) != 2:
                raise RuleError("subnet unset action requires exactly one argument")
            return Rule(mode, lambda s: [] if _set_option(
                s, action, lambda o: int(o.otype) == _SUBNET, lambda: _option(_SUBNET, b"")) else None)
        if len(args) != 4:
            raise RuleError("EDNS0 subnet rules require exactly three args")
        v4 = _parse_code(args[2])
        if v4 > 32:
            raise RuleError(f"invalid IPv4 bit mask length {v4}")
        v6 = _parse_code(args[3])
        if v6 > 128:
            raise RuleError(f"invalid IPv6 bit mask length {v6}")

        def apply_subnet(state: State) -> list[ResponseRule] | None:
            try:
                ip = ipaddress.ip_address(state.req.remote[0].split("%")[0])
            except ValueError:
                return None
            state.client_dependent = True
            bits = v4 if ip.version == 4 else v6
            net = ipaddress.ip_network((ip, bits), strict=False)
            done = _set_option(state, action, lambda o: int(o.otype) == _SUBNET,
                               lambda: dns.edns.ECSOption(str(net.network_address), bits, 0))
            return [] if done else None

        return Rule(mode, apply_subnet)
    raise RuleError(f'invalid rule type "{kind}"')


def new_rule(args: list[str]) -> Rule:
    """CoreDNS newRule: `[continue|stop] FIELD ...`."""
    if not args:
        raise RuleError("no rule type specified for rewrite")
    first = args[0].lower()
    mode = STOP
    if first in (CONTINUE, STOP):
        mode = first
        if len(args) < 2:
            raise RuleError(f"{first} rule must begin with a rule type")
        rule_type, rest = args[1].lower(), args[2:]
    else:
        rule_type, rest = first, args[1:]
    if rule_type == "answer":
        raise RuleError("response rewrites must begin with a name rule")
    if rule_type == "name":
        return _name_rule(mode, rest)
    if rule_type in ("class", "type"):
        if len(rest) != 2:
            raise RuleError(f"{rule_type} rules must have exactly two arguments")
        return _class_rule(mode, rest) if rule_type == "class" else _type_rule(mode, rest)
    if rule_type == "edns0":
        return _edns0_rule(mode, rest)
    if rule_type == "ttl":
        return _ttl_rule(mode, rest)
    if rule_type == "rcode":
        return _rcode_rule(mode, rest)
    if rule_type == "cname":
        raise RuleError("the cname rule is not supported by lighthouse-dns")
    raise RuleError(f'invalid rule type "{args[0]}"')


def parse(c: Controller) -> list[Rule]:
    rules: list[Rule] = []
    for d in c.directives:
        args = list(d.args)
        if len(args) < 2:
            for line in d.block:  # the block form: all its tokens make one rule
                args.extend(line)
        elif d.block:
            raise SetupError(f'plugin/{NAME}: invalid rule type "{{"')
        try:
            rules.append(new_rule(args))
        except RuleError as exc:
            raise SetupError(f"plugin/{NAME}: {exc}") from None
    return rules


# -- the handler -------------------------------------------------------------------------------------------------


def _valid_name(text: str) -> dns.name.Name | None:
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException:
        return None


def revert(msg: dns.message.Message, original: dns.message.Message, rules: list[ResponseRule],
           echo: list[dns.edns.Option] | None) -> dns.message.Message:
    """The reply as the client must see it: its own question back, response rules applied in reverse order."""
    out = dns.message.Message(id=msg.id)
    out.flags = msg.flags
    out.question = original.question
    if msg.edns >= 0:
        out.use_edns(msg.edns, msg.ednsflags, msg.payload, options=list(msg.options))
    elif echo is not None and original.edns >= 0:
        out.use_edns(0, 0, original.payload, options=[o for o in echo if int(o.otype) in SUPPORTED_EDNS_OPTIONS])
    if not rules:
        out.set_rcode(msg.rcode())
        out.answer, out.authority, out.additional = msg.answer, msg.authority, msg.additional
        return out
    reply = Reply(int(msg.rcode()))
    ordered = list(reversed(rules))
    sections: list[list[dns.rrset.RRset]] = []
    for section in (msg.authority, msg.answer, msg.additional):  # CoreDNS walks Ns, Answer, Extra
        rebuilt: list[dns.rrset.RRset] = []
        for rrset in section:
            for rd in rrset:
                owner, ttl = rrset.name.to_text(), rrset.ttl
                for rule in ordered:
                    owner, ttl, rd = rule.apply(reply, owner, ttl, rd)
                name = _valid_name(owner) or rrset.name
                last = rebuilt[-1] if rebuilt else None
                if last is not None and last.name == name and last.rdtype == rd.rdtype and last.ttl == ttl:
                    last.add(rd)
                else:
                    fresh = dns.rrset.RRset(name, rrset.rdclass, rd.rdtype, rrset.covers)
                    fresh.update_ttl(ttl)
                    fresh.add(rd)
                    rebuilt.append(fresh)
        sections.append(rebuilt)
    out.authority, out.answer, out.additional = sections
    out.set_rcode(dns.rcode.Rcode.make(reply.rcode))
    return out


class Rewrite:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.next: Handler | None = None

    async def serve(self, req: Request) -> Result:
        nxt = self.next
        assert nxt is not None
        q = req.msg
        state = State(req.name_lower, req.qtype, req.qclass, req, list(q.options) if q.edns >= 0 else None)
        response: list[ResponseRule] = []
        applied = False
        for rule in self.rules:
            added = rule.apply(state)
            if added is None:
                continue
            applied = True
            response.extend(added)
            if rule.mode == STOP:
                break
        if not applied:
            return await nxt(req)
        name = _valid_name(state.name)
        if name is None or len(state.name) > 255:
            return Result(dns.rcode.SERVFAIL, plugin=NAME, error=f"invalid name after rewrite: {state.name}")
        inner = await nxt(self._rewritten(req, state, name))
        if inner.msg is None:
            if inner.rcode not in SERVER_WRITTEN:
                return inner
            # The next plugins wrote nothing: write the error here, for the original question.
            return Result(0, reply_for(req, inner.rcode, authoritative=False), plugin=NAME, error=inner.error)
        echo = state.options if state.edns_changed else None
        msg = revert(inner.msg, q, response, echo)
        policy = inner.cache
        if policy is not None:
            if state.client_dependent:
                policy = None
            elif policy.variants:
                policy = CachePolicy(policy.scope, policy.max_age,
                                     [revert(v, q, response, echo) for v in policy.variants], policy.generation,
                                     policy.hit_tags)
        return Result(inner.rcode, msg, plugin=inner.plugin, cache=policy, error=inner.error)

    @staticmethod
    def _rewritten(req: Request, state: State, name: dns.name.Name) -> Request:
        """A copy of the query with the new question and options (the original stays what the server parsed)."""
        q = req.msg
        m = dns.message.Message(id=q.id)
        m.flags = q.flags
        m.question = [dns.rrset.RRset(name, dns.rdataclass.RdataClass.make(state.qclass),
                                      dns.rdatatype.RdataType.make(state.qtype))]
        if state.options is not None:
            if q.edns >= 0:
                m.use_edns(q.edns, q.ednsflags, q.payload, options=state.options)
            else:
                m.use_edns(0, 0, 4096, options=state.options)
        if req.hooks is None:
            req.hooks = []  # share one list, so hooks registered further in reach the server
        return Request(msg=m, wire=m.to_wire(), remote=req.remote, local=req.local, proto=req.proto,
                       server=req.server, zone=req.zone, max_size=req.max_size, meta=req.meta, hooks=req.hooks,
                       start=req.start)


def setup(c: Controller) -> Wrapper:
    rw = Rewrite(parse(c))

    def wrap(next_handler: Handler) -> Handler:
        rw.next = next_handler
        return rw.serve

    return wrap


__all__ = ["NAME", "ONCE", "Rewrite", "RuleError", "new_rule", "parse", "revert", "setup"]

