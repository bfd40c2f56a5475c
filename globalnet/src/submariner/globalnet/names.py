"""Names Globalnet derives from object names (dataplane.md §4.5, §4.6).

They are hashes or truncations because kernel and API names have length limits (ipset names 31 chars,
object names 63); the exact derivations are upstream's, so objects and sets survive a switch of
implementation.
"""

from __future__ import annotations

import base64
import hashlib

IPSET_PREFIX = "SM-GN-"
INTERNAL_SERVICE_PREFIX = "submariner-"
CLUSTER_EGRESS_NAME = "cluster-egress.submariner.io"
LEASE_NAME = "submariner-globalnet-lock"


def _b32_sha256(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()


def egress_ipset_name(namespace: str, name: str) -> str:
    """`SM-GN-` + first 25 chars of base32(SHA-256("ns/name")): 31 chars, the ipset limit."""
    return IPSET_PREFIX + _b32_sha256(f"{namespace}/{name}")[:25]


def internal_service_name(service: str) -> str:
    """The Service that carries an exported ClusterIP Service's global IP as externalIP."""
    return INTERNAL_SERVICE_PREFIX + _b32_sha256(service)[:32].lower()


def headless_pod_ingress_name(pod: str) -> str:
    return "pod-" + pod[:59]


def headless_endpoints_ingress_name(name: str, ip: str) -> str:
    return f"ep-{name[:44]}-{ip[:15]}"


def lease_identity(node_name: str) -> str:
    return f"{node_name}-submariner-gateway"
