"""Pod and Service CIDR discovery (subctl.md §7.3), saying where each value came from.

Never guesses: a node's /24 is only used on a single-node cluster, and when nothing is found the caller
asks for `--clustercidr` / `--servicecidr` (or prompts on a terminal). Beyond upstream, kubeadm's own
records (`kube-system/kubeadm-config` ClusterConfiguration and the `kube-proxy` ConfigMap's `clusterCIDR`)
are read, since kubeadm-built clusters (kind among them) have no controller-manager flags visible as pods.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from submariner.broker.kube import ClientFactory, Invalid, KubeError, NotFound, Obj
from submariner.cli.resources import CONFIGMAPS, DAEMON_SETS, NODES, OPENSHIFT_NETWORKS, PODS, SERVICES

_VALID_RANGE = re.compile(r"The range of valid IPs is ([0-9a-fA-F.:/]+)")


@dataclass
class NetworkDetails:
    plugin: str = ""
    service_cidrs: list[str] = field(default_factory=list)
    cluster_cidrs: list[str] = field(default_factory=list)
    global_cidr: str = ""
    clusterset_ip_cidr: str = ""
    sources: dict[str, str] = field(default_factory=dict)
    """'pod' / 'service' → where the value was found (shown to the user)."""

    @property
    def empty(self) -> bool:
        return not (self.plugin or self.service_cidrs or self.cluster_cidrs)


def go_list(values: Iterable[str]) -> str:
    """Go's %v of a []string: `[a b]`."""
    return "[" + " ".join(values) + "]"


def detail_lines(d: NetworkDetails, heading: str) -> str:
    """`show networks` / join's network block (stdout)."""
    lines = [f"    {heading}"]
    if d.plugin:
        lines.append(f"        Network plugin:  {d.plugin}")
    lines.append(f"        Service CIDRs:   {go_list(d.service_cidrs)}")
    lines.append(f"        Cluster CIDRs:   {go_list(d.cluster_cidrs)}")
    if d.global_cidr:
        lines.append(f"        Global CIDR:     {d.global_cidr}")
    if d.clusterset_ip_cidr:
        lines.append(f"        ClustersetIP CIDR:     {d.clusterset_ip_cidr}")
    return "\n".join(lines) + "\n"


def _list(kube: ClientFactory, res: Any, namespace: str | None = None, selector: str = "") -> list[Obj]:
    try:
        return kube.resource(res).list(namespace, label_selector=selector)[0]
    except NotFound:
        return []
    except KubeError as e:
        if e.status in (403, 404, 405):
            return []
        raise


def _get(kube: ClientFactory, res: Any, namespace: str, name: str) -> Obj | None:
    try:
        return kube.resource(res).get(namespace, name)
    except NotFound:
        return None
    except KubeError as e:
        if e.status in (403, 404, 405):
            return None
        raise


def _containers(pod: Obj) -> list[Obj]:
    spec = pod.get("spec") or {}
    return [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]


def _flag(pods: list[Obj], flag: str) -> str:
    prefix = f"--{flag}="
    for pod in pods:
        for c in _containers(pod):
            for arg in [*(c.get("command") or []), *(c.get("args") or [])]:
                if isinstance(arg, str) and arg.startswith(prefix):
                    return arg[len(prefix):]
    return ""


def _env(pods: list[Obj], name: str) -> str:
    for pod in pods:
        for c in _containers(pod):
            for e in c.get("env") or []:
                if e.get("name") == name and e.get("value"):
                    return str(e["value"])
    return ""


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _plugin(kube: ClientFactory) -> tuple[str, NetworkDetails]:
    """The first CNI detector that recognises its plugin, with what it learnt."""
    d = NetworkDetails()
    network = _get(kube, OPENSHIFT_NETWORKS, "", "cluster")
    if network is not None:
        spec = network.get("spec") or {}
        d.plugin = str(spec.get("networkType") or "OpenShiftSDN")
        d.cluster_cidrs = [str(n.get("cidr")) for n in spec.get("clusterNetwork") or [] if n.get("cidr")]
        d.service_cidrs = [str(s) for s in spec.get("serviceNetwork") or []]
        d.sources = {"pod": "Network config.openshift.io/cluster", "service": "Network config.openshift.io/cluster"}
        return d.plugin, d
    if _list(kube, PODS, None, "app=ovnkube-node"):
        d.plugin = "OVNKubernetes"
        for cm in _list(kube, CONFIGMAPS, None):
            if cm["metadata"].get("name") == "ovn-config":
                data = cm.get("data") or {}
                d.cluster_cidrs = [c.split("/", 2)[0] + "/" + c.split("/", 2)[1] if c.count("/") > 1 else c
                                   for c in _split(str(data.get("net_cidr") or ""))]
                d.service_cidrs = _split(str(data.get("svc_cidr") or ""))
                d.sources = {"pod": "ConfigMap ovn-config", "service": "ConfigMap ovn-config"}
                break
        return d.plugin, d
    weave = _list(kube, PODS, None, "name=weave-net")
    if weave:
        d.plugin = "weave-net"
        d.cluster_cidrs = _split(_env(weave, "IPALLOC_RANGE"))
        d.sources = {"pod": "weave-net IPALLOC_RANGE"} if d.cluster_cidrs else {}
        return d.plugin, d
    if _list(kube, DAEMON_SETS, None, "k8s-app=canal"):
        d.plugin = "canal-flannel"
        d.cluster_cidrs = _net_conf(_get(kube, CONFIGMAPS, "kube-system", "canal-config"))
        d.sources = {"pod": "ConfigMap kube-system/canal-config net-conf.json"} if d.cluster_cidrs else {}
        return d.plugin, d
    if _get(kube, CONFIGMAPS, "kube-system", "calico-config") is not None or any(
            ds["metadata"].get("name") == "calico-node" for ds in _list(kube, DAEMON_SETS, None)):
        return "calico", d
    flannel = [ds for ds in _list(kube, DAEMON_SETS, "kube-system") if "flannel" in ds["metadata"].get("name", "")]
    if flannel:
        d.plugin = "flannel"
        d.cluster_cidrs = _net_conf(_get(kube, CONFIGMAPS, "kube-system", "kube-flannel-cfg"))
        d.sources = {"pod": "ConfigMap kube-system/kube-flannel-cfg"} if d.cluster_cidrs else {}
        return d.plugin, d
    kindnet = _list(kube, PODS, None, "app=kindnet")
    if kindnet:
        d.plugin = "kindnet"
        d.cluster_cidrs = _split(_env(kindnet, "POD_SUBNET"))
        d.sources = {"pod": "kindnet POD_SUBNET"} if d.cluster_cidrs else {}
        return d.plugin, d
    return "generic", d


def _net_conf(cm: Obj | None) -> list[str]:
    if not cm:
        return []
    with contextlib.suppress(ValueError, TypeError):
        network = json.loads((cm.get("data") or {}).get("net-conf.json") or "{}").get("Network")
        if network:
            return [str(network)]
    return []


def _kubeadm_networking(kube: ClientFactory) -> dict[str, str]:
    cm = _get(kube, CONFIGMAPS, "kube-system", "kubeadm-config")
    if not cm:
        return {}
    with contextlib.suppress(yaml.YAMLError, AttributeError, TypeError):
        doc = yaml.safe_load((cm.get("data") or {}).get("ClusterConfiguration") or "") or {}
        net = doc.get("networking") or {}
        return {k: str(v) for k, v in net.items() if isinstance(v, str)}
    return {}


def _kube_proxy_cluster_cidr(kube: ClientFactory) -> str:
    cm = _get(kube, CONFIGMAPS, "kube-system", "kube-proxy")
    if not cm:
        return ""
    with contextlib.suppress(yaml.YAMLError, AttributeError, TypeError):
        doc = yaml.safe_load((cm.get("data") or {}).get("config.conf") or "") or {}
        return str(doc.get("clusterCIDR") or "")
    return ""


def _service_cidr_by_probe(kube: ClientFactory) -> str:
    """Create an impossible Service; the API server's refusal names the service range (nothing is created)."""
    probe: Obj = {"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": "invalid-svc", "namespace": "default"},
                  "spec": {"clusterIP": "1.1.1.1", "ports": [{"port": 443}]}}
    try:
        created = kube.resource(SERVICES).create(probe)
    except Invalid as e:
        m = _VALID_RANGE.search(str(e))
        return m.group(1) if m else ""
    except KubeError:
        return ""
    with contextlib.suppress(KubeError):  # a server that accepted it: remove it again
        kube.resource(SERVICES).delete("default", created["metadata"]["name"])
    return ""


def discover(kube: ClientFactory) -> NetworkDetails:
    """Live discovery: plugin detectors first, then the generic sources fill the gaps."""
    plugin, d = _plugin(kube)
    d.plugin = plugin
    need_pods, need_services = not d.cluster_cidrs, not d.service_cidrs
    if need_pods or need_services:
        controller = _list(kube, PODS, None, "component=kube-controller-manager")
        apiserver = _list(kube, PODS, None, "component=kube-apiserver")
        kubeadm: dict[str, str] | None = None
        if need_pods:
            value = _flag(controller, "cluster-cidr")
            source = "kube-controller-manager --cluster-cidr"
            if not value:
                value, source = _flag(_list(kube, PODS, None, "component=kube-proxy"), "cluster-cidr"), \
                    "kube-proxy --cluster-cidr"
            if not value:
                value, source = _kube_proxy_cluster_cidr(kube), "ConfigMap kube-system/kube-proxy clusterCIDR"
            if not value:
                kubeadm = _kubeadm_networking(kube)
                value = kubeadm.get("podSubnet", "")
                source = "ConfigMap kube-system/kubeadm-config networking.podSubnet"
            if not value:
                nodes = _list(kube, NODES)
                if len(nodes) == 1:
                    value = str((nodes[0].get("spec") or {}).get("podCIDR") or "")
                    source = f"the podCIDR of the only node {nodes[0]['metadata']['name']}"
            if value:
                d.cluster_cidrs = _split(value)
                d.sources["pod"] = source
        if need_services:
            value = _flag(apiserver, "service-cluster-ip-range")
            source = "kube-apiserver --service-cluster-ip-range"
            if not value:
                value, source = _service_cidr_by_probe(kube), "the API server's service range (invalid-svc probe)"
            if not value:
                kubeadm = kubeadm if kubeadm is not None else _kubeadm_networking(kube)
                value = kubeadm.get("serviceSubnet", "")
                source = "ConfigMap kube-system/kubeadm-config networking.serviceSubnet"
            if value:
                d.service_cidrs = _split(value)
                d.sources["service"] = source
    return d


def from_submariner(cr: Obj) -> NetworkDetails:
    """What the Submariner CR's status (else spec) records."""
    status = cr.get("status") or {}
    spec = cr.get("spec") or {}

    def pick(key: str) -> str:
        return str(status.get(key) or spec.get(key) or "")

    return NetworkDetails(
        plugin=str(status.get("networkPlugin") or ""),
        service_cidrs=_split(pick("serviceCIDR")),
        cluster_cidrs=_split(pick("clusterCIDR")),
        global_cidr=pick("globalCIDR"),
        clusterset_ip_cidr=pick("clustersetIPCIDR"),
    )
