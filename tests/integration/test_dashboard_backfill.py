"""The dashboard fills the gap of a time nobody listened: a real worker runs tasks (no
events, no dashboard), stops; a dashboard then started on a fresh store shows every one
of them, read from the result backend's listing of recent results (``recent_results``).
On Redis (db 3, a ``global_keyprefix`` of its own), the embedded SQLite store and
PostgreSQL (the database backend, a schema of its own); with ``result_extended`` the
rows have the task's name and args, without it they still appear, name unknown."""

from __future__ import annotations

import importlib
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from support import postgresql_answers, require, wait_until

from celeriac.contrib.testing import WorkerProcess
from celeriac.dashboard.ingest import Ingestor
from celeriac.dashboard.store import HistoryStore

REDIS_DB = "redis://127.0.0.1:6379/3"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
TIMEOUT = 60.0
N = 12

PROJECT = '''
from celeriac import Celery

app = Celery({name!r}, broker={broker!r}, backend={backend!r})
app.conf.task_default_queue = {queue!r}
app.conf.event_exchange = {events!r}
app.conf.control_exchange = {control!r}
app.conf.result_extended = {extended!r}
app.conf.result_backend_transport_options = {transport!r}
app.conf.database_table_schemas = {schemas!r}


@app.task
def add(x, y):
    return x + y


@app.task
def boom(word):
    raise ValueError(word)
'''


@pytest.fixture(params=["redis", "sqlite", "postgresql"])
def kind(request: pytest.FixtureRequest, redis_server: str) -> str:
    if request.param == "postgresql":
        pytest.importorskip("psycopg")
        pytest.importorskip("sqlalchemy")
        require("PostgreSQL is not reachable on 127.0.0.1:5432", postgresql_answers())
    return str(request.param)


@pytest.fixture(params=[True, False], ids=["extended", "plain"])
def env(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Iterator[SimpleNamespace]:
    """A project on ``kind``'s result backend, imported here; its worker is not started."""
    tag = uuid.uuid4().hex[:10]
    extended = bool(request.param)
    transport: dict[str, Any] = {}
    schemas: dict[str, str] = {}
    admin: Any = None
    if kind == "redis":
        backend = REDIS_DB
        transport = {"global_keyprefix": f"gap-{tag}:"}
    elif kind == "sqlite":
        backend = f"sqlite:///{tmp_path / 'results.sqlite3'}"
    else:
        import sqlalchemy as sa

        backend = f"db+{PG_URL}"
        schema = f"gap_{tag}"
        admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        schemas = {"task": schema, "group": schema}
    name = f"gapproj_{tag}"
    (tmp_path / f"{name}.py").write_text(PROJECT.format(
        name=name, broker=REDIS_DB, backend=backend, queue=f"q-{tag}",
        events=f"ev-{tag}", control=f"ctl-{tag}", extended=extended,
        transport=transport, schemas=schemas))
    sys.path.insert(0, str(tmp_path))
    proj = importlib.import_module(name)
    try:
        yield SimpleNamespace(kind=kind, proj=proj, app=proj.app, name=name, tmp=tmp_path,
                              extended=extended, tag=tag)
    finally:
        try:
            if kind == "redis":
                client = proj.app.backend._redis.client()
                keys = list(client.scan_iter(match=f"gap-{tag}:*", count=1000))
                if keys:
                    client.delete(*keys)
            proj.app.close()
            if admin is not None:
                import sqlalchemy as sa

                with admin.begin() as conn:
                    conn.execute(sa.text(f"DROP SCHEMA {schemas['task']} CASCADE"))
                admin.dispose()
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop(name, None)


def run_while_nobody_listens(env: SimpleNamespace) -> tuple[list[Any], Any]:
    """N additions and one failure, run to their end by a worker that then stops."""
    node = f"gap-{env.tag}@localhost"
    with WorkerProcess(env.name, cwd=env.tmp, args=["-P", "threads", "-c", "2", "-n", node],
                       ready_timeout=60):
        sent = [env.proj.add.delay(i, i) for i in range(N)]
        failed = env.proj.boom.delay("gone")
        assert [r.get(timeout=TIMEOUT) for r in sent] == [2 * i for i in range(N)]
        with pytest.raises(ValueError):
            failed.get(timeout=TIMEOUT)
    return sent, failed


def test_tasks_done_while_nobody_listened_are_shown(env: SimpleNamespace) -> None:
    sent, failed = run_while_nobody_listens(env)
    store = HistoryStore.open(f"sqlite:///{env.tmp / 'history.sqlite3'}")
    ingestor = Ingestor(env.app, store, enable_events=False, backfill_every=None)
    try:
        ingestor.start()

        def shown() -> bool:
            rows = [store.task(r.id) for r in [*sent, failed]]
            return all(row is not None and row["state"] in ("SUCCESS", "FAILURE")
                       for row in rows)

        assert wait_until(shown, TIMEOUT), ingestor.stats
        for i, result in enumerate(sent):
            row = store.task(result.id)
            assert row is not None
            assert row["state"] == "SUCCESS" and row["result"] == repr(2 * i)
            assert row["succeeded"] is not None and row["timestamp"] is not None
            if env.extended:
                assert row["name"] == f"{env.name}.add" and row["args"] == f"({i}, {i})"
                assert row["kwargs"] == "{}" and row["routing_key"] == f"q-{env.tag}"
            else:
                assert row["name"] is None and row["args"] is None
        bad = store.task(failed.id)
        assert bad is not None and bad["state"] == "FAILURE"
        assert bad["exception"] == "ValueError('gone')"
        assert "ValueError: gone" in (bad["traceback"] or "")
        assert (bad["name"] == f"{env.name}.boom") is env.extended
        assert ingestor.stats["backfilled"] >= N + 1
        # the gap's pass is over: later backfills read nothing more from the backend
        assert wait_until(lambda: ingestor.stats["gap_since"] is None, TIMEOUT)
        rows, _ = store.tasks(limit=100, state="SUCCESS")
        assert {r.id for r in sent} <= {row["uuid"] for row in rows}
    finally:
        ingestor.stop()
        store.close()


def test_recent_results_pages_cover_every_result(env: SimpleNamespace) -> None:
    since = time.time() - 60  # the worker's clock is this machine's
    sent, failed = run_while_nobody_listens(env)
    backend = env.app.backend
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    pages = 0
    while True:
        metas, cursor = backend.recent_results(since, limit=5, cursor=cursor)
        pages += 1
        found.update((meta["task_id"], meta) for meta in metas)
        if cursor is None:
            break
        assert pages < 100, "the pass never ends"
    assert {r.id for r in [*sent, failed]} <= set(found)
    for i, result in enumerate(sent):
        meta = found[result.id]
        assert meta["status"] == "SUCCESS" and meta["result"] == 2 * i
        assert meta["date_done"] is not None
        if env.extended:
            assert meta["name"] == f"{env.name}.add" and list(meta["args"]) == [i, i]
            assert meta["worker"] == f"gap-{env.tag}@localhost"
    assert found[failed.id]["status"] == "FAILURE"
    # nothing is done in the future
    metas, cursor = backend.recent_results(time.time() + 3600, limit=5)
    while cursor is not None:
        more, cursor = backend.recent_results(time.time() + 3600, limit=5, cursor=cursor)
        metas += more
    assert metas == []

