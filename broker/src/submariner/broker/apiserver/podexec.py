"""`pods/exec` over WebSocket (the `v5.channel.k8s.io` / `v4.channel.k8s.io` protocols kubectl ≥ 1.30 speaks).

A real kubelet runs the command inside the container. This server has no containers; what it can offer is the
backend a lab gives it: "run the command in the network namespace named by this pod annotation" (the lab's
pods are network namespaces). Without a backend the subresource answers 404 like a server that lacks it.

Wire format: every binary message starts with a channel byte — 0 stdin, 1 stdout, 2 stderr, 3 the final
`Status` (JSON), 4 terminal resize; v5 adds 255 + channel = "this stream is closed" (kubectl sends it for
stdin). With `-t` the command runs on a pseudo-terminal (an interactive shell works).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import struct
import subprocess
import sys
import termios
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
_NETNS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")
_READ_CHUNK = 32 * 1024


class ExecError(Exception):
    """The command cannot be started; the message is for the user (HTTP 400 before the upgrade)."""


@dataclass(frozen=True)
class ExecRequest:
    command: tuple[str, ...]
    container: str
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def from_query(cls, query: Mapping[str, str], command: Sequence[str]) -> ExecRequest:
        def flag(name: str) -> bool:
            return query.get(name, "").lower() in ("true", "1")

        if not command:
            raise ExecError("you must specify at least one command for the container")
        return cls(tuple(command), query.get("container", ""), flag("stdin"), flag("stdout"), flag("stderr"),
                   flag("tty"))


@dataclass(frozen=True)
class NetnsExecBackend:
    """Runs exec commands in the network namespace a pod annotation names (`ip netns exec`, which also binds
    /etc/netns/<ns>/resolv.conf, so the command sees the pod's DNS settings). Only namespaces whose names start
    with `prefix` are entered, so a pod cannot point the server at somebody else's namespace."""

    annotation: str
    prefix: str

    def argv(self, pod: Mapping[str, Any], request: ExecRequest) -> list[str]:
        meta = pod.get("metadata") or {}
        netns = str((meta.get("annotations") or {}).get(self.annotation) or "")
        name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        phase = str((pod.get("status") or {}).get("phase") or "Unknown")
        if not netns:
            raise ExecError(f"pod {name} has no network namespace yet (phase {phase}); wait until it is Running")
        if phase != "Running":
            raise ExecError(f"unable to upgrade connection: pod {name} is not running (phase {phase})")
        if not netns.startswith(self.prefix) or not _NETNS_NAME.match(netns):
            raise ExecError(f"pod {name}: network namespace {netns!r} is not one this server may enter")
        if not Path("/run/netns", netns).exists():
            raise ExecError(f"pod {name}: network namespace {netns!r} does not exist")
        return ["ip", "netns", "exec", netns, *request.command]


def environment(pod: Mapping[str, Any]) -> dict[str, str]:
    """What the command sees: a container-like environment (the venv's programs first, as the lab's pods)."""
    meta = pod.get("metadata") or {}
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "HOSTNAME": str((pod.get("spec") or {}).get("hostname") or meta.get("name") or ""),
        "TERM": os.environ.get("TERM", "xterm"),
        "LANG": "C.UTF-8",
    }


def status(exit_code: int | None, message: str = "") -> bytes:
    """The final `Status` on channel 3: how kubectl learns the exit code."""
    if exit_code == 0 and not message:
        doc: dict[str, Any] = {"metadata": {}, "status": "Success"}
    elif exit_code is not None:
        doc = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
               "message": message or f"command terminated with non-zero exit code: exit code {exit_code}",
               "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}}
    else:
        doc = {"metadata": {}, "status": "Failure", "reason": "InternalError", "message": message}
    return bytes([ERROR]) + json.dumps(doc).encode()


async def serve(http_request: web.Request, pod: Mapping[str, Any], request: ExecRequest,
                backend: NetnsExecBackend) -> web.StreamResponse:
    """Upgrade to WebSocket, run the command, stream its output, send the Status, close."""
    argv = backend.argv(pod, request)  # ExecError → 400 before the upgrade
    ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=True, compress=False, max_msg_size=4 * 1024 * 1024)
    if not ws.can_prepare(http_request).ok:
        raise ExecError("pods/exec needs a WebSocket upgrade (v5.channel.k8s.io or v4.channel.k8s.io); "
                        "SPDY is not supported by this server")
    await ws.prepare(http_request)
    meta = pod.get("metadata") or {}
    log.info("exec pod=%s/%s tty=%s command=%s", meta.get("namespace"), meta.get("name"), request.tty,
             shlex.join(request.command))
    try:
        if request.tty:
            return await _serve_tty(ws, argv, environment(pod), request)
        return await _serve_pipes(ws, argv, environment(pod), request)
    except Exception as exc:  # the socket is a WebSocket now: an HTTP error body would corrupt its frames
        log.exception("exec failed pod=%s/%s", meta.get("namespace"), meta.get("name"))
        if not ws.closed:
            with contextlib.suppress(Exception):
                await ws.send_bytes(status(None, f"internal error: {type(exc).__name__}: {exc}"))
                await ws.close()
        return ws


async def _serve_pipes(ws: web.WebSocketResponse, argv: list[str], env: dict[str, str],
                       request: ExecRequest) -> web.WebSocketResponse:
    """Without `-t`: stdout and stderr on their own channels, stdin from channel 0 until v5 closes it."""
    v5 = ws.ws_protocol == PROTOCOLS[0]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, start_new_session=True,
            stdin=asyncio.subprocess.PIPE if request.stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except (OSError, subprocess.SubprocessError) as exc:  # the socket is a WebSocket now: answer in-band
        await ws.send_bytes(status(None, f"failed to start {request.command[0]}: {exc}"))
        await ws.close()
        return ws

    async def pump(stream: asyncio.StreamReader | None, channel: int, wanted: bool) -> None:
        if stream is None:
            return
        while chunk := await stream.read(_READ_CHUNK):
            if wanted and not ws.closed:
                await ws.send_bytes(bytes([channel]) + chunk)

    async def feed() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            data: bytes = msg.data
            if data[0] == STDIN and proc.stdin is not None and len(data) > 1:
                proc.stdin.write(data[1:])
                with contextlib.suppress(ConnectionError):
                    await proc.stdin.drain()
            elif v5 and data[0] == CLOSE and len(data) > 1 and data[1] == STDIN and proc.stdin is not None:
                proc.stdin.close()

    feeder = asyncio.create_task(feed())
    try:
        await asyncio.gather(pump(proc.stdout, STDOUT, request.stdout), pump(proc.stderr, STDERR, request.stderr))
        code = await proc.wait()
        if not ws.closed:
            await ws.send_bytes(status(code))
            await ws.close()
    finally:
        feeder.cancel()
        if proc.returncode is None:  # the client went away: stop what it started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
    return ws


def _controlling_terminal(slave: int) -> Callable[[], None]:
    """For the child: a new session whose terminal is the pty (job control, ^C → SIGINT, `tty` names it). By
    the slave's own descriptor, not 0: event loops differ in whether stdio is in place when this runs."""

    def preexec() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    return preexec


def _resize(fd: int, message: bytes) -> None:
    """Channel 4: `{"Width": cols, "Height": rows}` → the pty's window size (SIGWINCH to the program)."""
    with contextlib.suppress(ValueError, TypeError, OSError):
        size = json.loads(message)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", int(size["Height"]), int(size["Width"]), 0, 0))


async def _serve_tty(ws: web.WebSocketResponse, argv: list[str], env: dict[str, str],
                     request: ExecRequest) -> web.WebSocketResponse:
    """`kubectl exec -it`: the command runs on a pseudo-terminal; its output (stdout and stderr merged, as a
    terminal does) goes out on channel 1, channel 0 is typed into it, channel 4 resizes it."""
    master, slave = os.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(*argv, env={**env, "TERM": env.get("TERM", "xterm")},
                                                    stdin=slave, stdout=slave, stderr=slave,
                                                    preexec_fn=_controlling_terminal(slave))
    except (OSError, subprocess.SubprocessError) as exc:  # the socket is a WebSocket now: answer in-band
        os.close(master)
        await ws.send_bytes(status(None, f"failed to start {request.command[0]}: {exc}"))
        await ws.close()
        return ws
    finally:
        os.close(slave)
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[bytes | None] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(master, _READ_CHUNK)
        except OSError:  # EIO: every slave end is closed (the program and its children are gone)
            data = b""
        if data:
            output.put_nowait(data)
        else:
            loop.remove_reader(master)
            output.put_nowait(None)

    loop.add_reader(master, readable)

    async def feed() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            data: bytes = msg.data
            if data[0] == STDIN and len(data) > 1:
                with contextlib.suppress(OSError):
                    os.write(master, data[1:])
            elif data[0] == RESIZE:
                _resize(master, data[1:])

    feeder = asyncio.create_task(feed())
    try:
        while (chunk := await output.get()) is not None:
            if not ws.closed:
                await ws.send_bytes(bytes([STDOUT]) + chunk)
        code = await proc.wait()
        if not ws.closed:
            await ws.send_bytes(status(code))
            await ws.close()
    finally:
        feeder.cancel()
        loop.remove_reader(master)
        os.close(master)
        if proc.returncode is None:  # the client went away: stop what it started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
    return ws
