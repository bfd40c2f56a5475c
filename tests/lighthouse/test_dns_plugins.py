"""Observable behaviour of the simple plugins (spec §5 rows) and of the chain machinery (order, errors)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

import dnstest
from submariner.lighthouse.dns import chain, config, corefile
from submariner.lighthouse.dns.plugin import (
    CachePolicy,
    CacheScope,
    Controller,
    Handler,
    Request,
    Result,
    SetupError,
    Wrapper,
    format_duration,
    parse_duration,
    reply_for,
)
from submariner.lighthouse.dns.plugins import log as logplugin
from submariner.lighthouse.dns.plugins import reload as reloadplugin
from submariner.lighthouse.dns.process import ProcessState

COMMON_LINE = re.compile(
    r'^\[INFO\] (?P<remote>[0-9.]+):(?P<port>\d+) - (?P<id>\d+) "(?P<type>\S+) (?P<class>\S+) (?P<name>\S+) '
    r'(?P<proto>udp|tcp) (?P<size>\d+) (?P<do>true|false) (?P<bufsize>\d+)" (?P<rcode>\S+) (?P<rflags>\S+) '
    r'(?P<rsize>\d+) (?P<duration>[0-9.]+)s$')


@pytest.fixture
async def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dnstest.Harness]:
    monkeypatch.setitem(chain.REGISTRY, "lighthouse", dnstest.this_module())
    h = dnstest.Harness(tmp_path)
    yield h
    await h.stop()


def cached_a(scope: CacheScope) -> object:
    def factory(c: Controller) -> Wrapper:
        def wrap(next_handler: Handler) -> Handler:
            async def serve(req: Request) -> Result:
                reply = reply_for(req)
                reply.answer.append(dns.rrset.from_text(req.qname, 30, "IN", "A", "10.9.9.9"))
                return Result(0, reply, plugin="lighthouse", cache=CachePolicy(scope))

            return serve

        return wrap

    return factory


def setup_error(text: str) -> str:
    blocks = corefile.parse(text, "Corefile", known_directives=chain.KNOWN)
    with pytest.raises(SetupError) as err:
        for cfg in config.build_configs(blocks, 53):
            chain.build_block(cfg, ProcessState(out=open("/dev/null", "w")))  # noqa: SIM115
    return str(err.value)

# -- chain ---------------------------------------------------------------------------------------------------


def test_order_is_one_list_with_lighthouse_next_to_kubernetes() -> None:
    order = chain.ORDER
    assert len(order) == len(set(order)) and set(order) == chain.KNOWN
    assert order.index("k8s_external") + 1 == order.index("lighthouse") == order.index("kubernetes") - 1
    assert order.index("cache") < order.index("rewrite") < order.index("forward")
    assert order.index("prometheus") < order.index("errors") < order.index("log") < order.index("loadbalance")
    assert order.index("loadbalance") < order.index("cache") < order.index("loop") < order.index("forward")


def test_known_but_unimplemented_plugin_is_a_startup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(chain.REGISTRY, "dnstap", "submariner.lighthouse.dns.plugins.no_such_dnstap")
    message = setup_error(". {\n    whoami\n    dnstap /tmp/x.sock\n}\n")
    assert message == "Corefile:3 - plugin dnstap is not implemented by lighthouse-dns"


def test_once_only_plugin_twice_is_an_error() -> None:
    message = setup_error(". {\n    errors\n    errors\n}\n")
    assert "this plugin can only be used once per Server Block" in message and "Corefile:3" in message


@pytest.mark.parametrize(("text", "fragment"), [
    (". {\n    whoami extra\n}\n", "Wrong argument count or unexpected line ending after 'extra'"),
    (". {\n    any x\n}\n", "plugin/any: Corefile:2"),
    (". {\n    health :8080 :9090\n}\n", "plugin/health"),
    (". {\n    health nope\n}\n", "missing port in address"),
    (". {\n    ready {\n        monitor sometimes\n    }\n}\n", "monitor type 'sometimes' not supported"),
    (". {\n    reload 1s\n}\n", "interval value must be greater or equal to 2s"),
    (". {\n    reload 10s 500ms\n}\n", "jitter value must be greater or equal to 1s"),
    (". {\n    loop now\n}\n", "plugin/loop"),
    (". {\n    loadbalance random\n}\n", "unknown policy: random"),
    (". {\n    loadbalance {\n        prefer 10.0.0.0/33\n    }\n}\n", "invalid CIDR"),
    (". {\n    erratic {\n        drop -1\n    }\n}\n", "illegal amount value given"),
    (". {\n    erratic {\n        sometimes\n    }\n}\n", "unknown property 'sometimes'"),
    (". {\n    errors {\n        consolidate 5m\n    }\n}\n", "Wrong argument count"),
    (". {\n    errors {\n        consolidate 5m .* loud\n    }\n}\n", "unknown log level argument in consolidate"),
    (". {\n    log {\n        class sometimes\n    }\n}\n", "invalid class"),
    (". {\n    prometheus :9153 :9154\n}\n", "plugin/prometheus"),
])
def test_setup_errors_name_plugin_and_line(text: str, fragment: str) -> None:
    assert fragment in setup_error(text)


def test_go_durations() -> None:
    assert parse_duration("1m30s") == 90 and parse_duration("250ms") == 0.25 and parse_duration("0") == 0
    assert format_duration(300) == "5m0s" and format_duration(0.1) == "100ms" and format_duration(3600) == "1h0m0s"
    with pytest.raises(ValueError):
        parse_duration("10")


# -- whoami, any, erratic -------------------------------------------------------------------------------------

async def test_whoami_reports_the_client(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    whoami\n}\n")
    r = await harness.udp(dns.message.make_query("Example.org.", "A"))
    assert r.flags & dns.flags.AA and not r.answer and r.rcode() == 0
    address, srv = r.additional
    assert address.rdtype == dns.rdatatype.A and address.ttl == 0 and address[0].address == "127.0.0.1"
    assert str(address.name) == "Example.org."
    assert str(srv.name) == "_udp.Example.org." and srv.ttl == 0 and srv[0].target.to_text() == "."
    assert 0 < srv[0].port < 65536
    r = await harness.tcp(dns.message.make_query(".", "NS"))
    assert str(r.additional[1].name) == "_tcp."


async def test_any_answers_rfc8482_and_passes_other_types(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    any\n    whoami\n}\n")
    r = await harness.udp(dns.message.make_query("Foo.example.", "ANY"))
    assert not r.flags & dns.flags.AA and len(r.answer) == 1
    hinfo = r.answer[0]
    assert hinfo.rdtype == dns.rdatatype.HINFO and hinfo.ttl == 8482 and str(hinfo.name) == "Foo.example."
    assert hinfo[0].cpu == b"ANY obsoleted" and hinfo[0].os == b"See RFC 8482"
    r = await harness.udp(dns.message.make_query("foo.example.", "A"))
    assert r.additional and not r.answer  # whoami


async def test_erratic_drops_every_second_query_and_answers_fixed_records(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    erratic {\n        drop 2\n    }\n}\n")
    q = dns.message.make_query("example.org.", "A").to_wire()
    results = [await harness.raw_udp(q, timeout=0.3) for _ in range(4)]
    assert [r is None for r in results] == [True, False, True, False]
    a = dns.message.from_wire(results[1] or b"")
    assert a.flags & dns.flags.AA and a.answer[0][0].address == "192.0.2.53" and a.answer[0].ttl == 0
    assert await harness.raw_udp(dns.message.make_query("x.", "AAAA").to_wire(), timeout=0.3) is None  # 4
    aaaa = await harness.udp(dns.message.make_query("example.org.", "AAAA"))  # query 5: not dropped
    assert aaaa.answer[0][0].address == "2001:db8::53"
    assert await harness.raw_udp(dns.message.make_query("x.", "MX").to_wire(), timeout=0.3) is None  # 6
    mx = await harness.udp(dns.message.make_query("x.", "MX"))
    assert mx.rcode() == dns.rcode.SERVFAIL


async def test_erratic_truncate(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    erratic {\n        truncate 2\n    }\n}\n")
    flags = []
    for _ in range(4):
        raw = await harness.raw_udp(dns.message.make_query("example.org.", "A").to_wire())
        flags.append(bool(dns.message.from_wire(raw or b"").flags & dns.flags.TC))
    assert flags == [True, True, False, False]  # CoreDNS tests `n & 2 == 0`


# -- log and errors -------------------------------------------------------------------------------------------

async def test_log_common_format_on_misses_and_hits(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    log\n    lighthouse\n}\n", plugin=cached_a(CacheScope("t")))
    q1 = dns.message.make_query("Example.org.", "A", use_edns=0, payload=1232)
    await harness.udp(q1)
    q2 = dns.message.make_query("example.ORG.", "A", use_edns=0, payload=1232)
    await harness.udp(q2)
    lines = [line for line in harness.lines() if line.startswith("[INFO] 127.0.0.1")]
    assert len(lines) == 2
    for line, q in zip(lines, (q1, q2), strict=True):
        m = COMMON_LINE.match(line)
        assert m, line
        assert m["id"] == str(q.id) and m["type"] == "A" and m["class"] == "IN" and m["name"] == "example.org."
        assert m["proto"] == "udp" and m["size"] == str(len(q.to_wire())) and m["do"] == "false"
        assert m["bufsize"] == "1232" and m["rcode"] == "NOERROR" and m["rflags"] == "qr,aa,rd"
    assert COMMON_LINE.match(lines[0])["rsize"] == COMMON_LINE.match(lines[1])["rsize"]  # type: ignore[index]


async def test_log_combined_format_class_filter_and_names(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    log example.org {combined}\n    log . {\n        class denial\n    }\n"
                        "    whoami\n}\n")
    await harness.udp(dns.message.make_query("a.example.org.", "A"))
    await harness.udp(dns.message.make_query("other.net.", "A"))  # success: filtered by the second rule
    lines = [line for line in harness.lines() if line.startswith("[INFO] 127")]
    assert len(lines) == 1 and lines[0].endswith(' "0"') and '"A IN a.example.org. udp' in lines[0]


async def test_log_server_written_rcode_as_coredns(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    log\n    errors\n}\n")
    await harness.udp(dns.message.make_query("example.org.", "A"))
    line = next(line for line in harness.lines() if line.startswith("[INFO] 127"))
    assert line.split('" ')[1].startswith("NOERROR - 0 ")  # CoreDNS's recorder saw no reply


async def test_log_format_parser_matches_coredns() -> None:
    nodes = logplugin.parse_format("A {type} } {x} {/meta} {>id}")
    assert nodes == [(0, "A "), (1, "{type}"), (0, " }"), (0, " {x}"), (0, " "), (2, "meta"), (0, " "),
                     (1, "{>id}")]
    assert logplugin.go_float(0.0000123) == "0.0000123"


async def test_errors_line_and_consolidation(harness: dnstest.Harness) -> None:
    def failing(c: Controller) -> Wrapper:
        def wrap(next_handler: Handler) -> Handler:
            async def serve(req: Request) -> Result:
                qtype = dns.rdatatype.to_text(req.qtype)
                return Result(dns.rcode.SERVFAIL, error=f"read udp 10.0.0.1:53: i/o timeout ({qtype})")

            return serve

        return wrap

    await harness.start(". {\n    errors {\n        consolidate 200ms ^read.*AAAA warning\n        "
                        "consolidate 200ms ^read info show_first\n    }\n    lighthouse\n}\n", plugin=failing)
    await harness.udp(dns.message.make_query("example.org.", "A"))
    for _ in range(3):
        await harness.udp(dns.message.make_query("example.org.", "AAAA"))
    await harness.udp(dns.message.make_query("example.org.", "MX"))
    await asyncio.sleep(0.4)
    lines = [line for line in harness.lines() if "plugin/errors" in line]
    assert lines[0] == "[ERROR] plugin/errors: 2 example.org. A: read udp 10.0.0.1:53: i/o timeout (A)"
    assert "[WARNING] plugin/errors: 3 errors like '^read.*AAAA' occurred in last 200ms" in lines
    assert "[INFO] plugin/errors: 2 errors like '^read' occurred in last 200ms" in lines
    assert len(lines) == 3


# -- HTTP endpoints -------------------------------------------------------------------------------------------

async def test_health_ready_and_metrics_endpoints(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    health 127.0.0.1:0\n    ready 127.0.0.1:0\n    prometheus 127.0.0.1:0\n"
                        "    whoami\n}\n")
    # the same configured address: one listener serving the three paths
    assert await harness.http("127.0.0.1:0", "/health") == (200, "OK")
    assert await harness.http("127.0.0.1:0", "/ready") == (200, "OK")
    status, body = await harness.http("127.0.0.1:0", "/metrics")
    assert status == 200 and "coredns_dns_requests_total" in body


async def test_health_endpoint(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    health 127.0.0.1:0 {\n        lameduck 1s\n    }\n    whoami\n}\n")
    assert await harness.http("127.0.0.1:0", "/health") == (200, "OK")
    assert await harness.http("127.0.0.1:0", "/health", method="POST") == (200, "OK")
    assert await harness.http("127.0.0.1:0", "/other") == (404, "404 page not found\n")
    await asyncio.sleep(1.3)  # one self-probe
    found = samples(_exposition(harness))
    assert found[("coredns_health_request_duration_seconds_count", frozenset())] >= 1
    assert found[("coredns_health_request_failures_total", frozenset())] == 0


async def test_ready_reports_unready_plugins_sorted_then_latches(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    ready 127.0.0.1:0\n    erratic {\n        drop 0\n    }\n}\n")
    assert await harness.http("127.0.0.1:0", "/ready") == (503, "erratic")
    for _ in range(3):
        await harness.udp(dns.message.make_query("example.org.", "A"))
    assert await harness.http("127.0.0.1:0", "/ready") == (200, "OK")
    for _ in range(3):
        await harness.udp(dns.message.make_query("example.org.", "A"))
    assert await harness.http("127.0.0.1:0", "/ready") == (200, "OK")  # until-ready: latched
    harness.process.shutting_down = True
    assert await harness.http("127.0.0.1:0", "/ready") == (503, "Shutting down")


async def test_ready_continuously_and_without_providers(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    ready 127.0.0.1:0 {\n        monitor continuously\n    }\n    erratic {\n"
                        "        drop 0\n    }\n}\nexample.net {\n    whoami\n}\n")
    for _ in range(3):
        await harness.udp(dns.message.make_query("example.org.", "A"))
    assert await harness.http("127.0.0.1:0", "/ready") == (200, "OK")
    for _ in range(2):
        await harness.udp(dns.message.make_query("example.org.", "A"))
    assert await harness.http("127.0.0.1:0", "/ready") == (503, "erratic")


async def test_metrics_names_labels_and_exact_counts_on_hits(harness: dnstest.Harness) -> None:
    await harness.start("example.org {\n    prometheus 127.0.0.1:0\n    lighthouse\n}\n",
                        plugin=cached_a(CacheScope("t")))
    for _ in range(5):
        await harness.udp(dns.message.make_query("www.example.org.", "A"))
    await harness.tcp(dns.message.make_query("www.example.org.", "A", use_edns=0, want_dnssec=True))
    await harness.udp(dns.message.make_query("elsewhere.net.", "A"))
    status, body = await harness.http("127.0.0.1:0", "/metrics")
    assert status == 200
    found = samples(body)
    s = {"server": "dns://:0", "view": ""}
    z = {**s, "zone": "example.org."}
    expected: list[tuple[str, dict[str, str], float | None]] = [
        ("coredns_dns_requests_total", {**z, "proto": "udp", "family": "1", "type": "A"}, 5),
        ("coredns_dns_requests_total", {**z, "proto": "tcp", "family": "1", "type": "A"}, 1),
        ("coredns_dns_requests_total", {**s, "zone": "dropped", "proto": "udp", "family": "1", "type": "A"}, 1),
        ("coredns_dns_responses_total", {**z, "rcode": "NOERROR", "plugin": "lighthouse"}, 6),
        ("coredns_dns_responses_total", {**s, "zone": "dropped", "rcode": "REFUSED", "plugin": ""}, 1),
        ("coredns_dns_do_requests_total", z, 1),
        ("coredns_dns_request_duration_seconds_count", z, 6),
        ("coredns_dns_request_duration_seconds_bucket", {**z, "le": "0.00025"}, None),
        ("coredns_dns_request_duration_seconds_bucket", {**z, "le": "8.192"}, 6),
        ("coredns_dns_request_size_bytes_count", {**z, "proto": "udp"}, 5),
        ("coredns_dns_response_size_bytes_bucket", {**z, "proto": "udp", "le": "+Inf"}, 5),
        ("coredns_dns_response_size_bytes_bucket", {**z, "proto": "udp", "le": "64000.0"}, 5),
        ("coredns_plugin_enabled", {**z, "name": "lighthouse"}, 1),
        ("coredns_plugin_enabled", {**z, "name": "prometheus"}, 1),
        ("coredns_panics_total", {}, 0),
        ("coredns_reload_failed_total", {}, 0),
    ]
    for name, labels, value in expected:
        key = (name, frozenset(labels.items()))
        assert key in found, (name, labels)
        assert value is None or found[key] == value, (name, labels, found[key])
    assert any(name == "coredns_build_info" for name, _ in found)
    assert any(name == "process_cpu_seconds_total" for name, _ in found)
    assert "# TYPE coredns_dns_request_duration_seconds histogram" in body


# -- loadbalance ----------------------------------------------------------------------------------------------

async def test_loadbalance_regroups_and_shuffles_uncached_answers(harness: dnstest.Harness) -> None:
    def mixed(c: Controller) -> Wrapper:
        def wrap(next_handler: Handler) -> Handler:
            async def serve(req: Request) -> Result:
                reply = reply_for(req)
                reply.answer.append(dns.rrset.from_text("x.example.", 5, "IN", "A", "10.0.0.1", "10.0.0.2",
                                                        "10.0.0.3", "10.0.0.4"))
                reply.answer.append(dns.rrset.from_text("x.example.", 5, "IN", "TXT", '"t"'))
                reply.answer.append(dns.rrset.from_text("example.", 5, "IN", "CNAME", "x.example."))
                return Result(0, reply, plugin="lighthouse")

            return serve

        return wrap

    await harness.start(". {\n    loadbalance round_robin {\n        prefer 10.0.0.3/32\n    }\n    lighthouse\n}\n",
                        plugin=mixed)
    orders = set()
    for _ in range(12):
        r = await harness.udp(dns.message.make_query("example.", "A"))
        types = [rrset.rdtype for rrset in r.answer]
        assert types[0] == dns.rdatatype.CNAME and types[1] == dns.rdatatype.TXT
        addresses = tuple(rd.address for rrset in r.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset)
        assert addresses[0] == "10.0.0.3" and sorted(addresses) == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        orders.add(addresses)
    assert len(orders) > 1


# -- reload and loop ------------------------------------------------------------------------------------------

async def test_reload_logs_configuration_hash_and_reloads_on_change(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    reload 2s 1s\n    whoami\n}\n")
    first = [line for line in harness.lines() if "Running configuration SHA512" in line]
    assert len(first) == 1 and re.fullmatch(r"\[INFO\] plugin/reload: Running configuration SHA512 = [0-9a-f]{128}",
                                             first[0])
    ticker = harness.process.singletons["reload.ticker"]
    assert not ticker.check()  # unchanged file
    harness.corefile.write_text(". {\n    reload 2s 1s  # a comment does not count\n    whoami\n}\n")
    assert not ticker.check()
    harness.corefile.write_text(". {\n    reload 2s 1s\n    any\n    whoami\n}\n")
    assert ticker.check()
    await asyncio.sleep(0.3)
    r = await harness.udp(dns.message.make_query("example.org.", "ANY"))
    assert r.answer and r.answer[0].rdtype == dns.rdatatype.HINFO
    hashes = [line.split("= ")[1] for line in harness.lines() if "Running configuration SHA512" in line]
    assert len(hashes) == 2 and hashes[0] != hashes[1]


async def test_failed_reload_keeps_the_old_configuration(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    whoami\n}\n")
    port = harness.port
    assert not await harness.reload(". {\n    whoami\n    nonsense\n}\n")
    assert any("Corefile changed but reload failed" in line for line in harness.lines())
    assert harness.process.metrics.reload_failed.get(()) == 1
    assert harness.port == port and (await harness.udp(dns.message.make_query("x.", "A"))).additional
    assert await harness.reload(". {\n    any\n    whoami\n}\n")
    assert harness.port == port and (await harness.udp(dns.message.make_query("x.", "ANY"))).answer


def test_config_hash_ignores_comments() -> None:
    a = corefile.parse(". {\n    whoami\n}\n", "Corefile")
    b = corefile.parse(". {  # hello\n    whoami   # there\n}\n", "Corefile")
    c = corefile.parse(". {\n    whoami\n    log\n}\n", "Corefile")
    assert reloadplugin.config_sha512(a) == reloadplugin.config_sha512(b) != reloadplugin.config_sha512(c)


async def test_loop_detects_a_forwarding_loop(harness: dnstest.Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(chain.REGISTRY, "forward", dnstest.this_module())  # the stand-in in forward's slot
    port = dnstest_free_udp_port()
    target: dict[str, int] = {}

    def loops_back(c: Controller) -> Wrapper:
        """A forwarder whose upstream is this very server."""
        def wrap(next_handler: Handler) -> Handler:
            async def serve(req: Request) -> Result:
                raw = await dnstest.raw_udp(req.wire, target["port"], timeout=1.0)
                if raw is None:
                    return Result(dns.rcode.SERVFAIL, error="i/o timeout")
                return Result(0, dns.message.from_wire(raw), plugin="lighthouse")

            return serve

        return wrap

    target["port"] = port
    await harness.start(f".:{port} {{\n    loop\n    forward . 127.0.0.1:{port}\n}}\n", plugin=loops_back)
    for _ in range(50):
        if harness.fatal:
            break
        await asyncio.sleep(0.1)
    assert harness.fatal, harness.lines()
    assert re.match(rf'Loop \(127\.0\.0\.1:\d+ -> :{port}\) detected for zone "\.", see '
                    r'https://coredns\.io/plugins/loop#troubleshooting\. Query: "HINFO \d+\.\d+\."', harness.fatal[0])
    assert any(line.startswith("[FATAL] plugin/loop: Loop (") for line in harness.lines())


async def test_loop_does_not_probe_port_zero(harness: dnstest.Harness) -> None:
    await harness.start(". {\n    loop\n    whoami\n}\n")
    await asyncio.sleep(0.2)
    assert not harness.fatal


def _exposition(harness: dnstest.Harness) -> str:
    from prometheus_client import generate_latest

    return generate_latest(harness.process.registry).decode()


def samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def dnstest_free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u, socket.socket(socket.AF_INET6) as t:
        u.bind(("::", 0))
        port = int(u.getsockname()[1])
        t.bind(("::", port))
        return port
