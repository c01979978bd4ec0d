"""SQLAlchemy plumbing for the database result backend: the URL, a fork-safe engine,
and a PostgreSQL LISTEN connection shared by every waiter of a process.

SQLAlchemy and the database drivers are optional: they are imported here, on first
use, and their absence names the extra to install.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import threading
import time
from typing import Any, Callable, Iterator

from ..exceptions import ImproperlyConfigured, MissingDependency
from .imports import symbol_by_name
from .pid import current_pid
from .urls import mask_password

logger = logging.getLogger(__name__)

#: the extra that brings each dialect's default driver
EXTRAS = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}

#: engine options that only a pooling engine takes (dropped with short-lived sessions)
_POOL_ONLY = ("max_overflow", "echo_pool")


def sqlalchemy(feature: str = "the database result backend") -> Any:
    """The ``sqlalchemy`` module.

    Raises:
        MissingDependency: SQLAlchemy is not installed.
    """
    try:
        import sqlalchemy
    except ImportError:
        raise MissingDependency("SQLAlchemy", "sqlalchemy", feature) from None
    return sqlalchemy


def database_url(url: str, setting_url: str | None) -> str:
    """The SQLAlchemy URL of a result backend URL: ``db+postgresql://...`` without its
    ``db+``, or the ``database_url`` setting for Celery's bare ``database`` alias.

    Raises:
        ImproperlyConfigured: ``database`` without ``database_url``.
    """
    if url.split("://", 1)[0] == "database":
        if not setting_url:
            raise ImproperlyConfigured(
                "result_backend is 'database' but database_url is not set: give the "
                "SQLAlchemy URL there (postgresql+psycopg://user@host/db), or use "
                "result_backend='db+<that URL>'")
        url = setting_url
    return url[3:] if url.startswith("db+") else url


#: the driver of a URL that names none: the one each extra installs, then SQLAlchemy's
#: default (psycopg2, mysqlclient), so that ``postgresql://`` works with
#: ``celeriac[postgresql]`` alone, as the broker's ``sqla+postgresql://`` does
PREFERRED_DRIVERS = {"postgresql": ("psycopg", "psycopg2"), "mysql": ("pymysql", "mysqldb"),
                     "mariadb": ("pymysql", "mysqldb")}
DRIVER_MODULES = {"psycopg": "psycopg", "psycopg2": "psycopg2", "pymysql": "pymysql",
                  "mysqldb": "MySQLdb"}


def installed_driver(dialect: str) -> str | None:
    """The first of ``PREFERRED_DRIVERS[dialect]`` that imports; None if none does (or
    the dialect has no preference: SQLAlchemy's default then stands)."""
    for driver in PREFERRED_DRIVERS.get(dialect, ()):
        try:
            __import__(DRIVER_MODULES[driver])
        except ImportError:
            continue
        return driver
    return None


def with_driver(url: str) -> str:
    """``url`` with the installed driver named when it names none
    (``postgresql://h/db`` -> ``postgresql+psycopg://h/db``)."""
    scheme, sep, rest = url.partition("://")
    dialect, _, driver = scheme.partition("+")
    if driver or not sep:
        return url
    chosen = installed_driver(dialect)
    return f"{dialect}+{chosen}://{rest}" if chosen else url


def dialect_of(url: str) -> tuple[str, str]:
    """``(dialect, driver)`` of an SQLAlchemy URL; driver is '' for the default."""
    scheme = url.split("://", 1)[0]
    dialect, _, driver = scheme.partition("+")
    return dialect, driver


def engine_callback(value: Any) -> Callable[[Any], Any] | None:
    """``database_engine_callback``: a callable or its ``module:name``.

    Raises:
        ImproperlyConfigured: it names something that is not callable.
    """
    if isinstance(value, str):
        try:
            value = symbol_by_name(value)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"database_engine_callback: cannot load {value!r} ({exc})") from exc
    if value is not None and not callable(value):
        raise ImproperlyConfigured(f"database_engine_callback must be callable, got {value!r}")
    return value


class Engine:
    """One SQLAlchemy engine per backend, safe across ``fork``.

    A prefork child inherits the parent's pooled connections; two processes talking
    on one socket corrupt each other's replies. The first use in a new process
    therefore drops the inherited pool without closing its sockets
    (``dispose(close=False)``: closing them would end the parent's sessions too).

    Args:
        url: the SQLAlchemy URL.
        options: ``database_engine_options`` (keyword arguments of ``create_engine``).
        callback: ``database_engine_callback``, called with each new engine.
        short_lived: ``database_short_lived_sessions``: no pool, a fresh connection for
            every operation (for databases that drop idle connections).
    """

    def __init__(self, url: str, options: dict[str, Any] | None,
                 callback: Callable[[Any], Any] | None, short_lived: bool) -> None:
        self.url = url
        self.options = dict(options or {})
        self.callback = callback
        self.short_lived = short_lived
        self._engine: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def masked_url(self) -> str:
        return str(mask_password(self.url))

    def get(self) -> Any:
        """The engine for this process, created on first use.

        Raises:
            MissingDependency: the URL's driver is not installed.
        """
        engine = self._engine
        if engine is not None and self._pid == current_pid():
            return engine
        with self._lock:
            if self._engine is None:
                self._engine = self._create()
            elif self._pid != os.getpid():
                self._engine.dispose(close=False)
            self._pid = os.getpid()
            return self._engine

    def _create(self) -> Any:
        sa = sqlalchemy()
        options = dict(self.options)
        if self.short_lived:
            from sqlalchemy.pool import NullPool

            options = {k: v for k, v in options.items()
                       if not k.startswith("pool") and k not in _POOL_ONLY}
            options["poolclass"] = NullPool
        try:
            engine = sa.create_engine(with_driver(self.url), **options)
        except ImportError as exc:
            dialect, driver = dialect_of(self.url)
            raise MissingDependency(
                exc.name or driver or dialect, EXTRAS.get(dialect, "sqlalchemy"),
                f"the database result backend ({self.masked_url})") from None
        except (TypeError, ValueError) as exc:
            # create_engine names a bad option; the URL may carry a password
            raise ImproperlyConfigured(
                f"database_engine_options or URL {self.masked_url}: {exc}") from None
        if self.callback is not None:
            self.callback(engine)
        return engine

    def connect_raw(self) -> Any:
        """A new DBAPI connection outside the pool (for LISTEN), in autocommit."""
        engine = self.get()
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        conn = engine.dialect.dbapi.connect(*args, **kwargs)
        conn.autocommit = True
        return conn

    def dispose(self) -> None:
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = None


# -- LISTEN/NOTIFY ------------------------------------------------------------------------

#: how long the reader blocks before checking whether it should stop
READ_INTERVAL = 1.0

#: listeners a forked child inherited: kept referenced, never closed, because freeing
#: their connection would send the server a goodbye on the parent's socket
_INHERITED: list[Listener] = []


class _Slot:
    """One waiting ``get()``: set when its task's notification (or a reconnect) came."""

    __slots__ = ("event", "loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.event = threading.Event()
        self.loop = loop
        self.future: asyncio.Future[None] | None = loop.create_future() if loop else None

    def wake(self) -> None:
        self.event.set()
        if self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(self._resolve)
            except RuntimeError:  # the loop closed: nobody is waiting any more
                pass

    def _resolve(self) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(None)


class Listener:
    """One PostgreSQL connection that LISTENs on a channel for a whole process, and the
    thread reading it; each NOTIFY's payload is a task id, and its waiters wake.

    ``LISTEN`` runs before ``start`` returns, so a waiter that registers and then reads
    the row cannot miss a result stored after that read. After a reconnect every waiter
    is woken to read its row again: what was sent while nobody listened is lost.

    Args:
        engine: where to connect.
        channel: the channel name (an identifier).
    """

    def __init__(self, engine: Engine, channel: str) -> None:
        self.engine = engine
        self.channel = channel
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.slots: dict[str, list[_Slot]] = {}
        #: task ids whose waiters a notification woke (tests read it; a few hundred kept)
        self.notified: list[str] = []
        self.conn: Any = None
        self.stopped = False
        self.conn = self._connect()
        self.thread = threading.Thread(target=self._run, name="celeriac-db-results",
                                       daemon=True)
        self.thread.start()

    def _connect(self) -> Any:
        conn = self.engine.connect_raw()
        cur = conn.cursor()
        cur.execute(f'LISTEN "{self.channel}"')
        cur.close()
        return conn

    # -- waiter side ------------------------------------------------------------------
    def join(self, task_id: str, slot: _Slot) -> None:
        with self.lock:
            self.slots.setdefault(task_id, []).append(slot)

    def leave(self, task_id: str, slot: _Slot) -> None:
        with self.lock:
            waiting = self.slots.get(task_id)
            if waiting and slot in waiting:
                waiting.remove(slot)
                if not waiting:
                    del self.slots[task_id]

    def wait(self, task_id: str, timeout: float | None, interval: float,
             read: Callable[[], bytes | None], ready: Callable[[bytes | None], bool]
             ) -> bytes | None:
        """Block until ``read()`` is ready after a notification, or ``timeout``.

        A waiter that heard nothing for ``interval`` seconds reads the row anyway: a
        Celery worker beside celeriac's stores results without NOTIFY, and a
        notification sent while the connection was down is lost.
        """
        slot = _Slot()
        self.join(task_id, slot)
        try:
            data = read()
            for step in _steps(timeout, interval):
                if ready(data):
                    return data
                slot.event.wait(step)
                slot.event.clear()
                data = read()
            return data
        finally:
            self.leave(task_id, slot)

    async def await_ready(self, task_id: str, timeout: float | None, interval: float,
                          read: Callable[[], bytes | None],
                          ready: Callable[[bytes | None], bool]) -> bytes | None:
        """``wait`` for asyncio code; the reads are quick queries run on the loop."""
        slot = _Slot(asyncio.get_running_loop())
        self.join(task_id, slot)
        try:
            data = read()
            for step in _steps(timeout, interval):
                if ready(data):
                    return data
                assert slot.future is not None
                try:
                    await asyncio.wait_for(asyncio.shield(slot.future), step)
                except asyncio.TimeoutError:
                    pass
                slot.future = slot.loop.create_future() if slot.loop else None
                data = read()
            return data
        finally:
            self.leave(task_id, slot)

    # -- reader side ------------------------------------------------------------------
    def _run(self) -> None:
        pause = 0.1
        while not self.stopped:
            try:
                if self.conn is None:
                    self.conn = self._connect()
                    self._wake_all()  # notifications sent while disconnected are lost
                    pause = 0.1
                for task_id in self._read(self.conn):
                    self._dispatch(task_id)
            except Exception as exc:  # noqa: BLE001 - the reader must outlive any error
                if self.stopped:
                    break
                logger.warning("result LISTEN connection to %s failed: %r; reconnecting",
                               self.engine.masked_url, exc)
                conn, self.conn = self.conn, None
                _close(conn)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _read(self, conn: Any) -> Iterator[str]:
        if hasattr(conn, "notifies") and callable(conn.notifies):  # psycopg 3
            for notify in conn.notifies(timeout=READ_INTERVAL):
                yield notify.payload
            return
        # psycopg2: wait for the socket, then let the driver parse what came
        if select.select([conn], [], [], READ_INTERVAL)[0]:
            conn.poll()
            while conn.notifies:
                yield conn.notifies.pop(0).payload

    def _dispatch(self, task_id: str) -> None:
        with self.lock:
            waiting = list(self.slots.get(task_id, ()))
            if waiting:
                self.notified.append(task_id)
                del self.notified[:-500]
        for slot in waiting:
            slot.wake()

    def _wake_all(self) -> None:
        with self.lock:
            waiting = [slot for slots in self.slots.values() for slot in slots]
        for slot in waiting:
            slot.wake()

    def close(self) -> None:
        if self.pid != os.getpid():
            _INHERITED.append(self)  # the parent's: see _INHERITED
            return
        self.stopped = True
        conn, self.conn = self.conn, None
        _close(conn)


def _steps(timeout: float | None, interval: float) -> Iterator[float]:
    """How long to wait for a notification before each backstop read, until
    ``timeout`` runs out (never, for None); a last read follows the last step."""
    deadline = None if timeout is None else time.monotonic() + timeout
    interval = max(interval, 0.01)
    while True:
        if deadline is None:
            yield interval
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        yield min(remaining, interval)


def _close(conn: Any) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - it is being thrown away
        pass
