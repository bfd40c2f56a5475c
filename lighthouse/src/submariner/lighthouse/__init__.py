"""Lighthouse: the service-discovery agent and the clusterset.local DNS server.

Not implemented yet: the distribution exists so the monorepo layout is fixed; see issue #3.
"""
