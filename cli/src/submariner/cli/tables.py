"""Tables of every `show` view, byte-for-byte as subctl prints them (subctl.md §4.2).

Upstream measures widths in UTF-8 bytes but pads in characters, so a cell with `µ` gets one extra space;
matching that keeps output diffable against real subctl.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PADDING = 3


@dataclass(frozen=True)
class Column:
    header: str
    max_width: int = 0
    """0 = unlimited; longer cells are truncated to it."""


def cell_text(value: Any) -> str:
    """bool → yes/no, lists joined with ", ", None → empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell_text(v) for v in value)
    return str(value)


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _truncate(text: str, width: int) -> str:
    """Cut to at most `width` UTF-8 bytes without splitting a character."""
    while _bytes(text) > width:
        text = text[:-1]
    return text


def render(columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> str:
    """The table as text (every line ends with the column padding); no rows → empty string."""
    if not rows:
        return ""
    cells = [[cell_text(v) for v in row] for row in rows]
    widths = []
    for i, col in enumerate(columns):
        width = _bytes(col.header)
        for row in cells:
            size = _bytes(row[i])
            if col.max_width:
                size = min(size, col.max_width)
            width = max(width, size)
        widths.append(width)
    lines = []
    for row in [[c.header for c in columns], *cells]:
        parts = []
        for text, width in zip(row, widths, strict=True):
            text = _truncate(text, width)
            parts.append(text + " " * (width + PADDING - len(text)))
        lines.append("".join(parts) + "\n")
    return "".join(lines)
