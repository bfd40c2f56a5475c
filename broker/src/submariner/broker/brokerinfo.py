"""broker-info.subm: the credential file deploy-broker writes and join reads (subctl.md §5).

Writers emit exactly upstream subctl's form (URL-safe base64 with padding of compact JSON whose keys are Go
field names) so either tool can read the other's file; readers are lenient about the envelope (whitespace,
either base64 alphabet, missing padding, key case) and strict about content, reporting one clear line.
The file is a bearer credential for the broker namespace, so it is only ever created with mode 0600.

Self-contained on purpose: it sits beside `submariner.broker.api` in the layering and may not import it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import string
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PSK_SECRET_NAME = "submariner-ipsec-psk"
PSK_BYTES = 48
COMPONENT_CONNECTIVITY = "connectivity"
COMPONENT_SERVICE_DISCOVERY = "service-discovery"

_BASE64_CHARS = frozenset(string.ascii_letters + string.digits + "+/-_=")
_SECRET_KEYS = ("kind", "apiVersion", "metadata", "immutable", "data", "stringData", "type")
_META_KEYS = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)
_TEXT_KEYS = frozenset({"token", "namespace"})
_SORTED_MAPS = frozenset({"data", "stringData", "labels", "annotations"})
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


class BrokerInfoError(ValueError):
    """Malformed broker-info content; the message is one line saying what is wrong."""


@dataclass(frozen=True)
class BrokerInfo:
    broker_url: str
    """Broker API URL with scheme, e.g. https://172.18.0.4:6443."""
    client_token: dict[str, Any]
    """The broker-admin token Secret as read from the API; `data` holds token, ca.crt, namespace (base64)."""
    ipsec_psk: dict[str, Any] | None
    """Secret with `data.psk`; may only be absent when connectivity is not a component."""
    service_discovery: bool = False
    """Legacy flag, kept in step with `components` by writers."""
    components: list[str] = field(default_factory=list)
    custom_domains: list[str] | None = None

    @property
    def token(self) -> str:
        value = _secret_value(self.client_token, "token")
        if value is None:
            raise BrokerInfoError("ClientToken has no data.token")
        return value.decode()

    @property
    def broker_namespace(self) -> str | None:
        value = _secret_value(self.client_token, "namespace")
        return None if value is None else value.decode()

    @property
    def ca_crt(self) -> bytes | None:
        return _secret_value(self.client_token, "ca.crt")

    @property
    def psk(self) -> bytes | None:
        return None if self.ipsec_psk is None else _secret_value(self.ipsec_psk, "psk")

    @property
    def service_discovery_enabled(self) -> bool:
        return self.service_discovery or COMPONENT_SERVICE_DISCOVERY in self.components

    @property
    def connectivity_enabled(self) -> bool:
        """Files from before `Components` existed always meant connectivity."""
        return not self.components or COMPONENT_CONNECTIVITY in self.components


def new_psk_secret() -> dict[str, Any]:
    """A fresh IPsec PSK Secret; every deploy-broker makes a new one unless told to reuse one."""
    psk = base64.b64encode(secrets.token_bytes(PSK_BYTES)).decode("ascii")
    return {"metadata": {"name": PSK_SECRET_NAME, "creationTimestamp": None}, "data": {"psk": psk}}


# --- encoding ------------------------------------------------------------------------------------------


def encode(info: BrokerInfo) -> str:
    """The file content, byte-for-byte as Go's encoding/json + base64.URLEncoding would produce it."""
    doc: dict[str, Any] = {
        "brokerURL": info.broker_url,
        "ClientToken": _go_secret(info.client_token),
        "IPSecPSK": None if info.ipsec_psk is None else _go_secret(info.ipsec_psk),
        "ServiceDiscovery": info.service_discovery,
    }
    if info.components:
        doc["Components"] = sorted(info.components)
    doc["CustomDomains"] = None if info.custom_domains is None else list(info.custom_domains)
    return base64.urlsafe_b64encode(_go_json(doc).encode("utf-8")).decode("ascii")


def _go_json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)
    return text


def _go_secret(secret: dict[str, Any]) -> dict[str, Any]:
    """A Secret in Go struct-field order; metadata always carries creationTimestamp (null when unset)."""
    out = _ordered(secret, _SECRET_KEYS)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta = _ordered({"creationTimestamp": None, **meta}, _META_KEYS)
        out["metadata"] = meta
    for holder in (out, meta if isinstance(meta, dict) else {}):
        for key in _SORTED_MAPS & holder.keys():
            if isinstance(holder[key], dict):
                holder[key] = dict(sorted(holder[key].items()))
    return out


def _ordered(obj: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    rank = {k: i for i, k in enumerate(order)}
    return dict(sorted(obj.items(), key=lambda kv: rank.get(kv[0], len(order))))


# --- decoding ------------------------------------------------------------------------------------------


def decode(text: str | bytes) -> BrokerInfo:
    """Parse file content; anything malformed raises BrokerInfoError (and nothing else)."""
    obj = _parse_json(_unbase64(text))
    fields = _fold_keys(obj)

    url = _broker_url(fields.get("brokerurl"))
    client_token = _secret(fields.get("clienttoken"), "ClientToken", "token")
    if client_token is None:
        raise BrokerInfoError("broker-info has no ClientToken (the broker access token)")
    for key in ("ca.crt", "namespace"):
        _secret_field(client_token, "ClientToken", key, required=False)
    ipsec_psk = _secret(fields.get("ipsecpsk"), "IPSecPSK", "psk")

    service_discovery = fields.get("servicediscovery")
    if service_discovery is None:
        service_discovery = False
    elif not isinstance(service_discovery, bool):
        raise BrokerInfoError(f"ServiceDiscovery must be true or false, not {_show(service_discovery)}")

    components = _string_list(fields.get("components"), "Components")
    info = BrokerInfo(
        broker_url=url,
        client_token=client_token,
        ipsec_psk=ipsec_psk,
        service_discovery=service_discovery,
        components=components or [],
        custom_domains=_string_list(fields.get("customdomains"), "CustomDomains"),
    )
    if ipsec_psk is None and info.connectivity_enabled:
        raise BrokerInfoError("broker-info has no IPSecPSK, which the connectivity component needs")
    return info


def _unbase64(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise BrokerInfoError("broker-info is not base64: it contains non-ASCII bytes") from None
    compact = "".join(text.split())
    if not compact:
        raise BrokerInfoError("broker-info is empty")
    for pos, char in enumerate(compact):
        if char not in _BASE64_CHARS:
            raise BrokerInfoError(f"broker-info is not base64: bad character {char!r} at position {pos}")
    body = compact.rstrip("=")
    if "=" in body:
        pos = body.index("=")
        raise BrokerInfoError(f"broker-info is not base64: padding '=' inside the data (position {pos})")
    body = body.translate(str.maketrans("-_", "+/"))
    if len(body) % 4 == 1:
        raise BrokerInfoError("broker-info is not base64: its length is impossible (truncated or corrupted?)")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise BrokerInfoError(f"broker-info is not base64: {e}") from None


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BrokerInfoError("broker-info does not contain JSON: the decoded data is not text") from None
    try:
        obj = json.loads(text)
    except RecursionError:
        raise BrokerInfoError("broker-info does not contain valid JSON: nested too deeply") from None
    except ValueError as e:
        raise BrokerInfoError(f"broker-info does not contain valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise BrokerInfoError(f"broker-info JSON must be an object, not {_json_type(obj)}")
    return obj


def _fold_keys(obj: dict[str, Any]) -> dict[str, Any]:
    """Go matches JSON keys to struct fields case-insensitively; the last duplicate wins, as in Go."""
    return {k.lower(): v for k, v in obj.items()}


def _broker_url(url: Any) -> str:
    if url is None or url == "":
        raise BrokerInfoError("broker-info has no brokerURL")
    if not isinstance(url, str):
        raise BrokerInfoError(f"brokerURL must be a string, not {_json_type(url)}")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise BrokerInfoError(f"brokerURL {_show(url)} contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - validates the port
    except ValueError as e:
        raise BrokerInfoError(f"brokerURL {_show(url)} is not a valid URL: {e}") from None
    if "://" not in url:
        raise BrokerInfoError(f"brokerURL {_show(url)} has no scheme (expected e.g. https://host:6443)")
    if parts.scheme.lower() not in ("https", "http"):
        scheme = parts.scheme
        raise BrokerInfoError(f"brokerURL {_show(url)} has unsupported scheme {scheme!r} (expected https)")
    if not parts.hostname:
        raise BrokerInfoError(f"brokerURL {_show(url)} has no host")
    return url


def _secret(value: Any, what: str, required_key: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BrokerInfoError(f"{what} must be a Secret object, not {_json_type(value)}")
    secret = _canonical_secret(value)
    if not isinstance(secret.get("data"), dict):
        raise BrokerInfoError(f"{what} has no data (expected data.{required_key})")
    _secret_field(secret, what, required_key, required=True)
    return secret


def _canonical_secret(value: dict[str, Any]) -> dict[str, Any]:
    """Secret keys in their canonical spelling (Go decoded them case-insensitively)."""
    names = {k.lower(): k for k in _SECRET_KEYS}
    secret = {names.get(k.lower(), k): v for k, v in value.items()}
    meta = secret.get("metadata")
    if isinstance(meta, dict):
        meta_names = {k.lower(): k for k in _META_KEYS}
        secret["metadata"] = {meta_names.get(k.lower(), k): v for k, v in meta.items()}
    return secret


def _secret_field(secret: dict[str, Any], what: str, key: str, *, required: bool) -> None:
    value = secret["data"].get(key)
    if value is None or value == "":
        if required:
            raise BrokerInfoError(f"{what} has no data.{key}")
        return
    if not isinstance(value, str):
        raise BrokerInfoError(f"{what} data.{key} must be a base64 string, not {_json_type(value)}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
        raise BrokerInfoError(f"{what} data.{key} is not valid base64") from None
    if key in _TEXT_KEYS:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BrokerInfoError(f"{what} data.{key} is not text") from None


def _secret_value(secret: dict[str, Any], key: str) -> bytes | None:
    value = (secret.get("data") or {}).get(key)
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise BrokerInfoError(f"Secret data.{key} is not valid base64") from None


def _string_list(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BrokerInfoError(f"{what} must be a list of strings, not {_show(value)}")
    return list(value)


def _json_type(value: Any) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _show(value: Any, limit: int = 80) -> str:
    """A short one-line JSON rendering of an offending value, for error messages."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (RecursionError, ValueError):
        return _json_type(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- files ---------------------------------------------------------------------------------------------


def write_file(path: str | os.PathLike[str], info: BrokerInfo, *, now: datetime | None = None) -> Path | None:
    """Write the file with mode 0600, first renaming an existing one aside; returns that backup's path.

    The file is created 0600 from the start (never briefly world-readable) and never follows a symlink.
    """
    target = Path(path)
    content = encode(info)
    backup = None
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory")
    if os.path.lexists(target):
        backup = _backup_path(target, now or datetime.now().astimezone())
        os.rename(target, backup)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(content)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return backup


def _backup_path(target: Path, now: datetime) -> Path:
    """`<path>.<RFC3339 with ':' -> '_'>`, as subctl names it; a numeric suffix avoids clobbering."""
    stamp = now.isoformat(timespec="seconds")
    if stamp.endswith("+00:00"):
        stamp = stamp[:-6] + "Z"
    base = target.with_name(f"{target.name}.{stamp.replace(':', '_')}")
    candidate, n = base, 0
    while os.path.lexists(candidate):
        n += 1
        candidate = base.with_name(f"{base.name}.{n}")
    return candidate


def read_file(path: str | os.PathLike[str]) -> BrokerInfo:
    """Decode a broker-info file; I/O errors propagate as OSError, bad content as BrokerInfoError."""
    raw = Path(path).read_bytes()
    try:
        return decode(raw)
    except BrokerInfoError as e:
        raise BrokerInfoError(f"{path}: {e}") from None
