"""QueueOnce's rules, run eagerly and on in-process or file lock stores."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, shared_task, states
from celeriac.contrib.once import (
    AlreadyQueued,
    File,
    Memory,
    QueueOnce,
    SQLite,
    queue_once_key,
)
from celeriac.exceptions import ImproperlyConfigured


def _app(**settings: Any) -> Celery:
    return Celery("onceunit", broker="memory://", set_as_current=False, **settings)


def test_the_key_is_celery_onces_task_name_and_sorted_arguments() -> None:
    app = _app()

    @app.task(base=QueueOnce)
    def add(b: int, a: int = 0) -> int:
        return a + b

    assert add.get_key((2,), {"a": 1}) == "qo_test_once_unit.add_a-1_b-2"
    assert add.get_key((2,)) == "qo_test_once_unit.add_b-2"  # as celery_once: defaults not bound
    assert queue_once_key("t", {"x": 1, "y": 2}, keys=[]) == "qo_t"
    with pytest.raises(ImproperlyConfigured, match="'z'"):
        queue_once_key("t", {"x": 1}, keys=["z"])


def test_a_queued_task_cannot_be_queued_again_with_the_same_arguments() -> None:
    app = _app()

    @app.task(once={"keys": ["user"]})
    def sync(user: str, full: bool = False) -> str:
        return user

    sync.delay("ann")
    with pytest.raises(AlreadyQueued) as refused:
        sync.delay("ann", full=True)  # 'full' is not part of the lock
    assert refused.value.countdown == 3600 and "3600" in refused.value.message
    sync.delay("bob")
    graceful = sync.apply_async(("ann",), once={"graceful": True})
    assert graceful.state == states.REJECTED and graceful.get() is None
    with pytest.raises(TypeError, match="keys"):
        sync.apply_async(("cat",), once={"keys": []})  # only on the task, as celery_once


def test_the_timeout_comes_from_the_call_the_task_or_the_once_setting() -> None:
    app = _app(ONCE={"backend": "celeriac.contrib.once.Memory",
                     "settings": {"default_timeout": 120}})

    @app.task(once=True)
    def job(n: int) -> int:
        return n

    @app.task(once={"timeout": 30})
    def short(n: int) -> int:
        return n

    job.delay(1)
    job.apply_async((2,), once={"timeout": 10})
    short.delay(1)
    countdowns = []
    for task, n in ((job, 1), (job, 2), (short, 1)):
        with pytest.raises(AlreadyQueued) as refused:
            task.delay(n)
        countdowns.append(refused.value.countdown)
    assert countdowns == [120, 10, 30]


def test_the_lock_is_released_when_the_task_ends_whatever_the_outcome() -> None:
    app = _app(task_always_eager=True)
    runs: list[int] = []

    @app.task(base=QueueOnce, bind=True, max_retries=2)
    def flaky(self: Any, n: int) -> int:
        runs.append(n)
        # a retry goes on with the lock held: sending it again meanwhile is refused
        with pytest.raises(AlreadyQueued):
            flaky.delay(n)
        if self.request.retries < 2:
            raise self.retry(countdown=0)
        raise ValueError("gave up")

    assert flaky.delay(1).state == states.FAILURE
    assert runs == [1, 1, 1]
    assert flaky.delay(1).state == states.FAILURE  # released at the end: queued again


def test_unlock_before_run_releases_when_the_task_starts() -> None:
    app = _app(task_always_eager=True)
    inside: list[bool] = []

    @app.task(base=QueueOnce, once={"unlock_before_run": True})
    def job() -> None:
        try:
            job.apply_async(once={"graceful": False})  # nested: runs at once, eagerly
            inside.append(True)
        except AlreadyQueued:
            inside.append(False)

    job.delay()
    assert inside[0] is True


def test_calling_directly_or_apply_takes_no_lock_and_releases_none() -> None:
    app = _app()

    @app.task(once=True)
    def job(n: int) -> int:
        return n

    job.delay(1)
    assert job(1) == 1
    with pytest.warns(UserWarning, match="once option has no effect on apply"):
        assert job.apply((1,), once={"graceful": True}).get() == 1
    with pytest.raises(AlreadyQueued):  # apply() did not release the queued one's lock
        job.delay(1)


def test_a_send_that_fails_releases_the_lock(tmp_path: Path) -> None:
    app = _app(ONCE={"backend": "celeriac.contrib.once.Memory"})

    @app.task(once=True)
    def job() -> None:
        return None

    with pytest.raises(TypeError):
        job.apply_async(countdown="soon")  # refused by the sender, after the lock
    job.delay()  # the lock was given back


def test_a_token_keeps_an_old_run_from_releasing_a_newer_lock() -> None:
    memory = Memory({})
    old = memory.raise_or_lock("k", timeout=0.0001)
    while True:  # expired (a count, not a time: it expires after one tick or so)
        try:
            new = memory.raise_or_lock("k", timeout=60)
            break
        except AlreadyQueued:
            continue
    memory.clear_lock("k", old)
    with pytest.raises(AlreadyQueued):
        memory.raise_or_lock("k", timeout=60)
    memory.clear_lock("k", new)
    memory.raise_or_lock("k", timeout=60)


@pytest.mark.parametrize("backend", ["sqlite", "file"])
def test_file_locks_are_shared_and_expire(tmp_path: Path, backend: str) -> None:
    def store() -> Any:
        if backend == "sqlite":
            return SQLite({"url": f"sqlite:///{tmp_path / 'locks.sqlite3'}"})
        return File({"location": str(tmp_path / "locks")})

    one, two = store(), store()  # two clients, as two processes would be
    token = one.raise_or_lock("k", timeout=60)
    with pytest.raises(AlreadyQueued):
        two.raise_or_lock("k", timeout=60)
    two.clear_lock("k", "not-the-token")
    with pytest.raises(AlreadyQueued):
        one.raise_or_lock("k", timeout=60)
    one.clear_lock("k", token)
    two.raise_or_lock("short", timeout=0.001)
    tries = 0
    while True:
        tries += 1
        try:
            one.raise_or_lock("short", timeout=60)
            break
        except AlreadyQueued:
            assert tries < 100_000


def test_the_once_setting_is_checked_and_takes_celery_onces_names(tmp_path: Path) -> None:
    location = str(tmp_path / "celery_once")
    app = _app(ONCE={"backend": "celery_once.backends.File",
                     "settings": {"location": location, "default_timeout": 5}})

    @app.task(base=QueueOnce)
    def job() -> None:
        return None

    assert isinstance(job.once_backend, File)
    job.delay()
    assert Path(location, "celeriac-once.sqlite3").exists()
    with pytest.raises(AlreadyQueued) as refused:
        job.delay()
    assert refused.value.countdown == 5
    for bad, words in (({"backend": "celeriac.contrib.once.Redis",
                         "settings": {"host": "x"}}, "'host'"),
                       ({"settings": {}}, "must be a dict"),
                       ({"backend": "celeriac.contrib.once.Memory", "extra": 1}, "'extra'")):
        app.conf.ONCE = bad
        with pytest.raises(ImproperlyConfigured, match=words):
            job.delay()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _app(ONCE={"backend": "celeriac.contrib.once.Memory"})  # a known setting


def test_a_broker_that_cannot_hold_locks_asks_for_the_once_setting() -> None:
    app = Celery("onceunit", broker="amqp://guest@127.0.0.1//", set_as_current=False)

    @app.task(once=True)
    def job() -> None:
        return None

    with pytest.raises(ImproperlyConfigured, match="app.conf.ONCE"):
        job.delay()


def test_a_celery_once_style_backend_works_without_tokens() -> None:
    held: set[str] = set()

    class Plain:
        def __init__(self, settings: dict[str, Any]) -> None:
            self.settings = settings

        def raise_or_lock(self, key: str, timeout: float) -> None:
            if key in held:
                raise AlreadyQueued(timeout)
            held.add(key)

        def clear_lock(self, key: str) -> None:
            held.discard(key)

    app = _app(task_always_eager=True, ONCE={"backend": Plain, "settings": {}})

    @app.task(base=QueueOnce)
    def job(n: int) -> int:
        assert held == {"qo_test_once_unit.job_n-1"}
        return n

    assert job.delay(1).get() == 1
    assert held == set()


def test_shared_tasks_and_custom_bases_take_the_once_option() -> None:
    app = _app()

    class Base(app.Task):  # type: ignore[name-defined,misc]
        custom = True

    @app.task(base=Base, once={"graceful": True})
    def job() -> None:
        return None

    @shared_task(once=True)
    def shared() -> None:
        return None

    assert isinstance(job, QueueOnce) and job.custom
    assert isinstance(shared, QueueOnce)
    job.delay()
    assert job.delay().state == states.REJECTED
    with pytest.raises(TypeError, match="once option"):
        app.task(once="yes")(lambda: None)

    @app.task(once=False)
    def plain() -> None:
        return None

    assert not isinstance(plain, QueueOnce)
