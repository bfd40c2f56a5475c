"""The `lighthouse` plugin against lighthouse-dns.md: pipeline §1, parsing §2, selection §3, answers §4,
directive §5.1, model §6, metric §6.3, extras §8 and the defects D1-D12 (one test named after each).

Most tests drive the real plugin through `FakeCluster` (objects shaped as the agent writes them, informers,
the dispatcher onto the test's event loop) and call its handler with `Request`s; the model and the balancer
also have direct unit tests, and a hypothesis test throws random names at the handler.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from submariner.broker.api.multicluster import SERVICE_IMPORTS
from submariner.broker.api.operator import SUBMARINERS
from submariner.broker.api.submariner import GATEWAYS
from submariner.broker.kube import ENDPOINT_SLICES, Unavailable
from submariner.broker.kube.fake import FakeCluster
from submariner.lighthouse.dns import corefile
from submariner.lighthouse.dns.answers import AnswerCache
from submariner.lighthouse.dns.chain import build_block, no_next
from submariner.lighthouse.dns.config import build_configs
from submariner.lighthouse.dns.lighthouse_model import Balancer, Model, Port, synthesized_label
from submariner.lighthouse.dns.plugin import AnswerInfo, Controller, Request, Result, SetupError
from submariner.lighthouse.dns.plugins import lighthouse as lh
from submariner.lighthouse.dns.process import ProcessState

Z = "clusterset.local"
NS = "default"
SVC = "nginx"
OP_NS = "submariner-operator"
HTTP = {"name": "http", "protocol": "TCP", "port": 80}
HTTPS = {"name": "https", "protocol": "TCP", "port": 443}
DNS_UDP = {"name": "dns", "protocol": "UDP", "port": 53}
DNS_TCP = {"name": "dns-tcp", "protocol": "TCP", "port": 53}
NOERROR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, NOTZONE = 0, 2, 3, 4, 5, 10


# -- objects as the agent writes them (lighthouse-agent.md §2, §3, §7; dataplane.md §1) ----------------------


def si(name: str = SVC, ns: str = NS, *, headless: bool = False, ips: Iterable[str] = (),
       ports: Iterable[dict[str, Any]] = (HTTP,), labels: dict[str, str] | None = None,
       annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "Headless" if headless else "ClusterSetIP",
                            "ports": [] if headless else [dict(p) for p in ports]}
    if ips:
        spec["ips"] = list(ips)
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport", "metadata": meta, "spec": spec}


def ep(*ips: str, hostname: str | None = None, ready: bool | None = True, pod: str | None = None,
       kind: str = "Pod") -> dict[str, Any]:
    e: dict[str, Any] = {"addresses": list(ips), "conditions": {} if ready is None else {"ready": ready}}
    if hostname is not None:
        e["hostname"] = hostname
    if pod is not None:
        e["targetRef"] = {"kind": kind, "name": pod, "namespace": NS}
    return e


def eps(cluster: str, *ips: str, svc: str = SVC, ns: str = NS, name: str | None = None, headless: bool = False,
        endpoints: list[dict[str, Any]] | None = None, ready: bool | None = True,
        ports: Iterable[dict[str, Any]] = (HTTP,), annotations: dict[str, str] | None = None,
        namespace: str | None = None, is_headless_label: str | None = "default", drop: Iterable[str] = (),
        extra_labels: dict[str, str] | None = None, source_name: str | None = None) -> dict[str, Any]:
    labels = {
        "endpointslice.kubernetes.io/managed-by": "lighthouse-agent.submariner.io",
        "multicluster.kubernetes.io/service-name": svc,
        "lighthouse.submariner.io/sourceNamespace": ns,
        "multicluster.kubernetes.io/source-cluster": cluster,
        "lighthouse.submariner.io/is-headless": "true" if headless else "false",
        **(extra_labels or {}),
    }
    if is_headless_label is None:
        del labels["lighthouse.submariner.io/is-headless"]
    if source_name is not None:
        labels["lighthouse.submariner.io/source-name"] = source_name
    for key in drop:
        labels.pop(key, None)
    if endpoints is None:
        endpoints = [ep(ip, ready=ready) for ip in ips] if headless else [ep(*ips[:1], ready=ready)]
    family = "IPv6" if ips and ":" in ips[0] else "IPv4"
    ann = {"lighthouse.submariner.io/globalnet-enabled": "false", **(annotations or {})}
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name or f"{svc}-{cluster}-{family.lower()}", "namespace": namespace or ns,
                     "labels": labels, "annotations": ann},
        "addressType": family, "endpoints": endpoints, "ports": [dict(p) for p in ports],
    }


def gateway(local: str, connections: dict[str, str], *, ha: str = "active") -> dict[str, Any]:
    return {"haStatus": ha, "version": "v0.19", "statusFailure": "",
            "localEndpoint": {"cluster_id": local, "cable_name": f"submariner-cable-{local}"},
            "connections": [{"status": status, "statusMessage": "", "endpoint": {"cluster_id": cid}}
                            for cid, status in connections.items()]}


def name_of(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


# -- a plugin on a fake cluster ----------------------------------------------------------------------------


def make_request(name: str, qtype: str | int = "A", *, rd: bool = True, cd: bool = False, proto: str = "udp",
                 rdclass: int = dns.rdataclass.IN) -> Request:
    q = dns.message.make_query(name, qtype, rdclass=rdclass)
    if not rd:
        q.flags &= ~dns.flags.RD
    if cd:
        q.flags |= dns.flags.CD
    return Request(msg=q, wire=q.to_wire(), remote=("10.9.9.9", 33333), local=("10.0.0.53", 53), proto=proto,
                   server="dns://:53", zone=Z + ".", max_size=512)


class Reply:
    """A handler result, re-read from its wire form (so every reply is proven renderable)."""

    def __init__(self, result: Result, req: Request) -> None:
        self.result = result
        self.req = req
        self.msg = dns.message.from_wire(result.msg.to_wire()) if result.msg is not None else None

    @property
    def rcode(self) -> int:
        return int(self.msg.rcode()) if self.msg is not None else self.result.rcode

    def rrs(self, rdtype: int, section: str = "answer") -> list[Any]:
        assert self.msg is not None
        return [rd for rrset in getattr(self.msg, section) if rrset.rdtype == rdtype for rd in rrset]

    @property
    def ips(self) -> set[str]:
        return {rd.address for rd in self.rrs(dns.rdatatype.A) + self.rrs(dns.rdatatype.AAAA)}

    @property
    def ip(self) -> str:
        (only,) = self.ips
        return only

    @property
    def srv(self) -> set[tuple[int, int, int, str]]:
        return {(rd.priority, rd.weight, rd.port, rd.target.to_text().lower()) for rd in self.rrs(dns.rdatatype.SRV)}

    @property
    def nodata(self) -> bool:
        return self.rcode == NOERROR and self.msg is not None and not self.msg.answer

    @property
    def soa(self) -> list[Any]:
        return self.rrs(dns.rdatatype.SOA, "authority")


class Next:
    """The next plugin in the chain: counts what falls through."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, req: Request) -> Result:
        self.calls.append(req.name_lower)
        return Result(REFUSED, plugin="next")


def controller(text: str, process: ProcessState | None = None) -> Controller:
    cfg = build_configs(corefile.parse(text), 53)[0]
    return Controller(cfg.directives, cfg.keys, "dns://:53", process or ProcessState(out=io.StringIO()))


class Env:
    """A started `lighthouse` plugin whose informers watch a FakeCluster."""

    def __init__(self, fake: FakeCluster, process: ProcessState, c: Controller, handler: Any, nxt: Next) -> None:
        self.fake = fake
        self.process = process
        self.c = c
        self.handler = handler
        self.next = nxt
        self.plugin: lh.Lighthouse = handler.__self__
        self.model = self.plugin.model
        self.metric = process.vec(lh.QueryCounter(lh.METRIC_NAME, "", lh.METRIC_LABELS))

    @classmethod
    async def start(cls, options: str = "", *, keys: str = Z, args: str = "", cluster_id: str = "",
                    submariner: bool = False, wait: bool = True, fake: FakeCluster | None = None) -> Env:
        fake = fake or FakeCluster()
        if submariner:
            fake.resource(SUBMARINERS).create({"metadata": {"name": "submariner", "namespace": OP_NS}, "spec": {}})
        process = ProcessState(out=io.StringIO(), cluster_id=cluster_id)
        process.kube = fake
        block = f"lighthouse {args} {{\n{options}\n}}" if options else f"lighthouse {args}"
        c = controller(f"{keys} {{\n{block}\n}}\n", process)
        nxt = Next()
        handler = lh.setup(c)(nxt)
        env = cls(fake, process, c, handler, nxt)
        await ProcessState.run_hooks(c.block.startup)
        if wait:
            await env.until(env.ready)
        return env

    async def close(self) -> None:
        await ProcessState.run_hooks(self.c.block.shutdown)

    def ready(self) -> bool:
        return all(fn() for name, fn in self.c.block.ready if name == "lighthouse")

    async def until(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not cond():
            assert loop.time() < deadline, "condition not reached"
            await asyncio.sleep(0.002)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        loop.call_soon_threadsafe(fut.set_result, None)
        await fut

    async def _applied(self, plural: str, ns: str, name: str, rv: str | None) -> None:
        """Wait until the informer has delivered this write and the model has applied it."""
        informers = [i for i in self.plugin.watcher._informers if i._client.resource.plural == plural]
        if not informers:
            return
        inf = informers[0]

        def seen() -> bool:
            obj = inf.get(ns, name)
            if rv is None:
                return obj is None
            return obj is not None and int(obj["metadata"]["resourceVersion"]) >= int(rv)

        await self.until(seen)
        with inf._dispatch:  # the informer's handlers for that event have returned (they only schedule work)
            pass
        await self._drain()

    async def create(self, res: Any, obj: dict[str, Any], *, sync: bool = True) -> dict[str, Any]:
        created = self.fake.resource(res).create(obj)
        if sync:
            await self._applied(res.plural, *name_of(created), created["metadata"]["resourceVersion"])
        return created

    async def update(self, res: Any, obj: dict[str, Any]) -> dict[str, Any]:
        updated = self.fake.resource(res).update(obj)
        await self._applied(res.plural, *name_of(updated), updated["metadata"]["resourceVersion"])
        return updated

    async def delete(self, res: Any, obj: dict[str, Any]) -> None:
        self.fake.resource(res).delete(*name_of(obj))
        await self._applied(res.plural, *name_of(obj), None)

    async def add_si(self, *a: Any, **kw: Any) -> dict[str, Any]:
        return await self.create(SERVICE_IMPORTS, si(*a, **kw))

    async def add_eps(self, *a: Any, **kw: Any) -> dict[str, Any]:
        return await self.create(ENDPOINT_SLICES, eps(*a, **kw))

    async def put_eps(self, *a: Any, **kw: Any) -> dict[str, Any]:
        return await self.update(ENDPOINT_SLICES, eps(*a, **kw))

    async def gateway(self, local: str, connections: dict[str, str], *, ha: str = "active",
                      name: str = "gw-node1") -> None:
        client = self.fake.resource(GATEWAYS)
        try:
            obj = client.get(OP_NS, name)
        except Exception:
            obj = client.create({"metadata": {"name": name, "namespace": OP_NS}})
        obj["status"] = gateway(local, connections, ha=ha)
        updated = client.update_status(obj)
        await self._applied(GATEWAYS.plural, OP_NS, name, updated["metadata"]["resourceVersion"])

    async def delete_gateway(self, name: str = "gw-node1") -> None:
        self.fake.resource(GATEWAYS).delete(OP_NS, name)
        await self._applied(GATEWAYS.plural, OP_NS, name, None)

    async def q(self, name: str, qtype: str | int = "A", **kw: Any) -> Reply:
        req = make_request(name, qtype, **kw)
        return Reply(await self.handler(req), req)

    def count(self, cluster: str, ip: str, svc: str = SVC, ns: str = NS) -> float:
        return sum(v for k, v in self.metric.values.items() if k[1:] == (cluster, svc, ns, ip))


@pytest.fixture
async def env() -> Any:
    e = await Env.start()
    yield e
    await e.close()


async def three_clusters(e: Env, *, ports: Iterable[dict[str, Any]] = (HTTP,)) -> None:
    await e.add_si()
    for i in (1, 2, 3):
        await e.add_eps(f"c{i}", f"10.{i}.0.10", ports=ports)


# == §5.1 directive ========================================================================================


class TestSetup:
    def opts(self, text: str) -> lh.Options:
        return lh.parse_options(controller(text))

    def test_zones_default_to_block_keys_with_port_stripped(self) -> None:
        assert self.opts("clusterset.local:53 supercluster.local {\n lighthouse\n}").zones == [
            "clusterset.local.", "supercluster.local."]

    def test_zone_arguments_are_normalised(self) -> None:
        opts = self.opts(". {\n lighthouse ClusterSet.Local:53 other.example\n}")
        assert opts.zones == ["clusterset.local.", "other.example."]

    def test_defaults(self) -> None:
        opts = self.opts("clusterset.local {\n lighthouse\n}")
        assert (opts.ttl, opts.fallthrough, opts.aaaa, opts.dns_version, opts.ptr, opts.soa, opts.srv_glue,
                opts.address_filter, opts.strict_mcs, opts.clusterset_mode, opts.connectivity_grace) == (
            5, None, True, True, [], True, False, True, False, False, 0.0)

    def test_fallthrough_without_zones_is_root_and_with_zones_only_those(self) -> None:
        assert self.opts("clusterset.local {\n lighthouse {\n fallthrough\n }\n}").fallthrough == ["."]
        assert self.opts("clusterset.local {\n lighthouse {\n fallthrough A.clusterset.local\n }\n}"
                         ).fallthrough == ["a.clusterset.local."]

    def test_ttl_range_accepted(self) -> None:
        assert self.opts("clusterset.local {\n lighthouse {\n ttl 0\n }\n}").ttl == 0
        assert self.opts("clusterset.local {\n lighthouse {\n ttl 3600\n }\n}").ttl == 3600

    @pytest.mark.parametrize(("prop", "message"), [
        ("ttl", "plugin/lighthouse: Corefile:3 - Error during parsing: Wrong argument count or unexpected line "
                "ending after 'ttl'"),
        ("ttl 3601", "plugin/lighthouse: Corefile:3 - Error during parsing: ttl must be in range [0, 3600]: 3601"),
        ("ttl -1", "plugin/lighthouse: Corefile:3 - Error during parsing: ttl must be in range [0, 3600]: -1"),
        ("ttl five", 'plugin/lighthouse: Corefile:3 - Error during parsing: strconv.Atoi: parsing "five": invalid '
                     "syntax"),
        ("upstream", "plugin/lighthouse: Corefile:3 - Error during parsing: unknown property 'upstream'"),
        ("aaaa maybe", "plugin/lighthouse: Corefile:3 - Error during parsing: aaaa must be 'on' or 'off', not "
                       "'maybe'"),
        ("soa", "plugin/lighthouse: Corefile:3 - Error during parsing: Wrong argument count or unexpected line "
                "ending after 'soa'"),
        ("ptr", "plugin/lighthouse: Corefile:3 - Error during parsing: Wrong argument count or unexpected line "
                "ending after 'ptr'"),
        ("connectivity_grace 15", 'plugin/lighthouse: Corefile:3 - Error during parsing: time: missing unit in '
                                  'duration "15"'),
    ])
    def test_setup_errors_exact_messages(self, prop: str, message: str) -> None:
        with pytest.raises(SetupError) as err:
            self.opts(f"clusterset.local {{\n lighthouse {{\n {prop}\n }}\n}}")
        assert str(err.value) == message

    def test_ttl_missing_value_mentions_wrong_argument_count(self) -> None:
        with pytest.raises(SetupError, match="Wrong argument count"):
            self.opts("clusterset.local {\n lighthouse {\n ttl\n }\n}")

    def test_beyond_upstream_switches(self) -> None:
        opts = self.opts("clusterset.local {\n lighthouse {\n aaaa off\n dns_version off\n soa off\n srv_glue on\n"
                         " address_filter off\n strict_mcs on\n clusterset_mode on\n connectivity_grace 15s\n"
                         " ptr 243.0.0.0/8 ip6.arpa\n }\n}")
        assert (opts.aaaa, opts.dns_version, opts.soa, opts.srv_glue, opts.address_filter, opts.strict_mcs,
                opts.clusterset_mode, opts.connectivity_grace) == (False, False, False, True, False, True, True, 15.0)
        assert opts.ptr == ["243.in-addr.arpa.", "ip6.arpa."]

    def test_once_per_block(self) -> None:
        process = ProcessState(out=io.StringIO())
        process.kube = FakeCluster()
        cfg = build_configs(corefile.parse("clusterset.local {\n lighthouse\n lighthouse\n}\n"), 53)[0]
        with pytest.raises(SetupError, match="can only be used once per Server Block"):
            build_block(cfg, process)

    def test_kubernetes_client_failure_is_a_setup_error(self, tmp_path: Any) -> None:
        process = ProcessState(out=io.StringIO(), kubeconfig=str(tmp_path / "missing-kubeconfig"))
        with pytest.raises(SetupError, match="plugin/lighthouse"):
            lh.setup(controller("clusterset.local {\n lighthouse\n}", process))

    def test_setup_registers_handler_readiness_observer_and_hooks(self) -> None:
        process = ProcessState(out=io.StringIO())
        process.kube = FakeCluster()
        c = controller("clusterset.local {\n lighthouse\n}", process)
        wrapper = lh.setup(c)
        assert [name for name, _ in c.block.ready] == ["lighthouse"]
        assert len(c.block.observers) == 1 and len(c.block.startup) == 1 and len(c.block.shutdown) == 1
        assert callable(wrapper(no_next))


# == §1 pipeline and §4.4 rcodes ===========================================================================


RCODE_TABLE = [
    # (name, qtype, expected rcode) for a cluster with nginx (ClusterSetIP, c1) imported
    ("example.org", "A", NOTZONE),
    ("1.0.0.10.in-addr.arpa", "PTR", NOTZONE),  # the zone check is first
    (f"{SVC}.{NS}.svc.{Z}", "TXT", NOTIMP),
    (f"{SVC}.{NS}.svc.{Z}", "PTR", NOTIMP),
    (f"{SVC}.{NS}.svc.{Z}", "MX", NOTIMP),
    (f"{SVC}.{NS}.svc.{Z}", "CNAME", NOTIMP),
    (f"{SVC}.{NS}.svc.{Z}", "ANY", NOTIMP),
    (Z, "SOA", NOTIMP),
    (Z, "NS", NOTIMP),
    (f"x.{NS}.pod.{Z}", "A", NXDOMAIN),
    (Z, "A", NXDOMAIN),
    (f"svc.{Z}", "A", NXDOMAIN),
    (f"pod.{Z}", "A", NXDOMAIN),
    (f"{NS}.svc.{Z}", "A", NXDOMAIN),
    (f"{SVC}.{NS}.bad.{Z}", "A", NXDOMAIN),
    (f"a.b.c.{SVC}.{NS}.svc.{Z}", "A", NXDOMAIN),
    (f"a.b.c.d.{SVC}.{NS}.svc.{Z}", "SRV", NXDOMAIN),
    (f"other.{NS}.svc.{Z}", "A", NXDOMAIN),
    (f"{SVC}.other.svc.{Z}", "A", NXDOMAIN),
    (f"c9.{SVC}.{NS}.svc.{Z}", "A", NXDOMAIN),
    (f"*.{NS}.svc.{Z}", "A", NXDOMAIN),  # no wildcards
    (f"{SVC}.{NS}.svc.{Z}", "A", NOERROR),
    (f"{SVC}.{NS}.svc.{Z}", "SRV", NOERROR),
    (f"_http._tcp.{SVC}.{NS}.svc.{Z}", "SRV", NOERROR),
]


class TestPipeline:
    @pytest.mark.parametrize(("name", "qtype", "rcode"), RCODE_TABLE)
    async def test_rcode_table(self, env: Env, name: str, qtype: str, rcode: int) -> None:
        await env.add_si()
        await env.add_eps("c1", "10.1.0.10")
        r = await env.q(name, qtype)
        assert r.rcode == rcode
        assert r.msg is not None and r.msg.flags & dns.flags.AA  # the plugin writes every reply itself, AA=1
        assert env.next.calls == []

    @pytest.mark.parametrize("situation", ["nothing eligible", "no endpoints", "all disconnected",
                                           "srv port unmatched", "aaaa without ipv6"])
    async def test_nodata_situations(self, situation: str) -> None:
        e = await Env.start("fallthrough", submariner=situation == "all disconnected")
        try:
            await e.add_si()
            name, qtype = f"{SVC}.{NS}.svc.{Z}", "A"
            if situation == "nothing eligible":
                await e.add_eps("c1", "10.1.0.10", ready=False)
            elif situation == "all disconnected":
                await e.add_eps("c1", "10.1.0.10")
                await e.gateway("c0", {"c1": "error"})
            elif situation == "srv port unmatched":
                await e.add_eps("c1", "10.1.0.10")
                name, qtype = f"_grpc._tcp.{SVC}.{NS}.svc.{Z}", "SRV"
            elif situation == "aaaa without ipv6":
                await e.add_eps("c1", "10.1.0.10")
                qtype = "AAAA"
            r = await e.q(name, qtype)
            assert r.nodata and r.msg is not None and r.msg.flags & dns.flags.AA
            assert e.next.calls == []  # NODATA never falls through
        finally:
            await e.close()

    async def test_reply_header_and_question(self, env: Env) -> None:
        await env.add_si()
        await env.add_eps("c1", "10.1.0.10")
        for rd, cd in ((True, False), (False, True)):
            r = await env.q(f"{SVC}.{NS}.svc.{Z}", rd=rd, cd=cd)
            assert r.msg is not None
            flags = r.msg.flags
            assert flags & dns.flags.QR and flags & dns.flags.AA and not flags & dns.flags.RA
            assert bool(flags & dns.flags.RD) == rd and bool(flags & dns.flags.CD) == cd
            assert r.msg.id == r.req.msg.id and r.msg.question == r.req.msg.question
            assert not r.msg.additional

    async def test_zone_match_is_case_insensitive_and_longest_zone_wins(self) -> None:
        e = await Env.start(args=f"{Z} inner.{Z}")
        try:
            await e.add_si()
            await e.add_eps("c1", "10.1.0.10")
            assert (await e.q(f"{SVC}.{NS}.SVC.ClusterSet.LOCAL")).ip == "10.1.0.10"
            # under the longer zone the type label is `svc`; under the shorter one it would be `inner`
            assert (await e.q(f"{SVC}.{NS}.svc.inner.{Z}")).ip == "10.1.0.10"
        finally:
            await e.close()

    async def test_trailing_dot_optional(self, env: Env) -> None:
        await env.add_si()
        await env.add_eps("c1", "10.1.0.10")
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).ips == (await env.q(f"{SVC}.{NS}.svc.{Z}.")).ips


class TestFallthrough:
    @pytest.mark.parametrize(("name", "qtype"), [
        ("example.org", "A"),  # NOTZONE
        (f"{SVC}.{NS}.svc.{Z}", "TXT"),  # NOTIMP
        (f"x.{NS}.pod.{Z}", "A"),  # NXDOMAIN (parse)
        (f"missing.{NS}.svc.{Z}", "A"),  # NXDOMAIN (not imported)
    ])
    async def test_root_fallthrough_passes_failures_to_next(self, name: str, qtype: str) -> None:
        e = await Env.start("fallthrough")
        try:
            r = await e.q(name, qtype)
            assert r.result.plugin == "next" and r.rcode == REFUSED
            assert e.next.calls == [dns.name.from_text(name).to_text().lower()]
        finally:
            await e.close()

    async def test_fallthrough_zones_limit_what_passes(self) -> None:
        e = await Env.start(f"fallthrough sub.{Z}")
        try:
            assert (await e.q(f"missing.{NS}.svc.{Z}")).rcode == NXDOMAIN
            assert (await e.q("example.org")).rcode == NOTZONE
            assert (await e.q(f"x.SUB.{Z}")).result.plugin == "next"  # lower-cased before the check
        finally:
            await e.close()

    async def test_fallthrough_with_no_next_plugin_is_servfail(self) -> None:
        e = await Env.start("fallthrough")
        try:
            handler = lh.setup(e.c)(no_next)  # a second instance whose next is the end of the chain
            result = await handler(make_request(f"missing.{NS}.svc.{Z}"))
            assert result.rcode == SERVFAIL and result.msg is None
        finally:
            await e.close()

    async def test_no_fallthrough_without_option(self, env: Env) -> None:
        assert (await env.q(f"missing.{NS}.svc.{Z}")).rcode == NXDOMAIN
        assert env.next.calls == []


# == §2 name parsing =======================================================================================


PARSE_TABLE = [
    # (relative labels left of the zone, qtype, expected (ns, svc, cluster, host, port, proto) or None)
    ((), "A", None),
    (("svc",), "A", None),
    (("pod",), "A", None),
    (("x", NS, "pod"), "A", None),
    ((SVC, NS, "bad"), "A", None),
    ((NS, "svc"), "A", (NS, "", "", "", "", "")),
    ((SVC, NS, "svc"), "A", (NS, SVC, "", "", "", "")),
    (("c1", SVC, NS, "svc"), "A", (NS, SVC, "c1", "", "", "")),
    (("h", "c1", SVC, NS, "svc"), "A", (NS, SVC, "c1", "h", "", "")),
    (("x", "h", "c1", SVC, NS, "svc"), "A", None),
    (("h", "c1", SVC, NS, "svc"), "AAAA", (NS, SVC, "c1", "h", "", "")),  # D3
    (("x", "h", "c1", SVC, NS, "svc"), "AAAA", None),  # D3
    ((SVC, NS, "svc"), "SRV", (NS, SVC, "", "", "", "")),
    (("c1", SVC, NS, "svc"), "SRV", (NS, SVC, "c1", "", "", "")),
    (("_http", "_tcp", SVC, NS, "svc"), "SRV", (NS, SVC, "", "", "http", "tcp")),
    (("http", "tcp", SVC, NS, "svc"), "SRV", (NS, SVC, "", "", "http", "tcp")),
    (("__http", "_tcp", SVC, NS, "svc"), "SRV", (NS, SVC, "", "", "_http", "tcp")),  # ONE `_` stripped
    (("_http", "_tcp", "c1", SVC, NS, "svc"), "SRV", (NS, SVC, "c1", "", "http", "tcp")),
    (("a", "_http", "_tcp", "c1", SVC, NS, "svc"), "SRV", None),
]


class TestParsing:
    @pytest.mark.parametrize(("rel", "qtype", "expected"), PARSE_TABLE)
    def test_parse_table(self, rel: tuple[str, ...], qtype: str, expected: tuple[str, ...] | None) -> None:
        parsed = lh.parse_name(tuple(label.encode() for label in rel), int(dns.rdatatype.from_text(qtype)))
        if expected is None:
            assert parsed is None
        else:
            assert parsed is not None
            assert tuple(x.decode() for x in (parsed.namespace, parsed.service, parsed.cluster, parsed.host,
                                               parsed.port, parsed.proto)) == expected

    async def test_srv_two_prefix_labels_are_port_and_protocol_never_host_and_cluster(self) -> None:
        e = await Env.start()
        try:
            await e.add_si(headless=True)
            await e.add_eps("c1", endpoints=[ep("10.1.1.1", hostname="h")], headless=True, ports=(HTTP,))
            assert (await e.q(f"h.c1.{SVC}.{NS}.svc.{Z}", "A")).ip == "10.1.1.1"
            r = await e.q(f"h.c1.{SVC}.{NS}.svc.{Z}", "SRV")
            assert r.nodata  # port `h`, protocol `c1`: no such port
            assert (await e.q(f"http.tcp.{SVC}.{NS}.svc.{Z}", "SRV")).srv == {
                (0, 50, 80, f"h.c1.{SVC}.{NS}.svc.{Z}.")}
        finally:
            await e.close()

    async def test_lookups_are_case_insensitive(self, env: Env) -> None:
        await env.add_si()
        await env.add_eps("c1", "10.1.0.10")
        assert (await env.q(f"C1.NGINX.Default.svc.{Z}")).ip == "10.1.0.10"
        assert (await env.q(f"_HTTP._TCP.NGINX.DEFAULT.SVC.{Z}", "SRV")).srv == {(0, 50, 80, f"nginx.default.svc.{Z}.")}


# == §3.1 name forms ======================================================================================


class TestNameForms:
    """Every row of the §3.1 table, ClusterSetIP and Headless columns."""

    async def setup_env(self, headless: bool) -> Env:
        e = await Env.start(cluster_id="c1", submariner=True)
        await e.add_si(headless=headless)
        if headless:
            await e.add_eps("c1", headless=True, endpoints=[ep("10.1.1.1", hostname="web-0"),
                                                            ep("10.1.1.2", hostname="web-1")], ports=(HTTP, HTTPS))
            await e.add_eps("c2", headless=True, endpoints=[ep("10.2.1.1", hostname="web-0")], ports=(HTTP, HTTPS))
            await e.add_eps("c3", headless=True, endpoints=[ep("10.3.1.1", hostname="web-0")], ports=(HTTP,))
            await e.add_eps("c4", headless=True, endpoints=[ep("10.4.1.1", ready=False)], ports=(HTTP,))
        else:
            await e.add_eps("c1", "10.1.0.10", ports=(HTTP, HTTPS))
            await e.add_eps("c2", "10.2.0.10", ports=(HTTP, HTTPS))
            await e.add_eps("c3", "10.3.0.10", ports=(HTTP,))
        await e.gateway("c1", {"c2": "connected", "c3": "error", "c4": "connected"})
        return e

    async def test_service_a_clusterip_one_address(self) -> None:
        e = await self.setup_env(False)
        try:
            r = await e.q(f"{SVC}.{NS}.svc.{Z}")
            assert r.ips == {"10.1.0.10"}  # local first
        finally:
            await e.close()

    async def test_service_a_headless_union_of_connected_ready(self) -> None:
        e = await self.setup_env(True)
        try:
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).ips == {"10.1.1.1", "10.1.1.2", "10.2.1.1"}
        finally:
            await e.close()

    async def test_cluster_a_clusterip_even_disconnected_or_unhealthy(self) -> None:
        e = await self.setup_env(False)
        try:
            assert (await e.q(f"c3.{SVC}.{NS}.svc.{Z}")).ip == "10.3.0.10"  # disconnected
            await e.put_eps("c2", "10.2.0.10", ready=False, ports=(HTTP, HTTPS))
            assert (await e.q(f"c2.{SVC}.{NS}.svc.{Z}")).ip == "10.2.0.10"  # unhealthy
            assert (await e.q(f"c9.{SVC}.{NS}.svc.{Z}")).rcode == NXDOMAIN
        finally:
            await e.close()

    async def test_cluster_a_headless_connectivity_ignored(self) -> None:
        e = await self.setup_env(True)
        try:
            assert (await e.q(f"c3.{SVC}.{NS}.svc.{Z}")).ips == {"10.3.1.1"}
            assert (await e.q(f"c9.{SVC}.{NS}.svc.{Z}")).rcode == NXDOMAIN
            assert (await e.q(f"c4.{SVC}.{NS}.svc.{Z}")).nodata  # known, zero ready endpoints
        finally:
            await e.close()

    async def test_host_cluster_a_clusterip_host_ignored(self) -> None:
        e = await self.setup_env(False)
        try:
            assert (await e.q(f"anything.c2.{SVC}.{NS}.svc.{Z}")).ip == "10.2.0.10"
            assert (await e.q(f"anything.c9.{SVC}.{NS}.svc.{Z}")).rcode == NXDOMAIN
        finally:
            await e.close()

    async def test_host_cluster_a_headless(self) -> None:
        e = await self.setup_env(True)
        try:
            assert (await e.q(f"web-1.c1.{SVC}.{NS}.svc.{Z}")).ips == {"10.1.1.2"}
            assert (await e.q(f"web-0.c3.{SVC}.{NS}.svc.{Z}")).ips == {"10.3.1.1"}
            assert (await e.q(f"web-9.c1.{SVC}.{NS}.svc.{Z}")).rcode == NXDOMAIN
        finally:
            await e.close()

    async def test_service_srv(self) -> None:
        e = await self.setup_env(False)
        try:
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}", "SRV")).srv == {(0, 50, 80, f"{SVC}.{NS}.svc.{Z}.")}
        finally:
            await e.close()
        e = await self.setup_env(True)
        try:
            base = f"{SVC}.{NS}.svc.{Z}."
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}", "SRV")).srv == {
                (0, 50, 80, f"web-0.c1.{base}"), (0, 50, 443, f"web-0.c1.{base}"),
                (0, 50, 80, f"web-1.c1.{base}"), (0, 50, 443, f"web-1.c1.{base}"),
                (0, 50, 80, f"web-0.c2.{base}"), (0, 50, 443, f"web-0.c2.{base}")}
        finally:
            await e.close()

    async def test_cluster_srv(self) -> None:
        e = await self.setup_env(False)
        try:
            target = f"c2.{SVC}.{NS}.svc.{Z}."
            assert (await e.q(f"c2.{SVC}.{NS}.svc.{Z}", "SRV")).srv == {(0, 50, 80, target), (0, 50, 443, target)}
        finally:
            await e.close()
        e = await self.setup_env(True)
        try:
            assert (await e.q(f"c3.{SVC}.{NS}.svc.{Z}", "SRV")).srv == {(0, 50, 80, f"web-0.c3.{SVC}.{NS}.svc.{Z}.")}
        finally:
            await e.close()

    async def test_port_protocol_srv(self) -> None:
        e = await self.setup_env(False)
        try:
            assert (await e.q(f"_https._tcp.{SVC}.{NS}.svc.{Z}", "SRV")).nodata  # not in c3: not merged
            assert (await e.q(f"_http._tcp.{SVC}.{NS}.svc.{Z}", "SRV")).srv == {(0, 50, 80, f"{SVC}.{NS}.svc.{Z}.")}
        finally:
            await e.close()
        e = await self.setup_env(True)
        try:
            assert (await e.q(f"_https._tcp.{SVC}.{NS}.svc.{Z}", "SRV")).srv == {
                (0, 50, 443, f"web-0.c1.{SVC}.{NS}.svc.{Z}."), (0, 50, 443, f"web-1.c1.{SVC}.{NS}.svc.{Z}."),
                (0, 50, 443, f"web-0.c2.{SVC}.{NS}.svc.{Z}.")}
        finally:
            await e.close()

    async def test_port_protocol_cluster_srv(self) -> None:
        e = await self.setup_env(False)
        try:
            assert (await e.q(f"_https._tcp.c2.{SVC}.{NS}.svc.{Z}", "SRV")).srv == {
                (0, 50, 443, f"c2.{SVC}.{NS}.svc.{Z}.")}
            assert (await e.q(f"_https._tcp.c3.{SVC}.{NS}.svc.{Z}", "SRV")).nodata
        finally:
            await e.close()
        e = await self.setup_env(True)
        try:
            assert (await e.q(f"_http._tcp.c3.{SVC}.{NS}.svc.{Z}", "SRV")).srv == {
                (0, 50, 80, f"web-0.c3.{SVC}.{NS}.svc.{Z}.")}
        finally:
            await e.close()

    @pytest.mark.parametrize("headless", [False, True])
    @pytest.mark.parametrize("name", [f"x.{NS}.pod.{Z}", Z, f"svc.{Z}", f"{NS}.svc.{Z}",
                                      f"a.b.c.{SVC}.{NS}.svc.{Z}"])
    async def test_invalid_forms_nxdomain(self, headless: bool, name: str) -> None:
        e = await self.setup_env(headless)
        try:
            for qtype in ("A", "AAAA", "SRV"):
                if qtype == "SRV" and name.startswith("a.b.c."):
                    name = "z." + name
                assert (await e.q(name, qtype)).rcode == NXDOMAIN
        finally:
            await e.close()


# == §3.2 / §3.3 selection ==================================================================================


class TestSelection:
    async def test_clusterset_ip_first_even_without_connectivity_or_eps(self) -> None:
        e = await Env.start(cluster_id="c1", submariner=True)
        try:
            await e.add_si(ips=["243.0.0.5", "243.0.0.6"], ports=(HTTP, DNS_UDP))
            r = await e.q(f"{SVC}.{NS}.svc.{Z}")
            assert r.ips == {"243.0.0.5"}  # ips[0] only
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}", "SRV")).srv == {
                (0, 50, 80, f"{SVC}.{NS}.svc.{Z}."), (0, 50, 53, f"{SVC}.{NS}.svc.{Z}.")}  # SI ports
            await e.add_eps("c1", "10.1.0.10")
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).ip == "243.0.0.5"
        finally:
            await e.close()

    async def test_local_first_without_connectivity_and_without_advancing(self) -> None:
        e = await Env.start(cluster_id="c1", submariner=True)
        try:
            await e.add_si()
            for i in (1, 2, 3):
                await e.add_eps(f"c{i}", f"10.{i}.0.10")
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.1.0.10"  # no Gateway yet: nothing connected
            await e.gateway("c1", {"c2": "connected", "c3": "connected"})
            for _ in range(3):
                assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.1.0.10"
            await e.put_eps("c1", "10.1.0.10", ready=False)  # lighthouse#1090: fail over promptly
            picks = [(await e.q(f"{SVC}.{NS}.svc.{Z}")).ip for _ in range(2)]
            assert sorted(picks) == ["10.2.0.10", "10.3.0.10"]  # rotation starts from scratch: not advanced
        finally:
            await e.close()

    async def test_round_robin_skips_disconnected_and_unhealthy(self) -> None:
        e = await Env.start(cluster_id="c0", submariner=True)
        try:
            await e.add_si()
            for i in (1, 2, 3, 4):
                await e.add_eps(f"c{i}", f"10.{i}.0.10", ready=i != 4)
            await e.gateway("c0", {"c1": "connected", "c2": "connected", "c3": "connecting", "c4": "connected"})
            picks = {(await e.q(f"{SVC}.{NS}.svc.{Z}")).ip for _ in range(12)}
            assert picks == {"10.1.0.10", "10.2.0.10"}
        finally:
            await e.close()

    async def test_nothing_qualifies_is_nodata_also_without_eps(self) -> None:
        e = await Env.start(submariner=True)
        try:
            await e.add_si()
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).nodata
            await e.add_eps("c1", "10.1.0.10")
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).nodata  # no Gateway: not connected
        finally:
            await e.close()

    async def test_round_robin_n_queries_n_ips_then_repeat(self, env: Env) -> None:
        await three_clusters(env)
        picks = [(await env.q(f"{SVC}.{NS}.svc.{Z}")).ip for _ in range(9)]
        assert len(set(picks[:3])) == 3
        assert picks[3:6] == picks[:3] and picks[6:9] == picks[:3]

    async def test_round_robin_srv_advances_too(self, env: Env) -> None:
        await three_clusters(env)
        first = (await env.q(f"{SVC}.{NS}.svc.{Z}")).ip
        await env.q(f"{SVC}.{NS}.svc.{Z}", "SRV")
        await env.q(f"{SVC}.{NS}.svc.{Z}", "SRV")
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).ip == first

    async def test_round_robin_variants_are_the_next_picks(self, env: Env) -> None:
        """The cached variants are exactly what the following lookups would return."""
        await three_clusters(env)
        r = await env.q(f"{SVC}.{NS}.svc.{Z}")
        assert r.result.cache is not None and r.result.cache.variants is not None
        variants = [{rd.address for rrset in v.answer for rd in rrset} for v in r.result.cache.variants]
        following = [(await env.q(f"{SVC}.{NS}.svc.{Z}")).ips for _ in range(2)]
        assert variants == following
        assert len({r.ip, *(v.pop() for v in variants)}) == 3


class TestBalancer:
    def test_add_rejects_null_negative_and_duplicate(self) -> None:
        b: Balancer[str] = Balancer()
        b.add("a", 1)
        for item, weight in ((None, 1), ("b", -1), ("a", 2)):
            with pytest.raises(ValueError):
                b.add(item, weight)
        assert len(b) == 1

    def test_empty_and_single(self) -> None:
        b: Balancer[str] = Balancer()
        assert b.next() is None
        b.add("only", 3)
        assert [b.next() for _ in range(3)] == ["only"] * 3

    def test_smooth_weighted_sequence(self) -> None:
        b: Balancer[str] = Balancer()
        for item, weight in (("a", 5), ("b", 1), ("c", 1)):
            b.add(item, weight)
        assert [b.next() for _ in range(7)] == ["a", "a", "b", "a", "c", "a", "a"]

    def test_equal_weights_strict_insertion_order(self) -> None:
        b: Balancer[str] = Balancer()
        for item in "xyz":
            b.add(item, 1)
        assert [b.next() for _ in range(6)] == list("xyzxyz")

    def test_skip_avoids_an_item_for_about_a_round(self) -> None:
        b: Balancer[str] = Balancer()
        for item in "abc":
            b.add(item, 1)
        assert b.next() == "a"
        b.skip("b")  # b was next; its effective weight drops to 0 and recovers by one per round
        assert [b.next() for _ in range(5)] == ["c", "b", "a", "c", "b"]

    def test_zero_weight_is_never_preferred(self) -> None:
        b: Balancer[str] = Balancer()
        b.add("a", 1)
        b.add("z", 0)
        assert [b.next() for _ in range(4)] == ["a"] * 4

    def test_clone_is_independent(self) -> None:
        b: Balancer[str] = Balancer()
        for item in "abc":
            b.add(item, 1)
        c = b.clone()
        assert [c.next() for _ in range(2)] == ["a", "b"]
        assert b.next() == "a"


# == §3.5-3.7 ports, connectivity, health ==================================================================


class TestConnectivity:
    async def test_without_submariner_object_everything_is_connected(self, env: Env) -> None:
        await env.add_si(headless=True)
        await env.add_eps("c7", "10.7.1.1", headless=True)
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).ips == {"10.7.1.1"}

    async def test_before_any_gateway_nothing_is_connected_not_even_local(self) -> None:
        e = await Env.start(cluster_id="c1", submariner=True)
        try:
            await e.add_si(headless=True)
            await e.add_eps("c1", "10.1.1.1", headless=True)
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).nodata
            await e.gateway("c1", {})
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).ips == {"10.1.1.1"}
        finally:
            await e.close()

    async def test_gateway_local_id_overrides_env_and_passive_contributes_only_local(self) -> None:
        e = await Env.start(cluster_id="env-id", submariner=True)
        try:
            await e.add_si()
            await e.add_eps("real", "10.0.0.1")
            await e.add_eps("c2", "10.2.0.10")
            await e.gateway("real", {"c2": "connected"}, ha="passive")
            assert e.model.local_cluster_id == "real"
            assert e.model.is_connected("real") and not e.model.is_connected("c2")
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.0.0.1"  # local first uses the Gateway's ID
        finally:
            await e.close()

    async def test_connection_status_marks_and_unmarks(self) -> None:
        e = await Env.start(submariner=True)
        try:
            await e.gateway("c0", {"c1": "connected", "c2": "connecting"})
            assert e.model.is_connected("c1") and not e.model.is_connected("c2")
            await e.gateway("c0", {"c1": "error", "c2": "connected"})
            assert not e.model.is_connected("c1") and e.model.is_connected("c2")
            assert not e.model.is_connected("unknown")
        finally:
            await e.close()

    async def test_ports_merged_over_all_clusters_connected_or_not(self) -> None:
        e = await Env.start(submariner=True)
        try:
            await e.add_si()
            await e.add_eps("c1", "10.1.0.10", ports=(HTTP, HTTPS))
            await e.add_eps("c2", "10.2.0.10", ports=(HTTP,), ready=False)
            await e.gateway("c0", {"c1": "connected"})
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}", "SRV")).srv == {(0, 50, 80, f"{SVC}.{NS}.svc.{Z}.")}
        finally:
            await e.close()


class TestHealth:
    async def test_clusterip_health_from_first_endpoint_nil_is_ready(self, env: Env) -> None:
        await env.add_si()
        await env.add_eps("c1", "10.1.0.10", ready=None)
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.1.0.10"
        await env.put_eps("c1", "10.1.0.10", ready=False)
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).nodata

    async def test_headless_not_ready_excluded_unless_published(self, env: Env) -> None:
        await env.add_si(headless=True)
        endpoints = [ep("10.1.1.1", ready=None), ep("10.1.1.2", ready=False), ep("10.1.1.3", ready=True)]
        await env.add_eps("c1", headless=True, endpoints=endpoints)
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).ips == {"10.1.1.1", "10.1.1.3"}
        await env.put_eps("c1", headless=True, endpoints=endpoints,
                          annotations={"lighthouse.submariner.io/publish-not-ready-addresses": "true"})
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).ips == {"10.1.1.1", "10.1.1.2", "10.1.1.3"}

    async def test_each_address_is_a_record_and_duplicates_across_slices_collapse(self, env: Env) -> None:
        await env.add_si(headless=True)
        await env.add_eps("c1", headless=True, name="a", endpoints=[ep("10.1.1.1", "10.1.1.2", hostname="db-0")])
        await env.add_eps("c1", headless=True, name="b", endpoints=[ep("10.1.1.2", hostname="db-0")])
        assert (await env.q(f"db-0.c1.{SVC}.{NS}.svc.{Z}")).ips == {"10.1.1.1", "10.1.1.2"}
        assert len((await env.q(f"{SVC}.{NS}.svc.{Z}")).rrs(dns.rdatatype.A)) == 2

    async def test_hostname_from_pod_target_ref(self, env: Env) -> None:
        await env.add_si(headless=True)
        await env.add_eps("c1", headless=True, endpoints=[ep("10.1.1.1", pod="web-7", kind="POD"),
                                                          ep("10.1.1.2", pod="not-a-pod", kind="Node")])
        assert (await env.q(f"web-7.c1.{SVC}.{NS}.svc.{Z}")).ip == "10.1.1.1"
        assert (await env.q(f"not-a-pod.c1.{SVC}.{NS}.svc.{Z}")).rcode == NXDOMAIN


# == §4 answers ===========================================================================================


class TestAnswers:
    async def test_owner_is_qname_as_received_and_ttl(self) -> None:
        e = await Env.start("ttl 30")
        try:
            await e.add_si()
            await e.add_eps("c1", "10.1.0.10")
            r = await e.q("NGINX.Default.svc.ClusterSet.local")
            assert r.msg is not None
            (rrset,) = r.msg.answer
            assert rrset.name.to_text() == "NGINX.Default.svc.ClusterSet.local." and rrset.ttl == 30
            (srv,) = (await e.q(f"{SVC}.{NS}.svc.{Z}", "SRV")).msg.answer  # type: ignore[union-attr]
            assert srv.ttl == 30
        finally:
            await e.close()

    async def test_default_ttl_is_5(self, env: Env) -> None:
        await env.add_si()
        await env.add_eps("c1", "10.1.0.10")
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).msg.answer[0].ttl == 5  # type: ignore[union-attr]

    async def test_srv_targets_use_query_case_for_the_zone(self, env: Env) -> None:
        await env.add_si()
        await env.add_eps("c1", "10.1.0.10")
        r = await env.q(f"C1.{SVC}.{NS}.svc.ClusterSet.Local", "SRV")
        (rd,) = r.rrs(dns.rdatatype.SRV)
        assert rd.target == dns.name.from_text(f"c1.{SVC}.{NS}.svc.{Z}.")
        assert (rd.priority, rd.weight, rd.port) == (0, 50, 80)

    async def test_unnamed_ports_have_srv_in_the_bare_form(self, env: Env) -> None:
        await env.add_si()
        await env.add_eps("c1", "10.1.0.10", ports=({"protocol": "TCP", "port": 8080},))
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}", "SRV")).srv == {(0, 50, 8080, f"{SVC}.{NS}.svc.{Z}.")}

    async def test_every_answer_is_cacheable_under_a_scope(self, env: Env) -> None:
        await three_clusters(env)
        for name, qtype in ((f"{SVC}.{NS}.svc.{Z}", "A"), (f"missing.{NS}.svc.{Z}", "A"), ("example.org", "A"),
                            (f"{SVC}.{NS}.svc.{Z}", "MX"), (f"c1.{SVC}.{NS}.svc.{Z}", "SRV"),
                            (f"{SVC}.{NS}.svc.{Z}", "AAAA")):
            assert (await env.q(name, qtype)).result.cache is not None

    async def test_changes_invalidate_only_the_affected_service(self, env: Env) -> None:
        await three_clusters(env)
        await env.add_si("other")
        await env.add_eps("c1", "10.1.0.99", svc="other")
        nginx = (await env.q(f"{SVC}.{NS}.svc.{Z}")).result.cache
        other = (await env.q(f"other.{NS}.svc.{Z}")).result.cache
        absent = (await env.q(f"missing.{NS}.svc.{Z}")).result.cache
        assert nginx is not None and other is not None and absent is not None
        gens = (nginx.scope.generation, other.scope.generation, absent.scope.generation)
        await env.put_eps("c1", "10.1.0.11", svc="other")
        assert nginx.scope.generation == gens[0] and other.scope.generation > gens[1]
        assert absent.scope.generation == gens[2]
        await env.add_si("missing")
        assert absent.scope.generation > gens[2]


# == §6 data sources and model ============================================================================


class TestDataSources:
    async def test_eps_before_si_appears_when_si_arrives(self, env: Env) -> None:
        await env.add_eps("c1", "10.1.0.10")
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).rcode == NXDOMAIN
        await env.add_si()
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.1.0.10"

    async def test_si_delete_keeps_answering_from_remaining_eps(self, env: Env) -> None:
        imp = await env.add_si()
        one = await env.add_eps("c1", "10.1.0.10")
        two = await env.add_eps("c2", "10.2.0.10")
        await env.delete(SERVICE_IMPORTS, imp)
        assert (await env.q(f"c1.{SVC}.{NS}.svc.{Z}")).ip == "10.1.0.10"
        await env.delete(ENDPOINT_SLICES, one)
        assert (await env.q(f"c1.{SVC}.{NS}.svc.{Z}")).rcode == NXDOMAIN
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.2.0.10"
        await env.delete(ENDPOINT_SLICES, two)
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).rcode == NXDOMAIN

    async def test_si_without_clusters_deleted_is_gone(self, env: Env) -> None:
        imp = await env.add_si()
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).nodata
        await env.delete(SERVICE_IMPORTS, imp)
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).rcode == NXDOMAIN

    async def test_headless_delete_rebuilds_from_remaining_slices(self, env: Env) -> None:
        await env.add_si(headless=True)
        a = await env.add_eps("c1", "10.1.1.1", headless=True, name="a")
        await env.add_eps("c1", "10.1.1.2", headless=True, name="b")
        await env.delete(ENDPOINT_SLICES, a)
        assert (await env.q(f"c1.{SVC}.{NS}.svc.{Z}")).ips == {"10.1.1.2"}

    @pytest.mark.parametrize("what", ["label service-name", "annotation service-name"])
    async def test_ignored_service_imports(self, env: Env, what: str) -> None:
        key = "multicluster.kubernetes.io/service-name"
        obj = si(labels={key: SVC}) if what.startswith("label") else si(annotations={key: SVC})
        await env.create(SERVICE_IMPORTS, obj)
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).rcode == NXDOMAIN

    async def test_broker_copy_and_incomplete_and_legacy_slices_ignored(self, env: Env) -> None:
        await env.add_si()
        await env.add_eps("c1", "10.1.0.10", namespace="submariner-k8s-broker")  # copy in the broker namespace
        await env.add_eps("c2", "10.2.0.10", drop=["multicluster.kubernetes.io/source-cluster"])
        await env.add_eps("c3", "10.3.0.10", is_headless_label=None)  # pre-0.15 legacy
        await env.create(ENDPOINT_SLICES, eps("c4", "10.4.0.10", drop=["endpointslice.kubernetes.io/managed-by"]),
                         sync=False)
        await env.add_eps("c5", "10.5.0.10")  # applied after all the others
        for c in ("c1", "c2", "c3", "c4"):
            assert (await env.q(f"{c}.{SVC}.{NS}.svc.{Z}")).rcode == NXDOMAIN
        assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.5.0.10"

    async def test_local_headless_globalnet_uses_local_kubernetes_slices(self) -> None:
        e = await Env.start(cluster_id="c1")
        try:
            await e.add_si(headless=True)
            k8s = {"metadata": {"name": "nginx-abcde", "namespace": NS,
                                "labels": {"kubernetes.io/service-name": SVC}},
                   "addressType": "IPv4", "ports": [HTTP],
                   "endpoints": [ep("10.244.0.5", hostname="web-0"), ep("10.244.0.6", hostname="web-1", ready=False)]}
            await e.create(ENDPOINT_SLICES, k8s, sync=False)
            gn = {"lighthouse.submariner.io/globalnet-enabled": "true"}
            await e.add_eps("c1", headless=True, name="nginx-local", annotations=gn, source_name="nginx-abcde",
                            endpoints=[ep("242.0.0.5", hostname="web-0"), ep("242.0.0.6", hostname="web-1")])
            await e.add_eps("c2", headless=True, annotations=gn, endpoints=[ep("242.1.0.5", hostname="web-0")])
            assert (await e.q(f"c1.{SVC}.{NS}.svc.{Z}")).ips == {"10.244.0.5"}  # pod IPs, readiness of pods
            assert (await e.q(f"web-0.c1.{SVC}.{NS}.svc.{Z}")).ips == {"10.244.0.5"}
            assert (await e.q(f"c2.{SVC}.{NS}.svc.{Z}")).ips == {"242.1.0.5"}  # remote: global IPs
        finally:
            await e.close()

    async def test_local_headless_globalnet_missing_local_slices_are_retried(self) -> None:
        e = await Env.start(cluster_id="c1")
        try:
            await e.add_si(headless=True)
            await e.add_eps("c1", headless=True, name="nginx-local", source_name="nginx-abcde",
                            annotations={"lighthouse.submariner.io/globalnet-enabled": "true"},
                            endpoints=[ep("242.0.0.5", hostname="web-0")])
            assert (await e.q(f"c1.{SVC}.{NS}.svc.{Z}")).nodata  # never the unroutable global IP
            k8s = {"metadata": {"name": "nginx-abcde", "namespace": NS,
                                "labels": {"kubernetes.io/service-name": SVC}},
                   "addressType": "IPv4", "ports": [HTTP], "endpoints": [ep("10.244.0.5", hostname="web-0")]}
            e.fake.resource(ENDPOINT_SLICES).create(k8s)

            async def retried() -> bool:
                return (await e.q(f"c1.{SVC}.{NS}.svc.{Z}")).ips == {"10.244.0.5"}

            for _ in range(400):
                if await retried():
                    break
                await asyncio.sleep(0.01)
            assert await retried()
        finally:
            await e.close()

    async def test_globalnet_false_uses_the_slice(self) -> None:
        e = await Env.start(cluster_id="c1")
        try:
            await e.add_si(headless=True)
            await e.add_eps("c1", "10.1.1.1", headless=True)  # helper default: globalnet-enabled "false"
            assert (await e.q(f"c1.{SVC}.{NS}.svc.{Z}")).ips == {"10.1.1.1"}
        finally:
            await e.close()


class TestModel:
    """The model on plain dicts (no cluster, no DNS)."""

    def test_resolve_returns_records_headless_found(self) -> None:
        m = Model()
        m.apply_service_import("add", si())
        m.apply_endpoint_slice("add", eps("c1", "10.1.0.10", ports=(HTTP, DNS_UDP)))
        records, headless, found = m.resolve(NS, SVC, "c1", "", 4)
        assert found and not headless
        (rec,) = records
        assert (rec.ip, rec.cluster, rec.ports) == ("10.1.0.10", "c1", (Port("http", "TCP", 80, ""),
                                                                        Port("dns", "UDP", 53, "")))
        assert m.resolve(NS, "missing", "", "", 4) == ((), False, False)

    def test_accepts_informer_event_names(self) -> None:
        m = Model()
        m.apply_service_import("ADDED", si())
        m.apply_endpoint_slice("MODIFIED", eps("c1", "10.1.0.10"))
        assert m.resolve(NS, SVC, "c1")[2]
        with pytest.raises(ValueError):
            m.apply_gateway("bogus", {})

    def test_listeners_hear_per_service_changes_and_no_ops_are_silent(self) -> None:
        m = Model()
        heard: list[Any] = []
        m.subscribe(lambda key, existence: heard.append((key, existence)))
        m.apply_service_import("add", si())
        m.apply_endpoint_slice("add", eps("c1", "10.1.0.10"))
        m.apply_endpoint_slice("update", eps("c1", "10.1.0.10"))  # same content
        m.apply_gateway("add", {"metadata": {"name": "g", "namespace": OP_NS}, "status": gateway("c1", {})})
        m.apply_gateway("update", {"metadata": {"name": "g", "namespace": OP_NS}, "status": gateway("c1", {})})
        assert heard == [((NS, SVC), True), ((NS, SVC), False), (None, False)]

    def test_ipv6_slices_form_their_own_family(self) -> None:
        m = Model()
        m.apply_service_import("add", si())
        m.apply_endpoint_slice("add", eps("c1", "10.1.0.10"))
        m.apply_endpoint_slice("add", eps("c1", "fd00::10"))
        assert [r.ip for r in m.resolve(NS, SVC, "c1", "", 4)[0]] == ["10.1.0.10"]
        assert [r.ip for r in m.resolve(NS, SVC, "c1", "", 6)[0]] == ["fd00::10"]

    def test_rotation_previews_without_advancing(self) -> None:
        m = Model(track_connectivity=False)
        m.apply_service_import("add", si())
        for i in (1, 2, 3):
            m.apply_endpoint_slice("add", eps(f"c{i}", f"10.{i}.0.10"))
        assert [r.cluster for r in m.rotation(NS, SVC)] == ["c1", "c2", "c3"]
        assert [r.cluster for r in m.rotation(NS, SVC)] == ["c1", "c2", "c3"]
        assert m.resolve(NS, SVC)[0][0].cluster == "c1"
        assert [r.cluster for r in m.rotation(NS, SVC)] == ["c2", "c3", "c1"]

    def test_synthesized_label(self) -> None:
        assert synthesized_label("100.96.1.5") == "100-96-1-5"
        assert synthesized_label("fd00::1") == "fd00--1"


# == §6.3 metric ===========================================================================================


class TestMetric:
    async def test_counted_per_record_for_a_and_srv_only_when_found(self, env: Env) -> None:
        await env.add_si(headless=True)
        await env.add_eps("c1", "10.1.1.1", "10.1.1.2", headless=True)
        await env.q(f"{SVC}.{NS}.svc.{Z}")
        await env.q(f"_none._tcp.{SVC}.{NS}.svc.{Z}", "SRV")  # counted before the port filter
        await env.q(f"{SVC}.{NS}.svc.{Z}", "AAAA")
        await env.q(f"missing.{NS}.svc.{Z}")
        assert env.count("c1", "10.1.1.1") == 2 and env.count("c1", "10.1.1.2") == 2
        assert sum(env.metric.values.values()) == 4

    async def test_labels(self) -> None:
        e = await Env.start(cluster_id="here")
        try:
            await e.add_si()
            await e.add_eps("c2", "10.2.0.10")
            await e.q(f"{SVC}.{NS}.svc.{Z}")
            assert e.metric.values == {("here", "c2", SVC, NS, "10.2.0.10"): 1.0}
        finally:
            await e.close()

    async def test_cache_hits_follow_the_cached_rotation(self, env: Env) -> None:
        """What the server does on hits: the cache serves reply h % 3 on hit h and counts it; folding those
        counts (at scrape time) adds each reply's metric labels (`CachePolicy.hit_tags`) as often as it was served."""
        await three_clusters(env)
        req = make_request(f"{SVC}.{NS}.svc.{Z}")
        result = await env.handler(req)
        assert result.cache is not None and result.cache.variants is not None and result.msg is not None
        replies = [result.msg, *result.cache.variants]
        order = [next(iter(m.answer[0])).address for m in replies]
        observer = env.c.block.observers[0]
        assert env.c.block.counters == [observer] and not env.c.block.eager
        assert result.cache.hit_tags is not None and len(result.cache.hit_tags[observer]) == 3
        info = AnswerInfo(qtype=1, qclass=1, rcode=0, plugin="lighthouse", zone=Z + ".", server=req.server,
                          do=False, bufsize=512, counters=(observer,))  # type: ignore[arg-type]
        cache = AnswerCache()
        assert cache.insert(req.wire, [m.to_wire() for m in replies], result.cache.scope, 60, info,
                            result.cache.generation, result.cache.hit_tags)
        served = []
        for _ in range(6):
            hit = cache.lookup(req.wire)
            assert hit is not None
            served.append(dns.message.from_wire(hit[0]).answer[0][0].address)
        assert served == [order[1], order[2], order[0]] * 2
        assert {ip: env.count(f"c{ip.split('.')[1]}", ip) for ip in order} == {order[0]: 1, order[1]: 0, order[2]: 0}
        cache.fold_all()
        counts = {ip: env.count(f"c{ip.split('.')[1]}", ip) for ip in order}
        assert counts == {order[0]: 3, order[1]: 2, order[2]: 2}  # the miss + hits 1,2,0,1,2,0
        cache.fold_all()  # nothing new: nothing added
        assert {ip: env.count(f"c{ip.split('.')[1]}", ip) for ip in order} == counts


# == §8 beyond upstream ====================================================================================


class TestExtras:
    async def test_aaaa_from_ipv6_slices_with_own_rotation(self, env: Env) -> None:
        await env.add_si()
        for i in (1, 2):
            await env.add_eps(f"c{i}", f"10.{i}.0.10")
            await env.add_eps(f"c{i}", f"fd00::{i}")
        assert {(await env.q(f"{SVC}.{NS}.svc.{Z}", "AAAA")).ip for _ in range(2)} == {"fd00::1", "fd00::2"}
        assert (await env.q(f"c2.{SVC}.{NS}.svc.{Z}", "AAAA")).ip == "fd00::2"

    async def test_aaaa_off_is_nodata(self) -> None:
        e = await Env.start("aaaa off")
        try:
            await e.add_si()
            await e.add_eps("c1", "fd00::1")
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}", "AAAA")).nodata
            assert (await e.q(f"missing.{NS}.svc.{Z}", "AAAA")).rcode == NXDOMAIN
        finally:
            await e.close()

    async def test_dns_version_txt(self, env: Env) -> None:
        r = await env.q(f"dns-version.{Z}", "TXT")
        (rd,) = r.rrs(dns.rdatatype.TXT)
        assert rd.strings == (b"1.0.0",) and r.msg is not None and r.msg.flags & dns.flags.AA
        assert r.msg.answer[0].ttl == 5
        assert (await env.q(f"x.dns-version.{Z}", "TXT")).rcode == NOTIMP
        assert (await env.q(f"dns-version.{Z}", "A")).rcode == NXDOMAIN

    async def test_dns_version_off(self) -> None:
        e = await Env.start("dns_version off")
        try:
            assert (await e.q(f"dns-version.{Z}", "TXT")).rcode == NOTIMP
        finally:
            await e.close()

    async def test_ptr_for_clusterset_ips(self) -> None:
        e = await Env.start("ptr 243.0.0.0/8", keys=f"{Z} 243.0.0.0/8")
        try:
            await e.add_si(ips=["243.0.0.7"])
            r = await e.q("7.0.0.243.in-addr.arpa", "PTR")
            assert {rd.target.to_text() for rd in r.rrs(dns.rdatatype.PTR)} == {f"{SVC}.{NS}.svc.{Z}."}
            assert r.msg is not None and r.msg.flags & dns.flags.AA
            miss = await e.q("8.0.0.243.in-addr.arpa", "PTR")
            assert miss.rcode == NXDOMAIN and miss.soa and miss.msg.authority[0].name.to_text() == "243.in-addr.arpa."  # type: ignore[union-attr]
            assert (await e.q("7.0.0.243.in-addr.arpa", "A")).rcode == NOTIMP
            await e.add_eps("c1", "243.0.0.9")
            assert (await e.q("9.0.0.243.in-addr.arpa", "PTR")).rcode == NXDOMAIN  # per-cluster IPs: no PTR
        finally:
            await e.close()

    async def test_ptr_off_by_default(self) -> None:
        e = await Env.start(keys=f"{Z} 243.0.0.0/8")  # the reverse key becomes a lighthouse zone, as upstream
        try:
            await e.add_si(ips=["243.0.0.7"])
            assert (await e.q("7.0.0.243.in-addr.arpa", "PTR")).rcode == NOTIMP
        finally:
            await e.close()

    async def test_soa_on_negative_answers(self) -> None:
        e = await Env.start("ttl 17")
        try:
            await e.add_si()
            for name, qtype in ((f"missing.{NS}.svc.{Z}", "A"), (f"{SVC}.{NS}.svc.{Z}", "A"),
                                (f"x.{NS}.pod.{Z}", "A")):
                r = await e.q(name, qtype)
                (soa,) = r.soa
                assert soa.minimum == 17 and r.msg.authority[0].name.to_text() == f"{Z}."  # type: ignore[union-attr]
                assert r.msg.authority[0].ttl == 17  # type: ignore[union-attr]
            assert not (await e.q("example.org")).soa  # NOTZONE: none
            assert not (await e.q(f"{SVC}.{NS}.svc.{Z}", "MX")).soa  # NOTIMP: none
        finally:
            await e.close()

    async def test_soa_off_is_upstream_empty_authority(self) -> None:
        e = await Env.start("soa off")
        try:
            await e.add_si()
            for name in (f"missing.{NS}.svc.{Z}", f"{SVC}.{NS}.svc.{Z}"):
                r = await e.q(name)
                assert r.msg is not None and not r.msg.authority and not r.msg.additional
        finally:
            await e.close()

    async def test_srv_glue(self) -> None:
        e = await Env.start("srv_glue on")
        try:
            await e.add_si(headless=True)
            await e.add_eps("c1", headless=True, endpoints=[ep("10.1.1.1", hostname="a"),
                                                            ep("fd00::5", hostname="a")])
            r = await e.q(f"{SVC}.{NS}.svc.{Z}", "SRV")
            assert r.srv == {(0, 50, 80, f"a.c1.{SVC}.{NS}.svc.{Z}.")}
            glue = {(rrset.name.to_text(), rd.address) for rrset in r.msg.additional for rd in rrset}  # type: ignore[union-attr]
            assert glue == {(f"a.c1.{SVC}.{NS}.svc.{Z}.", "10.1.1.1")}
            await e.add_si("vip", ips=["243.0.0.1"])
            r = await e.q(f"vip.{NS}.svc.{Z}", "SRV")
            assert {rd.address for rrset in r.msg.additional for rd in rrset} == {"243.0.0.1"}  # type: ignore[union-attr]
        finally:
            await e.close()

    async def test_address_filter(self) -> None:
        bad = ["0.0.0.0", "127.0.0.1", "169.254.1.1", "224.0.0.1", "255.255.255.255", "::1", "fe80::1", "not-an-ip"]
        for on in (True, False):
            e = await Env.start("" if on else "address_filter off")
            try:
                await e.add_si(headless=True)
                await e.add_eps("c1", *bad[:5], "10.1.1.1", headless=True)
                await e.add_si("cip")
                await e.add_eps("c1", "127.0.0.1", svc="cip")
                ips = (await e.q(f"{SVC}.{NS}.svc.{Z}")).ips
                if on:
                    assert ips == {"10.1.1.1"}
                    assert (await e.q(f"c1.cip.{NS}.svc.{Z}")).rcode == NXDOMAIN  # ClusterIP entry dropped
                else:
                    assert ips == {*bad[:5], "10.1.1.1"}
                    assert (await e.q(f"c1.cip.{NS}.svc.{Z}")).ip == "127.0.0.1"
            finally:
                await e.close()

    async def test_strict_mcs(self) -> None:
        e = await Env.start("strict_mcs on")
        try:
            await e.add_si()
            await e.add_eps("c1", "10.1.0.10")
            await e.add_si("hl", headless=True)
            await e.add_eps("c1", "10.1.1.1", svc="hl", headless=True)
            assert (await e.q(f"c1.{SVC}.{NS}.svc.{Z}")).rcode == NXDOMAIN
            assert (await e.q(f"c1.{SVC}.{NS}.svc.{Z}", "SRV")).rcode == NXDOMAIN
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.1.0.10"
            assert (await e.q(f"c1.hl.{NS}.svc.{Z}")).ip == "10.1.1.1"
        finally:
            await e.close()

    async def test_clusterset_mode(self) -> None:
        e = await Env.start("clusterset_mode on")
        try:
            await e.add_si()
            await e.add_eps("c1", "10.1.0.10")
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).rcode == NXDOMAIN
            assert (await e.q(f"c1.{SVC}.{NS}.svc.{Z}")).ip == "10.1.0.10"
            await e.add_si("vip", ips=["243.0.0.1"])
            assert (await e.q(f"vip.{NS}.svc.{Z}")).ip == "243.0.0.1"
            assert (await e.q(f"vip.{NS}.svc.{Z}", "AAAA")).nodata
        finally:
            await e.close()

    async def test_connectivity_grace(self) -> None:
        e = await Env.start("connectivity_grace 300ms", submariner=True)
        try:
            await e.add_si()
            await e.add_eps("c2", "10.2.0.10")
            await e.gateway("c1", {"c2": "connected"})
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.2.0.10"
            await e.gateway("c1", {})
            first = await e.q(f"{SVC}.{NS}.svc.{Z}")
            assert first.ip == "10.2.0.10"  # riding through a failover
            scope = first.result.cache.scope  # type: ignore[union-attr]
            gen = scope.generation
            await e.until(lambda: scope.generation > gen, timeout=3)  # the grace end invalidates the cache
            assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).nodata
        finally:
            await e.close()


# == §10 defects, one test each =============================================================================


async def test_D1_srv_filters_per_record(env: Env) -> None:
    await env.add_si(headless=True)
    await env.add_eps("c1", "10.1.1.1", headless=True, ports=(HTTPS,))  # no http port here
    await env.add_eps("c2", "10.2.1.1", headless=True, ports=(HTTP,))
    r = await env.q(f"_http._tcp.{SVC}.{NS}.svc.{Z}", "SRV")
    assert r.srv == {(0, 50, 80, f"10-2-1-1.c2.{SVC}.{NS}.svc.{Z}.")}


async def test_D2_si_spec_replaced_on_update(env: Env) -> None:
    imp = await env.add_si(ports=(HTTP,))
    await env.add_eps("c1", "10.1.0.10")
    assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.1.0.10"
    imp["spec"]["ips"] = ["243.0.0.9"]
    imp["spec"]["ports"] = [HTTP, DNS_UDP]
    await env.update(SERVICE_IMPORTS, imp)
    assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).ip == "243.0.0.9"
    assert (await env.q(f"_dns._udp.{SVC}.{NS}.svc.{Z}", "SRV")).srv == {(0, 50, 53, f"{SVC}.{NS}.svc.{Z}.")}


async def test_D3_aaaa_parsed_like_a_and_answered_from_ipv6(env: Env) -> None:
    await env.add_si(headless=True)
    await env.add_eps("c1", headless=True, endpoints=[ep("fd00::1", hostname="h"), ep("fd00::2", hostname="g")])
    assert (await env.q(f"h.c1.{SVC}.{NS}.svc.{Z}", "AAAA")).ip == "fd00::1"  # hostname not discarded
    assert (await env.q(f"x.c1.{SVC}.{NS}.svc.{Z}", "AAAA")).rcode == NXDOMAIN
    assert (await env.q(f"c9.{SVC}.{NS}.svc.{Z}", "AAAA")).rcode == NXDOMAIN
    assert (await env.q(f"a.b.c.{SVC}.{NS}.svc.{Z}", "AAAA")).rcode == NXDOMAIN  # length checked
    assert (await env.q(f"missing.{NS}.svc.{Z}", "AAAA")).rcode == NXDOMAIN  # found checked first


async def test_srv_for_an_ipv6_only_headless_service(env: Env) -> None:
    await env.add_si(headless=True)
    await env.add_eps("c1", headless=True, endpoints=[ep("fd00::7", hostname="db-0")])
    assert (await env.q(f"{SVC}.{NS}.svc.{Z}", "SRV")).srv == {(0, 50, 80, f"db-0.c1.{SVC}.{NS}.svc.{Z}.")}
    assert (await env.q(f"{SVC}.{NS}.svc.{Z}", "A")).nodata


async def test_D4_hostname_less_endpoint_gets_a_synthesized_label(env: Env) -> None:
    await env.add_si(headless=True)
    await env.add_eps("c1", headless=True, endpoints=[ep("10.1.1.5"), ep("fd00::7")])
    r = await env.q(f"{SVC}.{NS}.svc.{Z}", "SRV")
    assert r.srv == {(0, 50, 80, f"10-1-1-5.c1.{SVC}.{NS}.svc.{Z}.")}  # SRV from IPv4 data; never an empty label
    assert (await env.q(f"10-1-1-5.c1.{SVC}.{NS}.svc.{Z}")).ip == "10.1.1.5"
    assert (await env.q(f"fd00--7.c1.{SVC}.{NS}.svc.{Z}", "AAAA")).ip == "fd00::7"
    records, _, _ = env.model.resolve(NS, SVC, "c1", "", 4)
    assert records[0].hostname == ""  # the model keeps it empty


async def test_D5_merged_ports_plain_intersection() -> None:
    m = Model(track_connectivity=False)
    m.apply_service_import("add", si())
    for c, ports in (("c1", (HTTP, HTTPS)), ("c2", (DNS_UDP,)), ("c3", (HTTP, HTTPS))):
        m.apply_endpoint_slice("add", eps(c, f"10.{c[1]}.0.10", ports=ports))
    assert m.resolve(NS, SVC)[0][0].ports == ()  # empty stays empty, whatever the order
    m2 = Model(track_connectivity=False)
    m2.apply_service_import("add", si())
    app = {**HTTP, "appProtocol": "http2"}
    m2.apply_endpoint_slice("add", eps("c1", "10.1.0.10", ports=(HTTP, HTTPS)))
    m2.apply_endpoint_slice("add", eps("c2", "10.2.0.10", ports=(app, HTTPS)))  # appProtocol is in the key
    assert m2.resolve(NS, SVC)[0][0].ports == (Port("https", "TCP", 443, ""),)


async def test_D6_connectivity_recomputed_from_current_gateways() -> None:
    e = await Env.start(submariner=True)
    try:
        await e.add_si()
        await e.add_eps("c2", "10.2.0.10")
        await e.gateway("c1", {"c2": "connected"})
        assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.2.0.10"
        await e.gateway("c1", {})  # c2 vanished from the active Gateway's list
        assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).nodata
        await e.gateway("c1", {"c2": "connected"})
        assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.2.0.10"
        await e.delete_gateway()
        assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).nodata
        assert e.model.local_cluster_id == "c1"  # kept
    finally:
        await e.close()


async def test_D7_ipv6_never_in_a(env: Env) -> None:
    await env.add_si(headless=True)
    await env.add_eps("c1", headless=True, endpoints=[ep("10.1.1.1", "fd00::1")])
    assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).ips == {"10.1.1.1"}
    assert (await env.q(f"{SVC}.{NS}.svc.{Z}", "AAAA")).ips == {"fd00::1"}


async def test_D8_hostname_case_insensitive(env: Env) -> None:
    await env.add_si(headless=True)
    await env.add_eps("c1", headless=True, endpoints=[ep("10.1.1.1", hostname="Web-0")])
    assert (await env.q(f"web-0.c1.{SVC}.{NS}.svc.{Z}")).ip == "10.1.1.1"
    assert (await env.q(f"WEB-0.c1.{SVC}.{NS}.svc.{Z}")).ip == "10.1.1.1"
    r = await env.q(f"{SVC}.{NS}.svc.{Z}", "SRV")
    (rd,) = r.rrs(dns.rdatatype.SRV)
    assert rd.target.labels[0] == b"Web-0"  # stored case kept in targets


async def test_D9_balancer_rebuilt_only_on_cluster_set_change(env: Env) -> None:
    await three_clusters(env)
    first = [(await env.q(f"{SVC}.{NS}.svc.{Z}")).ip for _ in range(2)]
    assert first == ["10.1.0.10", "10.2.0.10"]  # sorted cluster order
    await env.put_eps("c1", "10.1.0.10", ready=False)  # readiness flip: position kept
    await env.put_eps("c1", "10.1.0.10", ready=True)
    assert (await env.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.3.0.10"
    await env.add_eps("c0", "10.0.0.10")  # the set changed: rebuilt in sorted order
    assert [(await env.q(f"{SVC}.{NS}.svc.{Z}")).ip for _ in range(4)] == [
        "10.0.0.10", "10.1.0.10", "10.2.0.10", "10.3.0.10"]


async def test_D10_srv_deduplicated(env: Env) -> None:
    await env.add_si(ports=(DNS_UDP, DNS_TCP))
    await env.add_eps("c1", "10.1.0.10", ports=(DNS_UDP, DNS_TCP))
    r = await env.q(f"{SVC}.{NS}.svc.{Z}", "SRV")
    assert len(r.rrs(dns.rdatatype.SRV)) == 1 and r.srv == {(0, 50, 53, f"{SVC}.{NS}.svc.{Z}.")}


async def test_D11_metric_monotonic_same_name_and_labels(env: Env) -> None:
    from prometheus_client import generate_latest

    await env.add_si()
    await env.add_eps("c1", "10.1.0.10")
    values = []
    for _ in range(3):
        await env.q(f"{SVC}.{NS}.svc.{Z}")
        values.append(env.count("c1", "10.1.0.10"))
    assert values == [1, 2, 3]
    text = generate_latest(env.process.registry).decode()
    assert ('submariner_service_discovery_query{destination_cluster="c1",destination_service_ip="10.1.0.10",'
            'destination_service_name="nginx",destination_service_namespace="default",source_cluster=""} 3.0'
            in text)
    assert "# TYPE submariner_service_discovery_query gauge" not in text


async def test_D12_not_ready_and_servfail_until_initial_lists_synced() -> None:
    fake = FakeCluster()
    fake.resource(SERVICE_IMPORTS).create(si())
    fake.fail_next("list", Unavailable("down"), plural="endpointslices", count=10_000)
    e = await Env.start(fake=fake, wait=False)
    try:
        await asyncio.sleep(0.3)
        assert not e.ready()
        assert (await e.q(f"missing.{NS}.svc.{Z}")).rcode == SERVFAIL  # clients retry instead of NXDOMAIN
        r = await e.q(f"{SVC}.{NS}.svc.{Z}")
        assert r.rcode == SERVFAIL and r.result.msg is None and r.result.cache is None
        assert (await e.q(f"x.{NS}.pod.{Z}")).rcode == NXDOMAIN  # data-independent answers are fine
        fake.resource(ENDPOINT_SLICES).create(eps("c1", "10.1.0.10"))
        with fake._lock:
            fake._faults.clear()
        await e.until(e.ready, timeout=10)
        assert (await e.q(f"{SVC}.{NS}.svc.{Z}")).ip == "10.1.0.10"
        assert (await e.q(f"missing.{NS}.svc.{Z}")).rcode == NXDOMAIN
    finally:
        await e.close()


# == robustness ===========================================================================================


def _static_plugin(options: str = "") -> lh.Lighthouse:
    opts = lh.parse_options(controller(f"{Z} {{\n lighthouse {{\n{options}\n }}\n}}" if options
                                       else f"{Z} {{\n lighthouse\n}}"))
    m = Model(track_connectivity=False)
    m.apply_service_import("add", si())
    m.apply_service_import("add", si("hl", headless=True))
    m.apply_service_import("add", si("vip", ips=["243.0.0.1"]))
    for i in (1, 2):
        m.apply_endpoint_slice("add", eps(f"c{i}", f"10.{i}.0.10"))
        m.apply_endpoint_slice("add", eps(f"c{i}", svc="hl", headless=True,
                                          endpoints=[ep(f"10.{i}.1.1", hostname="web-0"), ep(f"10.{i}.1.2")]))
    m.mark_synced()
    return lh.Lighthouse(opts, m)


_PLUGIN = _static_plugin("srv_glue on")
_label = st.one_of(st.sampled_from(["svc", "pod", "nginx", "hl", "vip", "default", "c1", "c2", "web-0", "_http",
                                    "_tcp", "http", "*", "NGINX", "10-1-1-2", "dns-version"]),
                   st.binary(min_size=1, max_size=63))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=st.lists(_label, max_size=8), qtype=st.sampled_from(["A", "AAAA", "SRV", "TXT", "PTR", "ANY", "MX"]))
def test_random_names_in_the_zone_always_get_a_valid_reply(labels: list[bytes | str], qtype: str) -> None:
    raw = tuple(label.encode() if isinstance(label, str) else label for label in labels)
    try:
        name = dns.name.Name((*raw, b"clusterset", b"local", b""))
    except dns.exception.DNSException:
        return
    q = dns.message.make_query(name, qtype)
    req = Request(msg=q, wire=q.to_wire(), remote=("10.0.0.1", 1), local=("10.0.0.2", 53), proto="udp",
                  server="dns://:53", zone=Z + ".", max_size=65535)
    result = _PLUGIN.answer(req)
    assert result is not None and result.msg is not None, result
    reply = dns.message.from_wire(result.msg.to_wire())
    assert reply.flags & dns.flags.AA and reply.id == q.id and reply.question == q.question
    assert int(reply.rcode()) in (NOERROR, NXDOMAIN, NOTIMP)
    for rrset in reply.answer:
        assert rrset.name == name


async def test_failure_to_build_the_reply_is_servfail_with_an_error() -> None:
    """§1.5: nothing is written, the handler returns SERVFAIL and the error (logged by `errors`)."""

    class Broken(Model):
        def resolve(self, *a: Any, **kw: Any) -> Any:
            raise ValueError("cannot build")

    m = Broken()
    m.mark_synced()
    plugin = lh.Lighthouse(lh.Options(zones=[Z + "."]), m)
    result = await plugin.serve(make_request(f"{SVC}.{NS}.svc.{Z}"))
    assert result.rcode == SERVFAIL and result.msg is None and result.cache is None
    assert result.error == "plugin/lighthouse: cannot build"


def test_answer_for_a_name_at_the_length_limit_is_valid() -> None:
    label = b"x" * 63
    name = dns.name.Name((label, label[:50], b"c1", b"hl", b"default", b"svc", b"clusterset", b"local", b""))
    for qtype in ("A", "SRV"):
        q = dns.message.make_query(name, qtype)
        req = Request(msg=q, wire=q.to_wire(), remote=("10.0.0.1", 1), local=("10.0.0.2", 53), proto="udp",
                      server="dns://:53", zone=Z + ".", max_size=65535)
        result = _PLUGIN.answer(req)
        assert result is not None and result.msg is not None
        dns.message.from_wire(result.msg.to_wire())


# == end to end through the server core ====================================================================


async def test_end_to_end_through_the_real_server(tmp_path: Any) -> None:
    """The `lighthouse-dns` App on port 0 with the operator's block (§5.2): readiness, UDP answers from the wire
    cache with rotation, the metric on /metrics, and a change reaching answers at once."""
    import dnstest

    fake = FakeCluster()
    fake.resource(SERVICE_IMPORTS).create(si())
    for i in (1, 2, 3):
        fake.resource(ENDPOINT_SLICES).create(eps(f"c{i}", f"10.{i}.0.10"))
    fake.fail_next("list", Unavailable("down"), plural="endpointslices", count=10_000)
    h = dnstest.Harness(tmp_path)
    h.process.kube = fake
    web = "127.0.0.1:0"
    await h.start(f"{Z}:0 {{\n lighthouse\n errors\n ready {web}\n prometheus {web}\n}}\n")
    loop = asyncio.get_running_loop()

    async def ask(name: str, qtype: str = "A") -> dns.message.Message:
        return await h.udp(dns.message.make_query(name, qtype))

    async def eventually(cond: Callable[[], Awaitable[bool]]) -> None:
        deadline = loop.time() + 10
        while not await cond():
            assert loop.time() < deadline
            await asyncio.sleep(0.005)

    try:
        assert await h.http(web, "/ready") == (503, "lighthouse")
        assert (await ask(f"{SVC}.{NS}.svc.{Z}")).rcode() == SERVFAIL  # D12
        with fake._lock:
            fake._faults.clear()

        async def ready() -> bool:
            return (await h.http(web, "/ready"))[0] == 200

        await eventually(ready)
        first = await ask(f"{SVC}.{NS}.svc.{Z}")
        assert first.flags & dns.flags.AA and first.answer[0].ttl == 5
        picks = [first.answer[0][0].address] + [
            (await ask(f"{SVC}.{NS}.svc.{Z}")).answer[0][0].address for _ in range(8)]
        assert len(set(picks[:3])) == 3 and picks[3:6] == picks[:3] and picks[6:] == picks[:3]
        assert h.server.runtime is not None and len(h.server.runtime.udp_cache) >= 1  # hits came from the cache
        status, text = await h.http(web, "/metrics")
        assert status == 200 and "# TYPE submariner_service_discovery_query untyped" in text
        for i in (1, 2, 3):
            assert (f'submariner_service_discovery_query{{destination_cluster="c{i}",destination_service_ip='
                    f'"10.{i}.0.10",destination_service_name="nginx",destination_service_namespace="default",'
                    f'source_cluster=""}} 3.0') in text

        slice3 = next(o for o in fake.objects(ENDPOINT_SLICES)
                      if o["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"] == "c3")
        fake.resource(ENDPOINT_SLICES).delete(NS, slice3["metadata"]["name"])

        async def gone() -> bool:
            return (await ask(f"c3.{SVC}.{NS}.svc.{Z}")).rcode() == NXDOMAIN

        await eventually(gone)
        picks = [(await ask(f"{SVC}.{NS}.svc.{Z}")).answer[0][0].address for _ in range(4)]
        assert sorted(set(picks)) == ["10.1.0.10", "10.2.0.10"]
        assert (await h.tcp(dns.message.make_query(f"{SVC}.{NS}.svc.{Z}", "SRV"))).answer[0][0].port == 80
    finally:
        await h.stop()


# == replies built in wire form ============================================================================


def _shape(msg: dns.message.Message | None) -> Any:
    """Everything a client sees of a reply, records in order (the wire path keeps the RRset order)."""
    if msg is None:
        return None
    parsed = dns.message.from_wire(msg.to_wire(want_shuffle=False))  # dnspython shuffles records by default

    def text(rd: Any) -> str:
        # The SOA serial is the time of the model's last change: two scenario runs may straddle a second.
        return rd.replace(serial=0).to_text() if rd.rdtype == dns.rdatatype.SOA else rd.to_text()

    return (int(parsed.flags), [[(rrset.name.to_text(), rrset.ttl, rrset.rdclass, rrset.rdtype,
                                             [text(rd) for rd in rrset]) for rrset in section]
                                           for section in parsed.sections])


async def _wire_scenario(options: str = "") -> Env:
    e = await Env.start(options, cluster_id="c1")
    await e.add_si()  # ClusterSetIP nginx: c2, c3 (round robin), dual-stack in c2
    for i in (2, 3):
        await e.add_eps(f"c{i}", f"10.{i}.0.10", ports=(HTTP, HTTPS))
    await e.add_eps("c2", "fd00::2", ports=(HTTP, HTTPS))
    await e.add_si("db", headless=True)
    await e.add_eps("c1", svc="db", headless=True, endpoints=[
        ep("10.1.1.1", hostname="web-0"), ep("10.1.1.2", hostname="Web-1"), ep("10.1.1.3", pod="db-xyz")])
    await e.add_eps("c3", "10.3.1.1", "10.3.1.1", svc="db", headless=True)
    return e


WIRE_QUERIES = [
    (f"{SVC}.{NS}.svc.{Z}", "A"), (f"NgInX.{NS}.SVC.ClusterSet.Local", "A"), (f"{SVC}.{NS}.svc.{Z}", "AAAA"),
    (f"{SVC}.{NS}.svc.{Z}", "SRV"), (f"_http._tcp.{SVC}.{NS}.svc.{Z}", "SRV"),
    (f"_none._udp.{SVC}.{NS}.svc.{Z}", "SRV"),
    (f"c2.{SVC}.{NS}.svc.{Z}", "A"), (f"C3.{SVC}.{NS}.svc.{Z}", "SRV"), (f"c9.{SVC}.{NS}.svc.{Z}", "A"),
    (f"db.{NS}.svc.{Z}", "A"), (f"db.{NS}.svc.{Z}", "SRV"), (f"web-0.c1.db.{NS}.svc.{Z}", "A"),
    (f"WEB-1.c1.db.{NS}.svc.{Z}", "A"), (f"db-xyz.c1.db.{NS}.svc.{Z}", "SRV"), (f"c3.db.{NS}.svc.{Z}", "A"),
    (f"web-9.c1.db.{NS}.svc.{Z}", "A"), (f"db.{NS}.svc.{Z}", "AAAA"), (f"missing.{NS}.svc.{Z}", "A"),
    (f"{NS}.svc.{Z}", "A"), (Z, "SRV"), (f"{SVC}.{NS}.svc.{Z}", "MX"), ("example.org", "A"),
    (f"{SVC}.{NS}.svc.{Z}", "TXT"), (f"dns-version.{Z}", "TXT"),
]


@pytest.mark.parametrize("options", ["", "soa off", "ttl 30", "srv_glue on"])
async def test_wire_replies_are_the_replies_dnspython_builds(options: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same scenario twice (so the round robin is in the same state): wire replies, then dnspython's."""
    results = []
    for wire in (True, False):
        if not wire:
            monkeypatch.setattr(lh._Question, "of", classmethod(lambda cls, req, qname: None))
        e = await _wire_scenario(options)
        try:
            shapes = []
            for name, qtype in WIRE_QUERIES:
                for rd in (True, False):
                    req = make_request(name, qtype, rd=rd, cd=not rd)
                    result = await e.handler(req)
                    variants = result.cache.variants if result.cache is not None else None
                    if wire and options != "srv_glue on" and "dns-version" not in name:
                        assert isinstance(result.msg, lh.WireReply)
                    shapes.append((name, qtype, result.rcode, _shape(result.msg),
                                   [_shape(v) for v in variants or ()]))
            results.append(shapes)
        finally:
            await e.close()
    for got, want in zip(*results, strict=True):
        assert got == want


def test_wire_reply_reads_its_sections_only_when_asked() -> None:
    req = make_request(f"{SVC}.{NS}.svc.{Z}")
    qw = lh._Question.of(req, req.msg.question[0].name)
    assert qw is not None
    head = b"\xc0\x0c" + lh._RR.pack(1, 1, 5, 4)
    reply = qw.reply(NOERROR, [head + bytes([10, 0, 0, 1])])
    assert reply.intact_wire() is not None and reply.rcode() == NOERROR
    reply.set_rcode(NXDOMAIN)  # header changes are still sent as built, patched
    assert dns.message.from_wire(reply.to_wire()).rcode() == NXDOMAIN
    assert reply.answer[0][0].address == "10.0.0.1"  # reading the sections parses them...
    assert reply.intact_wire() is None
    reply.answer[0].add(dns.rdata.from_text("IN", "A", "10.0.0.2"))  # ...and changes to them are rendered
    out = dns.message.from_wire(reply.to_wire())
    assert sorted(rd.address for rd in out.answer[0]) == ["10.0.0.1", "10.0.0.2"] and out.rcode() == NXDOMAIN


# == what the informers keep ===============================================================================


def test_slim_objects_keep_what_the_model_reads_as_copies() -> None:
    from submariner.lighthouse.dns import lighthouse_model as lm
    from submariner.lighthouse.dns.k8s import Kept, metadata_and_labels

    full = eps("c2", svc="db", headless=True, endpoints=[ep("10.2.0.7", hostname="web-0", pod="db-0")],
               annotations={lm.LAST_APPLIED: "{...}", "lighthouse.submariner.io/publish-not-ready-addresses": "true"},
               source_name="db-src")
    full["metadata"].update(uid="u-1", resourceVersion="17", creationTimestamp="2026-01-01T00:00:00Z",
                            managedFields=[{"manager": "x"}])
    slim = lm.slim_endpoint_slice(full)
    assert slim["metadata"] == {"name": full["metadata"]["name"], "namespace": NS, "resourceVersion": "17",
                                "labels": full["metadata"]["labels"], "annotations": {
                                    "lighthouse.submariner.io/globalnet-enabled": "false",
                                    "lighthouse.submariner.io/publish-not-ready-addresses": "true"}}
    assert slim["endpoints"] == [{"addresses": ["10.2.0.7"], "conditions": {"ready": True}, "hostname": "web-0",
                                  "targetRef": {"kind": "Pod", "name": "db-0"}}]
    assert slim["ports"] == [HTTP] and slim["addressType"] == "IPv4"
    # copies, so that they do not keep the decoded list's memory alive; repeated values shared
    assert slim["metadata"]["name"] is not full["metadata"]["name"]
    assert slim["endpoints"][0]["addresses"][0] is not full["endpoints"][0]["addresses"][0]
    again = lm.slim_endpoint_slice(eps("c2", "10.2.0.8", svc="db"))
    assert again["metadata"]["labels"]["multicluster.kubernetes.io/service-name"] is \
        slim["metadata"]["labels"]["multicluster.kubernetes.io/service-name"]
    model_full, model_slim = Model(local_cluster_id="c1"), Model(local_cluster_id="c1")
    model_full.apply_service_import("add", si("db", headless=True))
    model_slim.apply_service_import("add", lm.slim_service_import(si("db", headless=True)))
    model_full.apply_endpoint_slice("add", full)
    model_slim.apply_endpoint_slice("add", slim)
    assert model_full.resolve(NS, "db", "c2") == model_slim.resolve(NS, "db", "c2")
    kept = metadata_and_labels(slim)
    assert isinstance(kept, Kept) and kept["metadata"] is kept and kept.get("metadata") is kept
    assert kept["resourceVersion"] == "17" and kept["labels"] is slim["metadata"]["labels"]
    model_slim.apply_endpoint_slice("delete", kept)  # deletes need only metadata and labels
    assert model_slim.resolve(NS, "db", "c2") == ((), True, False)
    gw = {"metadata": {"name": "gw", "namespace": OP_NS}, "status": gateway("c1", {"c2": "connected"})}
    assert lm.slim_gateway(gw)["status"] == {"haStatus": "active", "localEndpoint": {"cluster_id": "c1"},
                                             "connections": [{"status": "connected", "endpoint": {"cluster_id": "c2"}}]}


def test_answer_cache_is_bounded_by_bytes_too() -> None:
    from submariner.lighthouse.dns.answers import ENTRY_OVERHEAD
    from submariner.lighthouse.dns.plugin import CacheScope

    scope = CacheScope("t")
    info = AnswerInfo(qtype=1, qclass=1, rcode=0, plugin="", zone=".", server="", do=False, bufsize=512)
    cache = AnswerCache(max_entries=1000, max_bytes=20 * (ENTRY_OVERHEAD + 200))
    for i in range(100):
        q = dns.message.make_query(f"n{i}.example.", "A")
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(f"n{i}.example.", 5, "IN", "A", "10.0.0.1"))
        assert cache.insert(q.to_wire(), [r.to_wire()], scope, 60, info)
    assert cache.bytes <= cache.max_bytes and 10 < len(cache) < 30 and cache.evictions == 100 - len(cache)
    assert cache.bytes == sum(e.size(k) for k, e in cache.entries.items())
