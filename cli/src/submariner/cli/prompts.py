"""Interactive questions (only ever asked on a terminal; every one has a flag that avoids it)."""

from __future__ import annotations

from rich.console import Console
from rich.prompt import Confirm, Prompt

_console = Console(stderr=True, highlight=False)


def ask(question: str, choices: list[str] | None = None) -> str:
    """`? <question>`; with choices, only one of them is accepted."""
    return Prompt.ask(f"? {question}", choices=choices, console=_console)


def confirm(question: str) -> bool:
    return Confirm.ask(f"? {question}", console=_console, default=False)
