"""Calling options: those celeriac uses work, any other is warned about, once per name.

Celery passes an option it does not know on to the message properties, where nothing
reads it: ``apply_async(callback=sig)`` (meant as ``link=``) or ``countdwn=10`` is lost
without a word. celeriac says so.
"""

from __future__ import annotations

import inspect
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest

import celeriac.app as app_module
from celeriac import Celery, signals
from celeriac.app import IgnoredOptionWarning
from celeriac.result import AsyncResult


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    # "Once per name" is per process: each test starts as a fresh process would.
    monkeypatch.setattr(app_module, "_warned_options", set())


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("calling", broker="memory://", backend="memory://",
                 set_as_current=False)
    yield app
    app.close()


@pytest.fixture
def add(app: Celery) -> Any:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    return add


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    """The headers and routing of every message sent while the test runs."""
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any = None, headers: Any = None, routing_key: Any = None,
                 **kwargs: Any) -> None:
        seen.append({"headers": headers, "routing_key": routing_key})

    signals.before_task_publish.connect(receiver)
    yield seen
    signals.before_task_publish.disconnect(receiver)


def caught(call: Any) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        call()
    return [w for w in found if issubclass(w.category, IgnoredOptionWarning)]


# Every option celeriac reads, with a value it accepts.
HONOURED: dict[str, Any] = {
    "countdown": 0, "expires": 60, "task_id": "fixed-id", "link": None,
    "link_error": None, "shadow": "shown-as", "queue": "elsewhere", "exchange": None,
    "routing_key": None, "exchange_type": "direct", "priority": 3,
    "serializer": "json", "compression": None, "headers": {"x-trace": "1"},
    "ignore_result": False, "retry": True,
    "retry_policy": {"max_retries": 1}, "time_limit": 30, "soft_time_limit": 20,
    "root_id": None, "parent_id": None, "reply_to": None, "group_id": None,
    "group_index": None, "chain": None, "chord": None, "retries": 0,
    "add_to_parent": True, "route_name": None, "argsrepr": None, "kwargsrepr": None,
    "result_cls": None,
}


def test_options_celeriac_uses_do_not_warn(app: Celery, add: Any) -> None:
    assert caught(lambda: add.apply_async((1, 2), **HONOURED)) == []
    eta = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert caught(lambda: app.send_task(add.name, (1, 2), eta=eta, **HONOURED)) == []
    assert caught(lambda: add.s(1, 2).set(**HONOURED).apply_async()) == []


def test_an_unknown_option_is_named_once_with_what_was_meant(add: Any) -> None:
    first = caught(lambda: add.apply_async((1, 2), callback=add.s(10)))
    assert len(first) == 1
    text = str(first[0].message)
    assert "'callback'" in text and "no effect" in text and "'link'" in text
    # the warning points at the caller's line, not at celeriac's insides
    assert first[0].filename == __file__
    assert caught(lambda: add.apply_async((1, 2), callback=add.s(10))) == []
    typo = caught(lambda: add.s(1, 2).apply_async(countdwn=5))
    assert len(typo) == 1 and "'countdown'" in str(typo[0].message)
    assert typo[0].filename == __file__


@pytest.mark.parametrize("name, value", [
    ("producer", object()), ("connection", object()), ("publisher", object()),
    ("router", object()), ("delivery_mode", 1), ("mandatory", True),
    ("immediate", True), ("content_type", "application/json"),
    ("content_encoding", "utf-8"), ("expiration", 10), ("stamped_headers", ["a"]),
    ("correlation_id", "c"), ("declare", []), ("timeout", 3),
])
def test_celery_options_celeriac_ignores_say_so(app: Celery, add: Any, name: str,
                                                value: Any) -> None:
    found = caught(lambda: app.send_task(add.name, (1, 2), **{name: value}))
    assert len(found) == 1
    text = str(found[0].message)
    assert f"{name!r}" in text and "has no effect in celeriac" in text


def test_eager_calls_warn_too(app: Celery, add: Any) -> None:
    app.conf.task_always_eager = True
    found = caught(lambda: add.apply_async((1, 2), errback=add.s(1)))
    assert len(found) == 1 and "'link_error'" in str(found[0].message)


def test_every_option_of_celerys_calls_is_known(add: Any) -> None:
    """Each name Celery's apply_async, send_task and kombu's publish take is either
    used by celeriac or warned about as Celery's (never as unknown)."""
    base = pytest.importorskip("celery.app.base")
    task = pytest.importorskip("celery.app.task")
    amqp = pytest.importorskip("celery.app.amqp")
    kombu = pytest.importorskip("kombu")
    names: set[str] = set()
    for function in (base.Celery.send_task, task.Task.apply_async, amqp.AMQP.as_task_v2,
                     kombu.Producer.publish):
        names |= set(inspect.signature(function).parameters)
    # the call's own arguments; as_task_v2's internal names for link and link_error
    # (passing them to Celery's apply_async is a TypeError); kombu's message parts
    names -= {"self", "name", "args", "kwargs", "options", "body", "properties",
              "callbacks", "errbacks", "create_sent_event"}
    for name in sorted(names):
        found = caught(lambda: add.apply_async((1, 2), **{name: HONOURED.get(name)}))
        assert all("unknown" not in str(w.message) for w in found), name


def test_add_to_parent_false_keeps_a_task_out_of_its_senders_children(
        app: Celery, add: Any) -> None:
    from celeriac import _state
    from celeriac.task import Context

    sender = app.tasks[add.name]
    sender.push_request(Context(id="sender-id", root_id="sender-id", called_directly=False))
    token = _state.current_task.set(sender)
    try:
        kept = add.delay(1, 1)
        add.apply_async((1, 1), add_to_parent=False)
        children = sender.request.children
    finally:
        _state.current_task.reset(token)
        sender.pop_request()
    assert children == [kept]


def test_route_name_argsrepr_and_result_cls(app: Celery, add: Any,
                                            published: list[dict[str, Any]]) -> None:
    class Mine(AsyncResult):
        pass

    app.conf.task_routes = {"billing.*": {"queue": "billing"}}
    result = add.apply_async((1, 2), route_name="billing.charge", argsrepr="(<card>,)",
                             kwargsrepr="{}", result_cls=Mine)
    assert isinstance(result, Mine) and result.app is app
    (message,) = published
    assert message["routing_key"] == "billing"
    assert message["headers"]["argsrepr"] == "(<card>,)"
    assert message["headers"]["kwargsrepr"] == "{}"
