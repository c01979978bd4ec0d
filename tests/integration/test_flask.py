"""Flask: docs/flask.md's app factory (``celery_init_app``) served by Flask's test
client against a real worker, its progress endpoint, and the older ``make_celery``
seed pattern running without a warning for the Flask app's own keys."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from celeriac.contrib.testing import WorkerProcess

flask = pytest.importorskip("flask")

DOC = Path(__file__).resolve().parents[2] / "docs" / "flask.md"
FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\s*```python\n(.*?)```", re.S)
# The doc's modules, imported here under their own names: taken out of sys.modules
# before and after, so that no other test's module of the same name is used.
DOC_MODULES = ("flask_demo", "make_celery")

# A task the test controls: it reports progress, then waits for the test's go-ahead
# (a file), so the progress endpoint is read while the task is in PROGRESS.
GATED_TASKS = '''
import os
import time

from celeriac import shared_task


@shared_task(bind=True, ignore_result=False)
def gated(self, gate: str) -> dict:
    self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
    deadline = time.monotonic() + 15
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"current": 2, "total": 2, "status": "done"}


@shared_task(ignore_result=False)
def in_app_context() -> str:
    from flask import current_app, has_app_context

    return f"{has_app_context()}:{current_app.name}"
'''


def _write_doc_files(where: Path) -> None:
    files = dict(FILE_BLOCK.findall(DOC.read_text()))
    assert set(files) == {f"{name}.py" for name in DOC_MODULES}
    for name, code in files.items():
        (where / name).write_text(code)


def _forget_doc_modules() -> None:
    for name in (*DOC_MODULES, "gated_tasks"):
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """docs/flask.md's files in a directory, a worker serving them, and the Flask app."""
    where = tmp_path_factory.mktemp("flask_project")
    _write_doc_files(where)
    (where / "gated_tasks.py").write_text(GATED_TASKS)
    # Flask's from_prefixed_env, as the doc says: nested keys with "__", JSON values.
    env = {"FLASK_CELERY__broker_url": f"sqlite:///{where / 'broker.sqlite3'}",
           "FLASK_CELERY__include": '["gated_tasks"]'}
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    mp.syspath_prepend(str(where))
    _forget_doc_modules()
    try:
        with WorkerProcess("make_celery", cwd=where, env=env,
                           args=["-P", "threads", "-c", "4"]) as worker:
            import flask_demo  # type: ignore[import-not-found]

            app = flask_demo.create_app()
            yield {"app": app, "client": app.test_client(), "module": flask_demo,
                   "where": where, "worker": worker}
    finally:
        _forget_doc_modules()
        mp.undo()


def _poll(client: Any, url: str, until: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
    """GET ``url`` until ``until(reply)``; every reply, in order (fails on timeout)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = client.get(url).get_json()
        seen.append(reply)
        if until(reply):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{url} never matched; replies: {seen[-5:]}")


def test_celery_init_app_sends_to_a_worker_and_reads_results(project: dict[str, Any]) -> None:
    app, client = project["app"], project["client"]
    celery_app = app.extensions["celery"]
    assert celery_app.main == "flask_demo"
    assert celery_app.conf.task_ignore_result is True

    result_id = client.post("/add", data={"a": "2", "b": "3"}).get_json()["result_id"]
    replies = _poll(client, f"/result/{result_id}", lambda r: r["ready"])
    assert replies[-1] == {"ready": True, "successful": True, "value": 5}


def test_tasks_run_in_the_flask_app_context_in_the_worker(project: dict[str, Any]) -> None:
    module = project["module"]
    assert module.greeting.delay().get(timeout=20) == "hello from the Flask config"
    import gated_tasks  # type: ignore[import-not-found]

    assert gated_tasks.in_app_context.delay().get(timeout=20) == "True:flask_demo"


def test_progress_endpoint_reads_state_and_meta(project: dict[str, Any]) -> None:
    import gated_tasks

    client, where = project["client"], project["where"]
    gate = where / f"gate-{time.monotonic_ns()}"
    result = gated_tasks.gated.delay(str(gate))
    in_progress = _poll(client, f"/status/{result.id}", lambda r: r["state"] == "PROGRESS")
    assert in_progress[-1] == {"state": "PROGRESS", "current": 1, "total": 2}
    gate.touch()
    done = _poll(client, f"/status/{result.id}", lambda r: r["state"] == "SUCCESS")
    assert done[-1] == {"state": "SUCCESS",
                        "result": {"current": 2, "total": 2, "status": "done"}}


def test_the_docs_long_task_reports_its_result(project: dict[str, Any]) -> None:
    client = project["client"]
    result_id = client.post("/long", data={"steps": "3", "delay": "0"}).get_json()["result_id"]
    done = _poll(client, f"/status/{result_id}", lambda r: r["state"] == "SUCCESS")
    assert done[-1]["result"] == {"current": 3, "total": 3, "status": "done"}


def test_a_task_called_from_a_view_runs_in_the_views_context(project: dict[str, Any]) -> None:
    app, module = project["app"], project["module"]
    with app.test_request_context("/"):
        flask.g.marker = "from the view"
        assert module.greeting() == "hello from the Flask config"
        assert flask.g.marker == "from the view"  # the same context, not a new one


def test_eager_tasks_run_in_the_app_context(tmp_path: Path) -> None:
    from celeriac.contrib.flask import FlaskTask, celery_init_app

    app = flask.Flask("eager_flask_app")
    app.config["CELERY"] = {"broker_url": "memory://", "task_always_eager": True}
    app.config["ANSWER"] = 42
    celery_app = celery_init_app(app)
    assert isinstance(celery_app.Task(), FlaskTask)

    @celery_app.task
    def answer() -> int:
        return int(flask.current_app.config["ANSWER"])

    @celery_app.task
    async def answer_async() -> int:
        return int(flask.current_app.config["ANSWER"]) + 1

    assert not flask.has_app_context()
    assert answer.delay().get() == 42
    assert answer_async.delay().get() == 43
    assert not flask.has_app_context()


SEED = '''
from flask import Flask
from celeriac import Celery


def make_celery(app):
    celery = Celery(app.import_name, backend=app.config["CELERY_RESULT_BACKEND"],
                    broker=app.config["CELERY_BROKER_URL"])
    celery.conf.update(app.config)

    class ContextTask(celery.Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery.Task = ContextTask
    return celery


app = Flask(__name__)
app.config.update(
    CELERY_BROKER_URL="memory://",
    CELERY_RESULT_BACKEND="memory://",
    SECRET_KEY="s3cret",
    MAIL_SERVER="smtp.example.com",
    MAIL_PORT=587,
    MAIL_USE_TLS=True,
    MAIL_USERNAME="me",
    MAIL_PASSWORD="pw",
    MAIL_DEFAULT_SENDER="me@example.com",
    SQLALCHEMY_DATABASE_URI="sqlite:///app.db",
    SQLALCHEMY_TRACK_MODIFICATIONS=False,
    REDIS_URL="redis://localhost:6379/0",
    CACHE_TYPE="SimpleCache",
    SECURITY_PASSWORD_SALT="salt",
    UPLOAD_FOLDER="/tmp/uploads",
)
celery = make_celery(app)
celery.conf.task_always_eager = True


@celery.task()
def add_together(a, b):
    from flask import current_app

    return [a + b, current_app.config["MAIL_PORT"]]
'''


def _run_seed(where: Path, extra: str = "") -> subprocess.CompletedProcess[str]:
    (where / "flask_seed_app.py").write_text(SEED + textwrap.dedent(extra))
    # -W error: any warning at all (celeriac's are UserWarnings) fails the import
    return subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c",
         "import flask_seed_app as m; print(m.add_together.delay(2, 3).get())"],
        cwd=where, capture_output=True, text=True, timeout=60)


def test_make_celery_seed_pattern_runs_without_warnings(tmp_path: Path) -> None:
    done = _run_seed(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[5, 587]"


def test_make_celery_still_warns_about_a_misspelt_queue_setting(tmp_path: Path) -> None:
    done = _run_seed(tmp_path, 'app.config["CELERYD_CONCURENCY"] = 4\n'
                               "celery.conf.update(app.config)\n")
    assert done.returncode != 0
    assert "unknown setting 'CELERYD_CONCURENCY'" in done.stderr
