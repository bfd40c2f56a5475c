"""`lighthouse-dns` as a process: flags, the default Corefile, signals (SIGUSR1 reload keeping the socket,
SIGTERM with lameduck, SIGQUIT) and start-up errors."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

BIN = Path(sys.executable).parent / "lighthouse-dns"
SERVING = re.compile(r"^lighthouse-dns: serving dns://\S*:(\d+)$")
HTTP = re.compile(r"^lighthouse-dns: serving http://(\S+):(\d+) (\S+)$")


class Proc:
    def __init__(self, args: list[str], cwd: Path) -> None:
        self.p = subprocess.Popen([str(BIN), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        self.lines: list[str] = []
        self.pending = b""
        self.queue: list[str] = []
        self.port = 0
        self.http: dict[str, int] = {}

    def read_until(self, pattern: re.Pattern[str] | str, timeout: float = 15.0) -> re.Match[str] | None:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        assert self.p.stdout is not None
        fd = self.p.stdout.fileno()  # raw reads: select() cannot see what a buffered reader already holds
        deadline = time.monotonic() + timeout
        while True:
            if not self.queue:
                ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                *complete, self.pending = (self.pending + chunk).split(b"\n")
                self.queue.extend(part.decode() for part in complete)
                continue
            line = self.queue.pop(0)
            self.lines.append(line)
            m = HTTP.match(line)
            if m:
                for path in m.group(3).split(","):
                    self.http[path] = int(m.group(2))
            m = rx.search(line)
            if m:
                return m

    def started(self) -> Proc:
        m = self.read_until(SERVING)
        assert m, (self.lines, self.stderr())
        self.port = int(m.group(1))
        return self

    def stderr(self) -> str:
        if self.p.poll() is None:
            return ""
        assert self.p.stderr is not None
        return self.p.stderr.read()

    def query(self, name: str = "example.org.", rdtype: str = "A", timeout: float = 2.0) -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=self.port, timeout=timeout)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http[path]}{path}", timeout=3) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[object]:
    procs: list[Proc] = []

    def start(*args: str, wait: bool = True) -> Proc:
        proc = Proc(list(args), tmp_path)
        procs.append(proc)
        return proc.started() if wait else proc

    yield start
    for proc in procs:
        proc.stop()


def test_serves_on_an_ephemeral_port_and_reloads_on_sigusr1(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    corefile = tmp_path / "Corefile.test"
    corefile.write_text("example.org {\n    whoami\n}\n")
    proc = run("-conf", str(corefile), "-dns.port", "0")
    assert proc.query().additional and not proc.query(rdtype="ANY").answer
    corefile.write_text("example.org {\n    any\n    whoami\n}\n")
    proc.p.send_signal(signal.SIGUSR1)
    assert proc.read_until("Reloading complete"), proc.lines
    r = proc.query(rdtype="ANY")  # same port: the socket was kept
    assert r.answer[0].rdtype == dns.rdatatype.HINFO
    corefile.write_text("example.org {\n    any\n    bogus\n}\n")
    proc.p.send_signal(signal.SIGUSR1)
    assert proc.read_until("Corefile changed but reload failed: .*Unknown directive 'bogus'"), proc.lines
    assert proc.query(rdtype="ANY").answer  # old configuration still serving


def test_double_dash_flags_and_equals_form(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    corefile = tmp_path / "c"
    corefile.write_text(". {\n    whoami\n}\n")
    proc = run(f"--conf={corefile}", "-dns.port=0")
    assert proc.query().additional


def test_default_corefile_is_whoami_and_log(run) -> None:  # type: ignore[no-untyped-def]
    proc = run("-dns.port", "0")
    r = proc.query("anything.example.")
    assert r.additional and r.additional[1].name.labels[0] == b"_udp"
    assert proc.read_until(r'^\[INFO\] 127\.0\.0\.1:\d+ - \d+ "A IN anything\.example\. udp')


def test_sigterm_is_graceful_with_lameduck(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    corefile = tmp_path / "Corefile"
    corefile.write_text(". {\n    health 127.0.0.1:0 {\n        lameduck 2s\n    }\n    ready 127.0.0.1:0\n"
                        "    whoami\n}\n")
    proc = run("-conf", str(corefile), "-dns.port", "0")
    proc.read_until("serving http", timeout=2)
    assert proc.get("/ready") == (200, "OK") and proc.get("/health") == (200, "OK")
    proc.p.send_signal(signal.SIGTERM)
    assert proc.read_until("Going into lameduck mode for 2s"), proc.lines
    assert proc.get("/ready") == (503, "Shutting down")
    assert proc.get("/health") == (200, "OK")
    assert proc.query().additional  # DNS still answers during lameduck
    assert proc.p.wait(10) == 0


def test_sigquit_exits_at_once(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    corefile = tmp_path / "Corefile"
    corefile.write_text(". {\n    health 127.0.0.1:0 {\n        lameduck 30s\n    }\n    whoami\n}\n")
    proc = run("-conf", str(corefile), "-dns.port", "0")
    start = time.monotonic()
    proc.p.send_signal(signal.SIGQUIT)
    assert proc.p.wait(5) == 0 and time.monotonic() - start < 3


def test_unimplemented_plugin_fails_start_naming_the_line(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    corefile = tmp_path / "Corefile"
    corefile.write_text(". {\n    whoami\n    sign db.example.org example.org\n}\n")
    proc = run("-conf", str(corefile), "-dns.port", "0", wait=False)
    assert proc.p.wait(15) == 1
    assert f"{corefile}:3 - plugin sign is not implemented by lighthouse-dns" in proc.stderr()


def test_cluster_id_from_environment(tmp_path: Path) -> None:
    from submariner.lighthouse.dns import cli

    env = dict(os.environ, SUBMARINER_CLUSTERID="east")
    out = subprocess.run([sys.executable, "-c", "from submariner.lighthouse.dns import cli; "
                          "print(cli.parse_args([]).cluster_id, cli.parse_args(['-cluster-id', 'west']).cluster_id)"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["east", "west"]
    assert cli.parse_args(["-kubeconfig", "/k"]).kubeconfig == "/k"
