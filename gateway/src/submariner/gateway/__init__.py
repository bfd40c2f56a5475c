"""Gateway Engine (dataplane.md §2): cable drivers, NAT discovery, health checks, Gateway CR, HA.

Map: config (env) → endpoint (local Endpoint) → gateway (election, active/passive roles) → engine (cables)
with cable/ (vxlan, wireguard, libreswan drivers), natdiscovery/ (UDP 4490), gatewaystatus (Gateway CR, merged
with the ICMP pinger of submariner.dataplane.healthcheck), election (Lease), datastore (Cluster/Endpoint ⇄
broker), tunnel (Endpoint watch), cli (`submariner-gateway`).
"""
