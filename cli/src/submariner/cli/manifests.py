"""Every object subctl writes, rendered by pure functions (settings in, list of dicts out).

There is no operator: `join` applies `component_objects()` itself, so a real cluster and a lab cluster get
the same workloads, and tests can validate them offline against the Kubernetes OpenAPI schemas. Names,
images, environment variables and RBAC follow the upstream operator (subctl.md §6, dataplane.md §2.1/§3.1).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from submariner.broker.api.crds import all_crds
from submariner.cli import BROKER_NAMESPACE, DEFAULT_REPOSITORY, IMAGE_TAG, OPERATOR_NAMESPACE

Obj = dict[str, Any]

GATEWAY_LABEL = "submariner.io/gateway"
BROKER_ADMIN = "submariner-k8s-broker-admin"
BROKER_CLUSTER_ROLE = "submariner-k8s-broker-cluster"
BROKER_CR_NAME = "submariner-broker"
GLOBALNET_CONFIGMAP = "submariner-globalnet-info"
CLUSTERSET_IP_CONFIGMAP = "submariner-clustersetip-info"
BROKER_SECRET = "submariner-broker-secret"
PSK_SECRET = "submariner-ipsec-psk"
SUBMARINER_CR = "submariner"
SERVICE_DISCOVERY_CR = "service-discovery"
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"

GATEWAY = "submariner-gateway"
ROUTE_AGENT = "submariner-routeagent"
GLOBALNET = "submariner-globalnet"
LIGHTHOUSE_AGENT = "submariner-lighthouse-agent"
LIGHTHOUSE_COREDNS = "submariner-lighthouse-coredns"
COMPONENTS = (GATEWAY, ROUTE_AGENT, GLOBALNET, LIGHTHOUSE_AGENT, LIGHTHOUSE_COREDNS)
IMAGE_COMPONENTS = (
    "submariner-operator", "submariner-gateway", "submariner-routeagent", "submariner-globalnet",
    "submariner-lighthouse-agent", "submariner-lighthouse-coredns", "submariner-nettest", "submariner-metrics-proxy",
)
"""Valid `--image-override` keys (subctl.md §1)."""
_IMAGE_NAMES = {
    GATEWAY: "submariner-gateway",
    ROUTE_AGENT: "submariner-route-agent",
    GLOBALNET: "submariner-globalnet",
    LIGHTHOUSE_AGENT: "lighthouse-agent",
    LIGHTHOUSE_COREDNS: "lighthouse-coredns",
}
CLUSTERSET_ZONE = "clusterset.local"
METRICS_PORTS = {GATEWAY: 32780, GLOBALNET: 32781, ROUTE_AGENT: 32782, LIGHTHOUSE_AGENT: 8082}

_ALL = ["*"]
_READ = ["get", "list", "watch"]
_CRUD = ["get", "list", "watch", "create", "update", "patch", "delete"]
_FULL = [*_CRUD, "deletecollection"]
_LEASE_AND_CONFIGMAP_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": _CRUD},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": _CRUD},
]
"""The broker rights our agents need beyond upstream's (lighthouse heartbeats, clusterset-IP CAS)."""


def _meta(name: str, namespace: str | None = None, labels: Mapping[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    return meta


def _rule(groups: Sequence[str], resources: Sequence[str], verbs: Sequence[str]) -> Obj:
    return {"apiGroups": list(groups), "resources": list(resources), "verbs": list(verbs)}


def namespace(name: str, labels: Mapping[str, str] | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name, labels=labels)}


def service_account(name: str, ns: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, ns)}


def token_secret(account: str, ns: str) -> Obj:
    """A service-account token Secret (the token controller fills it); named by generateName like upstream."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": SA_TOKEN_TYPE,
        "metadata": {"generateName": f"{account}-token-", "namespace": ns,
                     "annotations": {SA_NAME_ANNOTATION: account}},
    }


def role(name: str, ns: str | None, rules: list[Obj]) -> Obj:
    kind = "Role" if ns else "ClusterRole"
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": _meta(name, ns), "rules": rules}


def binding(name: str, ns: str | None, role_name: str, account: str, account_ns: str,
            role_kind: str | None = None) -> Obj:
    kind = "RoleBinding" if ns else "ClusterRoleBinding"
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": _meta(name, ns),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind or ("Role" if ns else "ClusterRole"),
                    "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": account_ns}],
    }


# --- broker (deploy-broker, subctl.md §6) -------------------------------------------------------------


def broker_admin_rules() -> list[Obj]:
    return [
        _rule(["submariner.io"], ["clusters", "endpoints"], _FULL),
        _rule(["submariner.io"], ["brokers"], ["get", "list"]),
        _rule([""], ["serviceaccounts", "secrets", "configmaps"], _CRUD),
        _rule(["rbac.authorization.k8s.io"], ["rolebindings"], ["create", "get", "list", "delete"]),
        _rule(["multicluster.x-k8s.io"], ["serviceimports", "serviceimports/status"], _FULL),
        _rule(["discovery.k8s.io"], ["endpointslices"], _FULL),
        # Holding every right of the cluster role lets the admin token bind it (RBAC escalation check).
        _rule(["coordination.k8s.io"], ["leases"], _CRUD),
    ]


def broker_cluster_rules() -> list[Obj]:
    return [
        _rule(["submariner.io"], ["clusters", "endpoints"], _FULL),
        _rule(["multicluster.x-k8s.io"], ["serviceimports", "serviceimports/status"], _FULL),
        _rule(["discovery.k8s.io"], ["endpointslices"], _FULL),
        _rule(["submariner.io"], ["brokers"], ["get", "list"]),
        _rule([""], ["secrets"], _READ),
        _rule([""], ["serviceaccounts"], ["get", "list"]),
        *_LEASE_AND_CONFIGMAP_RULES,
    ]


@dataclass(frozen=True)
class BrokerSettings:
    namespace: str = BROKER_NAMESPACE
    components: tuple[str, ...] = ("service-discovery", "connectivity")
    custom_domains: tuple[str, ...] = ()
    globalnet: bool = False
    globalnet_cidr_range: str = "242.0.0.0/8"
    globalnet_cluster_size: int = 65536
    clusterset_ip: bool = False
    clusterset_ip_cidr_range: str = "243.0.0.0/8"


def broker_rbac_objects(s: BrokerSettings) -> list[Obj]:
    """Namespace, admin SA + token Secret, admin and cluster Roles, the admin RoleBinding."""
    ns = s.namespace
    return [
        namespace(ns),
        service_account(BROKER_ADMIN, ns),
        role(BROKER_ADMIN, ns, broker_admin_rules()),
        binding(BROKER_ADMIN, ns, BROKER_ADMIN, BROKER_ADMIN, ns),
        role(BROKER_CLUSTER_ROLE, ns, broker_cluster_rules()),
    ]


def broker_cr(s: BrokerSettings) -> Obj:
    spec: Obj = {"components": list(s.components), "globalnetEnabled": s.globalnet,
                 "clustersetIPEnabled": s.clusterset_ip}
    if s.custom_domains:
        spec["defaultCustomDomains"] = list(s.custom_domains)
    if s.globalnet:
        spec["globalnetCIDRRange"] = s.globalnet_cidr_range
        spec["defaultGlobalnetClusterSize"] = s.globalnet_cluster_size
    spec["clustersetIPCIDRRange"] = s.clusterset_ip_cidr_range
    return {"apiVersion": "submariner.io/v1alpha1", "kind": "Broker",
            "metadata": _meta(BROKER_CR_NAME, s.namespace), "spec": spec}


def globalnet_configmap(s: BrokerSettings) -> Obj:
    from submariner.cli.cidr import json_string

    data = {"globalnetEnabled": "true" if s.globalnet else "false"}
    if s.globalnet:
        data["globalnetCidrRange"] = json_string(s.globalnet_cidr_range)
        data["globalnetClusterSize"] = str(s.globalnet_cluster_size)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(GLOBALNET_CONFIGMAP, s.namespace, {"component": "submariner-globalnet"}),
            "data": data}


def clusterset_ip_configmap(s: BrokerSettings) -> Obj:
    from submariner.cli.cidr import json_string

    data = {
        "clustersetIPEnabled": "true" if s.clusterset_ip else "false",
        "clustersetIPCidrRange": json_string(s.clusterset_ip_cidr_range),
        "clustersetIPClusterSize": "0",
    }
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(CLUSTERSET_IP_CONFIGMAP, s.namespace),
            "data": data}


def broker_bundle(s: BrokerSettings) -> list[Obj]:
    """What deploy-broker creates on the broker cluster besides the CRDs, for `kubectl apply`
    (deploy/broker.yaml; the CRDs are deploy/crds.yaml, applied first as a CR needs its CRD established).

    The admin token Secret is named (not generateName'd) so the bundle is idempotent to re-apply.
    """
    token = token_secret(BROKER_ADMIN, s.namespace)
    token["metadata"]["name"] = f"{BROKER_ADMIN}-token"
    del token["metadata"]["generateName"]
    return [*broker_rbac_objects(s), token, broker_cr(s), globalnet_configmap(s), clusterset_ip_configmap(s)]


def render_yaml(objs: Iterable[Obj]) -> str:
    import yaml

    return yaml.safe_dump_all(list(objs), explicit_start=True, sort_keys=False, default_flow_style=False, width=120)


def crds() -> list[Obj]:
    """The 12 Submariner, MCS and operator CRDs (the broker and every member get all of them)."""
    return all_crds()


# --- join: per-cluster broker access ------------------------------------------------------------------


def cluster_account(cluster_id: str) -> str:
    return f"cluster-{cluster_id}"


def cluster_access_objects(cluster_id: str, broker_ns: str) -> list[Obj]:
    """On the broker: SA `cluster-<id>`, its RoleBinding to the cluster role (token Secret separately)."""
    account = cluster_account(cluster_id)
    return [
        service_account(account, broker_ns),
        binding(f"{account}-{BROKER_CLUSTER_ROLE}", broker_ns, BROKER_CLUSTER_ROLE, account, broker_ns),
    ]


# --- join: the member cluster -------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinSettings:
    """Everything the member-cluster objects depend on (a flattened `Submariner` spec)."""

    cluster_id: str
    broker_server: str
    """host:port of the broker API, without scheme (as in the Submariner CR)."""
    broker_namespace: str
    broker_token: str
    broker_ca: bytes
    psk: bytes
    cluster_cidrs: tuple[str, ...] = ()
    service_cidrs: tuple[str, ...] = ()
    cluster_cidr_given: str = ""
    service_cidr_given: str = ""
    global_cidr: str = ""
    clusterset_ip_cidr: str = ""
    clusterset_ip_enabled: bool = False
    broker_insecure: bool = False
    namespace: str = OPERATOR_NAMESPACE
    cable_driver: str = "libreswan"
    nat_enabled: bool = True
    natt_port: int = 4500
    ipsec_debug: bool = False
    force_udp_encaps: bool = False
    preferred_server: bool = False
    air_gapped: bool = False
    load_balancer: bool = False
    debug: bool = False
    health_check: bool = True
    health_check_interval: int = 1
    health_check_max_packet_loss: int = 5
    repository: str = DEFAULT_REPOSITORY
    version: str = IMAGE_TAG
    image_overrides: Mapping[str, str] = field(default_factory=dict)
    connectivity: bool = True
    service_discovery: bool = True
    custom_domains: tuple[str, ...] = ()
    coredns_configmap: str = "coredns"
    coredns_namespace: str = "kube-system"
    coredns_custom: bool = False
    lighthouse_coredns_replicas: int = 2
    proxy: Mapping[str, str] = field(default_factory=dict)
    """HTTP_PROXY / HTTPS_PROXY / NO_PROXY for every component (join's proxy flags)."""

    @property
    def globalnet(self) -> bool:
        return bool(self.global_cidr)

    def image(self, component: str) -> str:
        return self.image_overrides.get(component) or f"{self.repository}/{_IMAGE_NAMES[component]}:{self.version}"


def _env(name: str, value: Any) -> Obj:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return {"name": name, "value": str(value)}


def _field_env(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _secret_env(name: str, secret: str, key: str) -> Obj:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def broker_env(s: JoinSettings) -> list[Obj]:
    """The broker connection: token and CA by secretKeyRef from submariner-broker-secret (never literal)."""
    return [
        _env("BROKER_K8S_APISERVER", s.broker_server),
        _secret_env("BROKER_K8S_APISERVERTOKEN", BROKER_SECRET, "token"),
        _secret_env("BROKER_K8S_CA", BROKER_SECRET, "ca.crt"),
        _env("BROKER_K8S_REMOTENAMESPACE", s.broker_namespace),
        _env("BROKER_K8S_INSECURE", s.broker_insecure),
        _env("BROKER_K8S_SECRET", BROKER_SECRET),
    ]


def _health_env(s: JoinSettings) -> list[Obj]:
    return [
        _env("SUBMARINER_HEALTHCHECKENABLED", s.health_check),
        _env("SUBMARINER_HEALTHCHECKINTERVAL", s.health_check_interval),
        _env("SUBMARINER_HEALTHCHECKMAXPACKETLOSSCOUNT", s.health_check_max_packet_loss),
    ]


def _cidr_env(s: JoinSettings) -> list[Obj]:
    return [
        _env("SUBMARINER_CLUSTERCIDR", ",".join(s.cluster_cidrs)),
        _env("SUBMARINER_SERVICECIDR", ",".join(s.service_cidrs)),
        _env("SUBMARINER_GLOBALCIDR", s.global_cidr),
    ]


def psk_base64(s: JoinSettings) -> str:
    return base64.b64encode(s.psk).decode()


def gateway_env(s: JoinSettings) -> list[Obj]:
    return [
        _env("SUBMARINER_NAMESPACE", s.namespace),
        _env("SUBMARINER_CLUSTERID", s.cluster_id),
        *_cidr_env(s),
        _env("SUBMARINER_CABLEDRIVER", s.cable_driver),
        _env("SUBMARINER_NATENABLED", s.nat_enabled),
        _env("SUBMARINER_PUBLICIP", ""),
        *_health_env(s),
        _env("SUBMARINER_METRICSPORT", METRICS_PORTS[GATEWAY]),
        _env("SUBMARINER_DEBUG", s.debug),
        _env("SUBMARINER_HALT_ON_CERT_ERROR", False),
        *broker_env(s),
        # As the upstream operator: the PSK (std base64) from the Submariner CR, and the Secret's name.
        _env("CE_IPSEC_PSK", psk_base64(s)),
        _env("CE_IPSEC_PSKSECRET", PSK_SECRET),
        _env("CE_IPSEC_DEBUG", s.ipsec_debug),
        _env("CE_IPSEC_NATTPORT", s.natt_port),
        _env("CE_IPSEC_FORCEENCAPS", s.force_udp_encaps),
        _env("CE_IPSEC_PREFERREDSERVER", s.preferred_server),
        _env("AIR_GAPPED_DEPLOYMENT", s.air_gapped),
        _field_env("NODE_NAME", "spec.nodeName"),
        _field_env("POD_NAME", "metadata.name"),
    ]


def route_agent_env(s: JoinSettings) -> list[Obj]:
    return [
        _env("SUBMARINER_NAMESPACE", s.namespace),
        _env("SUBMARINER_CLUSTERID", s.cluster_id),
        *_cidr_env(s),
        _env("SUBMARINER_PROFILEPORT", METRICS_PORTS[ROUTE_AGENT]),
        _env("SUBMARINER_NETWORKPLUGIN", "generic"),
        _env("SUBMARINER_DEBUG", s.debug),
        *_health_env(s),
        _field_env("NODE_NAME", "spec.nodeName"),
        _field_env("POD_NAME", "metadata.name"),
    ]


def globalnet_env(s: JoinSettings) -> list[Obj]:
    return [
        _env("SUBMARINER_NAMESPACE", s.namespace),
        _env("SUBMARINER_CLUSTERID", s.cluster_id),
        _env("SUBMARINER_GLOBALCIDR", s.global_cidr),
        _env("SUBMARINER_METRICSPORT", METRICS_PORTS[GLOBALNET]),
        _field_env("NODE_NAME", "spec.nodeName"),
        _field_env("POD_NAME", "metadata.name"),
    ]


def lighthouse_agent_env(s: JoinSettings) -> list[Obj]:
    return [
        _env("SUBMARINER_NAMESPACE", s.namespace),
        _env("SUBMARINER_CLUSTERID", s.cluster_id),
        _env("SUBMARINER_DEBUG", s.debug),
        _env("SUBMARINER_GLOBALNET_ENABLED", s.globalnet),
        _env("SUBMARINER_CLUSTERSET_IP_CIDR", s.clusterset_ip_cidr),
        _env("SUBMARINER_CLUSTERSET_IP_ENABLED", s.clusterset_ip_enabled),
        *broker_env(s),
        _field_env("POD_NAME", "metadata.name"),
    ]


def _labels(component: str) -> dict[str, str]:
    return {"app": component, "component": component.removeprefix("submariner-")}


def proxy_env(proxy: Mapping[str, str]) -> list[Obj]:
    """Each proxy variable in both spellings, as tools differ in which one they read."""
    out: list[Obj] = []
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        if proxy.get(key):
            out += [_env(key, proxy[key]), _env(key.lower(), proxy[key])]
    return out


def _container(name: str, image: str, env: list[Obj], *, privileged: bool = False,
               args: list[str] | None = None, ports: list[Obj] | None = None,
               mounts: list[Obj] | None = None, add_capabilities: list[str] | None = None) -> Obj:
    container: Obj = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent", "env": env}
    if args:
        container["args"] = args
    if ports:
        container["ports"] = ports
    if mounts:
        container["volumeMounts"] = mounts
    if privileged:
        container["securityContext"] = {"privileged": True, "allowPrivilegeEscalation": True,
                                        "capabilities": {"add": ["ALL"]}, "readOnlyRootFilesystem": False,
                                        "runAsNonRoot": False}
    else:
        capabilities: Obj = {"drop": ["ALL"]}
        if add_capabilities:
            capabilities["add"] = list(add_capabilities)
        container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": capabilities,
                                        "runAsNonRoot": False}
    return container


def _pod_spec(account: str, container: Obj, *, host_network: bool = False, node_selector: Mapping[str, str] | None
              = None, tolerate_all: bool = False, volumes: list[Obj] | None = None, grace: int | None = None) -> Obj:
    spec: Obj = {"serviceAccountName": account, "containers": [container]}
    if host_network:
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerate_all:
        spec["tolerations"] = [{"operator": "Exists"}]
    if volumes:
        spec["volumes"] = volumes
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return spec


def daemon_set(name: str, ns: str, pod_spec: Obj) -> Obj:
    labels = _labels(name)
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(name, ns, labels),
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def deployment(name: str, ns: str, replicas: int, pod_spec: Obj) -> Obj:
    labels = _labels(name)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, ns, labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def gateway_daemon_set(s: JoinSettings) -> Obj:
    ports = [{"name": "cable-encaps", "containerPort": s.natt_port, "hostPort": s.natt_port, "protocol": "UDP"},
             {"name": "natt-discovery", "containerPort": 4490, "hostPort": 4490, "protocol": "UDP"}]
    container = _container(GATEWAY, s.image(GATEWAY), gateway_env(s) + proxy_env(s.proxy), privileged=True,
                           ports=ports)
    spec = _pod_spec(GATEWAY, container, host_network=True, node_selector={GATEWAY_LABEL: "true"},
                     tolerate_all=True, grace=1)
    return daemon_set(GATEWAY, s.namespace, spec)


def route_agent_daemon_set(s: JoinSettings) -> Obj:
    container = _container(ROUTE_AGENT, s.image(ROUTE_AGENT), route_agent_env(s) + proxy_env(s.proxy),
                           privileged=True)
    spec = _pod_spec(ROUTE_AGENT, container, host_network=True, tolerate_all=True, grace=1)
    return daemon_set(ROUTE_AGENT, s.namespace, spec)


def globalnet_daemon_set(s: JoinSettings) -> Obj:
    container = _container(GLOBALNET, s.image(GLOBALNET), globalnet_env(s) + proxy_env(s.proxy), privileged=True)
    spec = _pod_spec(GLOBALNET, container, host_network=True, node_selector={GATEWAY_LABEL: "true"},
                     tolerate_all=True, grace=2)
    return daemon_set(GLOBALNET, s.namespace, spec)


def lighthouse_agent_deployment(s: JoinSettings) -> Obj:
    container = _container(LIGHTHOUSE_AGENT, s.image(LIGHTHOUSE_AGENT), lighthouse_agent_env(s) + proxy_env(s.proxy))
    return deployment(LIGHTHOUSE_AGENT, s.namespace, 1, _pod_spec(LIGHTHOUSE_AGENT, container))


def lighthouse_corefile(s: JoinSettings) -> str:
    """Lighthouse DNS answers the clusterset zone (and custom domains) from ServiceImports, as upstream."""
    zones = " ".join(f"{zone}:53" for zone in (CLUSTERSET_ZONE, *s.custom_domains))
    return f"#lighthouse\n{zones} {{\n    lighthouse\n    errors\n    health\n    ready\n}}\n"


def lighthouse_coredns_objects(s: JoinSettings) -> list[Obj]:
    ns = s.namespace
    configmap: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(LIGHTHOUSE_COREDNS, ns),
                      "data": {"Corefile": lighthouse_corefile(s)}}
    ports = [{"name": "udp", "containerPort": 53, "protocol": "UDP"},
             {"name": "tcp", "containerPort": 53, "protocol": "TCP"}]
    env = [_env("SUBMARINER_CLUSTERID", s.cluster_id), _env("SUBMARINER_NAMESPACE", ns), *proxy_env(s.proxy)]
    container = _container(LIGHTHOUSE_COREDNS, s.image(LIGHTHOUSE_COREDNS), env,
                           args=["-conf", "/etc/coredns/Corefile"], ports=ports,
                           mounts=[{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
                           add_capabilities=["NET_BIND_SERVICE"])  # port 53 with every other capability dropped
    container["readinessProbe"] = {"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"}}
    volumes = [{"name": "config-volume", "configMap": {
        "name": LIGHTHOUSE_COREDNS, "items": [{"key": "Corefile", "path": "Corefile"}]}}]
    dep = deployment(LIGHTHOUSE_COREDNS, ns, s.lighthouse_coredns_replicas,
                     _pod_spec(LIGHTHOUSE_COREDNS, container, volumes=volumes))
    service: Obj = {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(LIGHTHOUSE_COREDNS, ns, _labels(LIGHTHOUSE_COREDNS)),
        "spec": {"type": "ClusterIP", "selector": {"app": LIGHTHOUSE_COREDNS},
                 "ports": [{"name": "udp", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
    }
    return [configmap, dep, service]


def _component_rbac(component: str, ns: str, namespaced: list[Obj], cluster: list[Obj]) -> list[Obj]:
    objs = [service_account(component, ns)]
    if namespaced:
        objs += [role(component, ns, namespaced), binding(component, ns, component, component, ns)]
    if cluster:
        objs += [role(component, None, cluster), binding(component, None, component, component, ns)]
    return objs


def _leader_rules() -> list[Obj]:
    return [
        _rule(["coordination.k8s.io"], ["leases"], _CRUD),
        _rule([""], ["configmaps", "events"], _CRUD),
        _rule([""], ["secrets"], _READ),
    ]


def component_rbac(s: JoinSettings) -> list[Obj]:
    """Per component: ServiceAccount, a Role in the Submariner namespace, a ClusterRole, their bindings."""
    ns = s.namespace
    objs: list[Obj] = []
    if s.connectivity:
        objs += _component_rbac(GATEWAY, ns, _leader_rules(), [
            _rule(["submariner.io"], _ALL, _ALL),
            _rule([""], ["nodes"], [*_READ, "update", "patch"]),
            _rule([""], ["pods"], [*_READ, "update", "patch"]),
            _rule([""], ["services", "endpoints", "namespaces"], _READ),
            _rule(["apps"], ["daemonsets"], _READ),
        ])
        objs += _component_rbac(ROUTE_AGENT, ns, _leader_rules(), [
            _rule(["submariner.io"], _ALL, _ALL),
            _rule([""], ["nodes", "pods", "services", "endpoints", "namespaces"], _READ),
            _rule([""], ["nodes"], ["update", "patch"]),
            _rule(["apps"], ["daemonsets"], _READ),
        ])
        if s.globalnet:
            objs += _component_rbac(GLOBALNET, ns, _leader_rules(), [
                _rule(["submariner.io"], _ALL, _ALL),
                _rule([""], ["services", "endpoints", "pods", "namespaces", "nodes"], _CRUD),
                _rule(["discovery.k8s.io"], ["endpointslices"], _CRUD),
                _rule(["multicluster.x-k8s.io"], ["serviceexports", "serviceimports"], _READ),
            ])
    if s.service_discovery:
        objs += _component_rbac(LIGHTHOUSE_AGENT, ns, _leader_rules(), [
            _rule([""], ["services", "namespaces", "pods", "endpoints"], _READ),
            _rule([""], ["services"], ["create", "update", "patch", "delete"]),
            _rule(["discovery.k8s.io"], ["endpointslices"], _FULL),
            _rule(["multicluster.x-k8s.io"], ["serviceexports", "serviceexports/status", "serviceimports",
                                               "serviceimports/status"], _FULL),
            _rule(["submariner.io"], ["globalingressips", "gateways", "clusters", "endpoints"], _READ),
        ])
        objs += _component_rbac(LIGHTHOUSE_COREDNS, ns, [], [
            _rule([""], ["services", "namespaces", "pods", "endpoints", "configmaps"], _READ),
            _rule(["discovery.k8s.io"], ["endpointslices"], _READ),
            _rule(["multicluster.x-k8s.io"], ["serviceimports", "serviceexports"], _READ),
            _rule(["submariner.io"], ["gateways", "submariners", "clusters", "endpoints"], _READ),
        ])
    return objs


def workloads(s: JoinSettings) -> list[Obj]:
    objs: list[Obj] = []
    if s.connectivity:
        objs += [gateway_daemon_set(s), route_agent_daemon_set(s)]
        if s.globalnet:
            objs.append(globalnet_daemon_set(s))
    if s.service_discovery:
        objs += [lighthouse_agent_deployment(s), *lighthouse_coredns_objects(s)]
    return objs


def operator_namespace(s: JoinSettings) -> Obj:
    return namespace(s.namespace, {"pod-security.kubernetes.io/enforce": "privileged"})


def local_secrets(s: JoinSettings) -> list[Obj]:
    """submariner-broker-secret (the cluster's broker token, CA, namespace) and, for connectivity, the PSK."""
    objs: list[Obj] = [{
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": _meta(BROKER_SECRET, s.namespace),
        "data": {"ca.crt": base64.b64encode(s.broker_ca).decode(),
                 "namespace": base64.b64encode(s.broker_namespace.encode()).decode(),
                 "token": base64.b64encode(s.broker_token.encode()).decode()},
    }]
    if s.connectivity:
        objs.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": _meta(PSK_SECRET, s.namespace),
                     "data": {"psk": psk_base64(s)}})
    return objs


def _broker_spec(s: JoinSettings) -> Obj:
    spec: Obj = {
        "brokerK8sApiServer": s.broker_server,
        "brokerK8sApiServerToken": s.broker_token,
        "brokerK8sCA": base64.b64encode(s.broker_ca).decode(),
        "brokerK8sRemoteNamespace": s.broker_namespace,
        "brokerK8sSecret": BROKER_SECRET,
    }
    if s.broker_insecure:
        spec["brokerK8sInsecure"] = True
    return spec


def _common_spec(s: JoinSettings) -> Obj:
    spec: Obj = {"clusterID": s.cluster_id, "namespace": s.namespace, "debug": s.debug,
                 "repository": s.repository, "version": s.version}
    if s.clusterset_ip_cidr:
        spec["clustersetIPCIDR"] = s.clusterset_ip_cidr
    if s.clusterset_ip_enabled:
        spec["clustersetIPEnabled"] = True
    if s.image_overrides:
        spec["imageOverrides"] = dict(s.image_overrides)
    if s.custom_domains:
        spec["customDomains"] = list(s.custom_domains)
    if s.coredns_custom:
        spec["coreDNSCustomConfig"] = {"configMapName": s.coredns_configmap, "namespace": s.coredns_namespace}
    return spec


def submariner_cr(s: JoinSettings) -> Obj:
    """The `Submariner` CR: what show/recover-broker-info read; no operator acts on it here."""
    spec: Obj = {"broker": "", **_broker_spec(s), **_common_spec(s)}
    spec.update({
        "cableDriver": s.cable_driver,
        "ceIPSecNATTPort": s.natt_port,
        "ceIPSecDebug": s.ipsec_debug,
        "ceIPSecPSK": psk_base64(s),
        "ceIPSecPSKSecret": PSK_SECRET,
        "clusterCIDR": s.cluster_cidr_given,
        "serviceCIDR": s.service_cidr_given,
        "natEnabled": s.nat_enabled,
        "serviceDiscoveryEnabled": s.service_discovery,
        "connectionHealthCheck": {"enabled": s.health_check, "intervalSeconds": s.health_check_interval,
                                  "maxPacketLossCount": s.health_check_max_packet_loss},
    })
    for key, value in (("ceIPSecForceUDPEncaps", s.force_udp_encaps), ("ceIPSecPreferredServer", s.preferred_server),
                       ("airGappedDeployment", s.air_gapped), ("loadBalancerEnabled", s.load_balancer)):
        if value:
            spec[key] = True
    if s.global_cidr:
        spec["globalCIDR"] = s.global_cidr
    return {"apiVersion": "submariner.io/v1alpha1", "kind": "Submariner",
            "metadata": _meta(SUBMARINER_CR, s.namespace), "spec": spec}


def service_discovery_cr(s: JoinSettings) -> Obj:
    """Discovery-only brokers: a `ServiceDiscovery` CR instead of `Submariner`."""
    spec: Obj = {**_broker_spec(s), **_common_spec(s), "globalnetEnabled": s.globalnet}
    return {"apiVersion": "submariner.io/v1alpha1", "kind": "ServiceDiscovery",
            "metadata": _meta(SERVICE_DISCOVERY_CR, s.namespace), "spec": spec}


def member_objects(s: JoinSettings) -> list[Obj]:
    """Everything join writes into the member cluster, in apply order (CRDs first)."""
    cr = submariner_cr(s) if s.connectivity else service_discovery_cr(s)
    return [*crds(), operator_namespace(s), *local_secrets(s), *component_rbac(s), cr, *workloads(s)]


# --- CoreDNS -------------------------------------------------------------------------------------------


def forward_block(zones: Iterable[str], dns_ip: str) -> str:
    return f"{' '.join(f'{z}:53' for z in zones)} {{\n    forward . {dns_ip}\n}}\n"


def corefile_with_forward(corefile: str, dns_ip: str, zones: Sequence[str] = (CLUSTERSET_ZONE,)) -> str:
    """Prepend the forward block for the clusterset zone (replacing an older one), as walkthrough §3.5.1 shows.

    Idempotent: a Corefile that already starts with the same block is returned unchanged.
    """
    block = forward_block(zones, dns_ip)
    rest = _strip_forward_blocks(corefile, zones)
    return block + rest


def _strip_forward_blocks(corefile: str, zones: Sequence[str]) -> str:
    """Remove existing top-level server blocks keyed on any of `zones` (an earlier join's forward)."""
    keys = {f"{z}:53" for z in zones} | set(zones)
    lines = corefile.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        head = lines[i].strip()
        if head.endswith("{") and head[:-1].split() and set(head[:-1].split()) <= keys:
            depth = lines[i].count("{") - lines[i].count("}")
            i += 1
            while i < len(lines) and depth > 0:
                depth += lines[i].count("{") - lines[i].count("}")
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return "".join(out)


BUNDLE_HEADER = (
    "# Generated by `python -m submariner.cli.manifests deploy`; do not edit.\n"
    "# What `subctl deploy-broker` creates on the broker cluster: `kubectl apply -f deploy/crds.yaml`, then\n"
    "# `kubectl apply -f deploy/broker.yaml`. `subctl deploy-broker` on the same context afterwards reuses it all\n"
    "# and writes broker-info.subm.\n"
)


def bundle_files() -> dict[str, str]:
    """deploy/<name> → content."""
    return {"crds.yaml": BUNDLE_HEADER + render_yaml(crds()),
            "broker.yaml": BUNDLE_HEADER + render_yaml(broker_bundle(BrokerSettings()))}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "deploy")
    target.mkdir(exist_ok=True)
    for name, text in bundle_files().items():
        (target / name).write_text(text)
