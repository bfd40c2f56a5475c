"""The probes subctl ships into pods (`netprobe`), the latency report and the firewall checks' pure parts."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from submariner.broker.kube.fake import FakeCluster
from submariner.cli import firewall, netprobe
from submariner.cli.benchmark import format_latency
from submariner.cli.errors import CliError
from submariner.cli.testpods import nettest_image, pod_manifest


def ipv4(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, socket.inet_aton(src),
                         socket.inet_aton(dst))
    return header + l4


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(sport: int, dport: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)


def test_matches_the_tagged_udp_probe_only() -> None:
    probe = ipv4("198.18.0.5", "198.18.0.4", 17, udp(9898, 4500, b"1a2b3c4d\n"))
    assert netprobe.matches(probe, proto="udp", ports={4500}, tag=b"1a2b3c4d")
    assert not netprobe.matches(probe, proto="udp", ports={4500}, tag=b"ffffffff")  # another run's tag
    assert not netprobe.matches(probe, proto="udp", ports={4490}, tag=b"1a2b3c4d")
    assert not netprobe.matches(probe, proto="tcp-syn", ports={4500})
    assert netprobe.summary(probe, "eth0") == "eth0 IP 198.18.0.5.9898 > 198.18.0.4.4500: UDP, length 9: 1a2b3c4d."
    assert not netprobe.matches(probe[:24], proto="udp", ports={4500})  # truncated: no UDP header


def test_matches_tcp_syns_to_the_remote_address() -> None:
    syn = ipv4("10.8.0.3", "10.99.0.0", 6, tcp(40000, 8080, netprobe.TCP_SYN))
    syn_ack = ipv4("10.8.0.3", "10.99.0.0", 6, tcp(40000, 8080, netprobe.TCP_SYN | netprobe.TCP_ACK))
    assert netprobe.matches(syn, proto="tcp-syn", ports={8080}, dst="10.99.0.0")
    assert not netprobe.matches(syn, proto="tcp-syn", ports={8080}, dst="10.99.0.1")
    assert not netprobe.matches(syn_ack, proto="tcp-syn", ports={8080})
    assert netprobe.summary(syn, "vx-submariner") == "vx-submariner IP 10.8.0.3.40000 > 10.99.0.0.8080: Flags [S]"


@given(st.binary(max_size=80))
def test_describe_never_raises_on_garbage(data: bytes) -> None:
    netprobe.describe(data)
    netprobe.matches(data, proto="udp", ports=set(), tag=b"x")


def test_latency_stats_and_netperf_csv_round_trip_through_the_report() -> None:
    stats = netprobe.latency_stats([50.4, 60.0, 70.2, 100.9], elapsed=0.0005)
    assert stats[0] == 50.4 and stats[2] == 100.9 and stats[1] == pytest.approx(70.375)
    assert stats[3] == pytest.approx(18.963, abs=0.001) and stats[4] == pytest.approx(8000.0)
    report = format_latency(netprobe.netperf_csv(stats, "10.9.0.7"))
    assert report == ("Minimum Latency Microseconds:\t50\nMean Latency Microseconds:\t70.38\n"
                      "Maximum Latency Microseconds:\t101\nStddev Latency Microseconds:\t18.96\n"
                      "Transaction Rate Tran/s:\t8000.000")
    with pytest.raises(ValueError):
        netprobe.latency_stats([], 1.0)


def test_format_latency_reads_real_netperf_output() -> None:
    out = ("MIGRATED TCP REQUEST/RESPONSE TEST from 0.0.0.0 (0.0.0.0) port 0 AF_INET to 10.2.0.5 () port 0 AF_INET "
           ": first burst 0\nMinimum Latency Microseconds,Mean Latency Microseconds,Maximum Latency Microseconds,"
           "Stddev Latency Microseconds,Transaction Rate Tran/s\n50,79.27,1251,16.47,12599.844\n")
    assert format_latency(out).splitlines()[0] == "Minimum Latency Microseconds:\t50"
    assert format_latency(out).splitlines()[-1] == "Transaction Rate Tran/s:\t12599.844"
    with pytest.raises(CliError):
        format_latency("netperf: command not found\n")


def test_dns_query_and_verdict_agree_with_dnspython() -> None:
    import dns.flags
    import dns.message
    import dns.rcode

    wire = netprobe.dns_query_wire("x.ns.svc.clusterset.local", 0x1234)
    query = dns.message.from_wire(wire)
    assert str(query.question[0]) == "x.ns.svc.clusterset.local. IN A" and query.id == 0x1234
    reply = dns.message.make_response(query)
    reply.set_rcode(dns.rcode.NXDOMAIN)
    assert netprobe.dns_verdict(reply.to_wire(), 0x1234) == (3, False)
    reply.flags |= dns.flags.AA
    assert netprobe.dns_verdict(reply.to_wire(), 0x1234) == (3, True)
    with pytest.raises(ValueError):
        netprobe.dns_verdict(reply.to_wire(), 0x4321)  # another query's answer
    with pytest.raises(ValueError):
        netprobe.dns_verdict(wire, 0x1234)  # a query, not a reply


def test_bootstrap_runs_the_shipped_file() -> None:
    argv = netprobe.bootstrap()
    assert argv[:2] == ["python3", "-c"] and len(argv[2]) < 7000  # pods/exec passes it in the URL
    result = subprocess.run([sys.executable, "-c", argv[2], "rr-client", "--help"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0 and "--duration" in result.stdout


# -- the firewall checks' decisions -----------------------------------------------------------------------


def _endpoint(cluster_id: str, hostname: str, backend: str = "vxlan", config: dict[str, str] | None = None) -> dict:
    return {"metadata": {"name": f"{cluster_id}-ep"}, "spec": {
        "cluster_id": cluster_id, "hostname": hostname, "backend": backend, "subnets": ["10.99.0.0/16"],
        "private_ip": "198.18.0.4", "public_ip": "203.0.113.4", "nat_enabled": False,
        "backend_config": config if config is not None else {"udp-port": "4500", "natt-discovery-port": "4490"}}}


def test_target_ports_come_from_the_endpoint() -> None:
    side = firewall.Side(FakeCluster(), "c1", {"spec": {"clusterID": "c1", "ceIPSecNATTPort": 4600}})
    assert firewall.target_port(side, _endpoint("c1", "n"), nat_discovery=False) == 4500
    assert firewall.target_port(side, _endpoint("c1", "n"), nat_discovery=True) == 4490
    assert firewall.target_port(side, _endpoint("c1", "n", config={}), nat_discovery=False) == 4600
    with pytest.raises(CliError, match='cable driver "ovn"'):
        firewall.target_port(side, _endpoint("c1", "n", backend="ovn"), nat_discovery=False)


def test_gateway_ip_is_what_the_remote_gateway_uses() -> None:
    from submariner.cli.resources import GATEWAYS

    kube = FakeCluster()
    conn = {"status": "connected", "endpoint": _endpoint("c1", "c1-worker")["spec"]}
    gw = kube.resource(GATEWAYS).create({"apiVersion": "submariner.io/v1", "kind": "Gateway", "metadata": {
        "name": "c2-worker", "namespace": "submariner-operator"}})
    gw["status"] = {"haStatus": "active", "connections": [conn]}
    kube.resource(GATEWAYS).update_status(gw)
    remote = firewall.Side(kube, "c2", {"spec": {"clusterID": "c2"}})
    assert firewall.gateway_ip(remote, "c1", "submariner-operator") == "198.18.0.4"
    conn["usingIP"] = "198.18.0.44"
    gw = kube.resource(GATEWAYS).get("submariner-operator", "c2-worker")
    gw["status"]["connections"] = [conn]
    kube.resource(GATEWAYS).update_status(gw)
    assert firewall.gateway_ip(remote, "c1", "submariner-operator") == "198.18.0.44"
    with pytest.raises(CliError, match='does not have an active connection to cluster "c3"'):
        firewall.gateway_ip(remote, "c3", "submariner-operator")


def test_probe_pods() -> None:
    assert nettest_image(None) == "quay.io/submariner/nettest:0.19.0"
    assert nettest_image({"spec": {"repository": "reg.local/sm/", "version": "v0.18.1"}}) == \
        "reg.local/sm/nettest:0.18.1"
    assert nettest_image({"spec": {"imageOverrides": {"submariner-nettest": "x/y:z"}}}) == "x/y:z"
    sniffer = pod_manifest("s", "ns", "img", host_network=True, node="c1-worker")
    assert sniffer["spec"]["nodeName"] == "c1-worker" and sniffer["spec"]["hostNetwork"] is True
    client = pod_manifest("c", "ns", "img", host_network=False)
    terms = client["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "submariner.io/gateway", "operator": "DoesNotExist"}]


# -- the probes on a real kernel, in a throw-away namespace ------------------------------------------------


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    name = f"subm-np-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _probe(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, netprobe.__file__, *args]


@pytest.mark.root
def test_sniffer_sees_the_tag_and_rr_measures(netns: str) -> None:
    sniffer = subprocess.Popen(_probe(netns, "sniff", "--iface", "lo", "--dport", "4500", "--tag", "c0ffee01",
                                      "--timeout", "10"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = time.monotonic()
        while sniffer.poll() is None and time.monotonic() - started < 8:
            subprocess.run(_probe(netns, "send-udp", "--to", "127.0.0.1", "--port", "4500", "--sport", "9898",
                                  "--tag", "c0ffee01", "--duration", "0.5"), check=True, capture_output=True)
        out, err = sniffer.communicate(timeout=15)
    finally:
        if sniffer.poll() is None:
            sniffer.kill()
    assert sniffer.returncode == 0, err
    assert out.startswith("lo IP 127.0.0.1.9898 > 127.0.0.1.4500: UDP, length 9: c0ffee01."), out

    # nothing tagged arrives: exit 1 after the timeout
    quiet = subprocess.run(_probe(netns, "sniff", "--iface", "lo", "--dport", "4500", "--tag", "x", "--timeout", "0.5"),
                           capture_output=True, text=True, timeout=15)
    assert quiet.returncode == 1 and "0 packets captured" in quiet.stderr

    server = subprocess.Popen(_probe(netns, "rr-server", "--once", "--port", "12865", "--timeout", "15"))
    try:
        rr = subprocess.run(_probe(netns, "rr-client", "--host", "127.0.0.1", "--port", "12865", "--duration", "0.5"),
                            capture_output=True, text=True, timeout=30)
        server.wait(timeout=10)  # --once: it ends with the client's connection
    finally:
        if server.poll() is None:
            server.kill()
    assert rr.returncode == 0, rr.stderr
    report = dict(line.split(":\t") for line in format_latency(rr.stdout).splitlines())
    assert 0 < float(report["Minimum Latency Microseconds"]) <= float(report["Mean Latency Microseconds"]) <= \
        float(report["Maximum Latency Microseconds"])
    assert float(report["Transaction Rate Tran/s"]) > 100

    refused = subprocess.run(_probe(netns, "http-get", "--url", "http://127.0.0.1:32780/metrics", "--retries", "1"),
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 7 and "failed after 2 attempts: ConnectionRefusedError" in refused.stderr


def test_intra_cluster_needs_a_non_gateway_node() -> None:
    import io

    from submariner.cli.reporter import Reporter
    from submariner.cli.resources import ENDPOINTS, GATEWAYS, NODES

    kube = FakeCluster()
    for node in ("c1-worker", "c1-worker2"):
        kube.resource(NODES).create({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": node, "labels": {"submariner.io/gateway": "true"}}})
    kube.resource(ENDPOINTS).create({"apiVersion": "submariner.io/v1", "kind": "Endpoint", "metadata": {
        "name": "c2-ep", "namespace": "submariner-operator"}, "spec": _endpoint("c2", "c2-worker")["spec"]})
    gw = kube.resource(GATEWAYS).create({"apiVersion": "submariner.io/v1", "kind": "Gateway", "metadata": {
        "name": "c1-worker", "namespace": "submariner-operator"}})
    gw["status"] = {"haStatus": "active", "localEndpoint": {"hostname": "c1-worker"}}
    kube.resource(GATEWAYS).update_status(gw)
    out = io.StringIO()
    side = firewall.Side(kube, "c1", {"spec": {"clusterID": "c1"}})
    assert not firewall.intra_cluster(side, Reporter(out, terminal=False), firewall.Options(5.0))
    assert out.getvalue().endswith(' ✗ Every node of cluster "c1" is a gateway node: there is no non-gateway node for '
                                   "the client pod\n"), out.getvalue()
    assert firewall.gateway_node(side, "submariner-operator") == "c1-worker"
