"""One Celery side, one celeriac side, each way round: a client of one kind sends, a
worker of the other kind runs, and the client reads the result.

Every test runs twice: Celery client -> celeriac worker, celeriac client -> Celery
worker. The worker (prefork, two processes) serves ``celery`` and ``interop.other``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest
from interop_support import wait_until, worker

pytestmark = pytest.mark.redis

T = 20  # seconds a get() may wait: generous, never asserted on

DIRECTIONS = ["celery-client-to-celeriac-worker", "celeriac-client-to-celery-worker"]


@dataclass
class Side:
    client: ModuleType      # the client's app module: its app and its task objects
    exceptions: ModuleType  # where the client's own exception classes live
    worker_kind: str
    worker: Any

    @property
    def app(self) -> Any:
        return self.client.app


@pytest.fixture(scope="module", params=DIRECTIONS)
def side(request: pytest.FixtureRequest, interop_apps: Any, broker_db: Any,
         scratch_db: Any) -> Any:
    broker_db.flushdb()
    scratch_db.flushdb()
    if request.param.startswith("celery-client"):
        import celery.exceptions

        client, exceptions, kind = interop_apps.celery, celery.exceptions, "celeriac"
    else:
        import celeriac.exceptions

        client, exceptions, kind = interop_apps.celeriac, celeriac.exceptions, "celery"
    with worker(kind, f"{kind}-both", ["-P", "prefork", "-c", "2",
                                       "-Q", "celery,interop.other"]) as w:
        yield Side(client, exceptions, kind, w)


@pytest.fixture(autouse=True)
def _clean(clean: None) -> None:
    pass


@pytest.fixture
def shared(interop_apps: Any) -> ModuleType:
    return interop_apps.shared


def test_positional_and_keyword_arguments(side: Side) -> None:
    c = side.client
    assert c.add.delay(2, 3).get(timeout=T) == 5
    assert c.add.apply_async(kwargs={"x": "a", "y": "b"}).get(timeout=T) == "ab"
    assert c.add.apply_async((1,), {"y": 2}).get(timeout=T) == 3
    payload = {"nested": [1, 2.5, None, True], "text": "héllo ✓"}
    got = c.echo.apply_async(([1, "two"], payload), {"k": payload}).get(timeout=T)
    assert got == [[[1, "two"], payload], {"k": payload}]
    assert side.app.send_task("interop.add", (40, 2)).get(timeout=T) == 42
    # kombu's typed JSON markers survive both ways
    typed = [datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc), date(2030, 1, 2),
             uuid.UUID(int=7), Decimal("1.25"), b"raw"]
    assert c.echo.delay(*typed).get(timeout=T) == [typed, {}]

    r = c.whoami.apply_async((1,), {"k": "v"})
    info = r.get(timeout=T)
    assert info["id"] == r.id == info["root_id"]
    assert info["task"] == "interop.whoami"
    assert (info["args"], info["kwargs"]) == ([1], {"k": "v"})
    assert info["retries"] == 0 and info["parent_id"] is None
    assert info["hostname"].startswith(f"{side.worker_kind}-both@")
    assert info["routing_key"] == "celery"
    assert r.state == "SUCCESS" and r.ready() and r.successful()


def test_failure_reraises_the_original_type(side: Side, shared: ModuleType) -> None:
    c = side.client
    r = c.fail.delay("boom")
    with pytest.raises(ValueError) as err:
        r.get(timeout=T)
    assert type(err.value) is ValueError and err.value.args == ("boom",)
    assert r.state == "FAILURE" and r.failed() and r.ready()
    assert isinstance(r.result, ValueError)
    assert "ValueError: boom" in r.traceback and "interop_shared.py" in r.traceback

    r = c.fail_custom.delay("custom", 42)
    with pytest.raises(shared.CustomError) as err:
        r.get(timeout=T)
    assert type(err.value) is shared.CustomError and err.value.args == ("custom", 42)
    assert "CustomError" in r.traceback

    # propagate=False hands the exception back instead
    assert isinstance(r.get(timeout=T, propagate=False), shared.CustomError)


def test_custom_state_with_meta_while_running(side: Side, tmp_path: Any) -> None:
    r = side.client.progress.delay(str(tmp_path))
    wait_until(lambda: (tmp_path / "progress").exists(), T, "the task to report progress")
    # update_state ran before the marker was written
    assert r.state == "PROGRESS"
    assert r.info == {"done": 1, "total": 2}
    assert not r.ready()
    (tmp_path / "go").touch()
    assert r.get(timeout=T) == "finished"
    assert r.state == "SUCCESS"


def test_retry_counts_and_delivers_the_final_result(side: Side) -> None:
    r = side.client.retry_once.delay()
    assert r.get(timeout=T) == {"retries": 1}
    assert r.state == "SUCCESS"


def test_countdown_and_eta_are_honoured(side: Side, broker_db: Any) -> None:
    c = side.client
    eta = datetime.now(timezone.utc) + timedelta(seconds=1)
    by_countdown = c.whoami.apply_async(("countdown",), countdown=1)
    by_eta = c.whoami.apply_async(("eta",), eta=eta)
    if side.worker_kind == "celery":
        # by default a celeriac client puts eta tasks on the queue, as Celery does
        assert broker_db.zcard("celeriac.delayed") == 0
    for r in (by_countdown, by_eta):
        info = r.get(timeout=T)
        due = datetime.fromisoformat(info["eta"])
        assert info["ran_at"] >= due.timestamp()
    assert datetime.fromisoformat(by_eta.get(timeout=T)["eta"]) == eta


def test_expired_task_is_revoked_not_run(side: Side, scratch_db: Any,
                                         shared: ModuleType) -> None:
    c = side.client
    past = datetime.now(timezone.utc) - timedelta(seconds=30)
    r = c.record.apply_async((1,), expires=past)
    with pytest.raises(side.exceptions.TaskRevokedError) as err:
        r.get(timeout=T)
    assert "expired" in str(err.value)
    assert r.state == "REVOKED"
    # a task that expires later runs normally
    later = c.record.apply_async((2,), expires=60)
    assert later.get(timeout=T) == 2
    assert scratch_db.smembers(shared.IDS) == {later.id.encode()}


def test_priority_messages_are_served(side: Side) -> None:
    c = side.client
    results = [c.add.apply_async((p, 0), priority=p) for p in (0, 3, 5, 9)]
    assert [r.get(timeout=T) for r in results] == [0, 3, 5, 9]


def test_queue_routing(side: Side, broker_db: Any) -> None:
    c = side.client
    info = c.whoami.apply_async(("routed",), queue="interop.other").get(timeout=T)
    assert info["routing_key"] == "interop.other"
    c.add.apply_async((1, 1), queue="interop.unserved")
    # the worker does not serve that queue: the message waits there
    assert broker_db.llen("interop.unserved") == 1


def test_link_callback_receives_the_result(side: Side) -> None:
    c = side.client
    callback_id, immutable_id = str(uuid.uuid4()), str(uuid.uuid4())
    r = c.add.apply_async((2, 3), link=[c.whoami.s("linked").set(task_id=callback_id),
                                        c.echo.si("fixed").set(task_id=immutable_id)])
    assert r.get(timeout=T) == 5
    info = side.app.AsyncResult(callback_id).get(timeout=T)
    assert info["args"] == [5, "linked"]
    assert info["parent_id"] == r.id and info["root_id"] == r.id
    assert side.app.AsyncResult(immutable_id).get(timeout=T) == [["fixed"], {}]


def _errback_record(side: Side, scratch_db: Any, shared: ModuleType, task_id: str) -> Any:
    raw = wait_until(lambda: scratch_db.hget(shared.ERRBACKS, task_id), T,
                     "the errback to run")
    return json.loads(raw)


def test_link_error_called_in_place(side: Side, scratch_db: Any,
                                    shared: ModuleType) -> None:
    c = side.client
    r = c.fail.apply_async(("boom",), link_error=c.errback.s())
    with pytest.raises(ValueError):
        r.get(timeout=T)
    rec = _errback_record(side, scratch_db, shared, r.id)
    assert rec["style"] == "inline"
    assert (rec["exc_type"], rec["exc"]) == ("ValueError", "boom")
    assert "ValueError: boom" in rec["traceback"]


def test_link_error_with_arguments(side: Side, scratch_db: Any, shared: ModuleType) -> None:
    """Celery calls errback(request, exc, traceback, *signature_args)."""
    c = side.client
    r = c.fail.apply_async(("boom",), link_error=c.errback.s("tag"))
    with pytest.raises(ValueError):
        r.get(timeout=T)
    raw = wait_until(lambda: scratch_db.hget(shared.ERRBACKS, r.id)
                     or f"errback interop.errback for {r.id} raised" in side.worker.output,
                     T, "the errback to run (or fail)")
    assert isinstance(raw, bytes), "the errback raised in the worker"
    assert json.loads(raw)["tag"] == "tag"


def test_link_error_sent_with_the_task_id(side: Side, scratch_db: Any,
                                          shared: ModuleType) -> None:
    """An errback taking one argument is sent as a task, with the failed task's id."""
    c = side.client
    r = c.fail.apply_async(("boom",), link_error=c.errback_by_id.s())
    with pytest.raises(ValueError):
        r.get(timeout=T)
    assert _errback_record(side, scratch_db, shared, r.id) == {"style": "message"}


def test_ignore_result_stores_nothing(side: Side, scratch_db: Any,
                                      shared: ModuleType) -> None:
    r = side.client.noresult.delay()
    wait_until(lambda: scratch_db.hget(shared.RAN, r.id), T, "the task to run")
    # both workers log success only after they would have stored the result
    wait_until(lambda: f"{r.id}] succeeded" in side.worker.output, T, "the success log")
    assert not scratch_db.exists(f"celery-task-meta-{r.id}")
    assert r.state == "PENDING"


def test_unknown_task_name_raises_not_registered(side: Side) -> None:
    r = side.app.send_task("interop.nope", (1,))
    with pytest.raises(side.exceptions.NotRegistered) as err:
        r.get(timeout=T)
    assert "interop.nope" in str(err.value)
    assert r.state == "FAILURE"
