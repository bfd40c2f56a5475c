"""`subctl deploy-broker` (subctl.md §3.1, §5, §6): the broker namespace, RBAC, CRDs, Broker CR, the file.

No operator: the CRDs are installed directly (the upstream operator's Broker controller would do it).
Every flag is validated before the first write, so a bad flag never leaves a half-made broker.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import click

from submariner.broker import brokerinfo
from submariner.broker.kube import AlreadyExists, ClientFactory, KubeError, NotFound, Obj
from submariner.cli import BROKER_NAMESPACE
from submariner.cli import manifests as m
from submariner.cli.apply import apply, apply_all, wait_for_crds
from submariner.cli.cidr import (
    DEFAULT_CLUSTERSET_IP_RANGE,
    DEFAULT_GLOBALNET_CLUSTER_SIZE,
    DEFAULT_GLOBALNET_RANGE,
    CIDRError,
    validate_cluster_size,
    validate_range,
)
from submariner.cli.errors import CliError, exit_on_error
from submariner.cli.kubeconf import KubeFlags, connect, resolve
from submariner.cli.options import kube_options, split_list
from submariner.cli.reporter import Reporter
from submariner.cli.resources import CONFIGMAPS, NAMESPACES, SECRETS

BROKER_INFO_FILE = "broker-info.subm"
VALID_COMPONENTS = ("service-discovery", "connectivity")
TOKEN_WAIT_SECONDS = 30.0


def validate_components(components: list[str]) -> list[str]:
    if not components:
        raise CliError("at least one component must be provided for deployment (--components)")
    for c in components:
        if c not in VALID_COMPONENTS:
            raise CliError(f"unknown component: {c}")
    return sorted(set(components))


def find_token_secret(kube: ClientFactory, ns: str, account: str) -> Obj | None:
    secrets, _ = kube.resource(SECRETS).list(ns)
    for secret in sorted(secrets, key=lambda s: s["metadata"].get("creationTimestamp") or ""):
        annotations = secret["metadata"].get("annotations") or {}
        if secret.get("type") == m.SA_TOKEN_TYPE and annotations.get(m.SA_NAME_ANNOTATION) == account:
            return secret
    return None


def ensure_token_secret(kube: ClientFactory, ns: str, account: str, timeout: float = TOKEN_WAIT_SECONDS) -> Obj:
    """The account's token Secret (created if missing), once the token controller has filled it."""
    secret = find_token_secret(kube, ns, account)
    if secret is None:
        secret = kube.resource(SECRETS).create(m.token_secret(account, ns))
    deadline = time.monotonic() + timeout
    while not (secret.get("data") or {}).get("token"):
        if time.monotonic() > deadline:
            raise CliError(f"the token Secret {ns}/{secret['metadata']['name']} of service account {account} "
                           f"got no token within {timeout:.0f}s (is the token controller running?)")
        time.sleep(0.2)
        secret = kube.resource(SECRETS).get(ns, secret["metadata"]["name"])
    return secret


def create_if_absent(kube: ClientFactory, obj: Obj) -> bool:
    client = kube.resource(CONFIGMAPS)
    meta = obj["metadata"]
    try:
        client.get(meta["namespace"], meta["name"])
        return False
    except NotFound:
        pass
    with contextlib.suppress(AlreadyExists):
        client.create(obj)
        return True
    return False


def client_token_for_file(secret: Obj) -> dict[str, Any]:
    """The token Secret as stored, minus server bookkeeping nobody reads (managedFields)."""
    out = {k: v for k, v in secret.items() if k in ("metadata", "data", "type")}
    out["metadata"] = {k: v for k, v in secret["metadata"].items() if k != "managedFields"}
    return out


def run(kube_flags: KubeFlags, *, settings: m.BrokerSettings, psk_from: str, broker_url: str,
        reporter: Reporter, output_dir: Path = Path(".")) -> None:
    # Everything the user typed is checked before anything is written.
    psk_secret = brokerinfo.new_psk_secret()
    if psk_from:
        try:
            previous = brokerinfo.read_file(psk_from)
        except (OSError, brokerinfo.BrokerInfoError) as e:
            raise CliError(f"{e}", "Error reading the IPsec PSK from --ipsec-psk-from") from None
        if previous.ipsec_psk is None:
            raise CliError(f"{psk_from} has no IPSecPSK", "Error reading the IPsec PSK from --ipsec-psk-from")
        psk_secret = previous.ipsec_psk
    context = resolve(kube_flags)
    kube = connect(kube_flags, context.name)
    url = broker_url or context.server or kube.host
    if "://" not in url:
        url = f"https://{url}"
    try:
        with contextlib.suppress(NotFound):
            kube.resource(NAMESPACES).get("", settings.namespace)
    except KubeError as e:
        raise CliError(f"{e} (check --context/--kubeconfig)",
                       f'Error connecting to the cluster of context "{context.name}"') from None

    ns = settings.namespace
    reporter.start("Setting up broker RBAC")
    try:
        apply_all(kube, m.broker_rbac_objects(settings))
        secret = ensure_token_secret(kube, ns, m.BROKER_ADMIN)
    except (KubeError, CliError) as e:
        raise CliError(str(e), "Error setting up broker RBAC") from None
    reporter.end()

    reporter.start("Installing the Submariner CRDs (no operator: subctl deploys the components directly)")
    try:
        created = [obj for op, obj in apply_all(kube, m.crds()) if op == "created"]
        wait_for_crds(kube, m.crds())
    except (KubeError, CliError) as e:
        raise CliError(str(e), "Error installing the CRDs") from None
    if created:
        reporter.success(f"Created {len(created)} CRDs")
    reporter.end()

    reporter.start("Deploying the broker")
    try:
        apply(kube, m.broker_cr(settings))
        create_if_absent(kube, m.globalnet_configmap(settings))
        create_if_absent(kube, m.clusterset_ip_configmap(settings))
    except KubeError as e:
        raise CliError(str(e), "Error deploying the broker") from None
    reporter.end()

    target = output_dir / BROKER_INFO_FILE
    reporter.start(f'Saving broker info to file "{BROKER_INFO_FILE}"')
    info = brokerinfo.BrokerInfo(
        broker_url=url,
        client_token=client_token_for_file(secret),
        ipsec_psk=psk_secret,
        service_discovery="service-discovery" in settings.components,
        components=list(settings.components),
        custom_domains=list(settings.custom_domains) or None,
    )
    try:
        backup = brokerinfo.write_file(target, info)
    except OSError as e:
        raise CliError(str(e), "Error saving the broker info") from None
    if backup is not None:
        reporter.success(f'Backed up previous file "{BROKER_INFO_FILE}" to "{backup.name}"')
    reporter.end()


@click.command("deploy-broker")
@click.option("--globalnet/--no-globalnet", default=False, help="enable Globalnet (overlapping CIDRs)")
@click.option("--globalnet-cidr-range", default=DEFAULT_GLOBALNET_RANGE, show_default=True,
              help="supernet for per-cluster GlobalCIDRs")
@click.option("--globalnet-cluster-size", type=int, default=DEFAULT_GLOBALNET_CLUSTER_SIZE, show_default=True,
              help="default global IPs per cluster (rounded up to a power of 2)")
@click.option("--ipsec-psk-from", default="", help="copy the IPsec PSK from this broker-info file (default: new PSK)")
@click.option("--custom-domains", multiple=True, help="extra DNS domains (comma list, repeatable)")
@click.option("--components", multiple=True, default=("service-discovery,connectivity",), show_default=True,
              help="components to deploy: service-discovery, connectivity")
@click.option("--repository", default="quay.io/submariner", show_default=True, help="image repository")
@click.option("--version", "image_version", default="", help="image version (default: subctl's)")
@click.option("--operator-debug/--no-operator-debug", default=False, help="accepted for compatibility (no operator)")
@click.option("--broker-url", default="", help="broker API URL written to the file (default: the kubeconfig's)")
@click.option("--enable-clusterset-ip/--no-enable-clusterset-ip", default=False,
              help="clusterset VIPs for exported services by default")
@click.option("--clusterset-ip-cidr-range", default=DEFAULT_CLUSTERSET_IP_RANGE, show_default=True,
              help="supernet for per-cluster clusterset-IP CIDRs")
@click.option("-n", "--namespace", default=BROKER_NAMESPACE, show_default=True, help="broker namespace")
@click.option("--http-proxy", default="", help="accepted for compatibility (no operator runs on the broker)")
@click.option("--https-proxy", default="", help="accepted for compatibility (no operator runs on the broker)")
@click.option("--no-proxy", default="", help="accepted for compatibility (no operator runs on the broker)")
@kube_options
def command(kube: KubeFlags, globalnet: bool, globalnet_cidr_range: str, globalnet_cluster_size: int,
            ipsec_psk_from: str, custom_domains: tuple[str, ...], components: tuple[str, ...], repository: str,
            image_version: str, operator_debug: bool, broker_url: str, enable_clusterset_ip: bool,
            clusterset_ip_cidr_range: str, namespace: str, http_proxy: str, https_proxy: str, no_proxy: str) -> None:
    """Deploys the broker"""
    reporter = Reporter()
    try:
        comps = validate_components(split_list(components))
        gn_range = validate_range(globalnet_cidr_range, "Globalnet CIDR range")
        size = validate_cluster_size(globalnet_cluster_size, gn_range)
        validate_range(clusterset_ip_cidr_range, "clusterset IP CIDR range")
        settings = m.BrokerSettings(
            namespace=namespace, components=tuple(comps), custom_domains=tuple(split_list(custom_domains)),
            globalnet=globalnet, globalnet_cidr_range=str(gn_range), globalnet_cluster_size=size,
            clusterset_ip=enable_clusterset_ip, clusterset_ip_cidr_range=clusterset_ip_cidr_range,
        )
        run(kube, settings=settings, psk_from=ipsec_psk_from, broker_url=broker_url, reporter=reporter)
    except CIDRError as e:
        exit_on_error(reporter, e, "Invalid deploy-broker settings")
    except CliError as e:
        exit_on_error(reporter, e)
