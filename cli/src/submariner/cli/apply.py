"""Applying rendered objects: create-or-update per kind, keeping what the server owns (Service IPs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from submariner.broker.api.meta import APIResource
from submariner.broker.kube import ClientFactory, KubeError, NotFound, Obj, Operation, create_or_update, deep_copy
from submariner.cli.errors import CliError
from submariner.cli.resources import BY_KIND, SERVICES

_SERVER_OWNED_SERVICE_FIELDS = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy",
                                "sessionAffinity")


def resource_of(obj: Obj) -> APIResource:
    kind = str(obj.get("kind") or "")
    try:
        return BY_KIND[kind]
    except KeyError:
        raise CliError(f"no API resource known for kind {kind!r}") from None


def _keep_service_ips(desired: Obj) -> Callable[[Obj], Obj]:
    def mutate(existing: Obj) -> Obj:
        out = deep_copy(desired)
        spec = out.setdefault("spec", {})
        for key in _SERVER_OWNED_SERVICE_FIELDS:
            if key in (existing.get("spec") or {}):
                spec[key] = existing["spec"][key]
        out["metadata"] = {**(existing.get("metadata") or {}), **desired.get("metadata", {})}
        return out

    return mutate


def apply(kube: ClientFactory, obj: Obj) -> tuple[Operation, Obj]:
    res = resource_of(obj)
    client = kube.resource(res)
    if res == SERVICES:
        return create_or_update(client, obj, mutate=_keep_service_ips(obj))
    return create_or_update(client, obj)


def apply_all(kube: ClientFactory, objs: Sequence[Obj]) -> list[tuple[Operation, Obj]]:
    return [apply(kube, obj) for obj in objs]


def wait_for_crds(kube: ClientFactory, crds: Sequence[Obj], timeout: float = 30.0) -> None:
    """A CRD's resource is served a moment after it is created on a real API server; wait for each."""
    deadline = time.monotonic() + timeout
    for crd in crds:
        spec = crd["spec"]
        version = spec["versions"][0]["name"]
        names = spec["names"]
        res = APIResource(spec["group"], version, names["kind"], names["plural"], names["singular"],
                          spec["scope"] == "Namespaced")
        while True:
            try:
                kube.resource(res).list(None)
                break
            except NotFound:
                if time.monotonic() > deadline:
                    raise CliError(f"the CRD {crd['metadata']['name']} was created but is not served after "
                                   f"{timeout:.0f}s") from None
                time.sleep(0.2)
            except KubeError:
                break  # forbidden to list across namespaces etc.: served, which is all we wait for
