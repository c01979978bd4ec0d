"""The beat leader lock on a PostgreSQL or MySQL/MariaDB broker (``sqla+postgresql://``,
``sqla+mysql://``): one row per lock in ``celeriac_beat_lock``, beside the broker's
tables (same ``schema`` transport option).

Expiry is kept on the database's clock, so beats on machines whose clocks differ still
agree on when a lease ran out.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..utils.sqlbroker import Database
from .lease import DEFAULT_NAME, LeaderLock


def _ddl(db: Database) -> list[str]:
    tail = "" if db.pg else " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    real, text = ("DOUBLE PRECISION", "TEXT") if db.pg else ("DOUBLE", "LONGTEXT")
    return [f"CREATE TABLE IF NOT EXISTS {db.table('celeriac_beat_lock')} (name VARCHAR(255) "
            f"PRIMARY KEY, owner VARCHAR(255) NOT NULL, expires {real} NOT NULL, "
            f"state {text}){tail}"]


class SQLLock(LeaderLock):
    """A row (owner, expiry) changed under the row's lock."""

    def __init__(self, url: str, name: str = DEFAULT_NAME,
                 options: dict[str, Any] | None = None) -> None:
        self.name = name
        self.db = Database(url, dict(options or {}), "the beat leader lock", _ddl)
        self.table = self.db.table("celeriac_beat_lock")

    def acquire(self, owner: str, ttl: float) -> bool:
        db, table = self.db, self.table

        def take(cur: Any) -> bool:
            cur.execute(f"SELECT owner, expires, {db.now_sql} FROM {table} WHERE name = %s "
                        "FOR UPDATE", [self.name])
            row = cur.fetchone()
            if row is None:
                ignore = ("INSERT INTO {} (name, owner, expires) VALUES (%s, %s, {} + %s) "
                          "ON CONFLICT DO NOTHING" if db.pg else
                          "INSERT IGNORE INTO {} (name, owner, expires) VALUES (%s, %s, {} + %s)")
                # another beat may insert first: then it holds the lock
                cur.execute(ignore.format(table, db.now_sql), [self.name, owner, ttl])
                return bool(cur.rowcount)
            held_by, expires, now = row[0], float(row[1]), float(row[2])
            if held_by != owner and expires > now:
                return False
            cur.execute(f"UPDATE {table} SET owner = %s, expires = %s WHERE name = %s",
                        [owner, now + ttl, self.name])
            return True

        return db.transaction(take)

    def renew(self, owner: str, ttl: float) -> bool:
        now = self.db.now_sql

        def extend(cur: Any) -> bool:
            cur.execute(f"UPDATE {self.table} SET expires = {now} + %s WHERE name = %s "
                        f"AND owner = %s AND expires > {now}", [ttl, self.name, owner])
            return bool(cur.rowcount)

        return self.db.run(extend)

    def release(self, owner: str) -> None:
        self.db.run(lambda cur: cur.execute(
            f"UPDATE {self.table} SET expires = 0 WHERE name = %s AND owner = %s",
            [self.name, owner]))

    def save_state(self, owner: str, state: dict[str, Any]) -> None:
        self.db.run(lambda cur: cur.execute(
            f"UPDATE {self.table} SET state = %s WHERE name = %s AND owner = %s",
            [json.dumps(state), self.name, owner]))

    def load_state(self) -> dict[str, Any] | None:
        def read(cur: Any) -> dict[str, Any] | None:
            cur.execute(f"SELECT state FROM {self.table} WHERE name = %s", [self.name])
            row = cur.fetchone()
            return json.loads(row[0]) if row and row[0] else None

        return self.db.run(read)

    def holder(self) -> tuple[str, float] | None:
        def read(cur: Any) -> Any:
            cur.execute(f"SELECT owner, expires, {self.db.now_sql} FROM {self.table} "
                        "WHERE name = %s", [self.name])
            return cur.fetchone()

        row = self.db.run(read)
        if row is None:
            return None
        left = float(row[1]) - float(row[2])  # on the database's clock, as the lease is
        return (row[0], time.time() + left) if left > 0 else None

    def close(self) -> None:
        self.db.close()
