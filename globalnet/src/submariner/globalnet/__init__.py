"""Globalnet: NAT for clusters whose CIDRs overlap (dataplane.md §4).

`ipam` hands out addresses of the cluster's GlobalCIDR, `rules` renders the nat chains from the desired
state, the controllers keep that state in step with the Globalnet CRs, Services and pods.
"""
