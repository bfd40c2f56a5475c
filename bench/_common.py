"""Helpers shared by the benchmarks: child processes by PID, /proc readings, percentiles, TLS, tables.

Benchmarks start every process they measure themselves, talk to them over loopback only, and stop them by
the PID they got from `subprocess`, so a run never touches anything else on the machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

BIN = Path(sys.executable).parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_SERVING = re.compile(r"serving (https?://\S+)")


def install_uvloop() -> bool:
    """Use uvloop when it is installed: the server does, and clients should not be slower than it."""
    try:
        import uvloop
    except ImportError:
        return False
    uvloop.install()
    return True


def log(message: str) -> None:
    """Progress goes to stderr, so stdout stays the summary (and the JSON last line)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (from /proc/PID/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: everything but idle and iowait).

    Sampled around a measurement and compared with the benchmark's own processes, it shows how much else
    was running: on a shared 2-core machine that is often the biggest source of noise.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a live process in KiB: resident now, and its peak."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


# ------------------------------------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[int | float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100.0 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


def ns_to_ms(value: float) -> float:
    return round(value / 1e6, 3)


# ------------------------------------------------------------------------------------------- TLS


def client_ssl_context(ca_file: Path) -> ssl.SSLContext:
    """Verify the server against the CA it generated, as every real client does."""
    return ssl.create_default_context(cafile=str(ca_file))


# ------------------------------------------------------------------------------------------- processes


def _read_line(stream: IO[str], deadline: float) -> str | None:
    """One line from a child's stdout before `deadline` (None on timeout, "" on EOF)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    ready, _, _ = select.select([stream], [], [], remaining)
    if not ready:
        return None
    return stream.readline()


def stop_pid(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM the child we started (by its PID), then SIGKILL it if it does not exit in time."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


class ServingProcess:
    """A child that prints `... serving https://HOST:PORT` once it listens (the API server, or an echo server).

    It is started with port 0, so the kernel picks a free loopback port and there is no race between
    choosing a port and binding it.
    """

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> str:
        with open(self.log_path, "a") as log_file:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=log_file, text=True,
                                         stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            line = _read_line(self.proc.stdout, deadline)
            if not line:
                self.stop()
                raise RuntimeError(f"{self.argv[0]} did not start: {self.log_tail()}")
            match = _SERVING.search(line)
            if match:
                self.url = match.group(1)
                return self.url

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


class Child:
    """A benchmark role in its own process: JSON config on argv, `READY` / `RESULT` lines on stdout.

    The result itself goes through a file: it can be large (every acknowledgement latency), and a short
    line on a pipe cannot be cut by a child that exits or a reader that falls behind.

    Load generators and watchers run outside the server and outside each other, so each gets its own
    interpreter (and GIL) and their CPU time can be read separately.
    """

    def __init__(self, script: Path, role: str, config: dict[str, Any], result_file: Path) -> None:
        self.role = role
        self.result_file = result_file
        config = {**config, "result_file": str(result_file)}
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            [sys.executable, str(script), "--role", role, "--config", orjson.dumps(config).decode()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def wait_ready(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            line = _read_line(self.proc.stdout, deadline)
            if line is None:
                raise RuntimeError(f"{self.role} (pid {self.proc.pid}) was not ready within {timeout:.0f}s")
            if not line:
                raise RuntimeError(f"{self.role} (pid {self.proc.pid}) exited before it was ready")
            if line.strip() == "READY":
                return

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(message).decode() + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            line = _read_line(self.proc.stdout, deadline)
            if line is None:
                self.kill()
                raise RuntimeError(f"{self.role} (pid {self.proc.pid}) gave no result within {timeout:.0f}s")
            if not line:
                raise RuntimeError(f"{self.role} (pid {self.proc.pid}) exited without a result "
                                   f"(code {self.proc.wait()})")
            if line.strip() == "RESULT":
                result: dict[str, Any] = orjson.loads(self.result_file.read_bytes())
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(10)
                return result

    def kill(self) -> None:
        stop_pid(self.proc, timeout=5.0)


def emit(kind: str) -> None:
    """Child side of `Child`: one protocol line on stdout."""
    sys.stdout.write(kind + "\n")
    sys.stdout.flush()


def emit_result(config: dict[str, Any], result: dict[str, Any]) -> None:
    """Child side of `Child`: the result into its file (complete before it is announced), then `RESULT`."""
    path = Path(config["result_file"])
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(result))
    tmp.rename(path)
    emit("RESULT")


# ------------------------------------------------------------------------------------------- output


@dataclass(slots=True)
class Row:
    label: str
    values: tuple[str, ...]
    note: str = ""


def table(title: str, header: tuple[str, ...], rows: list[Row]) -> str:
    """A plain text table (label, one column per run, note) that pastes well into an issue."""
    width = max(len(r.label) for r in rows)
    cols = [max([len(header[i])] + [len(r.values[i]) for r in rows if i < len(r.values)])
            for i in range(len(header))]
    lines = [title, "=" * len(title)]
    lines.append(" " * width + "".join("  " + h.rjust(c) for h, c in zip(header, cols, strict=True)))
    for r in rows:
        cells = [r.values[i] if i < len(r.values) else "" for i in range(len(header))]
        line = r.label.ljust(width) + "".join("  " + v.rjust(c) for v, c in zip(cells, cols, strict=True))
        if r.note:
            line += f"  {r.note}"
        lines.append(line.rstrip())
    return "\n".join(lines)
