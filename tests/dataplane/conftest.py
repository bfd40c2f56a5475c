"""Fixtures for the dataplane tests: throw-away network namespaces."""

from dpharness import make_netns, netns

__all__ = ["make_netns", "netns"]
