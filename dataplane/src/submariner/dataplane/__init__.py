"""Shared netlink and packet-filter seams.

Not implemented yet: the distribution exists so the monorepo layout is fixed; see issue #6.
"""
