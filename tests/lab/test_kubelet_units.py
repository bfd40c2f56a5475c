"""Pure parts of the lab kubelet, kube-proxy and image map (no root, no namespaces)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from submariner.lab import images
from submariner.lab.kubelet import (
    Container,
    PodIPAM,
    PodRuntime,
    expand_vars,
    pod_status,
    readiness_probe,
    rewrite_paths,
)
from submariner.lab.kubeproxy import endpoint_chain, external_chain, render, service_chain
from submariner.lab.programs import whereami

# ------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("image", ["cr7258/whereami:v1", "docker.io/cr7258/whereami", "reg.local:5000/x/whereami-ng:2",
                                   "whereami@sha256:abc"])
def test_whereami_images(image: str) -> None:
    r = images.resolve(image)
    assert r.ok and r.program is not None and r.program.name == "whereami" and not r.program.takes_args


@pytest.mark.parametrize("image", ["cr7258/nettool:v1", "busybox", "docker.io/library/busybox:1.36",
                                   "nicolaka/netshoot:latest", "me/nettool-plus"])
def test_client_images_sleep(image: str) -> None:
    r = images.resolve(image)
    assert r.program is not None and r.program.name == "nettool"


@pytest.mark.parametrize("image", ["registry.k8s.io/coredns/coredns:v1.10.1", "coredns/coredns",
                                   "quay.io/submariner/lighthouse-coredns:0.14.0"])
def test_coredns_images_run_lighthouse_dns(image: str) -> None:
    r = images.resolve(image)
    assert r.program is not None and r.program.name == "lighthouse-dns"
    assert r.program.takes_args and r.program.reload_on_config_change


@pytest.mark.parametrize(("image", "entry"), [
    ("quay.io/submariner/lighthouse-agent:0.14.0", "lighthouse-agent"),
    ("quay.io/submariner/submariner-gateway:0.14.0", "submariner-gateway"),
    ("quay.io/submariner/submariner-route-agent:0.14.0", "submariner-routeagent"),
    ("quay.io/submariner/submariner-globalnet:0.14.0", "submariner-globalnet"),
])
def test_component_images_map_to_entry_points(image: str, entry: str) -> None:
    r = images.resolve(image)
    if r.ok:
        assert r.program is not None and r.program.name == entry and r.program.argv[1].endswith(entry)
    else:
        assert r.reason == images.CREATE_CONTAINER_ERROR and f"entry point {entry!r}" in r.message


def test_unsupported_and_unknown_images() -> None:
    op = images.resolve("quay.io/submariner/submariner-operator:0.14.0")
    assert not op.ok and op.reason == images.CREATE_CONTAINER_ERROR and "not supported" in op.message
    unknown = images.resolve("nginx:1.25")
    assert unknown.reason == images.ERR_IMAGE_PULL
    assert unknown.message.startswith("image nginx:1.25 is not a lab image (known: cr7258/whereami")


def test_repository_normalisation() -> None:
    assert images.repository("docker.io/library/busybox:1.36") == "busybox"
    assert images.repository("localhost:5000/x/whereami@sha256:00") == "x/whereami"
    assert images.repository("registry.k8s.io/coredns/coredns:v1.10.1") == "coredns/coredns"
    assert images.repository("Quay.io/Submariner/Lighthouse-Agent") == "submariner/lighthouse-agent"


def test_whereami_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"POD_NAME": "whereami-0", "NAMESPACE": "sample", "NODE_NAME": "c2-worker",
                 "POD_IP": "10.9.1.20", "CLUSTER_NAME": "c2"}.items():
        monkeypatch.setenv(k, v)

    class Transport:
        def get_extra_info(self, name: str) -> Any:
            return ("120.1.0.5", 40000) if name == "peername" else None

    req = make_mocked_request("GET", "/x", headers={"Host": "whereami-cs.sample"}, transport=Transport())
    doc = whereami.describe(req)
    assert doc["pod_name"] == "whereami-0" and doc["namespace"] == "sample" and doc["node_name"] == "c2-worker"
    assert doc["pod_ip"] == "10.9.1.20" and doc["host_header"] == "whereami-cs.sample"
    assert (doc["source_ip"], doc["source_port"]) == ("120.1.0.5", 40000) and doc["cluster_name"] == "c2"
    assert doc["pod_name_emoji"] == whereami.emoji_for("whereami-0") and doc["timestamp"].endswith("Z")
    json.dumps(doc)


# --------------------------------------------------------------------------------------- pod helpers


def test_rewrite_paths_one_pass_longest_first() -> None:
    mounts = [("/etc/coredns", "/s/vol/config"), ("/etc", "/s/vol/etc"),
              ("/var/run/secrets/kubernetes.io/serviceaccount", "/s/vol/sa")]
    assert rewrite_paths("-conf /etc/coredns/Corefile", mounts) == "-conf /s/vol/config/Corefile"
    assert rewrite_paths("--conf=/etc/coredns/Corefile", mounts) == "--conf=/s/vol/config/Corefile"
    assert rewrite_paths("/etc/corednsX", mounts) == "/s/vol/etc/corednsX"
    assert rewrite_paths("/foo/etc/coredns", mounts) == "/foo/etc/coredns"
    assert rewrite_paths("/etc", mounts) == "/s/vol/etc"
    assert rewrite_paths("/etc/", [("/etc/", "/s/e")]) == "/s/e/"
    assert rewrite_paths("/var/run/secrets/kubernetes.io/serviceaccount/token", mounts) == "/s/vol/sa/token"
    assert rewrite_paths("/s/vol/config", [("/s", "/x")]) == "/x/vol/config"
    assert rewrite_paths("anything", []) == "anything"


def test_expand_vars() -> None:
    env = {"A": "1", "B": "two"}
    assert expand_vars("$(A)-$(B)", env) == "1-two"
    assert expand_vars("$$(A) $(C)", env) == "$(A) $(C)"


def test_readiness_probe_forms() -> None:
    c: dict[str, Any] = {"ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]}
    assert readiness_probe(c, declared_ports=False) is None
    implicit = readiness_probe(c, declared_ports=True)
    assert implicit is not None and implicit.port == 8080 and implicit.path is None
    c["readinessProbe"] = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 3, "failureThreshold": 2}
    probe = readiness_probe(c, declared_ports=True)
    assert probe is not None and (probe.port, probe.path, probe.period, probe.failure_threshold) == (
        8080, "/ready", 3.0, 2)
    assert readiness_probe({"readinessProbe": {"tcpSocket": {"port": 9}}}, False) is not None
    assert readiness_probe({"ports": [{"containerPort": 53, "protocol": "UDP"}]}, True) is None


def test_ipam_skips_network_and_gateway_persists_and_rotates(tmp_path: Path) -> None:
    ipam = PodIPAM("10.8.1.0/29", tmp_path / "ipam")
    a = ipam.allocate("uid-a")
    assert a == "10.8.1.2" and ipam.allocate("uid-a") == a
    b = ipam.allocate("uid-b")
    assert b == "10.8.1.3"
    ipam.release("uid-a")
    again = PodIPAM("10.8.1.0/29", tmp_path / "ipam")  # a restarted agent: same files
    assert again.owners() == {"10.8.1.3": "uid-b"}
    c = again.allocate("uid-c")
    assert c == "10.8.1.4"  # continues after the last one handed out, not the just-freed .2
    for uid in ("d", "e", "f"):
        again.allocate(uid)
    held = set(again.owners())
    assert held == {"10.8.1.2", "10.8.1.3", "10.8.1.4", "10.8.1.5", "10.8.1.6"}
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.8.1.0/29") for ip in held)
    with pytest.raises(RuntimeError, match="exhausted"):
        again.allocate("g")


def _runtime(containers: list[Container]) -> PodRuntime:
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {}}
    return PodRuntime(key=("ns", "p"), uid="u", pod=pod, dir=Path("/nonexistent"), exec_netns="x", own_netns="x",
                      veth="v", ip="10.0.0.2", host_ip="198.18.0.2", containers=containers, init_containers=[])


def test_pod_status_image_pull_and_crash_loop() -> None:
    bad = Container("c", {}, False, images.resolve("nginx"))
    bad.waiting_reason, bad.waiting_message = images.IMAGE_PULL_BACKOFF, "image nginx is not a lab image"
    rt = _runtime([bad])
    st = pod_status(rt)
    assert st["phase"] == "Pending" and st["podIP"] == "10.0.0.2" and st["hostIP"] == "198.18.0.2"
    cs = st["containerStatuses"][0]
    assert cs["state"] == {"waiting": {"reason": "ImagePullBackOff", "message": "image nginx is not a lab image"}}
    ready = {c["type"]: c for c in st["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["message"] == "containers with unready status: [c]"
    assert pod_status(rt) == st  # stable: transition times only move on a change

    looping = Container("c", {}, False, images.resolve("busybox"), restart_count=2,
                        last_terminated={"exitCode": 1, "reason": "Error"}, waiting_reason="CrashLoopBackOff")
    st = pod_status(_runtime([looping]))
    assert st["phase"] == "Running" and st["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1


# ------------------------------------------------------------------------------------------ kube-proxy


def test_chain_names_match_kube_proxy() -> None:
    # well-known names on every kube-proxy node
    assert service_chain("kube-system/kube-dns:dns", "UDP") == "KUBE-SVC-TCOU7JCQXEZGVUNU"
    assert service_chain("kube-system/kube-dns:dns-tcp", "TCP") == "KUBE-SVC-ERIFXISQEP7F7OF4"
    assert service_chain("default/kubernetes:https", "TCP") == "KUBE-SVC-NPX46M4PTMTKRN6Y"
    assert external_chain("a/b:c", "TCP").startswith("KUBE-EXT-")
    assert len(endpoint_chain("a/b:c", "TCP", "10.0.0.1:80")) == 25


def _svc(name: str, ip: str, ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "sample"}, "spec": {"clusterIP": ip, "ports": ports, **spec}}


def _slice(svc: str, eps: list[tuple[str, bool | None]], port: int = 8080, name: str = "http",
           proto: str = "TCP") -> dict[str, Any]:
    endpoints = [{"addresses": [ip], **({"conditions": {"ready": r}} if r is not None else {})} for ip, r in eps]
    return {"metadata": {"name": f"{svc}-x", "namespace": "sample", "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": name, "port": port, "protocol": proto}], "endpoints": endpoints}


def test_render_clusterip_load_balancing_and_ready_only() -> None:
    svc = _svc("web", "10.99.0.5", [{"name": "http", "port": 80, "protocol": "TCP"}])
    sl = _slice("web", [("10.9.1.3", True), ("10.9.1.2", None), ("10.9.1.4", True), ("10.9.1.9", False)])
    out = render([svc], [sl], "10.9.0.0/16")
    chain = service_chain("sample/web:http", "TCP")
    text = out.text
    assert f'-A KUBE-SERVICES -m comment --comment "sample/web:http cluster IP" -m tcp -p tcp -d 10.99.0.5/32 ' \
           f"--dport 80 -j {chain}" in text
    assert "! -s 10.9.0.0/16 -j KUBE-MARK-MASQ" in text
    rules = [line for line in text.splitlines() if line.startswith(f"-A {chain} ") and "-> " in line]
    assert [r.split("-> ")[1].split('"')[0] for r in rules] == ["10.9.1.2:8080", "10.9.1.3:8080", "10.9.1.4:8080"]
    assert "--probability 0.3333333333" in rules[0] and "--probability 0.5000000000" in rules[1]
    assert "statistic" not in rules[2]
    assert "10.9.1.9" not in text  # not ready
    assert "-j DNAT --to-destination 10.9.1.2:8080" in text and "-s 10.9.1.2/32 -j KUBE-MARK-MASQ" in text
    assert text.index("-j KUBE-NODEPORTS") > text.index(f"-j {chain}")  # nodeports jump stays last
    assert render([svc], [sl], "10.9.0.0/16").text == render([svc], [dict(sl)], "10.9.0.0/16").text


def test_render_external_ips_nodeport_no_endpoints_headless_and_udp() -> None:
    ext = _svc("ext", "10.99.0.6", [{"name": "http", "port": 80, "nodePort": 30080}], type="NodePort",
               externalIPs=["120.2.0.253"])
    empty = _svc("empty", "10.99.0.7", [{"name": "http", "port": 80}])
    headless = _svc("hl", "None", [{"name": "http", "port": 80}])
    dns = _svc("dns", "10.99.0.10", [{"name": "dns", "port": 53, "protocol": "UDP"}])
    out = render([ext, empty, headless, dns],
                 [_slice("ext", [("10.9.1.2", True)]), _slice("hl", [("10.9.1.5", True)]),
                  _slice("dns", [("10.9.1.8", True)], port=53, name="dns", proto="UDP")])
    text = out.text
    ext_chain = external_chain("sample/ext:http", "TCP")
    assert f"-d 120.2.0.253/32 --dport 80 -j {ext_chain}" in text
    assert f"--dport 30080 -j {ext_chain}" in text
    assert f"-A {ext_chain} -j {service_chain('sample/ext:http', 'TCP')}" in text
    assert '"sample/empty:http has no endpoints"' in text and "-j REJECT" in text
    assert "10.9.1.5" not in text  # headless: DNS only, no rules
    assert "-m udp -p udp -j DNAT --to-destination 10.9.1.8:53" in text
    assert out.udp_backends == frozenset({("10.99.0.10", "10.9.1.8")})
    assert ext_chain in out.nat_chains and "KUBE-MARK-MASQ" in out.nat_chains
