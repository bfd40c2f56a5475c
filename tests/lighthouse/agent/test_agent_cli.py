"""`lighthouse-agent` configuration: flags, upstream's environment, broker-info, in-cluster credentials, and the
pure helpers behind names and slices (D1, D4, D8, D10). No servers: `build` does no network I/O."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from agenttest import B, endpoint, k8s_slice

from submariner.broker.api import labels as L
from submariner.broker.brokerinfo import BrokerInfo, write_file
from submariner.broker.sync import Op
from submariner.lighthouse.agent import cli
from submariner.lighthouse.agent.config import ConfigError
from submariner.lighthouse.agent.endpointslices import copied_labels, desired_slices
from submariner.lighthouse.agent.exports import Constituent
from submariner.lighthouse.agent.imports import looks_imported, to_local_import
from submariner.lighthouse.agent.naming import ServiceKey, choose_name

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: secret-token}}]
contexts: [{name: ctx, context: {cluster: c, user: u}}]
current-context: ctx
"""


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    p = tmp_path / "kubeconfig"
    p.write_text(KUBECONFIG)
    return p


def test_flags_and_broker_kubeconfig(kubeconfig: Path) -> None:
    config, local, _broker = cli.build(["--kubeconfig", str(kubeconfig), "--cluster-id", "c1", "--broker-kubeconfig",
                                       str(kubeconfig), "--broker-namespace", B, "--globalnet",
                                       "--heartbeat-ttl", "2m", "--namespace", "subm"], env={})
    assert (config.cluster_id, config.broker_namespace, config.namespace) == ("c1", B, "subm")
    assert config.globalnet and config.heartbeat_ttl == 120 and config.effective_heartbeat_interval == 10
    assert local.host == "https://127.0.0.1:1"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="--broker-namespace"):
        cli.build(["--kubeconfig", str(kubeconfig), "--cluster-id", "c1", "--broker-kubeconfig", str(kubeconfig)],
                  env={})


def test_cluster_id_is_validated(kubeconfig: Path) -> None:
    with pytest.raises(ConfigError, match=r"cluster ID 'Bad\.id' is not a valid DNS-1123 label"):
        cli.build(["--kubeconfig", str(kubeconfig), "--cluster-id", "Bad.id", "--broker-kubeconfig",
                   str(kubeconfig), "--broker-namespace", B], env={})
    with pytest.raises(ConfigError, match="no cluster ID"):
        cli.build(["--kubeconfig", str(kubeconfig)], env={})


def test_upstream_environment_in_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("pod-token")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("SUBMARINER_SERVICEACCOUNT_DIR", str(sa))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    env = {
        "SUBMARINER_CLUSTERID": "east", "SUBMARINER_NAMESPACE": "submariner-operator",
        "BROKER_K8S_APISERVER": "172.18.0.4:6443", "BROKER_K8S_APISERVERTOKEN": "broker-token",
        "BROKER_K8S_REMOTENAMESPACE": B, "BROKER_K8S_CA": base64.b64encode(b"not-used-when-insecure").decode(),
        "BROKER_K8S_INSECURE": "true", "SUBMARINER_GLOBALNET_ENABLED": "true",
        "SUBMARINER_CLUSTERSET_IP_CIDR": "243.0.0.0/20", "SUBMARINER_CLUSTERSET_IP_ENABLED": "true",
    }
    config, local, broker = cli.build([], env=env)
    assert config.cluster_id == "east" and config.broker_namespace == B and config.globalnet
    assert config.clusterset_ip_cidr == "243.0.0.0/20" and config.clusterset_ip_enabled
    assert local.name == "in-cluster"
    assert broker.host == "https://172.18.0.4:6443"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="BROKER_K8S_APISERVERTOKEN"):
        cli.build([], env={**env, "BROKER_K8S_APISERVERTOKEN": ""})


def test_broker_info_file(tmp_path: Path, kubeconfig: Path) -> None:
    path = tmp_path / "broker-info.subm"
    write_file(path, BrokerInfo(
        broker_url="https://127.0.0.1:6443",
        client_token={"data": {"token": base64.b64encode(b"t").decode(),
                               "namespace": base64.b64encode(B.encode()).decode()}},
        ipsec_psk=None, components=["service-discovery"]))
    config, _, broker = cli.build(["--kubeconfig", str(kubeconfig), "--cluster-id", "c1", "--broker-info", str(path)],
                                  env={})
    assert config.broker_namespace == B and broker.name == "broker"
    with pytest.raises(ConfigError, match="cannot use broker info"):
        cli.build(["--kubeconfig", str(kubeconfig), "--cluster-id", "c1", "--broker-info", str(tmp_path / "nope")],
                  env={})


def test_main_reports_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--cluster-id", "UPPER", "--broker-kubeconfig", "/nonexistent", "--broker-namespace", B])
    assert e.value.code == 2
    assert "lighthouse-agent:" in capsys.readouterr().err


# -- pure helpers ----------------------------------------------------------------------------------------------


def test_d1_choose_name() -> None:
    owners = {"a-b-c": ServiceKey("c", "a-b")}
    assert choose_name("a-b-c", ServiceKey("c", "a-b"), owners.get) == "a-b-c"
    other = choose_name("a-b-c", ServiceKey("b-c", "a"), owners.get)
    assert other.startswith("a-b-c-") and len(other) == len("a-b-c-") + 8


def test_d4_label_copy() -> None:
    kept = copied_labels({"app.kubernetes.io/name": "x", "service.kubernetes.io/headless": "", "team": "a",
                          "kubernetes.io/service-name": "x", "endpointslice.kubernetes.io/managed-by": "k8s",
                          L.CLUSTER_ID: "c9", L.ORIGINATING_NAMESPACE: "n"})
    assert kept == {"app.kubernetes.io/name": "x", "service.kubernetes.io/headless": "", "team": "a"}


def test_d10_dual_stack_one_slice_per_family() -> None:
    c = Constituent("ClusterSetIP", (("http", "TCP", 80, ""),), ("10.0.0.1", "fd00::1"), "", None, False, None, 1,
                    False)
    out = desired_slices(ServiceKey("ns", "svc"), "c1", c, [k8s_slice("ns", "svc", "s", [endpoint("10.1.1.1")])])
    assert sorted((s["addressType"], s["endpoints"][0]["addresses"][0]) for s in out) == [
        ("IPv4", "10.0.0.1"), ("IPv6", "fd00::1")]
    assert len({s["metadata"]["name"] for s in out}) == 2


def test_d8_broker_aggregates_are_never_local_imports() -> None:
    agg = {"metadata": {"name": "svc-ns", "namespace": "ns", "annotations": {
        L.SERVICE_NAME: "svc", L.SOURCE_NAMESPACE: "ns", "timestamp.submariner.io/c1": "1"}}}
    assert not looks_imported(agg, ["submariner-operator", B]), "co-located broker aggregate (D8)"
    imported, _ = to_local_import(agg, 0, Op.CREATE)
    assert imported is not None and imported["metadata"] == {"name": "svc", "namespace": "ns", "annotations": {
        "timestamp.submariner.io/c1": "1"}}
    assert looks_imported(imported, ["submariner-operator", B])
    assert not looks_imported({"metadata": {"name": "x", "namespace": "ns"}}, []), "a user's own ServiceImport"
