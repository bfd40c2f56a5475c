"""Route agent (`submariner-routeagent`, DaemonSet on every node, hostNetwork): gets traffic for remote
clusters from any node to the active gateway, and keeps pod source IPs on the way (dataplane.md §3).

Owns, in the node's network namespace: the `vx-submariner` VXLAN overlay (VNI 100, UDP 4800, 240.x/8
addresses; remote = the gateway on workers, FDB of all nodes on the gateway), the `proto static` routes
through it in main (workers), table 150 and its rule (gateway), the iptables chains SUBMARINER-INPUT,
SUBMARINER-FORWARD, nat SUBMARINER-POSTROUTING (shared with Globalnet, which hooks into it), mangle
SUBMARINER-POSTROUTING (TCP MSS), and the ipsets SUBMARINER-LOCALCIDRS / SUBMARINER-REMOTECIDRS.
When the node stops being the gateway it also removes the cable drivers' leftovers (vxlan-tunnel, table
100, XFRM policies).

```
config.py      Settings from the upstream env names (§3.1)
model.py       pure: Endpoints + Nodes + HostFacts → Desired (device, FDB, routes, Ruleset, ipsets, sysctls)
reconciler.py  host facts from the kernel; apply Desired through submariner.dataplane seams (no-op when equal);
               uninstall
agent.py       informers on Endpoints (SUBMARINER_NAMESPACE) and Nodes; level-triggered loop with resync; a health
               verdict change writes the RouteAgent at once (no reconcile)
xfrm.py        XFRM policy clean-up when the node stops being the gateway (§2.5)
status.py      RouteAgent `<node>` status (§3.6): pingers (submariner.dataplane.healthcheck, as the gateway's) on
               non-gateway nodes, verdicts, delete on stop
cli.py         `submariner-routeagent [--kubeconfig F]`; SIGTERM → clean exit; SUBMARINER_UNINSTALL → clean up
```
Not here: Calico/OVN handlers (§3.7).
"""
