"""Flags shared by many verbs: the kube flags (root or command level), output format, bool parsing."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from submariner.cli.kubeconf import KubeFlags

F = TypeVar("F", bound=Callable[..., Any])

_KUBE_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--kubeconfig",), {"help": "kubeconfig file(s), colon-separated (default $KUBECONFIG or ~/.kube/config)"}),
    (("--context",), {"help": "the kubeconfig context to use"}),
    (("--server",), {"help": "the address and port of the Kubernetes API server"}),
    (("--token",), {"help": "bearer token for authentication to the API server"}),
    (("--certificate-authority",), {"help": "path to a cert file for the certificate authority"}),
    (("--insecure-skip-tls-verify",), {"is_flag": True, "default": False,
                                       "help": "don't verify the API server's certificate (not the broker's)"}),
    (("--request-timeout",), {"type": float, "default": None, "help": "seconds to wait for one API request"}),
]
_KUBE_NAMES = ("kubeconfig", "context", "server", "token", "certificate_authority", "insecure_skip_tls_verify",
               "request_timeout")


def add_kube_options(f: F) -> F:
    for decls, attrs in reversed(_KUBE_OPTIONS):
        f = click.option(*decls, **attrs)(f)
    return f


def kube_flags_from(kwargs: dict[str, Any]) -> KubeFlags:
    values: dict[str, Any] = {name: kwargs.pop(name, None) for name in _KUBE_NAMES}
    values["insecure_skip_tls_verify"] = bool(values["insecure_skip_tls_verify"])
    return KubeFlags(**values)


def kube_options(f: F) -> F:
    """Adds the kube flags to a command and passes `kube: KubeFlags` (command flags win over root flags)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        own = kube_flags_from(kwargs)
        ctx = click.get_current_context()
        root = ctx.find_root().obj
        base = root if isinstance(root, KubeFlags) else KubeFlags()
        return f(*args, kube=base.merged(own), **kwargs)

    return add_kube_options(wrapper)  # type: ignore[return-value]


def parse_bool(value: str, flag: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "t", "true", "yes", "y", "on"):
        return True
    if text in ("0", "f", "false", "no", "n", "off"):
        return False
    raise click.BadParameter(f"strconv.ParseBool: parsing {value!r}: invalid syntax", param_hint=flag)


def output_option(f: F) -> F:
    return click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table",
                        show_default=True, help="output format (json/yaml print the objects behind the table)")(f)


def split_list(values: tuple[str, ...] | list[str]) -> list[str]:
    """`strings` flags: comma lists, repeatable."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]
