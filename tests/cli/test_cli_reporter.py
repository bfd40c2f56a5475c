"""The reporter's plain and terminal output (subctl.md §4.1), byte for byte."""

from __future__ import annotations

import io
import time

from submariner.cli.reporter import SPINNER_FRAMES, Reporter


def plain() -> tuple[Reporter, io.StringIO]:
    out = io.StringIO()
    return Reporter(out, terminal=False), out


def test_step_success_plain() -> None:
    r, out = plain()
    r.start("Setting up broker RBAC")
    r.end()
    assert out.getvalue() == " • Setting up broker RBAC  ...\n ✓ Setting up broker RBAC\n"


def test_messages_during_a_step_are_queued_and_the_worst_symbol_wins() -> None:
    r, out = plain()
    r.start("Deploying")
    r.success("Created CRDs")
    r.warning("Something odd")
    assert out.getvalue() == " • Deploying  ...\n"  # nothing printed until the step ends
    r.end()
    assert out.getvalue() == " • Deploying  ...\n ⚠ Deploying\n ✓ Created CRDs\n ⚠ Something odd\n"
    r.start("Next")
    r.warning("w")
    r.failure("f")
    r.end()
    assert out.getvalue().endswith(" ✗ Next\n ⚠ w\n ✗ f\n")
    assert r.failed


def test_start_ends_the_running_step_and_messages_outside_steps_print_at_once() -> None:
    r, out = plain()
    r.success("outside")
    r.start("a")
    r.start("b")
    r.end()
    r.end()  # no running step: nothing
    assert out.getvalue() == " ✓ outside\n • a  ...\n ✓ a\n • b  ...\n ✓ b\n"
    assert not r.failed


def test_error_capitalises_and_ends_the_step() -> None:
    r, out = plain()
    assert r.error(None, "ignored") is None
    r.start("Connecting")
    err = ValueError("boom")
    assert r.error(err, "error connecting") is err
    assert out.getvalue() == " • Connecting  ...\n ✗ Connecting\n ✗ Error connecting: boom\n"
    r2, out2 = plain()
    r2.error(ValueError("lower case"))
    assert out2.getvalue() == " ✗ Lower case\n"


def test_terminal_mode_colours_and_spinner() -> None:
    out = io.StringIO()
    r = Reporter(out, terminal=True)
    r.success("done")
    assert out.getvalue() == " \x1b[32m✓\x1b[0m done\n"
    r.start("Working")
    time.sleep(0.25)
    r.warning("careful")
    r.end()
    text = out.getvalue()
    assert f"\x1b[?7l\r{SPINNER_FRAMES[0]} Working \x1b[?7h" in text
    assert text.endswith("\r \x1b[33m⚠\x1b[0m Working\n \x1b[33m⚠\x1b[0m careful\n")
    r.failure("bad")
    assert out.getvalue().endswith(" \x1b[31m✗\x1b[0m bad\n")


def test_terminal_detection_honours_term_dumb(monkeypatch: object) -> None:
    import pytest

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("TERM", "dumb")
        assert not Reporter(Tty()).terminal
        mp.setenv("TERM", "xterm")
        assert Reporter(Tty()).terminal
        assert not Reporter(io.StringIO()).terminal
    finally:
        mp.undo()
