"""Calling settings, in one process: what the client does with them.

``task_inherit_parent_priority`` (what a task sent from a running task is given),
``task_allow_error_cb_on_chord_header`` (where a chord's errback is linked),
``task_remote_tracebacks`` (the traceback a task's error is raised with), and the broker
connection settings the app hands its transports (``broker_connection_timeout``,
``broker_use_ssl``, ``broker_failover_strategy``, a fail-over ``broker_url``). Their
effects through real workers and servers are in ``tests/integration``.
"""

from __future__ import annotations

import json
import sys
import traceback
import uuid
import warnings
from typing import Any, Iterator

import pytest

import celeriac.result as result_module
from celeriac import Celery, _state, chord, signals, states
from celeriac.config import IgnoredSettingWarning
from celeriac.exceptions import ImproperlyConfigured
from celeriac.result import AsyncResult
from celeriac.task import Context


@pytest.fixture
def app() -> Iterator[Celery]:
    name = uuid.uuid4().hex
    app = Celery("calling_settings", broker=f"memory://{name}", backend=f"memory://{name}",
                 set_as_current=False)
    yield app
    app.close()


@pytest.fixture
def sent() -> Iterator[list[dict[str, Any]]]:
    """The name and properties of every message published while the test runs."""
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any = None, properties: Any = None, **kwargs: Any) -> None:
        seen.append({"name": sender, **(properties or {})})

    signals.before_task_publish.connect(receiver)
    yield seen
    signals.before_task_publish.disconnect(receiver)


# -- task_inherit_parent_priority ---------------------------------------------------------


def _running(task: Any, **request: Any) -> Any:
    """Make ``task`` the one running here, as a worker does (undone by the caller)."""
    token = _state.current_task.set(task)
    task.push_request(Context(id=str(uuid.uuid4()), called_directly=False, **request))
    return token


def _finish(task: Any, token: Any) -> None:
    task.pop_request()
    _state.current_task.reset(token)


@pytest.fixture
def tasks(app: Celery) -> Any:
    class Tasks:
        @staticmethod
        @app.task
        def parent() -> None:
            return None

        @staticmethod
        @app.task
        def child(x: int = 0) -> int:
            return x

        @staticmethod
        @app.task(priority=2)
        def own_priority() -> None:
            return None

    return Tasks


def test_without_task_inherit_parent_priority_a_child_gets_the_default(
        app: Celery, tasks: Any, sent: list[dict[str, Any]]) -> None:
    token = _running(tasks.parent, priority=7)
    try:
        tasks.child.delay(1)
        app.conf.task_default_priority = 4
        tasks.child.delay(2)
    finally:
        _finish(tasks.parent, token)
    assert [m["priority"] for m in sent] == [0, 4]


def test_task_inherit_parent_priority_gives_a_child_its_parent_s_priority(
        app: Celery, tasks: Any, sent: list[dict[str, Any]]) -> None:
    app.conf.task_inherit_parent_priority = True
    app.conf.task_default_priority = 4
    token = _running(tasks.parent, priority=7)
    try:
        tasks.child.delay(1)                          # inherited
        tasks.child.apply_async((2,), priority=1)     # given: wins
        tasks.own_priority.delay()                    # the task's own priority wins
        app.send_task(tasks.child.name, (3,))         # by name too
        tasks.child.s(4).delay()                      # and through a signature
    finally:
        _finish(tasks.parent, token)
    assert [m["priority"] for m in sent] == [7, 1, 2, 7, 7]


def test_inherited_priority_comes_after_a_route_s_priority(
        app: Celery, tasks: Any, sent: list[dict[str, Any]]) -> None:
    app.conf.task_inherit_parent_priority = True
    app.conf.task_routes = {tasks.child.name: {"queue": "routed", "priority": 5}}
    token = _running(tasks.parent, priority=7)
    try:
        tasks.child.delay(1)
    finally:
        _finish(tasks.parent, token)
    assert sent[0]["priority"] == 5


def test_a_parent_sent_with_no_priority_passes_none_on(
        app: Celery, tasks: Any, sent: list[dict[str, Any]]) -> None:
    # A message from a client that set no priority: the child gets the default.
    app.conf.task_inherit_parent_priority = True
    app.conf.task_default_priority = 3
    token = _running(tasks.parent, delivery_info={"routing_key": "celery"})
    try:
        tasks.child.delay(1)
    finally:
        _finish(tasks.parent, token)
    assert sent[0]["priority"] == 3


def test_the_priority_in_delivery_info_is_inherited_too(
        app: Celery, tasks: Any, sent: list[dict[str, Any]]) -> None:
    app.conf.task_inherit_parent_priority = True
    token = _running(tasks.parent, delivery_info={"priority": 8})
    try:
        tasks.child.delay(1)
    finally:
        _finish(tasks.parent, token)
    assert sent[0]["priority"] == 8


def test_outside_a_running_task_nothing_is_inherited(
        app: Celery, tasks: Any, sent: list[dict[str, Any]]) -> None:
    app.conf.task_inherit_parent_priority = True
    tasks.child.delay(1)
    assert sent[0]["priority"] == 0


# -- task_allow_error_cb_on_chord_header --------------------------------------------------


@pytest.fixture
def canvas_tasks(app: Celery) -> Any:
    @app.task
    def step(x: int) -> int:
        return x

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task
    def on_error(task_id: str) -> None:
        return None

    return step, total, on_error


def _errbacks(sig: Any) -> list[str]:
    return [e["task"] for e in sig.options.get("link_error") or []]


def test_chord_link_error_goes_to_the_body_only_by_default(app: Celery,
                                                          canvas_tasks: Any) -> None:
    step, total, on_error = canvas_tasks
    c = chord([step.s(1), step.s(2)], total.s())
    c.link_error(on_error.s())
    assert _errbacks(c.body) == [on_error.name]
    assert [_errbacks(t) for t in c.tasks] == [[], []]


def test_task_allow_error_cb_on_chord_header_links_the_header_tasks_too(
        app: Celery, canvas_tasks: Any) -> None:
    step, total, on_error = canvas_tasks
    app.conf.task_allow_error_cb_on_chord_header = True
    inner = chord([step.s(3)], total.s())
    c = chord([step.s(1), step.s(2) | step.s(), inner], total.s())
    errback = on_error.s()
    assert c.link_error(errback) is errback
    assert _errbacks(c.body) == [on_error.name]
    first, chained, nested = c.tasks
    assert _errbacks(first) == [on_error.name]
    assert _errbacks(chained) == [on_error.name]  # linked to each step when sent
    # A chord in the header links it the same way: its header and its body.
    assert _errbacks(nested.body) == [on_error.name]
    assert _errbacks(nested.tasks[0]) == [on_error.name]
    # Each header task has a copy of its own.
    assert first.options["link_error"][0] is not errback


def test_chord_apply_async_link_error_is_the_body_s_only(app: Celery,
                                                         canvas_tasks: Any) -> None:
    # Celery's rule: only chord.link_error() reaches the header, not the option.
    step, total, on_error = canvas_tasks
    app.conf.task_allow_error_cb_on_chord_header = True
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any = None, body: Any = None, **kwargs: Any) -> None:
        _, _, embed = json.loads(body) if isinstance(body, (bytes, str)) else body
        seen.append({"name": sender, "errbacks": embed.get("errbacks")})

    signals.before_task_publish.connect(receiver)
    try:
        chord([step.s(1), step.s(2)], total.s()).apply_async(link_error=on_error.s())
    finally:
        signals.before_task_publish.disconnect(receiver)
    assert [m["errbacks"] for m in seen] == [None, None]


# -- task_remote_tracebacks ---------------------------------------------------------------


def _worker_side_failure() -> tuple[ZeroDivisionError, str]:
    def remote_task_body() -> float:
        return 1 / 0

    def remote_caller() -> float:
        try:
            return remote_task_body()
        except ZeroDivisionError as exc:
            raise KeyError("context") from exc  # a chained error before the last one

    try:
        try:
            remote_caller()
        except KeyError:
            remote_task_body()
    except ZeroDivisionError as exc:
        return exc, "".join(traceback.format_exception(exc))
    raise AssertionError("unreachable")


def _stored_failure(app: Celery) -> AsyncResult:
    exc, text = _worker_side_failure()
    task_id = str(uuid.uuid4())
    app.backend.mark_as_failure(task_id, exc, text)
    return AsyncResult(task_id, app=app)


def _raised_frames(result: AsyncResult) -> list[str]:
    with pytest.raises(ZeroDivisionError) as info:
        result.get(timeout=5)
    return [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]


def test_task_errors_are_raised_without_the_remote_traceback_by_default(
        app: Celery) -> None:
    frames = _raised_frames(_stored_failure(app))
    assert "remote_task_body" not in frames


def test_task_remote_tracebacks_raises_with_the_worker_s_traceback(app: Celery) -> None:
    pytest.importorskip("tblib")
    app.conf.task_remote_tracebacks = True
    result = _stored_failure(app)
    frames = _raised_frames(result)
    # The worker's frames of the error raised, after the caller's own: not those of
    # the errors it was chained to.
    assert frames[-1] == "remote_task_body"
    assert "remote_caller" not in frames
    assert frames.index("_raised_frames") < frames.index("remote_task_body")
    # Without propagation the exception is returned as before.
    assert isinstance(result.get(propagate=False), ZeroDivisionError)
    assert isinstance(result.result, ZeroDivisionError)


def test_task_remote_tracebacks_without_tblib_warns_once_and_still_raises(
        app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tblib", None)  # import tblib -> ImportError
    monkeypatch.setattr(result_module, "_warned_no_tblib", False)
    app.conf.task_remote_tracebacks = True
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        frames = _raised_frames(_stored_failure(app))
        _raised_frames(_stored_failure(app))
    assert "remote_task_body" not in frames
    messages = [str(w.message) for w in found if issubclass(w.category, IgnoredSettingWarning)]
    assert len(messages) == 1
    assert "task_remote_tracebacks" in messages[0] and "pip install tblib" in messages[0]


def test_a_traceback_tblib_cannot_read_is_left_out(app: Celery) -> None:
    pytest.importorskip("tblib")
    app.conf.task_remote_tracebacks = True
    task_id = str(uuid.uuid4())
    app.backend.mark_as_failure(task_id, ValueError("odd"), "not a traceback at all")
    with pytest.raises(ValueError, match="odd"):
        AsyncResult(task_id, app=app).get(timeout=5)
    assert AsyncResult(task_id, app=app).state == states.FAILURE


# -- broker connection settings -----------------------------------------------------------


def test_broker_connection_timeout_reaches_the_transport(app: Celery) -> None:
    assert app._broker_options()["socket_connect_timeout"] == 4  # Celery's default
    app.conf.broker_connection_timeout = 1.5
    assert app._broker_options()["socket_connect_timeout"] == 1.5
    # The transport option says the same thing more precisely, and wins.
    app.conf.broker_transport_options = {"socket_connect_timeout": 9}
    assert app._broker_options()["socket_connect_timeout"] == 9


def test_broker_connection_timeout_is_the_redis_socket_connect_timeout() -> None:
    pytest.importorskip("redis")
    app = Celery("timeouts", broker="redis://127.0.0.1:1/0", backend="memory://",
                 set_as_current=False, broker_connection_timeout=2.5)
    broker: Any = app.connect_broker()  # no connection is made until a command
    try:
        kwargs = broker._redis.client().connection_pool.connection_kwargs
        assert kwargs["socket_connect_timeout"] == 2.5
    finally:
        broker.close()


def test_broker_use_ssl_and_failover_strategy_reach_the_transport(app: Celery) -> None:
    options = app._broker_options()
    assert "ssl" not in options and "failover_strategy" not in options
    app.conf.broker_use_ssl = {"ssl_cert_reqs": "required"}
    app.conf.broker_failover_strategy = "shuffle"
    options = app._broker_options()
    assert options["ssl"] == {"ssl_cert_reqs": "required"}
    assert options["failover_strategy"] == "shuffle"


def test_broker_use_ssl_makes_the_redis_broker_connect_with_tls() -> None:
    import ssl

    pytest.importorskip("redis")
    app = Celery("tls", broker="redis://127.0.0.1:1/0", backend="memory://",
                 set_as_current=False)
    app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED,
                               "ca_certs": "/etc/ca.pem"}  # py-amqp's name works too
    broker: Any = app.connect_broker()  # no connection is made until a command
    try:
        assert broker._redis.url.startswith("rediss://127.0.0.1:1/")
        kwargs = broker._redis.client().connection_pool.connection_kwargs
        assert kwargs["ssl_cert_reqs"] == "required"
        assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    finally:
        broker.close()
    app.conf.broker_use_ssl = {"server_side": True}
    with pytest.raises(ImproperlyConfigured, match="not a Redis TLS option"):
        app.connect_broker()
    app.conf.broker_use_ssl = "yes"
    with pytest.raises(ImproperlyConfigured, match="True or a dict"):
        app.connect_broker()


def test_broker_use_ssl_on_a_broker_that_is_not_redis_warns(tmp_path: Any) -> None:
    app = Celery("tls_sqlite", broker=f"sqlite:///{tmp_path / 'b.sqlite3'}",
                 set_as_current=False)
    app.conf.broker_use_ssl = True
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        broker = app.connect_broker()
    broker.close()
    app.close()
    assert any("broker_use_ssl has no effect on the sqlite://" in str(w.message)
               for w in found if issubclass(w.category, IgnoredSettingWarning))


@pytest.mark.parametrize("url", [
    "memory://a;memory://b",
    ["sqlite:///one.sqlite3", "sqlite:///two.sqlite3"],
])
def test_a_failover_list_on_a_broker_that_is_not_redis_is_refused(url: Any) -> None:
    app = Celery("failover_elsewhere", broker=None, set_as_current=False)
    app.conf.broker_url = url
    with pytest.raises(ImproperlyConfigured, match="fail-over list.*Redis only"):
        app.connect_broker()
    with pytest.raises(ImproperlyConfigured, match="fail-over list"):
        app.producer_broker()


def test_a_failover_list_is_one_string_for_the_transports() -> None:
    app = Celery("failover_string", set_as_current=False)
    app.conf.broker_url = ["redis://a:6379/0", "redis://b:6379/0"]
    assert app.broker_url == "redis://a:6379/0;redis://b:6379/0"
    assert app.broker_read_url == app.broker_write_url == app.broker_url
    app.conf.broker_write_url = ["redis://c:6379/0", "redis://d:6379/0"]
    assert app.broker_write_url == "redis://c:6379/0;redis://d:6379/0"


# -- task_repr_maxlevels ------------------------------------------------------------------


def _published(app: Celery, *args: Any, **kwargs: Any) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any = None, headers: Any = None, body: Any = None,
                 **extra: Any) -> None:
        seen.append({"headers": headers,
                     "body": json.loads(body) if isinstance(body, (bytes, str)) else body})

    signals.before_task_publish.connect(receiver)
    try:
        app.send_task("calling_settings.anything", args, kwargs)
    finally:
        signals.before_task_publish.disconnect(receiver)
    return seen[0]


def _reprs(app: Celery, *args: Any, **kwargs: Any) -> tuple[str, str]:
    headers = _published(app, *args, **kwargs)["headers"]
    return headers["argsrepr"], headers["kwargsrepr"]


def test_task_repr_maxlevels_bounds_the_argument_headers(app: Celery) -> None:
    nested = [[[[1]]]]
    assert _reprs(app, 1, "a", k=None) == ("(1, 'a')", "{'k': None}")
    assert _reprs(app, nested, k={"a": {"b": {"c": 1}}}) == (
        "([[[...]]],)", "{'k': {'a': {'b': {...}}}}")
    app.conf.task_repr_maxlevels = 5
    assert _reprs(app, nested)[0] == "([[[[1]]]],)"


def test_argument_headers_are_cut_to_celery_s_size_but_arguments_are_not(
        app: Celery) -> None:
    message = _published(app, "x" * 5000)
    argsrepr = message["headers"]["argsrepr"]
    assert len(argsrepr) == 1024 and argsrepr.endswith("...")
    assert message["body"][0] == ["x" * 5000]
