"""`subctl join broker-info.subm` (subctl.md §3.2, §4.5, §5-§7).

Everything is read and validated first (file, cluster ID, flags, both clusters reachable, broker rights,
ID uniqueness, CIDRs, gateway node, Globalnet blocks); the first write comes only after that, so a failed
join leaves nothing behind. There is no operator: the component workloads come from `manifests` and are
applied here, identically on real and lab clusters.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from submariner.broker import brokerinfo
from submariner.broker.api.names import cluster_id_problems, sanitize_cluster_id
from submariner.broker.kube import ClientFactory, Cluster, Conflict, KubeError, NotFound, Obj, Unavailable
from submariner.cli import BROKER_NAMESPACE, DEFAULT_REPOSITORY, IMAGE_TAG, OPERATOR_NAMESPACE, cidr
from submariner.cli import manifests as m
from submariner.cli.apply import apply, apply_all, wait_for_crds
from submariner.cli.deploy_broker import ensure_token_secret
from submariner.cli.discovery import NetworkDetails, detail_lines, discover
from submariner.cli.errors import CliError, check_version_skew, exit_on_error
from submariner.cli.kubeconf import KubeFlags, connect, resolve
from submariner.cli.options import kube_options, split_list
from submariner.cli.reporter import Reporter
from submariner.cli.resources import (
    BROKERS,
    CLUSTERS,
    CONFIGMAPS,
    GATEWAYS,
    NODES,
    SERVICE_DISCOVERIES,
    SERVICES,
    SUBMARINERS,
)

CABLE_DRIVERS = ("libreswan", "wireguard", "vxlan")
WORKER_LABEL = "node-role.kubernetes.io/worker"
MASTER_LABEL = "node-role.kubernetes.io/master"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
CAS_ATTEMPTS = 5
DEFAULT_CABLE_DRIVER = "libreswan"
# Defaults a cluster's administrator (or the lab, whose kernel has no ESP) sets for flags join is not given.
JOIN_DEFAULTS = ("kube-system", "submariner-join-defaults")
Prompt = Callable[[str, list[str] | None], str]


@dataclass
class JoinOptions:
    broker_info: str
    cluster_id: str = ""
    service_cidr: str = ""
    cluster_cidr: str = ""
    repository: str = DEFAULT_REPOSITORY
    version: str = IMAGE_TAG
    natt_port: int = 4500
    natt: bool = True
    preferred_server: bool = False
    air_gapped: bool = False
    load_balancer: bool = False
    force_udp_encaps: bool = False
    ipsec_debug: bool = False
    pod_debug: bool = False
    label_gateway: bool = True
    gateway_node: str = ""
    cable_driver: str = ""  # "" = not given: the cluster's join defaults, else DEFAULT_CABLE_DRIVER
    globalnet: bool = True
    globalnet_cluster_size: int = 0
    globalnet_cidr: str = ""
    custom_domains: list[str] | None = None
    health_check: bool = True
    health_check_interval: int = 1
    health_check_max_packet_loss_count: int = 5
    coredns_custom_configmap: str = ""
    check_broker_certificate: bool = True
    broker_url: str = ""
    enable_clusterset_ip: bool = False
    clusterset_ip_cidr: str = ""
    image_overrides: dict[str, str] = field(default_factory=dict)
    wait: bool = False
    wait_timeout: float = 300.0
    proxy: dict[str, str] = field(default_factory=dict)


# --- pure decisions ------------------------------------------------------------------------------------


def validate_cluster_id(cluster_id: str) -> None:
    problems = cluster_id_problems(cluster_id)
    if problems:
        raise CliError(f"{cluster_id} is not a valid ClusterID [{'; '.join(problems)}]", "Invalid cluster ID")


def default_cluster_id(kube_cluster_name: str) -> str:
    return sanitize_cluster_id(kube_cluster_name)


def _labels(node: Obj) -> dict[str, str]:
    return dict((node.get("metadata") or {}).get("labels") or {})


def labelled_gateways(nodes: list[Obj]) -> list[str]:
    return sorted(n["metadata"]["name"] for n in nodes if _labels(n).get(m.GATEWAY_LABEL) == "true")


def gateway_candidates(nodes: list[Obj]) -> list[str]:
    """Nodes labelled as workers; else nodes that are neither master nor control-plane; else non-masters.

    Upstream lets control-plane nodes qualify, so a kind cluster with one worker prompts between two
    nodes; preferring non-control-plane nodes makes that case a deterministic, prompt-free choice of the
    worker, and a single-node cluster still gets its only node.
    """
    workers = [n for n in nodes if WORKER_LABEL in _labels(n)]
    if not workers:
        workers = [n for n in nodes if MASTER_LABEL not in _labels(n) and CONTROL_PLANE_LABEL not in _labels(n)]
    if not workers:
        workers = [n for n in nodes if MASTER_LABEL not in _labels(n)]
    return sorted(n["metadata"]["name"] for n in workers)


def parse_coredns_configmap(value: str) -> tuple[str, str]:
    if not value:
        return "kube-system", "coredns"
    parts = value.split("/")
    if len(parts) > 2:
        raise CliError(f'"{value}" is not a valid ConfigMap reference: use [<namespace>/]<name> '
                       "(--coredns-custom-configmap)")
    return (parts[0], parts[1]) if len(parts) == 2 else ("kube-system", parts[0])


def check_cidr_flag(value: str, flag: str) -> str:
    if not value:
        return ""
    for part in split_list([value]):
        try:
            ipaddress.IPv4Network(part, strict=False)
        except ValueError as e:
            raise CliError(f"{flag} {value!r} is not a valid CIDR: {e}", "Invalid CIDR") from None
    return value


# --- the broker ---------------------------------------------------------------------------------------


def broker_client(url: str, token: str, ca: bytes | None, *, verify: bool) -> Cluster:
    if not verify:  # the user said so (--check-broker-certificate=false): no warning per request
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return Cluster.from_token(url, token, ca_data=ca if verify else None, insecure=not verify, name="broker")


def check_broker(info: brokerinfo.BrokerInfo, url: str, file: str, *, verify: bool,
                 timeout: float = 10.0) -> tuple[Cluster, list[Obj]]:
    """Connect with the file's token and list clusters.submariner.io: proves URL, TLS, token and rights."""
    ns = info.broker_namespace or BROKER_NAMESPACE
    attempts: list[bytes | None] = [info.ca_crt] if info.ca_crt else []
    attempts.append(None)  # system CAs (a broker behind a publicly trusted certificate)
    last: KubeError | None = None
    for ca in attempts if verify else [None]:
        broker = broker_client(url, info.token, ca, verify=verify)
        broker.request_timeout = (timeout, timeout)
        try:
            clusters, _ = broker.resource(CLUSTERS).list(ns)
            return broker, clusters
        except Unavailable as e:
            last = e
            if "CERTIFICATE_VERIFY_FAILED" in str(e) or "SSL" in str(e):
                continue
            raise CliError(f"cannot reach the broker at {url}: {e} (check the URL in {file}, or override it "
                           "with --broker-url)", "Error connecting to the broker") from None
        except KubeError as e:
            if e.status == 401:
                raise CliError(f"the broker at {url} rejected the token from {file} (401 Unauthorized): the "
                               "file may come from an earlier deploy-broker; use the current broker-info.subm",
                               "Error connecting to the broker") from None
            if e.status == 403:
                raise CliError(f"the token from {file} may not list clusters.submariner.io in namespace {ns} "
                               f"(403 Forbidden): {e}", "Error connecting to the broker") from None
            if e.status == 404:
                raise CliError(f"the broker at {url} has no clusters.submariner.io in namespace {ns} (404): "
                               "was `subctl deploy-broker` run against it?", "Error connecting to the broker") from None
            raise CliError(f"{e}", "Error connecting to the broker") from None
    raise CliError(f"the broker's TLS certificate at {url} could not be verified: {last} (pass "
                   "--check-broker-certificate=false to skip the check, or fix the URL with --broker-url)",
                   "Error connecting to the broker")


def _read_configmap(broker: ClientFactory, ns: str, name: str) -> Obj | None:
    try:
        return broker.resource(CONFIGMAPS).get(ns, name)
    except NotFound:
        return None


@dataclass
class CIDRPlan:
    """The result of validating one allocation (globalnet or clusterset IP) before writing it."""

    configmap: str
    cidr: str
    reused: bool
    default_range: str
    default_size: int
    explicit: str = ""
    size: int = 0
    label: str = "global"


def plan_allocation(cm: Obj, plan: CIDRPlan, cluster_id: str, range_key: str, size_key: str) -> cidr.Decision:
    data = cm.get("data") or {}
    supernet = cidr.parse_cidr(cidr.unjson_string(data.get(range_key), plan.default_range), "broker range")
    try:
        default_size = int(str(data.get(size_key) or "0")) or plan.default_size
    except ValueError:
        default_size = plan.default_size
    allocations = cidr.parse_cluster_info(data.get("clusterinfo"))
    return cidr.decide(cluster_id=cluster_id, supernet=supernet, default_size=default_size,
                       allocations=allocations, explicit_cidr=plan.explicit, size=plan.size,
                       what=f"{plan.label} CIDR")


def write_allocation(broker: ClientFactory, ns: str, plan: CIDRPlan, cluster_id: str, range_key: str,
                     size_key: str, reporter: Reporter, what: str) -> str:
    """Record this cluster's block in the broker ConfigMap by compare-and-swap, re-deciding on conflict."""
    client = broker.resource(CONFIGMAPS)
    for _ in range(CAS_ATTEMPTS):
        cm = client.get(ns, plan.configmap)
        decision = plan_allocation(cm, plan, cluster_id, range_key, size_key)
        allocations = cidr.parse_cluster_info((cm.get("data") or {}).get("clusterinfo"))
        updated = cidr.with_allocation(allocations, cluster_id, decision.cidr)
        if updated == allocations:
            return decision.cidr
        cm.setdefault("data", {})["clusterinfo"] = cidr.render_cluster_info(updated)
        try:
            client.update(cm)
            return decision.cidr
        except Conflict:
            reporter.warning(f"Conflict occurred updating the {what} ConfigMap - retrying")
    raise CliError(f"the broker ConfigMap {ns}/{plan.configmap} kept changing; try again",
                   f"Error updating the {what} information on the Broker")


def _assign(broker: ClientFactory, ns: str, plan: CIDRPlan, cluster_id: str, keys: tuple[str, str],
            reporter: Reporter, what: str, label: str) -> str:
    """`Assigning <what> IPs` (the validated block) then `Updating the <what> information on the Broker`."""
    if not plan.reused:
        reporter.start(f"Assigning {what} IPs")
        reporter.success(f"Allocated {label} CIDR {plan.cidr}")
        reporter.end()
    reporter.start(f"Updating the {what} information on the Broker")
    recorded = write_allocation(broker, ns, plan, cluster_id, keys[0], keys[1], reporter, what)
    if recorded != plan.cidr:  # another cluster took that block meanwhile
        reporter.success(f"Allocated {label} CIDR {recorded}")
    reporter.end()
    return recorded


# --- the flow -----------------------------------------------------------------------------------------


def _tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _default_prompt(question: str, choices: list[str] | None) -> str:
    from submariner.cli.prompts import ask

    return ask(question, choices)


@dataclass
class Plan:
    """Everything decided before the first write."""

    settings: m.JoinSettings
    broker: Cluster
    broker_ns: str
    info: brokerinfo.BrokerInfo
    local: Cluster
    gateway_to_label: str = ""
    globalnet: CIDRPlan | None = None
    clusterset: CIDRPlan | None = None
    coredns: tuple[str, str] = ("kube-system", "coredns")


def _default_cable_driver(local: ClientFactory, reporter: Reporter) -> str:
    """`--cable-driver` left out: the cluster's join defaults (ConfigMap kube-system/submariner-join-defaults,
    key `cable-driver`, optional `reason`) if it has them, else upstream's libreswan. Said aloud when used."""
    namespace, name = JOIN_DEFAULTS
    try:
        data = local.resource(CONFIGMAPS).get(namespace, name).get("data") or {}
    except NotFound:
        return DEFAULT_CABLE_DRIVER
    except KubeError as e:
        raise CliError(str(e), f"Error reading ConfigMap {namespace}/{name}") from None
    driver = str(data.get("cable-driver") or "")
    if not driver:
        return DEFAULT_CABLE_DRIVER
    if driver not in CABLE_DRIVERS:
        raise CliError(f"ConfigMap {namespace}/{name} names cable driver {driver!r}, not one of "
                       f"{', '.join(CABLE_DRIVERS)}; fix it or pass --cable-driver")
    reason = str(data.get("reason") or "")
    reporter.success(f'Using cable driver "{driver}" from ConfigMap {namespace}/{name}'
                     + (f": {reason}" if reason else "") + " (--cable-driver overrides it)")
    return driver


def prepare(kube_flags: KubeFlags, opts: JoinOptions, reporter: Reporter, *, interactive: bool,
            prompt: Prompt = _default_prompt) -> Plan:
    """Read and check everything; no writes."""
    try:
        info = brokerinfo.read_file(opts.broker_info)
    except FileNotFoundError:
        raise CliError(f"{opts.broker_info} does not exist (it is written by `subctl deploy-broker`)",
                       "Error loading the broker information from the given file") from None
    except (OSError, brokerinfo.BrokerInfoError) as e:
        raise CliError(str(e), "Error loading the broker information from the given file") from None

    if opts.cable_driver and opts.cable_driver not in CABLE_DRIVERS:
        raise CliError(f"unknown cable driver {opts.cable_driver!r}: use one of {', '.join(CABLE_DRIVERS)} "
                       "(--cable-driver)")
    if opts.globalnet_cidr and opts.globalnet_cluster_size:
        raise CliError("Only one of cluster size and global CIDR can be specified")
    check_cidr_flag(opts.cluster_cidr, "--clustercidr")
    check_cidr_flag(opts.service_cidr, "--servicecidr")
    if opts.globalnet_cidr:
        cidr.parse_cidr(opts.globalnet_cidr, "--globalnet-cidr")
    if opts.clusterset_ip_cidr:
        cidr.parse_cidr(opts.clusterset_ip_cidr, "--clusterset-ip-cidr")
    coredns = parse_coredns_configmap(opts.coredns_custom_configmap)
    if not 1 <= opts.natt_port <= 65535:
        raise CliError(f"--nattport {opts.natt_port} is not a port number")

    context = resolve(kube_flags)
    cluster_id = opts.cluster_id
    if cluster_id:
        try:
            validate_cluster_id(cluster_id)
        except CliError as e:
            if not interactive:
                raise
            reporter.failure(f"{e.message}: {e}")
            cluster_id = prompt("What is your cluster ID?", None)
            validate_cluster_id(cluster_id)
    else:
        cluster_id = default_cluster_id(context.cluster)
        validate_cluster_id(cluster_id)

    local = connect(kube_flags, context.name)
    try:
        nodes, _ = local.resource(NODES).list()
    except KubeError as e:
        raise CliError(f"{e} (check --context/--kubeconfig)",
                       f'Error connecting to the cluster of context "{context.name}"') from None

    for res, name in ((SUBMARINERS, m.SUBMARINER_CR), (SERVICE_DISCOVERIES, m.SERVICE_DISCOVERY_CR)):
        with contextlib.suppress(KubeError):
            check_version_skew(str((local.resource(res).get(OPERATOR_NAMESPACE, name).get("spec") or {})
                                   .get("version") or ""))
    reporter.success(f"{Path(opts.broker_info).name} indicates broker is at {info.broker_url}")
    url = info.broker_url
    if opts.broker_url:
        url = opts.broker_url if "://" in opts.broker_url else f"https://{opts.broker_url}"
        reporter.success(f"Overriding broker URL using {url}")
    broker, broker_clusters = check_broker(info, url, opts.broker_info, verify=opts.check_broker_certificate)
    broker_ns = info.broker_namespace or BROKER_NAMESPACE

    # Uniqueness: another cluster already joined with this ID (its gateway published a Cluster object on the
    # broker); re-joining this same cluster is fine.
    taken = any(c["metadata"].get("name") == cluster_id for c in broker_clusters)
    if taken and not _joined_here(local, cluster_id):
        raise CliError(f'Detected an existing joined cluster with the same ID "{cluster_id}" on the broker. '
                       "Cluster IDs must be unique across all clusters")

    cable_driver = opts.cable_driver or _default_cable_driver(local, reporter)

    reporter.start("Discovering network details")
    try:
        details = discover(local)
    except KubeError as e:
        raise CliError(str(e), "Error discovering the network details") from None
    reporter.end()
    sys.stdout.write(detail_lines(details, "Discovered network details"))
    sys.stdout.flush()
    cluster_cidrs = _choose_cidr(details, opts.cluster_cidr, "pod", "--clustercidr", reporter, interactive, prompt)
    service_cidrs = _choose_cidr(details, opts.service_cidr, "service", "--servicecidr", reporter, interactive,
                                 prompt)

    gateway_to_label = ""
    if info.connectivity_enabled and opts.label_gateway:
        gateway_to_label = _choose_gateway(nodes, opts.gateway_node, reporter, interactive, prompt)

    reporter.start("Gathering relevant information from Broker")
    try:
        broker_cr = broker.resource(BROKERS).get(broker_ns, m.BROKER_CR_NAME)
    except NotFound:
        broker_cr = {"spec": {}}
    except KubeError as e:
        raise CliError(str(e), "Error retrieving the Broker resource") from None
    reporter.end()
    broker_spec = broker_cr.get("spec") or {}

    globalnet_plan: CIDRPlan | None = None
    reporter.start("Retrieving Globalnet information from the Broker")
    gn_cm = _read_configmap(broker, broker_ns, m.GLOBALNET_CONFIGMAP)
    reporter.end()
    reporter.start("Validating Globalnet configuration")
    gn_enabled = bool(gn_cm and (gn_cm.get("data") or {}).get("globalnetEnabled") == "true")
    if not gn_enabled:
        if opts.globalnet_cidr or opts.globalnet_cluster_size:
            reporter.warning("Globalnet is not enabled on the Broker: --globalnet-cidr and "
                             "--globalnet-cluster-size are ignored")
    elif opts.globalnet and gn_cm is not None:
        globalnet_plan = CIDRPlan(m.GLOBALNET_CONFIGMAP, "", False, cidr.DEFAULT_GLOBALNET_RANGE,
                                  cidr.DEFAULT_GLOBALNET_CLUSTER_SIZE, opts.globalnet_cidr,
                                  opts.globalnet_cluster_size, "global")
        try:
            decision = plan_allocation(gn_cm, globalnet_plan, cluster_id, "globalnetCidrRange",
                                       "globalnetClusterSize")
        except cidr.CIDRError as e:
            raise CliError(str(e), "Error validating the Globalnet configuration") from None
        globalnet_plan.cidr, globalnet_plan.reused = decision.cidr, decision.reused
        if decision.reused:
            reporter.success(f"Using pre-configured global CIDR {decision.cidr}")
    reporter.end()

    clusterset_plan: CIDRPlan | None = None
    clusterset_enabled = opts.enable_clusterset_ip
    reporter.start("Retrieving ClustersetIP information from the Broker")
    cs_cm = _read_configmap(broker, broker_ns, m.CLUSTERSET_IP_CONFIGMAP)
    reporter.end()
    if cs_cm is not None:
        reporter.start("Validating ClustersetIP configuration")
        if (cs_cm.get("data") or {}).get("clustersetIPEnabled") == "true" or broker_spec.get("clustersetIPEnabled"):
            clusterset_enabled = True
        clusterset_plan = CIDRPlan(m.CLUSTERSET_IP_CONFIGMAP, "", False, cidr.DEFAULT_CLUSTERSET_IP_RANGE,
                                   cidr.DEFAULT_CLUSTERSET_IP_CLUSTER_SIZE, opts.clusterset_ip_cidr, 0,
                                   "clusterset IP")
        try:
            decision = plan_allocation(cs_cm, clusterset_plan, cluster_id, "clustersetIPCidrRange",
                                       "clustersetIPClusterSize")
        except cidr.CIDRError as e:
            raise CliError(str(e), "Error validating the ClustersetIP configuration") from None
        clusterset_plan.cidr, clusterset_plan.reused = decision.cidr, decision.reused
        reporter.end()

    server = urlsplit(url).netloc or url
    custom_domains = opts.custom_domains if opts.custom_domains is not None else (info.custom_domains or [])
    settings = m.JoinSettings(
        cluster_id=cluster_id, broker_server=server, broker_namespace=broker_ns, broker_token="",
        broker_ca=info.ca_crt or b"", psk=info.psk or b"", cluster_cidrs=tuple(cluster_cidrs),
        service_cidrs=tuple(service_cidrs), cluster_cidr_given=opts.cluster_cidr,
        service_cidr_given=opts.service_cidr, global_cidr=globalnet_plan.cidr if globalnet_plan else "",
        clusterset_ip_cidr=clusterset_plan.cidr if clusterset_plan else "",
        clusterset_ip_enabled=clusterset_enabled, broker_insecure=not opts.check_broker_certificate,
        cable_driver=cable_driver, nat_enabled=opts.natt, natt_port=opts.natt_port,
        ipsec_debug=opts.ipsec_debug, force_udp_encaps=opts.force_udp_encaps,
        preferred_server=opts.preferred_server, air_gapped=opts.air_gapped, load_balancer=opts.load_balancer,
        debug=opts.pod_debug, health_check=opts.health_check, health_check_interval=opts.health_check_interval,
        health_check_max_packet_loss=opts.health_check_max_packet_loss_count, repository=opts.repository,
        version=opts.version, image_overrides=dict(opts.image_overrides),
        connectivity=info.connectivity_enabled, service_discovery=info.service_discovery_enabled,
        custom_domains=tuple(custom_domains), coredns_namespace=coredns[0], coredns_configmap=coredns[1],
        coredns_custom=bool(opts.coredns_custom_configmap), proxy=dict(opts.proxy),
    )
    return Plan(settings=settings, broker=broker, broker_ns=broker_ns, info=info, local=local,
                gateway_to_label=gateway_to_label, globalnet=globalnet_plan, clusterset=clusterset_plan,
                coredns=coredns)


def _joined_here(local: ClientFactory, cluster_id: str) -> bool:
    """This cluster already joined with that ID (its own Submariner/ServiceDiscovery CR or Cluster CR says so)."""
    for res, name in ((SUBMARINERS, m.SUBMARINER_CR), (SERVICE_DISCOVERIES, m.SERVICE_DISCOVERY_CR),
                      (CLUSTERS, cluster_id)):
        try:
            obj = local.resource(res).get(OPERATOR_NAMESPACE, name)
        except KubeError:
            continue
        if res == CLUSTERS or (obj.get("spec") or {}).get("clusterID") == cluster_id:
            return True
    return False


def _choose_cidr(details: NetworkDetails, given: str, kind: str, flag: str, reporter: Reporter,
                 interactive: bool, prompt: Prompt) -> list[str]:
    found = details.cluster_cidrs if kind == "pod" else details.service_cidrs
    if given:
        wanted = split_list([given])
        if found and found[0] != wanted[0]:
            reporter.warning(f"The provided {kind} CIDR for the cluster ({given}) does not match the discovered "
                             f"CIDR ({found[0]})")
        return wanted
    if found:
        return list(found)
    question = "What's the Pod CIDR for your cluster?" if kind == "pod" else "What's the Service CIDR for your cluster?"
    if interactive:
        value = prompt(question, None)
        check_cidr_flag(value, flag)
        return split_list([value])
    tried = ("kube-controller-manager/kube-proxy --cluster-cidr, the kube-proxy and kubeadm-config ConfigMaps, "
             "a single node's podCIDR") if kind == "pod" else \
        "kube-apiserver --service-cluster-ip-range, the API server's service range, the kubeadm-config ConfigMap"
    raise CliError(f"could not discover the {kind} CIDR of the cluster (tried {tried}); pass {flag}",
                   "Error determining the network details")


def _choose_gateway(nodes: list[Obj], wanted: str, reporter: Reporter, interactive: bool, prompt: Prompt) -> str:
    names = {n["metadata"]["name"] for n in nodes}
    if wanted:
        if wanted not in names:
            raise CliError(f'node "{wanted}" does not exist (nodes: {", ".join(sorted(names))}); check --gateway-node',
                           "Error getting gateway node")
        labelled = labelled_gateways(nodes)
        return "" if wanted in labelled else wanted
    reporter.start("Retrieving the gateway nodes")
    labelled = labelled_gateways(nodes)
    reporter.end()
    if labelled:
        return ""
    reporter.start("Retrieving all worker nodes")
    candidates = gateway_candidates(nodes)
    reporter.end()
    if not candidates:
        reporter.warning("No worker node available to label as the gateway")
        return ""
    if len(candidates) == 1:
        return candidates[0]
    if not interactive:
        raise CliError(f"{len(candidates)} candidate nodes ({', '.join(candidates)}) and no terminal to ask on: "
                       "pass --gateway-node NAME, or label one with submariner.io/gateway=true",
                       "Error getting gateway node")
    return prompt("Which node should be used as the gateway?", candidates)


def execute(plan: Plan, opts: JoinOptions, reporter: Reporter) -> None:
    """The writes, in dependency order."""
    s = plan.settings
    broker, ns, local = plan.broker, plan.broker_ns, plan.local
    try:
        if plan.gateway_to_label:
            reporter.start(f'Labeling node "{plan.gateway_to_label}" as a gateway')
            local.resource(NODES).patch("", plan.gateway_to_label, {"metadata": {"labels": {m.GATEWAY_LABEL: "true"}}})
            reporter.end()
        if plan.globalnet is not None:
            global_cidr = _assign(broker, ns, plan.globalnet, s.cluster_id, ("globalnetCidrRange",
                                  "globalnetClusterSize"), reporter, "Globalnet", "global")
            s = replace(s, global_cidr=global_cidr)
        if plan.clusterset is not None:
            cs_cidr = _assign(broker, ns, plan.clusterset, s.cluster_id, ("clustersetIPCidrRange",
                              "clustersetIPClusterSize"), reporter, "ClustersetIP", "clustersetip")
            s = replace(s, clusterset_ip_cidr=cs_cidr)

        reporter.start("Creating SA for cluster")
        apply_all(broker, m.cluster_access_objects(s.cluster_id, ns))
        token_secret = ensure_token_secret(broker, ns, m.cluster_account(s.cluster_id))
        reporter.end()
        data = token_secret.get("data") or {}
        token = base64.b64decode(data["token"]).decode()
        ca = base64.b64decode(data["ca.crt"]) if data.get("ca.crt") else s.broker_ca
        s = replace(s, broker_token=token, broker_ca=ca)

        reporter.start("Connecting to Broker")
        _check_cluster_token(broker, s, ns)
        reporter.end()

        reporter.start("Deploying submariner" if s.connectivity else "Deploying service discovery only")
        crds = m.crds()
        created = [o for op, o in apply_all(local, crds) if op == "created"]
        wait_for_crds(local, crds)
        if created:
            reporter.success(f"Created {len(created)} CRDs")
        op, _ = apply(local, m.operator_namespace(s))
        if op == "created":
            reporter.success(f"Created namespace {s.namespace}")
        apply_all(local, m.local_secrets(s))
        apply_all(local, m.component_rbac(s))
        cr = m.submariner_cr(s) if s.connectivity else m.service_discovery_cr(s)
        if s.connectivity:
            cr["status"] = _submariner_status(s)
        apply(local, cr)
        apply_all(local, m.workloads(s))
        reporter.success("Deployed the components directly (no operator)")
        reporter.end()

        if s.service_discovery:
            reporter.start("Configuring CoreDNS to forward clusterset.local to Lighthouse DNS")
            configure_coredns(local, s, plan.coredns, reporter)
            reporter.end()
    except KubeError as e:
        raise CliError(str(e), "Error deploying Submariner") from None

    if opts.wait and s.connectivity:
        reporter.start("Waiting for the gateway to connect to the other clusters")
        wait_for_connections(local, broker, ns, s.cluster_id, opts.wait_timeout)
        reporter.end()
        reporter.success("Submariner is up and running")
    elif s.connectivity:
        reporter.success("Submariner is deployed; tunnels come up in the background (see `subctl show "
                         "connections`, or join with --wait)")
    else:
        reporter.success("Service discovery is up and running")


def _submariner_status(s: m.JoinSettings) -> Obj:
    status: Obj = {"clusterID": s.cluster_id, "natEnabled": s.nat_enabled, "networkPlugin": "generic",
                   "serviceCIDR": ",".join(s.service_cidrs), "clusterCIDR": ",".join(s.cluster_cidrs)}
    if s.global_cidr:
        status["globalCIDR"] = s.global_cidr
    if s.clusterset_ip_cidr:
        status["clustersetIPCIDR"] = s.clusterset_ip_cidr
    return status


def _check_cluster_token(broker: Cluster, s: m.JoinSettings, ns: str, timeout: float = 15.0) -> None:
    """The cluster's own token works against the broker (RBAC may take a moment on a real API server)."""
    own = Cluster.from_token(broker.host, s.broker_token, ca_data=broker.configuration.ca_cert_data or None,
                             insecure=not broker.configuration.verify_ssl, name="broker")
    deadline = time.monotonic() + timeout
    while True:
        try:
            own.resource(CLUSTERS).list(ns)
            return
        except KubeError as e:
            if time.monotonic() > deadline:
                raise CliError(f"the cluster's broker token does not work yet: {e}",
                               "Error connecting to the broker") from None
            time.sleep(0.3)


def configure_coredns(local: ClientFactory, s: m.JoinSettings, where: tuple[str, str], reporter: Reporter) -> None:
    """Prepend `clusterset.local:53 { forward . <lighthouse DNS> }` to the cluster DNS Corefile (idempotent)."""
    service = local.resource(SERVICES).get(s.namespace, m.LIGHTHOUSE_COREDNS)
    dns_ip = str((service.get("spec") or {}).get("clusterIP") or "")
    ns, name = where
    zones = (m.CLUSTERSET_ZONE, *s.custom_domains)
    client = local.resource(CONFIGMAPS)
    for _ in range(CAS_ATTEMPTS):
        try:
            cm = client.get(ns, name)
        except NotFound:
            if s.coredns_custom:
                client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
                               "data": {"lighthouse.server": m.forward_block(zones, dns_ip)}})
                return
            reporter.warning(f"ConfigMap {ns}/{name} not found: configure the cluster DNS to forward "
                             f"{m.CLUSTERSET_ZONE} to {dns_ip}")
            return
        data = cm.setdefault("data", {})
        key = "Corefile" if "Corefile" in data or not s.coredns_custom else "lighthouse.server"
        current = str(data.get(key) or "")
        wanted = m.corefile_with_forward(current, dns_ip, zones) if key == "Corefile" else m.forward_block(zones,
                                                                                                           dns_ip)
        if wanted == current:
            return
        data[key] = wanted
        try:
            client.update(cm)
            reporter.success(f"Updated ConfigMap {ns}/{name}: {m.CLUSTERSET_ZONE} is forwarded to {dns_ip}")
            return
        except Conflict:
            continue
    raise CliError(f"ConfigMap {ns}/{name} kept changing", "Error configuring CoreDNS")


def connection_state(gateways: list[Obj], remote_ids: set[str]) -> tuple[bool, str]:
    """Done when an active Gateway reports every remote cluster connected; else what is missing."""
    active = [g for g in gateways if (g.get("status") or {}).get("haStatus") == "active"]
    if not active:
        return False, "no active gateway has reported yet"
    status = active[0].get("status") or {}
    if status.get("statusFailure"):
        return False, f"the gateway reports: {status['statusFailure']}"
    connected = {str((c.get("endpoint") or {}).get("cluster_id")) for c in status.get("connections") or []
                 if c.get("status") == "connected"}
    missing = sorted(remote_ids - connected)
    if missing:
        return False, f"not connected yet to {', '.join(missing)}"
    return True, ""


def wait_for_connections(local: ClientFactory, broker: ClientFactory, ns: str, cluster_id: str,
                         timeout: float, poll: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(KubeError):
            remote = {c["metadata"]["name"] for c in broker.resource(CLUSTERS).list(ns)[0]} - {cluster_id}
            gateways, _ = local.resource(GATEWAYS).list(OPERATOR_NAMESPACE)
            done, why = connection_state(gateways, remote)
            if done:
                return
        time.sleep(poll)
    raise CliError(f"gave up after {timeout:.0f}s: {why or 'no answer from the clusters'} "
                   "(check `subctl show connections` and the gateway pod logs)",
                   "Error waiting for the gateway connections")


def run(kube_flags: KubeFlags, opts: JoinOptions, reporter: Reporter, *, interactive: bool | None = None,
        prompt: Prompt = _default_prompt) -> None:
    plan = prepare(kube_flags, opts, reporter, interactive=_tty() if interactive is None else interactive,
                   prompt=prompt)
    execute(plan, opts, reporter)


def parse_image_overrides(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        component, sep, image = value.partition("=")
        if not sep or not component or not image:
            raise CliError(f"invalid override {value} provided. Please use `a=b` syntax")
        if component not in m.IMAGE_COMPONENTS:
            raise CliError(f'invalid image override component "{component}" provided. Valid components are '
                           f"[{' '.join(m.IMAGE_COMPONENTS)}]")
        out[component] = image
    return out


def _flag(name: str, default: bool, help_text: str) -> Callable[[Any], Any]:
    return click.option(f"--{name}/--no-{name}", default=default, show_default=True, help=help_text)


@click.command("join")
@click.argument("broker_info", required=False)
@click.option("--clusterid", default="", help="cluster ID (default: the kubeconfig cluster name)")
@click.option("--servicecidr", default="", help="service CIDR (default: discovered)")
@click.option("--clustercidr", default="", help="pod CIDR (default: discovered)")
@click.option("--repository", default=DEFAULT_REPOSITORY, show_default=True, help="image repository")
@click.option("--version", "image_version", default=IMAGE_TAG, show_default=True, help="image version")
@click.option("--nattport", type=int, default=4500, show_default=True, help="IPsec NAT-T port")
@_flag("natt", True, "enable NAT traversal")
@_flag("preferred-server", False, "be the IPsec server of every connection")
@_flag("air-gapped", False, "no external public-IP lookups")
@_flag("load-balancer", False, "a load balancer in front of the gateways")
@_flag("force-udp-encaps", False, "force UDP encapsulation of IPsec")
@_flag("ipsec-debug", False, "IPsec debug logs")
@_flag("pod-debug", False, "verbose component logs")
@_flag("operator-debug", False, "accepted for compatibility (no operator)")
@_flag("label-gateway", True, "label (or prompt for) a gateway node if none is labelled")
@click.option("--gateway-node", default="", help="the node to label as gateway (no prompt)")
@click.option("--cable-driver", default="",
              help="libreswan, wireguard or vxlan [default: the cluster's ConfigMap kube-system/"
                   "submariner-join-defaults `cable-driver`, else libreswan]")
@_flag("globalnet", True, "take part in Globalnet if the broker enabled it")
@click.option("--globalnet-cluster-size", type=int, default=0, help="global IPs for this cluster")
@click.option("--globalnet-cidr", default="", help="explicit GlobalCIDR for this cluster")
@click.option("--custom-domains", multiple=True, help="extra DNS domains (default: the broker's)")
@_flag("health-check", True, "gateway health check")
@click.option("--health-check-interval", type=int, default=1, show_default=True, help="seconds between pings")
@click.option("--health-check-max-packet-loss-count", type=int, default=5, show_default=True,
              help="lost pings before a connection is down")
@click.option("--coredns-custom-configmap", default="", help="[<namespace>/]<name> of a custom CoreDNS ConfigMap")
@_flag("ignore-requirements", False, "Kubernetes-version failures become warnings")
@_flag("check-broker-certificate", True, "verify the broker's TLS certificate")
@click.option("--broker-url", default="", help="override the broker URL of the file")
@_flag("enable-clusterset-ip", False, "clusterset VIPs by default for exports here")
@click.option("--clusterset-ip-cidr", default="", help="explicit clusterset-IP CIDR")
@click.option("--image-override", multiple=True, help="<component>=<image> (repeatable)")
@click.option("--http-proxy", default="", help="HTTP proxy for the components (HTTP_PROXY)")
@click.option("--https-proxy", default="", help="HTTPS proxy for the components (HTTPS_PROXY)")
@click.option("--no-proxy", default="", help="hosts the components reach directly (NO_PROXY)")
@_flag("wait", False, "wait until the gateway reports its connections up (bounded by --wait-timeout)")
@click.option("--wait-timeout", type=float, default=300.0, show_default=True, help="seconds --wait waits")
@kube_options
def command(kube: KubeFlags, broker_info: str | None, **kw: Any) -> None:
    """Connect a cluster to an existing broker"""
    reporter = Reporter()
    try:
        if not broker_info:
            raise CliError("the broker-info.subm file argument generated by 'subctl deploy-broker' is missing")
        opts = JoinOptions(
            broker_info=broker_info, cluster_id=kw["clusterid"], service_cidr=kw["servicecidr"],
            cluster_cidr=kw["clustercidr"], repository=kw["repository"], version=kw["image_version"],
            natt_port=kw["nattport"], natt=kw["natt"], preferred_server=kw["preferred_server"],
            air_gapped=kw["air_gapped"], load_balancer=kw["load_balancer"], force_udp_encaps=kw["force_udp_encaps"],
            ipsec_debug=kw["ipsec_debug"], pod_debug=kw["pod_debug"], label_gateway=kw["label_gateway"],
            gateway_node=kw["gateway_node"], cable_driver=kw["cable_driver"], globalnet=kw["globalnet"],
            globalnet_cluster_size=kw["globalnet_cluster_size"], globalnet_cidr=kw["globalnet_cidr"],
            custom_domains=split_list(kw["custom_domains"]) if kw["custom_domains"] else None,
            health_check=kw["health_check"], health_check_interval=kw["health_check_interval"],
            health_check_max_packet_loss_count=kw["health_check_max_packet_loss_count"],
            coredns_custom_configmap=kw["coredns_custom_configmap"],
            check_broker_certificate=kw["check_broker_certificate"], broker_url=kw["broker_url"],
            enable_clusterset_ip=kw["enable_clusterset_ip"], clusterset_ip_cidr=kw["clusterset_ip_cidr"],
            image_overrides=parse_image_overrides(kw["image_override"]), wait=kw["wait"],
            wait_timeout=kw["wait_timeout"],
            proxy={"HTTP_PROXY": kw["http_proxy"], "HTTPS_PROXY": kw["https_proxy"], "NO_PROXY": kw["no_proxy"]},
        )
        run(kube, opts, reporter)
    except cidr.CIDRError as e:
        exit_on_error(reporter, e, "Invalid CIDR")
    except CliError as e:
        exit_on_error(reporter, e)
