"""Object names and identities (lighthouse-agent.md §3, D1).

Upstream joins names with dashes (`S-N`, `S-N-C`), so `a-b`/`c` and `a`/`b-c` collide. We keep those names
when they are free, but an object is always *identified* by its labels/annotations; when the upstream name
already belongs to another service, `<name>-<sha256("N/S")[:8]>` is used instead. Lighthouse EndpointSlice
names are deterministic and carry a hash of everything that identifies them, so they never collide — in a
cluster, on the broker, or between clusters — and a restart finds the same names (no duplicates).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from submariner.broker.api import labels as L

MAX_NAME = 253


class ServiceKey(NamedTuple):
    """(namespace, name) of an exported Service: the unit the agent reconciles."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def short_hash(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def _fit(name: str, suffix: str = "") -> str:
    room = MAX_NAME - len(suffix)
    return name[:room].rstrip("-.") + suffix


def disambiguated(base: str, key: ServiceKey) -> str:
    """The D1 fallback name for `base` when it belongs to another service."""
    return _fit(base, "-" + short_hash(key.namespace, key.name))


def choose_name(base: str, key: ServiceKey, owner_of: Callable[[str], ServiceKey | None]) -> str:
    """`base` unless another service already holds it (then the hashed variant)."""
    owner = owner_of(base)
    if owner is None or owner == key:
        return _fit(base)
    return disambiguated(base, key)


def aggregate_base_name(key: ServiceKey) -> str:
    return f"{key.name}-{key.namespace}"


def local_import_base_name(key: ServiceKey, cluster_id: str) -> str:
    return f"{key.name}-{key.namespace}-{cluster_id}"


def lh_slice_name(key: ServiceKey, cluster_id: str, discriminator: str) -> str:
    """`<S>-<C>-<hash(C, N, S, discriminator)>`: readable, and unique across clusters and namespaces.

    `discriminator` is the address family for ClusterIP slices and the source slice name for headless ones.
    """
    digest = short_hash(cluster_id, key.namespace, key.name, discriminator, length=10)
    return _fit(f"{key.name}-{cluster_id}", f"-{digest}")


# -- identities ------------------------------------------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _meta(obj).get("labels") or {}


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _meta(obj).get("annotations") or {}


def aggregate_identity(obj: Mapping[str, Any]) -> ServiceKey | None:
    """A broker aggregate is recognised by its service-name *annotation* (D8)."""
    ann = annotations_of(obj)
    name, ns = ann.get(L.SERVICE_NAME), ann.get(L.SOURCE_NAMESPACE)
    return ServiceKey(ns, name) if name and ns else None


def labelled_identity(obj: Mapping[str, Any]) -> ServiceKey | None:
    """Per-cluster ServiceImports and Lighthouse EndpointSlices carry service-name/sourceNamespace labels."""
    lab = labels_of(obj)
    name, ns = lab.get(L.SERVICE_NAME), lab.get(L.SOURCE_NAMESPACE)
    return ServiceKey(ns, name) if name and ns else None


def source_cluster_of(obj: Mapping[str, Any]) -> str:
    return str(labels_of(obj).get(L.SOURCE_CLUSTER) or "")


def is_lighthouse_slice(obj: Mapping[str, Any]) -> bool:
    return labels_of(obj).get(L.ENDPOINTSLICE_MANAGED_BY) == L.LIGHTHOUSE_MANAGED_BY
