"""`kubectl exec` against the server's pods/exec (WebSocket v5/v4 channel protocols) with the network-namespace
backend the lab uses: output streams, stdin, exit codes, and the refusals (no backend, foreign namespace, pod not
running)."""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from apiservers import BIN, RunningServer
from submariner.broker.apiserver import podexec

ANNOTATION = "lab.submariner.io/netns"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"subm-ex-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _pod(server: RunningServer, name: str, netns: str, phase: str = "Running") -> None:
    server.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": {ANNOTATION: netns}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    server.kubectl("patch", "pod", name, "--subresource=status", "--type=merge",
                   "-p", json.dumps({"status": {"phase": phase}}))


@pytest.mark.root
@needs_root
def test_kubectl_exec_streams_stdin_and_exit_code(api_server_factory: Callable[..., RunningServer],
                                                  netns: str) -> None:
    server = api_server_factory("exec", ["--pod-exec-netns", f"{ANNOTATION}=subm-ex-"])
    _pod(server, "client", netns)
    # The command runs inside the pod's namespace: only `lo` exists there.
    links = server.kubectl("exec", "client", "--", "ip", "-o", "link", "show").stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    both = server.kubectl("exec", "client", "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (both.returncode, both.stdout, "err" in both.stderr) == (3, "out\n", True)
    echoed = server.kubectl("exec", "-i", "client", "--", "sh", "-c", "tr a-z A-Z; exit 0", input="hello\n")
    assert echoed.stdout == "HELLO\n"


def _run_on_a_terminal(argv: list[str], typed: list[bytes], timeout: float = 30) -> tuple[int, bytes]:
    """Run `argv` with a pseudo-terminal as its stdin/stdout/stderr (kubectl -t needs one), type `typed` line by
    line once output settles, and return (exit status, everything it printed)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    pending = list(typed)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: kubectl exited
                    break
                if not chunk:
                    break
                out += chunk
            elif pending:  # quiet: the shell waits for input
                os.write(master, pending.pop(0))
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


@pytest.mark.root
@needs_root
def test_kubectl_exec_it_gives_an_interactive_terminal(api_server_factory: Callable[..., RunningServer],
                                                      netns: str) -> None:
    server = api_server_factory("exec", ["--pod-exec-netns", f"{ANNOTATION}=subm-ex-"])
    _pod(server, "client", netns)
    argv = [str(BIN / "kubectl"), "--kubeconfig", str(server.kubeconfig), "--context", server.context,
            "exec", "-it", "client", "--", "sh"]
    code, out = _run_on_a_terminal(argv, [b"tty; echo sum=$((40+2))\n", b"exit 7\n"])
    text = out.decode(errors="replace")
    assert code == 7, text
    assert "sum=42" in text and "/dev/pts/" in text, text  # a real terminal: `tty` names it


@pytest.mark.root
@needs_root
def test_exec_refusals(api_server_factory: Callable[..., RunningServer], netns: str) -> None:
    server = api_server_factory("exec", ["--pod-exec-netns", f"{ANNOTATION}=subm-other-"])
    _pod(server, "foreign", netns)
    out = server.kubectl("exec", "foreign", "--", "true", check=False)
    assert out.returncode != 0 and "is not one this server may enter" in out.stderr
    _pod(server, "pending", netns, phase="Pending")
    out = server.kubectl("exec", "pending", "--", "true", check=False)
    assert out.returncode != 0 and "not running" in out.stderr
    plain = api_server_factory("plain")
    _pod(plain, "client", netns)
    out = plain.kubectl("exec", "client", "--", "true", check=False)
    assert out.returncode != 0


def test_status_messages_carry_the_exit_code() -> None:
    ok = json.loads(podexec.status(0)[1:])
    failed = json.loads(podexec.status(7)[1:])
    assert podexec.status(0)[0] == podexec.ERROR and ok["status"] == "Success"
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]
    with pytest.raises(podexec.ExecError):
        podexec.ExecRequest.from_query({}, [])
