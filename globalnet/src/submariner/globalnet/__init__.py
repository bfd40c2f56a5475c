"""Globalnet: NAT for clusters whose CIDRs overlap.

Not implemented yet: the distribution exists so the monorepo layout is fixed; see issue #7.
"""
