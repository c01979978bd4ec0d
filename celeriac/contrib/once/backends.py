"""Where ``QueueOnce`` keeps its locks: Redis, an SQLite file, or this process's memory.

A backend takes celery_once's shape, so a custom one written for celery_once works too:
``Backend(settings)``, ``raise_or_lock(key, timeout)`` (raise ``AlreadyQueued`` with the
seconds the lock has left, or take it), ``clear_lock(key)``. celeriac's own backends
return a token from ``raise_or_lock`` and take it back in ``clear_lock``, so a run whose
lock expired and was taken by a newer message does not remove the newer one's lock.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
import uuid
from typing import Any, Mapping
from urllib.parse import urlsplit

from ...exceptions import CeleriacError, ImproperlyConfigured
from ...utils.urls import mask_password

DEFAULT_TIMEOUT = 60 * 60  # celery_once's: a lock nobody clears lasts an hour


class AlreadyQueued(Exception):
    """The task is already queued (or running) with these arguments.

    Attributes:
        countdown: seconds until the lock expires by itself.
    """

    def __init__(self, countdown: float) -> None:
        self.countdown = countdown
        self.message = f"Expires in {countdown} seconds"
        super().__init__(self.message)


class LockBackendError(CeleriacError, ConnectionError):
    """The lock backend of ``QueueOnce`` cannot be reached; the task was not sent."""


class LockBackend:
    """Base of celeriac's lock backends.

    Args:
        settings: ``ONCE['settings']``; a key the backend does not take is an error.
    """

    #: the keys of ``ONCE['settings']`` this backend reads
    known: frozenset[str] = frozenset({"default_timeout"})

    def __init__(self, settings: Mapping[str, Any]) -> None:
        unknown = sorted(set(settings) - self.known)
        if unknown:
            raise ImproperlyConfigured(
                f"ONCE['settings'] has {', '.join(map(repr, unknown))}, which "
                f"{type(self).__name__} does not take (it takes: "
                f"{', '.join(sorted(self.known))})")
        self.settings = dict(settings)

    def raise_or_lock(self, key: str, timeout: float) -> str:
        """Take the lock for ``timeout`` seconds and return its token.

        Raises:
            AlreadyQueued: someone holds it.
            LockBackendError: the backend is unreachable.
        """
        raise NotImplementedError

    def clear_lock(self, key: str, token: str | None = None) -> None:
        """Release the lock; with ``token``, only if it still is the one taken then."""
        raise NotImplementedError


def _countdown(seconds: float) -> int:
    # celery_once reports whole seconds; a lock about to expire still has "1 s" left.
    return max(1, math.ceil(seconds))


class Redis(LockBackend):
    """Locks as Redis keys with an expiry (``SET NX PX``), named as celery_once names them.

    Settings: ``url`` (default ``redis://localhost:6379/0``; ``rediss://`` and
    ``redis+socket://`` too), ``default_timeout``, ``blocking`` and ``blocking_timeout``
    (wait up to that long for the lock instead of raising at once), and celeriac's
    ``key_prefix`` (put before every key, to share a Redis database).
    """

    known = LockBackend.known | {"url", "blocking", "blocking_timeout", "key_prefix"}
    # Delete the key only if it still holds our token: atomic on the server.
    _RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
                "return redis.call('del', KEYS[1]) else return 0 end")

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        from ...utils.redis import import_redis, redis_py_url

        redis = import_redis("the QueueOnce Redis lock backend")
        self.url = str(self.settings.get("url") or "redis://localhost:6379/0")
        self.prefix = str(self.settings.get("key_prefix") or "")
        self.blocking = bool(self.settings.get("blocking", False))
        self.blocking_timeout = self.settings.get("blocking_timeout", 1)
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self.client = redis.Redis.from_url(redis_py_url(self.url), socket_timeout=10,
                                           socket_connect_timeout=5)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise LockBackendError(
                f"QueueOnce lock backend {mask_password(self.url)} is unreachable "
                f"({exc}); check ONCE['settings']['url']") from exc

    def raise_or_lock(self, key: str, timeout: float) -> str:
        name = self.prefix + key
        token = uuid.uuid4().hex
        ms = max(1, int(timeout * 1000))
        deadline = None
        if self.blocking:
            wait = self.blocking_timeout
            deadline = math.inf if wait is None else time.monotonic() + float(wait)
        while True:
            if self._call(self.client.set, name, token, nx=True, px=ms):
                return token
            left = self._call(self.client.pttl, name)
            if left == -2:  # gone between the two calls: try again at once
                continue
            if deadline is None or time.monotonic() >= deadline:
                # -1: a key without expiry (not ours); report the timeout asked for
                raise AlreadyQueued(_countdown(left / 1000 if left > 0 else timeout))
            time.sleep(0.05)

    def clear_lock(self, key: str, token: str | None = None) -> None:
        name = self.prefix + key
        if token is None:
            self._call(self.client.delete, name)
        else:
            self._call(self.client.eval, self._RELEASE, 1, name, token)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS celeriac_once (
    key TEXT PRIMARY KEY, token TEXT NOT NULL, expires REAL NOT NULL);
"""


class SQLite(LockBackend):
    """Locks as rows of an SQLite file, for the processes of one machine.

    Settings: ``url`` (``sqlite:///path``; default: ``celeriac-once.sqlite3`` in the
    working directory), ``default_timeout``. The embedded default broker's file is used
    when ``ONCE`` is not set. Expiry is judged on the machine's clock.
    """

    known = LockBackend.known | {"url"}

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        url = str(self.settings.get("url") or "sqlite:///celeriac-once.sqlite3")
        if not url.startswith("sqlite://"):
            raise ImproperlyConfigured(
                f"ONCE['settings']['url'] must be an sqlite:/// URL, not {mask_password(url)!r}")
        self._open(url[len("sqlite:///"):] if url.startswith("sqlite:///")
                   else url[len("sqlite://"):])

    def _open(self, path: str) -> None:
        from ...utils.sqlite import SQLiteFile

        self.path = os.path.abspath(path)
        self.db = SQLiteFile(self.path, _SCHEMA)

    def raise_or_lock(self, key: str, timeout: float) -> str:
        token = uuid.uuid4().hex

        def take(conn: Any) -> float | None:
            now = time.time()
            row = conn.execute("SELECT expires FROM celeriac_once WHERE key = ?",
                               (key,)).fetchone()
            if row is not None and row[0] > now:
                return float(row[0]) - now
            conn.execute("INSERT OR REPLACE INTO celeriac_once (key, token, expires) "
                         "VALUES (?, ?, ?)", (key, token, now + timeout))
            return None

        left = self._write(take)
        if left is not None:
            raise AlreadyQueued(_countdown(left))
        return token

    def clear_lock(self, key: str, token: str | None = None) -> None:
        if token is None:
            self._write(lambda c: c.execute("DELETE FROM celeriac_once WHERE key = ?", (key,)))
        else:
            self._write(lambda c: c.execute(
                "DELETE FROM celeriac_once WHERE key = ? AND token = ?", (key, token)))

    def _write(self, fn: Any) -> Any:
        import sqlite3

        try:
            return self.db.write(fn)
        except sqlite3.OperationalError as exc:
            raise LockBackendError(
                f"QueueOnce lock backend sqlite:///{self.path} cannot be used ({exc})") from exc


class File(SQLite):
    """celery_once's ``File`` backend: locks shared by the processes of one machine,
    kept in ``location`` (a directory, default ``<tmp>/celery_once``).

    celeriac keeps them in one SQLite file there (``celeriac-once.sqlite3``), which takes
    an expired lock over atomically; celery_once's one-file-per-lock layout is not read.
    """

    known = LockBackend.known | {"location"}

    def __init__(self, settings: Mapping[str, Any]) -> None:
        LockBackend.__init__(self, settings)
        location = self.settings.get("location") or os.path.join(tempfile.gettempdir(),
                                                                 "celery_once")
        os.makedirs(location, exist_ok=True)
        self._open(os.path.join(location, "celeriac-once.sqlite3"))


class Memory(LockBackend):
    """Locks in this process only: for ``memory://`` apps and eager tests."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self._locks: dict[str, tuple[str, float]] = {}
        self._mutex = threading.Lock()

    def raise_or_lock(self, key: str, timeout: float) -> str:
        token = uuid.uuid4().hex
        with self._mutex:
            now = time.monotonic()
            held = self._locks.get(key)
            if held is not None and held[1] > now:
                raise AlreadyQueued(_countdown(held[1] - now))
            self._locks[key] = (token, now + timeout)
        return token

    def clear_lock(self, key: str, token: str | None = None) -> None:
        with self._mutex:
            held = self._locks.get(key)
            if held is not None and (token is None or held[0] == token):
                del self._locks[key]


#: celery_once's backend names, for configurations written for it
ALIASES: dict[str, type[LockBackend]] = {
    "celery_once.backends.Redis": Redis,
    "celery_once.backends.redis.Redis": Redis,
    "celery_once.backends.File": File,
    "celery_once.backends.file.File": File,
}


def default_settings(broker_url: str) -> tuple[type[LockBackend], dict[str, Any]]:
    """The backend used when ``ONCE`` is not set: the broker's own server or file.

    Raises:
        ImproperlyConfigured: a broker that cannot hold locks (RabbitMQ, SQL ...).
    """
    scheme = urlsplit(broker_url).scheme.lower()
    if scheme in ("redis", "rediss", "redis+socket") and ";" not in broker_url:
        return Redis, {"url": broker_url}
    if scheme == "sqlite":
        return SQLite, {"url": broker_url}
    if scheme == "memory":
        return Memory, {}
    raise ImproperlyConfigured(
        f"QueueOnce needs a lock backend for the broker {mask_password(broker_url)}: set "
        "app.conf.ONCE = {'backend': 'celeriac.contrib.once.Redis', 'settings': {'url': "
        "'redis://...'}} (or celeriac.contrib.once.SQLite / File)")
