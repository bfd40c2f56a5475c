"""`pods/log` (kubectl logs) from files a lab kubelet writes: the pod annotation names the directory holding
`<container>.log`, and only directories under the configured root are read. Without a backend the subresource
answers 404 like a server that lacks it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

FOLLOW_POLL_SECONDS = 0.2
_CHUNK = 64 * 1024


class LogError(Exception):
    """The log cannot be served; the message is for the user (HTTP 400)."""


@dataclass(frozen=True)
class FileLogBackend:
    annotation: str
    root: Path

    def path(self, pod: Mapping[str, Any], container: str) -> Path:
        meta = pod.get("metadata") or {}
        name = meta.get("name", "")
        names = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or ()]
        names += [str(c.get("name")) for c in (pod.get("spec") or {}).get("initContainers") or ()]
        if not container:
            if len(names) != 1:
                raise LogError(f"a container name must be specified for pod {name}, choose one of: "
                               f"[{' '.join(names)}]")
            container = names[0]
        if container not in names:
            raise LogError(f"container {container} is not valid for pod {name}")
        directory = str((meta.get("annotations") or {}).get(self.annotation) or "")
        if not directory:
            raise LogError(f'container "{container}" in pod "{name}" is waiting to start')
        path = (Path(directory) / f"{container}.log").resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise LogError(f"pod {name}: log directory {directory!r} is outside this server's log root")
        return path


def _tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


async def serve(request: web.Request, pod: Mapping[str, Any], backend: FileLogBackend) -> web.StreamResponse:
    query = request.rel_url.query
    path = backend.path(pod, query.get("container", ""))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    offset = len(data)  # follow from what was read, not from a later size (lines written in between would be lost)
    if "tailLines" in query:
        try:
            data = _tail(data, int(query["tailLines"]))
        except ValueError:
            raise LogError(f"tailLines: invalid value {query['tailLines']!r}") from None
    limit = query.get("limitBytes")
    if limit is not None and limit.isdigit():
        data = data[: int(limit)]
    if query.get("follow") not in ("true", "1"):
        return web.Response(body=data, content_type="text/plain")
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    await response.write(data)
    while path.exists():  # the kubelet removes the directory with the pod
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
        with contextlib.suppress(OSError):
            size = path.stat().st_size
            if size < offset:
                offset = 0
            if size > offset:
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read(min(size - offset, _CHUNK))
                offset += len(chunk)
                await response.write(chunk)
    await response.write_eof()
    return response
