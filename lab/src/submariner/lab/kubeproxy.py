"""The lab's kube-proxy: Services → iptables NAT rules in one node namespace, as kube-proxy's iptables mode.

Why the real rule layout (chain names hashed like kube-proxy, KUBE-MARK-MASQ, statistic-mode load
balancing): Submariner's Globalnet and route agent were written against it — Globalnet finds a Service's
`KUBE-SVC-`/`KUBE-EXT-` chain by the same hash, and the seed shows these rules on the gateway node — so the
lab must look like a kube-proxy node to them.

The whole KUBE-* set is rendered from the Service and EndpointSlice caches and applied in one
`iptables-restore --noflush` transaction (every KUBE chain declared, hence flushed and rebuilt; stale
service chains deleted), so a reader never sees half a rule set; identical text is not re-applied.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from submariner.broker.kube import ENDPOINT_SLICES, SERVICES, ClientFactory, Informer, Obj
from submariner.lab.kubelet import IP_BIN, netns_exists, run_in_netns, set_sysctl
from submariner.lab.names import Instance

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MASQ_MARK = "0x4000"
_OWN_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")
_PER_SERVICE = ("KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-FW-", "KUBE-XLB-", "KUBE-SVL-")

MASQ_AGENT_CHAIN = "KIND-MASQ-AGENT"
# Appended (kindnet appends its hook): rules others insert at the top of POSTROUTING keep precedence.
APPENDED_JUMPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("nat", "POSTROUTING", ("-m", "addrtype", "!", "--dst-type", "LOCAL", "-m", "comment", "--comment",
                            "kind-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic "
                            "to our custom KIND-MASQ-AGENT chain", "-j", MASQ_AGENT_CHAIN)),
)

# (table, chain, rule) jumps from the built-in chains into ours, kept in place with `-C`/`-I`.
JUMPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("nat", "PREROUTING", ("-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES")),
    ("nat", "OUTPUT", ("-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES")),
    ("nat", "POSTROUTING", ("-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING")),
    ("filter", "FORWARD", ("-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment",
                           "kubernetes service portals", "-j", "KUBE-SERVICES")),
    ("filter", "OUTPUT", ("-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment",
                          "kubernetes service portals", "-j", "KUBE-SERVICES")),
    ("filter", "INPUT", ("-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment",
                         "kubernetes externally-visible service portals", "-j", "KUBE-EXTERNAL-SERVICES")),
)


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def service_chain(port_name: str, protocol: str) -> str:
    """kube-proxy's servicePortPolicyClusterChain: `KUBE-SVC-` + base32(sha256(ns/name:port + proto))[:16]."""
    return "KUBE-SVC-" + _hash(port_name + protocol.lower())


def external_chain(port_name: str, protocol: str) -> str:
    return "KUBE-EXT-" + _hash(port_name + protocol.lower())


def endpoint_chain(port_name: str, protocol: str, endpoint: str) -> str:
    return "KUBE-SEP-" + _hash(port_name + protocol.lower() + endpoint)


@dataclass(frozen=True)
class Rendered:
    """One rendering: the restore text and the facts needed to apply it without churn."""

    text: str
    nat_chains: frozenset[str]
    udp_backends: frozenset[tuple[str, str]]  # (service IP, endpoint IP) of UDP ports: conntrack clean-up


def _ready(endpoint: Mapping[str, Any]) -> bool:
    ready = (endpoint.get("conditions") or {}).get("ready")
    return ready is None or bool(ready)


def _endpoints(slices: Iterable[Obj], port_name: str, protocol: str) -> list[tuple[str, int]]:
    """Ready (address, port) pairs for one service port, sorted and de-duplicated (stable rendering)."""
    found: set[tuple[str, int]] = set()
    for sl in slices:
        if (sl.get("addressType") or "IPv4") != "IPv4":
            continue
        ports = [p for p in sl.get("ports") or () if (p.get("name") or "") == port_name
                 and (p.get("protocol") or "TCP") == protocol and p.get("port")]
        if not ports:
            continue
        target = int(ports[0]["port"])
        for ep in sl.get("endpoints") or ():
            addresses = ep.get("addresses") or ()
            if addresses and _ready(ep):
                found.add((str(addresses[0]), target))
    return sorted(found, key=lambda e: (socket.inet_aton(e[0]), e[1]))


def _probability(n: int) -> str:
    return f"{1.0 / n:0.10f}"


def render(services: Iterable[Obj], slices: Iterable[Obj], cluster_cidr: str | None = None) -> Rendered:
    """The filter and nat sections kube-proxy's iptables mode would write for these objects."""
    by_service: dict[tuple[str, str], list[Obj]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        svc_name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if svc_name:
            by_service.setdefault((str(meta.get("namespace") or ""), str(svc_name)), []).append(sl)

    chains: list[str] = []
    nat: list[str] = []
    nodeports: list[str] = []
    filt: list[str] = []
    filt_ext: list[str] = []
    udp: set[tuple[str, str]] = set()

    def ordered(objs: Iterable[Obj]) -> list[Obj]:
        return sorted(objs, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"].get("name", "")))

    for svc in ordered(services):
        meta = svc.get("metadata") or {}
        spec = svc.get("spec") or {}
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        cluster_ip = str(spec.get("clusterIP") or "")
        if spec.get("type") == "ExternalName" or cluster_ip in ("", "None"):
            continue
        external_ips = [str(ip) for ip in spec.get("externalIPs") or () if ip]
        affinity = spec.get("sessionAffinity") == "ClientIP"
        timeout = int(((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
                      or 10800)
        for port in spec.get("ports") or ():
            proto = str(port.get("protocol") or "TCP")
            p = proto.lower()
            port_name = str(port.get("name") or "")
            spn = f"{ns}/{name}" + (f":{port_name}" if port_name else "")
            svc_port = int(port.get("port") or 0)
            node_port = int(port.get("nodePort") or 0)
            if spec.get("type") not in ("NodePort", "LoadBalancer"):
                node_port = 0
            eps = _endpoints(by_service.get((ns, name), ()), port_name, proto)
            match = f"-m {p} -p {p}"
            if not eps:
                reject = f'-m comment --comment "{spn} has no endpoints" -m {p} -p {p}'
                tail = "-j REJECT --reject-with icmp-port-unreachable"
                filt.append(f"-A KUBE-SERVICES {reject} -d {cluster_ip}/32 --dport {svc_port} {tail}")
                for ip in external_ips:
                    filt_ext.append(f"-A KUBE-EXTERNAL-SERVICES {reject} -d {ip}/32 --dport {svc_port} {tail}")
                if node_port:
                    filt_ext.append(f"-A KUBE-EXTERNAL-SERVICES {reject} -m addrtype --dst-type LOCAL "
                                    f"--dport {node_port} {tail}")
                continue
            svc_chain = service_chain(spn, proto)
            ext_chain = external_chain(spn, proto)
            chains.append(svc_chain)
            nat.append(f'-A KUBE-SERVICES -m comment --comment "{spn} cluster IP" {match} -d {cluster_ip}/32 '
                       f"--dport {svc_port} -j {svc_chain}")
            if cluster_cidr:
                nat.append(f'-A {svc_chain} -m comment --comment "{spn} cluster IP" {match} -d {cluster_ip}/32 '
                           f"--dport {svc_port} ! -s {cluster_cidr} -j KUBE-MARK-MASQ")
            if external_ips or node_port:
                chains.append(ext_chain)
                for ip in external_ips:
                    nat.append(f'-A KUBE-SERVICES -m comment --comment "{spn} external IP" {match} -d {ip}/32 '
                               f"--dport {svc_port} -j {ext_chain}")
                if node_port:
                    nodeports.append(f'-A KUBE-NODEPORTS -m comment --comment "{spn}" {match} --dport {node_port} '
                                     f"-j {ext_chain}")
                nat.append(f'-A {ext_chain} -m comment --comment "masquerade traffic for {spn} external '
                           f'destinations" -j KUBE-MARK-MASQ')
                nat.append(f"-A {ext_chain} -j {svc_chain}")
            seps = [(ip, port_no, endpoint_chain(spn, proto, f"{ip}:{port_no}")) for ip, port_no in eps]
            if affinity:
                for ip, port_no, sep in seps:
                    nat.append(f'-A {svc_chain} -m comment --comment "{spn} -> {ip}:{port_no}" -m recent '
                               f"--name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds {timeout} "
                               f"--reap -j {sep}")
            for i, (ip, port_no, sep) in enumerate(seps):
                chains.append(sep)
                stat = f" -m statistic --mode random --probability {_probability(len(seps) - i)}"
                nat.append(f'-A {svc_chain} -m comment --comment "{spn} -> {ip}:{port_no}"'
                           f"{stat if i < len(seps) - 1 else ''} -j {sep}")
                nat.append(f'-A {sep} -m comment --comment "{spn}" -s {ip}/32 -j KUBE-MARK-MASQ')
                recent = f" -m recent --name {sep} --mask 255.255.255.255 --rsource --set" if affinity else ""
                nat.append(f'-A {sep} -m comment --comment "{spn}"{recent} {match} -j DNAT '
                           f"--to-destination {ip}:{port_no}")
                if proto == "UDP":
                    for svc_ip in (cluster_ip, *external_ips):
                        udp.add((svc_ip, ip))

    lines = ["*filter"]
    lines += [f":{c} - [0:0]" for c in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES")]
    lines += filt + filt_ext + ["COMMIT", "*nat"]
    own = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    unique_chains = list(dict.fromkeys(chains))
    lines += [f":{c} - [0:0]" for c in own + unique_chains]
    lines += [
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE '
        "--random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    ]
    lines += nat + nodeports
    lines.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the '
                 'last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    if cluster_cidr:
        # kindnet's ip-masq-agent (the CNI's part, not kube-proxy's; the lab's CNI lives here): pod traffic to
        # anything outside the pod network leaves with the node's address, so pods reach the underlay (a broker's
        # API server) though no other host routes back to pod CIDRs. Submariner's SUBMARINER-POSTROUTING, hooked
        # in front, ACCEPTs cross-cluster flows before they get here, so pod IPs survive the tunnel.
        own.append(MASQ_AGENT_CHAIN)
        lines += [
            f":{MASQ_AGENT_CHAIN} - [0:0]",
            f'-A {MASQ_AGENT_CHAIN} -d {cluster_cidr} -m comment --comment "kind-masq-agent: local traffic is not '
            'subject to MASQUERADE" -j RETURN',
            f'-A {MASQ_AGENT_CHAIN} -m comment --comment "kind-masq-agent: outbound traffic is subject to '
            'MASQUERADE (must be last in chain)" -j MASQUERADE',
        ]
    lines.append("COMMIT")
    return Rendered("\n".join(lines) + "\n", frozenset(own + unique_chains), frozenset(udp))


class KubeProxy:
    """kube-proxy for one node namespace: watches Services and EndpointSlices, keeps the NAT rules current.

    `cluster_cidr` (the cluster's pod subnet) masquerades traffic to ClusterIPs from outside the pod
    network, like kube-proxy's `--cluster-cidr`; without it only hairpin and external-IP traffic is.
    """

    def __init__(
        self,
        instance: Instance,
        cluster: str,
        node_netns: str,
        kube: ClientFactory,
        *,
        cluster_cidr: str | None = None,
        min_sync_interval: float = 0.05,
    ) -> None:
        self.instance = instance
        self.cluster = cluster
        self.node_netns = node_netns
        self.kube = kube
        self.cluster_cidr = cluster_cidr
        self.min_sync_interval = min_sync_interval
        self.applied = 0  # restores run (tests check that identical input does not re-apply)
        self.skipped = 0
        self.last_error = ""
        self._applied: Rendered | None = None
        self._stale: set[str] = set()
        self._sync_lock = threading.Lock()
        self._dirty = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.services = Informer(
            kube.resource(SERVICES), name=f"services@{node_netns}",
            on_add=self._changed, on_update=lambda _o, n: self._changed(n), on_delete=self._changed,
        )
        self.slices = Informer(
            kube.resource(ENDPOINT_SLICES), name=f"endpointslices@{node_netns}",
            on_add=self._changed, on_update=lambda _o, n: self._changed(n), on_delete=self._changed,
        )

    def start(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            return
        if not netns_exists(self.node_netns):
            raise RuntimeError(f"node namespace {self.node_netns} does not exist")
        set_sysctl(self.node_netns, "net.ipv4.ip_forward", "1")
        self._stale = self._existing_service_chains()
        for inf in (self.services, self.slices):
            inf.start()
        deadline = time.monotonic() + timeout
        for inf in (self.services, self.slices):
            if not inf.wait_for_sync(max(0.1, deadline - time.monotonic())):
                self.stop()
                raise RuntimeError(f"kube-proxy {self.node_netns}: informer {inf.name} did not sync in {timeout}s")
        self.sync()
        self._thread = threading.Thread(target=self._run, name=f"kube-proxy-{self.node_netns}", daemon=True)
        self._thread.start()
        log.info("kube-proxy started netns=%s", self.node_netns)

    def stop(self) -> None:
        """Stop watching (the rules stay: they die with the node namespace, like a node's)."""
        self._stopped.set()
        self._dirty.set()
        for inf in (self.services, self.slices):
            inf.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        self._thread = None

    def _changed(self, _obj: Obj) -> None:
        self._dirty.set()

    def _run(self) -> None:
        delay = 0.5
        while not self._stopped.is_set():
            self._dirty.wait(30.0)  # a periodic pass also repairs rules someone else removed
            if self._stopped.is_set():
                return
            time.sleep(self.min_sync_interval)  # coalesce a burst of events into one restore
            self._dirty.clear()
            try:
                self.sync()
                delay = 0.5
            except Exception as e:
                self.last_error = str(e)
                log.warning("kube-proxy sync failed netns=%s error=%s retry_s=%.1f", self.node_netns, e, delay)
                self._stopped.wait(delay)
                delay = min(delay * 2, 10.0)
                self._dirty.set()

    def render(self) -> Rendered:
        return render(self.services.list(), self.slices.list(), self.cluster_cidr)

    def sync(self) -> bool:
        """Render and apply; returns False (and runs nothing) when the rules are already what was applied."""
        with self._sync_lock:
            rendered = self.render()
            if self._applied is not None and rendered.text == self._applied.text:
                self.skipped += 1
                return False
            stale = (self._stale | (self._applied.nat_chains if self._applied else set())) - rendered.nat_chains
            stale = {c for c in stale if c.startswith(_PER_SERVICE)}
            text = rendered.text
            if stale:
                declare = "".join(f":{c} - [0:0]\n" for c in sorted(stale))
                delete = "".join(f"-X {c}\n" for c in sorted(stale))
                text = text.replace("*nat\n", "*nat\n" + declare, 1)
                text = text[: text.rfind("COMMIT\n")] + delete + "COMMIT\n"
            try:
                self._restore(text)
                self._stale = set()
            except RuntimeError:
                if not stale:
                    raise
                # another component (Globalnet) may still jump to a stale chain: keep it (flushed) for later
                log.info("kube-proxy could not delete stale chains netns=%s chains=%s", self.node_netns, sorted(stale))
                self._restore(rendered.text)
                self._stale = stale
            self._ensure_jumps()
            old_udp = self._applied.udp_backends if self._applied else frozenset()
            self._applied = rendered
            self.applied += 1
            self.last_error = ""
        gone = old_udp - rendered.udp_backends
        if gone:
            self._flush_conntrack(gone)
        log.debug("kube-proxy applied netns=%s chains=%d", self.node_netns, len(rendered.nat_chains))
        return True

    # ------------------------------------------------------------------ iptables

    def _iptables(self, binary: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([IP_BIN, "netns", "exec", self.node_netns, binary, *args], input=input,
                              capture_output=True, text=True, timeout=30, check=False)

    def _restore(self, text: str) -> None:
        result = self._iptables("iptables-restore", "--noflush", input=text)
        if result.returncode != 0:
            raise RuntimeError(f"iptables-restore in {self.node_netns} failed: {result.stderr.strip()}")

    def _ensure_jumps(self) -> None:
        if self.cluster_cidr:
            for table, chain, rule in APPENDED_JUMPS:
                if self._iptables("iptables", "-t", table, "-C", chain, *rule).returncode != 0:
                    result = self._iptables("iptables", "-t", table, "-A", chain, *rule)
                    if result.returncode != 0:
                        raise RuntimeError(f"iptables -t {table} -A {chain} in {self.node_netns}: "
                                           f"{result.stderr.strip()}")
        for table, chain, rule in JUMPS:
            if self._iptables("iptables", "-t", table, "-C", chain, *rule).returncode != 0:
                result = self._iptables("iptables", "-t", table, "-I", chain, "1", *rule)
                if result.returncode != 0:
                    raise RuntimeError(f"iptables -t {table} -I {chain} in {self.node_netns}: {result.stderr.strip()}")

    def _existing_service_chains(self) -> set[str]:
        """Per-service chains a previous run left in the node (deleted by the first restore)."""
        result = self._iptables("iptables-save", "-t", "nat")
        return {line[1:].split()[0] for line in result.stdout.splitlines()
                if line.startswith(":") and line[1:].startswith(_PER_SERVICE)}

    def _flush_conntrack(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Forget UDP flows to removed endpoints (kube-proxy's conntrack clean-up), or DNS would blackhole."""
        wanted = set(pairs)

        def flush() -> int:
            from pyroute2 import Conntrack  # type: ignore[import-untyped]
            from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple  # type: ignore[import-untyped]

            ct = Conntrack()
            deleted = 0
            try:
                for entry in list(ct.dump_entries(tuple_orig=NFCTAttrTuple(proto=socket.IPPROTO_UDP))):
                    if (entry.tuple_orig.daddr, entry.tuple_reply.saddr) in wanted:
                        with contextlib.suppress(Exception):
                            ct.delete(entry)
                            deleted += 1
            finally:
                ct.close()
            return deleted

        try:
            n = run_in_netns(self.node_netns, flush)
            if n:
                log.info("kube-proxy flushed conntrack netns=%s entries=%d", self.node_netns, n)
        except Exception as e:
            log.warning("kube-proxy conntrack clean-up failed netns=%s error=%s", self.node_netns, e)


__all__ = ["JUMPS", "KubeProxy", "Rendered", "endpoint_chain", "external_chain", "render", "service_chain"]
