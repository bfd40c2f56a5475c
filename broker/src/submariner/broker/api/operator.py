"""submariner.io/v1alpha1: the operator's kinds, which subctl writes (subctl.md §6).

Submariner (connectivity, optionally with service discovery), ServiceDiscovery (discovery-only join) and
Broker (on the broker cluster). Required keys are the ones upstream always serialises.
"""

from typing import Any, Final, Required, TypedDict

from submariner.broker.api.meta import APIResource, ObjectMeta
from submariner.broker.api.submariner import GatewayStatus

GROUP: Final = "submariner.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

SUBMARINERS = APIResource(GROUP, VERSION, "Submariner", "submariners", "submariner", True)
SERVICE_DISCOVERIES = APIResource(
    GROUP, VERSION, "ServiceDiscovery", "servicediscoveries", "servicediscovery", True
)
BROKERS = APIResource(GROUP, VERSION, "Broker", "brokers", "broker", True)
RESOURCES: Final = (SUBMARINERS, SERVICE_DISCOVERIES, BROKERS)

COMPONENT_CONNECTIVITY: Final = "connectivity"
COMPONENT_SERVICE_DISCOVERY: Final = "service-discovery"
COMPONENTS: Final = (COMPONENT_CONNECTIVITY, COMPONENT_SERVICE_DISCOVERY)

OPERATOR_NAMESPACE: Final = "submariner-operator"
SUBMARINER_NAME: Final = "submariner"
SERVICE_DISCOVERY_NAME: Final = "service-discovery"
BROKER_NAME: Final = "submariner-broker"
BROKER_SECRET_NAME: Final = "submariner-broker-secret"
IPSEC_PSK_SECRET_NAME: Final = "submariner-ipsec-psk"
BROKER_TYPE_K8S: Final = "k8s"

DEFAULT_GLOBALNET_CIDR_RANGE: Final = "242.0.0.0/8"
DEFAULT_GLOBALNET_CLUSTER_SIZE: Final = 65536
DEFAULT_CLUSTERSET_IP_CIDR_RANGE: Final = "243.0.0.0/8"
DEFAULT_CLUSTERSET_IP_CLUSTER_SIZE: Final = 4096


class Toleration(TypedDict, total=False):
    key: str
    operator: str
    value: str
    effect: str
    tolerationSeconds: int


class CoreDNSCustomConfig(TypedDict, total=False):
    configMapName: str
    namespace: str


class HealthCheckSpec(TypedDict, total=False):
    enabled: bool
    intervalSeconds: int
    maxPacketLossCount: int


class DeploymentInfo(TypedDict, total=False):
    kubernetesType: str
    kubernetesTypeVersion: str
    kubernetesVersion: str
    cloudProvider: str


class DaemonSetStatusWrapper(TypedDict, total=False):
    lastResourceVersion: str
    status: dict[str, Any]
    """apps/v1 DaemonSetStatus."""
    nonReadyContainerStates: list[dict[str, Any]]
    """core/v1 ContainerState items."""
    mismatchedContainerImages: Required[bool]


class LoadBalancerStatusWrapper(TypedDict, total=False):
    status: dict[str, Any]
    """core/v1 LoadBalancerStatus."""


class SubmarinerSpec(TypedDict, total=False):
    broker: Required[str]
    """Always "k8s" upstream; subctl writes ""."""
    brokerK8sApiServer: Required[str]
    """host:port, *without* scheme."""
    brokerK8sApiServerToken: str
    brokerK8sCA: str
    """Standard base64 of the CA bundle."""
    brokerK8sSecret: str
    brokerK8sRemoteNamespace: Required[str]
    brokerK8sInsecure: bool
    cableDriver: str
    ceIPSecPSK: str
    """Standard base64."""
    ceIPSecPSKSecret: str
    ceIPSecIKEPort: int
    ceIPSecNATTPort: int
    ceIPSecDebug: Required[bool]
    ceIPSecPreferredServer: bool
    ceIPSecForceUDPEncaps: bool
    clusterCIDR: Required[str]
    serviceCIDR: Required[str]
    globalCIDR: str
    clustersetIPCIDR: str
    clustersetIPEnabled: bool
    clusterID: Required[str]
    colorCodes: str
    namespace: Required[str]
    repository: str
    version: str
    debug: Required[bool]
    natEnabled: Required[bool]
    airGappedDeployment: bool
    loadBalancerEnabled: bool
    serviceDiscoveryEnabled: bool
    haltOnCertificateError: bool
    coreDNSCustomConfig: CoreDNSCustomConfig
    customDomains: list[str]
    imageOverrides: dict[str, str]
    connectionHealthCheck: HealthCheckSpec
    nodeSelector: dict[str, str]
    tolerations: list[Toleration]


class SubmarinerStatus(TypedDict, total=False):
    natEnabled: Required[bool]
    airGappedDeployment: bool
    colorCodes: str
    clusterID: Required[str]
    serviceCIDR: str
    clusterCIDR: str
    globalCIDR: str
    clustersetIPCIDR: str
    networkPlugin: str
    gatewayDaemonSetStatus: DaemonSetStatusWrapper
    routeAgentDaemonSetStatus: DaemonSetStatusWrapper
    globalnetDaemonSetStatus: DaemonSetStatusWrapper
    loadBalancerStatus: LoadBalancerStatusWrapper
    gateways: list[GatewayStatus]
    deploymentInfo: DeploymentInfo
    version: str


class Submariner(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: SubmarinerSpec
    status: SubmarinerStatus


class ServiceDiscoverySpec(TypedDict, total=False):
    brokerK8sApiServer: Required[str]
    brokerK8sApiServerToken: str
    brokerK8sCA: str
    brokerK8sSecret: str
    brokerK8sRemoteNamespace: Required[str]
    brokerK8sInsecure: bool
    clusterID: Required[str]
    namespace: Required[str]
    repository: str
    version: str
    clusterCIDR: str
    clustersetIPCIDR: str
    clustersetIPEnabled: bool
    debug: Required[bool]
    globalnetEnabled: bool
    haltOnCertificateError: bool
    coreDNSCustomConfig: CoreDNSCustomConfig
    customDomains: list[str]
    imageOverrides: dict[str, str]
    nodeSelector: dict[str, str]
    tolerations: list[Toleration]


class ServiceDiscoveryStatus(TypedDict, total=False):
    deploymentInfo: DeploymentInfo


class ServiceDiscovery(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: ServiceDiscoverySpec
    status: ServiceDiscoveryStatus


class BrokerSpec(TypedDict, total=False):
    components: list[str]
    """Any of COMPONENTS."""
    defaultCustomDomains: list[str]
    globalnetEnabled: bool
    globalnetCIDRRange: str
    defaultGlobalnetClusterSize: int
    clustersetIPEnabled: bool
    clustersetIPCIDRRange: str


class BrokerStatus(TypedDict, total=False):
    pass


class Broker(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: BrokerSpec
    status: BrokerStatus
