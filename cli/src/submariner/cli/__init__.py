"""subctl: the command line.

Not implemented yet: the distribution exists so the monorepo layout is fixed; see issue #8.
"""
