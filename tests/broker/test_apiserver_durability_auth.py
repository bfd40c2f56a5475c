"""Acknowledged writes survive SIGKILL; tokens are authenticated and confined by RBAC."""

from __future__ import annotations

import base64
import ssl
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from apiservers import RunningServer

BROKER_NS = "submariner-k8s-broker"


def test_acknowledged_writes_survive_sigkill(api_server: RunningServer) -> None:
    core = client.CoreV1Api(api_server.api_client())
    acknowledged = []
    for i in range(300):
        cm = core.create_namespaced_config_map("default", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=f"d{i}"), data={"i": str(i)}))
        acknowledged.append((cm.metadata.name, cm.metadata.resource_version))
    last_rv = int(acknowledged[-1][1])
    api_server.kill()
    api_server.start()
    core = client.CoreV1Api(api_server.api_client())
    stored = {c.metadata.name: c for c in core.list_namespaced_config_map("default").items}
    assert all(name in stored and stored[name].metadata.resource_version == rv for name, rv in acknowledged)
    # resourceVersions stay monotonic across the restart.
    after = core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="z")))
    assert int(after.metadata.resource_version) > last_rv


def test_cluster_ips_survive_restart(api_server: RunningServer) -> None:
    core = client.CoreV1Api(api_server.api_client())
    spec = client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)])
    first = core.create_namespaced_service("default", client.V1Service(
        metadata=client.V1ObjectMeta(name="a"), spec=spec)).spec.cluster_ip
    api_server.kill()
    api_server.start()
    core = client.CoreV1Api(api_server.api_client())
    with pytest.raises(ApiException) as taken:
        core.create_namespaced_service("default", client.V1Service(
            metadata=client.V1ObjectMeta(name="b"), spec=client.V1ServiceSpec(
                cluster_ip=first, ports=[client.V1ServicePort(port=80)])))
    assert taken.value.status == 422


def _broker_token(core: client.CoreV1Api, rbac: client.RbacAuthorizationV1Api) -> str:
    """What `subctl deploy-broker` sets up: a ServiceAccount bound to a Role in the broker namespace."""
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=BROKER_NS)))
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="other")))
    core.create_namespaced_service_account(BROKER_NS, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="cluster-c1")))
    rbac.create_namespaced_role(BROKER_NS, client.V1Role(
        metadata=client.V1ObjectMeta(name="submariner-k8s-broker-cluster"),
        rules=[client.V1PolicyRule(api_groups=["", "submariner.io", "discovery.k8s.io", "multicluster.x-k8s.io"],
                                   resources=["endpoints", "clusters", "endpointslices", "serviceimports",
                                              "configmaps"],
                                   verbs=["create", "get", "list", "watch", "patch", "update", "delete"])]))
    rbac.create_namespaced_role_binding(BROKER_NS, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="cluster-c1-submariner-k8s-broker-cluster"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                  name="submariner-k8s-broker-cluster"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="cluster-c1", namespace=BROKER_NS)]))
    secret = core.create_namespaced_secret(BROKER_NS, client.V1Secret(
        metadata=client.V1ObjectMeta(generate_name="cluster-c1-token-",
                                     annotations={"kubernetes.io/service-account.name": "cluster-c1"}),
        type="kubernetes.io/service-account-token"))
    assert set(secret.data) >= {"token", "ca.crt", "namespace"}
    assert base64.b64decode(secret.data["namespace"]).decode() == BROKER_NS
    return base64.b64decode(secret.data["token"]).decode()


def _client_with_token(server: RunningServer, token: str) -> client.ApiClient:
    admin = server.api_client()
    cfg = client.Configuration()
    cfg.host = server.url
    cfg.ssl_ca_cert = admin.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)


def test_broker_scoped_token_is_confined(api_server: RunningServer) -> None:
    admin = api_server.api_client()
    token = _broker_token(client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin))
    scoped = client.CoreV1Api(_client_with_token(api_server, token))

    # 2xx in its own namespace on what the Role grants.
    scoped.create_namespaced_config_map(BROKER_NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="ok")))
    assert [c.metadata.name for c in scoped.list_namespaced_config_map(BROKER_NS).items] == ["ok"]

    denied: list[tuple[str, Any]] = [
        ("secrets in own namespace", lambda: scoped.list_namespaced_secret(BROKER_NS)),
        ("read a secret", lambda: scoped.read_namespaced_secret("x", BROKER_NS)),
        ("other namespace", lambda: scoped.list_namespaced_config_map("other")),
        ("all namespaces", lambda: scoped.list_config_map_for_all_namespaces()),
        ("cluster scope", lambda: scoped.list_namespace()),
        ("verb not granted", lambda: scoped.delete_collection_namespaced_config_map(BROKER_NS)),
    ]
    for what, call in denied:
        with pytest.raises(ApiException) as exc:
            call()
        assert exc.value.status == 403, what
        assert "forbidden" in exc.value.body, what


def test_unknown_token_is_401(api_server: RunningServer) -> None:
    bad = client.CoreV1Api(_client_with_token(api_server, "not-a-token"))
    with pytest.raises(ApiException) as exc:
        bad.list_namespace()
    assert exc.value.status == 401


def test_tls_uses_generated_ca(api_server: RunningServer) -> None:
    admin = api_server.api_client()
    ctx = ssl.create_default_context(cafile=admin.configuration.ssl_ca_cert)
    with urllib.request.urlopen(f"{api_server.url}/healthz", context=ctx, timeout=5) as resp:
        assert resp.read() == b"ok"
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{api_server.url}/healthz", context=ssl.create_default_context(), timeout=5)
