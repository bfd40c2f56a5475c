"""`subctl benchmark throughput|latency` (subctl.md §8): iperf3 / netperf between test pods.

Two clusters: gateway node → gateway node, then non-gateway → non-gateway (one cluster: non-gateway →
gateway). The tools run in the pods through pods/exec, with upstream's arguments; the reports are
printed as the tools print them. Where the image has no netperf, latency is measured by `netprobe`'s
TCP_RR (same transactions, same CSV, 5 s). Test namespaces are removed afterwards, also on failure.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import click

from submariner.broker.api.submariner import GLOBAL_INGRESS_IPS
from submariner.broker.kube import Cluster, KubeError, Obj
from submariner.cli import OPERATOR_NAMESPACE
from submariner.cli import manifests as m
from submariner.cli.errors import CliError, exit_on_error
from submariner.cli.kubeconf import KubeFlags, connect, resolve
from submariner.cli.netprobe import bootstrap
from submariner.cli.podexec import exec_in_pod
from submariner.cli.reporter import Reporter
from submariner.cli.resources import NAMESPACES, PODS, SERVICE_EXPORTS, SERVICES, SUBMARINERS

TOOL_IMAGE = "cr7258/nettool:v1"
IPERF_PORT = 5201
NETPERF_PORT = 12865
NETPERF_OUTPUTS = "min_latency,mean_latency,max_latency,stddev_latency,transaction_rate"
LATENCY_SECONDS = 5.0
"""How long the Python TCP_RR runs (netperf's default is 10 s)."""


def _placement(gateway: bool) -> Obj:
    """A pod on a gateway node, or on a node without the gateway label."""
    operator = "In" if gateway else "DoesNotExist"
    expr: Obj = {"key": m.GATEWAY_LABEL, "operator": operator}
    if gateway:
        expr["values"] = ["true"]
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [expr]}]}}}, "tolerations": [{"operator": "Exists"}]}


@dataclass
class Bench:
    timeout: float
    verbose: bool
    namespaces: list[tuple[Cluster, str]] = field(default_factory=list)

    def namespace(self, cluster: Cluster) -> str:
        for c, ns in self.namespaces:
            if c is cluster:
                return ns
        ns = f"submariner-benchmark-{secrets.token_hex(3)}"
        cluster.resource(NAMESPACES).create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        self.namespaces.append((cluster, ns))
        return ns

    def pod(self, cluster: Cluster, name: str, gateway: bool) -> Obj:
        ns = self.namespace(cluster)
        cluster.resource(PODS).create({"apiVersion": "v1", "kind": "Pod", "metadata": {
                                           "name": name, "namespace": ns, "labels": {"app": name}},
                                       "spec": {"containers": [{"name": "tool", "image": TOOL_IMAGE}],
                                                **_placement(gateway)}})
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            pod = cluster.resource(PODS).get(ns, name)
            status = pod.get("status") or {}
            if status.get("phase") == "Running" and status.get("podIP"):
                return pod
            time.sleep(1)
        where = "a gateway node" if gateway else "a non-gateway node"
        raise CliError(f"pod {ns}/{name} did not start on {where} within {self.timeout:.0f}s")

    def log(self, pod: Obj, command: list[str]) -> None:
        """With --verbose: which command runs where (the shipped netprobe shown by name)."""
        if self.verbose:
            shown = ["netprobe", *command[3:]] if command[:2] == ["python3", "-c"] else command
            click.echo(f"[{pod['metadata']['name']} on {(pod.get('spec') or {}).get('nodeName')}] "
                       f"{' '.join(shown)}", err=True)

    def run(self, cluster: Cluster, pod: Obj, command: list[str], timeout: float = 120) -> str:
        self.log(pod, command)
        code, out = exec_in_pod(cluster, pod["metadata"]["namespace"], pod["metadata"]["name"], command, timeout)
        if code != 0:
            raise CliError(f"{' '.join(command)} in pod {pod['metadata']['name']} failed (exit {code}): "
                           f"{out.strip()[:400]}")
        return out

    def run_until_reachable(self, cluster: Cluster, pod: Obj, command: list[str]) -> str:
        """`run`, repeated while the server refuses connections: a new global IP's kube-proxy rules and a new
        Service's endpoints take a moment to appear (the refusal never reached the one-shot server)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return self.run(cluster, pod, command)
            except CliError as e:
                if "Connection refused" not in str(e) or time.monotonic() > deadline:
                    raise
            time.sleep(1.0)

    @contextlib.contextmanager
    def serving(self, cluster: Cluster, pod: Obj, command: list[str]) -> Iterator[None]:
        """Run a server in the pod (bounded by `timeout`, so nothing outlives the test) while the body runs."""
        bounded = ["timeout", str(int(self.timeout)), *command]
        self.log(pod, command)
        worker = threading.Thread(target=_quiet, daemon=True, args=(
            exec_in_pod, cluster, pod["metadata"]["namespace"], pod["metadata"]["name"], bounded, self.timeout + 5))
        worker.start()
        time.sleep(1.0)  # let the server bind before the client connects
        try:
            yield
        finally:
            worker.join(self.timeout + 10)

    def teardown(self) -> None:
        for cluster, ns in self.namespaces:
            with contextlib.suppress(KubeError):
                cluster.resource(NAMESPACES).delete("", ns)


def _quiet(fn: Callable[..., object], *args: object) -> None:
    with contextlib.suppress(Exception):
        fn(*args)


def _cluster_id(cluster: Cluster, fallback: str) -> str:
    with contextlib.suppress(KubeError):
        cr = cluster.resource(SUBMARINERS).get(OPERATOR_NAMESPACE, m.SUBMARINER_CR)
        return str((cr.get("spec") or {}).get("clusterID") or fallback)
    return fallback


def _globalnet(cluster: Cluster) -> bool:
    with contextlib.suppress(KubeError):
        cr = cluster.resource(SUBMARINERS).get(OPERATOR_NAMESPACE, m.SUBMARINER_CR)
        return bool((cr.get("spec") or {}).get("globalCIDR"))
    return False


def global_ingress_ip(bench: Bench, cluster: Cluster, server: Obj, port: int) -> str:
    """With Globalnet pod IPs overlap, so the client targets the server's global IP: a Service for the pod,
    exported, and the GlobalIngressIP Globalnet allocates for it (upstream's benchmark does the same)."""
    ns, name = server["metadata"]["namespace"], server["metadata"]["name"]
    cluster.resource(SERVICES).create({"apiVersion": "v1", "kind": "Service",
                                       "metadata": {"name": name, "namespace": ns},
                                       "spec": {"selector": {"app": name},
                                                "ports": [{"port": port, "targetPort": port, "protocol": "TCP"}]}})
    cluster.resource(SERVICE_EXPORTS).create({"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
                                              "metadata": {"name": name, "namespace": ns}})
    deadline = time.monotonic() + bench.timeout
    while time.monotonic() < deadline:
        for giip in cluster.resource(GLOBAL_INGRESS_IPS).list(ns)[0]:
            if ((giip.get("spec") or {}).get("serviceRef") or {}).get("name") == name and \
                    (giip.get("status") or {}).get("allocatedIP"):
                return str(giip["status"]["allocatedIP"])
        time.sleep(0.5)
    raise CliError(f"no GlobalIngressIP was allocated for the exported Service {ns}/{name} within "
                   f"{bench.timeout:.0f}s (is Globalnet running?)")


def throughput(bench: Bench, a: Cluster, b: Cluster | None, ids: tuple[str, str]) -> None:
    pairs = [(True, True), (False, False)] if b is not None else [(False, True)]
    target = b if b is not None else a
    globalnet = b is not None and _globalnet(a)
    for i, (client_gw, server_gw) in enumerate(pairs):
        server = bench.pod(target, f"iperf-server-{i}", server_gw)
        client = bench.pod(a, f"iperf-client-{i}", client_gw)
        kind = {True: "Gateway", False: "Non-Gateway"}
        ip = global_ingress_ip(bench, target, server, IPERF_PORT) if globalnet else server["status"]["podIP"]
        click.echo(f'Performing throughput tests from {kind[client_gw]} pod on cluster "{ids[0]}" to '
                   f'{kind[server_gw]} pod on cluster "{ids[1]}"')
        client_cmd = ["iperf3", "-w", "256K", "--connect-timeout", str(int(bench.timeout * 1000)), "-P", "10", "-p",
                      str(IPERF_PORT), "-c", ip]
        with bench.serving(target, server, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)]):
            report = bench.run_until_reachable(a, client, client_cmd)
        click.echo(report)


def latency(bench: Bench, a: Cluster, b: Cluster | None, ids: tuple[str, str]) -> None:
    if b is not None and _globalnet(a):
        click.echo("Latency test is not supported with Globalnet enabled, skipping the test...")
        return
    pairs = [(True, True), (False, False)] if b is not None else [(False, True)]
    target = b if b is not None else a
    for i, (client_gw, server_gw) in enumerate(pairs):
        server = bench.pod(target, f"netserver-{i}", server_gw)
        client = bench.pod(a, f"netperf-{i}", client_gw)
        kind = {True: "Gateway", False: "Non-Gateway"}
        click.echo(f'Performing latency tests from {kind[client_gw]} pod on cluster "{ids[0]}" to '
                   f'{kind[server_gw]} pod on cluster "{ids[1]}"')
        ip = server["status"]["podIP"]
        if has_netperf(a, client) and has_netperf(target, server, "netserver"):
            with bench.serving(target, server, ["netserver", "-D"]):
                out = bench.run(a, client, ["netperf", "-H", ip, "-t", "TCP_RR", "--", "-o", NETPERF_OUTPUTS])
        else:  # netperf is not packaged here: the same TCP_RR measurement in Python, same CSV
            server_cmd = [*bootstrap(), "rr-server", "--once", "--port", str(NETPERF_PORT), "--timeout",
                          str(int(bench.timeout))]
            with bench.serving(target, server, server_cmd):
                out = bench.run(a, client, [*bootstrap(), "rr-client", "--host", ip, "--port", str(NETPERF_PORT),
                                            "--duration", str(LATENCY_SECONDS), "--connect-timeout", "10"],
                                timeout=LATENCY_SECONDS + 30)
        click.echo(format_latency(out))


def has_netperf(cluster: Cluster, pod: Obj, tool: str = "netperf") -> bool:
    """Whether the pod's image provides netperf's `tool` (then upstream's commands run unchanged)."""
    code, _ = exec_in_pod(cluster, pod["metadata"]["namespace"], pod["metadata"]["name"],
                          ["sh", "-c", f"command -v {tool}"], 30)
    return code == 0


def format_latency(netperf_output: str) -> str:
    """netperf's CSV (header line, value line after the banner) as `<header>:\\t<value>` lines."""
    lines = [line for line in netperf_output.splitlines() if line.strip()]
    if len(lines) < 2:
        raise CliError(f"unexpected netperf output: {netperf_output.strip()[:200]}")
    headers, values = lines[-2].split(","), lines[-1].split(",")
    return "\n".join(f"{h.strip()}:\t{v.strip()}" for h, v in zip(headers, values, strict=False))


def _run(kind: str, context: str | None, kubeconfig: str | None, tocontext: str | None, toconfig: str | None,
         verbose: bool, timeout: float) -> None:
    reporter = Reporter()
    root = click.get_current_context().find_root().obj
    base = root if isinstance(root, KubeFlags) else KubeFlags()
    flags_a = base.merged(KubeFlags(kubeconfig=kubeconfig, context=context))
    bench = Bench(timeout, verbose)
    try:
        ctx_a = resolve(flags_a)
        a = connect(flags_a, ctx_a.name)
        b: Cluster | None = None
        id_b = id_a = _cluster_id(a, ctx_a.cluster)
        if tocontext:
            flags_b = KubeFlags(kubeconfig=toconfig or flags_a.kubeconfig, context=tocontext)
            ctx_b = resolve(flags_b)
            b = connect(flags_b, ctx_b.name)
            id_b = _cluster_id(b, ctx_b.cluster)
        try:
            (throughput if kind == "throughput" else latency)(bench, a, b, (id_a, id_b))
        except KubeError as e:
            raise CliError(str(e), f"Error running the {kind} benchmark") from None
    except CliError as e:
        exit_on_error(reporter, e, e.message or f"Error running the {kind} benchmark")
    finally:
        bench.teardown()


def _options(f: click.decorators.FC) -> click.decorators.FC:
    for option in reversed([
        click.option("--kubeconfig", default=None, help="kubeconfig file(s)"),
        click.option("--context", default=None, help="the first cluster's context"),
        click.option("--toconfig", default=None, help="kubeconfig of the second cluster"),
        click.option("--tocontext", default=None, help="the second cluster's context (none: intra-cluster)"),
        click.option("--verbose", is_flag=True, help="produce verbose logs during the benchmark"),
        click.option("--timeout", type=float, default=120.0, show_default=True, help="seconds to wait per pod"),
    ]):
        f = option(f)
    return f


@click.group("benchmark")
def benchmark_group() -> None:
    """Benchmark tests"""


@benchmark_group.command("throughput")
@_options
def throughput_command(kubeconfig: str | None, context: str | None, toconfig: str | None, tocontext: str | None,
                       verbose: bool, timeout: float) -> None:
    """Benchmark throughput"""
    _run("throughput", context, kubeconfig, tocontext, toconfig, verbose, timeout)


@benchmark_group.command("latency")
@_options
def latency_command(kubeconfig: str | None, context: str | None, toconfig: str | None, tocontext: str | None,
                    verbose: bool, timeout: float) -> None:
    """Benchmark latency"""
    _run("latency", context, kubeconfig, tocontext, toconfig, verbose, timeout)
