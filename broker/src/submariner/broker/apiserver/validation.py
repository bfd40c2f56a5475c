"""Object-metadata validation with kube-apiserver's exact wording, so clients and tests see familiar errors.

The checks mirror `k8s.io/apimachinery/pkg/util/validation` (names, label keys and values) and
`ValidateObjectMeta`; regexes are compiled once at import because every create/update runs them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from submariner.broker.apiserver.errors import ApiError, invalid
from submariner.broker.apiserver.resources import ResourceType

__all__ = [
    "DNS1123_LABEL_MAX_LENGTH",
    "DNS1123_SUBDOMAIN_MAX_LENGTH",
    "LABEL_VALUE_MAX_LENGTH",
    "QUALIFIED_NAME_MAX_LENGTH",
    "TOTAL_ANNOTATION_SIZE_LIMIT",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "is_label_key",
    "is_label_value",
    "validate_dns1123_label",
    "validate_dns1123_subdomain",
    "validate_label_key",
    "validate_label_value",
    "validate_metadata",
    "validate_name",
    "validate_path_segment",
]

DNS1123_LABEL_MAX_LENGTH = 63
DNS1123_SUBDOMAIN_MAX_LENGTH = 253
QUALIFIED_NAME_MAX_LENGTH = 63
LABEL_VALUE_MAX_LENGTH = 63
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT = "(" + _QUALIFIED_NAME_FMT + ")?"

# fullmatch, not `^...$`: Python's `$` also matches before a trailing newline, Go's does not.
_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_QUALIFIED_NAME_RE = re.compile(_QUALIFIED_NAME_FMT)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Go's validation.RegexError, including its quirky double space between examples."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    text = msg + " (e.g. "
    for i, example in enumerate(examples):
        if i:
            text += " or "
        text += f"'{example}', "
    return text + f"regex used for validation is '{fmt}')"


def _max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


_EMPTY_ERROR = "must be non-empty"
_DNS1123_LABEL_MSG = _regex_error(
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character",
    _DNS1123_LABEL_FMT,
    "my-name",
    "123-abc",
)
_DNS1123_SUBDOMAIN_MSG = _regex_error(
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character",
    _DNS1123_SUBDOMAIN_FMT,
    "example.com",
)
_QUALIFIED_NAME_MSG = _regex_error(
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character",
    _QUALIFIED_NAME_FMT,
    "MyName",
    "my.name",
    "123-abc",
)
_LABEL_VALUE_MSG = _regex_error(
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character",
    _LABEL_VALUE_FMT,
    "MyValue",
    "my_value",
    "12345",
)
_QUALIFIED_NAME_PARTS_MSG = (
    "a qualified name "
    + _QUALIFIED_NAME_MSG
    + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
)


# --- fast boolean checks (hot path: selectors, list filtering) -------------------------------------------


def is_dns1123_label(value: str) -> bool:
    """True for a DNS-1123 label: namespace and service names."""
    return len(value) <= DNS1123_LABEL_MAX_LENGTH and _DNS1123_LABEL_RE.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    """True for a DNS-1123 subdomain: the name rule of most resources."""
    return len(value) <= DNS1123_SUBDOMAIN_MAX_LENGTH and _DNS1123_SUBDOMAIN_RE.fullmatch(value) is not None


def is_label_key(key: str) -> bool:
    """True for a qualified name: `[prefix/]name`, prefix a DNS subdomain, name ≤ 63 chars."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or "/" in prefix or not is_dns1123_subdomain(prefix)):
        return False
    return len(name) <= QUALIFIED_NAME_MAX_LENGTH and _QUALIFIED_NAME_RE.fullmatch(name) is not None


def is_label_value(value: str) -> bool:
    """True for a label value: empty, or ≤ 63 of [A-Za-z0-9._-] starting and ending alphanumeric."""
    return len(value) <= LABEL_VALUE_MAX_LENGTH and _LABEL_VALUE_RE.fullmatch(value) is not None


# --- checks returning kube's messages -------------------------------------------------------------------


def validate_dns1123_label(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > DNS1123_LABEL_MAX_LENGTH:
        errs.append(_max_len_error(DNS1123_LABEL_MAX_LENGTH))
    if _DNS1123_LABEL_RE.fullmatch(value) is None:
        errs.append(_DNS1123_LABEL_MSG)
    return errs


def validate_dns1123_subdomain(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        errs.append(_max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH))
    if _DNS1123_SUBDOMAIN_RE.fullmatch(value) is None:
        errs.append(_DNS1123_SUBDOMAIN_MSG)
    return errs


def validate_path_segment(value: str, prefix: bool = False) -> list[str]:
    """RBAC names only have to be usable as one URL path segment; a generateName prefix may be '.'."""
    if not prefix and value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


def validate_label_key(key: str) -> list[str]:
    """Messages of Go's IsQualifiedName, used for label and annotation keys."""
    if is_label_key(key):
        return []
    errs: list[str] = []
    parts = key.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part " + _EMPTY_ERROR)
        else:
            errs.extend("prefix part " + m for m in validate_dns1123_subdomain(prefix))
    else:
        return [_QUALIFIED_NAME_PARTS_MSG]
    if not name:
        errs.append("name part " + _EMPTY_ERROR)
    elif len(name) > QUALIFIED_NAME_MAX_LENGTH:
        errs.append("name part " + _max_len_error(QUALIFIED_NAME_MAX_LENGTH))
    if _QUALIFIED_NAME_RE.fullmatch(name) is None:
        errs.append("name part " + _QUALIFIED_NAME_MSG)
    return errs


def validate_label_value(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > LABEL_VALUE_MAX_LENGTH:
        errs.append(_max_len_error(LABEL_VALUE_MAX_LENGTH))
    if _LABEL_VALUE_RE.fullmatch(value) is None:
        errs.append(_LABEL_VALUE_MSG)
    return errs


def _path_segment_rule(value: str, prefix: bool) -> list[str]:
    return validate_path_segment(value, prefix)


def _label_rule(value: str, prefix: bool) -> list[str]:
    return validate_dns1123_label(value)


def _subdomain_rule(value: str, prefix: bool) -> list[str]:
    return validate_dns1123_subdomain(value)


_NAME_RULES: dict[str, Callable[[str, bool], list[str]]] = {
    "label": _label_rule,
    "subdomain": _subdomain_rule,
    "path": _path_segment_rule,
}


def validate_name(name: str, rule: str, *, prefix: bool = False) -> list[str]:
    """Messages for `name` under a ResourceType.name_rule ("label", "subdomain" or "path").

    `prefix=True` checks a generateName: the random suffix will follow, so a trailing '-' is fine.
    """
    try:
        check = _NAME_RULES[rule]
    except KeyError:
        raise ValueError(f"unknown name rule {rule!r}") from None
    if prefix:
        name = _mask_trailing_dash(name)
    return check(name, prefix)


def _mask_trailing_dash(name: str) -> str:
    """Go's maskTrailingDash: a generateName may end in '-' because a suffix is appended."""
    return name[:-1] + "a" if len(name) > 1 and name.endswith("-") else name


def _quote(value: Any) -> str:
    """Go's %q closely enough for error messages."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _invalid_value(value: Any, msg: str) -> str:
    return f"Invalid value: {_quote(value)}: {msg}"


def _check_string_map(value: Any, field: str, causes: list[tuple[str, str]], *, annotations: bool) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        causes.append((field, _invalid_value(value, "must be an object of string keys and values")))
        return
    size = 0
    for k, v in value.items():
        if not isinstance(k, str):
            causes.append((field, _invalid_value(k, "keys must be strings")))
            continue
        # kube lower-cases annotation keys before checking them (they are case-insensitive there).
        key = k.lower() if annotations else k
        if not is_label_key(key):
            causes.extend((field, _invalid_value(k, m)) for m in validate_label_key(key))
        if not isinstance(v, str):
            causes.append((field, _invalid_value(v, "values must be strings")))
            continue
        if annotations:
            size += len(k) + len(v)
        elif not is_label_value(v):
            causes.extend((field, _invalid_value(v, m)) for m in validate_label_value(v))
    if annotations and size > TOTAL_ANNOTATION_SIZE_LIMIT:
        causes.append((field, f"Too long: must have at most {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"))


def _check_type_meta(obj: Mapping[str, Any], rtype: ResourceType) -> None:
    """Reject a body meant for another resource; missing apiVersion/kind are defaulted by the caller."""
    api_version = obj.get("apiVersion")
    if api_version:
        group, _, version = str(api_version).rpartition("/")
        versions = rtype.served_versions or (rtype.version,)
        if group != rtype.group or version not in versions:
            raise ApiError(
                400,
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({rtype.api_version})",
            )
    kind = obj.get("kind")
    if kind and kind != rtype.kind:
        raise ApiError(400, f"the kind in the data ({kind}) does not match the expected kind ({rtype.kind})")


def validate_metadata(obj: Mapping[str, Any], rtype: ResourceType, *, namespace: str | None) -> None:
    """Check an incoming object's type and metadata; raise 400 for a misdirected body, 422 otherwise.

    `namespace` is the one in the request URL (None when it has none). A namespace in a cluster-scoped
    object is ignored here: the caller drops it, as kube-apiserver does. Nothing is mutated.
    """
    if not isinstance(obj, Mapping):
        raise ApiError(400, "the request body must be a JSON object")
    _check_type_meta(obj, rtype)
    meta = obj.get("metadata")
    if meta is None:
        meta = {}
    elif not isinstance(meta, Mapping):
        raise ApiError(400, "metadata must be a JSON object")

    obj_ns = meta.get("namespace")
    if rtype.namespaced and namespace and obj_ns and obj_ns != namespace:
        raise ApiError(
            400, "the namespace of the provided object does not match the namespace sent on the request"
        )

    causes: list[tuple[str, str]] = []
    name = meta.get("name")
    generate_name = meta.get("generateName")
    if name is not None and not isinstance(name, str):
        causes.append(("metadata.name", _invalid_value(name, "must be a string")))
        name = None
    if generate_name is not None and not isinstance(generate_name, str):
        causes.append(("metadata.generateName", _invalid_value(generate_name, "must be a string")))
        generate_name = None
    if generate_name:
        for msg in validate_name(generate_name, rtype.name_rule, prefix=True):
            causes.append(("metadata.generateName", _invalid_value(generate_name, msg)))
    if name:
        for msg in validate_name(name, rtype.name_rule):
            causes.append(("metadata.name", _invalid_value(name, msg)))
    elif not generate_name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    if rtype.namespaced and obj_ns:
        if not isinstance(obj_ns, str):
            causes.append(("metadata.namespace", _invalid_value(obj_ns, "must be a string")))
        elif not is_dns1123_label(obj_ns):
            causes.extend(
                ("metadata.namespace", _invalid_value(obj_ns, m)) for m in validate_dns1123_label(obj_ns)
            )

    _check_string_map(meta.get("labels"), "metadata.labels", causes, annotations=False)
    _check_string_map(meta.get("annotations"), "metadata.annotations", causes, annotations=True)
    if causes:
        raise invalid(rtype.kind, name or generate_name or "", causes, rtype.group)
