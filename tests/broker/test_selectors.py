"""Label and field selectors: kube's syntax, its error messages, and matching."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from submariner.broker.apiserver.errors import ApiError
from submariner.broker.apiserver.selectors import FieldSelector, LabelSelector

LABELS = {"app": "web", "tier": "frontend", "example.com/team": "a-team", "empty": "", "n": "5"}

# (selector, labels, matches)
MATCH_CASES: list[tuple[str, dict[str, str] | None, bool]] = [
    ("", LABELS, True),
    ("   ", LABELS, True),
    ("", None, True),
    ("app=web", LABELS, True),
    ("app=db", LABELS, False),
    ("app==web", LABELS, True),
    ("app==db", LABELS, False),
    ("app!=db", LABELS, True),
    ("app!=web", LABELS, False),
    ("missing!=x", LABELS, True),  # != matches when the key is absent, as in kube
    ("app in (web,db)", LABELS, True),
    ("app in (db)", LABELS, False),
    ("missing in (x)", LABELS, False),
    ("app notin (db,cache)", LABELS, True),
    ("app notin (web)", LABELS, False),
    ("missing notin (x)", LABELS, True),
    ("app", LABELS, True),
    ("missing", LABELS, False),
    ("!missing", LABELS, True),
    ("!app", LABELS, False),
    ("empty", LABELS, True),
    ("empty=", LABELS, True),
    ("empty in ()", LABELS, True),  # "()" is the set holding the empty value
    ("empty in (,x)", LABELS, True),
    ("app=web,tier=frontend", LABELS, True),
    ("app=web,tier=backend", LABELS, False),
    ("example.com/team=a-team", LABELS, True),
    ("  app = web ,  tier in ( frontend , x ) , ! missing  ", LABELS, True),
    ("app=web,\ttier\n=frontend", LABELS, True),
    ("n>4", LABELS, True),
    ("n>5", LABELS, False),
    ("n<6", LABELS, True),
    ("app>1", LABELS, False),  # a non-integer label never satisfies gt/lt
    ("in=x", {"in": "x"}, True),  # "in"/"notin" are plain identifiers where a key or value is expected
    ("x in (in,notin)", {"x": "notin"}, True),
    ("app=web", None, False),
    ("!app", None, True),
    ("app notin (web)", {}, True),
]


@pytest.mark.parametrize(("text", "labels", "expected"), MATCH_CASES)
def test_label_selector_matches(text: str, labels: dict[str, str] | None, expected: bool) -> None:
    assert LabelSelector.parse(text).matches(labels) is expected


# (selector, exact kube message)
ERROR_CASES = [
    ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
    ("a=b=c", "found '=', expected: ',' or 'end of string'"),
    ("a=b c", "found 'c', expected: ',' or 'end of string'"),
    ("a in x", "unable to parse requirement: found 'x' expected: '('"),
    ("a notin", "unable to parse requirement: found '' expected: '('"),
    ("a in (x", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("a in (x y)", "unable to parse requirement: found 'y', expected: ',' or ')'"),
    ("a in (x,", "unable to parse requirement: found '', expected: ',', or identifier"),
    ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
    ("a=(", "unable to parse requirement: found '(', expected: identifier"),
    (",", "found ',', expected: !, identifier, or 'end of string'"),
    ("(", "found '(', expected: !, identifier, or 'end of string'"),
    ("a,", "found '', expected: identifier after ','"),
    ("a,,b", "found ',', expected: identifier after ','"),
    ("!", "unable to parse requirement: found '', expected: identifier"),
    ("!=a", "found '!=', expected: !, identifier, or 'end of string'"),
    ("!a=b", "found '=', expected: ',' or 'end of string'"),
    (
        "n>x",
        'unable to parse requirement: values[0]: Invalid value: "x": '
        "for 'Gt', 'Lt' operators, the value must be an integer",
    ),
]


@pytest.mark.parametrize(("text", "message"), ERROR_CASES)
def test_label_selector_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(ApiError) as err:
        LabelSelector.parse(text)
    assert err.value.code == 400
    assert err.value.reason == "BadRequest"
    assert err.value.message == message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("-a=b", '<nil>: Invalid value: "-a": name part must consist of alphanumeric characters'),
        ("a_=b", 'Invalid value: "a_": name part must consist of alphanumeric characters'),
        ("Example.com/a=b", "prefix part a lowercase RFC 1123 subdomain must consist of"),
        ("/a", "prefix part must be non-empty"),
        ("a/", "name part must be non-empty"),
        ("a/b/c", "a qualified name must consist of alphanumeric characters"),
        ("a" * 64, "name part must be no more than 63 characters"),
        ("a=-b", 'values[0][a]: Invalid value: "-b": a valid label must be an empty string'),
        ("a=" + "b" * 64, "must be no more than 63 characters"),
        ("a in (ok,bad_)", 'values[0][a]: Invalid value: "bad_": a valid label must be'),
    ],
)
def test_label_selector_rejects_bad_keys_and_values(text: str, fragment: str) -> None:
    with pytest.raises(ApiError) as err:
        LabelSelector.parse(text)
    assert err.value.code == 400
    assert err.value.message.startswith("unable to parse requirement: ")
    assert fragment in err.value.message


def test_label_selector_accepts_longest_valid_key_and_value() -> None:
    key = ".".join(["a" * 63] * 3) + "." + "a" * 61 + "/" + "b" * 63  # 253-char prefix
    value = "v" * 63
    assert LabelSelector.parse(f"{key}={value}").matches({key: value})


def test_label_selector_is_empty_and_str_are_canonical() -> None:
    assert LabelSelector.parse("").is_empty
    assert LabelSelector.from_dict(None).is_empty
    assert LabelSelector.from_dict({}).is_empty
    sel = LabelSelector.parse("z in (b,a), !y, x, w!=1, v==2, u=3")
    assert not sel.is_empty
    assert str(sel) == "u=3,v==2,w!=1,x,!y,z in (a,b)"
    assert LabelSelector.parse(str(sel)) == sel


def test_label_selector_parse_is_cached_and_immutable() -> None:
    assert LabelSelector.parse("a=b,c") is LabelSelector.parse("a=b,c")
    sel = LabelSelector.parse("a=b")
    with pytest.raises(AttributeError):
        sel.requirements = ()  # type: ignore[misc]


def test_label_selector_requires_exact_match() -> None:
    sel = LabelSelector.parse("a=1,b in (2),c in (3,4),d!=5")
    assert sel.requires_exact_match("a") == "1"
    assert sel.requires_exact_match("b") == "2"
    assert sel.requires_exact_match("c") is None
    assert sel.requires_exact_match("d") is None
    assert sel.requires_exact_match("zzz") is None


FROM_DICT_CASES: list[tuple[dict[str, Any] | None, dict[str, str] | None, bool]] = [
    (None, {"a": "b"}, True),
    (None, None, True),
    ({}, {"a": "b"}, True),
    ({"matchLabels": {}, "matchExpressions": []}, {}, True),
    ({"matchLabels": {"app": "web"}}, LABELS, True),
    ({"matchLabels": {"app": "db"}}, LABELS, False),
    ({"matchLabels": {"app": "web"}}, None, False),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}, LABELS, True),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, LABELS, False),
    ({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["x"]}]}, LABELS, True),
    ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, LABELS, True),
    ({"matchExpressions": [{"key": "missing", "operator": "Exists"}]}, LABELS, False),
    ({"matchExpressions": [{"key": "missing", "operator": "DoesNotExist"}]}, LABELS, True),
    ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist", "values": []}]}, LABELS, False),
    (
        {
            "matchLabels": {"tier": "frontend"},
            "matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}],
        },
        LABELS,
        True,
    ),
]


@pytest.mark.parametrize(("sel", "labels", "expected"), FROM_DICT_CASES)
def test_label_selector_from_dict(
    sel: dict[str, Any] | None, labels: dict[str, str] | None, expected: bool
) -> None:
    assert LabelSelector.from_dict(sel).matches(labels) is expected


@pytest.mark.parametrize(
    ("sel", "fragment"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]},
            '"Equals" is not a valid',
        ),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, "values set can't be empty"),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn"}]}, "values set can't be empty"),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            "values set must be empty for exists and does not exist",
        ),
        ({"matchExpressions": [{"operator": "Exists"}]}, "key: Required value"),
        ({"matchExpressions": ["a"]}, "must be an object"),
        ({"matchLabels": {"bad key": "v"}}, 'Invalid value: "bad key"'),
        ({"matchLabels": {"k": "bad value"}}, 'Invalid value: "bad value"'),
        ({"matchLabels": {"k": 1}}, "must be strings"),
        ({"matchLabels": ["a"]}, "matchLabels must be an object"),
    ],
)
def test_label_selector_from_dict_errors(sel: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ApiError) as err:
        LabelSelector.from_dict(sel)
    assert err.value.code == 400
    assert fragment in err.value.message


def test_label_selector_from_dict_equals_parsed_form() -> None:
    sel = LabelSelector.from_dict(
        {
            "matchLabels": {"b": "1"},
            "matchExpressions": [{"key": "a", "operator": "In", "values": ["y", "x"]}],
        }
    )
    assert str(sel) == "a in (x,y),b=1"


# --- field selectors -------------------------------------------------------------------------------------

POD = {
    "metadata": {"name": "web-0", "namespace": "default"},
    "spec": {"nodeName": "node-1", "hostNetwork": True, "priority": 7},
    "status": {"phase": "Running"},
}
EVENT = {"type": "Warning", "involvedObject": {"name": "web-0", "kind": "Pod"}, "metadata": {"name": "e1"}}

FIELD_CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("", POD, True),
    ("metadata.name=web-0", POD, True),
    ("metadata.name==web-0", POD, True),
    ("metadata.name!=web-0", POD, False),
    ("metadata.name=web-1", POD, False),
    ("metadata.namespace=default,status.phase=Running", POD, True),
    ("metadata.namespace=default,status.phase!=Running", POD, False),
    ("spec.nodeName=node-1", POD, True),
    ("spec.nodeName=", POD, False),
    ("spec.missing=", POD, True),  # a missing field compares as ""
    ("spec.missing!=", POD, False),
    ("spec.missing.deeper=", POD, True),
    ("status.phase.deeper=", POD, True),  # walking into a scalar is "missing" too
    ("spec.hostNetwork=true", POD, True),
    ("spec.priority=7", POD, True),
    ("spec=x", POD, False),  # an object never equals a string
    ("spec!=x", POD, True),
    ("involvedObject.name=web-0,type=Warning", EVENT, True),
    ("involvedObject.kind=Node", EVENT, False),
    (" metadata.name = web-0 ", POD, True),
    ("metadata.name=web-0,,", POD, True),
    ("a=x\\,y", {"a": "x,y"}, True),
    ("a=x\\=y", {"a": "x=y"}, True),
    ("a=x\\\\y", {"a": "x\\y"}, True),
]


@pytest.mark.parametrize(("text", "obj", "expected"), FIELD_CASES)
def test_field_selector_matches(text: str, obj: dict[str, Any], expected: bool) -> None:
    assert FieldSelector.parse(text).matches(obj) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        ("=x", "invalid selector: '=x'; can't understand '=x'"),
        ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
        ("a b=c", "invalid selector: 'a b=c'; can't understand 'a b=c'"),
        ("a=b=c", "invalid field selector: unescaped character in value: ="),
        ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
        ("a=b\\n", "invalid field selector: invalid escape sequence: \\n"),
    ],
)
def test_field_selector_errors(text: str, message: str) -> None:
    with pytest.raises(ApiError) as err:
        FieldSelector.parse(text)
    assert err.value.code == 400
    assert err.value.message == message


def test_field_selector_helpers() -> None:
    assert FieldSelector.parse("").is_empty
    sel = FieldSelector.parse("metadata.name=a\\,b,status.phase!=Running")
    assert not sel.is_empty
    assert sel.requires_exact_match("metadata.name") == "a,b"
    assert sel.requires_exact_match("status.phase") is None
    assert FieldSelector.parse(str(sel)) == sel


# --- properties ------------------------------------------------------------------------------------------

_SELECTOR_ALPHABET = st.sampled_from([*"ab=!(),<> \t-_./in", "in", "notin", "x", "!=", "=="])


@settings(max_examples=400)
@given(st.one_of(st.text(), st.lists(_SELECTOR_ALPHABET).map("".join)))
def test_label_selector_parse_raises_only_api_errors(text: str) -> None:
    try:
        sel = LabelSelector.parse(text)
    except ApiError as e:
        assert e.code == 400
    else:
        assert LabelSelector.parse(str(sel)) == sel
        sel.matches({"a": "b"})


@settings(max_examples=200)
@given(st.text())
def test_field_selector_parse_raises_only_api_errors(text: str) -> None:
    try:
        FieldSelector.parse(text).matches({"a": {"b": "c"}})
    except ApiError as e:
        assert e.code == 400


_NAME = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?", fullmatch=True)
_PREFIX = st.from_regex(
    r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?){0,2}", fullmatch=True
)
_KEY = st.one_of(_NAME, st.builds(lambda p, n: f"{p}/{n}", _PREFIX, _NAME))
_VALUE = st.one_of(st.just(""), _NAME)
_LABEL_SETS = st.dictionaries(_KEY, _VALUE, max_size=6)


@given(_LABEL_SETS)
def test_selectors_built_from_labels_match_them(labels: dict[str, str]) -> None:
    equality = ",".join(f"{k}={v}" for k, v in labels.items())
    set_based = ",".join(f"{k} in ({v})" for k, v in labels.items())
    exists = ",".join(labels)
    for text in (equality, set_based, exists):
        assert LabelSelector.parse(text).matches(labels)
    assert LabelSelector.from_dict({"matchLabels": labels}).matches(labels)
    expressions = [{"key": k, "operator": "In", "values": [v]} for k, v in labels.items()]
    assert LabelSelector.from_dict({"matchExpressions": expressions}).matches(labels)


@given(_LABEL_SETS.filter(bool), st.data())
def test_selectors_built_from_labels_reject_changed_labels(
    labels: dict[str, str], data: st.DataObject
) -> None:
    sel = LabelSelector.parse(",".join(f"{k}={v}" for k, v in labels.items()))
    key = data.draw(st.sampled_from(sorted(labels)))
    changed = dict(labels)
    changed[key] = labels[key] + "x" if labels[key] else "x"
    assert not sel.matches(changed)
    del changed[key]
    assert not sel.matches(changed)
    assert not LabelSelector.parse(",".join(f"!{k}" for k in labels)).matches(labels)
