"""Pure functions on API objects shared by the controllers: readiness, ownership, template hashes, placement.

Kept free of I/O so each rule (what counts as Ready, which node a pod may run on) has one definition that
the scheduler, the DaemonSet controller and the tests all agree on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from submariner.broker.kube import Obj, deep_copy

APPS_V1 = "apps/v1"
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
POD_TEMPLATE_HASH = "pod-template-hash"
CONTROLLER_REVISION_HASH = "controller-revision-hash"
STS_POD_NAME = "statefulset.kubernetes.io/pod-name"
POD_INDEX = "apps.kubernetes.io/pod-index"
DS_TEMPLATE_GENERATION = "pod-template-generation"
MAX_GENERATE_NAME = 58  # 63 minus the 5 random characters the server appends

_SAFE_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.SafeEncodeString alphabet (no vowels)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp, None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    s = obj.get("spec")
    return s if isinstance(s, dict) else {}


def status(obj: Mapping[str, Any]) -> dict[str, Any]:
    s = obj.get("status")
    return s if isinstance(s, dict) else {}


def uid_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("uid") or "")


def name_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name") or "")


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("namespace") or "")


def generation_of(obj: Mapping[str, Any]) -> int:
    return int(meta(obj).get("generation") or 0)


def same_json(a: Any, b: Any) -> bool:
    """Equality as the API sees it: key order never matters, and absent/None/{}/[] are all 'unset'."""
    equal: bool = _canon(a) == _canon(b)
    return equal


def _canon(value: Any) -> Any:
    if isinstance(value, Mapping):
        out = {k: c for k, c in ((k, _canon(v)) for k, v in value.items()) if c is not None}
        return out or None
    if isinstance(value, list):
        return [_canon(v) for v in value] or None
    return value


# ------------------------------------------------------------------------------------------------ owners


def owner_reference(owner: Mapping[str, Any], kind: str, api_version: str = APPS_V1) -> dict[str, Any]:
    """A controller reference: the API server's garbage collector deletes the dependent with its owner."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_uid(obj: Mapping[str, Any]) -> str:
    """The uid of the object's controlling owner, "" when it has none."""
    for ref in meta(obj).get("ownerReferences") or ():
        if isinstance(ref, dict) and ref.get("controller"):
            return str(ref.get("uid") or "")
    return ""


def controller_of(obj: Mapping[str, Any], kind: str) -> str:
    """The name of the object's controlling owner if it is of `kind` (the key a pod event maps to)."""
    for ref in meta(obj).get("ownerReferences") or ():
        if isinstance(ref, dict) and ref.get("controller") and ref.get("kind") == kind:
            return str(ref.get("name") or "")
    return ""


def owned_pods(pods: Iterable[Obj], owner: Mapping[str, Any]) -> list[Obj]:
    uid = uid_of(owner)
    ns = namespace_of(owner)
    return [p for p in pods if namespace_of(p) == ns and controller_uid(p) == uid]


# ------------------------------------------------------------------------------------------------ pods


def condition(obj: Mapping[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in status(obj).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def is_ready(pod: Mapping[str, Any]) -> bool:
    """Kubernetes' IsPodReady: the Ready condition alone decides (the kubelet keeps it honest)."""
    c = condition(pod, "Ready")
    return c is not None and c.get("status") == "True"


def is_terminal(pod: Mapping[str, Any]) -> bool:
    return status(pod).get("phase") in ("Succeeded", "Failed")


def is_active(pod: Mapping[str, Any]) -> bool:
    """Counts towards a workload's replicas: not finished and not being deleted."""
    return not is_terminal(pod) and not meta(pod).get("deletionTimestamp")


def available_in(pod: Mapping[str, Any], min_ready_seconds: int, now: float) -> float | None:
    """0 if the pod is available now, the seconds until it will be if merely ready, None if not ready."""
    if not is_ready(pod):
        return None
    if min_ready_seconds <= 0:
        return 0.0
    since = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime"))
    if since is None:
        return 0.0
    return max(0.0, since + min_ready_seconds - now)


def delete_rank(pod: Mapping[str, Any]) -> tuple[int, int, int, float, str]:
    """Sort key, most expendable first (Kubernetes' ActivePods order): unscheduled, pending, unready, newest."""
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(str(status(pod).get("phase") or "Pending"), 0)
    return (
        1 if spec(pod).get("nodeName") else 0,
        phase_rank,
        1 if is_ready(pod) else 0,
        -(parse_time(meta(pod).get("creationTimestamp")) or 0.0),
        name_of(pod),
    )


# ------------------------------------------------------------------------------------------------ templates


def template_hash(template: Mapping[str, Any], collision_count: int = 0) -> str:
    """Kubernetes' ComputeHash shape: FNV-32a of the template, safe-encoded (no vowels, so no words)."""
    data = orjson.dumps(template, option=orjson.OPT_SORT_KEYS)
    if collision_count:
        data += str(collision_count).encode()
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE_CHARS[ord(c) % len(_SAFE_CHARS)] for c in str(h))


def pod_from_template(
    template: Mapping[str, Any],
    namespace: str,
    owner_ref: dict[str, Any],
    *,
    name: str = "",
    generate_name: str = "",
    labels: Mapping[str, str] | None = None,
) -> Obj:
    """A Pod as a workload controller creates it: the template's metadata and spec, owned by the workload."""
    tmeta = meta(template)
    pod_meta: dict[str, Any] = {"namespace": namespace, "ownerReferences": [owner_ref]}
    if name:
        pod_meta["name"] = name
    else:
        pod_meta["generateName"] = generate_name[:MAX_GENERATE_NAME]
    pod_labels = dict(tmeta.get("labels") or {})
    pod_labels.update(labels or {})
    if pod_labels:
        pod_meta["labels"] = pod_labels
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        pod_meta["finalizers"] = list(tmeta["finalizers"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": deep_copy(dict(spec(template))),
    }


def int_or_percent(value: Any, total: int, *, round_up: bool, default: str) -> int:
    """maxSurge/maxUnavailable: an int, or "N%" of `total` (surge rounds up, unavailable rounds down)."""
    if value is None:
        value = default
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    text = str(value).strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            return 0
        raw = pct * total / 100.0
        return max(0, math.ceil(raw) if round_up else math.floor(raw))
    try:
        return max(0, int(text))
    except ValueError:
        return 0


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """A metav1.LabelSelector (matchLabels + matchExpressions); an empty selector matches everything."""
    labels = labels or {}
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or ():
        key = expr.get("key", "")
        op = expr.get("operator", "")
        values = set(expr.get("values") or ())
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


# ------------------------------------------------------------------------------------------------ placement


def node_is_ready(node: Mapping[str, Any]) -> bool:
    c = condition(node, "Ready")
    return c is not None and c.get("status") == "True"


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' ToleratesTaint for one taint against a pod's tolerations."""
    for t in tolerations:
        effect = t.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        op = t.get("operator") or "Equal"
        key = t.get("key") or ""
        if op == "Exists":
            if not key or key == taint.get("key"):
                return True
            continue
        if key == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def untolerated_taint(pod_spec: Mapping[str, Any], node: Mapping[str, Any], *,
                      ignore_unschedulable: bool = False) -> dict[str, Any] | None:
    """The first NoSchedule/NoExecute taint of the node the pod does not tolerate (cordoning counts as one)."""
    tolerations = [t for t in pod_spec.get("tolerations") or () if isinstance(t, dict)]
    taints = [t for t in spec(node).get("taints") or () if isinstance(t, dict)]
    if spec(node).get("unschedulable") and not ignore_unschedulable:
        taints.append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
    for taint in taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not tolerates(tolerations, taint):
            return taint
    return None


def _node_term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    labels = meta(node).get("labels") or {}
    for expr in term.get("matchExpressions") or ():
        key = expr.get("key", "")
        op = expr.get("operator", "")
        values = [str(v) for v in expr.get("values") or ()]
        value = labels.get(key)
        if op == "In" and value not in values:
            return False
        if op == "NotIn" and value is not None and value in values:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
        if op in ("Gt", "Lt"):
            try:
                got, want = int(value or ""), int(values[0])
            except (ValueError, IndexError):
                return False
            if (op == "Gt" and not got > want) or (op == "Lt" and not got < want):
                return False
    for expr in term.get("matchFields") or ():
        if expr.get("key") != "metadata.name":
            return False
        name_in = name_of(node) in (expr.get("values") or ())
        if (expr.get("operator") == "In") != name_in:
            return False
    return bool(term.get("matchExpressions") or term.get("matchFields"))


def matches_node_selector(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """spec.nodeSelector and required node affinity (any term; all expressions of a term)."""
    labels = meta(node).get("labels") or {}
    for k, v in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    affinity = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = affinity.get("nodeSelectorTerms") or []
    return not terms or any(_node_term_matches(t, node) for t in terms if isinstance(t, dict))


def format_taint(taint: Mapping[str, Any]) -> str:
    """As the scheduler prints it: {key: value}."""
    return f"{{{taint.get('key', '')}: {taint.get('value', '')}}}"
