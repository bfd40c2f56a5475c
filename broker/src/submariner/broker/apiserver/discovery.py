"""Discovery documents (`/api`, `/apis`, `/apis/<g>/<v>`) and the OpenAPI v3 index kubectl consults.

The OpenAPI documents are deliberately small: per kind a PATCH operation that advertises the
`fieldValidation` query parameter, so kubectl leaves validation to the server instead of downloading
schemas, and builds apply patches from its built-in types (merge patches for custom resources).
"""

from __future__ import annotations

import hashlib
from typing import Any

from .resources import Registry, ResourceType

KUBE_VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0", "gitCommit": "submariner-py",
                "gitTreeState": "clean", "buildDate": "2026-11-26T00:00:00Z", "goVersion": "python",
                "compiler": "cpython", "platform": "linux/amd64"}


def _api_resource(t: ResourceType) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": t.plural,
        "singularName": t.singular,
        "namespaced": t.namespaced,
        "kind": t.kind,
        "verbs": list(t.verbs),
    }
    if t.short_names:
        doc["shortNames"] = list(t.short_names)
    if t.categories:
        doc["categories"] = list(t.categories)
    doc["storageVersionHash"] = hashlib.sha256(t.key.encode()).hexdigest()[:12]
    return doc


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = [t for t in registry.all() if t.group == group and t.version == version]
    if not types:
        return None
    resources = []
    for t in sorted(types, key=lambda x: x.plural):
        resources.append(_api_resource(t))
        if t.has_status:
            resources.append({"name": f"{t.plural}/status", "singularName": "", "namespaced": t.namespaced,
                              "kind": t.kind, "verbs": ["get", "patch", "update"]})
        if t.key in ("apps/deployments", "apps/statefulsets"):
            resources.append({"name": f"{t.plural}/scale", "singularName": "", "namespaced": t.namespaced,
                              "group": "autoscaling", "version": "v1", "kind": "Scale",
                              "verbs": ["get", "patch", "update"]})
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_doc(group: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = [_group_doc(g, vs) for g, vs in registry.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    versions = registry.group_versions().get(group)
    if not versions or not group:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3_index(registry: Registry) -> dict[str, Any]:
    paths = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            doc = openapi_v3_group_version(registry, group, version)
            digest = hashlib.sha256(repr(doc).encode()).hexdigest()[:16].upper()
            path = _gv_path(group, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}


def openapi_v3_group_version(registry: Registry, group: str, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    params = [
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
    ]
    for t in registry.all():
        if t.group != group or t.version != version:
            continue
        gvk = {"group": group, "version": version, "kind": t.kind}
        base = "/" + _gv_path(group, version)
        item = f"{base}/namespaces/{{namespace}}/{t.plural}/{{name}}" if t.namespaced else \
            f"{base}/{t.plural}/{{name}}"
        op = {
            "operationId": f"patch{t.kind}",
            "parameters": params,
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
            "responses": {"200": {"description": "OK"}},
        }
        paths[item] = {"patch": op}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }
