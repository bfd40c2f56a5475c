"""The cable driver contract (dataplane.md §2.3) and the registry the local Endpoint's backend selects from.

A *cable* is the tunnel to one remote Endpoint. The engine decides which Endpoint to connect (and which of
its IPs, from NAT discovery); a driver only knows how to build or tear down one tunnel in the kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from submariner.broker.api.submariner import Connection, EndpointSpec
from submariner.dataplane.netlink import Netlink


@dataclass(frozen=True)
class NATEndpointInfo:
    """NAT discovery's verdict for one remote Endpoint: connect to `use_ip`, encapsulate if `use_nat`."""

    endpoint: dict[str, Any]
    """The remote Endpoint object (metadata + spec), as read from the API."""
    use_ip: str
    use_nat: bool

    @property
    def spec(self) -> EndpointSpec:
        spec: EndpointSpec = self.endpoint["spec"]
        return spec

    @property
    def cable_name(self) -> str:
        return str(self.spec["cable_name"])


class DriverError(RuntimeError):
    """A driver could not do what was asked; the engine reports it and retries."""


class CableDriver(Protocol):
    def init(self) -> None:
        """Prepare the kernel (devices, rules); called once from StartEngine, failure = start failure."""

    def name(self) -> str: ...

    def connect_to_endpoint(self, info: NATEndpointInfo) -> str:
        """Build (or converge) the cable; returns the remote IP used. Idempotent: a repeat changes nothing."""

    def disconnect_from_endpoint(self, endpoint: dict[str, Any]) -> None: ...

    def get_active_connections(self) -> list[Connection]:
        """Connections treated as installed (for the engine's replacement logic)."""

    def get_connections(self) -> list[Connection]:
        """Fresh status of every cable, for the Gateway CR."""

    def cleanup(self) -> None:
        """Uninstall: remove everything this driver put in the kernel."""


@dataclass
class DriverContext:
    """What every driver is built from: the local Endpoint and the gateway's settings."""

    local: EndpointSpec
    cluster_cidrs: list[str]
    cni_ip: str = ""
    mtu: int | None = None
    """MTU of the interface holding private_ip (the lab has no default route; see endpoint.py)."""
    psk: str = ""
    nat_enabled: bool = False
    force_encaps: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    """Per-driver seams (netlink, command runner, wg backend, clock) injected by the process or tests."""


DriverFactory = Callable[[DriverContext], CableDriver]
LeftoverCleanup = Callable[[Netlink], bool]
"""Removes a driver's node-wide kernel state given a Netlink; True if something was there."""
_REGISTRY: dict[str, DriverFactory] = {}
_LEFTOVERS: dict[str, LeftoverCleanup] = {}


def register(name: str, factory: DriverFactory) -> None:
    """Drivers self-register under their backend name (`vxlan`, `wireguard`, `libreswan`)."""
    _REGISTRY[name] = factory


def register_leftovers(name: str, cleanup: LeftoverCleanup) -> None:
    """Kernel state a driver leaves on the node after its process is gone (processes die with the gateway
    pod; devices like vxlan-tunnel do not)."""
    _LEFTOVERS[name] = cleanup


def remove_other_drivers_leftovers(name: str, netlink: Netlink) -> list[str]:
    """Before `name`'s Init: remove what other drivers left on this node (the node's gateway used another
    driver before: vxlan-tunnel keeps UDP 4500 bound, so wireguard's listen port would be "in use").
    Returns the drivers whose state was removed."""
    _load_builtins()
    return [other for other, cleanup in sorted(_LEFTOVERS.items()) if other != name and cleanup(netlink)]


def supported() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def new_driver(name: str, ctx: DriverContext) -> CableDriver:
    """The driver for the local Endpoint's backend; an unknown name lists the supported ones."""
    _load_builtins()
    factory = _REGISTRY.get(name)
    if factory is None:
        raise DriverError(f"unsupported cable driver {name!r}: supported drivers are {', '.join(supported())}")
    return factory(ctx)


def _load_builtins() -> None:
    # importing registers them; lazily so a unit test of one driver does not pull in the others
    from submariner.gateway.cable import libreswan, vxlan, wireguard  # noqa: F401


def connection(spec: EndpointSpec, status: str, message: str, *, using_ip: str = "", using_nat: bool = False,
               ) -> Connection:
    conn: Connection = {"status": status, "statusMessage": message, "endpoint": dict(spec)}  # type: ignore[typeddict-item]
    if using_ip:
        conn["usingIP"] = using_ip
    conn["usingNAT"] = using_nat
    return conn
