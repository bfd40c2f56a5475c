"""Built-in programs the lab runs in place of container images (see `submariner.lab.images`).

Each module is a standalone script started as `python <file>` inside a pod's network namespace.
"""
