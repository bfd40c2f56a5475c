"""`kubernetes` plugin: Kubernetes DNS spec records from informers on a FakeCluster, driven through its handler."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from submariner.broker.kube import ENDPOINT_SLICES, NAMESPACES, SERVICES
from submariner.broker.kube.fake import FakeCluster
from submariner.lab.daemon import KIND_COREFILE
from submariner.lighthouse.dns import corefile
from submariner.lighthouse.dns.config import build_configs
from submariner.lighthouse.dns.plugin import Controller, Handler, Request, Result, SetupError
from submariner.lighthouse.dns.plugins import kubernetes
from submariner.lighthouse.dns.process import ProcessState

BASIC = """.:53 {
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
    }
}
"""


# -- harness ------------------------------------------------------------------------------------------------------


class Next:
    """The stub "next plugin": records what reached it and answers from a table (else SERVFAIL)."""

    def __init__(self, answers: dict[tuple[str, str], str] | None = None) -> None:
        self.seen: list[tuple[str, str]] = []
        self.answers = answers or {}

    async def __call__(self, req: Request) -> Result:
        key = (req.name_lower, dns.rdatatype.to_text(dns.rdatatype.RdataType.make(req.qtype)))
        self.seen.append(key)
        if key in self.answers:
            reply = dns.message.make_response(req.msg)
            reply.answer.append(dns.rrset.from_text(req.qname, 300, "IN", key[1], self.answers[key]))
            return Result(0, reply, plugin="next")
        return Result(dns.rcode.SERVFAIL)


def request(name: str, rdtype: str = "A", *, proto: str = "udp") -> Request:
    q = dns.message.make_query(name, rdtype)
    wire = q.to_wire()
    return Request(msg=dns.message.from_wire(wire), wire=wire, remote=("127.0.0.1", 40000),
                   local=("127.0.0.1", 53), proto=proto, server="dns://:53", zone=".", max_size=512,
                   start=time.perf_counter())


def controller(text: str, process: ProcessState) -> Controller:
    cfg = build_configs(corefile.parse(text), 53)[0]
    found = [d for d in cfg.directives if d.name == kubernetes.NAME]
    return Controller(found, cfg.keys, "dns://:53", process)


async def start(text: str, cluster: FakeCluster, nxt: Handler | None = None,
                wait: bool = True) -> tuple[Handler, Controller, ProcessState]:
    process = ProcessState(out=io.StringIO())
    process.kube = cluster
    c = controller(text, process)
    handler = kubernetes.setup(c)(nxt or Next())
    if wait:
        await ProcessState.run_hooks(c.block.startup)
    return handler, c, process


async def stop(c: Controller) -> None:
    await ProcessState.run_hooks(c.block.shutdown)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def _lines(rrset: dns.rrset.RRset) -> list[str]:
    return [f"{rrset.name} {rrset.ttl} IN {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}" for rd in rrset]


def answer(msg: dns.message.Message, section: str = "answer") -> list[str]:
    out: list[str] = []
    for rrset in getattr(msg, section):
        out.extend(_lines(rrset))
    return sorted(out)


# -- cluster content ---------------------------------------------------------------------------------------------


def populate(cluster: FakeCluster) -> None:
    services = cluster.resource(SERVICES)
    services.create({"metadata": {"name": "web", "namespace": "default"},
                     "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                              "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                        {"name": "dns", "port": 53, "protocol": "UDP"}]}})
    services.create({"metadata": {"name": "db", "namespace": "default"},
                     "spec": {"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"],
                              "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}})
    services.create({"metadata": {"name": "ext", "namespace": "default"},
                     "spec": {"type": "ExternalName", "externalName": "example.com"}})
    services.create({"metadata": {"name": "dual", "namespace": "default"},
                     "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"],
                              "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    cluster.resource(ENDPOINT_SLICES).create({
        "metadata": {"name": "db-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.0.5"], "hostname": "db-0", "conditions": {"ready": True},
             "targetRef": {"kind": "Pod", "name": "db-0", "namespace": "default"}},
            {"addresses": ["10.244.0.6"], "hostname": "db-1", "conditions": {"ready": True}},
            {"addresses": ["10.244.0.7"], "hostname": "db-2", "conditions": {"ready": False}},
        ]})
    cluster.resource(NAMESPACES).create({"metadata": {"name": "default"}})


@pytest.fixture
def cluster() -> FakeCluster:
    c = FakeCluster()
    populate(c)
    return c


# -- records ---------------------------------------------------------------------------------------------------


async def test_cluster_ip_a(cluster: FakeCluster) -> None:
    handler, c, _ = await start(BASIC, cluster)
    try:
        res = await handler(request("Web.Default.svc.cluster.local."))
        assert res.msg is not None and res.plugin == "kubernetes"
        assert res.msg.rcode() == dns.rcode.NOERROR and res.msg.flags & dns.flags.AA
        assert answer(res.msg) == ["Web.Default.svc.cluster.local. 5 IN A 10.96.0.10"]
        assert res.cache is not None  # wire-cacheable
    finally:
        await stop(c)


async def test_headless_a_lists_ready_endpoints_only(cluster: FakeCluster) -> None:
    handler, c, _ = await start(BASIC, cluster)
    try:
        res = await handler(request("db.default.svc.cluster.local."))
        assert res.msg is not None
        assert answer(res.msg) == ["db.default.svc.cluster.local. 5 IN A 10.244.0.5",
                                   "db.default.svc.cluster.local. 5 IN A 10.244.0.6"]
    finally:
        await stop(c)


async def test_statefulset_hostname(cluster: FakeCluster) -> None:
    handler, c, _ = await start(BASIC, cluster)
    try:
        res = await handler(request("db-1.db.default.svc.cluster.local."))
        assert res.msg is not None
        assert answer(res.msg) == ["db-1.db.default.svc.cluster.local. 5 IN A 10.244.0.6"]
        res = await handler(request("db-2.db.default.svc.cluster.local."))  # not ready
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN
    finally:
        await stop(c)


async def test_srv_named_port_and_service_forms(cluster: FakeCluster) -> None:
    handler, c, _ = await start(BASIC, cluster)
    try:
        res = await handler(request("_http._tcp.web.default.svc.cluster.local.", "SRV"))
        assert res.msg is not None
        assert answer(res.msg) == [
            "_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."]
        assert answer(res.msg, "additional") == ["web.default.svc.cluster.local. 5 IN A 10.96.0.10"]
        res = await handler(request("web.default.svc.cluster.local.", "SRV"))
        assert res.msg is not None
        assert answer(res.msg) == [
            "web.default.svc.cluster.local. 5 IN SRV 0 50 53 web.default.svc.cluster.local.",
            "web.default.svc.cluster.local. 5 IN SRV 0 50 80 web.default.svc.cluster.local."]
        res = await handler(request("_pg._tcp.db.default.svc.cluster.local.", "SRV"))
        assert res.msg is not None
        assert answer(res.msg) == [
            "_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.default.svc.cluster.local.",
            "_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 50 5432 db-1.db.default.svc.cluster.local."]
        assert answer(res.msg, "additional") == ["db-0.db.default.svc.cluster.local. 5 IN A 10.244.0.5",
                                                 "db-1.db.default.svc.cluster.local. 5 IN A 10.244.0.6"]
        res = await handler(request("_nope._tcp.web.default.svc.cluster.local.", "SRV"))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN
    finally:
        await stop(c)


async def test_ptr_for_cluster_ip_and_endpoint(cluster: FakeCluster) -> None:
    handler, c, _ = await start(BASIC, cluster)
    try:
        res = await handler(request("10.0.96.10.in-addr.arpa.", "PTR"))
        assert res.msg is not None
        assert answer(res.msg) == ["10.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."]
        res = await handler(request("5.0.244.10.in-addr.arpa.", "PTR"))
        assert res.msg is not None
        assert answer(res.msg) == ["5.0.244.10.in-addr.arpa. 5 IN PTR db-0.db.default.svc.cluster.local."]
    finally:
        await stop(c)


async def test_ptr_fallthrough_for_unknown_address_as_in_kind(cluster: FakeCluster) -> None:
    nxt = Next({("9.9.9.9.in-addr.arpa.", "PTR"): "dns9.quad9.net."})
    handler, c, _ = await start(BASIC, cluster, nxt)
    try:
        res = await handler(request("9.9.9.9.in-addr.arpa.", "PTR"))
        assert nxt.seen == [("9.9.9.9.in-addr.arpa.", "PTR")]
        assert res.plugin == "next"
        # cluster.local has no fallthrough: unknown names are NXDOMAIN there
        res = await handler(request("nope.default.svc.cluster.local."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN
        assert len(nxt.seen) == 1
    finally:
        await stop(c)


async def test_pod_a_with_pods_insecure(cluster: FakeCluster) -> None:
    handler, c, _ = await start(BASIC, cluster)
    try:
        res = await handler(request("10-244-0-9.default.pod.cluster.local."))
        assert res.msg is not None
        assert answer(res.msg) == ["10-244-0-9.default.pod.cluster.local. 5 IN A 10.244.0.9"]
        res = await handler(request("not-an-ip.default.pod.cluster.local."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN
    finally:
        await stop(c)


async def test_pods_verified_and_disabled(cluster: FakeCluster) -> None:
    pods = cluster.resource(kubernetes.PODS)
    pod = pods.create({"metadata": {"name": "p", "namespace": "default"}, "spec": {}})
    pod["status"] = {"podIP": "10.244.1.1", "podIPs": [{"ip": "10.244.1.1"}]}
    pods.update_status(pod)
    verified = ".:53 {\n kubernetes cluster.local {\n pods verified\n }\n}\n"
    handler, c, _ = await start(verified, cluster)
    try:
        res = await handler(request("10-244-1-1.default.pod.cluster.local."))
        assert res.msg is not None and answer(res.msg) == ["10-244-1-1.default.pod.cluster.local. 5 IN A 10.244.1.1"]
        res = await handler(request("10-244-1-2.default.pod.cluster.local."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN
        res = await handler(request("10-244-1-1.other.pod.cluster.local."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN
    finally:
        await stop(c)
    handler, c, _ = await start(".:53 {\n kubernetes cluster.local\n}\n", cluster)
    try:
        res = await handler(request("10-244-1-1.default.pod.cluster.local."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN
    finally:
        await stop(c)


async def test_external_name_cname(cluster: FakeCluster) -> None:
    nxt = Next({("example.com.", "A"): "93.184.216.34"})
    handler, c, _ = await start(BASIC, cluster, nxt)
    try:
        res = await handler(request("ext.default.svc.cluster.local.", "CNAME"))
        assert res.msg is not None
        assert answer(res.msg) == ["ext.default.svc.cluster.local. 5 IN CNAME example.com."]
        res = await handler(request("ext.default.svc.cluster.local.", "A"))
        assert res.msg is not None
        assert [r.rdtype for r in res.msg.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
        assert answer(res.msg) == ["example.com. 300 IN A 93.184.216.34",
                                   "ext.default.svc.cluster.local. 5 IN CNAME example.com."]
        assert res.cache is None  # carries data from the next plugin
    finally:
        await stop(c)


async def test_nxdomain_and_nodata_carry_soa(cluster: FakeCluster) -> None:
    handler, c, _ = await start(BASIC, cluster)
    try:
        res = await handler(request("nope.default.svc.cluster.local."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN and res.msg.flags & dns.flags.AA
        (soa,) = answer(res.msg, "authority")
        name, ttl, _, rtype, mname, rname, serial, *timers = soa.split()
        assert (name, ttl, rtype, mname, rname) == ("cluster.local.", "5", "SOA", "ns.dns.cluster.local.",
                                                     "hostmaster.cluster.local.")
        assert timers == ["7200", "1800", "86400", "5"]
        assert abs(int(serial) - time.time()) < 60
        res = await handler(request("web.default.svc.cluster.local.", "AAAA"))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NOERROR and not res.msg.answer
        assert [r.rdtype for r in res.msg.authority] == [dns.rdatatype.SOA]
        res = await handler(request("dual.default.svc.cluster.local.", "AAAA"))
        assert res.msg is not None and answer(res.msg) == ["dual.default.svc.cluster.local. 5 IN AAAA fd00::20"]
        res = await handler(request("web.default.svc.cluster.local.", "MX"))  # other type, existing name
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NOERROR and not res.msg.answer
        res = await handler(request("cluster.local.", "A"))  # apex
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NOERROR and not res.msg.answer
        res = await handler(request("cluster.local.", "SOA"))
        assert res.msg is not None and [r.rdtype for r in res.msg.answer] == [dns.rdatatype.SOA]
        res = await handler(request("web.nosuchtype.cluster.local."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN
    finally:
        await stop(c)


async def test_dns_version_txt_and_ttl_option(cluster: FakeCluster) -> None:
    handler, c, _ = await start(".:53 {\n kubernetes cluster.local {\n ttl 30\n }\n}\n", cluster)
    try:
        res = await handler(request("dns-version.cluster.local.", "TXT"))
        assert res.msg is not None and answer(res.msg) == ['dns-version.cluster.local. 28800 IN TXT "1.1.0"']
        res = await handler(request("web.default.svc.cluster.local."))
        assert res.msg is not None and answer(res.msg) == ["web.default.svc.cluster.local. 30 IN A 10.96.0.10"]
    finally:
        await stop(c)


async def test_outside_zone_goes_next(cluster: FakeCluster) -> None:
    nxt = Next({("example.org.", "A"): "192.0.2.1"})
    handler, c, _ = await start(BASIC, cluster, nxt)
    try:
        res = await handler(request("example.org."))
        assert res.plugin == "next" and nxt.seen == [("example.org.", "A")]
    finally:
        await stop(c)


async def test_axfr_refused(cluster: FakeCluster) -> None:
    handler, c, _ = await start(BASIC, cluster)
    try:
        res = await handler(request("cluster.local.", "AXFR", proto="tcp"))
        assert res.msg is None and res.rcode == dns.rcode.REFUSED
    finally:
        await stop(c)


async def test_ignore_empty_service_and_namespaces(cluster: FakeCluster) -> None:
    text = ".:53 {\n kubernetes cluster.local {\n ignore empty_service\n namespaces other\n }\n}\n"
    handler, c, _ = await start(text, cluster)
    try:
        res = await handler(request("web.default.svc.cluster.local."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN  # namespace not exposed
    finally:
        await stop(c)
    handler, c, _ = await start(".:53 {\n kubernetes cluster.local {\n ignore empty_service\n }\n}\n", cluster)
    try:
        res = await handler(request("web.default.svc.cluster.local."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.NXDOMAIN  # no ready endpoints
        res = await handler(request("db.default.svc.cluster.local."))
        assert res.msg is not None and len(answer(res.msg)) == 2
    finally:
        await stop(c)


# -- readiness, sync and change -------------------------------------------------------------------------------------


async def test_readiness_and_servfail_before_sync() -> None:
    cluster = FakeCluster()
    populate(cluster)
    cluster.set_unavailable(True)
    handler, c, process = await start(BASIC.replace("pods insecure", "pods insecure\n startup_timeout 100ms"),
                                      cluster)
    try:
        out = process.out
        assert isinstance(out, io.StringIO)
        assert "[WARNING] plugin/kubernetes: starting server with unsynced Kubernetes API" in out.getvalue()
        (name, ready), = c.block.ready
        assert name == "kubernetes" and not ready()
        res = await handler(request("web.default.svc.cluster.local."))
        assert res.msg is not None and res.msg.rcode() == dns.rcode.SERVFAIL
        assert [r.rdtype for r in res.msg.authority] == [dns.rdatatype.SOA]
        assert res.cache is None
        res = await handler(request("1.1.1.1.in-addr.arpa.", "PTR"))  # fallthrough still applies
        assert res.msg is None and res.rcode == dns.rcode.SERVFAIL
        cluster.set_unavailable(False)

        async def synced() -> bool:
            return ready()

        await eventually(synced)
        res = await handler(request("web.default.svc.cluster.local."))
        assert res.msg is not None and answer(res.msg) == ["web.default.svc.cluster.local. 5 IN A 10.96.0.10"]
    finally:
        await stop(c)


async def test_change_visible_after_informer_update_and_scope_retired(cluster: FakeCluster) -> None:
    handler, c, _ = await start(BASIC, cluster)
    try:
        res = await handler(request("web.default.svc.cluster.local."))
        assert res.cache is not None
        scope = res.cache.scope
        generation = scope.generation
        assert scope.generation == generation  # stable while nothing changes
        svc = cluster.resource(SERVICES).get("default", "web")
        svc["spec"]["clusterIP"] = svc["spec"]["clusterIPs"][0] = "10.96.0.11"
        cluster.resource(SERVICES).update(svc)

        async def updated() -> bool:
            r = await handler(request("web.default.svc.cluster.local."))
            return r.msg is not None and answer(r.msg) == ["web.default.svc.cluster.local. 5 IN A 10.96.0.11"]

        await eventually(updated)
        assert scope.generation != scope.generation  # retired: never valid again
        cluster.resource(SERVICES).create({"metadata": {"name": "new", "namespace": "default"},
                                           "spec": {"clusterIP": "10.96.0.30", "ports": [{"port": 1}]}})

        async def created() -> bool:
            r = await handler(request("new.default.svc.cluster.local."))
            return r.msg is not None and r.msg.rcode() == dns.rcode.NOERROR

        await eventually(created)
        cluster.resource(ENDPOINT_SLICES).delete("default", "db-abc")

        async def gone() -> bool:
            r = await handler(request("db.default.svc.cluster.local."))
            return r.msg is not None and r.msg.rcode() == dns.rcode.NXDOMAIN

        await eventually(gone)
        res = await handler(request("5.0.244.10.in-addr.arpa.", "PTR"))
        assert res.msg is None  # fell through: the address is no longer known
    finally:
        await stop(c)


# -- setup ------------------------------------------------------------------------------------------------------------


def test_kind_default_corefile_sets_up() -> None:
    process = ProcessState(out=io.StringIO())
    process.kube = FakeCluster()
    c = controller(KIND_COREFILE, process)
    kubernetes.setup(c)
    o = kubernetes.parse(c)
    assert o.zones == ["cluster.local.", "in-addr.arpa.", "ip6.arpa."]
    assert o.fallthrough == ["in-addr.arpa.", "ip6.arpa."]
    assert (o.pods, o.ttl) == ("insecure", 30)


def test_zones_default_to_the_server_block() -> None:
    process = ProcessState(out=io.StringIO())
    process.kube = FakeCluster()
    o = kubernetes.parse(controller("cluster.local:53 {\n kubernetes\n}\n", process))
    assert o.zones == ["cluster.local."] and o.primary_zone == "cluster.local."


@pytest.mark.parametrize(("body", "message"), [
    ("kubernetes cluster.local {\n    pods bogus\n  }",
     "plugin/kubernetes: wrong value for pods: bogus,  must be one of: disabled, verified, insecure"),
    ("kubernetes cluster.local {\n    ttl 4000\n  }",
     "plugin/kubernetes: Corefile:3 - Error during parsing: ttl must be in range [0, 3600]: 4000"),
    ("kubernetes cluster.local {\n    ttl x\n  }", 'plugin/kubernetes: strconv.Atoi: parsing "x": invalid syntax'),
    ("kubernetes cluster.local {\n    ttl\n  }",
     "plugin/kubernetes: Corefile:3 - Error during parsing: Wrong argument count or unexpected line ending after "
     "'ttl'"),
    ("kubernetes cluster.local {\n    resyncperiod 30s\n  }",
     "plugin/kubernetes: Corefile:3 - Error during parsing: unknown property 'resyncperiod'"),
    ("kubernetes cluster.local {\n    endpoint_pod_names x\n  }",
     "plugin/kubernetes: Corefile:3 - Error during parsing: Wrong argument count or unexpected line ending after "
     "'x'"),
    ("kubernetes cluster.local {\n    ignore bogus\n  }", "plugin/kubernetes: unable to parse ignore value: 'bogus'"),
    ("kubernetes in-addr.arpa", "plugin/kubernetes: non-reverse zone name must be used"),
    ("kubernetes cluster.local {\n    namespaces a\n    namespace_labels x=y\n  }",
     "plugin/kubernetes: Corefile:2 - Error during parsing: namespaces and namespace_labels cannot both be set"),
    ("kubernetes cluster.local {\n    multicluster clusterset.local\n  }",
     "plugin/kubernetes: Corefile:3 - Error during parsing: property 'multicluster' is not supported by "
     "lighthouse-dns (use the lighthouse plugin)"),
    ("kubernetes cluster.local {\n    startup_timeout 5\n  }",
     'plugin/kubernetes: time: missing unit in duration "5"'),
])
def test_setup_errors(body: str, message: str) -> None:
    process = ProcessState(out=io.StringIO())
    process.kube = FakeCluster()
    with pytest.raises(SetupError) as err:
        kubernetes.setup(controller(f".:53 {{\n  {body}\n}}\n", process))
    assert str(err.value) == message


def test_options_accepted() -> None:
    text = """.:53 {
    kubernetes cluster.local {
        endpoint https://10.0.0.1:6443
        kubeconfig /nonexistent/kubeconfig ctx
        namespaces a b
        labels app=web
        endpoint_pod_names
        noendpoints
        apiserver_qps 50
        ignore empty_service
        startup_timeout 2s
        fallthrough
    }
}
"""
    process = ProcessState(out=io.StringIO())
    process.kube = FakeCluster()
    o: Any = kubernetes.parse(controller(text, process))
    assert o.namespaces == {"a", "b"} and o.labels == "app=web" and o.endpoint_pod_names and not o.endpoints
    assert (o.kubeconfig, o.context, o.startup_timeout, o.fallthrough) == ("/nonexistent/kubeconfig", "ctx", 2.0,
                                                                           ["."])


async def test_dns_programming_latency_for_headless_services(cluster: FakeCluster) -> None:
    handler, c, process = await start(BASIC, cluster)
    try:
        slices = cluster.resource(ENDPOINT_SLICES)
        eps = slices.get("default", "db-abc")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 2))
        eps["metadata"]["annotations"] = {"endpoints.kubernetes.io/last-change-trigger-time": stamp}
        eps["endpoints"][2]["conditions"]["ready"] = True
        slices.update(eps)
        vec = process._metrics["coredns_kubernetes_dns_programming_duration_seconds"]

        async def observed() -> bool:
            return bool(vec.count(("headless_with_selector",)) == 1)

        await eventually(observed)
        assert 1.0 <= vec.values[("headless_with_selector",)][-1] < 10.0
        res = await handler(request("db-2.db.default.svc.cluster.local."))  # now ready
        assert res.msg is not None and answer(res.msg) == ["db-2.db.default.svc.cluster.local. 5 IN A 10.244.0.7"]
    finally:
        await stop(c)
