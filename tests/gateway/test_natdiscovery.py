"""NAT discovery: wire round trips, responder verdicts, the requester state machine, real UDP, fuzz."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from submariner.gateway.cable.driver import NATEndpointInfo
from submariner.gateway.natdiscovery import wire
from submariner.gateway.natdiscovery.discovery import (
    SELECTED_LEGACY,
    SELECTED_PRIVATE,
    SELECTED_PUBLIC,
    WAITING,
    NATDiscovery,
)
from submariner.gateway.natdiscovery.wire import (
    EndpointDetails,
    IPPortPair,
    Message,
    Request,
    Response,
    ResponseType,
    WireError,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(cluster: str, private_ip: str, public_ip: str = "", port: int = 4490, **cfg: str) -> dict[str, Any]:
    cable = f"submariner-cable-{cluster}-{private_ip.replace('.', '-')}"
    backend_config = {"natt-discovery-port": str(port), "udp-port": "4500", **cfg}
    return {"cluster_id": cluster, "cable_name": cable, "hostname": "gw", "subnets": ["10.9.0.0/16"],
            "private_ip": private_ip, "public_ip": public_ip, "nat_enabled": False, "backend": "vxlan",
            "backend_config": backend_config}


def endpoint(s: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": s["cable_name"], "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": s}


# -------------------------------------------------------------------------------------------------- wire


def test_known_bytes_match_protobuf_encoding() -> None:
    # Hand-checked against protoc's encoding of the same message (field keys 0x08, 0x12, ...).
    msg = Message(1, request=Request(300, EndpointDetails("a", "b"), None, IPPortPair("1.2.3.4", 4490), None))
    data = wire.encode(msg)
    assert data == (b"\x08\x01" + b"\x12\x19" + b"\x08\xac\x02" + b"\x12\x06\x0a\x01a\x12\x01b"
                    + b"\x22\x0c\x0a\x071.2.3.4\x10\x8a\x23")
    assert wire.decode(data) == msg


def test_negative_int32_is_ten_bytes_and_round_trips() -> None:
    msg = Message(-1, response=Response(received_src=IPPortPair("", -5)))
    data = wire.encode(msg)
    assert data.startswith(b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")
    assert wire.decode(data) == msg


def test_unknown_fields_are_skipped() -> None:
    base = wire.encode(Message(0, response=Response(request_number=7, response=ResponseType.NAT_DETECTED)))
    extra = b"\x78\x05" + b"\x81\x01" + b"12345678" + b"\x8d\x01" + b"1234"  # fields 15 (varint), 16 (64), 17 (32)
    assert wire.decode(extra + base).response == Response(request_number=7, response=ResponseType.NAT_DETECTED)


ips = st.builds(IPPortPair, st.text(max_size=20), st.integers(-(2**31), 2**31 - 1))
details = st.builds(EndpointDetails, st.text(max_size=30), st.text(max_size=60))
requests = st.builds(Request, st.integers(0, 2**64 - 1), st.none() | details, st.none() | details,
                     st.none() | ips, st.none() | ips)
responses = st.builds(Response, st.integers(0, 2**64 - 1), st.integers(0, 4), st.none() | details,
                      st.none() | details, st.booleans(), st.booleans(), st.booleans(), st.none() | ips)
messages = st.one_of(st.builds(Message, st.integers(-(2**31), 2**31 - 1), request=requests),
                     st.builds(Message, st.integers(-(2**31), 2**31 - 1), response=responses))


@settings(max_examples=300, deadline=None)
@given(messages)
def test_round_trip(msg: Message) -> None:
    assert wire.decode(wire.encode(msg)) == msg


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_decode_random_bytes_raises_only_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        wire.decode(data)


@pytest.mark.parametrize("data", [b"\x12\x05ab", b"\x08", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                                  b"\x00\x01", b"\x0b", b"\x12\x02\xff\xfe\x12\x01", b"\x09\x01"])
def test_malformed_examples(data: bytes) -> None:
    with pytest.raises(WireError):
        wire.decode(data)


# -------------------------------------------------------------------------------------------------- responder

LOCAL = spec("east", "192.168.1.10", "1.1.1.1")


def request(**over: Any) -> Request:
    fields: dict[str, Any] = dict(
        request_number=5, sender=EndpointDetails("west", "cable-w"),
        receiver=EndpointDetails("east", LOCAL["cable_name"]),
        using_src=IPPortPair("192.168.2.20", 4490), using_dst=IPPortPair("192.168.1.10", 4490))
    fields.update(over)
    return Request(**fields)


@pytest.mark.parametrize("over, source, verdict, flags", [
    ({}, ("192.168.2.20", 4490), ResponseType.OK, (False, False, False)),
    ({}, ("5.5.5.5", 4490), ResponseType.NAT_DETECTED, (True, False, False)),
    ({}, ("192.168.2.20", 30000), ResponseType.NAT_DETECTED, (False, True, False)),
    ({"using_dst": IPPortPair("1.1.1.1", 4490)}, ("192.168.2.20", 4490), ResponseType.NAT_DETECTED,
     (False, False, True)),
    ({"using_src": IPPortPair("", 4490)}, ("5.5.5.5", 4490), ResponseType.OK, (False, False, False)),
    ({"sender": None}, ("192.168.2.20", 4490), ResponseType.MALFORMED, (False, False, False)),
    ({"using_dst": None}, ("192.168.2.20", 4490), ResponseType.MALFORMED, (False, False, False)),
    ({"receiver": EndpointDetails("south", LOCAL["cable_name"])}, ("192.168.2.20", 4490),
     ResponseType.UNKNOWN_DST_CLUSTER, (False, False, False)),
    ({"receiver": EndpointDetails("east", "other")}, ("192.168.2.20", 4490),
     ResponseType.UNKNOWN_DST_ENDPOINT, (False, False, False)),
])
def test_responder_verdicts(over: dict[str, Any], source: tuple[str, int], verdict: ResponseType,
                            flags: tuple[bool, bool, bool]) -> None:
    nd = NATDiscovery(LOCAL, lambda i: None, port=4490)  # type: ignore[arg-type]
    resp = nd.respond(request(**over), source)
    assert resp.response == verdict
    assert (resp.src_ip_nat_detected, resp.src_port_nat_detected, resp.dst_ip_nat_detected) == flags
    assert resp.received_src == IPPortPair(*source)
    assert resp.request_number == 5


# -------------------------------------------------------------------------------------------------- requester


class Net:
    """Delivers datagrams between NATDiscovery instances by address, optionally rewriting sources (NAT)."""

    def __init__(self) -> None:
        self.nodes: dict[str, NATDiscovery] = {}
        self.sent: list[tuple[str, tuple[str, int]]] = []
        self.src_nat: dict[str, str] = {}
        self.drop: set[str] = set()

    def attach(self, ip: str, nd: NATDiscovery, *aliases: str) -> None:
        for a in (ip, *aliases):
            self.nodes[a] = nd
        nd.use_sender(lambda data, addr: self.deliver(ip, data, addr))

    def deliver(self, from_ip: str, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((from_ip, addr))
        if addr[0] in self.drop or addr[0] not in self.nodes:
            return
        self.nodes[addr[0]].handle_datagram(data, (self.src_nat.get(from_ip, from_ip), 4490))


def pair(clock: Clock, east_public: str = "", west_public: str = "") -> tuple[Any, ...]:
    east = spec("east", "192.168.1.10", east_public)
    west = spec("west", "192.168.2.20", west_public)
    got: dict[str, list[NATEndpointInfo]] = {"east": [], "west": []}
    a = NATDiscovery(east, got["east"].append, port=4490, clock=clock, source_for=lambda d: "192.168.1.10",  # type: ignore[arg-type]
                     rng=random.Random(1))
    b = NATDiscovery(west, got["west"].append, port=4490, clock=clock, source_for=lambda d: "192.168.2.20",  # type: ignore[arg-type]
                     rng=random.Random(2))
    return east, west, a, b, got


def test_private_answer_selects_private_ip_without_nat() -> None:
    clock, net = Clock(), Net()
    _east, west, a, b, got = pair(clock)
    net.attach("192.168.1.10", a)
    net.attach("192.168.2.20", b)
    a.add_endpoint(endpoint(west))
    assert [(i.use_ip, i.use_nat) for i in got["east"]] == [("192.168.2.20", False)]
    assert a.state_of(west["cable_name"]) == SELECTED_PRIVATE
    # identical re-add after completion re-emits; a tick sends nothing more
    a.add_endpoint(endpoint(west))
    assert len(got["east"]) == 2
    before = len(net.sent)
    a.tick()
    assert len(net.sent) == before


def test_public_answer_then_late_private_within_one_second_overrides() -> None:
    clock, net = Clock(), Net()
    east, west, a, b, got = pair(clock, west_public="203.0.113.5")
    net.attach("192.168.1.10", a)
    net.attach("192.168.2.20", b, "203.0.113.5")
    net.drop.add("192.168.2.20")  # the private path is down at first
    a.add_endpoint(endpoint(west))
    assert [(i.use_ip, i.use_nat) for i in got["east"]] == [("203.0.113.5", True)]  # dst differs from private
    assert a.state_of(west["cable_name"]) == SELECTED_PUBLIC
    # a private answer arriving within 1 s wins
    net.drop.clear()
    remote = a._remotes[west["cable_name"]]
    clock.now += 0.5
    reply = b.respond(Request(remote.private_request, EndpointDetails("east", east["cable_name"]),
                              EndpointDetails("west", west["cable_name"]), IPPortPair("192.168.1.10", 4490),
                              IPPortPair("192.168.2.20", 4490)), ("192.168.1.10", 4490))
    a.handle_datagram(wire.encode(Message(0, response=reply)), ("192.168.2.20", 4490))
    assert [(i.use_ip, i.use_nat) for i in got["east"]][-1] == ("192.168.2.20", False)
    # but not later than that
    a._remotes[west["cable_name"]].state = SELECTED_PUBLIC
    clock.now += 2
    a.handle_datagram(wire.encode(Message(0, response=reply)), ("192.168.2.20", 4490))
    assert len(got["east"]) == 2


def test_private_answer_from_another_source_is_ignored() -> None:
    clock, net = Clock(), Net()
    _east, west, a, b, got = pair(clock)
    net.attach("192.168.1.10", a)
    net.attach("192.168.2.20", b)
    net.src_nat["192.168.2.20"] = "10.99.0.1"  # the answer comes back translated
    a.add_endpoint(endpoint(west))
    assert got["east"] == []
    assert a.state_of(west["cable_name"]) == WAITING


def test_resend_after_two_seconds_and_legacy_after_timeout() -> None:
    clock, net = Clock(), Net()
    _east, west, a, _, got = pair(clock)
    west["nat_enabled"] = True
    west["public_ip"] = "203.0.113.9"
    net.attach("192.168.1.10", a)
    a.add_endpoint(endpoint(west))
    assert len(net.sent) == 2  # private and public
    clock.now += 1
    a.tick()
    assert len(net.sent) == 2
    clock.now += 1.5
    a.tick()
    assert len(net.sent) == 4
    clock.now += 60
    a.tick()
    assert a.state_of(west["cable_name"]) == SELECTED_LEGACY
    assert [(i.use_ip, i.use_nat) for i in got["east"]] == [("203.0.113.9", True)]


def test_load_balancer_times_out_in_six_seconds() -> None:
    clock, net = Clock(), Net()
    _, west, a, _, got = pair(clock)
    west.update(public_ip="203.0.113.9")
    west["backend_config"]["using-loadbalancer"] = "true"
    net.attach("192.168.1.10", a)
    a.add_endpoint(endpoint(west))
    clock.now += 5
    a.tick()
    assert got["east"] == []
    clock.now += 1.5
    a.tick()
    assert [(i.use_ip, i.use_nat) for i in got["east"]] == [("203.0.113.9", True)]


def test_discovery_disabled_is_immediate_legacy_and_changed_spec_restarts() -> None:
    clock = Clock()
    got: list[NATEndpointInfo] = []
    nd = NATDiscovery(LOCAL, got.append, port=0, clock=clock)  # type: ignore[arg-type]
    west = spec("west", "192.168.2.20")
    nd.add_endpoint(endpoint(west))
    assert [(i.use_ip, i.use_nat) for i in got] == [("192.168.2.20", False)]
    nd2 = NATDiscovery(LOCAL, got.append, port=4490, clock=clock)  # type: ignore[arg-type]
    nd2.use_sender(lambda d, a: None)
    nd2.add_endpoint(endpoint(west))
    nd2.add_endpoint(endpoint(west))  # during discovery: nothing
    assert len(got) == 1
    changed = dict(west, public_ip="203.0.113.1")
    nd2.add_endpoint(endpoint(changed))
    assert nd2.state_of(west["cable_name"]) == WAITING
    nd2.remove_endpoint(west["cable_name"])
    assert nd2.state_of(west["cable_name"]) is None


# -------------------------------------------------------------------------------------------------- real UDP


def _free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_request_response_over_real_udp_and_fuzz() -> None:
    """Two listeners on 127.0.0.1 (different ports): discovery completes; garbage never stops a listener."""
    pa, pb = _free_udp_port(), _free_udp_port()
    east = spec("east", "127.0.0.1", port=pa)
    west = spec("west", "127.0.0.1", port=pb)
    west["cable_name"] = "submariner-cable-west-127-0-0-1"
    ready = threading.Event()
    got: list[NATEndpointInfo] = []

    def on_ready(info: NATEndpointInfo) -> None:
        got.append(info)
        ready.set()

    a = NATDiscovery(east, on_ready, port=pa)  # type: ignore[arg-type]
    b = NATDiscovery(west, lambda i: None, port=pb)  # type: ignore[arg-type]
    a.start("127.0.0.1")
    b.start("127.0.0.1")
    try:
        fuzz = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rng = random.Random(7)
        valid = wire.encode(Message(1, request=request()))
        for i in range(400):
            if i % 2:
                data = rng.randbytes(rng.randrange(0, 300))
            else:  # mutations of a valid request: flipped bytes, truncations
                buf = bytearray(valid)
                for _ in range(rng.randrange(1, 4)):
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
                data = bytes(buf[: rng.randrange(len(buf) + 1)])
            fuzz.sendto(data, ("127.0.0.1", pb))
            fuzz.sendto(data, ("127.0.0.1", pa))
        fuzz.sendto(os.urandom(4000), ("127.0.0.1", pb))  # larger than the buffer
        fuzz.close()
        time.sleep(0.2)
        a.add_endpoint(endpoint(west))
        assert ready.wait(5), "no NAT discovery answer over UDP"
        # same IP, but the responder sees our real listening port, so no NAT is detected
        assert (got[0].use_ip, got[0].use_nat) == ("127.0.0.1", False)
        assert all(t.is_alive() for t in b._threads + a._threads)
    finally:
        a.stop()
        b.stop()
