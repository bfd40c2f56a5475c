"""Cluster DNS follows the ConfigMap `kube-system/coredns`, as Submariner's operator relies on when it
prepends the `clusterset.local` forward block: an edit reaches the running DNS pods without a restart (root)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from labharness import Lab, kind_config, lab_instance, needs_root

pytestmark = [pytest.mark.root, needs_root]

NETTOOL = """\
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  containers:
  - name: client
    image: cr7258/nettool:v1
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with lab_instance(tmp_path) as lab:
        yield lab
    assert not lab.leftovers(), f"left behind: {lab.leftovers()}"


def test_edit_of_the_coredns_configmap_is_picked_up(lab: Lab) -> None:
    lab.create(kind_config("dnsre", pod="10.9.0.0/16", service="10.99.0.0/16"))
    lab.kubectl("dnsre", "apply", "-f", "-", input=NETTOOL)
    lab.kubectl("dnsre", "wait", "--for=condition=Ready", "pod/client", "--timeout=60s")

    def lookup() -> str:
        return lab.sublab("exec", "--context", "lab-dnsre", "client", "--", "dig", "+short", "+time=2",
                          "+tries=1", "custom.example.test", check=False).stdout.strip()

    assert "198.51.100.7" not in lookup()  # before the edit the name goes upstream (unreachable in the lab)
    corefile = json.loads(lab.kubectl("dnsre", "-n", "kube-system", "get", "configmap", "coredns", "-o",
                                      "json").stdout)["data"]["Corefile"]
    # What an operator does: prepend a server block (here a `hosts` zone) to the kind Corefile.
    edited = "example.test:53 {\n    hosts {\n        198.51.100.7 custom.example.test\n    }\n}\n" + corefile
    patch = json.dumps({"data": {"Corefile": edited}})
    lab.kubectl("dnsre", "-n", "kube-system", "patch", "configmap", "coredns", "--type=merge", "-p", patch)
    assert lab.wait_for("the edited Corefile answers", lambda: lookup() == "198.51.100.7", timeout=60)
    # The cluster's own names still resolve through the rest of the Corefile.
    svc = lab.sublab("exec", "--context", "lab-dnsre", "client", "--", "dig", "+short",
                     "kubernetes.default.svc.cluster.local").stdout.split()
    assert len(svc) == 1 and svc[0].startswith("10.99.")
    lab.sublab("delete", "cluster", "--name", "dnsre")
