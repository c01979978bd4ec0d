"""Task retries, publish retries, ignore_result, annotations and eager runs, in one process.

A stub broker stands in for the transport where a test needs a publish to fail.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

from celeriac import Celery, messages, signals
from celeriac.exceptions import MaxRetriesExceededError, Reject, Retry
from celeriac.retries import (
    backoff_delay,
    call_with_retry,
    is_connection_error,
    resend_options,
)
from celeriac.task import Context
from celeriac.worker.outcome import takes_request as _takes_request


class StubBroker:
    """Records publishes; the first ``failures`` ones raise ``error``."""

    def __init__(self, failures: int = 0, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionRefusedError("broker down")
        self.attempts = 0
        self.published: list[tuple[str, dict[str, Any], float | None]] = []

    def publish(self, queue: str, payload: str, priority: int = 0,
                eta: float | None = None) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error
        self.published.append((queue, json.loads(payload), eta))


@pytest.fixture
def app() -> Celery:
    return Celery("proj", broker="memory://", backend="memory://")


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr("celeriac.retries._sleep", waited.append)
    return waited


def use_broker(monkeypatch: pytest.MonkeyPatch, app: Celery, broker: StubBroker) -> None:
    monkeypatch.setattr(app, "producer_broker", lambda: broker)


# -- back-off ------------------------------------------------------------------------------
def test_backoff_is_exponential_and_capped() -> None:
    assert [backoff_delay(1, n, 600, jitter=False) for n in range(5)] == [1, 2, 4, 8, 16]
    assert [backoff_delay(0.5, n, 3, jitter=False) for n in range(5)] == [0.5, 1, 2, 3, 3]
    assert backoff_delay(1, 30, None, jitter=False) == 2 ** 30


def test_backoff_jitter_stays_between_zero_and_the_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    bounds: list[tuple[float, float]] = []
    monkeypatch.setattr("celeriac.retries.random.uniform",
                        lambda a, b: bounds.append((a, b)) or b / 2)
    assert backoff_delay(2, 3, 10, jitter=True) == 5
    assert bounds == [(0, 10)]
    monkeypatch.undo()
    for _ in range(100):
        assert 0 <= backoff_delay(1, 4, 600, jitter=True) <= 16


# -- publish retries ----------------------------------------------------------------------------
def test_call_with_retry_follows_the_policy(sleeps: list[float]) -> None:
    broker = StubBroker(failures=3)
    policy = {"max_retries": 5, "interval_start": 0.1, "interval_step": 0.2,
              "interval_max": 0.4}
    call_with_retry(lambda: broker.publish("q", "{}"), policy)
    assert broker.attempts == 4 and len(broker.published) == 1
    assert sleeps == pytest.approx([0.1, 0.3, 0.4])


def test_call_with_retry_gives_up_after_max_retries(sleeps: list[float]) -> None:
    broker = StubBroker(failures=10)
    with pytest.raises(ConnectionRefusedError):
        call_with_retry(lambda: broker.publish("q", "{}"), {"max_retries": 2})
    assert broker.attempts == 3
    # interval_start 0 is not slept; then the default step of 0.2
    assert sleeps == pytest.approx([0.2])


def test_call_with_retry_forever_and_other_errors(sleeps: list[float]) -> None:
    broker = StubBroker(failures=8)
    call_with_retry(lambda: broker.publish("q", "{}"), {"max_retries": None})
    assert broker.attempts == 9

    bad = StubBroker(failures=5, error=ValueError("not a connection problem"))
    with pytest.raises(ValueError):
        call_with_retry(lambda: bad.publish("q", "{}"), {"max_retries": 3})
    assert bad.attempts == 1


def test_connection_errors_are_recognised() -> None:
    import redis

    assert is_connection_error(ConnectionResetError())
    assert is_connection_error(TimeoutError())  # the built-in one is an OSError
    assert is_connection_error(redis.exceptions.ConnectionError("gone"))
    assert is_connection_error(redis.exceptions.TimeoutError("slow"))
    assert not is_connection_error(redis.exceptions.ResponseError("WRONGTYPE"))
    assert not is_connection_error(ValueError())


def test_apply_async_retries_a_failed_publish(app: Celery, monkeypatch: pytest.MonkeyPatch,
                                              sleeps: list[float]) -> None:
    @app.task
    def add(x, y):
        return x + y

    broker = StubBroker(failures=2)
    use_broker(monkeypatch, app, broker)
    result = add.apply_async((1, 2), retry=True, retry_policy={
        "max_retries": 2, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 5})
    assert broker.attempts == 3 and broker.published[0][1]["headers"]["id"] == result.id
    assert sleeps == [0.5, 1.0]

    # default: task_publish_retry with Celery's policy (3 retries)
    broker = StubBroker(failures=4)
    use_broker(monkeypatch, app, broker)
    with pytest.raises(ConnectionRefusedError):
        add.delay(1, 2)
    assert broker.attempts == 4

    broker = StubBroker(failures=1)
    use_broker(monkeypatch, app, broker)
    with pytest.raises(ConnectionRefusedError):
        add.apply_async((1, 2), retry=False)
    assert broker.attempts == 1

    app.conf.task_publish_retry = False
    broker = StubBroker(failures=1)
    use_broker(monkeypatch, app, broker)
    with pytest.raises(ConnectionRefusedError):
        app.send_task("proj.add", (1, 2))
    assert broker.attempts == 1

    app.conf.task_publish_retry = True
    app.conf.task_publish_retry_policy = {"max_retries": 6}
    broker = StubBroker(failures=6)
    use_broker(monkeypatch, app, broker)
    add.delay(1, 2)
    assert broker.attempts == 7


def test_before_task_publish_gets_the_retry_policy(app: Celery,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    use_broker(monkeypatch, app, StubBroker())
    seen: list[Any] = []

    def receiver(sender: Any = None, **kwargs: Any) -> None:
        seen.append(kwargs["retry_policy"])

    signals.before_task_publish.connect(receiver)
    try:
        app.send_task("proj.add", (1, 2), retry_policy={"max_retries": 1})
        app.send_task("proj.add", (1, 2), retry=False)
    finally:
        signals.before_task_publish.disconnect(receiver)
    assert seen == [{"max_retries": 1}, None]


# -- Task.retry in a worker ------------------------------------------------------------------
def worker_request(app: Celery, name: str, args: list[Any], **fields: Any) -> Context:
    task_id = str(uuid.uuid4())
    message = messages.task_message(name, task_id, args, headers={"custom": "kept"},
                                    time_limit=30, soft_time_limit=20)
    decoded = messages.decode_task(message, None)
    from celeriac.worker.execute import request_from_message

    request = request_from_message(decoded, "node@host")
    request.__dict__.update(fields)
    return request


def test_retry_stores_retry_state_then_sends_the_same_task_again(
        app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    @app.task(bind=True, default_retry_delay=60)
    def flaky(self, x):
        raise self.retry(exc=KeyError("missing"))

    broker = StubBroker()
    use_broker(monkeypatch, app, broker)
    request = worker_request(app, flaky.name, [1])
    stored_before_publish: list[str] = []
    original_publish = broker.publish

    def publish(*args: Any, **kwargs: Any) -> None:
        stored_before_publish.append(app.AsyncResult(request.id).state)
        original_publish(*args, **kwargs)

    broker.publish = publish  # type: ignore[method-assign]
    flaky.push_request(request)
    try:
        with pytest.raises(Retry) as raised:
            flaky.run(1)
    finally:
        flaky.pop_request()
    assert stored_before_publish == ["RETRY"]
    assert isinstance(app.AsyncResult(request.id).info, KeyError)
    assert raised.value.when == 60 and isinstance(raised.value.exc, KeyError)
    queue, envelope, eta = broker.published[0]
    headers = envelope["headers"]
    assert queue == "celery" and eta is not None
    assert headers["id"] == request.id and headers["retries"] == 1
    assert headers["custom"] == "kept" and headers["timelimit"] == [30, 20]
    assert headers["parent_id"] is None and headers["root_id"] == request.id
    assert datetime.fromisoformat(headers["eta"]) > datetime.now(timezone.utc)


def test_retry_that_cannot_be_sent_rejects_the_message(
        app: Celery, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    @app.task(bind=True)
    def flaky(self):
        raise self.retry(countdown=1)

    use_broker(monkeypatch, app, StubBroker(failures=100))
    flaky.push_request(worker_request(app, flaky.name, []))
    try:
        with pytest.raises(Reject) as raised:
            flaky.run()
    finally:
        flaky.pop_request()
    assert raised.value.requeue is False


def test_resend_options_keep_the_workflow() -> None:
    request = Context(
        id="t1", root_id="r", parent_id="p", group="g", group_index=2, shadow=None,
        callbacks=[{"task": "cb"}], errbacks=None, chain=None, chord=None,
        timelimit=[10, 5], expires="2030-01-01T00:00:00+00:00", reply_to="",
        ignore_result=True, headers={"retries": 3, "task": "x", "trace": "abc"},
        delivery_info={"exchange": "", "routing_key": "high"}, properties={"priority": 7})
    options = resend_options(request)
    assert options["queue"] == "high" and options["priority"] == 7
    assert options["headers"] == {"trace": "abc"}
    assert options["time_limit"] == 10 and options["soft_time_limit"] == 5
    assert options["expires"] == datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert options["link"] == [{"task": "cb"}] and options["ignore_result"] is True
    assert (options["task_id"], options["root_id"], options["parent_id"]) == ("t1", "r", "p")


# -- retries run eagerly ------------------------------------------------------------------------
def test_eager_retry_runs_again_until_success(app: Celery) -> None:
    seen: list[int] = []

    @app.task(bind=True, default_retry_delay=3600)
    def flaky(self, fail_times):
        seen.append(self.request.retries)
        if self.request.retries < fail_times:
            raise self.retry(exc=KeyError("again"))
        return self.request.retries

    result = flaky.apply((2,))
    assert result.get() == 2 and result.state == "SUCCESS"
    assert seen == [0, 1, 2]  # no wait: countdowns are not slept in apply()


def test_eager_retry_exhausted(app: Celery) -> None:
    @app.task(bind=True, max_retries=2)
    def with_exc(self):
        raise self.retry(exc=KeyError("gave up"))

    @app.task(bind=True, max_retries=1)
    def without_exc(self):
        raise self.retry()

    result = with_exc.apply()
    assert result.state == "FAILURE" and isinstance(result.result, KeyError)
    with pytest.raises(KeyError):
        result.get()
    assert isinstance(without_exc.apply().result, MaxRetriesExceededError)
    with pytest.raises(MaxRetriesExceededError):
        without_exc.apply(throw=True)


def test_eager_retry_forever_and_override(app: Celery) -> None:
    runs: list[int] = []

    @app.task(bind=True, max_retries=None)
    def forever(self):
        runs.append(self.request.retries)
        if self.request.retries < 10:
            raise self.retry()
        return "done"

    @app.task(bind=True, max_retries=10)
    def override(self):
        runs.append(self.request.retries)
        raise self.retry(exc=ValueError("x"), max_retries=1)

    assert forever.apply().get() == "done" and runs == list(range(11))
    runs.clear()
    assert override.apply().state == "FAILURE" and runs == [0, 1]


def test_retry_with_new_arguments(app: Celery) -> None:
    @app.task(bind=True)
    def countdown(self, n):
        if n:
            raise self.retry(args=(n - 1,), countdown=0)
        return self.request.retries

    assert countdown.apply((3,)).get() == 3


def test_direct_call_raises_the_error_instead_of_retrying(app: Celery) -> None:
    @app.task(bind=True)
    def flaky(self, exc):
        raise self.retry(exc=exc)

    with pytest.raises(KeyError):
        flaky(KeyError("direct"))
    with pytest.raises(Retry):
        flaky(None)


def test_on_retry_and_task_retry_signal_in_apply(app: Celery) -> None:
    calls: list[Any] = []

    class Recording(app.Task):  # type: ignore[name-defined,misc]
        def on_retry(self, exc, task_id, args, kwargs, einfo):
            calls.append(("on_retry", repr(exc), args, type(einfo.exception).__name__))

        def after_return(self, status, retval, task_id, args, kwargs, einfo):
            calls.append(("after_return", status))

    @app.task(bind=True, base=Recording)
    def flaky(self, x):
        if not self.request.retries:
            raise self.retry(exc=KeyError("k"))
        return x

    def receiver(sender: Any = None, request: Any = None, reason: Any = None,
                 einfo: Any = None, **kwargs: Any) -> None:
        calls.append(("signal", sender.name, request.id, type(reason).__name__))

    signals.task_retry.connect(receiver)
    try:
        result = flaky.apply((5,))
    finally:
        signals.task_retry.disconnect(receiver)
    assert result.get() == 5
    assert calls == [
        ("on_retry", "KeyError('k')", [5], "Retry"),
        ("signal", flaky.name, result.id, "Retry"),
        ("after_return", "RETRY"),
        ("after_return", "SUCCESS"),
    ]


# -- autoretry ---------------------------------------------------------------------------------
def test_autoretry_for_and_dont_autoretry_for(app: Celery) -> None:
    runs: list[str] = []

    @app.task(autoretry_for=(LookupError,), dont_autoretry_for=(IndexError,),
              retry_kwargs={"max_retries": 2})
    def picky(kind):
        runs.append(kind)
        raise {"key": KeyError, "index": IndexError, "value": ValueError}[kind]("x")

    assert isinstance(picky.apply(("key",)).result, KeyError) and runs == ["key"] * 3
    runs.clear()
    assert isinstance(picky.apply(("index",)).result, IndexError) and runs == ["index"]
    runs.clear()
    assert isinstance(picky.apply(("value",)).result, ValueError) and runs == ["value"]
    with pytest.raises(KeyError):
        picky("key")  # a direct call: nothing can retry it


def test_autoretry_backoff_sets_the_countdown(app: Celery,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    whens: list[Any] = []

    @app.task(bind=True, autoretry_for=(KeyError,), retry_backoff=2, retry_backoff_max=5,
              retry_jitter=False, max_retries=4)
    def slow(self):
        raise KeyError("x")

    def receiver(sender: Any = None, reason: Any = None, **kwargs: Any) -> None:
        whens.append(reason.when)

    signals.task_retry.connect(receiver)
    try:
        slow.apply()
    finally:
        signals.task_retry.disconnect(receiver)
    assert whens == [2, 4, 5, 5]

    slow.retry_jitter = True  # type: ignore[attr-defined]
    monkeypatch.setattr("celeriac.retries.random.uniform", lambda a, b: b / 4)
    whens.clear()
    signals.task_retry.connect(receiver)
    try:
        slow.apply()
    finally:
        signals.task_retry.disconnect(receiver)
    assert whens == [0.5, 1, 1.25, 1.25]


def test_autoretry_of_async_and_class_based_tasks(app: Celery) -> None:
    runs: list[int] = []

    @app.task(bind=True, autoretry_for=(KeyError,), max_retries=1)
    async def coro(self):
        runs.append(self.request.retries)
        raise KeyError("x")

    assert isinstance(coro.apply().result, KeyError) and runs == [0, 1]

    class Flaky(app.Task):  # type: ignore[name-defined,misc]
        name = "proj.Flaky"
        autoretry_for = (KeyError,)
        max_retries = 2

        def run(self):
            runs.append(self.request.retries)
            raise KeyError("y")

    task = app.register_task(Flaky)
    runs.clear()
    assert task.apply().state == "FAILURE" and runs == [0, 1, 2]


# -- task_always_eager, links ----------------------------------------------------------------
def test_always_eager_runs_links_and_errbacks_in_process(app: Celery) -> None:
    app.conf.task_always_eager = True
    got: list[Any] = []

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def collect(*args):
        got.append(("collect", args))

    @app.task
    def boom():
        raise KeyError("boom")

    @app.task
    def on_error(request, exc, traceback):
        got.append(("errback", request.id, repr(exc), "KeyError" in traceback))

    @app.task
    def old_errback(task_id):
        got.append(("old", task_id))

    assert add.delay(2, 3).get() == 5
    add.apply_async((1, 1), link=[collect.s("x"), collect.si("fixed")])
    assert got == [("collect", (2, "x")), ("collect", ("fixed",))]
    got.clear()
    failed = boom.apply_async(link_error=[on_error.s(), old_errback.s()])
    assert failed.state == "FAILURE"
    assert got == [("errback", failed.id, "KeyError('boom')", True), ("old", failed.id)]


def test_errback_kind_is_read_from_the_signature() -> None:
    app = Celery("proj", broker="memory://")

    @app.task
    def new(request, exc, traceback):
        pass

    @app.task
    def new_with_partial(request, exc, traceback, extra):
        pass

    @app.task
    def old(task_id, extra, more):
        pass

    @app.task
    def star(*args):
        pass

    assert _takes_request(new, 0) and _takes_request(new_with_partial, 1)
    assert not _takes_request(old, 2) and _takes_request(star, 0)


# -- ignore_result ------------------------------------------------------------------------------
def test_ignored_results_come_back_as_none_at_once(app: Celery,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    use_broker(monkeypatch, app, StubBroker())

    @app.task(name="proj.add")
    def add(x, y):
        return x + y

    @app.task(ignore_result=True)
    def quiet():
        pass

    assert add.apply_async((1, 2), ignore_result=True).get(timeout=0.01) is None
    assert quiet.delay().get(timeout=0.01) is None
    by_name = app.send_task("proj.add", (1, 2), ignore_result=True)
    assert by_name.ignored and by_name.get() is None
    assert not app.AsyncResult(by_name.id).ignored  # the id alone cannot know
    app.conf.task_ignore_result = True
    assert add.delay(1, 2).ignored
    assert not add.apply_async((1, 2), ignore_result=False).ignored


# -- annotations -------------------------------------------------------------------------------
def test_annotations_set_after_the_task_is_defined(app: Celery,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    use_broker(monkeypatch, app, StubBroker())
    failures: list[str] = []

    @app.task(name="proj.add")
    def add(x, y):
        return x + y

    @app.task(name="proj.other")
    def other():
        raise KeyError("x")

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        failures.append(f"{self.name}: {exc!r}")

    app.conf.task_annotations = {
        "*": {"rate_limit": "10/s", "priority": 3, "on_failure": on_failure},
        "proj.add": {"rate_limit": "1/m"},
    }
    add.delay(1, 2)  # first use applies them
    assert add.rate_limit == "1/m" and add.priority == 3
    other.apply()
    assert other.rate_limit == "10/s" and failures == ["proj.other: KeyError('x')"]


def test_annotation_forms_and_finalize(app: Celery) -> None:
    class ByObject:
        def annotate(self, task: Any) -> dict[str, Any] | None:
            return {"max_retries": 9} if task.name == "proj.add" else None

    @app.task(name="proj.add")
    def add(x, y):
        return x + y

    def around(orig: Any) -> Any:
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            return ("wrapped", orig(self, *args, **kwargs))
        return run

    app.conf.task_annotations = [ByObject(), lambda task: {"soft_time_limit": 5}]
    app.finalize()
    assert add.max_retries == 9 and add.soft_time_limit is None  # first match wins
    app.conf.task_annotations = [lambda task: {"soft_time_limit": 5}]
    add.apply()
    assert add.soft_time_limit == 5
    app.conf.task_annotations = {"proj.add": {"@__call__": around}}
    add.apply()
    assert add(1, 2) == ("wrapped", 3)
    app.conf.task_annotations = {"proj.add": {"@__call__": around}}
    add.apply()
    assert add(1, 2) == ("wrapped", 3)  # annotating again does not stack wrappers


def test_annotations_can_add_autoretry(app: Celery) -> None:
    runs: list[int] = []

    @app.task(bind=True, name="proj.flaky")
    def flaky(self):
        runs.append(self.request.retries)
        raise KeyError("x")

    app.conf.task_annotations = {"proj.flaky": {"autoretry_for": [KeyError],
                                                "max_retries": 1}}
    assert flaky.apply().state == "FAILURE" and runs == [0, 1]
