"""kubeconfig handling: the kubectl-style flags, one context or all of them (subctl.md §1 Contexts)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from submariner.broker.kube import Cluster
from submariner.cli.errors import CliError

DEFAULT_KUBECONFIG = "~/.kube/config"


@dataclass(frozen=True)
class KubeFlags:
    """The kube flags subctl accepts (a subset of kubectl's override set)."""

    kubeconfig: str | None = None
    context: str | None = None
    server: str | None = None
    token: str | None = None
    certificate_authority: str | None = None
    insecure_skip_tls_verify: bool = False
    request_timeout: float | None = None

    def merged(self, other: KubeFlags) -> KubeFlags:
        """`other` (command-level flags) wins over these (root-level flags) where set."""
        changes = {k: v for k, v in vars(other).items() if v not in (None, False)}
        return replace(self, **changes)

    @property
    def paths(self) -> str:
        """The kubeconfig path list (colon-separated like $KUBECONFIG)."""
        return self.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser(DEFAULT_KUBECONFIG)


@dataclass(frozen=True)
class ContextInfo:
    name: str
    cluster: str
    """The kubeconfig *cluster* name (the default cluster ID and the `show` header)."""
    user: str
    server: str
    namespace: str = ""


def load_config(flags: KubeFlags) -> dict[str, Any]:
    """The merged kubeconfig as a dict: first file wins per name and for current-context, as kubectl merges."""
    import yaml

    existing = [os.path.expanduser(p) for p in flags.paths.split(os.pathsep) if p]
    existing = [p for p in existing if os.path.exists(p)]
    if not existing:
        raise CliError("no Kubernetes configuration or context was found "
                       f"(looked for {flags.paths}; pass --kubeconfig or set KUBECONFIG)")
    merged: dict[str, Any] = {"clusters": [], "contexts": [], "users": []}
    seen: dict[str, set[str]] = {k: set() for k in merged}
    for path in existing:
        try:
            with open(path) as f:
                doc = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise CliError(f"cannot read the kubeconfig {path}: {e}") from None
        if not isinstance(doc, dict):
            raise CliError(f"the kubeconfig {path} is not a YAML mapping")
        for kind in merged:
            for item in doc.get(kind) or []:
                if isinstance(item, dict) and str(item.get("name")) not in seen[kind]:
                    seen[kind].add(str(item.get("name")))
                    merged[kind].append(item)
        if doc.get("current-context") and "current-context" not in merged:
            merged["current-context"] = doc["current-context"]
    return merged


def _named(config: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {str(item.get("name")): dict(item.get(kind[:-1]) or {}) for item in config.get(kind) or []
            if isinstance(item, dict)}


def contexts(config: dict[str, Any]) -> list[ContextInfo]:
    clusters = _named(config, "clusters")
    out = []
    for name, ctx in _named(config, "contexts").items():
        cluster = str(ctx.get("cluster") or "")
        out.append(ContextInfo(name, cluster, str(ctx.get("user") or ""),
                               str(clusters.get(cluster, {}).get("server") or ""), str(ctx.get("namespace") or "")))
    return out


def resolve(flags: KubeFlags) -> ContextInfo:
    """The context a single-cluster command uses: --context, else the current context."""
    config = load_config(flags)
    by_name = {c.name: c for c in contexts(config)}
    name = flags.context or str(config.get("current-context") or "")
    if not name:
        raise CliError("no current context is set in the kubeconfig: pass --context")
    if name not in by_name:
        known = ", ".join(sorted(by_name)) or "none"
        raise CliError(f'context "{name}" does not exist in the kubeconfig (known contexts: {known}); check --context')
    return by_name[name]


def connect(flags: KubeFlags, context: str) -> Cluster:
    """A client for one context, with the override flags applied."""
    try:
        cluster = Cluster.from_kubeconfig(flags.paths, context)
    except Exception as e:  # kubernetes.config.ConfigException and friends: one line
        raise CliError(f'cannot load context "{context}" from {flags.paths}: {e}') from None
    cfg = cluster.configuration
    if flags.server:
        cfg.host = flags.server.rstrip("/")
    if flags.token:
        cfg.api_key = {"BearerToken": flags.token}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
    if flags.certificate_authority:
        cfg.ssl_ca_cert = flags.certificate_authority
    if flags.insecure_skip_tls_verify:
        cfg.verify_ssl = False
    if flags.server or flags.token or flags.certificate_authority or flags.insecure_skip_tls_verify:
        cluster = Cluster(cfg, name=context)
    if flags.request_timeout:
        cluster.request_timeout = (flags.request_timeout, flags.request_timeout)
    return cluster


def select_contexts(flags: KubeFlags, names: list[str] | None, warn: Callable[[str], None]) -> list[ContextInfo]:
    """Contexts for all-contexts commands: --context, --contexts, else one per kubeconfig cluster."""
    if flags.context:
        return [resolve(flags)]
    config = load_config(flags)
    all_contexts = contexts(config)
    by_name = {c.name: c for c in all_contexts}
    if names:
        missing = [n for n in names if n not in by_name]
        if missing:
            raise CliError(f"no Kubernetes context found named {missing[0]}")
        return [by_name[n] for n in names]
    if not all_contexts:
        raise CliError("no Kubernetes configuration or context was found")
    user_counts = Counter(c.user for c in all_contexts)
    chosen: dict[str, ContextInfo] = {}
    groups: dict[str, list[ContextInfo]] = {}
    for ctx in all_contexts:
        groups.setdefault(ctx.cluster, []).append(ctx)
    for cluster, members in groups.items():
        best = max(members, key=lambda c: user_counts[c.user])  # first one wins ties
        chosen[cluster] = best
        if len(members) > 1:
            warn(f'Found multiple kube contexts for cluster "{cluster}": '
                 f'{", ".join(c.name for c in members)}. Context "{best.name}" was automatically selected; '
                 "use --contexts to choose")
    return list(chosen.values())
