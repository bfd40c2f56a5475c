"""`subctl show …` (subctl.md §3.3, §4.2, §4.3): tables from the objects the components publish.

Gateways and connections come from `submariner.io` Gateway objects (dataplane.md §1), written by the
gateway engine; nothing here talks to a component directly. `-o json|yaml` prints the same rows as data.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import yaml

from submariner.broker.kube import ClientFactory, KubeError, NotFound, Obj
from submariner.cli import OPERATOR_NAMESPACE
from submariner.cli import manifests as m
from submariner.cli.discovery import NetworkDetails, detail_lines, discover, from_submariner
from submariner.cli.errors import CliError, check_version_skew, version_trailer
from submariner.cli.kubeconf import ContextInfo, KubeFlags, connect, select_contexts
from submariner.cli.options import kube_options, output_option, split_list
from submariner.cli.reporter import Reporter
from submariner.cli.resources import BROKERS, DAEMON_SETS, DEPLOYMENTS, GATEWAYS, NODES, PODS, ROUTE_AGENTS, SUBMARINERS
from submariner.cli.tables import Column, render

NOT_INSTALLED = "Submariner connectivity feature is not installed"

CONNECTION_COLUMNS = (Column("GATEWAY", 30), Column("CLUSTER", 24), Column("REMOTE IP"), Column("NAT"),
                      Column("CABLE DRIVER"), Column("SUBNETS", 40), Column("STATUS"), Column("RTT avg."))
ENDPOINT_COLUMNS = (Column("CLUSTER", 24), Column("ENDPOINT IP"), Column("PUBLIC IP"), Column("CABLE DRIVER"),
                    Column("TYPE"))
GATEWAY_COLUMNS = (Column("NODE", 30), Column("HA STATUS"), Column("SUMMARY"))
VERSION_COLUMNS = (Column("COMPONENT"), Column("REPOSITORY"), Column("CONFIGURED"), Column("RUNNING"), Column("ARCH"))
BROKER_COLUMNS = (Column("NAMESPACE", 24), Column("NAME", 24), Column("COMPONENTS"), Column("GLOBALNET"),
                  Column("GLOBALNET CIDR"), Column("DEFAULT GLOBALNET SIZE"), Column("DEFAULT DOMAINS", 40))
VERSION_DAEMON_SETS = (m.GATEWAY, m.ROUTE_AGENT, m.GLOBALNET, "submariner-metrics-proxy")
VERSION_DEPLOYMENTS = ("submariner-operator", m.LIGHTHOUSE_AGENT, m.LIGHTHOUSE_COREDNS)


# --- rows (pure) --------------------------------------------------------------------------------------


def _status(gw: Obj) -> Obj:
    return dict(gw.get("status") or {})


def connection_rows(gateways: list[Obj]) -> list[dict[str, Any]]:
    rows = []
    for gw in gateways:
        for conn in _status(gw).get("connections") or []:
            ep = conn.get("endpoint") or {}
            remote_ip = conn.get("usingIP") or (ep.get("public_ip") if ep.get("nat_enabled") else "") \
                or ep.get("private_ip") or ""
            nat = conn["usingNAT"] if "usingNAT" in conn else bool(ep.get("nat_enabled"))
            rows.append({
                "gateway": ep.get("hostname", ""), "cluster": ep.get("cluster_id", ""), "remoteIP": remote_ip,
                "nat": bool(nat), "cableDriver": ep.get("backend", ""), "subnets": list(ep.get("subnets") or []),
                "status": conn.get("status", ""), "rttAvg": (conn.get("latencyRTT") or {}).get("average", ""),
            })
    return rows


def endpoint_rows(gateways: list[Obj]) -> list[dict[str, Any]]:
    rows = []
    for gw in gateways:
        status = _status(gw)
        local = status.get("localEndpoint") or {}
        rows.append({"cluster": local.get("cluster_id", ""), "endpointIP": local.get("private_ip", ""),
                     "publicIP": local.get("public_ip", ""), "cableDriver": local.get("backend", ""),
                     "type": "local"})
        for conn in status.get("connections") or []:
            ep = conn.get("endpoint") or {}
            rows.append({"cluster": ep.get("cluster_id", ""), "endpointIP": ep.get("private_ip", ""),
                         "publicIP": ep.get("public_ip", ""), "cableDriver": ep.get("backend", ""),
                         "type": "remote"})
    return rows


def gateway_summary(status: Obj) -> str:
    if status.get("statusFailure"):
        return str(status["statusFailure"])
    conns = status.get("connections") or []
    if not conns:
        return "There are no connections"
    up = sum(1 for c in conns if c.get("status") == "connected")
    if up == len(conns):
        return f"All connections ({len(conns)}) are established"
    return f"{up} connections out of {len(conns)} are established"


def gateway_rows(gateways: list[Obj]) -> list[dict[str, Any]]:
    rows = []
    for gw in gateways:
        status = _status(gw)
        node = (status.get("localEndpoint") or {}).get("hostname") or gw["metadata"]["name"]
        rows.append({"node": node, "haStatus": status.get("haStatus", ""), "summary": gateway_summary(status)})
    return rows


def broker_rows(brokers: list[Obj]) -> list[dict[str, Any]]:
    rows = []
    for b in brokers:
        spec = b.get("spec") or {}
        rows.append({
            "namespace": b["metadata"].get("namespace", ""), "name": b["metadata"]["name"],
            "components": list(spec.get("components") or []), "globalnet": bool(spec.get("globalnetEnabled")),
            "globalnetCIDR": spec.get("globalnetCIDRRange", ""),
            "defaultGlobalnetSize": spec.get("defaultGlobalnetClusterSize", ""),
            "defaultDomains": list(spec.get("defaultCustomDomains") or []),
        })
    return rows


def split_image(image: str) -> tuple[str, str]:
    """`quay.io/submariner/x:0.19.0` → (`quay.io/submariner`, `0.19.0`)."""
    ref = image.split("@", 1)[0]
    slash, colon = ref.rfind("/"), ref.rfind(":")
    tag = ref[colon + 1:] if colon > slash else "latest"
    repo = ref[:slash] if slash >= 0 else ""
    return repo, tag


def _table(columns: tuple[Column, ...], rows: list[dict[str, Any]]) -> str:
    return render(columns, [list(r.values()) for r in rows])


# --- per-cluster data ---------------------------------------------------------------------------------


def _get(kube: ClientFactory, res: Any, ns: str, name: str) -> Obj | None:
    try:
        return kube.resource(res).get(ns, name)
    except NotFound:
        return None


def _list(kube: ClientFactory, res: Any, ns: str | None) -> list[Obj]:
    try:
        return sorted(kube.resource(res).list(ns)[0], key=lambda o: (o["metadata"].get("namespace", ""),
                                                                     o["metadata"]["name"]))
    except NotFound:
        return []


@dataclass
class ViewResult:
    text: str = ""
    data: Any = None
    failed: bool = False


@dataclass
class ClusterView:
    kube: ClientFactory
    reporter: Reporter
    tables: bool = True
    """Print tables (False for -o json/yaml, where only the data is printed)."""
    _submariner: Obj | None = None
    _loaded: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    def submariner(self) -> Obj | None:
        if not self._loaded:
            self._submariner = _get(self.kube, SUBMARINERS, OPERATOR_NAMESPACE, m.SUBMARINER_CR)
            self._loaded = True
        return self._submariner

    def gateways(self) -> list[Obj]:
        return _list(self.kube, GATEWAYS, OPERATOR_NAMESPACE)

    def _gateway_view(self, title: str, columns: tuple[Column, ...], rows_of: Callable[[list[Obj]], list[Any]],
                      key: str, empty: str) -> ViewResult:
        r = self.reporter
        if self.submariner() is None:
            r.warning(NOT_INSTALLED)
            return ViewResult()
        r.start(title)
        gateways = self.gateways()
        if not gateways:
            r.failure("No gateways detected")
            r.end()
            return ViewResult(failed=True, data=[])
        rows = rows_of(gateways)
        if not rows and empty:
            r.failure(empty)
            r.end()
            return ViewResult(failed=True, data=[])
        r.end()
        self.data[key] = rows
        return ViewResult(_table(columns, rows), rows)

    def connections(self) -> ViewResult:
        return self._gateway_view("Showing Connections", CONNECTION_COLUMNS, connection_rows, "connections",
                                  "No connections found")

    def endpoints(self) -> ViewResult:
        return self._gateway_view("Showing Endpoints", ENDPOINT_COLUMNS, endpoint_rows, "endpoints", "")

    def gateways_view(self) -> ViewResult:
        return self._gateway_view("Showing Gateways", GATEWAY_COLUMNS, gateway_rows, "gateways", "")

    def networks(self) -> ViewResult:
        r = self.reporter
        r.start("Showing Network details")
        cr = self.submariner()
        details: NetworkDetails
        if cr is not None:
            details, heading = from_submariner(cr), "Discovered network details via Submariner:"
        else:
            details, heading = discover(self.kube), "Discovered network details"
        if details.empty:
            r.warning("The network details could not be determined")
            r.end()
            return ViewResult()
        r.end()
        data = {"networkPlugin": details.plugin, "serviceCIDRs": details.service_cidrs,
                "clusterCIDRs": details.cluster_cidrs, "globalCIDR": details.global_cidr,
                "clustersetIPCIDR": details.clusterset_ip_cidr}
        self.data["networks"] = data
        return ViewResult(detail_lines(details, heading), data)

    def versions(self) -> ViewResult:
        self.reporter.start("Showing versions")
        rows = []
        arch_of_node = {n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get("kubernetes.io/arch", "")
                        for n in _list(self.kube, NODES, None)}
        running = self._running_versions()
        for res, names in ((DAEMON_SETS, VERSION_DAEMON_SETS), (DEPLOYMENTS, VERSION_DEPLOYMENTS)):
            for name in names:
                obj = _get(self.kube, res, OPERATOR_NAMESPACE, name)
                if obj is None:
                    continue
                containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")
                repo, tag = split_image(str((containers or [{}])[0].get("image") or ""))
                rows.append({"component": name, "repository": repo, "configured": tag,
                             "running": running.get(name) or "Unavailable", "arch": self._arch(name, arch_of_node)})
        self.reporter.end()
        self.data["versions"] = rows
        return ViewResult(_table(VERSION_COLUMNS, rows), rows)

    def _running_versions(self) -> dict[str, str]:
        """What the components themselves report (Gateway / RouteAgent `status.version`)."""
        out: dict[str, str] = {}
        for res, name in ((GATEWAYS, m.GATEWAY), (ROUTE_AGENTS, m.ROUTE_AGENT)):
            for obj in _list(self.kube, res, OPERATOR_NAMESPACE):
                version = (obj.get("status") or {}).get("version")
                if version:
                    out[name] = str(version)
                    break
        return out

    def _arch(self, component: str, arch_of_node: dict[str, str]) -> str:
        try:
            pods, _ = self.kube.resource(PODS).list(OPERATOR_NAMESPACE, label_selector=f"app={component}")
        except KubeError:
            return ""
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if node and arch_of_node.get(node):
                return arch_of_node[node]
        return ""

    def brokers(self) -> ViewResult:
        r = self.reporter
        r.start("Detecting broker(s)")
        rows = broker_rows(_list(self.kube, BROKERS, None))
        if not rows:
            r.success("No brokers found")
            r.end()
            self.data["brokers"] = []
            return ViewResult(data=[])
        r.end()
        self.data["brokers"] = rows
        return ViewResult(_table(BROKER_COLUMNS, rows), rows)

    def all(self) -> ViewResult:
        out = []
        failed = False
        brokers = self.brokers()
        out.append(brokers.text)
        if self.submariner() is not None:
            for view in (self.connections, self.endpoints, self.gateways_view, self.networks, self.versions):
                self._flush(out)
                result = view()
                failed |= result.failed
                out.append(result.text + "\n")
        else:
            self._flush(out)
            out.append(self.versions().text)
            self.reporter.warning(NOT_INSTALLED)
        return ViewResult("".join(out), self.data, failed)

    def _flush(self, out: list[str]) -> None:
        """Tables go out as soon as they are complete, so they interleave with the progress lines."""
        if self.tables:
            sys.stdout.write("".join(out))
            sys.stdout.flush()
        out.clear()


VIEWS: dict[str, Callable[[ClusterView], ViewResult]] = {
    "connections": ClusterView.connections,
    "endpoints": ClusterView.endpoints,
    "gateways": ClusterView.gateways_view,
    "networks": ClusterView.networks,
    "versions": ClusterView.versions,
    "brokers": ClusterView.brokers,
    "all": ClusterView.all,
}


def run(kube: KubeFlags, view: str, contexts: list[str], output: str, reporter: Reporter) -> bool:
    """Show one view on every selected context; returns whether everything succeeded."""
    selected: list[ContextInfo] = select_contexts(kube, contexts, reporter.warning)
    with_header = not kube.context
    ok = True
    documents = []
    for ctx in selected:
        if with_header and output == "table":
            sys.stdout.write(f'Cluster "{ctx.cluster}"\n')
            sys.stdout.flush()
        try:
            cluster = connect(kube, ctx.name)
            cv = ClusterView(cluster, reporter, tables=output == "table")
            check_version_skew(str(((cv.submariner() or {}).get("spec") or {}).get("version") or ""))
            result = VIEWS[view](cv)
            if result.failed or reporter.failed:
                ok = False
            if output == "table":
                sys.stdout.write(result.text)
            documents.append({"cluster": ctx.cluster, "context": ctx.name,
                              **(cv.data if view == "all" else {view: result.data})})
        except (KubeError, CliError) as e:
            reporter.error(e, f'Error showing {view} on cluster "{ctx.cluster}"')
            ok = False
        if output == "table" and with_header:
            sys.stdout.write("\n")
        sys.stdout.flush()
    if output == "json":
        sys.stdout.write(json.dumps(documents, indent=2) + "\n")
    elif output == "yaml":
        sys.stdout.write(yaml.safe_dump(documents, sort_keys=False))
    sys.stdout.flush()
    return ok


def _make(view: str, help_text: str) -> click.Command:
    @click.command(view, help=help_text)
    @click.option("--contexts", multiple=True, help="comma-separated contexts to show (default: all)")
    @output_option
    @kube_options
    def cmd(kube: KubeFlags, contexts: tuple[str, ...], output: str) -> None:
        reporter = Reporter()
        try:
            ok = run(kube, view, split_list(contexts), output, reporter)
        except CliError as e:
            reporter.error(e, e.message)
            ok = False
        if not ok:
            version_trailer()
            raise SystemExit(1)

    return cmd


@click.group("show")
def show_group() -> None:
    """Show information about Submariner"""


for _view, _help in (
    ("all", "Show information related to a Submariner cluster"),
    ("connections", "Show cluster connectivity information"),
    ("endpoints", "Show Submariner endpoint information"),
    ("gateways", "Show Submariner gateway summary information"),
    ("networks", "Get information on your cluster related to Submariner"),
    ("versions", "Shows Submariner component versions"),
    ("brokers", "Show broker information"),
):
    show_group.add_command(_make(_view, _help))
