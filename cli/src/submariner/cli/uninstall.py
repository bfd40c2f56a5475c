"""`subctl uninstall` (subctl.md §9): everything join (and deploy-broker, when unused) created, bounded.

Every wait has a deadline and stuck finalizers are cleared, so uninstall never hangs on Terminating
objects (subctl.md §10.7). There is no operator, so the components are removed here directly.
"""

from __future__ import annotations

import base64
import contextlib
import sys
import time
from typing import Any

import click

from submariner.broker.kube import ClientFactory, Cluster, KubeError, NotFound, Obj
from submariner.cli import BROKER_NAMESPACE, OPERATOR_NAMESPACE
from submariner.cli import manifests as m
from submariner.cli.errors import CliError, exit_on_error
from submariner.cli.kubeconf import KubeFlags, connect, resolve
from submariner.cli.options import kube_options
from submariner.cli.reporter import Reporter
from submariner.cli.resources import (
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    CLUSTERS,
    CONFIGMAPS,
    CRDS,
    ENDPOINTS,
    NAMESPACES,
    NODES,
    SERVICE_DISCOVERIES,
    SUBMARINERS,
)

WAIT_SECONDS = 60.0


def _delete(kube: ClientFactory, res: Any, ns: str, name: str) -> bool:
    try:
        kube.resource(res).delete(ns, name)
        return True
    except NotFound:
        return False


def delete_and_wait(kube: ClientFactory, res: Any, ns: str, name: str, timeout: float) -> None:
    """Delete, wait until gone; past half the budget clear the finalizers that hold it."""
    if not _delete(kube, res, ns, name):
        return
    client = kube.resource(res)
    start = time.monotonic()
    cleared = False
    while time.monotonic() - start < timeout:
        try:
            obj = client.get(ns, name)
        except NotFound:
            return
        if not cleared and time.monotonic() - start > timeout / 2 and obj["metadata"].get("finalizers"):
            with contextlib.suppress(KubeError):
                client.patch(ns, name, {"metadata": {"finalizers": None}})
            cleared = True
        time.sleep(0.2)
    raise CliError(f"{res.kind} {ns + '/' if ns else ''}{name} is still there after {timeout:.0f}s "
                   "(check its finalizers)")


def _remove_from_broker(cr: Obj, cluster_id: str) -> None:
    """This cluster's Cluster/Endpoints on the broker (no gateway is left to withdraw them)."""
    spec = cr.get("spec") or {}
    server, token = spec.get("brokerK8sApiServer"), spec.get("brokerK8sApiServerToken")
    if not server or not token:
        return
    ca = base64.b64decode(spec["brokerK8sCA"]) if spec.get("brokerK8sCA") else None
    broker = Cluster.from_token(f"https://{server}", token, ca_data=ca, insecure=bool(spec.get("brokerK8sInsecure")),
                                name="broker")
    broker.request_timeout = (5.0, 10.0)
    ns = spec.get("brokerK8sRemoteNamespace") or BROKER_NAMESPACE
    with contextlib.suppress(KubeError):
        _delete(broker, CLUSTERS, ns, cluster_id)
        for ep in broker.resource(ENDPOINTS).list(ns)[0]:
            if (ep.get("spec") or {}).get("cluster_id") == cluster_id:
                _delete(broker, ENDPOINTS, ns, ep["metadata"]["name"])


def _restore_coredns(kube: ClientFactory, cr: Obj) -> None:
    custom = (cr.get("spec") or {}).get("coreDNSCustomConfig") or {}
    ns, name = custom.get("namespace") or "kube-system", custom.get("configMapName") or "coredns"
    with contextlib.suppress(NotFound):
        cm = kube.resource(CONFIGMAPS).get(ns, name)
        data = cm.get("data") or {}
        corefile = str(data.get("Corefile") or "")
        zones = (m.CLUSTERSET_ZONE, *((cr.get("spec") or {}).get("customDomains") or []))
        stripped = m._strip_forward_blocks(corefile, zones)
        changed = stripped != corefile or "lighthouse.server" in data
        data.pop("lighthouse.server", None)
        if changed:
            data["Corefile"] = stripped
            kube.resource(CONFIGMAPS).update(cm)


def run(kube_flags: KubeFlags, reporter: Reporter, *, yes: bool, interactive: bool,
        timeout: float = WAIT_SECONDS) -> None:
    context = resolve(kube_flags)
    if not yes:
        if not interactive:
            raise CliError("no terminal to confirm on: pass --yes to uninstall")
        from submariner.cli.prompts import confirm

        if not confirm(f'This will completely uninstall Submariner from the cluster "{context.cluster}". '
                       "Are you sure you want to continue?"):
            return
    kube = connect(kube_flags, context.name)
    try:
        _uninstall(kube, reporter, timeout)
    except KubeError as e:
        raise CliError(str(e), "Error uninstalling Submariner") from None


def _uninstall(kube: ClientFactory, reporter: Reporter, timeout: float) -> None:
    cr: Obj | None = None
    for res, name in ((SUBMARINERS, m.SUBMARINER_CR), (SERVICE_DISCOVERIES, m.SERVICE_DISCOVERY_CR)):
        with contextlib.suppress(NotFound):
            cr = kube.resource(res).get(OPERATOR_NAMESPACE, name)
            reporter.start(f"Deleting the {res.kind} resource - this may take some time")
            if cr.get("spec", {}).get("clusterID"):
                _remove_from_broker(cr, cr["spec"]["clusterID"])
            _restore_coredns(kube, cr)
            delete_and_wait(kube, res, OPERATOR_NAMESPACE, name, timeout)
            reporter.end()

    broker_remains = False
    with contextlib.suppress(NotFound):
        kube.resource(NAMESPACES).get("", BROKER_NAMESPACE)
        reporter.start(f'Deleting the broker namespace "{BROKER_NAMESPACE}"')
        members = [c["metadata"]["name"] for c in _list(kube, CLUSTERS, BROKER_NAMESPACE)]
        if members:
            reporter.warning(f'Broker namespace "{BROKER_NAMESPACE}" appears to be in use by other clusters '
                             f"({', '.join(members)}) - keeping the broker components.")
            broker_remains = True
        else:
            delete_and_wait(kube, NAMESPACES, "", BROKER_NAMESPACE, timeout)
        reporter.end()

    reporter.start("Deleting the Submariner cluster roles and cluster role bindings")
    for res in (CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES):
        for obj in _list(kube, res, None):
            if obj["metadata"]["name"].startswith("submariner-"):
                _delete(kube, res, "", obj["metadata"]["name"])
    reporter.end()

    with contextlib.suppress(NotFound):
        kube.resource(NAMESPACES).get("", OPERATOR_NAMESPACE)
        reporter.start(f'Deleting the "{OPERATOR_NAMESPACE}" namespace')
        delete_and_wait(kube, NAMESPACES, "", OPERATOR_NAMESPACE, timeout)
        reporter.end()

    if not broker_remains:
        reporter.start("Deleting the Submariner custom resource definitions")
        for crd in _list(kube, CRDS, None):
            if crd["metadata"]["name"].endswith(".submariner.io"):
                _delete(kube, CRDS, "", crd["metadata"]["name"])
        reporter.end()

    reporter.start("Unlabeling gateway nodes")
    for node in _list(kube, NODES, None):
        if m.GATEWAY_LABEL in (node["metadata"].get("labels") or {}):
            kube.resource(NODES).patch("", node["metadata"]["name"], {"metadata": {"labels": {m.GATEWAY_LABEL: None}}})
    reporter.end()


def _list(kube: ClientFactory, res: Any, ns: str | None) -> list[Obj]:
    try:
        return kube.resource(res).list(ns)[0]
    except NotFound:
        return []


@click.command("uninstall")
@click.option("-y", "--yes", is_flag=True, default=False, help="don't ask for confirmation")
@click.option("-n", "--namespace", default=OPERATOR_NAMESPACE, show_default=True, help="Submariner namespace")
@click.option("--timeout", type=float, default=WAIT_SECONDS, show_default=True,
              help="seconds to wait for each deletion")
@kube_options
def command(kube: KubeFlags, yes: bool, namespace: str, timeout: float) -> None:
    """Uninstalls Submariner and its components"""
    reporter = Reporter()
    try:
        run(kube, reporter, yes=yes, interactive=sys.stdin.isatty(), timeout=timeout)
    except CliError as e:
        exit_on_error(reporter, e)
