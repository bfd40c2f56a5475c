"""`sublab`: kind's command line for clusters made of network namespaces.

The verbs and flags are kind's (`create cluster --config`, `delete clusters`, `get clusters`, ...), so a
walkthrough written for kind runs with `kind` → `sublab` and contexts `kind-<name>` → `lab-<name>`.
Progress and errors go to stderr (as kind's do); stdout carries only what scripts read.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
import yaml
from rich.console import Console

from . import state
from .config import DEFAULT_CLUSTER_NAME, ConfigError, parse_config, validate_name
from .lifecycle import (
    PODS,
    LabError,
    client,
    create_cluster,
    delete_cluster,
    parse_duration,
    user_kubeconfig,
)
from .names import NETNS_ANNOTATION, Instance

err = Console(stderr=True, highlight=False)


def _default_name() -> str:
    return os.environ.get("SUBLAB_CLUSTER_NAME") or DEFAULT_CLUSTER_NAME


def _fail(message: str) -> None:
    err.print(f"[red]ERROR:[/red] {message}", soft_wrap=True)
    sys.exit(1)


def _require_root() -> None:
    if os.geteuid() != 0:
        _fail("sublab needs root (it creates network namespaces); run it with sudo")


def _instance() -> Instance:
    return Instance.from_env()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (to stderr).")
def main(verbose: bool) -> None:
    """sublab creates Kubernetes clusters made of Linux network namespaces (kind's commands, no Docker).

    State lives in $SUBLAB_HOME (default /var/lib/sublab); contexts are named lab-<cluster>.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s %(message)s")


# ----------------------------------------------------------------------------------- create


@main.group()
def create() -> None:
    """Create a cluster."""


@create.command("cluster")
@click.option("--config", "config_path", default=None,
              help="A kind.x-k8s.io/v1alpha4 Cluster config file, or - for stdin.")
@click.option("--name", default=None, help="Cluster name (overrides the config's; default $SUBLAB_CLUSTER_NAME "
                                           "or 'sublab').")
@click.option("--wait", "wait_text", default="60s", show_default=True,
              help="How long to wait for the cluster DNS pods to be Running (0: do not wait for them).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Kubeconfig to add the lab-<name> context to (default $KUBECONFIG or ~/.kube/config).")
@click.option("--image", default=None, hidden=True, help="Accepted for kind compatibility; ignored.")
@click.option("--retain", is_flag=True, hidden=True, help="Accepted for kind compatibility; ignored.")
def create_cluster_cmd(config_path: str | None, name: str | None, wait_text: str, kubeconfig: Path | None,
                       image: str | None, retain: bool) -> None:
    """Create a cluster from a kind config: one network namespace per node, an API server, DNS."""
    try:
        wait = parse_duration(wait_text)
    except ValueError as exc:
        _fail(f"--wait: {exc}")
    source = config_path or "(defaults)"
    text = ""
    if config_path == "-":
        text, source = sys.stdin.read(), "stdin"
    elif config_path:
        try:
            text = Path(config_path).read_text()
        except OSError as exc:
            _fail(f"cannot read config {config_path}: {exc.strerror}")
    try:
        config = parse_config(text, name=name, default_name=_default_name(), source=source)
    except ConfigError as exc:
        _fail(str(exc))
    _require_root()
    instance = _instance()
    context = instance.context(config.name)
    err.print(f'Creating cluster "{config.name}" ...')
    if config.ignored:
        err.print(f" • Accepted and ignored (container-only settings): {', '.join(config.ignored)}")
    try:
        create_cluster(instance, config, wait=wait, kubeconfig=kubeconfig,
                       say=lambda line: err.print(f" [green]✓[/green] {line}"))
    except LabError as exc:
        _fail(str(exc))
    except Exception as exc:
        _fail(f'creating cluster "{config.name}" failed: {exc}')
    err.print(f'Set kubectl context to "{context}"')
    err.print("You can now use your cluster with:\n")
    err.print(f"kubectl cluster-info --context {context}\n")


# ----------------------------------------------------------------------------------- delete


@main.group()
def delete() -> None:
    """Delete clusters."""


@delete.command("cluster")
@click.option("--name", default=None, help="Cluster name (default $SUBLAB_CLUSTER_NAME or 'sublab').")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Kubeconfig to remove the lab-<name> context from.")
def delete_cluster_cmd(name: str | None, kubeconfig: Path | None) -> None:
    """Delete a cluster (also a half-built or crashed one)."""
    _delete([name or _default_name()], kubeconfig)


@delete.command("clusters")
@click.argument("names", nargs=-1)
@click.option("-A", "--all", "everything", is_flag=True, help="Delete every cluster of this lab.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Kubeconfig to remove the lab-<name> contexts from.")
def delete_clusters_cmd(names: tuple[str, ...], everything: bool, kubeconfig: Path | None) -> None:
    """Delete the named clusters (or all with --all)."""
    if everything:
        names = tuple(state.cluster_names(_instance()))
    elif not names:
        _fail("name the clusters to delete, or use --all")
    _delete(list(names), kubeconfig)
    if everything:
        err.print(f"Deleted clusters: {list(names)}")


def _delete(names: list[str], kubeconfig: Path | None) -> None:
    for name in names:
        try:
            validate_name(name)
        except ConfigError as exc:
            _fail(str(exc))
    _require_root()
    instance = _instance()
    for name in names:
        err.print(f'Deleting cluster "{name}" ...')
        try:
            delete_cluster(instance, name, kubeconfig=kubeconfig)
        except Exception as exc:
            _fail(f'deleting cluster "{name}" failed: {exc}; run the delete again to finish it')


# ----------------------------------------------------------------------------------- get


@main.group()
def get() -> None:
    """Get clusters, nodes, kubeconfig."""


@get.command("clusters")
def get_clusters() -> None:
    """List the lab's clusters."""
    names = state.cluster_names(_instance())
    if not names:
        err.print("No sublab clusters found.")
    for name in names:
        click.echo(name)


@get.command("nodes")
@click.option("--name", default=None, help="Cluster name.")
def get_nodes(name: str | None) -> None:
    """List a cluster's nodes."""
    cluster = _load(name or _default_name())
    for node in cluster.nodes:
        click.echo(node.name)


@get.command("kubeconfig")
@click.option("--name", default=None, help="Cluster name.")
def get_kubeconfig(name: str | None) -> None:
    """Print a cluster's kubeconfig."""
    cluster = _load(name or _default_name())
    path = state.paths(_instance(), cluster.name).kubeconfig
    try:
        click.echo(path.read_text(), nl=False)
    except OSError:
        _fail(f'cluster "{cluster.name}" has no kubeconfig yet (is it running?)')


@main.command("kubeconfig")
@click.option("--name", default=None, help="One cluster's kubeconfig instead of the lab's (all contexts).")
def kubeconfig_path(name: str | None) -> None:
    """Print the path of the lab kubeconfig (contexts lab-<name>)."""
    instance = _instance()
    if name:
        cluster = _load(name)
        click.echo(str(state.paths(instance, cluster.name).kubeconfig))
    else:
        click.echo(str(instance.kubeconfig))


def _load(name: str) -> state.ClusterState:
    cluster = state.load(_instance(), name)
    if cluster is None:
        _fail(f'unknown cluster "{name}"; see: sublab get clusters')
        raise AssertionError("unreachable")
    return cluster


# ----------------------------------------------------------------------------------- exec


def _current_context() -> str:
    path = user_kubeconfig()
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return ""
    return str(doc.get("current-context") or "") if isinstance(doc, dict) else ""


@main.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--context", default=None, help="lab-<cluster> (default: the kubeconfig's current context).")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-i", "--stdin", "_stdin", is_flag=True, help="Accepted like kubectl's (the terminal is inherited).")
@click.option("-t", "--tty", "_tty", is_flag=True, help="Accepted like kubectl's (the terminal is inherited).")
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(context: str | None, namespace: str, _stdin: bool, _tty: bool, pod: str,
             command: tuple[str, ...]) -> None:
    """Run COMMAND inside POD's network namespace, with the pod's resolv.conf (sublab exec POD -- CMD...)."""
    instance = _instance()
    context = context or _current_context()
    prefix = instance.context("")
    if not context.startswith(prefix):
        _fail(f"context {context!r} is not a lab context; use --context {prefix}<cluster>")
    cluster = _load(context[len(prefix):])
    kube = client(instance, cluster.name)
    try:
        obj = kube.resource(PODS).get(namespace, pod)
    except Exception as exc:
        _fail(f"pod {namespace}/{pod} in {context}: {getattr(exc, 'message', exc)}")
        raise AssertionError("unreachable") from exc
    finally:
        kube.close()
    netns = ((obj.get("metadata") or {}).get("annotations") or {}).get(NETNS_ANNOTATION, "")
    phase = (obj.get("status") or {}).get("phase", "Unknown")
    if not netns:
        _fail(f"pod {namespace}/{pod} has no network namespace yet (phase {phase}); wait until it is Running")
    if not instance.owns_netns(cluster.name, netns):
        _fail(f"pod {namespace}/{pod}: namespace {netns!r} does not belong to cluster {cluster.name!r}")
    _require_root()
    argv = list(command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        _fail("no command given: sublab exec POD -- CMD...")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp("ip", ["ip", "netns", "exec", netns, *argv])


@main.command("version")
def version() -> None:
    """Print the version."""
    click.echo("sublab v0.1.0 (kind.x-k8s.io/v1alpha4 configs; clusters from network namespaces)")


if __name__ == "__main__":
    main()
