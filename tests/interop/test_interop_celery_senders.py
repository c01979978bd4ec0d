"""What a Celery client may send that a celeriac worker must cope with.

Protocol 1 messages (``task_protocol=1``) are run. A message without a content type,
an unknown task name and a pickled body are logged and set aside in the dead-letter
list, never fatal: the worker keeps serving.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from interop_support import wait_until, worker

pytestmark = pytest.mark.redis

T = 20


@pytest.fixture(scope="module")
def celeriac_worker(interop_apps: Any, broker_db: Any, scratch_db: Any) -> Any:
    broker_db.flushdb()
    scratch_db.flushdb()
    with worker("celeriac", "celeriac-solo", ["-P", "solo"]) as w:
        yield w


@pytest.fixture(autouse=True)
def _clean(celeriac_worker: Any, clean: None) -> None:
    pass


@pytest.fixture(scope="module")
def v1_app(interop_apps: Any) -> Any:
    """A Celery client that sends protocol 1 messages."""
    from celery import Celery

    shared = interop_apps.shared
    app = Celery("interop_v1", broker=shared.BROKER_URL, backend=shared.RESULT_BACKEND,
                 task_protocol=1, set_as_current=False)
    yield app
    app.close()


def dead_letters(interop_apps: Any) -> list[Any]:
    return interop_apps.celeriac.app.producer_broker().dead_letters()


def still_serving(interop_apps: Any, worker: Any) -> None:
    assert worker.proc.poll() is None
    assert interop_apps.celery.add.delay(20, 22).get(timeout=T) == 42


# -- protocol 1 -------------------------------------------------------------------------
def test_protocol_1_arguments_and_results(v1_app: Any) -> None:
    assert v1_app.send_task("interop.add", (2, 3)).get(timeout=T) == 5
    assert v1_app.send_task("interop.add", kwargs={"x": 1, "y": 2}).get(timeout=T) == 3
    info = v1_app.send_task("interop.whoami", ("a",), {"k": "v"}).get(timeout=T)
    assert (info["args"], info["kwargs"], info["retries"]) == (["a"], {"k": "v"}, 0)


def test_protocol_1_failure(v1_app: Any) -> None:
    r = v1_app.send_task("interop.fail", ("boom",))
    with pytest.raises(ValueError, match="boom"):
        r.get(timeout=T)
    assert "ValueError: boom" in r.traceback


def test_protocol_1_eta_expires_and_retry(v1_app: Any) -> None:
    import celery.exceptions

    info = v1_app.send_task("interop.whoami", ("later",), countdown=1).get(timeout=T)
    assert info["ran_at"] >= datetime.fromisoformat(info["eta"]).timestamp()
    past = datetime.now(timezone.utc) - timedelta(seconds=30)
    r = v1_app.send_task("interop.add", (1, 1), expires=past)
    with pytest.raises(celery.exceptions.TaskRevokedError):
        r.get(timeout=T)
    assert v1_app.send_task("interop.retry_once").get(timeout=T) == {"retries": 1}


def test_protocol_1_link(v1_app: Any) -> None:
    callback_id = str(uuid.uuid4())
    link = v1_app.signature("interop.whoami", args=("linked",),
                            options={"task_id": callback_id})
    r = v1_app.send_task("interop.add", (2, 3), link=link)
    assert r.get(timeout=T) == 5
    info = v1_app.AsyncResult(callback_id).get(timeout=T)
    assert info["args"] == [5, "linked"] and info["parent_id"] == r.id


# -- messages set aside -----------------------------------------------------------------
def test_envelope_without_content_type_is_set_aside(interop_apps: Any, broker_db: Any,
                                                    celeriac_worker: Any) -> None:
    # A real Celery envelope, parked on a queue nobody serves, then stripped of its
    # content type and handed to the worker: Celery's own worker dies on this one.
    r = interop_apps.celery.add.apply_async((1, 1), queue="interop.unserved")
    envelope = json.loads(broker_db.rpop("interop.unserved"))
    del envelope["content-type"]
    broker_db.lpush("celery", json.dumps(envelope))
    dead = wait_until(lambda: dead_letters(interop_apps), T, "a dead letter")
    assert len(dead) == 1 and "content type" in dead[0].reason
    assert json.loads(dead[0].payload)["headers"]["id"] == r.id
    assert r.id in celeriac_worker.output
    still_serving(interop_apps, celeriac_worker)


def test_unknown_task_is_set_aside_and_reported(interop_apps: Any,
                                                celeriac_worker: Any) -> None:
    import celery.exceptions

    r = interop_apps.celery.app.send_task("interop.nope", (1,))
    with pytest.raises(celery.exceptions.NotRegistered):
        r.get(timeout=T)
    dead = wait_until(lambda: dead_letters(interop_apps), T, "a dead letter")
    assert "interop.nope" in dead[0].reason
    assert json.loads(dead[0].payload)["headers"]["id"] == r.id
    still_serving(interop_apps, celeriac_worker)


def test_pickle_is_refused_and_set_aside(interop_apps: Any, scratch_db: Any,
                                         celeriac_worker: Any) -> None:
    r = interop_apps.celery.record.apply_async((1,), serializer="pickle")
    dead = wait_until(lambda: dead_letters(interop_apps), T, "a dead letter")
    assert "application/x-python-serialize" in dead[0].reason
    assert json.loads(dead[0].payload)["headers"]["id"] == r.id
    still_serving(interop_apps, celeriac_worker)
    # never run, and the Celery client learns why instead of waiting forever
    with pytest.raises(Exception, match="accept_content"):
        r.get(timeout=T)
    assert r.state == "FAILURE"
    assert not scratch_db.exists(interop_apps.shared.IDS)


def test_not_an_envelope_is_set_aside(interop_apps: Any, broker_db: Any,
                                      celeriac_worker: Any) -> None:
    broker_db.lpush("celery", b"\x00 not json")
    dead = wait_until(lambda: dead_letters(interop_apps), T, "a dead letter")
    assert "not valid JSON" in dead[0].reason
    still_serving(interop_apps, celeriac_worker)
