"""The SQL broker's database: one DBAPI connection per thread and process, its tables,
and what differs between PostgreSQL and MySQL/MariaDB.

SQLAlchemy parses the URL, picks the dialect and the driver and owns the pool; the
broker's statements go straight to the DBAPI cursor. Measured on loopback PostgreSQL
(psycopg 3), one ``UPDATE ... RETURNING`` through ``Connection.exec_driver_sql`` took
about 95 us against 55 us on the cursor, and the hot path runs one or two statements
per task, so SQLAlchemy's layers would cost a third of the broker's time.
"""

from __future__ import annotations

import hashlib
import select
import threading
import time
from typing import Any, Callable, TypeVar

from ..exceptions import ImproperlyConfigured, MissingDependency
from .outage import describe
from .pid import current_pid
from .sql import DRIVER_MODULES, EXTRAS, PREFERRED_DRIVERS, installed_driver
from .urls import mask_password

T = TypeVar("T")

# Deadlocks and lock waits that ran out: the database undid the transaction, which is
# safe to run again (PostgreSQL SQLSTATEs, MySQL error numbers).
_RETRY_SQLSTATES = ("40P01", "40001", "55P03")
_RETRY_MYSQL = (1213, 1205)
TRANSACTION_ATTEMPTS = 5

# Serializes table creation among processes that start at once (PostgreSQL's CREATE
# TABLE IF NOT EXISTS is not safe against a concurrent one; MySQL's DDL is not
# transactional): an advisory lock's key, a named lock's name.
_SCHEMA_LOCK_KEY = 0x63656C72  # "celr"
_SCHEMA_LOCK_NAME = "celeriac_broker_schema"

# Tables made in this process already, by (url, schema): brokers are made often.
_ready: set[tuple[str, str]] = set()
_ready_lock = threading.Lock()
# Engines (and their connections) made before a fork, kept referenced in the child so
# that collecting them never closes (or sends a goodbye on) the parent's sockets.
_inherited: list[Any] = []


def _import(module: str, feature: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise MissingDependency(module, extra, feature) from None


def sqlalchemy_url(url: str, feature: str) -> tuple[Any, str]:
    """``(SQLAlchemy URL, kind)`` of a ``sqla+<dialect>[+driver]://`` broker URL, with a
    driver picked when it names none; kind is ``postgresql`` or ``mysql``.

    Raises:
        MissingDependency: SQLAlchemy or the driver is not installed.
        ImproperlyConfigured: a dialect other than PostgreSQL and MySQL/MariaDB.
    """
    scheme, rest = url.split("://", 1)
    dialect, _, driver = scheme.removeprefix("sqla+").partition("+")
    kind = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql",
            "mariadb": "mysql"}.get(dialect)
    if kind is None:
        raise ImproperlyConfigured(
            f"the SQL broker runs on PostgreSQL and MySQL/MariaDB (sqla+postgresql://, "
            f"sqla+mysql://), not on {dialect!r}")
    extra = EXTRAS[kind]
    _import("sqlalchemy", feature, extra)
    if not driver:  # the same choice as the result backend's (utils/sql.py)
        driver = installed_driver(kind) or ""
        if not driver:
            raise MissingDependency(DRIVER_MODULES[PREFERRED_DRIVERS[kind][0]], extra, feature)
    module = DRIVER_MODULES.get(driver)
    if module is None:
        raise ImproperlyConfigured(
            f"the SQL broker does not know the driver {driver!r}; choose one of: "
            f"{', '.join(PREFERRED_DRIVERS[kind])}")
    _import(module, feature, extra)
    from sqlalchemy.engine import make_url

    sa_dialect = "postgresql" if kind == "postgresql" else dialect
    return make_url(f"{sa_dialect}+{driver}://{rest}"), kind


class Database:
    """Connections to one database for one broker.

    Each thread of each process has its own DBAPI connection, in autocommit mode (a
    single statement is its own transaction: no extra round trip for COMMIT), taken
    from SQLAlchemy's pool and kept until ``close`` or until it breaks. A forked child
    starts a pool of its own and leaves the parent's connections alone.

    Args:
        url: the broker URL (``sqla+postgresql+psycopg://...``).
        options: the broker's options: ``schema`` (tables there; made when absent) and
            ``socket_connect_timeout`` (``broker_connection_timeout``).
    """

    def __init__(self, url: str, options: dict[str, Any], feature: str = "the SQL broker",
                 schema_ddl: Callable[[Database], list[str]] | None = None) -> None:
        self.url = url
        self.safe_url = mask_password(url)
        self.sa_url, self.kind = sqlalchemy_url(url, feature)
        self.driver = self.sa_url.get_driver_name()
        self.schema: str = options.get("schema") or ""
        self.connect_timeout = options.get("socket_connect_timeout")
        self._schema_ddl = schema_ddl
        self._engine: Any = None
        self._engine_pid = 0
        self._engine_lock = threading.Lock()
        self._local = threading.local()
        self._links: list[Any] = []  # every thread's connection, to close them all
        self._links_lock = threading.Lock()
        self.pg = self.kind == "postgresql"
        #: connections found broken so far: what a consumer checks to know the database
        #: went away (and may have undone its last asynchronous commits)
        self.losses = 0
        self.dbapi = __import__(DRIVER_MODULES[self.driver])
        self.quote = self._quoter()

    # -- names ---------------------------------------------------------------------------
    def _quoter(self) -> Callable[[str], str]:
        mark = '"' if self.pg else "`"
        return lambda name: mark + name.replace(mark, mark * 2) + mark

    def table(self, name: str) -> str:
        """A table's name, qualified with the schema when there is one."""
        return f"{self.quote(self.schema)}.{name}" if self.schema else name

    def channel(self, kind: str, name: str) -> str:
        """A PostgreSQL notification channel for a queue or an exchange: a digest, since
        channel names are at most 63 bytes and queue names are anything."""
        digest = hashlib.sha1(f"{self.schema}\0{name}".encode()).hexdigest()[:24]
        return f"celeriac_{kind}_{digest}"

    @property
    def now_sql(self) -> str:
        """The database's clock in epoch seconds (liveness is judged on it)."""
        return ("EXTRACT(EPOCH FROM clock_timestamp())::float8" if self.pg
                else "UNIX_TIMESTAMP(NOW(6))")

    # -- connections -----------------------------------------------------------------------
    def engine(self) -> Any:
        pid = current_pid()
        if self._engine is not None and self._engine_pid == pid:
            return self._engine
        with self._engine_lock:
            if self._engine is None or self._engine_pid != pid:
                if self._engine is not None:
                    # Made in the parent: its connections are the parent's sockets.
                    _inherited.append((self._engine, self._links))
                    self._links = []
                    self._local = threading.local()
                from sqlalchemy import create_engine

                args: dict[str, Any] = {}
                if self.connect_timeout:
                    # both drivers take whole seconds; libpq takes at least 2
                    args["connect_timeout"] = max(2, int(float(self.connect_timeout) + 0.999))
                # Connections are held per thread, so the pool grows with the threads
                # that use the broker (a bounded pool would block a consumer thread).
                self._engine = create_engine(self.sa_url, pool_size=5, max_overflow=-1,
                                             pool_reset_on_return=None, connect_args=args)
                self._engine_pid = pid
            return self._engine

    def connection(self) -> Any:
        """This thread's DBAPI connection (autocommit), made on first use."""
        local = self._local
        link = getattr(local, "link", None)
        if link is not None and local.pid == current_pid():
            return link.dbapi_connection
        link = self._open()
        local.link, local.pid = link, current_pid()
        self.ensure_schema()  # on this connection, now that it is this thread's
        return link.dbapi_connection

    def _open(self) -> Any:
        engine = self.engine()
        try:
            link = engine.raw_connection()
        except Exception as exc:
            raise self.connection_error(exc) from exc
        try:
            self.prepare(link.dbapi_connection)
        except Exception as exc:
            link.invalidate()
            raise self.connection_error(exc) from exc
        with self._links_lock:
            self._links.append(link)
        return link

    def raw(self) -> Any:
        """A pooled connection of its own (LISTEN, a fanout listener), autocommit;
        ``give_back`` returns it."""
        try:
            link = self.engine().raw_connection()
            self.prepare(link.dbapi_connection)
        except Exception as exc:
            raise self.connection_error(exc) from exc
        return link

    def give_back(self, link: Any, broken: bool = False) -> None:
        try:
            if broken:
                link.invalidate()
            else:
                self.set_autocommit(link.dbapi_connection, False)
                link.close()
        except Exception:  # a broken connection: nothing to give back
            pass

    def prepare(self, conn: Any) -> None:
        self.set_autocommit(conn, True)
        if not self.pg:
            # Under InnoDB's default REPEATABLE READ a SELECT ... FOR UPDATE locks the
            # gaps between index entries too, which would block publishers' inserts
            # for the length of a fetch.
            with conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")

    @staticmethod
    def set_autocommit(conn: Any, on: bool) -> None:
        setter = getattr(conn, "autocommit")
        if callable(setter):  # PyMySQL, mysqlclient
            setter(on)
        else:
            conn.autocommit = on

    def usable(self, conn: Any) -> bool:
        if self.pg:
            return not conn.closed and not getattr(conn, "broken", False)
        return bool(getattr(conn, "open", True))

    def discard(self) -> None:
        """Drop this thread's connection (it broke); the next call makes another."""
        self.losses += 1
        link = getattr(self._local, "link", None)
        self._local.link = None
        if link is not None and self._local.pid == current_pid():
            with self._links_lock:
                if link in self._links:
                    self._links.remove(link)
            self.give_back(link, broken=True)

    def close(self) -> None:
        """Give back every connection this process took; made again on the next call."""
        if self._engine is None or self._engine_pid != current_pid():
            return
        with self._links_lock:
            links, self._links = self._links, []
        for link in links:
            self.give_back(link)
        self._local = threading.local()

    # -- running statements ----------------------------------------------------------------
    def run(self, fn: Callable[[Any], T]) -> T:
        """``fn(cursor)`` on this thread's connection, each statement its own
        transaction."""
        conn = self.connection()
        self._read_pending()
        try:
            with conn.cursor() as cur:
                return fn(cur)
        except self.dbapi.Error as exc:
            raise self._failed(conn, exc) from exc

    def transaction(self, fn: Callable[[Any], T]) -> T:
        """``fn(cursor)`` in one transaction, run again when the database undid it to
        break a deadlock."""
        for attempt in range(TRANSACTION_ATTEMPTS):
            conn = self.connection()
            self._read_pending()
            try:
                with conn.cursor() as cur:
                    cur.execute("BEGIN")
                    try:
                        result = fn(cur)
                    except BaseException:
                        if self.usable(conn):
                            cur.execute("ROLLBACK")
                        raise
                    cur.execute("COMMIT")
                    return result
            except self.dbapi.Error as exc:
                if self.retryable(exc) and attempt + 1 < TRANSACTION_ATTEMPTS:
                    time.sleep(0.005 * (attempt + 1))
                    continue
                raise self._failed(conn, exc) from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    @property
    def can_send(self) -> bool:
        """Whether ``send`` can leave a statement's reply for later (psycopg 3)."""
        return self.driver == "psycopg"

    def send(self, statement: str, params: list[str]) -> Callable[[], None]:
        """Send one statement (``$1``-style placeholders, text parameters) on this
        thread's connection without waiting for its reply; returns what reads the reply
        (raising its error). Anything else run on the connection reads it first."""
        conn = self.connection()
        self._read_pending()
        error: BaseException | None = None
        # psycopg's own lock: a greenlet of a green pool sharing this thread's
        # connection waits in its execute() until the reply is read
        with conn.lock:
            pg = conn.pgconn
            try:
                pg.send_query_params(statement.encode(), [p.encode() for p in params])
                while pg.flush():  # a non-blocking connection may not send it all at once
                    select.select([], [pg.socket], [])
            except self.dbapi.Error as exc:
                error = exc
            else:
                reply = _Reply(self, conn)
                self._local.pending = reply
        if error is not None:
            raise self._failed(conn, error) from error
        return reply

    def _read_pending(self) -> None:
        reply = getattr(self._local, "pending", None)
        if reply is not None:
            reply.read()

    def retryable(self, exc: BaseException) -> bool:
        if self.pg:
            code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
            return code in _RETRY_SQLSTATES
        return bool(exc.args) and exc.args[0] in _RETRY_MYSQL

    def _failed(self, conn: Any, exc: BaseException) -> BaseException:
        if self.usable(conn):
            return exc  # an error in a statement: the connection is fine
        self.discard()
        return self.connection_error(exc)

    def connection_error(self, exc: BaseException) -> ConnectionError:
        """What the worker's outage handling takes a lost database for."""
        return ConnectionError(f"the database at {self.safe_url} is unreachable: "
                               f"{describe(exc)}")

    # -- tables ------------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create the tables if absent, once per process, safely when several processes
        start at once."""
        if self._schema_ddl is None:
            return
        key = (self.url, self.schema)
        with _ready_lock:
            if key in _ready:
                return
        statements = self._schema_ddl(self)
        if self.schema:
            statements.insert(0, f"CREATE SCHEMA IF NOT EXISTS {self.quote(self.schema)}")

        def create(cur: Any) -> None:
            for statement in statements:
                cur.execute(statement)

        if self.pg:
            def locked(cur: Any) -> None:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                create(cur)

            self.transaction(locked)
        else:
            def named(cur: Any) -> None:
                cur.execute("SELECT GET_LOCK(%s, 60)", (_SCHEMA_LOCK_NAME,))
                try:
                    create(cur)
                finally:
                    cur.execute("SELECT RELEASE_LOCK(%s)", (_SCHEMA_LOCK_NAME,))

            self.run(named)
        with _ready_lock:
            _ready.add(key)


class _Reply:
    """The reply to a statement ``Database.send`` sent (psycopg 3's libpq connection)."""

    def __init__(self, db: Database, conn: Any) -> None:
        self.db = db
        self.conn = conn
        self.error: BaseException | None = None
        self.done = False

    def read(self) -> None:
        """Read the reply (once), keeping its error for ``__call__``."""
        from psycopg import pq

        lost: BaseException | None = None
        with self.conn.lock:
            if self.done:
                return
            pg = self.conn.pgconn
            failure = ""
            try:
                while True:
                    while pg.is_busy():
                        select.select([pg.socket], [], [])
                        pg.consume_input()
                    result = pg.get_result()
                    if result is None:
                        break
                    if result.status not in (pq.ExecStatus.COMMAND_OK,
                                             pq.ExecStatus.TUPLES_OK):
                        failure = (result.error_message or b"").decode(
                            errors="replace").strip()
            except self.db.dbapi.Error as exc:
                lost = exc
            self.done = True
            if getattr(self.db._local, "pending", None) is self:
                self.db._local.pending = None
        if lost is not None:  # (outside the lock: dropping the connection closes it)
            self.error = self.db._failed(self.conn, lost)
        elif failure:
            self.error = self.db.dbapi.DatabaseError(failure)

    def __call__(self) -> None:
        self.read()
        if self.error is not None:
            raise self.error


# -- the broker's tables ---------------------------------------------------------------------
#: the broker's tables, each ``celeriac_<name>``
TABLES = ("messages", "consumers", "clock", "rates", "revoked", "dead_letters", "notices")


def broker_tables(db: Database) -> list[str]:
    """The statements that make the SQL broker's tables where absent (docs/sql-broker.md)."""
    t = {name: db.table(f"celeriac_{name}") for name in TABLES}
    if db.pg:
        serial, real, text = "BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION", "TEXT"
        tail = ""
    else:
        serial, real, text = "BIGINT AUTO_INCREMENT PRIMARY KEY", "DOUBLE", "LONGTEXT"
        # binary collation: queue names compare as other brokers compare them
        tail = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    key = "VARCHAR(255)"
    statements = [
        f"""CREATE TABLE IF NOT EXISTS {t['messages']} (
            id {serial}, queue {key} NOT NULL, priority INTEGER NOT NULL DEFAULT 0,
            due {real} NOT NULL DEFAULT 0, consumer {key}, deliveries INTEGER NOT NULL
            DEFAULT 0, lost INTEGER NOT NULL DEFAULT 0, payload {text} NOT NULL
            {'' if db.pg else ', INDEX celeriac_messages_ready (queue, consumer, priority, id)'
                              ', INDEX celeriac_messages_consumer (consumer)'}){tail}""",
        f"CREATE TABLE IF NOT EXISTS {t['consumers']} (id {key} PRIMARY KEY, "
        f"heartbeat {real} NOT NULL){tail}",
        f"CREATE TABLE IF NOT EXISTS {t['clock']} (name {key} PRIMARY KEY, "
        f"value {real} NOT NULL){tail}",
        f"CREATE TABLE IF NOT EXISTS {t['rates']} (name {key} PRIMARY KEY, "
        f"next_start {real} NOT NULL){tail}",
        f"CREATE TABLE IF NOT EXISTS {t['revoked']} (id {serial}, task_id {key} NOT NULL "
        f"UNIQUE, expires {real} NOT NULL, terminate {key}){tail}",
        f"CREATE TABLE IF NOT EXISTS {t['dead_letters']} (id {serial}, dead_queue {key} "
        f"NOT NULL, queue {key} NOT NULL, reason {text} NOT NULL, time {real} NOT NULL, "
        f"payload {text} NOT NULL{'' if db.pg else ', INDEX celeriac_dl (dead_queue, id)'})"
        f"{tail}",
        f"CREATE TABLE IF NOT EXISTS {t['notices']} (id {serial}, exchange {key} NOT NULL, "
        f"routing_key {key} NOT NULL, time {real} NOT NULL, headers {text} NOT NULL, "
        f"body {text} NOT NULL"
        f"{'' if db.pg else ', INDEX celeriac_notices_exchange (exchange, id)'}){tail}",
    ]
    if db.pg:
        # Only waiting rows are in the fetch index: taking a message leaves it.
        statements += [
            f"CREATE INDEX IF NOT EXISTS celeriac_messages_ready ON {t['messages']} "
            "(queue, priority, id) WHERE consumer IS NULL",
            f"CREATE INDEX IF NOT EXISTS celeriac_messages_consumer ON {t['messages']} "
            "(consumer) WHERE consumer IS NOT NULL",
            f"CREATE INDEX IF NOT EXISTS celeriac_dl ON {t['dead_letters']} (dead_queue, id)",
            f"CREATE INDEX IF NOT EXISTS celeriac_notices_exchange ON {t['notices']} "
            "(exchange, id)",
            f"INSERT INTO {t['clock']} (name, value) VALUES ('last_beat', 0), "
            "('notices', 0) ON CONFLICT DO NOTHING",
        ]
    else:
        statements.append(f"INSERT IGNORE INTO {t['clock']} (name, value) VALUES "
                          "('last_beat', 0), ('notices', 0)")
    return statements


# -- what a consumer knows of its rows ------------------------------------------------------
#: how long a consumer remembers what it settled: past PostgreSQL's bound on the commits
#: an asynchronous commit may lose in a crash (three wal_writer_delay, 600 ms by default)
RECENT_WINDOW = 10.0


class Ledger:
    """The rows a consumer is responsible for, so that after the database went away it
    can tell, of the rows marked with its id, which are truly its own.

    Acks and early acks are committed without waiting for their WAL flush (see the
    broker), so a database crash may undo the last of them; and a fetch whose reply
    was lost may have committed. ``verdict`` sorts each row found marked with this
    consumer's id after such an event: keep it (fetched and not settled), mark it
    started (its task runs), delete it (acked, or its task ended), or give it back to
    its queue (never seen: a fetch whose reply was lost).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.held: set[Any] = set()
        self.running: set[Any] = set()
        self._gone: dict[Any, float] = {}

    def fetched(self, tags: Any) -> None:
        self.held.update(tags)

    def settled(self, tags: Any, gone: bool) -> None:
        """Requeued, deferred, dead-lettered (``gone`` False: not this consumer's any
        more), or acked (``gone`` True: deleted)."""
        now = self.clock()
        for tag in tags:
            self.held.discard(tag)
            if gone:
                self._gone[tag] = now
        self._forget_old(now)

    def started(self, tags: Any) -> None:
        for tag in tags:
            self.held.discard(tag)
            self.running.add(tag)

    def ended(self, tags: Any) -> None:
        now = self.clock()
        for tag in tags:
            self.running.discard(tag)
            self._gone[tag] = now

    def _forget_old(self, now: float) -> None:
        if len(self._gone) > 1000:
            cutoff = now - RECENT_WINDOW
            self._gone = {t: at for t, at in self._gone.items() if at >= cutoff}

    def verdict(self, tag: Any, started: bool) -> str:
        """``keep``, ``start``, ``delete`` or ``return`` for a row marked with this
        consumer's id (``started``: its due says an early ack went through)."""
        if tag in self.held:
            return "keep"
        if tag in self.running:
            return "keep" if started else "start"
        if tag in self._gone or started:
            return "delete"
        return "return"

    def clear(self) -> None:
        self.held.clear()
        self.running.clear()
        self._gone.clear()


# -- waiting for notifications (PostgreSQL) ---------------------------------------------------
def drain_notifications(conn: Any) -> int:
    """Take the notifications that arrived on ``conn``; how many (no waiting)."""
    if hasattr(conn, "notifies") and callable(conn.notifies):  # psycopg 3
        # (not libpq's queue directly: psycopg keeps those read during a query)
        return sum(1 for _ in conn.notifies(timeout=0))
    conn.poll()  # psycopg2
    count = len(conn.notifies)
    conn.notifies.clear()
    return count


def wait_notification(conn: Any, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for a notification on ``conn``; True if one came."""
    if timeout <= 0:
        return False
    if hasattr(conn, "notifies") and callable(conn.notifies):  # psycopg 3
        return any(True for _ in conn.notifies(timeout=timeout, stop_after=1))
    readable, _, _ = select.select([conn.fileno()], [], [], timeout)
    return bool(readable) and drain_notifications(conn) > 0
