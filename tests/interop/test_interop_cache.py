"""Celery 5 and celeriac with their results in memcached, both ways.

- a real Celery client (``backend='cache+memcached://...'``) sends to a celeriac worker;
- a celeriac client sends to a real Celery worker;
- both read the groups the other saved;
- what python-memcached writes (the client of Celery before 5.7) reads in celeriac and
  the reverse, except a pickled value, which celeriac refuses without unpickling it.

The broker is Redis db 12 with a queue of each direction's own; results and groups are
uuid keys on the shared memcached, deleted at the end (nothing is flushed). The apps are
``apps/cache_interop.py``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support.py
from support import answers, require  # noqa: E402

from interop_support import APPS_DIR, CeleryWorkerProcess  # noqa: E402

if str(APPS_DIR) not in sys.path:
    sys.path.insert(0, str(APPS_DIR))

T = 30  # seconds a result may take (only reached when something is broken)


@pytest.fixture(scope="module")
def services() -> Iterator[list[str]]:
    """The keys the module's tests wrote to memcached: deleted at the end."""
    for module in ("celery", "redis", "pymemcache", "memcache"):
        try:
            __import__(module)
        except ImportError:
            require(f"the cache interop tests need {module!r}: pip install -e '.[dev]'",
                    False)
    require("Redis is not reachable on 127.0.0.1:6379", answers(6379, b"PING\r\n", b"+PONG"))
    require("memcached is not reachable on 127.0.0.1:11211",
            answers(11211, b"version\r\n", b"VERSION"))
    from pymemcache.client.base import Client

    keys: list[str] = []
    yield keys
    client = Client(("127.0.0.1", 11211), default_noreply=False)
    for start in range(0, len(keys), 200):
        client.delete_many(keys[start:start + 200])
    client.close()


def worker_for(kind: str, queue: str) -> Any:
    from celeriac.contrib.testing import WorkerProcess

    path = os.pathsep.join(p for p in (str(APPS_DIR), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path, "CACHE_INTEROP_QUEUE": queue}
    node = f"cache-{kind}-{uuid.uuid4().hex[:6]}@%h"
    if kind == "celery":
        return CeleryWorkerProcess("cache_interop:celery_app", cwd=APPS_DIR, env=env,
                                   args=["-n", node, "-Q", queue, "-P", "prefork", "-c", "2"])
    return WorkerProcess("cache_interop:celeriac_app", cwd=APPS_DIR, env=env,
                         args=["-n", node, "-Q", queue, "-P", "prefork", "-c", "2"],
                         ready_timeout=60)


@pytest.fixture(scope="module", params=[("celery", "celeriac"), ("celeriac", "celery")],
                ids=["celery-client-celeriac-worker", "celeriac-client-celery-worker"])
def pair(request: pytest.FixtureRequest, services: list[str]) -> Iterator[Any]:
    """(client app, the keys list, the worker's kind); one worker per direction."""
    import cache_interop
    import redis

    sender, runner = request.param
    queue = f"q-cache-{uuid.uuid4().hex[:12]}"
    try:
        with worker_for(runner, queue):
            app = cache_interop.build(sender, queue)
            try:
                yield app, services, runner
            finally:
                app.close()
    finally:
        broker = redis.Redis.from_url(cache_interop.BROKER_URL)
        broker.delete(queue, f"{queue}.dead", f"_kombu.binding.{queue}")
        broker.close()


def _meta_keys(*results: Any) -> list[str]:
    return [f"celery-task-meta-{r.id}" for r in results]


def test_a_result_comes_back(pair: Any) -> None:
    app, keys, _ = pair
    r = app.tasks["cache.add"].delay(2, 3)
    keys += _meta_keys(r)
    assert r.get(timeout=T) == 5
    assert r.status == "SUCCESS"


def test_a_failure_is_reraised_by_type(pair: Any) -> None:
    app, keys, _ = pair
    r = app.tasks["cache.fail"].delay("boom in memcached")
    keys += _meta_keys(r)
    with pytest.raises(ValueError, match="boom in memcached"):
        r.get(timeout=T)
    assert r.status == "FAILURE"


def test_progress_then_the_result(pair: Any, tmp_path: Path) -> None:
    app, keys, _ = pair
    go = tmp_path / "go"
    r = app.tasks["cache.progress"].delay(str(go))
    keys += _meta_keys(r)
    try:
        deadline = time.monotonic() + T
        while r.state != "PROGRESS" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.state == "PROGRESS"
        assert r.info == {"current": 1, "total": 2}
    finally:
        go.touch()
    assert r.get(timeout=T) == "finished"


def test_a_group_is_joined_in_one_read(pair: Any) -> None:
    app, keys, _ = pair
    if type(app).__module__.startswith("celery."):
        from celery import group
    else:
        from celeriac import group  # type: ignore[assignment]
    g = group(app.tasks["cache.add"].s(i, i) for i in range(8))()
    keys += _meta_keys(*g.results)
    assert g.get(timeout=T) == [i * 2 for i in range(8)]


def test_a_chord_sent_by_celery_runs_on_celeriac_workers_only(pair: Any) -> None:
    # A Celery client saves the header group and sets Celery's chord-unlock-<id>
    # counter; celeriac's workers count on it. A chord celeriac sends is counted under
    # celeriac's own keys, which Celery's workers do not read: they fail its body with
    # a ChordError (the caller learns why instead of waiting).
    app, keys, runner = pair
    add, tsum = app.tasks["cache.add"], app.tasks["cache.tsum"]
    if runner == "celeriac":
        from celery import chord
    else:
        from celeriac import chord  # type: ignore[assignment]
    c = chord(add.s(i, i) for i in range(6))(tsum.s())
    keys += [*_meta_keys(c, *c.parent.results), f"celery-taskset-meta-{c.parent.id}",
             f"chord-unlock-{c.parent.id}"]
    if runner == "celeriac":
        assert c.get(timeout=T) == sum(i * 2 for i in range(6))
    else:
        from celeriac.exceptions import ChordError

        with pytest.raises(ChordError, match="no longer exists"):
            c.get(timeout=T)


# -- groups saved by the other side --------------------------------------------------------
def _group_result(kind: str) -> Any:
    if kind == "celery":
        from celery.result import GroupResult
    else:
        from celeriac import GroupResult  # type: ignore[assignment]
    return GroupResult


@pytest.mark.parametrize(("saver", "reader"), [("celery", "celeriac"), ("celeriac", "celery")])
def test_a_saved_group_is_restored_by_the_other_side(services: list[str], saver: str,
                                                     reader: str) -> None:
    import cache_interop

    queue = "q-cache-unused"
    apps = {kind: cache_interop.build(kind, queue) for kind in ("celery", "celeriac")}
    try:
        gid, ids = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(3)]
        services += [f"celery-taskset-meta-{gid}", *(f"celery-task-meta-{i}" for i in ids)]
        for n, task_id in enumerate(ids):
            apps[saver].backend.store_result(task_id, n, "SUCCESS")
        results = [apps[saver].AsyncResult(i) for i in ids]
        _group_result(saver)(gid, results, app=apps[saver]).save()
        restored = _group_result(reader).restore(gid, app=apps[reader])
        assert [r.id for r in restored.results] == ids
        assert restored.get(timeout=T) == [0, 1, 2]
    finally:
        for app in apps.values():
            app.close()


# -- python-memcached, the client of Celery before 5.7 ----------------------------------------
@pytest.fixture
def old_client(services: list[str]) -> Iterator[Any]:
    import memcache

    client = memcache.Client(["127.0.0.1:11211"])
    yield client
    client.disconnect_all()


@pytest.fixture
def celeriac_app(services: list[str]) -> Iterator[Any]:
    import cache_interop

    app = cache_interop.build("celeriac", "q-cache-unused")
    yield app
    app.close()


def test_results_python_memcached_wrote_are_read(old_client: Any, celeriac_app: Any,
                                                 services: list[str]) -> None:
    # Celery's backend gave python-memcached the serializer's str: stored as text (flag 16)
    task_id = str(uuid.uuid4())
    services.append(f"celery-task-meta-{task_id}")
    meta = {"status": "SUCCESS", "result": "süß", "traceback": None, "children": [],
            "date_done": None, "task_id": task_id}
    assert old_client.set(f"celery-task-meta-{task_id}", json.dumps(meta), time=300)
    assert celeriac_app.AsyncResult(task_id).get(timeout=T) == "süß"


def test_python_memcached_reads_what_celeriac_wrote(old_client: Any, celeriac_app: Any,
                                                    services: list[str]) -> None:
    task_id = str(uuid.uuid4())
    services.append(f"celery-task-meta-{task_id}")
    celeriac_app.backend.mark_as_done(task_id, {"answer": 42})
    raw = old_client.get(f"celery-task-meta-{task_id}")
    assert json.loads(raw)["result"] == {"answer": 42}


def test_a_pickled_value_is_refused_unread(old_client: Any, celeriac_app: Any,
                                           services: list[str]) -> None:
    from celeriac.exceptions import BackendError

    task_id = str(uuid.uuid4())
    services.append(f"celery-task-meta-{task_id}")
    # python-memcached pickles anything that is not str/bytes/int (flag 1)
    assert old_client.set(f"celery-task-meta-{task_id}", {"status": "SUCCESS"}, time=300)
    with pytest.raises(BackendError, match="pickled value"):
        celeriac_app.AsyncResult(task_id).get(timeout=T)
