"""Kubernetes object semantics, independent of HTTP: create, get, list, update, patch, delete.

Everything here runs on the event-loop thread, so each operation is atomic with respect to the others and
to watch fan-out. Per-resource behaviour (Services, Secrets, Namespaces, CRDs) lives in `admission`.
"""

from __future__ import annotations

import base64
import copy
import secrets as pysecrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from . import admission
from .errors import ApiError, already_exists, bad_request, conflict, not_found
from .patch import apply_json_patch, apply_merge_patch, apply_strategic_merge_patch
from .resources import Registry, ResourceType
from .selectors import FieldSelector, LabelSelector
from .store import Entry, Event, Obj, Store
from .validation import validate_metadata
from .watch import WatchHub

_NAME_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"

PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
}


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class ListResult:
    entries: list[Entry]
    rv: int
    continue_token: str
    remaining: int | None


@dataclass(slots=True)
class DeleteOptions:
    propagation: str = "Background"
    uid: str | None = None
    resource_version: str | None = None
    dry_run: bool = False

    @classmethod
    def parse(cls, body: Any, query: dict[str, str]) -> DeleteOptions:
        opts = cls()
        if isinstance(body, dict):
            opts.propagation = body.get("propagationPolicy") or opts.propagation
            if body.get("orphanDependents") is True:
                opts.propagation = "Orphan"
            pre = body.get("preconditions") or {}
            opts.uid = pre.get("uid")
            opts.resource_version = pre.get("resourceVersion")
            opts.dry_run = bool(body.get("dryRun"))
        elif body is not None:
            raise bad_request("DeleteOptions must be a JSON object")
        if "propagationPolicy" in query:
            opts.propagation = query["propagationPolicy"]
        if query.get("orphanDependents") == "true":
            opts.propagation = "Orphan"
        if "dryRun" in query:
            opts.dry_run = True
        if opts.propagation not in ("Background", "Foreground", "Orphan"):
            raise bad_request(f"propagationPolicy: unsupported value {opts.propagation!r}")
        return opts


def _spec_view(obj: Obj, has_status: bool) -> Obj:
    """The part of an object whose change bumps metadata.generation."""
    return {k: v for k, v in obj.items() if k != "metadata" and not (has_status and k == "status")}


class Api:
    """The object layer the HTTP handlers and the built-in controllers call."""

    def __init__(self, store: Store, hub: WatchHub, registry: Registry, admission_ctx: admission.Context) -> None:
        self.store = store
        self.hub = hub
        self.registry = registry
        self.adm = admission_ctx
        # uid -> (key, namespace, name) of every object, and owner uid -> dependents, for garbage collection.
        self._by_uid: dict[str, tuple[str, str, str]] = {}
        self._dependents: dict[str, set[tuple[str, str, str]]] = {}
        self.rbac_changed: Callable[[], None] = lambda: None
        store.listeners.append(self._index)
        store.listeners.append(hub.on_event)
        for key in store.resource_keys():
            for e in store.items(key):
                self._index(Event("ADDED", key, e.obj["metadata"].get("namespace") or "",
                                  e.obj["metadata"]["name"], e.rv, e.obj, e.data, None))
        admission.startup(self)

    # ----------------------------------------------------------------- indexes

    def _index(self, event: Event) -> None:
        ident = (event.key, event.namespace, event.name)
        uid = event.obj["metadata"].get("uid")
        old_owners = {r.get("uid") for r in (event.old or {}).get("metadata", {}).get("ownerReferences") or ()}
        if event.type == "DELETED":
            if uid:
                self._by_uid.pop(uid, None)
            new_owners: set[Any] = set()
        else:
            if uid:
                self._by_uid[uid] = ident
            new_owners = {r.get("uid") for r in event.obj["metadata"].get("ownerReferences") or ()}
        for owner in old_owners - new_owners:
            deps = self._dependents.get(owner)
            if deps:
                deps.discard(ident)
                if not deps:
                    del self._dependents[owner]
        for owner in new_owners - old_owners:
            if owner:
                self._dependents.setdefault(owner, set()).add(ident)
        if event.key.startswith("rbac.authorization.k8s.io/"):
            self.rbac_changed()
        admission.on_event(self, event)

    def exists_uid(self, uid: str) -> bool:
        return uid in self._by_uid

    # ----------------------------------------------------------------- reads

    def get(self, rtype: ResourceType, namespace: str, name: str) -> Entry:
        entry = self.store.get(rtype.key, namespace if rtype.namespaced else "", name)
        if entry is None:
            raise not_found(rtype.plural, name, rtype.group)
        return entry

    def list_entries(
        self,
        rtype: ResourceType,
        namespace: str | None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> ListResult:
        matcher = self.matcher(label_selector, field_selector)
        ns = namespace if rtype.namespaced else None
        start: tuple[str, str] | None = None
        if continue_token:
            try:
                raw = orjson.loads(base64.urlsafe_b64decode(continue_token + "=" * (-len(continue_token) % 4)))
                start = (str(raw["ns"]), str(raw["name"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise bad_request("continue key is not valid: invalid continue token") from exc
        pairs = self.store.sorted_items(rtype.key, ns)
        entries: list[Entry] = []
        next_token = ""
        remaining: int | None = None
        for i, (sort_key, entry) in enumerate(pairs):
            if start is not None and sort_key <= start:
                continue
            if matcher is not None and not matcher(entry.obj):
                continue
            if limit and len(entries) >= limit:
                last = entries[-1].obj["metadata"]
                next_token = base64.urlsafe_b64encode(orjson.dumps(
                    {"ns": last.get("namespace") or "", "name": last["name"]})).decode().rstrip("=")
                if matcher is None:
                    remaining = len(pairs) - i
                break
            entries.append(entry)
        return ListResult(entries, self.store.rv, next_token, remaining)

    @staticmethod
    def matcher(label_selector: str, field_selector: str) -> Callable[[Obj], bool] | None:
        labels = LabelSelector.parse(label_selector) if label_selector else None
        fields = FieldSelector.parse(field_selector) if field_selector else None
        if labels is not None and labels.is_empty:
            labels = None
        if labels is None and fields is None:
            return None

        def match(obj: Obj) -> bool:
            if labels is not None and not labels.matches(obj.get("metadata", {}).get("labels")):
                return False
            return fields is None or fields.matches(obj)

        return match

    # ----------------------------------------------------------------- writes

    def create(self, rtype: ResourceType, namespace: str, body: Any, *, dry_run: bool = False) -> Entry:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was not a JSON object")
        obj: Obj = copy.deepcopy(body)
        obj.setdefault("apiVersion", rtype.api_version)
        obj.setdefault("kind", rtype.kind)
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        elif not isinstance(meta, dict):
            raise bad_request("metadata must be a JSON object")
        ns = namespace if rtype.namespaced else ""
        validate_metadata(obj, rtype, namespace=ns if rtype.namespaced else None)
        if rtype.namespaced:
            meta["namespace"] = ns
            self._check_namespace_open(ns)
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            meta["name"] = self._generate_name(rtype, ns, meta["generateName"])
        name = meta["name"]
        if self.store.get(rtype.key, ns, name) is not None:
            raise already_exists(rtype.plural, name, rtype.group)
        for server_owned in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink",
                             "managedFields"):
            meta.pop(server_owned, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if rtype.has_status and rtype.key != "nodes":
            obj.pop("status", None)  # as kube-apiserver: status is written through /status (nodes excepted)
        admission.admit_create(self, rtype, obj, dry_run=dry_run)
        if dry_run:
            return Entry(obj, orjson.dumps(obj), self.store.rv)
        return self.store.put(rtype.key, obj)

    def _generate_name(self, rtype: ResourceType, ns: str, prefix: str) -> str:
        for _ in range(16):
            candidate = prefix + "".join(pysecrets.choice(_NAME_SUFFIX_CHARS) for _ in range(5))
            if self.store.get(rtype.key, ns, candidate) is None:
                return candidate
        raise ApiError(500, f"could not generate a unique name from generateName {prefix!r}")

    def _check_namespace_open(self, namespace: str) -> None:
        entry = self.store.get("namespaces", "", namespace)
        if entry is None:
            raise not_found("namespaces", namespace)
        if entry.obj["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                f"unable to create new content in namespace {namespace} because it is being terminated",
                details={"name": namespace, "kind": "namespaces",
                         "causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace",
                                     "message": f"namespace {namespace} is being terminated"}]},
            )

    def update(
        self, rtype: ResourceType, namespace: str, name: str, body: Any, *, subresource: str = "",
        dry_run: bool = False,
    ) -> Entry:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was not a JSON object")
        current = self.get(rtype, namespace, name)
        new: Obj = copy.deepcopy(body)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            raise bad_request("metadata must be a JSON object")
        body_name = meta.get("name")
        if body_name and body_name != name:
            raise bad_request(f"the name of the object ({body_name}) does not match the name on the URL ({name})")
        meta["name"] = name
        validate_metadata(new, rtype, namespace=namespace if rtype.namespaced else None)
        return self._replace(rtype, current, new, subresource=subresource, dry_run=dry_run)

    def patch(
        self, rtype: ResourceType, namespace: str, name: str, patch_type: str, patch_body: Any, *,
        subresource: str = "", dry_run: bool = False,
    ) -> Entry:
        current = self.get(rtype, namespace, name)
        base = current.obj
        if patch_type == "merge":
            if not isinstance(patch_body, dict):
                raise bad_request("a merge patch must be a JSON object")
            new = apply_merge_patch(base, patch_body)
        elif patch_type == "json":
            if not isinstance(patch_body, list):
                raise bad_request("a JSON patch must be a JSON array of operations")
            new = apply_json_patch(base, patch_body)
        elif patch_type == "strategic":
            if rtype.from_crd:
                raise ApiError(415, "strategic merge patch is not supported for custom resources",
                               reason="UnsupportedMediaType")
            if not isinstance(patch_body, dict):
                raise bad_request("a strategic merge patch must be a JSON object")
            new = apply_strategic_merge_patch(base, patch_body, rtype.key)
        else:
            raise ApiError(415, f"unsupported patch type {patch_type!r}", reason="UnsupportedMediaType")
        if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
            raise ApiError(422, "the patch removed the object's metadata")
        new["metadata"]["name"] = name
        validate_metadata(new, rtype, namespace=namespace if rtype.namespaced else None)
        return self._replace(rtype, current, new, subresource=subresource, dry_run=dry_run)

    def _replace(self, rtype: ResourceType, current: Entry, new: Obj, *, subresource: str, dry_run: bool) -> Entry:
        old = current.obj
        old_meta = old["metadata"]
        meta = new["metadata"]
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and wanted_rv != old_meta.get("resourceVersion"):
            raise conflict(rtype.plural, old_meta["name"], rtype.group)
        if meta.get("uid") and meta["uid"] != old_meta.get("uid"):
            raise conflict(rtype.plural, old_meta["name"], rtype.group)
        if subresource == "status":
            # Only .status changes through the status subresource.
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            meta = new["metadata"]
        elif subresource:
            raise not_found(f"{rtype.plural}/{subresource}", old_meta["name"], rtype.group)
        else:
            if rtype.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            new["apiVersion"] = new.get("apiVersion") or rtype.api_version
            new["kind"] = new.get("kind") or rtype.kind
        # Server-owned metadata is never taken from the client.
        for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "generation", "namespace"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta.pop("managedFields", None)
        meta.pop("selfLink", None)
        meta["resourceVersion"] = old_meta.get("resourceVersion")
        if _spec_view(new, rtype.has_status) != _spec_view(old, rtype.has_status):
            meta["generation"] = int(old_meta.get("generation") or 1) + 1
        admission.admit_update(self, rtype, old, new, dry_run=dry_run)
        if new == old:
            return current  # a no-op write changes nothing and wakes no watcher
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not self._blocks_deletion(rtype, new):
            if dry_run:
                return Entry(new, orjson.dumps(new), self.store.rv)
            return self._remove(rtype, new, "Background")
        if old_meta.get("deletionTimestamp") and set(meta.get("finalizers") or ()) - set(
                old_meta.get("finalizers") or ()):
            raise ApiError(422, f'{rtype.kind} "{old_meta["name"]}" is invalid: metadata.finalizers: Forbidden: '
                                "no new finalizers can be added if the object is being deleted")
        if dry_run:
            return Entry(new, orjson.dumps(new), self.store.rv)
        return self.store.put(rtype.key, new)

    def _blocks_deletion(self, rtype: ResourceType, obj: Obj) -> bool:
        """Namespaces also wait for their spec.finalizers (the namespace controller's)."""
        return rtype.key == "namespaces" and bool((obj.get("spec") or {}).get("finalizers"))

    def delete(self, rtype: ResourceType, namespace: str, name: str, opts: DeleteOptions) -> tuple[Entry, bool]:
        """Delete or mark for deletion; returns the final state and whether the object is gone now."""
        current = self.get(rtype, namespace, name)
        meta = current.obj["metadata"]
        if opts.uid and opts.uid != meta.get("uid"):
            raise ApiError(409, f"Precondition failed: UID in precondition: {opts.uid}, UID in object meta: "
                                f"{meta.get('uid')}", reason="Conflict")
        if opts.resource_version and opts.resource_version != meta.get("resourceVersion"):
            raise ApiError(409, f"Precondition failed: ResourceVersion in precondition: {opts.resource_version}, "
                                f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
                           reason="Conflict")
        if opts.dry_run:
            return current, False
        if meta.get("finalizers") or self._blocks_deletion(rtype, current.obj):
            if meta.get("deletionTimestamp"):
                return current, False
            marked = copy.deepcopy(current.obj)
            marked["metadata"]["deletionTimestamp"] = now_rfc3339()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            admission.on_marked_for_deletion(self, rtype, marked)
            entry = self.store.put(rtype.key, marked)
            admission.after_marked_for_deletion(self, rtype, entry.obj)
            return entry, False
        return self._remove(rtype, current.obj, opts.propagation), True

    def _remove(self, rtype: ResourceType, obj: Obj, propagation: str) -> Entry:
        meta = obj["metadata"]
        ns = meta.get("namespace") or ""
        entry = self.store.delete(rtype.key, ns, meta["name"])
        if entry is None:
            raise not_found(rtype.plural, meta["name"], rtype.group)
        admission.on_deleted(self, rtype, entry.obj)
        self._collect_garbage(meta.get("uid") or "", propagation)
        if ns:
            admission.maybe_finish_namespace(self, ns)
        return entry

    def delete_collection(
        self, rtype: ResourceType, namespace: str | None, label_selector: str, field_selector: str,
        opts: DeleteOptions,
    ) -> list[Entry]:
        result = self.list_entries(rtype, namespace, label_selector=label_selector, field_selector=field_selector)
        out = []
        for entry in result.entries:
            m = entry.obj["metadata"]
            try:
                final, _ = self.delete(rtype, m.get("namespace") or "", m["name"], opts)
            except ApiError as exc:
                if exc.code == 404:
                    continue
                raise
            out.append(final)
        return out

    def delete_internal(self, key: str, namespace: str, name: str, propagation: str = "Background") -> None:
        """Delete by storage key, honouring finalizers; used by controllers (GC, namespace clean-up)."""
        rtype = self.registry.by_key(key)
        entry = self.store.get(key, namespace, name)
        if entry is None:
            return
        if rtype is None:
            self.store.delete(key, namespace, name)
            return
        try:
            self.delete(rtype, namespace, name, DeleteOptions(propagation=propagation))
        except ApiError as exc:
            if exc.code != 404:
                raise

    def put_internal(self, key: str, obj: Obj) -> Entry:
        """Write a server-computed object (status of CRDs, namespaces) without admission."""
        return self.store.put(key, obj)

    # ----------------------------------------------------------------- garbage collection

    def _collect_garbage(self, uid: str, propagation: str) -> None:
        work = [(uid, propagation)]
        while work:
            owner_uid, policy = work.pop()
            for key, ns, name in sorted(self._dependents.pop(owner_uid, ())):
                entry = self.store.get(key, ns, name)
                if entry is None:
                    continue
                refs = entry.obj["metadata"].get("ownerReferences") or []
                if policy == "Orphan":
                    orphaned = copy.deepcopy(entry.obj)
                    orphaned["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != owner_uid]
                    if not orphaned["metadata"]["ownerReferences"]:
                        del orphaned["metadata"]["ownerReferences"]
                    self.store.put(key, orphaned)
                    continue
                if any(r.get("uid") != owner_uid and self.exists_uid(r.get("uid", "")) for r in refs):
                    continue  # another owner still holds it
                self.delete_internal(key, ns, name)

    def collect_orphans(self) -> int:
        """Delete objects all of whose owners are gone (after a crash between an owner and its dependents)."""
        removed = 0
        for owner_uid in [u for u in self._dependents if u not in self._by_uid]:
            before = len(self._dependents.get(owner_uid, ()))
            self._collect_garbage(owner_uid, "Background")
            removed += before
        return removed

    # ----------------------------------------------------------------- helpers for controllers

    def all_entries(self, key: str, namespace: str | None = None) -> Iterable[Entry]:
        return self.store.items(key, namespace)

    def encode(self, entry: Entry, rtype: ResourceType) -> bytes:
        """The object's bytes as this served version presents it."""
        if rtype.from_crd and entry.obj.get("apiVersion") != rtype.api_version:
            return orjson.dumps({**entry.obj, "apiVersion": rtype.api_version})
        return entry.data
