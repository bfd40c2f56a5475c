"""How subctl fails: one reporter line, the version trailer on stderr, exit code 1 (subctl.md §1)."""

from __future__ import annotations

import sys
from typing import NoReturn

from submariner.cli import VERSION
from submariner.cli.reporter import Reporter


class CliError(Exception):
    """A failure the user can act on; `message` is the step that failed, `str(self)` the cause."""

    def __init__(self, cause: str, message: str = "") -> None:
        super().__init__(cause)
        self.message = message


def version_trailer() -> None:
    sys.stderr.write(f"\nsubctl version: {VERSION}\n\n")
    sys.stderr.flush()


def exit_on_error(reporter: Reporter, err: BaseException, message: str = "") -> NoReturn:
    """` ✗ <Message>: <err>` (ending a running step), the trailer, exit 1."""
    if isinstance(err, CliError) and not message:
        message = err.message
    reporter.error(err, message)
    version_trailer()
    raise SystemExit(1)
