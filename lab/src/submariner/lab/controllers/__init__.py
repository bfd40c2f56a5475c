"""The controllers of a tiny Kubernetes, as pure API clients: Deployments, StatefulSets, DaemonSets, the
scheduler and the EndpointSlice controller.

Why our own: a lab cluster is an API server plus network namespaces, and nothing else turns a `kubectl
apply` of the seed's Deployment into pods bound to nodes and endpoints for its Service. They need no root and
no netns (the kubelet does that part), so they run anywhere an API server is reachable.

    ctl = Controllers(Cluster.from_kubeconfig(path, context), cluster_name="c1")
    ctl.start(); ctl.wait_synced(10); ...; ctl.stop()

All controllers share one informer per resource type; each has its own work queue and worker thread.
Garbage collection of dependents (pods, slices) is the API server's, through ownerReferences.
"""

from __future__ import annotations

import logging
import time

from submariner.broker.kube import ClientFactory

from .base import Caches, Controller
from .daemonset import DaemonSetController
from .deployment import DeploymentController
from .endpointslice import EndpointSliceController
from .scheduler import Scheduler
from .statefulset import StatefulSetController

log = logging.getLogger(__name__)

__all__ = [
    "Controllers",
    "DaemonSetController",
    "DeploymentController",
    "EndpointSliceController",
    "Scheduler",
    "StatefulSetController",
]


class Controllers:
    """Every controller of one lab cluster, started and stopped together."""

    def __init__(self, kube: ClientFactory, *, cluster_name: str) -> None:
        self.cluster_name = cluster_name
        self.caches = Caches(kube, cluster_name=cluster_name)
        self.deployments = DeploymentController(kube, self.caches, cluster_name=cluster_name)
        self.statefulsets = StatefulSetController(kube, self.caches, cluster_name=cluster_name)
        self.daemonsets = DaemonSetController(kube, self.caches, cluster_name=cluster_name)
        self.scheduler = Scheduler(kube, self.caches, cluster_name=cluster_name)
        self.endpointslices = EndpointSliceController(kube, self.caches, cluster_name=cluster_name)
        self.all: tuple[Controller, ...] = (
            self.deployments, self.statefulsets, self.daemonsets, self.scheduler, self.endpointslices,
        )
        self._started = False

    def start(self) -> None:
        """Register handlers, start the informers, then the workers (which wait for the caches to sync)."""
        if self._started:
            return
        self._started = True
        for c in self.all:
            c.register()
        self.caches.start()
        for c in self.all:
            c.start()
        log.info("controllers started cluster=%s", self.cluster_name)

    def stop(self) -> None:
        for c in self.all:
            c.stop()
        self.caches.stop()
        log.info("controllers stopped cluster=%s", self.cluster_name)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once every informer has its first list (the workers start reconciling then)."""
        return self.caches.wait_synced(timeout)

    def idle(self) -> bool:
        """No controller has work queued or running (delayed re-checks aside)."""
        return not any(c.busy() for c in self.all)

    def wait_idle(self, timeout: float = 10.0, quiet: float = 0.2) -> bool:
        """Wait until every queue stayed empty for `quiet` seconds (tests and `sublab` readiness)."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        while time.monotonic() < deadline:
            if self.idle():
                since = since or time.monotonic()
                if time.monotonic() - since >= quiet:
                    return True
            else:
                since = None
            time.sleep(0.02)
        return False
