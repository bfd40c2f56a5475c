"""Server-side Tables: the rows kube-apiserver would send to `kubectl get`."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from submariner.broker.apiserver import tables
from submariner.broker.apiserver.errors import ApiError
from submariner.broker.apiserver.resources import Registry, ResourceType, resource_types_from_crd

KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"
NOW = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
REGISTRY = Registry()


def ts(delta: dt.timedelta, now: dt.datetime = NOW) -> str:
    return (now - delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def rt(group: str, plural: str) -> ResourceType:
    for t in REGISTRY.all():
        if t.group == group and t.plural == plural:
            return t
    raise KeyError(plural)


def meta(name: str, age: dt.timedelta, ns: str = "default", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": ns, "creationTimestamp": ts(age), "resourceVersion": "7", **extra}


def headers(table: dict[str, Any], wide: bool = False) -> list[str]:
    return [c["name"] for c in table["columnDefinitions"] if wide or c["priority"] == 0]


# --- HumanDuration -------------------------------------------------------------------------------------

S, M, H, D = 1, 60, 3600, 86400


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-2, "<invalid>"),
        (-1.5, "0s"),
        (-1, "0s"),
        (0, "0s"),
        (0.9, "0s"),
        (5, "5s"),
        (59, "59s"),
        (119, "119s"),
        (2 * M, "2m"),
        (3 * M + 2, "3m2s"),
        (9 * M + 59, "9m59s"),
        (10 * M, "10m"),
        (10 * M + 59, "10m"),
        (125 * M, "125m"),  # 2h5m still shows minutes below 3h
        (3 * H - 1, "179m"),
        (3 * H, "3h"),
        (3 * H + 5 * M, "3h5m"),
        (7 * H + 59 * M + 59, "7h59m"),
        (8 * H, "8h"),
        (47 * H + 59 * M, "47h"),
        (2 * D, "2d"),
        (3 * D + 4 * H, "3d4h"),
        (7 * D + 23 * H, "7d23h"),
        (8 * D, "8d"),
        (45 * D + 5 * H, "45d"),
        (729 * D, "729d"),
        (730 * D, "2y"),
        (2 * 365 * D + 30 * D, "2y30d"),
        (7 * 365 * D + 364 * D, "7y364d"),
        (8 * 365 * D, "8y"),
        (20 * 365 * D + 100 * D, "20y"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert tables.human_duration(dt.timedelta(seconds=seconds)) == text


# --- built-in resources ----------------------------------------------------------------------------

CRASHING_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": meta("web-0", dt.timedelta(days=2, hours=3), labels={"app": "web"}),
    "spec": {
        "nodeName": "node-1",
        "containers": [{"name": "app", "image": "nginx"}, {"name": "sidecar", "image": "envoy"}],
    },
    "status": {
        "phase": "Running",
        "podIP": "10.244.0.5",
        "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00::5"}],
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {
                "name": "app",
                "ready": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": ts(dt.timedelta(days=2))}},
            },
            {
                "name": "sidecar",
                "ready": False,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "finishedAt": ts(dt.timedelta(minutes=5)),
                    }
                },
            },
        ],
    },
}


@pytest.mark.parametrize(
    ("pod", "cells", "conditions"),
    [
        (
            CRASHING_POD,
            [
                "web-0",
                "1/2",
                "CrashLoopBackOff",
                "3 (5m ago)",
                "2d3h",
                "10.244.0.5",
                "node-1",
                "<none>",
                "<none>",
            ],
            None,
        ),
        (
            {
                "metadata": meta("done", dt.timedelta(hours=1)),
                "spec": {"containers": [{"name": "c"}], "readinessGates": [{"conditionType": "x/ok"}]},
                "status": {
                    "phase": "Succeeded",
                    "conditions": [{"type": "x/ok", "status": "True"}],
                    "containerStatuses": [
                        {
                            "name": "c",
                            "ready": False,
                            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                        }
                    ],
                },
            },
            ["done", "0/1", "Completed", "0", "60m", "<none>", "<none>", "<none>", "1/1"],
            [
                {
                    "type": "Completed",
                    "status": "True",
                    "reason": "Succeeded",
                    "message": "The pod has completed successfully.",
                }
            ],
        ),
        (
            {
                "metadata": meta("init", dt.timedelta(seconds=30)),
                "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "c"}]},
                "status": {
                    "phase": "Pending",
                    "initContainerStatuses": [
                        {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
                        {"name": "i2", "state": {"running": {}}},
                    ],
                    "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "PodInitializing"}}}],
                },
            },
            ["init", "0/1", "Init:1/2", "0", "30s", "<none>", "<none>", "<none>", "<none>"],
            None,
        ),
        (
            {
                "metadata": meta("bye", dt.timedelta(minutes=3), deletionTimestamp=ts(dt.timedelta(0))),
                "spec": {"containers": [{"name": "c"}]},
                "status": {
                    "phase": "Running",
                    "containerStatuses": [{"name": "c", "ready": True, "state": {"running": {}}}],
                },
            },
            ["bye", "1/1", "Terminating", "0", "3m", "<none>", "<none>", "<none>", "<none>"],
            None,
        ),
    ],
    ids=["crashloop", "succeeded", "init", "terminating"],
)
def test_pod_rows(pod: dict[str, Any], cells: list[Any], conditions: list[Any] | None) -> None:
    table = tables.render_table(rt("", "pods"), [pod], now=NOW)
    assert headers(table) == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert headers(table, wide=True)[5:] == ["IP", "Node", "Nominated Node", "Readiness Gates"]
    row = table["rows"][0]
    assert row["cells"] == cells
    assert row.get("conditions") == conditions


def test_service_nodeport_with_external_ips() -> None:
    svc = {
        "metadata": meta("web", dt.timedelta(minutes=10, seconds=30)),
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10", "fd00:10:96::a"],
            "externalIPs": ["192.0.2.1", "192.0.2.2"],
            "selector": {"tier": "fe", "app": "web"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "https", "port": 443, "nodePort": 30443},
            ],
        },
    }
    table = tables.render_table(rt("", "services"), [svc], now=NOW)
    assert headers(table) == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"]
    assert headers(table, wide=True)[-1] == "Selector"
    assert table["rows"][0]["cells"] == [
        "web",
        "NodePort",
        "10.96.0.10",
        "192.0.2.1,192.0.2.2",
        "80:30080/TCP,53/UDP,443:30443/TCP",
        "10m",
        "app=web,tier=fe",
    ]


@pytest.mark.parametrize(
    ("spec", "status", "cells"),
    [
        ({"clusterIP": "None"}, {}, ["h", "ClusterIP", "None", "<none>", "<none>", "5s", "<none>"]),
        ({"type": "LoadBalancer", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 443}]}, {},
         ["h", "LoadBalancer", "10.0.0.1", "<pending>", "443/TCP", "5s", "<none>"]),
        ({"type": "LoadBalancer", "clusterIPs": ["10.0.0.1"], "externalIPs": ["192.0.2.9"]},
         {"loadBalancer": {"ingress": [{"ip": "203.0.113.2"}, {"hostname": "lb.example"}]}},
         ["h", "LoadBalancer", "10.0.0.1", "203.0.113.2,lb.example,192.0.2.9", "<none>", "5s", "<none>"]),
        ({"type": "ExternalName", "externalName": "db.example.com"}, {},
         ["h", "ExternalName", "<none>", "db.example.com", "<none>", "5s", "<none>"]),
    ],
    ids=["headless", "lb-pending", "lb-ingress", "externalname"],
)  # fmt: skip
def test_service_variants(spec: dict[str, Any], status: dict[str, Any], cells: list[Any]) -> None:
    svc = {"metadata": meta("h", dt.timedelta(seconds=5)), "spec": spec, "status": status}
    assert tables.render_table(rt("", "services"), [svc], now=NOW)["rows"][0]["cells"] == cells


def test_deployment_row() -> None:
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta("api", dt.timedelta(days=45, hours=2)),
        "spec": {
            "replicas": 3,
            "selector": {
                "matchLabels": {"app": "api"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}],
            },
            "template": {
                "spec": {
                    "containers": [{"name": "api", "image": "img1"}, {"name": "sidecar", "image": "img2"}]
                }
            },
        },
        "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    table = tables.render_table(rt("apps", "deployments"), [dep], now=NOW)
    assert headers(table) == ["Name", "Ready", "Up-to-date", "Available", "Age"]
    assert headers(table, wide=True)[5:] == ["Containers", "Images", "Selector"]
    assert table["rows"][0]["cells"] == [
        "api",
        "2/3",
        3,
        2,
        "45d",
        "api,sidecar",
        "img1,img2",
        "app=api,tier in (be,fe)",
    ]

    fresh = {"metadata": meta("new", dt.timedelta(seconds=3)), "spec": {"template": {"spec": {}}}}
    assert tables.render_table(rt("apps", "deployments"), [fresh], now=NOW)["rows"][0]["cells"][:5] == [
        "new",
        "0/1",
        0,
        0,
        "3s",
    ]


def test_other_builtins() -> None:
    def cells(group: str, plural: str, obj: dict[str, Any]) -> list[Any]:
        row: list[Any] = tables.render_table(rt(group, plural), [obj], now=NOW)["rows"][0]["cells"]
        return row

    age = dt.timedelta(hours=5)
    assert cells(
        "", "namespaces", {"metadata": meta("ns", age, ns=""), "status": {"phase": "Terminating"}}
    ) == [
        "ns",
        "Terminating",
        "5h",
    ]
    node = {
        "metadata": meta(
            "n1",
            age,
            ns="",
            labels={"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/etcd": ""},
        ),
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True"},
            ],
            "addresses": [
                {"type": "InternalIP", "address": "172.18.0.2"},
                {"type": "Hostname", "address": "n1"},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.37.0",
                "osImage": "Debian",
                "kernelVersion": "6.1",
                "containerRuntimeVersion": "",
            },
        },
    }
    assert cells("", "nodes", node) == [
        "n1",
        "Ready,SchedulingDisabled",
        "control-plane,etcd",
        "5h",
        "v1.37.0",
        "172.18.0.2",
        "<none>",
        "Debian",
        "6.1",
        "<unknown>",
    ]
    assert cells("", "nodes", {"metadata": meta("n2", age, ns="")})[:3] == ["n2", "Unknown", "<none>"]
    assert cells(
        "", "configmaps", {"metadata": meta("c", age), "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}}
    ) == [
        "c",
        3,
        "5h",
    ]
    assert cells(
        "",
        "secrets",
        {"metadata": meta("s", age), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}},
    ) == [
        "s",
        "kubernetes.io/tls",
        2,
        "5h",
    ]
    assert cells("", "serviceaccounts", {"metadata": meta("sa", age)}) == ["sa", 0, "5h"]
    ep = {
        "metadata": meta("web", age),
        "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}], "ports": [{"port": 80}, {"port": 443}]},
        ],
    }
    assert cells("", "endpoints", ep) == ["web", "10.0.0.1:80,[fd00::1]:80,10.0.0.1:443 + 1 more...", "5h"]
    assert cells("", "endpoints", {"metadata": meta("none", age)}) == ["none", "<none>", "5h"]
    eps = {
        "metadata": meta("web-abc", age),
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80}, {"name": "named"}],
        "endpoints": [
            {"addresses": ["10.0.0.1"]},
            {"addresses": ["10.0.0.2", "10.0.0.3"]},
            {"addresses": ["10.0.0.4"]},
        ],
    }
    assert cells("discovery.k8s.io", "endpointslices", eps) == [
        "web-abc",
        "IPv4",
        "80,named",
        "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...",
        "5h",
    ]
    assert cells("discovery.k8s.io", "endpointslices", {"metadata": meta("e", age), "addressType": "IPv6"})[
        2:4
    ] == [
        "<unset>",
        "<unset>",
    ]
    assert cells(
        "coordination.k8s.io", "leases", {"metadata": meta("l", age), "spec": {"holderIdentity": "gw-1"}}
    ) == [
        "l",
        "gw-1",
        "5h",
    ]
    sts = {"metadata": meta("db", age), "spec": {"replicas": 2}, "status": {"readyReplicas": 1}}
    assert cells("apps", "statefulsets", sts)[:3] == ["db", "1/2", "5h"]
    ds = {
        "metadata": meta("gw", age),
        "spec": {
            "selector": {"matchLabels": {"app": "gw"}},
            "template": {
                "spec": {
                    "nodeSelector": {"submariner.io/gateway": "true"},
                    "containers": [{"name": "g", "image": "i"}],
                }
            },
        },
        "status": {
            "desiredNumberScheduled": 2,
            "currentNumberScheduled": 2,
            "numberReady": 1,
            "updatedNumberScheduled": 2,
        },
    }
    assert cells("apps", "daemonsets", ds) == [
        "gw",
        2,
        2,
        1,
        2,
        0,
        "submariner.io/gateway=true",
        "5h",
        "g",
        "i",
        "app=gw",
    ]
    rb = {
        "metadata": meta("rb", age),
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "Group", "name": "devs"},
            {"kind": "ServiceAccount", "name": "x", "namespace": "b"},
            {"kind": "ServiceAccount", "name": "y", "namespace": "c"},
        ],
    }
    assert cells("rbac.authorization.k8s.io", "rolebindings", rb) == [
        "rb",
        "ClusterRole/view",
        "5h",
        "alice",
        "devs",
        "b/x, c/y",
    ]
    assert cells("rbac.authorization.k8s.io", "clusterroles", {"metadata": meta("cr", age, ns="")}) == [
        "cr",
        "2025-03-01T07:00:00Z",
    ]
    crd_table = tables.render_table(
        rt("apiextensions.k8s.io", "customresourcedefinitions"), [{"metadata": meta("x", age)}]
    )
    assert headers(crd_table) == ["Name", "Created At"]
    ev = {
        "metadata": meta("web.17f", age),
        "type": "Warning",
        "reason": "BackOff",
        "message": " Back-off restarting failed container \n",
        "involvedObject": {"kind": "Pod", "name": "web-0", "fieldPath": "spec.containers{app}"},
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": ts(dt.timedelta(hours=2)),
        "lastTimestamp": ts(dt.timedelta(minutes=1)),
        "count": 12,
    }
    assert cells("", "events", ev) == [
        "60s",
        "Warning",
        "BackOff",
        "pod/web-0",
        "spec.containers{app}",
        "kubelet, node-1",
        "Back-off restarting failed container",
        "120m",
        12,
        "web.17f",
    ]
    new_style = {
        "metadata": meta("e2", age),
        "eventTime": "2025-03-01T11:58:59.500000Z",
        "reportingComponent": "gw",
    }
    assert cells("", "events", new_style)[0:1] + cells("", "events", new_style)[5:] == [
        "60s",
        "gw",
        "",
        "60s",
        1,
        "e2",
    ]


def test_unknown_builtin_is_name_age() -> None:
    other = ResourceType("example.com", "v1", "gadgets", "gadget", "Gadget", True)
    table = tables.render_table(other, [{"metadata": meta("g", dt.timedelta(days=3))}], now=NOW)
    assert headers(table) == ["Name", "Age"]
    assert table["rows"][0]["cells"] == ["g", "3d"]


# --- CRDs ------------------------------------------------------------------------------------------

GATEWAY_CRD = {
    "metadata": {"name": "widgets.example.io"},
    "spec": {
        "group": "example.io",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "additionalPrinterColumns": [
                    {"name": "Cluster", "type": "string", "jsonPath": ".spec.cluster_id"},
                    {"name": "Port", "type": "integer", "jsonPath": ".spec.ports[0].port"},
                    {"name": "IPs", "type": "string", "jsonPath": ".spec.ips[*]"},
                    {
                        "name": "App",
                        "type": "string",
                        "jsonPath": ".metadata.labels['app.kubernetes.io/name']",
                    },
                    {
                        "name": "Ready",
                        "type": "string",
                        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                    },
                    {"name": "Ratio", "type": "number", "jsonPath": ".status.ratio"},
                    {"name": "Active", "type": "boolean", "jsonPath": ".status.active"},
                    {
                        "name": "Spec",
                        "type": "string",
                        "jsonPath": ".spec.extra",
                        "priority": 1,
                        "description": "raw",
                    },
                    {"name": "Missing", "type": "string", "jsonPath": ".status.nope"},
                    {"name": "Seen", "type": "date", "jsonPath": ".status.lastSeen", "format": "date-time"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }
        ],
    },
}

WIDGET = {
    "apiVersion": "example.io/v1",
    "kind": "Widget",
    "metadata": meta("w1", dt.timedelta(minutes=5), labels={"app.kubernetes.io/name": "widget"}),
    "spec": {
        "cluster_id": "east",
        "ports": [{"port": 4500}, {"port": 4490}],
        "ips": ["10.0.0.1", "10.0.0.2"],
        "extra": {"b": [1, 2], "a": "<x>"},
    },
    "status": {
        "conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}],
        "ratio": 2,
        "active": True,
        "lastSeen": ts(dt.timedelta(hours=3, minutes=4)),
    },
}


def test_crd_printer_columns() -> None:
    rtype = resource_types_from_crd(GATEWAY_CRD)[0]
    table = tables.render_table(rtype, [WIDGET], now=NOW, list_metadata={"resourceVersion": "42"})
    cols = table["columnDefinitions"]
    assert [c["name"] for c in cols] == [
        "Name", "Cluster", "Port", "IPs", "App", "Ready", "Ratio", "Active", "Spec", "Missing", "Seen", "Age",
    ]  # fmt: skip
    assert cols[0] == {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": cols[0]["description"],
        "priority": 0,
    }
    assert cols[8]["priority"] == 1 and cols[8]["description"] == "raw"
    assert (
        cols[1]["description"] == "Custom resource definition column (in JSONPath format): .spec.cluster_id"
    )
    assert cols[10]["type"] == "date" and cols[10]["format"] == "date-time"
    assert table["rows"][0]["cells"] == [
        "w1", "east", 4500, "10.0.0.1", "widget", "True", 2.0, True,
        '{"a":"\\u003cx\\u003e","b":[1,2]}', None, "3h4m", "5m",
    ]  # fmt: skip
    assert table["metadata"] == {"resourceVersion": "42"}


def test_crd_without_printer_columns_gets_age() -> None:
    crd = json.loads(json.dumps(GATEWAY_CRD))
    del crd["spec"]["versions"][0]["additionalPrinterColumns"]
    table = tables.render_table(resource_types_from_crd(crd)[0], [WIDGET], now=NOW)
    assert [(c["name"], c["type"]) for c in table["columnDefinitions"]] == [
        ("Name", "string"),
        ("Age", "date"),
    ]
    assert table["rows"][0]["cells"] == ["w1", "5m"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".spec.cluster_id", ["east"]),
        ("spec.cluster_id", ["east"]),
        ("{.spec.ports[1].port}", [4490]),
        (".spec.ports[-1].port", [4490]),
        (".spec.ports[*].port", [4500, 4490]),
        (".spec.ports[5].port", []),
        (".metadata.labels.app\\.kubernetes\\.io/name", ["widget"]),
        ('.metadata.labels["app.kubernetes.io/name"]', ["widget"]),
        (".status.conditions[?(@.type!='Ready')].type", ["Synced"]),
        (".status.conditions[?(@.status)].type", ["Synced", "Ready"]),
        (".spec.nothing.deeper", []),
        (
            ".spec.*",
            ["east", {"a": "<x>", "b": [1, 2]}, ["10.0.0.1", "10.0.0.2"], [{"port": 4500}, {"port": 4490}]],
        ),
    ],
)
def test_jsonpath_subset(path: str, expected: list[Any]) -> None:
    assert tables.eval_jsonpath(tables.parse_jsonpath(path), WIDGET) == expected


def test_typed_cells() -> None:
    cases: list[tuple[str, Any, Any]] = [
        ("integer", 3.7, 3),
        ("integer", "3", None),
        ("integer", True, None),
        ("number", 2, 2.0),
        ("boolean", "true", None),
        ("string", 1.5, "1.5"),
        ("string", 3.0, "3"),
        ("string", False, "false"),
        ("date", "not a time", "<invalid>"),
        ("date", "", "<unknown>"),
        ("date", 5, None),
        ("weird", "x", None),
    ]
    for col_type, value, cell in cases:
        assert tables._typed_cell(col_type, value, NOW) == cell, (col_type, value)


# --- Table envelope --------------------------------------------------------------------------------


def test_include_object_variants() -> None:
    pod = CRASHING_POD
    t = tables.render_table(
        rt("", "pods"), [pod], now=NOW, list_metadata={"resourceVersion": "9", "continue": "c"}
    )
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert t["metadata"] == {"resourceVersion": "9", "continue": "c"}
    assert t["rows"][0]["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": pod["metadata"],
    }
    full = tables.render_table(rt("", "pods"), [pod], include_object="Object", now=NOW)
    assert full["rows"][0]["object"] == pod
    bare = {"metadata": meta("x", dt.timedelta(0)), "spec": {}}
    assert (
        tables.render_table(rt("", "pods"), [bare], include_object="Object")["rows"][0]["object"]["kind"]
        == "Pod"
    )
    none = tables.render_table(rt("", "pods"), [pod], include_object="None", now=NOW)
    assert "object" not in none["rows"][0]
    assert tables.render_table(rt("", "pods"), [], now=NOW)["rows"] == []
    assert "columnDefinitions" not in tables.render_table(rt("", "pods"), [pod], no_headers=True)
    with pytest.raises(ApiError) as err:
        tables.render_table(rt("", "pods"), [pod], include_object="Everything")
    assert err.value.code == 400


# --- against the real kubectl -----------------------------------------------------------------------


class _FakeAPI(http.server.BaseHTTPRequestHandler):
    """Just enough of an API server for `kubectl get pods`: legacy discovery plus a Table list."""

    pods: list[dict[str, Any]] = []
    accepts: list[str] = []

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        body: dict[str, Any]
        if path == "/api":
            body = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        elif path == "/apis":
            body = {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
        elif path == "/api/v1":
            verbs = ["get", "list", "watch"]
            body = {
                "kind": "APIResourceList",
                "groupVersion": "v1",
                "resources": [
                    {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "verbs": verbs}
                ],
            }
        elif path == "/api/v1/namespaces/default/pods":
            type(self).accepts.append(self.headers.get("Accept", ""))
            body = tables.render_table(
                rt("", "pods"), type(self).pods, list_metadata={"resourceVersion": "5"}
            )
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeAPI)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl not installed in .venv")
def test_kubectl_prints_the_table(tmp_path: Path, fake_api: str) -> None:
    now = dt.datetime.now(dt.UTC)
    pod = json.loads(json.dumps(CRASHING_POD))
    pod["metadata"]["creationTimestamp"] = ts(dt.timedelta(days=2, hours=3, minutes=10), now)
    pod["status"]["containerStatuses"][1]["lastState"]["terminated"]["finishedAt"] = ts(
        dt.timedelta(minutes=15), now
    )
    _FakeAPI.pods = [pod]
    _FakeAPI.accepts = []
    (tmp_path / "config").write_text("apiVersion: v1\nkind: Config\n")
    base = [
        str(KUBECTL),
        "--kubeconfig",
        str(tmp_path / "config"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "-s",
        fake_api,
    ]

    def run(*args: str) -> list[list[str]]:
        res = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr
        return [line.split() for line in res.stdout.splitlines()]

    assert run("get", "pods", "-n", "default") == [
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        ["web-0", "1/2", "CrashLoopBackOff", "3", "(15m", "ago)", "2d3h"],
    ]
    assert "as=Table" in _FakeAPI.accepts[0]
    wide = run("get", "pods", "-n", "default", "-o", "wide")
    assert wide[0] == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED",
        "NODE",
        "READINESS",
        "GATES",
    ]
    assert wide[1][-4:] == ["10.244.0.5", "node-1", "<none>", "<none>"]
    labels = run("get", "pods", "-n", "default", "--show-labels")
    assert labels[1][-1] == "app=web"  # read from the row's PartialObjectMetadata
