"""Health checking (dataplane.md §2.10, §3.6): an ICMP pinger per remote Endpoint's `healthCheckIP`.

Tunnel drivers report whether a cable is *configured*; only traffic through it proves it works. The active
gateway pings each remote gateway's CNI IP through the cable (every HEALTHCHECKINTERVAL s) and the route agent
on every other node does the same through vx-submariner (every HEALTHCHECKINTERVAL x 60 s); both report the
verdict and RTT figures the same way, so the pinger lives here, beside the other seams both daemons share.
`Pinger` holds the loss/restart logic on an injectable clock and a `Prober` seam; `IcmpProber` is the raw
socket implementation. Verdict changes are pushed (`on_change`) so callers publish them at once instead of
at their next periodic write.
"""

from __future__ import annotations

import logging
import math
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Protocol

from submariner.broker.api.submariner import EndpointSpec, LatencyRTTSpec

log = logging.getLogger(__name__)

CONNECTED, ERROR, UNKNOWN = "connected", "error", "unknown"
WINDOW = 1000
RESTART_AFTER = 5.0
"""After an error verdict the pinger starts a fresh session this much later (upstream's 5 s)."""
RETRY_FIRST = 1.0
"""First repeat of an unanswered echo while the path is unconfirmed (then 2, 4, … s within the interval)."""


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String() for a non-negative duration: "1.234567ms", "2.5s", "850ns", "0s"."""
    ns = round(seconds * 1e9)
    if ns <= 0:
        return "0s"
    if ns < 1000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _trim(ns / 1000, 3) + "µs"
    if ns < 1_000_000_000:
        return _trim(ns / 1_000_000, 6) + "ms"
    s = ns / 1e9
    if s < 60:
        return _trim(s, 9) + "s"
    h, rem = divmod(ns, 3_600_000_000_000)
    m, rem = divmod(rem, 60_000_000_000)
    out = (f"{h}h" if h else "") + f"{m}m"
    return out + _trim(rem / 1e9, 9) + "s"


def _trim(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return text or "0"


class Statistics:
    """RTT figures over a window that restarts every 1000 samples keeping the last two (as upstream)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.last = 0.0

    def update(self, rtt: float) -> None:
        if len(self.samples) >= WINDOW:
            self.samples = self.samples[-2:]
        self.samples.append(rtt)
        self.last = rtt

    def latency(self) -> LatencyRTTSpec | None:
        if not self.samples:
            return None
        n = len(self.samples)
        mean = sum(self.samples) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in self.samples) / n)
        return {"last": go_duration(self.last), "min": go_duration(min(self.samples)),
                "average": go_duration(mean), "max": go_duration(max(self.samples)), "stdDev": go_duration(std)}


class Prober(Protocol):
    def send(self, seq: int) -> None: ...

    def receive(self, timeout: float) -> int | None:
        """The sequence number of a matching echo reply within `timeout`, else None."""

    def close(self) -> None: ...


class IcmpProber:
    """Echo requests on a raw ICMP socket; replies matched by identifier and source address."""

    def __init__(self, ip: str, ident: int | None = None) -> None:
        self.ip = ip
        self.ident = (ident if ident is not None else (os.getpid() ^ id(self))) & 0xFFFF
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)

    @staticmethod
    def _checksum(data: bytes) -> int:
        if len(data) % 2:
            data += b"\0"
        total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
        total = (total >> 16) + (total & 0xFFFF)
        total += total >> 16
        return ~total & 0xFFFF

    def send(self, seq: int) -> None:
        payload = b"submariner-health".ljust(24, b"\0")
        header = struct.pack("!BBHHH", 8, 0, 0, self.ident, seq & 0xFFFF)
        packet = struct.pack("!BBHHH", 8, 0, self._checksum(header + payload), self.ident, seq & 0xFFFF) + payload
        self.sock.sendto(packet, (self.ip, 0))

    def receive(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return None
            data, addr = self.sock.recvfrom(2048)
            if addr[0] != self.ip or len(data) < 28:
                continue
            ihl = (data[0] & 0x0F) * 4
            icmp_type, _, _, ident, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if icmp_type == 0 and ident == self.ident:
                return int(seq)
        return None  # unreachable

    def close(self) -> None:
        self.sock.close()


class Pinger:
    """Sends an echo every `interval`; more than `max_loss` unanswered → error, restart after 5 s.

    While the path is not confirmed (no reply yet, or after an error) the echo of the current interval is
    repeated after 1, 2, 4, … s (`retry_first`, doubling, within the interval): with the route agent's 60 s
    interval a first echo lost because the cable was still being built would otherwise leave the node
    "connecting" for a whole minute. Repeats do not count as sends: the loss threshold keeps its meaning
    (`max_loss` intervals without a reply), only the first verdict comes sooner."""

    def __init__(self, ip: str, *, interval: float = 1.0, max_loss: int = 5,
                 prober_factory: Callable[[str], Prober] = IcmpProber,
                 clock: Callable[[], float] = time.monotonic, restart_after: float = RESTART_AFTER,
                 retry_first: float = RETRY_FIRST, on_change: Callable[[], None] | None = None) -> None:
        self.ip = ip
        self.interval = interval
        self.max_loss = max_loss
        self.prober_factory = prober_factory
        self.clock = clock
        self.restart_after = restart_after
        self.retry_first = retry_first
        self.on_change = on_change
        """Called (from the pinger's thread) when status or message changed."""
        self.status = UNKNOWN
        self.message = ""
        self.stats = Statistics()
        self.sent = 0
        self.received = 0
        self._seq = 0
        self._sent_at: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the logic (called by the loop, or directly by tests) ---------------------------------------------
    def on_send(self) -> bool:
        """Account for one echo about to go out; False when the loss threshold is crossed (stop + restart)."""
        self.sent += 1
        if self.sent - self.received > self.max_loss:
            self._set(ERROR, f'Failed to successfully ping the remote endpoint IP "{self.ip}"')
            return False
        return True

    def on_reply(self, rtt: float) -> None:
        self.stats.update(rtt)
        self.sent = self.received = 0
        self._set(CONNECTED, "")

    def on_failure(self, error: str) -> None:
        self._set(UNKNOWN, error)

    def _set(self, status: str, message: str) -> None:
        changed = (status, message) != (self.status, self.message)
        self.status, self.message = status, message
        if changed and self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # a listener's failure must not stop the pinging
                log.exception("health check: change listener failed")

    # -- the loop -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"pinger-{self.ip}", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = False) -> None:
        """Ask the loop to end; it exits within one interval (callers holding locks must not wait)."""
        self._stop.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.interval + 2)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                prober = self.prober_factory(self.ip)
            except OSError as e:
                self.on_failure(f"cannot open an ICMP socket: {e}")
                if self._stop.wait(self.restart_after):
                    return
                continue
            try:
                self._session(prober)
            except OSError as e:
                self.on_failure(f"pinging {self.ip} failed: {e}")
            finally:
                prober.close()
            self.sent = self.received = 0
            if self._stop.wait(self.restart_after):
                return

    def _session(self, prober: Prober) -> None:
        while not self._stop.is_set():
            if not self.on_send():
                log.info("health check: %s", self.message)
                return
            start = self.clock()
            deadline = start + self.interval
            retry = self.retry_first
            self._echo(prober)
            while (left := deadline - self.clock()) > 0 and not self._stop.is_set():
                repeat_at = start + retry if self.status != CONNECTED and retry > 0 else deadline
                seq = prober.receive(max(0.0, min(left, repeat_at - self.clock())))
                if seq is not None:
                    sent_at = self._sent_at.pop(seq, None)
                    if sent_at is not None:
                        self.received += 1
                        self.on_reply(self.clock() - sent_at)
                elif repeat_at < deadline and self.clock() >= repeat_at:
                    self._echo(prober)  # unconfirmed path: ask again well before the next interval
                    retry *= 2
                elif repeat_at >= deadline:
                    break
            if len(self._sent_at) > 64:
                self._sent_at = dict(list(self._sent_at.items())[-16:])
            left = deadline - self.clock()
            if left > 0 and self._stop.wait(left):
                return

    def _echo(self, prober: Prober) -> None:
        self._seq = (self._seq + 1) & 0xFFFF
        self._sent_at[self._seq] = self.clock()
        try:
            prober.send(self._seq)
        except OSError as e:  # no route yet (cable still being built): a lost echo, not a broken pinger
            log.debug("echo to %s not sent: %s", self.ip, e)


class HealthChecker:
    """One pinger per remote Endpoint with a healthCheckIP; restarted when that IP changes.

    `on_change` is called from a pinger's thread whenever one of the verdicts changes (the gateway writes its
    Gateway CR, the route agent its RouteAgent, at once). A custom `pinger_factory` wires it itself."""

    def __init__(self, local_cluster_id: str, *, interval: float = 1.0, max_loss: int = 5,
                 pinger_factory: Callable[[str], Pinger] | None = None,
                 prober_factory: Callable[[str], Prober] = IcmpProber,
                 on_change: Callable[[], None] | None = None) -> None:
        self.local_cluster_id = local_cluster_id
        self.on_change = on_change
        self._factory = pinger_factory or (
            lambda ip: Pinger(ip, interval=interval, max_loss=max_loss, prober_factory=prober_factory,
                              on_change=self._changed))
        self._pingers: dict[str, Pinger] = {}  # cable name -> pinger
        self._lock = threading.Lock()

    def endpoint_updated(self, spec: EndpointSpec) -> None:
        if spec["cluster_id"] == self.local_cluster_id:
            return
        ip = spec.get("healthCheckIP") or ""
        name = spec["cable_name"]
        with self._lock:
            current = self._pingers.get(name)
            if current is not None and current.ip == ip:
                return
            if current is not None:
                current.stop()
                del self._pingers[name]
            if ip:
                pinger = self._factory(ip)
                self._pingers[name] = pinger
                pinger.start()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def endpoint_removed(self, spec: EndpointSpec) -> None:
        with self._lock:
            pinger = self._pingers.pop(spec["cable_name"], None)
        if pinger is not None:
            pinger.stop()

    def latency_info(self, spec: EndpointSpec) -> Pinger | None:
        with self._lock:
            pinger = self._pingers.get(spec["cable_name"])
        return pinger if pinger is not None and pinger.ip == spec.get("healthCheckIP") else None

    def stop(self) -> None:
        with self._lock:
            pingers, self._pingers = list(self._pingers.values()), {}
        for p in pingers:
            p.stop()
