"""API types and CRDs: manifests render, match upstream names, and agree with the TypedDict models."""

import copy
import json
import re
from typing import Any, Literal, get_args, get_origin, get_type_hints, is_typeddict

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from submariner.broker import api
from submariner.broker.api import crds, labels, multicluster, operator, submariner
from submariner.broker.api.conditions import (
    ExportCondition,
    ExportReason,
    GlobalnetCondition,
    GlobalnetReason,
)
from submariner.broker.api.meta import APIResource
from submariner.broker.api.names import (
    cable_name,
    endpoint_name,
    sanitize_cluster_id,
    sanitize_name,
    validate_cluster_id,
)

# (group, version, kind, scope, plural, shortNames, status subresource)
SUBM, MCS = "submariner.io", "multicluster.x-k8s.io"
EXPECTED = [
    (SUBM, "v1", "Cluster", "Namespaced", "clusters", [], False),
    (SUBM, "v1", "Endpoint", "Namespaced", "endpoints", [], False),
    (SUBM, "v1", "Gateway", "Namespaced", "gateways", [], False),
    (SUBM, "v1", "RouteAgent", "Namespaced", "routeagents", [], False),
    (SUBM, "v1", "GlobalEgressIP", "Namespaced", "globalegressips", ["geip"], True),
    (SUBM, "v1", "ClusterGlobalEgressIP", "Cluster", "clusterglobalegressips", ["cgeip"], True),
    (SUBM, "v1", "GlobalIngressIP", "Namespaced", "globalingressips", ["giip"], True),
    (MCS, "v1alpha1", "ServiceExport", "Namespaced", "serviceexports", ["svcex"], True),
    (MCS, "v1alpha1", "ServiceImport", "Namespaced", "serviceimports", ["svcim"], True),
    (SUBM, "v1alpha1", "Submariner", "Namespaced", "submariners", [], True),
    (SUBM, "v1alpha1", "ServiceDiscovery", "Namespaced", "servicediscoveries", [], True),
    (SUBM, "v1alpha1", "Broker", "Namespaced", "brokers", [], True),
]

MODELS: dict[str, Any] = {
    "Cluster": submariner.Cluster,
    "Endpoint": submariner.Endpoint,
    "Gateway": submariner.Gateway,
    "RouteAgent": submariner.RouteAgent,
    "GlobalEgressIP": submariner.GlobalEgressIP,
    "ClusterGlobalEgressIP": submariner.ClusterGlobalEgressIP,
    "GlobalIngressIP": submariner.GlobalIngressIP,
    "ServiceExport": multicluster.ServiceExport,
    "ServiceImport": multicluster.ServiceImport,
    "Submariner": operator.Submariner,
    "ServiceDiscovery": operator.ServiceDiscovery,
    "Broker": operator.Broker,
}


def crds_by_kind() -> dict[str, dict[str, Any]]:
    return {c["spec"]["names"]["kind"]: c for c in api.all_crds()}


def schema_of(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = crds_by_kind()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """Schema node at a dotted path; `[]` steps into array items."""
    node = schema
    for part in path.split("."):
        if part == "[]":
            node = node["items"]
        else:
            node = node["properties"][part]
    return node


# --- a small structural validator (enough of Kubernetes' rules to exercise the schemas) -----------------


def validate(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    errors: list[str] = []
    kind = schema.get("type")
    checks = {"object": dict, "array": list, "string": str, "boolean": bool}
    if kind == "integer":
        if not isinstance(obj, int) or isinstance(obj, bool):
            return [f"{path}: expected integer"]
    elif kind in checks and not isinstance(obj, checks[kind]):
        return [f"{path}: expected {kind}"]
    if "enum" in schema and obj not in schema["enum"]:
        errors.append(f"{path}: {obj!r} not in {schema['enum']}")
    if "minimum" in schema and obj < schema["minimum"]:
        errors.append(f"{path}: below minimum")
    if "maximum" in schema and obj > schema["maximum"]:
        errors.append(f"{path}: above maximum")
    if "minLength" in schema and len(obj) < schema["minLength"]:
        errors.append(f"{path}: too short")
    if "maxLength" in schema and len(obj) > schema["maxLength"]:
        errors.append(f"{path}: too long")
    if "maxItems" in schema and len(obj) > schema["maxItems"]:
        errors.append(f"{path}: too many items")
    if "pattern" in schema and not re.search(schema["pattern"], obj):
        errors.append(f"{path}: does not match pattern")
    if kind == "object":
        errors += [f"{path}: missing {r}" for r in schema.get("required", []) if r not in obj]
        props = schema.get("properties")
        for key, value in obj.items():
            if props is not None and key in props:
                errors += validate(value, props[key], f"{path}.{key}")
            elif "additionalProperties" in schema:
                errors += validate(value, schema["additionalProperties"], f"{path}.{key}")
            elif props is not None:
                errors.append(f"{path}: unknown field {key!r}")
    if kind == "array":
        for i, item in enumerate(obj):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    return errors


# --- rendering ------------------------------------------------------------------------------------------


def test_yaml_stream_parses_back_to_all_crds() -> None:
    text = api.render_crds_yaml()
    assert text.startswith("---\n")
    docs = list(yaml.safe_load_all(text))
    assert docs == api.all_crds()
    assert len(docs) == len(EXPECTED)
    assert "&id" not in text and "*id" not in text, "no YAML anchors: every CRD must stand alone"


def test_render_subset() -> None:
    docs = list(yaml.safe_load_all(api.render_crds_yaml(api.broker_crds())))
    assert {d["metadata"]["name"] for d in docs} == {
        "clusters.submariner.io",
        "endpoints.submariner.io",
        "gateways.submariner.io",
        "globalegressips.submariner.io",
        "clusterglobalegressips.submariner.io",
        "globalingressips.submariner.io",
        "serviceimports.multicluster.x-k8s.io",
    }


@pytest.mark.parametrize(("group", "version", "kind", "scope", "plural", "short", "status"), EXPECTED)
def test_crd_identity(
    group: str, version: str, kind: str, scope: str, plural: str, short: list[str], status: bool
) -> None:
    crd = crds_by_kind()[kind]
    singular = kind.lower()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.{group}"
    spec = crd["spec"]
    assert spec["group"] == group
    assert spec["scope"] == scope
    assert spec["names"] == {
        "plural": plural,
        "singular": singular,
        "kind": kind,
        "listKind": f"{kind}List",
        **({"shortNames": short} if short else {}),
    }
    [ver] = spec["versions"]
    assert ver["name"] == version and ver["served"] and ver["storage"]
    assert ("subresources" in ver) == status
    if status:
        assert ver["subresources"] == {"status": {}}
    assert ver["schema"]["openAPIV3Schema"]["type"] == "object"


def test_printer_columns_as_upstream() -> None:
    def columns(kind: str) -> list[tuple[str, str]]:
        ver = crds_by_kind()[kind]["spec"]["versions"][0]
        return [(c["name"], c["jsonPath"]) for c in ver.get("additionalPrinterColumns", [])]

    assert columns("Gateway") == [("HA Status", ".status.haStatus")]
    assert columns("GlobalIngressIP") == [("IP", ".status.allocatedIP")]
    assert columns("ServiceImport") == [
        ("Type", ".spec.type"),
        ("IP", ".spec.ips"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    assert columns("ServiceExport") == [("Age", ".metadata.creationTimestamp")]
    assert columns("Endpoint") == []


def test_crd_is_a_fresh_copy() -> None:
    first = api.crd(submariner.ENDPOINTS)
    first["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["required"].clear()
    second = api.crd(submariner.ENDPOINTS)
    assert "cluster_id" in at(second["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "spec")["required"]


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        if "type" in node or "properties" in node:
            out.append((path, node))
        for key in ("properties",):
            for name, child in node.get(key, {}).items():
                out += _walk(child, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                out += _walk(node[key], f"{path}[{key}]")
    return out


@pytest.mark.parametrize("kind", list(MODELS))
def test_schema_is_structural(kind: str) -> None:
    """Kubernetes rejects non-structural schemas: every node typed, list-map keys required."""
    for path, node in _walk(schema_of(kind)):
        assert "type" in node, f"{kind}{path} has no type"
        assert "x-kubernetes-preserve-unknown-fields" not in node, f"{kind}{path}"
        if "properties" in node:
            assert node["type"] == "object"
            assert set(node.get("required", [])) <= set(node["properties"]), f"{kind}{path}"
        if node.get("x-kubernetes-list-type") == "map":
            assert set(node["x-kubernetes-list-map-keys"]) <= set(node["items"]["required"])


# --- spec field names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "path", "required"),
    [
        ("Cluster", "spec.cluster_id", True),
        ("Cluster", "spec.color_codes", False),
        ("Cluster", "spec.service_cidr", True),
        ("Cluster", "spec.cluster_cidr", True),
        ("Cluster", "spec.global_cidr", True),
        ("Endpoint", "spec.cluster_id", True),
        ("Endpoint", "spec.cable_name", True),
        ("Endpoint", "spec.healthCheckIP", False),
        ("Endpoint", "spec.hostname", True),
        ("Endpoint", "spec.subnets", True),
        ("Endpoint", "spec.private_ip", True),
        ("Endpoint", "spec.public_ip", True),
        ("Endpoint", "spec.nat_enabled", True),
        ("Endpoint", "spec.backend", True),
        ("Endpoint", "spec.backend_config", False),
        ("Gateway", "status.version", True),
        ("Gateway", "status.haStatus", True),
        ("Gateway", "status.localEndpoint", True),
        ("Gateway", "status.statusFailure", True),
        ("Gateway", "status.connections", True),
        ("Gateway", "status.connections.[].status", True),
        ("Gateway", "status.connections.[].statusMessage", True),
        ("Gateway", "status.connections.[].endpoint", True),
        ("Gateway", "status.connections.[].usingIP", False),
        ("Gateway", "status.connections.[].usingNAT", False),
        ("Gateway", "status.connections.[].latencyRTT.stdDev", False),
        ("RouteAgent", "status.remoteEndpoints.[].spec.cable_name", True),
        ("RouteAgent", "status.remoteEndpoints.[].latencyRTT", False),
        ("GlobalEgressIP", "spec.numberOfIPs", False),
        ("GlobalEgressIP", "spec.podSelector", False),
        ("GlobalEgressIP", "status.allocatedIPs", False),
        ("GlobalEgressIP", "status.conditions", False),
        ("ClusterGlobalEgressIP", "spec.numGlobalIPs", False),
        ("GlobalIngressIP", "spec.target", True),
        ("GlobalIngressIP", "spec.serviceRef.name", False),
        ("GlobalIngressIP", "spec.podRef.name", False),
        ("GlobalIngressIP", "status.allocatedIP", False),
        ("ServiceExport", "status.conditions.[].type", True),
        ("ServiceExport", "status.conditions.[].reason", False),
        ("ServiceImport", "spec.ips", False),
        ("ServiceImport", "spec.type", True),
        ("ServiceImport", "spec.ports", True),
        ("ServiceImport", "spec.ports.[].appProtocol", False),
        ("ServiceImport", "spec.sessionAffinity", False),
        ("ServiceImport", "spec.sessionAffinityConfig.clientIP.timeoutSeconds", False),
        ("ServiceImport", "status.clusters.[].cluster", True),
        ("Submariner", "spec.brokerK8sApiServer", True),
        ("Submariner", "spec.brokerK8sApiServerToken", False),
        ("Submariner", "spec.brokerK8sCA", False),
        ("Submariner", "spec.brokerK8sRemoteNamespace", True),
        ("Submariner", "spec.brokerK8sInsecure", False),
        ("Submariner", "spec.brokerK8sSecret", False),
        ("Submariner", "spec.ceIPSecPSK", False),
        ("Submariner", "spec.ceIPSecNATTPort", False),
        ("Submariner", "spec.cableDriver", False),
        ("Submariner", "spec.clusterCIDR", True),
        ("Submariner", "spec.serviceCIDR", True),
        ("Submariner", "spec.globalCIDR", False),
        ("Submariner", "spec.clusterID", True),
        ("Submariner", "spec.namespace", True),
        ("Submariner", "spec.repository", False),
        ("Submariner", "spec.version", False),
        ("Submariner", "spec.natEnabled", True),
        ("Submariner", "spec.serviceDiscoveryEnabled", False),
        ("Submariner", "spec.debug", True),
        ("Submariner", "spec.ceIPSecDebug", True),
        ("Submariner", "spec.customDomains", False),
        ("Submariner", "spec.clustersetIPCIDR", False),
        ("Submariner", "spec.connectionHealthCheck.maxPacketLossCount", False),
        ("Submariner", "spec.coreDNSCustomConfig.configMapName", False),
        ("ServiceDiscovery", "spec.clusterID", True),
        ("ServiceDiscovery", "spec.globalnetEnabled", False),
        ("Broker", "spec.components", False),
        ("Broker", "spec.defaultGlobalnetClusterSize", False),
        ("Broker", "spec.globalnetEnabled", False),
        ("Broker", "spec.globalnetCIDRRange", False),
        ("Broker", "spec.defaultCustomDomains", False),
        ("Broker", "spec.clustersetIPEnabled", False),
        ("Broker", "spec.clustersetIPCIDRRange", False),
    ],
)
def test_spec_field_names(kind: str, path: str, required: bool) -> None:
    schema = schema_of(kind)
    at(schema, path)
    parent_path, _, field = path.rpartition(".")
    parent = at(schema, parent_path) if parent_path else schema
    assert (field in parent.get("required", [])) == required


def test_ranges_and_enums_from_the_spec() -> None:
    assert at(schema_of("GlobalEgressIP"), "spec.numberOfIPs") == {
        "type": "integer",
        "minimum": 0,
        "maximum": 20,
        "description": "Contiguous global IPs; absent means 1.",
    }
    assert at(schema_of("ClusterGlobalEgressIP"), "spec.numGlobalIPs")["maximum"] == 20
    assert at(schema_of("Cluster"), "spec.cluster_id") == {"type": "string", "minLength": 1, "maxLength": 63}
    assert at(schema_of("GlobalIngressIP"), "spec.target")["enum"] == [
        "ClusterIPService",
        "HeadlessServicePod",
        "HeadlessServiceEndpoints",
    ]
    assert at(schema_of("Gateway"), "status.haStatus")["enum"] == ["active", "passive"]
    assert at(schema_of("ServiceImport"), "spec.type")["enum"] == ["ClusterSetIP", "Headless"]
    assert at(schema_of("ServiceImport"), "spec.ips")["maxItems"] == 1
    assert at(schema_of("ServiceExport"), "status.conditions")["x-kubernetes-list-map-keys"] == ["type"]


# --- models agree with schemas ------------------------------------------------------------------------


def check_model(hint: Any, schema: dict[str, Any], path: str) -> None:
    origin = get_origin(hint)
    if is_typeddict(hint):
        assert schema["type"] == "object", path
        if "properties" not in schema:
            return  # metadata: the server owns its schema
        hints = get_type_hints(hint)
        assert set(hints) == set(schema["properties"]), f"{path}: model and schema fields differ"
        assert hint.__required_keys__ == set(schema.get("required", [])), f"{path}: required fields differ"
        for key, sub in hints.items():
            check_model(sub, schema["properties"][key], f"{path}.{key}")
    elif origin is list:
        assert schema["type"] == "array", path
        check_model(get_args(hint)[0], schema["items"], f"{path}[]")
    elif origin is dict:
        assert schema["type"] == "object", path
        if "additionalProperties" in schema:
            check_model(get_args(hint)[1], schema["additionalProperties"], f"{path}{{}}")
    elif origin is Literal:
        assert schema["type"] == "string", path
        assert list(get_args(hint)) == schema["enum"], path
    elif hint is Any:
        return
    else:
        assert schema["type"] == {str: "string", int: "integer", bool: "boolean"}[hint], path


@pytest.mark.parametrize("kind", list(MODELS))
def test_model_matches_schema(kind: str) -> None:
    check_model(MODELS[kind], schema_of(kind), kind)


def test_resources_cover_every_crd() -> None:
    assert {r.kind for r in api.RESOURCES} == set(MODELS) == set(crds_by_kind())
    assert all(isinstance(r, APIResource) for r in api.RESOURCES)
    assert submariner.GLOBAL_EGRESS_IPS.api_version == "submariner.io/v1"
    assert operator.BROKERS.api_version == "submariner.io/v1alpha1"
    assert multicluster.SERVICE_IMPORTS.crd_name == "serviceimports.multicluster.x-k8s.io"
    assert submariner.CLUSTER_GLOBAL_EGRESS_IPS.scope == "Cluster"


# --- example objects: valid against their CRD and unchanged by a JSON round trip --------------------------

ENDPOINT_SPEC: submariner.EndpointSpec = {
    "cluster_id": "east",
    "cable_name": "submariner-cable-east-172-18-0-4",
    "healthCheckIP": "10.1.0.1",
    "hostname": "east-worker",
    "subnets": ["100.1.0.0/16", "10.1.0.0/16"],
    "private_ip": "172.18.0.4",
    "public_ip": "",
    "nat_enabled": False,
    "backend": "libreswan",
    "backend_config": {"udp-port": "4500", "natt-discovery-port": "4490", "preferred-server": "false"},
}
CONDITION: api.Condition = {
    "type": "Allocated",
    "status": "True",
    "lastTransitionTime": "2024-10-07T12:00:00Z",
    "reason": "Success",
    "message": "Allocated 8 global IP(s)",
}


def meta(name: str, namespace: str | None = "submariner-operator") -> api.ObjectMeta:
    m: api.ObjectMeta = {"name": name}
    if namespace:
        m["namespace"] = namespace
    return m


EXAMPLES: list[dict[str, Any]] = [
    {
        "apiVersion": "submariner.io/v1",
        "kind": "Cluster",
        "metadata": meta("east"),
        "spec": {
            "cluster_id": "east",
            "color_codes": ["blue"],
            "service_cidr": ["100.1.0.0/16"],
            "cluster_cidr": ["10.1.0.0/16"],
            "global_cidr": [],
        },
    },
    {
        "apiVersion": "submariner.io/v1",
        "kind": "Endpoint",
        "metadata": meta("east-submariner-cable-east-172-18-0-4"),
        "spec": ENDPOINT_SPEC,
    },
    {
        "apiVersion": "submariner.io/v1",
        "kind": "Gateway",
        "metadata": meta("east-worker"),
        "status": {
            "version": "v0.19.0",
            "haStatus": "active",
            "localEndpoint": ENDPOINT_SPEC,
            "statusFailure": "",
            "connections": [
                {
                    "status": "connected",
                    "statusMessage": "",
                    "endpoint": ENDPOINT_SPEC,
                    "usingIP": "172.18.0.5",
                    "usingNAT": False,
                    "latencyRTT": {
                        "last": "1.1ms",
                        "min": "1ms",
                        "average": "1.05ms",
                        "max": "1.1ms",
                        "stdDev": "50µs",
                    },
                }
            ],
        },
    },
    {
        "apiVersion": "submariner.io/v1",
        "kind": "RouteAgent",
        "metadata": meta("east-worker2"),
        "status": {
            "version": "v0.19.0",
            "statusFailure": "",
            "remoteEndpoints": [
                {
                    "status": "none",
                    "statusMessage": "Health check is not performed on gateway nodes",
                    "spec": ENDPOINT_SPEC,
                }
            ],
        },
    },
    {
        "apiVersion": "submariner.io/v1",
        "kind": "GlobalEgressIP",
        "metadata": meta("east-region", "default"),
        "spec": {
            "numberOfIPs": 2,
            "podSelector": {
                "matchLabels": {"app": "db"},
                "matchExpressions": [{"key": "tier", "operator": "Exists"}],
            },
        },
        "status": {"conditions": [CONDITION], "allocatedIPs": ["242.1.0.9", "242.1.0.10"]},
    },
    {
        "apiVersion": "submariner.io/v1",
        "kind": "ClusterGlobalEgressIP",
        "metadata": meta("cluster-egress.submariner.io", None),
        "spec": {"numGlobalIPs": 8},
        "status": {"conditions": [CONDITION], "allocatedIPs": ["242.1.0.1"]},
    },
    {
        "apiVersion": "submariner.io/v1",
        "kind": "GlobalIngressIP",
        "metadata": meta("pod-web-0", "default"),
        "spec": {"target": "HeadlessServicePod", "serviceRef": {"name": "web"}, "podRef": {"name": "web-0"}},
        "status": {"conditions": [CONDITION], "allocatedIP": "242.1.255.252"},
    },
    {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": meta("nginx", "default"),
        "status": {
            "conditions": [
                {
                    "type": "Valid",
                    "status": "True",
                    "lastTransitionTime": "2024-10-07T12:00:00Z",
                    "reason": "",
                    "message": "",
                },
                {
                    "type": "Conflict",
                    "status": "True",
                    "reason": "ConflictingSessionAffinity,ConflictingPorts",
                    "message": "a\nb",
                },
            ]
        },
    },
    {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceImport",
        "metadata": meta("nginx", "default"),
        "spec": {
            "type": "ClusterSetIP",
            "ips": ["243.0.0.1"],
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "appProtocol": "http"}],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
        },
        "status": {"clusters": [{"cluster": "east"}, {"cluster": "west"}]},
    },
    {
        "apiVersion": "submariner.io/v1alpha1",
        "kind": "Submariner",
        "metadata": meta("submariner"),
        "spec": {
            "broker": "",
            "brokerK8sApiServer": "172.18.0.4:6443",
            "brokerK8sApiServerToken": "tok",
            "brokerK8sCA": "Q0E=",
            "brokerK8sRemoteNamespace": "submariner-k8s-broker",
            "brokerK8sSecret": "submariner-broker-secret",
            "brokerK8sInsecure": False,
            "cableDriver": "libreswan",
            "ceIPSecNATTPort": 4500,
            "ceIPSecDebug": False,
            "ceIPSecPSK": "cHNr",
            "ceIPSecPSKSecret": "submariner-ipsec-psk",
            "clusterCIDR": "",
            "serviceCIDR": "",
            "globalCIDR": "242.0.0.0/16",
            "clustersetIPCIDR": "243.0.0.0/20",
            "clusterID": "east",
            "namespace": "submariner-operator",
            "repository": "quay.io/submariner",
            "version": "0.19.0",
            "natEnabled": False,
            "debug": False,
            "serviceDiscoveryEnabled": True,
            "customDomains": ["example.org"],
            "connectionHealthCheck": {"enabled": True, "intervalSeconds": 1, "maxPacketLossCount": 5},
            "coreDNSCustomConfig": {"configMapName": "coredns-custom", "namespace": "kube-system"},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "status": {
            "clusterID": "east",
            "natEnabled": False,
            "networkPlugin": "kindnet",
            "gateways": [
                {
                    "version": "v0.19.0",
                    "haStatus": "active",
                    "localEndpoint": ENDPOINT_SPEC,
                    "statusFailure": "",
                    "connections": [],
                }
            ],
            "gatewayDaemonSetStatus": {
                "mismatchedContainerImages": False,
                "status": {
                    "currentNumberScheduled": 1,
                    "desiredNumberScheduled": 1,
                    "numberMisscheduled": 0,
                    "numberReady": 1,
                },
            },
        },
    },
    {
        "apiVersion": "submariner.io/v1alpha1",
        "kind": "ServiceDiscovery",
        "metadata": meta("service-discovery"),
        "spec": {
            "brokerK8sApiServer": "172.18.0.4:6443",
            "brokerK8sRemoteNamespace": "submariner-k8s-broker",
            "clusterID": "east",
            "namespace": "submariner-operator",
            "debug": False,
            "globalnetEnabled": False,
        },
    },
    {
        "apiVersion": "submariner.io/v1alpha1",
        "kind": "Broker",
        "metadata": meta("submariner-broker", "b"),
        "spec": {
            "components": ["connectivity", "service-discovery"],
            "defaultGlobalnetClusterSize": 65536,
            "globalnetEnabled": True,
            "globalnetCIDRRange": "242.0.0.0/8",
            "defaultCustomDomains": [],
            "clustersetIPEnabled": False,
            "clustersetIPCIDRRange": "243.0.0.0/8",
        },
    },
]


@pytest.mark.parametrize("obj", EXAMPLES, ids=[o["kind"] for o in EXAMPLES])
def test_example_objects_are_valid_and_round_trip(obj: dict[str, Any]) -> None:
    assert validate(obj, schema_of(obj["kind"])) == []
    assert json.loads(json.dumps(obj)) == obj
    assert yaml.safe_load(yaml.safe_dump(obj)) == obj


@pytest.mark.parametrize(
    ("kind", "mutate", "error"),
    [
        ("ClusterGlobalEgressIP", lambda o: o["spec"].update(numGlobalIPs=21), "above maximum"),
        ("GlobalEgressIP", lambda o: o["spec"].update(numberOfIPs=-1), "below minimum"),
        ("Cluster", lambda o: o["spec"].update(cluster_id="x" * 64), "too long"),
        ("Cluster", lambda o: o["spec"].update(cluster_id=""), "too short"),
        ("Cluster", lambda o: o["spec"].pop("global_cidr"), "missing global_cidr"),
        ("Cluster", lambda o: o["spec"].update(clusterID="east"), "unknown field 'clusterID'"),
        ("Endpoint", lambda o: o["spec"].update(nat_enabled="false"), "expected boolean"),
        ("Endpoint", lambda o: o["spec"].update(backend_config={"udp-port": 4500}), "expected string"),
        ("GlobalIngressIP", lambda o: o["spec"].update(target="Pod"), "not in"),
        ("Gateway", lambda o: o["status"].update(haStatus="leader"), "not in"),
        ("Gateway", lambda o: o["status"].pop("connections"), "missing connections"),
        ("GlobalEgressIP", lambda o: o["status"]["conditions"][0].update(reason=""), "too short"),
        ("ServiceImport", lambda o: o["spec"].update(type="ClusterIP"), "not in"),
        ("ServiceImport", lambda o: o["spec"].update(ips=["1.1.1.1", "2.2.2.2"]), "too many items"),
        ("ServiceExport", lambda o: o["status"]["conditions"][0].update(status="Maybe"), "not in"),
        ("Submariner", lambda o: o["spec"].pop("clusterID"), "missing clusterID"),
    ],
)
def test_schemas_reject_what_upstream_rejects(kind: str, mutate: Any, error: str) -> None:
    obj = copy.deepcopy(next(o for o in EXAMPLES if o["kind"] == kind))
    mutate(obj)
    errors = validate(obj, schema_of(kind))
    assert any(error in e for e in errors), errors


# --- names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("East-Worker", "east-worker"),
        ("node_1.example.com", "node-1.example.com"),
        ("-abc-", "abc"),
        ("a@b", "a-b"),
        ("", ""),
        ("east-submariner-cable-east-172-18-0-4", "east-submariner-cable-east-172-18-0-4"),
    ],
)
def test_sanitize_name(raw: str, clean: str) -> None:
    assert sanitize_name(raw) == clean


@given(st.text())
def test_sanitize_name_properties(raw: str) -> None:
    out = sanitize_name(raw)
    assert re.fullmatch(r"[a-z0-9.-]*", out)
    assert not out.startswith("-") and not out.endswith("-")
    assert sanitize_name(out) == out


@pytest.mark.parametrize("good", ["east", "a", "cluster-1", "0abc", "x" * 63])
def test_valid_cluster_ids(good: str) -> None:
    validate_cluster_id(good)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "RFC 1123 label"),
        ("East", "RFC 1123 label"),
        ("a.b", "RFC 1123 label"),
        ("-east", "start and end with an alphanumeric"),
        ("east-", "start and end with an alphanumeric"),
        ("x" * 64, "no more than 63 characters"),
        ("a_b", "RFC 1123 label"),
    ],
)
def test_invalid_cluster_ids(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)) as exc:
        validate_cluster_id(bad)
    assert repr(bad) in str(exc.value)
    assert "\n" not in str(exc.value)


@given(st.text(max_size=70))
def test_validate_cluster_id_agrees_with_dns1123(s: str) -> None:
    ok = re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", s) is not None and len(s) <= 63
    try:
        validate_cluster_id(s)
    except ValueError:
        assert not ok
    else:
        assert ok


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("abcde.g", "abcde-g"), ("-abcdef", "0abcdef"), ("a@#$b", "a-b"), ("kind-East_", "kind-east0")],
)
def test_sanitize_cluster_id_as_subctl(raw: str, clean: str) -> None:
    assert sanitize_cluster_id(raw) == clean


def test_cable_and_endpoint_names() -> None:
    cable = cable_name("east", "172.18.0.4")
    assert cable == "submariner-cable-east-172-18-0-4"
    assert endpoint_name("East", cable) == "east-submariner-cable-east-172-18-0-4"


# --- constants ---------------------------------------------------------------------------------------------


def test_label_keys() -> None:
    assert labels.SERVICE_NAME == "multicluster.kubernetes.io/service-name"
    assert labels.SOURCE_CLUSTER == "multicluster.kubernetes.io/source-cluster"
    assert labels.SOURCE_NAMESPACE == "lighthouse.submariner.io/sourceNamespace"
    assert labels.ENDPOINTSLICE_MANAGED_BY == "endpointslice.kubernetes.io/managed-by"
    assert labels.LIGHTHOUSE_MANAGED_BY == "lighthouse-agent.submariner.io"
    assert labels.IS_HEADLESS == "lighthouse.submariner.io/is-headless"
    assert labels.SOURCE_NAME == "lighthouse.submariner.io/source-name"
    assert labels.PUBLISH_NOT_READY_ADDRESSES == "lighthouse.submariner.io/publish-not-ready-addresses"
    assert labels.GLOBALNET_ENABLED == "lighthouse.submariner.io/globalnet-enabled"
    assert labels.USE_CLUSTERSET_IP == "lighthouse.submariner.io/use-clusterset-ip"
    assert labels.CLUSTERSET_IP_ALLOCATED_BY == "lighthouse.submariner.io/clusterset-ip-allocated-by"
    assert labels.CLUSTER_ID == "submariner-io/clusterID"
    assert labels.ORIGINATING_NAMESPACE == "submariner-io/originatingNamespace"
    assert labels.LEGACY_SOURCE_NAME == "lighthouse.submariner.io/sourceName"
    assert labels.LEGACY_SOURCE_CLUSTER == "lighthouse.submariner.io/sourceCluster"
    assert labels.export_timestamp_key("East_1") == "timestamp.submariner.io/east-1"


def test_condition_constants() -> None:
    assert (
        ExportCondition.VALID,
        ExportCondition.READY,
        ExportCondition.CONFLICT,
        ExportCondition.SYNCED,
    ) == (
        "Valid",
        "Ready",
        "Conflict",
        "Synced",
    )
    assert ExportReason.AWAITING_EXPORT == "AwaitingExport"
    assert ExportReason.CONFLICTING_CLUSTERSET_IP_ENABLEMENT == "ConflictingClusterSetIPEnablement"
    assert (GlobalnetCondition.ALLOCATED, GlobalnetCondition.UPDATED) == ("Allocated", "Updated")
    assert GlobalnetReason.POD_SELECTOR_UPDATE_NOT_SUPPORTED == "PodSelectorUpdateNotSupported"
    assert GlobalnetReason.IP_POOL_ALLOCATION_FAILED == "IPPoolAllocationFailed"
    pattern = at(schema_of("GlobalEgressIP"), "status.conditions.[].reason")["pattern"]
    for name, value in vars(GlobalnetReason).items():
        if not name.startswith("_"):
            assert re.search(pattern, value), value


def test_gateway_ip() -> None:
    assert submariner.gateway_ip(ENDPOINT_SPEC) == "172.18.0.4"
    assert submariner.gateway_ip({**ENDPOINT_SPEC, "public_ip": "1.2.3.4"}) == "1.2.3.4"


def test_crds_module_exports() -> None:
    assert crds.all_crds is api.all_crds
    assert set(crds.SCHEMAS) == set(api.RESOURCES)
