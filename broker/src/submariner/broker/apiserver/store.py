"""Durable object store: SQLite (WAL) on disk, every object also in memory for reads.

Every write is committed before the caller gets its result, so an acknowledged write survives `kill -9`.
Reads never touch SQLite. Each object is kept with its JSON encoding so lists and watch events reuse the
bytes instead of re-encoding.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

Obj = dict[str, Any]


@dataclass(slots=True)
class Entry:
    """A stored object and its JSON encoding; treat both as immutable."""

    obj: Obj
    data: bytes
    rv: int


@dataclass(slots=True)
class Event:
    """A committed change; `old` is the previous state (None for ADDED)."""

    type: str  # ADDED | MODIFIED | DELETED
    key: str
    namespace: str
    name: str
    rv: int
    obj: Obj
    data: bytes
    old: Obj | None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    rv INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (key, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (k, v) VALUES ('rv', 0);
"""


class Store:
    """Objects by storage key, namespace and name, with a global, monotonic resourceVersion."""

    def __init__(self, path: Path | None, *, synchronous: str = "NORMAL") -> None:
        self._db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)
        self._data: dict[str, dict[tuple[str, str], Entry]] = {}
        self.listeners: list[Callable[[Event], None]] = []
        row = self._db.execute("SELECT v FROM meta WHERE k='rv'").fetchone()
        self.rv: int = int(row[0])
        for key, ns, name, rv, data in self._db.execute("SELECT key, namespace, name, rv, data FROM objects"):
            self._data.setdefault(key, {})[(ns, name)] = Entry(orjson.loads(data), bytes(data), rv)
        self.start_rv = self.rv

    def close(self) -> None:
        self._db.close()

    def get(self, key: str, namespace: str, name: str) -> Entry | None:
        bucket = self._data.get(key)
        return bucket.get((namespace, name)) if bucket else None

    def items(self, key: str, namespace: str | None = None) -> Iterator[Entry]:
        """Entries of one key, optionally of one namespace, in no particular order."""
        bucket = self._data.get(key)
        if not bucket:
            return iter(())
        if namespace is None:
            return iter(bucket.values())
        return (e for (ns, _), e in bucket.items() if ns == namespace)

    def sorted_items(self, key: str, namespace: str | None = None) -> list[tuple[tuple[str, str], Entry]]:
        bucket = self._data.get(key) or {}
        pairs = bucket.items() if namespace is None else ((k, e) for k, e in bucket.items() if k[0] == namespace)
        return sorted(pairs, key=lambda p: p[0])

    def count(self, key: str, namespace: str | None = None) -> int:
        bucket = self._data.get(key) or {}
        if namespace is None:
            return len(bucket)
        return sum(1 for ns, _ in bucket if ns == namespace)

    def resource_keys(self) -> list[str]:
        return [k for k, bucket in self._data.items() if bucket]

    def put(self, key: str, obj: Obj) -> Entry:
        """Insert or replace `obj`; assigns and returns the new resourceVersion inside the entry."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or ""
        name = meta["name"]
        rv = self.rv + 1
        meta["resourceVersion"] = str(rv)
        data = orjson.dumps(obj)
        self._db.execute("BEGIN")
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO objects (key, namespace, name, rv, data) VALUES (?, ?, ?, ?, ?)",
                (key, namespace, name, rv, data),
            )
            self._db.execute("UPDATE meta SET v=? WHERE k='rv'", (rv,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self.rv = rv
        bucket = self._data.setdefault(key, {})
        previous = bucket.get((namespace, name))
        entry = Entry(obj, data, rv)
        bucket[(namespace, name)] = entry
        self._emit(Event("MODIFIED" if previous else "ADDED", key, namespace, name, rv, obj, data,
                         previous.obj if previous else None))
        return entry

    def delete(self, key: str, namespace: str, name: str) -> Entry | None:
        """Remove an object; the DELETED event carries its last state with a new resourceVersion."""
        bucket = self._data.get(key)
        previous = bucket.get((namespace, name)) if bucket else None
        if previous is None or bucket is None:
            return None
        rv = self.rv + 1
        self._db.execute("BEGIN")
        try:
            self._db.execute(
                "DELETE FROM objects WHERE key=? AND namespace=? AND name=?", (key, namespace, name)
            )
            self._db.execute("UPDATE meta SET v=? WHERE k='rv'", (rv,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self.rv = rv
        del bucket[(namespace, name)]
        final = dict(previous.obj)
        final["metadata"] = dict(final["metadata"], resourceVersion=str(rv))
        data = orjson.dumps(final)
        self._emit(Event("DELETED", key, namespace, name, rv, final, data, previous.obj))
        return Entry(final, data, rv)

    def _emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)
