"""`subctl diagnose firewall intra-cluster | inter-cluster | nat-discovery` (subctl.md §3.3): datapath probes.

Each check puts a sniffer in a hostNetwork pod on the active gateway's node and a sender somewhere else, then
looks for the sender's packets in what the sniffer captured (upstream runs tcpdump and nc; here both are
`netprobe` verbs run through pods/exec, see `testpods`):

- intra-cluster: a pod-network pod on a non-gateway node opens TCP connections to an address of a remote
  cluster's subnet; they reach the gateway through the route agent's `vx-submariner` overlay (UDP 4800), where
  the sniffer must see the SYNs, from the client pod's address;
- inter-cluster / nat-discovery (`--context L --remotecontext R`): a hostNetwork pod on a non-gateway node of R
  sends a tagged UDP payload from port 9898 to the address R's gateway uses for L, on L's tunnel port (the
  Endpoint's `udp-port`, 4500) or NAT-discovery port (`natt-discovery-port`, 4490); the sniffer on L's
  gateway node must capture the tag.

`diagnose deployment` uses the same pods for its metrics check: a pod on a non-gateway node GETs the active
gateway's (and Globalnet's) `/metrics` on the gateway node (upstream curls the metrics-proxy Service; there is
no metrics proxy here, the daemons serve on their hostNetwork ports).

Everything is bounded by `--validation-timeout`; a healthy check ends as soon as the packets are seen.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from submariner.broker.api.submariner import NATT_DISCOVERY_PORT_CONFIG, UDP_PORT_CONFIG
from submariner.broker.kube import ClientFactory, Cluster, KubeError, NotFound, Obj
from submariner.cli import OPERATOR_NAMESPACE, testpods
from submariner.cli import manifests as m
from submariner.cli.errors import CliError
from submariner.cli.netprobe import bootstrap
from submariner.cli.reporter import Reporter
from submariner.cli.resources import ENDPOINTS, GATEWAYS, NODES, PODS, SERVICES

SINGLE_NODE = "Skipping this check as it's a single node cluster"
INTRA_CLUSTER = "Checking that firewall configuration allows intra-cluster VXLAN traffic"
VXLAN_INTERFACE = "vx-submariner"
PROBE_TCP_PORT = 8080
CLIENT_SOURCE_PORT = 9898
DEFAULT_TUNNEL_PORT = 4500
DEFAULT_NAT_DISCOVERY_PORT = 4490
LOAD_BALANCER_SERVICE = "submariner-gateway"
SEND_BURST = 2.0
"""Seconds per sender run; senders are re-run until the sniffer has seen the probe or the time is up."""


@dataclass(frozen=True)
class Options:
    validation_timeout: float = 90.0
    verbose: bool = False
    namespace: str = OPERATOR_NAMESPACE


@dataclass(frozen=True)
class Side:
    """One cluster of a check: its client, display name and Submariner CR."""

    kube: ClientFactory
    name: str
    submariner: Obj | None

    @property
    def cluster_id(self) -> str:
        sub = self.submariner or {}
        return str((sub.get("status") or {}).get("clusterID") or (sub.get("spec") or {}).get("clusterID") or "")

    def cluster(self) -> Cluster:
        if not isinstance(self.kube, Cluster):
            raise CliError("firewall checks run commands in pods, which needs a real API server")
        return self.kube


def _list(kube: ClientFactory, res: object, ns: str | None) -> list[Obj]:
    try:
        return kube.resource(res).list(ns)[0]  # type: ignore[arg-type]
    except NotFound:
        return []


def pod_start_timeout(opts: Options) -> float:
    """How long a probe pod may take to start: the validation timeout, but at least 30 s (a short validation
    timeout bounds the capture, not the image pull) and at most 120 s."""
    return max(30.0, min(opts.validation_timeout, 120.0))


def single_node(kube: ClientFactory) -> bool:
    return len(_list(kube, NODES, None)) == 1


def require_non_gateway_node(side: Side) -> None:
    """Client pods go to nodes without the gateway label; without one they would wait for the whole timeout."""
    if all((n["metadata"].get("labels") or {}).get(m.GATEWAY_LABEL) == "true" for n in _list(side.kube, NODES, None)):
        raise CliError(f'every node of cluster "{side.name}" is a gateway node: there is no non-gateway node for '
                       "the client pod")


def _endpoint_spec(endpoint: Obj) -> Obj:
    spec = endpoint.get("spec")
    return spec if isinstance(spec, dict) else {}


def local_endpoint(side: Side, ns: str) -> Obj:
    """The Endpoint the cluster's active gateway published for itself."""
    for ep in _list(side.kube, ENDPOINTS, ns):
        if str(_endpoint_spec(ep).get("cluster_id")) == side.cluster_id:
            return ep
    raise CliError(f'there is no local Endpoint for cluster "{side.cluster_id}" in namespace "{ns}" (is the '
                   "gateway running?)")


def remote_endpoint(side: Side, ns: str) -> Obj:
    for ep in _list(side.kube, ENDPOINTS, ns):
        spec = _endpoint_spec(ep)
        if str(spec.get("cluster_id")) != side.cluster_id and spec.get("subnets"):
            return ep
    raise CliError(f'cluster "{side.name}" knows no remote Endpoint with subnets (is another cluster joined and '
                   "connected?)")


def gateway_node(side: Side, ns: str) -> str:
    """The node of the active gateway: its Endpoint hostname among the gateway-labelled nodes."""
    hostname = ""
    for gw in _list(side.kube, GATEWAYS, ns):
        status = gw.get("status") or {}
        if status.get("haStatus") == "active":
            hostname = str((status.get("localEndpoint") or {}).get("hostname") or gw["metadata"]["name"])
            break
    if not hostname:
        raise CliError(f'there is no active gateway in cluster "{side.name}"')
    nodes = [str(n["metadata"]["name"]) for n in _list(side.kube, NODES, None)
             if ((n["metadata"].get("labels") or {}).get(m.GATEWAY_LABEL)) == "true"]
    for node in nodes:
        if node == hostname or node.split(".", 1)[0] == hostname.split(".", 1)[0]:
            return node
    raise CliError(f'could not find the active Gateway node "{hostname}" among the gateway nodes of cluster '
                   f'"{side.name}" ({", ".join(nodes) or "none"})')


def target_port(side: Side, endpoint: Obj, nat_discovery: bool) -> int:
    """The tunnel (udp-port) or NAT-discovery port of a cable driver that uses UDP (upstream's getTargetPort)."""
    spec = _endpoint_spec(endpoint)
    backend = str(spec.get("backend") or "")
    if backend not in ("libreswan", "wireguard", "vxlan"):
        raise CliError(f'could not determine the target port for cable driver "{backend}"')
    config = spec.get("backend_config") or {}
    key = NATT_DISCOVERY_PORT_CONFIG if nat_discovery else UDP_PORT_CONFIG
    default = DEFAULT_NAT_DISCOVERY_PORT if nat_discovery else int(
        ((side.submariner or {}).get("spec") or {}).get("ceIPSecNATTPort") or DEFAULT_TUNNEL_PORT)
    value = config.get(key)
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        raise CliError(f'error reading the {"nat-discovery" if nat_discovery else "tunnel"} port: {key}="{value}" '
                       "is not a number") from None


def load_balancer_node_port(side: Side, endpoint: Obj, ns: str, nat_discovery: bool) -> int:
    """With a load-balanced gateway the traffic may arrive on the Service's NodePort (0: no load balancer)."""
    config = _endpoint_spec(endpoint).get("backend_config") or {}
    if str(config.get("using-load-balancer") or "").lower() != "true":
        return 0
    name = "natt-discovery" if nat_discovery else "cable-encaps"
    try:
        svc = side.kube.resource(SERVICES).get(ns, LOAD_BALANCER_SERVICE)
    except KubeError as e:
        raise CliError(f"error reading the details of LB service {LOAD_BALANCER_SERVICE}: {e}") from None
    for port in (svc.get("spec") or {}).get("ports") or []:
        if port.get("name") == name:
            return int(port.get("nodePort") or 0)
    raise CliError(f'could not determine nodePort for port name "{name}" of LB service {LOAD_BALANCER_SERVICE}')


def gateway_ip(remote: Side, local_cluster_id: str, ns: str) -> str:
    """The address the remote cluster's active gateway uses to reach the local cluster (upstream's getGatewayIP)."""
    gateways = _list(remote.kube, GATEWAYS, ns)
    if not gateways:
        raise CliError(f'there are no gateways detected on cluster "{remote.name}"')
    for gw in gateways:
        status = gw.get("status") or {}
        if status.get("haStatus") != "active":
            continue
        for conn in status.get("connections") or []:
            ep = conn.get("endpoint") or {}
            if str(ep.get("cluster_id")) == local_cluster_id:
                if conn.get("usingIP"):
                    return str(conn["usingIP"])
                return str(ep.get("public_ip") if ep.get("nat_enabled") else ep.get("private_ip"))
    raise CliError(f'the gateway on cluster "{remote.name}" does not have an active connection to cluster '
                   f'"{local_cluster_id}"')


def _probe(sniffer_side: tuple[Cluster, Obj], sniff_args: list[str],
           sender_side: tuple[Cluster, Obj], send_args: list[str], timeout: float) -> str:
    """Run the sniffer, re-run the sender in bursts until the sniffer is done; the sniffer's output."""
    sniffer_cluster, sniffer = sniffer_side
    sender_cluster, sender = sender_side
    deadline = time.monotonic() + timeout
    with testpods.in_background(sniffer_cluster, sniffer, [*bootstrap(), "sniff", *sniff_args,
                                                           "--timeout", str(timeout)], timeout + 15) as result:
        while not result and time.monotonic() < deadline:
            testpods.run(sender_cluster, sender, [*bootstrap(), *send_args, "--duration", str(SEND_BURST)],
                         SEND_BURST + 15)
    return result[0][1] if result else ""


def intra_cluster(side: Side, reporter: Reporter, opts: Options) -> bool:
    """Pod on a non-gateway node → remote subnet: the SYNs must arrive on the gateway's vx-submariner."""
    if side.submariner is None:
        reporter.warning("Submariner connectivity feature is not installed")
        return True
    reporter.start(INTRA_CLUSTER)
    try:
        if single_node(side.kube):
            reporter.success(SINGLE_NODE)
            reporter.end()
            return True
        if str((side.submariner.get("status") or {}).get("networkPlugin") or "") == "OVNKubernetes":
            reporter.end()
            return True
        try:
            remote = remote_endpoint(side, opts.namespace)
        except CliError as e:
            reporter.error(e, "Unable to obtain a remote endpoint")
            return False
        node = gateway_node(side, opts.namespace)
        require_non_gateway_node(side)
        cluster = side.cluster()
        remote_ip = str(_endpoint_spec(remote)["subnets"][0]).split("/", 1)[0]
        image = testpods.nettest_image(side.submariner)
        pods = testpods.PodSet(pod_start_timeout(opts))
        try:
            try:
                sniffer = pods.start(cluster, "validate-sniffer", opts.namespace, image, host_network=True, node=node)
            except (CliError, KubeError) as e:
                reporter.error(e, f'Error spawning the sniffer pod on the Gateway node "{node}"')
                return False
            try:
                client = pods.start(cluster, "validate-client", opts.namespace, image, host_network=False)
            except (CliError, KubeError) as e:
                reporter.error(e, "Error spawning the client pod on non-Gateway node")
                return False
            output = _probe((cluster, sniffer),
                            ["--iface", VXLAN_INTERFACE, "--proto", "tcp-syn", "--dport", str(PROBE_TCP_PORT),
                             "--dst", remote_ip],
                            (cluster, client), ["tcp-syn", "--to", remote_ip, "--port", str(PROBE_TCP_PORT)],
                            opts.validation_timeout)
        finally:
            pods.cleanup()
        if opts.verbose:
            reporter.success(f"tcpdump output from the sniffer pod on Gateway node:\n{output.rstrip()}")
        if remote_ip not in output:
            reporter.error(CliError(
                "the tcpdump output from the sniffer pod does not contain the expected remote endpoint IP "
                f"{remote_ip}. Please check that your firewall configuration allows UDP/4800 traffic. Actual pod "
                f"output: \n{_truncate(output)}"))
            return False
        client_ip = str(client["status"]["podIP"])
        if f" {client_ip}." not in output:
            reporter.error(CliError(
                "the tcpdump output from the sniffer pod does not contain the client pod's IP. There seems to be "
                f'some issue with the IPTable rules programmed on the "{client["spec"].get("nodeName")}" node, '
                f"Actual pod output: \n{_truncate(output)}"))
            return False
        reporter.success("The firewall configuration allows intra-cluster VXLAN traffic")
        reporter.end()
        return True
    except (CliError, KubeError) as e:
        reporter.error(e)
        return False


def inter_cluster(local: Side, remote: Side, reporter: Reporter, opts: Options, *, nat_discovery: bool) -> bool:
    """Remote non-gateway node → local gateway's tunnel (or NAT-discovery) port: the tag must arrive."""
    for side in (local, remote):
        if side.submariner is None:
            reporter.failure(f'Submariner connectivity feature is not installed on cluster "{side.name}"')
            return False
    what = "nat-discovery port is opened" if nat_discovery else "tunnels can be setup"
    reporter.start(f'Checking if {what} on the gateway node of cluster "{local.name}"')
    try:
        if single_node(remote.kube):
            reporter.success(SINGLE_NODE)
            reporter.end()
            return True
        try:
            endpoint = local_endpoint(local, opts.namespace)
        except CliError as e:
            reporter.error(e, "Unable to obtain the local endpoint")
            return False
        node = gateway_node(local, opts.namespace)
        try:
            port = target_port(local, endpoint, nat_discovery)
        except CliError as e:
            reporter.error(e, "Could not determine the target port")
            return False
        try:
            lb_port = load_balancer_node_port(local, endpoint, opts.namespace, nat_discovery)
        except CliError as e:
            reporter.error(e, "Could not determine LB node port")
            return False
        try:
            dest_ip = gateway_ip(remote, local.cluster_id, opts.namespace)
        except CliError as e:
            reporter.error(e, f'Error retrieving the gateway IP of cluster "{local.name}"')
            return False
        require_non_gateway_node(remote)
        tag = secrets.token_hex(4)
        ports = f"{port},{lb_port}" if lb_port else str(port)
        local_cluster, remote_cluster = local.cluster(), remote.cluster()
        pods = testpods.PodSet(pod_start_timeout(opts))
        try:
            try:
                sniffer = pods.start(local_cluster, "validate-sniffer", opts.namespace,
                                     testpods.nettest_image(local.submariner), host_network=True, node=node)
            except (CliError, KubeError) as e:
                reporter.error(e, f'Error spawning the sniffer pod on the Gateway node "{node}"')
                return False
            try:
                client = pods.start(remote_cluster, "validate-client", opts.namespace,
                                    testpods.nettest_image(local.submariner), host_network=True)
            except (CliError, KubeError) as e:
                reporter.error(e, f'Error spawning the client pod on non-Gateway node of cluster "{remote.name}"')
                return False
            output = _probe((local_cluster, sniffer),
                            ["--iface", "any", "--proto", "udp", "--dport", ports, "--tag", tag],
                            (remote_cluster, client), ["send-udp", "--to", dest_ip, "--port", str(port), "--sport",
                                                       str(CLIENT_SOURCE_PORT), "--tag", tag],
                            opts.validation_timeout)
        finally:
            pods.cleanup()
        if opts.verbose:
            reporter.success("tcpdump output from sniffer pod on Gateway node")
            reporter.success(output.rstrip())
        if tag not in output:
            hostname = _endpoint_spec(endpoint).get("hostname") or node
            reporter.error(CliError(
                "the tcpdump output from the sniffer pod does not include the message sent from client pod. Please "
                f'check that your firewall configuration allows UDP/{port} traffic on the "{hostname}" node'),
                "Error")
            return False
        reporter.end()
        return True
    except (CliError, KubeError) as e:
        reporter.error(e)
        return False


def metrics_reachable(side: Side, reporter: Reporter, opts: Options, component: str) -> bool:
    """A pod on a non-gateway node can GET the component's /metrics on the active gateway node."""
    reporter.start(f"Checking that {component} metrics are accessible from non-gateway nodes")
    try:
        if single_node(side.kube):
            reporter.success(SINGLE_NODE)
            reporter.end()
            return True
        daemon = m.GATEWAY if component == "gateway" else m.GLOBALNET
        running = [p for p in _list(side.kube, PODS, opts.namespace)
                   if (p["metadata"].get("labels") or {}).get("app") == daemon
                   and (p.get("status") or {}).get("phase") == "Running" and (p.get("status") or {}).get("hostIP")]
        if not running:
            reporter.warning(f"No {daemon} pod is running: the {component} metrics cannot be checked")
            reporter.end()
            return True
        try:
            node = gateway_node(side, opts.namespace)
            running = [p for p in running if (p.get("spec") or {}).get("nodeName") == node] or running
        except CliError:
            pass  # no active gateway: reported by the deployment check; probe any running pod
        url = f"http://{running[0]['status']['hostIP']}:{m.METRICS_PORTS[daemon]}/metrics"
        require_non_gateway_node(side)
        pods = testpods.PodSet(pod_start_timeout(opts))
        try:
            try:
                client = pods.start(side.cluster(), "validate-client", opts.namespace,
                                    testpods.nettest_image(side.submariner), host_network=False)
            except (CliError, KubeError) as e:
                reporter.error(e, "Error spawning the client pod on non-Gateway node")
                return False
            code, output = testpods.run(side.cluster(), client, [*bootstrap(), "http-get", "--url", url, "--timeout",
                                                                 "10", "--retries", "6"], 90)
        finally:
            pods.cleanup()
        if code != 0 or " 200 " not in output.split("\n", 1)[0]:
            reporter.error(CliError(f"unable to access {component} metrics at {url} from a non-gateway node: "
                                    f"{_truncate(output)}"))
            return False
        reporter.end()
        return True
    except (CliError, KubeError) as e:
        reporter.error(e)
        return False


def _truncate(text: str, limit: int = 1000) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."
