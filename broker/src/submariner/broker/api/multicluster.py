"""multicluster.x-k8s.io/v1alpha1 (mcs-api v0.1.0, the version Lighthouse v0.19 speaks).

ServiceExport conditions are mcs-api's own ServiceExportCondition, not metav1.Condition: reason and
message are optional and may be "", which Lighthouse relies on (Valid=True has reason "").
"""

from typing import Final, Literal, Required, TypedDict

from submariner.broker.api.meta import APIResource, ConditionStatus, ObjectMeta

GROUP: Final = "multicluster.x-k8s.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

SERVICE_EXPORTS = APIResource(
    GROUP, VERSION, "ServiceExport", "serviceexports", "serviceexport", True, ("svcex",)
)
SERVICE_IMPORTS = APIResource(
    GROUP, VERSION, "ServiceImport", "serviceimports", "serviceimport", True, ("svcim",)
)
RESOURCES: Final = (SERVICE_EXPORTS, SERVICE_IMPORTS)

ServiceImportType = Literal["ClusterSetIP", "Headless"]
CLUSTER_SET_IP: Final = "ClusterSetIP"
HEADLESS: Final = "Headless"
SERVICE_IMPORT_TYPES: tuple[ServiceImportType, ...] = ("ClusterSetIP", "Headless")

SESSION_AFFINITY_NONE: Final = "None"
SESSION_AFFINITY_CLIENT_IP: Final = "ClientIP"


class ServicePort(TypedDict, total=False):
    name: str
    protocol: str
    appProtocol: str
    port: Required[int]


class ClientIPConfig(TypedDict, total=False):
    timeoutSeconds: int


class SessionAffinityConfig(TypedDict, total=False):
    clientIP: ClientIPConfig


class ServiceImportSpec(TypedDict, total=False):
    ports: Required[list[ServicePort]]
    """`[]` for Headless."""
    ips: list[str]
    """At most one: the clusterset VIP (or, on a per-cluster import, the cluster/global IP)."""
    type: Required[ServiceImportType]
    sessionAffinity: str
    """Copied from the Service ("None" or "ClientIP"); not an enum upstream, so "" is tolerated."""
    sessionAffinityConfig: SessionAffinityConfig


class ClusterStatus(TypedDict):
    cluster: str


class ServiceImportStatus(TypedDict, total=False):
    clusters: list[ClusterStatus]


class ServiceImport(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: ServiceImportSpec
    status: ServiceImportStatus


class ServiceExportCondition(TypedDict, total=False):
    type: Required[str]
    status: Required[ConditionStatus]
    lastTransitionTime: str
    reason: str
    message: str


class ServiceExportStatus(TypedDict, total=False):
    conditions: list[ServiceExportCondition]


class ServiceExport(TypedDict, total=False):
    """No spec: the export names its Service by having the same namespace and name."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    status: ServiceExportStatus
