"""Lets the route agent's lab test use the lab's test harness (tests/lab/labharness.py)."""

import sys
from pathlib import Path

_LAB_TESTS = str(Path(__file__).resolve().parent.parent / "lab")
if _LAB_TESTS not in sys.path:
    sys.path.insert(0, _LAB_TESTS)
