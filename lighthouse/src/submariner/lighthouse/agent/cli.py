"""`lighthouse-agent`: the service-discovery daemon of one cluster.

Out of cluster: `--kubeconfig` (+ `--context`) for the cluster, and the broker from `--broker-info` (the
file `subctl deploy-broker` writes) or `--broker-kubeconfig` + `--broker-namespace`. In cluster (no
`--kubeconfig`): the pod's service account, and upstream's environment (SUBMARINER_CLUSTERID,
SUBMARINER_NAMESPACE, BROKER_K8S_APISERVER, BROKER_K8S_APISERVERTOKEN, BROKER_K8S_REMOTENAMESPACE,
BROKER_K8S_CA, BROKER_K8S_INSECURE, BROKER_K8S_SECRET, SUBMARINER_GLOBALNET_ENABLED,
SUBMARINER_CLUSTERSET_IP_CIDR, SUBMARINER_CLUSTERSET_IP_ENABLED). Flags win over the environment.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from submariner.broker.kube import ClientFactory, Cluster, brokerenv
from submariner.broker.kube.brokerenv import truthy
from submariner.lighthouse.agent.config import DEFAULT_NAMESPACE, AgentConfig, ConfigError, parse_duration

log = logging.getLogger("submariner.lighthouse.agent")



def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lighthouse-agent", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--kubeconfig", help="kubeconfig of this cluster (default: in-cluster service account)")
    p.add_argument("--context", help="context in --kubeconfig")
    p.add_argument("--cluster-id", help="this cluster's ID, a DNS-1123 label (env SUBMARINER_CLUSTERID)")
    p.add_argument("--namespace", help=f"Submariner namespace (env SUBMARINER_NAMESPACE; default {DEFAULT_NAMESPACE})")
    broker = p.add_mutually_exclusive_group()
    broker.add_argument("--broker-info", help="broker-info.subm file (broker URL, token, CA and namespace)")
    broker.add_argument("--broker-kubeconfig", help="kubeconfig of the broker")
    p.add_argument("--broker-context", help="context in --broker-kubeconfig")
    p.add_argument("--broker-namespace", help="broker namespace (env BROKER_K8S_REMOTENAMESPACE)")
    p.add_argument("--globalnet", action="store_true", default=None,
                   help="publish Globalnet IPs (env SUBMARINER_GLOBALNET_ENABLED)")
    p.add_argument("--heartbeat-ttl", type=_duration, default=None,
                   help="peers expire this cluster's data after this long without a heartbeat (default 10m)")
    p.add_argument("--heartbeat-interval", type=_duration, default=None,
                   help="heartbeat/broker probe period (default: TTL/3, between 1s and 10s)")
    p.add_argument("--clusterset-ip-cidr", help="clusterset VIP pool (env SUBMARINER_CLUSTERSET_IP_CIDR)")
    p.add_argument("--clusterset-ip-enabled", action="store_true", default=None,
                   help="allocate clusterset VIPs by default (env SUBMARINER_CLUSTERSET_IP_ENABLED)")
    p.add_argument("--upstream-service-types", action="store_true",
                   help="reject NodePort/LoadBalancer exports like upstream (default: export them, D5)")
    p.add_argument("--upstream-conflicts", action="store_true",
                   help="set Conflict only on the differing cluster like upstream (default: on every exporter, D6)")
    p.add_argument("--workers", type=int, default=4, help="parallel service reconciles (default 4)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    return p


def _broker_from_env(env: Mapping[str, str]) -> tuple[ClientFactory, str]:
    try:
        access = brokerenv.broker_from_env(env)
    except brokerenv.BrokerEnvError as e:
        hint = " (or pass --broker-info or --broker-kubeconfig)" if "BROKER_K8S_APISERVER " in f"{e} " else ""
        raise ConfigError(f"{e}{hint}") from None
    return access.cluster, access.namespace


def build(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
          ) -> tuple[AgentConfig, ClientFactory, ClientFactory]:
    """Parse flags + environment into a validated config and the two clusters (no network I/O)."""
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    cluster_id = args.cluster_id or env.get("SUBMARINER_CLUSTERID", "")
    if not cluster_id:
        raise ConfigError("no cluster ID: pass --cluster-id or set SUBMARINER_CLUSTERID")
    broker_namespace = args.broker_namespace or ""
    broker: ClientFactory
    if args.broker_info:
        from submariner.broker.brokerinfo import BrokerInfoError, read_file

        try:
            info = read_file(args.broker_info)
            broker = Cluster.from_token(info.broker_url, info.token, ca_data=info.ca_crt or None, name="broker")
            broker_namespace = broker_namespace or info.broker_namespace or ""
        except (OSError, BrokerInfoError) as e:
            raise ConfigError(f"cannot use broker info {args.broker_info}: {e}") from None
    elif args.broker_kubeconfig:
        broker = Cluster.from_kubeconfig(args.broker_kubeconfig, args.broker_context)
        if not broker_namespace:
            raise ConfigError("--broker-kubeconfig needs --broker-namespace")
    else:
        broker, env_ns = _broker_from_env(env)
        broker_namespace = broker_namespace or env_ns
    local = Cluster.from_kubeconfig(args.kubeconfig, args.context) if args.kubeconfig else Cluster.in_cluster()
    config = AgentConfig(
        cluster_id=cluster_id,
        broker_namespace=broker_namespace,
        namespace=args.namespace or env.get("SUBMARINER_NAMESPACE") or DEFAULT_NAMESPACE,
        globalnet=args.globalnet if args.globalnet is not None else truthy(env.get("SUBMARINER_GLOBALNET_ENABLED")),
        clusterset_ip_cidr=args.clusterset_ip_cidr or env.get("SUBMARINER_CLUSTERSET_IP_CIDR", ""),
        clusterset_ip_enabled=(args.clusterset_ip_enabled if args.clusterset_ip_enabled is not None
                               else truthy(env.get("SUBMARINER_CLUSTERSET_IP_ENABLED"))),
        export_node_port_and_load_balancer=not args.upstream_service_types,
        conflicts_on_all_exporters=not args.upstream_conflicts,
        workers=args.workers,
    )
    if args.heartbeat_ttl is not None:
        config.heartbeat_ttl = args.heartbeat_ttl
    if args.heartbeat_interval is not None:
        config.heartbeat_interval = args.heartbeat_interval
    config.validate()
    return config, local, broker


def main(argv: Sequence[str] | None = None) -> None:
    parser_args = list(sys.argv[1:] if argv is None else argv)
    verbosity = sum(a.count("v") for a in parser_args if a.startswith("-v") and set(a[1:]) == {"v"})
    verbosity += parser_args.count("--verbose")
    level = logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("submariner.lighthouse.agent").setLevel(min(level, logging.INFO))
    try:
        config, local, broker = build(parser_args)
    except ConfigError as e:
        print(f"lighthouse-agent: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as e:  # kubeconfig/in-cluster loading problems: one clear line, no traceback
        print(f"lighthouse-agent: cannot load cluster credentials: {e}", file=sys.stderr)
        raise SystemExit(2) from None

    from submariner.lighthouse.agent.agent import Agent

    # Caches hold every exported object as small dicts that reference counting frees; the collector's full
    # passes over that heap (which it triggers as the heap grows) stalled syncs for seconds at 10k services.
    gc.set_threshold(50_000, 20, 1_000)
    agent = Agent(config, local, broker)
    done = threading.Event()
    started = time.monotonic()

    def _stop(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        agent.start()
    except TimeoutError as e:
        print(f"lighthouse-agent: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    gc.freeze()  # the initial lists are long-lived: keep them out of every later collection
    print(f"lighthouse-agent running cluster={config.cluster_id} broker_namespace={config.broker_namespace}",
          flush=True)

    def _announce_reconciled() -> None:
        """One stdout line once the start-up reconcile has settled (operators and the bench wait for it)."""
        while not done.is_set():
            if agent.wait_idle(timeout=5.0, settle=0.5):
                st = agent.status()
                print(f"lighthouse-agent reconciled cluster={config.cluster_id} "
                      f"seconds={time.monotonic() - started:.3f} reconciles={st['reconciles']} "
                      f"writes={sum(st['writes'].values())}", flush=True)
                return

    threading.Thread(target=_announce_reconciled, name="announce-reconciled", daemon=True).start()
    done.wait()
    agent.stop()
