"""`subctl diagnose …` (subctl.md §3.3, §4.4): single-cluster checks over the published objects.

Everything is read from the API (workload status, Gateway/RouteAgent objects, ServiceExport conditions,
the CoreDNS ConfigMap); the direct probes run in pods through pods/exec: one DNS query to Lighthouse DNS from
the lighthouse-agent pod, and the metrics and firewall checks, which start their own pods (`firewall`).
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import click

from submariner.broker.api import labels as L
from submariner.broker.api.meta import APIResource
from submariner.broker.api.submariner import CLUSTER_GLOBAL_EGRESS_IPS, GLOBAL_EGRESS_IPS, GLOBAL_INGRESS_IPS
from submariner.broker.kube import ENDPOINT_SLICES, ClientFactory, Cluster, KubeError, NotFound, Obj
from submariner.cli import OPERATOR_NAMESPACE, firewall
from submariner.cli import manifests as m
from submariner.cli.discovery import discover
from submariner.cli.errors import CliError, version_trailer
from submariner.cli.kubeconf import KubeFlags, connect, resolve, select_contexts
from submariner.cli.netprobe import bootstrap
from submariner.cli.options import kube_options, split_list
from submariner.cli.podexec import exec_in_pod
from submariner.cli.reporter import Reporter
from submariner.cli.resources import (
    CLUSTERS,
    CONFIGMAPS,
    DAEMON_SETS,
    DEPLOYMENTS,
    ENDPOINTS,
    GATEWAYS,
    PODS,
    ROUTE_AGENTS,
    SERVICE_DISCOVERIES,
    SERVICE_EXPORTS,
    SERVICE_IMPORTS,
    SERVICES,
    SUBMARINERS,
)

MIN_CONNECTIVITY_VERSION = (1, 19)
MIN_DISCOVERY_VERSION = (1, 21)
RESTART_WARNING = 5
CLUSTER_EGRESS_NAME = "cluster-egress.submariner.io"
CALICO_IPPOOLS = APIResource("crd.projectcalico.org", "v1", "IPPool", "ippools", "ippool", False)
DNS_PROBE_NAME = "subctl-diagnose.submariner-operator.svc.clusterset.local"
SKIP_FIREWALL = ('Skipping inter-cluster firewall check as it requires two kubeconfigs. Please run "subctl diagnose '
                 'firewall inter-cluster" command manually.')


def _get(kube: ClientFactory, res: Any, ns: str, name: str) -> Obj | None:
    try:
        return kube.resource(res).get(ns, name)
    except NotFound:
        return None


def _list(kube: ClientFactory, res: Any, ns: str | None) -> list[Obj]:
    try:
        return kube.resource(res).list(ns)[0]
    except NotFound:
        return []


def parse_version(text: str) -> tuple[int, int]:
    m_ = re.match(r"v?(\d+)\.(\d+)", text)
    if not m_:
        raise ValueError(f"cannot parse Kubernetes version {text!r}")
    return int(m_.group(1)), int(m_.group(2))


def server_version(kube: ClientFactory) -> str:
    if not isinstance(kube, Cluster):
        raise CliError("the server version is only available from a real API server")
    from kubernetes.client import VersionApi

    return str(VersionApi(kube.api_client).get_code().git_version)


def _conditions(obj: Obj) -> dict[str, Obj]:
    return {str(c.get("type")): c for c in (obj.get("status") or {}).get("conditions") or []}


def _cidrs(values: Any) -> list[ipaddress.IPv4Network]:
    out = []
    for v in values if isinstance(values, list) else str(values or "").split(","):
        try:
            out.append(ipaddress.IPv4Network(str(v).strip(), strict=False))
        except ValueError:
            continue
    return out


class Checks:
    """The checks of one cluster; each reports through the reporter and returns whether it passed."""

    def __init__(self, kube: ClientFactory, reporter: Reporter, ns: str = OPERATOR_NAMESPACE,
                 options: firewall.Options | None = None, name: str = "") -> None:
        self.kube, self.r, self.ns = kube, reporter, ns
        self.options = options or firewall.Options(namespace=ns)
        self.name = name
        self.submariner = _get(kube, SUBMARINERS, ns, m.SUBMARINER_CR)
        self.discovery = _get(kube, SERVICE_DISCOVERIES, ns, m.SERVICE_DISCOVERY_CR)

    def k8s_version(self) -> bool:
        self.r.start("Checking Submariner support for the Kubernetes version")
        version = server_version(self.kube)
        needed = MIN_DISCOVERY_VERSION if self.discovery is not None else MIN_CONNECTIVITY_VERSION
        if parse_version(version) < needed:
            self.r.failure(f'Kubernetes version "{version}" is not supported (needs {needed[0]}.{needed[1]} or newer)')
            self.r.end()
            return False
        self.r.success(f'Kubernetes version "{version}" is supported')
        self.r.end()
        return True

    def cni(self) -> bool:
        self.r.start("Checking Submariner support for the CNI network plugin")
        plugin = discover(self.kube).plugin
        supported = ("generic", "canal-flannel", "weave-net", "OpenShiftSDN", "OVNKubernetes", "calico", "kindnet",
                     "flannel")
        if plugin in supported:
            self.r.success(f'The detected CNI network plugin ("{plugin}") is supported')
            self.r.end()
            return self.calico_ippools() if plugin == "calico" else True
        self.r.failure(f'The detected CNI network plugin ("{plugin}") is not supported')
        self.r.end()
        return False

    def calico_ippools(self) -> bool:
        """With Calico, every remote subnet needs an IPPool with `disabled: true` and `natOutgoing: false`, or
        Calico hands out remote addresses and masquerades cross-cluster traffic."""
        self.r.start("Calico CNI detected, checking if the Submariner IPPool pre-requisites are configured")
        gateways = [g for g in _list(self.kube, GATEWAYS, self.ns) if (g.get("status") or {}).get("haStatus") ==
                    "active"]
        if not gateways:
            self.r.failure("No gateways detected on the cluster")
            self.r.end()
            return False
        try:
            pools = self.kube.resource(CALICO_IPPOOLS).list(None)[0]
        except KubeError as e:
            self.r.error(e, "Error obtaining IPPools")
            return False
        by_cidr = {str((p.get("spec") or {}).get("cidr")): p for p in pools if (p.get("spec") or {}).get("cidr")}
        ok = True
        for gw in gateways:
            for conn in (gw.get("status") or {}).get("connections") or []:
                endpoint = conn.get("endpoint") or {}
                for subnet in endpoint.get("subnets") or []:
                    pool = by_cidr.get(str(subnet))
                    where = f'for remote endpoint "{endpoint.get("cable_name")}"'
                    if pool is None:
                        self.r.failure(f'Could not find any IPPool with CIDR "{subnet}" {where}')
                        ok = False
                        continue
                    spec, name = pool.get("spec") or {}, pool["metadata"]["name"]
                    if spec.get("disabled") is not True:
                        self.r.failure(f'The IPPool "{name}" with CIDR "{subnet}" {where} has disabled set to false')
                        ok = False
                    if spec.get("natOutgoing") is True:
                        self.r.failure(f'The IPPool "{name}" with CIDR "{subnet}" {where} has natOutgoing set to '
                                       "true")
                        ok = False
        self.r.end()
        return ok

    def kube_proxy_mode(self) -> bool:
        self.r.start("Checking Submariner support for the kube-proxy mode")
        cm = _get(self.kube, CONFIGMAPS, "kube-system", "kube-proxy")
        mode = ""
        if cm is not None:
            found = re.search(r"^mode:\s*\"?(\w*)", str((cm.get("data") or {}).get("config.conf") or ""), re.M)
            mode = found.group(1) if found else ""
        if mode == "ipvs":
            self.r.failure("The cluster is deployed with an unsupported kube-proxy mode \"ipvs\"")
            self.r.end()
            return False
        self.r.success(f'The kube-proxy mode is supported{f" ({mode})" if mode else ""}')
        self.r.end()
        return True

    def deployment(self) -> bool:
        if self.submariner is None and self.discovery is None:
            self.r.warning("No Submariner feature is installed")
            return True
        ok = self._cidr_overlap() if self.submariner is not None else True
        for res, names in ((DAEMON_SETS, (m.GATEWAY, m.ROUTE_AGENT, m.GLOBALNET)),
                           (DEPLOYMENTS, (m.LIGHTHOUSE_AGENT, m.LIGHTHOUSE_COREDNS))):
            for name in names:
                obj = _get(self.kube, res, self.ns, name)
                if obj is None:
                    continue
                self.r.start(f'Checking {res.kind} "{name}"')
                status = obj.get("status") or {}
                if res == DAEMON_SETS:
                    desired, ready = status.get("desiredNumberScheduled", 0), status.get("numberReady", 0)
                else:
                    desired, ready = (obj.get("spec") or {}).get("replicas", 1), status.get("readyReplicas", 0)
                if desired != ready or (res == DAEMON_SETS and name == m.GATEWAY and not desired):
                    self.r.failure(f'The desired number of replicas for {res.kind} "{name}" ({desired}) does not '
                                   f"match the actual number running ({ready})")
                    ok = False
                self.r.end()
        self.r.start("Checking the status of all Submariner pods")
        for pod in _list(self.kube, PODS, self.ns):
            name = pod["metadata"]["name"]
            phase = (pod.get("status") or {}).get("phase")
            if phase != "Running":
                self.r.failure(f'Pod "{name}" is not running. (current state is {phase})')
                ok = False
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                if int(cs.get("restartCount") or 0) >= RESTART_WARNING:
                    self.r.warning(f'Pod "{name}" has restarted {cs["restartCount"]} times')
        self.r.end()
        if self.submariner is not None:
            active = [g for g in _list(self.kube, GATEWAYS, self.ns)
                      if (g.get("status") or {}).get("haStatus") == "active"]
            self.r.start("Checking that there is exactly one active gateway")
            if len(active) != 1:
                self.r.failure(f"There are {len(active)} active gateways (expected exactly 1)")
                ok = False
            self.r.end()
            side = firewall.Side(self.kube, self.name, self.submariner)
            ok = firewall.metrics_reachable(side, self.r, self.options, "gateway") and ok
            if (self.submariner.get("spec") or {}).get("globalCIDR"):
                ok = firewall.metrics_reachable(side, self.r, self.options, "globalnet") and ok
        return ok

    def _cidr_overlap(self) -> bool:
        assert self.submariner is not None
        status = self.submariner.get("status") or {}
        spec = self.submariner.get("spec") or {}
        own_id = spec.get("clusterID")
        globalnet = bool(spec.get("globalCIDR") or status.get("globalCIDR"))
        if globalnet:
            self.r.start("Globalnet deployment detected - checking that globalnet CIDRs do not overlap")
            own = _cidrs(status.get("globalCIDR") or spec.get("globalCIDR"))
            key = "global_cidr"
        else:
            self.r.start("Non-Globalnet deployment detected - checking that cluster CIDRs do not overlap")
            own = _cidrs(status.get("clusterCIDR") or spec.get("clusterCIDR")) + \
                _cidrs(status.get("serviceCIDR") or spec.get("serviceCIDR"))
            key = ""
        ok = True
        for cluster in _list(self.kube, CLUSTERS, self.ns):
            cspec = cluster.get("spec") or {}
            if cspec.get("cluster_id") == own_id:
                continue
            theirs = _cidrs(cspec.get(key)) if key else _cidrs(cspec.get("cluster_cidr")) + \
                _cidrs(cspec.get("service_cidr"))
            for a in own:
                for b in theirs:
                    if a.overlaps(b):
                        self.r.failure(f'CIDR {a} of this cluster overlaps with CIDR {b} of cluster '
                                       f'"{cspec.get("cluster_id")}"')
                        ok = False
        self.r.end()
        return ok

    def connections(self) -> bool:
        if self.submariner is None:
            self.r.warning("Submariner connectivity feature is not installed")
            return True
        ok = True
        self.r.start("Checking gateway connections")
        active = [g for g in _list(self.kube, GATEWAYS, self.ns) if (g.get("status") or {}).get("haStatus") == "active"]
        if not active:
            self.r.failure("There are no active gateways")
            ok = False
        own_id = (self.submariner.get("spec") or {}).get("clusterID")
        remote = {str((e.get("spec") or {}).get("cluster_id")) for e in _list(self.kube, ENDPOINTS, self.ns)} - {
            str(own_id)}
        for gw in active:
            conns = (gw.get("status") or {}).get("connections") or []
            for conn in conns:
                if conn.get("status") != "connected":
                    cluster = (conn.get("endpoint") or {}).get("cluster_id")
                    self.r.failure(f'Connection to cluster "{cluster}" is not established. Connection details:\n'
                                   + json.dumps(conn, indent=2))
                    ok = False
            for cluster in sorted(remote - {str((c.get("endpoint") or {}).get("cluster_id")) for c in conns}):
                self.r.failure(f'There is no connection to cluster "{cluster}" (its Endpoint is known); check the '
                               "gateway pod's log")
                ok = False
        self.r.end()
        self.r.start("Checking route agent connections")
        for agent in _list(self.kube, ROUTE_AGENTS, self.ns):
            for remote in (agent.get("status") or {}).get("remoteEndpoints") or []:
                if remote.get("status") not in ("connected", "none"):
                    cluster = (remote.get("spec") or {}).get("cluster_id")
                    self.r.failure(f'Connection to cluster "{cluster}" from node "{agent["metadata"]["name"]}" is '
                                   f'not established: {remote.get("statusMessage") or remote.get("status")}')
                    ok = False
        self.r.end()
        return ok

    def service_discovery(self) -> bool:
        ok = True
        self.r.start("Checking that services have been exported properly")
        own_id = str(((self.submariner or self.discovery or {}).get("spec") or {}).get("clusterID") or "")
        for export in _list(self.kube, SERVICE_EXPORTS, None):
            ns, name = export["metadata"]["namespace"], export["metadata"]["name"]
            conds = _conditions(export)
            if _get(self.kube, SERVICES, ns, name) is None:
                self.r.failure(f'Error retrieving Service "{name}" in namespace "{ns}": not found')
                ok = False
                continue
            if (conds.get("Valid") or {}).get("status") != "True":
                self.r.failure(f'ServiceExport "{ns}/{name}" is not valid: {(conds.get("Valid") or {}).get("message")}')
                ok = False
            if (conds.get("Conflict") or {}).get("status") == "True":
                self.r.failure(f'ServiceExport "{ns}/{name}" has a conflict: {conds["Conflict"].get("message")}')
                ok = False
            ready = conds.get("Ready") or {}
            if (conds.get("Valid") or {}).get("status") == "True" and ready.get("status") != "True":
                self.r.failure(f'ServiceExport "{ns}/{name}" is not ready: '
                               f'{ready.get("message") or "no Ready condition yet"}')
                ok = False
            if own_id and not any(
                    (s.get("metadata", {}).get("labels") or {}).get(L.SOURCE_CLUSTER) == own_id and
                    (s.get("metadata", {}).get("labels") or {}).get(L.SERVICE_NAME) == name
                    for s in _list(self.kube, ENDPOINT_SLICES, ns)):
                self.r.failure(f'The EndpointSlice for the exported service "{ns}/{name}" from cluster "{own_id}" '
                               "does not exist (is the lighthouse agent running?)")
                ok = False
            if _get(self.kube, SERVICE_IMPORTS, ns, name) is None:
                self.r.failure(f'ServiceImport "{ns}/{name}" does not exist')
                ok = False
        self.r.end()
        if self.discovery is None and not (self.submariner or {}).get("spec", {}).get("serviceDiscoveryEnabled"):
            return ok
        ok = self._coredns() and ok
        return ok

    def _coredns(self) -> bool:
        ok = True
        self.r.start("Checking that the cluster DNS forwards clusterset.local to Lighthouse DNS")
        service = _get(self.kube, SERVICES, self.ns, m.LIGHTHOUSE_COREDNS)
        dns_ip = str(((service or {}).get("spec") or {}).get("clusterIP") or "")
        spec = (self.submariner or self.discovery or {}).get("spec") or {}
        custom = spec.get("coreDNSCustomConfig") or {}
        cm = _get(self.kube, CONFIGMAPS, custom.get("namespace") or "kube-system", custom.get("configMapName") or
                  "coredns")
        text = "\n".join(str(v) for v in ((cm or {}).get("data") or {}).values())
        block = re.search(r"clusterset\.local(?::53)?[^{]*\{[^}]*forward \. ([0-9.]+)", text)
        if not dns_ip:
            self.r.failure(f'The Lighthouse DNS Service "{self.ns}/{m.LIGHTHOUSE_COREDNS}" does not exist')
            ok = False
        elif block is None:
            self.r.failure("The CoreDNS configuration has no clusterset.local forward block (re-run subctl join)")
            ok = False
        elif block.group(1) != dns_ip:
            self.r.failure(f"CoreDNS forwards clusterset.local to {block.group(1)}, but Lighthouse DNS is at {dns_ip}")
            ok = False
        self.r.end()
        if dns_ip:
            self.r.start("Checking that Lighthouse DNS answers")
            dep = _get(self.kube, DEPLOYMENTS, self.ns, m.LIGHTHOUSE_COREDNS) or {}
            if not (dep.get("status") or {}).get("readyReplicas"):
                self.r.failure("No Lighthouse DNS pod is ready")
                ok = False
            else:
                answered, why = query_lighthouse(self.kube, self.ns, dns_ip)
                if answered is None:
                    self.r.warning(f"Could not query Lighthouse DNS at {dns_ip} ({why}); its pods are ready")
                elif not answered:
                    self.r.failure(f"Lighthouse DNS at {dns_ip} did not answer for clusterset.local: {why}")
                    ok = False
            self.r.end()
        return ok

    def globalnet(self) -> bool:
        """Globalnet's allocations: the cluster egress IPs, every GlobalEgressIP, a GlobalIngressIP per exported
        ClusterIP Service (what Lighthouse answers with); nothing to check without Globalnet."""
        spec = (self.submariner or {}).get("spec") or {}
        if self.submariner is None or not spec.get("globalCIDR"):
            return True
        ok = True
        self.r.start("Checking that Globalnet is correctly configured and functioning")
        cluster_egress = _get(self.kube, CLUSTER_GLOBAL_EGRESS_IPS, "", CLUSTER_EGRESS_NAME)
        if cluster_egress is None:
            self.r.failure(f'Error obtaining ClusterGlobalEgressIP resource "{CLUSTER_EGRESS_NAME}": not found')
            ok = False
        else:
            ok = self._allocated(cluster_egress, "ClusterGlobalEgressIP", default=8) and ok
        for egress in _list(self.kube, GLOBAL_EGRESS_IPS, None):
            ok = self._allocated(egress, "GlobalEgressIP", default=1) and ok
        ingress = _list(self.kube, GLOBAL_INGRESS_IPS, None)
        by_service = {(g["metadata"].get("namespace"), ((g.get("spec") or {}).get("serviceRef") or {}).get("name"))
                      for g in ingress if (g.get("status") or {}).get("allocatedIP")}
        for export in _list(self.kube, SERVICE_EXPORTS, None):
            ns, name = export["metadata"]["namespace"], export["metadata"]["name"]
            svc = _get(self.kube, SERVICES, ns, name)
            svc_spec = (svc or {}).get("spec") or {}
            if svc is None or svc_spec.get("clusterIP") == "None" or svc_spec.get("type", "ClusterIP") != "ClusterIP":
                continue  # missing Services are reported by service-discovery; headless ones get per-pod IPs
            if (ns, name) not in by_service:
                self.r.failure(f'No matching GlobalIngressIP resource found for exported service "{ns}/{name}"')
                ok = False
        self.r.end()
        return ok

    def _allocated(self, obj: Obj, kind: str, *, default: int) -> bool:
        """Allocated=True with as many IPs as `spec.numberOfIPs` asks (the API's default when unset)."""
        meta, status = obj["metadata"], obj.get("status") or {}
        name = f'{meta.get("namespace")}/{meta["name"]}' if meta.get("namespace") else meta["name"]
        allocated = _conditions(obj).get("Allocated") or {}
        if allocated.get("status") != "True":
            self.r.failure(f'{kind} "{name}" is not allocated: {allocated.get("message") or "no Allocated condition"}')
            return False
        wanted = int((obj.get("spec") or {}).get("numberOfIPs") or default)
        got = len(status.get("allocatedIPs") or [])
        if got != wanted:
            self.r.failure(f'{kind} "{name}" has {got} allocated IPs, but {wanted} were requested')
            return False
        return True

    def firewall_intra_cluster(self) -> bool:
        return firewall.intra_cluster(firewall.Side(self.kube, self.name, self.submariner), self.r, self.options)


def query_lighthouse(kube: ClientFactory, ns: str, ip: str) -> tuple[bool | None, str]:
    """One A query for a service no one exports, from inside the cluster (the lighthouse-agent pod: the service
    address is only routable there); only an authoritative NXDOMAIN/NOERROR counts (Lighthouse DNS owns the zone,
    while a resolver or a transparent DNS proxy on the way would answer without the AA flag). None: could not
    ask."""
    if not isinstance(kube, Cluster):
        return None, "pods/exec needs a real API server"
    agents = [p for p in _list(kube, PODS, ns) if (p["metadata"].get("labels") or {}).get("app") == m.LIGHTHOUSE_AGENT
              and (p.get("status") or {}).get("phase") == "Running"]
    if not agents:
        return None, f"no running {m.LIGHTHOUSE_AGENT} pod to query from"
    pod = agents[0]["metadata"]["name"]
    try:
        code, out = exec_in_pod(kube, ns, pod, [*bootstrap(), "dns-query", "--server", ip, "--name",
                                                DNS_PROBE_NAME], 30)
    except Exception as e:  # the kubernetes client's websocket errors have no common base
        return None, f"exec in pod {pod} failed: {e}"
    found = re.search(r"rcode=(\d+) aa=([01])", out)
    if found is None:
        if "error=" in out:
            return False, f"no answer from pod {pod}: {out.strip().removeprefix('error=')}"
        return None, f"exec in pod {pod} failed (exit {code}): {out.strip()[:200]}"
    rcode, aa = int(found.group(1)), found.group(2) == "1"
    name = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}.get(rcode, f"rcode {rcode}")
    if not aa:
        return False, f"a non-authoritative {name} answer came back to pod {pod}"
    return rcode in (0, 3), name


CHECKS: dict[str, Callable[[Checks], bool]] = {
    "k8s-version": Checks.k8s_version,
    "cni": Checks.cni,
    "kube-proxy-mode": Checks.kube_proxy_mode,
    "deployment": Checks.deployment,
    "connections": Checks.connections,
    "service-discovery": Checks.service_discovery,
    "firewall-intra-cluster": Checks.firewall_intra_cluster,
    "globalnet": Checks.globalnet,
}
ALL = (("k8s-version",), ("deployment",),
       ("cni", "connections", "kube-proxy-mode", "firewall-intra-cluster", "globalnet"), ("service-discovery",))
"""`diagnose all`: upstream's blocks (version, deployment, connectivity, service discovery), an empty line between."""


def _run_checks(checks: Checks, groups: tuple[tuple[str, ...], ...]) -> bool:
    ok = True
    for i, group in enumerate(groups):
        if i:
            sys.stderr.write("\n")
        for name in group:
            ok = CHECKS[name](checks) and ok
    return ok


def run(kube: KubeFlags, groups: tuple[tuple[str, ...], ...], contexts: list[str], namespace: str, reporter: Reporter,
        options: firewall.Options | None = None, in_cluster: bool = False) -> bool:
    if in_cluster:  # the pod's service account, one cluster, no header (upstream's --in-cluster)
        try:
            client = Cluster.in_cluster()
        except Exception as e:  # kubernetes.config.ConfigException and friends: one line
            raise CliError(f"{e} (--in-cluster works only inside a pod)", "Error loading the in-cluster configuration"
                           ) from None
        ok = _run_checks(Checks(client, reporter, namespace, options, "in-cluster"), groups)
    else:
        ok = True
        with_header = not kube.context
        for ctx in select_contexts(kube, contexts, reporter.warning):
            if with_header:
                sys.stdout.write(f'Cluster "{ctx.cluster}"\n')
                sys.stdout.flush()
            try:
                ok = _run_checks(Checks(connect(kube, ctx.name), reporter, namespace, options, ctx.cluster),
                                 groups) and ok
            except (KubeError, CliError, ValueError) as e:
                reporter.error(e, f'Error diagnosing cluster "{ctx.cluster}"')
                ok = False
            sys.stdout.write("\n")
            sys.stdout.flush()
    if len(groups) > 1:
        sys.stdout.write(SKIP_FIREWALL + "\n")
    return ok


def _validation_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option("--verbose", is_flag=True, help="produce verbose logs during validation")(f)
    return click.option("--validation-timeout", type=click.IntRange(min=1), default=90, show_default=True,
                        help="timeout in seconds while validating the connection attempt")(f)


def _make(name: str, help_text: str, checks: tuple[tuple[str, ...], ...], validation: bool = False) -> click.Command:
    @click.command(name, help=help_text)
    @click.option("-n", "--namespace", default=OPERATOR_NAMESPACE, show_default=True, help="Submariner namespace")
    @click.option("--contexts", multiple=True, help="comma-separated contexts to diagnose (default: all)")
    @click.option("--in-cluster", is_flag=True, help="use the in-cluster configuration to connect to Kubernetes")
    @kube_options
    def cmd(kube: KubeFlags, namespace: str, contexts: tuple[str, ...], in_cluster: bool, validation_timeout: int = 90,
            verbose: bool = False) -> None:
        reporter = Reporter()
        options = firewall.Options(float(validation_timeout), verbose, namespace)
        try:
            ok = run(kube, checks, split_list(contexts), namespace, reporter, options, in_cluster)
        except (CliError, KubeError) as e:
            reporter.error(e, e.message if isinstance(e, CliError) else "Error diagnosing the in-cluster configuration")
            ok = False
        if not ok:
            version_trailer()
            raise SystemExit(1)

    return _validation_options(cmd) if validation else cmd


def _remote_flags(kube: KubeFlags, remotecontext: str | None, remoteconfig: str | None) -> KubeFlags:
    if not remotecontext and not remoteconfig:
        raise click.UsageError("This command requires two kube contexts: the local one (--context or the current "
                               "context) and the remote one (--remotecontext)")
    return KubeFlags(kubeconfig=remoteconfig or kube.kubeconfig, context=remotecontext)


def _make_inter(name: str, help_text: str, nat_discovery: bool) -> click.Command:
    @click.command(name, help=help_text)
    @click.option("-n", "--namespace", default=OPERATOR_NAMESPACE, show_default=True, help="Submariner namespace")
    @click.option("--remotecontext", default=None, help="the remote cluster's kubeconfig context")
    @click.option("--remoteconfig", default=None, help="the remote cluster's kubeconfig file(s)")
    @_validation_options
    @kube_options
    def cmd(kube: KubeFlags, namespace: str, remotecontext: str | None, remoteconfig: str | None,
            validation_timeout: int, verbose: bool) -> None:
        reporter = Reporter()
        remote_flags = _remote_flags(kube, remotecontext, remoteconfig)
        options = firewall.Options(float(validation_timeout), verbose, namespace)
        try:
            sides = []
            for flags in (kube, remote_flags):
                ctx = resolve(flags)
                client = connect(flags, ctx.name)
                sides.append(firewall.Side(client, ctx.cluster, _get(client, SUBMARINERS, namespace,
                                                                     m.SUBMARINER_CR)))
            ok = firewall.inter_cluster(sides[0], sides[1], reporter, options, nat_discovery=nat_discovery)
        except (CliError, KubeError) as e:
            reporter.error(e, e.message if isinstance(e, CliError) else "")
            ok = False
        if not ok:
            version_trailer()
            raise SystemExit(1)

    return cmd


@click.group("diagnose")
def diagnose_group() -> None:
    """Run diagnostic checks on the Submariner deployment and report any issues"""


@diagnose_group.group("firewall")
def firewall_group() -> None:
    """Check the firewall configuration"""


diagnose_group.add_command(_make("all", "Run all diagnostic checks (except those requiring two kubecontexts)", ALL,
                                 validation=True))
for _name, _help in (
    ("k8s-version", "Check the Kubernetes version"),
    ("cni", "Check the CNI network plugin"),
    ("kube-proxy-mode", "Check the kube-proxy mode"),
    ("deployment", "Check the Submariner deployment"),
    ("connections", "Check the gateway and route agent connections"),
    ("service-discovery", "Check service discovery: exports, the CoreDNS forward, Lighthouse DNS"),
):
    diagnose_group.add_command(_make(_name, _help, ((_name,),)))
firewall_group.add_command(_make("intra-cluster", "Check firewall access for intra-cluster Submariner VxLAN traffic",
                                 (("firewall-intra-cluster",),), validation=True))
firewall_group.add_command(_make_inter("inter-cluster", "Check firewall access to setup tunnels between the Gateway "
                                       "nodes", nat_discovery=False))
firewall_group.add_command(_make_inter("nat-discovery", "Check firewall access for nat-discovery to function "
                                       "properly", nat_discovery=True))
