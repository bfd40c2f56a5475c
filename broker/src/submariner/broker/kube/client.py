"""The one seam between Submariner daemons and a Kubernetes API server.

Everything above this module talks to `ClientFactory` / `ResourceClient` and plain JSON dicts; `Cluster`
is the real implementation (the official `kubernetes` package's `ApiClient` with raw paths: no discovery
round trips, bodies parsed with orjson) and `submariner.broker.kube.fake.FakeCluster` the in-memory one
tests swap in.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import re
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote

import orjson

from submariner.broker.api.meta import APIResource

log = logging.getLogger(__name__)

Obj = dict[str, Any]
"""A Kubernetes object exactly as the API returns it (JSON decoded)."""

ObjectKey = tuple[str, str]
"""(namespace, name); namespace is "" for cluster-scoped objects."""

NAMESPACES = APIResource("", "v1", "Namespace", "namespaces", "namespace", False)
CONFIGMAPS = APIResource("", "v1", "ConfigMap", "configmaps", "configmap", True)
SECRETS = APIResource("", "v1", "Secret", "secrets", "secret", True)
SERVICES = APIResource("", "v1", "Service", "services", "service", True)
ENDPOINT_SLICES = APIResource(
    "discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", True
)
LEASES = APIResource("coordination.k8s.io", "v1", "Lease", "leases", "lease", True)
CRDS = APIResource(
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
    "customresourcedefinition", False,
)

# --------------------------------------------------------------------------------------------- errors


class KubeError(Exception):
    """Any failure talking to the API; `status` is the HTTP code (0 = no HTTP answer)."""

    def __init__(
        self, message: str, *, status: int = 0, reason: str = "", details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.details: dict[str, Any] = dict(details or {})


class NotFound(KubeError):
    """404: the object (or its namespace, see `missing_namespace`) does not exist."""


class AlreadyExists(KubeError):
    """409 AlreadyExists on create."""


class Conflict(KubeError):
    """409 on update: the resourceVersion is stale; re-read and retry."""


class Expired(KubeError):
    """410: the resourceVersion is older than the server keeps; relist."""


class Forbidden(KubeError):
    """401/403: credentials rejected or not allowed."""


class Invalid(KubeError):
    """422: the object failed validation."""


class Unavailable(KubeError):
    """No usable answer: connection refused, timeout, TLS failure, 429/502/503/504."""


def error_from_status(status: int, body: bytes | Mapping[str, Any] | None) -> KubeError:
    """Map an HTTP error answer (ideally a `metav1.Status`) to the matching exception."""
    doc: Mapping[str, Any] = {}
    if isinstance(body, Mapping):
        doc = body
    elif body:
        try:
            parsed = orjson.loads(body)
            if isinstance(parsed, dict):
                doc = parsed
        except orjson.JSONDecodeError:
            doc = {"message": body[:200].decode("utf-8", "replace")}
    message = str(doc.get("message") or f"HTTP {status}")
    reason = str(doc.get("reason") or "")
    details = doc.get("details") if isinstance(doc.get("details"), dict) else None
    cls: type[KubeError] = KubeError
    if status == 404:
        cls = NotFound
    elif status == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif status == 410:
        cls = Expired
    elif status in (401, 403):
        cls = Forbidden
    elif status == 422:
        cls = Invalid
    elif status in (429, 502, 503, 504):
        cls = Unavailable
    return cls(message, status=status, reason=reason, details=details)


_NS_NOT_FOUND = re.compile(r'^namespaces "([^"]+)" not found')


def missing_namespace(err: BaseException) -> str | None:
    """The namespace whose absence caused `err`, if that is what it says (a create into a missing ns)."""
    if not isinstance(err, NotFound):
        return None
    if err.details.get("kind") == "namespaces" and err.details.get("name"):
        return str(err.details["name"])
    m = _NS_NOT_FOUND.match(err.message)
    return m.group(1) if m else None


# ------------------------------------------------------------------------------------------ the seam


class WatchEvent(NamedTuple):
    """One watch notification: type is ADDED, MODIFIED, DELETED or BOOKMARK."""

    type: str
    object: Obj


class WatchStream(Protocol):
    """An open watch: iterate for events; `close()` may be called from any thread to end it."""

    def __iter__(self) -> Iterator[WatchEvent]: ...

    def __next__(self) -> WatchEvent: ...

    def close(self) -> None: ...


class ResourceClient(Protocol):
    """CRUD + list/watch for one resource type; namespace is ignored for cluster-scoped resources."""

    @property
    def resource(self) -> APIResource: ...

    def get(self, namespace: str, name: str) -> Obj: ...

    def list(
        self, namespace: str | None = None, *, label_selector: str = "", field_selector: str = ""
    ) -> tuple[list[Obj], str]: ...

    def watch(
        self,
        namespace: str | None = None,
        resource_version: str = "",
        *,
        label_selector: str = "",
        field_selector: str = "",
        timeout_seconds: int | None = None,
    ) -> WatchStream: ...

    def create(self, obj: Obj) -> Obj: ...

    def update(self, obj: Obj) -> Obj: ...

    def update_status(self, obj: Obj) -> Obj: ...

    def patch(self, namespace: str, name: str, patch: Any, patch_type: str = "merge") -> Obj: ...

    def delete(self, namespace: str, name: str) -> None: ...


class ClientFactory(Protocol):
    """One cluster: hands out a ResourceClient per resource type."""

    @property
    def name(self) -> str: ...

    def resource(self, res: APIResource) -> ResourceClient: ...


# ---------------------------------------------------------------------------------------- obj helpers


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def resource_version_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def deep_copy(obj: Obj) -> Obj:
    """JSON round trip: faster than copy.deepcopy for API objects and guarantees JSON-only values."""
    copied: Obj = orjson.loads(orjson.dumps(obj))
    return copied


# ------------------------------------------------------------------------------------------ selectors


class _Requirement(NamedTuple):
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str]


_SET_RE = re.compile(r"^\s*(!?)\s*([^\s=!(),]+)\s*(?:(in|notin)\s*\(([^)]*)\)|(==|=|!=)\s*([^\s,()!=]*))?\s*$")


@functools.lru_cache(maxsize=256)
def parse_label_selector(selector: str) -> tuple[_Requirement, ...]:
    """Parse the label-selector string language (=, ==, !=, in, notin, key, !key)."""
    parts: list[str] = []
    depth, current = 0, list[str]()
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    reqs = []
    for part in parts:
        if not part.strip():
            continue
        m = _SET_RE.match(part)
        if not m:
            raise ValueError(f"invalid label selector {selector!r}: cannot parse {part!r}")
        neg, key, set_op, set_values, eq_op, eq_value = m.groups()
        if neg:
            if set_op or eq_op:
                raise ValueError(f"invalid label selector {selector!r}: '!' only applies to a bare key")
            reqs.append(_Requirement(key, "!", frozenset()))
        elif set_op:
            values = frozenset(v.strip() for v in set_values.split(",") if v.strip())
            reqs.append(_Requirement(key, set_op, values))
        elif eq_op:
            reqs.append(_Requirement(key, "!=" if eq_op == "!=" else "=", frozenset([eq_value])))
        else:
            reqs.append(_Requirement(key, "exists", frozenset()))
    return tuple(reqs)


def label_selector_matches(selector: str, labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    for r in parse_label_selector(selector):
        value = labels.get(r.key)
        if r.op == "=":
            ok = value is not None and value in r.values
        elif r.op == "!=":
            ok = value is None or value not in r.values
        elif r.op == "in":
            ok = value is not None and value in r.values
        elif r.op == "notin":
            ok = value is None or value not in r.values
        elif r.op == "exists":
            ok = value is not None
        else:
            ok = value is None
        if not ok:
            return False
    return True


def field_selector_matches(selector: str, obj: Mapping[str, Any]) -> bool:
    """Equality field selectors on dotted paths (metadata.name, metadata.namespace, spec.x, ...)."""
    for part in selector.split(","):
        part = part.strip()
        if not part:
            continue
        negate = "!=" in part
        path, _, want = part.partition("!=" if negate else "=")
        want = want.lstrip("=")
        value: Any = obj
        for step in path.strip().split("."):
            value = value.get(step) if isinstance(value, Mapping) else None
        got = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        if (got == want.strip()) == negate:
            return False
    return True


# ------------------------------------------------------------------------------ the real implementation

_PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


def _resource_path(res: APIResource, namespace: str | None, name: str = "", subresource: str = "") -> str:
    path = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
    if res.namespaced and namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{res.plural}"
    if name:
        path += f"/{quote(name, safe='')}"
    if subresource:
        path += f"/{subresource}"
    return path


def _with_type(res: APIResource, obj: Obj) -> Obj:
    if obj.get("apiVersion") and obj.get("kind"):
        return obj
    return {**obj, "apiVersion": obj.get("apiVersion") or res.api_version,
            "kind": obj.get("kind") or res.kind}


class _HttpWatch:
    """A `?watch=true` response read as JSON lines; `close()` shuts the socket so a blocked read returns."""

    def __init__(self, resp: Any, what: str) -> None:
        self._resp = resp
        self._what = what
        self._lines: deque[bytes] = deque()
        self._buf = b""
        self._closed = False
        if getattr(resp, "chunked", False):
            self._chunks: Iterator[bytes] = iter(resp.stream(None, decode_content=True))
        else:
            self._chunks = iter(lambda: bytes(resp.read1(65536)), b"")

    def __iter__(self) -> _HttpWatch:
        return self

    def __next__(self) -> WatchEvent:
        while True:
            while self._lines:
                line = self._lines.popleft().strip()
                if line:
                    return self._event(line)
            if self._closed:
                raise StopIteration
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self.close()
                if self._buf.strip():
                    line, self._buf = self._buf, b""
                    return self._event(line)
                raise
            except Exception as e:  # the socket was shut down under us, or the server vanished
                was_closed = self._closed
                self.close()
                if was_closed:
                    raise StopIteration from None
                raise Unavailable(f"watch of {self._what} broke: {e}") from e
            data = self._buf + chunk
            *lines, self._buf = data.split(b"\n")
            self._lines.extend(lines)

    def _event(self, line: bytes) -> WatchEvent:
        doc = orjson.loads(line)
        etype = doc.get("type", "")
        obj = doc.get("object") or {}
        if etype == "ERROR":
            self.close()
            raise error_from_status(int(obj.get("code") or 500), obj)
        return WatchEvent(etype, obj)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for step in ("shutdown", "close"):
            with contextlib.suppress(Exception):  # already released or closed: nothing left to free
                getattr(self._resp, step)()


class _HttpResourceClient:
    """ResourceClient over `kubernetes.client.ApiClient` with raw paths."""

    def __init__(self, cluster: Cluster, res: APIResource) -> None:
        self._cluster = cluster
        self._res = res

    @property
    def resource(self) -> APIResource:
        return self._res

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: tuple[float, float | None] | None = None,
        stream: bool = False,
    ) -> Any:
        api = self._cluster.api_client
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        started = time.monotonic()
        try:
            method, url, headers, body, post = api.param_serialize(
                method=method,
                resource_path=path,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = api.call_api(
                method, url, header_params=headers, body=body, post_params=post,
                _request_timeout=timeout or self._cluster.request_timeout,
            ).response
        except ApiException as e:  # the REST layer reports TLS failures as status 0
            raise Unavailable(f"{method} {path}: {e.reason}") from e
        except (HTTPError, OSError) as e:
            raise Unavailable(f"{method} {path}: {type(e).__name__}: {e}") from e
        status = resp.status
        if stream and 200 <= status < 300:
            return resp
        try:
            data = resp.data
        except (HTTPError, OSError) as e:
            raise Unavailable(f"{method} {path}: reading the answer failed: {e}") from e
        finally:
            resp.release_conn()
        log.debug(
            "kube request cluster=%s method=%s path=%s status=%d ms=%.1f",
            self._cluster.name, method, path, status, (time.monotonic() - started) * 1000,
        )
        if not 200 <= status < 300:
            raise error_from_status(status, data)
        return orjson.loads(data) if data else {}

    def get(self, namespace: str, name: str) -> Obj:
        obj: Obj = _with_type(self._res, self._request("GET", _resource_path(self._res, namespace, name)))
        return obj

    def list(
        self, namespace: str | None = None, *, label_selector: str = "", field_selector: str = ""
    ) -> tuple[list[Obj], str]:
        query = []
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        doc = self._request("GET", _resource_path(self._res, namespace), query=query)
        items = [_with_type(self._res, o) for o in doc.get("items") or []]
        return items, str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def watch(
        self,
        namespace: str | None = None,
        resource_version: str = "",
        *,
        label_selector: str = "",
        field_selector: str = "",
        timeout_seconds: int | None = None,
    ) -> WatchStream:
        query = [("watch", "true"), ("allowWatchBookmarks", "true")]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        read_timeout: float | None = None
        if timeout_seconds:
            query.append(("timeoutSeconds", str(timeout_seconds)))
            read_timeout = timeout_seconds + 30.0
        path = _resource_path(self._res, namespace)
        resp = self._request(
            "GET", path, query=query, stream=True,
            timeout=(self._cluster.request_timeout[0], read_timeout),
        )
        return _HttpWatch(resp, f"{self._cluster.name}:{path}")

    def _namespace_of(self, obj: Obj) -> str:
        ns = str((obj.get("metadata") or {}).get("namespace") or "")
        if self._res.namespaced and not ns:
            raise Invalid(f"{self._res.kind} {key_of(obj)[1]!r} has no metadata.namespace", status=422)
        return ns

    def create(self, obj: Obj) -> Obj:
        path = _resource_path(self._res, self._namespace_of(obj))
        created: Obj = self._request("POST", path, body=_with_type(self._res, obj))
        return created

    def update(self, obj: Obj) -> Obj:
        path = _resource_path(self._res, self._namespace_of(obj), key_of(obj)[1])
        updated: Obj = self._request("PUT", path, body=_with_type(self._res, obj))
        return updated

    def update_status(self, obj: Obj) -> Obj:
        path = _resource_path(self._res, self._namespace_of(obj), key_of(obj)[1], "status")
        updated: Obj = self._request("PUT", path, body=_with_type(self._res, obj))
        return updated

    def patch(self, namespace: str, name: str, patch: Any, patch_type: str = "merge") -> Obj:
        if patch_type not in _PATCH_TYPES:
            raise ValueError(f"patch_type {patch_type!r} is not one of {sorted(_PATCH_TYPES)}")
        path = _resource_path(self._res, namespace, name)
        patched: Obj = self._request("PATCH", path, body=patch, content_type=_PATCH_TYPES[patch_type])
        return patched

    def delete(self, namespace: str, name: str) -> None:
        self._request("DELETE", _resource_path(self._res, namespace, name))


class Cluster:
    """A connection to one real API server; thread-safe; build with a `from_*` constructor."""

    def __init__(
        self,
        configuration: Any,
        *,
        name: str = "",
        request_timeout: tuple[float, float] = (10.0, 60.0),
    ) -> None:
        from kubernetes.client import ApiClient

        if configuration.retries is None:
            configuration.retries = 1  # callers back off and retry themselves; fail fast below them
        self.configuration = configuration
        self.api_client: Any = ApiClient(configuration)
        self.request_timeout = request_timeout
        self._name = name or str(configuration.host)
        self._clients: dict[APIResource, _HttpResourceClient] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def host(self) -> str:
        return str(self.configuration.host)

    @classmethod
    def from_kubeconfig(cls, path: str | Path | None = None, context: str | None = None) -> Cluster:
        """Credentials from a kubeconfig file (default: $KUBECONFIG or ~/.kube/config) and context."""
        from kubernetes import config
        from kubernetes.client import Configuration

        cfg = Configuration()
        load: Any = config.load_kube_config
        load(
            config_file=str(path) if path else None, context=context, client_configuration=cfg,
            persist_config=False,
        )
        return cls(cfg, name=context or str(cfg.host))

    @classmethod
    def in_cluster(cls) -> Cluster:
        """The pod's service account (token re-read when it rotates).

        `$SUBMARINER_SERVICEACCOUNT_DIR` replaces the fixed /var/run/secrets/kubernetes.io/serviceaccount:
        lab pods are processes, not containers, so their token and CA live in a per-pod directory. The
        token is sent as `Bearer <token>`: the official loader's lowercase `bearer` is refused by servers
        that match the scheme case-sensitively.
        """
        import os

        from kubernetes.client import Configuration
        from kubernetes.config import incluster_config

        sa_dir = os.environ.get("SUBMARINER_SERVICEACCOUNT_DIR")
        token_path = os.path.join(sa_dir, "token") if sa_dir else incluster_config.SERVICE_TOKEN_FILENAME
        cert_path = os.path.join(sa_dir, "ca.crt") if sa_dir else incluster_config.SERVICE_CERT_FILENAME
        cfg: Any = Configuration()
        make: Any = incluster_config.InClusterConfigLoader
        make(token_filename=token_path, cert_filename=cert_path).load_and_set(cfg)  # host, CA, checks
        cached: dict[str, Any] = {"token": "", "read_at": 0.0}

        def refresh(conf: Any) -> None:
            now = time.monotonic()
            if not cached["token"] or now - float(cached["read_at"]) > 60:
                with open(token_path) as f:
                    cached["token"], cached["read_at"] = f.read().strip(), now
            conf.api_key["BearerToken"] = cached["token"]
            conf.api_key_prefix["BearerToken"] = "Bearer"

        refresh(cfg)
        cfg.refresh_api_key_hook = refresh
        return cls(cfg, name="in-cluster")

    @classmethod
    def from_token(
        cls,
        url: str,
        token: str,
        *,
        ca_data: str | bytes | None = None,
        insecure: bool = False,
        name: str = "",
    ) -> Cluster:
        """The broker case: API URL + bearer token + CA (PEM, or base64 of PEM as in broker secrets)."""
        from kubernetes.client import Configuration

        cfg = Configuration(host=url.rstrip("/"))
        cfg.api_key = {"BearerToken": token}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        cfg.verify_ssl = not insecure
        if ca_data and not insecure:
            cfg.ca_cert_data = _pem(ca_data)
        return cls(cfg, name=name or url)

    def resource(self, res: APIResource) -> ResourceClient:
        client = self._clients.get(res)
        if client is None:
            client = self._clients.setdefault(res, _HttpResourceClient(self, res))
        return client

    def close(self) -> None:
        self.api_client.close()


def _pem(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" not in raw:
        raw = base64.b64decode(raw)
    return raw.decode()
