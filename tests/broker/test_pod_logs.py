"""`kubectl logs` against the server's pods/log with the file backend the lab uses: whole file, --tail, the
container choice, -f following new lines, and refusals (no backend, a directory outside the root)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from apiservers import BIN, RunningServer

ANNOTATION = "lab.submariner.io/logs"


def _pod(server: RunningServer, name: str, logdir: Path, containers: tuple[str, ...] = ("c",)) -> None:
    server.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": {ANNOTATION: str(logdir)}},
        "spec": {"containers": [{"name": c, "image": "busybox"} for c in containers]}}))


def test_kubectl_logs_reads_and_follows(api_server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    root = tmp_path / "lab"
    logdir = root / "pods" / "uid1"
    logdir.mkdir(parents=True)
    (logdir / "c.log").write_text("one\ntwo\nthree\n")
    server = api_server_factory("logs", ["--pod-logs", f"{ANNOTATION}={root}"])
    _pod(server, "p", logdir)
    assert server.kubectl("logs", "p").stdout == "one\ntwo\nthree\n"
    assert server.kubectl("logs", "p", "--tail=1").stdout == "three\n"
    follow = subprocess.Popen([str(BIN / "kubectl"), "--kubeconfig", str(server.kubeconfig), "--context",
                               server.context, "logs", "-f", "p"], stdout=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in follow.stdout or ()], daemon=True).start()

        def line() -> str:  # bounded: a missed line fails the test instead of hanging it
            try:
                return lines.get(timeout=10)
            except queue.Empty:
                raise AssertionError("no line from kubectl logs -f within 10 s") from None

        assert [line() for _ in range(3)] == ["one\n", "two\n", "three\n"]
        with (logdir / "c.log").open("a") as f:
            f.write("four\n")
        assert line() == "four\n"
    finally:
        follow.kill()
        follow.wait()
    _pod(server, "two", logdir, containers=("a", "b"))
    assert server.kubectl("logs", "two", "-c", "b").stdout == ""  # not started yet: no file, no output
    (logdir / "b.log").write_text("bee\n")
    assert server.kubectl("logs", "two", "-c", "b").stdout == "bee\n"
    bad = server.kubectl("logs", "two", "-c", "zz", check=False)
    assert bad.returncode != 0 and "is not valid for pod two" in bad.stderr


def test_logs_refusals(api_server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "c.log").write_text("secret\n")
    server = api_server_factory("logs", ["--pod-logs", f"{ANNOTATION}={tmp_path / 'lab'}"])
    _pod(server, "p", outside)
    out = server.kubectl("logs", "p", check=False)
    assert out.returncode != 0 and "outside this server's log root" in out.stderr and "secret" not in out.stdout
    plain = api_server_factory("plain")
    _pod(plain, "p", outside)
    assert plain.kubectl("logs", "p", check=False).returncode != 0
