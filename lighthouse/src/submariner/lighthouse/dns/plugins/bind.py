"""`bind ADDRESS...`: the addresses this block's listener binds (setup-only; the CLI groups listeners by them).

Interface names and the `except` sub-block of newer CoreDNS are not supported and fail at start-up.
"""

from __future__ import annotations

import ipaddress

from submariner.lighthouse.dns.plugin import Controller, Wrapper

NAME = "bind"
ONCE = False


def setup(c: Controller) -> Wrapper | None:
    for d in c.directives:
        if not d.args:
            raise d.arg_error()
        if d.block:
            raise d.error("the except block of bind is not supported by lighthouse-dns")
        for arg in d.args:
            try:
                ipaddress.ip_address(arg)
            except ValueError:
                raise d.error(f"bind address {arg!r} is not an IP address (interface names are not supported)"
                              ) from None
    return None
