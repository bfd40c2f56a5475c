"""Lighthouse agent: ServiceExport → Broker → ServiceImport + EndpointSlices in every cluster (issue #4)."""
