"""Standalone broker walkthrough: everything `subctl deploy-broker` needs, on a broker with no cluster.

Starts `submariner-broker serve`, installs the CRDs with the real kubectl, creates the broker namespace
and a cluster-scoped token the way deploy-broker does, shows that token confined by RBAC, writes a
broker-info.subm, survives `kill -9`, and tears everything down. Every step prints what it checked.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from submariner.broker import brokerinfo

BIN = Path(sys.executable).parent
BROKER_NS = "submariner-k8s-broker"


def step(ok: bool, text: str) -> None:
    print(f" {'✓' if ok else '✗'} {text}", flush=True)
    if not ok:
        raise SystemExit(1)


def start(data: Path, kubeconfig: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [str(BIN / "submariner-broker"), "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
         "--write-kubeconfig", str(kubeconfig), "--context", "broker"],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    step("serving" in line, f"broker API server started: {line.strip()}")
    return proc


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="subm-demo-"))
    data, kubeconfig = work / "data", work / "kubeconfig"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubectl = [str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig), "--cache-dir", str(work / "cache")]
    proc = start(data, kubeconfig, port)
    try:
        crds = subprocess.run([str(BIN / "submariner-broker"), "crds"], capture_output=True, text=True, check=True)
        applied = subprocess.run([*kubectl, "apply", "-f", "-"], input=crds.stdout, capture_output=True, text=True)
        step(applied.returncode == 0, f"kubectl apply of {crds.stdout.count('kind: CustomResourceDefinition')} CRDs")
        listed = subprocess.run([*kubectl, "get", "crds"], capture_output=True, text=True, check=True).stdout
        print("   " + "\n   ".join(listed.splitlines()))

        api = config.new_client_from_config(config_file=str(kubeconfig), context="broker")
        core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=BROKER_NS)))
        core.create_namespaced_service_account(BROKER_NS, client.V1ServiceAccount(
            metadata=client.V1ObjectMeta(name="submariner-k8s-broker-client")))
        rbac.create_namespaced_role(BROKER_NS, client.V1Role(
            metadata=client.V1ObjectMeta(name="submariner-k8s-broker-cluster"),
            rules=[client.V1PolicyRule(api_groups=["submariner.io", "multicluster.x-k8s.io", "discovery.k8s.io"],
                                       resources=["*"], verbs=["*"])]))
        rbac.create_namespaced_role_binding(BROKER_NS, client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="submariner-k8s-broker-cluster"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                      name="submariner-k8s-broker-cluster"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="submariner-k8s-broker-client",
                                           namespace=BROKER_NS)]))
        secret = core.create_namespaced_secret(BROKER_NS, client.V1Secret(
            metadata=client.V1ObjectMeta(
                generate_name="submariner-k8s-broker-admin-token-",
                annotations={"kubernetes.io/service-account.name": "submariner-k8s-broker-client"}),
            type="kubernetes.io/service-account-token"))
        token = base64.b64decode(secret.data["token"]).decode()
        step(bool(token), f"broker namespace {BROKER_NS}, ServiceAccount, Role and token Secret {secret.metadata.name}")

        scoped_cfg = client.Configuration()
        scoped_cfg.host = api.configuration.host
        scoped_cfg.ssl_ca_cert = api.configuration.ssl_ca_cert
        scoped_cfg.api_key = {"authorization": f"Bearer {token}"}
        custom = client.CustomObjectsApi(client.ApiClient(scoped_cfg))
        custom.create_namespaced_custom_object("submariner.io", "v1", BROKER_NS, "clusters", {
            "apiVersion": "submariner.io/v1", "kind": "Cluster", "metadata": {"name": "c1"},
            "spec": {"cluster_id": "c1", "color_codes": ["blue"], "service_cidr": ["10.88.0.0/16"],
                     "cluster_cidr": ["10.8.0.0/16"], "global_cidr": []}})
        step(True, "the broker token creates a Cluster in the broker namespace")
        try:
            client.CoreV1Api(client.ApiClient(scoped_cfg)).list_namespaced_secret(BROKER_NS)
            step(False, "the broker token must not read Secrets")
        except ApiException as exc:
            step(exc.status == 403, f"the broker token reading Secrets gets {exc.status} Forbidden")

        info = brokerinfo.BrokerInfo(
            broker_url=api.configuration.host, client_token=api.sanitize_for_serialization(secret),
            ipsec_psk=brokerinfo.new_psk_secret(), service_discovery=True,
            components=["service-discovery", "connectivity"])
        path = work / "broker-info.subm"
        brokerinfo.write_file(path, info)
        back = brokerinfo.read_file(path)
        mode = oct(path.stat().st_mode & 0o777)
        step(back.broker_url == info.broker_url, f"broker-info.subm written ({mode}), decodes to {back.broker_url}")

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc = start(data, kubeconfig, port)
        api = config.new_client_from_config(config_file=str(kubeconfig), context="broker")
        clusters = client.CustomObjectsApi(api).list_namespaced_custom_object(
            "submariner.io", "v1", BROKER_NS, "clusters")["items"]
        step([c["metadata"]["name"] for c in clusters] == ["c1"], "after kill -9 and restart the Cluster is there")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
        print(f" ✓ stopped the broker (pid {proc.pid}) and removed {work}")


if __name__ == "__main__":
    main()
