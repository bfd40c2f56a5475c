"""Two reported field problems, reproduced in the lab through the commands a user types (sublab, subctl, kubectl):

- a non-gateway node's RouteAgent stayed "connecting" for a remote cluster although the remote health-check IP
  answered pings (its first echo went out before the cable was up; the next was due a minute later);
- after a cluster's gateway moved to another cable driver, the other cluster's Gateway kept showing the old
  remote Endpoint (and the gateway node, switched from vxlan to wireguard, crash-looped: vxlan-tunnel still held
  UDP 4500).

The times are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_lab_dataplane import _build  # the dataplane lab test's cluster set (tests/lab is on sys.path: conftest)

from labharness import Lab, lab_instance, needs_root

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]
NS = "submariner-operator"


def _route_agent_verdicts(lab: Lab, cluster: str) -> dict[str, str]:
    doc = json.loads(lab.kubectl(cluster, "get", "routeagents.submariner.io", "-n", NS, "-o", "json").stdout)
    return {f"{ra['metadata']['name']}/{e['spec']['cluster_id']}": str(e["status"])
            for ra in doc["items"] for e in (ra.get("status") or {}).get("remoteEndpoints") or []}


def test_route_agent_verdict_and_driver_change_seen_by_the_other_cluster(tmp_path: Path) -> None:
    with lab_instance(tmp_path) as lab:
        cs = _build(lab, tmp_path, "vxlan")
        built = time.monotonic()
        lab.wait_for("c1-control-plane's RouteAgent: c2 connected",
                     lambda: _route_agent_verdicts(lab, "c1").get("c1-control-plane/c2") == "connected",
                     timeout=60, interval=0.2)
        ra_after = time.monotonic() - built
        assert _route_agent_verdicts(lab, "c1").get("c1-worker/c2") == "none"  # the gateway node does not ping

        def c1_as_seen_by_c2() -> tuple[str, str]:
            for gw in cs.gateways("c2"):
                for conn in (gw.get("status") or {}).get("connections") or []:  # type: ignore[union-attr]
                    if conn["endpoint"]["cluster_id"] == "c1":
                        return str(conn["endpoint"]["backend"]), str(conn["status"])
            return "", ""

        assert c1_as_seen_by_c2() == ("vxlan", "connected")
        lab.kubectl("c1", "-n", NS, "set", "env", "ds/submariner-gateway", "SUBMARINER_CABLEDRIVER=wireguard")
        changed = time.monotonic()

        def c1_active_backend() -> str:
            for gw in cs.gateways("c1"):
                status = gw.get("status") or {}
                if isinstance(status, dict) and status.get("haStatus") == "active":
                    return str((status.get("localEndpoint") or {}).get("backend") or "")
            return ""

        lab.wait_for("c1's gateway active again, with wireguard", lambda: c1_active_backend() == "wireguard",
                     timeout=60, interval=0.2)
        c1_active_after = time.monotonic() - changed
        lab.wait_for("c2's Gateway shows c1's new cable driver", lambda: c1_as_seen_by_c2()[0] == "wireguard",
                     timeout=60, interval=0.2)
        c2_sees_after = time.monotonic() - changed
        shown = cs.subctl("show", "connections", "--context", lab.instance.context("c2")).stdout
        print(f"\nRouteAgent c1-control-plane/c2 connected {ra_after:.1f} s after both gateways were; c1 gateway "
              f"active with wireguard after {c1_active_after:.1f} s, c2's Gateway shows it after "
              f"{c2_sees_after:.1f} s\n{shown}")
        assert "wireguard" in shown
        assert ra_after < 15.0  # was ~30 s (up to 90 s) before; seconds now (echo repeats while unconfirmed)
    assert not lab.leftovers(), f"left behind: {lab.leftovers()}"
