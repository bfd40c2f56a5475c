"""A Kubernetes-API-compatible server with a durable embedded store.

It is the standalone Broker and the API server of every lab cluster. Public entry points: `ServerConfig`
and `run_server` (in `server`); everything else is internal.
"""
