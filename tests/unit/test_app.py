"""The app, tasks and the -A loader, in one process."""

from __future__ import annotations

import sys
import uuid
from typing import Any
from pathlib import Path

import pytest

from celeriac import Celery, Task, shared_task
from celeriac.cli.app_loader import find_app
from celeriac.exceptions import ImproperlyConfigured, NotRegistered, UnknownTransport
from celeriac.worker.main import Worker, format_hostname


def test_task_decorator_forms_and_names() -> None:
    app = Celery("proj", broker="memory://")

    @app.task
    def plain(x):
        return x

    @app.task(name="custom.name", ignore_result=True, max_retries=7)
    def named(x):
        return x

    assert plain.name == "proj.plain" or plain.name.endswith(".plain")
    assert named.name == "custom.name" and named.ignore_result and named.max_retries == 7
    assert app.tasks["custom.name"] is named
    assert plain(3) == 3
    with pytest.raises(NotRegistered, match="include"):
        app.tasks["nope"]


def test_bind_and_custom_base() -> None:
    app = Celery("proj", broker="memory://")
    calls = []

    class Audited(Task):
        def on_success(self, retval, task_id, args, kwargs):
            calls.append(retval)

    @app.task(bind=True, base=Audited)
    def double(self, x):
        assert isinstance(self, Audited)
        return x * 2

    assert double.apply((4,)).get() == 8
    assert calls == [8]


def test_app_task_attribute_sets_the_base_of_later_tasks() -> None:
    app = Celery("proj", broker="memory://")
    entered = []

    class ContextTask(app.Task):
        def __call__(self, *args, **kwargs):
            entered.append(self.name)
            return self.run(*args, **kwargs)

    app.Task = ContextTask

    @app.task
    def inside():
        return "ok"

    assert isinstance(inside, ContextTask)
    assert inside() == "ok" and entered == [inside.name]


def test_shared_task_binds_to_the_current_app() -> None:
    @shared_task
    def shared_double(x):
        return x * 2

    app = Celery("later", broker="memory://")
    assert shared_double.app is app
    assert shared_double.name in app.tasks
    assert app.tasks[shared_double.name] is shared_double


def test_settings_by_keyword_and_old_names() -> None:
    app = Celery("proj", broker="memory://", CELERY_TASK_SERIALIZER="json",
                 task_default_queue="work")
    assert app.conf.task_serializer == "json"
    assert app.conf.task_default_queue == "work"
    assert app.conf.broker_url == "memory://"


def test_unknown_broker_scheme_is_a_clear_error() -> None:
    app = Celery("proj", broker="kafka://localhost")
    with pytest.raises(UnknownTransport) as info:
        app.producer_broker()
    assert "kafka" in str(info.value) and "redis" in str(info.value)
    assert "sqlite" in str(info.value)


def test_default_is_one_sqlite_file_in_the_working_directory(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CELERIAC_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    app = Celery("tasks")
    expected = str(tmp_path / "celeriac.sqlite3")
    assert app.broker_url == f"sqlite:///{expected}"
    assert app.result_backend_url.endswith(expected)


def test_env_overrides_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_BROKER_URL", "memory://from-env")
    app = Celery("proj", broker="redis://ignored")
    assert app.broker_url == "memory://from-env"


def test_explicit_broker_without_backend_explains_itself() -> None:
    app = Celery("proj", broker="redis://localhost:6379/0")
    with pytest.raises(ImproperlyConfigured, match="result backend"):
        app.AsyncResult("some-id").state


def test_always_eager_runs_in_process() -> None:
    app = Celery("proj", broker="memory://", task_always_eager=True)

    @app.task
    def add(x, y):
        return x + y

    assert add.delay(2, 3).get() == 5


def test_get_inside_a_task_is_refused() -> None:
    app = Celery("proj", broker="memory://", backend="memory://")

    @app.task
    def outer():
        return app.AsyncResult("x").get(timeout=0.1)

    with pytest.raises(RuntimeError, match="Never call result.get"):
        outer.apply(throw=True)


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "loaderpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "celery.py").write_text(
        "from celeriac import Celery\napp = Celery('loaderpkg', broker='memory://')\n")
    (tmp_path / "loadermod.py").write_text(
        "from celeriac import Celery\ncelery = Celery('loadermod', broker='memory://')\n"
        "other = Celery('other', broker='memory://')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("loaderpkg", "loaderpkg.celery", "loadermod"):
        sys.modules.pop(name, None)


def test_find_app_resolves_like_celery(package: Path) -> None:
    assert find_app("loaderpkg").main == "loaderpkg"           # pkg -> pkg.celery.app
    assert find_app("loaderpkg.celery").main == "loaderpkg"    # module -> .app
    assert find_app("loaderpkg.celery:app").main == "loaderpkg"
    assert find_app("loadermod").main == "loadermod"           # module -> .celery
    assert find_app("loadermod:other").main == "other"
    assert find_app("loadermod.other").main == "other"
    with pytest.raises(ImportError):
        find_app("no_such_module_here")


def test_hostname_expansion_and_banner_hides_password() -> None:
    name = format_hostname("w1@%h")
    assert name.startswith("w1@") and "%" not in name
    app = Celery("proj", broker="redis://:s3cret@localhost:6379/0", backend="memory://")
    pytest.importorskip("redis")
    banner = Worker(app, pool="solo").render_banner()
    assert "s3cret" not in banner and "redis://:**@localhost:6379/0" in banner
    assert "[queues]" in banner and "celery" in banner


def test_include_imports_and_autodiscover(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "inc_tasks.py").write_text(
        "from celeriac import shared_task\n@shared_task(name='inc.one')\ndef one():\n    return 1\n")
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "__init__.py").write_text("")
    (shop / "tasks.py").write_text(
        "from celeriac import shared_task\n@shared_task(name='shop.sell')\ndef sell():\n"
        "    return 'sold'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = Celery("proj", broker="memory://", include=["inc_tasks"])
    app.autodiscover_tasks(["shop", "no_tasks_module_here"])
    assert "inc.one" not in app.tasks  # imported when the worker starts, as in Celery
    app.finalize()
    assert app.tasks["inc.one"].apply().get() == 1
    assert app.tasks["shop.sell"].apply().get() == "sold"
    for name in ("inc_tasks", "shop", "shop.tasks"):
        sys.modules.pop(name, None)


def test_batch_publish_sends_the_block_s_messages_together_when_it_ends() -> None:
    from celeriac import signals

    app = Celery("batch", broker=f"memory://{uuid.uuid4().hex}", backend="memory://")

    @app.task
    def add(x, y):
        return x + y

    published: list[str] = []

    def note(sender: Any = None, headers: Any = None, **kw: Any) -> None:
        published.append(headers["id"])

    signals.after_task_publish.connect(note)
    broker = app.producer_broker()
    try:
        with app.batch_publish():
            first = add.delay(1, 1)
            with app.batch_publish():  # an inner block leaves the sending to the outer one
                second = add.delay(2, 2)
            assert broker.size("celery") == 0 and published == []
        assert broker.size("celery") == 2 and published == [first.id, second.id]
        with pytest.raises(RuntimeError):
            with app.batch_publish():
                add.delay(3, 3)
                raise RuntimeError("the caller's own error")
        assert broker.size("celery") == 3  # what was sent before the error still leaves
    finally:
        signals.after_task_publish.disconnect(note)
        app.close()
