"""The SQLAlchemy result backend's quick parts, on SQLite files (no server): URLs,
settings, the pickle guard, Celery's table layout, cleanup, beat's default entry."""

from __future__ import annotations

import os
import pickle
import sqlite3
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy")

from celeriac import Celery  # noqa: E402
from celeriac.backends import connect  # noqa: E402
from celeriac.backends.base import BackendOptions, is_connection_error  # noqa: E402
from celeriac.backends.database import DatabaseBackend, load_stored_pickle  # noqa: E402
from celeriac.beat.scheduler import Scheduler  # noqa: E402
from celeriac.exceptions import BackendError, ImproperlyConfigured, MissingDependency  # noqa: E402
from celeriac.utils.sql import database_url  # noqa: E402


def backend(path: Path, **database: Any) -> DatabaseBackend:
    b = connect(f"db+sqlite:///{path}", BackendOptions(database=database))
    assert isinstance(b, DatabaseBackend)
    return b


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


class Planted(Exception):
    pass


def _planted_call(path: str) -> None:
    Path(path).write_text("ran")


class RunsCode:
    """What an attacker would pickle: unpickling it calls a function."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (_planted_call, (self.path,))


def test_urls_strip_db_and_take_database_url_for_the_alias() -> None:
    assert database_url("db+postgresql+psycopg://u@h/d", None) == "postgresql+psycopg://u@h/d"
    # Celery's result_backend='database' with the database_url setting
    assert database_url("database", "mysql+pymysql://root@h/test") == "mysql+pymysql://root@h/test"
    assert database_url("database", "db+sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(ImproperlyConfigured, match="database_url"):
        database_url("database", None)


def test_the_database_alias_reads_database_url(tmp_path: Path) -> None:
    app = Celery("dbalias", broker="memory://", backend="database")
    app.conf.database_url = f"sqlite:///{tmp_path / 'alias.db'}"
    try:
        app.backend.mark_as_done("t1", 3)
        assert app.backend.get_task_meta("t1")["result"] == 3
        assert "celery_taskmeta" in tables(tmp_path / "alias.db")
    finally:
        app.close()


def test_celerys_tables_are_created_at_setup_or_at_first_use(tmp_path: Path) -> None:
    early = backend(tmp_path / "early.db")
    assert {"celery_taskmeta", "celery_tasksetmeta", "celeriac_chords",
            "celeriac_chord_parts"} <= tables(tmp_path / "early.db")
    early.close()
    # database_create_tables_at_setup=False: nothing until the first use
    app = Celery("dblate", broker="memory://", backend=f"db+sqlite:///{tmp_path / 'late.db'}")
    app.conf.database_create_tables_at_setup = False
    late = app.backend
    assert "celery_taskmeta" not in tables(tmp_path / "late.db")
    late.mark_as_done("t", 1)
    assert "celery_taskmeta" in tables(tmp_path / "late.db")
    late.close()


def test_celerys_columns(tmp_path: Path) -> None:
    b = backend(tmp_path / "cols.db")
    with sqlite3.connect(tmp_path / "cols.db") as conn:
        task = [r[1] for r in conn.execute("PRAGMA table_info(celery_taskmeta)")]
        group = [r[1] for r in conn.execute("PRAGMA table_info(celery_tasksetmeta)")]
    assert task == ["id", "task_id", "status", "result", "date_done", "traceback", "children",
                    "name", "args", "kwargs", "worker", "retries", "queue", "stamps"]
    assert group == ["id", "taskset_id", "result", "date_done"]
    b.close()


def test_table_names_and_unknown_keys(tmp_path: Path) -> None:
    # database_table_names: Celery's two keys, and celeriac's chord tables
    names = {"task": "my_tasks", "group": "my_groups", "chord": "my_chords",
             "chord_part": "my_parts"}
    b = backend(tmp_path / "names.db", table_names=names)
    b.mark_as_done("t", 1)
    b.save_group("g", [["g", None], []])
    assert set(names.values()) <= tables(tmp_path / "names.db")
    assert "celery_taskmeta" not in tables(tmp_path / "names.db")
    b.close()
    with pytest.raises(ImproperlyConfigured, match="database_table_names.*'tasks'"):
        backend(tmp_path / "bad.db", table_names={"tasks": "x"})
    with pytest.raises(ImproperlyConfigured, match="database_table_schemas"):
        backend(tmp_path / "bad.db", table_schemas={"taskset": "x"})


def test_table_schemas_place_the_tables(tmp_path: Path) -> None:
    # On SQLite a schema is an attached database: the tables land in that file.
    from sqlalchemy import event

    other = tmp_path / "other.db"

    def attach(engine: Any) -> None:
        @event.listens_for(engine, "connect")
        def on_connect(dbapi_conn: Any, record: Any) -> None:
            dbapi_conn.execute(f"ATTACH DATABASE '{other}' AS results")

    b = backend(tmp_path / "main.db", table_schemas={"task": "results", "group": "results"},
                engine_callback=attach)
    b.mark_as_done("t", 5)
    assert b.get_task_meta("t")["result"] == 5
    assert {"celery_taskmeta", "celery_tasksetmeta", "celeriac_chords"} <= tables(other)
    assert "celery_taskmeta" not in tables(tmp_path / "main.db")
    b.close()


def test_engine_options_callback_and_short_lived_sessions(tmp_path: Path) -> None:
    from sqlalchemy.pool import NullPool

    seen: list[Any] = []
    # the default of database_engine_options, as in Celery
    app = Celery("dbopts", broker="memory://", backend=f"db+sqlite:///{tmp_path / 'o.db'}")
    assert app.conf.database_engine_options == {"pool_pre_ping": True, "pool_recycle": 3600}
    app.conf.database_engine_callback = seen.append
    engine = app.backend.engine.get()
    assert engine.pool._pre_ping and engine.pool._recycle == 3600 and seen == [engine]
    app.close()
    short = Celery("dbshort", broker="memory://", backend=f"db+sqlite:///{tmp_path / 's.db'}")
    short.conf.database_short_lived_sessions = True
    short.conf.database_engine_options = {"pool_pre_ping": True, "max_overflow": 3}
    assert isinstance(short.backend.engine.get().pool, NullPool)  # a connection per use
    short.backend.mark_as_done("t", 1)
    assert short.backend.get_task_meta("t")["result"] == 1
    short.close()
    # a 'module:name' string is loaded; anything not callable is refused
    named = backend(tmp_path / "n.db", engine_callback="builtins:repr")
    named.close()
    with pytest.raises(ImproperlyConfigured, match="database_engine_callback"):
        backend(tmp_path / "n.db", engine_callback=42)


def test_a_missing_driver_names_the_extra(tmp_path: Path) -> None:
    with pytest.raises(MissingDependency, match=r"celeriac\[mysql\]") as info:
        connect("db+mysql+mysqldb://root:secret@127.0.0.1/test", BackendOptions())
    assert "secret" not in str(info.value)
    with pytest.raises(MissingDependency, match=r"celeriac\[postgresql\]"):
        connect("db+postgresql+pg8000://u@127.0.0.1/test", BackendOptions())


def test_result_compression_is_ignored_with_a_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = connect(f"db+sqlite:///{tmp_path / 'z.db'}", BackendOptions(compression="gzip"))
    assert any("result_compression" in str(w.message) for w in caught)
    b.mark_as_done("t", "x" * 1000)
    with sqlite3.connect(tmp_path / "z.db") as conn:
        (stored,) = conn.execute("SELECT result FROM celery_taskmeta").fetchone()
    assert stored == b'"' + b"x" * 1000 + b'"'  # the serializer's bytes, as Celery writes
    b.close()


def test_a_planted_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    b = backend(path)
    marker = tmp_path / "pwned"
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO celery_taskmeta (task_id, status, result) VALUES (?, ?, ?)",
                     ("evil", "SUCCESS", pickle.dumps(RunsCode(str(marker)))))
        # a row Celery < 5.7 wrote with PickleType: plain values and a datetime
        legacy = {"n": 1, "when": datetime(2026, 1, 2, tzinfo=timezone.utc), "s": {1, 2}}
        conn.execute("INSERT INTO celery_taskmeta (task_id, status, result) VALUES (?, ?, ?)",
                     ("old", "SUCCESS", pickle.dumps(legacy, protocol=2)))
    with pytest.raises(BackendError, match="evil.*refused"):
        b.get_task_meta("evil")
    assert not marker.exists()
    assert b.get_task_meta("old")["result"] == legacy
    with pytest.raises(pickle.UnpicklingError, match="Planted"):
        load_stored_pickle(pickle.dumps(Planted("x")))
    b.close()


def test_extended_columns_hold_serialized_args(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    b = connect(f"db+sqlite:///{path}", BackendOptions(extended=True))

    class Request:
        task, args, kwargs, hostname, retries = "proj.add", [1, 2], {"z": 3}, "w1@h", 2
        delivery_info = {"routing_key": "q1"}
        id = group = parent_id = None
        children: list[Any] = []

    b.store_result("t", 3, "SUCCESS", request=Request())
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT name, args, kwargs, worker, retries, queue "
                           "FROM celery_taskmeta").fetchone()
    assert row == ("proj.add", b"[1, 2]", b'{"z": 3}', "w1@h", 2, "q1")
    meta = b.get_task_meta("t")
    assert (meta["name"], meta["args"], meta["kwargs"], meta["queue"]) == (
        "proj.add", [1, 2], {"z": 3}, "q1")
    b.close()


def test_a_success_is_never_replaced(tmp_path: Path) -> None:
    b = backend(tmp_path / "s.db")
    b.mark_as_done("t", 1)
    b.mark_as_failure("t", ValueError("late"))  # a repeated run, as Celery ignores it
    assert b.get_task_meta("t")["status"] == "SUCCESS"
    b.mark_as_started("u")
    assert b.get_task_meta("u")["date_done"] is None  # a date only once done, as Celery
    b.mark_as_done("u", 2)
    assert b.get_task_meta("u")["result"] == 2
    b.close()


def test_cleanup_deletes_what_result_expires_ended(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    b = connect(f"db+sqlite:///{path}", BackendOptions(expires=3600))
    b.mark_as_done("old", 1)
    b.mark_as_done("new", 2)
    b.save_group("g-old", [["g-old", None], []])
    b.set_chord_size("chord-old", 2)
    b.chord_part_return("chord-old", 0, "p0", "SUCCESS", 1)
    past = datetime.now(timezone.utc) - timedelta(hours=2)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE celery_taskmeta SET date_done = ? WHERE task_id = 'old'",
                     (past.replace(tzinfo=None).isoformat(sep=" "),))
        conn.execute("UPDATE celery_tasksetmeta SET date_done = ?",
                     (past.replace(tzinfo=None).isoformat(sep=" "),))
        conn.execute("UPDATE celeriac_chords SET expires = ?",
                     (past.replace(tzinfo=None).isoformat(sep=" "),))
    assert b.cleanup() == 2
    assert b.get_task_meta("old")["status"] == "PENDING"
    assert b.get_task_meta("new")["result"] == 2
    assert b.restore_group("g-old") is None
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM celeriac_chord_parts").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM celeriac_chords").fetchone() == (0,)
    b.close()


def test_beat_adds_the_daily_backend_cleanup_where_results_stay(tmp_path: Path) -> None:
    app = Celery("dbbeat", broker="memory://", backend=f"db+sqlite:///{tmp_path / 'b.db'}")
    try:
        assert "celery.backend_cleanup" in app.tasks
        scheduler = Scheduler(app)
        scheduler.setup()
        entry = scheduler.entries["celery.backend_cleanup"]
        assert entry.task == "celery.backend_cleanup"
        assert entry.options == {"expires": 12 * 3600}
        assert (entry.schedule.hour, entry.schedule.minute) == ({4}, {0})
        # the task empties the table of what expired
        app.backend.mark_as_done("t", 1)
        app.tasks["celery.backend_cleanup"]()
    finally:
        app.close()
    # result_expires=None: nothing expires, nothing to clean
    app = Celery("dbbeat2", broker="memory://", backend=f"db+sqlite:///{tmp_path / 'b.db'}")
    app.conf.result_expires = None
    scheduler = Scheduler(app)
    scheduler.setup()
    assert "celery.backend_cleanup" not in scheduler.entries
    app.close()
    # a store that expires results itself (celeriac's SQLite file) needs none
    app = Celery("dbbeat3", broker="memory://", backend=f"sqlite:///{tmp_path / 'e.db'}")
    scheduler = Scheduler(app)
    scheduler.setup()
    assert "celery.backend_cleanup" not in scheduler.entries
    app.close()


def test_sqlalchemy_and_driver_connection_errors_are_retried() -> None:
    import sqlalchemy.exc as sa_exc

    psycopg = pytest.importorskip("psycopg")
    dropped = sa_exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("closed"))
    assert is_connection_error(dropped)
    invalidated = sa_exc.DBAPIError("SELECT 1", {}, Exception("x"), connection_invalidated=True)
    assert is_connection_error(invalidated)
    assert not is_connection_error(
        sa_exc.ProgrammingError("SELECT", {}, psycopg.ProgrammingError("syntax")))
    assert not is_connection_error(sa_exc.IntegrityError("INSERT", {}, Exception("dup")))


def test_a_forked_child_gets_connections_of_its_own(tmp_path: Path) -> None:
    b = backend(tmp_path / "f.db")
    b.mark_as_done("parent", 1)
    parent_engine = b.engine.get()
    pool_before = parent_engine.pool
    pid = os.fork()
    if pid == 0:  # the child: store through the inherited backend, then leave
        try:
            b.mark_as_done("child", 2)
            code = 0 if b.engine.get().pool is not pool_before else 3
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b.get_task_meta("child")["result"] == 2
    assert b.engine.get().pool is pool_before  # the parent's pool was left alone
    b.close()


def test_tables_of_an_older_celery_get_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # Celery 5.3's celery_taskmeta: no children, stamps
        conn.execute("CREATE TABLE celery_taskmeta (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "task_id VARCHAR(155) UNIQUE, status VARCHAR(50), result BLOB, "
                     "date_done DATETIME, traceback TEXT)")
        conn.execute("INSERT INTO celery_taskmeta (task_id, status, result) VALUES "
                     "('before', 'SUCCESS', ?)", (pickle.dumps(7),))
    b = backend(path)
    with sqlite3.connect(path) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(celery_taskmeta)")]
    assert {"children", "name", "args", "stamps"} <= set(columns)
    assert b.get_task_meta("before")["result"] == 7  # its PickleType value, read safely
    b.mark_as_done("after", 8)
    assert b.get_task_meta("after")["result"] == 8
    b.close()


def test_a_url_without_a_driver_gets_the_installed_one() -> None:
    # celeriac[postgresql] installs psycopg 3 only; SQLAlchemy's default for a bare
    # postgresql:// would be psycopg2
    pytest.importorskip("psycopg")
    from celeriac.utils.sql import with_driver

    assert with_driver("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert with_driver("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert with_driver("sqlite:///r.db") == "sqlite:///r.db"
