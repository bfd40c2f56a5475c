"""The HTTP face of the server: routing, authentication, authorization, content negotiation, watch streams.

One catch-all aiohttp handler parses the Kubernetes URL layout itself (it must follow CRDs that come and
go), then calls `core.Api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import yaml
from aiohttp import web

from . import discovery, podexec, podlogs
from .core import PATCH_TYPES, Api, DeleteOptions
from .errors import ApiError, bad_request, not_found
from .patch import apply_json_patch, apply_merge_patch
from .protobuf import CONTENT_TYPE as PROTOBUF
from .protobuf import decode_k8s_protobuf
from .rbac import Attributes, Authorizer, UserInfo, forbidden_message, service_account_user
from .resources import ResourceType
from .store import Entry
from .tables import label_selector_string, render_table
from .watch import Watcher, encode_event

log = logging.getLogger("submariner.broker.apiserver")

JSON = "application/json"
MAX_BODY_BYTES = 3 * 1024 * 1024
ADMIN = UserInfo("submariner-admin", ("system:masters", "system:authenticated"))
_NON_RESOURCE_OPEN = ("/healthz", "/livez", "/readyz")


@dataclass(slots=True)
class Route:
    rtype: ResourceType
    namespace: str
    name: str
    subresource: str
    watch_path: bool


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=JSON)


def _raw(data: bytes, status: int = 200) -> web.Response:
    return web.Response(body=data, status=status, content_type=JSON)


def _error(exc: ApiError) -> web.Response:
    return _json(exc.status(), exc.code)


class HttpApi:
    """Request handling for one server instance."""

    def __init__(self, api: Api, *, admin_tokens: set[str], server_address: str,
                 bookmark_interval: float = 5.0) -> None:
        self.api = api
        self.admin_tokens = admin_tokens
        self.server_address = server_address
        self.authorizer = Authorizer(lambda key: [e.obj for e in api.store.items(key)])
        api.rbac_changed = self.authorizer.invalidate
        self.bookmark_interval = bookmark_interval
        self.exec_backend: podexec.NetnsExecBackend | None = None
        self.log_backend: podlogs.FileLogBackend | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._errors])
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc)
        except web.HTTPRequestEntityTooLarge:
            return _error(ApiError(413, f"the request body is larger than the limit of {MAX_BODY_BYTES} bytes"))
        except web.HTTPException:
            raise
        except Exception as exc:  # the server must keep serving; the client gets a Status
            log.exception("internal error method=%s path=%s", request.method, request.path)
            return _error(ApiError(500, f"internal error: {type(exc).__name__}: {exc}"))

    # ------------------------------------------------------------------ authentication / authorization

    def authenticate(self, request: web.Request) -> UserInfo:
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer":
            token = token.strip()
            if token in self.admin_tokens:
                return ADMIN
            sa = self.api.adm.tokens.get(token)
            if sa is not None:
                return service_account_user(*sa)
        raise ApiError(401, "Unauthorized")

    def authorize(self, user: UserInfo, attrs: Attributes) -> None:
        if "system:masters" in user.groups:
            return
        allowed, reason = self.authorizer.authorize(user, attrs)
        if not allowed:
            raise ApiError(403, forbidden_message(user, attrs, reason),
                           details={"name": attrs.name, "group": attrs.api_group, "kind": attrs.resource})

    # ------------------------------------------------------------------ dispatch

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.rstrip("/") in _NON_RESOURCE_OPEN:
            return web.Response(text="ok")
        user = self.authenticate(request)
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis"):
            return self._non_resource(request, user, parts)
        route = self._route(parts)
        if route is None:
            return self._discovery(request, user, parts)
        return await self._resource(request, user, route)

    def _non_resource(self, request: web.Request, user: UserInfo, parts: list[str]) -> web.Response:
        path = request.path.rstrip("/") or "/"
        self.authorize(user, Attributes(verb=request.method.lower(), api_group="", resource="", subresource="",
                                        namespace="", name="", path=path, is_resource_request=False))
        if path == "/version":
            return _json(discovery.KUBE_VERSION)
        if path == "/openapi/v3":
            return _json(discovery.openapi_v3_index(self.api.registry))
        if path.startswith("/openapi/v3/"):
            rest = parts[2:]
            if rest and rest[0] == "api" and len(rest) == 2:
                return _json(discovery.openapi_v3_group_version(self.api.registry, "", rest[1]))
            if rest and rest[0] == "apis" and len(rest) == 3:
                return _json(discovery.openapi_v3_group_version(self.api.registry, rest[1], rest[2]))
        raise ApiError(404, f"the server could not find the requested resource ({path})")

    def _discovery(self, request: web.Request, user: UserInfo, parts: list[str]) -> web.Response:
        self.authorize(user, Attributes(verb="get", api_group="", resource="", subresource="", namespace="",
                                        name="", path=request.path, is_resource_request=False))
        registry = self.api.registry
        doc: dict[str, Any] | None = None
        if parts == ["api"]:
            doc = discovery.api_versions(self.server_address)
        elif parts[0] == "api" and len(parts) == 2:
            doc = discovery.resource_list(registry, "", parts[1])
        elif parts == ["apis"]:
            doc = discovery.api_group_list(registry)
        elif parts[0] == "apis" and len(parts) == 2:
            doc = discovery.api_group(registry, parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            doc = discovery.resource_list(registry, parts[1], parts[2])
        if doc is None:
            raise ApiError(404, f"the server could not find the requested resource ({request.path})")
        return _json(doc)

    def _route(self, parts: list[str]) -> Route | None:
        if parts[0] == "api":
            if len(parts) < 3:
                return None
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) < 4:
                return None
            group, version, rest = parts[1], parts[2], parts[3:]
        watch_path = False
        if rest[0] == "watch":
            watch_path, rest = True, rest[1:]
            if not rest:
                return None
        registry = self.api.registry
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            inner = registry.get(group, version, rest[2])
            if inner is not None and inner.namespaced:
                namespace, rest = rest[1], rest[2:]
        rtype = registry.get(group, version, rest[0])
        if rtype is None:
            raise ApiError(404, f"the server could not find the requested resource "
                                f"(resource {rest[0]!r} in {group or 'core'}/{version})")
        if len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource")
        return Route(rtype, namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "",
                     watch_path)

    async def _resource(self, request: web.Request, user: UserInfo, route: Route) -> web.StreamResponse:
        method = request.method
        query = request.rel_url.query
        rtype = route.rtype
        if route.subresource == "exec" and rtype.key == PODS_KEY and self.exec_backend is not None:
            return await self._exec(request, user, route)
        if route.subresource == "log" and rtype.key == PODS_KEY and self.log_backend is not None:
            return await self._logs(request, user, route)
        if route.subresource and route.subresource != "status" and not (
                route.subresource == "scale" and rtype.key in SCALABLE):
            raise not_found(f"{rtype.plural}/{route.subresource}", route.name, rtype.group)
        if route.subresource == "status" and not rtype.has_status:
            raise not_found(f"{rtype.plural}/status", route.name, rtype.group)
        is_watch = route.watch_path or query.get("watch") in ("true", "1")
        if method == "GET":
            verb = "get" if route.name else ("watch" if is_watch else "list")
        elif method == "POST" and not route.name:
            verb = "create"
        elif method == "PUT" and route.name:
            verb = "update"
        elif method == "PATCH" and route.name:
            verb = "patch"
        elif method == "DELETE":
            verb = "delete" if route.name else "deletecollection"
        else:
            raise ApiError(405, f"the server does not allow this method on the requested resource ({method})")
        self.authorize(user, Attributes(verb=verb, api_group=rtype.group, resource=rtype.plural,
                                        subresource=route.subresource, namespace=route.namespace,
                                        name=route.name, path=request.path, is_resource_request=True))
        if rtype.namespaced and not route.namespace and verb in ("create", "get", "update", "patch", "delete"):
            raise ApiError(404, f"the server could not find the requested resource: {rtype.plural} is "
                                "namespaced; use /namespaces/<namespace>/...")
        if not rtype.namespaced and route.namespace:
            raise ApiError(404, f"{rtype.plural} is not namespaced")
        api = self.api
        dry_run = "dryRun" in query
        if route.subresource == "scale":
            return await self._scale(request, verb, rtype, route)
        if verb == "get":
            entry = api.get(rtype, route.namespace, route.name)
            if _wants_table(request):
                return _json(render_table(rtype, [entry.obj], include_object=query.get("includeObject",
                                                                                           "Metadata")))
            return _raw(api.encode(entry, rtype))
        if verb == "list":
            return self._list(request, rtype, route)
        if verb == "watch":
            return await self._watch(request, rtype, route)
        if verb == "create":
            body = await _read_body(request)
            if route.subresource:
                raise ApiError(405, "create is not allowed on a subresource")
            entry = api.create(rtype, route.namespace, body, dry_run=dry_run)
            return _raw(api.encode(entry, rtype), 201)
        if verb == "update":
            body = await _read_body(request)
            entry = api.update(rtype, route.namespace, route.name, body, subresource=route.subresource,
                               dry_run=dry_run)
            return _raw(api.encode(entry, rtype))
        if verb == "patch":
            content_type = request.content_type
            patch_type = PATCH_TYPES.get(content_type)
            if patch_type is None:
                raise ApiError(415, f"the server does not support the patch type {content_type!r} "
                                    "(use application/merge-patch+json, application/json-patch+json or "
                                    "application/strategic-merge-patch+json)", reason="UnsupportedMediaType")
            body = await _read_body(request, force_json=True)
            entry = api.patch(rtype, route.namespace, route.name, patch_type, body,
                              subresource=route.subresource, dry_run=dry_run)
            return _raw(api.encode(entry, rtype))
        body = await _read_body(request, optional=True)
        opts = DeleteOptions.parse(body, dict(query))
        if verb == "delete":
            final, _gone = api.delete(rtype, route.namespace, route.name, opts)
            return _raw(api.encode(final, rtype))
        entries = api.delete_collection(rtype, route.namespace or None, query.get("labelSelector", ""),
                                        query.get("fieldSelector", ""), opts)
        return self._list_response(rtype, entries, api.store.rv, "", None)

    async def _exec(self, request: web.Request, user: UserInfo, route: Route) -> web.StreamResponse:
        """`kubectl exec` (WebSocket): through the configured backend (see podexec)."""
        assert self.exec_backend is not None
        if request.method not in ("GET", "POST"):
            raise ApiError(405, f"the server does not allow this method on pods/exec ({request.method})")
        self.authorize(user, Attributes(verb="create", api_group="", resource="pods", subresource="exec",
                                        namespace=route.namespace, name=route.name, path=request.path,
                                        is_resource_request=True))
        pod = self.api.get(route.rtype, route.namespace, route.name).obj
        try:
            exec_request = podexec.ExecRequest.from_query(request.rel_url.query,
                                                          request.rel_url.query.getall("command", []))
            return await podexec.serve(request, pod, exec_request, self.exec_backend)
        except podexec.ExecError as exc:
            raise ApiError(400, str(exc)) from None

    async def _logs(self, request: web.Request, user: UserInfo, route: Route) -> web.StreamResponse:
        """`kubectl logs`: the container's log file through the configured backend (see podlogs)."""
        assert self.log_backend is not None
        if request.method != "GET":
            raise ApiError(405, f"the server does not allow this method on pods/log ({request.method})")
        self.authorize(user, Attributes(verb="get", api_group="", resource="pods", subresource="log",
                                        namespace=route.namespace, name=route.name, path=request.path,
                                        is_resource_request=True))
        pod = self.api.get(route.rtype, route.namespace, route.name).obj
        try:
            return await podlogs.serve(request, pod, self.log_backend)
        except podlogs.LogError as exc:
            raise ApiError(400, str(exc)) from None

    async def _scale(self, request: web.Request, verb: str, rtype: ResourceType, route: Route) -> web.Response:
        """The `scale` subresource (`kubectl scale`): an autoscaling/v1 Scale view of spec.replicas."""
        api = self.api
        if verb == "get":
            return _json(_scale_of(api.get(rtype, route.namespace, route.name).obj))
        if verb not in ("update", "patch"):
            raise ApiError(405, f"{verb} is not allowed on the scale subresource")
        body = await _read_body(request, force_json=verb == "patch")
        current = _scale_of(api.get(rtype, route.namespace, route.name).obj)
        if verb == "patch":
            patch_type = PATCH_TYPES.get(request.content_type)
            if patch_type == "json":
                wanted = apply_json_patch(current, body)
            elif patch_type in ("merge", "strategic"):
                wanted = apply_merge_patch(current, body)
            else:
                raise ApiError(415, f"unsupported patch type {request.content_type!r}", reason="UnsupportedMediaType")
        else:
            wanted = body
        replicas = (wanted.get("spec") or {}).get("replicas") if isinstance(wanted, dict) else None
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(422, f'Scale "{route.name}" is invalid: spec.replicas: Invalid value: {replicas!r}: '
                                "must be greater than or equal to 0")
        change: dict[str, Any] = {"spec": {"replicas": replicas}}
        rv = (wanted.get("metadata") or {}).get("resourceVersion")
        if rv:
            change["metadata"] = {"resourceVersion": rv}
        entry = api.patch(rtype, route.namespace, route.name, "merge", change, dry_run="dryRun" in request.query)
        return _json(_scale_of(entry.obj))

    def _list(self, request: web.Request, rtype: ResourceType, route: Route) -> web.Response:
        query = request.rel_url.query
        try:
            limit = int(query.get("limit") or 0)
        except ValueError as exc:
            raise bad_request(f"limit: invalid value {query.get('limit')!r}") from exc
        result = self.api.list_entries(rtype, route.namespace or None, label_selector=query.get("labelSelector", ""),
                               field_selector=query.get("fieldSelector", ""), limit=max(limit, 0),
                               continue_token=query.get("continue", ""))
        if _wants_table(request):
            meta = {"resourceVersion": str(result.rv)}
            if result.continue_token:
                meta["continue"] = result.continue_token
            return _json(render_table(rtype, [e.obj for e in result.entries],
                                      include_object=query.get("includeObject", "Metadata"), list_metadata=meta))
        return self._list_response(rtype, result.entries, result.rv, result.continue_token, result.remaining)

    def _list_response(self, rtype: ResourceType, entries: list[Entry], rv: int, token: str,
                       remaining: int | None) -> web.Response:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if token:
            meta["continue"] = token
            if remaining is not None:
                meta["remainingItemCount"] = remaining
        head = orjson.dumps({"kind": rtype.list_kind, "apiVersion": rtype.api_version, "metadata": meta})
        encode = self.api.encode
        items = b",".join(encode(e, rtype) for e in entries)
        return _raw(head[:-1] + b',"items":[' + items + b"]}")

    async def _watch(self, request: web.Request, rtype: ResourceType, route: Route) -> web.StreamResponse:
        query = request.rel_url.query
        api = self.api
        matcher = api.matcher(query.get("labelSelector", ""), query.get("fieldSelector", ""))
        if route.name:
            name_matcher = api.matcher("", f"metadata.name={route.name}")
            if name_matcher is not None:
                matcher = name_matcher if matcher is None else _both(matcher, name_matcher)
        rv_text = query.get("resourceVersion", "")
        try:
            since = int(rv_text) if rv_text not in ("", "0") else None
        except ValueError as exc:
            raise bad_request(f"resourceVersion: invalid value {rv_text!r}") from exc
        # Streaming lists (kubectl wait/rollout): the current state as ADDED events, then a bookmark that
        # marks the end of the initial events. Our state is always the newest, which satisfies NotOlderThan.
        initial_events = query.get("sendInitialEvents") == "true"
        if initial_events:
            since = None
        try:
            timeout = float(query.get("timeoutSeconds") or 1800)
        except ValueError as exc:
            raise bad_request("timeoutSeconds: invalid value") from exc
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        render: Callable[[dict[str, Any]], bytes] | None = None
        if _wants_table(request):
            include = query.get("includeObject", "Metadata")

            def render(obj: dict[str, Any]) -> bytes:
                return orjson.dumps(render_table(rtype, [obj], include_object=include))

        watcher = Watcher(rtype.key, route.namespace or None, matcher,
                          api_version=rtype.api_version if rtype.from_crd else None, render=render)
        if since is None:
            for entry in api.store.items(rtype.key, route.namespace or None):
                if matcher is None or matcher(entry.obj):
                    data = render(entry.obj) if render is not None else api.encode(entry, rtype)
                    watcher.push(encode_event("ADDED", data))
            if initial_events:
                watcher.push(self._bookmark(rtype, initial_events_end=True))
            api.hub.subscribe(watcher, None)
        else:
            try:
                api.hub.subscribe(watcher, since)
            except ApiError as exc:
                # As kube-apiserver: a 200 stream carrying one ERROR event, so informers relist.
                response = web.StreamResponse(headers={"Content-Type": JSON})
                await response.prepare(request)
                await response.write(orjson.dumps({"type": "ERROR", "object": exc.status()}) + b"\n")
                await response.write_eof()
                return response
        response = web.StreamResponse(headers={"Content-Type": JSON, "Cache-Control": "no-cache"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            loop = asyncio.get_running_loop()
            deadline = time.monotonic() + timeout
            next_bookmark = time.monotonic() + self.bookmark_interval
            while not watcher.closed:
                if watcher.pending:
                    if watcher.overflowed:
                        log.warning("watch consumer too slow; closing key=%s", rtype.key)
                        break
                    await response.write(watcher.drain())
                    continue
                now = time.monotonic()
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, next_bookmark - now)
                if wait <= 0:
                    if now >= deadline:
                        break
                    next_bookmark = now + self.bookmark_interval
                    await response.write(self._bookmark(rtype))
                    continue
                timer = loop.call_later(wait, watcher.wakeup.set)
                try:
                    await watcher.wakeup.wait()
                finally:
                    timer.cancel()
                if watcher.pending or watcher.closed:
                    continue
                watcher.wakeup.clear()
            if bookmarks and not watcher.closed:
                await response.write(self._bookmark(rtype))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            api.hub.unsubscribe(watcher)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response

    def _bookmark(self, rtype: ResourceType, *, initial_events_end: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(self.api.store.rv)}
        if initial_events_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta}
        return encode_event("BOOKMARK", orjson.dumps(obj))


def _both(a: Callable[[dict[str, Any]], bool], b: Callable[[dict[str, Any]], bool]) -> Callable[
        [dict[str, Any]], bool]:
    return lambda obj: a(obj) and b(obj)


SCALABLE = frozenset({"apps/deployments", "apps/statefulsets"})
PODS_KEY = "pods"


def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if k in meta},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                   "selector": label_selector_string((obj.get("spec") or {}).get("selector"))},
    }


def _wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=Table" in accept


async def _read_body(request: web.Request, *, optional: bool = False, force_json: bool = False) -> Any:
    raw = await request.read()
    if request.content_type == PROTOBUF:
        if force_json:
            raise ApiError(415, "patches must be JSON", reason="UnsupportedMediaType")
        return decode_k8s_protobuf(raw)
    if not raw.strip():
        if optional:
            return None
        raise bad_request("the request body is empty; expected a JSON or YAML object")
    content_type = request.content_type
    if not force_json and content_type in ("application/yaml", "application/x-yaml", "text/yaml"):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise bad_request(f"the request body is not valid YAML: {exc}") from exc
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from exc
