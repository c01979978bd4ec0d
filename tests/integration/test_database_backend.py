"""The SQLAlchemy result backend against real databases, with a real worker per database.

PostgreSQL (psycopg 3 and psycopg2), MariaDB (PyMySQL) and an SQLite file. Each module
run has its own PostgreSQL schema or MariaDB table names (uuid-suffixed), dropped at
the end; the broker is an SQLite file, so only the result store is under test.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from support import free_port, mysql_answers, postgresql_answers, require, wait_until

from celeriac.canvas import chord, group
from celeriac.contrib.testing import WorkerProcess
from celeriac.result import GroupResult

pytest.importorskip("sqlalchemy")

T = 30  # seconds a result may take (reached only when something is broken)

PG = "postgresql://postgres@127.0.0.1:5432/test"
MARIADB = "mysql+pymysql://root@127.0.0.1:3306/test"

PROJECT = '''
import os
import time
from pathlib import Path

from celeriac import Celery

app = Celery("{name}", broker={broker!r}, backend={backend!r})
app.conf.task_default_queue = {queue!r}
app.conf.worker_heartbeat_interval = 0.5
app.conf.result_extended = True
app.conf.database_table_schemas = {schemas!r}
app.conf.database_table_names = {names!r}
# The worker's sessions carry a name of their own (a test ends them), and no pre-ping:
# a dead pooled connection must be noticed by the store's retry.
app.conf.database_engine_options = {{
    "pool_pre_ping": "DB_TEST_ROLE" not in os.environ,
    "connect_args": {connect_args!r} if "DB_TEST_ROLE" in os.environ else {{}},
}}


class CustomError(Exception):
    """Importable by the client, so it re-raises it by type."""


def wait_for(path):
    deadline = time.monotonic() + 30
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@app.task
def add(x, y):
    return x + y


@app.task
def fail(message):
    raise CustomError(message)


@app.task(bind=True)
def progress(self, go):
    self.update_state(state="PROGRESS", meta={{"step": 1}})
    wait_for(go)
    return "done"


@app.task
def tsum(values):
    return sum(values)


@app.task
def held(go, value):
    wait_for(go)
    return value
'''

KINDS = ["postgresql+psycopg", "postgresql+psycopg2", "mariadb", "sqlite"]


def _sqlalchemy_url(kind: str, tmp: Path) -> str:
    if kind.startswith("postgresql"):
        return PG.replace("postgresql://", f"{kind}://")
    if kind == "mariadb":
        return MARIADB
    return f"sqlite:///{tmp / 'results.sqlite3'}"


@pytest.fixture(scope="module", params=KINDS)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[SimpleNamespace]:
    """A project on one database, its client app (imported here) and a running worker."""
    import sqlalchemy as sa

    kind = request.param
    if kind.startswith("postgresql"):
        pytest.importorskip(kind.split("+")[1])
        require("PostgreSQL is not reachable on 127.0.0.1:5432", postgresql_answers())
    elif kind == "mariadb":
        pytest.importorskip("pymysql")
        require("MariaDB is not reachable on 127.0.0.1:3306", mysql_answers())
    tmp = tmp_path_factory.mktemp(kind.replace("+", "-"))
    suffix = uuid.uuid4().hex[:10]
    url = _sqlalchemy_url(kind, tmp)
    admin = sa.create_engine(url)
    schemas: dict[str, str] = {}
    names: dict[str, str] = {}
    if kind.startswith("postgresql"):
        schema = f"dbt_{suffix}"
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        schemas = {"task": schema, "group": schema}
    elif kind == "mariadb":
        names = {"task": f"taskmeta_{suffix}", "group": f"tasksetmeta_{suffix}",
                 "chord": f"chords_{suffix}", "chord_part": f"chord_parts_{suffix}"}
    name = f"dbproj_{suffix}"
    role = f"celeriac-test-{suffix}"
    (tmp / f"{name}.py").write_text(PROJECT.format(
        name=name, broker=f"sqlite:///{tmp / 'broker.sqlite3'}", backend=f"db+{url}",
        queue=f"q-{suffix}", schemas=schemas, names=names,
        connect_args={"application_name": role} if kind.startswith("postgresql") else {}))
    sys.path.insert(0, str(tmp))
    proj = importlib.import_module(name)
    pool = ["-P", "prefork", "-c", "2"] if kind == "postgresql+psycopg" else [
        "-P", "threads", "-c", "4"]
    worker = WorkerProcess(name, cwd=tmp, args=pool, env={"DB_TEST_ROLE": role},
                           ready_timeout=60)
    try:
        with worker:
            yield SimpleNamespace(kind=kind, proj=proj, app=proj.app, tmp=tmp, name=name,
                                  role=role, worker=worker, admin=admin, url=url)
    finally:
        backend = proj.app.backend
        try:
            if kind.startswith("postgresql"):
                proj.app.close()
                with admin.begin() as conn:
                    conn.execute(sa.text(f"DROP SCHEMA {schemas['task']} CASCADE"))
            else:
                backend.drop_tables()
                proj.app.close()
        finally:
            admin.dispose()
            sys.path.remove(str(tmp))
            sys.modules.pop(name, None)


def test_results_failures_and_extended_fields(env: SimpleNamespace) -> None:
    proj = env.proj
    res = proj.add.delay(2, 3)
    assert res.get(timeout=T) == 5
    assert (res.name, res.args, res.kwargs) == (proj.add.name, [2, 3], {})
    assert res.worker and res.queue == proj.app.conf.task_default_queue
    assert res.date_done is not None
    failed = proj.fail.delay("boom")
    with pytest.raises(proj.CustomError, match="boom"):
        failed.get(timeout=T)
    assert failed.state == "FAILURE" and "CustomError" in failed.traceback
    metas = proj.app.backend.get_many_metas([res.id, "never-sent", failed.id])
    assert [m["status"] for m in metas] == ["SUCCESS", "PENDING", "FAILURE"]
    res.forget()
    assert proj.app.AsyncResult(res.id).state == "PENDING"


def test_a_custom_state_is_seen_while_the_task_runs(env: SimpleNamespace) -> None:
    go = env.tmp / f"go-{uuid.uuid4().hex}"
    res = env.proj.progress.delay(str(go))
    assert wait_until(lambda: res.state == "PROGRESS", timeout=T)
    assert res.info == {"step": 1}
    go.touch()
    assert res.get(timeout=T) == "done"


def test_groups_saved_and_chords_counted_in_the_database(env: SimpleNamespace) -> None:
    proj = env.proj
    res = group(proj.add.s(i, i) for i in range(4))()
    assert res.get(timeout=T) == [0, 2, 4, 6]
    res.save()
    restored = GroupResult.restore(res.id, app=proj.app)
    assert restored is not None and [r.id for r in restored.results] == [r.id for r in res.results]
    assert restored.get(timeout=T) == [0, 2, 4, 6]
    proj.app.backend.delete_group(res.id)
    assert GroupResult.restore(res.id, app=proj.app) is None
    body = chord(proj.add.s(i, i) for i in range(5))(proj.tsum.s())
    assert body.get(timeout=T) == 20


def test_racing_chord_parts_count_once_and_one_caller_gets_them(env: SimpleNamespace) -> None:
    backend = env.app.backend
    group_id = f"race-{uuid.uuid4().hex}"
    size = 24
    backend.set_chord_size(group_id, size)
    # every part delivered twice (a redelivery), in a shuffled order, by 8 threads
    calls = [(i, f"part-{i}") for i in range(size)] * 2
    random.shuffle(calls)
    start = threading.Barrier(8)
    got: list[Any] = []
    errors: list[BaseException] = []

    def run(share: list[tuple[int, str]]) -> None:
        start.wait()
        for index, task_id in share:
            try:
                parts = backend.chord_part_return(group_id, index, task_id, "SUCCESS", index)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                continue
            if parts is not None:
                got.append(parts)

    threads = [threading.Thread(target=run, args=(calls[n::8],)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(got) == 1
    assert [(p.task_id, p.result) for p in got[0]] == [(f"part-{i}", i) for i in range(size)]


def test_cleanup_command_deletes_expired_results(env: SimpleNamespace) -> None:
    backend = env.app.backend
    old, fresh = f"old-{uuid.uuid4().hex}", f"fresh-{uuid.uuid4().hex}"
    backend.mark_as_done(old, 1)
    backend.mark_as_done(fresh, 2)
    t = backend.task_table
    past = datetime.now(timezone.utc) - timedelta(days=3)  # result_expires is a day
    with backend.engine.get().begin() as conn:
        conn.execute(t.update().where(t.c.task_id == old).values(date_done=past))
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", env.name, "cleanup"],
                          cwd=env.tmp, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Deleted 1 expired result(s)." in done.stdout
    assert backend.get_task_meta(old)["status"] == "PENDING"
    assert backend.get_task_meta(fresh)["result"] == 2


def test_get_is_woken_by_notify_on_postgresql(env: SimpleNamespace) -> None:
    if not env.kind.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    from celeriac.backends import connect
    from celeriac.backends.base import BackendOptions

    waiter = env.app.backend
    options = BackendOptions.from_conf(env.app.conf)
    writer = connect(f"db+{env.url}", options)
    try:
        task_id = f"notify-{uuid.uuid4().hex}"
        got: dict[str, Any] = {}
        # interval=T: the waiter reads the row again only after T seconds without news,
        # so the result arriving sooner is the notification's doing
        thread = threading.Thread(target=lambda: got.setdefault(
            "meta", waiter.wait_for(task_id, timeout=T, interval=T)))
        thread.start()
        # the waiter is registered (its first read found nothing): now the result comes
        assert wait_until(lambda: waiter._listener is not None
                          and task_id in waiter._listener.slots, timeout=T)
        writer.mark_as_done(task_id, 42)
        thread.join()
        assert got["meta"]["result"] == 42
        assert task_id in waiter._listener.notified  # woken by the NOTIFY, not a poll

        async_id = f"notify-async-{uuid.uuid4().hex}"

        async def wait() -> Any:
            pending = asyncio.ensure_future(waiter.await_for(async_id, timeout=T, interval=T))
            while async_id not in waiter._listener.slots:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(writer.mark_as_done, async_id, 43)
            return await pending

        assert asyncio.run(wait())["result"] == 43
        assert async_id in waiter._listener.notified
    finally:
        writer.close()


def test_a_forked_child_listens_on_a_connection_of_its_own(env: SimpleNamespace) -> None:
    if not env.kind.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    from celeriac.backends import connect
    from celeriac.backends.base import BackendOptions

    waiter = env.app.backend
    writer = connect(f"db+{env.url}", BackendOptions.from_conf(env.app.conf))
    try:
        warm = f"warm-{uuid.uuid4().hex}"
        writer.mark_as_done(warm, 0)
        waiter.wait_for(warm, timeout=T)
        listener = waiter._get_listener()
        conn = listener.conn
        child_id = f"child-{uuid.uuid4().hex}"
        pid = os.fork()
        if pid == 0:  # the child waits through a listener (and connections) of its own
            code = 1
            try:
                meta = waiter.wait_for(child_id, timeout=T)
                code = 0 if meta["result"] == 7 and waiter._listener is not listener else 2
            finally:
                os._exit(code)
        writer.mark_as_done(child_id, 7)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # the parent's LISTEN connection was not closed by the child: it still hears.
        # A waiter reads the row once after joining, so a store landing just then is
        # found by that read, not by the notification: a few tries settle it.
        heard = False
        for _ in range(3):
            after = f"after-{uuid.uuid4().hex}"
            got: dict[str, Any] = {}
            thread = threading.Thread(target=lambda: got.setdefault(
                "meta", waiter.wait_for(after, timeout=T, interval=T)))
            thread.start()
            assert wait_until(lambda: after in listener.slots, timeout=T)
            writer.mark_as_done(after, 8)
            thread.join()
            assert got["meta"]["result"] == 8
            if after in listener.notified:
                heard = True
                break
        assert heard and listener.conn is conn
    finally:
        writer.close()


def test_results_are_stored_when_the_database_ends_the_workers_sessions(
        env: SimpleNamespace) -> None:
    if env.kind != "postgresql+psycopg":
        pytest.skip("ends sessions with pg_terminate_backend (the prefork worker's)")
    import sqlalchemy as sa

    proj = env.proj
    # the pool processes have connected: each stored a result
    assert group(proj.add.s(i, 1) for i in range(4))().get(timeout=T) == [1, 2, 3, 4]
    go = env.tmp / f"go-{uuid.uuid4().hex}"
    held = [proj.held.delay(str(go), i) for i in range(6)]

    def sessions() -> int:
        with env.admin.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :r"),
                {"r": env.role}).scalar())

    assert sessions() > 0
    with env.admin.connect() as conn:
        ended = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = :r) AS t"), {"r": env.role}).scalar()
    assert ended and wait_until(lambda: sessions() == 0, timeout=T)
    go.touch()
    assert [r.get(timeout=T) for r in held] == list(range(6))
    assert "OperationalError" not in env.worker.output  # no store gave up


def _run_worker(folder: Path, backend: str, settings: str = "") -> str:
    (folder / "dbstart.py").write_text(
        "from celeriac import Celery\n"
        f"app = Celery('dbstart', broker='sqlite:///{folder}/b.sqlite3', backend={backend!r})\n"
        f"{settings}\n")
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", "dbstart", "worker",
                           "-c", "1"], cwd=folder, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and " ready." not in output, output
    return output


def test_start_up_reports_a_wrong_password_unreachable_server_or_missing_driver(
        tmp_path: Path) -> None:
    require("MariaDB is not reachable on 127.0.0.1:3306", mysql_answers())
    wrong = "wrong-pw-5c1f"
    output = _run_worker(tmp_path, f"db+mysql+pymysql://root:{wrong}@127.0.0.1:3306/test")
    (line,) = [ln for ln in output.splitlines() if "Cannot start" in ln]
    assert "result backend db+mysql+pymysql://root:**@127.0.0.1:3306/test" in line
    assert "Access denied" in line
    assert wrong not in output
    closed = free_port()
    output = _run_worker(tmp_path, f"db+postgresql+psycopg://postgres:{wrong}@127.0.0.1:"
                         f"{closed}/test", "app.conf.broker_connection_max_retries = 1")
    (line,) = [ln for ln in output.splitlines() if "Cannot start" in ln]
    assert f"postgres:**@127.0.0.1:{closed}/test: connection refused" in line
    assert wrong not in output
    output = _run_worker(tmp_path, f"db+mysql+mysqldb://root:{wrong}@127.0.0.1:3306/test")
    (line,) = [ln for ln in output.splitlines() if "Cannot start" in ln]
    assert "pip install 'celeriac[mysql]'" in line and wrong not in output


def test_the_readme_sql_example_runs(tmp_path: Path) -> None:
    # The README's example as written: PostgreSQL as the broker and for results.
    require("PostgreSQL is not reachable on 127.0.0.1:5432", postgresql_answers())
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- sql-example -->", 1)[1].split("```python\n", 1)[1]
    (tmp_path / "pg_tasks.py").write_text(block.split("```", 1)[0])
    with WorkerProcess("pg_tasks", cwd=tmp_path, args=["-P", "solo"]):
        done = subprocess.run(
            [sys.executable, "-c", "from pg_tasks import add; r = add.delay(2, 3); "
             "print(r.get(timeout=10)); r.forget()"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "5", done.stderr
