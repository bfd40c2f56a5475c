"""The three PATCH flavours kube-apiserver accepts: JSON merge (RFC 7386), JSON patch (RFC 6902) and
strategic merge patch for built-in types.

Every function works on a private deep copy and returns it, so a failed patch leaves the stored object
untouched and callers may keep using their inputs. Strategic merge follows
`k8s.io/apimachinery/pkg/util/strategicpatch` (server side: `StrategicMergeMapPatch`), with the struct
tags it reads replaced by a table of merge keys per resource, written out below.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from submariner.broker.apiserver.errors import ApiError
from submariner.broker.apiserver.resources import BUILTIN

__all__ = [
    "MAX_JSON_PATCH_OPERATIONS",
    "apply_json_patch",
    "apply_merge_patch",
    "apply_strategic_merge_patch",
    "supports_strategic_merge_patch",
]

MAX_JSON_PATCH_OPERATIONS = 10000  # kube-apiserver's limit


def _copy(value: Any) -> Any:
    """Deep copy of a JSON value; much faster than copy.deepcopy for dict/list/scalar trees."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


# --- RFC 7386 JSON merge patch -------------------------------------------------------------------------


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, `null` deletes, anything else (arrays too) replaces."""
    if not isinstance(patch, dict):
        return _copy(patch)
    result = _copy(target) if isinstance(target, dict) else {}
    _merge_into(result, patch)
    return result


def _merge_into(dst: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            dst.pop(key, None)
        elif isinstance(value, dict):
            current = dst.get(key)
            if not isinstance(current, dict):
                current = dst[key] = {}
            _merge_into(current, value)
        else:
            dst[key] = _copy(value)


# --- RFC 6902 JSON patch -------------------------------------------------------------------------------

_OPS_NEEDING_VALUE = frozenset({"add", "replace", "test"})
_OPS_NEEDING_FROM = frozenset({"move", "copy"})
_ALL_OPS = _OPS_NEEDING_VALUE | _OPS_NEEDING_FROM | {"remove"}


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, message)


def _pointer(path: Any, op: str) -> list[str]:
    """Split an RFC 6901 pointer; '' is the whole document."""
    if path == "":
        return []
    if not isinstance(path, str) or not path.startswith("/"):
        raise _unprocessable(f'{op} operation does not apply: invalid JSON pointer "{path}"')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(token: str, size: int, *, allow_end: bool, op: str, path: str) -> int:
    if token == "-" and allow_end:
        return size
    # RFC 6901: decimal digits, no leading zeros, no sign.
    if not token.isdigit() or not token.isascii() or (len(token) > 1 and token[0] == "0"):
        raise _unprocessable(f'{op} operation does not apply: invalid array index "{token}" in path "{path}"')
    i = int(token)
    if i > size or (i == size and not allow_end):
        raise _unprocessable(f'{op} operation does not apply: array index {i} out of bounds in path "{path}"')
    return i


def _parent(doc: Any, tokens: list[str], op: str, path: str) -> Any:
    """The container that holds the last token of `tokens`."""
    current = doc
    for token in tokens[:-1]:
        if isinstance(current, dict):
            if token not in current:
                raise _unprocessable(f'{op} operation does not apply: doc is missing path: "{path}"')
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(token, len(current), allow_end=False, op=op, path=path)]
        else:
            raise _unprocessable(f'{op} operation does not apply: doc is missing path: "{path}"')
    if not isinstance(current, dict | list):
        raise _unprocessable(f'{op} operation does not apply: doc is missing path: "{path}"')
    return current


def _get(doc: Any, tokens: list[str], op: str, path: str) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _unprocessable(f'{op} operation does not apply: doc is missing path: "{path}"')
        return parent[last]
    return parent[_index(last, len(parent), allow_end=False, op=op, path=path)]


def _add(doc: Any, tokens: list[str], value: Any, op: str, path: str) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens, op, path)
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    else:
        parent.insert(_index(tokens[-1], len(parent), allow_end=True, op=op, path=path), value)
    return doc


def _remove(doc: Any, tokens: list[str], op: str, path: str) -> Any:
    """Remove and return the value at `tokens` (which must exist)."""
    if not tokens:
        raise _unprocessable(f"{op} operation does not apply: cannot remove the whole document")
    parent = _parent(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _unprocessable(f'{op} operation does not apply: doc is missing path: "{path}"')
        return parent.pop(last)
    return parent.pop(_index(last, len(parent), allow_end=False, op=op, path=path))


def _replace(doc: Any, tokens: list[str], value: Any, op: str, path: str) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens, op, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _unprocessable(f'{op} operation does not apply: doc is missing key: "{path}"')
        parent[last] = value
    else:
        parent[_index(last, len(parent), allow_end=False, op=op, path=path)] = value
    return doc


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's ==, true is not 1 and "1" is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _check_operations(ops: Any) -> list[dict[str, Any]]:
    """A malformed patch document is the client's syntax error: 400, before anything is applied."""
    if not isinstance(ops, list):
        raise ApiError(400, "json patch must be a JSON array of operations")
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise ApiError(
            413,
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {len(ops)}",
        )
    for i, operation in enumerate(ops):
        if not isinstance(operation, dict):
            raise ApiError(400, f"json patch operation {i} must be a JSON object")
        op = operation.get("op")
        if op not in _ALL_OPS:
            raise ApiError(400, f"json patch operation {i}: unexpected kind: {op!r}")
        if not isinstance(operation.get("path"), str):
            raise ApiError(400, f'json patch operation {i} ({op}): missing or non-string "path"')
        if op in _OPS_NEEDING_VALUE and "value" not in operation:
            raise ApiError(400, f'json patch operation {i} ({op}): missing "value"')
        if op in _OPS_NEEDING_FROM and not isinstance(operation.get("from"), str):
            raise ApiError(400, f'json patch operation {i} ({op}): missing or non-string "from"')
    return ops


def apply_json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902, all-or-nothing; a failing `test` or a path that does not resolve is 422."""
    operations = _check_operations(ops)
    doc = _copy(target)
    for operation in operations:
        op: str = operation["op"]
        path: str = operation["path"]
        tokens = _pointer(path, op)
        if op == "add":
            doc = _add(doc, tokens, _copy(operation["value"]), op, path)
        elif op == "remove":
            _remove(doc, tokens, op, path)
        elif op == "replace":
            doc = _replace(doc, tokens, _copy(operation["value"]), op, path)
        elif op == "test":
            if not _json_equal(_get(doc, tokens, op, path), operation["value"]):
                raise _unprocessable(f'testing value "{path}" failed: test failed')
        else:
            from_path: str = operation["from"]
            from_tokens = _pointer(from_path, op)
            if op == "move":
                if from_tokens == tokens:
                    _get(doc, tokens, op, from_path)
                    continue
                if tokens[: len(from_tokens)] == from_tokens:
                    raise _unprocessable(
                        f'move operation does not apply: "{from_path}" cannot be moved into its own child '
                        f'"{path}"'
                    )
                value = _remove(doc, from_tokens, op, from_path)
            else:
                value = _copy(_get(doc, from_tokens, op, from_path))
            doc = _add(doc, tokens, value, op, path)
    return doc


# --- strategic merge patch: the schema -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    """What the struct tags say about one field: how its list merges, and its children's fields."""

    merge_key: str | None = None  # list of objects merged by this key
    merge_scalars: bool = False  # list of scalars merged as a set (metadata.finalizers)
    children: Mapping[str, _Field] = field(default_factory=dict)

    @property
    def merges(self) -> bool:
        return self.merge_key is not None or self.merge_scalars


def _obj(**children: _Field) -> _Field:
    return _Field(children=children)


def _by(key: str, **children: _Field) -> _Field:
    return _Field(merge_key=key, children=children)


_SET = _Field(merge_scalars=True)
_CONDITIONS = _by("type")
_METADATA = _obj(finalizers=_SET, ownerReferences=_by("uid"))

_CONTAINER: dict[str, _Field] = {
    "ports": _by("containerPort"),
    "env": _by("name"),
    "volumeMounts": _by("mountPath"),
    "volumeDevices": _by("devicePath"),
}
_POD_SPEC = _obj(
    containers=_by("name", **_CONTAINER),
    initContainers=_by("name", **_CONTAINER),
    ephemeralContainers=_by("name", **_CONTAINER),
    volumes=_by("name"),
    imagePullSecrets=_by("name"),
    hostAliases=_by("ip"),
    topologySpreadConstraints=_by("topologyKey"),
    resourceClaims=_by("name"),
    schedulingGates=_by("name"),
    # tolerations, readinessGates, ... carry no merge strategy upstream: replaced whole.
)
_POD_TEMPLATE = _obj(metadata=_METADATA, spec=_POD_SPEC)
_CONDITIONS_STATUS = _obj(conditions=_CONDITIONS)


def _root(spec: _Field | None = None, status: _Field | None = None, **more: _Field) -> _Field:
    children: dict[str, _Field] = {"metadata": _METADATA, **more}
    if spec is not None:
        children["spec"] = spec
    if status is not None:
        children["status"] = status
    return _Field(children=children)


_WORKLOAD = _root(spec=_obj(template=_POD_TEMPLATE), status=_CONDITIONS_STATUS)

# Storage key (ResourceType.key) -> schema. Kinds without an entry here but in BUILTIN get _GENERIC.
_SCHEMAS: dict[str, _Field] = {
    "pods": _root(
        spec=_POD_SPEC,
        status=_obj(
            conditions=_CONDITIONS, podIPs=_by("ip"), hostIPs=_by("ip"), resourceClaimStatuses=_by("name")
        ),
    ),
    "podtemplates": _root(template=_POD_TEMPLATE),
    "replicationcontrollers": _WORKLOAD,
    "apps/deployments": _WORKLOAD,
    "apps/daemonsets": _WORKLOAD,
    "apps/statefulsets": _WORKLOAD,
    "apps/replicasets": _WORKLOAD,
    "batch/jobs": _WORKLOAD,
    "batch/cronjobs": _root(
        spec=_obj(jobTemplate=_obj(metadata=_METADATA, spec=_obj(template=_POD_TEMPLATE)))
    ),
    "services": _root(spec=_obj(ports=_by("port")), status=_CONDITIONS_STATUS),
    "nodes": _root(spec=_obj(podCIDRs=_SET), status=_obj(conditions=_CONDITIONS, addresses=_by("type"))),
    "namespaces": _root(status=_CONDITIONS_STATUS),
    "serviceaccounts": _root(secrets=_by("name")),
    "policy/poddisruptionbudgets": _root(status=_CONDITIONS_STATUS),
    # EndpointSlice, Endpoints, RBAC rules/subjects, ConfigMap/Secret data: no merge keys, lists atomic.
}
_GENERIC = _root()
for _rt in BUILTIN:
    _SCHEMAS.setdefault(_rt.key, _GENERIC)
for _key in (
    "limitranges",
    "resourcequotas",
    "persistentvolumes",
    "persistentvolumeclaims",
    "storage.k8s.io/storageclasses",
    "networking.k8s.io/networkpolicies",
    "networking.k8s.io/ingresses",
    "scheduling.k8s.io/priorityclasses",
):
    _SCHEMAS.setdefault(_key, _GENERIC)


def supports_strategic_merge_patch(kind_key: str) -> bool:
    """Whether `kind_key` is a built-in type (strategic merge needs its Go struct tags)."""
    return kind_key in _SCHEMAS


# --- strategic merge patch: the algorithm --------------------------------------------------------------

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder"
_DELETE_FROM = "$deleteFromPrimitiveList"
_NO_CHILDREN: Mapping[str, _Field] = {}


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _hkey(value: Any) -> Hashable:
    """Hashable identity of a merge-key value or list scalar, keeping JSON's distinctions (true != 1)."""
    if isinstance(value, bool):
        return ("bool", value)
    if value is None or isinstance(value, str | int | float):
        return value
    return ("json", json.dumps(value, sort_keys=True))


def _merge_map(
    orig: dict[str, Any], patch: Mapping[str, Any], schema: Mapping[str, _Field]
) -> dict[str, Any]:
    """mergeMap: `orig` is a private copy and is updated in place; `patch` is only read."""
    directive = patch.get(_DIRECTIVE)
    if directive is not None:
        if directive == "replace":
            return _merge_map({}, {k: v for k, v in patch.items() if k != _DIRECTIVE}, schema)
        if directive == "delete":
            return {}
        if directive != "merge":  # "merge" is the default; upstream rejects it in maps, we accept it
            raise _bad(f"unknown patch type: {directive} in map: {dict(patch)}")

    if _RETAIN_KEYS in patch:
        _retain_keys(orig, patch)

    orders: dict[str, list[Any]] = {}
    before: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key[:1] != "$" or key in (_DIRECTIVE, _RETAIN_KEYS):
            continue
        if key.startswith(_SET_ORDER):
            name = _directive_target(key, _SET_ORDER, "invalid patch format of setElementOrder list")
            if not isinstance(value, list):
                raise _bad("invalid patch format of setElementOrder list")
            orders[name] = value
            current = orig.get(name)
            # Server order for the interleave; taking it before or after deletions orders survivors alike.
            before[name] = list(current) if isinstance(current, list) else []
        elif key.startswith(_DELETE_FROM):
            name = _directive_target(key, _DELETE_FROM, "invalid patch format of primitive list")
            if not isinstance(value, list):
                raise _bad("invalid patch format of primitive list")
            current = orig.get(name)
            if isinstance(current, list):
                doomed = {_hkey(v) for v in value}
                orig[name] = [v for v in current if _hkey(v) not in doomed]

    for key, value in patch.items():
        if key[:1] == "$" and _is_directive(key):
            continue
        if value is None:  # null deletes; an unmatched null is dropped (IgnoreUnmatchedNulls)
            orig.pop(key, None)
            continue
        spec = schema.get(key)
        if isinstance(value, dict):
            current = orig.get(key)
            base = current if isinstance(current, dict) else {}
            orig[key] = _merge_map(base, value, spec.children if spec else _NO_CHILDREN)
        elif isinstance(value, list):
            if spec is not None and spec.merges:
                current = orig.get(key)
                orig[key] = _merge_list(current if isinstance(current, list) else [], value, spec)
            else:
                orig[key] = _replace_list(value, spec)
        else:
            orig[key] = value

    for name, order in orders.items():
        _apply_element_order(orig, name, order, before[name], patch.get(name), schema.get(name))
    return orig


def _is_directive(key: str) -> bool:
    return key in (_DIRECTIVE, _RETAIN_KEYS) or key.startswith((_SET_ORDER, _DELETE_FROM))


def _directive_target(key: str, prefix: str, error: str) -> str:
    """`$setElementOrder/containers` -> `containers`."""
    if key[len(prefix) : len(prefix) + 1] != "/" or len(key) == len(prefix) + 1:
        raise _bad(error)
    return key[len(prefix) + 1 :]


def _retain_keys(orig: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """`$retainKeys`: clear every field of `orig` not listed; the patch may only set listed fields."""
    listed = patch[_RETAIN_KEYS]
    if not isinstance(listed, list) or not all(isinstance(k, str) for k in listed):
        raise _bad("invalid patch format of retainKeys")
    keep = set(listed)
    for key, value in patch.items():
        if value is None or _is_directive(key):
            continue
        if key not in keep:
            raise ApiError(422, "patch content doesn't match retainKeys list")
    for key in [k for k in orig if k not in keep]:
        del orig[key]


def _replace_list(patch: list[Any], spec: _Field | None) -> list[Any]:
    """A list without a merge strategy is replaced; objects in it are still cleaned of directives/nulls."""
    children = spec.children if spec else _NO_CHILDREN
    out: list[Any] = []
    for item in patch:
        if isinstance(item, dict):
            out.append(_merge_map({}, item, children))
        elif isinstance(item, list):
            out.append(_replace_list(item, None))
        else:
            out.append(item)
    return out


def _merge_list(orig: list[Any], patch: list[Any], spec: _Field) -> list[Any]:
    """mergeSlice: `orig` is a private copy; returns the merged list in kube's element order."""
    if not orig and not patch:
        return orig
    key = spec.merge_key
    if key is None:
        for item in patch:
            if isinstance(item, dict | list):
                raise _bad("list element types are not identical: expected a list of scalars")
        merged: list[Any] = []
        seen: set[Hashable] = set()
        for item in (*orig, *patch):
            h = _hkey(item)
            if h not in seen:
                seen.add(h)
                merged.append(item)
        return _normalize_order(merged, [_hkey(v) for v in patch], [_hkey(v) for v in orig], _hkey)

    items: list[Mapping[str, Any]] = []
    deletes: set[Hashable] = set()
    replace = False
    for item in patch:
        if not isinstance(item, dict):
            raise _bad(f"expected a map, but received a {type(item).__name__} in a list merged by {key}")
        directive = item.get(_DIRECTIVE)
        if directive is None:
            if key not in item:
                raise _bad(f"map: {item} does not contain declared merge key: {key}")
            items.append(item)
        elif directive == "delete":
            if key not in item:
                raise _bad(f"map: {item} does not contain declared merge key: {key}")
            deletes.add(_hkey(item[key]))
        elif directive == "replace":
            replace = True
        elif directive != "merge":  # "merge" is the list's default; upstream rejects it, we accept it
            raise _bad(f"unknown patch type: {directive} in map: {item}")
    if replace:
        return [_merge_map({}, item, spec.children) for item in items]
    if deletes:
        orig = [o for o in orig if not (isinstance(o, dict) and key in o and _hkey(o[key]) in deletes)]

    def keyof(element: Any) -> Hashable:
        return _hkey(element.get(key)) if isinstance(element, dict) else ("scalar", _hkey(element))

    server_order = [keyof(o) for o in orig]
    positions: dict[Hashable, int] = {}
    for i, element in enumerate(orig):
        if isinstance(element, dict) and key in element:
            positions.setdefault(keyof(element), i)
    for item in items:
        k = keyof(item)
        pos = positions.get(k)
        if pos is not None:
            orig[pos] = _merge_map(orig[pos], item, spec.children)
        else:
            positions[k] = len(orig)
            orig.append(_merge_map({}, item, spec.children))
    return _normalize_order(orig, [keyof(i) for i in items], server_order, keyof)


def _normalize_order(
    merged: list[Any],
    patch_order: list[Hashable],
    server_order: list[Hashable],
    keyof: Callable[[Any], Hashable],
) -> list[Any]:
    """normalizeElementOrder + mergeSortedSlice: patch items take the patch's order, server-only items
    keep theirs, and the two are interleaved by server position (an item new to the server goes first)."""
    patch_pos: dict[Hashable, int] = {}
    for i, k in enumerate(patch_order):
        patch_pos.setdefault(k, i)
    server_pos: dict[Hashable, int] = {}
    for i, k in enumerate(server_order):
        server_pos.setdefault(k, i)
    in_patch: list[Any] = []
    server_only: list[Any] = []
    for element in merged:
        (in_patch if keyof(element) in patch_pos else server_only).append(element)
    if not in_patch or not server_only:
        if in_patch:
            in_patch.sort(key=lambda e: patch_pos[keyof(e)])
            return in_patch
        server_only.sort(key=lambda e: server_pos.get(keyof(e), len(server_pos)))
        return server_only
    in_patch.sort(key=lambda e: patch_pos[keyof(e)])
    server_only.sort(key=lambda e: server_pos.get(keyof(e), len(server_pos)))
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) and j < len(in_patch):
        left = server_pos.get(keyof(server_only[i]))
        right = server_pos.get(keyof(in_patch[j]))
        if left is not None and right is not None and left < right:
            out.append(server_only[i])
            i += 1
        else:
            out.append(in_patch[j])
            j += 1
    out.extend(server_only[i:])
    out.extend(in_patch[j:])
    return out


def _apply_element_order(
    orig: dict[str, Any],
    name: str,
    order: list[Any],
    before: list[Any],
    patch_list: Any,
    spec: _Field | None,
) -> None:
    """`$setElementOrder/<name>`: put the merged list in the order the client had (kubectl apply sends it)."""
    current = orig.get(name)
    if not isinstance(current, list) or spec is None or not spec.merges:
        return  # nothing to order, or an atomic list: the directive is accepted and dropped
    key = spec.merge_key
    if key is None:
        keyof: Callable[[Any], Hashable] = _hkey
        order_keys = [_hkey(v) for v in order]
    else:
        merge_key = key

        def keyof(element: Any) -> Hashable:
            return _hkey(element.get(merge_key)) if isinstance(element, dict) else ("scalar", _hkey(element))

        order_keys = []
        for entry in order:
            if not isinstance(entry, dict) or key not in entry:
                raise _bad(f"map: {entry} does not contain declared merge key: {key}")
            order_keys.append(_hkey(entry[key]))
    if isinstance(patch_list, list):
        _check_patch_against_order(patch_list, order_keys, keyof, key)
    orig[name] = _normalize_order(current, order_keys, [keyof(v) for v in before], keyof)


def _check_patch_against_order(
    patch_list: list[Any], order_keys: list[Hashable], keyof: Callable[[Any], Hashable], key: str | None
) -> None:
    """validatePatchWithSetOrderList: patch items must appear in $setElementOrder, in the same order."""
    if not order_keys:
        return
    patch_keys = [
        keyof(item)
        for item in patch_list
        if key is None or not (isinstance(item, dict) and _DIRECTIVE in item)
    ]
    i = 0
    for order_key in order_keys:
        if i < len(patch_keys) and patch_keys[i] == order_key:
            i += 1
    if i < len(patch_keys):
        raise _bad(f"The order in patch list: {patch_list} doesn't match $setElementOrder list: {order_keys}")


def apply_strategic_merge_patch(target: Any, patch: Any, kind_key: str) -> dict[str, Any]:
    """Strategic merge patch of a built-in object; `kind_key` is its storage key ("pods", "apps/deployments").

    Custom resources have no Go struct tags to say how lists merge: 415, as kube-apiserver answers.
    """
    schema = _SCHEMAS.get(kind_key)
    if schema is None:
        raise ApiError(
            415, "strategic merge patch is not supported for custom resources", reason="UnsupportedMediaType"
        )
    if not isinstance(patch, dict):
        raise _bad("invalid JSON document")
    base = _copy(target) if isinstance(target, dict) else {}
    return _merge_map(base, patch, schema.children)
