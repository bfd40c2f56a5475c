"""Real API server processes for tests (`submariner-broker serve` on loopback): the foundation every other test
stands on. A plain module (not conftest) so tests import it by a name no other directory's conftest shadows."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    """A `submariner-broker serve` process on loopback, restartable on the same port and data."""

    def __init__(self, name: str, base: Path, extra_args: list[str] | None = None) -> None:
        self.name = name
        self.data_dir = base / name / "data"
        self.kubeconfig = base / name / "kubeconfig"
        self.context = f"test-{name}"
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = base / name / "server.log"

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def start(self, timeout: float = 20.0) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [str(BIN / "submariner-broker"), "serve", "--data-dir", str(self.data_dir),
             "--listen", f"127.0.0.1:{self.port}", "--write-kubeconfig", str(self.kubeconfig),
             "--context", self.context, *self.extra_args],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
        log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if "serving" in line or not line:
                break
        if "serving" not in line:
            self.kill()
            raise RuntimeError(f"server {self.name} did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, token: str | None = None) -> tuple[int, bytes]:
        """A raw HTTPS request with the admin token (or `token`), for what typed clients cannot send."""
        import http.client
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.data_dir / "ca.crt"))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=30)
        try:
            hdrs = {"Authorization": f"Bearer {token or self.admin_token}", **(headers or {})}
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig), context=self.context)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(BIN / "kubectl"), "--kubeconfig", str(self.kubeconfig), "--context", self.context,
               "--cache-dir", str(self.data_dir.parent / "kubectl-cache"), *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result
