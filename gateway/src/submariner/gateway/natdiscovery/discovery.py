"""NAT discovery (dataplane.md §2.9): which remote IP to build a cable to, and whether NAT sits in between.

Each gateway answers requests on UDP `natt-discovery-port` (4490) and, for every remote Endpoint it wants a
cable to, asks the remote's private and public IPs from the same socket. The answer that arrives (and what
the responder saw as our source) tells the engine `UseIP` and `UseNAT`. Without answers the legacy choice
applies after a timeout. The state machine runs on an injectable clock: `tick()` and `handle_datagram()` are
the whole logic, the socket threads only feed them.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from submariner.broker.api.submariner import (
    NATT_DISCOVERY_PORT_CONFIG,
    USING_LOAD_BALANCER_CONFIG,
    EndpointSpec,
)
from submariner.gateway.cable.driver import NATEndpointInfo
from submariner.gateway.natdiscovery import wire
from submariner.gateway.natdiscovery.wire import (
    EndpointDetails,
    IPPortPair,
    Message,
    Request,
    Response,
    ResponseType,
    WireError,
)

log = logging.getLogger(__name__)

RECHECK = 2.0
"""Re-send to an Endpoint whose last request went unanswered this long."""
TIMEOUT = 60.0
TIMEOUT_LOAD_BALANCER = 6.0
PUBLIC_TO_PRIVATE_FAILOVER = 1.0
"""A private answer this soon after a public choice still wins (same-network peers prefer private)."""
BUFFER = 2048

TESTING, WAITING, SELECTED_PUBLIC, SELECTED_PRIVATE, SELECTED_LEGACY = (
    "testing", "waiting", "selected-public", "selected-private", "selected-legacy")

Sender = Callable[[bytes, tuple[str, int]], None]
SourceFor = Callable[[str], str]


def kernel_source_ip(dst: str) -> str:
    """The source IP the kernel would pick toward `dst` (UDP connect sends nothing); "" if unroutable."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((dst, 9))
        return str(s.getsockname()[0])
    except OSError:
        return ""
    finally:
        s.close()


def _spec_key(spec: EndpointSpec) -> tuple[Any, ...]:
    cfg = spec.get("backend_config") or {}
    return (spec.get("cluster_id"), spec.get("cable_name"), spec.get("private_ip"), spec.get("public_ip"),
            spec.get("nat_enabled"), tuple(sorted(cfg.items())))


@dataclass
class _Remote:
    endpoint: dict[str, Any]
    state: str = TESTING
    since: float = 0.0
    started: float = 0.0
    use_ip: str = ""
    use_nat: bool = False
    private_request: int = -1
    public_request: int = -1
    history: list[str] = field(default_factory=list)

    @property
    def spec(self) -> EndpointSpec:
        spec: EndpointSpec = self.endpoint["spec"]
        return spec

    def info(self) -> NATEndpointInfo:
        return NATEndpointInfo(self.endpoint, self.use_ip, self.use_nat)


class NATDiscovery:
    """Requester and responder for one local Endpoint; ready results go to `on_ready`."""

    def __init__(
        self,
        local: EndpointSpec,
        on_ready: Callable[[NATEndpointInfo], None],
        *,
        port: int,
        clock: Callable[[], float] = time.monotonic,
        source_for: SourceFor = kernel_source_ip,
        rng: random.Random | None = None,
    ) -> None:
        self.local = local
        self.on_ready = on_ready
        self.port = port
        self.clock = clock
        self.source_for = source_for
        self._request_number = (rng or random.SystemRandom()).getrandbits(48)
        self._remotes: dict[str, _Remote] = {}
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._send: Sender | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # ---------------------------------------------------------------------------- process wiring

    def start(self, bind: str = "0.0.0.0") -> None:
        """Open the listener and run the receive and 1 s check loops (port 0 = discovery disabled)."""
        if self.port == 0:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((bind, self.port))
        sock.settimeout(0.5)
        self._sock = sock

        def send(data: bytes, addr: tuple[str, int]) -> None:
            sock.sendto(data, addr)

        self._send = send
        for target, name in ((self._receive_loop, "natd-recv"), (self._tick_loop, "natd-tick")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("nat discovery listening port=%d", self.port)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2.0)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def use_sender(self, send: Sender) -> None:
        """Tests: send datagrams through `send` instead of a socket."""
        self._send = send

    def _receive_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(BUFFER)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.1)
                continue
            try:
                self.handle_datagram(data, (str(addr[0]), int(addr[1])))
            except Exception:  # a datagram must never take the listener down
                log.exception("nat discovery: unexpected failure handling a datagram from %s", addr)

    def _tick_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.tick()
            except Exception:
                log.exception("nat discovery: check failed")

    # ---------------------------------------------------------------------------- requester

    def add_endpoint(self, endpoint: dict[str, Any]) -> None:
        """Start discovery for a remote Endpoint; identical re-adds re-emit a finished result."""
        spec: EndpointSpec = endpoint["spec"]
        name = str(spec["cable_name"])
        with self._lock:
            current = self._remotes.get(name)
            if current is not None and _spec_key(current.spec) == _spec_key(spec):
                current.endpoint = endpoint
                if current.state.startswith("selected"):
                    self.on_ready(current.info())
                return
            now = self.clock()
            remote = _Remote(endpoint, since=now, started=now)
            self._remotes[name] = remote
            if self.port == 0 or _discovery_port(spec) == 0:
                self._legacy(remote, "discovery disabled")
                return
            self._send_requests(remote)

    def remove_endpoint(self, cable_name: str) -> None:
        with self._lock:
            self._remotes.pop(cable_name, None)

    def tick(self) -> None:
        """The 1 s check: time out, or (re-)send requests to Endpoints still being tested."""
        with self._lock:
            now = self.clock()
            for remote in list(self._remotes.values()):
                if remote.state not in (TESTING, WAITING):
                    continue
                limit = TIMEOUT_LOAD_BALANCER if _using_lb(remote.spec) else TIMEOUT
                if now - remote.started > limit:
                    self._legacy(remote, f"no answer within {limit:g}s")
                elif remote.state == TESTING or now - remote.since > RECHECK:
                    self._send_requests(remote)

    def _legacy(self, remote: _Remote, why: str) -> None:
        spec = remote.spec
        if _using_lb(spec) or spec.get("nat_enabled"):
            remote.use_ip, remote.use_nat = spec.get("public_ip") or spec["private_ip"], True
        else:
            remote.use_ip, remote.use_nat = spec["private_ip"], False
        self._transition(remote, SELECTED_LEGACY)
        log.info("nat discovery legacy choice cable=%s reason=%s use_ip=%s use_nat=%s",
                 spec["cable_name"], why, remote.use_ip, remote.use_nat)
        self.on_ready(remote.info())

    def _transition(self, remote: _Remote, state: str) -> None:
        remote.state = state
        remote.since = self.clock()
        remote.history.append(state)

    def _next_number(self) -> int:
        self._request_number = (self._request_number + 1) & ((1 << 64) - 1)
        return self._request_number

    def _send_requests(self, remote: _Remote) -> None:
        spec = remote.spec
        port = _discovery_port(spec)
        targets = [("private", spec["private_ip"])]
        public = spec.get("public_ip") or ""
        if public and public != spec["private_ip"]:
            targets.append(("public", public))
        self._transition(remote, WAITING)  # before sending: an answer may be handled before we return
        for kind, ip in targets:
            number = self._next_number()
            if kind == "private":
                remote.private_request = number
            else:
                remote.public_request = number
            req = Request(
                request_number=number,
                sender=EndpointDetails(self.local["cluster_id"], self.local["cable_name"]),
                receiver=EndpointDetails(spec["cluster_id"], spec["cable_name"]),
                using_src=IPPortPair(self.source_for(ip), self.port),
                using_dst=IPPortPair(ip, port),
            )
            self._emit(wire.encode(Message(wire.REQUEST_VERSION, request=req)), (ip, port))

    def _emit(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._send is None:
            return
        try:
            self._send(data, addr)
        except OSError as e:  # unreachable peers are normal while networks converge
            log.debug("nat discovery send to %s failed: %s", addr, e)

    # ---------------------------------------------------------------------------- both sides

    def handle_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        """One received datagram: answer a request, or apply a response. Garbage is dropped."""
        try:
            msg = wire.decode(data)
        except WireError as e:
            log.debug("nat discovery: dropping malformed datagram from %s: %s", source, e)
            return
        if msg.request is not None:
            reply = self.respond(msg.request, source)
            self._emit(wire.encode(Message(wire.RESPONSE_VERSION, response=reply)), source)
        elif msg.response is not None:
            self._on_response(msg.response, source)

    def respond(self, req: Request, source: tuple[str, int]) -> Response:
        me = EndpointDetails(self.local["cluster_id"], self.local["cable_name"])
        observed = IPPortPair(source[0], source[1])
        base = {"request_number": req.request_number, "sender": me, "receiver": req.sender,
                "received_src": observed}
        if req.sender is None or req.receiver is None or req.using_src is None or req.using_dst is None:
            return Response(response=ResponseType.MALFORMED, **base)  # type: ignore[arg-type]
        if req.receiver.cluster_id != self.local["cluster_id"]:
            return Response(response=ResponseType.UNKNOWN_DST_CLUSTER, **base)  # type: ignore[arg-type]
        if req.receiver.endpoint_id != self.local["cable_name"]:
            return Response(response=ResponseType.UNKNOWN_DST_ENDPOINT, **base)  # type: ignore[arg-type]
        src_ip = bool(req.using_src.ip) and req.using_src.ip != source[0]
        src_port = req.using_src.port != source[1]
        dst_ip = req.using_dst.ip != self.local["private_ip"]
        kind = ResponseType.NAT_DETECTED if (src_ip or src_port or dst_ip) else ResponseType.OK
        return Response(response=kind, src_ip_nat_detected=src_ip, src_port_nat_detected=src_port,
                        dst_ip_nat_detected=dst_ip, **base)  # type: ignore[arg-type]

    def _on_response(self, resp: Response, source: tuple[str, int]) -> None:
        if resp.response not in (ResponseType.OK, ResponseType.NAT_DETECTED):
            known = resp.response in {int(t) for t in ResponseType}
            log.info("nat discovery: remote %s answered %s", source,
                     ResponseType(resp.response).name if known else resp.response)
            return
        if resp.sender is None:
            return
        with self._lock:
            remote = self._remotes.get(resp.sender.endpoint_id)
            if remote is None or remote.spec["cluster_id"] != resp.sender.cluster_id:
                return
            use_nat = resp.response == ResponseType.NAT_DETECTED
            spec = remote.spec
            if resp.request_number == remote.public_request and remote.public_request >= 0:
                if remote.state in (TESTING, WAITING):
                    remote.use_ip, remote.use_nat = str(spec.get("public_ip") or ""), use_nat
                    self._transition(remote, SELECTED_PUBLIC)
                    self.on_ready(remote.info())
            elif resp.request_number == remote.private_request and remote.private_request >= 0:
                if source[0] != spec["private_ip"]:
                    return  # a private answer must come from the private IP (else it crossed a NAT)
                late = remote.state == SELECTED_PUBLIC and self.clock() - remote.since <= PUBLIC_TO_PRIVATE_FAILOVER
                if remote.state in (TESTING, WAITING) or late:
                    remote.use_ip, remote.use_nat = spec["private_ip"], use_nat
                    self._transition(remote, SELECTED_PRIVATE)
                    self.on_ready(remote.info())

    def state_of(self, cable_name: str) -> str | None:
        with self._lock:
            remote = self._remotes.get(cable_name)
            return remote.state if remote else None


def _discovery_port(spec: EndpointSpec) -> int:
    raw = (spec.get("backend_config") or {}).get(NATT_DISCOVERY_PORT_CONFIG, "")
    try:
        port = int(raw)
    except ValueError:
        return 0
    return port if 0 < port < 65536 else 0


def _using_lb(spec: EndpointSpec) -> bool:
    return (spec.get("backend_config") or {}).get(USING_LOAD_BALANCER_CONFIG) == "true"
