"""Name, label and metadata validation, with kube-apiserver's exact messages."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from submariner.broker.apiserver.errors import ApiError
from submariner.broker.apiserver.resources import BUILTIN, ResourceType, resource_types_from_crd
from submariner.broker.apiserver.validation import (
    TOTAL_ANNOTATION_SIZE_LIMIT,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_key,
    is_label_value,
    validate_label_key,
    validate_label_value,
    validate_metadata,
    validate_name,
)

LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
QUALIFIED_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
    "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
    "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)

NAME_CASES: list[tuple[str, str, list[str]]] = [
    ("label", "my-name", []),
    ("label", "123-abc", []),
    ("label", "a", []),
    ("label", "a" * 63, []),
    ("label", "a" * 64, ["must be no more than 63 characters"]),
    ("label", "My-Name", [LABEL_MSG]),
    ("label", "my.name", [LABEL_MSG]),
    ("label", "-a", [LABEL_MSG]),
    ("label", "a-", [LABEL_MSG]),
    ("label", "a_b", [LABEL_MSG]),
    ("label", "a\n", [LABEL_MSG]),
    ("label", "", [LABEL_MSG]),
    ("subdomain", "example.com", []),
    ("subdomain", "a.b-c.d", []),
    ("subdomain", ".".join(["a" * 63] * 4)[:253], []),
    ("subdomain", "a" * 254, ["must be no more than 253 characters"]),
    ("subdomain", "A" * 254, ["must be no more than 253 characters", SUBDOMAIN_MSG]),
    ("subdomain", "Example.com", [SUBDOMAIN_MSG]),
    ("subdomain", "a..b", [SUBDOMAIN_MSG]),
    ("subdomain", ".a", [SUBDOMAIN_MSG]),
    ("subdomain", "a.", [SUBDOMAIN_MSG]),
    ("subdomain", "a_b", [SUBDOMAIN_MSG]),
    ("path", "system:controller:foo", []),
    ("path", "Anything Goes", []),
    ("path", ".", ["may not be '.'"]),
    ("path", "..", ["may not be '..'"]),
    ("path", "a/b", ["may not contain '/'"]),
    ("path", "a%b", ["may not contain '%'"]),
    ("path", "/%", ["may not contain '/'", "may not contain '%'"]),
]


@pytest.mark.parametrize(("rule", "name", "expected"), NAME_CASES)
def test_validate_name(rule: str, name: str, expected: list[str]) -> None:
    assert validate_name(name, rule) == expected


def test_validate_name_prefix_allows_trailing_dash() -> None:
    assert validate_name("web-", "subdomain", prefix=True) == []
    assert validate_name("web-", "label", prefix=True) == []
    assert validate_name("web-", "subdomain") == [SUBDOMAIN_MSG]
    assert validate_name(".", "path", prefix=True) == []
    assert validate_name("a/", "path", prefix=True) == ["may not contain '/'"]


def test_validate_name_unknown_rule() -> None:
    with pytest.raises(ValueError):
        validate_name("x", "bogus")


def test_dns_predicates() -> None:
    assert is_dns1123_label("abc-1")
    assert not is_dns1123_label("abc.1")
    assert not is_dns1123_label("a" * 64)
    assert is_dns1123_subdomain("abc.1")
    assert not is_dns1123_subdomain("ABC")
    assert not is_dns1123_subdomain("a" * 254)
    assert not is_dns1123_subdomain("abc\n")


KEY_CASES: list[tuple[str, list[str]]] = [
    ("app", []),
    ("App.Name_1-x", []),
    ("example.com/app", []),
    ("kubernetes.io/metadata.name", []),
    ("a" * 63, []),
    ("a" * 64, ["name part must be no more than 63 characters"]),
    ("", ["name part must be non-empty", "name part " + QUALIFIED_MSG]),
    ("-app", ["name part " + QUALIFIED_MSG]),
    ("app_", ["name part " + QUALIFIED_MSG]),
    ("a b", ["name part " + QUALIFIED_MSG]),
    ("/app", ["prefix part must be non-empty"]),
    ("example.com/", ["name part must be non-empty", "name part " + QUALIFIED_MSG]),
    ("Example.com/app", ["prefix part " + SUBDOMAIN_MSG]),
    (
        "a/b/c",
        [
            "a qualified name "
            + QUALIFIED_MSG
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ],
    ),
]


@pytest.mark.parametrize(("key", "expected"), KEY_CASES)
def test_validate_label_key(key: str, expected: list[str]) -> None:
    assert validate_label_key(key) == expected
    assert is_label_key(key) is (not expected)


VALUE_CASES: list[tuple[str, list[str]]] = [
    ("", []),
    ("v", []),
    ("My_value-1.2", []),
    ("v" * 63, []),
    ("v" * 64, ["must be no more than 63 characters"]),
    ("-v", [VALUE_MSG]),
    ("v.", [VALUE_MSG]),
    ("a b", [VALUE_MSG]),
    ("a/b", [VALUE_MSG]),
    ("é", [VALUE_MSG]),
]


@pytest.mark.parametrize(("value", "expected"), VALUE_CASES)
def test_validate_label_value(value: str, expected: list[str]) -> None:
    assert validate_label_value(value) == expected
    assert is_label_value(value) is (not expected)


@given(st.text(max_size=80))
def test_fast_predicates_agree_with_message_functions(text: str) -> None:
    assert is_label_key(text) is (validate_label_key(text) == [])
    assert is_label_value(text) is (validate_label_value(text) == [])
    assert is_dns1123_label(text) is (validate_name(text, "label") == [])
    assert is_dns1123_subdomain(text) is (validate_name(text, "subdomain") == [])


# --- validate_metadata ------------------------------------------------------------------------------------

TYPES = {t.key: t for t in BUILTIN}
PODS = TYPES["pods"]
NAMESPACES = TYPES["namespaces"]
SERVICES = TYPES["services"]
NODES = TYPES["nodes"]
ROLES = TYPES["rbac.authorization.k8s.io/roles"]
CONFIGMAPS = TYPES["configmaps"]


def _obj(meta: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"metadata": meta, **extra}


@pytest.mark.parametrize(
    ("obj", "rtype", "namespace"),
    [
        (_obj({"name": "web-0"}), PODS, "default"),
        (_obj({"name": "web-0", "namespace": "default"}, apiVersion="v1", kind="Pod"), PODS, "default"),
        (_obj({"generateName": "web-"}), PODS, "default"),
        (_obj({"name": "a.b.c"}), CONFIGMAPS, "default"),
        (_obj({"name": "kube-system"}), NAMESPACES, None),
        (_obj({"name": "system:controller:x"}), ROLES, "default"),
        (_obj({"name": "n1", "namespace": "ignored"}), NODES, None),  # cluster-scoped: namespace ignored
        (_obj({"name": "s", "namespace": "default"}), SERVICES, None),
        (
            _obj(
                {
                    "name": "web",
                    "labels": {"app": "web", "example.com/tier": "", "x": "y" * 63},
                    "annotations": {"Example.COM/Note": 'anything at all: {"json": true}', "a": ""},
                }
            ),
            PODS,
            "default",
        ),
        ({"metadata": {"name": "no-type-meta"}}, CONFIGMAPS, "default"),
    ],
)
def test_validate_metadata_accepts(obj: dict[str, Any], rtype: ResourceType, namespace: str | None) -> None:
    validate_metadata(obj, rtype, namespace=namespace)


def _invalid(obj: dict[str, Any], rtype: ResourceType, namespace: str | None = "default") -> ApiError:
    with pytest.raises(ApiError) as err:
        validate_metadata(obj, rtype, namespace=namespace)
    assert err.value.code == 422
    assert err.value.reason == "Invalid"
    return err.value


def test_validate_metadata_requires_a_name() -> None:
    err = _invalid(_obj({}), PODS)
    assert err.message == 'Pod "" is invalid: metadata.name: Required value: name or generateName is required'
    err = _invalid({"kind": "Pod"}, PODS)
    assert err.details is not None
    assert err.details["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Required value: name or generateName is required",
            "field": "metadata.name",
        }
    ]


def test_validate_metadata_name_rules_follow_the_resource_type() -> None:
    err = _invalid(_obj({"name": "my.ns"}), NAMESPACES, None)
    assert err.message == f'Namespace "my.ns" is invalid: metadata.name: Invalid value: "my.ns": {LABEL_MSG}'
    assert err.details is not None and err.details["kind"] == "Namespace"
    err = _invalid(_obj({"name": "Web"}), PODS)
    assert err.message == f'Pod "Web" is invalid: metadata.name: Invalid value: "Web": {SUBDOMAIN_MSG}'
    err = _invalid(_obj({"name": "a/b"}), ROLES)
    assert err.message == 'Role "a/b" is invalid: metadata.name: Invalid value: "a/b": may not contain \'/\''
    assert err.details is not None and err.details["group"] == "rbac.authorization.k8s.io"
    err = _invalid(_obj({"generateName": "Web-"}), PODS)
    assert 'metadata.generateName: Invalid value: "Web-"' in err.message
    _invalid(_obj({"name": 5}), PODS)


def test_validate_metadata_labels() -> None:
    err = _invalid(_obj({"name": "p", "labels": {"bad key": "v"}}), PODS)
    assert (
        err.message
        == f'Pod "p" is invalid: metadata.labels: Invalid value: "bad key": name part {QUALIFIED_MSG}'
    )
    err = _invalid(_obj({"name": "p", "labels": {"k": "bad value"}}), PODS)
    assert err.message == f'Pod "p" is invalid: metadata.labels: Invalid value: "bad value": {VALUE_MSG}'
    err = _invalid(_obj({"name": "p", "labels": {"k": 1}}), PODS)
    assert "metadata.labels: Invalid value: 1" in err.message
    _invalid(_obj({"name": "p", "labels": ["a"]}), PODS)


def test_validate_metadata_collects_every_cause() -> None:
    err = _invalid(_obj({"name": "Bad_Name", "labels": {"-k": "-v"}}), PODS)
    assert err.details is not None
    assert [c["field"] for c in err.details["causes"]] == [
        "metadata.name",
        "metadata.labels",
        "metadata.labels",
    ]


def test_validate_metadata_annotations() -> None:
    err = _invalid(_obj({"name": "p", "annotations": {"a/b/c": "x"}}), PODS)
    assert 'metadata.annotations: Invalid value: "a/b/c": a qualified name' in err.message
    big = {"a": "x" * (TOTAL_ANNOTATION_SIZE_LIMIT - 1)}
    validate_metadata(_obj({"name": "p", "annotations": big}), PODS, namespace="default")
    too_big = {"a": "x" * TOTAL_ANNOTATION_SIZE_LIMIT}
    err = _invalid(_obj({"name": "p", "annotations": too_big}), PODS)
    assert err.message == 'Pod "p" is invalid: metadata.annotations: Too long: must have at most 262144 bytes'


def test_validate_metadata_namespace_mismatch_is_400() -> None:
    with pytest.raises(ApiError) as err:
        validate_metadata(_obj({"name": "p", "namespace": "other"}), PODS, namespace="default")
    assert err.value.code == 400
    assert err.value.message == (
        "the namespace of the provided object does not match the namespace sent on the request"
    )


def test_validate_metadata_bad_namespace_without_url_namespace() -> None:
    err = _invalid(_obj({"name": "p", "namespace": "Bad"}), PODS, None)
    assert "metadata.namespace" in err.message


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        (
            _obj({"name": "p"}, apiVersion="apps/v1", kind="Pod"),
            "the API version in the data (apps/v1) does not match the expected API version (v1)",
        ),
        (
            _obj({"name": "p"}, apiVersion="v1", kind="Service"),
            "the kind in the data (Service) does not match the expected kind (Pod)",
        ),
        (_obj({"name": "p"}, apiVersion="v2"), "the API version in the data (v2)"),
        ({"metadata": "nope"}, "metadata must be a JSON object"),
        ([], "must be a JSON object"),
    ],
)
def test_validate_metadata_type_mismatch_is_400(obj: Any, fragment: str) -> None:
    with pytest.raises(ApiError) as err:
        validate_metadata(obj, PODS, namespace="default")
    assert err.value.code == 400
    assert fragment in err.value.message


def test_validate_metadata_accepts_any_served_crd_version() -> None:
    crd = {
        "spec": {
            "group": "submariner.io",
            "names": {"plural": "clusters", "kind": "Cluster"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": True}, {"name": "v1beta1", "served": True}],
        }
    }
    v1 = resource_types_from_crd(crd)[0]
    validate_metadata(
        _obj({"name": "c"}, apiVersion="submariner.io/v1beta1", kind="Cluster"), v1, namespace="ns"
    )
    with pytest.raises(ApiError):
        validate_metadata(
            _obj({"name": "c"}, apiVersion="submariner.io/v2", kind="Cluster"), v1, namespace="ns"
        )
    with pytest.raises(ApiError):
        validate_metadata(_obj({"name": "c"}, apiVersion="other.io/v1", kind="Cluster"), v1, namespace="ns")


def test_validate_metadata_does_not_mutate() -> None:
    obj = _obj({"name": "n1", "namespace": "x", "labels": {"a": "b"}})
    before = repr(obj)
    validate_metadata(obj, NODES, namespace=None)
    assert repr(obj) == before
