"""NAT discovery on UDP 4490: the wire format (`wire`) and the requester/responder (`discovery`)."""

from submariner.gateway.natdiscovery.discovery import NATDiscovery, kernel_source_ip

__all__ = ["NATDiscovery", "kernel_source_ip"]
