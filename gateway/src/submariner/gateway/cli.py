"""`submariner-gateway`: the Gateway Engine DaemonSet's entry point.

Configuration is upstream's environment (see config.py); flags exist for tests and local runs:
`--kubeconfig` (else in-cluster credentials) and `--broker-kubeconfig`/`--broker-namespace` (else the
`BROKER_K8S_*` variables, read the same way as lighthouse-agent). SIGTERM/SIGINT stop cleanly (Lease
released, Gateway object deleted); exit status 1 after a fatal error.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence

from submariner.broker.kube import ClientFactory, Cluster, brokerenv
from submariner.gateway.config import ConfigError, GatewayConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="submariner-gateway", description=__doc__)
    p.add_argument("--kubeconfig", help="local cluster credentials (default: in-cluster service account)")
    p.add_argument("--broker-kubeconfig", help="broker credentials (default: BROKER_K8S_* environment)")
    p.add_argument("--broker-namespace", help="broker namespace (default: BROKER_K8S_REMOTENAMESPACE)")
    p.add_argument("--no-broker", action="store_true", help="do not sync Cluster/Endpoint with a broker (tests)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def broker_from_env(env: Mapping[str, str]) -> tuple[ClientFactory, str, str]:
    """(broker, namespace, API URL) from BROKER_K8S_* (the names lighthouse-agent reads)."""
    try:
        access = brokerenv.broker_from_env(env)
    except brokerenv.BrokerEnvError as e:
        hint = " or pass --broker-kubeconfig" if "BROKER_K8S_APISERVER " in f"{e} " else ""
        raise ConfigError(f"{e}{hint}") from None
    return access.cluster, access.namespace, access.url


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    env = os.environ if env is None else env
    level = logging.DEBUG if args.verbose >= 2 else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        cfg = GatewayConfig.from_env(env)
        broker: ClientFactory | None = None
        broker_host = ""
        if args.broker_kubeconfig:
            broker_cluster = Cluster.from_kubeconfig(args.broker_kubeconfig)
            broker, broker_host = broker_cluster, broker_cluster.host
            cfg.broker_namespace = args.broker_namespace or cfg.broker_namespace
        elif not args.no_broker:
            broker, ns, broker_host = broker_from_env(env)
            cfg.broker_namespace = args.broker_namespace or ns
        if broker is not None and not cfg.broker_namespace:
            raise ConfigError("no broker namespace: set BROKER_K8S_REMOTENAMESPACE or pass --broker-namespace")
        local = Cluster.from_kubeconfig(args.kubeconfig) if args.kubeconfig else Cluster.in_cluster()
    except ConfigError as e:
        print(f"submariner-gateway: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as e:  # credentials loading: one clear line
        print(f"submariner-gateway: cannot load cluster credentials: {e}", file=sys.stderr)
        raise SystemExit(2) from None

    from submariner.dataplane.netlink import KernelNetlink
    from submariner.gateway.gateway import Gateway

    done = threading.Event()
    fatal: list[str] = []

    def on_fatal(msg: str) -> None:
        fatal.append(msg)
        done.set()

    try:
        gw = Gateway(cfg, local, broker, KernelNetlink(), broker_host=broker_host, on_fatal=on_fatal)
    except Exception as e:
        print(f"submariner-gateway: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    if cfg.uninstall:
        gw.uninstall()
        print("submariner-gateway: uninstalled", file=sys.stderr)
        return

    def _stop(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    metrics = None
    if cfg.metrics_port:
        from submariner.gateway.metrics import MetricsServer

        try:
            metrics = MetricsServer(cfg.metrics_port, gw.status.desired_status, driver=cfg.cable_driver)
            metrics.start()
        except OSError as e:  # metrics are optional: never the reason a gateway is down
            print(f"submariner-gateway: metrics on port {cfg.metrics_port} unavailable: {e}", file=sys.stderr)
    gw.start()
    print(f"submariner-gateway running cluster={cfg.cluster_id} node={cfg.node_name} "
          f"cable={gw.spec['cable_name']} driver={cfg.cable_driver}", file=sys.stderr, flush=True)
    done.wait()
    gw.stop()
    if metrics is not None:
        metrics.stop()
    if fatal:
        print(f"submariner-gateway: {fatal[0]}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
