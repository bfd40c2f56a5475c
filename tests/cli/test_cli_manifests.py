"""The rendered objects: valid against the Kubernetes OpenAPI schemas (kubernetes-validate, offline) and our
CRD schemas, and carrying what the components and the lab need (env by secretKeyRef, selectors, Corefile)."""

from __future__ import annotations

import base64
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from submariner.broker.api.crds import all_crds
from submariner.cli import manifests as m
from submariner.lab.daemon import KIND_COREFILE  # kind's default Corefile, as the lab seeds it

K8S_VERSION = "1.30.0"


def settings(**kw: Any) -> m.JoinSettings:
    base: dict[str, Any] = dict(
        cluster_id="c1", broker_server="192.168.1.20:6443", broker_namespace="submariner-k8s-broker",
        broker_token="s3cr3t-broker-token", broker_ca=b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        psk=bytes(range(48)), cluster_cidrs=("10.8.0.0/16",), service_cidrs=("10.88.0.0/16",),
        clusterset_ip_cidr="243.0.0.0/20",
    )
    base.update(kw)
    return m.JoinSettings(**base)


def _crd_schemas() -> dict[str, dict[str, Any]]:
    return {crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            for crd in all_crds()}


def validate(obj: dict[str, Any]) -> None:
    """Built-in kinds against the bundled Kubernetes schemas; our kinds against their CRD schema."""
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    if group in ("submariner.io", "multicluster.x-k8s.io"):
        jsonschema.validate(obj, _crd_schemas()[obj["kind"]])
        return
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variant", ["default", "globalnet", "discovery-only", "custom"])
def test_every_member_object_is_schema_valid(variant: str) -> None:
    s = {
        "default": settings(),
        "globalnet": settings(global_cidr="242.1.0.0/16", cable_driver="wireguard", image_overrides={
            "submariner-gateway": "localhost/gw:dev"}),
        "discovery-only": settings(connectivity=False, custom_domains=("example.org",)),
        "custom": settings(coredns_custom=True, coredns_configmap="custom", coredns_namespace="dns",
                           broker_insecure=True, air_gapped=True, preferred_server=True,
                           proxy={"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "10.0.0.0/8"}),
    }[variant]
    objs = m.member_objects(s)
    for obj in objs:
        validate(obj)
    kinds = [o["kind"] for o in objs]
    assert kinds.count("CustomResourceDefinition") == 12
    assert ("Submariner" in kinds) == s.connectivity and ("ServiceDiscovery" in kinds) != s.connectivity
    assert ("DaemonSet" in kinds) == s.connectivity
    names = {o["metadata"]["name"] for o in objs if o["kind"] in ("DaemonSet", "Deployment")}
    assert (m.GLOBALNET in names) == s.globalnet
    for o in objs:
        if o["kind"] in ("DaemonSet", "Deployment"):
            env = {e["name"] for e in o["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert ({"HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"} <= env) == bool(s.proxy)
            assert "HTTPS_PROXY" not in env


def test_broker_objects_are_schema_valid() -> None:
    s = m.BrokerSettings(globalnet=True, custom_domains=("a.example",))
    for obj in [*m.broker_rbac_objects(s), m.broker_cr(s), m.globalnet_configmap(s), m.clusterset_ip_configmap(s),
                *m.cluster_access_objects("c1", s.namespace), m.token_secret("cluster-c1", s.namespace)]:
        validate(obj)
    assert m.globalnet_configmap(s)["data"] == {"globalnetEnabled": "true", "globalnetCidrRange": '"242.0.0.0/8"',
                                                "globalnetClusterSize": "65536"}


def _rules_allow(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


def test_broker_cluster_role_has_upstream_rights_plus_leases_and_configmaps_and_admin_covers_it() -> None:
    cluster = m.broker_cluster_rules()
    for group, resource in (("submariner.io", "clusters"), ("submariner.io", "endpoints"),
                            ("multicluster.x-k8s.io", "serviceimports"), ("discovery.k8s.io", "endpointslices"),
                            ("coordination.k8s.io", "leases"), ("", "configmaps")):
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
            assert _rules_allow(cluster, group, resource, verb), (group, resource, verb)
    assert _rules_allow(cluster, "", "secrets", "get") and not _rules_allow(cluster, "", "secrets", "create")
    admin = m.broker_admin_rules()
    # The admin token binds the cluster role, so it must hold every right in it (RBAC escalation check).
    for rule in cluster:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert _rules_allow(admin, group, resource, verb), (group, resource, verb)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_gateway_daemon_set_env_and_placement() -> None:
    s = settings()
    ds = m.gateway_daemon_set(s)
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"submariner.io/gateway": "true"} and pod["hostNetwork"] is True
    c = pod["containers"][0]
    assert c["image"] == "quay.io/submariner/submariner-gateway:0.19.0"
    assert c["securityContext"]["privileged"] is True
    env = _env(c)
    assert env["BROKER_K8S_APISERVER"] == "192.168.1.20:6443"
    assert env["BROKER_K8S_APISERVERTOKEN"] == {"secretKeyRef": {"name": "submariner-broker-secret", "key": "token"}}
    assert env["BROKER_K8S_CA"] == {"secretKeyRef": {"name": "submariner-broker-secret", "key": "ca.crt"}}
    assert env["BROKER_K8S_REMOTENAMESPACE"] == "submariner-k8s-broker"
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SUBMARINER_CLUSTERCIDR"] == "10.8.0.0/16" and env["SUBMARINER_SERVICECIDR"] == "10.88.0.0/16"
    assert env["SUBMARINER_CABLEDRIVER"] == "libreswan" and env["CE_IPSEC_NATTPORT"] == "4500"
    assert base64.b64decode(env["CE_IPSEC_PSK"]) == bytes(range(48))
    assert "s3cr3t-broker-token" not in str(ds)  # the broker token never appears literally in a workload


def test_route_agent_runs_everywhere_and_lighthouse_agent_reads_its_env() -> None:
    s = settings(global_cidr="242.0.0.0/16")
    ra = m.route_agent_daemon_set(s)["spec"]["template"]["spec"]
    assert "nodeSelector" not in ra and ra["tolerations"] == [{"operator": "Exists"}] and ra["hostNetwork"]
    assert _env(ra["containers"][0])["SUBMARINER_GLOBALCIDR"] == "242.0.0.0/16"
    la = m.lighthouse_agent_deployment(s)["spec"]["template"]["spec"]
    env = _env(la["containers"][0])
    assert env["SUBMARINER_CLUSTERID"] == "c1" and env["SUBMARINER_GLOBALNET_ENABLED"] == "true"
    assert env["SUBMARINER_NAMESPACE"] == "submariner-operator"
    assert env["SUBMARINER_CLUSTERSET_IP_CIDR"] == "243.0.0.0/20"
    assert la["serviceAccountName"] == m.LIGHTHOUSE_AGENT and "hostNetwork" not in la
    # The lighthouse agent's own parser accepts this environment (no network I/O in build()).
    from submariner.lighthouse.agent.cli import _broker_from_env

    resolved = {k: (v if isinstance(v, str) else "x") for k, v in env.items()}
    resolved["BROKER_K8S_CA"] = ""
    _broker, ns = _broker_from_env(resolved)
    assert ns == "submariner-k8s-broker"


def test_lighthouse_coredns_corefile_and_mount() -> None:
    s = settings(custom_domains=("example.org",))
    cm, dep, svc = m.lighthouse_coredns_objects(s)
    assert cm["data"]["Corefile"] == (
        "#lighthouse\nclusterset.local:53 example.org:53 {\n    lighthouse\n    errors\n    health\n    ready\n}\n")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["-conf", "/etc/coredns/Corefile"] and c["image"].endswith("/lighthouse-coredns:0.19.0")
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert dep["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == m.LIGHTHOUSE_COREDNS
    assert svc["spec"]["selector"] == {"app": m.LIGHTHOUSE_COREDNS}
    from submariner.lighthouse.dns.corefile import parse

    assert parse(cm["data"]["Corefile"])


def test_coredns_forward_block_is_prepended_once_and_replaced_on_ip_change() -> None:
    once = m.corefile_with_forward(KIND_COREFILE, "10.88.0.15")
    assert once == "clusterset.local:53 {\n    forward . 10.88.0.15\n}\n" + KIND_COREFILE
    assert m.corefile_with_forward(once, "10.88.0.15") == once
    moved = m.corefile_with_forward(once, "10.88.0.99")
    assert moved == "clusterset.local:53 {\n    forward . 10.88.0.99\n}\n" + KIND_COREFILE
    from submariner.lighthouse.dns.corefile import parse

    assert len(parse(moved)) == 2


def test_deploy_broker_yaml_is_current_and_valid() -> None:
    from pathlib import Path

    import yaml

    for name, expected in m.bundle_files().items():
        path = Path(__file__).resolve().parents[2] / "deploy" / name
        assert path.read_text() == expected, f"deploy/{name} is stale: python -m submariner.cli.manifests deploy"
        for obj in yaml.safe_load_all(path.read_text()):
            validate(obj)
