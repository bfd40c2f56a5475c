"""`submariner-routeagent`: the DaemonSet program (hostNetwork: it runs in the node's network namespace)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType

from submariner.broker.kube import Cluster
from submariner.dataplane.netlink import KernelNetlink
from submariner.dataplane.packetfilter import IptablesRestore
from submariner.dataplane.packetfilter.ipset import KernelIPSets
from submariner.routeagent.agent import RouteAgent
from submariner.routeagent.config import ConfigError, Settings
from submariner.routeagent.reconciler import Reconciler
from submariner.routeagent.status import StatusReporter
from submariner.routeagent.xfrm import KernelXfrm

log = logging.getLogger("submariner.routeagent")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="submariner-routeagent", description=__doc__)
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--netns", help="operate on this named network namespace instead of our own (tests)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as e:
        print(f"submariner-routeagent: {e}", file=sys.stderr)
        return 2
    nl = KernelNetlink(args.netns)
    reconciler = Reconciler(settings, nl, IptablesRestore(args.netns), KernelIPSets(args.netns),
                            xfrm=KernelXfrm(args.netns))
    try:
        if settings.uninstall:
            log.info("SUBMARINER_UNINSTALL is set: removing the route agent's kernel state on %s", settings.node_name)
            reconciler.uninstall()
            return 0
        kube = Cluster.from_kubeconfig(args.kubeconfig, args.context) if args.kubeconfig else Cluster.in_cluster()
        agent = RouteAgent(settings, kube, reconciler, status=StatusReporter(settings, kube))

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            agent.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info("route agent for node %s, cluster %s, namespace %s", settings.node_name, settings.cluster_id,
                 settings.namespace)
        agent.run()
        return 0
    finally:
        nl.close()


if __name__ == "__main__":
    sys.exit(main())
