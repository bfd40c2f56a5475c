"""gather writes the objects per cluster, with tokens and the PSK redacted unless asked for."""

from __future__ import annotations

from collections.abc import Callable

import yaml
from subctl_harness import Env, Result

Run = Callable[..., Result]


def test_gather_resources_redacted(env3: Env, subctl: Run) -> None:
    kc = env3.kubeconfig
    assert subctl("--context", "test-broker", "deploy-broker", cwd=env3.workdir, kubeconfig=kc).code == 0
    assert subctl("--context", "test-c1", "join", "broker-info.subm", "--clusterid", "c1").code == 0
    r = subctl("gather", "--type", "resources", "--dir", "out")
    assert r.code == 0, r.err
    assert 'Cluster "test-c1"\nFiles are stored under directory "out/test-c1"\n' in r.out
    assert " ✓ Gathering connectivity resources\n" in r.err
    c1 = env3.workdir / "out" / "test-c1"
    sub = yaml.safe_load((c1 / "submariners.yaml").read_text())["items"][0]
    assert sub["spec"]["clusterID"] == "c1"
    assert sub["spec"]["brokerK8sApiServerToken"] == "##redacted##" and sub["spec"]["ceIPSecPSK"] == "##redacted##"
    ds = yaml.safe_load((c1 / "daemonsets.yaml").read_text())["items"]
    gw_env = {e["name"]: e.get("value") for d in ds for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert gw_env["CE_IPSEC_PSK"] == "##redacted##"
    secrets = yaml.safe_load((env3.workdir / "out" / "test-broker" / "broker-secrets.yaml").read_text())["items"]
    assert secrets and all(set(s["data"].values()) == {"##redacted##"} for s in secrets if s.get("data"))
    text = "".join(p.read_text() for p in (env3.workdir / "out").rglob("*.yaml"))
    from submariner.broker import brokerinfo

    assert brokerinfo.read_file(env3.workdir / "broker-info.subm").token not in text

    r = subctl("gather", "--type", "resources", "--module", "connectivity", "--dir", "full", "--context", "test-c1",
               "--include-sensitive-data")
    assert r.code == 0
    sub = yaml.safe_load((env3.workdir / "full" / "test-c1" / "submariners.yaml").read_text())["items"][0]
    assert sub["spec"]["ceIPSecPSK"] != "##redacted##"
    r = subctl("gather", "--type", "pictures")
    assert r.code == 1 and ' ✗ Invalid type "pictures": use any of logs, resources\n' in r.err
