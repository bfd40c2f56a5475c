"""Long-lived helper processes (wireguard-go, its mount-namespace holder, pluto) that die with the gateway.

PR_SET_PDEATHSIG makes the kernel signal a child when its parent goes, even after SIGKILL. It follows the
*thread* that forked the child, not the process, so every such child is forked from one idle-forever
thread here, never from short-lived ones (leadership activation runs on its own thread).
"""

from __future__ import annotations

import concurrent.futures
import subprocess
from typing import Any

_SPAWNER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="child-spawner")


def _die_with_parent() -> None:
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """subprocess.Popen(cmd, **kwargs) whose child gets SIGTERM when the gateway process dies."""

    def start() -> subprocess.Popen[Any]:
        return subprocess.Popen(cmd, preexec_fn=_die_with_parent, **kwargs)

    return _SPAWNER.submit(start).result()
