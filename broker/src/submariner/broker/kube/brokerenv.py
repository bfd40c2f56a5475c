"""The broker connection of a component pod, from upstream's `BROKER_K8S_*` environment (what the operator —
here `subctl join` — puts on the gateway and Lighthouse agent pods): API server, token, CA, namespace."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .client import ClientFactory, Cluster

SECRETS_DIR = "/run/secrets/submariner.io"  # where upstream mounts BROKER_K8S_SECRET


class BrokerEnvError(ValueError):
    """The environment does not describe a usable broker; the message names the variable to set."""


def truthy(value: str | None) -> bool:
    """Upstream's boolean env values."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class BrokerAccess:
    cluster: ClientFactory
    namespace: str  # BROKER_K8S_REMOTENAMESPACE ("" when unset: the caller decides)
    url: str


def broker_from_env(env: Mapping[str, str], secrets_dir: str = SECRETS_DIR) -> BrokerAccess:
    """BROKER_K8S_APISERVER (host:port or URL), BROKER_K8S_APISERVERTOKEN / _CA, or BROKER_K8S_SECRET naming a
    mounted secret with `token` and `ca.crt`; BROKER_K8S_INSECURE skips TLS verification."""
    server = env.get("BROKER_K8S_APISERVER", "")
    if not server:
        raise BrokerEnvError("no broker given: set BROKER_K8S_APISERVER (host:port or URL)")
    url = server if "://" in server else f"https://{server}"
    token, ca = env.get("BROKER_K8S_APISERVERTOKEN", ""), env.get("BROKER_K8S_CA", "")
    secret = env.get("BROKER_K8S_SECRET", "")
    if secret:
        base = Path(secrets_dir) / secret
        if not token and (base / "token").exists():
            token = (base / "token").read_text().strip()
        if not ca and (base / "ca.crt").exists():
            ca = (base / "ca.crt").read_text()
    if not token:
        raise BrokerEnvError("BROKER_K8S_APISERVERTOKEN (or BROKER_K8S_SECRET with a token) is required")
    cluster = Cluster.from_token(url, token, ca_data=ca or None, insecure=truthy(env.get("BROKER_K8S_INSECURE")),
                                 name="broker")
    return BrokerAccess(cluster, env.get("BROKER_K8S_REMOTENAMESPACE", ""), url)
