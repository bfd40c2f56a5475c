"""Gateway Engine: cable drivers, NAT discovery, health checks, HA.

Not implemented yet: the distribution exists so the monorepo layout is fixed; see issue #6.
"""
