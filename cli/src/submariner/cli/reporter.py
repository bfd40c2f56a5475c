"""Progress lines exactly as admiral's reporter prints them (subctl.md §4.1), plain or with a spinner.

Messages issued while a step runs are queued so the step's own line comes first and carries the worst
outcome; users read the symbol column top-down, scripts grep the plain text.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import IO, TypeVar

SPINNER_FRAMES = ("⠈⠁", "⠈⠑", "⠈⠱", "⠈⡱", "⢀⡱", "⢄⡱", "⢄⡱", "⢆⡱", "⢎⡱", "⢎⡰", "⢎⡠", "⢎⡀", "⢎⠁", "⠎⠁", "⠊⠁")
FRAME_SECONDS = 0.1

SUCCESS, WARNING, FAILURE = "✓", "⚠", "✗"
_COLOURS = {SUCCESS: "\x1b[32m", WARNING: "\x1b[33m", FAILURE: "\x1b[31m"}
_RESET = "\x1b[0m"
_SEVERITY = {SUCCESS: 0, WARNING: 1, FAILURE: 2}

E = TypeVar("E", bound=BaseException)


def is_terminal(stream: IO[str]) -> bool:
    """Spinner and colours only on a real terminal that is not `TERM=dumb`."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


def capitalize(text: str) -> str:
    """Go's reporter upper-cases only the first letter (the rest of an error text stays as written)."""
    return text[:1].upper() + text[1:]


class Reporter:
    """`start` / `success` / `warning` / `failure` / `end` / `error` with upstream's queueing rules."""

    def __init__(self, stream: IO[str] | None = None, *, terminal: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = is_terminal(self.stream) if terminal is None else terminal
        self._step: str | None = None
        self._queued: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._spinner: threading.Thread | None = None
        self.failed = False
        """Any failure was reported (callers turn it into exit code 1)."""

    # -- output -------------------------------------------------------------------------------------

    def _line(self, symbol: str, message: str) -> str:
        if self.terminal:
            return f" {_COLOURS[symbol]}{symbol}{_RESET} {message}\n"
        return f" {symbol} {message}\n"

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _spin(self, message: str) -> None:
        index = 0
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                frame = SPINNER_FRAMES[index % len(SPINNER_FRAMES)]
                self._write(f"\x1b[?7l\r{frame} {message} \x1b[?7h")
            index += 1
            if self._stop.wait(FRAME_SECONDS):
                return

    # -- the reporter interface ---------------------------------------------------------------------

    def start(self, message: str) -> None:
        """Begin a step; a running one is ended first."""
        self.end()
        self._step = message
        self._queued = []
        if self.terminal:
            self._stop.clear()
            self._spinner = threading.Thread(target=self._spin, args=(message,), daemon=True)
            self._spinner.start()
        else:
            self._write(f" • {message}  ...\n")

    def _report(self, symbol: str, message: str) -> None:
        if symbol == FAILURE:
            self.failed = True
        if self._step is not None:
            self._queued.append((symbol, message))
        else:
            self._write(self._line(symbol, message))

    def success(self, message: str) -> None:
        self._report(SUCCESS, message)

    def warning(self, message: str) -> None:
        self._report(WARNING, message)

    def failure(self, message: str) -> None:
        self._report(FAILURE, message)

    def end(self) -> None:
        """Close the running step: its line with the worst queued symbol, then the queued lines."""
        if self._step is None:
            return
        step, queued = self._step, self._queued
        self._step, self._queued = None, []
        worst = max((symbol for symbol, _ in queued), key=_SEVERITY.__getitem__, default=SUCCESS)
        if self.terminal and self._spinner is not None:
            with self._lock:
                self._stop.set()
            self._spinner.join()
            self._spinner = None
            self._write("\r")
        self._write(self._line(worst, step) + "".join(self._line(s, m) for s, m in queued))

    def error(self, err: E | None, message: str = "") -> E | None:
        """Report `err` (if any) as a failure `<Message>: <err>`, end the step and hand the error back."""
        if err is None:
            return None
        text = f"{message}: {err}" if message else str(err)
        self.failure(capitalize(text))
        self.end()
        return err
