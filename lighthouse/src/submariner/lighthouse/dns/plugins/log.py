"""`log`: one `[INFO]` line per query in CoreDNS's replacer format (`{common}` by default).

Cached answers never reach the chain, so the plugin is also a `FastPathObserver`: hits get exactly the line a
miss would. As in CoreDNS, the line describes what the plugin chain wrote: when a plugin returned an rcode for
the server to write (SERVFAIL, REFUSED, …) the recorder saw nothing, so `{rcode}` is NOERROR, `{rsize}` 0 and
`{>rflags}` "-".
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from submariner.lighthouse.dns import answers
from submariner.lighthouse.dns.plugin import (
    Controller,
    Directive,
    Handler,
    Hit,
    Request,
    Result,
    Wrapper,
)
from submariner.lighthouse.dns.process import class_text, rcode_text, type_text

NAME = "log"
ONCE = False
SYNC_SAFE = True  # the handler needs no task context (see plugin.py)

EMPTY = "-"
COMMON = ('{remote}:{port} ' + EMPTY + ' {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" '
          '{rcode} {>rflags} {rsize} {duration}')
COMBINED = COMMON + ' "{>opcode}"'
KNOWN_LABELS = frozenset({
    "{type}", "{name}", "{class}", "{proto}", "{size}", "{remote}", "{port}", "{local}", "{>id}", "{>opcode}",
    "{>do}", "{>bufsize}", "{rcode}", "{rsize}", "{duration}", "{>rflags}",
})
CLASSES = ("all", "success", "denial", "error")
_RR_FIXED = struct.Struct("!HHIH")
_FLAG_NAMES = ((0x8000, "qr"), (0x0400, "aa"), (0x0200, "tc"), (0x0100, "rd"), (0x0080, "ra"), (0x0040, "z"),
               (0x0020, "ad"), (0x0010, "cd"))

Node = tuple[int, str]  # (0 literal | 1 label | 2 metadata, text)


def parse_format(s: str) -> list[Node]:
    """CoreDNS replacer.parseFormat: find each `}`, backtrack to its `{`; unknown `{x}` stays literal."""
    nodes: list[Node] = []
    while True:
        j = s.find("}")
        if j < 0:
            break
        i = s.rfind("{", 0, j)
        if i < 0:
            nodes.append((0, s[:j + 1]))
            s = s[j + 1:]
            continue
        val = s[i:j + 1]
        if val in KNOWN_LABELS:
            typ = 1
        elif val.startswith("{/"):
            typ, val = 2, val[2:-1]
        else:
            typ, val = 0, s[:j + 1]
        if i != 0 and typ != 0:
            nodes.append((0, s[:i]))
        nodes.append((typ, val))
        s = s[j + 1:]
    if s:
        nodes.append((0, s))
    return nodes


def go_float(seconds: float) -> str:
    """strconv.FormatFloat(d.Seconds(), 'f', -1, 64) for a duration in whole nanoseconds: no exponent."""
    ns = round(seconds * 1e9)
    if ns < 0:
        return "-" + go_float(-seconds)
    whole, frac = divmod(ns, 1_000_000_000)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:09d}".rstrip("0")


def flags_text(wire: bytes | bytearray) -> str:
    if len(wire) < 4:
        return EMPTY
    bits = (wire[2] << 8) | wire[3]
    return ",".join(name for bit, name in _FLAG_NAMES if bits & bit) or ""


def classify(wire: bytes | bytearray) -> str:
    """response.Typify + Classify on the written reply: success, denial or error."""
    if len(wire) < 12:
        return "error"
    rcode = wire[3] & 0x0F
    an = (wire[6] << 8) | wire[7]
    if rcode == 0 and an > 0:
        return "success"
    try:
        lay = answers.Layout(bytes(wire))
    except answers.WireError:
        return "error"
    soa = False
    ns = 0
    start = lay.qend
    for end, section in zip(lay.ends, lay.sections, strict=False):
        if section == 1:
            off = answers.skip_name(bytes(wire), start)
            rtype = (wire[off] << 8) | wire[off + 1]
            if rtype == 6:
                soa = True
            elif rtype == 2:
                ns += 1
        start = end
    if soa and rcode == 0:
        return "denial"
    if soa and rcode == 3:
        return "denial"
    if rcode == 0:
        return "success"  # delegation or plain NOERROR
    return "error"


def _address(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(slots=True)
class Rule:
    name_scope: str
    nodes: list[Node]
    classes: frozenset[str]

    def matches(self, name_lower: str) -> bool:
        scope = self.name_scope
        return scope == "." or name_lower == scope or name_lower.endswith("." + scope)


class Logger:
    """The rules of one block; also the hit observer for that block."""

    def __init__(self, rules: list[Rule], emit: Callable[[str], None]) -> None:
        self.rules = rules
        self.emit = emit

    def rule_for(self, name_lower: str) -> Rule | None:
        for rule in self.rules:
            if rule.matches(name_lower):
                return rule
        return None

    def line(self, rule: Rule, values: dict[str, str]) -> str:
        return "".join(values.get(text, EMPTY) if typ == 1 else text if typ == 0 else EMPTY
                       for typ, text in rule.nodes)

    def wrap(self, next_handler: Handler) -> Handler:
        async def serve(req: Request) -> Result:
            rule = self.rule_for(req.name_lower)
            if rule is not None:
                req.after_reply(self._reply_hook(rule))
            return await next_handler(req)

        return serve

    def _reply_hook(self, rule: Rule) -> Callable[[Request, Result, bytes], None]:
        def hook(req: Request, result: Result, wire: bytes) -> None:
            written = result.msg is not None and bool(wire)
            recorded = wire if written else b""
            if "all" not in rule.classes and classify(recorded) not in rule.classes:
                return
            host, port = req.remote
            values = {
                "{type}": type_text(req.qtype), "{name}": req.name_lower, "{class}": class_text(req.qclass),
                "{proto}": req.proto, "{size}": str(len(req.wire)), "{remote}": _address(host), "{port}": str(port),
                "{local}": _address(req.local[0]), "{>id}": str(req.msg.id), "{>opcode}": str(req.opcode),
                "{>do}": "true" if req.do else "false", "{>bufsize}": str(req.max_size),
                "{rcode}": rcode_text(_rcode(recorded)) if written else "NOERROR",
                "{rsize}": str(len(recorded)), "{duration}": go_float(time.perf_counter() - req.start) + "s",
                "{>rflags}": flags_text(recorded) if written else EMPTY,
            }
            self.emit(self.line(rule, values))

        return hook

    def on_hit(self, hit: Hit) -> None:
        entry = hit.entry
        memo: dict[Any, Any] | None = entry.memo if entry is not None else None
        parts = memo.get(self) if memo is not None else None
        if parts is None:
            parts = self._hit_template(hit)
            if entry is not None:
                if entry.memo is None:
                    entry.memo = {}
                entry.memo[self] = parts
        if not parts:
            return
        host, port = hit.remote
        dynamic = (_address(host), str(port), str(hit.id), hit.proto, str(len(hit.query)), str(len(hit.reply)),
                   go_float(time.perf_counter() - hit.start) + "s")
        self.emit("".join([part if part.__class__ is str else dynamic[part] for part in parts]))  # type: ignore[index]

    def _hit_template(self, hit: Hit) -> list[str | int]:
        """The line of a cached answer with everything fixed per answer filled in; ints index `dynamic`."""
        info = hit.info
        name = info.name or _question_name(hit.query)
        rule = self.rule_for(name)
        if rule is None or ("all" not in rule.classes and classify(hit.reply) not in rule.classes):
            return []
        static = {
            "{type}": type_text(info.qtype), "{name}": name, "{class}": class_text(info.qclass),
            "{>opcode}": str(info.opcode), "{>do}": "true" if info.do else "false",
            "{>bufsize}": str(info.bufsize), "{rcode}": rcode_text(_rcode(hit.reply)),
            "{>rflags}": flags_text(hit.reply), "{local}": _address(info.local),
        }
        positions = {"{remote}": 0, "{port}": 1, "{>id}": 2, "{proto}": 3, "{size}": 4, "{rsize}": 5,
                     "{duration}": 6}
        parts: list[str | int] = []
        for typ, text in rule.nodes:
            if typ == 1 and text in positions:
                parts.append(positions[text])
            elif typ == 1:
                parts.append(static.get(text, EMPTY))
            else:
                parts.append(text if typ == 0 else EMPTY)
        return parts


def _question_name(query: bytes) -> str:
    """The first question's name as lower-case text with the trailing dot (what `Request.name_lower` gives)."""
    import dns.name

    try:
        name, _ = dns.name.from_wire(query, 12)
    except Exception:
        return "."
    return name.to_text().lower()


def _rcode(wire: bytes | bytearray) -> int:
    if len(wire) < 4:
        return 0
    rcode = wire[3] & 0x0F
    try:
        lay = answers.Layout(bytes(wire))
    except answers.WireError:
        return rcode
    return rcode | (lay.opt_ext_rcode << 4) if lay.opt_start >= 0 else rcode


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def parse(directives: list[Directive]) -> list[Rule]:
    rules: list[Rule] = []
    for d in directives:
        args = list(d.args)
        fmt = COMMON
        if len(args) == 0:
            scopes = ["."]
        elif len(args) == 1:
            scopes = [args[0]]
        else:
            if "{" in args[-1]:
                last = args.pop()
                fmt = {"{common}": COMMON, "{combined}": COMBINED}.get(last, last)
            scopes = args
        classes: set[str] = set()
        for i, prop in enumerate(d.block):
            line = d.block_line(i)
            if prop[0] == "class":
                if len(prop) == 1:
                    raise d.arg_error("class", line)
                for cls in prop[1:]:
                    if cls not in CLASSES:
                        raise d.error(f"invalid class: {cls}", line)  # response.ClassFromString
                    classes.add(cls)
            else:
                raise d.arg_error(prop[-1], line)
        nodes = parse_format(fmt)
        for scope in scopes:
            rules.append(Rule(_fqdn(scope).lower(), nodes, frozenset(classes or {"all"})))
    return rules


def setup(c: Controller) -> Wrapper:
    logger = Logger(parse(c.directives), c.process.info)
    c.add_observer(logger)
    return logger.wrap
