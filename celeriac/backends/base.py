"""The contract every result backend implements, and the meta layout they share.

A backend stores one meta document per task id, in Celery's layout::

    {"status": "SUCCESS", "result": 8, "traceback": null, "children": [],
     "date_done": "2026-11-21T15:00:00.000000+00:00", "task_id": "..."}

Subclasses implement the storage primitives (``_set``, ``_get``, ``_delete``, and
``_wait`` where the store can notify); everything else lives here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import sys
import time
import traceback as tb_module
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, TypeVar

from .. import exceptions as _exc
from .. import serialization, states
from ..exceptions import (
    BackendError,
    RemoteError,
    ResultNotSerializable,
    TimeoutError,
)

# celeriac's public exceptions that have a twin of the same name in Celery. They are
# stored under Celery's module so that a Celery client re-raises its own class (it
# cannot import ``celeriac.exceptions`` unless celeriac is installed), and read back as
# celeriac's class whichever side wrote them. Celery itself stores the last three under
# ``billiard.exceptions`` (their real home); ``celery.exceptions`` re-exports all of them.
_CELERY_MODULE = "celery.exceptions"
_CELERY_TWINS: dict[str, type[BaseException]] = {
    cls.__name__: cls for cls in (
        _exc.NotRegistered, _exc.TaskRevokedError, _exc.MaxRetriesExceededError,
        _exc.Reject, _exc.Ignore, _exc.Retry, _exc.ChordError,
        _exc.TimeLimitExceeded, _exc.SoftTimeLimitExceeded, _exc.WorkerLostError,
        _exc.InvalidTaskError,
    )
}
_TWIN_MODULES = frozenset({_CELERY_MODULE, "billiard.exceptions"})

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Celery 5.7's marker in front of a compressed result (``result_compression``): the
#: marker, the compression's content type, a NUL, then the compressed body. No
#: serializer's output starts with a NUL, so an uncompressed result never matches.
COMPRESSED_MAGIC = b"\x00celery-compressed\x00"

#: ``redis_*`` settings -> the Redis client option each one sets (result backend only).
REDIS_SETTINGS = {
    "redis_max_connections": "max_connections",
    "redis_socket_timeout": "socket_timeout",
    "redis_socket_connect_timeout": "socket_connect_timeout",
    "redis_retry_on_timeout": "retry_on_timeout",
    "redis_socket_keepalive": "socket_keepalive",
    "redis_backend_health_check_interval": "health_check_interval",
    "redis_client_name": "client_name",
    "redis_username": "username",
    "redis_password": "password",
}

#: settings copied into ``BackendOptions.database`` and ``BackendOptions.cache``
DATABASE_SETTINGS = (
    "database_url", "database_engine_options", "database_engine_callback",
    "database_short_lived_sessions", "database_table_schemas", "database_table_names",
    "database_create_tables_at_setup",
)
CACHE_SETTINGS = ("cache_backend", "cache_backend_options")


GROUP_KEY_PREFIX = "celery-taskset-meta-"


@dataclass(frozen=True, slots=True)
class ChordPart:
    """One header task's outcome, as the chord body's sender reads it."""

    task_id: str
    state: str
    result: Any


@dataclass
class BackendOptions:
    """What a backend needs from the app's configuration (see ``from_conf``)."""

    serializer: str = "json"
    accept: frozenset[str] | None = None  # content types; None = the serializer's only
    expires: float | None = 86400.0
    extended: bool = False
    transport_options: dict[str, Any] = field(default_factory=dict)
    #: tries for storing one result over connection errors (~10 s of back-off at 15)
    store_attempts: int = 15
    #: seconds a FAILURE result is kept; None: ``expires``
    failure_expires: float | None = None
    #: seconds a chord's counter is kept; None: ``expires``
    chord_expires: float | None = None
    #: compression of stored results (``gzip``, ``bzip2``...); None: none
    compression: str | None = None
    #: Celery's ``result_backend_always_retry``: retry every store call over
    #: connection errors, ``max_retries`` times, with a jittered exponential back-off
    always_retry: bool = False
    max_retries: float = math.inf
    base_sleep_ms: int = 10
    max_sleep_ms: int = 10000
    #: ``override_backends``: URL scheme -> backend class or ``'module:Class'``
    overrides: dict[str, Any] = field(default_factory=dict)
    #: client options from the store's own settings (``redis_socket_timeout``...);
    #: ``transport_options`` win over them, the URL's query over both
    connection: dict[str, Any] = field(default_factory=dict)
    #: ``redis_backend_use_ssl``: TLS options (``ssl_cert_reqs``, ``ssl_ca_certs``...)
    ssl: dict[str, Any] | None = None
    #: rpc://: the broker it talks to (the app's ``broker_write_url``) and the broker's
    #: connection options; filled in by the app, since ``from_conf`` sees settings only
    broker_url: str = ""
    broker_options: dict[str, Any] = field(default_factory=dict)
    #: ``result_persistent``: rpc:// replies survive a broker restart (delivery mode 2)
    persistent: bool = False
    #: the ``database_*`` settings without their prefix (``url``, ``engine_options``,
    #: ``table_names``...), for the SQLAlchemy backend
    database: dict[str, Any] = field(default_factory=dict)
    #: the ``cache_*`` settings without their prefix (``backend``, ``backend_options``)
    cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_conf(cls, conf: Any) -> BackendOptions:
        """Every result backend setting of ``conf`` (an app's ``Settings``)."""
        from ..config import seconds

        accept = conf.result_accept_content or conf.accept_content
        serializer = conf.result_serializer
        always_retry = bool(conf.result_backend_always_retry)
        max_retries = conf.result_backend_max_retries
        connection = {option: conf[name] for name, option in REDIS_SETTINGS.items()
                      if conf.value_set_for(name) and conf[name] is not None}
        return cls(
            serializer=serializer,
            accept=serialization.accepted_content_types(accept)
            | frozenset({serialization.serializer(serializer).content_type}),
            expires=seconds(conf.result_expires) or None,
            extended=bool(conf.result_extended),
            transport_options=dict(conf.result_backend_transport_options or {}),
            failure_expires=seconds(conf.result_failure_expires),
            chord_expires=seconds(conf.result_chord_expires),
            compression=conf.result_compression or None,
            always_retry=always_retry,
            max_retries=math.inf if max_retries is None else float(max_retries),
            base_sleep_ms=int(conf.result_backend_base_sleep_between_retries_ms or 0),
            max_sleep_ms=int(conf.result_backend_max_sleep_between_retries_ms or 0),
            overrides=dict(conf.override_backends or {}),
            connection=connection,
            ssl=dict(conf.redis_backend_use_ssl) if conf.redis_backend_use_ssl else None,
            persistent=bool(conf.result_persistent),
            database={name[len("database_"):]: conf[name] for name in DATABASE_SETTINGS},
            cache={name[len("cache_"):]: conf[name] for name in CACHE_SETTINGS},
        )

    def expires_for(self, state: str) -> float | None:
        """Seconds a result in ``state`` is kept (None: for ever)."""
        if state == states.FAILURE and self.failure_expires is not None:
            return self.failure_expires or None
        return self.expires

    @property
    def chord_ttl(self) -> float | None:
        """Seconds a chord's counter is kept (None: for ever)."""
        if self.chord_expires is not None:
            return self.chord_expires or None
        return self.expires


#: database drivers whose OperationalError/InterfaceError means the connection (or the
#: server) failed, not the statement
_DB_DRIVERS = frozenset({"psycopg", "psycopg2", "pymysql", "MySQLdb"})


def is_connection_error(exc: BaseException) -> bool:
    """A network error of any client library (redis-py, socket, a database driver,
    SQLAlchemy), by its type."""
    if isinstance(exc, (ConnectionError, OSError)):
        return True
    if any(cls.__name__ in ("ConnectionError", "TimeoutError", "BusyLoadingError")
           for cls in type(exc).__mro__):
        return True
    # SQLAlchemy wraps the driver's error; a connection it found dead is invalidated
    if getattr(exc, "connection_invalidated", False):
        return True
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException) and orig is not exc:
        return is_connection_error(orig)
    return any(cls.__name__ in ("OperationalError", "InterfaceError")
               and cls.__module__.split(".")[0] in _DB_DRIVERS for cls in type(exc).__mro__)


class Backend(ABC):
    """Stores task states and results.

    Args:
        url: the backend URL.
        options: serializer, expiry and the like, from the app's settings.
    """

    #: a backend that is the same object as the broker's store (rpc) may say so
    persistent = True
    #: the store drops results after ``result_expires`` itself; when False, beat sends
    #: ``celery.backend_cleanup`` daily, which calls ``cleanup()`` (as in Celery)
    supports_autoexpire = True

    def __init__(self, url: str, options: BackendOptions | None = None) -> None:
        self.url = url
        self.options = options or BackendOptions()
        s = serialization.serializer(self.options.serializer)
        self._serializer = s
        self._accept = self.options.accept or frozenset({s.content_type})

    # -- storage primitives ---------------------------------------------------------
    @abstractmethod
    def _set(self, task_id: str, data: bytes, expires: float | None, ready: bool) -> None:
        """Store the encoded meta for ``task_id`` and wake anyone waiting for it."""

    @abstractmethod
    def _get(self, task_id: str) -> bytes | None:
        """The encoded meta for ``task_id``, or None."""

    @abstractmethod
    def _delete(self, task_id: str) -> None:
        """Forget ``task_id``."""

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> bytes | None:
        """Block until ``task_id`` is ready or ``timeout`` passes; stores override."""
        for pause in _pauses(timeout, interval):
            data = self._get(task_id)
            if pause is None or self._is_ready(data):
                return data
            time.sleep(pause)
        return None  # not reached: the pauses end with None

    async def _await(self, task_id: str, timeout: float | None,
                     interval: float) -> bytes | None:
        """``_wait`` for asyncio code; stores with notifications override.

        Reads here are quick local calls (SQLite, memory), so they run on the loop and
        only the pauses between them are awaited.
        """
        for pause in _pauses(timeout, interval):
            data = self._get(task_id)
            if pause is None or self._is_ready(data):
                return data
            await asyncio.sleep(pause)
        return None  # not reached: the pauses end with None

    def _is_ready(self, data: bytes | None) -> bool:
        """Whether stored meta says the task is done (unreadable meta: not yet)."""
        if data is None:
            return False
        try:
            return self._decode(data).get("status") in states.READY_STATES
        except Exception:  # noqa: BLE001 - an undecodable meta is simply not ready
            return False

    def reply_to(self, parent: Any = None, ignore_result: bool | None = None) -> str:
        """The ``reply_to`` property of a task message this process is about to send:
        empty, except for a backend whose results travel back as messages (rpc://).

        Args:
            parent: the request of the task running in this process, if any.
            ignore_result: the task's result will not be sent.
        """
        return ""

    def close(self) -> None:
        """Release connections."""

    def cleanup(self) -> int:
        """Delete expired results; returns how many. Stores that expire results
        themselves have nothing to do."""
        return 0

    # -- meta encoding --------------------------------------------------------------
    def _encode(self, meta: Any) -> bytes:
        try:
            data = self._serializer.dumps(meta)
        except Exception as exc:
            raise ResultNotSerializable(
                f"result of task {meta.get('task_id') if isinstance(meta, dict) else '?'} cannot be encoded with the "
                f"{self._serializer.name!r} result serializer: {exc}"
            ) from exc
        if self.options.compression:
            if isinstance(data, str):
                data = data.encode()
            body, content_type = serialization.compress(data, self.options.compression)
            data = b"".join((COMPRESSED_MAGIC, content_type.encode(), b"\x00", body))
        return data

    def _decode(self, data: bytes) -> dict[str, Any]:
        # Driven by the stored bytes, not by the setting: results written before the
        # setting changed, or by a worker configured otherwise, stay readable.
        if isinstance(data, (bytes, bytearray, memoryview)) and bytes(
                data[:len(COMPRESSED_MAGIC)]) == COMPRESSED_MAGIC:
            content_type, _, body = bytes(data[len(COMPRESSED_MAGIC):]).partition(b"\x00")
            data = serialization.decompress(body, content_type.decode())
        return serialization.loads(data, self._serializer.content_type, self._accept)

    # -- storing --------------------------------------------------------------------
    def store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                     request: Any = None) -> dict[str, Any]:
        """Record ``state`` and ``result`` for ``task_id``; returns the stored meta.

        A result that cannot be encoded is stored as a FAILURE with
        ``ResultNotSerializable`` so the caller learns why, instead of waiting forever.
        """
        meta = self._meta(task_id, result, state, traceback, request)
        try:
            data = self._encode(meta)
        except ResultNotSerializable as exc:
            meta = self._meta(task_id, self.prepare_exception(exc), states.FAILURE,
                              None, request)
            data = self._encode(meta)
        self._store_with_retries(task_id, data, meta["status"])
        return meta

    def _store_with_retries(self, task_id: str, data: bytes, state: str) -> None:
        # A result store that blips (a dropped connection, a server restart) must not
        # turn a task that succeeded into a failure: retry connection errors with a
        # back-off before giving up. Anything else is raised at once.
        expires = self.options.expires_for(state)
        ready = state in states.READY_STATES
        if self.options.always_retry:
            self._retrying(self._set, task_id, data, expires, ready)
            return
        attempts = self.options.store_attempts
        pause = 0.01
        for attempt in range(1, attempts + 1):
            try:
                self._set(task_id, data, expires, ready)
                return
            except Exception as exc:
                if attempt >= attempts or not is_connection_error(exc):
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _retrying(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``; with ``always_retry``, connection errors are retried as Celery
        does: up to ``max_retries`` times, sleeping a random time up to
        ``base_sleep_ms * 2**retries`` (at most ``max_sleep_ms``) between tries."""
        options = self.options
        retries = 0
        while True:
            try:
                return fn(*args)
            except Exception as exc:
                if (not options.always_retry or not is_connection_error(exc)
                        or retries >= options.max_retries):
                    raise
                retries += 1
                logger.warning("result backend: %s failed (%r); retry %d of %s", getattr(
                    fn, "__name__", fn), exc, retries, options.max_retries)
                ceiling = min(options.max_sleep_ms, options.base_sleep_ms * 2 ** retries)
                time.sleep(random.randint(0, max(int(ceiling), 0)) / 1000)

    def _meta(self, task_id: str, result: Any, state: str, traceback: str | None,
              request: Any) -> dict[str, Any]:
        if isinstance(result, BaseException):
            result = self.prepare_exception(result)
        else:
            result = _result_tuple(result)
        children = getattr(request, "children", None) if request is not None else None
        meta: dict[str, Any] = {
            "status": state,
            "result": result,
            "traceback": traceback,
            "children": [child.as_tuple() for child in children or ()],
            "date_done": datetime.now(timezone.utc).isoformat(),
            "task_id": task_id,
        }
        if request is not None:
            group = getattr(request, "group", None)
            parent = getattr(request, "parent_id", None)
            if group:
                meta["group_id"] = group
            if parent:
                meta["parent_id"] = parent
            if self.options.extended:
                meta.update(
                    name=getattr(request, "task", None),
                    args=getattr(request, "args", None),
                    kwargs=getattr(request, "kwargs", None),
                    worker=getattr(request, "hostname", None),
                    retries=getattr(request, "retries", 0),
                    queue=(getattr(request, "delivery_info", None) or {}).get("routing_key"),
                )
        return meta

    def mark_as_started(self, task_id: str, request: Any = None, **meta: Any) -> None:
        self.store_result(task_id, meta, states.STARTED, request=request)

    def mark_as_done(self, task_id: str, result: Any, request: Any = None) -> None:
        self.store_result(task_id, result, states.SUCCESS, request=request)

    def mark_as_failure(self, task_id: str, exc: BaseException, traceback: str | None = None,
                        request: Any = None) -> None:
        if traceback is None and exc.__traceback__ is not None:
            traceback = "".join(tb_module.format_exception(exc))
        self.store_result(task_id, exc, states.FAILURE, traceback, request=request)

    def mark_as_retry(self, task_id: str, exc: BaseException, traceback: str | None = None,
                      request: Any = None) -> None:
        self.store_result(task_id, exc, states.RETRY, traceback, request=request)

    def mark_as_revoked(self, task_id: str, reason: str = "revoked", request: Any = None) -> None:
        from ..exceptions import TaskRevokedError

        self.store_result(task_id, TaskRevokedError(reason), states.REVOKED, request=request)

    # -- reading --------------------------------------------------------------------
    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        data = self._retrying(self._get, task_id)
        if data is None:
            return {"status": states.PENDING, "result": None, "traceback": None,
                    "children": [], "task_id": task_id}
        return self._decode(data)

    def get_many_metas(self, task_ids: list[str]) -> list[dict[str, Any]]:
        """The metas of many tasks at once (stores override to use one round trip)."""
        return [self.get_task_meta(task_id) for task_id in task_ids]

    def wait_for(self, task_id: str, timeout: float | None = None,
                 interval: float = 0.5) -> dict[str, Any]:
        """Block until the task is ready.

        Raises:
            TimeoutError: not ready within ``timeout`` seconds.
        """
        return self._ready_meta(task_id, self._wait(task_id, timeout, interval), timeout)

    async def await_for(self, task_id: str, timeout: float | None = None,
                        interval: float = 0.5) -> dict[str, Any]:
        """``wait_for`` for asyncio code: awaits without blocking the event loop.

        Raises:
            TimeoutError: not ready within ``timeout`` seconds.
        """
        data = await self._await(task_id, timeout, interval)
        return self._ready_meta(task_id, data, timeout)

    def _ready_meta(self, task_id: str, data: bytes | None,
                    timeout: float | None) -> dict[str, Any]:
        meta = self._decode(data) if data is not None else None
        if meta is None or meta.get("status") not in states.READY_STATES:
            raise TimeoutError(f"task {task_id} not ready after {timeout} seconds")
        return meta

    def forget(self, task_id: str) -> None:
        self._retrying(self._delete, task_id)

    def recent_results(self, since: float, limit: int = 1000, cursor: str | None = None
                       ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a pass over the results of tasks done (in a ready state) at or
        after ``since`` (epoch seconds): ``(metas, cursor)``.

        A meta is the one ``get_task_meta`` gives, with ``task_id``, and ``name``,
        ``args``, ``kwargs``, ``worker``, ``queue``, ``retries`` when
        ``result_extended`` stored them. Give the cursor to the next call to go on;
        None ends the pass: every result done since ``since`` and stored before the
        pass began was in one of its pages. A page holds about ``limit`` metas, in
        the store's order (not time order); a meta may come twice.

        Raises:
            NotImplementedError: the store cannot list its results without reading
                all of them (the default; the Redis, SQLite and database backends can).
        """
        raise NotImplementedError(f"the {type(self).__name__} cannot list its results")

    # -- groups and chords ----------------------------------------------------------
    def _group_key(self, group_id: str) -> str:
        return f"{GROUP_KEY_PREFIX}{group_id}"

    def save_group(self, group_id: str, value: Any) -> None:
        """Store a ``GroupResult.as_tuple()`` under the group id."""
        data = self._encode({"result": value})
        self._retrying(self._set, self._group_key(group_id), data, self.options.expires, True)

    def restore_group(self, group_id: str) -> Any:
        """The tuple saved by ``save_group``, or None."""
        data = self._retrying(self._get, self._group_key(group_id))
        return None if data is None else self._decode(data).get("result")

    def delete_group(self, group_id: str) -> None:
        self._retrying(self._delete, self._group_key(group_id))

    def set_chord_size(self, group_id: str, size: int) -> None:
        """Record how many header tasks the chord ``group_id`` waits for.

        Called by the client before it sends the header. Backends without an atomic
        counter cannot run chords.
        """
        raise NotImplementedError(f"the {type(self).__name__} cannot run chords")

    def add_to_chord(self, group_id: str) -> int:
        """Make the chord ``group_id`` wait for one more header task; returns the new
        number of header tasks (the added one's ``group_index`` is that minus one)."""
        raise NotImplementedError(f"the {type(self).__name__} cannot run chords")

    def chord_part_return(self, group_id: str, index: int, task_id: str, state: str,
                          result: Any) -> list[ChordPart] | None:
        """Record one finished header task of chord ``group_id``.

        The count is kept atomically in the store, so exactly one caller (the one
        that records the last part) gets the parts back, in ``group_index`` order, and
        must send the body; every other caller gets None. A part recorded twice (a
        redelivered message) counts once.
        """
        raise NotImplementedError(f"the {type(self).__name__} cannot run chords")

    def _chord_member(self, index: int, task_id: str, state: str, result: Any) -> bytes:
        if isinstance(result, BaseException):
            result = self.prepare_exception(result)
        try:
            return self._encode([1, task_id, state, result])  # Celery's ``.j`` member
        except ResultNotSerializable as exc:
            return self._encode([1, task_id, states.FAILURE, self.prepare_exception(exc)])

    def _chord_parts(self, members: list[bytes]) -> list[ChordPart]:
        parts = []
        for data in members:
            _, task_id, state, result = self._decode(data)
            parts.append(ChordPart(task_id, state, result))
        return parts

    # -- exceptions -----------------------------------------------------------------
    @staticmethod
    def prepare_exception(exc: BaseException) -> dict[str, Any]:
        cls = type(exc)
        module = cls.__module__
        if _CELERY_TWINS.get(cls.__name__) is cls:
            module = _CELERY_MODULE  # interop: see _CELERY_TWINS
        return {
            "exc_type": cls.__qualname__,
            "exc_message": _safe_args(exc),
            "exc_module": module,
        }

    @staticmethod
    def exception_to_python(info: Any) -> BaseException:
        """Rebuild an exception from its stored dict; a stand-in when it cannot."""
        if isinstance(info, BaseException):
            return info
        if not isinstance(info, dict) or "exc_type" not in info:
            return RemoteError("Exception", None, info)
        exc_type = info["exc_type"]
        module = info.get("exc_module")
        message = info.get("exc_message") or []
        args = message if isinstance(message, (list, tuple)) else [message]
        cls: Any = None
        if module in _TWIN_MODULES and exc_type in _CELERY_TWINS:
            # written by Celery, or by celeriac for Celery's sake: celeriac's own class
            cls = _CELERY_TWINS[exc_type]
        elif module:
            # Only modules already imported, as Celery does: the module name comes from
            # the result store, and importing whatever it names would run that module's
            # top-level code in the client.
            cls = sys.modules.get(module)
            try:
                for part in exc_type.split("."):
                    cls = getattr(cls, part)
            except AttributeError:
                cls = None
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            return RemoteError(exc_type, module, message)
        try:
            return cls(*args)
        except Exception:
            return RemoteError(exc_type, module, message)


def done_at(meta: Any) -> float | None:
    """A meta's ``date_done`` as epoch seconds (a naive time is UTC, as Celery writes
    it); None when it has none or it cannot be read."""
    done = meta.get("date_done") if isinstance(meta, dict) else None
    if isinstance(done, str):
        try:
            done = datetime.fromisoformat(done)
        except ValueError:
            return None
    if not isinstance(done, datetime):
        return None
    if done.tzinfo is None:
        done = done.replace(tzinfo=timezone.utc)
    return done.timestamp()


def _safe_args(exc: BaseException) -> list[Any]:
    out = []
    for arg in exc.args:
        try:
            serialization._json_dumps(arg)
            out.append(arg)
        except Exception:
            out.append(repr(arg))
    return out


__all__ = ["Backend", "BackendOptions", "BackendError", "ChordPart"]


def _result_tuple(value: Any) -> Any:
    """A task that returns a result object stores its tuple form, as Celery does."""
    from ..result import AsyncResult, GroupResult

    if isinstance(value, (AsyncResult, GroupResult)):
        return value.as_tuple()
    return value


def _pauses(timeout: float | None, interval: float) -> Iterator[float | None]:
    """The pauses of a polling wait, doubling from 1 ms up to ``interval``; the last
    one, None, comes at ``timeout`` and means "read once more, then give up"."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = min(0.001, interval)
    while True:
        if deadline is None:
            yield pause
        else:
            remaining = deadline - time.monotonic()
            yield min(pause, remaining) if remaining > 0 else None
            if remaining <= 0:
                return
        pause = min(pause * 2, interval)
