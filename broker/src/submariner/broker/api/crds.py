"""CustomResourceDefinitions (apiextensions.k8s.io/v1) for every kind Submariner serves.

Schemas follow upstream (submariner v0.19 `deploy/crds`, submariner-operator bundle, mcs-api v0.1.0): the
same required fields, ranges and names, so objects valid here are valid on a stock Submariner and back.
Enums are added where the specs define a closed set. Nothing preserves unknown fields: upstream never does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from submariner.broker.api import multicluster, operator, submariner
from submariner.broker.api.meta import CONDITION_STATUSES, APIResource
from submariner.broker.api.names import MAX_CLUSTER_ID_LENGTH

Schema = dict[str, Any]
CRD = dict[str, Any]


def _string(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def _bool() -> Schema:
    return {"type": "boolean"}


def _int(fmt: str | None = None, **extra: Any) -> Schema:
    s: Schema = {"type": "integer"}
    if fmt:
        s["format"] = fmt
    return {**s, **extra}


def _array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def _string_map() -> Schema:
    return {"type": "object", "additionalProperties": {"type": "string"}}


def _object(properties: Mapping[str, Schema], required: Iterable[str] = (), **extra: Any) -> Schema:
    s: Schema = {"type": "object", "properties": dict(properties)}
    req = sorted(required)
    unknown = set(req) - set(properties)
    if unknown:
        raise ValueError(f"required fields without a schema: {sorted(unknown)}")
    if req:
        s["required"] = req
    return {**s, **extra}


def _root(description: str, required: Iterable[str] = (), **fields: Schema) -> Schema:
    properties = {"apiVersion": _string(), "kind": _string(), "metadata": {"type": "object"}, **fields}
    return {"description": description, **_object(properties, required)}


def _date_time() -> Schema:
    return _string(format="date-time")


# --- shared pieces -------------------------------------------------------------------------------------

_CONDITION = _object(
    {
        "type": _string(
            maxLength=316,
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        ),
        "status": _string(enum=list(CONDITION_STATUSES)),
        "observedGeneration": _int("int64", minimum=0),
        "lastTransitionTime": _date_time(),
        "reason": _string(maxLength=1024, minLength=1, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
        "message": _string(maxLength=32768),
    },
    required=["type", "status", "lastTransitionTime", "reason", "message"],
)

_LABEL_SELECTOR = _object(
    {
        "matchLabels": _string_map(),
        "matchExpressions": _array(
            _object(
                {
                    "key": _string(),
                    "operator": _string(),
                    "values": _array(_string(), **{"x-kubernetes-list-type": "atomic"}),
                },
                required=["key", "operator"],
            ),
            **{"x-kubernetes-list-type": "atomic"},
        ),
    },
    **{"x-kubernetes-map-type": "atomic"},
)

_LOCAL_OBJECT_REFERENCE = _object({"name": _string(default="")}, **{"x-kubernetes-map-type": "atomic"})

_TOLERATION = _object(
    {
        "key": _string(),
        "operator": _string(),
        "value": _string(),
        "effect": _string(),
        "tolerationSeconds": _int("int64"),
    }
)

# --- submariner.io/v1 ----------------------------------------------------------------------------------

_ENDPOINT_SPEC = _object(
    {
        "cluster_id": _string(minLength=1, maxLength=MAX_CLUSTER_ID_LENGTH),
        "cable_name": _string(),
        "healthCheckIP": _string(),
        "hostname": _string(),
        "subnets": _array(_string()),
        "private_ip": _string(),
        "public_ip": _string(description="May be empty (air-gapped)."),
        "nat_enabled": _bool(),
        "backend": _string(),
        "backend_config": _string_map(),
    },
    required=[
        "cluster_id",
        "cable_name",
        "hostname",
        "subnets",
        "private_ip",
        "public_ip",
        "nat_enabled",
        "backend",
    ],
)

_LATENCY_RTT = _object({k: _string() for k in ("last", "min", "average", "max", "stdDev")})

_CONNECTION_STATUS = _string(enum=list(submariner.CONNECTION_STATUSES))

_CONNECTION = _object(
    {
        "status": _CONNECTION_STATUS,
        "statusMessage": _string(),
        "endpoint": _ENDPOINT_SPEC,
        "usingIP": _string(),
        "usingNAT": _bool(),
        "latencyRTT": _LATENCY_RTT,
    },
    required=["status", "statusMessage", "endpoint"],
)

_GATEWAY_STATUS = _object(
    {
        "version": _string(),
        "haStatus": _string(enum=[submariner.HA_ACTIVE, submariner.HA_PASSIVE]),
        "localEndpoint": _ENDPOINT_SPEC,
        "statusFailure": _string(),
        "connections": _array(_CONNECTION),
    },
    required=["version", "haStatus", "localEndpoint", "statusFailure", "connections"],
)

_REMOTE_ENDPOINT = _object(
    {
        "status": _CONNECTION_STATUS,
        "statusMessage": _string(),
        "spec": _ENDPOINT_SPEC,
        "latencyRTT": _LATENCY_RTT,
    },
    required=["status", "statusMessage", "spec"],
)

_GLOBAL_IP_COUNT = _int(minimum=0, maximum=submariner.MAX_GLOBAL_IPS)

_EGRESS_STATUS = _object(
    {
        "conditions": _array(_CONDITION),
        "allocatedIPs": _array(_string()),
    }
)

_SUBMARINER_SCHEMAS: dict[APIResource, Schema] = {
    submariner.CLUSTERS: _root(
        "A member cluster's network description, published on the broker.",
        ["spec"],
        spec=_object(
            {
                "cluster_id": _string(minLength=1, maxLength=MAX_CLUSTER_ID_LENGTH),
                "color_codes": _array(_string()),
                "service_cidr": _array(_string()),
                "cluster_cidr": _array(_string()),
                "global_cidr": _array(_string()),
            },
            required=["cluster_id", "service_cidr", "cluster_cidr", "global_cidr"],
        ),
    ),
    submariner.ENDPOINTS: _root(
        "An active gateway of a cluster: where to build cables to.", ["spec"], spec=_ENDPOINT_SPEC
    ),
    submariner.GATEWAYS: _root(
        "A gateway node's HA role and cable connections.", ["status"], status=_GATEWAY_STATUS
    ),
    submariner.ROUTE_AGENTS: _root(
        "A non-gateway node's health-check view of remote endpoints.",
        ["status"],
        status=_object(
            {
                "version": _string(),
                "statusFailure": _string(),
                "remoteEndpoints": _array(_REMOTE_ENDPOINT),
            },
            required=["version", "statusFailure", "remoteEndpoints"],
        ),
    ),
    submariner.GLOBAL_EGRESS_IPS: _root(
        "Global IPs for selected pods of its namespace.",
        ["spec"],
        spec=_object(
            {
                "numberOfIPs": {**_GLOBAL_IP_COUNT, "description": "Contiguous global IPs; absent means 1."},
                "podSelector": _LABEL_SELECTOR,
            }
        ),
        status=_EGRESS_STATUS,
    ),
    submariner.CLUSTER_GLOBAL_EGRESS_IPS: _root(
        "Global IPs for cluster traffic no GlobalEgressIP covers; only cluster-egress.submariner.io is used.",
        ["spec"],
        spec=_object(
            {"numGlobalIPs": {**_GLOBAL_IP_COUNT, "description": "Contiguous global IPs; absent means 1."}}
        ),
        status=_EGRESS_STATUS,
    ),
    submariner.GLOBAL_INGRESS_IPS: _root(
        "A global IP for an exported Service or a headless Service's pod/endpoint.",
        ["spec"],
        spec=_object(
            {
                "target": _string(enum=list(submariner.TARGET_TYPES)),
                "serviceRef": _LOCAL_OBJECT_REFERENCE,
                "podRef": _LOCAL_OBJECT_REFERENCE,
            },
            required=["target"],
        ),
        status=_object({"conditions": _array(_CONDITION), "allocatedIP": _string()}),
    ),
}

# --- multicluster.x-k8s.io/v1alpha1 --------------------------------------------------------------------

_SERVICE_EXPORT_CONDITION = _object(
    {
        "type": _string(),
        "status": _string(enum=list(CONDITION_STATUSES)),
        "lastTransitionTime": _date_time(),
        "reason": _string(),
        "message": _string(),
    },
    required=["type", "status"],
)

_MCS_SCHEMAS: dict[APIResource, Schema] = {
    multicluster.SERVICE_EXPORTS: _root(
        "Declares that the Service of the same namespace and name is consumable from other clusters.",
        status=_object(
            {
                "conditions": _array(
                    _SERVICE_EXPORT_CONDITION,
                    **{"x-kubernetes-list-map-keys": ["type"], "x-kubernetes-list-type": "map"},
                )
            }
        ),
    ),
    multicluster.SERVICE_IMPORTS: _root(
        "A service imported from the clusters of a ClusterSet.",
        spec=_object(
            {
                "ports": _array(
                    _object(
                        {
                            "name": _string(),
                            "protocol": _string(),
                            "appProtocol": _string(),
                            "port": _int("int32"),
                        },
                        required=["port"],
                    ),
                    **{"x-kubernetes-list-type": "atomic"},
                ),
                "ips": _array(_string(), maxItems=1),
                "type": _string(enum=list(multicluster.SERVICE_IMPORT_TYPES)),
                "sessionAffinity": _string(),
                "sessionAffinityConfig": _object({"clientIP": _object({"timeoutSeconds": _int("int32")})}),
            },
            required=["ports", "type"],
        ),
        status=_object(
            {
                "clusters": _array(
                    _object({"cluster": _string()}, required=["cluster"]),
                    **{"x-kubernetes-list-map-keys": ["cluster"], "x-kubernetes-list-type": "map"},
                )
            }
        ),
    ),
}

# --- submariner.io/v1alpha1 (operator) ------------------------------------------------------------------

_CORE_DNS_CUSTOM_CONFIG = _object({"configMapName": _string(), "namespace": _string()})

_DEPLOYMENT_INFO = _object(
    {k: _string() for k in ("kubernetesType", "kubernetesTypeVersion", "kubernetesVersion", "cloudProvider")}
)

_CONTAINER_STATE = _object(
    {
        "running": _object({"startedAt": _date_time()}),
        "terminated": _object(
            {
                "containerID": _string(),
                "exitCode": _int("int32"),
                "finishedAt": _date_time(),
                "message": _string(),
                "reason": _string(),
                "signal": _int("int32"),
                "startedAt": _date_time(),
            },
            required=["exitCode"],
        ),
        "waiting": _object({"message": _string(), "reason": _string()}),
    }
)

_DAEMON_SET_STATUS = _object(
    {
        "collisionCount": _int("int32"),
        "conditions": _array(
            _object(
                {
                    "lastTransitionTime": _date_time(),
                    "message": _string(),
                    "reason": _string(),
                    "status": _string(),
                    "type": _string(),
                },
                required=["status", "type"],
            )
        ),
        "currentNumberScheduled": _int("int32"),
        "desiredNumberScheduled": _int("int32"),
        "numberAvailable": _int("int32"),
        "numberMisscheduled": _int("int32"),
        "numberReady": _int("int32"),
        "numberUnavailable": _int("int32"),
        "observedGeneration": _int("int64"),
        "updatedNumberScheduled": _int("int32"),
    },
    required=["currentNumberScheduled", "desiredNumberScheduled", "numberMisscheduled", "numberReady"],
)

_DAEMON_SET_STATUS_WRAPPER = _object(
    {
        "lastResourceVersion": _string(),
        "status": _DAEMON_SET_STATUS,
        "nonReadyContainerStates": _array(_CONTAINER_STATE),
        "mismatchedContainerImages": _bool(),
    },
    required=["mismatchedContainerImages"],
)

_LOAD_BALANCER_STATUS = _object(
    {
        "ingress": _array(
            _object(
                {
                    "hostname": _string(),
                    "ip": _string(),
                    "ports": _array(
                        _object(
                            {
                                "error": _string(maxLength=316),
                                "port": _int("int32"),
                                "protocol": _string(default="TCP"),
                            },
                            required=["port", "protocol"],
                        ),
                        **{"x-kubernetes-list-type": "atomic"},
                    ),
                }
            )
        )
    }
)

_BROKER_ACCESS = {
    "brokerK8sApiServer": _string(description="host:port of the broker API server, without scheme."),
    "brokerK8sApiServerToken": _string(),
    "brokerK8sCA": _string(description="Standard base64 of the broker CA bundle."),
    "brokerK8sSecret": _string(),
    "brokerK8sRemoteNamespace": _string(),
    "brokerK8sInsecure": _bool(),
}

_COMMON_DEPLOY = {
    "clusterID": _string(),
    "namespace": _string(),
    "repository": _string(),
    "version": _string(),
    "clusterCIDR": _string(),
    "clustersetIPCIDR": _string(),
    "clustersetIPEnabled": _bool(),
    "debug": _bool(),
    "haltOnCertificateError": _bool(),
    "coreDNSCustomConfig": _CORE_DNS_CUSTOM_CONFIG,
    "customDomains": _array(_string(), **{"x-kubernetes-list-type": "set"}),
    "imageOverrides": _string_map(),
    "nodeSelector": _string_map(),
    "tolerations": _array(_TOLERATION),
}

_OPERATOR_SCHEMAS: dict[APIResource, Schema] = {
    operator.SUBMARINERS: _root(
        "A cluster's Submariner deployment (connectivity, optionally service discovery).",
        spec=_object(
            {
                "broker": _string(),
                **_BROKER_ACCESS,
                **_COMMON_DEPLOY,
                "cableDriver": _string(),
                "ceIPSecPSK": _string(description="Standard base64."),
                "ceIPSecPSKSecret": _string(),
                "ceIPSecIKEPort": _int(),
                "ceIPSecNATTPort": _int(),
                "ceIPSecDebug": _bool(),
                "ceIPSecPreferredServer": _bool(),
                "ceIPSecForceUDPEncaps": _bool(),
                "serviceCIDR": _string(),
                "globalCIDR": _string(),
                "colorCodes": _string(),
                "natEnabled": _bool(),
                "airGappedDeployment": _bool(),
                "loadBalancerEnabled": _bool(),
                "serviceDiscoveryEnabled": _bool(),
                "connectionHealthCheck": _object(
                    {
                        "enabled": _bool(),
                        "intervalSeconds": _int("int64"),
                        "maxPacketLossCount": _int("int64"),
                    }
                ),
            },
            required=[
                "broker",
                "brokerK8sApiServer",
                "brokerK8sRemoteNamespace",
                "ceIPSecDebug",
                "clusterCIDR",
                "clusterID",
                "debug",
                "namespace",
                "natEnabled",
                "serviceCIDR",
            ],
        ),
        status=_object(
            {
                "natEnabled": _bool(),
                "airGappedDeployment": _bool(),
                "colorCodes": _string(),
                "clusterID": _string(),
                "serviceCIDR": _string(),
                "clusterCIDR": _string(),
                "globalCIDR": _string(),
                "clustersetIPCIDR": _string(),
                "networkPlugin": _string(),
                "gatewayDaemonSetStatus": _DAEMON_SET_STATUS_WRAPPER,
                "routeAgentDaemonSetStatus": _DAEMON_SET_STATUS_WRAPPER,
                "globalnetDaemonSetStatus": _DAEMON_SET_STATUS_WRAPPER,
                "loadBalancerStatus": _object({"status": _LOAD_BALANCER_STATUS}),
                "gateways": _array(_GATEWAY_STATUS),
                "deploymentInfo": _DEPLOYMENT_INFO,
                "version": _string(),
            },
            required=["clusterID", "natEnabled"],
        ),
    ),
    operator.SERVICE_DISCOVERIES: _root(
        "A discovery-only (Lighthouse) deployment.",
        spec=_object(
            {**_BROKER_ACCESS, **_COMMON_DEPLOY, "globalnetEnabled": _bool()},
            required=["brokerK8sApiServer", "brokerK8sRemoteNamespace", "clusterID", "debug", "namespace"],
        ),
        status=_object({"deploymentInfo": _DEPLOYMENT_INFO}),
    ),
    operator.BROKERS: _root(
        "The broker's cluster-set-wide settings, read by joining clusters.",
        spec=_object(
            {
                "components": _array(_string(), description="Any of connectivity, service-discovery."),
                "defaultCustomDomains": _array(_string()),
                "globalnetEnabled": _bool(),
                "globalnetCIDRRange": _string(),
                "defaultGlobalnetClusterSize": _int(),
                "clustersetIPEnabled": _bool(),
                "clustersetIPCIDRRange": _string(),
            }
        ),
        status=_object({}),
    ),
}

# --- CRDs ----------------------------------------------------------------------------------------------

_STATUS_SUBRESOURCE = frozenset(
    {
        submariner.GLOBAL_EGRESS_IPS,
        submariner.CLUSTER_GLOBAL_EGRESS_IPS,
        submariner.GLOBAL_INGRESS_IPS,
        multicluster.SERVICE_EXPORTS,
        multicluster.SERVICE_IMPORTS,
        operator.SUBMARINERS,
        operator.SERVICE_DISCOVERIES,
        operator.BROKERS,
    }
)

_AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

_PRINTER_COLUMNS: dict[APIResource, list[dict[str, str]]] = {
    submariner.GATEWAYS: [
        {
            "name": "HA Status",
            "type": "string",
            "description": "High availability status of the Gateway",
            "jsonPath": ".status.haStatus",
        },
    ],
    submariner.GLOBAL_INGRESS_IPS: [
        {
            "name": "IP",
            "type": "string",
            "description": "Global IP Allocated",
            "jsonPath": ".status.allocatedIP",
        },
    ],
    multicluster.SERVICE_EXPORTS: [_AGE_COLUMN],
    multicluster.SERVICE_IMPORTS: [
        {
            "name": "Type",
            "type": "string",
            "description": "The type of this ServiceImport",
            "jsonPath": ".spec.type",
        },
        {
            "name": "IP",
            "type": "string",
            "description": "The VIP for this ServiceImport",
            "jsonPath": ".spec.ips",
        },
        _AGE_COLUMN,
    ],
}

SCHEMAS: dict[APIResource, Schema] = {**_SUBMARINER_SCHEMAS, **_MCS_SCHEMAS, **_OPERATOR_SCHEMAS}
"""openAPIV3Schema of every kind, keyed by resource; shared, so treat as read-only."""

BROKER_RESOURCES: tuple[APIResource, ...] = (
    submariner.CLUSTERS,
    submariner.ENDPOINTS,
    submariner.GATEWAYS,
    submariner.GLOBAL_EGRESS_IPS,
    submariner.CLUSTER_GLOBAL_EGRESS_IPS,
    submariner.GLOBAL_INGRESS_IPS,
    multicluster.SERVICE_IMPORTS,
)
"""What the operator's Broker controller installs on the broker cluster (subctl.md §6)."""


def crd(resource: APIResource) -> CRD:
    """A fresh CRD dict (callers may mutate it)."""
    names: dict[str, Any] = {
        "plural": resource.plural,
        "singular": resource.singular,
        "kind": resource.kind,
        "listKind": resource.list_kind,
    }
    if resource.short_names:
        names["shortNames"] = list(resource.short_names)
    version: dict[str, Any] = {
        "name": resource.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": _deep_copy(SCHEMAS[resource])},
    }
    if resource in _STATUS_SUBRESOURCE:
        version["subresources"] = {"status": {}}
    if resource in _PRINTER_COLUMNS:
        version["additionalPrinterColumns"] = _deep_copy(_PRINTER_COLUMNS[resource])
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": resource.crd_name},
        "spec": {
            "group": resource.group,
            "names": names,
            "scope": resource.scope,
            "versions": [version],
        },
    }


def all_crds() -> list[CRD]:
    return [crd(r) for r in SCHEMAS]


def broker_crds() -> list[CRD]:
    return [crd(r) for r in BROKER_RESOURCES]


def render_crds_yaml(crds: Iterable[CRD] | None = None) -> str:
    """One `---`-separated YAML stream (all CRDs by default), for `kubectl apply -f -`."""
    return yaml.safe_dump_all(
        all_crds() if crds is None else list(crds),
        explicit_start=True,
        sort_keys=False,
        default_flow_style=False,
        width=120,
    )


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
