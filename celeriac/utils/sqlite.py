"""One SQLite file shared by threads and processes: a connection per thread and pid."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any, Callable, TypeVar

from .pid import current_pid

T = TypeVar("T")


class SQLiteFile:
    """Hands out a connection per (pid, thread), in WAL mode, created on first use.

    Several processes on one machine share the file; SQLite's own locking keeps writes
    atomic, ``busy_timeout`` makes a writer wait instead of failing.
    """

    def __init__(self, path: str, schema: str) -> None:
        self.path = path
        self.schema = schema
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == current_pid():
            return conn
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")
        self._retry(lambda: conn.executescript(self.schema))
        local.conn = conn
        local.pid = os.getpid()
        return conn

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one immediate transaction (a write lock taken up front)."""
        conn = self.connection()

        def txn() -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return self._retry(txn)

    @staticmethod
    def _retry(fn: Callable[[], T]) -> T:
        # busy_timeout covers most contention; "database is locked" can still surface
        # when WAL is being set up by another process, so try a few more times.
        for attempt in range(50):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(min(0.01 * (attempt + 1), 0.2))
        return fn()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local = threading.local()


def placeholders(items: Any) -> str:
    return ",".join("?" * len(items))
