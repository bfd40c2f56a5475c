"""recover-broker-info rebuilds the file from a joined cluster; a newer deployment refuses an older subctl."""

from __future__ import annotations

from collections.abc import Callable

from subctl_harness import Env, Result

from submariner.broker import brokerinfo
from submariner.cli.resources import SUBMARINERS

Run = Callable[..., Result]


def test_recover_broker_info_and_version_skew(env3: Env, subctl: Run) -> None:
    kc = env3.kubeconfig
    assert subctl("--context", "test-broker", "deploy-broker", cwd=env3.workdir, kubeconfig=kc).code == 0
    assert subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "c1").code == 0
    original = brokerinfo.read_file(env3.workdir / "broker-info.subm")
    (env3.workdir / "broker-info.subm").unlink()

    r = subctl("recover-broker-info", "--context", "test-c2")
    assert r.code == 1 and "this cluster has no Submariner or ServiceDiscovery resource" in r.err
    r = subctl("recover-broker-info", "--context", "test-c1")
    assert r.code == 0, r.err
    assert " ⚠ Broker not found. Trying to connect to the Broker installed on a different cluster\n" in r.err
    recovered = brokerinfo.read_file(env3.workdir / "broker-info.subm")
    assert recovered.token == original.token and recovered.psk == original.psk
    assert recovered.broker_url == original.broker_url and recovered.broker_namespace == "submariner-k8s-broker"
    assert sorted(recovered.components) == ["connectivity", "service-discovery"]
    # The recovered file joins another cluster.
    r = subctl("--context", "test-c2", "join", "broker-info.subm", "--clusterid", "c2", "--clustercidr", "10.9.0.0/16")
    assert r.code == 0, r.err

    c1 = env3.kube("c1")
    cr = c1.resource(SUBMARINERS).get("submariner-operator", "submariner")
    cr["spec"]["version"] = "0.20.1"
    c1.resource(SUBMARINERS).update(cr)
    skew = 'the subctl version "v0.19.0" is older than the deployed Submariner version "0.20.1". ' \
           "Please upgrade your subctl version"
    r = subctl("show", "networks", "--context", "test-c1")
    assert r.code == 1 and skew in r.err
    r = subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "c1")
    assert r.code == 1 and f" ✗ {skew[0].upper()}{skew[1:]}\n" in r.err
