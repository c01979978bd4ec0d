"""Celery's API that seed code uses: ``current_app``, ``current_task``, ``app.start()``,
``app.worker_main()``, ``app.Worker``; and which unknown setting names warn (a web
framework's own keys do not, task-queue look-alikes and typos do)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from typing import Any

import pytest

import celeriac
from celeriac import Celery, current_app, current_task
from celeriac.config import Settings, UnknownSettingWarning
from celeriac.worker.main import Worker


def _unknown_warnings(values: dict[str, Any], **initial: Any) -> list[str]:
    conf = Settings(initial)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conf.update(values)
    return [str(w.message) for w in caught if w.category is UnknownSettingWarning]


# -- current_app / current_task ------------------------------------------------------------


def test_proxies_are_exported_as_celery_exports_them() -> None:
    assert {"current_app", "current_task"} <= set(celeriac.__all__)


def test_current_app_follows_the_current_app() -> None:
    first = Celery("parity_first", broker="memory://")
    assert current_app._get_current_object() is first  # type: ignore[attr-defined]
    assert isinstance(current_app, Celery)
    assert current_app.main == "parity_first"
    second = Celery("parity_second", broker="memory://")
    assert current_app.main == "parity_second"  # the same proxy, read again
    first.set_current()
    assert current_app == first
    current_app.conf.task_default_queue = "parity_q"  # writes reach the app
    assert first.conf.task_default_queue == "parity_q"
    assert second.conf.task_default_queue == "celery"


def test_current_app_without_an_app_is_a_default_one() -> None:
    code = ("from celeriac import current_app, Celery; "
            "print(current_app.main, isinstance(current_app, Celery), "
            "current_app._get_current_object() is current_app._get_current_object())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["default", "True", "True"]


def test_current_task_is_the_running_task() -> None:
    app = Celery("parity_task", broker="memory://", task_always_eager=True)
    seen: dict[str, Any] = {}

    @app.task(bind=True)
    def inspect_me(self: Any) -> str:
        seen["task"] = current_task._get_current_object()  # type: ignore[attr-defined]
        seen["name"] = current_task.name
        return str(current_task.request.id)

    @app.task
    def outer() -> str:
        # an eager call inside a task: current_task is the inner one while it runs
        inner = inspect_me.apply().get()
        seen["after_inner"] = current_task.name
        return str(inner)

    assert not current_task  # outside any task: falsy
    result = inspect_me.delay()
    assert result.get() == result.id
    assert seen["task"] is inspect_me and seen["name"] == inspect_me.name
    outer.delay().get()
    assert seen["after_inner"] == outer.name
    assert not current_task
    seen.clear()
    assert inspect_me() == "None"  # called directly: no task id, but current_task is it
    assert seen["task"] is inspect_me
    assert not current_task


# -- app.start / app.worker_main / app.Worker ----------------------------------------------


def test_start_runs_a_command_on_the_app(capsys: pytest.CaptureFixture[str]) -> None:
    app = Celery("parity_start", broker="memory://")
    assert app.start(["report"]) == 0
    assert "app      -> parity_start" in capsys.readouterr().out


def test_start_without_argv_takes_the_command_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    app = Celery("parity_argv", broker="memory://")
    monkeypatch.setattr(sys, "argv", ["tasks.py", "report"])  # python tasks.py report
    assert app.start() == 0
    assert "app      -> parity_argv" in capsys.readouterr().out


def test_start_reports_a_usage_error_as_the_program_does(
        capsys: pytest.CaptureFixture[str]) -> None:
    app = Celery("parity_usage", broker="memory://")
    with pytest.raises(SystemExit) as exited:
        app.start(["no-such-command"])
    assert exited.value.code == 2
    assert "No such command 'no-such-command'" in capsys.readouterr().err


def test_worker_main_needs_the_worker_command() -> None:
    app = Celery("parity_wm", broker="memory://")
    with pytest.raises(ValueError, match="worker command"):
        app.worker_main(["report"])


def test_app_worker_takes_celerys_keyword_names() -> None:
    app = Celery("parity_worker", broker="memory://")
    assert app.Worker is app.Worker  # one class per app
    assert issubclass(app.Worker, Worker)
    node = app.Worker(hostname="w1@example.com", pool_cls="threads", concurrency=3,
                      queues="a, b", exclude_queues=["b"], loglevel=10, quiet=True,
                      include="parity_extra_tasks", redirect_stdouts=False)
    assert node.app is app
    assert node.hostname == "w1@example.com"
    assert node.pool_name == "threads" and node.concurrency == 3
    assert node.queues == ["a"]
    assert node.loglevel == "DEBUG"
    assert node.banner is False
    assert node.redirect_stdouts is False
    assert app.conf.include == ["parity_extra_tasks"]
    assert node.exitcode is None  # set by start()


def test_app_worker_refuses_what_it_does_not_take() -> None:
    app = Celery("parity_worker_bad", broker="memory://")
    with pytest.raises(TypeError, match="statedb"):
        app.Worker(statedb="/tmp/x")
    with pytest.raises(TypeError, match="pool's name"):
        app.Worker(pool_cls=object)


# -- unknown settings: a web framework's keys pass, queue look-alikes warn ---------------


def test_flask_default_config_passes_quietly() -> None:
    flask = pytest.importorskip("flask")
    config = dict(flask.Flask("parity_flask").config)
    config.update(SECRET_KEY="x", SQLALCHEMY_DATABASE_URI="sqlite://", MAIL_SERVER="m",
                  REDIS_URL="redis://", CACHE_TYPE="SimpleCache", SECURITY_PASSWORD_SALT="s",
                  S3_BUCKET_NAME="b", CELERY={"broker_url": "memory://"})
    assert _unknown_warnings(config) == []


@pytest.mark.parametrize("name, hint", [
    ("CELERYD_CONCURENCY", "did you mean 'CELERYD_CONCURRENCY'"),
    ("CELERY_TASK_SERIALISER", "did you mean 'CELERY_TASK_SERIALIZER'"),
    ("BROKER_ULR", "did you mean 'BROKER_URL'"),
    ("CELERYBEAT_SCHEDULES", "did you mean 'CELERYBEAT_SCHEDULE'"),
    ("TASK_ACK_LATE", "did you mean 'TASK_ACKS_LATE'"),
    ("WORKER_CONCURENCY", "did you mean 'WORKER_CONCURRENCY'"),
    ("RESULT_EXPIRE", "did you mean 'RESULT_EXPIRES'"),
    ("broker_ulr", "did you mean 'broker_url'"),
    ("worker_concurency", "did you mean 'worker_concurrency'"),
    ("my_own_setting", "celeriac ignores it"),
])
def test_queue_looking_and_lowercase_unknown_names_still_warn(name: str, hint: str) -> None:
    messages = _unknown_warnings({name: 1})
    assert len(messages) == 1 and hint in messages[0], messages


def test_celery_prefixed_setting_warns_unless_it_repeats_the_setting() -> None:
    # make_celery: broker= given, and CELERY_BROKER_URL (the same URL) in app.config
    assert _unknown_warnings({"CELERY_BROKER_URL": "redis://h/0"},
                             broker_url="redis://h/0") == []
    # alone, or different, it is lost (Celery ignores it too): say so
    for initial in ({}, {"broker_url": "redis://other/0"}):
        messages = _unknown_warnings({"CELERY_BROKER_URL": "redis://h/0"}, **initial)
        assert len(messages) == 1 and "namespace='CELERY'" in messages[0]


def test_a_shared_task_runs_as_the_apps_task_class() -> None:
    # Celery builds each app's copy of a shared task on the app's Task class, so the
    # class's hooks apply to shared tasks too (a common Django set-up).
    from celeriac import Task, shared_task

    seen: list[Any] = []

    class Audited(Task):  # type: ignore[type-arg]
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            seen.append(retval)

    @shared_task
    def parity_shared_add(x: int, y: int) -> int:
        return x + y

    app = Celery("parity_shared", broker="memory://", task_cls=Audited)
    task = app.tasks[parity_shared_add.name]
    assert isinstance(task, Audited) and app.tasks[parity_shared_add.name] is task
    assert task(2, 3) == 5
    plain = Celery("parity_plain", broker="memory://")
    assert plain.tasks[parity_shared_add.name] is parity_shared_add

    @shared_task(base=Task)
    def parity_own_base() -> None:
        return None

    assert not isinstance(app.tasks[parity_own_base.name], Audited)  # its base stands
