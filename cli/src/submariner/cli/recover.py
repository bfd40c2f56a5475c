"""`subctl recover-broker-info` (subctl.md §5): rebuild a lost broker-info.subm from a joined cluster.

The Submariner CR holds the broker URL, namespace and PSK; the admin token Secret is read from the broker
namespace on this cluster, or else (with a warning) from the broker the CR points at.
"""

from __future__ import annotations

import base64

import click

from submariner.broker import brokerinfo
from submariner.broker.kube import ClientFactory, Cluster, KubeError, NotFound, Obj
from submariner.cli import BROKER_NAMESPACE, OPERATOR_NAMESPACE
from submariner.cli import manifests as m
from submariner.cli.deploy_broker import BROKER_INFO_FILE, client_token_for_file, find_token_secret
from submariner.cli.errors import CliError, exit_on_error
from submariner.cli.kubeconf import KubeFlags, connect, resolve
from submariner.cli.options import kube_options
from submariner.cli.reporter import Reporter
from submariner.cli.resources import BROKERS, SERVICE_DISCOVERIES, SUBMARINERS


def _cr(kube: ClientFactory) -> Obj:
    for res, name in ((SUBMARINERS, m.SUBMARINER_CR), (SERVICE_DISCOVERIES, m.SERVICE_DISCOVERY_CR)):
        try:
            return kube.resource(res).get(OPERATOR_NAMESPACE, name)
        except NotFound:
            continue
    raise CliError("this cluster has no Submariner or ServiceDiscovery resource: it has not joined a broker "
                   "(use --context to pick a joined cluster)", "Error retrieving the Submariner resource")


def run(kube_flags: KubeFlags, broker_url: str, reporter: Reporter) -> None:
    context = resolve(kube_flags)
    kube = connect(kube_flags, context.name)
    reporter.start("Retrieving the Submariner resource")
    try:
        cr = _cr(kube)
    except KubeError as e:
        raise CliError(str(e), "Error retrieving the Submariner resource") from None
    spec = cr.get("spec") or {}
    ns = str(spec.get("brokerK8sRemoteNamespace") or BROKER_NAMESPACE)
    reporter.end()

    reporter.start("Retrieving the broker information")
    source: ClientFactory = kube
    try:
        kube.resource(BROKERS).get(ns, m.BROKER_CR_NAME)
    except (NotFound, KubeError):
        reporter.warning("Broker not found. Trying to connect to the Broker installed on a different cluster")
        ca = base64.b64decode(spec["brokerK8sCA"]) if spec.get("brokerK8sCA") else None
        source = Cluster.from_token(f"https://{spec.get('brokerK8sApiServer')}",
                                    str(spec.get("brokerK8sApiServerToken")), ca_data=ca,
                                    insecure=bool(spec.get("brokerK8sInsecure")), name="broker")
    try:
        secret = find_token_secret(source, ns, m.BROKER_ADMIN)
    except KubeError as e:
        raise CliError(f"{e} (the cluster's own broker token may not read the admin token; run this against the "
                       "broker cluster's context)", "Error retrieving the broker admin token") from None
    if secret is None:
        raise CliError(f"no token Secret of service account {m.BROKER_ADMIN} in namespace {ns}",
                       "Error retrieving the broker admin token")
    reporter.end()

    url = broker_url or f"https://{spec.get('brokerK8sApiServer')}"
    components = ["service-discovery"] + (["connectivity"] if cr.get("kind") == "Submariner" else [])
    psk = spec.get("ceIPSecPSK")
    info = brokerinfo.BrokerInfo(
        broker_url=url, client_token=client_token_for_file(secret),
        ipsec_psk=({"metadata": {"name": m.PSK_SECRET, "creationTimestamp": None}, "data": {"psk": psk}}
                   if psk else None),
        service_discovery=True, components=components, custom_domains=list(spec.get("customDomains") or []) or None,
    )
    reporter.start(f'Saving broker info to file "{BROKER_INFO_FILE}"')
    try:
        backup = brokerinfo.write_file(BROKER_INFO_FILE, info)
    except OSError as e:
        raise CliError(str(e), "Error saving the broker info") from None
    if backup is not None:
        reporter.success(f'Backed up previous file "{BROKER_INFO_FILE}" to "{backup.name}"')
    reporter.end()


@click.command("recover-broker-info")
@click.option("--broker-url", default="", help="broker API URL for the file (default: the one joined clusters use)")
@kube_options
def command(kube: KubeFlags, broker_url: str) -> None:
    """Recovers the broker-info.subm file from the installed Broker"""
    reporter = Reporter()
    try:
        run(kube, broker_url, reporter)
    except CliError as e:
        exit_on_error(reporter, e)
