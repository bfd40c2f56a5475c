"""Prometheus metrics on SUBMARINER_METRICSPORT: how full the GlobalCIDR pool is, and who leads.

Why: pool exhaustion is the one Globalnet failure users cannot see from a single object (every new export
just stays without an IP); the gauges show it coming.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from submariner.globalnet.ipam import IPPool


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.allocated = Gauge("submariner_global_IP_allocated", "Global IPs allocated, per GlobalCIDR", ["cidr"],
                               registry=self.registry)
        self.available = Gauge("submariner_global_IP_availability", "Global IPs still free, per GlobalCIDR",
                               ["cidr"], registry=self.registry)
        self.leader = Gauge("submariner_globalnet_leader", "1 while this pod holds the lease and programs rules",
                            registry=self.registry)

    def observe_pool(self, pool: IPPool) -> None:
        self.allocated.labels(cidr=pool.cidr).set(pool.size - pool.free_count)
        self.available.labels(cidr=pool.cidr).set(pool.free_count)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Start the /metrics listener (a daemon thread); returns the bound port (useful with port 0)."""
        server, _ = start_http_server(port, addr, registry=self.registry)
        return int(server.server_port)
