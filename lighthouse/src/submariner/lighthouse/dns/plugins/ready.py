"""`ready`: `GET /ready` → 200 `OK` once every readiness provider in the blocks enabling it is ready, else
503 with the sorted, comma-separated names of those that are not; 503 `Shutting down` during shutdown.

`monitor until-ready` (default) latches a provider once it has reported ready; `continuously` asks every time.
"""

from __future__ import annotations

from typing import Any

from submariner.lighthouse.dns.plugin import BlockHooks, Controller, Wrapper, split_host_port

NAME = "ready"
ONCE = True
DEFAULT_ADDR = ":8181"
PATH = "/ready"
_TEXT = "text/plain; charset=utf-8"


class ReadyEndpoint:
    def __init__(self, process: Any, block: BlockHooks, continuously: bool) -> None:
        self.process = process
        self.blocks: list[tuple[BlockHooks, bool]] = [(block, continuously)]
        self.latched: set[tuple[int, int]] = set()

    def merge(self, other: object) -> None:
        """Another block enables `ready` on the same address: its providers count too."""
        if isinstance(other, ReadyEndpoint):
            self.blocks.extend(other.blocks)

    def __call__(self) -> tuple[int, str, str]:
        if self.process.shutting_down:
            return 503, "Shutting down", _TEXT
        not_ready: set[str] = set()
        for block, continuously in self.blocks:
            for index, (name, check) in enumerate(block.ready):
                key = (id(block), index)
                if key in self.latched:
                    continue
                try:
                    ok = bool(check())
                except Exception:
                    ok = False
                if ok:
                    if not continuously:
                        self.latched.add(key)
                else:
                    not_ready.add(name)
        if not not_ready:
            return 200, "OK", _TEXT
        names = ",".join(sorted(not_ready))
        self.process.info(f'Plugins not ready: "{names}"', NAME)
        return 503, names, _TEXT


def setup(c: Controller) -> Wrapper | None:
    d = c.directive()
    addr = DEFAULT_ADDR
    continuously = False
    if len(d.args) > 1:
        raise d.arg_error()
    if d.args:
        addr = d.args[0]
        try:
            split_host_port(addr)
        except ValueError as exc:
            raise d.error(str(exc)) from None
    for i, prop in enumerate(d.block):
        line = d.block_line(i)
        if prop[0] != "monitor" or len(prop) != 2:
            raise d.arg_error(prop[-1], line)
        if prop[1] not in ("until-ready", "continuously"):
            raise d.error(f"monitor type '{prop[1]}' not supported", line)
        continuously = prop[1] == "continuously"
    c.add_http(addr, PATH, ReadyEndpoint(c.process, c.block, continuously), NAME)
    return None
