"""Object-name rules: cluster IDs end up in DNS names and object names, so they are checked or sanitised."""

from __future__ import annotations

import re

MAX_CLUSTER_ID_LENGTH = 63

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NOT_NAME_CHAR = re.compile(r"[^a-z0-9.-]")
_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9-]+")

_DNS1123_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def sanitize_name(s: str) -> str:
    """Object name derived from free text (hostnames, cluster IDs, cable names), as upstream derives it."""
    return _NOT_NAME_CHAR.sub("-", s.lower()).strip("-")


def cluster_id_problems(s: str) -> list[str]:
    """Why `s` is not a DNS-1123 label, in the Kubernetes validation wording; empty when it is one."""
    problems = []
    if len(s) > MAX_CLUSTER_ID_LENGTH:
        problems.append(f"must be no more than {MAX_CLUSTER_ID_LENGTH} characters")
    if not _DNS1123_LABEL.fullmatch(s):
        problems.append(_DNS1123_LABEL_MESSAGE)
    return problems


def validate_cluster_id(s: str) -> None:
    """Raise ValueError unless `s` is usable as a cluster ID (it appears in DNS names, so no dots)."""
    problems = cluster_id_problems(s)
    if problems:
        raise ValueError(f"{s!r} is not a valid cluster ID: {'; '.join(problems)}")


def sanitize_cluster_id(s: str) -> str:
    """subctl's repair of an invalid *default* cluster ID (never of an explicit one); not truncated."""
    out = _NOT_LABEL_CHARS.sub("-", s.lower())
    if out.startswith("-"):
        out = "0" + out[1:]
    if out.endswith("-"):
        out = out[:-1] + "0"
    return out


def cable_name(cluster_id: str, private_ip: str) -> str:
    return f"submariner-cable-{cluster_id}-{private_ip.replace('.', '-')}"


def endpoint_name(cluster_id: str, cable: str) -> str:
    return sanitize_name(f"{cluster_id}-{cable}")
