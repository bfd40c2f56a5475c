"""`submariner-broker`: serve the standalone broker (a Kubernetes-API-compatible server), print CRDs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click


def _split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:6443)")
    return host.strip("[]") or "0.0.0.0", int(port)


@click.group()
def main() -> None:
    """Submariner broker: API types and a Kubernetes-API-compatible server with a durable store."""


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for the store, the CA and the admin token (created 0700).")
@click.option("--listen", default="127.0.0.1:6443", show_default=True, help="HOST:PORT to serve HTTPS on.")
@click.option("--write-kubeconfig", "kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
              help="Write (or merge into) this kubeconfig a context for the admin token.")
@click.option("--context", default="submariner-broker", show_default=True, help="Context name in the kubeconfig.")
@click.option("--service-cluster-ip-range", "service_cidr", default="10.96.0.0/12", show_default=True,
              help="CIDR Services get their ClusterIPs from.")
@click.option("--advertise-address", default=None, help="Address clients use (kubeconfig URL, discovery).")
@click.option("--tls-san", multiple=True, help="Extra name or IP for the serving certificate (repeatable).")
@click.option("--sync", "synchronous", type=click.Choice(["normal", "full"]), default="normal", show_default=True,
              help="normal: every acknowledged write survives a process kill; full: also a power loss (fsync).")
@click.option("--watch-history", default=100_000, show_default=True, type=click.IntRange(1),
              help="Events kept for watches that resume from a resourceVersion; older ones get 410 Gone.")
@click.option("--pod-exec-netns", metavar="ANNOTATION=PREFIX", default=None,
              help="Serve pods/exec (kubectl exec) by running the command in the network namespace the pod "
                   "annotation ANNOTATION names, if that name starts with PREFIX (the lab's pods).")
@click.option("--pod-logs", metavar="ANNOTATION=DIR", default=None,
              help="Serve pods/log (kubectl logs) from <dir>/<container>.log where the pod annotation ANNOTATION "
                   "names <dir>, if <dir> is under DIR (the lab's kubelets write them).")
@click.option("-v", "--verbose", is_flag=True, help="Log requests and state changes.")
def serve(data_dir: Path, listen: str, kubeconfig: Path | None, context: str, service_cidr: str,
          advertise_address: str | None, tls_san: tuple[str, ...], synchronous: str, watch_history: int,
          pod_exec_netns: str | None, pod_logs: str | None, verbose: bool) -> None:
    """Serve the Kubernetes API from a durable embedded store."""
    from .apiserver.allocators import ClusterIPAllocator
    from .apiserver.server import ServerConfig, run_server

    host, port = _split_listen(listen)
    try:
        ClusterIPAllocator(service_cidr)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--service-cluster-ip-range") from exc
    annotation, _, prefix = (pod_exec_netns or "").partition("=")
    if pod_exec_netns is not None and (not annotation or not prefix):
        raise click.BadParameter("expected ANNOTATION=PREFIX, both non-empty", param_hint="--pod-exec-netns")
    log_annotation, _, log_root = (pod_logs or "").partition("=")
    if pod_logs is not None and (not log_annotation or not log_root):
        raise click.BadParameter("expected ANNOTATION=DIR, both non-empty", param_hint="--pod-logs")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    run_server(ServerConfig(data_dir=data_dir, host=host, port=port, kubeconfig=kubeconfig, context=context,
                            service_cidr=service_cidr, advertise_address=advertise_address,
                            tls_sans=list(tls_san), synchronous=synchronous.upper(),
                            history_size=watch_history,
                            pod_exec_netns=(annotation, prefix) if pod_exec_netns else None,
                            pod_logs=(log_annotation, Path(log_root)) if pod_logs else None))


@main.command()
def crds() -> None:
    """Print every Submariner and MCS CustomResourceDefinition as one YAML stream."""
    from .api.crds import render_crds_yaml

    click.echo(render_crds_yaml(), nl=False)
