"""celeriac's pytest plugin, run by pytest inside pytest (``pytester``).

Each inner run is a user's test suite: the fixtures are off until enabled, then an app
and an embedded worker serve tasks on memory://, an SQLite file or Redis.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ENABLE = ("-p", "celeriac.contrib.pytest")
QUIET = ("-p", "no:cacheprovider")


@pytest.fixture(autouse=True)
def _no_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner runs load only the plugins they name: importing every installed plugin
    (hypothesis, anyio ...) again for each run would cost seconds. Tests about what the
    installed entry point does call ``_autoload``."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def _autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")

USES_APP = '''
def test_it(celery_app):
    assert celery_app is not None
'''


def test_the_fixtures_are_off_unless_the_plugin_is_enabled(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _autoload(monkeypatch)  # celeriac's entry point is installed, yet changes nothing
    pytester.makepyfile(USES_APP)
    result = pytester.runpytest(*QUIET)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'celery_app' not found*"])


WORKER_TESTS = '''
import pytest
from celeriac.exceptions import NotRegistered


def test_a_task_defined_in_the_test_is_served(celery_app, celery_worker):
    @celery_app.task
    def mul(x, y):
        return x * y

    celery_worker.reload()
    assert mul.delay(4, 4).get(timeout=10) == 16


@pytest.mark.celery(task_default_queue="marked")
def test_the_marker_configures_the_app(celery_app):
    assert celery_app.conf.task_default_queue == "marked"


def test_the_app_is_fresh_each_test(celery_app):
    assert celery_app.conf.task_default_queue != "marked"
    with pytest.raises(NotRegistered):
        celery_app.tasks["test_plugin_worker.mul"]
'''


@pytest.mark.parametrize("enable", ["-p", "ini", "pytest_plugins"])
def test_enabled_it_gives_an_app_and_a_worker(pytester: pytest.Pytester, enable: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_plugin_worker=WORKER_TESTS)
    args: tuple[str, ...] = QUIET
    if enable == "-p":
        args += ENABLE
    elif enable == "ini":  # read by the installed entry point
        _autoload(monkeypatch)
        pytester.makeini("[pytest]\nceleriac_plugin = true\n")
    else:
        pytester.makeconftest('pytest_plugins = ["celeriac.contrib.pytest"]\n')
    pytester.runpytest(*args).assert_outcomes(passed=3)


SQLITE_CONFTEST = '''
import pytest


@pytest.fixture(scope="session")
def celery_config(tmp_path_factory):
    url = "sqlite:///" + str(tmp_path_factory.mktemp("db") / "celeriac.sqlite3")
    return {"broker_url": url, "result_backend": url}


@pytest.fixture(scope="session")
def celery_worker_pool():
    return "threads"


@pytest.fixture(scope="session")
def celery_worker_parameters():
    return {"concurrency": 2, "queues": ["inner"]}


@pytest.fixture(scope="session")
def celery_includes():
    return ["inner_tasks"]


@pytest.fixture(scope="session")
def celery_enable_logging():
    return True  # the worker sets up logging as a worker does, and still serves
'''

INNER_TASKS = '''
from celeriac import shared_task, Task


@shared_task(name="inner.add")
def add(x, y):
    return x + y


class Hello(Task):
    name = "inner.hello"

    def run(self, who):
        return f"hello {who}"
'''

SESSION_TESTS = '''
import pytest

import inner_tasks


@pytest.fixture(scope="session")
def celery_class_tasks():
    return [inner_tasks.Hello]


def test_one(celery_session_app, celery_session_worker):
    assert celery_session_app.conf.broker_url.startswith("sqlite:///")
    result = celery_session_app.send_task("inner.add", (2, 3), queue="inner")
    assert result.get(timeout=10) == 5


def test_two_shares_the_worker(celery_session_app, celery_session_worker):
    assert celery_session_app.send_task("inner.hello", ("you",),
                                        queue="inner").get(timeout=10) == "hello you"
    assert inner_tasks.add.app is celery_session_app  # the session app is current
'''


def test_a_session_worker_on_sqlite_serves_included_and_class_tasks(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest(SQLITE_CONFTEST)
    pytester.makepyfile(inner_tasks=INNER_TASKS, test_session=SESSION_TESTS)
    # in a process of its own: the worker's logging set-up would outlive the inner run
    pytester.runpytest_subprocess(*QUIET, *ENABLE).assert_outcomes(passed=2)


REDIS_TESTS = '''
import pytest


@pytest.fixture(scope="session")
def celery_config():
    return {"broker_url": "redis://127.0.0.1:6379/13",
            "result_backend": "redis://127.0.0.1:6379/13",
            "task_default_queue": "QUEUE"}


def test_on_redis(celery_app, celery_worker):
    @celery_app.task
    def shout(word):
        return word.upper()

    assert shout.delay("hi").get(timeout=10) == "HI"
    assert celery_worker.queues == ["QUEUE"]
'''


def test_the_worker_runs_on_redis(pytester: pytest.Pytester, redis_server: str) -> None:
    queue = f"plugin-{uuid.uuid4().hex[:8]}"
    pytester.makepyfile(REDIS_TESTS.replace("QUEUE", queue))
    pytester.runpytest(*QUIET, *ENABLE).assert_outcomes(passed=1)


TRAP_TESTS = '''
import pytest
from celeriac import shared_task


@pytest.fixture(scope="session")
def use_celery_app_trap():
    return True


@shared_task
def orphan():
    return 1


def test_the_trap_catches_the_current_app(celery_app):
    with pytest.raises(RuntimeError, match="Test depends on current_app"):
        orphan.delay()


def test_depends_on_current_app_lifts_it(celery_app, depends_on_current_app):
    assert orphan.app is celery_app
'''


def test_the_app_trap(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TRAP_TESTS)
    pytester.runpytest(*QUIET, *ENABLE).assert_outcomes(passed=2)


NO_WORKER_TESTS = '''
def test_no_worker(celery_worker):
    assert celery_worker is None
'''


def test_no_worker_starts_no_worker(pytester: pytest.Pytester,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_WORKER", "1")
    pytester.makepyfile(NO_WORKER_TESTS)
    pytester.runpytest(*QUIET, *ENABLE).assert_outcomes(passed=1)


def test_celerys_plugin_and_celeriacs_cannot_both_be_on(pytester: pytest.Pytester) -> None:
    pytest.importorskip("celery")
    pytester.makepyfile(USES_APP)
    result = pytester.runpytest(*QUIET, *ENABLE, "-p", "celery.contrib.pytest")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*celery.contrib.pytest*celeriac.contrib.pytest*both*"])


def test_the_docs_example_passes(pytester: pytest.Pytester) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "testing-plugin.md").read_text()
    files = dict(re.findall(r"<!-- file: (\S+) -->\s*```python\n(.*?)```", doc, re.S))
    assert sorted(files) == ["conftest.py", "tasks.py", "test_tasks.py"]
    for name, source in files.items():
        (pytester.path / name).write_text(source)
    pytester.syspathinsert()
    pytester.runpytest(*QUIET).assert_outcomes(passed=3)


def test_an_embedded_worker_that_cannot_start_says_why() -> None:
    from support import free_port

    from celeriac.contrib.testing import TestApp, setup_default_app, start_worker

    url = f"redis://127.0.0.1:{free_port()}/0"
    app = TestApp(config={"broker_url": url, "result_backend": url,
                          "broker_connection_retry_on_startup": False})
    with setup_default_app(app):
        with pytest.raises(RuntimeError, match=r"did not start: .*connection refused"):
            with start_worker(app):
                pass
        with pytest.raises(ValueError, match="WorkerProcess"):
            with start_worker(app, pool="prefork"):
                pass
