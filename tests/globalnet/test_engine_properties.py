"""Restart safety as a property: random exports, pods and leader restarts never hand one global IP to two
objects, the pool always holds exactly what the objects' statuses record, and an object's IP never changes."""

from __future__ import annotations

import contextlib
import ipaddress
import time

from gntest import Harness, create_pod, export, pod, service
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from submariner.broker.api.multicluster import SERVICE_EXPORTS
from submariner.broker.api.submariner import CLUSTER_GLOBAL_EGRESS_IPS, GLOBAL_INGRESS_IPS
from submariner.broker.kube import SERVICES, AlreadyExists, NotFound
from submariner.broker.kube.fake import FakeCluster
from submariner.globalnet import rules as R
from submariner.globalnet.config import Config
from submariner.globalnet.context import PODS

# a /27: 30 hosts, 8 of them cluster egress, so the pool runs dry now and then
CONFIG = Config(cluster_id="g1", node_name="n1", global_cidrs=("242.1.0.0/27",), cluster_cidrs=("10.1.0.0/16",))

_op = st.one_of(
    st.tuples(st.just("pod+"), st.integers(0, 24)),
    st.tuples(st.just("pod-"), st.integers(0, 24)),
    st.tuples(st.just("svc+"), st.integers(0, 5)),
    st.tuples(st.just("svc-"), st.integers(0, 5)),
    st.tuples(st.just("restart"), st.just(0)),
)


def _by_object(cluster: FakeCluster) -> dict[str, str]:
    return {o["metadata"]["name"]: o["status"]["allocatedIP"] for o in cluster.objects(GLOBAL_INGRESS_IPS)
            if (o.get("status") or {}).get("allocatedIP")}


def _recorded(cluster: FakeCluster) -> list[str]:
    ips = [ip for o in cluster.objects(CLUSTER_GLOBAL_EGRESS_IPS) for ip in (o.get("status") or {}).get(
        "allocatedIPs") or ()]
    ips += [o["status"]["allocatedIP"] for o in cluster.objects(GLOBAL_INGRESS_IPS)
            if (o.get("status") or {}).get("allocatedIP")]
    return ips


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, min_size=3, max_size=9))
@example([("pod+", 0), ("pod+", 1), ("pod+", 2), ("pod-", 1), ("restart", 0), ("pod+", 3)])
def test_random_changes_and_restarts_never_share_an_ip(ops: list[tuple[str, int]]) -> None:
    cluster = FakeCluster("g1")
    cluster.resource(SERVICES).create(service("s", "hs", headless=True, selector={"app": "w"}))
    cluster.resource(SERVICE_EXPORTS).create(export("s", "hs"))
    h = Harness(cluster, config=CONFIG).start(settle=False)
    pods: set[int] = set()
    before: dict[str, str] = {}
    try:
        for op, i in ops:
            if op == "pod+" and i not in pods:
                create_pod(cluster, pod("s", f"w-{i}", f"10.1.0.{i + 1}", {"app": "w"}))
                pods.add(i)
            elif op == "pod-" and i in pods:
                cluster.resource(PODS).delete("s", f"w-{i}")
                pods.discard(i)
            elif op == "svc+":
                with contextlib.suppress(AlreadyExists):
                    cluster.resource(SERVICES).create(service("s", f"cs-{i}", selector={"app": "x"}))
                with contextlib.suppress(AlreadyExists):
                    cluster.resource(SERVICE_EXPORTS).create(export("s", f"cs-{i}"))
            elif op == "svc-":
                with contextlib.suppress(NotFound):
                    cluster.resource(SERVICE_EXPORTS).delete("s", f"cs-{i}")
            elif op == "restart":
                h.stop()
                h = Harness(cluster, pf=h.pf, ipsets=h.ipsets, config=CONFIG).start(settle=False)
            _settle_loosely(h)
            recorded = _recorded(cluster)
            assert len(recorded) == len(set(recorded)), recorded
            pool = set(h.engine.pool.allocated())
            assert set(recorded) <= pool, (recorded, pool)
            assert all(ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("242.1.0.0/27") for ip in recorded)
            # an object keeps its IP for as long as it exists, across restarts too (DNS answers stay valid)
            now = _by_object(cluster)
            assert all(now[name] == ip for name, ip in before.items() if name in now), (before, now)
            before = now
        _settle_loosely(h)
        # at rest: every allocated IP is recorded somewhere, and each ingress rule uses a recorded IP
        recorded = _recorded(cluster)
        assert sorted(recorded, key=ipaddress.IPv4Address) == h.engine.pool.allocated()
        for rule in h.chain(R.INGRESS):
            assert rule[1].split("/")[0] in recorded
    finally:
        h.stop()


def _settle_loosely(h: Harness) -> None:
    """Like settle, but an exhausted pool keeps retrying: wait until only delayed retries remain."""
    deadline = time.monotonic() + 10
    quiet_since: float | None = None
    q = h.engine.ctx.queue
    while time.monotonic() < deadline:
        with q._cond:
            busy = bool(q._ready or q._processing)
        if not busy and h.engine.started.is_set():
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.1:
                return
        else:
            quiet_since = None
        time.sleep(0.01)
    raise AssertionError("engine stayed busy")
