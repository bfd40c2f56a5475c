"""The datastore syncer (dataplane.md §2.11 "publish Cluster and local Endpoint to the broker").

The active gateway is the only writer of its cluster's Cluster and Endpoint: it writes them into the local
SUBMARINER_NAMESPACE, and `submariner.broker.sync.BrokerSyncer` exports them to the broker namespace and
imports every other cluster's Clusters and Endpoints into the local namespace, where the tunnel controller,
the route agents and Globalnet read them. Leftover Endpoints of this cluster (an earlier gateway's) are
deleted so remote clusters converge on the new one.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from submariner.broker.api.names import sanitize_name
from submariner.broker.api.submariner import CLUSTERS, ENDPOINTS, EndpointSpec
from submariner.broker.kube import ClientFactory, KubeError, NotFound, Obj, create_or_update
from submariner.broker.sync import BrokerSyncer, BrokerSyncerConfig, ResourceConfig
from submariner.gateway.endpoint import endpoint_object
from submariner.gateway.engine import specs_equal

log = logging.getLogger(__name__)


def cluster_object(cluster_id: str, namespace: str, *, cluster_cidrs: list[str], service_cidrs: list[str],
                   global_cidrs: list[str]) -> Obj:
    return {
        "apiVersion": "submariner.io/v1", "kind": "Cluster",
        "metadata": {"name": sanitize_name(cluster_id), "namespace": namespace},
        "spec": {"cluster_id": cluster_id, "color_codes": ["blue"], "service_cidr": list(service_cidrs),
                 "cluster_cidr": list(cluster_cidrs), "global_cidr": list(global_cidrs)},
    }


def _cluster_id_of(obj: Obj) -> str:
    return str((obj.get("spec") or {}).get("cluster_id") or "")


class DatastoreSyncer:
    def __init__(self, local: ClientFactory, broker: ClientFactory, *, namespace: str, broker_namespace: str,
                 cluster_id: str, cluster: Obj, endpoint: EndpointSpec) -> None:
        self.local = local
        self.broker = broker
        self.namespace = namespace
        self.broker_namespace = broker_namespace
        self.cluster_id = cluster_id
        self.cluster = cluster
        self.endpoint = endpoint
        ours = self._ours
        theirs = self._theirs
        self.syncer = BrokerSyncer(BrokerSyncerConfig(
            local=local, broker=broker, broker_namespace=broker_namespace, local_cluster_id=cluster_id,
            park_missing_namespaces=False,
            resources=[
                ResourceConfig(CLUSTERS, local_namespace=namespace, local_should_process=ours,
                               broker_should_process=theirs),
                ResourceConfig(ENDPOINTS, local_namespace=namespace, local_should_process=ours,
                               broker_should_process=theirs),
            ],
        ))

    def _ours(self, obj: Obj, op: Any) -> bool:
        return _cluster_id_of(obj) == self.cluster_id

    def _theirs(self, obj: Obj, op: Any) -> bool:
        return _cluster_id_of(obj) != self.cluster_id

    def publish(self) -> None:
        """Write the local Cluster and Endpoint; delete this cluster's other Endpoints."""
        create_or_update(self.local.resource(CLUSTERS), self.cluster)
        mine = endpoint_object(self.endpoint, self.namespace)
        create_or_update(self.local.resource(ENDPOINTS), mine)
        client = self.local.resource(ENDPOINTS)
        items, _ = client.list(self.namespace)
        for ep in items:
            spec = ep.get("spec") or {}
            name = (ep.get("metadata") or {}).get("name")
            if spec.get("cluster_id") != self.cluster_id or name == mine["metadata"]["name"]:
                continue
            if specs_equal(spec, self.endpoint):  # type: ignore[arg-type]
                continue
            log.info("deleting this cluster's stale Endpoint %s/%s", self.namespace, name)
            with contextlib.suppress(NotFound):
                client.delete(self.namespace, str(name))

    def update_endpoint(self, endpoint: EndpointSpec) -> None:
        self.endpoint = endpoint
        create_or_update(self.local.resource(ENDPOINTS), endpoint_object(endpoint, self.namespace))

    def start(self, timeout: float | None = 30.0) -> None:
        self.publish()
        self.syncer.start(timeout)

    def stop(self) -> None:
        self.syncer.stop()

    def withdraw(self) -> None:
        """Uninstall: remove our Cluster and Endpoint locally and their copies on the broker (no syncer runs
        during an uninstall to carry the deletes over)."""
        name = endpoint_object(self.endpoint, self.namespace)["metadata"]["name"]
        for res, obj_name in ((ENDPOINTS, name), (CLUSTERS, self.cluster["metadata"]["name"])):
            for cluster, ns in ((self.local, self.namespace), (self.broker, self.broker_namespace)):
                try:
                    if cluster is self.broker and _cluster_id_of(cluster.resource(res).get(ns, obj_name)) != \
                            self.cluster_id:
                        continue  # not ours (a name clash on the broker): leave it
                    cluster.resource(res).delete(ns, obj_name)
                except NotFound:
                    pass
                except KubeError as e:
                    log.warning("deleting %s %s/%s failed: %s", res.kind, ns, obj_name, e)
