"""JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from submariner.broker.apiserver.errors import ApiError
from submariner.broker.apiserver.patch import (
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
    supports_strategic_merge_patch,
)

# --- RFC 7386 ---------------------------------------------------------------------------------------------

# RFC 7386 appendix A, in order.
RFC7386_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7386_EXAMPLES)
def test_merge_patch_rfc7386_examples(target: Any, patch: Any, expected: Any) -> None:
    before_target, before_patch = copy.deepcopy(target), copy.deepcopy(patch)
    assert apply_merge_patch(target, patch) == expected
    assert target == before_target and patch == before_patch


def test_merge_patch_result_shares_nothing_with_inputs() -> None:
    target = {"keep": {"deep": [1, 2]}, "x": 1}
    patch = {"new": {"list": [{"a": 1}]}}
    result = apply_merge_patch(target, patch)
    result["keep"]["deep"].append(3)
    result["new"]["list"][0]["a"] = 2
    assert target == {"keep": {"deep": [1, 2]}, "x": 1}
    assert patch == {"new": {"list": [{"a": 1}]}}


_SCALARS = st.one_of(st.booleans(), st.integers(), st.text(max_size=5))
_KEYS = st.text(alphabet="abcde", min_size=1, max_size=2)
# JSON documents without nulls in objects: a merge patch cannot express "set this key to null".
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(st.one_of(children, st.none()), max_size=3),
        st.dictionaries(_KEYS, children, max_size=4),
    ),
    max_leaves=12,
)
_OBJECTS = st.dictionaries(_KEYS, _JSON, max_size=5)


def _diff(a: Any, b: Any) -> Any:
    """A merge patch turning `a` into `b`: set what differs, null what `b` dropped, recurse into objects."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return copy.deepcopy(b)
    patch: dict[str, Any] = {k: None for k in a if k not in b}
    for k, v in b.items():
        if k not in a or a[k] != v:
            patch[k] = _diff(a.get(k), v)
    return patch


@given(_OBJECTS, _OBJECTS)
def test_merge_patch_of_diff_turns_a_into_b(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert apply_merge_patch(a, _diff(a, b)) == b


@given(_OBJECTS, _OBJECTS)
def test_merge_patch_setting_every_key_turns_a_into_b_when_values_are_flat(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    """The brief's literal form (set every key of b, null the rest) works whenever b holds no objects."""
    b = {k: v for k, v in b.items() if not isinstance(v, dict)}
    patch = {**{k: None for k in a if k not in b}, **b}
    assert apply_merge_patch(a, patch) == b


# --- RFC 6902 ---------------------------------------------------------------------------------------------

# RFC 6902 appendix A (A.13, a duplicate member, cannot be written as a dict).
RFC6902_EXAMPLES: list[tuple[str, Any, list[dict[str, Any]], Any]] = [
    ("A.1", {"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"baz": "qux", "foo": "bar"}),
    (
        "A.2",
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
    ),
    ("A.3", {"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    ("A.4", {"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
    (
        "A.5",
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
    ),
    (
        "A.6",
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
    ),
    (
        "A.7",
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
    ),
    (
        "A.8",
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
        {"baz": "qux", "foo": ["a", 2, "c"]},
    ),
    (
        "A.10",
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
    ),
    (
        "A.11",
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
        {"foo": "bar", "baz": "qux"},
    ),
    ("A.14", {"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
    (
        "A.16",
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
    ),
    ("add-root", {"a": 1}, [{"op": "add", "path": "", "value": [1]}], [1]),
    ("replace-root", {"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}], {"b": 2}),
    ("replace-in-list", {"a": [1, 2, 3]}, [{"op": "replace", "path": "/a/1", "value": 9}], {"a": [1, 9, 3]}),
    ("add-replaces-member", {"a": 1}, [{"op": "add", "path": "/a", "value": 2}], {"a": 2}),
    (
        "copy",
        {"a": {"b": [1]}},
        [{"op": "copy", "from": "/a", "path": "/c"}, {"op": "add", "path": "/c/b/-", "value": 2}],
        {"a": {"b": [1]}, "c": {"b": [1, 2]}},
    ),
    ("move-to-self", {"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}], {"a": 1}),
    (
        "escaped-slash",
        {},
        [
            {"op": "add", "path": "/metadata", "value": {}},
            {"op": "add", "path": "/metadata/a~1b", "value": "x"},
        ],
        {"metadata": {"a/b": "x"}},
    ),
    (
        "test-object",
        {"a": {"x": [1, {"y": None}]}},
        [{"op": "test", "path": "/a", "value": {"x": [1, {"y": None}]}}],
        {"a": {"x": [1, {"y": None}]}},
    ),
    ("empty-ops", {"a": 1}, [], {"a": 1}),
]


@pytest.mark.parametrize(
    ("target", "ops", "expected"),
    [pytest.param(t, o, e, id=i) for i, t, o, e in RFC6902_EXAMPLES],
)
def test_json_patch_examples(target: Any, ops: list[dict[str, Any]], expected: Any) -> None:
    before = copy.deepcopy(target)
    assert apply_json_patch(target, ops) == expected
    assert target == before


# Each fails as a whole with 422, leaving the target alone.
JSON_PATCH_FAILURES: list[tuple[str, Any, list[dict[str, Any]]]] = [
    ("A.9 test fails", {"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}]),
    ("A.12 missing parent", {"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}]),
    ("A.15 string is not number", {"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}]),
    ("true is not 1", {"a": True}, [{"op": "test", "path": "/a", "value": 1}]),
    ("remove missing", {"a": 1}, [{"op": "remove", "path": "/b"}]),
    ("replace missing", {"a": 1}, [{"op": "replace", "path": "/b", "value": 1}]),
    ("index out of range", {"a": [1]}, [{"op": "add", "path": "/a/2", "value": 1}]),
    ("leading zero index", {"a": [1, 2]}, [{"op": "remove", "path": "/a/01"}]),
    ("dash on remove", {"a": [1]}, [{"op": "remove", "path": "/a/-"}]),
    ("not a pointer", {"a": 1}, [{"op": "remove", "path": "a"}]),
    ("move into own child", {"a": {"b": {}}}, [{"op": "move", "from": "/a", "path": "/a/b/c"}]),
    ("copy from missing", {"a": 1}, [{"op": "copy", "from": "/x", "path": "/y"}]),
    ("remove root", {"a": 1}, [{"op": "remove", "path": ""}]),
    ("through a scalar", {"a": 1}, [{"op": "add", "path": "/a/b", "value": 1}]),
    (
        "atomic: later op fails",
        {"a": 1},
        [{"op": "replace", "path": "/a", "value": 2}, {"op": "test", "path": "/a", "value": 1}],
    ),
]


@pytest.mark.parametrize(
    ("target", "ops"),
    [pytest.param(t, o, id=i) for i, t, o in JSON_PATCH_FAILURES],
)
def test_json_patch_failures_are_422(target: Any, ops: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(target)
    with pytest.raises(ApiError) as err:
        apply_json_patch(target, ops)
    assert err.value.code == 422
    assert target == before


@pytest.mark.parametrize(
    "ops",
    [
        {"op": "add", "path": "/a", "value": 1},
        "nope",
        [1],
        [{"path": "/a"}],
        [{"op": "frobnicate", "path": "/a"}],
        [{"op": "add", "value": 1}],
        [{"op": "add", "path": 3, "value": 1}],
        [{"op": "add", "path": "/a"}],
        [{"op": "replace", "path": "/a"}],
        [{"op": "test", "path": "/a"}],
        [{"op": "move", "path": "/a"}],
        [{"op": "copy", "path": "/a", "from": 1}],
    ],
)
def test_json_patch_malformed_is_400(ops: Any) -> None:
    with pytest.raises(ApiError) as err:
        apply_json_patch({"a": 1}, ops)
    assert err.value.code == 400


def test_json_patch_too_many_operations() -> None:
    with pytest.raises(ApiError) as err:
        apply_json_patch({}, [{"op": "test", "path": "", "value": {}}] * 10001)
    assert err.value.code == 413


def test_json_patch_values_are_copied() -> None:
    value = {"x": [1]}
    result = apply_json_patch({}, [{"op": "add", "path": "/a", "value": value}])
    result["a"]["x"].append(2)
    assert value == {"x": [1]}


# --- strategic merge patch --------------------------------------------------------------------------------


def _deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web", "tier": "frontend"},
            "finalizers": ["a.io/one", "b.io/two"],
            "ownerReferences": [
                {"uid": "u1", "kind": "Thing", "name": "t1"},
                {"uid": "u2", "kind": "Thing", "name": "t2"},
            ],
        },
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeSelector": {"disk": "ssd", "zone": "a"},
                    "tolerations": [{"key": "dedicated", "effect": "NoSchedule"}],
                    "containers": [
                        {
                            "name": "app",
                            "image": "nginx:1",
                            "args": ["--a", "--b"],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 80, "name": "http"}],
                            "volumeMounts": [{"mountPath": "/data", "name": "data"}],
                        },
                        {"name": "sidecar", "image": "envoy:1"},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
        "status": {
            "conditions": [
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "True"},
            ]
        },
    }


def _smp(target: dict[str, Any], patch: dict[str, Any], kind_key: str = "apps/deployments") -> dict[str, Any]:
    before_target, before_patch = copy.deepcopy(target), copy.deepcopy(patch)
    result = apply_strategic_merge_patch(target, patch, kind_key)
    assert target == before_target, "target was mutated"
    assert patch == before_patch, "patch was mutated"
    return result


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def test_smp_containers_merge_by_name() -> None:
    result = _smp(
        _deployment(),
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}}},
    )
    containers = _pod_spec(result)["containers"]
    assert [c["name"] for c in containers] == ["app", "sidecar"]
    assert containers[0]["image"] == "nginx:2"
    assert containers[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert containers[1] == {"name": "sidecar", "image": "envoy:1"}


def test_smp_new_list_element_goes_first_like_kube() -> None:
    """As in the kubectl-patch task docs: the added container is listed before the existing ones."""
    result = _smp(
        _deployment(),
        {"spec": {"template": {"spec": {"containers": [{"name": "redis", "image": "redis"}]}}}},
    )
    assert [c["name"] for c in _pod_spec(result)["containers"]] == ["redis", "app", "sidecar"]


def test_smp_env_merges_by_name_inside_a_container() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}]}
                    ]
                }
            }
        }
    }
    env = _pod_spec(_smp(_deployment(), patch))["containers"][0]["env"]
    assert {e["name"]: e["value"] for e in env} == {"A": "1", "B": "two", "C": "3"}
    assert len(env) == 3


def test_smp_ports_volume_mounts_and_volumes_merge_by_their_keys() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}],
                            "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
                        }
                    ],
                    "volumes": [{"name": "cache", "emptyDir": {}}],
                }
            }
        }
    }
    spec = _pod_spec(_smp(_deployment(), patch))
    app = spec["containers"][0]
    assert {"containerPort": 80, "name": "http", "protocol": "TCP"} in app["ports"]
    assert {"containerPort": 443} in app["ports"] and len(app["ports"]) == 2
    assert app["volumeMounts"] == [{"mountPath": "/data", "name": "data", "readOnly": True}]
    assert sorted(v["name"] for v in spec["volumes"]) == ["cache", "data"]


def test_smp_lists_without_merge_key_are_replaced() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "tolerations": [{"key": "other", "operator": "Exists"}],
                    "containers": [{"name": "app", "args": ["--c"]}],
                }
            }
        }
    }
    spec = _pod_spec(_smp(_deployment(), patch))
    assert spec["tolerations"] == [{"key": "other", "operator": "Exists"}]
    assert spec["containers"][0]["args"] == ["--c"]


def test_smp_delete_directive_in_list_element() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "sidecar", "$patch": "delete"},
                        {"name": "app", "env": [{"name": "A", "$patch": "delete"}]},
                    ]
                }
            }
        }
    }
    containers = _pod_spec(_smp(_deployment(), patch))["containers"]
    assert [c["name"] for c in containers] == ["app"]
    assert containers[0]["env"] == [{"name": "B", "value": "2"}]


def test_smp_replace_directive_on_a_map() -> None:
    patch = {"spec": {"template": {"spec": {"nodeSelector": {"$patch": "replace", "gpu": "yes"}}}}}
    assert _pod_spec(_smp(_deployment(), patch))["nodeSelector"] == {"gpu": "yes"}


def test_smp_replace_directive_in_a_list() -> None:
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}
        }
    }
    assert _pod_spec(_smp(_deployment(), patch))["containers"] == [{"name": "only", "image": "x"}]


def test_smp_delete_directive_on_a_map_empties_it() -> None:
    patch = {"spec": {"strategy": {"$patch": "delete"}}}
    assert _smp(_deployment(), patch)["spec"]["strategy"] == {}
    assert _smp(_deployment(), {"$patch": "delete"}) == {}


def test_smp_merge_directive_is_the_default() -> None:
    patch = {"metadata": {"labels": {"$patch": "merge", "new": "1"}}}
    assert _smp(_deployment(), patch)["metadata"]["labels"] == {"app": "web", "tier": "frontend", "new": "1"}


def test_smp_retain_keys() -> None:
    patch: dict[str, Any] = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert _smp(_deployment(), patch)["spec"]["strategy"] == {"type": "Recreate"}
    # Listed keys are kept and merged; a null for an unlisted key is allowed.
    patch = {
        "spec": {
            "strategy": {
                "$retainKeys": ["type", "rollingUpdate"],
                "rollingUpdate": {"maxSurge": 2},
                "unlisted": None,
            }
        }
    }
    assert _smp(_deployment(), patch)["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 0},
    }


def test_smp_retain_keys_must_cover_the_patch() -> None:
    with pytest.raises(ApiError) as err:
        _smp(_deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}})
    assert err.value.code == 422
    assert err.value.message == "patch content doesn't match retainKeys list"
    with pytest.raises(ApiError) as err:
        _smp(_deployment(), {"spec": {"strategy": {"$retainKeys": "type"}}})
    assert err.value.code == 400


def test_smp_delete_from_primitive_list() -> None:
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.io/one", "not.there/x"]}}
    assert _smp(_deployment(), patch)["metadata"]["finalizers"] == ["b.io/two"]
    with pytest.raises(ApiError) as err:
        _smp(_deployment(), {"metadata": {"$deleteFromPrimitiveList/finalizers": "a.io/one"}})
    assert err.value.code == 400


def test_smp_finalizers_merge_as_a_set() -> None:
    patch = {"metadata": {"finalizers": ["c.io/three", "a.io/one"]}}
    finalizers = _smp(_deployment(), patch)["metadata"]["finalizers"]
    assert sorted(finalizers) == ["a.io/one", "b.io/two", "c.io/three"]
    assert finalizers == ["c.io/three", "a.io/one", "b.io/two"]  # patch order first, as kube does
    obj = {"metadata": {"name": "x"}}
    assert _smp(obj, {"metadata": {"finalizers": ["f", "f"]}}, "configmaps")["metadata"]["finalizers"] == [
        "f"
    ]


def test_smp_set_element_order() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "new"}, {"name": "app"}],
                    "containers": [{"name": "new", "image": "busybox"}],
                }
            }
        }
    }
    containers = _pod_spec(_smp(_deployment(), patch))["containers"]
    assert [c["name"] for c in containers] == ["sidecar", "new", "app"]
    assert "$setElementOrder/containers" not in _pod_spec(_smp(_deployment(), patch))


def test_smp_set_element_order_without_a_patch_list_reorders() -> None:
    patch = {
        "spec": {
            "template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}}
        }
    }
    assert [c["name"] for c in _pod_spec(_smp(_deployment(), patch))["containers"]] == ["sidecar", "app"]


def test_smp_set_element_order_for_primitives_and_env() -> None:
    patch: dict[str, Any] = {
        "metadata": {
            "$setElementOrder/finalizers": ["b.io/two", "c.io/three", "a.io/one"],
            "finalizers": ["c.io/three"],
        }
    }
    assert _smp(_deployment(), patch)["metadata"]["finalizers"] == ["b.io/two", "c.io/three", "a.io/one"]
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "$setElementOrder/env": [{"name": "B"}, {"name": "A"}]},
                    ]
                }
            }
        }
    }
    env = _pod_spec(_smp(_deployment(), patch))["containers"][0]["env"]
    assert [e["name"] for e in env] == ["B", "A"]


def test_smp_set_element_order_must_agree_with_the_patch() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                    "containers": [{"name": "sidecar", "image": "x"}, {"name": "app", "image": "y"}],
                }
            }
        }
    }
    with pytest.raises(ApiError) as err:
        _smp(_deployment(), patch)
    assert err.value.code == 400


def test_smp_set_element_order_on_an_atomic_list_is_accepted_and_dropped() -> None:
    patch = {"spec": {"template": {"spec": {"$setElementOrder/tolerations": [{"key": "x"}]}}}}
    spec = _pod_spec(_smp(_deployment(), patch))
    assert spec["tolerations"] == [{"key": "dedicated", "effect": "NoSchedule"}]
    assert not any(k.startswith("$") for k in spec)


def test_smp_null_deletes_keys() -> None:
    patch = {"metadata": {"labels": {"tier": None, "absent": None}}, "spec": {"strategy": None}}
    result = _smp(_deployment(), patch)
    assert result["metadata"]["labels"] == {"app": "web"}
    assert "strategy" not in result["spec"]
    # Nulls inside new subtrees vanish too (kube decodes into typed structs).
    result = _smp(_deployment(), {"spec": {"template": {"spec": {"securityContext": {"runAsUser": None}}}}})
    assert _pod_spec(result)["securityContext"] == {}


def test_smp_owner_references_merge_by_uid() -> None:
    patch = {"metadata": {"ownerReferences": [{"uid": "u2", "name": "renamed"}, {"uid": "u3", "name": "t3"}]}}
    refs = _smp(_deployment(), patch)["metadata"]["ownerReferences"]
    assert {r["uid"]: r["name"] for r in refs} == {"u1": "t1", "u2": "renamed", "u3": "t3"}


def test_smp_conditions_merge_by_type() -> None:
    patch = {"status": {"conditions": [{"type": "Progressing", "status": "False", "reason": "Stuck"}]}}
    conditions = _smp(_deployment(), patch)["status"]["conditions"]
    assert conditions == [
        {"type": "Available", "status": "True"},
        {"type": "Progressing", "status": "False", "reason": "Stuck"},
    ]


def test_smp_pod_and_node_status() -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i"}], "imagePullSecrets": [{"name": "s1"}]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}], "podIPs": [{"ip": "10.0.0.1"}]},
    }
    result = _smp(
        pod,
        {
            "spec": {
                "imagePullSecrets": [{"name": "s2"}],
                "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a"]}],
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]
            },
        },
        "pods",
    )
    assert sorted(s["name"] for s in result["spec"]["imagePullSecrets"]) == ["s1", "s2"]
    assert {c["type"]: c["status"] for c in result["status"]["conditions"]} == {
        "Ready": "True",
        "Initialized": "True",
    }
    assert result["status"]["podIPs"] == [{"ip": "10.0.0.1"}]

    node = {
        "metadata": {"name": "n"},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.1"},
                {"type": "Hostname", "address": "n"},
            ],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    result = _smp(node, {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}, "nodes")
    assert result["status"]["addresses"] == [
        {"type": "InternalIP", "address": "10.0.0.2"},
        {"type": "Hostname", "address": "n"},
    ]


def test_smp_service_ports_merge_by_port() -> None:
    svc = {
        "metadata": {"name": "s"},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443, "name": "https"}],
        },
    }
    result = _smp(svc, {"spec": {"ports": [{"port": 443, "targetPort": 8443}, {"port": 9090}]}}, "services")
    ports = {p["port"]: p for p in result["spec"]["ports"]}
    assert ports[80] == {"port": 80, "targetPort": 8080, "name": "http"}
    assert ports[443] == {"port": 443, "name": "https", "targetPort": 8443}
    assert ports[9090] == {"port": 9090}
    assert result["spec"]["selector"] == {"app": "web"}


def test_smp_statefulset_and_daemonset_templates() -> None:
    for kind_key in ("apps/statefulsets", "apps/daemonsets"):
        obj = {
            "metadata": {"name": "x"},
            "spec": {
                "template": {
                    "spec": {
                        "initContainers": [{"name": "init", "image": "a"}],
                        "containers": [{"name": "main", "image": "b"}],
                    }
                }
            },
        }
        patch = {"spec": {"template": {"spec": {"initContainers": [{"name": "init", "image": "a2"}]}}}}
        result = _smp(obj, patch, kind_key)
        assert result["spec"]["template"]["spec"]["initContainers"] == [{"name": "init", "image": "a2"}]
        assert result["spec"]["template"]["spec"]["containers"] == [{"name": "main", "image": "b"}]


def test_smp_endpointslice_lists_are_atomic() -> None:
    eps = {
        "metadata": {"name": "e"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
        "ports": [{"port": 80}],
    }
    result = _smp(eps, {"endpoints": [{"addresses": ["10.0.0.3"]}]}, "discovery.k8s.io/endpointslices")
    assert result["endpoints"] == [{"addresses": ["10.0.0.3"]}]
    assert result["ports"] == [{"port": 80}]


def test_smp_configmap_data_merges() -> None:
    cm = {"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}
    result = _smp(cm, {"data": {"b": None, "c": "3"}}, "configmaps")
    assert result["data"] == {"a": "1", "c": "3"}


def test_smp_rbac_is_builtin() -> None:
    role = {"metadata": {"name": "r"}, "rules": [{"verbs": ["get"]}]}
    result = _smp(role, {"rules": [{"verbs": ["list"]}]}, "rbac.authorization.k8s.io/roles")
    assert result["rules"] == [{"verbs": ["list"]}]


def test_smp_custom_resources_are_415() -> None:
    assert not supports_strategic_merge_patch("submariner.io/clusters")
    with pytest.raises(ApiError) as err:
        apply_strategic_merge_patch({"metadata": {"name": "c"}}, {"spec": {}}, "submariner.io/clusters")
    assert err.value.code == 415
    assert err.value.reason == "UnsupportedMediaType"
    assert err.value.message == "strategic merge patch is not supported for custom resources"


@pytest.mark.parametrize(
    "kind_key",
    [
        "pods",
        "services",
        "apps/deployments",
        "apps/daemonsets",
        "apps/statefulsets",
        "discovery.k8s.io/endpointslices",
        "configmaps",
        "nodes",
        "namespaces",
        "rbac.authorization.k8s.io/roles",
        "secrets",
        "coordination.k8s.io/leases",
        "apiextensions.k8s.io/customresourcedefinitions",
    ],
)
def test_smp_builtin_kinds_are_supported(kind_key: str) -> None:
    assert supports_strategic_merge_patch(kind_key)
    assert apply_strategic_merge_patch(
        {"metadata": {"name": "a"}}, {"metadata": {"labels": {"x": "y"}}}, kind_key
    ) == {"metadata": {"name": "a", "labels": {"x": "y"}}}


@pytest.mark.parametrize(
    "patch",
    [
        {"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}},
        {"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}},
        {"spec": {"template": {"spec": {"containers": ["not-a-map"]}}}},
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "$patch": "explode"}]}}}},
        {"spec": {"$patch": "explode"}},
        {"metadata": {"finalizers": [{"a": 1}]}},
        {"metadata": {"$setElementOrder": []}},
        {"metadata": {"$setElementOrder/finalizers": "x"}},
        {"spec": {"template": {"spec": {"$setElementOrder/containers": ["app"]}}}},
    ],
)
def test_smp_malformed_patches_are_400(patch: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as err:
        apply_strategic_merge_patch(_deployment(), patch, "apps/deployments")
    assert err.value.code == 400


def test_smp_patch_must_be_an_object() -> None:
    with pytest.raises(ApiError) as err:
        apply_strategic_merge_patch(_deployment(), [1], "apps/deployments")
    assert err.value.code == 400


def test_smp_new_list_is_cleaned_of_directives() -> None:
    obj = {"metadata": {"name": "p"}, "spec": {}}
    patch = {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "gone", "$patch": "delete"}]}}
    assert _smp(obj, patch, "pods")["spec"]["containers"] == [{"name": "a", "image": "x"}]


def test_smp_result_shares_nothing_with_inputs() -> None:
    target = _deployment()
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "new", "env": [{"name": "X"}]}]}}}}
    result = apply_strategic_merge_patch(target, patch, "apps/deployments")
    for container in _pod_spec(result)["containers"]:
        container["image"] = "mutated"
    assert _pod_spec(target)["containers"][0]["image"] == "nginx:1"
    assert patch["spec"]["template"]["spec"]["containers"][0] == {"name": "new", "env": [{"name": "X"}]}


_PLAIN_KEYS = st.text(alphabet="abcxyz", min_size=1, max_size=3)
_PLAIN = st.recursive(
    st.one_of(st.text(max_size=3), st.integers(), st.booleans()),
    lambda children: st.dictionaries(_PLAIN_KEYS, children, max_size=4),
    max_leaves=10,
)
_PLAIN_PATCH = st.recursive(
    st.one_of(st.none(), st.text(max_size=3), st.integers()),
    lambda children: st.dictionaries(_PLAIN_KEYS, children, max_size=4),
    max_leaves=10,
)


@settings(max_examples=200)
@given(
    st.dictionaries(_PLAIN_KEYS, _PLAIN, max_size=4), st.dictionaries(_PLAIN_KEYS, _PLAIN_PATCH, max_size=4)
)
def test_smp_equals_merge_patch_without_lists_or_directives(
    target: dict[str, Any], patch: dict[str, Any]
) -> None:
    assert apply_strategic_merge_patch(target, patch, "configmaps") == apply_merge_patch(target, patch)
