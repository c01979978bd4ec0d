"""How the history store's rows reach SQLite or PostgreSQL: the tables, the columns
an event's values are kept in, and the two databases' differences behind one small
``_Backend`` (placeholders, upserts, locking of writers, time buckets, LIKE).

It is apart from ``store`` so that a reader of the dashboard's history (the merge rules
and the queries, in ``HistoryStore``) need not read the DDL and the drivers' ways, and
so that a third database would be one more class here. ``store`` imports this module,
never the reverse.

Tables (``<prefix>`` is empty on SQLite by default, ``table_prefix`` on PostgreSQL):

- ``<prefix>tasks``: one row per task id, Flower's task fields;
- ``<prefix>task_events``: the timeline, one row per event (its fields as JSON);
- ``<prefix>workers``: one row per node name, from its heartbeats;
- ``<prefix>queue_depths``: samples of queue lengths over time;
- ``<prefix>meta``: a write counter, so that a store sees another process wrote.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import threading
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

TASK_FIELDS = ("uuid", "name", "state", "received", "sent", "started", "succeeded",
               "failed", "retried", "revoked", "rejected", "args", "kwargs", "eta",
               "expires", "retries", "worker", "result", "exception", "timestamp",
               "runtime", "traceback", "exchange", "routing_key", "clock", "client",
               "root_id", "parent_id", "group_id")
_REAL = {"received", "sent", "started", "succeeded", "failed", "retried", "revoked",
         "rejected", "timestamp", "runtime"}
_INT = {"retries", "clock"}
WORKER_FIELDS = ("hostname", "pid", "freq", "last_heartbeat", "processed", "active",
                 "loadavg", "sw_ident", "sw_ver", "sw_sys", "first_seen", "offline_at",
                 "clock")
# Parameters of one statement at most (SQLite's limit is 32,766; PostgreSQL's 65,535).
_MAX_PARAMS = 30_000
_PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")


# -- rows -----------------------------------------------------------------------------------

_COLUMNS = ", ".join(TASK_FIELDS)
# What the timeline's own columns hold, and utcoffset (the timestamp is localized).
_TIMELINE_OMITS = frozenset({"type", "uuid", "hostname", "timestamp", "utcoffset"})
# One encoder for every event (json.dumps with default= builds one per call); an odd
# value of a custom event is kept as its text.
_dumps = json.JSONEncoder(default=str, check_circular=False, separators=(",", ":")).encode


def _field(key: str, value: Any) -> Any:
    """An event's value as its column keeps it: numbers for times and counts, text
    (as given, or JSON for anything else) for the rest."""
    if value is None:
        return None
    if key in _REAL:
        return _number(value)
    if key in _INT:
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else None
    if isinstance(value, str):
        return value
    return _dumps(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _timeline_row(event: dict[str, Any]) -> tuple[Any, ...]:
    fields = {k: v for k, v in event.items() if k not in _TIMELINE_OMITS}
    timestamp = _number(event.get("timestamp"))
    return (event["uuid"], event["type"], timestamp if timestamp is not None else 0.0,
            event.get("hostname"), _dumps(fields))


def _worker_values(worker: dict[str, Any]) -> tuple[Any, ...]:
    values = dict(worker)
    values["loadavg"] = json.dumps(worker["loadavg"]) if worker["loadavg"] is not None else None
    for key in ("pid", "processed", "active", "clock"):
        if not isinstance(values[key], int) or isinstance(values[key], bool):
            values[key] = None
    values["freq"] = _number(values["freq"]) or 60.0
    return tuple(values[f] for f in WORKER_FIELDS)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _split_prefix(url: str) -> tuple[str, str]:
    """``(url without table_prefix, table_prefix)``."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "table_prefix"), "")
    rest = urlencode([(k, v) for k, v in query if k != "table_prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def _check_prefix(prefix: str) -> str:
    if prefix and not _PREFIX_RE.match(prefix):
        raise ValueError(f"table_prefix {prefix!r}: letters, digits and _ only "
                         "(it names tables), at most 41 characters")
    return prefix


# -- the databases ---------------------------------------------------------------------------

def _schema(prefix: str, real: str, serial: str) -> list[str]:
    p = prefix
    task_cols = ", ".join(
        f"{f} {real}" if f in _REAL else f"{f} BIGINT" if f in _INT else f"{f} TEXT"
        for f in TASK_FIELDS[1:])
    return [
        f"CREATE TABLE IF NOT EXISTS {p}tasks (uuid TEXT PRIMARY KEY, {task_cols})",
        f"CREATE INDEX IF NOT EXISTS {p}tasks_timestamp ON {p}tasks (timestamp)",
        f"CREATE INDEX IF NOT EXISTS {p}tasks_state ON {p}tasks (state, timestamp)",
        f"CREATE INDEX IF NOT EXISTS {p}tasks_name ON {p}tasks (name, timestamp)",
        f"CREATE INDEX IF NOT EXISTS {p}tasks_worker ON {p}tasks (worker, timestamp)",
        # counts() reads only this index (8 ms rather than 45 with 100,000 tasks)
        f"CREATE INDEX IF NOT EXISTS {p}tasks_name_state ON {p}tasks (name, state)",
        f"CREATE INDEX IF NOT EXISTS {p}tasks_received ON {p}tasks (received)",
        f"CREATE INDEX IF NOT EXISTS {p}tasks_succeeded ON {p}tasks (succeeded)",
        f"CREATE INDEX IF NOT EXISTS {p}tasks_failed ON {p}tasks (failed) "
        "WHERE failed IS NOT NULL",
        f"CREATE INDEX IF NOT EXISTS {p}tasks_retried ON {p}tasks (retried) "
        "WHERE retried IS NOT NULL",
        f"CREATE INDEX IF NOT EXISTS {p}tasks_parent ON {p}tasks (parent_id) "
        "WHERE parent_id IS NOT NULL",
        f"CREATE INDEX IF NOT EXISTS {p}tasks_group ON {p}tasks (group_id) "
        "WHERE group_id IS NOT NULL",
        f"CREATE TABLE IF NOT EXISTS {p}task_events (id {serial}, uuid TEXT NOT NULL, "
        f"type TEXT NOT NULL, timestamp {real} NOT NULL, hostname TEXT, fields TEXT)",
        # what makes an event itself: the same event ingested twice (two dashboards on
        # one store) is kept once
        f"CREATE UNIQUE INDEX IF NOT EXISTS {p}task_events_once "
        f"ON {p}task_events (uuid, type, timestamp)",
        f"CREATE TABLE IF NOT EXISTS {p}workers (hostname TEXT PRIMARY KEY, pid BIGINT, "
        f"freq {real}, last_heartbeat {real}, processed BIGINT, active BIGINT, loadavg TEXT, "
        f"sw_ident TEXT, sw_ver TEXT, sw_sys TEXT, first_seen {real}, offline_at {real}, "
        "clock BIGINT)",
        f"CREATE TABLE IF NOT EXISTS {p}queue_depths (timestamp {real} NOT NULL, "
        "queue TEXT NOT NULL, messages BIGINT NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {p}queue_depths_time ON {p}queue_depths (timestamp)",
        f"CREATE TABLE IF NOT EXISTS {p}meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    ]


class _Backend:
    """What the store needs of a database; SQL is written with ``?`` and ``{p}``."""

    prefix = ""
    like = "LIKE"

    def sql(self, text: str) -> str:
        return text.replace("{p}", self.prefix)

    def query(self, cur: Any, text: str, params: Any) -> list[tuple[Any, ...]]:
        cur.execute(self.sql(text), tuple(params))
        return list(cur.fetchall())

    def execute(self, cur: Any, text: str, params: Any) -> None:
        cur.execute(self.sql(text), tuple(params))

    def executemany(self, cur: Any, text: str, rows: list[tuple[Any, ...]]) -> None:
        cur.executemany(self.sql(text), rows)

    def upsert(self, cur: Any, table: str, key: str, fields: tuple[str, ...],
               rows: list[tuple[Any, ...]]) -> None:
        updates = ", ".join(f"{f} = excluded.{f}" for f in fields if f != key)
        self._insert_rows(cur, table, fields, rows,
                          f" ON CONFLICT ({key}) DO UPDATE SET {updates}")

    def insert_ignore(self, cur: Any, table: str, fields: tuple[str, ...],
                      rows: list[tuple[Any, ...]]) -> None:
        self._insert_rows(cur, table, fields, rows, " ON CONFLICT DO NOTHING")

    def _insert_rows(self, cur: Any, table: str, fields: tuple[str, ...],
                     rows: list[tuple[Any, ...]], tail: str) -> None:
        """Many rows per statement: the driver releases the GIL once per statement
        rather than once per row, and under a busy receiving thread each taking back
        of the GIL can wait a whole switch interval."""
        head = f"INSERT INTO {{p}}{table} ({', '.join(fields)}) VALUES "
        one = "(" + ", ".join("?" * len(fields)) + ")"
        per = max(1, _MAX_PARAMS // len(fields))
        for chunk in _chunks(rows, per):
            self.execute(cur, head + ", ".join([one] * len(chunk)) + tail,
                         [value for row in chunk for value in row])

    def generation(self, cur: Any) -> int:
        rows = self.query(cur, "SELECT value FROM {p}meta WHERE key = 'generation'", ())
        return int(rows[0][0]) if rows else 0

    def set_generation(self, cur: Any, value: int) -> None:
        self.execute(cur, "INSERT INTO {p}meta (key, value) VALUES ('generation', ?) "
                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (value,))

    def bucket_expr(self, column: str) -> str:
        raise NotImplementedError

    def create_schema(self) -> None:
        raise NotImplementedError

    def transaction(self) -> Any:
        raise NotImplementedError

    def cursor(self) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SQLite(_Backend):
    """An SQLite file in WAL mode, one connection per thread."""

    def __init__(self, path: str, prefix: str) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.prefix = prefix
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def describe(self) -> str:
        return f"sqlite:///{self.path}"

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError(f"the history store {self.describe()} is closed")
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL survives a crash of this process; only a power loss may
            # drop the last batches, which a monitor's history can afford
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def create_schema(self) -> None:
        with self.transaction() as cur:
            for statement in _schema(self.prefix, "REAL", "INTEGER PRIMARY KEY"):
                cur.execute(statement)

    def transaction(self) -> Any:
        return _SQLiteTransaction(self._conn(), "BEGIN IMMEDIATE")

    def cursor(self) -> Any:
        # a read transaction: a consistent view for the count and the page
        return _SQLiteTransaction(self._conn(), "BEGIN")

    def bucket_expr(self, column: str) -> str:
        return f"CAST(({column} - ?) / ? AS INTEGER)"

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


class _SQLiteTransaction:
    def __init__(self, conn: sqlite3.Connection, begin: str) -> None:
        self.conn = conn
        self.begin = begin

    def __enter__(self) -> sqlite3.Cursor:
        self.cur = self.conn.cursor()
        self.cur.execute(self.begin)
        return self.cur

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        try:
            self.cur.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        finally:
            self.cur.close()


class _Postgres(_Backend):
    """PostgreSQL through SQLAlchemy's pool (psycopg 3 by preference)."""

    like = "ILIKE"

    def __init__(self, url: str, prefix: str) -> None:
        from ..utils.sql import Engine

        self.prefix = prefix
        self.engine = Engine(url, {"pool_pre_ping": True}, None, False)

    def describe(self) -> str:
        return self.engine.masked_url + (f" (tables {self.prefix}*)" if self.prefix else "")

    def sql(self, text: str) -> str:
        return super().sql(text).replace("%", "%%").replace("?", "%s")

    def create_schema(self) -> None:
        with self.transaction() as cur:
            # concurrent creators of one schema would collide on the catalog
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                        (f"celeriac-dashboard-{self.prefix}",))
            for statement in _schema(self.prefix, "DOUBLE PRECISION", "BIGSERIAL PRIMARY KEY"):
                cur.execute(statement)

    def transaction(self) -> Any:
        return _PostgresTransaction(self.engine, lock=True)

    def cursor(self) -> Any:
        return _PostgresTransaction(self.engine, lock=False)

    def bucket_expr(self, column: str) -> str:
        return f"FLOOR(({column} - ?) / ?)"

    def generation(self, cur: Any) -> int:
        # the row lock makes the writers of one store take turns, as SQLite's
        # BEGIN IMMEDIATE does
        self.execute(cur, "INSERT INTO {p}meta (key, value) VALUES ('generation', 0) "
                          "ON CONFLICT DO NOTHING", ())
        rows = self.query(cur, "SELECT value FROM {p}meta WHERE key = 'generation' "
                               "FOR UPDATE", ())
        return int(rows[0][0])

    def close(self) -> None:
        self.engine.dispose()


class _PostgresTransaction:
    def __init__(self, engine: Any, lock: bool) -> None:
        self.engine = engine
        self.lock = lock

    def __enter__(self) -> Any:
        self.conn = self.engine.get().raw_connection()
        self.cur = self.conn.cursor()
        return self.cur

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        try:
            if exc_type is None:
                self.conn.commit()
            else:
                self.conn.rollback()
        finally:
            self.cur.close()
            self.conn.close()
