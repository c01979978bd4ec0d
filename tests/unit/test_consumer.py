"""The consumer loop in-process on the memory transport: serializers, protocol 1,
accept_content, eta and expiry, as a worker sees them."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest

from celeriac import Celery, messages, serialization
from celeriac.worker.consumer import Consumer, EventLoopThread
from celeriac.worker.heartbeat import Heartbeat


@pytest.fixture
def app() -> Celery:
    name = uuid.uuid4().hex
    app = Celery("unit", broker=f"memory://{name}", backend=f"memory://{name}")

    @app.task(name="unit.add")
    def add(x, y):
        return x + y

    return app


@pytest.fixture
def running(app: Celery) -> Iterator[Consumer]:
    stop = threading.Event()
    consumer = Consumer(app, ["celery"], "unit@test", prefetch=4, async_limit=10, stop=stop,
                        heartbeat=Heartbeat(60, app), loop=EventLoopThread(), fetch_timeout=0.05)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    yield consumer
    stop.set()
    thread.join(5)


@pytest.mark.parametrize("serializer", ["json", "msgpack", "yaml", "pickle"])
def test_serializers_round_trip_through_the_worker(app: Celery, serializer: str) -> None:
    app.conf.task_serializer = serializer
    app.conf.result_serializer = serializer
    app.conf.accept_content = [serializer]
    stop = threading.Event()
    consumer = Consumer(app, ["celery"], "unit@test", 4, 10, stop, Heartbeat(60, app),
                        EventLoopThread(), fetch_timeout=0.05)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        assert app.tasks["unit.add"].delay(20, 22).get(timeout=10) == 42
    finally:
        stop.set()
        thread.join(5)


@pytest.mark.parametrize("compression", ["zlib", "gzip", "bzip2"])
def test_compressed_messages_run(app: Celery, running: Consumer, compression: str) -> None:
    result = app.tasks["unit.add"].apply_async((1, 2), compression=compression)
    assert result.get(timeout=10) == 3


def test_pickle_is_refused_unless_accepted(app: Celery, running: Consumer) -> None:
    task_id = str(uuid.uuid4())
    msg = messages.task_message("unit.add", task_id, [1, 2], serializer="pickle")
    app.producer_broker().publish("celery", messages.encode_envelope(msg))
    assert app.tasks["unit.add"].delay(1, 1).get(timeout=10) == 2
    dead = app.producer_broker().dead_letters()
    assert dead and "pickle" in dead[0].reason
    refused = app.AsyncResult(task_id)
    assert refused.state == "FAILURE"  # never run; the caller learns why
    assert "accept_content" in str(refused.result)


def test_protocol_1_message_runs(app: Celery, running: Consumer) -> None:
    task_id = str(uuid.uuid4())
    body, ctype, enc = serialization.dumps(
        {"task": "unit.add", "id": task_id, "args": [2, 5], "kwargs": {}, "retries": 0}, "json")
    envelope = messages.encode_envelope(messages.Message({}, {}, body, ctype, enc))
    app.producer_broker().publish("celery", envelope)
    assert app.AsyncResult(task_id).get(timeout=10) == 7


def test_celery_style_eta_header_waits_in_the_broker(app: Celery, running: Consumer) -> None:
    # A Celery producer puts an eta task straight on the queue; the worker parks it.
    eta = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    task_id = str(uuid.uuid4())
    msg = messages.task_message("unit.add", task_id, [3, 3], eta=eta)
    app.producer_broker().publish("celery", messages.encode_envelope(msg))
    result = app.AsyncResult(task_id)
    assert result.get(timeout=10) == 6
    assert datetime.now(timezone.utc) >= eta


def test_countdown_and_expired(app: Celery, running: Consumer) -> None:
    add = app.tasks["unit.add"]
    assert add.apply_async((1, 1), countdown=0.2).get(timeout=10) == 2
    expired = add.apply_async((1, 1), expires=datetime.now(timezone.utc) - timedelta(seconds=1))
    with pytest.raises(Exception, match="expired"):
        expired.get(timeout=10)
    assert expired.state == "REVOKED"


def test_envelope_is_kombu_shaped(app: Celery) -> None:
    broker = app.producer_broker()
    app.tasks["unit.add"].delay(1, 2)
    delivery = broker.fetch(["celery"], 1, 1.0)[0]
    env: dict[str, Any] = json.loads(delivery.payload)
    assert env["content-type"] == "application/json"
    assert env["properties"]["body_encoding"] == "base64"
    assert env["properties"]["delivery_info"] == {"exchange": "", "routing_key": "celery"}
    assert env["headers"]["task"] == "unit.add"
    broker.ack([delivery])


def test_running_slot_keeps_a_chord_members_request_for_the_parent() -> None:
    from celeriac.serialization import loads
    from celeriac.task import Context
    from celeriac.worker.timelimits import CONTEXT_SIZE, RunningSlot, chord_context, shared_board

    board = shared_board(2)
    first, second = RunningSlot(board, 0), RunningSlot(board, 1)
    request = Context(id="t1", task="proj.add", group="g1", group_index=3,
                      chord={"task": "proj.tsum", "args": [], "kwargs": {}, "options": {}},
                      root_id="r", parent_id=None)
    second.start("t1", "proj.add", 7, True, None, chord_context(request))
    first.start("t0", "proj.add", 6, False, None)
    running = second.read()
    assert running is not None and running.task_id == "t1" and running.tag == 7
    assert loads(running.context, "application/json") == {
        "id": "t1", "task": "proj.add", "group": "g1", "group_index": 3,
        "chord": request.chord, "root_id": "r", "parent_id": None}
    plain = first.read()
    assert plain is not None and plain.context is None
    huge = Context(id="t2", task="proj.add", group="g2", group_index=0,
                   chord={"task": "proj.tsum", "args": ["x" * CONTEXT_SIZE]})
    assert loads(chord_context(huge), "application/json")["too_large"] > CONTEXT_SIZE
    second.clear()
    assert second.read() is None
