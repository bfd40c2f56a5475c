"""`submariner-globalnet`: the Globalnet DaemonSet's entry point (env per dataplane.md §4.2).

In a pod: no flags, the in-cluster service account. For tests and the lab: `--kubeconfig`/`--context`, and
`--netns` to program a named network namespace instead of the one the process runs in.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

from submariner.broker.kube import Cluster
from submariner.dataplane.packetfilter import IptablesRestore
from submariner.dataplane.packetfilter.ipset import KernelIPSets
from submariner.globalnet.config import Config, ConfigError, with_cluster_cr
from submariner.globalnet.daemon import Globalnet, uninstall
from submariner.globalnet.health import cni_ip_from
from submariner.globalnet.metrics import Metrics

log = logging.getLogger("submariner.globalnet")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="submariner-globalnet", description=__doc__.split("\n")[0])
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--netns", help="program this named network namespace (default: the current one)")
    p.add_argument("--cni-ip", help="CNI IP for the gateway health check (default: discovered)")
    p.add_argument("--cluster-cr-attempts", type=int, default=100,
                   help="reads of the Cluster CR before falling back to the environment (3 s apart)")
    p.add_argument("--lease-timings", default="",
                   help="lease duration,renew deadline,retry period in seconds (default 20,15,2)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="Prometheus /metrics port (default SUBMARINER_METRICSPORT or 32781; 0 = any free port, "
                        "-1 = off)")
    p.add_argument("--log-level", default=os.environ.get("SUBMARINER_LOGLEVEL", "INFO"))
    return p


def _discover_cni_ip(config: Config, netns: str | None) -> str | None:
    try:
        from submariner.dataplane.netlink import KernelNetlink
        nl = KernelNetlink(netns)
        try:
            return cni_ip_from(nl.addresses(), config.cluster_cidrs)
        finally:
            nl.close()
    except Exception as e:  # no netlink access: the health-check IP is simply not programmed
        log.warning("globalnet cannot discover the CNI IP error=%s", e)
        return None


def _set_sysctl(netns: str | None) -> Callable[[str, str], None]:
    def set_sysctl(key: str, value: str) -> None:
        from submariner.dataplane.netlink import KernelNetlink
        nl = KernelNetlink(netns)
        try:
            nl.set_sysctl(key, value)
        finally:
            nl.close()
    return set_sysctl


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = Config.from_env(os.environ)
        if args.lease_timings:
            lease, renew, retry = (float(v) for v in args.lease_timings.split(","))
            config = replace(config, lease_timings=(lease, renew, retry))
    except (ConfigError, ValueError) as e:
        print(f"submariner-globalnet: {e}", file=sys.stderr)
        return 2
    cluster = Cluster.from_kubeconfig(args.kubeconfig, args.context) if args.kubeconfig else Cluster.in_cluster()
    pf = IptablesRestore(netns=args.netns)
    ipsets = KernelIPSets(netns=args.netns)
    if config.uninstall:
        uninstall(config, cluster, pf, ipsets)
        print("submariner-globalnet uninstalled", flush=True)
        return 0
    config = with_cluster_cr(config, cluster, attempts=max(1, args.cluster_cr_attempts))
    if not config.global_cidrs:
        print("submariner-globalnet: no GlobalCIDR: set SUBMARINER_GLOBALCIDR or the Cluster CR's global_cidr",
              file=sys.stderr)
        return 2
    cni_ip = args.cni_ip or _discover_cni_ip(config, args.netns)
    metrics = Metrics()
    port = config.metrics_port if args.metrics_port is None else args.metrics_port
    metrics_port = metrics.serve(port) if port >= 0 else None
    daemon = Globalnet(config, cluster, pf, ipsets, cni_ip=cni_ip, set_sysctl=_set_sysctl(args.netns),
                       metrics=metrics)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    daemon.start()
    print(f"submariner-globalnet running cluster={config.cluster_id} node={config.node_name} "
          f"global_cidr={','.join(config.global_cidrs)} cni_ip={cni_ip or '-'} metrics_port={metrics_port or '-'}",
          flush=True)
    stop.wait()
    daemon.stop()
    print("submariner-globalnet stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
