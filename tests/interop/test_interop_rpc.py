"""Celery 5 and celeriac with ``rpc://`` results on RabbitMQ, both ways.

- a real Celery client (``backend='rpc://'``) sends to a celeriac worker;
- a celeriac client (``backend='rpc://'``) sends to a real Celery worker.

Each direction gets a queue of its own (``q-rpc-<hex>``) and one worker; the client's
reply queue is the Celery 5.7 one (its oid, durable, auto-delete, ``x-expires``), so that
either side may declare it. Queues are deleted at the end. The apps are
``apps/rpc_interop.py``.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support.py
from support import rabbitmq_answers, require  # noqa: E402
from support import delete_rabbitmq as delete_queues  # noqa: E402

from interop_support import APPS_DIR, CeleryWorkerProcess  # noqa: E402

if str(APPS_DIR) not in sys.path:
    sys.path.insert(0, str(APPS_DIR))

T = 30  # seconds a result may take (only reached when something is broken)






@pytest.fixture(scope="module")
def services() -> None:
    for module in ("celery", "amqp"):
        try:
            __import__(module)
        except ImportError:
            require(f"the rpc interop tests need {module!r}: pip install -e '.[dev]'", False)
    require("RabbitMQ is not reachable on 127.0.0.1:5672", rabbitmq_answers())


def worker_for(kind: str, queue: str) -> Any:
    from celeriac.contrib.testing import WorkerProcess

    path = os.pathsep.join(p for p in (str(APPS_DIR), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path, "RPC_INTEROP_QUEUE": queue}
    node = f"rpc-{kind}-{uuid.uuid4().hex[:6]}@%h"
    if kind == "celery":
        return CeleryWorkerProcess("rpc_interop:celery_app", cwd=APPS_DIR, env=env,
                                   args=["-n", node, "-Q", queue, "-P", "prefork", "-c", "2"])
    return WorkerProcess("rpc_interop:celeriac_app", cwd=APPS_DIR, env=env,
                         args=["-n", node, "-Q", queue, "-P", "prefork", "-c", "2"],
                         ready_timeout=60)


@pytest.fixture(scope="module", params=[("celery", "celeriac"), ("celeriac", "celery")],
                ids=["celery-client-celeriac-worker", "celeriac-client-celery-worker"])
def pair(request: pytest.FixtureRequest, services: None) -> Iterator[Any]:
    """(client app, the worker's kind); one worker per direction."""
    import rpc_interop

    sender, runner = request.param
    queue = f"q-rpc-{uuid.uuid4().hex[:12]}"
    try:
        with worker_for(runner, queue):
            app = rpc_interop.build(sender, queue)
            try:
                yield app, runner
            finally:
                reply_queue = str(app.backend.oid)
                app.close()
                delete_queues(reply_queue)
    finally:
        delete_queues(queue, f"{queue}.dead")


def test_a_result_comes_back(pair: Any) -> None:
    app, _ = pair
    r = app.tasks["rpc.add"].delay(2, 3)
    assert r.get(timeout=T) == 5
    assert r.status == "SUCCESS"


def test_a_failure_is_reraised_by_type(pair: Any) -> None:
    app, _ = pair
    r = app.tasks["rpc.fail"].delay("boom over rpc")
    with pytest.raises(ValueError, match="boom over rpc"):
        r.get(timeout=T)
    assert r.status == "FAILURE"


def test_progress_then_the_result(pair: Any, tmp_path: Path) -> None:
    # Read through get(on_message=...): a Celery client that is already consuming its
    # reply queue (an earlier get()) takes replies in only while get() drains them, so
    # its .state would stay PENDING while the task runs.
    app, _ = pair
    go = tmp_path / "go"
    seen: list[Any] = []

    def on_message(meta: dict[str, Any]) -> None:
        seen.append((meta["status"], meta["result"]))
        if meta["status"] == "PROGRESS":
            go.touch()

    r = app.tasks["rpc.progress"].delay(str(go))
    assert r.get(timeout=T, on_message=on_message, interval=0.05) == "finished"
    assert ("PROGRESS", {"current": 1, "total": 2}) in seen, seen
    assert seen[-1] == ("SUCCESS", "finished"), seen


def test_progress_is_visible_in_state_from_a_fresh_client(pair: Any, tmp_path: Path) -> None:
    # A client that has not consumed yet reads .state by polling its queue (Celery) or
    # by taking in what arrived (celeriac)
    import rpc_interop

    app, runner = pair
    kind = "celery" if type(app).__module__.startswith("celery.") else "celeriac"
    fresh = rpc_interop.build(kind, app.conf.task_default_queue)
    go = tmp_path / "go"
    try:
        r = fresh.tasks["rpc.progress"].delay(str(go))
        deadline = time.monotonic() + T
        while r.state != "PROGRESS" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.state == "PROGRESS"
        assert r.info == {"current": 1, "total": 2}
        go.touch()
        assert r.get(timeout=T) == "finished"
    finally:
        go.touch()
        reply_queue = str(fresh.backend.oid)
        fresh.close()
        delete_queues(reply_queue)


def test_several_results_and_a_group(pair: Any) -> None:
    app, _ = pair
    if type(app).__module__.startswith("celery."):
        from celery import group
    else:
        from celeriac import group  # type: ignore[assignment]
    add = app.tasks["rpc.add"]
    results = [add.delay(i, i) for i in range(10)]
    assert [r.get(timeout=T) for r in reversed(results)] == [2 * i for i in range(9, -1, -1)]
    g = group(add.s(i, 1) for i in range(6)).apply_async()
    assert g.get(timeout=T) == list(range(1, 7))
