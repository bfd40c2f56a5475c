"""`lighthouse-agent` (being built: issue #4)."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("lighthouse-agent: not implemented yet (issue #4)")
