"""``db+<dialect>[+driver]://``: results in Celery's SQLAlchemy tables.

The tables and columns are Celery 5.7's (``celery_taskmeta``, ``celery_tasksetmeta``,
their sequences on PostgreSQL), so a Celery client reads what a celeriac worker stored
and the reverse. The ``result`` column holds the result encoded by the result
serializer, as Celery 5.7 writes it.

Rows written by Celery before 5.7 hold a pickle instead (SQLAlchemy's ``PickleType``).
Those are read with an unpickler that can build plain values and datetimes only: a row
planted in the database never gets to import or call anything. What it refuses is an
error naming the task. (A ``result_serializer`` of ``pickle`` is different: the user
accepted pickle, with what it implies, for every stored result.)

Chords are counted in two tables of celeriac's own beside Celery's, under row locks, so
no ``chord_unlock`` task polls. On PostgreSQL a ready result is announced with NOTIFY in
the transaction that stores it, and ``get()`` waits on LISTEN; elsewhere it polls with
a back-off.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import threading
import warnings
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from .. import serialization, states
from ..exceptions import BackendError, ImproperlyConfigured
from ..utils.pid import current_pid
from ..utils.sql import Engine, Listener, database_url, dialect_of, engine_callback, sqlalchemy
from .base import COMPRESSED_MAGIC, Backend, BackendOptions, ChordPart

logger = logging.getLogger(__name__)

#: keys of ``database_table_names`` / ``database_table_schemas``: Celery's two, and
#: celeriac's chord tables
TABLE_KEYS = {"task": "celery_taskmeta", "group": "celery_tasksetmeta",
              "chord": "celeriac_chords", "chord_part": "celeriac_chord_parts"}

#: what a stored pickle may name: value types that run no code of their own (and, for
#: pickle protocol 2, the codec call that rebuilds bytes, under either module name)
SAFE_PICKLE_GLOBALS = frozenset({
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"),
    ("datetime", "timedelta"), ("datetime", "timezone"),
    ("builtins", "set"), ("builtins", "frozenset"),
    ("__builtin__", "set"), ("__builtin__", "frozenset"), ("_codecs", "encode"),
})

#: ``get_many_metas`` asks for at most this many ids per query
MANY_CHUNK = 500


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a stored pickle names {module}.{name}")


def load_stored_pickle(data: bytes) -> Any:
    """Unpickle ``data`` if it holds plain values only (see ``SAFE_PICKLE_GLOBALS``).

    Raises:
        pickle.UnpicklingError: it names anything else (a class, a function).
    """
    return _DataOnlyUnpickler(io.BytesIO(data)).load()


def build_tables(schemas: dict[str, Any] | None, names: dict[str, Any] | None) -> Any:
    """The four tables as SQLAlchemy ``Table`` objects, in one ``MetaData``.

    Raises:
        ImproperlyConfigured: a key of ``database_table_names`` or
            ``database_table_schemas`` names no table.
    """
    sa = sqlalchemy()
    for setting, given in (("database_table_schemas", schemas), ("database_table_names", names)):
        unknown = set(given or ()) - set(TABLE_KEYS)
        if unknown:
            raise ImproperlyConfigured(
                f"{setting} has unknown keys {sorted(unknown)}; known: {sorted(TABLE_KEYS)}")
    schemas, names = schemas or {}, names or {}
    # Chords live beside the task table unless placed elsewhere.
    schema = {key: schemas.get(key, schemas.get("task") if key.startswith("chord") else None)
              for key in TABLE_KEYS}
    name = {key: names.get(key) or default for key, default in TABLE_KEYS.items()}
    meta = sa.MetaData()
    big_id = sa.Integer().with_variant(sa.BigInteger, "mssql")  # as Celery's models
    task = sa.Table(
        name["task"], meta,
        sa.Column("id", big_id, sa.Sequence("task_id_sequence", schema=schema["task"]),
                  primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(155), unique=True),
        sa.Column("status", sa.String(50)),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("date_done", sa.DateTime, nullable=True, index=True),
        sa.Column("traceback", sa.Text, nullable=True),
        sa.Column("children", sa.LargeBinary, nullable=True),
        # result_extended's columns; Celery's model declares them on the same table
        sa.Column("name", sa.String(155), nullable=True),
        sa.Column("args", sa.LargeBinary, nullable=True),
        sa.Column("kwargs", sa.LargeBinary, nullable=True),
        sa.Column("worker", sa.String(155), nullable=True),
        sa.Column("retries", sa.Integer, nullable=True),
        sa.Column("queue", sa.String(155), nullable=True),
        sa.Column("stamps", sa.LargeBinary, nullable=True),
        schema=schema["task"], sqlite_autoincrement=True)
    group = sa.Table(
        name["group"], meta,
        sa.Column("id", big_id, sa.Sequence("taskset_id_sequence", schema=schema["group"]),
                  primary_key=True, autoincrement=True),
        sa.Column("taskset_id", sa.String(155), unique=True),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("date_done", sa.DateTime, nullable=True, index=True),
        schema=schema["group"], sqlite_autoincrement=True)
    chord = sa.Table(
        name["chord"], meta,
        sa.Column("group_id", sa.String(155), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("done", sa.Integer, nullable=False),
        sa.Column("expires", sa.DateTime, nullable=True, index=True),
        schema=schema["chord"])
    part = sa.Table(
        name["chord_part"], meta,
        sa.Column("group_id", sa.String(155), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("member", sa.LargeBinary, nullable=False),
        schema=schema["chord_part"])
    return meta, task, group, chord, part


class DatabaseBackend(Backend):
    """Celery's SQLAlchemy result backend: PostgreSQL, MySQL/MariaDB, SQLite...

    Settings honoured (``BackendOptions.database``): ``database_url`` (with
    ``result_backend='database'``), ``database_engine_options``,
    ``database_engine_callback``, ``database_short_lived_sessions``,
    ``database_table_schemas``, ``database_table_names`` (also keys ``chord`` and
    ``chord_part`` for celeriac's chord tables), ``database_create_tables_at_setup``.

    Raises:
        MissingDependency: SQLAlchemy or the URL's driver is not installed.
        ImproperlyConfigured: a setting cannot work as given.
    """

    #: expired rows stay until ``cleanup()`` (beat's ``celery.backend_cleanup``)
    supports_autoexpire = False

    def __init__(self, url: str, options: BackendOptions | None = None) -> None:
        options = options or BackendOptions()
        if options.compression:
            # Celery stores these results uncompressed too (and says so): its reader
            # of this table would not expect the marker.
            warnings.warn("result_compression is ignored by the database result backend; "
                          "results are stored uncompressed", stacklevel=2)
            options = replace(options, compression=None)
        super().__init__(url, options)
        db = self.options.database
        self.sql_url = database_url(url, db.get("url"))
        self.dialect = dialect_of(self.sql_url)[0]
        engine_options = db.get("engine_options")
        self.engine = Engine(self.sql_url, {} if engine_options is None else engine_options,
                             engine_callback(db.get("engine_callback")),
                             bool(db.get("short_lived_sessions")))
        (self.metadata, self.task_table, self.group_table, self.chord_table,
         self.part_table) = build_tables(db.get("table_schemas"), db.get("table_names"))
        self.channel = _channel_for(self.task_table)
        self._listener: Listener | None = None
        self._prepared = False
        self._stores = threading.local()  # see _store_connection
        self._upserts: dict[tuple[bool, tuple[str, ...]], Any] = {}  # see _upsert_statement
        # store connections of the parent, kept referenced in a forked child so that
        # collecting them never sends anything on the parent's sockets
        self._inherited: list[Any] = []
        if db.get("create_tables_at_setup", True):
            self._retrying(self._prepare)

    # -- connections --------------------------------------------------------------------
    def _prepare(self) -> None:
        if self._prepared:
            return
        sa = sqlalchemy()
        engine = self.engine.get()
        # Two processes creating the tables at once may both see them missing: the
        # loser's CREATE fails, and its next try finds them.
        for attempt in range(10):
            try:
                self.metadata.create_all(engine)
                break
            except sa.exc.DatabaseError:
                if attempt == 9:
                    raise
                self.engine.get().dispose()
        self._add_missing_columns(engine)
        self._prepared = True

    def _add_missing_columns(self, engine: Any) -> None:
        # Tables made by an older Celery lack later nullable columns (``children``,
        # ``stamps``); Celery 5.7 adds them when it starts, and so does this.
        sa = sqlalchemy()
        inspector = sa.inspect(engine)
        quote = engine.dialect.identifier_preparer
        for table in (self.task_table, self.group_table):
            have = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
            for column in table.columns:
                if column.name in have or not column.nullable:
                    continue
                statement = (f"ALTER TABLE {quote.format_table(table)} ADD COLUMN "
                             f"{quote.quote(column.name)} {column.type.compile(engine.dialect)}")
                try:
                    with engine.begin() as conn:
                        conn.execute(sa.text(statement))
                except sa.exc.DatabaseError as exc:
                    # another process added it meanwhile, or no right to alter the table
                    logger.warning("could not add column %s to %s (%s); run: %s",
                                   column.name, table.name, exc, statement)

    def _begin(self) -> Any:
        """A connection in a transaction, committed when the ``with`` block ends."""
        if not self._prepared:
            self._prepare()
        return self.engine.get().begin()

    def _connect(self) -> Any:
        if not self._prepared:
            self._prepare()
        return self.engine.get().connect()

    # -- encoding columns ------------------------------------------------------------
    def _dump(self, value: Any) -> bytes:
        data = self._serializer.dumps(value)
        return data.encode() if isinstance(data, str) else data

    def _load(self, data: Any, task_id: str) -> Any:
        if data is None:
            return None
        data = bytes(data)
        if data[:len(COMPRESSED_MAGIC)] == COMPRESSED_MAGIC:
            content_type, _, body = data[len(COMPRESSED_MAGIC):].partition(b"\x00")
            data = serialization.decompress(body, content_type.decode())
        try:
            return serialization.loads(data, self._serializer.content_type, self._accept)
        except Exception as exc:
            if data[:1] != b"\x80":  # no pickle either: what it is, nobody knows
                raise BackendError(f"stored result of {task_id} cannot be decoded with the "
                                   f"{self._serializer.name!r} serializer: {exc}") from exc
        try:
            return load_stored_pickle(data)
        except Exception as exc:
            raise BackendError(
                f"stored result of {task_id} is a pickle that is not plain data ({exc}); "
                "it is refused, since unpickling it could run code") from exc

    def _row(self, meta: dict[str, Any]) -> dict[str, Any]:
        state = meta["status"]
        ready = state in states.READY_STATES
        children = meta.get("children")
        row: dict[str, Any] = {
            "status": state,
            "result": self._dump(meta.get("result")),
            # As Celery: a date only once the task is done (cleanup goes by it)
            "date_done": _parse_date(meta.get("date_done")) if ready else None,
            "traceback": meta.get("traceback"),
            "children": self._dump(children) if children else None,
        }
        if self.options.extended and "name" in meta:
            row.update(name=meta.get("name"), args=self._dump(meta.get("args")),
                       kwargs=self._dump(meta.get("kwargs")), worker=meta.get("worker"),
                       retries=meta.get("retries"), queue=meta.get("queue"))
        return row

    def _meta_of(self, row: Any, task_id: str) -> dict[str, Any]:
        m = row._mapping
        meta: dict[str, Any] = {
            "status": m["status"] or states.PENDING,
            "result": self._load(m["result"], task_id),
            "traceback": m["traceback"],
            "children": self._load(m["children"], task_id) or [],
            "date_done": _format_date(m["date_done"]),
            "task_id": task_id,
        }
        if self.options.extended:
            meta.update(name=m["name"], args=self._load(m["args"], task_id),
                        kwargs=self._load(m["kwargs"], task_id), worker=m["worker"],
                        retries=m["retries"], queue=m["queue"])
        return meta

    # -- storage primitives -----------------------------------------------------------
    def _set(self, task_id: str, data: bytes, expires: float | None, ready: bool) -> None:
        # result_expires is kept by cleanup() on date_done, as in Celery: no column here
        row = self._row(self._decode(data))
        if self.dialect == "postgresql":
            self._upsert(task_id, row, ready)
            return
        t = self.task_table
        sa = sqlalchemy()
        with self._begin() as conn:
            if not self._insert_new(conn, t, {"task_id": task_id, **row}):
                # As Celery: a SUCCESS stays, so a repeated run cannot replace it
                conn.execute(t.update().where(
                    t.c.task_id == task_id,
                    sa.or_(t.c.status.is_(None), t.c.status != states.SUCCESS)).values(**row))
            if ready and self.dialect == "postgresql":
                conn.execute(sa.select(sa.func.pg_notify(self.channel, task_id)))

    def _upsert(self, task_id: str, row: dict[str, Any], ready: bool) -> None:
        # PostgreSQL: one statement in autocommit, the upsert and (for a ready state)
        # its NOTIFY in a CTE. A transaction took four round trips (BEGIN, INSERT,
        # NOTIFY, COMMIT), and the store is on every task's path.
        key = (ready, tuple(row))
        stmt = self._upserts.get(key)
        if stmt is None:
            stmt = self._upserts[key] = self._upsert_statement(list(row), ready)
        params = {"task_id": task_id, **row}
        if self.engine.short_lived:  # database_short_lived_sessions: one each time
            with self._connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(stmt, params)
            return
        conn = self._store_connection()
        try:
            conn.execute(stmt, params)
        except BaseException:
            self._stores.conn = None  # the next store (a retry) starts afresh
            conn.invalidate()
            raise

    def _upsert_statement(self, columns: list[str], ready: bool) -> Any:
        # Built once per shape and reused: building it for each store cost about as
        # much as its round trip (SQLAlchemy's coercions and cache key).
        from sqlalchemy.dialects.postgresql import insert

        sa = sqlalchemy()
        t = self.task_table
        values = {name: sa.bindparam(name) for name in ("task_id", *columns)}
        stmt: Any = insert(t).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.task_id], set_={name: stmt.excluded[name] for name in columns},
            # As Celery: a SUCCESS stays, so a repeated run cannot replace it
            where=sa.or_(t.c.status.is_(None), t.c.status != states.SUCCESS))
        if ready:
            stored = stmt.returning(t.c.task_id).cte("stored")
            stmt = sa.select(sa.func.pg_notify(self.channel, stored.c.task_id))
        return stmt

    def _store_connection(self) -> Any:
        # Kept checked out by its thread, in autocommit: checking a pooled connection
        # out and in for each store cost five more round trips (the pre-ping, the
        # isolation level set and reset, the rollback on return).
        local = self._stores
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == current_pid():
            return conn
        if conn is not None:
            self._inherited.append(conn)
        conn = self._connect().execution_options(isolation_level="AUTOCOMMIT")
        local.conn, local.pid = conn, current_pid()
        return conn

    def _select_meta(self, task_id: str) -> dict[str, Any] | None:
        t = self.task_table
        with self._connect() as conn:
            row = conn.execute(t.select().where(t.c.task_id == task_id)).first()
        return None if row is None else self._meta_of(row, task_id)

    def _get(self, task_id: str) -> bytes | None:
        meta = self._select_meta(task_id)
        return None if meta is None else self._encode(meta)

    def _delete(self, task_id: str) -> None:
        t = self.task_table
        with self._begin() as conn:
            conn.execute(t.delete().where(t.c.task_id == task_id))

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        meta = self._retrying(self._select_meta, task_id)
        return meta if meta is not None else _pending(task_id)

    def get_many_metas(self, task_ids: list[str]) -> list[dict[str, Any]]:
        return self._retrying(self._select_many, task_ids)

    def _select_many(self, task_ids: list[str]) -> list[dict[str, Any]]:
        t = self.task_table
        found: dict[str, dict[str, Any]] = {}
        with self._connect() as conn:
            for start in range(0, len(task_ids), MANY_CHUNK):
                ids = task_ids[start:start + MANY_CHUNK]
                for row in conn.execute(t.select().where(t.c.task_id.in_(ids))):
                    found[row.task_id] = self._meta_of(row, row.task_id)
        return [found.get(task_id) or _pending(task_id) for task_id in task_ids]

    def recent_results(self, since: float, limit: int = 1000, cursor: str | None = None
                       ) -> tuple[list[dict[str, Any]], str | None]:
        """See ``Backend.recent_results``; here in ``date_done`` order, the cursor the
        last row's ``date_done`` and ``id``.

        Cost: one range read on ``date_done``, which Celery's table indexes (and only
        ready results have one), ``limit`` rows per call, paged on (date_done, id) so
        that no call reads a row twice.
        """
        return self._retrying(self._select_recent, since, max(1, int(limit)), cursor)

    def _select_recent(self, since: float, limit: int, cursor: str | None
                       ) -> tuple[list[dict[str, Any]], str | None]:
        t = self.task_table
        sa = sqlalchemy()
        # as _row writes it, so the database converts both alike
        query = t.select().where(t.c.date_done >= datetime.fromtimestamp(since, timezone.utc))
        if cursor:
            done, _, last_id = cursor.rpartition("|")
            after = datetime.fromisoformat(done)
            query = query.where(sa.or_(t.c.date_done > after, sa.and_(
                t.c.date_done == after, t.c.id > int(last_id))))
        query = query.order_by(t.c.date_done, t.c.id).limit(limit)
        with self._connect() as conn:
            rows = conn.execute(query).all()
        metas = []
        for row in rows:
            try:
                meta = self._meta_of(row, row.task_id)
            except BackendError:  # one unreadable result does not end the pass
                continue
            if "name" not in meta and row.name is not None:
                # stored by a worker with result_extended, read by an app without it
                meta.update(name=row.name, args=self._load(row.args, row.task_id),
                            kwargs=self._load(row.kwargs, row.task_id), worker=row.worker,
                            retries=row.retries, queue=row.queue)
            metas.append(meta)
        if len(rows) < limit:
            return metas, None
        return metas, f"{rows[-1].date_done.isoformat()}|{rows[-1].id}"

    # -- waiting ----------------------------------------------------------------------
    def _listens(self) -> bool:
        return self.dialect == "postgresql" and self.engine.get().dialect.driver in (
            "psycopg", "psycopg2")

    def _get_listener(self) -> Listener:
        listener = self._listener
        if listener is None or listener.pid != current_pid():
            if not self._prepared:
                self._prepare()
            if listener is not None:
                listener.close()  # the parent's, inherited: left alone
            # A child after fork has no reader thread: it starts its own.
            listener = self._listener = Listener(self.engine, self.channel)
        return listener

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> bytes | None:
        if not self._listens():
            return super()._wait(task_id, timeout, interval)
        return self._get_listener().wait(task_id, timeout, interval,
                                         lambda: self._get(task_id), self._is_ready)

    async def _await(self, task_id: str, timeout: float | None,
                     interval: float) -> bytes | None:
        if not self._listens():
            return await super()._await(task_id, timeout, interval)
        return await self._get_listener().await_ready(
            task_id, timeout, interval, lambda: self._get(task_id), self._is_ready)

    # -- groups -------------------------------------------------------------------------
    def save_group(self, group_id: str, value: Any) -> None:
        """Celery's layout: the serializer's encoding of the group's tuple form."""
        self._retrying(self._save_group, group_id, self._dump(value))

    def _save_group(self, group_id: str, data: bytes) -> None:
        g = self.group_table
        row = {"result": data, "date_done": datetime.now(timezone.utc)}
        with self._begin() as conn:
            if not self._insert_new(conn, g, {"taskset_id": group_id, **row}):
                conn.execute(g.update().where(g.c.taskset_id == group_id).values(**row))

    def restore_group(self, group_id: str) -> Any:
        g = self.group_table

        def read() -> Any:
            with self._connect() as conn:
                return conn.execute(sqlalchemy().select(g.c.result).where(
                    g.c.taskset_id == group_id)).scalar()

        data = self._retrying(read)
        return None if data is None else self._load(data, group_id)

    def delete_group(self, group_id: str) -> None:
        g = self.group_table

        def delete() -> None:
            with self._begin() as conn:
                conn.execute(g.delete().where(g.c.taskset_id == group_id))

        self._retrying(delete)

    # -- chords -------------------------------------------------------------------------
    def set_chord_size(self, group_id: str, size: int) -> None:
        ttl = self.options.chord_ttl
        expires = datetime.now(timezone.utc) + timedelta(seconds=ttl) if ttl else None
        c, p = self.chord_table, self.part_table

        def write() -> None:
            with self._begin() as conn:
                conn.execute(p.delete().where(p.c.group_id == group_id))
                conn.execute(c.delete().where(c.c.group_id == group_id))
                conn.execute(c.insert().values(group_id=group_id, size=size, done=0,
                                               expires=expires))

        self._retrying(write)

    def add_to_chord(self, group_id: str) -> int:
        c = self.chord_table
        sa = sqlalchemy()

        def write() -> int:
            with self._begin() as conn:
                conn.execute(c.update().where(c.c.group_id == group_id).values(
                    size=c.c.size + 1))
                size = conn.execute(sa.select(c.c.size).where(c.c.group_id == group_id)).scalar()
            if size is None:
                raise KeyError(f"no chord {group_id!r} is waiting (finished or unknown)")
            return int(size)

        return self._retrying(write)

    def chord_part_return(self, group_id: str, index: int, task_id: str, state: str,
                          result: Any) -> list[ChordPart] | None:
        member = self._chord_member(index, task_id, state, result)
        members = self._deadlock_retrying(lambda: self._count_part(group_id, index, member))
        return None if members is None else self._chord_parts(members)

    def _count_part(self, group_id: str, index: int, member: bytes) -> list[bytes] | None:
        c, p = self.chord_table, self.part_table
        sa = sqlalchemy()
        with self._begin() as conn:
            if not self._insert_new(conn, p, {"group_id": group_id, "idx": index,
                                              "member": member}):
                return None  # a redelivered part counts once
            # The UPDATE locks the chord's row until commit: the parts' transactions
            # pass one at a time, and exactly one of them sees the last count.
            conn.execute(c.update().where(c.c.group_id == group_id).values(done=c.c.done + 1))
            counts = conn.execute(sa.select(c.c.done, c.c.size).where(
                c.c.group_id == group_id)).first()
            if counts is None:
                # the chord ended (or expired) already: keep nothing of it
                conn.execute(p.delete().where(p.c.group_id == group_id))
                return None
            if counts.done != counts.size:
                return None
            rows = conn.execute(sa.select(p.c.member).where(p.c.group_id == group_id)
                                .order_by(p.c.idx)).scalars().all()
            conn.execute(p.delete().where(p.c.group_id == group_id))
            conn.execute(c.delete().where(c.c.group_id == group_id))
            return [bytes(member) for member in rows]

    def _deadlock_retrying(self, fn: Callable[[], Any]) -> Any:
        # Connection errors as for every call; a deadlock or a serialization failure
        # (the database rolled the transaction back) is tried again too.
        sa = sqlalchemy()
        for attempt in range(20):
            try:
                return self._retrying(fn)
            except sa.exc.DBAPIError as exc:
                if attempt == 19 or not _is_retryable_conflict(exc):
                    raise
        return None  # not reached

    # -- expiry -------------------------------------------------------------------------
    def cleanup(self) -> int:
        """Celery's ``cleanup``: delete results and groups whose ``date_done`` is older
        than ``result_expires``, and chords past their expiry; returns the number of
        results and groups deleted."""
        return int(self._retrying(self._cleanup))

    def _cleanup(self) -> int:
        now = datetime.now(timezone.utc)
        t, g, c, p = self.task_table, self.group_table, self.chord_table, self.part_table
        sa = sqlalchemy()
        deleted = 0
        with self._begin() as conn:
            if self.options.expires:
                before = now - timedelta(seconds=self.options.expires)
                deleted += conn.execute(t.delete().where(t.c.date_done < before)).rowcount
                deleted += conn.execute(g.delete().where(g.c.date_done < before)).rowcount
            stale = sa.select(c.c.group_id).where(c.c.expires < now)
            conn.execute(p.delete().where(p.c.group_id.in_(stale)))
            conn.execute(c.delete().where(c.c.expires < now))
        return deleted

    # -- helpers ------------------------------------------------------------------------
    def _insert_new(self, conn: Any, table: Any, values: dict[str, Any]) -> bool:
        """INSERT the row unless its key exists; whether it was inserted."""
        if self.dialect in ("postgresql", "sqlite"):
            from sqlalchemy.dialects import postgresql, sqlite

            insert: Any = (postgresql if self.dialect == "postgresql" else sqlite).insert
            # RETURNING tells for sure (rowcount does not with an implicit RETURNING)
            key = list(table.primary_key.columns)[0]
            stmt = insert(table).values(**values).on_conflict_do_nothing().returning(key)
            return conn.execute(stmt).first() is not None
        if self.dialect in ("mysql", "mariadb"):
            return bool(conn.execute(table.insert().values(**values).prefix_with("IGNORE"))
                        .rowcount)
        raise ImproperlyConfigured(
            f"the database result backend supports PostgreSQL, MySQL/MariaDB and SQLite; "
            f"not {self.dialect!r}")

    def drop_tables(self) -> None:
        """Drop the four tables (and PostgreSQL's sequences); for tests and tear-down."""
        self.metadata.drop_all(self.engine.get())
        self._prepared = False

    def close(self) -> None:
        conn = getattr(self._stores, "conn", None)
        if conn is not None and self._stores.pid == current_pid():
            conn.close()
        self._stores = threading.local()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.engine.dispose()


def _pending(task_id: str) -> dict[str, Any]:
    return {"status": states.PENDING, "result": None, "traceback": None, "children": [],
            "task_id": task_id}


def _channel_for(table: Any) -> str:
    # One channel per task table, so apps on other tables or schemas of one database
    # do not wake each other; hashed to stay a short identifier.
    digest = hashlib.sha1(f"{table.schema}.{table.name}".encode()).hexdigest()[:12]
    return f"celeriac_results_{digest}"


def _parse_date(value: Any) -> datetime | None:
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return value if isinstance(value, datetime) else datetime.now(timezone.utc)


def _format_date(value: Any) -> str | None:
    # Stored without a zone, in UTC, as Celery writes it
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return str(value.isoformat())


def _is_retryable_conflict(exc: Any) -> bool:
    code = getattr(getattr(exc, "orig", None), "args", (None,))
    pgcode = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(
        getattr(exc, "orig", None), "pgcode", None)
    if pgcode in ("40001", "40P01"):  # serialization failure, deadlock detected
        return True
    return bool(code) and code[0] in (1213, 1205)  # MySQL deadlock, lock wait timeout
