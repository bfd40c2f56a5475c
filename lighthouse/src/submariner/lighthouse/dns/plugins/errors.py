"""`errors`: logs the error a later plugin returned, `[ERROR] plugin/errors: <rcode> <name> <type>: <error>`.

`consolidate DUR REGEXP [level] [show_first]` folds errors matching REGEXP into one line per period,
`N errors like '<re>' occurred in last <dur>` (first matching pattern wins); with `show_first` the first error
of a period is also logged in full. No wire change.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

from submariner.lighthouse.dns.plugin import (
    Controller,
    Directive,
    Handler,
    Request,
    Result,
    Wrapper,
    format_duration,
    parse_duration,
)
from submariner.lighthouse.dns.process import type_text

NAME = "errors"
ONCE = True
SYNC_SAFE = True  # the handler needs no task context (see plugin.py)

_LEVELS = {"warning": "WARNING", "error": "ERROR", "info": "INFO", "debug": "DEBUG"}


@dataclass(slots=True)
class Pattern:
    period: float
    regex: re.Pattern[str]
    level: str
    show_first: bool
    count: int = 0
    timer: asyncio.TimerHandle | None = field(default=None)


class ErrorHandler:
    def __init__(self, process: Any, patterns: list[Pattern]) -> None:
        self.process = process
        self.patterns = patterns
        self.stopped = False

    def _flush(self, p: Pattern) -> None:
        count, p.count, p.timer = p.count, 0, None
        if count > 0:
            self.process.log(p.level, f"{count} errors like '{p.regex.pattern}' occurred in last "
                             f"{format_duration(p.period)}", NAME)

    def consolidated(self, text: str) -> bool:
        """True when the error was counted by a pattern instead of being logged now."""
        for p in self.patterns:
            if p.regex.search(text):
                if self.stopped:
                    return False
                p.count += 1
                if p.count == 1:
                    p.timer = asyncio.get_running_loop().call_later(p.period, self._flush, p)
                    if p.show_first:
                        return False
                return True
        return False

    def stop(self) -> None:
        self.stopped = True
        for p in self.patterns:
            if p.timer is not None:
                p.timer.cancel()
                self._flush(p)

    def wrap(self, next_handler: Handler) -> Handler:
        process = self.process

        async def serve(req: Request) -> Result:
            result = await next_handler(req)
            if result.error is not None and not self.consolidated(result.error):
                process.error(f"{result.rcode} {req.name_lower} {type_text(req.qtype)}: {result.error}",
                              NAME)
            return result

        return serve


def _consolidate(d: Directive, prop: list[str], line: int) -> Pattern:
    args = prop[1:]
    show_first = False
    if args and args[-1] == "show_first":
        show_first = True
        args = args[:-1]
    if not 2 <= len(args) <= 3:
        raise d.arg_error(prop[-1], line)
    try:
        period = parse_duration(args[0])
    except ValueError as exc:
        raise d.error(str(exc), line) from None
    try:
        regex = re.compile(args[1])
    except re.error as exc:
        raise d.error(f"error parsing regexp: {exc}: `{args[1]}`", line) from None
    level = "ERROR"
    if len(args) == 3:
        if args[2] not in _LEVELS:
            raise d.error(f"unknown log level argument in consolidate: {args[2]}", line)
        level = _LEVELS[args[2]]
    return Pattern(period, regex, level, show_first)


def parse(d: Directive) -> tuple[list[Pattern], bool]:
    if len(d.args) > 1:
        raise d.arg_error()
    if d.args and d.args[0] != "stdout":
        raise d.error(f"invalid log file: {d.args[0]}")
    patterns: list[Pattern] = []
    stacktrace = False
    for i, prop in enumerate(d.block):
        line = d.block_line(i)
        if prop[0] in ("stacktrace", "panicRecoveryStacktrace"):
            stacktrace = True
        elif prop[0] == "consolidate":
            patterns.append(_consolidate(d, prop, line))
        else:
            raise d.error(f"Unknown field {prop[0]}", line)
    return patterns, stacktrace


def setup(c: Controller) -> Wrapper:
    patterns, stacktrace = parse(c.directive())
    handler = ErrorHandler(c.process, patterns)
    if stacktrace and hasattr(c.process, "singletons"):
        c.process.singletons["stacktrace"] = True
    c.on_shutdown(handler.stop)
    return handler.wrap
