"""Label and annotation keys shared between clusters: they are the only links between synced objects.

Lighthouse keys follow lighthouse-agent.md §2; dataplane keys follow dataplane.md §1-§4.
"""

from __future__ import annotations

from typing import Final

from submariner.broker.api.names import sanitize_name

# Lighthouse / MCS
SERVICE_NAME: Final = "multicluster.kubernetes.io/service-name"
"""Label on per-cluster ServiceImports and Lighthouse EndpointSlices; *annotation* on broker aggregates."""
SOURCE_CLUSTER: Final = "multicluster.kubernetes.io/source-cluster"
SOURCE_NAMESPACE: Final = "lighthouse.submariner.io/sourceNamespace"
"""Label on per-cluster ServiceImports and EndpointSlices; annotation on broker aggregates."""
ENDPOINTSLICE_MANAGED_BY: Final = "endpointslice.kubernetes.io/managed-by"
LIGHTHOUSE_MANAGED_BY: Final = "lighthouse-agent.submariner.io"
"""Value of ENDPOINTSLICE_MANAGED_BY that marks Lighthouse slices."""
IS_HEADLESS: Final = "lighthouse.submariner.io/is-headless"
SOURCE_NAME: Final = "lighthouse.submariner.io/source-name"
PUBLISH_NOT_READY_ADDRESSES: Final = "lighthouse.submariner.io/publish-not-ready-addresses"
GLOBALNET_ENABLED: Final = "lighthouse.submariner.io/globalnet-enabled"
USE_CLUSTERSET_IP: Final = "lighthouse.submariner.io/use-clusterset-ip"
CLUSTERSET_IP_ALLOCATED_BY: Final = "lighthouse.submariner.io/clusterset-ip-allocated-by"
EXPORT_TIMESTAMP_PREFIX: Final = "timestamp.submariner.io/"
"""Followed by the sanitised cluster ID; value = ServiceExport creationTimestamp in Unix ns."""
LEGACY_SOURCE_NAME: Final = "lighthouse.submariner.io/sourceName"
LEGACY_SOURCE_CLUSTER: Final = "lighthouse.submariner.io/sourceCluster"
K8S_SERVICE_NAME: Final = "kubernetes.io/service-name"
"""Set by Kubernetes on a Service's own EndpointSlices (never on Lighthouse ones)."""

# Admiral syncer
CLUSTER_ID: Final = "submariner-io/clusterID"
"""Origin cluster of every object pushed to / pulled from the broker; prevents sync echoes."""
ORIGINATING_NAMESPACE: Final = "submariner-io/originatingNamespace"

# Gateway and route agent
GATEWAY_NODE: Final = "submariner.io/gateway"
GATEWAY_CONFIG_PREFIX: Final = "gateway.submariner.io/"
"""Node label/annotation prefix for per-gateway backend_config (udp-port, public-ip, ...)."""
GATEWAY_POD_STATUS: Final = "gateway.submariner.io/status"
GATEWAY_POD_NODE: Final = "gateway.submariner.io/node"
UPDATE_TIMESTAMP: Final = "update-timestamp"
"""Gateway annotation: Unix seconds of the last sync; stale Gateways are deleted by the active one."""
TCP_CLAMP_MSS: Final = "submariner.io/tcp-clamp-mss"
CALICO_IPPOOL: Final = "submariner.io/ippool"

# Globalnet
GLOBAL_IP: Final = "submariner.io/globalIp"
SERVICE_REF: Final = "submariner.io/serviceRef"
EXPORTED_SERVICE_REF: Final = "submariner.io/exportedServiceRef"
HEADLESS_SVC_POD_IP: Final = "submariner.io/headless-svc-pod-ip"
HEADLESS_SVC_ENDPOINTS_IP: Final = "submariner.io/headless-svc-endpoints-ip"
ENDPOINTS_CLONED_FROM: Final = "endpoints.submariner.io/cloned-from"
INTERNAL_SERVICE_FINALIZER: Final = "submariner.io/globalnet-internal-service"


def export_timestamp_key(cluster_id: str) -> str:
    """Aggregate annotation holding one cluster's export time; upstream sanitises the ID first."""
    return EXPORT_TIMESTAMP_PREFIX + sanitize_name(cluster_id)
