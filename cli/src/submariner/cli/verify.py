"""`subctl verify` (subctl.md §8), a compact version of upstream's E2E specs between two clusters.

ClusterA (`--context`) gets a client pod, ClusterB (`--tocontext`) a whereami server Deployment and
Service in a fresh namespace (in both clusters, as discovery needs); commands run in the client through
pods/exec. Specs: connectivity / basic-connectivity (client → server pod IP and ClusterIP across the tunnel)
and service-discovery (export, then `<svc>.<ns>.svc.clusterset.local` resolves and answers). `compliance`
and `gateway-failover` are reported as skipped. The namespaces are removed afterwards, also on failure.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import click

from submariner.broker.kube import Cluster, KubeError, NotFound, Obj
from submariner.cli import OPERATOR_NAMESPACE
from submariner.cli import manifests as m
from submariner.cli.errors import CliError, exit_on_error
from submariner.cli.kubeconf import KubeFlags, connect, resolve
from submariner.cli.options import split_list
from submariner.cli.podexec import exec_in_pod
from submariner.cli.reporter import Reporter
from submariner.cli.resources import (
    DEPLOYMENTS,
    NAMESPACES,
    PODS,
    SERVICE_EXPORTS,
    SERVICE_IMPORTS,
    SERVICES,
    SUBMARINERS,
)

VERIFICATIONS = ("connectivity", "basic-connectivity", "service-discovery", "compliance", "gateway-failover")
DEFAULT_ONLY = "connectivity,basic-connectivity,service-discovery,compliance,gateway-failover"
DISRUPTIVE = ("gateway-failover",)
SERVER_IMAGE = "cr7258/whereami:v1"
CLIENT_IMAGE = "cr7258/nettool:v1"


@dataclass
class Spec:
    name: str
    run: Callable[[], str] | None
    """Returns "" on success, else why it failed; None = skipped."""
    skip_reason: str = ""
    result: str = ""
    seconds: float = 0.0
    status: str = "skipped"


def _downward(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _answered_by_server(output: str) -> bool:
    """whereami names the pod that answered; the server pods are `verify-server-…`."""
    return "verify-server-" in output


@dataclass
class Verifier:
    a: Cluster
    b: Cluster
    namespace: str
    connection_timeout: int
    attempts: int
    operation_timeout: float
    verbose: bool
    log: Callable[[str], None]
    server_ip: str = ""
    service_ip: str = ""
    globalnet: bool = False
    created: list[tuple[Cluster, str]] = field(default_factory=list)

    # -- set-up ---------------------------------------------------------------------------------------

    def setup(self) -> None:
        for cluster in (self.a, self.b):
            cluster.resource(NAMESPACES).create({"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": self.namespace}})
            self.created.append((cluster, self.namespace))
        labels = {"app": "verify-server"}
        self.b.resource(DEPLOYMENTS).create({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "verify-server", "namespace": self.namespace, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "server", "image": SERVER_IMAGE, "ports": [{"containerPort": 80}],
                                         "env": [_downward("NAMESPACE", "metadata.namespace"),
                                                 _downward("NODE_NAME", "spec.nodeName"),
                                                 _downward("POD_NAME", "metadata.name"),
                                                 _downward("POD_IP", "status.podIP")]}]}}},
        })
        svc = self.b.resource(SERVICES).create({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "verify-server", "namespace": self.namespace},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]},
        })
        self.service_ip = str((svc.get("spec") or {}).get("clusterIP") or "")
        self.a.resource(PODS).create({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "verify-client", "namespace": self.namespace},
            "spec": {"containers": [{"name": "client", "image": CLIENT_IMAGE}]},
        })
        server = self._wait_pod(self.b, "app=verify-server")
        self.server_ip = str((server.get("status") or {}).get("podIP") or "")
        self._wait_pod(self.a, "", "verify-client")
        with contextlib.suppress(KubeError):
            cr = self.a.resource(SUBMARINERS).get(OPERATOR_NAMESPACE, m.SUBMARINER_CR)
            self.globalnet = bool((cr.get("spec") or {}).get("globalCIDR"))

    def _wait_pod(self, cluster: Cluster, selector: str, name: str = "") -> Obj:
        deadline = time.monotonic() + self.operation_timeout
        while time.monotonic() < deadline:
            pods = ([cluster.resource(PODS).get(self.namespace, name)] if name else
                    cluster.resource(PODS).list(self.namespace, label_selector=selector)[0])
            for pod in pods:
                status = pod.get("status") or {}
                ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions")
                            or [])
                if status.get("phase") == "Running" and ready and status.get("podIP"):
                    return pod
            time.sleep(1)
        raise CliError(f"pod {name or selector} in namespace {self.namespace} is not running after "
                       f"{self.operation_timeout:.0f}s")

    def teardown(self) -> None:
        for cluster, ns in self.created:
            with contextlib.suppress(KubeError):
                cluster.resource(NAMESPACES).delete("", ns)

    # -- running commands in the client ---------------------------------------------------------------

    def exec_client(self, command: list[str]) -> tuple[int, str]:
        return exec_in_pod(self.a, self.namespace, "verify-client", command, self.connection_timeout + 10)

    def attempt(self, what: str, command: list[str], check: Callable[[str], bool] = lambda _: True) -> str:
        last = ""
        for i in range(self.attempts):
            code, output = self.exec_client(command)
            if self.verbose:
                self.log(f"    [{what}] attempt {i + 1}: exit {code}: {output.strip()[:200]}")
            if code == 0 and check(output):
                return ""
            last = f"exit code {code}: {output.strip()[:300]}"
        return f"{what} failed after {self.attempts} attempt(s): {last}"

    def curl(self, target: str) -> list[str]:
        return ["curl", "-s", "-m", str(self.connection_timeout), f"http://{target}/"]

    # -- specs ----------------------------------------------------------------------------------------

    def pod_to_pod(self) -> str:
        return self.attempt(f"client pod → server pod {self.server_ip}", self.curl(self.server_ip),
                            _answered_by_server)

    def pod_to_service(self) -> str:
        return self.attempt(f"client pod → server ClusterIP {self.service_ip}", self.curl(self.service_ip),
                            _answered_by_server)

    def service_discovery(self) -> str:
        self.b.resource(SERVICE_EXPORTS).create({
            "apiVersion": SERVICE_EXPORTS.api_version, "kind": "ServiceExport",
            "metadata": {"name": "verify-server", "namespace": self.namespace}})
        deadline = time.monotonic() + self.operation_timeout
        while True:
            try:
                self.a.resource(SERVICE_IMPORTS).get(self.namespace, "verify-server")
                break
            except NotFound:
                if time.monotonic() > deadline:
                    return f"no ServiceImport verify-server in {self.namespace} on ClusterA after " \
                           f"{self.operation_timeout:.0f}s"
                time.sleep(1)
        name = f"verify-server.{self.namespace}.svc.clusterset.local"
        return self.attempt(f"client pod → {name}", self.curl(name), _answered_by_server)


def run_specs(specs: list[Spec], log: Callable[[str], None]) -> tuple[int, int, int, float]:
    start = time.monotonic()
    passed = failed = skipped = 0
    for spec in specs:
        begun = time.monotonic()
        if spec.run is None:
            spec.status, spec.result = "skipped", spec.skip_reason
            skipped += 1
            log(f"S [SKIPPED] {spec.name}: {spec.skip_reason}")
            continue
        try:
            spec.result = spec.run()
        except (KubeError, CliError) as e:
            spec.result = str(e)
        spec.seconds = time.monotonic() - begun
        if spec.result:
            spec.status = "failed"
            failed += 1
            log(f"• [FAILED] {spec.name} [{spec.seconds:.3f} seconds]\n  {spec.result}")
        else:
            spec.status = "passed"
            passed += 1
            log(f"• [PASSED] {spec.name} [{spec.seconds:.3f} seconds]")
    return passed, failed, skipped, time.monotonic() - start


def junit(specs: list[Spec], seconds: float) -> str:
    cases = []
    for s in specs:
        inner = ""
        if s.status == "failed":
            inner = f'<failure message="{escape(s.result, {chr(34): "&quot;"})}"></failure>'
        elif s.status == "skipped":
            inner = "<skipped></skipped>"
        cases.append(f'  <testcase name="{escape(s.name)}" classname="subctl verify" time="{s.seconds:.3f}">'
                     f"{inner}</testcase>")
    failures = sum(s.status == "failed" for s in specs)
    skipped = sum(s.status == "skipped" for s in specs)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="Submariner E2E suite" tests="{len(specs)}" '
            f'failures="{failures}" skipped="{skipped}" time="{seconds:.3f}">\n' + "\n".join(cases) +
            "\n</testsuite>\n")


def parse_only(only: str, disruptive: bool, interactive: bool, warn: Callable[[str], None]) -> list[str]:
    chosen = split_list([only])
    for name in chosen:
        if name not in VERIFICATIONS:
            raise CliError(f'unknown verification "{name}"')
    wanted_disruptive = [n for n in chosen if n in DISRUPTIVE]
    if wanted_disruptive and not disruptive:
        from submariner.cli.prompts import confirm

        if interactive and confirm(f"You have specified disruptive verifications ({', '.join(wanted_disruptive)}). "
                                   "Are you sure you want to run them?"):
            return chosen
        warn("Skipping disruptive tests. If you want to run them, use the --enable-disruptive flag")
        chosen = [n for n in chosen if n not in DISRUPTIVE]
    return chosen


@click.command("verify")
@click.option("--only", default=DEFAULT_ONLY, show_default=True, help="comma-separated verifications to run")
@click.option("--disruptive-tests/--no-disruptive-tests", "disruptive", default=False,
              help="run disruptive verifications like gateway-failover")
@click.option("--verbose", is_flag=True, help="produce verbose logs during connectivity verification")
@click.option("--operation-timeout", type=int, default=240, show_default=True, help="seconds per operation")
@click.option("--connection-timeout", type=click.IntRange(min=20), default=60, show_default=True,
              help="seconds per connection attempt")
@click.option("--connection-attempts", type=click.IntRange(min=1), default=2, show_default=True,
              help="attempts per connection")
@click.option("--junit-report", default="", help="write a JUnit XML report to this file")
@click.option("--packet-size", type=int, default=3000, show_default=True, help="accepted for compatibility")
@click.option("--submariner-namespace", default=OPERATOR_NAMESPACE, help="unused (compatibility)")
@click.option("-n", "--namespace", "kube_namespace", default=None,
              help="accepted for compatibility (the tests run in generated submariner-verify-* namespaces)")
@click.option("--kubeconfig", default=None, help="kubeconfig file(s)")
@click.option("--context", default=None, help="ClusterA's context")
@click.option("--toconfig", default=None, help="kubeconfig of ClusterB (default: --kubeconfig)")
@click.option("--tocontext", default=None, help="ClusterB's context")
@click.option("--extracontext", default=None, help="ClusterC's context (unused here)")
@click.pass_context
def command(ctx: click.Context, only: str, disruptive: bool, verbose: bool, operation_timeout: int,
            connection_timeout: int, connection_attempts: int, junit_report: str, packet_size: int,
            submariner_namespace: str, kube_namespace: str | None, kubeconfig: str | None, context: str | None,
            toconfig: str | None, tocontext: str | None, extracontext: str | None) -> None:
    """Run verifications between two clusters"""
    reporter = Reporter()
    root = ctx.find_root().obj
    base = root if isinstance(root, KubeFlags) else KubeFlags()
    flags_a = base.merged(KubeFlags(kubeconfig=kubeconfig, context=context))
    if not tocontext:
        click.echo("This command requires two kube contexts corresponding to the two clusters to verify.", err=True)
        click.echo(ctx.get_usage(), err=True)
        raise SystemExit(1)
    flags_b = KubeFlags(kubeconfig=toconfig or flags_a.kubeconfig, context=tocontext)
    verifier: Verifier | None = None
    try:
        chosen = parse_only(only, disruptive, sys.stdin.isatty(), reporter.warning)
        ctx_a, ctx_b = resolve(flags_a), resolve(flags_b)
        a, b = connect(flags_a, ctx_a.name), connect(flags_b, ctx_b.name)
        click.echo(f"Performing the following verifications: {', '.join(chosen)}")
        namespace = f"submariner-verify-{secrets.token_hex(3)}"
        verifier = Verifier(a, b, namespace, connection_timeout, connection_attempts, operation_timeout, verbose,
                            click.echo)
        reporter.start(f'Deploying the test workloads in namespace "{namespace}" of both clusters')
        try:
            verifier.setup()
        except KubeError as e:
            raise CliError(str(e), "Error deploying the test workloads") from None
        reporter.end()
        specs = build_specs(verifier, chosen)
        passed, failed, skipped, seconds = run_specs(specs, click.echo)
        click.echo(f"\nRan {passed + failed} of {len(specs)} Specs in {seconds:.3f} seconds")
        verdict = "SUCCESS!" if not failed else "FAIL!"
        click.echo(f"{verdict} -- {passed} Passed | {failed} Failed | 0 Pending | {skipped} Skipped")
        if junit_report:
            with open(junit_report, "w") as f:
                f.write(junit(specs, seconds))
        if failed:
            raise CliError("E2E failed")
    except CliError as e:
        exit_on_error(reporter, e)
    finally:
        if verifier is not None:
            verifier.teardown()


def build_specs(v: Verifier, chosen: list[str]) -> list[Spec]:
    specs: list[Spec] = []
    if "connectivity" in chosen or "basic-connectivity" in chosen:
        if v.globalnet:
            specs.append(Spec("[dataplane] Basic TCP connectivity to the remote pod IP", None,
                              "pod IPs are not routable with Globalnet (covered by service-discovery)"))
        else:
            specs.append(Spec("[dataplane] Basic TCP connectivity tests across clusters without discovery: "
                              "pod to remote pod", v.pod_to_pod))
            specs.append(Spec("[dataplane] Basic TCP connectivity tests across clusters without discovery: "
                              "pod to remote service ClusterIP", v.pod_to_service))
    if "service-discovery" in chosen:
        specs.append(Spec("[discovery] Test Service Discovery Across Clusters: the exported service resolves and "
                          "answers via clusterset.local", v.service_discovery))
    if "compliance" in chosen:
        specs.append(Spec("[compliance] FIPS compliance of the cable driver", None, "not applicable to this build"))
    if "gateway-failover" in chosen:
        specs.append(Spec("[redundancy] Gateway fail-over", None, "not implemented in this subctl"))
    return specs
