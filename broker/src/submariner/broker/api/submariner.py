"""submariner.io/v1: the dataplane kinds (dataplane.md §1).

JSON names are upstream's, several of them snake_case (`cluster_id`, `cable_name`, ...), because other
Submariner implementations read the same objects from the broker. `Required` marks what the CRD requires.
"""

from typing import Final, Literal, Required, TypedDict

from submariner.broker.api.meta import (
    APIResource,
    Condition,
    LabelSelector,
    LocalObjectReference,
    ObjectMeta,
)

GROUP: Final = "submariner.io"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

CLUSTERS = APIResource(GROUP, VERSION, "Cluster", "clusters", "cluster", True)
ENDPOINTS = APIResource(GROUP, VERSION, "Endpoint", "endpoints", "endpoint", True)
GATEWAYS = APIResource(GROUP, VERSION, "Gateway", "gateways", "gateway", True)
ROUTE_AGENTS = APIResource(GROUP, VERSION, "RouteAgent", "routeagents", "routeagent", True)
GLOBAL_EGRESS_IPS = APIResource(
    GROUP, VERSION, "GlobalEgressIP", "globalegressips", "globalegressip", True, ("geip",)
)
CLUSTER_GLOBAL_EGRESS_IPS = APIResource(
    GROUP,
    VERSION,
    "ClusterGlobalEgressIP",
    "clusterglobalegressips",
    "clusterglobalegressip",
    namespaced=False,
    short_names=("cgeip",),
)
GLOBAL_INGRESS_IPS = APIResource(
    GROUP, VERSION, "GlobalIngressIP", "globalingressips", "globalingressip", True, ("giip",)
)
RESOURCES: Final = (
    CLUSTERS,
    ENDPOINTS,
    GATEWAYS,
    ROUTE_AGENTS,
    GLOBAL_EGRESS_IPS,
    CLUSTER_GLOBAL_EGRESS_IPS,
    GLOBAL_INGRESS_IPS,
)

# Endpoint.spec.backend values (the cable drivers).
BACKEND_LIBRESWAN: Final = "libreswan"
BACKEND_WIREGUARD: Final = "wireguard"
BACKEND_VXLAN: Final = "vxlan"
DEFAULT_BACKEND: Final = BACKEND_LIBRESWAN

# Endpoint.spec.backend_config keys.
UDP_PORT_CONFIG: Final = "udp-port"
NATT_DISCOVERY_PORT_CONFIG: Final = "natt-discovery-port"
PUBLIC_IP_CONFIG: Final = "public-ip"
PREFERRED_SERVER_CONFIG: Final = "preferred-server"
PREFERRED_SERVER_TIMESTAMP_CONFIG: Final = "preferred-server-timestamp"
USING_LOAD_BALANCER_CONFIG: Final = "using-loadbalancer"
PUBLIC_KEY_CONFIG: Final = "publicKey"
INTERFACE_NAME_CONFIG: Final = "interface-name"
NODE_CONFIGURABLE_KEYS: Final = (
    UDP_PORT_CONFIG,
    NATT_DISCOVERY_PORT_CONFIG,
    PUBLIC_IP_CONFIG,
    PREFERRED_SERVER_CONFIG,
)
"""The only backend_config keys a node label/annotation may set; any other is a fatal error."""
DEFAULT_UDP_PORT: Final = 4500
DEFAULT_NATT_DISCOVERY_PORT: Final = 4490

CLUSTER_EGRESS_NAME: Final = "cluster-egress.submariner.io"
"""The only ClusterGlobalEgressIP Globalnet honours."""
MAX_GLOBAL_IPS: Final = 20

HAStatus = Literal["active", "passive"]
HA_ACTIVE: Final = "active"
HA_PASSIVE: Final = "passive"

ConnectionStatus = Literal["connected", "connecting", "error", "none"]
"""`none` only appears in RouteAgent status (health check not performed)."""
CONNECTION_STATUSES: tuple[ConnectionStatus, ...] = ("connected", "connecting", "error", "none")

TargetType = Literal["ClusterIPService", "HeadlessServicePod", "HeadlessServiceEndpoints"]
TARGET_CLUSTER_IP_SERVICE: Final = "ClusterIPService"
TARGET_HEADLESS_SERVICE_POD: Final = "HeadlessServicePod"
TARGET_HEADLESS_SERVICE_ENDPOINTS: Final = "HeadlessServiceEndpoints"
TARGET_TYPES: tuple[TargetType, ...] = (
    "ClusterIPService",
    "HeadlessServicePod",
    "HeadlessServiceEndpoints",
)


class ClusterSpec(TypedDict, total=False):
    cluster_id: Required[str]
    color_codes: list[str]
    service_cidr: Required[list[str]]
    cluster_cidr: Required[list[str]]
    global_cidr: Required[list[str]]
    """`[]`, never null, when Globalnet is off."""


class Cluster(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: Required[ClusterSpec]


class EndpointSpec(TypedDict, total=False):
    cluster_id: Required[str]
    cable_name: Required[str]
    healthCheckIP: str
    hostname: Required[str]
    subnets: Required[list[str]]
    private_ip: Required[str]
    public_ip: Required[str]
    nat_enabled: Required[bool]
    backend: Required[str]
    backend_config: dict[str, str]


class Endpoint(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: Required[EndpointSpec]


class LatencyRTTSpec(TypedDict, total=False):
    """Go duration strings such as "1.234567ms"."""

    last: str
    min: str
    average: str
    max: str
    stdDev: str


class Connection(TypedDict, total=False):
    status: Required[ConnectionStatus]
    statusMessage: Required[str]
    endpoint: Required[EndpointSpec]
    usingIP: str
    usingNAT: bool
    latencyRTT: LatencyRTTSpec


class GatewayStatus(TypedDict):
    version: str
    haStatus: HAStatus
    localEndpoint: EndpointSpec
    statusFailure: str
    connections: list[Connection]
    """Never null."""


class Gateway(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    status: Required[GatewayStatus]


class RemoteEndpoint(TypedDict, total=False):
    status: Required[ConnectionStatus]
    statusMessage: Required[str]
    spec: Required[EndpointSpec]
    latencyRTT: LatencyRTTSpec


class RouteAgentStatus(TypedDict):
    version: str
    statusFailure: str
    remoteEndpoints: list[RemoteEndpoint]


class RouteAgent(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    status: Required[RouteAgentStatus]


class GlobalEgressIPSpec(TypedDict, total=False):
    numberOfIPs: int
    """0..20; absent means 1."""
    podSelector: LabelSelector
    """Absent selects the whole namespace; changes are refused (Updated=False)."""


class GlobalEgressIPStatus(TypedDict, total=False):
    conditions: list[Condition]
    allocatedIPs: list[str]


class GlobalEgressIP(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: Required[GlobalEgressIPSpec]
    status: GlobalEgressIPStatus


class ClusterGlobalEgressIPSpec(TypedDict, total=False):
    numGlobalIPs: int
    """Not `numberOfIPs`: upstream's JSON name differs from GlobalEgressIP's."""


class ClusterGlobalEgressIP(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: Required[ClusterGlobalEgressIPSpec]
    status: GlobalEgressIPStatus


class GlobalIngressIPSpec(TypedDict, total=False):
    target: Required[TargetType]
    serviceRef: LocalObjectReference
    podRef: LocalObjectReference


class GlobalIngressIPStatus(TypedDict, total=False):
    conditions: list[Condition]
    allocatedIP: str


class GlobalIngressIP(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: Required[GlobalIngressIPSpec]
    status: GlobalIngressIPStatus


def gateway_ip(spec: EndpointSpec) -> str:
    """The address remote gateways should reach: the public IP when known, else the private one."""
    return spec.get("public_ip") or spec["private_ip"]
