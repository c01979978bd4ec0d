"""The rpc:// backend's logic that needs no RabbitMQ (tests/integration/test_rpc_backend.py
runs it against a real one)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("amqp")

from celeriac import Celery, chord  # noqa: E402
from celeriac.backends import rpc  # noqa: E402
from celeriac.exceptions import BackendError, ImproperlyConfigured  # noqa: E402

# Nothing listens there: any test that connected by mistake would fail loudly.
NOWHERE = "rpc://guest:guest@127.0.0.1:1//"


QUEUE = f"q-rpc-unit-{uuid.uuid4().hex[:8]}"  # the memory broker is shared in-process


def app_with(backend: str = NOWHERE, broker: str = "memory://", **settings: Any) -> Celery:
    return Celery("rpcunit", broker=broker, backend=backend, set_as_current=False,
                  task_default_queue=QUEUE, **settings)


def test_bare_rpc_uses_the_brokers_connection() -> None:
    broker = "amqp://u:p@rabbit:5673/vh"
    assert rpc.amqp_url_for("rpc://", broker) == broker
    assert rpc.amqp_url_for("rpc:///", broker) == broker
    assert rpc.amqp_url_for("rpc://u:p@other:5672//", broker) == "amqp://u:p@other:5672//"


def test_bare_rpc_needs_a_rabbitmq_broker() -> None:
    app = app_with("rpc://", broker="redis://127.0.0.1:6379/0")
    with pytest.raises(ImproperlyConfigured, match="amqp:// broker_url"):
        app.backend


def test_amqp_as_a_result_backend_points_to_rpc() -> None:
    for url in ("amqp://", "amqp://guest@localhost//", "pyamqp://"):
        with pytest.raises(ImproperlyConfigured, match="rpc://"):
            app_with(url).backend


def test_the_reply_queue_expires_with_result_expires() -> None:
    assert app_with(result_expires=timedelta(hours=1)).backend.queue_arguments() == {
        "x-expires": 3_600_000}
    assert app_with().backend.queue_arguments() == {"x-expires": 86_400_000}
    assert app_with(result_expires=None).backend.queue_arguments() == {}


def test_result_persistent_sets_the_delivery_mode() -> None:
    assert app_with().backend.delivery_mode == 1
    assert app_with(result_persistent=True).backend.delivery_mode == 2


def test_nothing_is_published_without_a_reply_to_or_when_ignored() -> None:
    backend = app_with().backend
    meta = backend.store_result("t1", 5, "SUCCESS", request=SimpleNamespace(
        id="t1", reply_to="", ignore_result=False, correlation_id="t1"))
    assert meta["task_id"] == "t1" and meta["result"] == 5
    backend.store_result("t2", 5, "SUCCESS", request=SimpleNamespace(
        id="t2", reply_to="somebody", ignore_result=True, correlation_id="t2"))
    backend.store_result("t3", 5, "SUCCESS")
    assert backend._publisher is None  # never connected


def test_a_task_sent_from_a_task_answers_the_outer_tasks_client() -> None:
    backend = app_with().backend
    client = SimpleNamespace(reply_to="the-client-queue", is_eager=False)
    assert backend.reply_to(client) == "the-client-queue"
    # a worker's task that had no reply_to: this process's name, not declared
    assert backend.reply_to(SimpleNamespace(reply_to=None, is_eager=False)) == backend.oid
    assert backend.reply_to(None, ignore_result=True) == backend.oid
    assert backend._reply is None  # nothing was declared


def test_app_messages_carry_the_reply_to() -> None:
    app = app_with()
    captured: list[Any] = []

    @app.task(name="rpcunit.add")
    def add(x: int, y: int) -> int:
        return x + y

    def catch(**kw: Any) -> None:
        captured.append(kw["properties"])

    from celeriac import signals

    signals.before_task_publish.connect(catch)
    try:
        add.apply_async((1, 2), ignore_result=True)
    finally:
        signals.before_task_publish.disconnect(catch)
    assert captured[0]["reply_to"] == app.backend.oid
    assert captured[0]["correlation_id"]
    app.producer_broker().purge(QUEUE)
    other = app_with("memory://")
    assert other.backend.reply_to() == ""


def test_chords_are_refused_as_celery_refuses_them() -> None:
    app = app_with()

    @app.task(name="rpcunit.add2")
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(NotImplementedError, match='"rpc" result backend does not support'):
        chord([add.s(1, 1), add.s(2, 2)])(add.s(0))
    assert app.producer_broker().size(QUEUE) == 0  # no header task was sent


def test_groups_cannot_be_saved() -> None:
    backend = app_with().backend
    with pytest.raises(NotImplementedError, match="cannot save a group"):
        backend.save_group("g", ((("g", None)), []))
    with pytest.raises(NotImplementedError):
        backend.restore_group("g")


def test_a_process_that_sent_nothing_cannot_wait() -> None:
    app = app_with()
    with pytest.raises(BackendError, match="sent no task"):
        app.AsyncResult("some-task").get(timeout=1)


def test_a_forked_child_gets_a_new_oid() -> None:
    backend = app_with().backend
    before = backend.oid
    backend._file("t", {"status": "SUCCESS", "result": 1, "task_id": "t"})
    backend._pid = -1  # as seen from a child after fork
    backend._check_fork()
    assert backend.oid != before
    assert backend._replies == {}


def test_replies_are_filed_latest_first_but_never_hide_a_result(monkeypatch: Any) -> None:
    backend = app_with().backend
    backend._sent = True
    monkeypatch.setattr(backend, "_poll", lambda: None)
    backend._file("t", {"status": "STARTED", "result": {}, "task_id": "t"})
    assert backend.get_task_meta("t")["status"] == "STARTED"
    backend._file("t", {"status": "PROGRESS", "result": {"n": 1}, "task_id": "t"})
    assert backend.get_task_meta("t")["result"] == {"n": 1}
    backend._file("t", {"status": "SUCCESS", "result": 3, "task_id": "t"})
    backend._file("t", {"status": "STARTED", "result": {}, "task_id": "t"})  # a rerun
    assert backend.wait_for("t", timeout=0)["result"] == 3
    monkeypatch.setattr(rpc, "KEEP_REPLIES", 3)
    for i in range(5):
        backend._file(f"x{i}", {"status": "SUCCESS", "result": i, "task_id": f"x{i}"})
    assert list(backend._replies) == ["x2", "x3", "x4"]


def test_a_reply_is_filed_by_its_meta_or_correlation_id() -> None:
    backend = app_with().backend
    message = SimpleNamespace(
        body=b'{"status": "SUCCESS", "result": 9, "task_id": "abc"}',
        properties={"content_type": "application/json", "correlation_id": "abc"})
    backend._on_reply(message)
    assert backend._replies["abc"]["result"] == 9
    backend._on_reply(SimpleNamespace(body=b"not json", properties={
        "content_type": "application/json", "correlation_id": "bad"}))
    backend._on_reply(SimpleNamespace(body=b"\x80\x04.", properties={
        "content_type": "application/x-python-serialize", "correlation_id": "pickled"}))
    assert set(backend._replies) == {"abc"}  # refused, logged, the reader goes on
