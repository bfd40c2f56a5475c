"""Context selection for all-context commands (subctl.md §1 Contexts), on kubeconfig files only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from submariner.cli.errors import CliError
from submariner.cli.kubeconf import KubeFlags, resolve, select_contexts


def write(path: Path, contexts: list[tuple[str, str, str]], current: str = "") -> str:
    clusters = sorted({c for _, c, _ in contexts})
    users = sorted({u for _, _, u in contexts})
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": c, "cluster": {"server": f"https://{c}.example:6443"}} for c in clusters],
           "users": [{"name": u, "user": {"token": "t"}} for u in users],
           "contexts": [{"name": n, "context": {"cluster": c, "user": u}} for n, c, u in contexts]}
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_dedup_by_cluster_prefers_the_most_used_user(tmp_path: Path) -> None:
    kc = write(tmp_path / "a", [("admin@c1", "c1", "admin"), ("dev@c1", "c1", "dev"), ("admin@c2", "c2", "admin")])
    warnings: list[str] = []
    chosen = select_contexts(KubeFlags(kubeconfig=kc), [], warnings.append)
    assert [(c.name, c.cluster) for c in chosen] == [("admin@c1", "c1"), ("admin@c2", "c2")]
    assert warnings == ['Found multiple kube contexts for cluster "c1": admin@c1, dev@c1. Context "admin@c1" was '
                        "automatically selected; use --contexts to choose"]
    assert [c.name for c in select_contexts(KubeFlags(kubeconfig=kc), ["dev@c1"], warnings.append)] == ["dev@c1"]
    with pytest.raises(CliError, match="no Kubernetes context found named nope"):
        select_contexts(KubeFlags(kubeconfig=kc), ["nope"], warnings.append)


def test_merged_kubeconfig_list_and_current_context(tmp_path: Path) -> None:
    first = write(tmp_path / "a", [("x", "cx", "u")], current="x")
    second = write(tmp_path / "b", [("x", "other", "u"), ("y", "cy", "u")], current="y")
    flags = KubeFlags(kubeconfig=f"{first}:{second}")
    assert resolve(flags).cluster == "cx"  # first file wins for names and for current-context
    assert resolve(KubeFlags(kubeconfig=f"{first}:{second}", context="y")).server == "https://cy.example:6443"
    with pytest.raises(CliError, match="no Kubernetes configuration or context was found"):
        resolve(KubeFlags(kubeconfig=str(tmp_path / "missing")))
    with pytest.raises(CliError, match="no current context"):
        resolve(KubeFlags(kubeconfig=write(tmp_path / "c", [("z", "cz", "u")])))
