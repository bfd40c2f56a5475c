"""Submariner broker: API types, the Kubernetes-API-compatible server (standalone broker) and the sync library."""
