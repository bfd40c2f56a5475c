"""Prometheus metrics on SUBMARINER_METRICSPORT (32780): gateways, connections, RTT — upstream's names.

Rendered from the same status the Gateway CR carries, so the two never disagree.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

_UNITS = (("ns", 1e-9), ("µs", 1e-6), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0))


def seconds(go_duration: str) -> float:
    """Parse our own Go duration strings back ("1.5ms" → 0.0015, "1m30s" → 90)."""
    import re

    total = 0.0
    for value, unit in re.findall(r"([0-9.]+)(ns|µs|us|ms|s|m|h)", go_duration or ""):
        total += float(value) * dict(_UNITS)[unit]
    return total


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(status: dict[str, Any], *, driver: str) -> str:
    local = status.get("localEndpoint") or {}
    base = {"local_cluster": local.get("cluster_id", ""), "local_hostname": local.get("hostname", "")}
    lines = ["# HELP submariner_gateways Number of active gateways (1 on the active gateway)",
             "# TYPE submariner_gateways gauge",
             f"submariner_gateways {1 if status.get('haStatus') == 'active' else 0}",
             "# HELP submariner_connections Cable connections by status",
             "# TYPE submariner_connections gauge"]
    latency = ["# HELP submariner_connection_latency_seconds Last RTT through the cable",
               "# TYPE submariner_connection_latency_seconds gauge"]
    for conn in status.get("connections") or []:
        ep = conn.get("endpoint") or {}
        labels = {**base, "cable_driver": driver, "local_endpoint_ip": local.get("private_ip", ""),
                  "remote_cluster": ep.get("cluster_id", ""), "remote_hostname": ep.get("hostname", ""),
                  "remote_endpoint_ip": conn.get("usingIP", "")}
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f'submariner_connections{{{text},status="{_label(conn.get("status", ""))}"}} 1')
        rtt = (conn.get("latencyRTT") or {}).get("last")
        if rtt:
            latency.append(f"submariner_connection_latency_seconds{{{text}}} {seconds(rtt):.9f}")
    return "\n".join(lines + latency) + "\n"


class MetricsServer:
    def __init__(self, port: int, status: Callable[[], dict[str, Any]], *, driver: str, host: str = "0.0.0.0") -> None:
        provider = status

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                body = render(provider(), driver=driver).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
