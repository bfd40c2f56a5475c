"""Shared netlink and packet-filter seams (`submariner.dataplane`).

Owns every kernel write of the dataplane daemons, as values plus protocols with in-memory twins:

- `netlink.py` — links (vxlan), addresses, routes (`Route`, `reconcile_routes`), policy rules (`Rule`),
  FDB (`Fdb`), sysctls; `KernelNetlink` (pyroute2, this or a named netns) and `FakeNetlink`.
- `packetfilter/` — iptables chains a component owns as a `Ruleset` (`RuleSpec`, `Hook`), compared by
  meaning (`canonical`) and applied atomically with one `iptables-restore --noflush` (`IptablesRestore`) or in
  memory (`FakePacketFilter`); `ipset.py` — `hash:net` sets (`KernelIPSets`, `FakeIPSets`).

Users: the gateway's cable drivers, the route agent and Globalnet. They compute desired state and call these
seams; nothing here knows about Endpoints or clusters.
"""
