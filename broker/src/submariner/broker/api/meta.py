"""Kubernetes core shapes shared by every API group, and the identity of a served resource.

Objects travel as plain JSON dicts; these TypedDicts only name the keys, so a decoded API response can be
used as-is.
"""

from dataclasses import dataclass
from typing import Any, Literal, Required, TypedDict

ConditionStatus = Literal["True", "False", "Unknown"]
CONDITION_STATUSES: tuple[ConditionStatus, ...] = ("True", "False", "Unknown")


class ObjectMeta(TypedDict, total=False):
    name: str
    generateName: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str | None
    deletionTimestamp: str | None
    deletionGracePeriodSeconds: int
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[dict[str, Any]]
    finalizers: list[str]
    managedFields: list[dict[str, Any]]


class Condition(TypedDict, total=False):
    """metav1.Condition: the Globalnet CRs use it, so `reason` may not be empty."""

    type: Required[str]
    status: Required[ConditionStatus]
    observedGeneration: int
    lastTransitionTime: Required[str]
    reason: Required[str]
    message: Required[str]


class LabelSelectorRequirement(TypedDict, total=False):
    key: Required[str]
    operator: Required[str]
    values: list[str]


class LabelSelector(TypedDict, total=False):
    matchLabels: dict[str, str]
    matchExpressions: list[LabelSelectorRequirement]


class LocalObjectReference(TypedDict, total=False):
    name: str


class Secret(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    immutable: bool
    data: dict[str, str]
    stringData: dict[str, str]
    type: str


@dataclass(frozen=True)
class APIResource:
    """Where a kind is served: enough to build URLs, CRD names and RBAC rules without a discovery call."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def scope(self) -> Literal["Namespaced", "Cluster"]:
        return "Namespaced" if self.namespaced else "Cluster"
