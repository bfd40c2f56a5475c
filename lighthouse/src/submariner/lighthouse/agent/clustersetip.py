"""Clusterset VIP allocation against shared broker state (lighthouse-agent.md §8, D3).

Upstream pools are per agent and only seeded at start-up, so two clusters can hand the same VIP to two
services. Here every allocation is a compare-and-swap on one broker ConfigMap (`data: {ip: "N/S"}`): a
concurrent allocator's write fails with 409 and retries against the fresh map, so an IP is never given
twice. Allocation is idempotent per service (a retry of the same export gets the same IP).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import random
import time

from submariner.broker.kube import AlreadyExists, Conflict, NotFound, Obj, ResourceClient, deep_copy
from submariner.lighthouse.agent.naming import ServiceKey

log = logging.getLogger(__name__)

ALLOCATIONS_CONFIGMAP = "lighthouse-clusterset-ip-allocations"
ATTEMPTS = 20


class PoolExhausted(Exception):
    """No free VIP in the CIDR; the export reports ExportFailed and retries until one frees."""


class SharedVipPool:
    def __init__(self, configmaps: ResourceClient, namespace: str, cidr: str) -> None:
        self._client = configmaps
        self._namespace = namespace
        self._net = ipaddress.ip_network(cidr)

    def _hosts(self) -> tuple[int, int]:
        first, last = int(self._net.network_address), int(self._net.broadcast_address)
        if self._net.version == 4 and self._net.prefixlen < 31:
            first, last = first + 1, last - 1
        return first, last

    def _load(self) -> Obj:
        try:
            return self._client.get(self._namespace, ALLOCATIONS_CONFIGMAP)
        except NotFound:
            try:
                return self._client.create({"apiVersion": "v1", "kind": "ConfigMap",
                                            "metadata": {"name": ALLOCATIONS_CONFIGMAP,
                                                         "namespace": self._namespace},
                                            "data": {}})
            except AlreadyExists:
                return self._client.get(self._namespace, ALLOCATIONS_CONFIGMAP)

    def allocations(self) -> dict[str, str]:
        return dict(self._load().get("data") or {})

    def allocate(self, key: ServiceKey) -> str:
        owner = str(key)
        for attempt in range(ATTEMPTS):
            cm = self._load()
            data: dict[str, str] = dict(cm.get("data") or {})
            for ip, who in data.items():
                if who == owner:
                    return ip
            first, last = self._hosts()
            size = last - first + 1
            if len(data) >= size:
                raise PoolExhausted(f"clusterset IP pool {self._net} is exhausted ({size} addresses in use)")
            start = int(hashlib.sha256(owner.encode()).hexdigest()[:12], 16) % size
            ip = ""
            for i in range(size):  # linear probe from a per-service start: O(1) while the pool is sparse
                candidate = str(ipaddress.ip_address(first + (start + i) % size))
                if candidate not in data:
                    ip = candidate
                    break
            updated = deep_copy(cm)
            updated.setdefault("data", {})[ip] = owner
            try:
                self._client.update(updated)
            except Conflict:
                time.sleep(0.005 * (attempt + 1) * random.random())
                continue
            log.info("clusterset ip allocated service=%s ip=%s", owner, ip)
            return ip
        raise Conflict(f"clusterset IP allocation for {owner}: too many concurrent allocators", status=409)

    def release(self, key: ServiceKey) -> None:
        owner = str(key)
        for attempt in range(ATTEMPTS):
            try:
                cm = self._client.get(self._namespace, ALLOCATIONS_CONFIGMAP)
            except NotFound:
                return
            data = dict(cm.get("data") or {})
            mine = [ip for ip, who in data.items() if who == owner]
            if not mine:
                return
            for ip in mine:
                del data[ip]
            updated = deep_copy(cm)
            updated["data"] = data
            try:
                self._client.update(updated)
            except Conflict:
                time.sleep(0.005 * (attempt + 1) * random.random())
                continue
            log.info("clusterset ip released service=%s ips=%s", owner, ",".join(mine))
            return
