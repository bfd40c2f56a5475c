"""Kind's `kind.x-k8s.io/v1alpha4` Cluster config, read unchanged.

Users bring the configs they already have for kind; the lab takes the fields that shape a cluster (name,
nodes and roles, pod and service subnets) and accepts the container-specific ones (images, mounts, kubeadm
patches, `apiServerAddress`) without acting on them, saying so in a log line. Like kind, unknown fields and
bad values are errors, reported in one line before anything is created.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from .names import UNDERLAY

log = logging.getLogger(__name__)

API_VERSION = "kind.x-k8s.io/v1alpha4"
KIND = "Cluster"
DEFAULT_CLUSTER_NAME = "sublab"  # kind's default is "kind"
DEFAULT_POD_SUBNET = "10.244.0.0/16"
DEFAULT_SERVICE_SUBNET = "10.96.0.0/16"
NODE_CIDR_PREFIX = 24  # kube-controller-manager's --node-cidr-mask-size for IPv4, as kind uses it

CONTROL_PLANE = "control-plane"
WORKER = "worker"
ROLES = (CONTROL_PLANE, WORKER)

# A DNS label (no dots: the name becomes directory, namespace and context names), short enough that every
# derived network-namespace name stays readable.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 40

# Fields kind knows that only make sense for containers: accepted, not acted on.
_IGNORED_TOP = {
    "featureGates", "runtimeConfig", "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902",
    "containerdConfigPatches", "containerdConfigPatchesJSON6902",
}
_IGNORED_NODE = {"image", "extraMounts", "extraPortMappings", "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902"}
_IGNORED_NETWORKING = {"apiServerAddress", "apiServerPort", "disableDefaultCNI", "kubeProxyMode", "dnsSearch"}
_KNOWN_TOP = {"kind", "apiVersion", "name", "nodes", "networking", *_IGNORED_TOP}
_KNOWN_NODE = {"role", "labels", *_IGNORED_NODE}
_KNOWN_NETWORKING = {"ipFamily", "podSubnet", "serviceSubnet", *_IGNORED_NETWORKING}


class ConfigError(ValueError):
    """A config the lab cannot build; the message is one line naming the field, the value and the fix."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    role: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    nodes: tuple[NodeSpec, ...]
    pod_subnet: ipaddress.IPv4Network
    service_subnet: ipaddress.IPv4Network
    ignored: tuple[str, ...] = ()  # dotted paths of fields accepted but not acted on

    @property
    def control_plane(self) -> NodeSpec:
        """The node the API server runs on (kind's first control-plane node)."""
        return next(n for n in self.nodes if n.role == CONTROL_PLANE)

    @property
    def dns_ip(self) -> ipaddress.IPv4Address:
        """kube-dns's ClusterIP: the service subnet's 10th address, as kubeadm picks it."""
        return self.service_subnet.network_address + 10

    @property
    def kubernetes_ip(self) -> ipaddress.IPv4Address:
        """The `default/kubernetes` Service's ClusterIP: the first address of the service subnet."""
        return self.service_subnet.network_address + 1

    def pod_cidrs(self) -> list[ipaddress.IPv4Network]:
        """One /24 per node from podSubnet, in node order (control plane first), as kind's nodes get them."""
        slices = self.pod_subnet.subnets(new_prefix=NODE_CIDR_PREFIX)
        return [next(slices) for _ in self.nodes]


def validate_name(name: str, what: str = "cluster name") -> str:
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > MAX_NAME:
        raise ConfigError(
            f"invalid {what} {name!r}: use lower-case letters, digits and '-' (a DNS label of at most "
            f"{MAX_NAME} characters), e.g. 'c1'"
        )
    return name


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    return value


def _check_fields(doc: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in doc:
        if key not in known:
            raise ConfigError(f"{where}: unknown field {key!r} (known: {', '.join(sorted(known))})")


def _subnet(value: Any, where: str, default: str) -> ipaddress.IPv4Network:
    text = default if value is None or value == "" else value
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected a CIDR string like {default!r}, got {text!r}")
    if "," in text:
        raise ConfigError(f"{where}: {text!r} is dual-stack; the lab supports one IPv4 CIDR, e.g. {default!r}")
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a CIDR; use e.g. {default!r}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise ConfigError(f"{where}: {text!r} is IPv6; the lab supports IPv4 only, e.g. {default!r}")
    if str(net.network_address) != text.strip().split("/")[0]:
        raise ConfigError(f"{where}: {text!r} has host bits set; did you mean {str(net)!r}?")
    if net.overlaps(UNDERLAY):
        raise ConfigError(f"{where}: {text!r} overlaps the lab underlay {UNDERLAY}; pick another range")
    if net.is_loopback or net.is_multicast or net.is_link_local:
        raise ConfigError(f"{where}: {text!r} is a loopback, multicast or link-local range; use e.g. {default!r}")
    return net


def node_names(cluster: str, roles: list[str]) -> list[str]:
    """kind's node names: `<c>-control-plane`, `<c>-control-plane2`, …, `<c>-worker`, `<c>-worker2`, …"""
    counts = dict.fromkeys(ROLES, 0)
    names = []
    for role in roles:
        counts[role] += 1
        n = counts[role]
        names.append(f"{cluster}-{role}{'' if n == 1 else n}")
    return names


def parse_config(
    text: str, *, name: str | None = None, default_name: str = DEFAULT_CLUSTER_NAME, source: str = "config"
) -> ClusterConfig:
    """Parse a kind Cluster config; as in kind, `name` (the `--name` flag) wins over the config's name, which
    wins over `default_name` (the `SUBLAB_CLUSTER_NAME` environment variable, else "sublab")."""
    try:
        doc = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    top = _mapping(doc, source)
    if top:
        _check_fields(top, _KNOWN_TOP, source)
        if top.get("kind") != KIND:
            raise ConfigError(f"{source}: kind must be {KIND!r}, got {top.get('kind')!r}")
        if top.get("apiVersion") != API_VERSION:
            raise ConfigError(f"{source}: apiVersion must be {API_VERSION!r}, got {top.get('apiVersion')!r}")
    ignored = [key for key in top if key in _IGNORED_TOP]

    try:
        cluster_name = validate_name(name or top.get("name") or default_name)
    except ConfigError as exc:
        raise ConfigError(f"{'--name' if name else source}: {exc}") from None

    raw_nodes = top.get("nodes")
    if raw_nodes is None or raw_nodes == []:
        raw_nodes = [{"role": CONTROL_PLANE}]
    if not isinstance(raw_nodes, list):
        raise ConfigError(f"{source}: nodes: expected a list, got {raw_nodes!r}")
    roles: list[str] = []
    labels: list[dict[str, str]] = []
    for i, raw in enumerate(raw_nodes):
        where = f"{source}: nodes[{i}]"
        node = _mapping(raw, where)
        _check_fields(node, _KNOWN_NODE, where)
        role = node.get("role", CONTROL_PLANE)
        if role not in ROLES:
            raise ConfigError(f"{where}.role: {role!r} is not a role; use 'control-plane' or 'worker'")
        roles.append(role)
        node_labels = _mapping(node.get("labels"), f"{where}.labels")
        labels.append({str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
                       for k, v in node_labels.items()})
        ignored.extend(f"nodes[{i}].{key}" for key in node if key in _IGNORED_NODE)
    if CONTROL_PLANE not in roles:
        raise ConfigError(f"{source}: nodes: at least one node must have role 'control-plane'")
    # Control-plane nodes first: the API server runs on the first one and gets the first pod CIDR slice.
    order = sorted(range(len(roles)), key=lambda i: (roles[i] != CONTROL_PLANE, i))
    names = node_names(cluster_name, [roles[i] for i in order])
    nodes = tuple(NodeSpec(names[j], roles[i], labels[i]) for j, i in enumerate(order))

    net = _mapping(top.get("networking"), f"{source}: networking")
    _check_fields(net, _KNOWN_NETWORKING, f"{source}: networking")
    family = net.get("ipFamily", "ipv4")
    if family != "ipv4":
        raise ConfigError(f"{source}: networking.ipFamily: {family!r} is not supported; the lab is IPv4 only")
    ignored.extend(f"networking.{key}" for key in net if key in _IGNORED_NETWORKING)
    pods = _subnet(net.get("podSubnet"), f"{source}: networking.podSubnet", DEFAULT_POD_SUBNET)
    services = _subnet(net.get("serviceSubnet"), f"{source}: networking.serviceSubnet", DEFAULT_SERVICE_SUBNET)
    if pods.overlaps(services):
        raise ConfigError(f"{source}: networking.podSubnet {pods} overlaps serviceSubnet {services}")
    if pods.prefixlen > NODE_CIDR_PREFIX or 2 ** (NODE_CIDR_PREFIX - pods.prefixlen) < len(nodes):
        raise ConfigError(
            f"{source}: networking.podSubnet {pods} is too small for {len(nodes)} node(s) with a "
            f"/{NODE_CIDR_PREFIX} each; use a larger range, e.g. {DEFAULT_POD_SUBNET!r}"
        )
    if services.prefixlen < 12 or services.num_addresses < 16:
        raise ConfigError(
            f"{source}: networking.serviceSubnet {services} must be between a /12 and a /28, "
            f"e.g. {DEFAULT_SERVICE_SUBNET!r}"
        )
    config = ClusterConfig(cluster_name, nodes, pods, services, tuple(ignored))
    if config.ignored:
        log.info("accepted and ignored (container-only settings) cluster=%s fields=%s",
                 cluster_name, ",".join(config.ignored))
    return config
