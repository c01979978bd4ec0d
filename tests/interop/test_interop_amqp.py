"""Celery 5 and celeriac on RabbitMQ, both ways, with results in Redis (db 7).

- a Celery client sends to a celeriac worker: a plain result, a countdown, a failure
  re-raised by type, a retry with a countdown, a chord;
- a celeriac client sends the same set to a Celery worker;
- a mixed fleet: a Celery worker and a celeriac worker consume one queue, 10,000
  ``amqp.record`` tasks are sent (half by each client), and every task ran exactly once.

Each group of tests has a queue of its own (``q-amqp-<hex>``), deleted with its exchange
at the end. Celeriac sends a countdown through Celery 5.5's native delayed delivery
topology (``celery_delayed_<n>`` levels down to ``celery_delayed_delivery``, to which
each queue it declares is bound), so a Celery worker receives it when due; a Celery
client sends it to the queue at once with its ``eta`` header, and a celeriac worker
parks it in those same levels.

The apps are ``apps/amqp_interop.py`` (one module for both sides). Nothing here flushes
Redis: traces live under a per-test prefix and every key expires.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support.py
from support import answers, delete_rabbitmq, rabbitmq_answers, require  # noqa: E402

from interop_support import APPS_DIR, CeleryWorkerProcess, wait_until  # noqa: E402

if str(APPS_DIR) not in sys.path:
    sys.path.insert(0, str(APPS_DIR))

pytestmark = pytest.mark.redis

AMQP_HOST, AMQP_PORT = "127.0.0.1", 5672
T = 30          # seconds a result may take (only reached when something is broken)
N = 10_000      # tasks of the mixed fleet
CHUNK = 500


# -- services ---------------------------------------------------------------------------


def _rabbit() -> Any:
    import amqp

    conn = amqp.Connection(host=f"{AMQP_HOST}:{AMQP_PORT}", userid="guest",
                           password="guest", connect_timeout=5)
    conn.connect()
    return conn


@pytest.fixture(scope="module")
def services() -> Any:
    """Celery, py-amqp and redis-py importable; RabbitMQ and Redis answering."""
    for module in ("celery", "amqp", "redis"):
        try:
            __import__(module)
        except ImportError:
            require(f"the AMQP interop tests need {module!r}: pip install -e '.[dev]'", False)
    require("Redis is not reachable on 127.0.0.1:6379",
            answers(6379, b"PING\r\n", b"+PONG"))
    # a RabbitMQ server answers a protocol header with its own Connection.Start
    require("RabbitMQ is not reachable on 127.0.0.1:5672",
            rabbitmq_answers(AMQP_PORT))
    import amqp_interop
    import redis

    client = redis.Redis.from_url(amqp_interop.RESULT_BACKEND)
    yield amqp_interop, client
    client.close()


def queue_depth(name: str) -> tuple[int, int]:
    """(messages ready, consumers) of a queue, without declaring it."""
    conn = _rabbit()
    try:
        _, messages, consumers = conn.channel().queue_declare(name, passive=True)
        return int(messages), int(consumers)
    finally:
        conn.close()




@contextlib.contextmanager
def amqp_queue() -> Iterator[str]:
    name = f"q-amqp-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        delete_rabbitmq(name)


def worker_for(kind: str, queue: str, node: str, *args: str) -> Any:
    from celeriac.contrib.testing import WorkerProcess

    path = os.pathsep.join(p for p in (str(APPS_DIR), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path, "AMQP_INTEROP_QUEUE": queue}
    if kind == "celery":
        return CeleryWorkerProcess("amqp_interop:celery_app", cwd=APPS_DIR, env=env,
                                   args=["-n", f"{node}@%h", "-Q", queue, *args])
    return WorkerProcess("amqp_interop:celeriac_app", cwd=APPS_DIR, env=env,
                         args=["-n", f"{node}@%h", "-Q", queue, *args], ready_timeout=60)


@contextlib.contextmanager
def client(kind: str, queue: str) -> Iterator[Any]:
    import amqp_interop

    app = amqp_interop.build(kind, queue)
    try:
        yield app
    finally:
        app.close()


def forget(scratch: Any, *ids: str) -> None:
    """Our results and chord keys, gone from the shared db."""
    keys = [f"celery-task-meta-{i}" for i in ids if i]
    for start in range(0, len(keys), 1000):
        scratch.delete(*keys[start:start + 1000])


# -- one queue, one worker, one client of the other kind, per direction ----------------------
@pytest.fixture(scope="module", params=[("celery", "celeriac"), ("celeriac", "celery")],
                ids=["celery-client-celeriac-worker", "celeriac-client-celery-worker"])
def pair(request: pytest.FixtureRequest, services: Any) -> Iterator[Any]:
    """(client app, its worker's kind, scratch Redis); one worker for the direction's
    tests, on a queue of their own."""
    sender, runner = request.param
    _, scratch = services
    with amqp_queue() as queue:
        with worker_for(runner, queue, f"amqp-{runner}", "-P", "prefork", "-c", "2"):
            with client(sender, queue) as app:
                yield app, runner, scratch, queue


def task(app: Any, name: str) -> Any:
    return app.tasks[name]


def test_plain_result(pair: Any) -> None:
    app, _, scratch, _ = pair
    r = task(app, "amqp.add").delay(2, 3)
    assert r.get(timeout=T) == 5
    assert r.status == "SUCCESS"
    forget(scratch, r.id)


def test_countdown_runs_when_due(pair: Any) -> None:
    app, _, scratch, queue = pair
    r = task(app, "amqp.when").apply_async(("later",), countdown=2)
    info = r.get(timeout=T)
    assert info["tag"] == "later"
    assert info["eta"], "the worker saw no eta"
    eta = datetime.fromisoformat(info["eta"]).timestamp()
    assert info["ran_at"] >= eta, "ran before its eta"
    assert queue_depth(queue)[0] == 0
    forget(scratch, r.id)


def test_failure_is_reraised_by_type(pair: Any) -> None:
    app, _, scratch, _ = pair
    r = task(app, "amqp.fail").delay("boom over amqp")
    with pytest.raises(ValueError, match="boom over amqp"):
        r.get(timeout=T)
    assert r.status == "FAILURE"
    assert isinstance(r.result, ValueError)
    forget(scratch, r.id)


def test_retry_with_countdown(pair: Any) -> None:
    app, _, scratch, _ = pair
    prefix = f"amqp-test:{uuid.uuid4().hex}"
    r = task(app, "amqp.retry_once").delay(prefix)
    assert r.get(timeout=T) == {"retries": 1, "runs": 2}
    assert int(scratch.hget(f"{prefix}:tries", r.id)) == 2  # once failed, once retried
    scratch.delete(f"{prefix}:tries")
    forget(scratch, r.id)


def test_chord(pair: Any) -> None:
    app, _, scratch, _ = pair
    if type(app).__module__.startswith("celery."):
        from celery import chord
    else:
        from celeriac import chord
    add, tsum = task(app, "amqp.add"), task(app, "amqp.tsum")
    r = chord([add.s(i, i) for i in range(6)])(tsum.s())
    assert r.get(timeout=T) == sum(2 * i for i in range(6))
    header = r.parent
    ids = [r.id]
    if header is not None:
        assert header.get(timeout=T) == [2 * i for i in range(6)]
        ids += [c.id for c in header.results] + [header.id]
    forget(scratch, *ids)


# -- a mixed fleet --------------------------------------------------------------------------
# 10,000 tasks through a Celery and a celeriac worker: a minute alone, several on a machine
# running the rest of the suite beside it (the wait is for completion, never a speed check)
@pytest.mark.timeout(600)
def test_mixed_fleet_runs_each_task_exactly_once(services: Any) -> None:
    _, scratch = services
    prefix = f"amqp-fleet:{uuid.uuid4().hex}"
    with contextlib.ExitStack() as stack:
        queue = stack.enter_context(amqp_queue())
        # Celery declares the queue first, as a Celery deployment would have it.
        celery_worker = stack.enter_context(
            worker_for("celery", queue, "fleet-celery", "-P", "prefork", "-c", "2"))
        celeriac_worker = stack.enter_context(
            worker_for("celeriac", queue, "fleet-celeriac", "-P", "prefork", "-c", "2"))
        by_celery = stack.enter_context(client("celery", queue))
        by_celeriac = stack.enter_context(client("celeriac", queue))
        rec_celery = task(by_celery, "amqp.record")
        rec_celeriac = task(by_celeriac, "amqp.record")
        sent: list[str] = []
        for start in range(0, N, 2 * CHUNK):
            sent += [rec_celery.delay(prefix, i).id for i in range(start, start + CHUNK)]
            sent += [rec_celeriac.delay(prefix, i).id
                     for i in range(start + CHUNK, start + 2 * CHUNK)]
        assert len(set(sent)) == N
        wait_until(lambda: scratch.hlen(f"{prefix}:runs") >= N, 480, f"{N} tasks to run")
        # both workers leave (warm shutdown) before the counting, so that a message
        # given again on the way out would show as a second run
        celeriac_worker.stop()
        celery_worker.stop()
        runs = {k.decode(): int(v) for k, v in scratch.hgetall(f"{prefix}:runs").items()}
        by_worker = {k.decode(): int(v) for k, v in scratch.hgetall(f"{prefix}:by").items()}
        ready, _ = queue_depth(queue)
    scratch.delete(f"{prefix}:runs", f"{prefix}:by")

    lost = set(sent) - set(runs)
    doubled = {i: n for i, n in runs.items() if n != 1}
    strangers = set(runs) - set(sent)
    assert (len(lost), len(doubled), len(strangers)) == (0, 0, 0), (
        f"lost {len(lost)}, doubled {len(doubled)} (e.g. {list(doubled.items())[:3]}), "
        f"unknown {len(strangers)}")
    assert len(runs) == N and sum(runs.values()) == N
    assert set(by_worker) == {"fleet-celery", "fleet-celeriac"}, by_worker
    assert sum(by_worker.values()) == N
    assert ready == 0
