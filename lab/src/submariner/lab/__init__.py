"""sublab: Kubernetes clusters made of network namespaces.

Not implemented yet: the distribution exists so the monorepo layout is fixed; see issue #5.
"""
