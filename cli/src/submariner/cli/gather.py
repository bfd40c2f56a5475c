"""`subctl gather` (subctl.md §3.3, §9): the objects and pod logs support asks for, one directory per cluster.

Tokens, the PSK and Secret data are redacted unless `--include-sensitive-data` is given: the output is
meant to be attached to bug reports.
"""

from __future__ import annotations

import copy
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import yaml

from submariner.broker.api.labels import ENDPOINTSLICE_MANAGED_BY, LIGHTHOUSE_MANAGED_BY
from submariner.broker.api.meta import APIResource
from submariner.broker.api.submariner import CLUSTER_GLOBAL_EGRESS_IPS, GLOBAL_EGRESS_IPS, GLOBAL_INGRESS_IPS
from submariner.broker.kube import ENDPOINT_SLICES, ClientFactory, Cluster, KubeError, NotFound, Obj
from submariner.cli import BROKER_NAMESPACE, OPERATOR_NAMESPACE
from submariner.cli import manifests as m
from submariner.cli.errors import CliError, version_trailer
from submariner.cli.kubeconf import KubeFlags, connect, select_contexts
from submariner.cli.options import kube_options, split_list
from submariner.cli.reporter import Reporter
from submariner.cli.resources import (
    BROKERS,
    CLUSTERS,
    CONFIGMAPS,
    DAEMON_SETS,
    DEPLOYMENTS,
    ENDPOINTS,
    GATEWAYS,
    NODES,
    PODS,
    ROUTE_AGENTS,
    SECRETS,
    SERVICE_DISCOVERIES,
    SERVICE_EXPORTS,
    SERVICE_IMPORTS,
    SUBMARINERS,
)

TYPES = ("logs", "resources")
MODULES = ("connectivity", "service-discovery", "broker", "operator")
REDACTED = "##redacted##"
_SENSITIVE_SPEC = ("brokerK8sApiServerToken", "ceIPSecPSK", "brokerK8sCA")
_SENSITIVE_ENV = ("CE_IPSEC_PSK", "BROKER_K8S_APISERVERTOKEN")

# (file stem, resource, namespace or None for all namespaces, label selector)
Source = tuple[str, APIResource, str | None, str]
RESOURCES: dict[str, list[Source]] = {
    "connectivity": [
        ("submariners", SUBMARINERS, OPERATOR_NAMESPACE, ""),
        ("gateways", GATEWAYS, OPERATOR_NAMESPACE, ""),
        ("endpoints", ENDPOINTS, OPERATOR_NAMESPACE, ""),
        ("clusters", CLUSTERS, OPERATOR_NAMESPACE, ""),
        ("routeagents", ROUTE_AGENTS, OPERATOR_NAMESPACE, ""),
        ("daemonsets", DAEMON_SETS, OPERATOR_NAMESPACE, ""),
        ("nodes", NODES, None, ""),
        ("globalegressips", GLOBAL_EGRESS_IPS, None, ""),
        ("clusterglobalegressips", CLUSTER_GLOBAL_EGRESS_IPS, None, ""),
        ("globalingressips", GLOBAL_INGRESS_IPS, None, ""),
    ],
    "service-discovery": [
        ("servicediscoveries", SERVICE_DISCOVERIES, OPERATOR_NAMESPACE, ""),
        ("serviceexports", SERVICE_EXPORTS, None, ""),
        ("serviceimports", SERVICE_IMPORTS, None, ""),
        ("endpointslices", ENDPOINT_SLICES, None, f"{ENDPOINTSLICE_MANAGED_BY}={LIGHTHOUSE_MANAGED_BY}"),
        ("deployments", DEPLOYMENTS, OPERATOR_NAMESPACE, ""),
        ("configmaps-kube-system", CONFIGMAPS, "kube-system", ""),
    ],
    "broker": [
        ("brokers", BROKERS, BROKER_NAMESPACE, ""),
        ("broker-clusters", CLUSTERS, BROKER_NAMESPACE, ""),
        ("broker-endpoints", ENDPOINTS, BROKER_NAMESPACE, ""),
        ("broker-serviceimports", SERVICE_IMPORTS, BROKER_NAMESPACE, ""),
        ("broker-endpointslices", ENDPOINT_SLICES, BROKER_NAMESPACE, ""),
        ("broker-configmaps", CONFIGMAPS, BROKER_NAMESPACE, ""),
        ("broker-secrets", SECRETS, BROKER_NAMESPACE, ""),
    ],
    "operator": [
        ("submariners", SUBMARINERS, OPERATOR_NAMESPACE, ""),
        ("servicediscoveries", SERVICE_DISCOVERIES, OPERATOR_NAMESPACE, ""),
        ("pods", PODS, OPERATOR_NAMESPACE, ""),
    ],
}
LOG_COMPONENTS: dict[str, tuple[str, ...]] = {
    "connectivity": (m.GATEWAY, m.ROUTE_AGENT, m.GLOBALNET),
    "service-discovery": (m.LIGHTHOUSE_AGENT, m.LIGHTHOUSE_COREDNS),
    "broker": (),
    "operator": (),
}


def redact(obj: Obj) -> Obj:
    """Secret data, tokens and the PSK replaced by a marker (keys kept, so the shape stays visible)."""
    out = copy.deepcopy(obj)
    if out.get("kind") == "Secret":
        out["data"] = {k: REDACTED for k in (out.get("data") or {})}
    spec = out.get("spec")
    if isinstance(spec, dict):
        for key in _SENSITIVE_SPEC:
            if spec.get(key):
                spec[key] = REDACTED
        template = ((spec.get("template") or {}).get("spec") or {}) if isinstance(spec.get("template"), dict) else {}
        for container in [*(template.get("containers") or []), *(spec.get("containers") or [])]:
            for env in container.get("env") or []:
                if env.get("name") in _SENSITIVE_ENV and "value" in env:
                    env["value"] = REDACTED
    meta = out.get("metadata") or {}
    meta.pop("managedFields", None)
    return out


def _list(kube: ClientFactory, res: APIResource, ns: str | None, selector: str) -> list[Obj]:
    try:
        return kube.resource(res).list(ns, label_selector=selector)[0]
    except NotFound:
        return []


def gather_resources(kube: ClientFactory, module: str, target: Path, sensitive: bool) -> int:
    count = 0
    for stem, res, ns, selector in RESOURCES[module]:
        items = _list(kube, res, ns, selector)
        if not items:
            continue
        if not sensitive:
            items = [redact(o) for o in items]
        doc = {"apiVersion": "v1", "kind": "List", "items": items}
        (target / f"{stem}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        count += len(items)
    return count


def gather_logs(kube: Cluster, module: str, target: Path) -> int:
    from kubernetes.client import CoreV1Api

    api = CoreV1Api(kube.api_client)
    count = 0
    for component in LOG_COMPONENTS[module]:
        for pod in _list(kube, PODS, OPERATOR_NAMESPACE, f"app={component}"):
            name = pod["metadata"]["name"]
            for container in (pod.get("spec") or {}).get("containers") or []:
                try:
                    text = api.read_namespaced_pod_log(name, OPERATOR_NAMESPACE, container=container["name"],
                                                       _request_timeout=30)
                except Exception as e:  # the log may be gone or not served: record why, keep going
                    text = f"(log unavailable: {e})\n"
                (target / f"{name}_{container['name']}.log").write_text(str(text))
                count += 1
    return count


def run(kube: KubeFlags, types: list[str], modules: list[str], directory: str, sensitive: bool,
        contexts: list[str], reporter: Reporter) -> bool:
    ok = True
    for ctx in select_contexts(kube, contexts, reporter.warning):
        if not kube.context:
            sys.stdout.write(f'Cluster "{ctx.cluster}"\n')
        target = Path(directory) / ctx.cluster
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, 0o700)
        try:
            cluster = connect(kube, ctx.name)
            for module in modules:
                for kind in types:
                    try:
                        if kind == "resources":
                            gather_resources(cluster, module, target, sensitive)
                        else:
                            gather_logs(cluster, module, target)
                        reporter.success(f"Gathering {module} {kind}")
                    except KubeError as e:
                        reporter.failure(f"Gathering {module} {kind}: {e}")
                        ok = False
        except CliError as e:
            reporter.error(e, f'Error gathering from cluster "{ctx.cluster}"')
            ok = False
        sys.stdout.write(f'Files are stored under directory "{target}"\n\n')
        sys.stdout.flush()
    return ok


def _check(values: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    for v in values:
        if v not in allowed:
            raise CliError(f'invalid {what} "{v}": use any of {", ".join(allowed)}')
    return values


@click.command("gather")
@click.option("--type", "types", default="logs,resources", show_default=True, help="what to gather: logs, resources")
@click.option("--module", "modules", default=",".join(MODULES), show_default=True, help="which components")
@click.option("--dir", "directory", default="", help="output directory (default submariner-<UTC timestamp>)")
@click.option("--include-sensitive-data", is_flag=True, help="keep tokens, the PSK and Secret data")
@click.option("--contexts", multiple=True, help="comma-separated contexts (default: all)")
@kube_options
def command(kube: KubeFlags, types: str, modules: str, directory: str, include_sensitive_data: bool,
            contexts: tuple[str, ...]) -> None:
    """Gather troubleshooting information from a cluster"""
    reporter = Reporter()
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    try:
        ok = run(kube, _check(split_list([types]), TYPES, "type"), _check(split_list([modules]), MODULES, "module"),
                 directory or f"submariner-{stamp}", include_sensitive_data,
                 split_list(contexts), reporter)
    except CliError as e:
        reporter.error(e, e.message)
        ok = False
    if not ok:
        version_trailer()
        raise SystemExit(1)

