"""Lighthouse: cross-cluster service discovery (the Kubernetes Multi-Cluster Services API).

`agent/` (`lighthouse-agent`) turns ServiceExports into ServiceImports and EndpointSlices shared through the
broker; `dns/` (`lighthouse-dns`) is a CoreDNS-compatible server that answers `clusterset.local` from them.
"""
