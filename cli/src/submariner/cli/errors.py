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


def _semver(text: str) -> tuple[int, int, int] | None:
    import re

    m = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?", text.strip())
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def check_version_skew(deployed: str) -> None:
    """A deployment newer than this subctl must be managed by a newer subctl (subctl.md §1 Version skew)."""
    mine, theirs = _semver(VERSION), _semver(deployed or "")
    if mine is not None and theirs is not None and theirs > mine:
        raise CliError(f'the subctl version "{VERSION}" is older than the deployed Submariner version "{deployed}". '
                       "Please upgrade your subctl version")
