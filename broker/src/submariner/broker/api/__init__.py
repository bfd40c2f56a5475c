"""Submariner API types: one module per API group, plus CRD manifests, label keys and naming rules.

Objects are plain JSON dicts typed with TypedDicts whose keys are exactly upstream's JSON names.
Group modules: `submariner` (submariner.io/v1), `multicluster` (multicluster.x-k8s.io/v1alpha1),
`operator` (submariner.io/v1alpha1). `labels` and `conditions` hold the shared string constants.

The model modules deliberately avoid `from __future__ import annotations`: on Python 3.11 TypedDict only
honours `Required[...]` (`__required_keys__`) when annotations are evaluated.
"""

from submariner.broker.api import conditions, labels, multicluster, operator, submariner
from submariner.broker.api.conditions import (
    ExportCondition,
    ExportReason,
    GlobalnetCondition,
    GlobalnetReason,
)
from submariner.broker.api.crds import all_crds, broker_crds, crd, render_crds_yaml
from submariner.broker.api.meta import (
    APIResource,
    Condition,
    ConditionStatus,
    LabelSelector,
    LocalObjectReference,
    ObjectMeta,
    Secret,
)
from submariner.broker.api.multicluster import (
    ServiceExport,
    ServiceExportCondition,
    ServiceExportStatus,
    ServiceImport,
    ServiceImportSpec,
    ServiceImportStatus,
    ServicePort,
)
from submariner.broker.api.names import (
    cable_name,
    cluster_id_problems,
    endpoint_name,
    sanitize_cluster_id,
    sanitize_name,
    validate_cluster_id,
)
from submariner.broker.api.operator import (
    Broker,
    BrokerSpec,
    ServiceDiscovery,
    ServiceDiscoverySpec,
    Submariner,
    SubmarinerSpec,
)
from submariner.broker.api.submariner import (
    Cluster,
    ClusterGlobalEgressIP,
    ClusterGlobalEgressIPSpec,
    ClusterSpec,
    Connection,
    Endpoint,
    EndpointSpec,
    Gateway,
    GatewayStatus,
    GlobalEgressIP,
    GlobalEgressIPSpec,
    GlobalEgressIPStatus,
    GlobalIngressIP,
    GlobalIngressIPSpec,
    GlobalIngressIPStatus,
    LatencyRTTSpec,
    RemoteEndpoint,
    RouteAgent,
    RouteAgentStatus,
)

RESOURCES: tuple[APIResource, ...] = submariner.RESOURCES + multicluster.RESOURCES + operator.RESOURCES

__all__ = [
    "RESOURCES",
    "APIResource",
    "Broker",
    "BrokerSpec",
    "Cluster",
    "ClusterGlobalEgressIP",
    "ClusterGlobalEgressIPSpec",
    "ClusterSpec",
    "Condition",
    "ConditionStatus",
    "Connection",
    "Endpoint",
    "EndpointSpec",
    "ExportCondition",
    "ExportReason",
    "Gateway",
    "GatewayStatus",
    "GlobalEgressIP",
    "GlobalEgressIPSpec",
    "GlobalEgressIPStatus",
    "GlobalIngressIP",
    "GlobalIngressIPSpec",
    "GlobalIngressIPStatus",
    "GlobalnetCondition",
    "GlobalnetReason",
    "LabelSelector",
    "LatencyRTTSpec",
    "LocalObjectReference",
    "ObjectMeta",
    "RemoteEndpoint",
    "RouteAgent",
    "RouteAgentStatus",
    "Secret",
    "ServiceDiscovery",
    "ServiceDiscoverySpec",
    "ServiceExport",
    "ServiceExportCondition",
    "ServiceExportStatus",
    "ServiceImport",
    "ServiceImportSpec",
    "ServiceImportStatus",
    "ServicePort",
    "Submariner",
    "SubmarinerSpec",
    "all_crds",
    "broker_crds",
    "cable_name",
    "cluster_id_problems",
    "conditions",
    "crd",
    "endpoint_name",
    "labels",
    "multicluster",
    "operator",
    "render_crds_yaml",
    "sanitize_cluster_id",
    "sanitize_name",
    "submariner",
    "validate_cluster_id",
]
