"""The `whereami` image: an HTTP server answering every request with where it runs and who asked.

Like the seed's `cr7258/whereami`: pod name, namespace, node and pod IP come from the Downward API
environment (POD_NAME, NAMESPACE, NODE_NAME, POD_IP), the caller's address from the connection, so a
`curl` through a Service shows which backend answered and what source address reached it (SNAT visible).
Listens on $PORT (default 80) on all addresses.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

_EMOJI = (
    "🐶", "🐱", "🐭", "🐹", "🐰", "🦊", "🐻", "🐼", "🐨", "🐯", "🦁", "🐮", "🐷", "🐸", "🐵", "🐔",
    "🐧", "🐦", "🐤", "🦆", "🦅", "🦉", "🦇", "🐺", "🐗", "🐴", "🦄", "🐝", "🐛", "🦋", "🐌", "🐞",
)


def emoji_for(name: str) -> str:
    """A stable emoji per pod name (as the GKE whereami sample does), handy to tell replicas apart."""
    return _EMOJI[int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(_EMOJI)]


def describe(request: web.Request) -> dict[str, Any]:
    env = os.environ
    pod_name = env.get("POD_NAME") or socket.gethostname()
    namespace = env.get("NAMESPACE") or env.get("POD_NAMESPACE") or ""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    source_ip, source_port = (str(peer[0]), int(peer[1])) if peer else ("", 0)
    doc: dict[str, Any] = {
        "pod_name": pod_name,
        "pod_name_emoji": emoji_for(pod_name),
        "namespace": namespace,
        "pod_namespace": namespace,  # the GKE sample's key for the same value
        "node_name": env.get("NODE_NAME", ""),
        "pod_ip": env.get("POD_IP", ""),
        "host_header": request.host,
        "source_ip": source_ip,
        "source_port": source_port,
        "path": request.path,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    cluster = env.get("CLUSTER_NAME") or env.get("SUBMARINER_CLUSTERID")
    if cluster:
        doc["cluster_name"] = cluster
    return doc


async def handle(request: web.Request) -> web.Response:
    return web.json_response(describe(request), dumps=_dumps)


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def main() -> int:
    port = int(os.environ.get("PORT") or 80)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    print(f"whereami: serving http://0.0.0.0:{port}/ as {os.environ.get('POD_NAME', '?')}", flush=True)
    web.run_app(app, host="0.0.0.0", port=port, print=None, access_log=None, shutdown_timeout=2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
