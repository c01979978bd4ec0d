"""``sqlite:///path`` (also ``db+sqlite:///path``): results in the embedded SQLite file.

There is no server to notify a waiter, so ``get()`` polls with a back-off that starts at
one millisecond and grows to the ``interval`` the caller gave.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from ..utils.sqlite import SQLiteFile
from ..utils.urls import sqlite_path
from .. import states
from .base import Backend, BackendOptions, ChordPart, done_at

SCHEMA = """
CREATE TABLE IF NOT EXISTS celeriac_results (
    task_id TEXT PRIMARY KEY,
    meta BLOB NOT NULL,
    expires REAL
);
CREATE TABLE IF NOT EXISTS celeriac_chords (
    group_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    expires REAL
);
CREATE TABLE IF NOT EXISTS celeriac_chord_parts (
    group_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    member BLOB NOT NULL,
    PRIMARY KEY (group_id, idx)
);
"""

#: ``recent_results`` ends its walk at a result done this many seconds before
#: ``since``: writers' clocks differ, and a write may land a little after its date
RECENT_SKEW = 60.0


class SQLiteBackend(Backend):
    def __init__(self, url: str, options: BackendOptions | None = None) -> None:
        super().__init__(url, options)
        self.db = SQLiteFile(sqlite_path(url), SCHEMA)

    def _set(self, task_id: str, data: bytes, expires: float | None, ready: bool) -> None:
        deadline = time.time() + expires if expires else None
        conn = self.db.connection()
        self.db._retry(lambda: conn.execute(
            "INSERT OR REPLACE INTO celeriac_results (task_id, meta, expires) VALUES (?, ?, ?)",
            (task_id, data, deadline)))

    def _get(self, task_id: str) -> bytes | None:
        row = self.db.connection().execute(
            "SELECT meta, expires FROM celeriac_results WHERE task_id = ?", (task_id,)
        ).fetchone()
        if row is None:
            return None
        if row[1] is not None and row[1] < time.time():
            self._delete(task_id)
            return None
        return bytes(row[0])

    def _delete(self, task_id: str) -> None:
        self.db.connection().execute("DELETE FROM celeriac_results WHERE task_id = ?", (task_id,))

    def recent_results(self, since: float, limit: int = 1000, cursor: str | None = None
                       ) -> tuple[list[dict[str, Any]], str | None]:
        """See ``Backend.recent_results``; the cursor is a rowid.

        Cost: the table has no column for the done time, but every write (an INSERT
        OR REPLACE) gives its row a rowid above all others, so walking rowids down
        reads the latest writes first, ``limit`` rows per call on the table's own
        b-tree, and the pass ends at the first result done ``RECENT_SKEW`` seconds
        before ``since``: it reads the rows written since then, not the whole file.
        """
        before = int(cursor) if cursor else None
        rows = self.db.connection().execute(
            "SELECT rowid, task_id, meta, expires FROM celeriac_results"
            + ("" if before is None else " WHERE rowid < ?") + " ORDER BY rowid DESC LIMIT ?",
            (() if before is None else (before,)) + (max(1, int(limit)),)).fetchall()
        now = time.time()
        metas: list[dict[str, Any]] = []
        for _, task_id, data, expires in rows:
            if expires is not None and expires < now:
                continue
            try:
                meta = self._decode(bytes(data))
            except Exception:  # noqa: BLE001 - one unreadable result does not end the pass
                continue
            done = done_at(meta)
            if done is None:
                continue
            if done < since - RECENT_SKEW:
                return metas, None  # written before ``since``, as all below it
            if done >= since and meta.get("status") in states.READY_STATES:
                meta.setdefault("task_id", task_id)
                metas.append(meta)
        if len(rows) < max(1, int(limit)):
            return metas, None
        return metas, str(rows[-1][0])

    def set_chord_size(self, group_id: str, size: int) -> None:
        ttl = self.options.chord_ttl
        deadline = time.time() + ttl if ttl else None

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM celeriac_chord_parts WHERE group_id = ?", (group_id,))
            conn.execute("INSERT OR REPLACE INTO celeriac_chords (group_id, size, done, expires)"
                         " VALUES (?, ?, 0, ?)", (group_id, size, deadline))

        self.db.write(write)

    def add_to_chord(self, group_id: str) -> int:
        def write(conn: sqlite3.Connection) -> int:
            row = conn.execute("UPDATE celeriac_chords SET size = size + 1 WHERE group_id = ?"
                               " RETURNING size", (group_id,)).fetchone()
            if row is None:
                raise KeyError(f"no chord {group_id!r} is waiting (finished or unknown)")
            return int(row[0])

        return self.db.write(write)

    def chord_part_return(self, group_id: str, index: int, task_id: str, state: str,
                          result: Any) -> list[ChordPart] | None:
        member = self._chord_member(index, task_id, state, result)

        def write(conn: sqlite3.Connection) -> list[bytes] | None:
            added = conn.execute(
                "INSERT OR IGNORE INTO celeriac_chord_parts (group_id, idx, member)"
                " VALUES (?, ?, ?)", (group_id, index, member)).rowcount
            if not added:
                return None  # a redelivered part counts once
            row = conn.execute(
                "UPDATE celeriac_chords SET done = done + 1 WHERE group_id = ?"
                " RETURNING done, size", (group_id,)).fetchone()
            if row is None or row[0] != row[1]:
                return None
            rows = conn.execute("SELECT member FROM celeriac_chord_parts WHERE group_id = ?"
                                " ORDER BY idx", (group_id,)).fetchall()
            conn.execute("DELETE FROM celeriac_chord_parts WHERE group_id = ?", (group_id,))
            conn.execute("DELETE FROM celeriac_chords WHERE group_id = ?", (group_id,))
            return [bytes(r[0]) for r in rows]

        members = self.db.write(write)
        return None if members is None else self._chord_parts(members)

    def cleanup(self) -> int:
        """Delete expired results (and chords that never completed); returns how many."""
        now = time.time()
        conn = self.db.connection()
        conn.execute("DELETE FROM celeriac_chord_parts WHERE group_id IN (SELECT group_id"
                     " FROM celeriac_chords WHERE expires IS NOT NULL AND expires < ?)", (now,))
        conn.execute("DELETE FROM celeriac_chords WHERE expires IS NOT NULL AND expires < ?",
                     (now,))
        return conn.execute(
            "DELETE FROM celeriac_results WHERE expires IS NOT NULL AND expires < ?",
            (now,)).rowcount

    def close(self) -> None:
        self.db.close()
