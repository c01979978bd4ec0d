"""The leader lock: of several beat services sharing a broker, one sends the tasks.

The contract is a lease: ``acquire(owner, ttl)`` takes the lock when it is free or its
lease ran out, ``renew(owner, ttl)`` extends a lease the caller still holds, and
``release(owner)`` lets it go. A lease that is not renewed expires after ``ttl``
seconds, so a leader that dies (kill -9, lost host) is replaced by a stand-by within
``ttl`` plus the stand-by's polling interval. The leader renews every ``ttl / 3``.

The lock also keeps the leader's last run times (``save_state``/``load_state``), so a
stand-by that takes over on another host does not re-run what the leader just ran.

Implementations are chosen by the broker URL's scheme:

- ``redis://``: ``SET key owner NX PX ttl``; renew and release run a small Lua script
  that compares the owner before touching the key.
- ``sqlite://``: one row (owner, expiry) in the broker's file, changed inside an
  ``IMMEDIATE`` transaction.
- ``memory://``: a dict in this process (tests, ``worker -B`` on the memory broker).
- ``sqla+postgresql://``, ``sqla+mysql://``: a row in ``celeriac_beat_lock`` beside the
  broker's tables, expiring on the database's clock; see ``sql_lock.py``.

AMQP has no key-value store; there (``amqp://``, ``pyamqp://``, ``amqps://``) the lock is
a queue declared ``exclusive`` by the leader on a connection of its own (RabbitMQ drops
it when the leader's connection dies, and a stand-by's declare fails with
RESOURCE_LOCKED until then), with the state kept in a message on a single-message queue
(``x-max-length: 1``); see ``amqp_lock.py``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from ..exceptions import ImproperlyConfigured
from ..utils.urls import scheme_of, sqlite_path
from .lease import DEFAULT_NAME, LeaderLock

__all__ = ["LeaderLock", "MemoryLock", "SQLiteLock", "RedisLock", "lock_for_url"]

class MemoryLock(LeaderLock):
    """A lock for beats in one process."""

    _locks: dict[str, tuple[str, float]] = {}
    _states: dict[str, dict[str, Any]] = {}
    _mutex = threading.Lock()

    def __init__(self, name: str = DEFAULT_NAME) -> None:
        self.name = name

    def acquire(self, owner: str, ttl: float) -> bool:
        with self._mutex:
            held = self._locks.get(self.name)
            if held is None or held[0] == owner or held[1] <= time.monotonic():
                self._locks[self.name] = (owner, time.monotonic() + ttl)
                return True
            return False

    def renew(self, owner: str, ttl: float) -> bool:
        with self._mutex:
            held = self._locks.get(self.name)
            if held is None or held[0] != owner or held[1] <= time.monotonic():
                return False
            self._locks[self.name] = (owner, time.monotonic() + ttl)
            return True

    def release(self, owner: str) -> None:
        with self._mutex:
            if self._locks.get(self.name, ("",))[0] == owner:
                del self._locks[self.name]

    def save_state(self, owner: str, state: dict[str, Any]) -> None:
        with self._mutex:
            if self._locks.get(self.name, ("",))[0] == owner:
                self._states[self.name] = dict(state)

    def load_state(self) -> dict[str, Any] | None:
        with self._mutex:
            state = self._states.get(self.name)
            return dict(state) if state is not None else None

    def holder(self) -> tuple[str, float] | None:
        with self._mutex:
            held = self._locks.get(self.name)
        if held is None:
            return None
        left = held[1] - time.monotonic()
        return (held[0], time.time() + left) if left > 0 else None


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS celeriac_beat_lock (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL, state TEXT);
"""


class SQLiteLock(LeaderLock):
    """A row per lock in an SQLite file; expiry in wall-clock seconds (one machine)."""

    def __init__(self, path: str, name: str = DEFAULT_NAME) -> None:
        from ..utils.sqlite import SQLiteFile

        self.name = name
        self.db = SQLiteFile(path, _SQLITE_SCHEMA)

    def acquire(self, owner: str, ttl: float) -> bool:
        def txn(conn: Any) -> bool:
            now = time.time()
            row = conn.execute("SELECT owner, expires FROM celeriac_beat_lock WHERE name = ?",
                               (self.name,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO celeriac_beat_lock (name, owner, expires) "
                             "VALUES (?, ?, ?)", (self.name, owner, now + ttl))
                return True
            if row[0] == owner or row[1] <= now:
                conn.execute("UPDATE celeriac_beat_lock SET owner = ?, expires = ? "
                             "WHERE name = ?", (owner, now + ttl, self.name))
                return True
            return False

        return self.db.write(txn)

    def renew(self, owner: str, ttl: float) -> bool:
        def txn(conn: Any) -> bool:
            now = time.time()
            cur = conn.execute("UPDATE celeriac_beat_lock SET expires = ? "
                               "WHERE name = ? AND owner = ? AND expires > ?",
                               (now + ttl, self.name, owner, now))
            return bool(cur.rowcount)

        return self.db.write(txn)

    def release(self, owner: str) -> None:
        self.db.write(lambda conn: conn.execute(
            "UPDATE celeriac_beat_lock SET expires = 0 WHERE name = ? AND owner = ?",
            (self.name, owner)))

    def save_state(self, owner: str, state: dict[str, Any]) -> None:
        self.db.write(lambda conn: conn.execute(
            "UPDATE celeriac_beat_lock SET state = ? WHERE name = ? AND owner = ?",
            (json.dumps(state), self.name, owner)))

    def load_state(self) -> dict[str, Any] | None:
        row = self.db.connection().execute(
            "SELECT state FROM celeriac_beat_lock WHERE name = ?", (self.name,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def holder(self) -> tuple[str, float] | None:
        row = self.db.connection().execute(
            "SELECT owner, expires FROM celeriac_beat_lock WHERE name = ?",
            (self.name,)).fetchone()
        # a released lease has expiry 0
        return (row[0], float(row[1])) if row and float(row[1]) > time.time() else None

    def close(self) -> None:
        self.db.close()


_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
_SAVE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('SET', KEYS[2], ARGV[2])
end
return 0
"""


class RedisLock(LeaderLock):
    """``SET NX PX`` with compare-and-set scripts; expiry kept by the Redis server."""

    def __init__(self, url: str, name: str = DEFAULT_NAME,
                 options: dict[str, Any] | None = None) -> None:
        from ..utils.redis import RedisConnector

        self.connector = RedisConnector(url, options, "the beat leader lock")
        self.key = name + ".lock"
        self.state_key = name + ".state"

    @property
    def _client(self) -> Any:
        return self.connector.client()

    def acquire(self, owner: str, ttl: float) -> bool:
        client = self._client
        if client.set(self.key, owner, nx=True, px=int(ttl * 1000)):
            return True
        return self.renew(owner, ttl)

    def renew(self, owner: str, ttl: float) -> bool:
        return bool(self._client.eval(_RENEW, 1, self.key, owner, int(ttl * 1000)))

    def release(self, owner: str) -> None:
        self._client.eval(_RELEASE, 1, self.key, owner)

    def save_state(self, owner: str, state: dict[str, Any]) -> None:
        self._client.eval(_SAVE, 2, self.key, self.state_key, owner, json.dumps(state))

    def load_state(self) -> dict[str, Any] | None:
        raw = self._client.get(self.state_key)
        if not raw:
            return None
        return json.loads(raw)  # type: ignore[no-any-return]

    def holder(self) -> tuple[str, float] | None:
        pipe = self._client.pipeline(transaction=True)
        owner, ttl_ms = pipe.get(self.key).pttl(self.key).execute()
        if owner is None or ttl_ms < 0:
            return None
        return (owner.decode() if isinstance(owner, bytes) else owner,
                time.time() + ttl_ms / 1000)

    def close(self) -> None:
        self.connector.close()


def lock_for_url(url: str, name: str = DEFAULT_NAME,
                 options: dict[str, Any] | None = None) -> LeaderLock:
    """The leader lock that lives in the broker at ``url``.

    Raises:
        ImproperlyConfigured: the broker has no lock implementation yet.
    """
    scheme = scheme_of(url)
    if scheme in ("redis", "rediss", "redis+socket", "sentinel"):
        return RedisLock(url, name, options)
    if scheme in ("sqlite", "sqla+sqlite"):
        return SQLiteLock(sqlite_path(url), name)
    if scheme == "memory":
        return MemoryLock(name)
    if scheme in ("amqp", "pyamqp", "amqps", "pyamqps"):
        from .amqp_lock import AMQPLock  # imports py-amqp only for RabbitMQ brokers

        return AMQPLock(url, name, options)
    if scheme.startswith("sqla+"):
        from .sql_lock import SQLLock  # imports SQLAlchemy only for SQL brokers

        return SQLLock(url, name, options)
    raise ImproperlyConfigured(
        f"no beat leader lock for {scheme}:// brokers yet (known: redis, sqlite, amqp, "
        "sqla+postgresql, sqla+mysql, memory); run a single beat with --no-lock")
