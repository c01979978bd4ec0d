"""Celery 5.7 and celeriac on the same SQLAlchemy result tables in PostgreSQL, both ways.

- a real Celery client reads what a celeriac worker stored in ``celery_taskmeta``;
- a celeriac client reads what a real Celery worker stored there;
- a group saved by one side's client (``celery_tasksetmeta``) is restored by the other.

Each direction has its own queue on Redis db 12 and its own PostgreSQL schema (the
tables and Celery's sequences in it), dropped at the end. The apps are
``apps/database_interop.py``.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support.py
from support import postgresql_answers, require, wait_until  # noqa: E402

from interop_support import APPS_DIR, CeleryWorkerProcess  # noqa: E402

if str(APPS_DIR) not in sys.path:
    sys.path.insert(0, str(APPS_DIR))

T = 30  # seconds a result may take (only reached when something is broken)


@pytest.fixture(scope="module")
def services(redis_server: str) -> None:
    for module in ("celery", "sqlalchemy", "psycopg"):
        try:
            __import__(module)
        except ImportError:
            require(f"the database interop tests need {module!r}: pip install -e '.[dev]'",
                    False)
    require("PostgreSQL is not reachable on 127.0.0.1:5432", postgresql_answers())


def worker_for(kind: str, queue: str, schema: str) -> Any:
    from celeriac.contrib.testing import WorkerProcess

    path = os.pathsep.join(p for p in (str(APPS_DIR), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path, "DB_INTEROP_QUEUE": queue, "DB_INTEROP_SCHEMA": schema}
    node = f"dbi-{kind}-{uuid.uuid4().hex[:6]}@%h"
    args = ["-n", node, "-Q", queue, "-P", "prefork", "-c", "2"]
    if kind == "celery":
        return CeleryWorkerProcess("database_interop:celery_app", cwd=APPS_DIR, env=env,
                                   args=args)
    return WorkerProcess("database_interop:celeriac_app", cwd=APPS_DIR, env=env, args=args,
                         ready_timeout=60)


@pytest.fixture(scope="module", params=[("celery", "celeriac"), ("celeriac", "celery")],
                ids=["celery-client-celeriac-worker", "celeriac-client-celery-worker"])
def pair(request: pytest.FixtureRequest, services: None) -> Iterator[Any]:
    """(client app, app of the worker's kind in this process, the worker's kind)."""
    import database_interop
    import redis
    import sqlalchemy as sa

    sender, runner = request.param
    suffix = uuid.uuid4().hex[:10]
    queue, schema = f"q-dbi-{suffix}", f"dbi_{suffix}"
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    apps = {kind: database_interop.build(kind, queue, schema) for kind in (sender, runner)}
    apps["celeriac"].backend.get_task_meta("create-the-tables")  # before any worker races
    try:
        with worker_for(runner, queue, schema):
            yield apps[sender], apps[runner], runner
    finally:
        for app in apps.values():
            app.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
        client = redis.Redis.from_url(database_interop.BROKER_URL)
        client.delete(queue, *(key.decode() for key in client.keys(f"*{queue}*")))
        client.close()


def test_results_and_extended_fields_cross_over(pair: Any) -> None:
    client, _, runner = pair
    res = client.send_task("dbi.add", (2, 3))
    assert res.get(timeout=T) == 5
    assert res.state == "SUCCESS" and res.date_done is not None
    assert res.name == "dbi.add" and list(res.args) == [2, 3] and res.kwargs == {}
    assert res.worker and res.worker.startswith(f"dbi-{runner}-")
    assert res.queue == client.conf.task_default_queue


def test_a_failure_is_raised_with_its_own_type(pair: Any) -> None:
    import database_interop

    client, _, _ = pair
    res = client.send_task("dbi.fail", ("boom",))
    with pytest.raises(database_interop.CustomError, match="boom"):
        res.get(timeout=T)
    assert res.state == "FAILURE"
    assert "CustomError" in res.traceback


def test_a_custom_state_and_its_meta_cross_over(pair: Any, tmp_path: Path) -> None:
    client, _, _ = pair
    go = tmp_path / "go"
    res = client.send_task("dbi.progress", (str(go),))
    assert wait_until(lambda: res.state == "PROGRESS", timeout=T)
    assert res.info == {"current": 1, "total": 2}
    go.touch()
    assert res.get(timeout=T) == "finished"


def test_a_group_saved_by_one_side_is_restored_by_the_other(pair: Any) -> None:
    client, other, _ = pair
    sig = client.signature("dbi.add")
    header = [sig.clone(args=(i, i)) for i in range(3)]
    if client.__module__.startswith("celery."):
        from celery import group as client_group
    else:
        from celeriac import group as client_group
    res = client_group(header).apply_async()
    assert res.get(timeout=T) == [0, 2, 4]
    res.save()
    if other.__module__.startswith("celery."):
        from celery.result import GroupResult
    else:
        from celeriac.result import GroupResult  # type: ignore[assignment]
    restored = GroupResult.restore(res.id, app=other)
    assert restored is not None
    assert [r.id for r in restored.results] == [r.id for r in res.results]
    assert restored.get(timeout=T) == [0, 2, 4]


def test_a_chord_sent_by_a_celery_client_completes_on_a_celeriac_worker(pair: Any) -> None:
    # Celery's client sends celery.chord_unlock beside a chord's header on this backend;
    # a celeriac worker runs it: it polls the header and sends the body.
    client, _, runner = pair
    if runner != "celeriac":
        pytest.skip("a celeriac client's chord counts its parts in the database instead")
    from celery import chord

    add, tsum = client.signature("dbi.add"), client.signature("dbi.tsum")
    res = chord([add.clone(args=(i, i)) for i in range(4)])(tsum)
    assert res.get(timeout=T) == 12
    failing = chord([add.clone(args=(1, 1)), client.signature("dbi.fail", args=("x",))])(tsum)
    # the body fails with a ChordError naming the failed member
    assert wait_until(lambda: failing.state == "FAILURE", timeout=T)
    assert "Dependency" in str(failing.result) and "CustomError" in str(failing.result)
