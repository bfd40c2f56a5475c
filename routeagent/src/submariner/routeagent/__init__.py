"""Route Agent: vx-submariner overlay and routes to the active gateway.

Not implemented yet: the distribution exists so the monorepo layout is fixed; see issue #6.
"""
