"""Shared netlink and packet-filter seams (`submariner.dataplane`).

Owns every kernel write of the dataplane daemons (gateway cable drivers, route agent, Globalnet), as values
plus protocols with in-memory twins. Nothing here knows about clusters (the health checker reads only an
Endpoint's cluster_id, cable_name and healthCheckIP): callers compute desired state and hand it over; every call
compares first and writes only differences.

```
netlink.py              Route / Rule / Vxlan / Fdb values; the Netlink protocol; KernelNetlink (pyroute2 IPRoute,
                        this process's netns or a named one that must exist) and FakeNetlink (`calls` = the
                        calls that changed something); reconcile_routes (owned-route diff of one table; never
                        deletes the kernel's connected routes); sysctls (named netns via `ip netns exec`)
packetfilter/model.py   RuleSpec, Hook, Ruleset; canonical(): rule arguments by meaning (what iptables-save lists)
packetfilter/plan.py    iptables-save parsing; (table as listed, Ruleset) → edits (declare/append/insert/delete);
                        rendering as iptables-restore input; the same edits applied in memory for the fake
packetfilter/backend.py PacketFilter protocol; IptablesRestore (one `iptables-restore --noflush` per apply, none
                        when nothing differs, re-planned if the table changed under it); FakePacketFilter
packetfilter/ipset.py   IPSets protocol; KernelIPSets (`ipset restore -exist`), FakeIPSets
healthcheck.py          ICMP pinger shared by the gateway and the route agent (Pinger, HealthChecker, Go durations)
```

Ownership rules of the packet filter: a Ruleset owns its chains' exact contents, except jumps other
components put into them (kept on top: Globalnet's `-j SUBMARINER-GN-EGRESS` in the shared nat
SUBMARINER-POSTROUTING); in a hooked chain only rules jumping to the hook targets are touched, so kube-proxy's
KUBE-* chains and jumps coexist. A Hook's `builtin` may also name another component's chain.
"""
