"""`reload [INTERVAL] [JITTER]`: re-read the Corefile every tick and restart gracefully when it changed.

Change detection is CoreDNS's: SHA512 over the JSON of the *parsed* server blocks (keys and tokens with file
and line, imports expanded), so comments and whitespace do not trigger a reload. The restart is the same as
SIGUSR1 (`ProcessState.request_reload`): DNS sockets are kept, a failing configuration is logged as
`Corefile changed but reload failed: …` and the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from typing import Any

from submariner.lighthouse.dns.plugin import Controller, Directive, Wrapper, parse_duration
from submariner.lighthouse.dns.process import GaugeVec

NAME = "reload"
ONCE = False
DEFAULT_INTERVAL = 30.0
DEFAULT_JITTER = 15.0
MIN_INTERVAL = 2.0
MIN_JITTER = 1.0
_KEY = "reload.ticker"


def _tokens(d: Directive) -> list[dict[str, Any]]:
    toks = [{"File": d.file, "Line": d.line, "Text": d.name}]
    toks += [{"File": d.file, "Line": d.line, "Text": a} for a in d.args]
    if d.block:
        toks.append({"File": d.file, "Line": d.line, "Text": "{"})
        for i, prop in enumerate(d.block):
            line = d.block_line(i)
            toks += [{"File": d.file, "Line": line, "Text": t} for t in prop]
        last = d.block_line(len(d.block) - 1)
        toks.append({"File": d.file, "Line": last, "Text": "}"})
    return toks


def config_sha512(blocks: list[Any]) -> str:
    """SHA512 of the parsed blocks as JSON (CoreDNS hashes `json.Marshal(serverBlocks)`)."""
    doc = []
    for block in blocks:
        tokens: dict[str, list[dict[str, Any]]] = {}
        for d in block.directives:
            tokens.setdefault(d.name, []).extend(_tokens(d))
        doc.append({"Keys": list(block.keys), "Tokens": tokens})
    return hashlib.sha512(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()


def parse(d: Directive) -> tuple[float, float]:
    if len(d.args) > 2 or d.block:
        raise d.arg_error()
    interval, jitter = DEFAULT_INTERVAL, DEFAULT_JITTER
    if d.args:
        try:
            interval = parse_duration(d.args[0])
        except ValueError as exc:
            raise d.error(str(exc)) from None
        if interval < MIN_INTERVAL:
            raise d.error("interval value must be greater or equal to 2s")
    if len(d.args) > 1:
        try:
            jitter = parse_duration(d.args[1])
        except ValueError as exc:
            raise d.error(str(exc)) from None
        if jitter < MIN_JITTER:
            raise d.error("jitter value must be greater or equal to 1s")
    return interval, min(jitter, interval / 2)


class Ticker:
    """One per process: re-reads the Corefile every `interval ± jitter/2` while this configuration runs."""

    def __init__(self, process: Any, interval: float, jitter: float) -> None:
        self.process = process
        self.interval = interval + random.uniform(-jitter / 2, jitter / 2)
        self.task: asyncio.Task[None] | None = None
        self.sha = ""
        self.version = process.vec(GaugeVec("coredns_reload_version_info",
                                            "A metric with a constant '1' value labeled by hash, and value which type "
                                            "of hash generated.", ("hash", "value")))

    def start(self) -> None:
        self.sha = config_sha512(self.process.corefile_blocks)
        self.process.info(f"Running configuration SHA512 = {self.sha}", NAME)
        self.version.values.clear()
        self.version.set(("sha512", self.sha), 1.0)
        if self.process.load_corefile is not None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()

    def check(self) -> bool:
        """One tick: True when the Corefile changed and a reload was requested."""
        try:
            blocks = self.process.load_corefile()
        except Exception as exc:
            self.process.warning(f"Corefile parse failed: {exc}", NAME)
            return False
        sha = config_sha512(blocks)
        if sha == self.sha:
            return False
        self.sha = sha  # do not retry the same (possibly broken) file every tick
        if self.process.request_reload is not None:
            self.process.request_reload()
        return True


def setup(c: Controller) -> Wrapper | None:
    interval, jitter = DEFAULT_INTERVAL, DEFAULT_JITTER
    for d in c.directives:
        interval, jitter = parse(d)
    process = c.process

    def start() -> None:
        # Several blocks may enable reload: the first block's settings drive the single process ticker.
        if process.singletons.get(_KEY) is None:
            ticker = Ticker(process, interval, jitter)
            process.singletons[_KEY] = ticker
            ticker.start()

    def stop() -> None:
        ticker = process.singletons.pop(_KEY, None)
        if ticker is not None:
            ticker.stop()

    c.on_startup(start)
    c.on_shutdown(stop)
    return None
