"""`subctl export service` / `unexport service` (subctl.md §3.3): a ServiceExport of the same name."""

from __future__ import annotations

import click

from submariner.broker.api.labels import USE_CLUSTERSET_IP
from submariner.broker.kube import AlreadyExists, KubeError, NotFound, Obj
from submariner.cli.errors import CliError, exit_on_error
from submariner.cli.kubeconf import KubeFlags, connect, resolve
from submariner.cli.options import kube_options
from submariner.cli.reporter import Reporter
from submariner.cli.resources import SERVICE_EXPORTS, SERVICES


def service_export(name: str, namespace: str, use_clusterset_ip: bool | None) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace}
    if use_clusterset_ip is not None:
        meta["annotations"] = {USE_CLUSTERSET_IP: "true" if use_clusterset_ip else "false"}
    return {"apiVersion": SERVICE_EXPORTS.api_version, "kind": "ServiceExport", "metadata": meta}


def export_service(kube: KubeFlags, name: str, namespace: str, use_clusterset_ip: bool | None,
                   reporter: Reporter) -> None:
    context = resolve(kube)
    ns = namespace or context.namespace or "default"
    cluster = connect(kube, context.name)
    try:
        cluster.resource(SERVICES).get(ns, name)
    except NotFound as e:
        raise CliError(str(e), f'Unable to find the Service "{name}" in namespace "{ns}"') from None
    except KubeError as e:
        raise CliError(str(e), f'Error retrieving the Service "{name}" in namespace "{ns}"') from None
    try:
        cluster.resource(SERVICE_EXPORTS).create(service_export(name, ns, use_clusterset_ip))
    except AlreadyExists:
        reporter.success("Service already exported")
        return
    except NotFound as e:
        raise CliError(f"{e} (is the ServiceExport CRD installed? run `subctl join` first)",
                       "Failed to export Service") from None
    except KubeError as e:
        raise CliError(str(e), "Failed to export Service") from None
    reporter.success("Service exported successfully")


def unexport_service(kube: KubeFlags, name: str, namespace: str, reporter: Reporter) -> None:
    context = resolve(kube)
    ns = namespace or context.namespace or "default"
    cluster = connect(kube, context.name)
    try:
        cluster.resource(SERVICE_EXPORTS).delete(ns, name)
    except NotFound as e:
        raise CliError(str(e), f"Service {ns}/{name} was not previously exported") from None
    except KubeError as e:
        raise CliError(str(e), "Failed to unexport the Service") from None
    reporter.success("Service successfully unexported")


@click.group("export")
def export_group() -> None:
    """Exports a resource to other clusters"""


@export_group.command("service")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default="", help="namespace of the Service (default: the context's, else default)")
@click.option("--use-clusterset-ip/--no-use-clusterset-ip", default=None,
              help="give the exported Service a clusterset VIP (annotation lighthouse.submariner.io/use-clusterset-ip)")
@kube_options
def export_service_command(kube: KubeFlags, name: str | None, namespace: str, use_clusterset_ip: bool | None) -> None:
    """Exports a Service to other clusters"""
    reporter = Reporter()
    try:
        if not name:
            raise CliError("name of the Service to be exported must be specified", "Insufficient arguments")
        export_service(kube, name, namespace, use_clusterset_ip, reporter)
    except CliError as e:
        exit_on_error(reporter, e)


@click.group("unexport")
def unexport_group() -> None:
    """Stop a resource from being exported to other clusters"""


@unexport_group.command("service")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default="", help="namespace of the Service (default: the context's, else default)")
@kube_options
def unexport_service_command(kube: KubeFlags, name: str | None, namespace: str) -> None:
    """Stop a Service from being exported to other clusters"""
    reporter = Reporter()
    try:
        if not name:
            raise CliError("name of the Service to be unexported must be specified", "Insufficient arguments")
        unexport_service(kube, name, namespace, reporter)
    except CliError as e:
        exit_on_error(reporter, e)
