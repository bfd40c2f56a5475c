"""Cable drivers: one tunnel per remote Endpoint (vxlan, wireguard, libreswan)."""

from submariner.gateway.cable.driver import (
    CableDriver,
    DriverContext,
    DriverError,
    NATEndpointInfo,
    new_driver,
    register,
    supported,
)

__all__ = ["CableDriver", "DriverContext", "DriverError", "NATEndpointInfo", "new_driver", "register", "supported"]
