"""The gateway health-check global IP (dataplane.md §4.6).

Remote gateways ping our gateway's global IP; an ICMP DNAT sends it to the CNI IP. The IP is recorded in
the local Gateway's `submariner.io/globalIp` annotation (the gateway engine copies it into the Endpoint's
healthCheckIP). Other Gateways' annotated IPs stay reserved until those Gateways are deleted, so a
failover never hands out an IP a peer still advertises.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from submariner.broker.api import labels as L
from submariner.broker.api import sanitize_name
from submariner.broker.api.submariner import GATEWAYS
from submariner.broker.kube import Obj
from submariner.globalnet.context import GATEWAY, Context, Key, Retry, deleting, ensure_ips, reserve
from submariner.globalnet.ipam import IPAMError
from submariner.globalnet.rules import HealthIngress

log = logging.getLogger(__name__)


def cni_ip_from(addresses: Iterable[tuple[str, str]], cluster_cidrs: Iterable[str]) -> str | None:
    """The first interface IPv4 address inside a local pod CIDR (the node's CNI IP), None if none."""
    nets = [ipaddress.IPv4Network(c, strict=False) for c in cluster_cidrs]
    for _, cidr in addresses:
        ip = ipaddress.IPv4Interface(cidr).ip
        if any(ip in n for n in nets):
            return str(ip)
    return None


def _annotation(obj: Obj) -> str | None:
    ip = ((obj.get("metadata") or {}).get("annotations") or {}).get(L.GLOBAL_IP)
    return str(ip) if ip else None


class GatewayHealth:
    def __init__(self, ctx: Context, cni_ip: str | None) -> None:
        self.ctx = ctx
        self.cni_ip = cni_ip
        self.client = ctx.client(GATEWAYS)
        self.local_name = sanitize_name(ctx.config.node_name)

        def add(obj: Obj) -> None:
            meta = obj.get("metadata") or {}
            ctx.enqueue(GATEWAY, str(meta.get("namespace") or ""), str(meta.get("name")))

        ctx.informer(GATEWAYS, namespace=ctx.config.namespace).add_handlers(
            on_add=add, on_update=lambda o, n: add(n), on_delete=add)

    def reserve(self) -> None:
        for gw in self.ctx.objects(GATEWAYS):
            ip = _annotation(gw)
            meta = gw.get("metadata") or {}
            if ip and ip in self.ctx.pool:
                reserve(self.ctx, (GATEWAY, str(meta.get("namespace")), str(meta.get("name"))), [ip])

    def _set(self, health: HealthIngress | None) -> None:
        if self.ctx.state.health != health:
            self.ctx.state.health = health
            self.ctx.changed()

    def reconcile(self, namespace: str, name: str) -> None:
        key: Key = (GATEWAY, namespace, name)
        gw = self.ctx.get(GATEWAYS, namespace, name)
        local = name == self.local_name
        if deleting(gw):
            self.ctx.release(key)
            if local:
                self._set(None)
            return
        assert gw is not None
        if not local or self.cni_ip is None:
            return  # a peer's IP stays reserved (see reserve); without a CNI IP there is nothing to DNAT to
        try:
            ip = ensure_ips(self.ctx, key, 1)[0]
        except IPAMError as e:
            raise Retry(f"no global IP for the gateway health check: {e}") from e
        if _annotation(gw) != ip:
            self.client.patch(namespace, name, {"metadata": {"annotations": {L.GLOBAL_IP: ip}}})
        self._set(HealthIngress(ip, self.cni_ip))
